package lio

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const testIQN = "iqn.2023-06.csm.iscsi:ncn-w001"

func TestBatchSegments(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"batch-mixed.txt", []string{
			"Created fileio de4cc04e7dacfb9 with size 4096",
			"Storage object fileio/b2 exists",
			"Created LUN 0.",
			"Last 10 configs saved in /etc/target/backup/.\nConfiguration saved to /etc/target/saveconfig.json",
			"exit\nGlobal pref auto_save_on_exit=true\nLast 10 configs saved in /etc/target/backup/.\nConfiguration saved to /etc/target/saveconfig.json",
		}},
		{"batch-died.txt", []string{"Created fileio de4cc04e7dacfb9 with size 4096", "Storage object fileio/b2 exists", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "targetcli", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			segs := batchSegments(string(data))
			for i := range segs {
				segs[i] = strings.TrimSpace(segs[i])
			}
			if !slices.Equal(segs, tt.want) {
				t.Errorf("batchSegments(%s) = %q, want %q", tt.file, segs, tt.want)
			}
		})
	}
}

func TestStages(t *testing.T) {
	k := func(kinds ...OpKind) []Op {
		ops := make([]Op, len(kinds))
		for i, kd := range kinds {
			ops[i] = Op{Kind: kd}
		}
		return ops
	}
	tests := []struct {
		name  string
		ops   []Op
		valid []int
		want  [][]int
	}{
		{"creates only", k(CreateBackstore, CreateLUN, EnableTPG), []int{0, 1, 2}, [][]int{{0, 1, 2}}},
		{"deletes then creates", k(DeleteLUN, DeleteBackstore, CreateBackstore, CreateLUN), []int{0, 1, 2, 3}, [][]int{{0, 1}, {2, 3}}},
		{"interleaved", k(CreateBackstore, DeleteBackstore, CreateLUN, DisableTPG), []int{0, 1, 2, 3}, [][]int{{0}, {1}, {2}, {3}}},
		{"invalid op skipped", k(DeleteBackstore, CreateBackstore, DeleteBackstore), []int{0, 2}, [][]int{{0, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stages(tt.ops, tt.valid)
			if !slices.EqualFunc(got, tt.want, slices.Equal[[]int]) {
				t.Errorf("stages = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	size := int64(4096)
	off, on := false, true
	so := func(name, dev, wwn string, wb *bool) StorageObject {
		return StorageObject{Plugin: "fileio", Name: name, Dev: dev, WWN: wwn, Size: &size, WriteBack: wb}
	}
	state := func(enable bool, sos []StorageObject, luns ...LUN) *Config {
		return &Config{StorageObjects: sos, Targets: []Target{{Fabric: "iscsi", WWN: testIQN,
			TPGs: []TPG{{Tag: 1, Enable: Flag(enable), LUNs: luns}}}}}
	}
	empty := state(true, nil)
	withB := state(true, []StorageObject{so("b1", "/img/a", "aa", &off)})
	withBOther := state(true, []StorageObject{so("b1", "/img/other", "aa", &off)})
	withBWB := state(true, []StorageObject{so("b1", "/img/a", "aa", &on)})
	withLUN := state(true, []StorageObject{so("b1", "/img/a", "aa", &off)}, LUN{Index: 3, StorageObject: "/backstores/fileio/b1"})
	disabled := state(false, nil)

	createB := Op{Kind: CreateBackstore, Backstore: "b1", File: "/img/a", WWN: "aa"}
	createL := Op{Kind: CreateLUN, Backstore: "b1", Target: testIQN, LUN: AutoLUN}
	createL5 := Op{Kind: CreateLUN, Backstore: "b1", Target: testIQN, LUN: 5}
	deleteL := Op{Kind: DeleteLUN, Target: testIQN, LUN: 3}
	deleteB := Op{Kind: DeleteBackstore, Backstore: "b1"}
	enable := Op{Kind: EnableTPG, Target: testIQN}
	reached := func(msg string) cmdResult { return cmdResult{reached: true, msg: msg} }

	tests := []struct {
		name          string
		op            Op
		said          cmdResult
		before, after *Config
		verr          error
		want          Outcome
		errHas        string
	}{
		{"created", createB, reached("Created fileio b1 with size 4096"), empty, withB, nil, Applied, ""},
		{"exists, same file", createB, reached("Storage object fileio/b1 exists"), withB, withB, nil, AlreadyDone, ""},
		{"exists over another file", createB, reached("Storage object fileio/b1 exists"), withBOther, withBOther, nil, Failed, "over /img/other"},
		{"created but write_back on", createB, reached("Created fileio b1 with size 4096"), empty, withBWB, nil, Failed, "write_back"},
		{"no output, new", createB, reached(""), empty, withB, nil, Applied, ""},
		{"no output, was there", createB, reached(""), withB, withB, nil, AlreadyDone, ""},
		{"no output, no before state", createB, reached(""), nil, withB, nil, Applied, ""},
		{"not reached though present", createB, cmdResult{}, empty, withB, nil, NotAttempted, ""},
		{"success message but not saved", createB, reached("Created fileio b1 with size 4096"), empty, empty, nil, Failed, "not in saveconfig.json"},
		{"cannot verify", createB, reached("Created fileio b1 with size 4096"), empty, nil, ErrIncomplete, Failed, "cannot verify"},
		{"need a size", createB, cmdResult{reached: true, failed: true, msg: "Attempting to create file for new fileio backstore, need a size"}, empty, empty, nil, Failed, "need a size"},
		{"LUN created", createL, reached("Created LUN 3."), withB, withLUN, nil, Applied, ""},
		{"LUN already", createL, reached("lun for storage object fileio/b1 already exists"), withLUN, withLUN, nil, AlreadyDone, ""},
		{"LUN at another index", createL5, reached("lun for storage object fileio/b1 already exists"), withLUN, withLUN, nil, Failed, "lun3"},
		{"LUN deleted", deleteL, reached("Deleted LUN 3."), withLUN, withB, nil, Applied, ""},
		{"LUN already gone", deleteL, cmdResult{reached: true, failed: true, msg: "Invalid LUN"}, withB, withB, nil, AlreadyDone, ""},
		{"LUN delete refused", deleteL, reached("simulated failure"), withLUN, withLUN, nil, Failed, "still in saveconfig.json"},
		{"backstore gone already", deleteB, reached("No storage object named b1."), empty, empty, nil, AlreadyDone, ""},
		{"backstore deleted", deleteB, reached("Deleted storage object b1."), withLUN, empty, nil, Applied, ""},
		{"enable", enable, reached("The TPGT has been enabled."), disabled, empty, nil, Applied, ""},
		{"already enabled", enable, reached("The TPGT is already enabled."), empty, empty, nil, AlreadyDone, ""},
		{"enable did not stick", enable, reached("The TPGT has been enabled."), disabled, disabled, nil, Failed, "enable=false"},
		{"enable, no target", enable, reached("No such path /iscsi/x"), &Config{}, &Config{}, nil, Failed, "not in saveconfig.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := judge(tt.op, tt.said, tt.before, tt.after, tt.verr)
			if r.Outcome != tt.want {
				t.Fatalf("judge(%v, %+v) = %v (err %v), want %v", tt.op, tt.said, r.Outcome, r.Err, tt.want)
			}
			if r.Message != tt.said.msg {
				t.Errorf("Message = %q, want targetcli's %q", r.Message, tt.said.msg)
			}
			if (r.Err != nil) != (tt.want == Failed) {
				t.Errorf("Err = %v for outcome %v", r.Err, r.Outcome)
			}
			if tt.errHas != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.errHas)) {
				t.Errorf("Err = %v, want it to mention %q", r.Err, tt.errHas)
			}
		})
	}
}

// recorder writes an executable that logs every invocation (argv, stdin,
// TARGETCLI_HOME) to a file and prints nothing, standing in for targetcli
// where only "was it run, and with what" matters.
func recorder(t *testing.T) (bin, log string) {
	t.Helper()
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "targetcli"), filepath.Join(dir, "calls.log")
	script := "#!/bin/sh\n{ echo \"ARGV $*\"; echo \"HOME $TARGETCLI_HOME\"; cat; } >> '" + log + "'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

// TestUnsafeKeysNeverRunTargetcli: ops built from S3 keys with characters
// targetcli cannot take are refused per op, in every mode, and no process
// or request ever carries them.
func TestUnsafeKeysNeverRunTargetcli(t *testing.T) {
	const mount = "/var/lib/cps-local/boot-images/"
	keys := []string{"PE/a b.squashfs", "PE/a\nsaveconfig /tmp/x", "PE/size=1.squashfs", "PE/a,b", `PE/"q"`, "../etc/shadow", "PE/../../etc/shadow", "PE/a%b"}
	for _, mode := range []Mode{Batch, OneShot, Daemon} {
		t.Run(string(mode), func(t *testing.T) {
			bin, log := recorder(t)
			sock := filepath.Join(t.TempDir(), "targetclid.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			accepted := make(chan struct{}, 1)
			go func() {
				if c, err := l.Accept(); err == nil {
					accepted <- struct{}{}
					c.Close()
				}
			}()
			home := t.TempDir()
			d, err := New(DriverConfig{Mode: mode, Binary: bin, Socket: sock, Home: home, SaveFile: filepath.Join(t.TempDir(), "saveconfig.json")}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ops []Op
			for i, k := range keys {
				ops = append(ops, Op{Kind: CreateBackstore, Backstore: "b" + string(rune('a'+i)), File: mount + k, WWN: "abc"})
			}
			ops = append(ops, Op{Kind: DeleteBackstore, Backstore: "x y"}, Op{Kind: CreateLUN, Backstore: "b=1", Target: testIQN},
				Op{Kind: EnableTPG, Target: testIQN + " extra"})
			res, err := d.Apply(t.Context(), ops)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for i, r := range res {
				if r.Outcome != Failed || !errors.Is(r.Err, ErrUnsafeArgument) {
					t.Errorf("op %d (%q): %v, %v; want failed with ErrUnsafeArgument", i, ops[i].File, r.Outcome, r.Err)
				}
			}
			if s := d.Stats(); s.Processes != 0 || s.Requests != 0 {
				t.Errorf("Stats = %+v, want no process and no request", s)
			}
			if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
				data, _ := os.ReadFile(log)
				t.Errorf("targetcli was run:\n%s", data)
			}
			select {
			case <-accepted:
				t.Error("targetclid got a connection")
			default:
			}
		})
	}
}

// TestPrivateHome: every process gets the driver's own TARGETCLI_HOME,
// whatever the agent's environment says.
func TestPrivateHome(t *testing.T) {
	t.Setenv("TARGETCLI_HOME", "/root/.targetcli")
	bin, log := recorder(t)
	d, err := New(DriverConfig{Mode: OneShot, Binary: bin, SaveFile: filepath.Join(t.TempDir(), "saveconfig.json")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	home := d.cfg.Home
	if err := d.Save(t.Context()); err != nil {
		t.Fatalf("Save: %v", err)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := "ARGV saveconfig " + d.cfg.SaveFile + "\nHOME " + home + "\n"
	if string(data) != want {
		t.Errorf("recorded %q, want %q", data, want)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private home %s still exists after Close (stat: %v)", home, err)
	}
}

// fakeDaemon serves the targetclid wire protocol with a fixed reply per
// connection, to test the client's framing and error paths.
func fakeDaemon(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return sock
}

func TestDaemonClient(t *testing.T) {
	reply := func(out string, charLen int) func(net.Conn) {
		return func(c net.Conn) {
			buf := make([]byte, 65535)
			n, _ := c.Read(buf)
			if !strings.HasPrefix(string(buf[:n]), "cd /%") {
				return
			}
			_ = binary.Write(c, binary.NativeEndian, int32(charLen))
			_, _ = io.WriteString(c, out)
			n, _ = c.Read(buf) // "-END@OF@DATA-", then the daemon closes
			_ = n
		}
	}
	tests := []struct {
		name    string
		serve   func(net.Conn)
		timeout time.Duration
		want    string
		errHas  string
	}{
		{"ascii", reply("Created LUN 0.\n", 15), 0, "Created LUN 0.\n", ""},
		{"length counts characters", reply("Deleted LUN 1 \u2014 ok\n", len([]rune("Deleted LUN 1 \u2014 ok\n"))), 0, "Deleted LUN 1 \u2014 ok\n", ""},
		{"empty reply", reply("", 0), 0, "", ""},
		{"closed after the request", func(c net.Conn) { _, _ = c.Read(make([]byte, 65535)) }, 0, "", "reply length"},
		{"hangs", func(c net.Conn) { time.Sleep(2 * time.Second) }, 100 * time.Millisecond, "", "took longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := fakeDaemon(t, tt.serve)
			d, err := New(DriverConfig{Mode: Daemon, Socket: sock, Timeout: tt.timeout}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.request(t.Context(), "/iscsi/x/tpg1/luns create /backstores/fileio/b")
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("request = %q, %v; want an error mentioning %q", got, err, tt.errHas)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("request = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("no daemon", func(t *testing.T) {
		d, err := New(DriverConfig{Mode: Daemon, Socket: filepath.Join(t.TempDir(), "none.sock")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		res, err := d.Apply(ctx, []Op{{Kind: EnableTPG, Target: testIQN}})
		if err == nil || !strings.Contains(err.Error(), "start targetclid") {
			t.Fatalf("Apply error = %v, want advice to start targetclid", err)
		}
		if res[0].Outcome != NotAttempted {
			t.Errorf("outcome = %v, want not-attempted", res[0].Outcome)
		}
	})
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  DriverConfig
	}{
		{"mode", DriverConfig{Mode: "parallel"}},
		{"save file with space", DriverConfig{SaveFile: "/etc/target/save config.json", Home: "/tmp"}},
		{"relative save file", DriverConfig{SaveFile: "saveconfig.json", Home: "/tmp"}},
		{"env", DriverConfig{Env: []string{"NOEQUALS"}, Home: "/tmp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, err := New(tt.cfg, nil); err == nil {
				d.Close()
				t.Errorf("New(%+v) succeeded, want an error", tt.cfg)
			}
		})
	}
}

// TestSavedMessage: only targetcli's line for the driver's own file counts
// as its save. Batch targetcli's auto-save at end of input prints the same
// words for rtslib's default file (issue 18; real output of targetcli-fb
// 2.1.53 on Debian 12).
func TestSavedMessage(t *testing.T) {
	d := &Driver{cfg: DriverConfig{SaveFile: "/etc/target/saveconfig.json"}}
	tests := []struct {
		name string
		out  string
		want bool
	}{
		{"own save", "Configuration saved to /etc/target/saveconfig.json\n", true},
		{"own save after the backup line", "Last 10 configs saved in /etc/target/backup/.\nConfiguration saved to /etc/target/saveconfig.json", true},
		{"auto-save to Debian's default", "exit\nGlobal pref auto_save_on_exit=true\nConfiguration saved to /etc/rtslib-fb-target/saveconfig.json\n", false},
		{"a longer path", "Configuration saved to /etc/target/saveconfig.json.bak\n", false},
		{"nothing", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := savedMessage(tt.out, d.cfg.SaveFile); got != tt.want {
				t.Errorf("savedMessage(%q) = %v, want %v", tt.out, got, tt.want)
			}
		})
	}
}

// TestNoAutoSaveLine: the line that starts every batch passes the grammar
// check like every other command the driver builds.
func TestNoAutoSaveLine(t *testing.T) {
	if err := noAutoSave.verify(); err != nil {
		t.Fatal(err)
	}
	if got, want := noAutoSave.String(), "set global auto_save_on_exit=false"; got != want {
		t.Errorf("noAutoSave = %q, want %q", got, want)
	}
}

// TestException: the exception line of a real traceback (targetcli-fb
// 2.1.53, a backing file on a read-only mount) is what a failed op says.
func TestException(t *testing.T) {
	tb := "OSError: [Errno 30] Read-only file system\n\nDuring handling of the above exception, another exception occurred:\n\n" +
		"Traceback (most recent call last):\n  File \"/usr/bin/targetcli\", line 329, in <module>\n    main()\n" +
		"  File \"/usr/lib/python3/dist-packages/rtslib_fb/utils.py\", line 78, in fwrite\n    with open(path, 'w') as file_fd:\n" +
		"OSError: [Errno 30] Read-only file system\n"
	if got, want := exception(tb), "OSError: [Errno 30] Read-only file system"; got != want {
		t.Errorf("exception(traceback) = %q, want %q", got, want)
	}
	if got, want := gist(tb), "OSError: [Errno 30] Read-only file system"; got != want {
		t.Errorf("gist(traceback) = %q, want %q", got, want)
	}
	if got, want := exception("No storage object named x."), "No storage object named x."; got != want {
		t.Errorf("exception(message) = %q, want %q", got, want)
	}
}

func TestWithoutPrefsWarning(t *testing.T) {
	for in, want := range map[string]string{
		"Warning: Could not load preferences file /tmp/h/prefs.bin.\nStorage object fileio/a exists\n": "Storage object fileio/a exists\n",
		"Storage object fileio/a exists\n":                                            "Storage object fileio/a exists\n",
		"Created fileio a.\nWarning: Could not load preferences file /x/prefs.bin.\n": "Created fileio a.\nWarning: Could not load preferences file /x/prefs.bin.\n",
	} {
		if got := withoutPrefsWarning(in); got != want {
			t.Errorf("withoutPrefsWarning(%q) = %q, want %q", in, got, want)
		}
	}
}
