package projector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

// Objects is what the inventory needs of S3.
type Objects interface {
	// List returns every object under prefix, or an error and nothing.
	List(ctx context.Context, prefix string) ([]bucket.Object, error)
	// Head returns one object, or an error matching bucket.ErrNotFound.
	Head(ctx context.Context, key string) (bucket.Object, error)
	Get(ctx context.Context, key string, limit int64) ([]byte, error)
}

// Images is what the inventory needs of IMS.
type Images interface {
	List(ctx context.Context) (ims.Listing, error)
	// Get returns one image, or an error matching ims.ErrNotFound.
	Get(ctx context.Context, id string) (ims.Image, error)
}

// lookup finds an S3 object: from a listing, or with a HEAD request.
// found=false means S3 has no such object; err means S3 could not say.
type lookup func(ctx context.Context, key string) (o bucket.Object, found bool, err error)

func fromListing(byKey map[string]bucket.Object) lookup {
	return func(_ context.Context, key string) (bucket.Object, bool, error) {
		o, ok := byKey[key]
		return o, ok, nil
	}
}

func (inv *Inventory) fromHead(ctx context.Context, key string) (bucket.Object, bool, error) {
	o, err := inv.Objects.Head(ctx, key)
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return bucket.Object{}, false, nil
	case err != nil:
		return bucket.Object{}, false, err
	}
	return o, true, nil
}

// Inventory works out the desired state from S3 and IMS. Manifests are
// cached by their S3 ETag, so a resync without changes fetches none.
// It is safe for concurrent use.
type Inventory struct {
	Objects Objects
	Images  Images // nil: no IMS (PE images only)
	Layout  Layout
	Tagging bool // IMS_TAGGING
	// Lstat defaults to os.Lstat; tests may count calls.
	Lstat func(string) (fs.FileInfo, error)
	// Access asks whether a file could be opened for writing; it defaults
	// to access(2) with W_OK. Only EROFS is taken as a verdict: the kernel
	// opens a fileio backing file read-write even with write_back=false, so
	// LIO cannot serve a file on a read-only mount.
	Access func(string) error

	mu        sync.Mutex
	manifests map[string]manifestEntry // by manifest key
	stats     InventoryStats
}

// InventoryStats counts the inventory's remote and filesystem work.
type InventoryStats struct {
	ManifestGets int // manifest.json downloads
	Stats        int // files stat'ed under the mount
}

type manifestEntry struct {
	etag   string // S3 ETag of the manifest object
	rootfs ims.Artifact
	err    error // a permanent problem with this manifest version
}

// Stats returns the counters so far.
func (inv *Inventory) Stats() InventoryStats {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.stats
}

// Desired reads S3 and IMS and returns what should be projected. actual is
// LIO's saved state, used only to skip re-checking files that already back
// a correct backstore; it may be nil. prev is the previous pass's desired
// state, or nil: an image it projected that the IMS listing no longer
// shows is confirmed gone with a GET before its projection may go. An S3
// failure is an error: with no listing, nothing may change. An IMS failure
// is not: PE images are still known, and the result says rootfs information
// is incomplete.
func (inv *Inventory) Desired(ctx context.Context, actual *lio.Config, prev *Desired) (*Desired, error) {
	objs, err := inv.Objects.List(ctx, "")
	if err != nil {
		return nil, &SourceError{SourceS3, fmt.Errorf("S3 listing failed, nothing changes this pass: %w", err)}
	}
	byKey := make(map[string]bucket.Object, len(objs))
	for _, o := range objs {
		byKey[o.Key] = o
	}
	d := &Desired{Projections: map[string]Projection{}, Pending: map[string]Problem{}, RootfsComplete: true}
	served := servedFiles(actual, inv.Layout)

	for _, o := range objs {
		if !strings.HasPrefix(o.Key, inv.Layout.PEPrefix) || strings.HasSuffix(o.Key, "/") {
			continue
		}
		inv.consider(d, served, Projection{Kind: PE, ID: naming.For(naming.PEInput(inv.Layout.Bucket, o.Key)), Key: o.Key, ETag: o.ETag, Size: o.Size})
	}
	if inv.Images == nil {
		return d, nil
	}
	listing, err := inv.Images.List(ctx)
	if err != nil {
		d.incomplete(SourceIMS, "IMS listing failed: "+err.Error())
		return d, nil
	}
	if n := len(listing.Errors); n > 0 {
		d.incomplete(SourceIMS, fmt.Sprintf("%d IMS record(s) could not be read, first: %v", n, listing.Errors[0]))
		for _, re := range listing.Errors {
			d.Rejected = append(d.Rejected, Problem{Kind: Rootfs, Images: []ImageRef{{ID: re.ID}}, Code: CodeBadRecord, Reason: re.Error()})
		}
	}
	if why := inv.confirmVanished(ctx, d, prev, listing); why != "" {
		d.incomplete(SourceIMS, why)
	}
	find := fromListing(byKey)
	for _, img := range listing.Images {
		if err := inv.addImage(ctx, d, served, img, find); err != nil {
			d.incomplete(SourceManifest, err.Error())
		}
	}
	return d, nil
}

