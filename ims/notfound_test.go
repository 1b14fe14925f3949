package ims_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
)

// TestOnlyIMSSaysAnImageIsGone (issue 15, point 3): a 404 is ErrNotFound
// only when it is IMS's own answer, the problem details of its OpenAPI spec
// (testdata/reference/ims/openapi.yaml, responses/NotFound). A 404 from the
// API gateway (Envoy with no route to IMS: empty body, or text/plain) means
// IMS could not be asked, and must never be taken as "deleted".
func TestOnlyIMSSaysAnImageIsGone(t *testing.T) {
	const id = "4842867f-a9bc-4c2a-ad84-fcc3c931bdad"

	t.Run("IMS server: deleted image", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{})
		c := newClient(t, srv, true, nil)
		_, err := c.Get(t.Context(), id)
		if !errors.Is(err, ims.ErrNotFound) {
			t.Fatalf("Get of an image IMS does not have = %v, want ErrNotFound", err)
		}
	})
	t.Run("IMS server behind a gateway with no route", func(t *testing.T) {
		srv := imstest.StartTest(t, imstest.Options{})
		img := srv.Put(imstest.Image{Name: "a"})
		srv.SetGatewayNoRoute(true)
		c := newClient(t, srv, true, nil)
		for _, id := range []string{img.ID, id} {
			_, err := c.Get(t.Context(), id)
			if err == nil || errors.Is(err, ims.ErrNotFound) {
				t.Fatalf("Get(%s) through Envoy with no route = %v; want an error that is not ErrNotFound", id, err)
			}
			if !errors.Is(err, ims.ErrNoRoute) || !strings.Contains(err.Error(), "gateway") {
				t.Errorf("Get(%s) error = %v; want ErrNoRoute, saying the 404 came from the API gateway", id, err)
			}
		}
	})

	tests := []struct {
		name        string
		contentType string
		body        string
		want        error
	}{
		{"problem+json", "application/problem+json", `{"detail":"Requested resource does not exist. Re-run request with valid ID.","status":404,"title":"Not Found","type":"about:blank"}`, ims.ErrNotFound},
		{"problem details as application/json", "application/json; charset=utf-8", `{"status":404,"title":"Not Found"}`, ims.ErrNotFound},
		{"empty body", "", "", ims.ErrNoRoute},
		{"text/plain", "text/plain; charset=utf-8", "404 page not found", ims.ErrNoRoute},
		{"html", "text/html", "<html><body>Not Found</body></html>", ims.ErrNoRoute},
		{"JSON that is not problem details", "application/json", `{"message":"no Route matched with those values"}`, ims.ErrNoRoute},
		{"problem details of another status", "application/problem+json", `{"status":503,"title":"Service Unavailable"}`, ims.ErrNoRoute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				w.Header().Set("Server", "istio-envoy")
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(gw.Close)
			c, err := ims.New(ims.Config{BaseURL: gw.URL + "/apis/ims/v3/images", Token: ims.NoToken{}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Get(t.Context(), id)
			if !errors.Is(err, tc.want) {
				t.Errorf("Get = %v, want %v", err, tc.want)
			}
			if tc.want == ims.ErrNoRoute && errors.Is(err, ims.ErrNotFound) {
				t.Errorf("Get = %v, must not be ErrNotFound", err)
			}
		})
	}
}
