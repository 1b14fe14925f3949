package registry

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/rig"
)

// result is what one agent was told for one name.
type result struct {
	agent, index int
	name         string
}

// runAgents runs one KV per order (each on its own connection, as separate
// agents) allocating the names of its order concurrently, and returns every
// answer.
func runAgents(t *testing.T, orders [][]string) ([]*KV, []result) {
	t.Helper()
	n := rig.NATSForTest(t, rig.NATSOptions{})
	// Thousands of allocations over 8 connections: under -race on a busy
	// 2-core machine this takes minutes, so bound it by the test binary's
	// deadline rather than ctxT's two minutes.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	agents := make([]*KV, len(orders))
	for i := range orders {
		agents[i] = NewKV(connect(t, n), KVConfig{Node: "w" + string(rune('a'+i))})
	}
	var mu sync.Mutex
	var res []result
	var wg sync.WaitGroup
	errs := make(chan error, len(orders))
	for i, order := range orders {
		wg.Go(func() {
			for _, name := range order {
				got, err := agents[i].Index(ctx, name, Meta{Image: "img"})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				res = append(res, result{agent: i, name: name, index: got})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Index: %v", err)
	}
	return agents, res
}

// checkExclusive fails unless every name got one index from every agent and
// no index went to two names; it returns the name->index map.
func checkExclusive(t *testing.T, res []result) map[string]int {
	t.Helper()
	byName := map[string]int{}
	byIndex := map[int]string{}
	for _, r := range res {
		if prev, ok := byName[r.name]; ok && prev != r.index {
			t.Fatalf("name %s got index %d and %d (agent %d)", r.name, prev, r.index, r.agent)
		}
		byName[r.name] = r.index
		if prev, ok := byIndex[r.index]; ok && prev != r.name {
			t.Fatalf("index %d went to %s and %s", r.index, prev, r.name)
		}
		byIndex[r.index] = r.name
	}
	return byName
}

func TestKVConcurrentAllocators(t *testing.T) {
	tests := []struct {
		name            string
		agents, perAgen int
		stride          int // agent i allocates names [i*stride, i*stride+perAgent)
	}{
		{"8 agents x 1000 images, half overlapping", 8, 1000, 500},
		{"8 agents x 1000 identical images", 8, 1000, 0},
		{"8 agents x 300 disjoint images (all race for the same lowest index)", 8, 300, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orders := make([][]string, tt.agents)
			distinct := map[string]bool{}
			for i := range orders {
				for j := range tt.perAgen {
					name := pname(i*tt.stride + j)
					orders[i] = append(orders[i], name)
					distinct[name] = true
				}
				rng := rand.New(rand.NewPCG(uint64(i), 42))
				rng.Shuffle(len(orders[i]), func(a, b int) { orders[i][a], orders[i][b] = orders[i][b], orders[i][a] })
			}
			agents, res := runAgents(t, orders)
			got := checkExclusive(t, res)
			if len(got) != len(distinct) {
				t.Fatalf("%d names allocated, want %d", len(got), len(distinct))
			}
			all, err := agents[0].All(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			maxIdx := 0
			for name, idx := range got {
				if all[name].Index != idx || all[name].Released() {
					t.Fatalf("All()[%s] = %+v, agents were told %d", name, all[name], idx)
				}
				maxIdx = max(maxIdx, idx)
			}
			if len(all) != len(got) {
				t.Fatalf("All() has %d entries, want %d", len(all), len(got))
			}
			// Lost races roll their claims back, so numbering stays dense
			// up to the few holes of claims rolled back after another
			// agent cached them.
			if maxIdx >= len(got)+len(got)/20 {
				t.Fatalf("highest index %d for %d names: numbering is not dense", maxIdx, len(got))
			}
			t.Logf("%d names, highest index %d", len(got), maxIdx)
		})
	}
}

func TestKVOrdersConverge(t *testing.T) {
	const images = 300
	var names []string
	for i := range images {
		names = append(names, pname(i))
	}
	fwd := append([]string(nil), names...)
	rev := make([]string, images)
	for i, n := range names {
		rev[images-1-i] = n
	}
	shuf := append([]string(nil), names...)
	rand.New(rand.NewPCG(7, 7)).Shuffle(images, func(a, b int) { shuf[a], shuf[b] = shuf[b], shuf[a] })

	agents, res := runAgents(t, [][]string{fwd, rev, shuf})
	checkExclusive(t, res)
	maps := make([]map[string]int, len(agents))
	for _, r := range res {
		if maps[r.agent] == nil {
			maps[r.agent] = map[string]int{}
		}
		maps[r.agent][r.name] = r.index
	}
	for i := 1; i < len(maps); i++ {
		for name, idx := range maps[0] {
			if maps[i][name] != idx {
				t.Fatalf("agent %d maps %s to %d, agent 0 to %d", i, name, maps[i][name], idx)
			}
		}
	}
	// Each agent's view of the registry is the same map.
	for i, a := range agents {
		all, err := a.All(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for name, idx := range maps[0] {
			if all[name].Index != idx {
				t.Fatalf("agent %d All()[%s] = %d, want %d", i, name, all[name].Index, idx)
			}
		}
	}
}

// TestKVQuarantineRace releases images and allocates new ones from several
// agents at once, across the quarantine boundary: a released number is never
// handed to a new image while in quarantine, and never to two images.
func TestKVQuarantineRace(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	ctx := ctxT(t)
	clk := newClock()
	const agents, old = 4, 40
	kvs := make([]*KV, agents)
	for i := range kvs {
		kvs[i] = NewKV(connect(t, n), KVConfig{Quarantine: time.Hour, Now: clk.Now})
	}
	oldIdx := map[int]bool{}
	for i := range old {
		got, err := kvs[0].Index(ctx, pname(i), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		oldIdx[got] = true
	}
	for i := range old {
		if err := kvs[i%agents].Release(ctx, pname(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Within quarantine: new images must avoid every old number.
	var mu sync.Mutex
	var res []result
	alloc := func(base int) {
		var wg sync.WaitGroup
		for a := range agents {
			wg.Go(func() {
				for j := range old {
					name := pname(base + j)
					got, err := kvs[a].Index(ctx, name, Meta{})
					if err != nil {
						t.Errorf("Index(%s): %v", name, err)
						return
					}
					mu.Lock()
					res = append(res, result{agent: a, name: name, index: got})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	alloc(1000)
	for _, r := range res {
		if oldIdx[r.index] {
			t.Fatalf("%s got index %d, released less than the 1h quarantine ago", r.name, r.index)
		}
	}
	checkExclusive(t, res)
	clk.Advance(time.Hour)
	res = nil
	alloc(2000)
	reused := 0
	for _, r := range res {
		if oldIdx[r.index] {
			reused++
		}
	}
	if reused == 0 {
		t.Fatalf("after the quarantine no released number was reused")
	}
	checkExclusive(t, res)
	checkAll(t, kvs[0])
}

func TestKVAdoptRace(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	ctx := ctxT(t)
	const agents = 8
	name := pname(1)
	got := make([]int, agents)
	var wg sync.WaitGroup
	for i := range agents {
		k := NewKV(connect(t, n), KVConfig{})
		wg.Go(func() {
			var err error
			got[i], err = k.Adopt(ctx, name, 10+i, Meta{})
			if err != nil {
				t.Errorf("Adopt: %v", err)
			}
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[0] < 10 || got[0] >= 10+agents {
			t.Fatalf("Adopt answers %v: want one of the offered indexes, the same for all", got)
		}
	}
}

// TestKVCrashLeftovers checks the states a crash between the two writes of
// an allocation leaves behind.
func TestKVCrashLeftovers(t *testing.T) {
	tests := []struct {
		name  string
		setup func(ctx context.Context, kv jetstream.KeyValue) error
		alloc string
		want  int
	}{
		{"claim without pointer is taken over by its name", func(ctx context.Context, kv jetstream.KeyValue) error {
			return putJSON(ctx, kv, "idx.0", idxRecord{Name: pname(1), Entry: Entry{Index: 0}})
		}, pname(1), 0},
		{"claim without pointer is not given to another name", func(ctx context.Context, kv jetstream.KeyValue) error {
			return putJSON(ctx, kv, "idx.0", idxRecord{Name: pname(1), Entry: Entry{Index: 0}})
		}, pname(2), 1},
		{"pointer to a deleted claim is stale", func(ctx context.Context, kv jetstream.KeyValue) error {
			return putJSON(ctx, kv, "name."+pname(1), pointer{Index: 3})
		}, pname(1), 0},
		{"pointer to another name's claim is stale", func(ctx context.Context, kv jetstream.KeyValue) error {
			if err := putJSON(ctx, kv, "name."+pname(1), pointer{Index: 0}); err != nil {
				return err
			}
			return putJSON(ctx, kv, "idx.0", idxRecord{Name: pname(2), Entry: Entry{Index: 0}})
		}, pname(1), 1},
		{"damaged pointer is replaced", func(ctx context.Context, kv jetstream.KeyValue) error {
			_, err := kv.Put(ctx, "name."+pname(1), []byte("{"))
			return err
		}, pname(1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			js := connect(t, rig.NATSForTest(t, rig.NATSOptions{}))
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultBucket})
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.setup(ctx, kv); err != nil {
				t.Fatal(err)
			}
			r := NewKV(js, KVConfig{})
			got, err := r.Index(ctx, tt.alloc, Meta{})
			if err != nil || got != tt.want {
				t.Fatalf("Index(%s) = %d, %v; want %d", tt.alloc, got, err, tt.want)
			}
			if again, err := r.Index(ctx, tt.alloc, Meta{}); err != nil || again != got {
				t.Fatalf("second Index(%s) = %d, %v; want %d", tt.alloc, again, err, got)
			}
			checkAll(t, r)
		})
	}
}

func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, b)
	return err
}

func TestKVBucket(t *testing.T) {
	ctx := ctxT(t)
	n := rig.NATSForTest(t, rig.NATSOptions{})
	js := connect(t, n)
	r := NewKV(js, KVConfig{Bucket: "luns-test", History: 3})
	if _, err := r.Index(ctx, pname(1), Meta{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "luns-test")
	if err != nil {
		t.Fatalf("bucket luns-test was not created: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 3 {
		t.Fatalf("History = %d, want 3", st.History())
	}
	// No server: a clear, wrapped error within the context's deadline.
	n.Shutdown()
	r2 := NewKV(connect2(t, n.ClientURL()), KVConfig{})
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r2.Index(tctx, pname(2), Meta{})
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("Index with NATS down = %v after %s; want an error within the deadline", err, time.Since(start))
	}
}
