package svid_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// csmSPIRE is a SPIFFE Workload API registered as CSM's SPIRE is: the
// agent's ID only for the hard link sbps-marshal-spire-agent of the
// spire-agent stand-in (uid and gid 0; the test's own where it does not
// run as root). It returns the server and the hard link's path.
func csmSPIRE(t *testing.T, opts svidtest.Options) (*svidtest.Server, string) {
	t.Helper()
	link := svidtest.CLIBinary(t)
	entry := svidtest.CSMEntry(link)
	if os.Getuid() != 0 || os.Getgid() != 0 {
		entry = svidtest.PathEntry(svidtest.DefaultID, link)
	}
	opts.Entries = []svidtest.Entry{entry}
	return svidtest.New(t, opts), link
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "sbps-marshal-spire-agent")
	plain := filepath.Join(dir, "not-executable")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(plain, nil, 0o644)
	tests := []struct {
		mode, path, want, wantErr string
	}{
		{mode: "auto", path: exe, want: svid.SourceCLI},
		{mode: "auto", path: filepath.Join(dir, "absent"), want: svid.SourceWorkloadAPI},
		{mode: "auto", path: plain, want: svid.SourceWorkloadAPI},
		{mode: "auto", path: dir, want: svid.SourceWorkloadAPI},
		{mode: "auto", path: "", want: svid.SourceWorkloadAPI},
		{mode: "cli", path: filepath.Join(dir, "absent"), want: svid.SourceCLI}, // its run says what is wrong
		{mode: "cli", path: "", wantErr: "SPIRE_AGENT_PATH"},
		{mode: "workload-api", path: exe, want: svid.SourceWorkloadAPI},
		{mode: "spire", path: exe, wantErr: "want auto, cli or workload-api"},
	}
	for _, tt := range tests {
		got, why, err := svid.Resolve(tt.mode, tt.path)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Resolve(%q, %q) error = %v, want one containing %q", tt.mode, tt.path, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want || why == ""):
			t.Errorf("Resolve(%q, %q) = %q, %q, %v; want %q with a reason", tt.mode, tt.path, got, why, err, tt.want)
		}
	}
}

// TestJWTUnderCSMRegistration: under CSM's registration the agent gets its
// JWT-SVID through the SPIRE agent CLI (cached until shortly before it
// expires), is refused when it calls the Workload API itself (and told
// what to set), and gets it directly once its own path is registered.
func TestJWTUnderCSMRegistration(t *testing.T) {
	srv, link := csmSPIRE(t, svidtest.Options{JWTTTL: 10 * time.Minute})
	clock := newFakeClock()
	cliSrc := svid.NewJWTSource(svid.JWTConfig{Socket: srv.SocketPath(), Audience: audience, Clock: clock,
		CLI: &svid.CLI{Path: link, Socket: srv.SocketPath()}})

	t.Run("through the CLI", func(t *testing.T) {
		tok, err := cliSrc.Token(t.Context())
		if err != nil {
			t.Fatalf("Token() through %s = %v", link, err)
		}
		if got := subject(t, srv, tok); got != svid.NodeWorkloadID {
			t.Errorf("subject = %s, want %s", got, svid.NodeWorkloadID)
		}
		if again, err := cliSrc.Token(t.Context()); err != nil || again != tok {
			t.Errorf("second Token() = %v; want the cached token", err)
		}
		if n := srv.Counts().FetchJWTSVID; n != 1 {
			t.Errorf("FetchJWTSVID calls = %d after two Token() calls, want 1 (cached)", n)
		}
		clock.Advance(8*time.Minute + time.Second) // past 80% of 10 minutes
		if _, err := cliSrc.Token(t.Context()); err != nil {
			t.Fatalf("Token() after the refresh point = %v", err)
		}
		if n := srv.Counts().FetchJWTSVID; n != 2 {
			t.Errorf("FetchJWTSVID calls = %d after the refresh point, want 2", n)
		}
	})

	t.Run("Workload API from this process is refused", func(t *testing.T) {
		_, err := svid.NewJWTSource(svid.JWTConfig{Socket: srv.SocketPath(), Audience: audience}).Token(t.Context())
		if err == nil {
			t.Fatal("Token() from an unregistered binary = nil error, want SPIRE's refusal")
		}
		for _, want := range []string{"no identity issued", "SPIFFE_SOURCE", "SPIRE_AGENT_PATH", svid.DefaultAgentPath} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Token() error = %q, want it to contain %q", err, want)
			}
		}
	})

	t.Run("own path registered", func(t *testing.T) {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		srv.SetEntries(append(srv.Entries(), svidtest.PathEntry(svidtest.DefaultID, self))...)
		tok, err := svid.NewJWTSource(svid.JWTConfig{Socket: srv.SocketPath(), Audience: audience}).Token(t.Context())
		if err != nil {
			t.Fatalf("Token() with this binary registered = %v", err)
		}
		if got := subject(t, srv, tok); got != svid.NodeWorkloadID {
			t.Errorf("subject = %s, want %s", got, svid.NodeWorkloadID)
		}
	})
}

