package registry

import (
	"errors"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/rig"
)

// impl builds one Registry implementation on a fake clock with a one-hour
// quarantine and, when max >= 0, a lower highest index.
type impl struct {
	name string
	new  func(t *testing.T, c *fakeClock, max int) Registry
}

func impls() []impl {
	return []impl{
		{"kv", func(t *testing.T, c *fakeClock, max int) Registry {
			k := NewKV(connect(t, rig.NATSForTest(t, rig.NATSOptions{})), KVConfig{Quarantine: time.Hour, Now: c.Now, Node: "w1"})
			if max >= 0 {
				k.max = max
			}
			return k
		}},
		{"local", func(t *testing.T, c *fakeClock, max int) Registry {
			l, err := NewLocal(LocalConfig{Dir: t.TempDir(), Quarantine: time.Hour, Now: c.Now, Node: "w1"})
			if err != nil {
				t.Fatal(err)
			}
			if max >= 0 {
				l.max = max
			}
			return l
		}},
	}
}

// step is one operation of a scenario and what it must return.
type step struct {
	op      string // index, adopt, release, advance, lookup
	name    string
	index   int           // adopt: offered index
	advance time.Duration // advance: clock step
	want    int           // index/adopt/lookup: expected index (-1: lookup finds nothing)
	wantErr error
}

func TestSemantics(t *testing.T) {
	a, b, c, d := pname(1), pname(2), pname(3), pname(4)
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"lowest free, stable per name", -1, []step{
			{op: "index", name: a, want: 0}, {op: "index", name: b, want: 1},
			{op: "index", name: a, want: 0}, {op: "index", name: c, want: 2},
			{op: "lookup", name: b, want: 1}, {op: "lookup", name: d, want: -1},
		}},
		{"release then new image within quarantine never reuses", -1, []step{
			{op: "index", name: a, want: 0}, {op: "index", name: b, want: 1},
			{op: "release", name: a}, {op: "advance", advance: 59 * time.Minute},
			{op: "index", name: c, want: 2}, {op: "lookup", name: a, want: 0},
		}},
		{"after quarantine the number is reused", -1, []step{
			{op: "index", name: a, want: 0}, {op: "index", name: b, want: 1},
			{op: "release", name: a}, {op: "advance", advance: time.Hour},
			{op: "index", name: c, want: 0}, {op: "lookup", name: a, want: -1},
			{op: "index", name: a, want: 2}, // its old number is gone: a new one
		}},
		{"same name within quarantine gets its old index back", -1, []step{
			{op: "index", name: a, want: 0}, {op: "index", name: b, want: 1},
			{op: "release", name: a}, {op: "advance", advance: 30 * time.Minute},
			{op: "index", name: a, want: 0}, {op: "index", name: c, want: 2},
		}},
		{"same name after quarantine keeps its index if nobody took it", -1, []step{
			{op: "index", name: a, want: 0}, {op: "release", name: a},
			{op: "advance", advance: 48 * time.Hour}, {op: "index", name: a, want: 0},
			{op: "index", name: b, want: 1},
		}},
		{"release twice and release unknown are no-ops", -1, []step{
			{op: "index", name: a, want: 0}, {op: "release", name: a}, {op: "release", name: a},
			{op: "release", name: d}, {op: "index", name: b, want: 1},
		}},
		{"adopt: first writer wins", -1, []step{
			{op: "adopt", name: a, index: 5, want: 5},
			{op: "adopt", name: a, index: 7, want: 5}, // registry's number wins
			{op: "adopt", name: b, index: 5, want: 0}, // 5 is taken: lowest free
			{op: "index", name: c, want: 1},
			{op: "adopt", name: d, index: 9, want: 9},
		}},
		{"adopt an index in quarantine gets another", -1, []step{
			{op: "index", name: a, want: 0}, {op: "release", name: a},
			{op: "adopt", name: b, index: 0, want: 1},
		}},
		{"exhaustion is an error", 2, []step{
			{op: "index", name: a, want: 0}, {op: "index", name: b, want: 1}, {op: "index", name: c, want: 2},
			{op: "index", name: d, wantErr: ErrExhausted},
			{op: "release", name: a}, {op: "index", name: d, wantErr: ErrExhausted},
			{op: "advance", advance: time.Hour}, {op: "index", name: d, want: 0},
		}},
		{"invalid input", -1, []step{
			{op: "index", name: "a.b", wantErr: ErrInvalidName},
			{op: "index", name: "", wantErr: ErrInvalidName},
			{op: "adopt", name: a, index: 65536, wantErr: ErrIndexRange},
			{op: "adopt", name: a, index: -1, wantErr: ErrIndexRange},
		}},
	}
	for _, im := range impls() {
		for _, tt := range tests {
			t.Run(im.name+"/"+tt.name, func(t *testing.T) {
				ctx := ctxT(t)
				clk := newClock()
				r := im.new(t, clk, tt.max)
				for i, s := range tt.steps {
					var got int
					var err error
					switch s.op {
					case "index":
						got, err = r.Index(ctx, s.name, Meta{Image: "img-" + s.name})
					case "adopt":
						got, err = r.Adopt(ctx, s.name, s.index, Meta{Image: "img-" + s.name})
					case "release":
						err = r.Release(ctx, s.name)
					case "advance":
						clk.Advance(s.advance)
						continue
					case "lookup":
						var e Entry
						var ok bool
						e, ok, err = r.Lookup(ctx, s.name)
						got = -1
						if ok && !e.Released() || ok && s.want >= 0 {
							got = e.Index
						}
					}
					if s.wantErr != nil {
						if !errors.Is(err, s.wantErr) {
							t.Fatalf("step %d %s(%s) error = %v, want %v", i, s.op, s.name, err, s.wantErr)
						}
						continue
					}
					if err != nil {
						t.Fatalf("step %d %s(%s): %v", i, s.op, s.name, err)
					}
					if s.op != "release" && got != s.want {
						t.Fatalf("step %d %s(%q) = %d, want %d", i, s.op, s.name, got, s.want)
					}
				}
				checkAll(t, r)
			})
		}
	}
}