// maxConfirmations is the budget of IMS GETs a full pass spends on images
// the listing left out. Images beyond it are not taken as gone: their
// projections are held (Desired.Unconfirmed) and checked by later passes.
const maxConfirmations = 16

// confirmVanished checks, with a GET each, the images prev projected, held
// pending or held unconfirmed that the listing does not show, at most
// maxConfirmations of them. Only an image IMS itself answers 404 for is
// confirmed gone; every other one is recorded in d.Unconfirmed, so that its
// projection is held and the next pass asks again. An image that still
// exists means the listing is incomplete (IMS can return a partial listing
// without an error), and so does a GET that fails; the reason is returned.
func (inv *Inventory) confirmVanished(ctx context.Context, d *Desired, prev *Desired, listing ims.Listing) string {
	if prev == nil {
		return ""
	}
	listed := listedIDs(listing)
	vanished := vanishedIDs(prev, listed)
	if len(vanished) == 0 {
		return ""
	}
	gone, why := inv.confirmGone(ctx, vanished)
	if unconfirmed := len(vanished) - len(gone); unconfirmed > 0 {
		h := holder{d: d, listed: listed, gone: gone, unconfirmed: unconfirmed}
		for name, p := range prev.Projections {
			h.hold(Problem{Name: name, Key: p.Key, Images: p.Users})
		}
		for name, p := range prev.Pending {
			h.hold(Problem{Name: name, Key: p.Key, Images: p.Images})
		}
		for name, p := range prev.Unconfirmed {
			h.hold(Problem{Name: name, Key: p.Key, Images: p.Images})
		}
	}
	return why
}

// listedIDs are the images a listing names, readable or not.
func listedIDs(listing ims.Listing) map[string]bool {
	listed := make(map[string]bool, len(listing.Images)+len(listing.Errors))
	for _, img := range listing.Images {
		listed[img.ID] = true
	}
	for _, re := range listing.Errors {
		listed[re.ID] = true
	}
	return listed
}

// vanishedIDs are the images prev projected or held that the listing
// left out, sorted.
func vanishedIDs(prev *Desired, listed map[string]bool) []string {
	var vanished []string
	note := func(refs []ImageRef) {
		for _, r := range refs {
			if r.ID != "" && !listed[r.ID] && !slices.Contains(vanished, r.ID) {
				vanished = append(vanished, r.ID)
			}
		}
	}
	for _, p := range prev.Projections {
		note(p.Users)
	}
	for _, p := range prev.Pending {
		note(p.Images)
	}
	for _, p := range prev.Unconfirmed {
		note(p.Images)
	}
	slices.Sort(vanished)
	return vanished
}

// confirmGone asks IMS about the vanished images in order, at most
// maxConfirmations, and stops at the first that is not IMS's own 404: the
// listing is then partial, and why says so.
func (inv *Inventory) confirmGone(ctx context.Context, vanished []string) (gone map[string]bool, why string) {
	gone = map[string]bool{}
	for i, id := range vanished {
		if i == maxConfirmations {
			break
		}
		_, err := inv.Images.Get(ctx, id)
		if errors.Is(err, ims.ErrNotFound) {
			gone[id] = true
			continue
		}
		if err != nil {
			return gone, fmt.Sprintf("IMS listing left out image %s and IMS could not confirm it is gone (%v)", id, err)
		}
		return gone, fmt.Sprintf("IMS listing left out %d image(s) that were projected, but image %s still exists: the listing is partial", len(vanished), id)
	}
	return gone, ""
}

