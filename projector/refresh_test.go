package projector

import (
	"slices"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
)

// TestManifestRefreshNeverDeletes (issue 14, point 7): an S3 notification
// for <id>/manifest.json makes the event path read that one IMS image. A
// tagged image is added; nothing IMS answers for such a hint (its own 404,
// an untagged record) removes a projection the previous pass had: a
// manifest event is never a reason to delete.
func TestManifestRefreshNeverDeletes(t *testing.T) {
	f := newIMSFleet(t, 10)
	prev, _ := f.pass(t, nil)
	b := f.inv.Objects.(*memBucket)

	// A new image, tagged before its manifest's notification is handled.
	const newID = "0a0b0c0d-1111-4222-8333-444455556666"
	b.put(newID+"/rootfs", "r-new", 20, 20)
	b.putManifest(newID, newID+"/rootfs", "r-new")
	f.srv.Put(imstest.Image{ID: newID, Name: "new", Metadata: map[string]string{"sbps-project": "true"},
		Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + newID + "/manifest.json"}})
	// Image 0 is deleted in IMS (IMS's own 404), image 1 untagged.
	if err := f.srv.Delete(f.ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Untag(f.ids[1]); err != nil {
		t.Fatal(err)
	}
	gets := f.srv.Stats().Gets
	lists := f.srv.Stats().Lists

	d, err := f.inv.Refresh(t.Context(), prev, f.actual, []string{f.ids[0], f.ids[1], newID})
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if n := f.srv.Stats().Gets - gets; n != 3 {
		t.Errorf("Refresh of 3 images sent %d IMS GETs, want 3 (one per image)", n)
	}
	if n := f.srv.Stats().Lists - lists; n != 0 {
		t.Errorf("Refresh listed IMS %d times, want none", n)
	}
	if !slices.ContainsFunc(sortedKeys(d.Projections), func(name string) bool {
		return slices.ContainsFunc(d.Projections[name].Users, func(r ImageRef) bool { return r.ID == newID })
	}) {
		t.Errorf("the tagged image %s is not projected after its manifest's refresh; projections %v", newID, sortedKeys(d.Projections))
	}
	plan, err := MakePlan(d, f.actual, f.inv.Layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	if gone := f.deletedImages(plan); len(gone) > 0 {
		t.Errorf("a manifest refresh deletes the LUNs of images %v (IMS 404 or untagged); it must never delete: %s", gone, summary(plan))
	}
	if !slices.ContainsFunc(plan.Changes, func(c Change) bool { return c.Action == Create }) {
		t.Errorf("no create planned for the new tagged image: %s", summary(plan))
	}
	// The previous state is not changed in place.
	if len(prev.Projections) != 10 {
		t.Errorf("Refresh changed its input: %d projections, want 10", len(prev.Projections))
	}
}
