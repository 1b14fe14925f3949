package imstest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const specPath = "../../testdata/reference/ims/openapi.yaml"

func loadContract(t *testing.T) *Contract {
	t.Helper()
	c, err := LoadContract(t.Context(), specPath)
	if err != nil {
		t.Fatalf("LoadContract: %v", err)
	}
	return c
}

// violations collects contract violations reported by a Transport.
type violations struct {
	mu   sync.Mutex
	errs []error
}

func (v *violations) add(err error) { v.mu.Lock(); v.errs = append(v.errs, err); v.mu.Unlock() }
func (v *violations) take() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.errs
	v.errs = nil
	return e
}

type exchange struct {
	status int
	body   []byte
	header http.Header
}

func do(t *testing.T, hc *http.Client, method, url, token string, body any) exchange {
	t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return exchange{resp.StatusCode, b, resp.Header}
}

// TestContract drives every image endpoint and status the server produces
// and validates each exchange against the IMS OpenAPI document.
func TestContract(t *testing.T) {
	c := loadContract(t)
	srv := StartTest(t, Options{Verify: StaticToken("tok")})
	var v violations
	hc := &http.Client{Transport: c.Transport(srv.Client().Transport, v.add)}

	tagged := srv.Put(Image{Name: "tagged", Link: &Link{Path: "s3://boot-images/a/manifest.json", Etag: "abc", Type: "s3"}, Metadata: map[string]string{"sbps-project": "true"}})
	plain := srv.Put(Image{Name: "no-link"})
	missing := NewID()
	link := map[string]string{"path": "s3://boot-images/b/manifest.json", "etag": "e1", "type": "s3"}

	for _, base := range []string{srv.URL() + "/v3/images", srv.ImagesURL()} {
		tests := []struct {
			name   string
			method string
			url    string
			token  string
			body   any
			want   int
			badReq bool // the request itself violates the spec, on purpose
		}{
			{"list", "GET", base, "tok", nil, 200, false},
			{"get", "GET", base + "/" + tagged.ID, "tok", nil, 200, false},
			{"get without link", "GET", base + "/" + plain.ID, "tok", nil, 200, false},
			{"get missing", "GET", base + "/" + missing, "tok", nil, 404, false},
			{"no token", "GET", base, "", nil, 401, false},
			{"bad token", "GET", base, "nope", nil, 401, false},
			{"post", "POST", base, "tok", map[string]any{"name": "new", "arch": "aarch64", "link": link}, 201, false},
			{"post empty", "POST", base, "tok", map[string]any{}, 400, true},
			{"post bad arch", "POST", base, "tok", map[string]any{"name": "x", "arch": "sparc"}, 422, true},
			{"patch bad operation", "PATCH", base + "/" + plain.ID, "tok", map[string]any{"metadata": map[string]string{"operation": "frob", "key": "k"}}, 422, true},
			{"patch unknown field", "PATCH", base + "/" + plain.ID, "tok", map[string]any{"colour": "blue"}, 422, false},
			{"patch tag", "PATCH", base + "/" + plain.ID, "tok", map[string]any{"metadata": map[string]string{"operation": "set", "key": "sbps-project", "value": "true"}}, 200, false},
			{"patch untag", "PATCH", base + "/" + plain.ID, "tok", map[string]any{"metadata": map[string]string{"operation": "remove", "key": "sbps-project"}}, 200, false},
			{"patch arch", "PATCH", base + "/" + plain.ID, "tok", map[string]any{"arch": "aarch64"}, 200, false},
			{"patch same link", "PATCH", base + "/" + tagged.ID, "tok", map[string]any{"link": map[string]string{"path": "s3://boot-images/a/manifest.json", "etag": "abc", "type": "s3"}}, 200, false},
			{"patch other link", "PATCH", base + "/" + tagged.ID, "tok", map[string]any{"link": link}, 409, false},
			{"patch missing", "PATCH", base + "/" + missing, "tok", map[string]any{"arch": "x86_64"}, 404, false},
			{"patch empty", "PATCH", base + "/" + plain.ID, "tok", map[string]any{}, 400, false},
		}
		for _, tt := range tests {
			t.Run(strings.TrimPrefix(base, srv.URL())+"/"+tt.name, func(t *testing.T) {
				got := do(t, hc, tt.method, tt.url, tt.token, tt.body)
				if got.status != tt.want {
					t.Errorf("%s %s = %d %s, want %d", tt.method, tt.url, got.status, got.body, tt.want)
				}
				errs := v.take()
				if tt.badReq && len(errs) == 0 {
					t.Errorf("%s %s with %v passed request validation; the contract does not check requests", tt.method, tt.url, tt.body)
				}
				for _, err := range errs {
					if !tt.badReq || strings.Contains(err.Error(), "response") {
						t.Errorf("contract violation: %v", err)
					}
				}
			})
		}
	}

	t.Run("delete", func(t *testing.T) {
		if got := do(t, hc, "DELETE", srv.ImagesURL()+"/"+plain.ID, "tok", nil); got.status != 204 {
			t.Errorf("DELETE = %d, want 204", got.status)
		}
		if got := do(t, hc, "DELETE", srv.ImagesURL()+"/"+plain.ID, "tok", nil); got.status != 404 {
			t.Errorf("second DELETE = %d, want 404", got.status)
		}
		for _, err := range v.take() {
			t.Errorf("contract violation: %v", err)
		}
	})

	t.Run("legacy and faults", func(t *testing.T) {
		srv.SetLegacy(true)
		got := do(t, hc, "GET", srv.ImagesURL(), "tok", nil)
		if bytes.Contains(got.body, []byte(`"metadata"`)) {
			t.Errorf("legacy listing has metadata: %s", got.body)
		}
		if got := do(t, hc, "PATCH", srv.ImagesURL()+"/"+tagged.ID, "tok", map[string]any{"metadata": map[string]string{"operation": "set", "key": "k", "value": "v"}}); got.status != 422 {
			t.Errorf("legacy metadata PATCH = %d, want 422", got.status)
		}
		srv.SetLegacy(false)
		srv.FailNext(1, 500)
		if got := do(t, hc, "GET", srv.ImagesURL(), "tok", nil); got.status != 500 {
			t.Errorf("after FailNext(1, 500): %d, want 500", got.status)
		}
		for _, err := range v.take() {
			t.Errorf("contract violation: %v", err)
		}
	})
}

