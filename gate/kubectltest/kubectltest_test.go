package kubectltest_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/gate/kubectltest"
)

// TestStandInFindsKubeconfigAsKubectl runs the built stand-in with the
// environments a real kubectl meets and checks it answers, or fails, as
// kubectl does.
func TestStandInFindsKubeconfigAsKubectl(t *testing.T) {
	bin := kubectltest.Binary(t)
	dir := t.TempDir()
	admin := filepath.Join(dir, "etc", "kubernetes", "admin.conf")
	home := filepath.Join(dir, "root")
	nodes := []kubectltest.Node{
		{Name: "ncn-w001", Labels: map[string]string{"iscsi": "sbps", "kubernetes.io/hostname": "ncn-w001"}},
		{Name: "ncn-w002", Labels: map[string]string{"kubernetes.io/hostname": "ncn-w002"}},
	}
	for _, p := range []string{admin, filepath.Join(home, ".kube", "config")} {
		if err := kubectltest.WriteCluster(p, nodes...); err != nil {
			t.Fatal(err)
		}
	}
	label := []string{"get", "node", "ncn-w001", "-o", "jsonpath={.metadata.labels.iscsi}"}
	tests := []struct {
		name       string
		env        []string
		args       []string
		wantOut    string
		wantStderr string // substring; "" = exit 0
	}{
		{name: "no kubeconfig, no HOME (systemd)", args: label, wantStderr: kubectltest.Refused},
		{name: "HOME without .kube", env: []string{"HOME=" + dir}, args: label, wantStderr: kubectltest.Refused},
		{name: "KUBECONFIG naming a missing file", env: []string{"KUBECONFIG=" + filepath.Join(dir, "none")}, args: label, wantStderr: kubectltest.Refused},
		{name: "HOME with .kube/config", env: []string{"HOME=" + home}, args: label, wantOut: "sbps"},
		{name: "KUBECONFIG", env: []string{"KUBECONFIG=" + filepath.Join(dir, "none") + ":" + admin}, args: label, wantOut: "sbps"},
		{name: "--kubeconfig", args: append([]string{"--kubeconfig", admin}, label...), wantOut: "sbps"},
		{name: "--kubeconfig= after the command", args: append(label, "--kubeconfig="+admin), wantOut: "sbps"},
		{name: "--kubeconfig missing", env: []string{"HOME=" + home}, args: append(label, "--kubeconfig="+filepath.Join(dir, "none")),
			wantStderr: "error: stat " + filepath.Join(dir, "none") + ": no such file or directory"},
		{name: "unlabelled node", args: []string{"--kubeconfig=" + admin, "get", "node", "ncn-w002", "-o", "jsonpath={.metadata.labels.iscsi}"}},
		{name: "unknown node", args: []string{"--kubeconfig=" + admin, "get", "node", "ncn-w009", "-o", "jsonpath={.metadata.labels.iscsi}"},
			wantStderr: `Error from server (NotFound): nodes "ncn-w009" not found`},
		{name: "old agent's selector query", args: []string{"get", "nodes", "--selector=iscsi=sbps,kubernetes.io/hostname=ncn-w001", "-o", "jsonpath={.items[*].metadata.name}", "--kubeconfig", admin},
			wantOut: "ncn-w001"},
		{name: "selector matching nothing", args: []string{"get", "nodes", "--selector=iscsi=sbps,kubernetes.io/hostname=ncn-w002", "-o", "jsonpath={.items[*].metadata.name}", "--kubeconfig", admin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = tt.env
			if cmd.Env == nil {
				cmd.Env = []string{} // not the test's own environment
			}
			cmd.Dir = "/" // systemd's working directory
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.wantStderr != "" {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), tt.wantStderr) {
					t.Fatalf("kubectl %q = %v, stderr %q; want exit 1 and stderr containing %q", tt.args, err, stderr.String(), tt.wantStderr)
				}
				return
			}
			if err != nil || stdout.String() != tt.wantOut {
				t.Fatalf("kubectl %q = %q, %v (stderr %q); want %q, exit 0", tt.args, stdout.String(), err, stderr.String(), tt.wantOut)
			}
		})
	}
}

// TestStandInRelabel: WriteCluster again changes what the stand-in answers.
func TestStandInRelabel(t *testing.T) {
	p := filepath.Join(t.TempDir(), "admin.conf")
	args := []string{"--kubeconfig", p, "get", "node", "n1", "-o", "jsonpath={.metadata.labels.iscsi}"}
	for _, want := range []string{"sbps", ""} {
		labels := map[string]string{}
		if want != "" {
			labels["iscsi"] = want
		}
		if err := kubectltest.WriteCluster(p, kubectltest.Node{Name: "n1", Labels: labels}); err != nil {
			t.Fatal(err)
		}
		got, err := kubectltest.Run(args, func(string) string { return "" })
		if err != nil || got != want {
			t.Errorf("Run(%q) = %q, %v; want %q", args, got, err, want)
		}
	}
	if _, err := os.Stat(p + ".nodes.json"); err != nil {
		t.Errorf("fixture beside the kubeconfig: %v", err)
	}
}
