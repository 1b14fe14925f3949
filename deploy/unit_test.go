package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const unitFile = "sbps-marshal.service"

// parseUnit reads a systemd unit file into section -> key -> values (a key
// may repeat). Comments and blank lines are skipped; continuation lines are
// not used in our unit and are rejected.
func parseUnit(t *testing.T, name string, data []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("%s:%d: continuation lines are not expected", name, n)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is not KEY=VALUE inside a section", name, n, line)
		}
		out[section][k] = append(out[section][k], v)
	}
	return out
}

// TestUnitKeys checks the settings operators and the agent rely on.
func TestUnitKeys(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, unitFile, data)
	tests := []struct {
		section, key, want string
	}{
		{"Unit", "After", "network-online.target target.service"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "ExecStart", "/usr/bin/sbps-marshal run"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "EnvironmentFile", "-/etc/sysconfig/sbps-marshal"},
		{"Service", "Restart", "on-failure"},
		{"Service", "RestartSec", "5"},
		{"Service", "WatchdogSec", "5min"},
		// READY=1 comes at the latest agent.StartBudget (60 s) after start.
		{"Service", "TimeoutStartSec", "3min"},
		{"Service", "StateDirectory", "sbps-marshal"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ReadWritePaths", "-/etc/target -/sys/kernel/config /run -/var/lib/cps-local"},
		{"Service", "ProtectHome", "read-only"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "LockPersonality", "yes"},
		{"Service", "RestrictRealtime", "yes"},
		// Tested on the real kernel LIO: the agent's targetcli operations
		// need only these two (the unit's comment says how).
		{"Service", "CapabilityBoundingSet", "CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH"},
		{"Service", "SystemCallFilter", "@system-service"},
		{"Service", "SystemCallErrorNumber", "EPERM"},
		{"Service", "DevicePolicy", "closed"},
		{"Service", "ProtectProc", "invisible"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, tt := range tests {
		got := u[tt.section][tt.key]
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("[%s] %s = %q, want exactly %q", tt.section, tt.key, got, tt.want)
		}
	}
	// Settings that would stop targetcli from working under this unit.
	for _, key := range []string{"ProtectKernelTunables", "PrivateDevices", "ReadOnlyPaths", "InaccessiblePaths", "PrivateNetwork", "DynamicUser", "User", "PrivateUsers", "ProcSubset", "MemoryDenyWriteExecute"} {
		if v, ok := u["Service"][key]; ok {
			t.Errorf("[Service] %s = %q: targetcli needs configfs, /etc/target, devices and root", key, v)
		}
	}
	// The default S3 credential file and the state directory must stay usable.
	if !strings.Contains(string(data), "/root/.ims.s3fs") {
		t.Errorf("%s: the comment on ProtectHome should name the S3 credential file it keeps readable", unitFile)
	}
}

// stubbedUnit writes the unit into a temp dir with ExecStart pointing at an
// executable that exists, since verify checks it; everything else is the
// shipped unit.
func stubbedUnit(t *testing.T, extra string) string {
	t.Helper()
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sbps-marshal")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), "ExecStart=/usr/bin/sbps-marshal ", "ExecStart="+bin+" ", 1)
	if s == string(data) {
		t.Fatalf("%s: no ExecStart=/usr/bin/sbps-marshal line to stub", unitFile)
	}
	s = strings.Replace(s, "[Service]\n", "[Service]\n"+extra, 1)
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnitVerify runs `systemd-analyze verify`, which works without systemd
// running as PID 1. It exits 0 even on unknown keys or bad values (it only
// warns), so any output at all fails the test; the "broken" case proves that.
func TestUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd); the unit's keys are still checked by TestUnitKeys")
	}
	tests := []struct {
		name   string
		extra  string
		wantOK bool
	}{
		{"shipped", "", true},
		{"broken", "ProtectSystem=banana\nBogusKey=1\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := stubbedUnit(t, tt.extra)
			cmd := exec.CommandContext(t.Context(), sa, "verify", path)
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
			out, err := cmd.CombinedOutput()
			ok := err == nil && len(bytes.TrimSpace(out)) == 0
			if ok != tt.wantOK {
				t.Errorf("systemd-analyze verify %s: err=%v output:\n%s\nwant clean=%v", path, err, out, tt.wantOK)
			}
		})
	}
}

// unitExposure is the exposure `systemd-analyze security --offline` gives
// the shipped unit (0 locked down, 10 exposed): 6.2 before
// CapabilityBoundingSet, SystemCallFilter, DevicePolicy, ProtectProc,
// PrivateIPC and PrivateMounts; 2.5 with them (systemd 252). What remains is
// what targetcli and a network client need: root, configfs and /etc/target
// writable, devices visible, the network.
const unitExposure = 2.5

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9])`)

// TestUnitSecurity keeps the hardening from regressing: it fails when the
// unit's exposure rises above unitExposure. (systemd-analyze's --threshold
// would do it by exit status, but reading the score also says what it is.)
func TestUnitSecurity(t *testing.T) {
	checkExposure(t, unitFile, stubbedUnit(t, ""), unitExposure)
}

// checkExposure runs `systemd-analyze security --offline` on the unit file
// at path (name is what messages call it) and fails when its overall
// exposure is above recorded.
func checkExposure(t *testing.T, name, path string, recorded float64) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	cmd := exec.CommandContext(t.Context(), sa, "security", "--offline=true", "--no-pager", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Unknown option") || strings.Contains(string(out), "unrecognized option") {
			t.Skipf("this systemd-analyze has no --offline (systemd < 250): %s", out)
		}
		t.Fatalf("systemd-analyze security %s: %v\n%s", name, err, out)
	}
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure:\n%s", out)
	}
	got, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if got > recorded {
		t.Errorf("exposure of %s is %.1f, above the recorded %.1f: a hardening setting was lost or weakened\n%s", name, got, recorded, out)
	} else {
		t.Logf("%s: exposure %.1f (recorded %.1f)", name, got, recorded)
	}
}
