package bench

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/ims"
)

// PageSize is the S3 listing page size the real client uses; the in-memory
// bucket counts one list page per PageSize objects, as S3 would.
const PageSize = 1000

// Requests counts remote requests as a server sees them.
type Requests struct {
	ListPages, Heads, Gets, ManifestGets, Other int64
}

// Total is every request counted.
func (r Requests) Total() int64 { return r.ListPages + r.Heads + r.Gets + r.Other }

// Sub returns r - o.
func (r Requests) Sub(o Requests) Requests {
	return Requests{r.ListPages - o.ListPages, r.Heads - o.Heads, r.Gets - o.Gets, r.ManifestGets - o.ManifestGets, r.Other - o.Other}
}

type counters struct{ listPages, heads, gets, manifestGets, other atomic.Int64 }

func (c *counters) snapshot() Requests {
	return Requests{c.listPages.Load(), c.heads.Load(), c.gets.Load(), c.manifestGets.Load(), c.other.Load()}
}

// MemBucket is an in-memory boot-images bucket whose objects also "exist"
// under Mount (see Lstat). It satisfies projector.Objects.
type MemBucket struct {
	Mount string
	mu    sync.RWMutex
	objs  map[string]bucket.Object
	data  map[string][]byte
	c     counters
}

// NewMemBucket returns an empty bucket mounted at mount.
func NewMemBucket(mount string) *MemBucket {
	return &MemBucket{Mount: mount, objs: map[string]bucket.Object{}, data: map[string][]byte{}}
}

// Put stores an object (data may be nil; size is then used).
func (b *MemBucket) Put(key, etag string, size int64, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if data != nil {
		size = int64(len(data))
		b.data[key] = data
	}
	b.objs[key] = bucket.Object{Key: key, ETag: etag, Size: size, LastModified: time.Unix(0, 0)}
}

// Requests returns the requests served so far.
func (b *MemBucket) Requests() Requests { return b.c.snapshot() }

// List returns every object under prefix, sorted, counting S3 pages.
func (b *MemBucket) List(_ context.Context, prefix string) ([]bucket.Object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]bucket.Object, 0, len(b.objs))
	for k, o := range b.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	b.c.listPages.Add(int64(max(1, (len(out)+PageSize-1)/PageSize)))
	return out, nil
}

// Head returns one object.
func (b *MemBucket) Head(_ context.Context, key string) (bucket.Object, error) {
	b.c.heads.Add(1)
	b.mu.RLock()
	defer b.mu.RUnlock()
	o, ok := b.objs[key]
	if !ok {
		return bucket.Object{}, fmt.Errorf("s3://boot-images/%s: %w", key, bucket.ErrNotFound)
	}
	return o, nil
}

// Get returns an object's content.
func (b *MemBucket) Get(_ context.Context, key string, limit int64) ([]byte, error) {
	b.c.gets.Add(1)
	if strings.HasSuffix(key, "/manifest.json") {
		b.c.manifestGets.Add(1)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	d, ok := b.data[key]
	if !ok {
		return nil, fmt.Errorf("s3://boot-images/%s: %w", key, bucket.ErrNotFound)
	}
	return d, nil
}

// Lstat answers for files under Mount with the object's size, as s3fs would.
func (b *MemBucket) Lstat(p string) (fs.FileInfo, error) {
	b.mu.RLock()
	o, ok := b.objs[strings.TrimPrefix(p, b.Mount+"/")]
	b.mu.RUnlock()
	if !ok {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
	}
	return fileInfo{name: p, size: o.Size}, nil
}

type fileInfo struct {
	name string
	size int64
}

func (f fileInfo) Name() string       { return f.name }
func (f fileInfo) Size() int64        { return f.size }
func (f fileInfo) Mode() fs.FileMode  { return 0o644 }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return false }
func (f fileInfo) Sys() any           { return nil }

// MemIMS is an in-memory IMS. It satisfies projector.Images.
type MemIMS struct {
	mu     sync.RWMutex
	images []ims.Image
	byID   map[string]int
	lists  atomic.Int64
	gets   atomic.Int64
}

// Put adds or replaces an image.
func (m *MemIMS) Put(img ims.Image) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byID == nil {
		m.byID = map[string]int{}
	}
	if i, ok := m.byID[img.ID]; ok {
		m.images[i] = img
		return
	}
	m.byID[img.ID] = len(m.images)
	m.images = append(m.images, img)
}

