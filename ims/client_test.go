package ims_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
)

const specPath = "../testdata/reference/ims/openapi.yaml"

// httpClient returns a client for srv whose every exchange is checked against
// the IMS OpenAPI document when checked is true.
func httpClient(t *testing.T, srv *imstest.Server, checked bool) *http.Client {
	t.Helper()
	if !checked {
		return srv.Client()
	}
	contract, err := imstest.LoadContract(t.Context(), specPath)
	if err != nil {
		t.Fatalf("load IMS contract: %v", err)
	}
	return &http.Client{Transport: contract.Transport(srv.Client().Transport, func(err error) {
		t.Errorf("IMS contract violation: %v", err)
	})}
}

func newClient(t *testing.T, srv *imstest.Server, checked bool, mod func(*ims.Config)) *ims.Client {
	t.Helper()
	cfg := ims.Config{BaseURL: srv.ImagesURL(), HTTPClient: httpClient(t, srv, checked), Token: ims.NoToken{}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := ims.New(cfg)
	if err != nil {
		t.Fatalf("ims.New: %v", err)
	}
	return c
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  ims.Config
	}{
		{"empty URL", ims.Config{Token: ims.NoToken{}}},
		{"ftp", ims.Config{BaseURL: "ftp://h/apis/ims/v3/images", Token: ims.NoToken{}}},
		{"no host", ims.Config{BaseURL: "https:///apis", Token: ims.NoToken{}}},
		{"user info", ims.Config{BaseURL: "https://u:secret@h/apis/ims/v3/images", Token: ims.NoToken{}}},
		{"query", ims.Config{BaseURL: "https://h/apis/ims/v3/images?x=1", Token: ims.NoToken{}}},
		{"nil token", ims.Config{BaseURL: "https://h/apis/ims/v3/images"}},
		{"negative timeout", ims.Config{BaseURL: "https://h/x", Token: ims.NoToken{}, Timeout: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ims.New(tt.cfg)
			if err == nil {
				t.Fatalf("New(%+v) succeeded, want an error", tt.cfg)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestListGetPatch(t *testing.T) {
	srv := imstest.StartTest(t, imstest.Options{})
	c := newClient(t, srv, true, nil)
	ctx := t.Context()

	tagged := srv.Put(imstest.Image{Name: "tagged", Link: &imstest.Link{Path: "s3://boot-images/a/manifest.json", Etag: "e1", Type: "s3"}, Metadata: map[string]string{"sbps-project": "true"}})
	untagged := srv.Put(imstest.Image{Name: "untagged", Arch: "aarch64", Link: &imstest.Link{Path: "s3://boot-images/b/manifest.json", Type: "s3"}})
	building := srv.Put(imstest.Image{Name: "building"}) // no link yet

	l, err := c.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(l.Images) != 3 || len(l.Errors) != 0 {
		t.Fatalf("List = %d images, errors %v; want 3, none", len(l.Images), l.Errors)
	}
	byID := map[string]ims.Image{}
	for _, img := range l.Images {
		byID[img.ID] = img
	}
	tests := []struct {
		name        string
		id          string
		projectable bool
		check       func(ims.Image) bool
	}{
		{"tagged", tagged.ID, true, func(i ims.Image) bool { return i.Link != nil && i.Link.Etag == "e1" && i.Tagged() }},
		{"untagged, link without etag", untagged.ID, false, func(i ims.Image) bool {
			return i.Arch == "aarch64" && i.Link != nil && i.Link.Etag == "" && i.Metadata != nil
		}},
		{"no link", building.ID, false, func(i ims.Image) bool { return i.Link == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, ok := byID[tt.id]
			if !ok {
				t.Fatalf("image %s not listed", tt.id)
			}
			if !tt.check(img) {
				t.Errorf("listed %+v", img)
			}
			if got, reason := ims.Projectable(img, true); got != tt.projectable {
				t.Errorf("Projectable = %v (%s), want %v", got, reason, tt.projectable)
			}
			one, err := c.Get(ctx, tt.id)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if one.ID != img.ID || one.Name != img.Name || one.Created != img.Created {
				t.Errorf("Get = %+v, List had %+v", one, img)
			}
			if _, err := one.CreatedTime(); err != nil {
				t.Errorf("CreatedTime: %v", err)
			}
		})
	}

	t.Run("tag and untag through PATCH", func(t *testing.T) {
		img, err := c.SetMetadata(ctx, untagged.ID, ims.TagKey, ims.TagValue)
		if err != nil {
			t.Fatalf("SetMetadata: %v", err)
		}
		if ok, _ := ims.Projectable(img, true); !ok {
			t.Errorf("after SetMetadata: %+v not projectable", img)
		}
		if got, _ := srv.Image(untagged.ID); got.Metadata[ims.TagKey] != ims.TagValue {
			t.Errorf("server metadata = %v", got.Metadata)
		}
		img, err = c.RemoveMetadata(ctx, untagged.ID, ims.TagKey)
		if err != nil {
			t.Fatalf("RemoveMetadata: %v", err)
		}
		if ok, _ := ims.Projectable(img, true); ok {
			t.Errorf("after RemoveMetadata: %+v projectable", img)
		}
	})

	t.Run("stats", func(t *testing.T) {
		st := c.Stats()
		if st.Lists != 1 || st.Gets != 3 || st.Patches != 2 || st.Requests != 6 || st.Failures != 0 {
			t.Errorf("Stats() = %+v", st)
		}
		if ss := srv.Stats(); ss.Requests != st.Requests {
			t.Errorf("server saw %d requests, client counted %d", ss.Requests, st.Requests)
		}
	})
}

func TestGetErrors(t *testing.T) {
	srv := imstest.StartTest(t, imstest.Options{})
	c := newClient(t, srv, true, nil)
	img := srv.Put(imstest.Image{Name: "a"})

	t.Run("deleted image is ErrNotFound", func(t *testing.T) {
		if err := srv.Delete(img.ID); err != nil {
			t.Fatal(err)
		}
		_, err := c.Get(t.Context(), img.ID)
		if !errors.Is(err, ims.ErrNotFound) {
			t.Fatalf("Get of a deleted image = %v, want ErrNotFound", err)
		}
		var se *ims.StatusError
		if !errors.As(err, &se) || se.Status != 404 || !strings.Contains(err.Error(), srv.ImagesURL()+"/"+img.ID) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("error %q should name the URL, status 404 and the body", err)
		}
	})

	t.Run("bad ids are refused before any request", func(t *testing.T) {
		before := srv.Stats().Requests
		for _, id := range []string{"", "../v3/jobs", img.ID + "/x", "46a2731e-a1d0-4f98-ba92-4f78c756bb1%"} {
			if _, err := c.Get(t.Context(), id); err == nil {
				t.Errorf("Get(%q) succeeded", id)
			}
			if _, err := c.SetMetadata(t.Context(), id, "k", "v"); err == nil {
				t.Errorf("SetMetadata(%q) succeeded", id)
			}
		}
		if after := srv.Stats().Requests; after != before {
			t.Errorf("%d requests reached the server", after-before)
		}
	})
}

// rotatingToken hands out the token it holds; Invalidate fetches the
// current one from the "issuer".
type rotatingToken struct {
	current     atomic.Value // string
	cached      atomic.Value // string
	invalidated atomic.Int64
}

func (r *rotatingToken) Token(context.Context) (string, error) { return r.cached.Load().(string), nil }
func (r *rotatingToken) Invalidate() {
	r.invalidated.Add(1)
	r.cached.Store(r.current.Load())
}

func TestAuth(t *testing.T) {
	var want atomic.Value
	want.Store("good")
	srv := imstest.StartTest(t, imstest.Options{Verify: func(_ context.Context, tok string) error {
		if tok != want.Load().(string) {
			return errors.New("bad token")
		}
		return nil
	}})
	srv.Put(imstest.Image{Name: "a"})

	t.Run("401 invalidates and retries once", func(t *testing.T) {
		src := &rotatingToken{}
		src.cached.Store("stale")
		src.current.Store("good")
		c := newClient(t, srv, true, func(cfg *ims.Config) { cfg.Token = src })
		l, err := c.List(t.Context())
		if err != nil || len(l.Images) != 1 {
			t.Fatalf("List = %+v, %v", l, err)
		}
		if st := c.Stats(); st.Retries != 1 || st.Requests != 2 || src.invalidated.Load() != 1 {
			t.Errorf("Stats() = %+v, invalidations %d; want one retry", st, src.invalidated.Load())
		}
	})

	t.Run("still 401 after refresh fails with ErrUnauthorized", func(t *testing.T) {
		src := &rotatingToken{}
		src.cached.Store("stale")
		src.current.Store("also-stale")
		c := newClient(t, srv, true, func(cfg *ims.Config) { cfg.Token = src })
		_, err := c.List(t.Context())
		if !errors.Is(err, ims.ErrUnauthorized) {
			t.Fatalf("List = %v, want ErrUnauthorized", err)
		}
		if strings.Contains(err.Error(), "stale") {
			t.Errorf("error leaks the token: %v", err)
		}
		if st := c.Stats(); st.Requests != 2 {
			t.Errorf("Stats().Requests = %d, want 2 (no retry loop)", st.Requests)
		}
	})

	t.Run("no Invalidate: no retry", func(t *testing.T) {
		c := newClient(t, srv, true, nil) // NoToken: no header at all
		if _, err := c.List(t.Context()); !errors.Is(err, ims.ErrUnauthorized) {
			t.Fatalf("List without a token = %v, want ErrUnauthorized", err)
		}
		if st := c.Stats(); st.Requests != 1 {
			t.Errorf("Stats().Requests = %d, want 1", st.Requests)
		}
	})

	t.Run("token file rotated on disk", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte("good\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newClient(t, srv, true, func(cfg *ims.Config) { cfg.Token = ims.TokenFile(p) })
		if _, err := c.List(t.Context()); err != nil {
			t.Fatalf("List: %v", err)
		}
		want.Store("rotated")
		t.Cleanup(func() { want.Store("good") })
		if err := os.WriteFile(p, []byte("rotated\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := c.List(t.Context()); err != nil {
			t.Fatalf("List after rotation: %v", err)
		}
		if st := c.Stats(); st.Retries != 1 {
			t.Errorf("Stats().Retries = %d, want 1", st.Retries)
		}
	})
}

func TestFaults(t *testing.T) {
	srv := imstest.StartTest(t, imstest.Options{})
	for range 4 {
		srv.Put(imstest.Image{Name: "a", Metadata: map[string]string{"sbps-project": "true"}})
	}

	t.Run("503 then recovery", func(t *testing.T) {
		c := newClient(t, srv, true, nil)
		srv.FailNext(1, http.StatusServiceUnavailable)
		_, err := c.List(t.Context())
		var se *ims.StatusError
		if !errors.As(err, &se) || se.Status != 503 || !strings.Contains(err.Error(), srv.ImagesURL()) || !strings.Contains(err.Error(), "retry later") {
			t.Fatalf("List during a 503 = %v", err)
		}
		if l, err := c.List(t.Context()); err != nil || len(l.Images) != 4 {
			t.Errorf("List after the fault = %d images, %v", len(l.Images), err)
		}
		if st := c.Stats(); st.Failures != 1 || st.Requests != 2 {
			t.Errorf("Stats() = %+v; 503 must not be retried by the client", st)
		}
	})

	t.Run("500", func(t *testing.T) {
		c := newClient(t, srv, true, nil)
		srv.FailNext(1, http.StatusInternalServerError)
		if _, err := c.List(t.Context()); err == nil || !strings.Contains(err.Error(), "500") {
			t.Errorf("List during a 500 = %v", err)
		}
	})

	t.Run("IMS_TIMEOUT honoured", func(t *testing.T) {
		c := newClient(t, srv, false, func(cfg *ims.Config) { cfg.Timeout = 200 * time.Millisecond })
		srv.SetLatency(time.Minute)
		t.Cleanup(func() { srv.SetLatency(0) })
		start := time.Now()
		_, err := c.List(t.Context())
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "IMS_TIMEOUT=200ms") {
			t.Errorf("List against a slow IMS = %v, want a deadline error naming IMS_TIMEOUT", err)
		}
		if took > 10*time.Second {
			t.Errorf("List took %v with a 200ms timeout", took)
		}
	})

	t.Run("drop half and empty listings are returned as they are", func(t *testing.T) {
		c := newClient(t, srv, true, nil)
		for _, tc := range []struct {
			mode imstest.ListMode
			want int
		}{{imstest.ListDropHalf, 2}, {imstest.ListEmpty, 0}, {imstest.ListAll, 4}} {
			srv.SetListMode(tc.mode)
			l, err := c.List(t.Context())
			if err != nil || len(l.Images) != tc.want {
				t.Errorf("mode %d: %d images, %v; want %d", tc.mode, len(l.Images), err, tc.want)
			}
		}
	})

	t.Run("listing over MaxBody", func(t *testing.T) {
		c := newClient(t, srv, false, func(cfg *ims.Config) { cfg.MaxBody = 100 })
		if _, err := c.List(t.Context()); !errors.Is(err, ims.ErrTooLarge) {
			t.Errorf("List = %v, want ErrTooLarge", err)
		}
	})
}

// TestFieldShapes covers records as deployed IMS versions send them, some of
// which the spec does not allow (so no contract check here).
func TestFieldShapes(t *testing.T) {
	t.Run("legacy IMS without metadata projects everything", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{Legacy: true})
		srv.Put(imstest.Image{Name: "a"})
		srv.Put(imstest.Image{Name: "b", Metadata: map[string]string{"sbps-project": "false"}}) // hidden by Legacy
		c := newClient(t, srv, true, nil)
		l, err := c.List(t.Context())
		if err != nil || len(l.Images) != 2 {
			t.Fatalf("List = %+v, %v", l, err)
		}
		for _, img := range l.Images {
			if img.Metadata != nil {
				t.Errorf("legacy record %s has metadata %v", img.ID, img.Metadata)
			}
			if ok, _ := ims.Projectable(img, true); !ok {
				t.Errorf("legacy record %s not projectable", img.ID)
			}
		}
		if _, err := c.SetMetadata(t.Context(), l.Images[0].ID, ims.TagKey, ims.TagValue); err == nil || !strings.Contains(err.Error(), "422") {
			t.Errorf("SetMetadata on a legacy IMS = %v, want a 422", err)
		}
	})

	t.Run("link null", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{NullLinks: true})
		img := srv.Put(imstest.Image{Name: "a"})
		c := newClient(t, srv, false, nil)
		got, err := c.Get(t.Context(), img.ID)
		if err != nil || got.Link != nil {
			t.Errorf("Get = %+v, %v; want nil Link", got, err)
		}
	})

	t.Run("created forms", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{})
		forms := map[string]time.Time{
			"2020-01-14 03:17:14":              time.Date(2020, 1, 14, 3, 17, 14, 0, time.UTC),
			"2020-01-14T03:17:14.565885":       time.Date(2020, 1, 14, 3, 17, 14, 565885000, time.UTC),
			"2020-01-14T03:17:14.565885+00:00": time.Date(2020, 1, 14, 3, 17, 14, 565885000, time.UTC),
			"2018-07-28T03:26:01.234Z":         time.Date(2018, 7, 28, 3, 26, 1, 234000000, time.UTC),
			"20240815093713":                   time.Date(2024, 8, 15, 9, 37, 13, 0, time.UTC),
		}
		for form := range forms {
			srv.Put(imstest.Image{Name: "a", Created: form})
		}
		c := newClient(t, srv, false, nil)
		l, err := c.List(t.Context())
		if err != nil || len(l.Images) != len(forms) {
			t.Fatalf("List = %+v, %v", l, err)
		}
		for _, img := range l.Images {
			got, err := img.CreatedTime()
			if want := forms[img.Created]; err != nil || !got.Equal(want) {
				t.Errorf("CreatedTime(%q) = %v, %v; want %v", img.Created, got, err, want)
			}
		}
	})

	t.Run("a record with wrong types among good ones", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{})
		good1 := srv.Put(imstest.Image{Name: "good1"})
		bad := imstest.NewID()
		srv.PutRaw(bad, []byte(`{"id":"`+bad+`","name":"bad","link":{"path":7,"type":"s3"},"metadata":{"sbps-project":true}}`))
		good2 := srv.Put(imstest.Image{Name: "good2"})
		c := newClient(t, srv, false, nil)
		l, err := c.List(t.Context())
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(l.Images) != 2 || l.Images[0].ID != good1.ID || l.Images[1].ID != good2.ID {
			t.Errorf("List images = %+v, want the two good ones", l.Images)
		}
		if len(l.Errors) != 1 || l.Errors[0].ID != bad || l.Errors[0].Index != 1 {
			t.Errorf("List errors = %v, want one for %s at index 1", l.Errors, bad)
		}
		if _, err := c.Get(t.Context(), bad); err == nil {
			t.Error("Get of the malformed record succeeded")
		}
	})
}

