package projector

// Code classifies why an image is not projected, or why a delete is held:
// a fixed, small set that metrics label values and alert rules use. The
// Reason text beside it is for people and may change; a Code may not.
type Code string

// Why an image is pending or rejected (Problem.Code, Entry.Code).
const (
	CodeS3fsLag      Code = "s3fs_lag"        // the file is not (fully) visible under the s3fs mount yet
	CodeReadOnly     Code = "read_only_mount" // the file is on a read-only mount, which LIO cannot serve
	CodeNotInS3      Code = "not_in_s3"       // the manifest or rootfs object named by IMS is not in the bucket
	CodeNoEtag       Code = "no_etag"         // the manifest's rootfs link has no etag
	CodeEtagMismatch Code = "etag_mismatch"   // the rootfs object's S3 ETag differs from the manifest's
	CodeEmpty        Code = "empty"           // the S3 object is 0 bytes
	CodeBadKey       Code = "bad_key"         // the S3 key cannot become a safe path or targetcli argument
	CodeUnsafeFile   Code = "unsafe_file"     // the file under the mount is a symlink, not regular, or leaves the mount
	CodeBadManifest  Code = "bad_manifest"    // the manifest or the IMS record's link to it is malformed
	CodeNoLink       Code = "no_link"         // the IMS record has no manifest link (image still being built)
	CodeOtherBucket  Code = "other_bucket"    // the manifest or rootfs is in a bucket this agent does not serve
	CodeBadRecord    Code = "bad_record"      // the IMS record itself could not be decoded
	CodeOther        Code = "other"           // anything else (a file that cannot be stat'ed)
)

// Why a delete is held (Plan.Held[i].Code, Entry.Code of a Held entry).
const (
	HeldMassDelete    Code = "mass_delete"    // the mass-delete guard (MAX_DELETE_FRACTION): needs `sbps-marshal sync --allow-mass-delete`
	HeldIMSIncomplete Code = "ims_incomplete" // the IMS listing or a record could not be read: no rootfs projection is removed
	HeldUnconfirmed   Code = "unconfirmed"    // left out of the IMS listing and not confirmed gone by a GET yet
	HeldPending       Code = "pending"        // kept while its replacement is pending (s3fs lag, re-upload)
	HeldRefused       Code = "refused"        // a recreate whose create the writable-TPG check refused
)

// ProblemCodes lists every Code a Problem can carry.
func ProblemCodes() []Code {
	return []Code{CodeS3fsLag, CodeReadOnly, CodeNotInS3, CodeNoEtag, CodeEtagMismatch, CodeEmpty, CodeBadKey,
		CodeUnsafeFile, CodeBadManifest, CodeNoLink, CodeOtherBucket, CodeBadRecord, CodeOther}
}

// HeldCodes lists every Code a held Change can carry.
func HeldCodes() []Code {
	return []Code{HeldMassDelete, HeldIMSIncomplete, HeldUnconfirmed, HeldPending, HeldRefused}
}

// why is a reason with its class, as the inventory's checks return it; the
// zero value means no problem.
type why struct {
	code Code
	text string
}

func (w why) ok() bool { return w.code == "" && w.text == "" }

// Source is where a pass's information comes from: an inventory error and
// incomplete rootfs information name theirs (metrics count them by it).
type Source string

const (
	SourceS3       Source = "s3"       // listing the bucket
	SourceIMS      Source = "ims"      // listing IMS, reading a record, confirming an image gone
	SourceManifest Source = "manifest" // following an image to its manifest and rootfs objects
)

// SourceError is an inventory error with the source it came from.
type SourceError struct {
	Source Source
	Err    error
}

func (e *SourceError) Error() string { return e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }
