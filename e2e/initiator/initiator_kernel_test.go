//go:build kernel

package initiator

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// checkVisible checks that the initiator sees img at exactly one disk, at
// the LUN saveconfig.json gives it, attached under that identity.
func checkVisible(v []disk, img *image, lun int) (disk, error) {
	ds := byWWID(v, img.id.WWID)
	if len(ds) != 1 {
		return disk{}, fmt.Errorf("%s (WWID %s) is on %d disks, want 1", img.key, img.id.WWID, len(ds))
	}
	d := ds[0]
	if d.lun != lun {
		return d, fmt.Errorf("%s is %s, at lun%d; saveconfig.json has lun%d", img.key, d, d.lun, lun)
	}
	if d.size != int64(len(img.data)) {
		return d, fmt.Errorf("%s is %s of %d bytes, the image has %d", img.key, d, d.size, len(img.data))
	}
	return d, nil
}

// TestComputeNodeView: the real agent projects a PE image and an IMS rootfs
// image; an open-iscsi initiator on the node logs in, finds each LUN by
// its WWID, reads back exactly the uploaded bytes, mounts the squashfs and
// finds the source tree, and cannot write. A PE image uploaded while the
// initiator is logged in becomes readable after a rescan; a PE image
// deleted in S3 leaves the initiator's view and the others stay.
func TestComputeNodeView(t *testing.T) {
	resetNode(t)
	provision(t)
	s := startStack(t)
	rootfs := s.addIMSImage(t, "compute-cos", 1<<20)
	a := s.startAgent(t)
	t.Logf("agent ready after %v", a.waitReady(t, 1))

	pe, uploaded := s.putPE(t, "CPE-base.x86_64", 1<<20)
	waitSaved(t, 2*time.Minute, pe.key+" projected", func(m map[string]int) bool {
		_, ok := m[pe.id.Name]
		return ok
	})
	t.Logf("MEASURED upload -> LUN in saveconfig.json (%s, no initiator logged in): %v", pe.key, time.Since(uploaded).Round(time.Millisecond))
	waitSaved(t, 2*time.Minute, rootfs.key+" projected", func(m map[string]int) bool {
		_, ok := m[rootfs.id.Name]
		return ok
	})
	c, err := loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	luns := lunMap(c)
	t.Logf("saveconfig.json LUNs: %v", luns)

	startInitiator(t)
	v, _ := waitView(t, time.Minute, "both images visible", func(v []disk) error {
		for _, img := range []*image{pe, rootfs} {
			if _, err := checkVisible(v, img, luns[img.id.Name]); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("initiator sees %v", v)
	for _, img := range []*image{pe, rootfs} {
		d, _ := checkVisible(v, img, luns[img.id.Name])
		checkImage(t, d, img)
	}

	// A new PE image while the initiator is logged in: the initiator
	// rescans in a loop from the upload on, as a node polling would.
	pe2, uploaded := s.putPE(t, "CPE-extra.x86_64", 512<<10)
	saved := make(chan time.Duration, 1)
	go func() {
		for time.Since(uploaded) < 2*time.Minute {
			if c, err := loadSaved(); err == nil {
				if _, ok := lunMap(c)[pe2.id.Name]; ok {
					saved <- time.Since(uploaded)
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		saved <- 0
	}()
	waitView(t, 2*time.Minute, pe2.key+" readable", func(v []disk) error {
		ds := byWWID(v, pe2.id.WWID)
		if len(ds) != 1 {
			return fmt.Errorf("%s is on %d disks", pe2.key, len(ds))
		}
		if got := readDisk(t, ds[0].dev); !bytes.Equal(got, pe2.data) {
			return fmt.Errorf("%s does not serve the uploaded bytes yet", ds[0])
		}
		return nil
	})
	readable := time.Since(uploaded)
	inSave := <-saved
	if inSave == 0 {
		t.Fatalf("%s readable by the initiator but never in %s", pe2.key, saveFile)
	}
	t.Logf("MEASURED upload -> LUN in saveconfig.json (%s, initiator logged in and rescanning): %v", pe2.key, inSave.Round(time.Millisecond))
	t.Logf("MEASURED upload -> LUN readable by the logged-in initiator after a rescan (%s): %v", pe2.key, readable.Round(time.Millisecond))

	// The first PE image deleted in S3: it leaves the initiator's view,
	// the others stay where they were and serve the same bytes.
	deleted := time.Now()
	if err := s.s3.Delete(context.Background(), pe.key); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, 2*time.Minute, pe.key+" removed", func(m map[string]int) bool {
		_, ok := m[pe.id.Name]
		return !ok
	})
	t.Logf("MEASURED S3 delete -> LUN gone from saveconfig.json (%s): %v", pe.key, time.Since(deleted).Round(time.Millisecond))
	rescan(t)
	v = view(t)
	t.Logf("after the delete and a rescan the initiator sees %v", v)
	if ds := byWWID(v, pe.id.WWID); len(ds) != 0 {
		t.Errorf("%s deleted in S3, but the target still gives its WWID on %v", pe.key, ds)
	}
	c, err = loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	after := lunMap(c)
	for _, img := range []*image{rootfs, pe2} {
		if img == rootfs && after[img.id.Name] != luns[img.id.Name] {
			t.Errorf("%s moved from lun%d to lun%d", img.key, luns[img.id.Name], after[img.id.Name])
		}
	}
	checkExact(t, v, []*image{rootfs, pe2}, after)
	a.stop(t)
}
