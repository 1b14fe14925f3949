//go:build kernel

package restore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
	"github.com/sbps-marshal/sbps-marshal/uml"
)

const (
	iqn       = "iqn.2023-06.csm.iscsi:ncn-w001"
	targetcli = "/usr/bin/targetcli"
	targetctl = "/usr/bin/targetctl"
	wwn       = "0123456789abcdef0123456789abcde"
)

func TestMain(m *testing.M) {
	if uml.InGuest() {
		os.Exit(m.Run())
	}
	uml.TestMain(m, nil)
}

// provision makes LIO as CSM's playbook does, plus one fileio LUN (lun5)
// over a file, and returns the guard that keeps file.
func provision(t *testing.T) (g *lio.Guard, file string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "image.squashfs")
	if err := os.WriteFile(img, bytes.Repeat([]byte("sbps"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "target", "saveconfig.json")
	run(t, "clearconfig confirm=True")
	run(t, "/iscsi create "+iqn)
	run(t, "/iscsi/"+iqn+"/tpg1 set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1")
	d, err := lio.New(lio.DriverConfig{Mode: lio.Batch, Binary: targetcli, SaveFile: lio.StagingFile(file), Home: t.TempDir(), Timeout: 2 * time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if g, err = lio.NewGuard(d, file, iqn); err != nil {
		t.Fatal(err)
	}
	res, err := g.Apply(t.Context(), []lio.Op{
		{Kind: lio.CreateBackstore, Backstore: "restoretest", File: img, WWN: wwn},
		{Kind: lio.CreateLUN, Backstore: "restoretest", Target: iqn, LUN: 5},
	})
	if err != nil {
		t.Fatalf("provisioning through the guard: %v", err)
	}
	for _, r := range res {
		if !r.OK() {
			t.Fatalf("provisioning: %s: %v %s", r.Op, r.Err, r.Message)
		}
	}
	return g, file
}

func run(t *testing.T, line string) {
	t.Helper()
	out, err := exec.Command(targetcli, strings.Fields(line)...).CombinedOutput()
	if err != nil {
		t.Fatalf("targetcli %s: %v\n%s", line, err, out)
	}
}

// liveLUN reports whether the kernel has lun5 of the node's tpg1 backed
// by the test's backstore (configfs, not targetcli).
func liveLUN() bool {
	link := "/sys/kernel/config/target/iscsi/" + iqn + "/tpgt_1/lun/lun_5"
	entries, err := os.ReadDir(link)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 {
			dst, _ := os.Readlink(filepath.Join(link, e.Name()))
			return strings.HasSuffix(dst, "/restoretest")
		}
	}
	return false
}

// TestClearedLIOKeepsSaveconfig (a): the kernel's LIO emptied with
// clearconfig while saveconfig.json keeps the target: no save and no apply
// through the guard changes a byte of the file; the refusal names the
// target and the fix.
func TestClearedLIOKeepsSaveconfig(t *testing.T) {
	g, file := provision(t)
	before, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !liveLUN() {
		t.Fatal("setup: lun5 not in configfs")
	}
	// Check (`sbps-marshal status`, doctor) saves the live state with the
	// real targetcli to a file of its own, and leaves none behind.
	if err := g.Check(t.Context()); err != nil {
		t.Errorf("Check with LIO restored = %v, want nil", err)
	}
	run(t, "clearconfig confirm=True")
	if err := g.Check(t.Context()); !errors.Is(err, lio.ErrNotRestored) {
		t.Errorf("Check after clearconfig = %v, want ErrNotRestored", err)
	}
	if left, _ := filepath.Glob(lio.StagingFile(file) + "*"); len(left) > 0 {
		t.Errorf("Check left %q behind", left)
	}
	err = g.Save(t.Context())
	if !errors.Is(err, lio.ErrNotRestored) || !strings.Contains(err.Error(), "target "+iqn) || !strings.Contains(err.Error(), "systemctl start target.service") {
		t.Errorf("Save after clearconfig = %v, want ErrNotRestored naming %s and the fix", err, iqn)
	}
	_, err = g.Apply(t.Context(), []lio.Op{{Kind: lio.CreateLUN, Backstore: "restoretest", Target: iqn, LUN: 6}})
	if !errors.Is(err, lio.ErrNotRestored) {
		t.Errorf("Apply after clearconfig = %v, want ErrNotRestored", err)
	}
	after, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("saveconfig.json changed after clearconfig (%d -> %d bytes):\n%s", len(before), len(after), after)
	}
}

// TestTargetServiceStandInRestores (b): `systemctl is-active
// target.service` answers inactive (exit 3); `systemctl start` runs the
// real `targetctl restore <file>`: the target and lun5 are back in the
// kernel, and saving through the guard is allowed again.
func TestTargetServiceStandInRestores(t *testing.T) {
	g, file := provision(t)
	run(t, "clearconfig confirm=True")
	if liveLUN() {
		t.Fatal("setup: lun5 still in configfs after clearconfig")
	}
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{
		Start: []string{targetctl, "restore", file},
		Stop:  []string{targetctl, "clear"},
	})
	u := systemctl.Unit{Bin: fake.Path, Name: "target.service", Timeout: 2 * time.Minute}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if s, err := u.IsActive(ctx); err != nil || s != "inactive" {
		t.Fatalf("IsActive = %q, %v, want inactive", s, err)
	}
	if err := u.Start(ctx); err != nil {
		t.Fatalf("Start (targetctl restore %s): %v", file, err)
	}
	if !liveLUN() {
		t.Fatal("lun5 not back in configfs after targetctl restore")
	}
	if err := g.Save(ctx); err != nil {
		t.Errorf("Save after the restore = %v, want nil", err)
	}
	c, err := lio.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	tgt, ok := c.Target(iqn)
	if !ok {
		t.Fatalf("saveconfig.json lacks %s after the restore", iqn)
	}
	tpg, _ := tgt.TPG(1)
	if l, ok := tpg.LUNFor("/backstores/fileio/restoretest"); !ok || l.Index != 5 {
		t.Errorf("saveconfig.json after the restore: lun for restoretest = %+v, %v, want lun5", l, ok)
	}
	if v, _ := tpg.Attr("demo_mode_write_protect"); v != 1 {
		t.Errorf("demo_mode_write_protect = %d after the restore, want 1", v)
	}
}
