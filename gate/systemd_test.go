package gate_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/deploy"
	"github.com/sbps-marshal/sbps-marshal/gate"
	"github.com/sbps-marshal/sbps-marshal/gate/kubectltest"
)

// helperArg, as the first argument after "--", makes the test binary the
// gate helper process instead of running tests (see TestMain).
const helperArg = "gate-helper"

// TestMain runs the gate helper when asked to: the test binary started
// under `env -i` with nothing but the unit's environment, as systemd starts
// the agent, reads the configuration as the agent does (an env file in
// EnvironmentFile= form), builds the node gate and asks it once. It prints
// the answer and exits 0 when the gate is open, 3 when closed, 1 on error.
func TestMain(m *testing.M) {
	flag.Parse()
	if args := flag.Args(); len(args) == 2 && args[0] == helperArg {
		os.Exit(gateHelper(args[1]))
	}
	os.Exit(m.Run())
}

func gateHelper(envFile string) int {
	cfg, _, err := config.Load(config.Sources{Args: []string{"--env-file", envFile}, Environ: os.Environ()},
		flag.NewFlagSet("helper", flag.ContinueOnError))
	if err != nil {
		fmt.Println("config:", err)
		return 1
	}
	g, err := gate.Parse(cfg.Gate, cfg.NodeName, cfg.KubectlBin, cfg.Kubeconfig, nil)
	if err != nil {
		fmt.Println("gate:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open, why, err := g.Open(ctx)
	switch {
	case err != nil:
		fmt.Println("open:", err)
		return 1
	case !open:
		fmt.Println("closed:", why)
		return 3
	}
	fmt.Println("open:", why)
	return 0
}

// unitEnvironment returns the Environment= assignments of the shipped unit.
func unitEnvironment(t *testing.T) []string {
	t.Helper()
	env := deploy.UnitEnvironment()
	if len(env) == 0 {
		t.Fatal("deploy/sbps-marshal.service has no Environment= line")
	}
	return env
}

// runUnderSystemd runs the gate helper with `env -i`, the unit's
// Environment= and envFile as its EnvironmentFile, in /, as systemd runs
// sbps-marshal.service.
func runUnderSystemd(t *testing.T, envFile string) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	envBin, err := exec.LookPath("env")
	if err != nil {
		t.Fatalf("env(1) is needed to start the helper with an empty environment: %v", err)
	}
	args := append([]string{"-i"}, unitEnvironment(t)...)
	args = append(args, self, "-test.run=^$", "--", helperArg, envFile)
	cmd := exec.Command(envBin, args...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// TestKubectlGateUnderSystemd: the node gate, started as systemd starts the
// agent (no HOME, so kubectl finds no ~/.kube/config and would fall back to
// localhost:8080), reads the label through the kubeconfig
// SBPS_MARSHAL_KUBECONFIG names, as the old agent passed
// --kubeconfig /etc/kubernetes/admin.conf.
func TestKubectlGateUnderSystemd(t *testing.T) {
	kubectl := kubectltest.Binary(t)
	dir := t.TempDir()
	admin := filepath.Join(dir, "etc", "kubernetes", "admin.conf")
	if err := kubectltest.WriteCluster(admin, kubectltest.Node{Name: "ncn-w001", Labels: map[string]string{"iscsi": "sbps"}}); err != nil {
		t.Fatal(err)
	}
	// root's own kubeconfig works in a login shell, never for the service.
	if err := kubectltest.WriteCluster(filepath.Join(dir, "root", ".kube", "config"), kubectltest.Node{Name: "ncn-w001", Labels: map[string]string{"iscsi": "sbps"}}); err != nil {
		t.Fatal(err)
	}
	base := "SBPS_MARSHAL_GATE=kubectl\nSBPS_MARSHAL_NODE_NAME=ncn-w001\nSBPS_MARSHAL_KUBECTL_BIN=" + kubectl + "\n"
	tests := []struct {
		name     string
		envFile  string
		wantCode int
		want     []string
	}{
		{name: "kubeconfig from the env file", envFile: base + "SBPS_MARSHAL_KUBECONFIG=" + admin + "\n",
			want: []string{"open: node ncn-w001 is labelled iscsi=sbps"}},
		{name: "default kubeconfig absent on this host", envFile: base, wantCode: 1,
			want: []string{"/etc/kubernetes/admin.conf", "SBPS_MARSHAL_KUBECONFIG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.envFile == base {
				if _, err := os.Stat("/etc/kubernetes/admin.conf"); err == nil {
					t.Fatal("this host has /etc/kubernetes/admin.conf: the case needs a host without it")
				}
			}
			envFile := filepath.Join(t.TempDir(), "sysconfig")
			if err := os.WriteFile(envFile, []byte(tt.envFile), 0o600); err != nil {
				t.Fatal(err)
			}
			out, code := runUnderSystemd(t, envFile)
			if code != tt.wantCode {
				t.Fatalf("gate under systemd's environment exited %d, want %d:\n%s", code, tt.wantCode, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("gate under systemd's environment said %q, want it to contain %q", out, w)
				}
			}
			if strings.Contains(out, "localhost:8080") {
				t.Errorf("kubectl fell back to localhost:8080: %s", out)
			}
		})
	}
}