// holder records in d.Unconfirmed the projections whose images the listing
// left out and IMS has not confirmed gone.
type holder struct {
	d           *Desired
	listed      map[string]bool
	gone        map[string]bool
	unconfirmed int
}

func (h holder) hold(p Problem) {
	var refs []ImageRef
	for _, r := range p.Images {
		if r.ID != "" && !h.listed[r.ID] && !h.gone[r.ID] && !slices.ContainsFunc(refs, func(x ImageRef) bool { return x.ID == r.ID }) {
			refs = append(refs, r)
		}
	}
	if len(refs) == 0 {
		return
	}
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	p.Kind, p.Images, p.Code = Rootfs, refs, HeldUnconfirmed
	p.Reason = fmt.Sprintf("kept: the IMS listing left out image %s, not confirmed gone yet (%d of %d left-out image(s) confirmed gone this pass, at most %d IMS GETs per pass; the next pass asks again)",
		strings.Join(ids, ", "), len(h.gone), len(h.gone)+h.unconfirmed, maxConfirmations)
	if prior, ok := h.d.Unconfirmed[p.Name]; ok {
		p.Images = append(slices.Clip(prior.Images), refs...)
	}
	if h.d.Unconfirmed == nil {
		h.d.Unconfirmed = map[string]Problem{}
	}
	h.d.Unconfirmed[p.Name] = p
}

// addImage files an IMS image under d. A transient failure (S3 or a
// manifest could not be read) is returned; the image is then left out.
func (inv *Inventory) addImage(ctx context.Context, d *Desired, served servedFile, img ims.Image, find lookup) error {
	if ok, _ := ims.Projectable(img, inv.Tagging); !ok {
		return nil
	}
	if img.Link != nil {
		if _, mkey, err := ims.SplitS3Path(img.Link.Path); err == nil {
			d.indexKey(mkey, img.ID)
		}
	}
	p, problem, transient := inv.rootfsOf(ctx, img, find)
	if p.Key != "" {
		d.indexKey(p.Key, img.ID)
	}
	switch {
	case transient != nil:
		return transient
	case !problem.ok():
		d.Rejected = append(d.Rejected, Problem{Kind: Rootfs, Key: p.Key, Images: []ImageRef{{ID: img.ID, Name: img.Name}}, Code: problem.code, Reason: problem.text})
	default:
		p = inv.oneProjectionPerFile(d, served, p)
		if prev, ok := d.Projections[p.ID.Name]; ok {
			prev.Users = append(slices.Clip(prev.Users), p.Users...)
			d.Projections[p.ID.Name] = prev
			return nil
		}
		if prev, ok := d.Pending[p.ID.Name]; ok {
			prev.Images = append(slices.Clip(prev.Images), p.Users...)
			d.Pending[p.ID.Name] = prev
			return nil
		}
		inv.consider(d, served, p)
	}
	return nil
}

// oneProjectionPerFile gives p the identity of the projection that already
// serves its rootfs file in d under another name: IMS images can name one
// rootfs with etags spelt differently (quoted or not), which hash to
// different names, and LIO serves one file through one backstore only. The
// name kept is the one a backstore already serving the file has (nodes may
// be booted from it), else the identity of the unquoted etag, else the
// lower name. The other projection's images become users of the one kept.
func (inv *Inventory) oneProjectionPerFile(d *Desired, served servedFile, p Projection) Projection {
	file := inv.Layout.FileFor(p.Key)
	other, isPending := "", false
	for name, q := range d.Projections {
		if q.Kind == Rootfs && q.Key == p.Key && name != p.ID.Name {
			other = name
		}
	}
	for name, q := range d.Pending {
		if other == "" && q.Kind == Rootfs && q.Key == p.Key && name != p.ID.Name {
			other, isPending = name, true
		}
	}
	if other == "" {
		return p
	}
	canonical := naming.For(naming.RootfsInput("s3://"+inv.Layout.Bucket+"/"+p.Key, Unquote(p.ETag))).Name
	keep := min(other, p.ID.Name)
	switch _, servedBy, ok := served(file); {
	case ok && (servedBy == other || servedBy == p.ID.Name):
		keep = servedBy
	case canonical == other || canonical == p.ID.Name:
		keep = canonical
	}
	if keep == other {
		// addImage then adds p's images to the other's entry, by name.
		if isPending {
			p.ID = naming.ID{Name: other}
		} else {
			p.ID = d.Projections[other].ID
		}
		return p
	}
	// p's identity is kept: the other's images move over to it.
	if isPending {
		q := d.Pending[other]
		delete(d.Pending, other)
		p.Users = append(slices.Clip(q.Images), p.Users...)
	} else {
		q := d.Projections[other]
		delete(d.Projections, other)
		p.Users = append(slices.Clip(q.Users), p.Users...)
	}
	return p
}

