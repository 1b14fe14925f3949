package bridge

import (
	"flag"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// TestConfigDefaultIsDefaultPollInterval: `sbps-marshal bridge ims` takes its
// interval from BRIDGE_POLL_INTERVAL, so that key's default must be
// DefaultPollInterval, the one whose cost BenchmarkIMSListing1000 measures.
func TestConfigDefaultIsDefaultPollInterval(t *testing.T) {
	cfg, _, err := config.Load(config.Sources{Environ: []string{}}, flag.NewFlagSet("test", flag.ContinueOnError))
	if err != nil {
		t.Fatalf("config.Load with no settings: %v", err)
	}
	if cfg.BridgePoll != DefaultPollInterval {
		t.Errorf("BRIDGE_POLL_INTERVAL defaults to %s, DefaultPollInterval is %s: change both together (config/config.go, bridge/ims.go)", cfg.BridgePoll, DefaultPollInterval)
	}
}
