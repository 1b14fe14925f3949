package projector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

// memBucket is an in-memory bucket whose files also appear under a mount
// directory, as s3fs shows them.
type memBucket struct {
	t       *testing.T
	mount   string
	objs    map[string]bucket.Object
	data    map[string][]byte
	listErr error
	getErr  error
}

func newMemBucket(t *testing.T) *memBucket {
	return &memBucket{t: t, mount: t.TempDir(), objs: map[string]bucket.Object{}, data: map[string][]byte{}}
}

// put stores an object; the mount shows it with mountSize bytes (-1: absent).
func (b *memBucket) put(key, etag string, size int64, mountSize int64) {
	b.t.Helper()
	b.objs[key] = bucket.Object{Key: key, ETag: etag, Size: size}
	if mountSize < 0 {
		return
	}
	path := filepath.Join(b.mount, key)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, mountSize), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *memBucket) putManifest(imageID, rootfsKey, etag string) {
	body := fmt.Sprintf(`{"version":"1.0","created":"2020-01-14 03:17:14","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"x","link":{"type":"s3","path":"s3://boot-images/%s","etag":%q}}]}`, rootfsKey, etag)
	if etag == "" {
		body = strings.Replace(body, `,"etag":""`, "", 1)
	}
	key := imageID + "/manifest.json"
	b.objs[key] = bucket.Object{Key: key, ETag: fmt.Sprintf("m-%x", len(body)+len(etag)), Size: int64(len(body))}
	b.data[key] = []byte(body)
}

func (b *memBucket) List(ctx context.Context, prefix string) ([]bucket.Object, error) {
	if b.listErr != nil {
		return nil, b.listErr
	}
	var out []bucket.Object
	for _, o := range b.objs {
		if strings.HasPrefix(o.Key, prefix) {
			out = append(out, o)
		}
	}
	return out, nil
}

func (b *memBucket) Head(ctx context.Context, key string) (bucket.Object, error) {
	if b.listErr != nil {
		return bucket.Object{}, b.listErr
	}
	o, ok := b.objs[key]
	if !ok {
		return bucket.Object{}, bucket.ErrNotFound
	}
	return o, nil
}

func (b *memBucket) Get(ctx context.Context, key string, limit int64) ([]byte, error) {
	if b.getErr != nil {
		return nil, b.getErr
	}
	d, ok := b.data[key]
	if !ok {
		return nil, bucket.ErrNotFound
	}
	return d, nil
}

type memIMS struct {
	listing ims.Listing
	hidden  []ims.Image // exist (Get finds them) but the listing leaves them out
	err     error
	gets    int
}

func (m *memIMS) List(context.Context) (ims.Listing, error) { return m.listing, m.err }

func (m *memIMS) Get(_ context.Context, id string) (ims.Image, error) {
	m.gets++
	if m.err != nil {
		return ims.Image{}, m.err
	}
	for _, img := range append(m.listing.Images, m.hidden...) {
		if img.ID == id {
			return img, nil
		}
	}
	return ims.Image{}, ims.ErrNotFound
}

