package config

import (
	"strings"
	"testing"
)

// TestLUNRegistryDefault: LUN_REGISTRY defaults to auto (the fleet registry
// when NATS is configured, resolved by the agent), valid with or without
// NATS_URL; nats, local and off are still accepted; nats still needs
// NATS_URL.
func TestLUNRegistryDefault(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    string
		wantErr string
	}{
		{"default, no NATS", nil, "auto", ""},
		{"default, NATS", []string{"SBPS_MARSHAL_NATS_URL=nats://nats:4222"}, "auto", ""},
		{"nats", []string{"SBPS_MARSHAL_NATS_URL=nats://nats:4222", "SBPS_MARSHAL_LUN_REGISTRY=nats"}, "nats", ""},
		{"local", []string{"SBPS_MARSHAL_LUN_REGISTRY=local"}, "local", ""},
		{"off", []string{"SBPS_MARSHAL_LUN_REGISTRY=off"}, "off", ""},
		{"nats without NATS_URL", []string{"SBPS_MARSHAL_LUN_REGISTRY=nats"}, "", "the fleet registry needs NATS_URL"},
		{"unknown", []string{"SBPS_MARSHAL_LUN_REGISTRY=fleet"}, "", "want one of auto, nats, local, off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, nil, tt.env...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load(%v) error = %v, want it to contain %q", tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.LUNRegistry != tt.want {
				t.Errorf("Load(%v).LUNRegistry = %q, want %q", tt.env, c.LUNRegistry, tt.want)
			}
		})
	}
}
