package svidtest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

const aud = "system-compute"

func client(t *testing.T, srv *svidtest.Server) *workloadapi.Client {
	t.Helper()
	c, err := workloadapi.New(t.Context(), workloadapi.WithAddr(srv.Addr()))
	if err != nil {
		t.Fatalf("workloadapi.New(%s) = %v", srv.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRejectsCallsWithoutSecurityHeader(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw := workload.NewSpiffeWorkloadAPIClient(conn)

	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{name: "FetchJWTSVID", call: func(ctx context.Context) error {
			_, err := raw.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{aud}})
			return err
		}},
		{name: "FetchX509SVID", call: func(ctx context.Context) error {
			stream, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(t.Context())
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s without header: error = %v, want InvalidArgument", tt.name, err)
			}
			if got := srv.Counts().Rejected; got != i+1 {
				t.Errorf("Counts().Rejected = %d, want %d", got, i+1)
			}
		})
	}
	if c := srv.Counts(); c.FetchJWTSVID != 0 || c.FetchX509SVID != 0 {
		t.Errorf("rejected calls reached the handlers: %+v", c)
	}
}

func TestGoSpiffeClientJWT(t *testing.T) {
	other := "spiffe://shasta/ncn/workload/other"
	srv := svidtest.New(t, svidtest.Options{IDs: []string{svidtest.DefaultID, other}})
	c := client(t, srv)
	ctx := t.Context()

	svids, err := c.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: aud})
	if err != nil {
		t.Fatalf("FetchJWTSVIDs() = %v", err)
	}
	if len(svids) != 2 || svids[0].ID.String() != svidtest.DefaultID || svids[1].ID.String() != other {
		t.Fatalf("FetchJWTSVIDs() IDs = %v, want [%s %s]", svids, svidtest.DefaultID, other)
	}

	// The bundle the Workload API hands out verifies the token (kid, ES256).
	bundles, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles() = %v", err)
	}
	got, err := jwtsvid.ParseAndValidate(svids[0].Marshal(), bundles, []string{aud})
	if err != nil {
		t.Fatalf("ParseAndValidate(token, fetched bundle) = %v", err)
	}
	if got.ID.String() != svidtest.DefaultID {
		t.Errorf("validated ID = %s, want %s", got.ID, svidtest.DefaultID)
	}

	// ValidateJWTSVID on the server agrees.
	if _, err := c.ValidateJWTSVID(ctx, svids[0].Marshal(), aud); err != nil {
		t.Errorf("ValidateJWTSVID(token, %q) = %v, want nil", aud, err)
	}
	if _, err := c.ValidateJWTSVID(ctx, svids[0].Marshal(), "wrong"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID(token, wrong) = %v, want InvalidArgument", err)
	}

	// Asking for one ID returns only that one; an ID not issued is denied.
	sub := spiffeid.RequireFromString(other)
	one, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud, Subject: sub})
	if err != nil || one.ID != sub {
		t.Errorf("FetchJWTSVID(subject %s) = (%v, %v), want that ID", sub, one, err)
	}
	_, err = c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud, Subject: spiffeid.RequireFromString("spiffe://shasta/nope")})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID(unissued subject) = %v, want PermissionDenied", err)
	}

	srv.SetIDs()
	if _, err := c.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: aud}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVIDs() with no IDs = %v, want PermissionDenied", err)
	}
	if got := srv.Counts().FetchJWTSVID; got != 4 {
		t.Errorf("Counts().FetchJWTSVID = %d, want 4", got)
	}
}

