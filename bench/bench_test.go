package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"

	"github.com/sbps-marshal/sbps-marshal/projector"
)

var scales = []int{100, 1000, 10000}

// converged returns a reconciler over an in-memory fleet of n images whose
// LIO (MemLIO) already serves them all.
func converged(b *testing.B, n int) (*projector.Reconciler, *MemBucket, *MemIMS, *MemLIO) {
	b.Helper()
	mb := NewMemBucket("/var/lib/cps-local/boot-images")
	m := &MemIMS{}
	Populate(mb, m, n)
	ml, iqn, err := NewMemLIO(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ml.Lstat = mb.Lstat
	r := &projector.Reconciler{
		Inventory: &projector.Inventory{Objects: mb, Images: m, Tagging: true, Lstat: mb.Lstat,
			Layout: projector.Layout{Bucket: "boot-images", Mount: mb.Mount, PEPrefix: "PE/"}},
		LIO: ml, SaveFile: ml.SaveFile, Saved: &lio.SavedFile{Path: ml.SaveFile}, // as the agent runs it
		Plan: projector.PlanOptions{Target: iqn, TPG: 1, MaxDeleteFraction: 0.5},
	}
	rep, err := r.Sync(context.Background(), projector.SyncOptions{Trigger: "converge"})
	if err != nil {
		b.Fatal(err)
	}
	if got := len(rep.After.StorageObjects); got != n {
		b.Fatalf("converge: %d backstores, want %d", got, n)
	}
	return r, mb, m, ml
}

// BenchmarkResync is the no-change full resync of a node serving N images:
// saveconfig.json parsed, one S3 listing pass, one IMS listing, a plan that
// changes nothing, 0 manifest GETs, 0 targetcli processes. S3 and IMS are
// in memory: ns/op is the agent's own cost.
func BenchmarkResync(b *testing.B) {
	for _, n := range scales {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			r, mb, m, ml := converged(b, n)
			s0, l0, _ := mb.Requests(), ml.Calls, 0
			i0, _ := m.Requests()
			b.ResetTimer()
			cpu0 := ProcessCPU()
			for b.Loop() {
				rep, err := r.Sync(context.Background(), projector.SyncOptions{Trigger: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				if !rep.Plan.Empty() {
					b.Fatalf("no-change resync planned %d changes", len(rep.Plan.Changes))
				}
			}
			b.StopTimer()
			cpu := ProcessCPU() - cpu0
			s := mb.Requests().Sub(s0)
			il, _ := m.Requests()
			ops := float64(b.N)
			objects := n/2 + 4*(n-n/2)
			wantPages := int64(b.N) * int64((objects+PageSize-1)/PageSize)
			if s.ManifestGets != 0 || s.Heads != 0 || ml.Calls != l0 || il-i0 != int64(b.N) || s.ListPages > wantPages {
				b.Fatalf("per %d passes: %d manifest GETs, %d HEADs, %d LIO applies, %d IMS lists, %d list pages; want 0, 0, 0, %d, <= %d",
					b.N, s.ManifestGets, s.Heads, ml.Calls-l0, il-i0, s.ListPages, b.N, wantPages)
			}
			b.ReportMetric(float64(s.ListPages)/ops, "s3-list-pages/op")
			b.ReportMetric(float64(il-i0)/ops, "ims-lists/op")
			b.ReportMetric(float64(s.ManifestGets)/ops, "manifest-gets/op")
			b.ReportMetric(0, "targetcli-procs/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/ops/float64(n), "ns/image")
			b.ReportMetric(float64(cpu.Nanoseconds())/ops, "cpu-ns/op")
		})
	}
}

// BenchmarkEventPass is the pass an S3 upload notification causes with N
// projections present: SyncKeys for one new PE key (one HEAD, no listing,
// no manifest), a plan of two ops, and LIO read back. The in-memory LIO's
// own time (applying, writing saveconfig.json) is excluded from ns/op: the
// figure is the agent's share.
func BenchmarkEventPass(b *testing.B) {
	for _, n := range scales {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			r, mb, m, ml := converged(b, n)
			s0, c0 := mb.Requests(), ml.Calls
			i0, g0 := m.Requests()
			busy0, bcpu0 := ml.Busy, ml.BusyCPU
			i := 0
			b.ResetTimer()
			cpu0 := ProcessCPU()
			for b.Loop() {
				key := fmt.Sprintf("PE/event-%06d.squashfs", i)
				i++
				mb.Put(key, fmt.Sprintf("e%031x", i), 1<<30, nil)
				rep, err := r.SyncKeys(context.Background(), projector.SyncOptions{Trigger: "s3 event"}, []string{key}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if len(rep.Plan.Changes) != 1 || rep.After == nil || len(rep.After.StorageObjects) != n+i {
					b.Fatalf("event %d: %d changes, want 1 new projection", i, len(rep.Plan.Changes))
				}
			}
			b.StopTimer()
			cpu := ProcessCPU() - cpu0 - (ml.BusyCPU - bcpu0)
			s := mb.Requests().Sub(s0)
			il, ig := m.Requests()
			ops := float64(b.N)
			if s.ListPages != 0 || il != i0 || ig != g0 || s.ManifestGets != 0 || s.Heads != int64(b.N) {
				b.Fatalf("per %d events: %d list pages, %d IMS lists, %d IMS gets, %d manifest GETs, %d HEADs; want 0, 0, 0, 0, %d",
					b.N, s.ListPages, il-i0, ig-g0, s.ManifestGets, s.Heads, b.N)
			}
			lioTime := ml.Busy - busy0
			agent := b.Elapsed() - lioTime
			b.ReportMetric(float64(agent.Nanoseconds())/ops, "agent-ns/op")
			b.ReportMetric(float64(cpu.Nanoseconds())/ops, "agent-cpu-ns/op")
			b.ReportMetric(float64(lioTime.Nanoseconds())/ops, "lio-ns/op")
			b.ReportMetric(float64(ml.Calls-c0)/ops, "targetcli-procs/op")
			b.ReportMetric(float64(s.Heads)/ops, "s3-heads/op")
			b.ReportMetric(float64(s.ListPages)/ops, "s3-list-pages/op")
		})
	}
}

// BenchmarkSaveconfigLoad prices the agent's top cost at scale: parsing
// saveconfig.json (lio.Load, what every pass does several times) against
// reading it and taking its digest (what a parse cache keyed by content
// would cost on a hit).
func BenchmarkSaveconfigLoad(b *testing.B) {
	for _, n := range scales {
		_, _, _, ml := converged(b, n)
		data, err := os.ReadFile(ml.SaveFile)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("parse/N=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				c, err := lio.Load(ml.SaveFile)
				if err != nil || len(c.StorageObjects) != n {
					b.Fatalf("Load: %v", err)
				}
			}
		})
		b.Run(fmt.Sprintf("read+digest/N=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				d, err := os.ReadFile(ml.SaveFile)
				if err != nil || len(d) != len(data) {
					b.Fatalf("ReadFile: %v", err)
				}
				_ = events.ContentDigest(d)
			}
		})
	}
}

// BenchmarkAgentHeap is the heap the agent's own state keeps on a node
// serving N images, after a converge and one event: the desired state,
// the manifest cache, and LIO's saved state as lio.SavedFile keeps it
// (parsed objects, the element cache, the read buffer). It is the heap in
// use with the reconciler minus the heap in use once it is dropped, both
// after a collection; the in-memory S3, IMS and LIO stay in both.
func BenchmarkAgentHeap(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var retained uint64
			for b.Loop() {
				r, mb, _, ml := converged(b, n)
				mb.Put("PE/heap-probe.squashfs", "e0", 1<<30, nil)
				if _, err := r.SyncKeys(context.Background(), projector.SyncOptions{Trigger: "s3 event"}, []string{"PE/heap-probe.squashfs"}, nil); err != nil {
					b.Fatal(err)
				}
				with := heapInUse()
				runtime.KeepAlive(r) // r is live until here, dead below
				without := heapInUse()
				runtime.KeepAlive(ml)
				if with > without {
					retained = with - without
				}
			}
			b.ReportMetric(float64(retained)/(1<<20), "agent-heap-MB")
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
