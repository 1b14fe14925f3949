package sim_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

const tpgPath = "/iscsi/iqn.2023-06.csm.iscsi:ncn-w001/tpg1"

func newNode(t *testing.T) *sim.Node {
	t.Helper()
	n, err := sim.NewNode(t.TempDir(), sim.NodeOptions{})
	if err != nil {
		t.Fatalf("NewNode: %v", err)
	}
	return n
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, n *sim.Node, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(sim.Binary(t), args...)
	cmd.Env = append(os.Environ(), n.Env()...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run targetcli simulator: %v", err)
	}
	return result{out.String(), errb.String(), code}
}

func oneShot(t *testing.T, n *sim.Node, line string) result {
	t.Helper()
	return run(t, n, "", line)
}

func imageFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.squashfs")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func live(t *testing.T, n *sim.Node) *lio.Config {
	t.Helper()
	c, err := n.Live()
	if err != nil {
		t.Fatalf("Live: %v", err)
	}
	return c
}

func lunIndexes(t *testing.T, c *lio.Config) map[string]int {
	t.Helper()
	tgt, ok := c.Target("iqn.2023-06.csm.iscsi:ncn-w001")
	if !ok {
		t.Fatal("CSM target missing from live state")
	}
	g, _ := tgt.TPG(1)
	m := map[string]int{}
	for _, l := range g.LUNs {
		m[l.StorageObject] = l.Index
	}
	return m
}

func TestRefusesWithoutNodeDir(t *testing.T) {
	cmd := exec.Command(sim.Binary(t), "ls")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "SIMULATOR") {
		t.Fatalf("without %s: err %v, output %q; want exit 2 naming the simulator", sim.EnvDir, err, out)
	}
}

func TestFileioCreateOneShot(t *testing.T) {
	n := newNode(t)
	existing := imageFile(t, 123456)
	other := imageFile(t, 4096)
	missing := filepath.Join(t.TempDir(), "missing.img")
	created := filepath.Join(t.TempDir(), "created.img")

	tests := []struct {
		name       string
		line       string
		wantCode   int
		wantOut    string // substring of stdout
		wantErr    string // exact stderr
		wantSize   int64  // of object "name" afterwards, -1 if absent
		objectName string
	}{
		{"existing file uses its real size", "/backstores/fileio create a " + existing + " write_back=false wwn=w1",
			0, "Created fileio a with size 123456", "", 123456, "a"},
		{"duplicate name", "/backstores/fileio create a " + other,
			1, "", "Storage object fileio/a exists\n", 123456, "a"},
		{"same file twice", "/backstores/fileio create b " + existing,
			1, "", "storage object for " + existing + " already exists: a\n", -1, "b"},
		{"missing file without size", "/backstores/fileio create c " + missing,
			1, "", "Attempting to create file for new fileio backstore, need a size\n", -1, "c"},
		{"missing file with size is created", "/backstores/fileio create d " + created + " 1M",
			0, "Created fileio d with size 1048576", "", 1048576, "d"},
		{"size ignored for an existing file", "/backstores/fileio create e " + other + " 5G",
			0, other + " exists, using its size (4096 bytes) instead", "", 4096, "e"},
		{"bad boolean", "/backstores/fileio create f " + other + " write_back=no",
			1, "", "Syntax error, 'no' is not true|false.\n", -1, "f"},
		{"missing parameter", "/backstores/fileio create g",
			1, "", "Missing required parameter file_or_dev\n", -1, "g"},
		{"unknown command", "/backstores/fileio make h " + other,
			1, "", "Command not found make\n", -1, "h"},
		{"unknown path", "/backstores/nofs create h " + other,
			1, "", "No such path /backstores/nofs\n", -1, "h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := oneShot(t, n, tt.line)
			if r.code != tt.wantCode || !strings.Contains(r.stdout, tt.wantOut) || r.stderr != tt.wantErr {
				t.Fatalf("targetcli %q = exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr %q",
					tt.line, r.code, r.stdout, r.stderr, tt.wantCode, tt.wantOut, tt.wantErr)
			}
			so, ok := live(t, n).FileIO(tt.objectName)
			got := int64(-1)
			if ok {
				got = so.SizeBytes()
			}
			if got != tt.wantSize {
				t.Errorf("live size of %s = %d, want %d", tt.objectName, got, tt.wantSize)
			}
		})
	}
	if fi, err := os.Stat(created); err != nil || fi.Size() != 1048576 {
		t.Errorf("file created by targetcli: %v, %v; want 1 MiB", fi, err)
	}
	a, _ := live(t, n).FileIO("a")
	var alua []json.RawMessage
	json.Unmarshal(a.ALUATPGs, &alua)
	if a.WWN != "w1" || *a.WriteBack || a.AIO == nil || *a.AIO || len(alua) != 1 {
		t.Errorf("object a = wwn %q write_back %v aio %v alua %d; want w1, false, false, 1", a.WWN, *a.WriteBack, a.AIO, len(alua))
	}
	if wc, _ := a.Attr("emulate_write_cache"); wc != 0 {
		t.Errorf("emulate_write_cache of a write-through object = %d, want 0", wc)
	}
	d, _ := live(t, n).FileIO("d")
	if !*d.WriteBack || len(d.WWN) != 36 {
		t.Errorf("object d = write_back %v wwn %q; want targetcli's default true and a generated uuid", *d.WriteBack, d.WWN)
	}
}

