package agent

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sbps-marshal/sbps-marshal/rig"
)

// TestLUNRegistryAuto: with NATS configured and no LUN_REGISTRY set, the
// fleet registry is used; without NATS, or with a NATS that has no
// JetStream, the local one (the latter with a warning); explicit choices
// stay as they are. The choice is logged and exported as a metric.
func TestLUNRegistryAuto(t *testing.T) {
	s := startStack(t)
	noJS := rig.NATSForTest(t, rig.NATSOptions{NoJetStream: true}).ClientURL()
	tests := []struct {
		name     string
		env      []string
		mode     string
		warnings string // in the log, "" = none wanted
	}{
		{"default with JetStream", nil, "nats", ""},
		{"default without NATS", []string{"SBPS_MARSHAL_NATS_URL="}, "local", ""},
		{"default, NATS has no JetStream", []string{"SBPS_MARSHAL_NATS_URL=" + noJS}, "local", "NATS has no JetStream"},
		{"explicit nats", []string{"SBPS_MARSHAL_LUN_REGISTRY=nats"}, "nats", ""},
		{"explicit local", []string{"SBPS_MARSHAL_LUN_REGISTRY=local"}, "local", ""},
		{"explicit off", []string{"SBPS_MARSHAL_LUN_REGISTRY=off"}, "off", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			env := append([]string{"SBPS_MARSHAL_STATE_DIR=" + t.TempDir()}, tc.env...)
			a, _ := newAgentLogged(t, s, Options{}, &log, env...)
			if got := a.RegistryChoice().Mode; got != tc.mode {
				t.Fatalf("LUN registry = %q (%s), want %q", got, a.RegistryChoice().Why, tc.mode)
			}
			if tc.mode == "nats" != (a.fallback != nil) {
				t.Errorf("fleet registry wired = %v, want %v", a.fallback != nil, tc.mode == "nats")
			}
			if !strings.Contains(log.String(), "msg=\"LUN registry\"") && tc.warnings == "" {
				t.Errorf("the choice is not logged:\n%s", log.String())
			}
			if tc.warnings != "" && !strings.Contains(log.String(), tc.warnings) {
				t.Errorf("log lacks warning %q:\n%s", tc.warnings, log.String())
			}
			want := strings.NewReader(`
# HELP sbps_marshal_lun_registry 1 for the LUN registry in use (LUN_REGISTRY, auto resolved): nats, local or off.
# TYPE sbps_marshal_lun_registry gauge
sbps_marshal_lun_registry{mode="local"} ` + one(tc.mode == "local") + `
sbps_marshal_lun_registry{mode="nats"} ` + one(tc.mode == "nats") + `
sbps_marshal_lun_registry{mode="off"} ` + one(tc.mode == "off") + `
`)
			if err := testutil.GatherAndCompare(a.Metrics().Registry(), want, "sbps_marshal_lun_registry"); err != nil {
				t.Error(err)
			}
		})
	}
}

func one(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
