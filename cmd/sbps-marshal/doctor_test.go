package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/doctor"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf/tlstest"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
)

// TestDoctorCommand is issue 16 through the command: the table, --json,
// and the exit status (0 when nothing fails, warnings allowed; 1 when a
// row fails, a configuration that does not load included).
func TestDoctorCommand(t *testing.T) {
	s, env := startStack(t)
	dir := t.TempDir()
	mountinfo := filepath.Join(dir, "mountinfo")
	line := fmt.Sprintf("40 22 0:40 / %s ro,nosuid,nodev,relatime shared:40 - fuse.s3fs s3fs ro,user_id=0,group_id=0\n", s.Mount())
	if err := os.WriteFile(mountinfo, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := doctorOptions
	doctorOptions.Mountinfo = mountinfo
	t.Cleanup(func() { doctorOptions = saved })
	unit := systemctltest.Install(t, filepath.Join(dir, "bin"), systemctltest.Options{State: "active"})
	unit.AddUnit(t, doctor.AgentUnit, "active", "enabled")
	if _, err := s.PutPE(t.Context(), "CPE-doctor.squashfs", []byte("a programming environment")); err != nil {
		t.Fatal(err)
	}
	// The stack's node: GATE=none, no NATS, target.service active.
	env = testutil.SetEnv(env, "SBPS_MARSHAL_SYSTEMCTL_BIN="+unit.Path)

	code, out, errOut := runIn("", env, "doctor")
	if code != 0 || strings.Count(out, " OK ") != len(doctor.Rows()) || !strings.Contains(out, fmt.Sprintf("%d checks: %d OK, 0 WARN, 0 FAIL", len(doctor.Rows()), len(doctor.Rows()))) {
		t.Fatalf("doctor on a healthy node = %d, want 0 and every row OK:\n%s%s", code, out, errOut)
	}
	t.Logf("healthy node:\n%s", out)

	jsonRows := func(t *testing.T, out string) []map[string]string {
		t.Helper()
		var rows []map[string]string
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("doctor --json is not a JSON array of rows: %v\n%s", err, out)
		}
		for _, r := range rows {
			for _, k := range []string{"name", "status", "detail", "fix"} {
				if _, ok := r[k]; !ok {
					t.Errorf("row %v has no %q", r, k)
				}
			}
		}
		return rows
	}
	row := func(rows []map[string]string, name string) map[string]string {
		for _, r := range rows {
			if r["name"] == name {
				return r
			}
		}
		t.Fatalf("no row %q in %v", name, rows)
		return nil
	}

	t.Run("json", func(t *testing.T) {
		code, out, errOut := runIn("", env, "doctor", "--json")
		rows := jsonRows(t, out)
		if code != 0 || len(rows) != len(doctor.Rows()) {
			t.Fatalf("doctor --json = %d with %d rows, want 0 and %d:\n%s%s", code, len(rows), len(doctor.Rows()), out, errOut)
		}
		for i, r := range rows {
			if r["name"] != doctor.Rows()[i] || r["status"] != "OK" {
				t.Errorf("row %d = %v, want %s OK", i, r, doctor.Rows()[i])
			}
		}
	})
	t.Run("warning only", func(t *testing.T) {
		gateFile := filepath.Join(dir, "gate")
		code, out, errOut := runIn("", testutil.SetEnv(env, "SBPS_MARSHAL_GATE=file:"+gateFile), "doctor")
		if code != 0 || !strings.Contains(out, "WARN") || !strings.Contains(out, "fix: if this node should serve boot images: touch "+gateFile) {
			t.Errorf("doctor with the gate closed = %d, want 0, a WARN row and its fix:\n%s%s", code, out, errOut)
		}
	})
	t.Run("targetcli missing", func(t *testing.T) {
		missing := filepath.Join(dir, "no", "targetcli")
		code, out, errOut := runIn("", testutil.SetEnv(env, "SBPS_MARSHAL_TARGETCLI_BIN="+missing), "doctor")
		if code != 1 || !strings.Contains(out, "fix: install targetcli (zypper install targetcli-fb), or set SBPS_MARSHAL_TARGETCLI_BIN=") {
			t.Errorf("doctor without targetcli = %d, want 1 and the fix naming TARGETCLI_BIN:\n%s%s", code, out, errOut)
		}
	})
	t.Run("S3 TLS from an unknown CA", func(t *testing.T) {
		ca := tlstest.NewCA(t, "CSM Platform CA (test)")
		host := tlsFront(t, ca, s.S3.Endpoint())
		tlsEnv := testutil.SetEnv(env, "SBPS_MARSHAL_S3_PROTO=https", "SBPS_MARSHAL_S3_HOST="+host)
		code, out, errOut := runIn("", tlsEnv, "doctor", "--json")
		r := row(jsonRows(t, out), doctor.RowS3)
		if code != 1 || r["status"] != "FAIL" || !strings.Contains(r["detail"], "CN=CSM Platform CA (test)") || !strings.Contains(r["fix"], "CA_FILE") || !strings.Contains(r["fix"], "S3_PROTO=http") {
			t.Errorf("doctor with S3 over TLS from an unknown CA = %d, S3 row %v; want 1, FAIL naming the issuer, CA_FILE and S3_PROTO=http:\n%s", code, r, errOut)
		}
		caFile := ca.WritePEM(t, t.TempDir(), "platform-ca.pem")
		code, out, errOut = runIn("", testutil.SetEnv(tlsEnv, "SBPS_MARSHAL_CA_FILE="+caFile), "doctor", "--json")
		if r := row(jsonRows(t, out), doctor.RowS3); code != 0 || r["status"] != "OK" || !strings.Contains(r["detail"], "TLS verified against the system pool and CA_FILE") {
			t.Errorf("doctor with CA_FILE = %d, S3 row %v; want 0 and OK, verified:\n%s", code, r, errOut)
		}
	})
	t.Run("configuration invalid", func(t *testing.T) {
		code, out, errOut := runIn("", testutil.SetEnv(env, "SBPS_MARSHAL_IMS_TAGGING=True"), "doctor", "--json")
		rows := jsonRows(t, out)
		cfg := row(rows, doctor.RowConfig)
		if code != 1 || cfg["status"] != "FAIL" || !strings.Contains(cfg["fix"], "SBPS_MARSHAL_IMS_TAGGING") {
			t.Errorf("doctor with a bad key = %d, configuration row %v; want 1, FAIL and a fix naming the key:\n%s", code, cfg, errOut)
		}
		if r := row(rows, doctor.RowS3); r["status"] != "WARN" || !strings.Contains(r["detail"], "configuration failed") {
			t.Errorf("S3 row with the configuration failed = %v, want WARN, not checked", r)
		}
	})
	t.Run("env file unreadable", func(t *testing.T) {
		code, out, _ := runIn(filepath.Join(dir, "sysconfig"), append(env, "SBPS_MARSHAL_ENV_FILE="+filepath.Join(dir, "missing.env")), "doctor")
		if code != 1 || !regexp.MustCompile(`(?m)^configuration +FAIL `).MatchString(out) || !strings.Contains(out, "missing.env") {
			t.Errorf("doctor with a missing env file named = %d, want 1 and the configuration row naming it:\n%s", code, out)
		}
	})
}
