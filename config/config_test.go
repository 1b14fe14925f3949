package config

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, args []string, env ...string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, _, err := Load(Sources{Args: args, Environ: env, Hostname: func() (string, error) { return "ncn-w001.local", nil }}, fs)
	return c, err
}

func TestDefaultsMatchOldAgent(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		key  string
		got  any
		want any
	}{
		{"SCAN_FREQUENCY", c.ScanFrequency, 180 * time.Second},
		{"RESYNC_INTERVAL", c.ResyncInterval, 180 * time.Second},
		{"API_GATEWAY", c.APIGateway, "https://api-gw-service-nmn.local"},
		{"IMS_URI", c.IMSURI, "apis/ims/v3/images"},
		{"IMS_TAGGING", c.IMSTagging, true},
		{"IMS_TIMEOUT", c.IMSTimeout, 10 * time.Second},
		{"S3_TIMEOUT", c.S3Timeout, 30 * time.Second},
		{"S3_HOST", c.S3Host, "rgw-vip.nmn"},
		{"S3_PROTO", c.S3Proto, "https"},
		{"S3_CREDENTIAL_FILE", c.S3CredentialFile, "/root/.ims.s3fs"},
		{"S3_BUCKET", c.S3Bucket, "boot-images"},
		{"SQUASHFS_S3FS_MOUNT", c.Mount, "/var/lib/cps-local/boot-images"},
		{"SPIRE_JWT_AUDIENCE", c.SpireJWTAudience, "system-compute"},
		// CSM's registration names this hard link (the old agent's
		// default moved to /opt/cray/cray-spire/ in its last release).
		{"SPIRE_AGENT_PATH", c.SpireAgentPath, "/usr/bin/sbps-marshal-spire-agent"},
		{"SPIFFE_SOURCE", c.SPIFFESource, "auto"},
		{"SPIRE_AGENT_SOCK_PATH", c.SpireAgentSock, "/var/lib/spire/agent.sock"},
		{"LIO_SAVE_FILE", c.LIOSaveFile, "/etc/target/saveconfig.json"},
		{"TARGETCLI_BIN", c.TargetcliBin, "/usr/bin/targetcli"},
		{"NODE_NAME", c.NodeName, "ncn-w001"},
		{"TARGET_IQN", c.TargetIQN, "iqn.2023-06.csm.iscsi:ncn-w001"},
		{"PE_PREFIX", c.PEPrefix, "PE/"},
		{"TARGETCLI_MODE", c.TargetcliMode, "batch"},
		{"MAX_DELETE_FRACTION", c.MaxDeleteFraction, 0.5},
		// The old agent passed --kubeconfig /etc/kubernetes/admin.conf (no key).
		{"KUBECONFIG", c.Kubeconfig, "/etc/kubernetes/admin.conf"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.key, ck.got, ck.want)
		}
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "sbps-marshal")
	os.WriteFile(envFile, []byte("# comment\nSBPS_MARSHAL_S3_BUCKET=from-file\nexport SBPS_MARSHAL_S3_HOST=\"file-host:8080\"\nSBPS_MARSHAL_IMS_TIMEOUT='7'\n"), 0o600)
	c, err := load(t, []string{"--env-file", envFile, "--s3-host", "flag-host"}, "SBPS_MARSHAL_S3_HOST=env-host", "SBPS_MARSHAL_IMS_TIMEOUT=8")
	if err != nil {
		t.Fatal(err)
	}
	if c.S3Bucket != "from-file" || c.S3Host != "flag-host" || c.IMSTimeout != 8*time.Second {
		t.Errorf("bucket %q host %q timeout %v; want from-file, flag-host, 8s", c.S3Bucket, c.S3Host, c.IMSTimeout)
	}
}

