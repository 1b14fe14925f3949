package naming

import (
	"encoding/json"
	"os"
	"testing"
)

type vector struct {
	Kind          string `json:"kind"`
	S3Path        string `json:"s3_path"`
	ETag          string `json:"etag"`
	Input         string `json:"input"`
	Name          string `json:"name"`
	WWN           string `json:"wwn"`
	MultipathWWID string `json:"multipath_wwid"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	data, err := os.ReadFile("../testdata/reference/naming-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []vector }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no naming vectors")
	}
	return f.Vectors
}

func TestReferenceVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			var input string
			switch v.Kind {
			case "pe":
				bucket, key := splitS3(t, v.S3Path)
				input = PEInput(bucket, key)
			case "rootfs":
				input = RootfsInput(v.S3Path, v.ETag)
			default:
				t.Fatalf("unknown kind %q", v.Kind)
			}
			if input != v.Input {
				t.Fatalf("input = %q, want %q", input, v.Input)
			}
			got := For(input)
			want := ID{Name: v.Name, WWN: v.WWN, WWID: v.MultipathWWID}
			if got != want {
				t.Errorf("For(%q) = %+v, want %+v", input, got, want)
			}
			if w := WWIDFromWWN(got.WWN); w != v.MultipathWWID {
				t.Errorf("WWIDFromWWN(%q) = %q, want %q", got.WWN, w, v.MultipathWWID)
			}
		})
	}
}

func splitS3(t *testing.T, p string) (bucket, key string) {
	t.Helper()
	const scheme = "s3://"
	if len(p) <= len(scheme) || p[:len(scheme)] != scheme {
		t.Fatalf("not an s3 path: %q", p)
	}
	rest := p[len(scheme):]
	for i := range rest {
		if rest[i] == '/' {
			return rest[:i], rest[i+1:]
		}
	}
	t.Fatalf("no key in %q", p)
	return "", ""
}

func BenchmarkFor(b *testing.B) {
	for b.Loop() {
		For("s3://boot-images/4842867f-a9bc-4c2a-ad84-fcc3c931bdad/rootfs|2a94bb6ce5be4f6f0aa5af23f969d739-56")
	}
}
