// Package naming derives a projection's LIO identity: the backstore name, the
// unit serial (wwn) LIO is given, and the multipath WWID initiators see.
//
// The scheme is the old Python agent's, kept byte for byte so that a node can
// switch agents without a single LUN changing and so that every worker
// presents an image under the same identity:
//
//	h    = hex(sha224(input))
//	name = h[0:15]   wwn = h[0:31]   WWID = "36001405" + h[0:25]
//
// with input "s3://<bucket>/<key>" for programming-environment images and
// "<rootfs link.path>|<rootfs link.etag>" for IMS images.
package naming

import (
	"crypto/sha256"
	"encoding/hex"
)

// ID is the identity of one projection.
type ID struct {
	Name string // fileio backstore name; LIO shows it as the SCSI product string
	WWN  string // backstore wwn (VPD unit serial)
	WWID string // multipath WWID on the initiators
}

// For returns the identity for the given input string.
func For(input string) ID {
	sum := sha256.Sum224([]byte(input))
	h := hex.EncodeToString(sum[:])
	return ID{Name: h[:15], WWN: h[:31], WWID: "36001405" + h[:25]}
}

// PEInput is the naming input of a programming-environment image.
func PEInput(bucket, key string) string { return "s3://" + bucket + "/" + key }

// RootfsInput is the naming input of an IMS image's rootfs: the manifest's
// rootfs link path (an s3:// URL) and its etag, unquoted.
func RootfsInput(linkPath, etag string) string { return linkPath + "|" + etag }

// WWIDFromWWN returns the multipath WWID that LIO derives from a backstore wwn
// of the form this package produces.
func WWIDFromWWN(wwn string) string {
	if len(wwn) < 25 {
		return ""
	}
	return "36001405" + wwn[:25]
}