func image(id, name string, tagged bool) ims.Image {
	img := ims.Image{ID: id, Name: name, Link: &ims.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json"}, Metadata: map[string]string{}}
	if tagged {
		img.Metadata["sbps-project"] = "true"
	}
	return img
}

const (
	id1 = "4842867f-a9bc-4c2a-ad84-fcc3c931bdad"
	id2 = "00d18ed1-20a3-4df2-affb-a88fda00b6f6"
	id3 = "f731d8d5-0fed-41d7-996e-6a0d19b6ff6d"
)

func newInventory(b *memBucket, m *memIMS) *Inventory {
	inv := &Inventory{Objects: b, Tagging: true, Layout: Layout{Bucket: "boot-images", Mount: b.mount, PEPrefix: "PE/"}}
	if m != nil {
		inv.Images = m
	}
	return inv
}

func TestInventoryDesired(t *testing.T) {
	b := newMemBucket(t)
	b.put("PE/CPE-base.x86_64-24.11.squashfs", "aa", 100, 100)
	b.put("PE/fresh.squashfs", "bb", 100, 0)    // s3fs still shows 0 bytes
	b.put("PE/not-yet.squashfs", "cc", 100, -1) // not visible under the mount
	b.put("PE/with space.squashfs", "dd", 100, 100)
	b.put("PE/empty.squashfs", "ee", 0, 0)
	b.put("PE/", "", 0, -1) // directory marker
	b.put(id1+"/rootfs", "2a94bb6ce5be4f6f0aa5af23f969d739-56", 300, 300)
	b.putManifest(id1, id1+"/rootfs", "2a94bb6ce5be4f6f0aa5af23f969d739-56")
	b.put(id2+"/rootfs", "other-etag", 300, 300)
	b.putManifest(id2, id2+"/rootfs", "4add976679c7e955c4b16d7e2cfa114e-32")
	b.put(id3+"/compute.squashfs", "3325f830ba9ec291005a4087be4f666f", 500, 500)
	b.putManifest(id3, id3+"/compute.squashfs", "")
	untagged := image("11111111-1111-4111-8111-111111111111", "untagged", false)
	legacy := image(id1, "legacy-same-rootfs", false)
	legacy.ID, legacy.Metadata = "22222222-2222-4222-8222-222222222222", nil
	legacy.Link.Path = "s3://boot-images/" + id1 + "/manifest.json"
	noLink := image("33333333-3333-4333-8333-333333333333", "building", true)
	noLink.Link = nil
	m := &memIMS{listing: ims.Listing{Images: []ims.Image{image(id1, "cos-2.5", true), image(id2, "mismatch", true), image(id3, "no-etag", true), untagged, legacy, noLink}}}
	inv := newInventory(b, m)

	d, err := inv.Desired(t.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pe := naming.For("s3://boot-images/PE/CPE-base.x86_64-24.11.squashfs")
	rf := naming.For("s3://boot-images/" + id1 + "/rootfs|2a94bb6ce5be4f6f0aa5af23f969d739-56")
	if len(d.Projections) != 2 {
		t.Errorf("projections = %v, want the PE image and one rootfs", keysOf(d.Projections))
	}
	if p, ok := d.Projections[pe.Name]; !ok || p.ID != pe || p.File != b.mount+"/PE/CPE-base.x86_64-24.11.squashfs" || p.Size != 100 {
		t.Errorf("PE projection = %+v, %v", p, ok)
	}
	if p, ok := d.Projections[rf.Name]; !ok || p.ID != rf || len(p.Users) != 2 {
		t.Errorf("rootfs projection = %+v, %v; want identity %+v used by two images", p, ok, rf)
	}
	if !d.RootfsComplete {
		t.Errorf("RootfsComplete = false (%s)", d.RootfsIncompleteReason)
	}
	wantPending := map[string]string{
		naming.For("s3://boot-images/PE/fresh.squashfs").Name:   "s3fs_lag: s3fs shows 0 bytes, S3 says 100",
		naming.For("s3://boot-images/PE/not-yet.squashfs").Name: "s3fs_lag: not visible under the s3fs mount yet",
	}
	for name, want := range wantPending {
		if got := string(d.Pending[name].Code) + ": " + d.Pending[name].Reason; !strings.HasPrefix(got, want) {
			t.Errorf("pending %s = %q, want %q", name, got, want)
		}
	}
	wantRejected := []string{
		`bad_key PE/with space.squashfs: cannot be given to targetcli`,
		`empty PE/empty.squashfs: S3 object is empty`,
		`etag_mismatch ` + id2 + `/rootfs: rootfs s3://boot-images/` + id2 + `/rootfs has S3 etag other-etag, the manifest says 4add976679c7e955c4b16d7e2cfa114e-32`,
		`no_etag : manifest s3://boot-images/` + id3 + `/manifest.json: rootfs link has no etag`,
		`no_link : IMS record has no manifest link`,
	}
	var got []string
	for _, r := range d.Rejected {
		got = append(got, string(r.Code)+" "+r.Key+": "+r.Reason)
	}
	for _, want := range wantRejected {
		if !containsPrefix(got, want) {
			t.Errorf("rejected = %q\nwant an entry starting %q", got, want)
		}
	}
	if len(d.Rejected) != len(wantRejected) {
		t.Errorf("%d rejected, want %d: %q", len(d.Rejected), len(wantRejected), got)
	}
}

func TestInventorySteadyStateIsCheap(t *testing.T) {
	b := newMemBucket(t)
	var stats int
	for i := range 20 {
		b.put(fmt.Sprintf("PE/img-%d", i), "e", 10, 10)
		id := fmt.Sprintf("%08d-aaaa-4aaa-8aaa-aaaaaaaaaaaa", i)
		b.put(id+"/rootfs", fmt.Sprintf("etag-%d", i), 20, 20)
		b.putManifest(id, id+"/rootfs", fmt.Sprintf("etag-%d", i))
	}
	m := &memIMS{}
	for i := range 20 {
		m.listing.Images = append(m.listing.Images, image(fmt.Sprintf("%08d-aaaa-4aaa-8aaa-aaaaaaaaaaaa", i), "img", true))
	}
	inv := newInventory(b, m)
	inv.Lstat = func(p string) (fs.FileInfo, error) { stats++; return os.Lstat(p) }

	d, err := inv.Desired(t.Context(), nil, nil)
	if err != nil || len(d.Projections) != 40 {
		t.Fatalf("first pass: %d projections, err %v", len(d.Projections), err)
	}
	if s := inv.Stats(); s.ManifestGets != 20 || stats != 40 {
		t.Fatalf("first pass: %d manifest GETs, %d stats; want 20 and 40", s.ManifestGets, stats)
	}
	// LIO now serves every projection.
	actual := &lio.Config{}
	for _, p := range d.Projections {
		actual.StorageObjects = append(actual.StorageObjects, backstoreOf(p))
	}
	d2, err := inv.Desired(t.Context(), actual, nil)
	if err != nil || len(d2.Projections) != 40 {
		t.Fatalf("second pass: %d projections, err %v", len(d2.Projections), err)
	}
	if s := inv.Stats(); s.ManifestGets != 20 || stats != 40 {
		t.Errorf("steady state fetched %d manifests and stat'ed %d files; want none", s.ManifestGets-20, stats-40)
	}
	// A new manifest version (new S3 ETag) is fetched again.
	id := "00000003-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	b.put(id+"/rootfs", "etag-new", 20, 20)
	b.putManifest(id, id+"/rootfs", "etag-new")
	if _, err := inv.Desired(t.Context(), actual, nil); err != nil {
		t.Fatal(err)
	}
	if s := inv.Stats(); s.ManifestGets != 21 {
		t.Errorf("after a manifest change: %d GETs in all, want 21", s.ManifestGets)
	}
}

func TestInventoryPartialInformation(t *testing.T) {
	b := newMemBucket(t)
	b.put("PE/a", "e", 10, 10)
	b.put(id1+"/rootfs", "x", 20, 20)
	b.putManifest(id1, id1+"/rootfs", "x")

	t.Run("S3 down: error, nothing desired", func(t *testing.T) {
		b.listErr = errors.New("connection refused")
		defer func() { b.listErr = nil }()
		d, err := newInventory(b, &memIMS{}).Desired(t.Context(), nil, nil)
		if err == nil || d != nil || !strings.Contains(err.Error(), "nothing changes") {
			t.Errorf("Desired = %v, %v; want an error saying nothing changes", d, err)
		}
		var se *SourceError
		if !errors.As(err, &se) || se.Source != SourceS3 {
			t.Errorf("error %v does not name source s3", err)
		}
	})
	t.Run("IMS down: PE known, rootfs incomplete", func(t *testing.T) {
		d, err := newInventory(b, &memIMS{err: errors.New("503")}).Desired(t.Context(), nil, nil)
		if err != nil || len(d.Projections) != 1 || d.RootfsComplete || !strings.Contains(d.RootfsIncompleteReason, "503") || d.RootfsIncompleteSource != SourceIMS {
			t.Errorf("Desired = %+v, %v; want rootfs incomplete from ims", d, err)
		}
	})
	t.Run("unreadable IMS record: incomplete", func(t *testing.T) {
		m := &memIMS{listing: ims.Listing{Images: []ims.Image{image(id1, "ok", true)}, Errors: []ims.RecordError{{Index: 1, ID: id2, Err: errors.New("name is a number")}}}}
		d, err := newInventory(b, m).Desired(t.Context(), nil, nil)
		if err != nil || len(d.Projections) != 2 || d.RootfsComplete || d.RootfsIncompleteSource != SourceIMS {
			t.Errorf("Desired = %d projections, complete %v from %q, err %v; want 2, false from ims", len(d.Projections), d.RootfsComplete, d.RootfsIncompleteSource, err)
		}
	})
	t.Run("manifest GET fails: incomplete, retried next pass", func(t *testing.T) {
		b.getErr = errors.New("timeout")
		inv := newInventory(b, &memIMS{listing: ims.Listing{Images: []ims.Image{image(id1, "ok", true)}}})
		d, err := inv.Desired(t.Context(), nil, nil)
		if err != nil || d.RootfsComplete || len(d.Rejected) != 0 || d.RootfsIncompleteSource != SourceManifest {
			t.Errorf("Desired = %+v, %v; want incomplete from manifest and nothing rejected", d, err)
		}
		b.getErr = nil
		d, err = inv.Desired(t.Context(), nil, nil)
		if err != nil || !d.RootfsComplete || len(d.Projections) != 2 {
			t.Errorf("after recovery: %+v, %v", d, err)
		}
	})
}

func TestInventoryRefusesEscapes(t *testing.T) {
	b := newMemBucket(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), make([]byte, 10), 0o600)
	os.MkdirAll(filepath.Join(b.mount, "PE"), 0o755)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(b.mount, "PE/link"))
	os.Symlink(outside, filepath.Join(b.mount, "PE/dir"))
	b.objs["PE/link"] = bucket.Object{Key: "PE/link", Size: 10, ETag: "x"}
	b.objs["PE/dir/secret"] = bucket.Object{Key: "PE/dir/secret", Size: 10, ETag: "x"}
	b.objs["PE/../../etc/shadow"] = bucket.Object{Key: "PE/../../etc/shadow", Size: 10, ETag: "x"}
	b.objs["PE//double"] = bucket.Object{Key: "PE//double", Size: 10, ETag: "x"}
	b.objs["PE/new\nline"] = bucket.Object{Key: "PE/new\nline", Size: 10, ETag: "x"}
	b.objs["PE/a=b,c"] = bucket.Object{Key: "PE/a=b,c", Size: 10, ETag: "x"}
	b.objs[`PE/quote"`] = bucket.Object{Key: `PE/quote"`, Size: 10, ETag: "x"}

	d, err := newInventory(b, nil).Desired(t.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Projections) != 0 || len(d.Pending) != 0 {
		t.Errorf("projections %v, pending %v; want none", keysOf(d.Projections), d.Pending)
	}
	if len(d.Rejected) != 7 {
		t.Errorf("%d rejected, want 7: %+v", len(d.Rejected), d.Rejected)
	}
	for _, r := range d.Rejected {
		if r.Reason == "" {
			t.Errorf("rejected %q without a reason", r.Key)
		}
	}
}

