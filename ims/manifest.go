package ims

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// RootfsType is the artifact type prefix of the rootfs squashfs.
const RootfsType = "application/vnd.cray.image.rootfs.squashfs"

// MaxManifest bounds a manifest.json in bytes.
const MaxManifest = 1 << 20

// Sentinel errors of manifest handling; match with errors.Is.
var (
	// ErrNoRootfs: the manifest has no rootfs squashfs artifact.
	ErrNoRootfs = errors.New("manifest has no rootfs squashfs artifact")
	// ErrSeveralRootfs: the manifest has more than one rootfs artifact.
	ErrSeveralRootfs = errors.New("manifest has several rootfs squashfs artifacts")
	// ErrNoEtag: the rootfs link has no etag (missing, null or empty); the
	// projection identity needs it.
	ErrNoEtag = errors.New("rootfs link has no etag")
	// ErrBadManifest: the manifest is not a manifest (size, JSON, shape).
	ErrBadManifest = errors.New("malformed manifest")
)

// Manifest is an IMS image manifest.json.
type Manifest struct {
	Version   string     `json:"version"`
	Created   string     `json:"created"`
	Artifacts []Artifact `json:"artifacts"`
}

// Artifact is one manifest artifact.
type Artifact struct {
	Type string `json:"type"`
	// Link is nil when the artifact has none.
	Link *Link  `json:"link"`
	MD5  string `json:"md5"`
}

// ParseManifest decodes a manifest.json of at most MaxManifest bytes. It
// checks the shape only; [Manifest.Rootfs] checks the rootfs artifact.
func ParseManifest(data []byte) (Manifest, error) {
	if len(data) > MaxManifest {
		return Manifest{}, fmt.Errorf("%w: %d bytes, more than the %d byte bound", ErrBadManifest, len(data), MaxManifest)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Manifest{}, fmt.Errorf("%w: empty", ErrBadManifest)
	}
	if trimmed[0] == '[' {
		return Manifest{}, fmt.Errorf("%w: a JSON array (a bare artifact list?) where an object with version, created and artifacts is expected", ErrBadManifest)
	}
	if trimmed[0] != '{' {
		return Manifest{}, fmt.Errorf("%w: not a JSON object (starts %q)", ErrBadManifest, excerpt(trimmed, 40))
	}
	var m Manifest
	if err := json.Unmarshal(trimmed, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrBadManifest, err)
	}
	return m, nil
}

// Rootfs returns the single artifact whose type starts with RootfsType, with
// a link whose path is an s3:// URL and whose etag is not empty.
func (m Manifest) Rootfs() (Artifact, error) {
	var found []Artifact
	for _, a := range m.Artifacts {
		if strings.HasPrefix(a.Type, RootfsType) {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return Artifact{}, fmt.Errorf("%w (%d artifacts, none of type %s*)", ErrNoRootfs, len(m.Artifacts), RootfsType)
	case 1:
	default:
		return Artifact{}, fmt.Errorf("%w (%d of type %s*); fix the manifest so exactly one remains", ErrSeveralRootfs, len(found), RootfsType)
	}
	a := found[0]
	if a.Link == nil {
		return Artifact{}, fmt.Errorf("%w: rootfs artifact has no link", ErrBadManifest)
	}
	if _, _, err := SplitS3Path(a.Link.Path); err != nil {
		return Artifact{}, fmt.Errorf("%w: rootfs link: %w", ErrBadManifest, err)
	}
	if a.Link.Etag == "" {
		return Artifact{}, fmt.Errorf("%w (path %s); re-register the image so IMS records the S3 etag", ErrNoEtag, a.Link.Path)
	}
	return a, nil
}

// SplitS3Path splits "s3://bucket/key" into bucket and key. Other schemes,
// an empty bucket or an empty key are refused. The key is returned as written
// (no unescaping).
func SplitS3Path(p string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(p, "s3://")
	if !ok {
		return "", "", fmt.Errorf("path %q is not an s3:// URL", excerpt([]byte(p), 120))
	}
	bucket, key, ok = strings.Cut(rest, "/")
	if !ok || bucket == "" {
		return "", "", fmt.Errorf("path %q has no bucket/key", excerpt([]byte(p), 120))
	}
	if key == "" {
		return "", "", fmt.Errorf("path %q has an empty key", excerpt([]byte(p), 120))
	}
	if strings.ContainsFunc(bucket, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }) {
		return "", "", fmt.Errorf("path %q has an invalid bucket name", excerpt([]byte(p), 120))
	}
	return bucket, key, nil
}