func TestGoSpiffeClientX509(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	c := client(t, srv)
	x509ctx, err := c.FetchX509Context(t.Context())
	if err != nil {
		t.Fatalf("FetchX509Context() = %v", err)
	}
	sv := x509ctx.DefaultSVID()
	if sv.ID.String() != svidtest.DefaultID {
		t.Errorf("X.509-SVID ID = %s, want %s", sv.ID, svidtest.DefaultID)
	}
	bundle, err := x509ctx.Bundles.GetX509BundleForTrustDomain(srv.TrustDomain())
	if err != nil {
		t.Fatalf("bundle for %s: %v", srv.TrustDomain(), err)
	}
	if !bundle.HasX509Authority(srv.CACert()) {
		t.Error("X.509 bundle does not hold the server's CA")
	}
	bundles, err := c.FetchX509Bundles(t.Context())
	if err != nil {
		t.Fatalf("FetchX509Bundles() = %v", err)
	}
	if !bundles.Has(srv.TrustDomain()) {
		t.Errorf("FetchX509Bundles() lacks trust domain %s", srv.TrustDomain())
	}
}

// clock is a settable server clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestVerifier(t *testing.T) {
	clk := &clock{now: time.Now()}
	srv := svidtest.New(t, svidtest.Options{JWTTTL: 5 * time.Minute, Now: clk.Now})
	foreign := svidtest.New(t, svidtest.Options{})
	mint := func(s *svidtest.Server, id string, audience []string, ttl time.Duration) string {
		t.Helper()
		tok, err := s.MintJWT(id, audience, ttl)
		if err != nil {
			t.Fatalf("MintJWT() = %v", err)
		}
		return tok
	}
	valid := mint(srv, svidtest.DefaultID, []string{aud}, 5*time.Minute)
	parts := strings.Split(valid, ".")
	tamperedPayload := mint(srv, "spiffe://shasta/ncn/workload/admin", []string{aud}, 5*time.Minute)
	tamperedPayload = parts[0] + "." + strings.Split(tamperedPayload, ".")[1] + "." + parts[2]
	sig := []byte(parts[2])
	if sig[5] == 'A' { // another valid base64url character
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	tamperedSig := parts[0] + "." + parts[1] + "." + string(sig)

	tests := []struct {
		name    string
		ctx     func() context.Context
		token   string
		wantErr string // "" means accepted
	}{
		{name: "valid", token: valid},
		{name: "one of several audiences", token: mint(srv, svidtest.DefaultID, []string{"x", aud}, time.Minute)},
		{name: "wrong audience", token: mint(srv, svidtest.DefaultID, []string{"other"}, time.Minute), wantErr: "audience"},
		{name: "expired", token: mint(srv, svidtest.DefaultID, []string{aud}, -time.Second), wantErr: "expired"},
		{name: "payload swapped", token: tamperedPayload, wantErr: "signature"},
		{name: "signature altered", token: tamperedSig, wantErr: "signature"},
		{name: "signed by another server", token: mint(foreign, svidtest.DefaultID, []string{aud}, time.Minute), wantErr: "key id"},
		{name: "outside the trust domain", token: mint(srv, "spiffe://elsewhere/workload", []string{aud}, time.Minute), wantErr: "trust domain"},
		{name: "not a JWT", token: "not-a-token", wantErr: "malformed"},
		{name: "empty", token: "", wantErr: "malformed"},
		{name: "canceled context", token: valid, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			return ctx
		}, wantErr: "canceled"},
	}
	verify := srv.Verifier(aud)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			err := verify(ctx, tt.token)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Verifier(%s) = %v, want nil", tt.name, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Verifier(%s) = %v, want error containing %q", tt.name, err, tt.wantErr)
			}
			if err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Error("Verifier error contains the token")
			}
		})
	}

	t.Run("TTL runs out on the server clock", func(t *testing.T) {
		tok := mint(srv, svidtest.DefaultID, []string{aud}, 5*time.Minute)
		clk.Advance(4*time.Minute + 59*time.Second)
		if err := verify(t.Context(), tok); err != nil {
			t.Fatalf("Verifier at 4m59s = %v, want nil", err)
		}
		clk.Advance(2 * time.Second)
		if err := verify(t.Context(), tok); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Verifier at 5m01s = %v, want expired", err)
		}
	})
}

