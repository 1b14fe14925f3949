package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/internal/gobuild"
)

// buildOnce builds the simulator once per process (per output directory
// of the first call).
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "targetcli-sim-")
	if err != nil {
		return "", err
	}
	return Build(dir)
})

// Build compiles cmd/targetcli-sim into dir and returns the executable's
// path. It also links dir/targetclid to it, so the daemon can be started
// under its real name.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "targetcli")
	if err := gobuild.Build(bin, "./cmd/targetcli-sim"); err != nil {
		return "", fmt.Errorf("build targetcli simulator: %w", err)
	}
	daemon := filepath.Join(dir, "targetclid")
	os.Remove(daemon)
	if err := os.Symlink(bin, daemon); err != nil {
		return "", fmt.Errorf("link targetclid to the simulator: %w", err)
	}
	return bin, nil
}

// Binary returns the path of the simulator built once for this test
// process, named "targetcli" (with "targetclid" beside it). It fails the
// test when the build fails.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := buildOnce()
	if err != nil {
		tb.Fatalf("targetcli simulator: %v", err)
	}
	return bin
}