// rootfsOf follows an IMS image to its rootfs object. It returns either the
// projection, a permanent problem, or a transient error.
func (inv *Inventory) rootfsOf(ctx context.Context, img ims.Image, find lookup) (Projection, why, error) {
	p := Projection{Kind: Rootfs, Users: []ImageRef{{ID: img.ID, Name: img.Name}}}
	if img.Link == nil {
		return p, why{CodeNoLink, "IMS record has no manifest link (image still being built?)"}, nil
	}
	if img.Link.Type != "s3" {
		return p, why{CodeBadManifest, fmt.Sprintf("manifest link type %q, want s3", img.Link.Type)}, nil
	}
	b, mkey, err := ims.SplitS3Path(img.Link.Path)
	if err != nil {
		return p, why{CodeBadManifest, "manifest link: " + err.Error()}, nil
	}
	if b != inv.Layout.Bucket {
		return p, why{CodeOtherBucket, fmt.Sprintf("manifest is in bucket %q, this agent serves %q", b, inv.Layout.Bucket)}, nil
	}
	mobj, ok, err := find(ctx, mkey)
	if err != nil {
		return p, why{}, fmt.Errorf("image %s: looking up its manifest: %w", img.ID, err)
	}
	if !ok {
		return p, why{CodeNotInS3, "manifest " + img.Link.Path + " is not in S3"}, nil
	}
	art, err := inv.manifest(ctx, mkey, mobj.ETag)
	if err != nil {
		var perm permanent
		if errors.As(err, &perm) {
			code := CodeBadManifest
			if errors.Is(err, ims.ErrNoEtag) {
				code = CodeNoEtag
			}
			return p, why{code, "manifest " + img.Link.Path + ": " + err.Error()}, nil
		}
		return p, why{}, fmt.Errorf("image %s: %w", img.ID, err)
	}
	rb, rkey, _ := ims.SplitS3Path(art.Link.Path) // checked by Manifest.Rootfs
	p.Key = rkey
	if rb != inv.Layout.Bucket {
		return p, why{CodeOtherBucket, fmt.Sprintf("rootfs is in bucket %q, this agent serves %q", rb, inv.Layout.Bucket)}, nil
	}
	robj, ok, err := find(ctx, rkey)
	if err != nil {
		return p, why{}, fmt.Errorf("image %s: looking up its rootfs: %w", img.ID, err)
	}
	if !ok {
		return p, why{CodeNotInS3, "rootfs " + art.Link.Path + " is not in S3"}, nil
	}
	if Unquote(robj.ETag) != Unquote(art.Link.Etag) {
		return p, why{CodeEtagMismatch, fmt.Sprintf("rootfs %s has S3 etag %s, the manifest says %s (re-uploaded without updating IMS?)", art.Link.Path, Unquote(robj.ETag), Unquote(art.Link.Etag))}, nil
	}
	// The identity hashes the etag exactly as the manifest has it, as the
	// old agent did, so that names stay byte-identical.
	p.ID = naming.For(naming.RootfsInput(art.Link.Path, art.Link.Etag))
	p.ETag = Unquote(robj.ETag)
	p.Size = robj.Size
	return p, why{}, nil
}

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// manifest returns the rootfs artifact of the manifest at key, fetching it
// only when its S3 ETag is new. A malformed manifest is remembered too.
func (inv *Inventory) manifest(ctx context.Context, key, etag string) (ims.Artifact, error) {
	inv.mu.Lock()
	e, ok := inv.manifests[key]
	inv.mu.Unlock()
	if ok && e.etag == etag && etag != "" {
		return e.rootfs, e.err
	}
	data, err := inv.Objects.Get(ctx, key, ims.MaxManifest)
	inv.mu.Lock()
	inv.stats.ManifestGets++
	inv.mu.Unlock()
	if errors.Is(err, bucket.ErrTooLarge) {
		err = permanent{fmt.Errorf("manifest is larger than %d bytes: %w", ims.MaxManifest, err)}
		inv.remember(key, manifestEntry{etag: etag, err: err})
		return ims.Artifact{}, err
	}
	if err != nil {
		return ims.Artifact{}, fmt.Errorf("fetching manifest %s: %w", key, err)
	}
	e = manifestEntry{etag: etag}
	m, err := ims.ParseManifest(data)
	if err == nil {
		e.rootfs, err = m.Rootfs()
	}
	if err != nil {
		e.err = permanent{err}
	}
	inv.remember(key, e)
	return e.rootfs, e.err
}

