package svid

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Where the agent gets its SVIDs (SBPS_MARSHAL_SPIFFE_SOURCE).
const (
	// SourceAuto is SourceCLI when the SPIRE agent CLI (SPIRE_AGENT_PATH)
	// exists and is executable, else SourceWorkloadAPI.
	SourceAuto = "auto"
	// SourceCLI runs the SPIRE agent's command line, as the old agent: on
	// CSM only that hard link of spire-agent is registered.
	SourceCLI = "cli"
	// SourceWorkloadAPI calls the Workload API from this process: SPIRE
	// must have an entry for this binary's path.
	SourceWorkloadAPI = "workload-api"
)

// DefaultAgentPath is the hard link of spire-agent CSM's SPIRE registration
// names (selector unix:path), the CLI the old agent ran.
const DefaultAgentPath = "/usr/bin/sbps-marshal-spire-agent"

// DefaultCLITimeout bounds one run of the SPIRE agent CLI.
const DefaultCLITimeout = 10 * time.Second

// maxCLIOutput caps the CLI's stdout and stderr kept.
const maxCLIOutput = 1 << 20

// Resolve decides the source for mode (auto, cli, workload-api) and the
// CLI's path: it returns SourceCLI or SourceWorkloadAPI and a sentence
// saying why, for the log.
func Resolve(mode, agentPath string) (source, why string, err error) {
	switch mode {
	case SourceCLI:
		if agentPath == "" {
			return "", "", errors.New("SPIFFE_SOURCE=cli needs SBPS_MARSHAL_SPIRE_AGENT_PATH (CSM: " + DefaultAgentPath + ")")
		}
		return SourceCLI, "SPIFFE_SOURCE=cli: running " + agentPath, nil
	case SourceWorkloadAPI:
		return SourceWorkloadAPI, "SPIFFE_SOURCE=workload-api: calling the Workload API from this process", nil
	case SourceAuto, "":
		if agentPath == "" {
			return SourceWorkloadAPI, "SPIFFE_SOURCE=auto and SPIRE_AGENT_PATH is empty: calling the Workload API from this process", nil
		}
		if err := executable(agentPath); err != nil {
			return SourceWorkloadAPI, fmt.Sprintf("SPIFFE_SOURCE=auto and the SPIRE agent CLI is not usable (%v): calling the Workload API from this process", err), nil
		}
		return SourceCLI, "SPIFFE_SOURCE=auto and " + agentPath + " is executable: running it, as CSM registers it", nil
	}
	return "", "", fmt.Errorf("SPIFFE_SOURCE %q: want auto, cli or workload-api", mode)
}

// ChooseCLI is the SPIRE agent CLI the SVID sources run, or nil when they
// call the Workload API themselves, as mode (SPIFFE_SOURCE) and agentPath
// (SPIRE_AGENT_PATH) decide (Resolve); the choice and its reason are
// logged, what naming what the SVID is for.
func ChooseCLI(mode, agentPath, socket string, log *slog.Logger, what string) (*CLI, error) {
	source, why, err := Resolve(mode, agentPath)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE_SOURCE: %w", err)
	}
	log.Info("SPIFFE source", "for", what, "source", source, "why", why)
	if source != SourceCLI {
		return nil, nil
	}
	return &CLI{Path: agentPath, Socket: socket}, nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", p)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// CLI runs the SPIRE agent's command line, `<Path> api fetch jwt|x509`,
// which calls the Workload API at Socket itself: SPIRE attests that
// process, so on CSM, where only the hard link
// /usr/bin/sbps-marshal-spire-agent is registered, this is how the agent
// gets its SVIDs. Each run has its own process group, killed whole at
// Timeout.
type CLI struct {
	// Path of the CLI (SPIRE_AGENT_PATH). Required.
	Path string
	// Socket is the Workload API socket passed as -socketPath. Defaults
	// to DefaultSocket.
	Socket string
	// Timeout bounds one run. Defaults to DefaultCLITimeout.
	Timeout time.Duration
	// Dir is where `api fetch x509 -write` puts the SVID for a moment (a
	// private directory made inside it, removed after reading). Defaults
	// to os.TempDir().
	Dir string
}

// FetchJWT runs `api fetch jwt -audience <audience> -socketPath <socket>
// -output json` and returns the JWT-SVIDs it prints. The tokens are parsed
// without verification (the agent presents them, IMS's gateway verifies
// them), for their SPIFFE ID and expiry.
func (c CLI) FetchJWT(ctx context.Context, audience string) ([]*jwtsvid.SVID, error) {
	if err := plainArg("SPIRE_JWT_AUDIENCE", audience); err != nil {
		return nil, err
	}
	out, err := c.run(ctx, "jwt", "-audience", audience)
	if err != nil {
		return nil, err
	}
	return parseJWTOutput(out, audience, c.Path)
}

