package ims

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const manifestDir = "../testdata/reference/ims/manifests"

// TestReferenceManifests parses every manifest in the reference data.
func TestReferenceManifests(t *testing.T) {
	tests := []struct {
		file      string
		parseErr  bool
		rootfsErr error // nil: Rootfs succeeds
		path      string
		etag      string
	}{
		{file: "v3_test_manifest.json", path: "s3://boot-images/<image_id>/rootfs", etag: "<etag>"},
		{file: "deleted_manifest.json", path: "s3://boot-images/deleted/<image_id>/rootfs", etag: "<etag>"},
		{file: "import_template.json", path: "s3://boot-images/${IMS_IMAGE_ID}/${IMS_ROOTFS_FILENAME}", etag: "${ROOTFS_ETAG}"},
		{file: "real_no_etag_manifest.json", rootfsErr: ErrNoEtag},
		{file: "ims_python_helper_artifacts.json", parseErr: true},
	}
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestDir, err)
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(manifestDir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseManifest(data)
			if (err != nil) != tt.parseErr {
				t.Fatalf("ParseManifest(%s) error = %v, want error %v", tt.file, err, tt.parseErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadManifest) {
					t.Errorf("error %v is not ErrBadManifest", err)
				}
				return
			}
			if m.Version != "1.0" || m.Created == "" {
				t.Errorf("version %q created %q", m.Version, m.Created)
			}
			a, err := m.Rootfs()
			if !errors.Is(err, tt.rootfsErr) || (err != nil) != (tt.rootfsErr != nil) {
				t.Fatalf("Rootfs() error = %v, want %v", err, tt.rootfsErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "compute.squashfs") {
					t.Errorf("error %q does not name the rootfs path", err)
				}
				return
			}
			if a.Link.Path != tt.path || a.Link.Etag != tt.etag {
				t.Errorf("Rootfs() = %s %s, want %s %s", a.Link.Path, a.Link.Etag, tt.path, tt.etag)
			}
		})
	}
	for _, f := range files {
		if !covered[filepath.Base(f)] {
			t.Errorf("reference manifest %s has no test case", filepath.Base(f))
		}
	}

	t.Run("helper artifacts wrapped as the helper writes them", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(manifestDir, "ims_python_helper_artifacts.json"))
		if err != nil {
			t.Fatal(err)
		}
		wrapped := `{"artifacts": ` + string(data) + `, "created": "2024-08-15 09:37:13.123456", "version": "1.0"}`
		m, err := ParseManifest([]byte(wrapped))
		if err != nil {
			t.Fatal(err)
		}
		a, err := m.Rootfs()
		if err != nil {
			t.Fatal(err)
		}
		if a.Link.Etag != "4add976679c7e955c4b16d7e2cfa114e-32" || a.Link.Path != "s3://boot-images/d88521c3-b339-43bc-afda-afdfda126388/rootfs" {
			t.Errorf("Rootfs() = %+v", a.Link)
		}
	})
}

func TestRootfs(t *testing.T) {
	const kernel = `{"type":"application/vnd.cray.image.kernel","link":{"path":"s3://b/k","etag":"k","type":"s3"}}`
	rootfs := func(link string) string {
		return `{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"m","link":` + link + `}`
	}
	tests := []struct {
		name string
		json string
		want error
	}{
		{"ok", `{"version":"1.0","artifacts":[` + kernel + `,` + rootfs(`{"path":"s3://b/r","etag":"e","type":"s3"}`) + `]}`, nil},
		{"type with suffix", `{"artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs+v2","link":{"path":"s3://b/r","etag":"e","type":"s3"}}]}`, nil},
		{"none", `{"artifacts":[` + kernel + `]}`, ErrNoRootfs},
		{"no artifacts key", `{"version":"1.0"}`, ErrNoRootfs},
		{"several", `{"artifacts":[` + rootfs(`{"path":"s3://b/r","etag":"e","type":"s3"}`) + `,` + rootfs(`{"path":"s3://b/r2","etag":"f","type":"s3"}`) + `]}`, ErrSeveralRootfs},
		{"etag missing", `{"artifacts":[` + rootfs(`{"path":"s3://b/r","type":"s3"}`) + `]}`, ErrNoEtag},
		{"etag null", `{"artifacts":[` + rootfs(`{"path":"s3://b/r","etag":null,"type":"s3"}`) + `]}`, ErrNoEtag},
		{"etag empty", `{"artifacts":[` + rootfs(`{"path":"s3://b/r","etag":"","type":"s3"}`) + `]}`, ErrNoEtag},
		{"link null", `{"artifacts":[` + rootfs(`null`) + `]}`, ErrBadManifest},
		{"http path", `{"artifacts":[` + rootfs(`{"path":"https://b/r","etag":"e","type":"s3"}`) + `]}`, ErrBadManifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.json))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			_, err = m.Rootfs()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Rootfs() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseManifestRefuses(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"bare array", `[{"type":"x"}]`},
		{"string", `"manifest"`},
		{"wrong artifact type", `{"artifacts":[{"type":5}]}`},
		{"artifacts not a list", `{"artifacts":{}}`},
		{"too large", `{"version":"` + strings.Repeat("x", MaxManifest) + `"}`},
		{"trailing garbage", `{} {}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseManifest([]byte(tt.data)); !errors.Is(err, ErrBadManifest) {
				t.Errorf("ParseManifest(%.40q) = %v, want ErrBadManifest", tt.data, err)
			}
		})
	}
}

func TestSplitS3Path(t *testing.T) {
	tests := []struct {
		name, in, bucket, key string
		err                   bool
	}{
		{"simple", "s3://boot-images/abc/rootfs", "boot-images", "abc/rootfs", false},
		{"any key name", "s3://boot-images/3f89b76d/compute.squashfs", "boot-images", "3f89b76d/compute.squashfs", false},
		{"key kept verbatim", "s3://b/a%20b+c", "b", "a%20b+c", false},
		{"https", "https://b/k", "", "", true},
		{"S3 upper case scheme", "S3://b/k", "", "", true},
		{"no key", "s3://b", "", "", true},
		{"empty key", "s3://b/", "", "", true},
		{"empty bucket", "s3:///k", "", "", true},
		{"space in bucket", "s3://b c/k", "", "", true},
		{"empty", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, k, err := SplitS3Path(tt.in)
			if (err != nil) != tt.err || b != tt.bucket || k != tt.key {
				t.Errorf("SplitS3Path(%q) = %q, %q, %v; want %q, %q, error %v", tt.in, b, k, err, tt.bucket, tt.key, tt.err)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(manifestDir, "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","link":{"path":"s3://b/k","etag":null}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("ParseManifest error %v is not ErrBadManifest", err)
			}
			return
		}
		a, err := m.Rootfs()
		if err != nil {
			return
		}
		if a.Link == nil || a.Link.Etag == "" || !strings.HasPrefix(a.Type, RootfsType) {
			t.Fatalf("Rootfs accepted %+v", a)
		}
		if _, _, err := SplitS3Path(a.Link.Path); err != nil {
			t.Fatalf("Rootfs accepted path %q: %v", a.Link.Path, err)
		}
	})
}