func TestLUNsOneShot(t *testing.T) {
	n := newNode(t)
	for _, name := range []string{"a", "b", "c"} {
		if r := oneShot(t, n, "/backstores/fileio create "+name+" "+imageFile(t, 512)+" write_back=false"); r.code != 0 {
			t.Fatalf("create %s: %+v", name, r)
		}
	}
	steps := []struct {
		name     string
		line     string
		wantCode int
		want     string // stdout on success, stderr on failure
		wantLUNs map[string]int
	}{
		{"first LUN gets 0", tpgPath + "/luns create /backstores/fileio/a add_mapped_luns=false", 0, "Created LUN 0.\n",
			map[string]int{"/backstores/fileio/a": 0}},
		{"explicit index", tpgPath + "/luns create /backstores/fileio/b lun5 add_mapped_luns=false", 0, "Created LUN 5.\n",
			map[string]int{"/backstores/fileio/a": 0, "/backstores/fileio/b": 5}},
		{"second LUN for one object", tpgPath + "/luns create /backstores/fileio/b", 1,
			"lun for storage object fileio/b already exists\n", map[string]int{"/backstores/fileio/a": 0, "/backstores/fileio/b": 5}},
		{"delete backstore removes its LUN", "/backstores/fileio delete a", 0, "Deleted storage object a.\n",
			map[string]int{"/backstores/fileio/b": 5}},
		{"freed index is reused", tpgPath + "/luns create /backstores/fileio/c", 0, "Created LUN 0.\n",
			map[string]int{"/backstores/fileio/b": 5, "/backstores/fileio/c": 0}},
		{"delete LUN", tpgPath + "/luns delete lun5", 0, "Deleted LUN 5.\n", map[string]int{"/backstores/fileio/c": 0}},
		{"delete missing LUN", tpgPath + "/luns delete 7", 1, "Invalid LUN\n", map[string]int{"/backstores/fileio/c": 0}},
		{"delete missing backstore", "/backstores/fileio delete a", 1, "No storage object named a.\n",
			map[string]int{"/backstores/fileio/c": 0}},
		{"unknown storage object", tpgPath + "/luns create /backstores/fileio/zz", 1, "storage object or path not valid\n",
			map[string]int{"/backstores/fileio/c": 0}},
		{"index out of range", tpgPath + "/luns create /backstores/fileio/b 70000", 1, "LUN must be 0 to 65535\n",
			map[string]int{"/backstores/fileio/c": 0}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := oneShot(t, n, s.line)
			got := r.stdout
			if s.wantCode != 0 {
				got = r.stderr
			}
			if r.code != s.wantCode || got != s.want {
				t.Fatalf("targetcli %q = exit %d, stdout %q, stderr %q; want exit %d and %q", s.line, r.code, r.stdout, r.stderr, s.wantCode, s.want)
			}
			luns := lunIndexes(t, live(t, n))
			if len(luns) != len(s.wantLUNs) {
				t.Fatalf("live LUNs = %v, want %v", luns, s.wantLUNs)
			}
			for so, i := range s.wantLUNs {
				if luns[so] != i {
					t.Fatalf("live LUNs = %v, want %v", luns, s.wantLUNs)
				}
			}
		})
	}
}

