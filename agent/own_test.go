package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// TestWatcherReportOfAnEarlierOwnSave: the watcher's event names content
// the agent saved before its latest pass; only what is on disk now decides
// whether there is drift to repair.
func TestWatcherReportOfAnEarlierOwnSave(t *testing.T) {
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
	a := &Agent{Reconciler: &projector.Reconciler{Saved: &lio.SavedFile{Path: path}}, ownDigest: latest}
	lioEvent := func(d string) []events.Event { return []events.Event{{Kind: events.LIOChanged, Digest: d}} }

	if _, ok := a.workFor(lioEvent(first)); ok {
		t.Error("a report of an earlier own save, with the latest own save on disk, asked for a repair")
	}
	if _, ok := a.workFor(lioEvent(latest)); ok {
		t.Error("a report of the latest own save asked for a repair")
	}
	write(`{"storage_objects": [], "targets": [], "fabric_modules": [], "x": 1}`)
	if w, ok := a.workFor(lioEvent(first)); !ok || w.full {
		t.Errorf("an outside change on disk: work %+v, %v; want a repair pass", w, ok)
	}
}