func (inv *Inventory) remember(key string, e manifestEntry) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.manifests == nil {
		inv.manifests = map[string]manifestEntry{}
	}
	inv.manifests[key] = e
}

// consider checks that an image can be served from the mount and files it
// as a projection, pending or rejected.
func (inv *Inventory) consider(d *Desired, served servedFile, p Projection) {
	problem := func(w why) Problem {
		return Problem{Kind: p.Kind, Name: p.ID.Name, Key: p.Key, Images: p.Users, Code: w.code, Reason: w.text}
	}
	reject := func(w why) { d.Rejected = append(d.Rejected, problem(w)) }
	if w := unsafeKey(p.Key); !w.ok() {
		reject(w)
		return
	}
	p.File = inv.Layout.FileFor(p.Key)
	if err := lio.CheckPath(p.File); err != nil {
		reject(why{CodeBadKey, "cannot be given to targetcli: " + err.Error()})
		return
	}
	if p.Size <= 0 {
		reject(why{CodeEmpty, "S3 object is empty; a 0-byte LUN is never projected"})
		return
	}
	// A file already backing a correct backstore was checked when it was
	// projected; S3 says it has not changed, so skip the (remote, on s3fs) stat.
	if size, _, ok := served(p.File); ok && size == p.Size {
		d.Projections[p.ID.Name] = p
		return
	}
	if w, pending := inv.checkFile(p); !w.ok() {
		if pending {
			d.Pending[p.ID.Name] = problem(w)
		} else {
			reject(w)
		}
		return
	}
	d.Projections[p.ID.Name] = p
}

// checkFile looks at the file under the mount. pending means "try again
// later" (s3fs has not caught up); otherwise the problem is permanent for
// this object version.
func (inv *Inventory) checkFile(p Projection) (w why, pending bool) {
	lstat := inv.Lstat
	if lstat == nil {
		lstat = os.Lstat
	}
	inv.mu.Lock()
	inv.stats.Stats++
	inv.mu.Unlock()
	fi, err := lstat(p.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return why{CodeS3fsLag, "not visible under the s3fs mount yet: " + p.File}, true
	case err != nil:
		return why{CodeOther, "cannot stat " + p.File + ": " + err.Error()}, true
	case fi.Mode()&fs.ModeSymlink != 0:
		return why{CodeUnsafeFile, "is a symlink under the mount; refusing to export what it points to"}, false
	case !fi.Mode().IsRegular():
		return why{CodeUnsafeFile, "is not a regular file under the mount (" + fi.Mode().Type().String() + ")"}, false
	case fi.Size() != p.Size:
		return why{CodeS3fsLag, fmt.Sprintf("s3fs shows %d bytes, S3 says %d (fresh upload not visible yet?)", fi.Size(), p.Size)}, true
	}
	// No directory on the way may be a symlink leading out of the mount.
	if real, err := filepath.EvalSymlinks(p.File); err == nil {
		mount, merr := filepath.EvalSymlinks(inv.Layout.Mount)
		if merr != nil || !strings.HasPrefix(real, mount+"/") {
			return why{CodeUnsafeFile, "resolves outside the mount (" + real + "); refusing to export it"}, false
		}
	}
	access := inv.Access
	if access == nil {
		access = func(p string) error { return syscall.Access(p, 2 /* W_OK */) }
	}
	if err := access(p.File); errors.Is(err, syscall.EROFS) {
		return why{CodeReadOnly, ReadOnlyMountReason(p.File)}, true
	}
	return why{}, false
}

