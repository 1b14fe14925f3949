package projector

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/events/s3event"
	"github.com/sbps-marshal/sbps-marshal/lio"
)

// TestWorkFor: what each kind of event asks a pass to do.
func TestWorkFor(t *testing.T) {
	const img, other = "4842867f-a9bc-4c2a-ad84-fcc3c931bdad", "00d18ed1-20a3-4df2-affb-a88fda00b6f6"
	r := &Reconciler{
		Inventory: &Inventory{Layout: layout},
		last: &Desired{ImagesByKey: map[string][]string{
			img + "/rootfs":        {img, other}, // one rootfs, two images
			img + "/manifest.json": {img},
		}},
	}
	s3 := func(key string) events.Event {
		return events.Event{Kind: events.S3Object, S3: &s3event.Record{Bucket: "boot-images", Key: key}}
	}
	tests := []struct {
		name   string
		batch  []events.Event
		wantOK bool
		want   Work
	}{
		{"PE key", []events.Event{s3("PE/a.squashfs")}, true, Work{Changes: Changes{PEKeys: []string{"PE/a.squashfs"}}}},
		{"rootfs of two images", []events.Event{s3(img + "/rootfs")}, true, Work{Changes: Changes{Images: []string{img, other}}}},
		{"manifest: refresh only", []events.Event{s3(img + "/manifest.json")}, true, Work{Changes: Changes{Refresh: []string{img}}}},
		{"manifest of an image not seen yet", []events.Event{s3(other + "/manifest.json")}, true, Work{Changes: Changes{Refresh: []string{other}}}},
		{"key nobody uses", []events.Event{s3("scratch/x")}, false, Work{}},
		{"IMS change, twice", []events.Event{{Kind: events.IMSImage, IMS: &imsevent.Event{ID: img}}, {Kind: events.IMSImage, IMS: &imsevent.Event{ID: img}}}, true, Work{Changes: Changes{Images: []string{img}}}},
		{"resync", []events.Event{{Kind: events.Resync}, s3("PE/a.squashfs")}, true, Work{Full: true, Changes: Changes{PEKeys: []string{"PE/a.squashfs"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := r.WorkFor(tt.batch)
			if ok != tt.wantOK || got.Full != tt.want.Full || !equal(got.Changes, tt.want.Changes) {
				t.Errorf("WorkFor = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
			if ok && got.Trigger == "" {
				t.Error("no trigger named")
			}
		})
	}
}

func equal(a, b Changes) bool {
	return slices.Equal(a.PEKeys, b.PEKeys) && slices.Equal(a.Images, b.Images) && slices.Equal(a.Refresh, b.Refresh)
}

// TestWorkForOwnSaves: the watcher's event names content the reconciler
// saved before its latest pass; only what is on disk now decides whether
// there is drift to repair.
func TestWorkForOwnSaves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "saveconfig.json")
	write := func(c string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return events.ContentDigest([]byte(c))
	}
	first := write(`{"storage_objects": [], "targets": []}`)
	latest := write(`{"storage_objects": [], "targets": [], "fabric_modules": []}`)
	r := &Reconciler{Inventory: &Inventory{Layout: layout}, Saved: &lio.SavedFile{Path: path}}
	lioEvent := func(d string) []events.Event { return []events.Event{{Kind: events.LIOChanged, Digest: d}} }

	if _, ok := r.WorkFor(lioEvent(latest)); !ok {
		t.Error("before any pass, a saveconfig.json change asked for nothing; want a repair pass")
	}
	r.noteOwn(latest)
	if _, ok := r.WorkFor(lioEvent(first)); ok {
		t.Error("a report of an earlier own save, with the latest own save on disk, asked for a repair")
	}
	if _, ok := r.WorkFor(lioEvent(latest)); ok {
		t.Error("a report of the latest own save asked for a repair")
	}
	write(`{"storage_objects": [], "targets": [], "fabric_modules": [], "x": 1}`)
	if w, ok := r.WorkFor(lioEvent(first)); !ok || w.Full {
		t.Errorf("an outside change on disk: work %+v, %v; want a repair pass", w, ok)
	}
}
