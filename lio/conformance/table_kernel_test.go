//go:build kernel

package conformance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Ops and setup lines used by several rows.
func createBS(name, file, wwn string) lio.Op {
	return lio.Op{Kind: lio.CreateBackstore, Backstore: name, File: file, WWN: wwn}
}

func createLUN(name string, index int) lio.Op {
	return lio.Op{Kind: lio.CreateLUN, Backstore: name, Target: iqn, LUN: index}
}

func bsLine(name, file, wwn string) string {
	return "/backstores/fileio create " + name + " " + file + " write_back=false wwn=" + wwn
}

func lunLine(name, extra string) string {
	l := "/iscsi/{T}/tpg1/luns create /backstores/fileio/" + name
	if extra != "" {
		l += " " + extra
	}
	return l + " add_mapped_luns=false"
}

const tpg = "/iscsi/{T}/tpg1"

// rows is the table: every command form lio.Driver emits, and the forms
// CSM provisions a node with, with the failures the driver has to read.
var rows = []row{
	// fileio create
	{
		name: "fileio-create",
		ops:  []lio.Op{createBS("a", "{IMG}/a.img", "aaaa")},
		msgs: []string{"Created fileio a with size 1048576"},
		want: []lio.Outcome{lio.Applied},
	},
	{
		name:  "fileio-create-duplicate-name",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		ops:   []lio.Op{createBS("a", "{IMG}/b.img", "bbbb")},
		exits: []int{1},
		msgs:  []string{"Storage object fileio/a exists"},
		want:  []lio.Outcome{lio.Failed},
		check: func(t *testing.T, c *runContext) {
			// The error an operator reads must carry targetcli's refusal,
			// not the preferences warning a fresh TARGETCLI_HOME prints
			// first on stdout.
			if e := at(c.o.errs, 0); !strings.Contains(e, "Storage object fileio/a exists") {
				t.Errorf("%s %s: the driver's error is %q; want it to name targetcli's refusal \"Storage object fileio/a exists\"", c.w.name, c.mode, e)
			}
		},
	},
	{
		// targetcli compares the file with every backstore's before it
		// looks at the name.
		name:  "fileio-create-exists-already",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		ops:   []lio.Op{createBS("a", "{IMG}/a.img", "aaaa")},
		exits: []int{1},
		msgs:  []string{"storage object for {IMG}/a.img already exists: a"},
		want:  []lio.Outcome{lio.AlreadyDone},
	},
	{
		name:  "fileio-create-same-file-twice",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		ops:   []lio.Op{createBS("b", "{IMG}/a.img", "bbbb")},
		exits: []int{1},
		msgs:  []string{"storage object for {IMG}/a.img already exists: a"},
		want:  []lio.Outcome{lio.Failed},
	},
	{
		name:  "fileio-create-missing-file",
		ops:   []lio.Op{createBS("m", "{IMG}/missing.img", "dddd")},
		exits: []int{1},
		msgs:  []string{"Attempting to create file for new fileio backstore, need a size"},
		want:  []lio.Outcome{lio.Failed},
		check: func(t *testing.T, c *runContext) {
			if _, err := os.Stat(filepath.Join(c.w.img, "missing.img")); err == nil {
				t.Errorf("%s %s: fileio create without a size created the missing file", c.w.name, c.mode)
			}
		},
	},
	{
		// The kernel opens the backing file O_RDWR even with
		// write_back=false. The failure of one image must not hold
		// back the next one (in batch mode it does: issue 18).
		name:  "fileio-create-read-only-mount",
		ops:   []lio.Op{createBS("r", "{RO}/r.img", "eeee"), createBS("b", "{IMG}/b.img", "bbbb")},
		exits: []int{1, 0},
		crash: true,
		msgs:  []string{"[Errno 30] Read-only file system", "Created fileio b with size 1048576"},
		want:  []lio.Outcome{lio.Failed, lio.Applied},
	},
	{
		// A backstore whose file was deleted breaks every later fileio
		// create (os.path.samefile raises).
		name:  "fileio-create-after-backing-file-deleted",
		setup: []string{bsLine("x", "{IMG}/x.img", "ffff")},
		prep: func(t *testing.T, w *world) {
			if err := os.Remove(filepath.Join(w.img, "x.img")); err != nil {
				t.Fatal(err)
			}
		},
		ops:   []lio.Op{createBS("a", "{IMG}/a.img", "aaaa")},
		exits: []int{1},
		crash: true,
		msgs:  []string{"[Errno 2] No such file or directory: '{IMG}/x.img'"},
		want:  []lio.Outcome{lio.Failed},
	},
	// fileio delete
	{
		name:  "fileio-delete-removes-its-luns",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), bsLine("b", "{IMG}/b.img", "bbbb"), lunLine("a", ""), lunLine("b", "")},
		ops:   []lio.Op{{Kind: lio.DeleteBackstore, Backstore: "a"}},
		msgs:  []string{"Deleted storage object a."},
		want:  []lio.Outcome{lio.Applied},
	},
	{
		name:  "fileio-delete-missing",
		ops:   []lio.Op{{Kind: lio.DeleteBackstore, Backstore: "zz"}},
		exits: []int{1},
		msgs:  []string{"No storage object named zz."},
		want:  []lio.Outcome{lio.AlreadyDone},
	},
	// luns create and delete
	{
		name:  "lun-create-lowest-free",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), bsLine("b", "{IMG}/b.img", "bbbb"), lunLine("a", "lun=1")},
		ops:   []lio.Op{createLUN("b", lio.AutoLUN)},
		msgs:  []string{"Created LUN 0."},
		want:  []lio.Outcome{lio.Applied},
	},
	{
		name:  "lun-create-at-index",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		ops:   []lio.Op{createLUN("a", 5)},
		msgs:  []string{"Created LUN 5."},
		want:  []lio.Outcome{lio.Applied},
	},
	{
		// saveconfig.json lists storage objects and LUNs newest first.
		name:  "newest-first-order",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), bsLine("b", "{IMG}/b.img", "bbbb"), lunLine("a", "lun=0"), lunLine("b", "lun=2")},
		ops:   []lio.Op{createBS("c", "{IMG}/c.img", "cccc"), createLUN("c", 1)},
		msgs:  []string{"Created fileio c with size 1048576", "Created LUN 1."},
		want:  []lio.Outcome{lio.Applied, lio.Applied},
		check: func(t *testing.T, c *runContext) {
			cfg, err := lio.Load(c.saveFile())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, so := range cfg.StorageObjects {
				names = append(names, so.Name)
			}
			var idx []int
			if tg, ok := cfg.Target(iqn); ok {
				if g, ok := tg.TPG(1); ok {
					for _, l := range g.LUNs {
						idx = append(idx, l.Index)
					}
				}
			}
			if strings.Join(names, ",") != "c,b,a" || len(idx) != 3 || idx[0] != 1 || idx[1] != 2 || idx[2] != 0 {
				t.Errorf("%s %s: storage objects %v and LUNs %v in saveconfig.json; want newest first: [c b a] and [1 2 0]", c.w.name, c.mode, names, idx)
			}
		},
	},
	{
		name:  "lun-create-exists-already",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), lunLine("a", "")},
		ops:   []lio.Op{createLUN("a", lio.AutoLUN)},
		exits: []int{1},
		msgs:  []string{"lun for storage object fileio/a already exists"},
		want:  []lio.Outcome{lio.AlreadyDone},
	},
	{
		name:  "lun-create-index-taken",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), bsLine("b", "{IMG}/b.img", "bbbb"), lunLine("a", "lun=0")},
		ops:   []lio.Op{createLUN("b", 0)},
		exits: []int{1},
		want:  []lio.Outcome{lio.Failed},
	},
	{
		name:  "lun-delete",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa"), lunLine("a", "lun=3")},
		ops:   []lio.Op{{Kind: lio.DeleteLUN, Target: iqn, LUN: 3}},
		msgs:  []string{"Deleted LUN 3."},
		want:  []lio.Outcome{lio.Applied},
	},
	{
		name:  "lun-delete-missing",
		ops:   []lio.Op{{Kind: lio.DeleteLUN, Target: iqn, LUN: 9}},
		exits: []int{1},
		msgs:  []string{"Invalid LUN"},
		want:  []lio.Outcome{lio.AlreadyDone},
	},
	{
		name:  "lun-create-lun-abc",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		lines: []string{lunLine("a", "lun=abc")},
		exits: []int{1},
		crash: true,
		msgs:  []string{"invalid literal for int() with base 10: 'abc'"},
	},
	{
		// One process that deletes a backstore and then creates a LUN
		// keeps the old LUN's node in its tree.
		name:      "stale-tree-sibling",
		setup:     []string{bsLine("a", "{IMG}/a.img", "aaaa"), lunLine("a", "")},
		lines:     []string{"/backstores/fileio delete a", bsLine("c", "{IMG}/c.img", "cccc"), lunLine("c", "")},
		msgs:      []string{"Deleted storage object a.", "Created fileio c with size 1048576", "Created LUN 0."},
		batchExit: 1,
		check: func(t *testing.T, c *runContext) {
			if c.mode == lio.OneShot {
				return
			}
			if m := at(c.o.msgs, 2); !strings.Contains(m, "Name 'lun0' already used by a sibling.") {
				t.Errorf("%s %s: a LUN created after a delete in the same process: %q; want the stale tree's \"Name 'lun0' already used by a sibling.\"", c.w.name, c.mode, m)
			}
			if c.mode == lio.Batch && c.o.exits[0] != 1 {
				t.Errorf("%s batch: exit %d after the ValueError, want 1", c.w.name, c.o.exits[0])
			}
		},
	},
	// tpg enable and disable
	{
		name: "tpg-disable",
		ops:  []lio.Op{{Kind: lio.DisableTPG, Target: iqn}},
		msgs: []string{"The TPGT has been disabled."},
		want: []lio.Outcome{lio.Applied},
	},
	{
		name: "tpg-enable-already",
		ops:  []lio.Op{{Kind: lio.EnableTPG, Target: iqn}},
		msgs: []string{"The TPGT is already enabled."},
		want: []lio.Outcome{lio.AlreadyDone},
	},
	{
		name:  "tpg-enable",
		setup: []string{tpg + " disable"},
		ops:   []lio.Op{{Kind: lio.EnableTPG, Target: iqn}},
		msgs:  []string{"The TPGT has been enabled."},
		want:  []lio.Outcome{lio.Applied},
	},
	{
		name:  "tpg-disable-already",
		setup: []string{tpg + " disable"},
		lines: []string{tpg + " disable"},
		msgs:  []string{"The TPGT is already disabled."},
	},
	// saveconfig
	{
		name:  "saveconfig-default-file",
		setup: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		lines: []string{"saveconfig"},
		msgs:  []string{"Configuration saved to " + debianSave},
		check: func(t *testing.T, c *runContext) { folderMode(t, c, filepath.Dir(debianSave)) },
	},
	{
		// Not the default file: no backups; the folder becomes 0600.
		name: "saveconfig-to-file",
		save: "{WORK}/save/saveconfig.json",
		ops:  []lio.Op{createBS("a", "{IMG}/a.img", "aaaa")},
		want: []lio.Outcome{lio.Applied},
		check: func(t *testing.T, c *runContext) {
			folderMode(t, c, filepath.Join(c.w.dir, "save"))
		},
	},
	{
		// The driver's save cannot be written: Apply must say so in
		// every mode. Batch mode's auto-save at the end of input writes
		// Debian's default file and prints "Configuration saved to
		// /etc/rtslib-fb-target/saveconfig.json", which is not the
		// driver's save.
		name: "saveconfig-fails",
		save: "{RO}/save/saveconfig.json",
		ops:  []lio.Op{createBS("a", "{IMG}/a.img", "aaaa")},
		want: []lio.Outcome{lio.Failed},
		check: func(t *testing.T, c *runContext) {
			if c.o.applyErr == nil || !strings.Contains(c.o.applyErr.Error(), c.saveFile()) {
				t.Errorf("%s %s: Apply returned %v when its saveconfig %s failed; want an error naming the save file", c.w.name, c.mode, c.o.applyErr, c.saveFile())
			}
		},
	},
	{
		// Batch mode saves at the end of input (auto_save_on_exit) to
		// Debian's default file.
		name:  "batch-auto-save",
		lines: []string{bsLine("a", "{IMG}/a.img", "aaaa")},
		msgs:  []string{"Created fileio a with size 1048576"},
		check: func(t *testing.T, c *runContext) {
			if c.mode == lio.Batch && !strings.Contains(c.o.atExit, "Configuration saved to "+debianSave) {
				t.Errorf("%s batch: output at the end of input %q; want the auto-save to %s", c.w.name, c.o.atExit, debianSave)
			}
		},
	},
	// CSM's provisioning
	{
		name:  "iscsi-create",
		bare:  true,
		lines: []string{"/iscsi create {T}"},
		msgs:  []string{"Created target {T}.\nCreated TPG 1.\nGlobal pref auto_add_default_portal=true\nCreated default portal listening on all IPs (0.0.0.0), port 3260."},
	},
	{
		name:  "iscsi-create-exists",
		lines: []string{"/iscsi create {T}"},
		exits: []int{1},
		msgs:  []string{"This Target already exists in configFS"},
	},
	{
		name:  "tpg-set-attribute",
		bare:  true,
		setup: []string{"/iscsi create {T}"},
		lines: []string{provision[1]},
		msgs:  []string{"Parameter generate_node_acls is now '1'.\nParameter demo_mode_write_protect is now '1'.\nParameter prod_mode_write_protect is now '1'.\nParameter authentication is now '0'.\nParameter cache_dynamic_acls is now '1'."},
	},
	{
		name:  "tpg-set-attribute-unknown",
		lines: []string{tpg + " set attribute bogus=1"},
		exits: []int{1},
		msgs:  []string{"Unknown parameter bogus in group 'attribute'."},
	},
	{
		name:  "tpg-set-attribute-not-a-number",
		lines: []string{tpg + " set attribute generate_node_acls=abc"},
		exits: []int{1},
		msgs:  []string{"Not setting generate_node_acls! Syntax error, 'abc' is not a NUMBER."},
	},
}

func folderMode(t *testing.T, c *runContext, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Errorf("%s %s: %v", c.w.name, c.mode, err)
		return
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s %s: the save folder %s has mode %v after saveconfig, want 0600", c.w.name, c.mode, dir, fi.Mode().Perm())
	}
}

// TestConformance runs the table: every row in one-shot, batch and
// targetclid mode, against real targetcli and the simulator.
func TestConformance(t *testing.T) {
	runTable(t, rows)
}
