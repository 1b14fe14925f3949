package bucket_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// startS3 starts a real versitygw for one test.
func startS3(t *testing.T) *rig.S3 {
	t.Helper()
	s, err := rig.StartS3(t.Context(), rig.S3Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("rig.StartS3: %v", err)
	}
	t.Cleanup(func() { _ = s.Kill() })
	return s
}

func newClient(t *testing.T, cfg bucket.Config) *bucket.Client {
	t.Helper()
	c, err := bucket.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("bucket.New: %v", err)
	}
	return c
}

func clientFor(t *testing.T, s *rig.S3, pageSize int32) *bucket.Client {
	t.Helper()
	creds := s.Credentials()
	return newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds, PageSize: pageSize})
}

// upload puts objects and returns what List should report for them, sorted
// by key.
func upload(t *testing.T, s *rig.S3, objects map[string][]byte) []bucket.Object {
	t.Helper()
	var want []bucket.Object
	for key, data := range objects {
		etag, err := s.Put(t.Context(), key, data)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, bucket.Object{Key: key, Size: int64(len(data)), ETag: strings.Trim(etag, `"`)})
	}
	slices.SortFunc(want, func(a, b bucket.Object) int { return strings.Compare(a.Key, b.Key) })
	return want
}

func keysOf(objs []bucket.Object) []string {
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func TestListHeadGetAgainstVersityGW(t *testing.T) {
	s := startS3(t)
	ctx := t.Context()
	objects := map[string][]byte{
		"PE/pe one.squashfs":           []byte("pe one"),
		"PE/pé-ünïcode 日本.squashfs":    []byte("unicode key"),
		"PE/x+y=z&w.squashfs":          []byte("reserved characters"),
		"3fa85f64/rootfs":              []byte("rootfs bytes"),
		"3fa85f64/manifest.json":       []byte(`{"version":"1.0"}`),
		"images/deep/dir/compute.sqfs": []byte("deep"),
		"PE/empty":                     {},
	}
	want := upload(t, s, objects)

	// A multipart upload: ETag "<hex>-2", kept as is but without quotes.
	part := bytes.Repeat([]byte{'m'}, 5<<20)
	mpETag, err := s.PutMultipart(ctx, "images/mp/rootfs", [][]byte{part, []byte("tail")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(mpETag, `-2"`) {
		t.Fatalf("multipart ETag from server = %s, want quoted <hex>-2", mpETag)
	}
	mp := bucket.Object{Key: "images/mp/rootfs", Size: int64(len(part)) + 4, ETag: strings.Trim(mpETag, `"`)}
	want = append(want, mp)
	slices.SortFunc(want, func(a, b bucket.Object) int { return strings.Compare(a.Key, b.Key) })

	c := clientFor(t, s, 2)
	t.Run("list", func(t *testing.T) {
		tests := []struct {
			prefix    string
			wantKeys  []string
			wantPages int64
		}{
			{prefix: "", wantKeys: keysOf(want), wantPages: 4},
			{prefix: "PE/", wantKeys: []string{"PE/empty", "PE/pe one.squashfs", "PE/pé-ünïcode 日本.squashfs", "PE/x+y=z&w.squashfs"}, wantPages: 2},
			{prefix: "3fa85f64/", wantKeys: []string{"3fa85f64/manifest.json", "3fa85f64/rootfs"}, wantPages: 1},
			{prefix: "nothing/", wantKeys: nil, wantPages: 1},
		}
		for _, tc := range tests {
			before := c.Stats().ListPages
			got, err := c.List(ctx, tc.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tc.prefix, err)
			}
			if !slices.Equal(keysOf(got), tc.wantKeys) {
				t.Errorf("List(%q) keys = %q, want %q", tc.prefix, keysOf(got), tc.wantKeys)
			}
			if pages := c.Stats().ListPages - before; pages != tc.wantPages {
				t.Errorf("List(%q) used %d pages of 2 keys, want %d", tc.prefix, pages, tc.wantPages)
			}
			if tc.prefix != "" {
				continue
			}
			for i, o := range got {
				if o.Size != want[i].Size || o.ETag != want[i].ETag || o.LastModified.IsZero() {
					t.Errorf("List object %q = size %d etag %q modified %v; want size %d etag %q and a time",
						o.Key, o.Size, o.ETag, o.LastModified, want[i].Size, want[i].ETag)
				}
			}
		}
	})

	t.Run("head", func(t *testing.T) {
		for _, w := range want {
			got, err := c.Head(ctx, w.Key)
			if err != nil {
				t.Fatalf("Head(%q): %v", w.Key, err)
			}
			if got.Key != w.Key || got.Size != w.Size || got.ETag != w.ETag || got.LastModified.IsZero() {
				t.Errorf("Head(%q) = %+v, want %+v with a time", w.Key, got, w)
			}
		}
		_, err := c.Head(ctx, "PE/absent")
		if !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("Head(absent) error = %v, want ErrNotFound", err)
		}
	})

	t.Run("get", func(t *testing.T) {
		tests := []struct {
			name    string
			key     string
			limit   int64
			want    []byte
			wantErr error
		}{
			{name: "small", key: "3fa85f64/manifest.json", limit: 1 << 20, want: objects["3fa85f64/manifest.json"]},
			{name: "unicode key", key: "PE/pé-ünïcode 日本.squashfs", limit: 100, want: []byte("unicode key")},
			{name: "exactly the limit", key: "3fa85f64/rootfs", limit: 12, want: []byte("rootfs bytes")},
			{name: "over the limit", key: "3fa85f64/rootfs", limit: 11, wantErr: bucket.ErrTooLarge},
			{name: "multipart over the limit", key: "images/mp/rootfs", limit: 1 << 20, wantErr: bucket.ErrTooLarge},
			{name: "absent", key: "3fa85f64/absent.json", limit: 100, wantErr: bucket.ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := c.Get(ctx, tc.key, tc.limit)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("Get(%q, %d) error = %v, want %v", tc.key, tc.limit, err, tc.wantErr)
					}
					return
				}
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Fatalf("Get(%q, %d) = %q, %v; want %q", tc.key, tc.limit, got, err, tc.want)
				}
			})
		}
	})

	st := c.Stats()
	if st.Heads != int64(len(want))+1 || st.Gets != 6 {
		t.Errorf("Stats() = %+v, want Heads %d, Gets 6", st, len(want)+1)
	}
}