func TestInvalidValues(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want string // substring of the error
	}{
		{"bool spelling", "SBPS_MARSHAL_IMS_TAGGING=True", `SBPS_MARSHAL_IMS_TAGGING="True" (from environment): want true or false`},
		{"integer", "SBPS_MARSHAL_SCAN_FREQUENCY=3m", "SCAN_FREQUENCY"},
		{"negative", "SBPS_MARSHAL_IMS_TIMEOUT=-1", "want a positive"},
		{"relative path", "SBPS_MARSHAL_LIO_SAVE_FILE=etc/target/saveconfig.json", "want an absolute path"},
		{"unclean path", "SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=/var/lib/../x", "clean absolute path"},
		{"choice", "SBPS_MARSHAL_TARGETCLI_MODE=fast", "want one of batch, oneshot, daemon"},
		{"fraction", "SBPS_MARSHAL_MAX_DELETE_FRACTION=1.5", "greater than 0 and at most 1"},
		{"proto", "SBPS_MARSHAL_S3_PROTO=ftp", "want one of https, http"},
		{"host with scheme", "SBPS_MARSHAL_S3_HOST=https://rgw", "without a scheme"},
		{"bucket", "SBPS_MARSHAL_S3_BUCKET=Boot_Images", "S3 bucket name"},
		{"prefix", "SBPS_MARSHAL_PE_PREFIX=/PE", "relative key prefix"},
		{"nats url", "SBPS_MARSHAL_NATS_URL=http://x:4222", "nats://"},
		{"token file needed", "SBPS_MARSHAL_IMS_AUTH=token-file", "IMS_AUTH=token-file needs"},
		{"iqn", "SBPS_MARSHAL_TARGET_IQN=iqn.2023 06", "want an IQN"},
		{"gate", "SBPS_MARSHAL_GATE=label", "want kubectl, none, or file:"},
		{"relative kubeconfig", "SBPS_MARSHAL_KUBECONFIG=admin.conf", "SBPS_MARSHAL_KUBECONFIG=\"admin.conf\" (from environment): want an absolute path"},
		{"spiffe source", "SBPS_MARSHAL_SPIFFE_SOURCE=spire", "want one of auto, cli, workload-api"},
		{"cli without a path", "SBPS_MARSHAL_SPIFFE_SOURCE=cli\x00SBPS_MARSHAL_SPIRE_AGENT_PATH=", "SPIFFE_SOURCE=cli needs the SPIRE agent CLI"},
		{"relative CLI", "SBPS_MARSHAL_SPIRE_AGENT_PATH=sbps-marshal-spire-agent", "want an absolute path"},
		{"CLI path with a space", "SBPS_MARSHAL_SPIRE_AGENT_PATH=/usr/bin/spire agent", "letters, digits and /._+- only"},
		{"socket with a space", "SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=/var/lib/spire/agent sock", "letters, digits and /._+- only"},
		{"audience like an option", "SBPS_MARSHAL_SPIRE_JWT_AUDIENCE=-socketPath", "not starting with '-'"},
		{"audience with a space", "SBPS_MARSHAL_SPIRE_JWT_AUDIENCE=system compute", "letters, digits and /._+-: only"},
		{"kubeconfig with a space", "SBPS_MARSHAL_KUBECONFIG=/etc/kube config", "letters, digits and /._+- only"},
		{"stream without url", "SBPS_MARSHAL_NATS_STREAM=SBPS", "a stream needs NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, nil, strings.Split(tt.env, "\x00")...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%s) error = %v, want it to contain %q", tt.env, err, tt.want)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

func TestNATSSPIFFECombinations(t *testing.T) {
	const url = "SBPS_MARSHAL_NATS_URL=nats://nats.local:4222"
	tests := []struct {
		name string
		env  []string
		want string // substring of the error; empty: accepted
	}{
		{"SVID, server verified by the SPIRE bundle", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true"}, ""},
		{"SVID, server verified by a CA file", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_TLS_CA=/etc/ca.pem"}, ""},
		{"SVID, server's SPIFFE ID", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=spiffe://shasta/ncn/nats"}, ""},
		{"SVID and a client certificate file", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_TLS_CERT=/c.pem", "SBPS_MARSHAL_NATS_TLS_KEY=/k.pem"}, "alternatives for the client certificate"},
		{"SVID without a Workload API socket", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=", "SBPS_MARSHAL_IMS_AUTH=none"}, "NATS_SPIFFE=true needs the Workload API socket"},
		{"server ID without the SVID", []string{url, "SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=spiffe://shasta/ncn/nats"}, "applies only with NATS_SPIFFE=true"},
		{"server ID and a CA file", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_TLS_CA=/etc/ca.pem", "SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=spiffe://shasta/ncn/nats"}, "set one"},
		{"server ID not a SPIFFE ID", []string{url, "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=nats.local"}, "want a SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, nil, tt.env...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Load(%q) error = %v, want nil", tt.env, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Load(%q) error = %v, want it to contain %q", tt.env, err, tt.want)
			}
		})
	}
	c, err := load(t, nil, "SBPS_MARSHAL_NATS_SPIFFE=true")
	if err != nil {
		t.Fatal(err)
	}
	if joined := strings.Join(c.Notices, "\n"); !strings.Contains(joined, "NATS_SPIFFE=true has no effect without SBPS_MARSHAL_NATS_URL") {
		t.Errorf("notices = %q, want one that NATS_SPIFFE does nothing without NATS_URL", c.Notices)
	}
}

func TestNoticesAndPrint(t *testing.T) {
	c, err := load(t, nil, "SBPS_MARSHAL_SCAN_FREQUENCEY=5",
		"SBPS_MARSHAL_NATS_URL=nats://user:hunter2@n1:4222,nats://n2:4222")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(c.Notices, "\n")
	if !strings.Contains(joined, "SCAN_FREQUENCEY is not a known key") {
		t.Errorf("notices = %q", c.Notices)
	}
	var buf bytes.Buffer
	if err := c.Print(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("Print leaks a NATS password:\n%s", out)
	}
	for _, want := range []string{"SBPS_MARSHAL_NATS_URL=nats://<redacted>@n1:4222,nats://n2:4222\n", "SBPS_MARSHAL_TARGET_IQN=iqn.2023-06.csm.iscsi:ncn-w001\n", "SBPS_MARSHAL_RESYNC_INTERVAL=3m0s\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("Print output lacks %q:\n%s", want, out)
		}
	}
	// The printed configuration reads back as the same configuration.
	dir := t.TempDir()
	f := filepath.Join(dir, "env")
	os.WriteFile(f, []byte(strings.ReplaceAll(out, "<redacted>@", "")), 0o600)
	c2, err := load(t, []string{"--env-file", f})
	if err != nil {
		t.Fatalf("reading printed configuration back: %v", err)
	}
	if c2.TargetIQN != c.TargetIQN || c2.ResyncInterval != c.ResyncInterval {
		t.Errorf("round trip: %q %v, want %q %v", c2.TargetIQN, c2.ResyncInterval, c.TargetIQN, c.ResyncInterval)
	}
}

// TestKubeconfigSources: KUBECONFIG is read like every key (flag, env,
// env file) and may be emptied for kubectl's own lookup.
func TestKubeconfigSources(t *testing.T) {
	f := filepath.Join(t.TempDir(), "sysconfig")
	os.WriteFile(f, []byte("SBPS_MARSHAL_KUBECONFIG=/etc/file.conf\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"env file", []string{"--env-file", f}, nil, "/etc/file.conf"},
		{"environment over env file", []string{"--env-file", f}, []string{"SBPS_MARSHAL_KUBECONFIG=/etc/env.conf"}, "/etc/env.conf"},
		{"flag over both", []string{"--env-file", f, "--kubeconfig", "/etc/flag.conf"}, []string{"SBPS_MARSHAL_KUBECONFIG=/etc/env.conf"}, "/etc/flag.conf"},
		{"emptied", nil, []string{"SBPS_MARSHAL_KUBECONFIG="}, ""},
		// kubectl's own variable is not the agent's key.
		{"KUBECONFIG without the prefix", nil, []string{"KUBECONFIG=/root/.kube/config"}, "/etc/kubernetes/admin.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.args, tt.env...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Kubeconfig != tt.want {
				t.Errorf("Kubeconfig = %q, want %q", c.Kubeconfig, tt.want)
			}
			var buf bytes.Buffer
			c.Print(&buf)
			if want := "SBPS_MARSHAL_KUBECONFIG=" + quoteEnv(tt.want) + "\n"; !strings.Contains(buf.String(), want) {
				t.Errorf("config output lacks %q", want)
			}
		})
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	c, err := load(t, nil, "SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT="+dir, "SBPS_MARSHAL_TARGETCLI_BIN="+filepath.Join(dir, "missing"),
		"SBPS_MARSHAL_S3_CREDENTIAL_FILE=", "SBPS_MARSHAL_CA_FILE="+dir)
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckFiles()
	if err == nil {
		t.Fatal("CheckFiles() = nil, want errors for TARGETCLI_BIN and CA_FILE")
	}
	for _, want := range []string{"TARGETCLI_BIN", "no such file", "CA_FILE", "found a directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckFiles() = %v, want it to mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "SQUASHFS_S3FS_MOUNT") {
		t.Errorf("existing mount reported: %v", err)
	}
}
