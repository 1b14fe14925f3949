package projector

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/lio"
)

// countingApplier fails the benchmark if a no-change pass tries to change LIO.
type countingApplier struct{ calls int }

func (c *countingApplier) Apply(context.Context, []lio.Op) ([]lio.Result, error) {
	c.calls++
	return nil, nil
}
func (c *countingApplier) Save(context.Context) error { return nil }

// fleet builds n images (half PE, half IMS rootfs with manifests) in an
// in-memory bucket and IMS, and the LIO state that already serves them all.
func fleet(b *testing.B, n int) (*Inventory, *lio.Config) {
	mb := &memBucket{objs: map[string]bucket.Object{}, data: map[string][]byte{}, mount: "/var/lib/cps-local/boot-images"}
	m := &memIMS{}
	for i := range n / 2 {
		key := fmt.Sprintf("PE/pe-%05d.squashfs", i)
		mb.objs[key] = bucket.Object{Key: key, ETag: fmt.Sprintf("%032x", i), Size: int64(1<<30 + i)}
		id := fmt.Sprintf("%08x-aaaa-4aaa-8aaa-%012x", i, i)
		rk := id + "/rootfs"
		etag := fmt.Sprintf("%032x-%d", i, 8)
		mb.objs[rk] = bucket.Object{Key: rk, ETag: etag, Size: int64(2<<30 + i)}
		body := fmt.Sprintf(`{"version":"1.0","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","link":{"type":"s3","path":"s3://boot-images/%s","etag":%q}}]}`, rk, etag)
		mk := id + "/manifest.json"
		mb.objs[mk] = bucket.Object{Key: mk, ETag: fmt.Sprintf("m%031x", i), Size: int64(len(body))}
		mb.data[mk] = []byte(body)
		for _, k := range []string{"kernel", "initrd"} {
			mb.objs[id+"/"+k] = bucket.Object{Key: id + "/" + k, ETag: "x", Size: 1 << 20}
		}
		m.listing.Images = append(m.listing.Images, image(id, "image", true))
	}
	inv := &Inventory{Objects: mb, Images: m, Tagging: true, Layout: Layout{Bucket: "boot-images", Mount: mb.mount, PEPrefix: "PE/"},
		Lstat: func(p string) (fs.FileInfo, error) { return sized{name: p, size: sizeOf(mb, p)}, nil }}
	d, err := inv.Desired(context.Background(), nil, nil)
	if err != nil || len(d.Projections) != n {
		b.Fatalf("setup: %d projections, err %v", len(d.Projections), err)
	}
	actual := node(nil)
	for _, p := range d.Projections {
		actual.StorageObjects = append(actual.StorageObjects, backstoreOf(p))
		actual.Targets[0].TPGs[0].LUNs = append(actual.Targets[0].TPGs[0].LUNs, lio.LUN{Index: len(actual.Targets[0].TPGs[0].LUNs), StorageObject: "/backstores/fileio/" + p.ID.Name})
	}
	return inv, actual
}

// BenchmarkNoChangeResync10k is the steady state of a node serving 10,000
// images: read saveconfig.json, one S3 listing, one IMS listing, a plan
// that must change nothing, no manifest fetched, no file stat'ed, no
// targetcli started. S3 and IMS are in memory: this measures the agent.
func BenchmarkNoChangeResync10k(b *testing.B) {
	const n = 10000
	inv, actual := fleet(b, n)
	data, err := lio.Marshal(actual)
	if err != nil {
		b.Fatal(err)
	}
	save := filepath.Join(b.TempDir(), "saveconfig.json")
	if err := os.WriteFile(save, data, 0o600); err != nil {
		b.Fatal(err)
	}
	app := &countingApplier{}
	// As the agent runs it: saveconfig.json read through the cache it
	// shares with the driver (parsed again only when it changed).
	r := &Reconciler{Inventory: inv, LIO: app, SaveFile: save, Saved: &lio.SavedFile{Path: save}, Plan: PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5}}
	before := inv.Stats()
	b.ResetTimer()
	for b.Loop() {
		rep, err := r.Sync(context.Background(), SyncOptions{Trigger: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		if !rep.Plan.Empty() || len(rep.Plan.Held) != 0 {
			b.Fatalf("plan changes %d, holds %d; want nothing", len(rep.Plan.Changes), len(rep.Plan.Held))
		}
	}
	b.StopTimer()
	s := inv.Stats()
	if s.ManifestGets != before.ManifestGets || s.Stats != before.Stats || app.calls != 0 {
		b.Fatalf("steady state did %d manifest GETs, %d stats, %d applies; want none", s.ManifestGets-before.ManifestGets, s.Stats-before.Stats, app.calls)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/image")
}

type sized struct {
	name string
	size int64
}

func (s sized) Name() string       { return s.name }
func (s sized) Size() int64        { return s.size }
func (s sized) Mode() fs.FileMode  { return 0o644 }
func (s sized) ModTime() time.Time { return time.Time{} }
func (s sized) IsDir() bool        { return false }
func (s sized) Sys() any           { return nil }

func sizeOf(mb *memBucket, path string) int64 {
	return mb.objs[strings.TrimPrefix(path, mb.mount+"/")].Size
}

// BenchmarkEventPath10k prices the steps of an event's pass on a node
// serving 10,000 images, before targetcli runs: the desired state updated
// for one new PE key (one HEAD), the plan, and the status counts logged.
func BenchmarkEventPath10k(b *testing.B) {
	inv, actual := fleet(b, 10000)
	d, err := inv.Desired(context.Background(), actual, nil)
	if err != nil {
		b.Fatal(err)
	}
	mb := inv.Objects.(*memBucket)
	mb.objs["PE/new.squashfs"] = bucket.Object{Key: "PE/new.squashfs", ETag: "e", Size: 1 << 30}
	opts := PlanOptions{Target: testIQN, TPG: 1, MaxDeleteFraction: 0.5}
	var nd *Desired
	b.Run("update", func(b *testing.B) {
		for b.Loop() {
			if nd, err = inv.Update(context.Background(), d, actual, []string{"PE/new.squashfs"}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	var plan *Plan
	b.Run("plan", func(b *testing.B) {
		for b.Loop() {
			if plan, err = MakePlan(nd, actual, inv.Layout, opts); err != nil || len(plan.Changes) != 1 {
				b.Fatalf("plan: %v, %d changes", err, len(plan.Changes))
			}
		}
	})
	b.Run("counts", func(b *testing.B) {
		for b.Loop() {
			if c := StatusCounts(nd, plan, actual, inv.Layout, testIQN, 1); c[Projected] != 10000 {
				b.Fatalf("counts %v", c)
			}
		}
	})
}
