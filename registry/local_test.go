package registry

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func newLocal(t *testing.T, dir string) *Local {
	t.Helper()
	l, err := NewLocal(LocalConfig{Dir: dir, Node: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocalSurvivesRestart(t *testing.T) {
	tests := []struct {
		name  string
		crash func(t *testing.T, l *Local) // what the "dead process" left behind
	}{
		{"clean restart", func(*testing.T, *Local) {}},
		{"half-written temp file left behind", func(t *testing.T, l *Local) {
			if err := os.WriteFile(l.tmp, []byte(`{"version":1,"entries":{"abc":{"ind`), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty temp file left behind", func(t *testing.T, l *Local) {
			if err := os.WriteFile(l.tmp, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"stale lock file left behind", func(t *testing.T, l *Local) {
			if err := os.WriteFile(l.lock, []byte("junk"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			dir := t.TempDir()
			l := newLocal(t, dir)
			want := map[string]int{}
			for i := range 20 {
				got, err := l.Index(ctx, pname(i), Meta{Image: "img"})
				if err != nil {
					t.Fatal(err)
				}
				want[pname(i)] = got
			}
			if err := l.Release(ctx, pname(3)); err != nil {
				t.Fatal(err)
			}
			tt.crash(t, l)

			l2 := newLocal(t, dir) // the restarted process
			for name, idx := range want {
				e, ok, err := l2.Lookup(ctx, name)
				if err != nil || !ok || e.Index != idx {
					t.Fatalf("after restart Lookup(%s) = %+v, %v, %v; want index %d", name, e, ok, err, idx)
				}
			}
			if e, _, _ := l2.Lookup(ctx, pname(3)); !e.Released() {
				t.Fatalf("after restart %s is not released", pname(3))
			}
			// Writing still works, and does not reuse the quarantined 3.
			got, err := l2.Index(ctx, pname(100), Meta{})
			if err != nil || got != 20 {
				t.Fatalf("after restart Index(new) = %d, %v; want 20", got, err)
			}
		})
	}
}

func TestLocalCorruptFile(t *testing.T) {
	dir := t.TempDir()
	l := newLocal(t, dir)
	if err := os.WriteFile(l.Path(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := l.Index(ctxT(t), pname(1), Meta{})
	if err == nil || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("Index on a corrupt file: %v; want an error saying what to do", err)
	}
}

// TestLocalSharedDir runs two Local values on one directory (as two
// processes would: separate open files, so the flock excludes them) from
// many goroutines: no index goes to two names.
func TestLocalSharedDir(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	ls := []*Local{newLocal(t, dir), newLocal(t, dir)}
	var mu sync.Mutex
	var res []result
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				name := pname(g*25 + i) // overlapping
				got, err := ls[g%2].Index(ctx, name, Meta{})
				if err != nil {
					t.Errorf("Index: %v", err)
					return
				}
				mu.Lock()
				res = append(res, result{agent: g, name: name, index: got})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	got := checkExclusive(t, res)
	for _, idx := range got {
		if idx >= len(got) {
			t.Fatalf("index %d for %d names: not the lowest free", idx, len(got))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, DefaultLocalFile)); err != nil {
		t.Fatal(err)
	}
}
