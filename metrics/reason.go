package metrics

import "strings"

// Reason classes of pending and rejected images: the values of the reason
// label of sbps_marshal_image_problems. The set is fixed so that the label
// stays low-cardinality; an image's own reason text is in `sbps-marshal status`.
const (
	ReasonS3fsLag      = "s3fs_lag"      // the file is not (fully) visible under the s3fs mount yet
	ReasonNotInS3      = "not_in_s3"     // the manifest or rootfs object named by IMS is not in the bucket
	ReasonNoEtag       = "no_etag"       // the manifest's rootfs link has no etag
	ReasonEtagMismatch = "etag_mismatch" // the rootfs object's S3 ETag differs from the manifest's
	ReasonEmpty        = "empty"         // the S3 object is 0 bytes
	ReasonBadKey       = "bad_key"       // the S3 key cannot become a safe path or targetcli argument
	ReasonUnsafeFile   = "unsafe_file"   // the file under the mount is a symlink, not regular, or leaves the mount
	ReasonBadManifest  = "bad_manifest"  // the manifest or the IMS record's link to it is malformed
	ReasonNoLink       = "no_link"       // the IMS record has no manifest link (image still being built)
	ReasonOtherBucket  = "other_bucket"  // the manifest or rootfs is in a bucket this agent does not serve
	ReasonBadRecord    = "bad_record"    // the IMS record itself could not be decoded
	ReasonOther        = "other"         // anything else
)

// reasonClasses lists every reason class.
var reasonClasses = []string{
	ReasonS3fsLag, ReasonNotInS3, ReasonNoEtag, ReasonEtagMismatch, ReasonEmpty, ReasonBadKey,
	ReasonUnsafeFile, ReasonBadManifest, ReasonNoLink, ReasonOtherBucket, ReasonBadRecord, ReasonOther,
}

// ReasonClasses returns every reason class ReasonClass can return.
func ReasonClasses() []string { return append([]string(nil), reasonClasses...) }

// reasonRules maps fragments of the projector's reason texts (projector
// inventory.go: consider, checkFile, unsafeKey, rootfsOf; ims manifest errors)
// to classes. The first rule whose fragment occurs wins, so more specific
// fragments come first. They are tested against the texts in reason_test.go;
// a typed class on projector.Problem would make this table unnecessary.
var reasonRules = []struct{ fragment, class string }{
	{"not visible under the s3fs mount yet", ReasonS3fsLag},
	{"s3fs shows ", ReasonS3fsLag},
	{"rootfs link has no etag", ReasonNoEtag},
	{"has S3 etag ", ReasonEtagMismatch},
	{" is not in S3", ReasonNotInS3},
	{"S3 object is empty", ReasonEmpty},
	{"empty key", ReasonBadKey},
	{"key longer than", ReasonBadKey},
	{"key starts with /", ReasonBadKey},
	{"key is a directory marker", ReasonBadKey},
	{"key has an empty, . or .. path element", ReasonBadKey},
	{"cannot be given to targetcli", ReasonBadKey},
	{"is a symlink under the mount", ReasonUnsafeFile},
	{"is not a regular file under the mount", ReasonUnsafeFile},
	{"resolves outside the mount", ReasonUnsafeFile},
	{"has no manifest link", ReasonNoLink},
	{", this agent serves ", ReasonOtherBucket},
	{"ims: image record ", ReasonBadRecord},
	{"manifest link", ReasonBadManifest},
	{"manifest ", ReasonBadManifest},
}

// ReasonClass maps the reason text of a pending or rejected image
// (projector.Entry.Reason, projector.Problem.Reason) to one of a fixed set of
// classes (ReasonClasses); unknown texts are ReasonOther.
func ReasonClass(reason string) string {
	for _, r := range reasonRules {
		if strings.Contains(reason, r.fragment) {
			return r.class
		}
	}
	return ReasonOther
}
