package projector

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
)

// fuzzFile is what the mount shows for any path: a regular file of size bytes.
type fuzzFile struct {
	name string
	size int64
}

func (f fuzzFile) Name() string       { return filepath.Base(f.name) }
func (f fuzzFile) Size() int64        { return f.size }
func (f fuzzFile) Mode() fs.FileMode  { return 0o644 }
func (f fuzzFile) ModTime() time.Time { return time.Time{} }
func (f fuzzFile) IsDir() bool        { return false }
func (f fuzzFile) Sys() any           { return nil }

// FuzzInventoryKeys feeds arbitrary S3 keys (as a PE object and as the
// rootfs a manifest points to) through the inventory, full pass and event
// update: every key it accepts yields a clean path under the mount that
// passes lio.CheckPath, and every key it refuses has a reason.
func FuzzInventoryKeys(f *testing.F) {
	for _, seed := range [][2]string{
		{"PE/CPE-base.x86_64-24.11.squashfs", "id/rootfs"},
		{"PE/../../etc/shadow", "../id/rootfs"},
		{"PE//double", "id//rootfs"},
		{"PE/a=b,c d", "id/root fs"},
		{"PE/./x", "./rootfs"},
		{"PE/ünï\ncode", "id/rootfs\x00"},
		{"PE/" + strings.Repeat("x/", 200), "/abs/rootfs"},
		{"PE/x/..", "id/rootfs/"},
	} {
		f.Add(seed[0], seed[1], int64(4096))
	}
	mount := filepath.Join(f.TempDir(), "boot-images")
	const imageID = "4842867f-a9bc-4c2a-ad84-fcc3c931bdad"
	f.Fuzz(func(t *testing.T, peKey, rootfsKey string, size int64) {
		b := &memBucket{t: t, mount: mount, objs: map[string]bucket.Object{}, data: map[string][]byte{}}
		b.objs[peKey] = bucket.Object{Key: peKey, ETag: "e1", Size: size}
		b.objs[rootfsKey] = bucket.Object{Key: rootfsKey, ETag: "e2", Size: size}
		b.putManifest(imageID, rootfsKey, "e2")
		m := &memIMS{listing: ims.Listing{Images: []ims.Image{image(imageID, "fuzz", true)}}}
		inv := newInventory(b, m)
		inv.Lstat = func(p string) (fs.FileInfo, error) { return fuzzFile{p, size}, nil }

		check := func(d *Desired) {
			for name, p := range d.Projections {
				if p.File != filepath.Clean(p.File) || !strings.HasPrefix(p.File, mount+"/") {
					t.Fatalf("key %q accepted as %q, not a clean path under the mount %s", p.Key, p.File, mount)
				}
				if err := lio.CheckPath(p.File); err != nil {
					t.Fatalf("key %q accepted, but its path fails CheckPath: %v", p.Key, err)
				}
				if rel := strings.TrimPrefix(p.File, mount+"/"); rel != p.Key {
					t.Fatalf("key %q projected from %q (a different object)", p.Key, rel)
				}
				if p.Size <= 0 {
					t.Fatalf("key %q accepted with size %d", p.Key, p.Size)
				}
				if name != p.ID.Name {
					t.Fatalf("projection %s filed under %s", p.ID.Name, name)
				}
			}
			for _, r := range d.Rejected {
				if r.Reason == "" {
					t.Fatalf("key %q rejected without a reason", r.Key)
				}
			}
		}
		d, err := inv.Desired(t.Context(), nil, nil)
		if err != nil {
			t.Fatalf("Desired: %v", err)
		}
		check(d)
		u, err := inv.Update(t.Context(), d, nil, []string{peKey}, []string{imageID})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		check(u)
	})
}
