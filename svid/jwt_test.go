package svid_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

const (
	testXName = "x3000c0s1b0n0"
	audience  = svid.DefaultAudience
)

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newSource(srv *svidtest.Server, xname string, clock svid.Clock) *svid.JWTSource {
	return svid.NewJWTSource(svid.JWTConfig{
		Socket:       srv.Addr(),
		Audience:     audience,
		XName:        xname,
		FetchTimeout: 5 * time.Second,
		Clock:        clock,
	})
}

// subject returns the SPIFFE ID a token was issued to, checking it the way
// the gateway does.
func subject(t *testing.T, srv *svidtest.Server, token string) string {
	t.Helper()
	id, err := srv.VerifyJWT(token, audience)
	if err != nil {
		t.Fatalf("VerifyJWT(token from JWTSource) = %v, want a valid token", err)
	}
	return id.String()
}

func TestTokenPicksAcceptedID(t *testing.T) {
	other := "spiffe://shasta/ncn/workload/cfs-state-reporter"
	otherNode := svid.XNameWorkloadID("x9000c1s0b0n0")
	tests := []struct {
		name    string
		offered []string
		xname   string
		want    string // picked ID; "" means an error naming every offered ID
	}{
		{name: "node ID among several", offered: []string{other, svid.NodeWorkloadID, otherNode}, want: svid.NodeWorkloadID},
		{name: "xname form", offered: []string{other, svid.XNameWorkloadID(testXName)}, xname: testXName, want: svid.XNameWorkloadID(testXName)},
		{name: "xname form preferred over node ID", offered: []string{svid.NodeWorkloadID, svid.XNameWorkloadID(testXName)}, xname: testXName, want: svid.XNameWorkloadID(testXName)},
		{name: "another node's xname is not ours", offered: []string{otherNode, svid.NodeWorkloadID}, xname: testXName, want: svid.NodeWorkloadID},
		{name: "xname form without xname configured", offered: []string{svid.XNameWorkloadID(testXName)}},
		{name: "none matches", offered: []string{other, otherNode}, xname: testXName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := svidtest.New(t, svidtest.Options{IDs: tt.offered})
			tok, err := newSource(srv, tt.xname, nil).Token(t.Context())
			if tt.want == "" {
				if !errors.Is(err, svid.ErrNoMatchingSVID) {
					t.Fatalf("Token() error = %v, want ErrNoMatchingSVID", err)
				}
				for _, id := range tt.offered {
					if !strings.Contains(err.Error(), id) {
						t.Errorf("Token() error = %q, want it to name offered ID %q", err, id)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() error = %v", err)
			}
			if got := subject(t, srv, tok); got != tt.want {
				t.Errorf("Token() subject = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokenCachedAndShared(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{JWTTTL: 10 * time.Minute})
	src := newSource(srv, "", newFakeClock())

	// Concurrent callers on an empty cache share one fetch.
	const callers = 20
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = src.Token(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: Token() error = %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Errorf("caller %d got a different token than caller 0", i)
		}
	}
	// Later callers are served from the cache.
	for range 50 {
		tok, err := src.Token(t.Context())
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		if tok != tokens[0] {
			t.Fatal("Token() returned a new token while the cached one is fresh")
		}
	}
	if got := srv.Counts().FetchJWTSVID; got != 1 {
		t.Errorf("FetchJWTSVID calls = %d, want 1", got)
	}
}

func TestTokenRefreshNearExpiry(t *testing.T) {
	// A 10-minute token is refreshed at 80% of its life: after 8 minutes.
	srv := svidtest.New(t, svidtest.Options{JWTTTL: 10 * time.Minute})
	clock := newFakeClock()
	src := newSource(srv, "", clock)
	steps := []struct {
		name        string
		advance     time.Duration
		wantFetches int
	}{
		{name: "first call fetches", wantFetches: 1},
		{name: "fresh at 7m59s", advance: 7*time.Minute + 59*time.Second, wantFetches: 1},
		{name: "refreshed at 8m01s", advance: 2 * time.Second, wantFetches: 2},
		{name: "new token fresh again", advance: time.Minute, wantFetches: 2},
		{name: "new token refreshed after its 8 minutes", advance: 7 * time.Minute, wantFetches: 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Advance(st.advance)
			tok, err := src.Token(t.Context())
			if err != nil {
				t.Fatalf("Token() error = %v", err)
			}
			subject(t, srv, tok)
			if got := srv.Counts().FetchJWTSVID; got != st.wantFetches {
				t.Errorf("FetchJWTSVID calls = %d, want %d", got, st.wantFetches)
			}
		})
	}
}

func TestInvalidateForcesRefetch(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	src := newSource(srv, "", newFakeClock())
	first, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	src.Invalidate()
	second, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() after Invalidate error = %v", err)
	}
	if first == second {
		t.Error("Token() after Invalidate returned the invalidated token")
	}
	if got := srv.Counts().FetchJWTSVID; got != 2 {
		t.Errorf("FetchJWTSVID calls = %d, want 2", got)
	}
}

func TestTokenWhileAgentRestarts(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{JWTTTL: 10 * time.Minute})
	clock := newFakeClock()
	src := newSource(srv, "", clock)
	cached, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}

	srv.Stop()
	// Past the refresh point but before expiry: the refresh fails, the
	// still-valid token keeps IMS calls going.
	clock.Advance(9 * time.Minute)
	tok, err := src.Token(t.Context())
	if err != nil || tok != cached {
		t.Fatalf("Token() with agent down and token unexpired = (same token: %v, %v), want the cached token", tok == cached, err)
	}
	// Expired (or invalidated) and the agent still down: a clear error.
	clock.Advance(2 * time.Minute)
	for _, name := range []string{"expired", "invalidated"} {
		if name == "invalidated" {
			src.Invalidate()
		}
		_, err = src.Token(t.Context())
		if err == nil {
			t.Fatalf("%s: Token() with agent down = nil error, want one", name)
		}
		for _, want := range []string{srv.SocketPath(), "is the SPIRE agent running"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: Token() error = %q, want it to contain %q", name, err, want)
			}
		}
	}

	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart() = %v", err)
	}
	tok, err = src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token() after agent restart error = %v", err)
	}
	subject(t, srv, tok)
}