func TestStopRestart(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	c := client(t, srv)
	before, err := c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: aud})
	if err != nil {
		t.Fatalf("FetchJWTSVID() = %v", err)
	}

	srv.Stop()
	if _, err := os.Stat(srv.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Stop: stat error = %v, want not exist", err)
	}
	if _, err := c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: aud}); status.Code(err) != codes.Unavailable {
		t.Errorf("FetchJWTSVID() while stopped = %v, want Unavailable", err)
	}
	srv.Stop() // idempotent

	if err := srv.Restart(); err != nil {
		t.Fatalf("Restart() = %v", err)
	}
	// A fresh client: the old one's gRPC channel may be backing off.
	c2 := client(t, srv)
	if _, err := c2.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: aud}); err != nil {
		t.Fatalf("FetchJWTSVID() after Restart = %v", err)
	}
	if err := srv.Verifier(aud)(t.Context(), before.Marshal()); err != nil {
		t.Errorf("token issued before the restart: Verifier = %v, want nil (same keys)", err)
	}

	srv.Close()
	if err := srv.Restart(); err == nil {
		t.Error("Restart() after Close = nil, want an error")
	}
}

func TestStartRejects(t *testing.T) {
	tests := []struct {
		name    string
		dir     string
		opts    svidtest.Options
		wantErr string
	}{
		{name: "socket path too long", dir: "/tmp/" + strings.Repeat("d", 120), wantErr: "use a shorter directory"},
		{name: "ID outside trust domain", dir: t.TempDir(), opts: svidtest.Options{IDs: []string{"spiffe://other/w"}}, wantErr: "not in trust domain"},
		{name: "bad trust domain", dir: t.TempDir(), opts: svidtest.Options{TrustDomain: "Bad Domain"}, wantErr: "trust domain"},
		{name: "missing directory", dir: "/nonexistent/svidtest", wantErr: "listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := svidtest.Start(tt.dir, tt.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Start(%q) = nil error, want one containing %q", tt.dir, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Start(%q) error = %v, want it to contain %q", tt.dir, err, tt.wantErr)
			}
		})
	}
}

func TestRotateX509(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	src, err := workloadapi.NewX509Source(t.Context(), workloadapi.WithClientOptions(workloadapi.WithAddr(srv.Addr())))
	if err != nil {
		t.Fatalf("NewX509Source() = %v", err)
	}
	t.Cleanup(func() { src.Close() })
	served := func() *x509.Certificate {
		t.Helper()
		sv, err := src.GetX509SVID()
		if err != nil {
			t.Fatalf("GetX509SVID() = %v", err)
		}
		return sv.Certificates[0]
	}
	if got := served(); !got.Equal(srv.X509SVID()) {
		t.Fatalf("served SVID serial %v, want X509SVID()'s %v", got.SerialNumber, srv.X509SVID().SerialNumber)
	}
	rotated, err := srv.RotateX509()
	if err != nil {
		t.Fatalf("RotateX509() = %v", err)
	}
	if !rotated.Equal(srv.X509SVID()) {
		t.Error("X509SVID() is not the rotated certificate")
	}
	// The open stream delivers the new SVID without a new call.
	deadline := time.Now().Add(10 * time.Second)
	for !served().Equal(rotated) {
		if time.Now().After(deadline) {
			t.Fatal("the rotated SVID did not reach the open FetchX509SVID stream within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := srv.Counts().FetchX509SVID; got != 1 {
		t.Errorf("Counts().FetchX509SVID = %d, want 1 (the rotation rides the open stream)", got)
	}
}

func TestIssueX509Names(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	cert, err := srv.IssueX509("spiffe://shasta/ncn/nats", "nats.local", "127.0.0.1")
	if err != nil {
		t.Fatalf("IssueX509() = %v", err)
	}
	for _, name := range []string{"nats.local", "127.0.0.1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: srv.CertPool()}); err != nil {
			t.Errorf("certificate for %s does not verify under the bundle: %v", name, err)
		}
	}
	block, _ := pem.Decode(srv.CACertPEM())
	if block == nil || !bytes.Equal(block.Bytes, srv.CACert().Raw) {
		t.Error("CACertPEM() is not CACert() in PEM form")
	}
}
