package ims

import "strings"

// ManifestName is the file name IMS gives an image's manifest in S3: it
// writes <image id>/manifest.json when it creates the image.
const ManifestName = "manifest.json"

// ManifestKeyID returns the image id of an S3 key that is exactly
// "<image id>/manifest.json", the key IMS writes when it creates an image,
// with the id a lowercase canonical UUID as IMS issues them. Any other key
// (another file name, a prefix or a deeper path, an id that is not a UUID,
// upper case, stray spaces) gives ok=false, so nothing else from an S3 key
// is ever turned into an IMS request.
func ManifestKeyID(key string) (id string, ok bool) {
	id, name, found := strings.Cut(key, "/")
	if !found || name != ManifestName || ValidID(id) != nil || id != strings.ToLower(id) {
		return "", false
	}
	return id, true
}
