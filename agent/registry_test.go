package agent

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// worker is one more simulated node on the stack, with its own LIO,
// saveconfig.json and STATE_DIR, sharing S3, IMS and NATS.
type worker struct {
	node  *sim.Node
	agent *Agent
	env   []string
}

func newWorker(t *testing.T, s *rig.Stack, name string) *worker {
	t.Helper()
	return newWorkerEnv(t, s, name, "SBPS_MARSHAL_LUN_REGISTRY=nats")
}

// newWorkerEnv is newWorker with env added to the worker's settings
// (nothing: the defaults).
func newWorkerEnv(t *testing.T, s *rig.Stack, name string, extra ...string) *worker {
	t.Helper()
	dir := t.TempDir()
	n, err := sim.NewNode(filepath.Join(dir, "lio"), sim.NodeOptions{Hostname: name})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"SBPS_MARSHAL_NODE_NAME=" + name,
		"SBPS_MARSHAL_TARGET_IQN=" + n.IQN(),
		"SBPS_MARSHAL_LIO_SAVE_FILE=" + n.SaveFile(),
		"SBPS_MARSHAL_TARGETCLID_SOCKET=" + n.SocketPath(),
		"SBPS_MARSHAL_STATE_DIR=" + filepath.Join(dir, "state"),
	}
	env = append(env, extra...)
	a := newAgentWith(t, s, Options{TargetcliEnv: n.Env()}, env...)
	return &worker{node: n, agent: a, env: env}
}

// lunMap is storage object path -> LUN index on the worker.
func (w *worker) lunMap(t *testing.T) map[string]int {
	t.Helper()
	return lunsOf(t, w.node.SaveFile(), w.node.IQN())
}

func (w *worker) syncKeys(t *testing.T, keys ...string) {
	t.Helper()
	if _, err := w.agent.Reconciler.SyncKeys(t.Context(), projector.SyncOptions{Trigger: "test"}, keys, nil); err != nil {
		t.Fatal(err)
	}
}

func (w *worker) syncAll(t *testing.T) {
	t.Helper()
	if _, err := w.agent.SyncOnce(t.Context(), projector.SyncOptions{Trigger: "test"}); err != nil {
		t.Fatal(err)
	}
}

// TestFleetLUNNumbers: three workers seeing the same images in different
// orders present each at the same LUN; a rebuilt worker gets the same map
// back; a freed number is not reused within the quarantine.
func TestFleetLUNNumbers(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	a, b, c := newWorker(t, s, "ncn-w001"), newWorker(t, s, "ncn-w002"), newWorker(t, s, "ncn-w003")
	for _, w := range []*worker{a, b, c} {
		w.syncAll(t) // nothing yet: the first full pass
	}
	var keys []string
	for i := range 6 {
		key, err := s.PutPE(ctx, fmt.Sprintf("image-%d.squashfs", i), []byte(fmt.Sprintf("image %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	for _, k := range keys { // one event at a time, upload order
		a.syncKeys(t, k)
	}
	for _, k := range slices.Backward(keys) { // one at a time, reverse order
		b.syncKeys(t, k)
	}
	c.syncKeys(t, keys...) // all at once
	ma, mb, mc := a.lunMap(t), b.lunMap(t), c.lunMap(t)
	if len(ma) != 6 || !maps.Equal(ma, mb) || !maps.Equal(ma, mc) {
		t.Fatalf("LUN maps differ:\n a %v\n b %v\n c %v", ma, mb, mc)
	}

	// Worker c is rebuilt: empty LIO, empty STATE_DIR.
	c = newWorker(t, s, "ncn-w003")
	c.syncAll(t)
	if got := c.lunMap(t); !maps.Equal(got, ma) {
		t.Fatalf("rebuilt worker: %v, want %v", got, ma)
	}

	// An image goes and another comes within the quarantine: the freed
	// number is not reused.
	gone := "/backstores/fileio/" + peID(keys[2]).Name
	freed := ma[gone]
	if err := s.S3.Delete(ctx, keys[2]); err != nil {
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
		w.syncKeys(t, key)
	}
	added := "/backstores/fileio/" + peID(key).Name
	ma, mb, mc = a.lunMap(t), b.lunMap(t), c.lunMap(t)
	if _, ok := ma[gone]; ok {
		t.Errorf("deleted image still has a LUN: %v", ma)
	}
	if ma[added] == freed {
		t.Errorf("new image got lun%d, the number freed within the quarantine", freed)
	}
	if !maps.Equal(ma, mb) || !maps.Equal(ma, mc) {
		t.Errorf("after delete and add, LUN maps differ:\n a %v\n b %v\n c %v", ma, mb, mc)
	}

	// status, as `sbps-marshal status` runs it (a fresh process), shows the
	// registry index and that the node matches it.
	fresh := newAgentWith(t, s, Options{TargetcliEnv: a.node.Env()}, a.env...)
	entries, _, err := fresh.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.State == projector.Projected && (e.RegistryLUN == nil || e.LUN == nil || *e.RegistryLUN != *e.LUN) {
			t.Errorf("status entry %s: lun %v registry %v, want both, equal", e.Backstore, e.LUN, e.RegistryLUN)
		}
	}
}