func TestTLSVerification(t *testing.T) {
	srv, err := imstest.Start(imstest.Options{}, imstest.ListenOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	srv.Put(imstest.Image{Name: "a"})

	trusted, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), HTTPClient: srv.Client(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := trusted.List(t.Context()); err != nil || len(l.Images) != 1 {
		t.Errorf("List with the server CA = %+v, %v", l, err)
	}
	dflt, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dflt.List(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("List with the default client = %v, want a certificate error (verification on by default)", err)
	}
}

// TestMalformedBodies uses httptest stubs for answers the IMS server never
// gives: error paths only.
func TestMalformedBodies(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		errHas string
	}{
		{"html from a proxy with 200", 200, "<html><body>Welcome</body></html>", "not a JSON array"},
		{"object instead of array", 200, `{"detail":"x"}`, "not a JSON array"},
		{"long error body is cut", 502, strings.Repeat("x", 5000), "…"},
		{"redirect to login page", 403, "forbidden", "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(stub.Close)
			c, err := ims.New(ims.Config{BaseURL: stub.URL + "/apis/ims/v3/images", HTTPClient: stub.Client(), Token: ims.NoToken{}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.List(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) || !strings.Contains(err.Error(), stub.URL) {
				t.Errorf("List = %v, want an error naming the URL and containing %q", err, tt.errHas)
			}
			if err != nil && len(err.Error()) > 1000 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}