// parseJWTOutput reads `api fetch jwt -output json`:
// [{"svids":[{"spiffe_id":…,"svid":…}]},{"bundles":{…}}].
func parseJWTOutput(out []byte, audience, path string) ([]*jwtsvid.SVID, error) {
	var parts []struct {
		SVIDs []struct {
			SPIFFEID string `json:"spiffe_id"`
			SVID     string `json:"svid"`
		} `json:"svids"`
	}
	if err := json.Unmarshal(out, &parts); err != nil {
		return nil, fmt.Errorf("SPIRE agent CLI %s printed no JSON list of SVIDs (%v): check that SBPS_MARSHAL_SPIRE_AGENT_PATH is spire-agent", path, err)
	}
	var svids []*jwtsvid.SVID
	for _, p := range parts {
		for _, s := range p.SVIDs {
			sv, err := jwtsvid.ParseInsecure(s.SVID, []string{audience})
			if err != nil {
				return nil, fmt.Errorf("SPIRE agent CLI %s: JWT-SVID for %s: %w", path, s.SPIFFEID, err)
			}
			if sv.ID.String() != s.SPIFFEID {
				return nil, fmt.Errorf("SPIRE agent CLI %s: JWT-SVID listed for %s is for %s", path, s.SPIFFEID, sv.ID)
			}
			svids = append(svids, sv)
		}
	}
	if len(svids) == 0 {
		return nil, fmt.Errorf("SPIRE agent CLI %s printed no JWT-SVID for audience %q: check the SPIRE registration of %s", path, audience, path)
	}
	return svids, nil
}

// FetchX509 runs `api fetch x509 -socketPath <socket> -write <dir>` and
// reads the X.509-SVID, its key and the trust bundle it wrote.
func (c CLI) FetchX509(ctx context.Context) (*workloadapi.X509Context, error) {
	dir, err := os.MkdirTemp(c.Dir, "sbps-marshal-x509-")
	if err != nil {
		return nil, fmt.Errorf("directory for the X.509-SVID from the SPIRE agent CLI: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := plainArg("the X.509-SVID directory", dir); err != nil {
		return nil, err
	}
	if _, err := c.run(ctx, "x509", "-write", dir); err != nil {
		return nil, err
	}
	sv, err := x509svid.Load(filepath.Join(dir, "svid.0.pem"), filepath.Join(dir, "svid.0.key"))
	if err != nil {
		return nil, fmt.Errorf("SPIRE agent CLI %s wrote no usable X.509-SVID: %w", c.Path, err)
	}
	bundle, err := x509bundle.Load(sv.ID.TrustDomain(), filepath.Join(dir, "bundle.0.pem"))
	if err != nil {
		return nil, fmt.Errorf("SPIRE agent CLI %s wrote no usable trust bundle: %w", c.Path, err)
	}
	return &workloadapi.X509Context{SVIDs: []*x509svid.SVID{sv}, Bundles: x509bundle.NewSet(bundle)}, nil
}

// run runs `<Path> api fetch <kind> <args> -socketPath <socket> [-output
// json]` in its own process group and returns its stdout.
func (c CLI) run(ctx context.Context, kind string, args ...string) ([]byte, error) {
	_, socket := socketAddr(c.Socket)
	if err := plainArg("SPIRE_AGENT_PATH", c.Path); err != nil {
		return nil, err
	}
	if err := plainArg("SPIRE_AGENT_SOCK_PATH", socket); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.Path) {
		return nil, fmt.Errorf("SPIRE agent CLI %q is not an absolute path: set SBPS_MARSHAL_SPIRE_AGENT_PATH", c.Path)
	}
	argv := append([]string{"api", "fetch", kind}, args...)
	argv = append(argv, "-socketPath", socket)
	if kind == "jwt" {
		argv = append(argv, "-output", "json")
	}
	line := c.Path + " " + strings.Join(argv, " ")
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCLITimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the SPIRE agent CLI took longer than %v", timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, argv...)
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			msg = ": " + msg
		}
		hint := "check that SBPS_MARSHAL_SPIRE_AGENT_PATH is the hard link of spire-agent SPIRE registers for this node's sbps-marshal (CSM: " + DefaultAgentPath + ") and that the SPIRE agent runs at SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH"
		if strings.Contains(msg, "no identity issued") {
			hint = "SPIRE attests the calling binary: " + c.Path + " is not registered for an identity; CSM registers " + NodeWorkloadID + " for " + DefaultAgentPath + " (set SBPS_MARSHAL_SPIRE_AGENT_PATH to it)"
		}
		return nil, fmt.Errorf("SPIRE agent CLI `%s`: %w%s (%s)", line, err, msg, hint)
	}
	return stdout.Bytes(), nil
}

// plainArg checks a value that reaches the CLI's command line: letters,
// digits and /._+-:, not starting with '-'.
func plainArg(key, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty: set it", key)
	}
	if v[0] == '-' {
		return fmt.Errorf("%s %q starts with '-': it would be taken for an option", key, v)
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-:", r)) {
			return fmt.Errorf("%s %q has the character %q: only letters, digits and /._+-: reach the SPIRE agent CLI", key, v, r)
		}
	}
	return nil
}

// capped keeps the first maxCLIOutput bytes written.
type capped struct{ bytes.Buffer }

func (b *capped) Write(p []byte) (int, error) {
	if room := maxCLIOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// noIdentity turns the Workload API's PermissionDenied into an error that
// says what to do.
func noIdentity(addr string, err error) error {
	if status.Code(err) != codes.PermissionDenied {
		return err
	}
	return fmt.Errorf("the SPIRE agent at %s issued no identity to this process (%w): SPIRE attests the calling binary, and CSM registers %s only for %s; set SBPS_MARSHAL_SPIFFE_SOURCE=cli (or auto) with SBPS_MARSHAL_SPIRE_AGENT_PATH naming that hard link of spire-agent, or register this binary's path with SPIRE",
		addr, err, NodeWorkloadID, DefaultAgentPath)
}