// Requests returns (listings, single-image GETs) served so far.
func (m *MemIMS) Requests() (lists, gets int64) { return m.lists.Load(), m.gets.Load() }

// List returns every image.
func (m *MemIMS) List(context.Context) (ims.Listing, error) {
	m.lists.Add(1)
	m.mu.RLock()
	defer m.mu.RUnlock()
	return ims.Listing{Images: append([]ims.Image(nil), m.images...)}, nil
}

// Get returns one image.
func (m *MemIMS) Get(_ context.Context, id string) (ims.Image, error) {
	m.gets.Add(1)
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, ok := m.byID[id]
	if !ok {
		return ims.Image{}, fmt.Errorf("IMS image %s: %w", id, ims.ErrNotFound)
	}
	return m.images[i], nil
}

// Fleet describes the images of one benchmark fleet: half PE images, half
// IMS rootfs images (each with manifest.json, kernel and initrd).
type Fleet struct {
	N int
}

// PEKey is the key of PE image i.
func PEKey(i int) string { return fmt.Sprintf("PE/pe-%05d.squashfs", i) }

// ImageID is the IMS id of rootfs image i.
func ImageID(i int) string { return fmt.Sprintf("%08x-aaaa-4aaa-8aaa-%012x", i, i) }

// ManifestBody is the manifest.json of an image whose rootfs is rootfsKey.
func ManifestBody(bucketName, rootfsKey, etag string) []byte {
	return fmt.Appendf(nil, `{"version":"1.0","created":"2026-11-24 00:00:00","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"","link":{"type":"s3","path":"s3://%s/%s","etag":%q}}]}`, bucketName, rootfsKey, etag)
}

// Populate fills an in-memory bucket and IMS with n images (n/2 PE, the
// rest IMS rootfs images, all tagged for projection).
func Populate(b *MemBucket, m *MemIMS, n int) {
	for i := range n / 2 {
		b.Put(PEKey(i), fmt.Sprintf("%032x", i), int64(1<<30+i), nil)
	}
	for i := range n - n/2 {
		id := ImageID(i)
		rk := id + "/rootfs"
		etag := fmt.Sprintf("%032x-%d", i, 8)
		b.Put(rk, etag, int64(2<<30+i), nil)
		mk := id + "/manifest.json"
		b.Put(mk, fmt.Sprintf("m%031x", i), 0, ManifestBody("boot-images", rk, etag))
		b.Put(id+"/kernel", "k", 1<<20, nil)
		b.Put(id+"/initrd", "i", 1<<20, nil)
		m.Put(ims.Image{ID: id, Name: fmt.Sprintf("image-%05d", i), Created: "2026-11-24T00:00:00Z", Arch: "x86_64",
			Link:     &ims.Link{Type: "s3", Path: "s3://boot-images/" + mk},
			Metadata: map[string]string{ims.TagKey: ims.TagValue}})
	}
}

// Proxy is a reverse proxy in front of an S3 server that counts requests
// by kind: list pages, HEADs, GETs (and manifest.json GETs among them).
type Proxy struct {
	c     counters
	proxy *httputil.ReverseProxy
}

// NewProxy forwards to backend (e.g. http://127.0.0.1:7070), keeping the
// Host header so SigV4 signatures stay valid.
func NewProxy(backend string) (*Proxy, error) {
	u, err := url.Parse(backend)
	if err != nil {
		return nil, err
	}
	p := &Proxy{}
	p.proxy = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		r.Out.Host = r.In.Host
	}}
	return p, nil
}

// Requests returns the requests forwarded so far.
func (p *Proxy) Requests() Requests { return p.c.snapshot() }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.Trim(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodGet && !strings.Contains(path, "/") && r.URL.Query().Has("list-type"):
		p.c.listPages.Add(1)
	case r.Method == http.MethodGet && !strings.Contains(path, "/"):
		p.c.listPages.Add(1) // ListObjects v1
	case r.Method == http.MethodHead:
		p.c.heads.Add(1)
	case r.Method == http.MethodGet:
		p.c.gets.Add(1)
		if strings.HasSuffix(path, "/manifest.json") {
			p.c.manifestGets.Add(1)
		}
	default:
		p.c.other.Add(1)
	}
	p.proxy.ServeHTTP(w, r)
}
