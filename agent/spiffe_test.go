package agent

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// TestSPIFFESourceUnderCSMRegistration: with SPIRE registered as on CSM
// (the agent's ID only for the hard link sbps-marshal-spire-agent), the
// agent's IMS token comes through the CLI by default; calling the Workload
// API itself is refused with an error naming SPIFFE_SOURCE and
// SPIRE_AGENT_PATH; once its own binary is registered, it gets the token
// directly.
func TestSPIFFESourceUnderCSMRegistration(t *testing.T) {
	link := svidtest.CLIBinary(t)
	srv := svidtest.New(t, svidtest.Options{Entries: []svidtest.Entry{rig.CSMEntry(link)}})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        []string
		registered bool     // this test binary's path registered too
		wantSource string   // logged
		wantErr    []string // nil: a token for the agent's ID
	}{
		{name: "default (auto) runs the CLI", wantSource: "source=cli"},
		{name: "cli", env: []string{"SBPS_MARSHAL_SPIFFE_SOURCE=cli"}, wantSource: "source=cli"},
		{name: "workload-api is refused", env: []string{"SBPS_MARSHAL_SPIFFE_SOURCE=workload-api"}, wantSource: "source=workload-api",
			wantErr: []string{"no identity issued", "SPIFFE_SOURCE", "SPIRE_AGENT_PATH"}},
		{name: "auto without the CLI is refused", env: []string{"SBPS_MARSHAL_SPIRE_AGENT_PATH=" + filepath.Join(t.TempDir(), "absent")}, wantSource: "source=workload-api",
			wantErr: []string{"no identity issued", "SPIFFE_SOURCE", "SPIRE_AGENT_PATH"}},
		{name: "workload-api with this binary registered", env: []string{"SBPS_MARSHAL_SPIFFE_SOURCE=workload-api"}, registered: true, wantSource: "source=workload-api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := []svidtest.Entry{rig.CSMEntry(link)}
			if tt.registered {
				entries = append(entries, svidtest.PathEntry(svidtest.DefaultID, self))
			}
			srv.SetEntries(entries...)
			env := append([]string{
				"SBPS_MARSHAL_NODE_NAME=ncn-w001",
				"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=" + srv.SocketPath(),
				"SBPS_MARSHAL_SPIRE_AGENT_PATH=" + link,
				"SBPS_MARSHAL_XNAME_FILE=" + filepath.Join(t.TempDir(), "xname"),
			}, tt.env...)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg, _, err := config.Load(config.Sources{Environ: env}, fs)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			ts, err := tokenSource(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), tt.wantSource) {
				t.Errorf("log = %q, want it to name %s", logs.String(), tt.wantSource)
			}
			tok, err := ts.Token(t.Context())
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("Token() = nil error, want SPIRE's refusal")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Token() error = %q, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() = %v", err)
			}
			if id, err := srv.VerifyJWT(tok, cfg.SpireJWTAudience); err != nil || id.String() != svid.NodeWorkloadID {
				t.Errorf("token verifies as %v, %v; want %s", id, err, svid.NodeWorkloadID)
			}
		})
	}
}
