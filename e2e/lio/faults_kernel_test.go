//go:build kernel

package lio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

// TestBatchSavesOnce (issue 18, "batch mode saves twice"): a batch apply
// writes the driver's save file and nothing else. Before the fix targetcli's
// auto_save_on_exit, on in the driver's private home, saved again at end of
// input to rtslib's default file; where that folder is read-only (the unit's
// ProtectSystem=strict) targetcli died at exit and the apply failed although
// every command ran.
func TestBatchSavesOnce(t *testing.T) {
	t.Run("default file untouched", func(t *testing.T) {
		n := newNode(t)
		d := newDriver(t, lio.Batch)
		file, id := image(t, n.images, "one.squashfs", 1<<20)
		bs, lun := n.projectOps(file, id)
		res, err := d.Apply(t.Context(), []lio.Op{bs, lun})
		if err != nil {
			t.Fatalf("Apply: %v%s", err, outcomes(res))
		}
		for _, r := range res {
			if r.Outcome != lio.Applied {
				t.Errorf("%s: %s, want applied (%v)", r.Op, r.Outcome, r.Err)
			}
		}
		if _, ok := saved(t).FileIO(id.Name); !ok {
			t.Errorf("%s has no fileio %s", saveFile, id.Name)
		}
		if _, err := os.Stat(debianDefault); !os.IsNotExist(err) {
			t.Errorf("batch apply also saved to rtslib's default %s (stat: %v): one save per pass, to %s only", debianDefault, err, saveFile)
		}
	})
	t.Run("default folder read-only", func(t *testing.T) {
		n := newNode(t)
		readOnlyBind(t, filepath.Dir(debianDefault))
		d := newDriver(t, lio.Batch)
		file, id := image(t, n.images, "two.squashfs", 1<<20)
		bs, lun := n.projectOps(file, id)
		res, err := d.Apply(t.Context(), []lio.Op{bs, lun})
		if err != nil {
			t.Fatalf("Apply with %s read-only: %v (a false error: every command ran)%s", filepath.Dir(debianDefault), err, outcomes(res))
		}
		for _, r := range res {
			if r.Outcome != lio.Applied {
				t.Errorf("%s: %s, want applied (%v)", r.Op, r.Outcome, r.Err)
			}
		}
	})
}

// TestOneFailingCreateDoesNotBlockTheRest (issue 18): a backing file on a
// read-only mount makes real `fileio create` raise OSError (the kernel opens
// the file O_RDWR even with write_back=false); in batch mode targetcli dies
// with a traceback. The other images of the same apply must still be
// projected, and the failed one must say why, in every mode.
func TestOneFailingCreateDoesNotBlockTheRest(t *testing.T) {
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot, lio.Daemon} {
		t.Run(string(mode), func(t *testing.T) {
			n := newNode(t)
			ro := filepath.Join(n.images, "ro")
			readOnlyDir(t, ro, "c.squashfs")
			if mode == lio.Daemon {
				startTargetclid(t)
			}
			d := newDriver(t, mode)
			fa, ida := image(t, n.images, "a.squashfs", 1<<20)
			fb, idb := image(t, n.images, "b.squashfs", 1<<20)
			idc := naming.For(naming.PEInput("boot-images", "PE/c.squashfs"))
			fc := filepath.Join(ro, "c.squashfs")
			bsa, luna := n.projectOps(fa, ida)
			bsc, lunc := n.projectOps(fc, idc)
			bsb, lunb := n.projectOps(fb, idb)
			ops := []lio.Op{bsa, bsc, bsb, luna, lunc, lunb}
			res, err := d.Apply(t.Context(), ops)
			if err != nil {
				t.Errorf("Apply: %v: one failing create stopped the call%s", err, outcomes(res))
			}
			want := map[int]lio.Outcome{0: lio.Applied, 1: lio.Failed, 2: lio.Applied, 3: lio.Applied, 4: lio.Failed, 5: lio.Applied}
			for i, r := range res {
				if r.Outcome != want[i] {
					t.Errorf("%s: %s, want %s (%v)", r.Op, r.Outcome, want[i], r.Err)
				}
			}
			if err := res[1].Err; err == nil || !strings.Contains(err.Error(), "Read-only file system") || !strings.Contains(err.Error(), "read-write") {
				t.Errorf("the failed create says %v; want targetcli's \"Read-only file system\" and the fix (mount it read-write)", err)
			}
			c := saved(t)
			for _, id := range []string{ida.Name, idb.Name} {
				if _, ok := c.FileIO(id); !ok {
					t.Errorf("%s has no fileio %s", saveFile, id)
				}
			}
			if _, ok := c.FileIO(idc.Name); ok {
				t.Errorf("%s has fileio %s over the read-only file", saveFile, idc.Name)
			}
		})
	}
}