func keysOf[V any](m map[string]V) []string { return sortedKeys(m) }

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestInventoryUpdate(t *testing.T) {
	b := newMemBucket(t)
	b.put("PE/a", "e1", 10, 10)
	b.put(id1+"/rootfs", "r1", 20, 20)
	b.putManifest(id1, id1+"/rootfs", "r1")
	shared := image(id2, "shares-rootfs", true)
	shared.Link.Path = "s3://boot-images/" + id1 + "/manifest.json"
	m := &memIMS{listing: ims.Listing{Images: []ims.Image{image(id1, "cos", true), shared}}}
	inv := newInventory(b, m)
	d, err := inv.Desired(t.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rf := naming.For("s3://boot-images/" + id1 + "/rootfs|r1").Name
	if got := d.ImagesByKey[id1+"/manifest.json"]; len(got) != 2 {
		t.Fatalf("ImagesByKey[manifest] = %v, want both images", got)
	}

	// A new PE key, a removed PE key and an untagged image sharing a rootfs.
	b.put("PE/new", "e2", 5, 5)
	delete(b.objs, "PE/a")
	m.listing.Images[0].Metadata = map[string]string{}
	n, err := inv.Update(t.Context(), d, nil, []string{"PE/new", "PE/a"}, []string{id1})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Projections[naming.For("s3://boot-images/PE/new").Name]; !ok {
		t.Error("new PE key not projected")
	}
	if _, ok := n.Projections[naming.For("s3://boot-images/PE/a").Name]; ok {
		t.Error("removed PE key still projected")
	}
	if p, ok := n.Projections[rf]; !ok || len(p.Users) != 1 || p.Users[0].ID != id2 {
		t.Errorf("shared rootfs = %+v, %v; want it kept for the image still tagged", p, ok)
	}
	// The original is untouched (reports may still be read).
	if _, ok := d.Projections[naming.For("s3://boot-images/PE/a").Name]; !ok || len(d.Projections[rf].Users) != 2 {
		t.Error("Update changed the desired state it was given")
	}

	// The last user goes: the rootfs projection goes.
	m.listing.Images = m.listing.Images[:1]
	n2, err := inv.Update(t.Context(), n, nil, nil, []string{id2})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n2.Projections[rf]; ok {
		t.Error("rootfs projection kept after its last image was deleted")
	}

	// S3 cannot answer: an error, and nothing decided.
	b.listErr = errors.New("503")
	if _, err := inv.Update(t.Context(), n2, nil, []string{"PE/new"}, nil); err == nil {
		t.Error("Update with S3 failing = nil error")
	}
}

func TestInventoryPartialListingIsIncomplete(t *testing.T) {
	b := newMemBucket(t)
	m := &memIMS{}
	for _, id := range []string{id1, id2, id3} {
		b.put(id+"/rootfs", "r-"+id, 20, 20)
		b.putManifest(id, id+"/rootfs", "r-"+id)
		m.listing.Images = append(m.listing.Images, image(id, "img", true))
	}
	inv := newInventory(b, m)
	prev, err := inv.Desired(t.Context(), nil, nil)
	if err != nil || len(prev.Projections) != 3 {
		t.Fatalf("first pass: %d projections, %v", len(prev.Projections), err)
	}

	// IMS answers with a listing that leaves out an image that still exists.
	m.hidden, m.listing.Images = m.listing.Images[2:], m.listing.Images[:2]
	d, err := inv.Desired(t.Context(), nil, prev)
	if err != nil {
		t.Fatal(err)
	}
	if d.RootfsComplete || !strings.Contains(d.RootfsIncompleteReason, "listing is partial") {
		t.Errorf("partial listing: complete %v (%q); want incomplete", d.RootfsComplete, d.RootfsIncompleteReason)
	}

	// The image is really gone (404): the listing is complete, 1 GET spent.
	m.hidden, m.gets = nil, 0
	d, err = inv.Desired(t.Context(), nil, prev)
	if err != nil {
		t.Fatal(err)
	}
	if !d.RootfsComplete || len(d.Projections) != 2 || m.gets != 1 {
		t.Errorf("deleted image: complete %v (%q), %d projections, %d GETs; want complete, 2, 1", d.RootfsComplete, d.RootfsIncompleteReason, len(d.Projections), m.gets)
	}
}

// TestInventoryReadOnlyMount (issue 18): an image whose file is on a
// read-only mount is pending with the cause and the fix, and never reaches
// targetcli (real fileio create fails with EROFS there); the others are
// projected.
func TestInventoryReadOnlyMount(t *testing.T) {
	b := newMemBucket(t)
	b.put("PE/a.squashfs", "aa", 100, 100)
	b.put("PE/ro/c.squashfs", "cc", 100, 100)
	inv := newInventory(b, nil)
	inv.Access = func(p string) error {
		if strings.Contains(p, "/ro/") {
			return syscall.EROFS
		}
		return nil
	}
	d, err := inv.Desired(t.Context(), &lio.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Projections) != 1 {
		t.Errorf("projections = %v, want only PE/a.squashfs", keysOf(d.Projections))
	}
	if len(d.Pending) != 1 {
		t.Fatalf("pending = %v, want PE/ro/c.squashfs", d.Pending)
	}
	for _, pr := range d.Pending {
		if pr.Key != "PE/ro/c.squashfs" || pr.Code != CodeReadOnly || !strings.Contains(pr.Reason, "read-only mount") || !strings.Contains(pr.Reason, "read-write") {
			t.Errorf("pending %s: %s %q, want %s, the read-only mount and its fix", pr.Key, pr.Code, pr.Reason, CodeReadOnly)
		}
	}
}