func TestTPGEnableDisable(t *testing.T) {
	n := newNode(t)
	steps := []struct{ line, want string }{
		{tpgPath + " enable", "The TPGT is already enabled.\n"},
		{tpgPath + " disable", "The TPGT has been disabled.\n"},
		{tpgPath + " disable", "The TPGT is already disabled.\n"},
		{tpgPath + " enable", "The TPGT has been enabled.\n"},
	}
	for _, s := range steps {
		if r := oneShot(t, n, s.line); r.code != 0 || r.stdout != s.want {
			t.Fatalf("targetcli %q = %+v, want stdout %q", s.line, r, s.want)
		}
	}
	if r := oneShot(t, n, tpgPath+" enable now"); r.code != 1 || r.stderr != "Got 1 positionnal parameters, expected exactly 0.\n" {
		t.Errorf("enable with a parameter = %+v", r)
	}
}

func TestTruncatedLineIsSilent(t *testing.T) {
	n := newNode(t)
	img := imageFile(t, 2048)
	// The quote and everything after it vanish: the object is created
	// write-back, and no error says so.
	r := oneShot(t, n, "/backstores/fileio create q "+img+` "write_back=false"`)
	if r.code != 0 {
		t.Fatalf("truncated create = %+v, want success", r)
	}
	so, ok := live(t, n).FileIO("q")
	if !ok || !*so.WriteBack {
		t.Errorf("object after truncated line = %+v, want write_back true (parameter dropped)", so)
	}
}

