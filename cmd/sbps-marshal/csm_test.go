package main

import (
	"bytes"
	"encoding/json"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf/tlstest"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// startStack starts the rig without NATS and gives targetcli (the
// simulator, which inherits the process environment) its node.
func startStack(t *testing.T) (*rig.Stack, []string) {
	t.Helper()
	s, err := rig.StartStack(t.Context(), rig.StackOptions{Dir: t.TempDir(), NoNATS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, kv := range s.Node.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return s, append(s.AgentEnv(), "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_LOG_FORMAT=logfmt")
}

// runIn runs one command with the default env file given.
func runIn(defaultEnvFile string, env []string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := mainWith(defaultEnvFile, args, &out, &errb, env)
	return code, out.String(), errb.String()
}

// tlsFront serves target (the rig's versitygw or IMS, plain HTTP) over TLS
// with a certificate for 127.0.0.1 issued by ca, and returns host:port.
// The Host header is passed on unchanged, so S3 signatures still match.
func tlsFront(t *testing.T, ca *tlstest.CA, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	srv := tlstest.Server(t, ca.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}), httputil.NewSingleHostReverseProxy(u))
	return strings.TrimPrefix(srv.URL, "https://")
}

// TestTLSAsOnCSM (issue 14, point 6): S3 and IMS over TLS with a
// certificate from a CA the node does not know. plan fails with an error
// naming the host, the issuer and the fix; with CA_FILE it works; with
// TLS_INSECURE_SKIP_VERIFY=true it works and a warning is logged at start
// and shown by `config`.
func TestTLSAsOnCSM(t *testing.T) {
	s, env := startStack(t)
	ca := tlstest.NewCA(t, "CSM Platform CA (test)")
	caFile := ca.WritePEM(t, t.TempDir(), "platform-ca.pem")
	s3Host := tlsFront(t, ca, s.S3.Endpoint())
	imsHost := tlsFront(t, ca, s.IMS.URL())
	if _, err := s.PutPE(t.Context(), "CPE-tls.squashfs", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	s3TLS := []string{"SBPS_MARSHAL_S3_PROTO=https", "SBPS_MARSHAL_S3_HOST=" + s3Host}
	imsTLS := []string{"SBPS_MARSHAL_API_GATEWAY=https://" + imsHost}

	t.Run("S3 unknown CA", func(t *testing.T) {
		code, out, errOut := runIn("", testutil.SetEnv(env, s3TLS...), "plan")
		for _, want := range []string{"S3 at " + s3Host, "CN=CSM Platform CA (test)", "CA_FILE", "S3_PROTO=http"} {
			if code != 1 || !strings.Contains(errOut, want) {
				t.Errorf("plan with S3 over TLS from an unknown CA = %d, stderr lacks %q:\n%s%s", code, want, out, errOut)
			}
		}
	})
	t.Run("IMS unknown CA", func(t *testing.T) {
		// IMS failing holds rootfs projections; status says why.
		code, out, errOut := runIn("", testutil.SetEnv(env, imsTLS...), "status")
		for _, want := range []string{"IMS at " + imsHost, "CN=CSM Platform CA (test)", "CA_FILE"} {
			if code != exitDesiredUnknown || !strings.Contains(errOut, want) {
				t.Errorf("status with IMS over TLS from an unknown CA = %d, stderr lacks %q:\n%s%s", code, want, out, errOut)
			}
		}
	})
	t.Run("CA_FILE", func(t *testing.T) {
		code, out, errOut := runIn("", testutil.SetEnv(env, append(append(s3TLS, imsTLS...), "SBPS_MARSHAL_CA_FILE="+caFile)...), "plan")
		if code != 2 || !strings.Contains(out, "CPE-tls.squashfs") || strings.Contains(errOut, "not trusted") {
			t.Errorf("plan with CA_FILE = %d, want 2 and the image to create:\n%s%s", code, out, errOut)
		}
	})
	t.Run("TLS_INSECURE_SKIP_VERIFY", func(t *testing.T) {
		skip := testutil.SetEnv(env, append(append(s3TLS, imsTLS...), "SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY=true")...)
		code, out, errOut := runIn("", skip, "plan")
		if code != 2 || !strings.Contains(out, "CPE-tls.squashfs") {
			t.Errorf("plan with TLS_INSECURE_SKIP_VERIFY=true = %d, want 2:\n%s%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "level=WARN") || !strings.Contains(errOut, "TLS certificates are NOT verified") {
			t.Errorf("plan with TLS_INSECURE_SKIP_VERIFY=true logged no warning:\n%s", errOut)
		}
		code, out, errOut = runIn("", skip, "config")
		if code != 0 || !strings.Contains(out, "SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY=true\n") || !strings.Contains(errOut, "NOT verified") {
			t.Errorf("config with TLS_INSECURE_SKIP_VERIFY=true = %d, want the key shown and the warning:\n%s%s", code, out, errOut)
		}
	})
}

// TestCommandsReadTheServiceSettings (issue 14, point 8): with the
// service's settings only in the default env file (the unit's
// EnvironmentFile) and an empty environment, config, plan, sync and
// status all see them; a flag still overrides the file.
func TestCommandsReadTheServiceSettings(t *testing.T) {
	s, env := startStack(t)
	sysconfig := filepath.Join(t.TempDir(), "sbps-marshal")
	if err := os.WriteFile(sysconfig, []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := s.PutPE(t.Context(), "CPE-sysconfig.squashfs", []byte("from the settings file"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runIn(sysconfig, nil, "config"); code != 0 || !strings.Contains(out, "SBPS_MARSHAL_TARGET_IQN="+s.Node.IQN()+"\n") {
		t.Errorf("config = %d, want the file's TARGET_IQN:\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runIn(sysconfig, nil, "config", "--s3-bucket", "flag-bucket"); code != 0 || !strings.Contains(out, "SBPS_MARSHAL_S3_BUCKET=flag-bucket\n") {
		t.Errorf("config --s3-bucket = %d, want the flag over the file:\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runIn(sysconfig, nil, "plan"); code != 2 || !strings.Contains(out, "CPE-sysconfig.squashfs") {
		t.Errorf("plan = %d, want 2 and the image:\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runIn(sysconfig, nil, "sync"); code != 0 {
		t.Fatalf("sync = %d:\n%s%s", code, out, errOut)
	}
	id := naming.For(naming.PEInput(s.S3.Bucket(), key))
	code, out, errOut := runIn(sysconfig, nil, "status", "--json")
	var entries []struct{ State, Backstore string }
	if err := json.Unmarshal([]byte(out), &entries); code != 0 || err != nil || len(entries) != 1 || entries[0].State != "projected" || entries[0].Backstore != id.Name {
		t.Errorf("status --json = %d %v, want %s projected:\n%s%s", code, err, id.Name, out, errOut)
	}
	// An explicitly named file that is missing is an error, the default
	// file missing is not.
	if code, _, errOut := runIn(sysconfig, nil, "status", "--env-file", sysconfig+".missing"); code != 1 || !strings.Contains(errOut, sysconfig+".missing") {
		t.Errorf("status --env-file <missing> = %d, want 1 naming the file:\n%s", code, errOut)
	}
	if code, _, errOut := runIn(sysconfig+".missing", env, "config"); code != 0 || errOut != "" {
		t.Errorf("config with no default file = %d, want 0 and nothing on stderr:\n%s", code, errOut)
	}
}

// TestStatusWhenS3OrIMSUnreachable (issue 14, point 8): status shows what
// LIO holds, with the reason, and exits 3 when S3 or IMS cannot be
// reached.
func TestStatusWhenS3OrIMSUnreachable(t *testing.T) {
	s, env := startStack(t)
	ctx := t.Context()
	key, err := s.PutPE(ctx, "CPE-held.squashfs", []byte("a PE image"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.AddImage(ctx, "compute-rootfs", []byte("a rootfs image"), true)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runIn("", env, "sync"); code != 0 {
		t.Fatalf("sync = %d:\n%s%s", code, out, errOut)
	}
	pe := naming.For(naming.PEInput(s.S3.Bucket(), key)).Name
	type entry struct{ State, Backstore, Reason string }
	status := func(t *testing.T, env []string) (int, map[string]entry, string) {
		t.Helper()
		code, out, errOut := runIn("", env, "status", "--json")
		var es []entry
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("status --json = %d, output not JSON (%v):\n%s%s", code, err, out, errOut)
		}
		m := map[string]entry{}
		for _, e := range es {
			m[e.Backstore] = e
		}
		return code, m, errOut
	}
	code, before, errOut := status(t, env)
	if code != 0 || len(before) != 2 || before[pe].State != "projected" {
		t.Fatalf("status with S3 and IMS up = %d %v, want 0 and two projected:\n%s", code, before, errOut)
	}
	var rootfs string
	for name := range before {
		if name != pe {
			rootfs = name
		}
	}

	t.Run("S3 unreachable", func(t *testing.T) {
		code, got, errOut := status(t, testutil.SetEnv(env, "SBPS_MARSHAL_S3_HOST=127.0.0.1:1"))
		if code != exitDesiredUnknown || !strings.Contains(errOut, "127.0.0.1:1") {
			t.Errorf("status = %d, want %d and stderr naming S3:\n%s", code, exitDesiredUnknown, errOut)
		}
		for _, name := range []string{pe, rootfs} {
			if e := got[name]; e.State != "unknown" || !strings.Contains(e.Reason, "S3") {
				t.Errorf("%s: %+v, want state unknown with S3 in the reason", name, e)
			}
		}
	})
	t.Run("IMS unreachable", func(t *testing.T) {
		code, got, errOut := status(t, testutil.SetEnv(env, "SBPS_MARSHAL_API_GATEWAY=http://127.0.0.1:1"))
		if code != exitDesiredUnknown || !strings.Contains(errOut, "IMS") {
			t.Errorf("status = %d, want %d and stderr naming IMS:\n%s", code, exitDesiredUnknown, errOut)
		}
		if e := got[pe]; e.State != "projected" {
			t.Errorf("PE %s: %+v, want projected (S3 answers)", pe, e)
		}
		if e := got[rootfs]; e.State == "projected" || e.State == "stale" || !strings.Contains(e.Reason, "IMS") {
			t.Errorf("rootfs %s of image %s: %+v, want it held with IMS in the reason", rootfs, img.ID, e)
		}
	})
}
