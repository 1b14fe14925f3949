//go:build kernel

package guesttest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/uml"
)

func TestMain(m *testing.M) {
	uml.TestMain(m, func(dir string) ([]string, error) {
		return []string{"SBPS_GUESTTEST_FROM_HOST=yes", "SBPS_GUESTTEST_DIR=" + dir}, os.WriteFile(dir+"/from-host", []byte("yes"), 0o644)
	})
}

// TestRunsInsideTheGuest: the test binary runs in the guest, with the
// environment the host's setup gave, the real LIO and targetcli.
func TestRunsInsideTheGuest(t *testing.T) {
	if !uml.InGuest() {
		t.Fatal("the test ran on the host")
	}
	if got := os.Getenv("SBPS_GUESTTEST_FROM_HOST"); got != "yes" {
		t.Errorf("setup's environment did not reach the guest: %q", got)
	}
	if _, err := os.Stat("/sys/kernel/config/target/iscsi"); err != nil {
		out, _ := exec.Command("targetcli", "ls").CombinedOutput()
		if _, err := os.Stat("/sys/kernel/config/target/iscsi"); err != nil {
			t.Fatalf("no iSCSI target in configfs after targetcli ls: %v\n%s", err, out)
		}
	}
	if b, err := os.ReadFile(os.Getenv("SBPS_GUESTTEST_DIR") + "/from-host"); err != nil || string(b) != "yes" {
		t.Errorf("setup's directory is not shared with the guest: %q, %v", b, err)
	}
	wd, _ := os.Getwd()
	if _, err := os.Stat(wd + "/guest_kernel_test.go"); err != nil {
		t.Errorf("the guest does not start in the package directory %s: %v", wd, err)
	}
}
