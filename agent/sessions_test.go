package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func TestMapChanges(t *testing.T) {
	a, b, c := "/backstores/fileio/a", "/backstores/fileio/b", "/backstores/fileio/c"
	tests := []struct {
		name      string
		seen, now map[int]string
		want      []MapChange
	}{
		{"same", map[int]string{0: a, 1: b}, map[int]string{0: a, 1: b}, nil},
		{"added", map[int]string{0: a}, map[int]string{0: a, 1: b}, nil},
		{"removed", map[int]string{0: a, 1: b}, map[int]string{0: a}, nil},
		{"nothing seen", map[int]string{}, map[int]string{0: a}, nil},
		{"index points elsewhere", map[int]string{0: a, 1: b}, map[int]string{0: c, 1: b}, []MapChange{{Index: 0, Was: a, Now: c, NowIdx: -1}}},
		{"removed, index reused", map[int]string{0: a}, map[int]string{0: b}, []MapChange{{Index: 0, Was: a, Now: b, NowIdx: -1}}},
		{"moved", map[int]string{0: a}, map[int]string{3: a}, []MapChange{{Index: 0, Was: a, NowIdx: 3}}},
		{"swapped", map[int]string{0: a, 1: b}, map[int]string{0: b, 1: a}, []MapChange{{Index: 0, Was: a, Now: b, NowIdx: -1}, {Index: 1, Was: b, Now: a, NowIdx: -1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MapChanges(tt.seen, tt.now); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MapChanges(%v, %v) = %v, want %v", tt.seen, tt.now, got, tt.want)
			}
		})
	}
}

