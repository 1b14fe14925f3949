package natsauth

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
)

// TestNATSAuthBadSeed: a seed file that holds no NKey seed fails every NATS
// connection's options with an error naming NATS_NKEY_SEED and the file,
// never the file's content (the registry, bridges and resync --all once
// connected without the seed, unauthenticated).
func TestNATSAuthBadSeed(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "node.nk")
	if err := os.WriteFile(seed, []byte("SUnot-a-seed-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(config.Sources{Environ: []string{
		"SBPS_MARSHAL_NODE_NAME=ncn-w001",
		"SBPS_MARSHAL_NATS_URL=nats://127.0.0.1:4222",
		"SBPS_MARSHAL_NATS_NKEY_SEED=" + seed,
	}}, flag.NewFlagSet("test", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := New(t.Context(), cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	opts, err := auth.Options()
	if err == nil {
		t.Fatalf("Options() = %d options, nil error; want an error naming NATS_NKEY_SEED", len(opts))
	}
	for _, want := range []string{"NATS_NKEY_SEED", seed} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Options() error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "not-a-seed-secret") {
		t.Errorf("Options() error %q shows the file's content", err)
	}
}
