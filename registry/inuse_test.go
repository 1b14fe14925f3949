package registry

import (
	"testing"
)

// TestIndexAvoidsIndexesTheTPGUses (issue 15, point 6): an index the
// node's TPG already uses (a LUN the agent does not own) is never handed
// out, in the fleet registry (KV on a real NATS) and the local one; a name
// that already has an index keeps it.
func TestIndexAvoidsIndexesTheTPGUses(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			r := im.new(t, newClock(), -1)
			ctx := t.Context()
			if n, err := r.Index(ctx, "a", Meta{Image: "PE/a"}); err != nil || n != 0 {
				t.Fatalf("Index(a) = %d, %v; want 0", n, err)
			}
			if n, err := r.Index(ctx, "b", Meta{Image: "PE/b", InUse: []int{1, 2, 4}}); err != nil || n != 3 {
				t.Fatalf("Index(b) with lun1, lun2, lun4 in use in the TPG = %d, %v; want 3", n, err)
			}
			if n, err := r.Index(ctx, "a", Meta{Image: "PE/a", InUse: []int{0}}); err != nil || n != 0 {
				t.Errorf("Index(a) again = %d, %v; want its own 0", n, err)
			}
			if n, err := r.Index(ctx, "c", Meta{Image: "PE/c", InUse: []int{1, 2, 4}}); err != nil || n != 5 {
				t.Errorf("Index(c) = %d, %v; want 5", n, err)
			}
		})
	}
}
