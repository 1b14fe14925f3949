package projector

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/registry"
)

// recordingApplier records the operations of a pass and applies nothing.
type recordingApplier struct{ ops []lio.Op }

func (r *recordingApplier) Apply(_ context.Context, ops []lio.Op) ([]lio.Result, error) {
	r.ops = append(r.ops, ops...)
	res := make([]lio.Result, len(ops))
	for i, op := range ops {
		res[i] = lio.Result{Op: op, Outcome: lio.Applied}
	}
	return res, nil
}
func (r *recordingApplier) Save(context.Context) error { return nil }

// TestNewLUNAvoidsIndexesTheTPGUses (issue 15, point 6): tpg1 already has a
// LUN the agent does not own (lun0, a block backstore someone made by
// hand). The fleet registry must not hand that index to a new image: LIO
// refuses it ("This LUN already exists in configFS") on every pass. A new
// LUN gets an index free both in the registry and in the TPG.
func TestNewLUNAvoidsIndexesTheTPGUses(t *testing.T) {
	b := newMemBucket(t)
	b.put("PE/new.squashfs", "e", 10, 10)
	inv := newInventory(b, nil)

	actual := node(nil, lio.StorageObject{Plugin: "block", Name: "scratch", Dev: "/dev/sdb"})
	actual.Targets[0].TPGs[0].LUNs = []lio.LUN{{Index: 0, StorageObject: "/backstores/block/scratch"}}
	saveFile := filepath.Join(t.TempDir(), "saveconfig.json")
	data, err := json.Marshal(actual)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saveFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.NewLocal(registry.LocalConfig{Dir: t.TempDir(), Node: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	app := &recordingApplier{}
	r := &Reconciler{Inventory: inv, LIO: app, SaveFile: saveFile, Registry: reg, Plan: PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5}}
	if _, err := r.Sync(t.Context(), SyncOptions{Trigger: "test"}); err != nil {
		t.Fatal(err)
	}
	var lun = -2
	for _, op := range app.ops {
		if op.Kind == lio.CreateLUN {
			lun = op.LUN
		}
	}
	if lun == 0 || lun == -2 {
		t.Fatalf("new image's CreateLUN index = %d (ops %v); want an index tpg1 does not use (not 0)", lun, app.ops)
	}
	name := peProjection("PE/new.squashfs", 10).ID.Name
	if e, ok, err := reg.Lookup(t.Context(), name); err != nil || !ok || e.Index != lun {
		t.Errorf("registry entry for %s = %+v, %v, %v; want index %d, as projected", name, e, ok, err, lun)
	}
}
