//go:build kernel

package initiator

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// oldAgentCommands are the targetcli command lines the old Python agent
// (Cray-HPE/sbps-marshal, marshal/lib/lio.py at eb2d1ac) runs to project
// one image: create_fileio_backstore, create_lun and save_config, each as
// one process, `targetcli "<command>"`. dev is the image's path under
// SQUASHFS_S3FS_MOUNT (os.path.join(mount, key)).
func oldAgentCommands(name, dev, wwn string) []string {
	return []string{
		"/backstores/fileio create " + name + " " + dev + " 0 false true " + wwn,
		"/iscsi/" + iqn + "/tpg1/luns create /backstores/fileio/" + name,
		"saveconfig",
	}
}

// TestMigrationFromOldAgent: on real LIO, a PE image and an IMS rootfs
// image projected with the old agent's exact targetcli commands give
// `sbps-marshal plan` = "no changes" (exit 0), and plan leaves
// saveconfig.json alone.
func TestMigrationFromOldAgent(t *testing.T) {
	resetNode(t)
	provision(t)
	s := startStack(t)
	pe, _ := s.putPE(t, "CPE-base.x86_64-24.11", 256<<10)
	rootfs := s.addIMSImage(t, "cos-2.5", 256<<10)
	for _, img := range []*image{pe, rootfs} {
		for _, cmd := range oldAgentCommands(img.id.Name, filepath.Join(s.mount(), img.key), img.id.WWN) {
			if out, code := run(t, "", "targetcli", cmd); code != 0 {
				t.Fatalf("the old agent's `targetcli %q`: exit %d\n%s", cmd, code, out)
			}
		}
	}
	c, err := loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	luns := lunMap(c)
	if len(luns) != 2 {
		t.Fatalf("after the old agent's commands saveconfig.json has LUNs %v, want 2", luns)
	}
	t.Logf("the old agent's LUNs: %v", luns)
	savedBefore, err := os.ReadFile(saveFile)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Getenv(agentEnv), "plan")
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := cmd.ProcessState.ExitCode()
	t.Logf("sbps-marshal plan: exit %d\n%s", code, stdout.String())
	if err != nil && code < 0 {
		t.Fatalf("sbps-marshal plan: %v\n%s", err, stderr.String())
	}
	if code != 0 || !strings.Contains(stdout.String(), "no changes") {
		t.Errorf("sbps-marshal plan on a node the old agent set up: exit %d, want 0 and \"no changes\"\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if savedAfter, err := os.ReadFile(saveFile); err != nil || !bytes.Equal(savedBefore, savedAfter) {
		t.Errorf("sbps-marshal plan changed %s (%v)", saveFile, err)
	}
}