func TestTokenAgentUnreachable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  []string
	}{
		{
			name:  "no socket",
			setup: func(*testing.T, string) {},
			want:  []string{"does not exist", "is the SPIRE agent running"},
		},
		{
			name: "stale socket nobody listens on",
			setup: func(t *testing.T, path string) {
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				l.SetUnlinkOnClose(false)
				l.Close()
			},
			want: []string{"fetch JWT-SVID", "is the agent running"},
		},
		{
			name: "regular file",
			setup: func(t *testing.T, path string) {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"is not a socket"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "spire")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			path := filepath.Join(dir, "agent.sock")
			tt.setup(t, path)
			src := svid.NewJWTSource(svid.JWTConfig{Socket: path, FetchTimeout: 5 * time.Second})
			_, err = src.Token(t.Context())
			if err == nil {
				t.Fatal("Token() = nil error, want one")
			}
			for _, want := range append(tt.want, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Token() error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestTokenCanceledContext(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := newSource(srv, "", nil).Token(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Token(canceled ctx) error = %v, want context.Canceled", err)
	}
	if got := srv.Counts().FetchJWTSVID; got != 0 {
		t.Errorf("FetchJWTSVID calls = %d, want 0", got)
	}
}

func TestVerifierAcceptsSourceToken(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	tok, err := newSource(srv, "", nil).Token(t.Context())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	if err := srv.Verifier(audience)(t.Context(), tok); err != nil {
		t.Errorf("Verifier(%q)(token from JWTSource) = %v, want nil", audience, err)
	}
	if err := srv.Verifier("other-audience")(t.Context(), tok); err == nil {
		t.Error("Verifier(other-audience)(token) = nil, want an audience error")
	}
}
