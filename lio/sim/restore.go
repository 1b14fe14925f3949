package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/internal/gobuild"
	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Restore replaces the live (kernel) state with c, as Debian's `targetctl
// restore <file>` (rtslib's restore_from_file with clear_existing) does
// when target.service starts: whatever was live goes, c's storage objects,
// targets, TPGs, portals, ACLs and LUNs come in.
func (n *Node) Restore(c *lio.Config) error {
	return (&store{dir: n.dir}).mutate(func(st *state) (bool, error) {
		*st = *stateFromConfig(c)
		if st.Targets == nil {
			st.Targets = []target{}
		}
		if st.StorageObjects == nil {
			st.StorageObjects = []storageObject{}
		}
		return true, nil
	})
}

// Clear empties the live state, as `targetctl clear` (target.service's
// stop) and `targetcli clearconfig confirm=True` do; saveconfig.json is
// left as it is.
func (n *Node) Clear() error { return n.Restore(&lio.Config{}) }

// buildTargetctl builds cmd/targetctl-sim once per process.
var buildTargetctl = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "targetctl-sim-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "targetctl")
	if err := gobuild.Build(bin, "./cmd/targetctl-sim"); err != nil {
		return "", fmt.Errorf("build targetctl simulator: %w", err)
	}
	return bin, nil
})

// Targetctl returns the path of the simulator's `targetctl` (restore
// [FILE], clear; the node from TARGETCLI_SIM_DIR), built once for this test
// process. It fails the test when the build fails.
func Targetctl(tb testing.TB) string {
	tb.Helper()
	bin, err := buildTargetctl()
	if err != nil {
		tb.Fatalf("targetctl simulator: %v", err)
	}
	return bin
}
