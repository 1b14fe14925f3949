//go:build kernel

package rebuild

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/uml"
)

// agentEnv names the sbps-marshal binary the host built for the guest.
const agentEnv = "SBPS_E2E_AGENT"

func TestMain(m *testing.M) { uml.TestMain(m, buildAgent) }

// buildAgent runs on the host: it builds cmd/sbps-marshal into dir, under
// /tmp, which the guest sees.
func buildAgent(dir string) ([]string, error) {
	bin := filepath.Join(dir, "sbps-marshal")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/sbps-marshal/sbps-marshal/cmd/sbps-marshal")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/sbps-marshal: %w\n%s", err, out)
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return nil, errors.New("mksquashfs not found: install the Debian package squashfs-tools (scripts/test-deps)")
	}
	return []string{agentEnv + "=" + bin}, nil
}
