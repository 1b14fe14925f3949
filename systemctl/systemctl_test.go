package systemctl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/systemctl"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
)

func TestIsActiveAndStart(t *testing.T) {
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{Start: []string{"true"}})
	u := systemctl.Unit{Bin: fake.Path, Name: "target.service", Timeout: 10 * time.Second}
	if s, err := u.IsActive(t.Context()); err != nil || s != "inactive" {
		t.Fatalf("IsActive = %q, %v, want inactive", s, err)
	}
	if err := u.Start(t.Context()); err != nil {
		t.Fatalf("Start = %v", err)
	}
	if s, err := u.IsActive(t.Context()); err != nil || s != systemctl.Active {
		t.Fatalf("IsActive after Start = %q, %v, want active", s, err)
	}
	if got := fake.Calls(t); len(got) != 3 || got[1] != "--no-ask-password --no-pager start target.service" {
		t.Errorf("calls = %q", got)
	}
}

func TestStartFails(t *testing.T) {
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{Start: []string{"false"}})
	u := systemctl.Unit{Bin: fake.Path, Name: "target.service"}
	err := u.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "journalctl -u target.service") {
		t.Errorf("Start = %v, want an error naming journalctl", err)
	}
	if s, err := u.IsActive(t.Context()); err != nil || s != "failed" {
		t.Errorf("IsActive = %q, %v, want failed", s, err)
	}
}

func TestTimeoutKillsTheGroup(t *testing.T) {
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{Start: []string{"sleep", "30"}})
	u := systemctl.Unit{Bin: fake.Path, Name: "target.service", Timeout: 300 * time.Millisecond}
	start := time.Now()
	err := u.Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "took longer than") {
		t.Errorf("Start = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start returned after %s, want about the timeout", d)
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		u    systemctl.Unit
		fail bool
	}{
		{systemctl.Unit{Name: "target.service"}, false},
		{systemctl.Unit{Bin: "systemctl", Name: "target.service"}, true},
		{systemctl.Unit{Name: "--now"}, true},
		{systemctl.Unit{Name: "target.service; reboot"}, true},
		{systemctl.Unit{Name: "target"}, true},
	} {
		if err := tt.u.Check(); (err != nil) != tt.fail {
			t.Errorf("Check(%+v) = %v, want failure %v", tt.u, err, tt.fail)
		}
	}
}

func TestIsEnabled(t *testing.T) {
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{})
	fake.AddUnit(t, "sbps-marshal.service", "inactive", "masked")
	for _, tc := range []struct{ unit, want string }{
		{"target.service", "enabled"},
		{"sbps-marshal.service", "masked"},
	} {
		u := systemctl.Unit{Bin: fake.Path, Name: tc.unit, Timeout: 10 * time.Second}
		if got, err := u.IsEnabled(t.Context()); err != nil || got != tc.want {
			t.Errorf("IsEnabled(%s) = %q, %v; want %q", tc.unit, got, err, tc.want)
		}
	}
	u := systemctl.Unit{Bin: fake.Path, Name: "other.service", Timeout: 10 * time.Second}
	if got, err := u.IsEnabled(t.Context()); err == nil {
		t.Errorf("IsEnabled of a unit systemd does not know = %q, nil; want an error", got)
	}
}
