//go:build kernel

package conformance

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

// Fixed names and paths, the same for both sides so that their files
// compare equal.
const (
	iqn         = "iqn.2023-06.csm.iscsi:ncn-w001"
	debianSave  = "/etc/rtslib-fb-target/saveconfig.json" // Debian's default save file
	realBin     = "/usr/bin/targetcli"
	realDaemon  = "/usr/bin/targetclid"
	realSocket  = "/var/run/targetclid.sock"
	roMount     = "/mnt/sbps-conformance-ro" // a tmpfs remounted read-only, holding r.img
	imageSize   = 1 << 20
	daemonStart = 60 * time.Second
)

// provision is how CSM's playbook sets the node's target up.
var provision = []string{
	"/iscsi create " + iqn,
	"/iscsi/" + iqn + "/tpg1 set attribute generate_node_acls=1 demo_mode_write_protect=1 prod_mode_write_protect=1 authentication=0 cache_dynamic_acls=1",
}

var roOnce = sync.OnceValue(func() error {
	if err := os.MkdirAll(roMount, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", roMount, "tmpfs", 0, "size=8m"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(roMount, "r.img"), make([]byte, imageSize), 0o644); err != nil {
		return err
	}
	return syscall.Mount("tmpfs", roMount, "tmpfs", syscall.MS_REMOUNT|syscall.MS_RDONLY, "size=8m")
})

// side is one targetcli implementation under test, with its targetclid
// running for the whole test.
type side struct {
	name   string // "real" or "sim"
	bin    string // targetcli
	env    []string
	socket string   // its targetclid's socket
	subst  []string // side-specific strings in output, and their placeholders
}

// fresh clears LIO and then runs lines, through targetclid: a request costs
// a fraction of a targetcli process, and clearconfig rebuilds the daemon's
// tree, so that a daemon-mode row starts from a tree that is not stale.
func (s *side) fresh(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range append([]string{"clearconfig confirm=True"}, lines...) {
		out := request(t, s.socket, l)
		if strings.Contains(out, "Traceback") || strings.Contains(out, "rror") || strings.Contains(out, "No such") || strings.Contains(out, "not found") {
			t.Fatalf("%s: setting the row up, %q answered %q", s.name, l, out)
		}
	}
}

// world is one row's run on one side: its work directory, images and the
// side.
type world struct {
	*side
	dir string // work directory (per row and mode, shared by both sides)
	img string // image directory: a.img, b.img, c.img, x.img
}

// expand replaces {T}, {IMG}, {RO} and {WORK} in s.
func (w *world) expand(s string) string {
	return strings.NewReplacer("{T}", iqn, "{IMG}", w.img, "{RO}", roMount, "{WORK}", w.dir).Replace(s)
}