func TestErrorsAgainstVersityGW(t *testing.T) {
	s := startS3(t)
	upload(t, s, map[string][]byte{"PE/a": []byte("a")})
	good := s.Credentials()
	const wrongSecret = "wrong-secret-must-not-leak"

	tests := []struct {
		name      string
		cfg       bucket.Config
		wantIs    error
		wantInMsg string
	}{
		{name: "unknown access key", cfg: bucket.Config{Credentials: &aws.Credentials{AccessKeyID: "nobody", SecretAccessKey: wrongSecret}}, wantIs: bucket.ErrAccessDenied, wantInMsg: "S3_CREDENTIAL_FILE"},
		{name: "wrong secret", cfg: bucket.Config{Credentials: &aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: wrongSecret}}, wantIs: bucket.ErrAccessDenied, wantInMsg: "S3_CREDENTIAL_FILE"},
		{name: "no such bucket", cfg: bucket.Config{Bucket: "not-there", Credentials: &good}, wantInMsg: "S3_BUCKET"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoint = s.Endpoint()
			c := newClient(t, tc.cfg)
			got, err := c.List(t.Context(), "")
			if err == nil {
				t.Fatalf("List = %d objects, want an error", len(got))
			}
			if got != nil {
				t.Errorf("List returned %d objects with its error, want none", len(got))
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("List error = %v, want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantInMsg) {
				t.Errorf("List error = %v, want it to mention %s", err, tc.wantInMsg)
			}
			if strings.Contains(err.Error(), wrongSecret) || strings.Contains(err.Error(), good.SecretAccessKey) {
				t.Errorf("List error leaks a secret: %v", err)
			}
			if tc.wantIs == nil {
				return
			}
			// Get carries an error body on every server. (HEAD has no body:
			// versitygw answers HEAD with an unknown key as a bare 404, which
			// cannot be told from a missing object; RGW sends 403.)
			if _, err := c.Get(t.Context(), "PE/a", 10); !errors.Is(err, tc.wantIs) {
				t.Errorf("Get error = %v, want %v", err, tc.wantIs)
			}
			if tc.name == "wrong secret" {
				if _, err := c.Head(t.Context(), "PE/a"); !errors.Is(err, tc.wantIs) || errors.Is(err, bucket.ErrNotFound) {
					t.Errorf("Head error = %v, want %v and not ErrNotFound", err, tc.wantIs)
				}
			}
		})
	}
}

// killAfterFirstList is a real transport that kills the real server once the
// first ListObjectsV2 page has come back, so the next page fails.
type killAfterFirstList struct {
	s    *rig.S3
	once sync.Once
}

func (k *killAfterFirstList) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && r.URL.Query().Has("list-type") {
		k.once.Do(func() { _ = k.s.Kill() })
	}
	return resp, err
}

