//go:build kernel

package initiator

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/uml"
)

// agentEnv names the sbps-marshal binary the host built for the guest.
const agentEnv = "SBPS_E2E_AGENT"

func TestMain(m *testing.M) {
	if uml.InGuest() {
		code := m.Run()
		// The binary's directory is on the host's /tmp: the guest removes
		// it, since the host's TestMain exits without returning.
		if bin := os.Getenv(agentEnv); bin != "" {
			os.RemoveAll(filepath.Dir(bin))
		}
		os.Exit(code)
	}
	uml.TestMain(m, buildAgent)
}

// buildAgent runs on the host: it builds cmd/sbps-marshal into a directory
// under /tmp, which the guest sees.
func buildAgent() ([]string, error) {
	dir, err := os.MkdirTemp("/tmp", "sbps-e2e-initiator-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "sbps-marshal")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/sbps-marshal/sbps-marshal/cmd/sbps-marshal")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("go build ./cmd/sbps-marshal: %w\n%s", err, out)
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		os.RemoveAll(dir)
		return nil, errors.New("mksquashfs not found: install the Debian package squashfs-tools (scripts/test-deps)")
	}
	return []string{agentEnv + "=" + bin}, nil
}