// TestContractDetectsDeviations proves the checker can fail: records as the
// field produces them but the spec forbids are reported.
func TestContractDetectsDeviations(t *testing.T) {
	c := loadContract(t)
	tests := []struct {
		name  string
		opts  Options
		setup func(s *Server)
		want  string
	}{
		{"created with a space (python str(datetime))", Options{}, func(s *Server) { s.Put(Image{Name: "a", Created: "2020-01-14 03:17:14"}) }, "created"},
		{"link null as the Python IMS emits", Options{NullLinks: true}, func(s *Server) { s.Put(Image{Name: "a"}) }, "link"},
		{"wrong types", Options{}, func(s *Server) { s.PutRaw(NewID(), json.RawMessage(`{"id":"x","name":5}`)) }, "name"},
		{"id not a uuid", Options{}, func(s *Server) { s.Put(Image{ID: "not-a-uuid", Name: "a"}) }, "id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := StartTest(t, tt.opts)
			tt.setup(srv)
			var v violations
			hc := &http.Client{Transport: c.Transport(srv.Client().Transport, v.add)}
			do(t, hc, "GET", srv.ImagesURL(), "", nil)
			errs := v.take()
			if len(errs) == 0 {
				t.Fatalf("no contract violation reported")
			}
			if !strings.Contains(errs[0].Error(), tt.want) {
				t.Errorf("violation %q does not mention %q", errs[0], tt.want)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	srv := StartTest(t, Options{})
	for i := range 4 {
		srv.Put(Image{Name: "img" + string(rune('a'+i))})
	}
	count := func(t *testing.T) int {
		t.Helper()
		got := do(t, srv.Client(), "GET", srv.ImagesURL(), "", nil)
		var recs []json.RawMessage
		if err := json.Unmarshal(got.body, &recs); err != nil {
			t.Fatalf("listing: %v (%s)", err, got.body)
		}
		return len(recs)
	}
	tests := []struct {
		name string
		mode ListMode
		want int
	}{
		{"all", ListAll, 4},
		{"drop half", ListDropHalf, 2},
		{"empty", ListEmpty, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetListMode(tt.mode)
			if got := count(t); got != tt.want {
				t.Errorf("listing with mode %d has %d records, want %d", tt.mode, got, tt.want)
			}
		})
	}
	srv.SetListMode(ListAll)

	t.Run("fail next n", func(t *testing.T) {
		srv.FailNext(2, 503)
		for i, want := range []int{503, 503, 200} {
			if got := do(t, srv.Client(), "GET", srv.ImagesURL(), "", nil); got.status != want {
				t.Errorf("request %d = %d, want %d", i, got.status, want)
			}
		}
		if st := srv.Stats(); st.Injected != 2 {
			t.Errorf("Stats().Injected = %d, want 2", st.Injected)
		}
	})

	t.Run("latency honours cancellation", func(t *testing.T) {
		srv.SetLatency(time.Minute)
		t.Cleanup(func() { srv.SetLatency(0) })
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.ImagesURL(), nil)
		start := time.Now()
		_, err := srv.Client().Do(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("GET with a minute of latency and a 50ms deadline: err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("request took %v", d)
		}
	})
}

func TestGoAPI(t *testing.T) {
	srv := NewServer(Options{})
	img := srv.Put(Image{Name: "a"})
	if err := srv.Tag(img.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.Image(img.ID); got.Metadata["sbps-project"] != "true" {
		t.Errorf("after Tag metadata = %v", got.Metadata)
	}
	if err := srv.Untag(img.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.Image(img.ID); len(got.Metadata) != 0 {
		t.Errorf("after Untag metadata = %v", got.Metadata)
	}
	if err := srv.Delete(img.ID); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{"Tag": srv.Tag(img.ID), "Untag": srv.Untag(img.ID), "Delete": srv.Delete(img.ID)} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a deleted image: %v, want ErrNotFound", name, err)
		}
	}
	if n := len(srv.Images()); n != 0 {
		t.Errorf("Images() has %d records after Delete", n)
	}
}

func TestTLS(t *testing.T) {
	srv, err := Start(Options{}, ListenOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL() = %q, want https", srv.URL())
	}
	if got := do(t, srv.Client(), "GET", srv.ImagesURL(), "", nil); got.status != 200 {
		t.Errorf("GET over TLS = %d", got.status)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(srv.CACertPEM()) {
		t.Errorf("CACertPEM() = %q, not a PEM certificate", srv.CACertPEM())
	}
	if _, err := http.Get(srv.ImagesURL()); err == nil {
		t.Error("a client without the server's CA connected; TLS verification is not exercised")
	}
}
