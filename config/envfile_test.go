package config

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func loadFrom(t *testing.T, defaultFile string, args []string, env ...string) (*Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, _, err := Load(Sources{Args: args, Environ: env, DefaultEnvFile: defaultFile, Hostname: func() (string, error) { return "ncn-w001", nil }}, fs)
	return c, err
}

// TestDefaultEnvFile (issue 14, point 8): a command run in a shell reads
// the service's settings file, as the unit's EnvironmentFile does; the
// environment and flags still override it; a missing default file is
// fine and silent, a missing file asked for by name is an error.
func TestDefaultEnvFile(t *testing.T) {
	dir := t.TempDir()
	sysconfig := filepath.Join(dir, "sysconfig")
	other := filepath.Join(dir, "other")
	os.WriteFile(sysconfig, []byte("SBPS_MARSHAL_S3_HOST=file-host\nSBPS_MARSHAL_STATE_DIR=/var/lib/from-file\n"), 0o600)
	os.WriteFile(other, []byte("SBPS_MARSHAL_S3_HOST=other-host\n"), 0o600)
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name        string
		defaultFile string
		args        []string
		env         []string
		wantHost    string
		wantState   string
		wantFile    string
		wantErr     []string // substrings of the error; nil = no error
	}{
		{"default file read", sysconfig, nil, nil, "file-host", "/var/lib/from-file", sysconfig, nil},
		{"environment over default file", sysconfig, nil, []string{"SBPS_MARSHAL_S3_HOST=env-host"}, "env-host", "/var/lib/from-file", sysconfig, nil},
		{"flag over both", sysconfig, []string{"--s3-host", "flag-host"}, []string{"SBPS_MARSHAL_S3_HOST=env-host"}, "flag-host", "/var/lib/from-file", sysconfig, nil},
		{"--env-file instead of the default", sysconfig, []string{"--env-file", other}, nil, "other-host", "/var/lib/sbps-marshal", other, nil},
		{"SBPS_MARSHAL_ENV_FILE instead of the default", sysconfig, nil, []string{"SBPS_MARSHAL_ENV_FILE=" + other}, "other-host", "/var/lib/sbps-marshal", other, nil},
		{`--env-file "" reads none`, sysconfig, []string{"--env-file", ""}, nil, "rgw-vip.nmn", "/var/lib/sbps-marshal", "", nil},
		{"missing default file is silent", missing, nil, nil, "rgw-vip.nmn", "/var/lib/sbps-marshal", "", nil},
		{"missing --env-file is an error", sysconfig, []string{"--env-file", missing}, nil, "", "", "", []string{missing, "--env-file", "no such file"}},
		{"missing SBPS_MARSHAL_ENV_FILE is an error", missing, nil, []string{"SBPS_MARSHAL_ENV_FILE=" + missing}, "", "", "", []string{missing, "SBPS_MARSHAL_ENV_FILE", "no such file"}},
		{"default file a directory", dir, nil, nil, "", "", "", []string{dir, "is a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadFrom(t, tt.defaultFile, tt.args, tt.env...)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load = nil error, want one naming %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Load error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.S3Host != tt.wantHost || c.StateDir != tt.wantState || c.EnvFile != tt.wantFile {
				t.Errorf("S3_HOST %q STATE_DIR %q EnvFile %q, want %q %q %q", c.S3Host, c.StateDir, c.EnvFile, tt.wantHost, tt.wantState, tt.wantFile)
			}
			if len(c.Notices) != 0 {
				t.Errorf("notices %q, want none (a missing default file is silent)", c.Notices)
			}
		})
	}
}

// TestDefaultEnvFileUnreadable: a settings file the user may not read is
// an error naming the file, the cause and the fix, never silently skipped
// (the command would run with another configuration than the service).
// Run as root, the check runs in a child test process as nobody.
func TestDefaultEnvFileUnreadable(t *testing.T) {
	if p := os.Getenv("SBPS_MARSHAL_TEST_UNREADABLE"); p != "" {
		_, err := loadFrom(t, p, nil)
		if err == nil {
			t.Fatalf("Load with an unreadable default env file %s: no error", p)
		}
		for _, w := range []string{p, "permission denied", "as root"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Load error %q lacks %q", err, w)
			}
		}
		return
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "sysconfig")
	if err := os.WriteFile(f, []byte("SBPS_MARSHAL_S3_HOST=secret-host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		os.Chmod(f, 0)
		t.Setenv("SBPS_MARSHAL_TEST_UNREADABLE", f)
		TestDefaultEnvFileUnreadable(t)
		return
	}
	// root reads every file: run this test again as nobody, from a copy of
	// the test binary it may execute.
	for _, d := range []string{filepath.Dir(dir), dir} {
		os.Chmod(d, 0o755)
	}
	bin := filepath.Join(dir, "config.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestDefaultEnvFileUnreadable$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SBPS_MARSHAL_TEST_UNREADABLE="+f)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Errorf("as nobody: %v\n%s", err, out)
	}
}

// TestTLSInsecureSkipVerify (issue 14, point 6): the key exists, defaults
// to false, and when true is a notice (logged as a warning at every start)
// and shown by Print.
func TestTLSInsecureSkipVerify(t *testing.T) {
	c, err := loadFrom(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLSInsecure || len(c.Notices) != 0 {
		t.Errorf("default: TLSInsecure %v notices %q, want false and none", c.TLSInsecure, c.Notices)
	}
	c, err = loadFrom(t, "", nil, "SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY=true")
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLSInsecure || !strings.Contains(strings.Join(c.Notices, "\n"), "TLS_INSECURE_SKIP_VERIFY=true: TLS certificates are NOT verified") {
		t.Errorf("TLS_INSECURE_SKIP_VERIFY=true: TLSInsecure %v notices %q, want true and a notice", c.TLSInsecure, c.Notices)
	}
	var b strings.Builder
	c.Print(&b)
	if !strings.Contains(b.String(), "SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY=true\n") {
		t.Errorf("Print lacks the key:\n%s", b.String())
	}
}
