package registry

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// fallbackRig is one agent with a Fallback over a KV and a Local, plus a
// second agent ("other") on its own connection to the same fleet registry.
type fallbackRig struct {
	f      *Fallback
	other  *KV
	local  *Local
	mu     sync.Mutex
	events []string // "op name"
	stop   func()
	start  func() error
}

const testTimeout = 300 * time.Millisecond

func newFallbackRig(t *testing.T) *fallbackRig {
	t.Helper()
	n := rig.NATSForTest(t, rig.NATSOptions{})
	r := &fallbackRig{stop: n.Shutdown, start: n.Restart}
	local, err := NewLocal(LocalConfig{Dir: t.TempDir(), Node: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	r.local = local
	r.f = NewFallback(NewKV(connect(t, n), KVConfig{Node: "w1"}), local, FallbackConfig{
		Timeout: testTimeout,
		OnLocal: func(op, name string, _ error) {
			r.mu.Lock()
			r.events = append(r.events, op+" "+name)
			r.mu.Unlock()
		},
	})
	r.other = NewKV(connect(t, n), KVConfig{Node: "w2"})
	return r
}

// restart brings the server back and waits until both agents reach it.
func (r *fallbackRig) restart(t *testing.T) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the KV registry readable again", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.other.All(ctx)
		return err
	})
}

func mustIndex(t *testing.T, reg Registry, name string, want int) {
	t.Helper()
	got, err := reg.Index(ctxT(t), name, Meta{Image: "img-" + name})
	if err != nil || got != want {
		t.Fatalf("Index(%s) = %d, %v; want %d", name, got, err, want)
	}
}

func TestFallbackKVDown(t *testing.T) {
	ctx := ctxT(t)
	r := newFallbackRig(t)
	a, b, c := pname(1), pname(2), pname(3)
	mustIndex(t, r.f, a, 0) // fleet, mirrored locally
	mustIndex(t, r.other, b, 1)
	if r.f.LocalUses() != 0 {
		t.Fatalf("LocalUses = %d with the fleet up", r.f.LocalUses())
	}

	r.stop()
	start := time.Now()
	mustIndex(t, r.f, a, 0) // known from the mirror
	if d := time.Since(start); d > testTimeout+time.Second {
		t.Fatalf("fell back after %s; timeout is %s", d, testTimeout)
	}
	// b is unknown here: the local registry gives it a local number (1,
	// as the fleet happens to, but unconfirmed).
	mustIndex(t, r.f, c, 1)
	if r.f.LocalUses() != 2 {
		t.Fatalf("LocalUses = %d, want 2", r.f.LocalUses())
	}
	r.mu.Lock()
	if len(r.events) != 2 || r.events[0] != "index "+a {
		t.Fatalf("OnLocal events = %v", r.events)
	}
	r.mu.Unlock()
	if e, ok, err := r.f.Lookup(ctx, c); err != nil || !ok || e.Index != 1 {
		t.Fatalf("Lookup(%s) while down = %+v, %v, %v", c, e, ok, err)
	}
	if err := r.f.Release(ctx, a); err != nil {
		t.Fatalf("Release while down: %v", err)
	}
}

