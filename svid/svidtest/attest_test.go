package svidtest_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// TestAttestsCallerAsSPIRE: the server issues SVIDs by the caller's
// attested selectors (uid, gid, binary path), as SPIRE's unix workload
// attestor; an unregistered caller gets PermissionDenied "no identity
// issued".
func TestAttestsCallerAsSPIRE(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		entries []svidtest.Entry
		issued  bool
	}{
		{name: "CSM's entry names another binary", entries: []svidtest.Entry{svidtest.CSMEntry("/usr/bin/sbps-marshal-spire-agent")}},
		{name: "this binary registered", entries: []svidtest.Entry{svidtest.PathEntry(svidtest.DefaultID, self)}, issued: true},
		{name: "this binary, another uid", entries: []svidtest.Entry{{SPIFFEID: svidtest.DefaultID, Selectors: []string{"unix:uid:4242", "unix:path:" + self}}}},
		{name: "any caller", entries: []svidtest.Entry{{SPIFFEID: svidtest.DefaultID, AnyCaller: true}}, issued: true},
		{name: "default: the process that started the server", issued: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := svidtest.New(t, svidtest.Options{Entries: tt.entries})
			c := client(t, srv)
			_, jerr := c.FetchJWTSVIDs(t.Context(), jwtsvid.Params{Audience: aud})
			_, xerr := c.FetchX509Context(t.Context())
			for what, err := range map[string]error{"FetchJWTSVIDs": jerr, "FetchX509Context": xerr} {
				switch {
				case tt.issued && err != nil:
					t.Errorf("%s() = %v, want an SVID", what, err)
				case !tt.issued && (status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no identity issued")):
					t.Errorf("%s() = %v, want PermissionDenied: no identity issued", what, err)
				}
			}
			if got := srv.Counts().Denied; (got > 0) == tt.issued {
				t.Errorf("Counts().Denied = %d with issued=%v", got, tt.issued)
			}
		})
	}
}

// TestCLIStandIn: the spire-agent stand-in, run through its hard link, gets
// the agent's JWT-SVID and X.509-SVID under CSM's registration and prints
// and writes them as the real CLI; run under its other name it is refused.
func TestCLIStandIn(t *testing.T) {
	link := svidtest.CLIBinary(t)
	entry := svidtest.CSMEntry(link)
	if os.Getuid() != 0 || os.Getgid() != 0 {
		entry = svidtest.PathEntry(svidtest.DefaultID, link) // CSM's entry as far as a non-root user can play it
	}
	srv := svidtest.New(t, svidtest.Options{Entries: []svidtest.Entry{entry}})
	run := func(bin string, args ...string) (string, string, error) {
		cmd := exec.Command(bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	out, errOut, err := run(link, "api", "fetch", "jwt", "-audience", aud, "-socketPath", srv.SocketPath(), "-output", "json")
	if err != nil {
		t.Fatalf("%s api fetch jwt = %v\n%s", link, err, errOut)
	}
	var resp []struct {
		SVIDs []struct {
			SPIFFEID string `json:"spiffe_id"`
			SVID     string `json:"svid"`
		} `json:"svids"`
		Bundles map[string]string `json:"bundles"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("api fetch jwt -output json printed %q: %v", out, err)
	}
	if len(resp) != 2 || len(resp[0].SVIDs) != 1 || resp[0].SVIDs[0].SPIFFEID != svidtest.DefaultID || len(resp[1].Bundles) != 1 {
		t.Fatalf("api fetch jwt -output json = %s, want [{svids:[%s]},{bundles:{…}}]", out, svidtest.DefaultID)
	}
	if id, err := srv.VerifyJWT(resp[0].SVIDs[0].SVID, aud); err != nil || id.String() != svidtest.DefaultID {
		t.Errorf("printed token verifies as %v, %v; want %s", id, err, svidtest.DefaultID)
	}

	dir := t.TempDir()
	if _, errOut, err := run(link, "api", "fetch", "x509", "-socketPath", srv.SocketPath(), "-write", dir); err != nil {
		t.Fatalf("api fetch x509 -write = %v\n%s", err, errOut)
	}
	sv, err := x509svid.Load(filepath.Join(dir, "svid.0.pem"), filepath.Join(dir, "svid.0.key"))
	if err != nil || sv.ID.String() != svidtest.DefaultID {
		t.Fatalf("written X.509-SVID = %v, %v; want %s", sv, err, svidtest.DefaultID)
	}
	if fi, err := os.Stat(filepath.Join(dir, "svid.0.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("svid.0.key: %v, %v; want mode 0600", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bundle.0.pem")); err != nil {
		t.Errorf("bundle.0.pem: %v", err)
	}

	// The same binary under its other name is another workload.
	other := filepath.Join(filepath.Dir(link), "spire-agent")
	_, errOut, err = run(other, "api", "fetch", "jwt", "-audience", aud, "-socketPath", srv.SocketPath(), "-output", "json")
	if err == nil || !strings.Contains(errOut, "PermissionDenied") || !strings.Contains(errOut, "no identity issued") {
		t.Errorf("%s (not the registered path) = %v, stderr %q; want exit 1 with PermissionDenied no identity issued", other, err, errOut)
	}
}
