//go:build kernel

package lio

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/uml"
)

func TestMain(m *testing.M) { uml.TestMain(m, nil) }

// Paths of the real node: the agent's LIO_SAVE_FILE default (SUSE's and
// upstream's file) and Debian's rtslib default, which batch targetcli's
// auto-save at end of input writes.
const (
	saveFile      = lio.DefaultSaveFile
	debianDefault = "/etc/rtslib-fb-target/saveconfig.json"
	targetcli     = "/usr/bin/targetcli"
	daemonSocket  = lio.DefaultSocket
	hostname      = "ncn-w001"
)

// node is the guest's LIO, provisioned as CSM's playbook does.
type node struct {
	iqn    string
	images string // folder of image files, on the guest's overlay
}

// newNode clears LIO and both save files, then provisions the node's
// target: `/iscsi create iqn.2023-06.csm.iscsi:<host>` and tpg1's write
// protection and generated ACLs (CSM.md).
func newNode(t testing.TB) *node {
	t.Helper()
	if !uml.InGuest() {
		t.Fatal("this test changes the kernel's LIO: it runs only inside the guest (uml.TestMain)")
	}
	// The guest boots without a hostname ("(none)"); give it a worker's.
	if err := syscall.Sethostname([]byte(hostname)); err != nil {
		t.Fatal(err)
	}
	n := &node{iqn: "iqn.2023-06.csm.iscsi:" + hostname}
	n.images = filepath.Join("/srv/e2e-lio", strings.NewReplacer("/", "-").Replace(t.Name()))
	clearLIO(t)
	runBatch(t, "/iscsi create "+n.iqn,
		"/iscsi/"+n.iqn+"/tpg1 set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1")
	for _, f := range []string{saveFile, debianDefault} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(n.images, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clearLIO(t) })
	return n
}

// clearLIO removes every LIO object.
func clearLIO(t testing.TB) {
	t.Helper()
	runBatch(t, "clearconfig confirm=True")
}

// runBatch runs lines in one real targetcli process of a private home,
// with auto-save off, and fails the test if targetcli does.
func runBatch(t testing.TB, lines ...string) string {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(targetcli)
	cmd.Env = append(os.Environ(), "TARGETCLI_HOME="+home)
	cmd.Stdin = strings.NewReader("set global auto_save_on_exit=false\n" + strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "Traceback") {
		t.Fatalf("targetcli with %q: %v\n%s", lines, err, out)
	}
	return string(out)
}

// image writes a file of size bytes under dir and returns the op that
// creates its backstore, named and numbered as the agent names a PE image.
func image(t testing.TB, dir, name string, size int64) (string, naming.ID) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, naming.For(naming.PEInput("boot-images", "PE/"+name))
}

// readOnlyDir returns a fresh tmpfs mounted read-only, holding the files
// names (1 MiB each); it is unmounted at the end of the test, after LIO
// let go of its files.
func readOnlyDir(t testing.TB, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		clearLIO(t)
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	for _, name := range names {
		image(t, dir, name, 1<<20)
	}
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
}

// readOnlyBind makes dir read-only for the rest of the test (a bind mount
// of itself, as systemd's ProtectSystem=strict does to /etc).
func readOnlyBind(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", dir, err)
	}
}

// projectOps are the driver ops that project file as a LUN of n's tpg1
// (LIO picks the index).
func (n *node) projectOps(file string, id naming.ID) (lio.Op, lio.Op) {
	return lio.Op{Kind: lio.CreateBackstore, Backstore: id.Name, File: file, WWN: id.WWN},
		lio.Op{Kind: lio.CreateLUN, Backstore: id.Name, Target: n.iqn, TPG: 1, LUN: lio.AutoLUN}
}

// driverTimeout is newDriver's bound on one targetcli process or
// targetclid request (0: lio.DefaultTimeout); BenchmarkModes raises it.
var driverTimeout time.Duration

// newDriver is a real lio.Driver of mode on the node's default save file;
// Daemon mode needs startTargetclid first.
func newDriver(t testing.TB, mode lio.Mode) *lio.Driver {
	t.Helper()
	d, err := lio.New(lio.DriverConfig{Mode: mode, Binary: targetcli, SaveFile: saveFile, Socket: daemonSocket, Home: t.TempDir(), Timeout: driverTimeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// How long startTargetclid waits for targetclid's first answer, and for
// each probe (a saveconfig): BenchmarkModes raises both, since an apply
// of one change over 1,000 LUNs takes over a minute in UML.
var (
	targetclidWait  = 60 * time.Second
	targetclidProbe = 10 * time.Second
)

// startTargetclid starts the real targetclid for the rest of the test and
// waits until it answers.
func startTargetclid(t testing.TB) {
	t.Helper()
	os.Remove(daemonSocket)
	cmd := exec.Command("/usr/bin/targetclid")
	cmd.Env = append(os.Environ(), "TARGETCLI_HOME="+t.TempDir())
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start targetclid: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		os.Remove(daemonSocket)
	})
	probe, err := lio.New(lio.DriverConfig{Mode: lio.Daemon, Socket: daemonSocket, SaveFile: saveFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(targetclidWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), targetclidProbe)
		err := probe.Save(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("targetclid did not answer within %v: %v\n%s", targetclidWait, err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// saved reads the driver's save file.
func saved(t testing.TB) *lio.Config {
	t.Helper()
	c, err := lio.Load(saveFile)
	if err != nil {
		t.Fatalf("read %s: %v", saveFile, err)
	}
	return c
}

func outcomes(res []lio.Result) string {
	var b strings.Builder
	for _, r := range res {
		fmt.Fprintf(&b, "\n  %s: %s", r.Op, r.Outcome)
		if r.Err != nil {
			fmt.Fprintf(&b, " (%v)", r.Err)
		}
	}
	return b.String()
}
