package metrics

import (
	"slices"
	"testing"
)

// The reasons are the projector's own texts (projector/inventory.go and the
// ims manifest errors it wraps), copied verbatim with sample values.
var reasonCases = []struct {
	name, reason, want string
}{
	{"not visible", "not visible under the s3fs mount yet: /var/lib/cps-local/boot-images/PE/a.squashfs", ReasonS3fsLag},
	{"short file", "s3fs shows 0 bytes, S3 says 4096 (fresh upload not visible yet?)", ReasonS3fsLag},
	{"manifest not in S3", "manifest s3://boot-images/1/manifest.json is not in S3", ReasonNotInS3},
	{"rootfs not in S3", "rootfs s3://boot-images/1/rootfs is not in S3", ReasonNotInS3},
	{"no etag", "manifest s3://boot-images/1/manifest.json: rootfs link has no etag (path s3://boot-images/1/rootfs); re-register the image so IMS records the S3 etag", ReasonNoEtag},
	{"etag mismatch", "rootfs s3://boot-images/1/rootfs has S3 etag abc, the manifest says def (re-uploaded without updating IMS?)", ReasonEtagMismatch},
	{"empty object", "S3 object is empty; a 0-byte LUN is never projected", ReasonEmpty},
	{"empty key", "empty key", ReasonBadKey},
	{"long key", "key longer than 1024 bytes", ReasonBadKey},
	{"absolute key", "key starts with /", ReasonBadKey},
	{"directory marker", "key is a directory marker", ReasonBadKey},
	{"dot element", `key has an empty, . or .. path element ("PE/../x"); it would leave or confuse the mount`, ReasonBadKey},
	{"targetcli", "cannot be given to targetcli: image path \"/m/PE/a b\": character ' ' at 7 is not allowed", ReasonBadKey},
	{"symlink", "is a symlink under the mount; refusing to export what it points to", ReasonUnsafeFile},
	{"not regular", "is not a regular file under the mount (d---------)", ReasonUnsafeFile},
	{"escapes", "resolves outside the mount (/etc/shadow); refusing to export it", ReasonUnsafeFile},
	{"malformed manifest", "manifest s3://boot-images/1/manifest.json: malformed manifest: empty", ReasonBadManifest},
	{"no rootfs artifact", "manifest s3://boot-images/1/manifest.json: manifest has no rootfs squashfs artifact (2 artifacts, none of type application/vnd.cray.image.rootfs.squashfs*)", ReasonBadManifest},
	{"link type", `manifest link type "file", want s3`, ReasonBadManifest},
	{"link path", `manifest link: path "x" is not an s3:// URL`, ReasonBadManifest},
	{"no link", "IMS record has no manifest link (image still being built?)", ReasonNoLink},
	{"manifest other bucket", `manifest is in bucket "other", this agent serves "boot-images"`, ReasonOtherBucket},
	{"rootfs other bucket", `rootfs is in bucket "other", this agent serves "boot-images"`, ReasonOtherBucket},
	{"bad record", "ims: image record 3 (id 1): record has no name", ReasonBadRecord},
	{"stat error", "cannot stat /m/PE/a: input/output error", ReasonOther},
	{"unknown", "something new", ReasonOther},
	{"empty reason", "", ReasonOther},
}

func TestReasonClass(t *testing.T) {
	for _, tc := range reasonCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReasonClass(tc.reason); got != tc.want {
				t.Errorf("ReasonClass(%q) = %q, want %q", tc.reason, got, tc.want)
			}
		})
	}
}

// Every class is reachable and covered by a case above.
func TestReasonClassesCovered(t *testing.T) {
	for _, c := range ReasonClasses() {
		if !slices.ContainsFunc(reasonCases, func(tc struct{ name, reason, want string }) bool { return tc.want == c }) {
			t.Errorf("reason class %q has no test case", c)
		}
	}
	for _, r := range reasonRules {
		if !slices.Contains(reasonClasses, r.class) {
			t.Errorf("rule %q maps to %q, which is not in ReasonClasses", r.fragment, r.class)
		}
	}
}