func TestFallbackReconcile(t *testing.T) {
	a, b, c, d, e, g := pname(1), pname(2), pname(3), pname(4), pname(5), pname(6)
	tests := []struct {
		name string
		// whileDown runs on the Fallback with the fleet down; meanwhile
		// runs on the other agent after the fleet is back, before
		// Reconcile.
		whileDown, meanwhile func(t *testing.T, r *fallbackRig)
		want                 []Conflict
		fleet                map[string]int // fleet registry after Reconcile
	}{
		{
			name: "no conflicts",
			whileDown: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.f, b, 1)
				mustIndex(t, r.f, c, 2)
			},
			meanwhile: func(t *testing.T, r *fallbackRig) {},
			fleet:     map[string]int{a: 0, b: 1, c: 2},
		},
		{
			name: "fleet gave the number to another image, and the image another number",
			whileDown: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.f, b, 1)
				mustIndex(t, r.f, c, 2)
			},
			meanwhile: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.other, d, 1) // takes b's local number
				mustIndex(t, r.other, c, 2) // same number: no conflict
				mustIndex(t, r.other, e, 3)
			},
			want:  []Conflict{{Name: b, Image: "img-" + b, Local: 1, Fleet: 4, Owner: d}},
			fleet: map[string]int{a: 0, d: 1, c: 2, e: 3, b: 4},
		},
		{
			name: "fleet gave the image another number",
			whileDown: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.f, g, 1)
			},
			meanwhile: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.other, d, 1)
				mustIndex(t, r.other, g, 2)
			},
			want:  []Conflict{{Name: g, Image: "img-" + g, Local: 1, Fleet: 2, Owner: d}},
			fleet: map[string]int{a: 0, d: 1, g: 2},
		},
		{
			name: "local release is replayed and keeps its quarantine",
			whileDown: func(t *testing.T, r *fallbackRig) {
				mustIndex(t, r.f, b, 1)
				if err := r.f.Release(ctxT(t), b); err != nil {
					t.Fatal(err)
				}
			},
			meanwhile: func(t *testing.T, r *fallbackRig) {},
			fleet:     map[string]int{a: 0, b: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			r := newFallbackRig(t)
			mustIndex(t, r.f, a, 0)
			r.stop()
			tt.whileDown(t, r)
			r.restart(t)
			tt.meanwhile(t, r)
			// Until reconciled, the node keeps answering its own numbers.
			for name, le := range must(r.local.unsynced()) {
				if le.ReleasedAt != nil {
					continue
				}
				if got, err := r.f.Index(ctx, name, Meta{}); err != nil || got != le.Index {
					t.Fatalf("before Reconcile Index(%s) = %d, %v; want local %d", name, got, err, le.Index)
				}
			}
			conflicts, err := r.f.Reconcile(ctx)
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if !sameConflicts(conflicts, tt.want) {
				t.Fatalf("Reconcile conflicts = %+v, want %+v", conflicts, tt.want)
			}
			all, err := r.other.All(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for name, idx := range tt.fleet {
				if all[name].Index != idx {
					t.Fatalf("fleet %s = %d, want %d (all %v)", name, all[name].Index, idx, all)
				}
			}
			if len(all) != len(tt.fleet) {
				t.Fatalf("fleet has %d entries, want %d: %v", len(all), len(tt.fleet), all)
			}
			if pend := must(r.local.unsynced()); len(pend) != 0 {
				t.Fatalf("after Reconcile %d local changes are still unsynced: %v", len(pend), pend)
			}
			if again, err := r.f.Reconcile(ctx); err != nil || len(again) != 0 {
				t.Fatalf("second Reconcile = %v, %v; want nothing to do", again, err)
			}
			// A replayed release keeps the number out of reach.
			if released, ok := all[b]; ok && released.Released() {
				mustIndex(t, r.other, pname(99), 2)
			}
		})
	}
}

func TestFallbackReconcileFleetStillDown(t *testing.T) {
	r := newFallbackRig(t)
	r.stop()
	mustIndex(t, r.f, pname(1), 0)
	_, err := r.f.Reconcile(ctxT(t))
	if err == nil {
		t.Fatal("Reconcile with the fleet down: no error")
	}
	if pend := must(r.local.unsynced()); len(pend) != 1 {
		t.Fatalf("unsynced = %v, want the one local allocation kept", pend)
	}
}

func TestFallbackDoesNotFallBackOnAnswers(t *testing.T) {
	r := newFallbackRig(t)
	_, err := r.f.Index(ctxT(t), "bad.name", Meta{})
	if !errors.Is(err, ErrInvalidName) || r.f.LocalUses() != 0 {
		t.Fatalf("Index(bad.name) = %v, LocalUses %d; want ErrInvalidName and no fallback", err, r.f.LocalUses())
	}
}

func sameConflicts(got, want []Conflict) bool {
	if len(got) != len(want) {
		return false
	}
	m := map[string]Conflict{}
	for _, c := range got {
		m[c.Name] = c
	}
	for _, c := range want {
		if m[c.Name] != c {
			return false
		}
	}
	return true
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
