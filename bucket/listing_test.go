package bucket_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/bucket"
)

// pageFault rewrites the real server's ListObjectsV2 answers: the page
// numbered at (1-based) goes through rewrite, which gets the page's XML and
// the continuation tokens the server handed out so far.
type pageFault struct {
	at      int
	rewrite func(body []byte, tokens []string) []byte

	mu     sync.Mutex
	pages  int
	tokens []string // NextContinuationToken of every page seen, in order
}

var nextTokenRE = regexp.MustCompile(`<NextContinuationToken>([^<]*)</NextContinuationToken>`)

func (f *pageFault) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || !r.URL.Query().Has("list-type") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.pages++
	if f.pages == f.at {
		body = f.rewrite(body, slices.Clone(f.tokens))
	}
	if m := nextTokenRE.FindSubmatch(body); m != nil {
		f.tokens = append(f.tokens, string(m[1]))
	}
	f.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

func setToken(body []byte, token string) []byte {
	return nextTokenRE.ReplaceAll(body, []byte("<NextContinuationToken>"+token+"</NextContinuationToken>"))
}

// TestListRefusesAListingItCannotProveComplete puts a faulting transport in
// front of the real versitygw. A page that says it is truncated but gives no
// continuation token, or that hands back a token the listing already
// followed, must make List fail: what such a listing leaves out would be
// taken as deleted in S3, and its LUNs planned for removal (issue 15, point 1).
func TestListRefusesAListingItCannotProveComplete(t *testing.T) {
	s := startS3(t)
	objs := map[string][]byte{}
	for i := range 10 {
		objs[fmt.Sprintf("PE/img-%02d", i)] = []byte("x")
	}
	upload(t, s, objs)
	creds := s.Credentials()

	tests := []struct {
		name    string
		at      int
		rewrite func(body []byte, tokens []string) []byte
		wantErr string
	}{
		{
			name: "truncated without a continuation token",
			at:   2,
			rewrite: func(body []byte, _ []string) []byte {
				if !bytes.Contains(body, []byte("<IsTruncated>true</IsTruncated>")) {
					t.Errorf("page 2 of 5 from versitygw is not truncated: %s", body)
				}
				return nextTokenRE.ReplaceAll(body, nil)
			},
			wantErr: "no continuation token",
		},
		{
			name: "truncated with an empty continuation token",
			at:   2,
			rewrite: func(body []byte, _ []string) []byte {
				return setToken(body, "")
			},
			wantErr: "no continuation token",
		},
		{
			name: "repeats the token it was asked with",
			at:   2,
			rewrite: func(body []byte, tokens []string) []byte {
				return setToken(body, tokens[len(tokens)-1])
			},
			wantErr: "already followed",
		},
		{
			name: "goes back to an earlier token",
			at:   3,
			rewrite: func(body []byte, tokens []string) []byte {
				return setToken(body, tokens[0])
			},
			wantErr: "already followed",
		},
		{
			name: "does not say whether it is truncated",
			at:   2,
			rewrite: func(body []byte, _ []string) []byte {
				return regexp.MustCompile(`<IsTruncated>[a-z]*</IsTruncated>`).ReplaceAll(body, nil)
			},
			wantErr: "IsTruncated",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &pageFault{at: tc.at, rewrite: tc.rewrite}
			c := newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds, PageSize: 2,
				HTTPClient: &http.Client{Transport: f}})
			got, err := c.List(t.Context(), "PE/")
			if err == nil || got != nil {
				t.Fatalf("List = %d of 10 objects (%q), %v; want no objects and an error", len(got), keysOf(got), err)
			}
			msg := err.Error()
			for _, want := range []string{tc.wantErr, fmt.Sprintf("page %d", tc.at), "no partial listing", s.Endpoint()} {
				if !strings.Contains(msg, want) {
					t.Errorf("List error = %v, want it to contain %q", err, want)
				}
			}
		})
	}

	t.Run("honest server", func(t *testing.T) {
		f := &pageFault{at: 0}
		c := newClient(t, bucket.Config{Endpoint: s.Endpoint(), Credentials: &creds, PageSize: 2,
			HTTPClient: &http.Client{Transport: f}})
		got, err := c.List(t.Context(), "PE/")
		if err != nil || len(got) != 10 {
			t.Fatalf("List through the transport with no fault = %q, %v; want the 10 keys", keysOf(got), err)
		}
		if pages := c.Stats().ListPages; pages != 5 {
			t.Errorf("ListPages = %d, want 5", pages)
		}
	})
}