// fakeCLI writes a shell script standing in for a misbehaving CLI.
func fakeCLI(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spire-agent")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLIErrors(t *testing.T) {
	srv, link := csmSPIRE(t, svidtest.Options{})
	unregistered := filepath.Join(filepath.Dir(link), "spire-agent") // the same binary, another path
	tests := []struct {
		name     string
		cli      svid.CLI
		audience string
		want     []string
	}{
		{name: "unregistered path", cli: svid.CLI{Path: unregistered}, want: []string{"no identity issued", unregistered, "SPIRE_AGENT_PATH", svid.DefaultAgentPath}},
		{name: "hangs", cli: svid.CLI{Path: fakeCLI(t, "sleep 30"), Timeout: 300 * time.Millisecond}, want: []string{"took longer than 300ms"}},
		{name: "fails", cli: svid.CLI{Path: fakeCLI(t, "echo 'connection refused' >&2; exit 1")}, want: []string{"exit status 1", "connection refused", "SPIRE_AGENT_SOCK_PATH"}},
		{name: "not JSON", cli: svid.CLI{Path: fakeCLI(t, "echo token")}, want: []string{"printed no JSON", "SPIRE_AGENT_PATH"}},
		{name: "no SVID", cli: svid.CLI{Path: fakeCLI(t, `echo '[{"svids":[]},{"bundles":{}}]'`)}, want: []string{"no JWT-SVID"}},
		{name: "missing", cli: svid.CLI{Path: "/nonexistent/sbps-marshal-spire-agent"}, want: []string{"no such file", "SPIRE_AGENT_PATH"}},
		{name: "audience with a space", cli: svid.CLI{Path: link}, audience: "system compute", want: []string{"SPIRE_JWT_AUDIENCE", "' '"}},
		{name: "audience like an option", cli: svid.CLI{Path: link}, audience: "-socketPath", want: []string{"SPIRE_JWT_AUDIENCE", "option"}},
		{name: "path with a space", cli: svid.CLI{Path: "/usr/bin/spire agent"}, want: []string{"SPIRE_AGENT_PATH", "' '"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cli.Socket = srv.SocketPath()
			aud := tt.audience
			if aud == "" {
				aud = audience
			}
			start := time.Now()
			_, err := tt.cli.FetchJWT(t.Context(), aud)
			if err == nil {
				t.Fatal("FetchJWT() = nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("FetchJWT() error = %q, want it to contain %q", err, w)
				}
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("FetchJWT() took %v; the process group must die at the timeout", took)
			}
		})
	}
}

// TestX509UnderCSMRegistration: the X.509-SVID for NATS mTLS comes
// through the CLI under CSM's registration; the Workload API watched from
// this process gets none, and the wait says what to set.
func TestX509UnderCSMRegistration(t *testing.T) {
	srv, link := csmSPIRE(t, svidtest.Options{})
	src, err := svid.StartX509Source(svid.X509Config{Socket: srv.SocketPath(), CLI: &svid.CLI{Path: link, Socket: srv.SocketPath(), Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := src.Wait(ctx); err != nil {
		t.Fatalf("Wait() through the CLI = %v", err)
	}
	sv, err := src.GetX509SVID()
	if err != nil || sv.ID.String() != svid.NodeWorkloadID || sv.Certificates[0].SerialNumber.Cmp(srv.X509SVID().SerialNumber) != 0 {
		t.Fatalf("GetX509SVID() = %v, %v; want the server's SVID for %s", sv, err, svid.NodeWorkloadID)
	}
	roots, err := src.Roots()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Certificates[0].Verify(x509VerifyOptions(roots)); err != nil {
		t.Errorf("the SVID does not verify under the bundle the CLI wrote: %v", err)
	}

	direct, err := svid.StartX509Source(svid.X509Config{Socket: srv.SocketPath()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	ctx2, cancel2 := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel2()
	err = direct.Wait(ctx2)
	if err == nil {
		t.Fatal("Wait() on the Workload API from an unregistered binary = nil")
	}
	for _, want := range []string{"no identity issued", "SPIFFE_SOURCE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Wait() error = %q, want it to contain %q", err, want)
		}
	}
}

func x509VerifyOptions(roots *x509.CertPool) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