func TestListNeverReturnsPartialResults(t *testing.T) {
	s := startS3(t)
	objs := map[string][]byte{}
	for i := range 5 {
		objs[fmt.Sprintf("PE/img-%d", i)] = []byte("x")
	}
	upload(t, s, objs)
	creds := s.Credentials()

	t.Run("server dies between pages", func(t *testing.T) {
		c := newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds, PageSize: 2,
			HTTPClient: &http.Client{Transport: &killAfterFirstList{s: s}}})
		got, err := c.List(t.Context(), "")
		if err == nil || got != nil {
			t.Fatalf("List = %d objects, %v; want no objects and an error", len(got), err)
		}
		if !strings.Contains(err.Error(), "page 2") || !strings.Contains(err.Error(), "no partial listing") {
			t.Errorf("List error = %v, want it to name page 2 and say no partial listing was returned", err)
		}
		if pages := c.Stats().ListPages; pages != 2 {
			t.Errorf("ListPages = %d, want 2 (one good page, one failed)", pages)
		}
	})

	t.Run("server down", func(t *testing.T) {
		_ = s.Kill()
		c := newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds})
		got, err := c.List(t.Context(), "")
		if err == nil || got != nil {
			t.Fatalf("List = %d objects, %v; want no objects and an error", len(got), err)
		}
		if !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("List error = %v, want it to say the endpoint is unreachable", err)
		}
		if _, err := c.Head(t.Context(), "PE/img-0"); err == nil || errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("Head with the server down = %v, want an error that is not ErrNotFound", err)
		}
	})
}

// TestTLS puts a TLS front (httptest, with its own certificate) before the
// real versitygw: certificates are verified by default and a CA file makes
// the same endpoint work.
func TestTLS(t *testing.T) {
	s := startS3(t)
	upload(t, s, map[string][]byte{"PE/tls": []byte("over tls")})
	backend, err := url.Parse(s.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(backend))
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	front.StartTLS()
	t.Cleanup(front.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	creds := s.Credentials()

	tests := []struct {
		name    string
		caFile  string
		wantErr string
	}{
		{name: "unknown CA is refused", wantErr: "certificate"},
		{name: "CA file trusted", caFile: caFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, bucket.Config{Endpoint: front.URL, Credentials: &creds, CAFile: tc.caFile, MaxAttempts: 1})
			got, err := c.List(t.Context(), "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("List over TLS = %v, %v; want an error containing %q", keysOf(got), err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(keysOf(got), []string{"PE/tls"}) {
				t.Fatalf("List over TLS = %q, %v; want [PE/tls]", keysOf(got), err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  bucket.Config
		want string
	}{
		{name: "no endpoint", cfg: bucket.Config{}, want: "S3_PROTO://S3_HOST"},
		{name: "host only", cfg: bucket.Config{Endpoint: "rgw-vip.nmn"}, want: "not an http:// or https:// URL"},
		{name: "other scheme", cfg: bucket.Config{Endpoint: "ftp://rgw-vip.nmn"}, want: "not an http:// or https:// URL"},
		{name: "CA file missing", cfg: bucket.Config{Endpoint: "https://rgw-vip.nmn", CAFile: filepath.Join(dir, "absent.pem")}, want: "absent.pem"},
		{name: "CA file not PEM", cfg: bucket.Config{Endpoint: "https://rgw-vip.nmn", CAFile: notPEM}, want: "no PEM certificate"},
		{name: "client and CA file", cfg: bucket.Config{Endpoint: "https://rgw-vip.nmn", CAFile: notPEM, HTTPClient: http.DefaultClient}, want: "both HTTPClient and CAFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bucket.New(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%+v) error = %v, want one containing %q", tc.cfg, err, tc.want)
			}
		})
	}
}

// TestConcurrentUse runs List, Head and Get from many goroutines on one
// Client (run with -race) and checks the counters add up.
func TestConcurrentUse(t *testing.T) {
	s := startS3(t)
	objs := map[string][]byte{}
	for i := range 6 {
		objs[fmt.Sprintf("PE/img-%d", i)] = []byte(fmt.Sprint(i))
	}
	upload(t, s, objs)
	c := clientFor(t, s, 4) // 2 pages per List
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers*3)
	for i := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("PE/img-%d", i%6)
			if got, err := c.List(t.Context(), "PE/"); err != nil || len(got) != 6 {
				errs <- fmt.Errorf("List = %d objects, %v; want 6", len(got), err)
			}
			if _, err := c.Head(t.Context(), key); err != nil {
				errs <- err
			}
			if got, err := c.Get(t.Context(), key, 10); err != nil || string(got) != fmt.Sprint(i%6) {
				errs <- fmt.Errorf("Get(%s) = %q, %v", key, got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := bucket.Stats{ListPages: 2 * workers, Heads: workers, Gets: workers}
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// BenchmarkList lists 10,000 objects (the size of the projector's resync
// benchmark) from versitygw in pages of 1,000. The objects are files placed
// straight into the posix backend, so versitygw reports its default ETag.
func BenchmarkList(b *testing.B) {
	s, err := rig.StartS3(b.Context(), rig.S3Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Kill() })
	const n = 10000
	for i := range n {
		dir := filepath.Join(s.MountDir(), fmt.Sprintf("%08x-image", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "rootfs"), []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	creds := s.Credentials()
	c, err := bucket.New(b.Context(), bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := c.List(b.Context(), "")
		if err != nil || len(got) != n {
			b.Fatalf("List = %d objects, %v; want %d", len(got), err, n)
		}
	}
	b.ReportMetric(float64(c.Stats().ListPages)/float64(b.N), "pages/op")
}
