package projector

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/naming"
)

// Kind is the kind of image a projection serves.
type Kind string

const (
	PE     Kind = "pe"     // a programming-environment image: a key under PE_PREFIX
	Rootfs Kind = "rootfs" // an IMS image's rootfs
)

// Projection is one image that should be a LUN on this node.
type Projection struct {
	Kind  Kind
	ID    naming.ID
	Key   string     // S3 key of the image file
	ETag  string     // S3 ETag, unquoted
	File  string     // absolute path of the file under the s3fs mount
	Size  int64      // size S3 reports; the file must show exactly this
	Users []ImageRef // IMS images that use this rootfs (rootfs only)
}

// ImageRef names an IMS image.
type ImageRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Problem is an image that is not projected, and why.
type Problem struct {
	Kind   Kind
	Name   string     // backstore name, when the identity is known
	Key    string     // S3 key, when known
	Images []ImageRef // IMS images concerned (rootfs)
	Code   Code       // the class of Reason; for Unconfirmed, HeldUnconfirmed
	Reason string
}

// Desired is what S3 and IMS say should be projected.
type Desired struct {
	Projections map[string]Projection // by backstore name
	// Pending images exist but cannot be projected yet (the s3fs file is
	// missing or shows the wrong size, the object is still uploading); an
	// existing backstore of the same name is kept as it is.
	Pending map[string]Problem // by backstore name
	// Rejected images will not be projected until they change.
	Rejected []Problem
	// Unconfirmed are the previous passes' projections (by backstore name)
	// whose IMS images the listing left out and that IMS has not yet
	// confirmed gone (a GET answering IMS's own 404). Their backstores are
	// kept, and the next full pass asks IMS about them again.
	Unconfirmed map[string]Problem
	// RootfsComplete is false when IMS, or a manifest, could not be read:
	// then no rootfs projection may be deleted.
	RootfsComplete bool
	// RootfsIncompleteReason says what was missing, and
	// RootfsIncompleteSource where it should have come from.
	RootfsIncompleteReason string
	RootfsIncompleteSource Source
	// ImagesByKey maps the S3 keys of manifests and rootfs objects to the
	// IMS images that use them, so an S3 event finds the images it touches.
	ImagesByKey map[string][]string
}

func (d *Desired) indexKey(key, imageID string) {
	if d.ImagesByKey == nil {
		d.ImagesByKey = map[string][]string{}
	}
	if !slices.Contains(d.ImagesByKey[key], imageID) {
		d.ImagesByKey[key] = append(d.ImagesByKey[key], imageID)
	}
}

// clone copies d deeply enough that changing the copy's maps and slices
// leaves d as it was.
func (d *Desired) clone() *Desired {
	n := *d
	n.Projections = maps.Clone(d.Projections)
	n.Pending = maps.Clone(d.Pending)
	n.Rejected = slices.Clone(d.Rejected)
	n.Unconfirmed = maps.Clone(d.Unconfirmed)
	n.ImagesByKey = maps.Clone(d.ImagesByKey)
	if n.Projections == nil {
		n.Projections = map[string]Projection{}
	}
	if n.Pending == nil {
		n.Pending = map[string]Problem{}
	}
	return &n
}

// forgetImage removes an IMS image from d: from the users of its rootfs
// (dropping a projection no image uses any more), from pending and rejected
// entries, and from the key index.
func (d *Desired) forgetImage(id string) {
	isImage := func(r ImageRef) bool { return r.ID == id }
	for name, p := range d.Projections {
		if p.Kind != Rootfs || !slices.ContainsFunc(p.Users, isImage) {
			continue
		}
		p.Users = slices.DeleteFunc(slices.Clone(p.Users), isImage)
		if len(p.Users) == 0 {
			delete(d.Projections, name)
		} else {
			d.Projections[name] = p
		}
	}
	for name, p := range d.Pending {
		if p.Kind != Rootfs || !slices.ContainsFunc(p.Images, isImage) {
			continue
		}
		p.Images = slices.DeleteFunc(slices.Clone(p.Images), isImage)
		if len(p.Images) == 0 {
			delete(d.Pending, name)
		} else {
			d.Pending[name] = p
		}
	}
	for name, p := range d.Unconfirmed {
		if !slices.ContainsFunc(p.Images, isImage) {
			continue
		}
		p.Images = slices.DeleteFunc(slices.Clone(p.Images), isImage)
		if len(p.Images) == 0 {
			delete(d.Unconfirmed, name)
		} else {
			d.Unconfirmed[name] = p
		}
	}
	d.Rejected = slices.DeleteFunc(d.Rejected, func(p Problem) bool {
		return p.Kind == Rootfs && slices.ContainsFunc(p.Images, isImage)
	})
	for key, ids := range d.ImagesByKey {
		if slices.Contains(ids, id) {
			ids = slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == id })
			if len(ids) == 0 {
				delete(d.ImagesByKey, key)
			} else {
				d.ImagesByKey[key] = ids
			}
		}
	}
}

// Layout says where this node's images live.
type Layout struct {
	Bucket   string // S3_BUCKET
	Mount    string // SQUASHFS_S3FS_MOUNT, absolute and clean
	PEPrefix string // PE_PREFIX, e.g. "PE/"
}

// Managed reports whether a backstore file belongs to this agent: fileio
// backstores over files under the s3fs mount. Anything else on the node is
// left alone.
func (l Layout) Managed(dev string) bool {
	return strings.HasPrefix(filepath.Clean(dev), l.Mount+"/")
}

// KindOf says which kind of image a managed backstore serves, from the
// projection's identity as LIO records it, not from where its file lies: a
// backstore named by the PE identity of its file ("s3://<bucket>/<key>") is
// a PE projection. Every other one is taken as a rootfs, the safe answer:
// an IMS rootfs can live under PE_PREFIX, and a backstore this agent has no
// record of is then never removed while IMS information is incomplete.
func (l Layout) KindOf(name, dev string) Kind {
	key, ok := strings.CutPrefix(filepath.Clean(dev), l.Mount+"/")
	if ok && naming.For(naming.PEInput(l.Bucket, key)).Name == name {
		return PE
	}
	return Rootfs
}

// FileFor is the path of an S3 key under the mount.
func (l Layout) FileFor(key string) string { return l.Mount + "/" + key }

// incomplete records that rootfs information from src is missing: no
// rootfs projection may be removed this pass.
func (d *Desired) incomplete(src Source, why string) {
	d.RootfsComplete, d.RootfsIncompleteReason, d.RootfsIncompleteSource = false, why, src
}