func newWorld(t *testing.T, s *side, dir string) *world {
	t.Helper()
	w := &world{side: s, dir: dir, img: filepath.Join(dir, "img")}
	os.RemoveAll(w.img)
	if err := os.MkdirAll(w.img, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c", "x"} {
		if err := os.WriteFile(filepath.Join(w.img, n+".img"), make([]byte, imageSize), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Both sides start without a saved configuration or backups.
	for _, d := range []string{"/etc/rtslib-fb-target", "/etc/target"} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// startSides prepares the guest (the read-only mount) and both sides, and
// starts their targetclid until the test ends.
func startSides(t *testing.T) []*side {
	t.Helper()
	if err := roOnce(); err != nil {
		t.Fatalf("mount a read-only tmpfs at %s in the guest: %v", roMount, err)
	}
	return []*side{startReal(t), startSim(t)}
}

func startReal(t *testing.T) *side {
	t.Helper()
	// targetclid on a fresh TARGETCLI_HOME loses targetcli's default
	// preferences (a new TPG stays disabled): give it a home where
	// targetcli ran, as root's ~/.targetcli on a node.
	home := filepath.Join(t.TempDir(), "daemon-home")
	if r := runProc(t, realBin, append(os.Environ(), "TARGETCLI_HOME="+home), "", "ls"); r.exit != 0 {
		t.Fatalf("targetcli ls: exit %d: %s%s", r.exit, r.stdout, r.stderr)
	}
	cmd := exec.Command(realDaemon)
	cmd.Env = append(os.Environ(), "TARGETCLI_HOME="+home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", realDaemon, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	waitSocket(t, realSocket, exited, &out)
	return &side{name: "real", bin: realBin, socket: realSocket}
}

func startSim(t *testing.T) *side {
	t.Helper()
	bin := os.Getenv(simEnv)
	if bin == "" {
		t.Fatalf("%s is not set: run this package with go test -tags kernel, whose TestMain builds the simulator", simEnv)
	}
	node, err := sim.NewNode(filepath.Join(t.TempDir(), "simnode"), sim.NodeOptions{SaveFile: debianSave, Seed: &lio.Config{}, NoInitialSave: true})
	if err != nil {
		t.Fatalf("sim.NewNode: %v", err)
	}
	socket := filepath.Join(t.TempDir(), "targetclid.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := node.ServeDaemon(ctx, socket); err != nil {
			t.Errorf("simulated targetclid: %v", err)
		}
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	var out bytes.Buffer
	waitSocket(t, socket, done, &out)
	return &side{name: "sim", bin: bin, socket: socket, env: []string{sim.EnvDir + "=" + node.Dir()}, subst: []string{node.Dir(), "<simnode>"}}
}

func waitSocket(t *testing.T, socket string, exited <-chan struct{}, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(daemonStart)
	for {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("targetclid stopped before serving %s: %s", socket, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("targetclid did not serve %s within %v: %s", socket, daemonStart, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type procResult struct {
	stdout, stderr string
	exit           int
}

func runProc(t *testing.T, bin string, env []string, stdin string, args ...string) procResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return procResult{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

// runCombined runs bin with stdout and stderr on one pipe, as the driver
// runs a batch.
func runCombined(t *testing.T, bin string, env []string, stdin string, args ...string) procResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return procResult{stdout: out.String(), exit: cmd.ProcessState.ExitCode()}
}

// request sends one targetclid request (the official client's "cd /%"
// prefix, then the commands) and returns the reply.
func request(t *testing.T, socket, cmds string) string {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("connect to targetclid at %s: %v", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.WriteString(c, "cd /%"+cmds); err != nil {
		t.Fatalf("send to targetclid: %v", err)
	}
	var n int32
	if err := binary.Read(c, binary.NativeEndian, &n); err != nil {
		t.Fatalf("read targetclid's reply length for %q: %v", cmds, err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read targetclid's reply to %q: %v", cmds, err)
	}
	io.WriteString(c, "-END@OF@DATA-")
	return string(buf)
}

// promptRE is configshell's prompt at the start of a line (as lio reads it).
var promptRE = regexp.MustCompile(`(?m)^/[^\s]*> `)

// segments splits a batch transcript at the prompts; the banner before the
// first prompt is returned apart.
func segments(out string) (banner string, segs []string) {
	locs := promptRE.FindAllStringIndex(out, -1)
	if len(locs) == 0 {
		return out, nil
	}
	banner = out[:locs[0][0]]
	for i, loc := range locs {
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		segs = append(segs, out[loc[1]:end])
	}
	return banner, segs
}

var tracebackRE = regexp.MustCompile(`(?s)Traceback \(most recent call last\):\n.*?\n(\w+(?:Error|Exception)?: )`)

// normalise makes output comparable between the sides: side-specific paths
// become placeholders, and a Python traceback keeps only its first and last
// line (lio/sim prints a shorter stack: a documented difference).
func normalise(s *side, homes []string, out string) string {
	pairs := append([]string{}, s.subst...)
	for _, h := range homes {
		pairs = append(pairs, h, "<home>")
	}
	if len(pairs) > 0 {
		out = strings.NewReplacer(pairs...).Replace(out)
	}
	out = tracebackRE.ReplaceAllString(out, "Traceback (most recent call last):\n  …\n$1")
	return strings.TrimSpace(out)
}