// resets is how many times a reset tpg1's sessions (sbps_marshal_session_resets_total{outcome="done"}).
func resets(t *testing.T, a *Agent) int {
	t.Helper()
	mfs, err := a.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sbps_marshal_session_resets_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "done" {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// localWorker is a worker with LUN_REGISTRY=local: no fleet registry.
func localWorker(t *testing.T, s *rig.Stack, name string) *worker {
	t.Helper()
	return newWorkerEnv(t, s, name, "SBPS_MARSHAL_LUN_REGISTRY=local")
}

// again is a new agent process on w's LIO and STATE_DIR (a restart).
func (w *worker) again(t *testing.T, s *rig.Stack) *worker {
	t.Helper()
	return &worker{node: w.node, env: w.env, agent: newAgentWith(t, s, Options{TargetcliEnv: w.node.Env()}, w.env...)}
}

func putImages(t *testing.T, s *rig.Stack, n int) []string {
	t.Helper()
	var keys []string
	for i := range n {
		key, err := s.PutPE(t.Context(), fmt.Sprintf("image-%d.squashfs", i), []byte(fmt.Sprintf("image %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	return keys
}

// TestSessionResetLocalRebuild: without the fleet registry, a rebuilt
// worker (empty LIO and STATE_DIR) cannot know the LUN numbers its
// initiators' sessions saw, and its map differs: it resets tpg1's sessions
// exactly once, after its first pass; a restart with STATE_DIR intact and
// passes that only add or remove LUNs never reset.
func TestSessionResetLocalRebuild(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	keys := putImages(t, s, 4)
	w := localWorker(t, s, "ncn-w001")
	w.syncAll(t)
	before := w.lunMap(t)
	if len(before) != 4 {
		t.Fatalf("projected %v, want 4 LUNs", before)
	}
	// A worker with nothing recorded and nothing in LIO is a rebuilt one.
	if got := resets(t, w.agent); got != 1 {
		t.Fatalf("first pass of a new worker without the fleet registry: %d resets, want 1", got)
	}
	w.syncAll(t)
	key, err := s.PutPE(ctx, "image-added.squashfs", []byte("added"))
	if err != nil {
		t.Fatal(err)
	}
	w.syncAll(t)
	if got := resets(t, w.agent); got != 1 {
		t.Errorf("passes that only add a LUN: %d resets in all, want still 1", got)
	}
	r := w.again(t, s) // restart: STATE_DIR and LIO intact
	r.syncAll(t)
	if got := resets(t, r.agent); got != 0 {
		t.Errorf("restart with STATE_DIR and LIO intact: %d resets, want 0", got)
	}

	// The image at the lowest LUN goes, then the worker is rebuilt: its
	// local registry hands out numbers afresh, so its map differs.
	var lowest string
	for so, i := range before {
		if lowest == "" || i < before[lowest] {
			lowest = so
		}
	}
	for _, k := range append(keys, key) {
		if "/backstores/fileio/"+peID(k).Name == lowest {
			if err := s.S3.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.syncAll(t)
	old := r.lunMap(t)
	if got := resets(t, r.agent); got != 0 {
		t.Errorf("a pass that only removes a LUN: %d resets, want 0", got)
	}
	rebuilt := localWorker(t, s, "ncn-w001")
	rebuilt.syncAll(t)
	now := rebuilt.lunMap(t)
	if maps.Equal(now, old) || len(now) != len(old) {
		t.Fatalf("the rebuilt worker's map should differ from the old one with the same LUNs (test premise): old %v, rebuilt %v", old, now)
	}
	if got := resets(t, rebuilt.agent); got != 1 {
		t.Fatalf("rebuilt worker whose map differs: %d resets, want exactly 1", got)
	}
	rebuilt.syncAll(t)
	rebuilt.syncAll(t)
	if got := resets(t, rebuilt.agent); got != 1 {
		t.Errorf("rebuilt worker after more passes: %d resets in all, want still 1", got)
	}
	if again := rebuilt.again(t, s); true {
		again.syncAll(t)
		if got := resets(t, again.agent); got != 0 {
			t.Errorf("rebuilt worker restarted after its reset: %d resets, want 0", got)
		}
	}
}

// TestSessionResetSurvivesCrash: an agent killed after the map changed and
// before the sessions were reset leaves the reset to the next one, which
// does it once.
func TestSessionResetSurvivesCrash(t *testing.T) {
	s := startStack(t)
	putImages(t, s, 3)
	w := localWorker(t, s, "ncn-w001")
	w.agent.sessions.crash = func() error { return errors.New("killed before the reset") }
	if _, err := w.agent.SyncOnce(t.Context(), projector.SyncOptions{Trigger: "test"}); err == nil {
		t.Fatal("the pass whose reset was cut short reported no error")
	}
	if got := len(w.lunMap(t)); got != 3 {
		t.Fatalf("projected %d LUNs, want 3", got)
	}
	if got := resets(t, w.agent); got != 0 {
		t.Fatalf("%d resets before the crash, want 0", got)
	}
	next := w.again(t, s)
	next.syncAll(t)
	next.syncAll(t)
	if got := resets(t, next.agent); got != 1 {
		t.Fatalf("agent after the crash: %d resets, want exactly 1", got)
	}
	var rec lunMapRecord
	b, err := os.ReadFile(filepath.Join(next.agent.cfg.StateDir, LUNMapFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ResetOwed != "" || len(rec.Seen) != 3 {
		t.Errorf("record after the reset: %+v, want the 3 LUNs and no reset owed", rec)
	}
}

// TestFleetDefaultRebuild: three workers on one NATS with the default
// settings (no LUN_REGISTRY) present the same images at the same LUNs; a
// rebuilt worker gets the same map back and resets no session; a freed
// number is not reused within the quarantine.
func TestFleetDefaultRebuild(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	mk := func(name string) *worker { return newWorkerEnv(t, s, name) }
	a, b, c := mk("ncn-w001"), mk("ncn-w002"), mk("ncn-w003")
	for _, w := range []*worker{a, b, c} {
		if got := w.agent.RegistryChoice().Mode; got != "nats" {
			t.Fatalf("%s: LUN registry %q (%s) with default settings and NATS, want nats", w.agent.cfg.NodeName, got, w.agent.RegistryChoice().Why)
		}
		w.syncAll(t)
	}
	keys := putImages(t, s, 5)
	for _, k := range keys {
		a.syncKeys(t, k)
	}
	for i := len(keys) - 1; i >= 0; i-- {
		b.syncKeys(t, keys[i])
	}
	c.syncAll(t)
	ma, mb, mc := a.lunMap(t), b.lunMap(t), c.lunMap(t)
	if len(ma) != 5 || !maps.Equal(ma, mb) || !maps.Equal(ma, mc) {
		t.Fatalf("LUN maps differ:\n a %v\n b %v\n c %v", ma, mb, mc)
	}
	c = mk("ncn-w003") // rebuilt: empty LIO, empty STATE_DIR
	c.syncAll(t)
	if got := c.lunMap(t); !maps.Equal(got, ma) {
		t.Fatalf("rebuilt worker: %v, want %v", got, ma)
	}
	if got := resets(t, c.agent); got != 0 {
		t.Errorf("rebuilt worker with the fleet registry: %d session resets, want 0 (its map is the old one)", got)
	}
	gone := "/backstores/fileio/" + peID(keys[0]).Name
	freed := ma[gone]
	if err := s.S3.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*worker{a, b, c} {
		w.syncAll(t)
	}
	key, err := s.PutPE(ctx, "image-new.squashfs", []byte("a new image"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*worker{c, b, a} {
		w.syncAll(t)
	}
	ma, mb, mc = a.lunMap(t), b.lunMap(t), c.lunMap(t)
	if got := ma["/backstores/fileio/"+peID(key).Name]; got == freed {
		t.Errorf("new image got lun%d, freed within the quarantine", freed)
	}
	if !maps.Equal(ma, mb) || !maps.Equal(ma, mc) {
		t.Errorf("after delete and add, LUN maps differ:\n a %v\n b %v\n c %v", ma, mb, mc)
	}
	for _, w := range []*worker{a, b, c} {
		if got := resets(t, w.agent); got != 0 {
			t.Errorf("%s: %d session resets, want 0", w.agent.cfg.NodeName, got)
		}
	}
}