// ReadOnlyMountReason is the status of an image whose file is on a
// read-only mount: the cause and the fix.
func ReadOnlyMountReason(file string) string {
	return "is on a read-only mount (" + file + "): the kernel opens a fileio backing file read-write even with write_back=false, " +
		"so LIO cannot serve it; mount " + filepath.Dir(file) + " read-write (initiators still get a read-only LUN from the TPG's write protection)"
}

// unsafeKey says why an S3 key cannot become a file path under the mount.
func unsafeKey(key string) why {
	switch {
	case key == "":
		return why{CodeBadKey, "empty key"}
	case len(key) > 1024:
		return why{CodeBadKey, "key longer than 1024 bytes"}
	case strings.HasPrefix(key, "/"):
		return why{CodeBadKey, "key starts with /"}
	case strings.HasSuffix(key, "/"):
		return why{CodeBadKey, "key is a directory marker"}
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return why{CodeBadKey, fmt.Sprintf("key has an empty, . or .. path element (%q); it would leave or confuse the mount", key)}
		}
	}
	return why{}
}

// servedFile gives the size of a file a managed fileio backstore serves,
// and that backstore's name.
type servedFile func(file string) (size int64, name string, ok bool)

// servedFiles indexes the files of managed fileio backstores.
func servedFiles(actual *lio.Config, l Layout) servedFile {
	type served struct {
		size int64
		name string
	}
	out := map[string]served{}
	if actual != nil {
		for _, so := range actual.StorageObjects {
			if so.Plugin == "fileio" && l.Managed(so.Dev) {
				out[so.Dev] = served{so.SizeBytes(), so.Name}
			}
		}
	}
	return func(file string) (int64, string, bool) {
		s, ok := out[file]
		return s.size, s.name, ok
	}
}

// servedScan answers like servedFiles by scanning: for the few lookups of
// an event's pass, cheaper than indexing 10,000 backstores.
func servedScan(actual *lio.Config, l Layout) servedFile {
	return func(file string) (int64, string, bool) {
		if actual == nil {
			return 0, "", false
		}
		for i := len(actual.StorageObjects) - 1; i >= 0; i-- { // the last one wins, as in the index
			so := &actual.StorageObjects[i]
			if so.Dev == file && so.Plugin == "fileio" && l.Managed(so.Dev) {
				return so.SizeBytes(), so.Name, true
			}
		}
		return 0, "", false
	}
}

// Unquote strips the quotes some S3 servers put around ETags.
func Unquote(etag string) string { return strings.Trim(etag, `"`) }

// Update returns a copy of d in which the given PE keys and IMS images are
// read again (one HEAD per PE key; one IMS GET, a cached manifest and a
// HEAD per image), and nothing else changes. It is how an event is applied
// without a listing. An error means S3 or IMS could not say; d stands.
func (inv *Inventory) Update(ctx context.Context, d *Desired, actual *lio.Config, peKeys, imageIDs []string) (*Desired, error) {
	n := d.clone()
	served := servedScan(actual, inv.Layout)
	if len(peKeys)+len(imageIDs) > 16 {
		served = servedFiles(actual, inv.Layout)
	}
	for _, key := range peKeys {
		name := naming.For(naming.PEInput(inv.Layout.Bucket, key)).Name
		delete(n.Projections, name)
		delete(n.Pending, name)
		n.Rejected = slices.DeleteFunc(n.Rejected, func(p Problem) bool { return p.Kind == PE && p.Key == key })
		if !strings.HasPrefix(key, inv.Layout.PEPrefix) || strings.HasSuffix(key, "/") {
			continue
		}
		o, found, err := inv.fromHead(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("S3 HEAD %s: %w", key, err)
		}
		if found {
			inv.consider(n, served, Projection{Kind: PE, ID: naming.For(naming.PEInput(inv.Layout.Bucket, key)), Key: key, ETag: o.ETag, Size: o.Size})
		}
	}
	if inv.Images == nil {
		return n, nil
	}
	for _, id := range imageIDs {
		n.forgetImage(id)
		img, err := inv.Images.Get(ctx, id)
		if errors.Is(err, ims.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("IMS image %s: %w", id, err)
		}
		if err := inv.addImage(ctx, n, served, img, inv.fromHead); err != nil {
			return nil, err
		}
	}
	return n, nil
}