// checkAll fails when All maps two in-use or quarantined names to one index.
func checkAll(t *testing.T, r Registry) {
	t.Helper()
	all, err := r.All(ctxT(t))
	if err != nil {
		t.Fatalf("All: %v", err)
	}
	seen := map[int]string{}
	for name, e := range all {
		if other, dup := seen[e.Index]; dup {
			t.Fatalf("All: index %d held by %s and %s", e.Index, other, name)
		}
		seen[e.Index] = name
	}
}

func TestEntryMetadata(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			ctx := ctxT(t)
			clk := newClock()
			r := im.new(t, clk, -1)
			a := pname(1)
			if _, err := r.Index(ctx, a, Meta{Image: "PE/pe-image.squashfs"}); err != nil {
				t.Fatal(err)
			}
			first := clk.Now()
			clk.Advance(time.Minute)
			if err := r.Release(ctx, a); err != nil {
				t.Fatal(err)
			}
			e, ok, err := r.Lookup(ctx, a)
			if err != nil || !ok {
				t.Fatalf("Lookup(%q) = %v, %v, %v", a, e, ok, err)
			}
			if e.Image != "PE/pe-image.squashfs" || e.Node != "w1" || !e.FirstSeen.Equal(first) || e.ReleasedAt == nil || !e.ReleasedAt.Equal(first.Add(time.Minute)) {
				t.Fatalf("Lookup(%q) = %+v, want image, node w1, first seen %v, released a minute later", a, e, first)
			}
			all, err := r.All(ctx)
			if err != nil || len(all) != 1 || all[a].Index != 0 {
				t.Fatalf("All() = %v, %v; want only %s at 0", all, err, a)
			}
		})
	}
}