func TestOneShotNeverSaves(t *testing.T) {
	n := newNode(t)
	before, err := os.ReadFile(n.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	if r := oneShot(t, n, "/backstores/fileio create a "+imageFile(t, 512)); r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	after, _ := os.ReadFile(n.SaveFile())
	if !bytes.Equal(before, after) {
		t.Error("one-shot targetcli changed saveconfig.json")
	}
	backupLine := "Last 10 configs saved in " + filepath.Dir(n.SaveFile()) + "/backup/.\n"
	if r := oneShot(t, n, "saveconfig"); r.code != 0 || r.stdout != backupLine+"Configuration saved to "+n.SaveFile()+"\n" {
		t.Fatalf("saveconfig = %+v", r)
	}
	checkSaved(t, n)
}

// checkSaved checks that saveconfig.json is rtslib-formatted, mode 0600,
// and equal to the live state.
func checkSaved(t *testing.T, n *sim.Node) {
	t.Helper()
	data, err := os.ReadFile(n.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	saved, err := lio.Parse(data)
	if err != nil {
		t.Fatalf("lio.Parse(saveconfig.json): %v", err)
	}
	again, _ := lio.Marshal(saved)
	if !bytes.Equal(again, data) {
		t.Error("saveconfig.json is not in rtslib's format (re-marshalled bytes differ)")
	}
	want, _ := lio.Marshal(live(t, n))
	if !bytes.Equal(data, want) {
		t.Errorf("saveconfig.json differs from the live state:\n%s\nwant\n%s", data, want)
	}
	if fi, _ := os.Stat(n.SaveFile()); fi.Mode().Perm() != 0o600 {
		t.Errorf("saveconfig.json mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestBatch(t *testing.T) {
	n := newNode(t)
	a, b := imageFile(t, 1024), imageFile(t, 2048)
	script := strings.Join([]string{
		"/backstores/fileio create a " + a + " write_back=false",
		"/backstores/fileio create a " + b, // fails: logged, run goes on
		"cd /backstores/fileio",
		"create b " + b + " write_back=false",
		"cd " + tpgPath + "/luns",
		"create /backstores/fileio/a add_mapped_luns=false",
		"create /backstores/fileio/b add_mapped_luns=false",
	}, "\n") + "\n"
	r := run(t, n, script)
	if r.code != 0 {
		t.Fatalf("batch exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stderr != "Storage object fileio/a exists\n" {
		t.Errorf("batch stderr = %q, want the duplicate error only", r.stderr)
	}
	for _, want := range []string{"/> Created fileio a", "/backstores/fileio> Created fileio b", "Created LUN 1.",
		"exit\nGlobal pref auto_save_on_exit=true\n", "Configuration saved to " + n.SaveFile()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("batch stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	checkSaved(t, n)
	if luns := lunIndexes(t, live(t, n)); luns["/backstores/fileio/a"] != 0 || luns["/backstores/fileio/b"] != 1 {
		t.Errorf("LUNs = %v, want a:0 b:1", luns)
	}
	backups, _ := filepath.Glob(filepath.Join(filepath.Dir(n.SaveFile()), "backup", "saveconfig-*-json.gz"))
	if len(backups) != 1 {
		t.Errorf("backups = %v, want one (of the initial file)", backups)
	}
}

func TestBatchStaleTreeSiblingBug(t *testing.T) {
	n := newNode(t)
	a, b := imageFile(t, 1024), imageFile(t, 2048)
	for _, line := range []string{"/backstores/fileio create a " + a, tpgPath + "/luns create /backstores/fileio/a", "saveconfig"} {
		if r := oneShot(t, n, line); r.code != 0 {
			t.Fatalf("%s: %+v", line, r)
		}
	}
	saved, _ := os.ReadFile(n.SaveFile())
	r := run(t, n, strings.Join([]string{
		"/backstores/fileio delete a",
		"/backstores/fileio create b " + b,
		tpgPath + "/luns create /backstores/fileio/b",
		"/backstores/fileio create c " + a, // never runs: the process died
	}, "\n"))
	if r.code != 1 || !strings.HasSuffix(r.stderr, "ValueError: Name 'lun0' already used by a sibling.\n") {
		t.Fatalf("batch = exit %d, stderr %q; want exit 1 with the sibling traceback", r.code, r.stderr)
	}
	// The kernel got the LUN before the UI tree refused it; nothing saved.
	if luns := lunIndexes(t, live(t, n)); len(luns) != 1 || luns["/backstores/fileio/b"] != 0 {
		t.Errorf("live LUNs = %v, want b at 0", luns)
	}
	if _, ok := live(t, n).FileIO("c"); ok {
		t.Error("command after the crash ran")
	}
	if now, _ := os.ReadFile(n.SaveFile()); !bytes.Equal(now, saved) {
		t.Error("crashed batch saved saveconfig.json")
	}
	// A fresh process has a fresh tree: the same create works.
	if r := oneShot(t, n, tpgPath+"/luns create /backstores/fileio/b"); r.code != 1 || r.stderr != "lun for storage object fileio/b already exists\n" {
		t.Errorf("fresh process = %+v", r)
	}
}

func TestLockSerializesProcesses(t *testing.T) {
	n := newNode(t)
	if err := n.SetFaults(sim.Faults{HangAt: 1}); err != nil {
		t.Fatal(err)
	}
	start := func(line string) *exec.Cmd {
		cmd := exec.Command(sim.Binary(t), line)
		cmd.Env = append(os.Environ(), n.Env()...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	first := start(tpgPath + " disable")
	testutil.WaitFor(t, 10*time.Second, "first process to reach its command", func() error {
		if got := n.Commands(); got != 1 {
			return fmt.Errorf("%d commands reached", got)
		}
		return nil
	})
	second := start(tpgPath + " disable")
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("second targetcli finished (%v) while the first held the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got := n.Processes(); got != 1 {
		t.Errorf("processes past the lock = %d, want 1", got)
	}
	first.Process.Kill()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second targetcli after the lock was freed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second targetcli still blocked after the first was killed")
	}
	if tgt, _ := live(t, n).Target(n.IQN()); bool(tgt.TPGs[0].Enable) {
		t.Error("TPG still enabled after the second process ran")
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name     string
		faults   sim.Faults
		wantCode int
		wantObjs []string // live objects afterwards
		wantSave bool     // saveconfig.json rewritten
		wantErr  string
	}{
		{"fail the second command", sim.Faults{FailAt: 2, FailMessage: "injected"}, 0, []string{"o3", "o1"}, true, "injected\n"}, // newest first
		{"die after the second command", sim.Faults{DieAfter: 2}, -1, []string{"o2", "o1"}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			if err := n.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(n.SaveFile())
			var script strings.Builder
			for _, o := range []string{"o1", "o2", "o3"} {
				script.WriteString("/backstores/fileio create " + o + " " + imageFile(t, 512) + "\n")
			}
			r := run(t, n, script.String())
			if r.code != tt.wantCode || r.stderr != tt.wantErr {
				t.Fatalf("batch = exit %d, stderr %q; want %d, %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			c := live(t, n)
			var got []string
			for _, so := range c.StorageObjects {
				got = append(got, so.Name)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantObjs, ",") {
				t.Errorf("live objects = %v, want %v", got, tt.wantObjs)
			}
			after, _ := os.ReadFile(n.SaveFile())
			if saved := !bytes.Equal(before, after); saved != tt.wantSave {
				t.Errorf("saveconfig.json rewritten = %v, want %v", saved, tt.wantSave)
			}
		})
	}
}

func TestStartDelays(t *testing.T) {
	n := newNode(t)
	for i := range 4 {
		if _, err := n.Run(t.Context(), "/backstores/fileio create o"+string(rune('a'+i))+" "+imageFile(t, 512)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.SetFaults(sim.Faults{StartDelay: 100 * time.Millisecond, PerObjectDelay: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if r := oneShot(t, n, "pwd"); r.code != 0 || r.stdout != "/\n" {
		t.Fatalf("pwd = %+v", r)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("one-shot with 4 objects took %v, want ≥ 100ms + 4×50ms", took)
	}
	if got := n.Processes(); got != 5 {
		t.Errorf("Processes() = %d, want 5", got)
	}
}

func TestSaveModes(t *testing.T) {
	tests := []struct {
		name        string
		mode        sim.SaveMode
		wantPartial bool
	}{
		{"in place (rtslib 2.1.75) shows a half-written file", sim.SaveInPlace, true},
		{"rename (rtslib 2.2) never does", sim.SaveRename, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			for i := range 20 {
				if _, err := n.Run(t.Context(), "/backstores/fileio create o"+string(rune('a'+i))+" "+imageFile(t, 512)); err != nil {
					t.Fatal(err)
				}
			}
			if err := n.SetFaults(sim.Faults{SaveMode: tt.mode, SavePause: 400 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			done := make(chan result, 1)
			go func() { done <- oneShot(t, n, "saveconfig") }()
			sawPartial := false
			for finished := false; !finished; {
				select {
				case r := <-done:
					if r.code != 0 {
						t.Errorf("saveconfig = %+v", r)
					}
					finished = true
				default:
					data, err := os.ReadFile(n.SaveFile())
					if err == nil {
						if _, err := lio.Parse(data); errors.Is(err, lio.ErrIncomplete) {
							sawPartial = true
						} else if err != nil {
							t.Errorf("reader saw an unparsable file that is not ErrIncomplete: %v", err)
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if sawPartial != tt.wantPartial {
				t.Errorf("reader saw a partial file = %v, want %v", sawPartial, tt.wantPartial)
			}
			checkSaved(t, n)
		})
	}
}

// daemonClient talks targetclid's protocol.
func daemonRequest(t testing.TB, socket, req string) string {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("dial targetclid: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var n int32
	if err := binary.Read(conn, binary.NativeEndian, &n); err != nil {
		t.Fatalf("read reply length: %v", err)
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(conn, out); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	conn.Write([]byte("-END@OF@DATA-"))
	return string(out)
}

func startDaemon(t *testing.T, n *sim.Node) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(filepath.Dir(sim.Binary(t)), "targetclid"))
	cmd.Env = append(os.Environ(), n.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.WaitFor(t, 10*time.Second, "targetclid socket", func() error { return dial(n.SocketPath()) })
	return cmd
}

func TestDaemon(t *testing.T) {
	n := newNode(t)
	startDaemon(t, n)
	a, b := imageFile(t, 1024), imageFile(t, 2048)
	before, _ := os.ReadFile(n.SaveFile())

	got := daemonRequest(t, n.SocketPath(), "cd /%/backstores/fileio create a "+a+"%/backstores/fileio create a "+b+
		"%/backstores/fileio create c "+b)
	want := "Created fileio a with size 1024\nStorage object fileio/a exists\n"
	if got != want {
		t.Errorf("reply = %q, want %q (stop at the first failure)", got, want)
	}
	if _, ok := live(t, n).FileIO("c"); ok {
		t.Error("daemon ran a command after a failure")
	}
	if now, _ := os.ReadFile(n.SaveFile()); !bytes.Equal(now, before) {
		t.Error("daemon saved on its own")
	}
	// Its tree is built once: an object another admin made is invisible.
	if _, err := n.Run(t.Context(), "/backstores/fileio create x "+b); err != nil {
		t.Fatal(err)
	}
	if got := daemonRequest(t, n.SocketPath(), "cd /%"+tpgPath+"/luns create /backstores/fileio/x"); got != "storage object or path not valid\n" {
		t.Errorf("LUN for an object made behind the daemon's back = %q", got)
	}
	if got := daemonRequest(t, n.SocketPath(), "cd /%saveconfig"); got != "Last 10 configs saved in "+filepath.Dir(n.SaveFile())+"/backup/.\nConfiguration saved to "+n.SaveFile()+"\n" {
		t.Errorf("saveconfig reply = %q", got)
	}
	checkSaved(t, n)
	if p := n.Processes(); p != 2 {
		t.Errorf("Processes() = %d, want 2 (the daemon and one outside targetcli)", p)
	}
}

func TestServeDaemonInProcessDies(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- n.ServeDaemon(ctx, "") }()
	testutil.WaitFor(t, 10*time.Second, "in-process daemon socket", func() error { return dial(n.SocketPath()) })
	if err := n.SetFaults(sim.Faults{DieAfter: 1}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("cd /%" + tpgPath + " disable%" + tpgPath + " enable"))
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Errorf("dying daemon replied %q, %v; want the connection closed", b, err)
	}
	if err := <-errc; !errors.Is(err, sim.ErrDied) {
		t.Errorf("ServeDaemon = %v, want ErrDied", err)
	}
	if tgt, _ := live(t, n).Target(n.IQN()); bool(tgt.TPGs[0].Enable) {
		t.Error("the command before the crash was lost")
	}
}

func TestBackupsKeepTen(t *testing.T) {
	n := newNode(t)
	backupDir := filepath.Join(filepath.Dir(n.SaveFile()), "backup")
	// Fill the backup directory with 12 old, distinct backups.
	if err := os.MkdirAll(backupDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		name := filepath.Join(backupDir, "saveconfig-2020010"+string(rune('0'+i/10))+"-00:00:"+string(rune('0'+i%10))+"0-json.gz")
		if err := os.WriteFile(name, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if r := oneShot(t, n, "saveconfig"); r.code != 0 {
		t.Fatalf("saveconfig: %+v", r)
	}
	left, _ := filepath.Glob(filepath.Join(backupDir, "saveconfig-*"))
	if len(left) != 10 {
		t.Errorf("backups after save = %d, want 10: %v", len(left), left)
	}
	if r := oneShot(t, n, "saveconfig "+filepath.Join(t.TempDir(), "other.json")); r.code != 0 {
		t.Fatalf("saveconfig to another file: %+v", r)
	}
	if again, _ := filepath.Glob(filepath.Join(backupDir, "saveconfig-*")); len(again) != 10 {
		t.Errorf("saving elsewhere touched the backups: %d files", len(again))
	}
}

// dial connects to the daemon's socket and hangs up at once.
func dial(socket string) error {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	c.Write([]byte("-END@OF@DATA-"))
	return c.Close()
}

func TestLUNCreateMapsIntoNodeACLs(t *testing.T) {
	base := newNode(t)
	seed := live(t, base)
	seed.Targets[0].TPGs[0].NodeACLs = []lio.NodeACL{{NodeWWN: "iqn.2023-06.csm.iscsi:client", MappedLUNs: []lio.MappedLUN{}}}
	n, err := sim.NewNode(t.TempDir(), sim.NodeOptions{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, line, wantOut string
		wantMapped          int
	}{
		{"default maps read-write", tpgPath + "/luns create /backstores/fileio/a",
			"Created LUN 0.\nCreated LUN 0->0 mapping in node ACL iqn.2023-06.csm.iscsi:client\n", 1},
		{"add_mapped_luns=false does not", tpgPath + "/luns create /backstores/fileio/b add_mapped_luns=false", "Created LUN 1.\n", 1},
	}
	for _, name := range []string{"a", "b"} {
		if _, err := n.Run(t.Context(), "/backstores/fileio create "+name+" "+imageFile(t, 512)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := oneShot(t, n, tt.line)
			if r.code != 0 || r.stdout != tt.wantOut {
				t.Fatalf("targetcli %q = %+v, want stdout %q", tt.line, r, tt.wantOut)
			}
			acl := live(t, n).Targets[0].TPGs[0].NodeACLs[0]
			if len(acl.MappedLUNs) != tt.wantMapped || acl.MappedLUNs[0].WriteProtect {
				t.Errorf("mapped LUNs = %+v, want %d read-write", acl.MappedLUNs, tt.wantMapped)
			}
		})
	}
}

// BenchmarkCreate1000 applies 1,000 backstore+LUN creates through the
// simulator in batch (one process) and daemon (no process) mode.
func BenchmarkCreate1000(b *testing.B) {
	const count = 1000
	imgDir := b.TempDir()
	var lines []string
	for i := range count {
		p := filepath.Join(imgDir, "img"+strconv.Itoa(i))
		os.WriteFile(p, []byte("squashfs"), 0o644)
		name := "so" + strconv.Itoa(i)
		lines = append(lines, "/backstores/fileio create "+name+" "+p+" write_back=false",
			tpgPath+"/luns create /backstores/fileio/"+name+" add_mapped_luns=false")
	}
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			n, _ := sim.NewNode(b.TempDir(), sim.NodeOptions{})
			cmd := exec.Command(sim.Binary(b))
			cmd.Env = append(os.Environ(), n.Env()...)
			cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Run(); err != nil || errb.Len() > 0 {
				b.Fatalf("batch: %v %s", err, errb.Bytes())
			}
			b.ReportMetric(float64(n.Processes()), "processes/op")
		}
	})
	b.Run("daemon", func(b *testing.B) {
		for b.Loop() {
			n, _ := sim.NewNode(b.TempDir(), sim.NodeOptions{})
			ctx, cancel := context.WithCancel(b.Context())
			errc := make(chan error, 1)
			go func() { errc <- n.ServeDaemon(ctx, "") }()
			for dial(n.SocketPath()) != nil {
				time.Sleep(time.Millisecond)
			}
			for i := 0; i < len(lines); i += 100 {
				out := daemonRequest(b, n.SocketPath(), "cd /%"+strings.Join(lines[i:i+100], "%"))
				if strings.Count(out, "\n") != 100 {
					b.Fatalf("daemon reply: %q", out)
				}
			}
			cancel()
			<-errc
			b.ReportMetric(float64(n.Processes()), "processes/op")
		}
	})
}

// TestSeedKeepsObjectsSlim: a node seeded with what the simulator itself
// saved writes the same saveconfig.json again, and keeps those objects in
// its slim live form; an object it would not write alike is kept verbatim.
func TestSeedKeepsObjectsSlim(t *testing.T) {
	base := newNode(t)
	for _, c := range []string{"/backstores/fileio create a " + imageFile(t, 512) + " write_back=false", "saveconfig"} {
		if out, err := base.Run(t.Context(), c); err != nil {
			t.Fatalf("%s: %v: %s", c, err, out)
		}
	}
	saved, err := os.ReadFile(base.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	seed, err := lio.Parse(saved)
	if err != nil {
		t.Fatal(err)
	}
	odd := seed.StorageObjects[0]
	odd.Name = "odd"
	odd.Attributes = json.RawMessage(`{"block_size": 4096}`)
	seed.StorageObjects = append(seed.StorageObjects, odd)

	n, err := sim.NewNode(t.TempDir(), sim.NodeOptions{Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := n.Run(t.Context(), "saveconfig"); err != nil {
		t.Fatalf("saveconfig: %v: %s", err, out)
	}
	again, err := lio.Load(n.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := lio.Marshal(seed)
	got, _ := lio.Marshal(again)
	if !bytes.Equal(got, want) {
		t.Fatalf("seeded node saved something else:\n got %s\nwant %s", got, want)
	}
	liveJSON, err := os.ReadFile(filepath.Join(n.Dir(), "live.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c := bytes.Count(liveJSON, []byte(`"full"`)); c != 1 {
		t.Fatalf("live state keeps %d objects verbatim, want 1 (only the odd one)", c)
	}
}

// TestProvisionLikeCSM: on an empty node, /iscsi create and set attribute
// give the target CSM's playbook makes, with real targetcli's messages.
func TestProvisionLikeCSM(t *testing.T) {
	n, err := sim.NewNode(t.TempDir(), sim.NodeOptions{Seed: &lio.Config{}, NoInitialSave: true})
	if err != nil {
		t.Fatal(err)
	}
	const iqn = "iqn.2023-06.csm.iscsi:ncn-w002"
	r := oneShot(t, n, "/iscsi create "+iqn)
	want := "Created target " + iqn + ".\nCreated TPG 1.\nGlobal pref auto_add_default_portal=true\n" +
		"Created default portal listening on all IPs (0.0.0.0), port 3260.\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("/iscsi create = %+v, want stdout %q", r, want)
	}
	if r := oneShot(t, n, "/iscsi create "+iqn); r.code != 1 || r.stderr != "This Target already exists in configFS\n" {
		t.Errorf("second /iscsi create = %+v, want exit 1, \"This Target already exists in configFS\"", r)
	}
	r = oneShot(t, n, "/iscsi/"+iqn+"/tpg1 set attribute generate_node_acls=1 demo_mode_write_protect=1")
	if want := "Parameter generate_node_acls is now '1'.\nParameter demo_mode_write_protect is now '1'.\n"; r.code != 0 || r.stdout != want {
		t.Errorf("set attribute = %+v, want stdout %q", r, want)
	}
	for line, msg := range map[string]string{
		"set attribute bogus=1":                "Unknown parameter bogus in group 'attribute'.\n",
		"set attribute generate_node_acls=abc": "Not setting generate_node_acls! Syntax error, 'abc' is not a NUMBER.\n",
	} {
		if r := oneShot(t, n, "/iscsi/"+iqn+"/tpg1 "+line); r.code != 1 || r.stderr != msg {
			t.Errorf("%s = %+v, want exit 1, stderr %q", line, r, msg)
		}
	}
	c := live(t, n)
	tg, ok := c.Target(iqn)
	if !ok {
		t.Fatalf("no target %s in the live state", iqn)
	}
	g, ok := tg.TPG(1)
	if !ok || !bool(g.Enable) || len(g.Portals) != 1 || !strings.Contains(string(g.Portals[0]), `"0.0.0.0"`) {
		t.Fatalf("tpg1 = %+v, want enabled with the portal 0.0.0.0:3260", g)
	}
	if v, _ := g.Attr("generate_node_acls"); v != 1 {
		t.Errorf("generate_node_acls = %d, want 1", v)
	}
}

// TestNewestFirstAndFreshHome: new storage objects and LUNs come first in
// saveconfig.json, the lowest free LUN index is still chosen, fileio has no
// emulate_rsoc, and a fresh TARGETCLI_HOME gets the preferences warning
// once.
func TestNewestFirstAndFreshHome(t *testing.T) {
	n := newNode(t)
	home := filepath.Join(t.TempDir(), "fresh-home")
	for i, line := range []string{
		"/backstores/fileio create a " + imageFile(t, 512),
		"/backstores/fileio create b " + imageFile(t, 512),
		tpgPath + "/luns create /backstores/fileio/a lun=1",
		tpgPath + "/luns create /backstores/fileio/b",
	} {
		cmd := exec.Command(sim.Binary(t), line)
		cmd.Env = append(os.Environ(), append(n.Env(), "TARGETCLI_HOME="+home)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		warned := strings.HasPrefix(string(out), "Warning: Could not load preferences file "+home+"/prefs.bin.\n")
		if warned != (i == 0) {
			t.Errorf("%s printed %q; want the preferences warning on the first run only", line, out)
		}
	}
	c := live(t, n)
	if c.StorageObjects[0].Name != "b" || c.StorageObjects[1].Name != "a" {
		t.Errorf("storage objects %s, %s; want newest first: b, a", c.StorageObjects[0].Name, c.StorageObjects[1].Name)
	}
	if _, ok := c.StorageObjects[0].Attr("emulate_rsoc"); ok {
		t.Error("fileio has emulate_rsoc, which the 6.1 kernel lacks")
	}
	tg, _ := c.Target(n.IQN())
	g, _ := tg.TPG(1)
	if len(g.LUNs) != 2 || g.LUNs[0].Index != 0 || g.LUNs[1].Index != 1 {
		t.Errorf("LUNs %+v; want the new lun0 (lowest free) first, then lun1", g.LUNs)
	}
}

// TestBatchAutoSaveOff: `set global auto_save_on_exit=false` (the driver's
// first batch line) is answered as real targetcli answers it, at the root
// and on a TPG, and the batch then does not save at the end of input.
func TestBatchAutoSaveOff(t *testing.T) {
	for _, first := range []string{"set global auto_save_on_exit=false", "cd " + tpgPath + "\nset global auto_save_on_exit=false"} {
		n := newNode(t)
		before, err := os.ReadFile(n.SaveFile())
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, n, first+"\n/backstores/fileio create a "+imageFile(t, 1024)+" write_back=false\n")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("batch exit %d, stderr %q", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "Parameter auto_save_on_exit is now 'false'.\n") {
			t.Errorf("stdout lacks targetcli's answer to set global:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout, "Global pref auto_save_on_exit=true") || strings.Contains(r.stdout, "Configuration saved") {
			t.Errorf("the batch saved at the end of input with auto_save_on_exit off:\n%s", r.stdout)
		}
		after, err := os.ReadFile(n.SaveFile())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Error("saveconfig.json changed although nothing saved")
		}
		if _, ok := live(t, n).FileIO("a"); !ok {
			t.Error("fileio a is not in the live state: the commands after set global did not run")
		}
	}
	n := newNode(t)
	if r := run(t, n, "set global auto_save_on_exit=maybe\n"); !strings.Contains(r.stderr, "not true|false") {
		t.Errorf("a non-boolean preference: stderr %q", r.stderr)
	}
}
