package registry

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/rig"
)

// BenchmarkKVAllocate8 measures allocations per second with 8 agents (own
// connections) allocating new images at once: half of each agent's images
// are also allocated by its neighbour, so claims and pointers race.
//
//	go test ./registry/ -run '^$' -bench KVAllocate8 -benchtime 2000x
func BenchmarkKVAllocate8(b *testing.B) {
	const agents = 8
	n := rig.NATSForTest(b, rig.NATSOptions{})
	ctx := ctxT(b)
	kvs := make([]*KV, agents)
	for i := range kvs {
		kvs[i] = NewKV(connect(b, n), KVConfig{})
	}
	per := max(b.N/agents, 1)
	var ops atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for a := range agents {
		wg.Go(func() {
			for j := range per {
				// agent a: names [a*per/2, a*per/2+per): half shared with a+1
				if _, err := kvs[a].Index(ctx, pname(a*per/2+j), Meta{}); err != nil {
					b.Errorf("Index: %v", err)
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(ops.Load())/time.Since(start).Seconds(), "allocs/s")
}
