package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/gate"
)

// checkGate yields the kubectl, kubeconfig and node gate rows. The gate
// row asks the gate the agent builds (gate.Parse) whether it is open.
func checkGate(ctx context.Context, cfg *config.Config, o Options) []Result {
	if cfg.Gate != "kubectl" {
		notUsed := "not used (GATE=" + cfg.Gate + ")"
		return []Result{
			{Name: RowKubectl, Status: OK, Detail: notUsed},
			{Name: RowKubeconfig, Status: OK, Detail: notUsed},
			bounded(ctx, o.Timeout, RowGate, "check the gate file's file system", func(ctx context.Context) Result { return gateRow(ctx, cfg, o) }),
		}
	}
	kubectl := Result{Name: RowKubectl, Status: OK, Detail: cfg.KubectlBin + " is executable"}
	if _, err := gate.NewKubectl(cfg.NodeName, cfg.KubectlBin, nil); err != nil {
		kubectl.Status, kubectl.Detail = Fail, errText(err)
		if gate.CheckNodeName(cfg.NodeName) != nil {
			kubectl.Fix = setKey(cfg, "NODE_NAME", "<this node's Kubernetes name>")
		} else {
			kubectl.Fix = "install kubectl, or " + setKey(cfg, "KUBECTL_BIN", "<path of kubectl>") + " (or choose another SBPS_MARSHAL_GATE: file:<path> or none)"
		}
	}
	kubeconfig := kubeconfigRow(cfg)
	var g Result
	switch {
	case kubectl.Status == Fail:
		g = skipped(RowGate, RowKubectl, "kubectl is not usable")
	case kubeconfig.Status == Fail:
		g = skipped(RowGate, RowKubeconfig, "the kubeconfig is not readable")
	default:
		g = bounded(ctx, o.Timeout, RowGate, "check the Kubernetes API server (kubectl get node "+cfg.NodeName+" --kubeconfig="+cfg.Kubeconfig+")",
			func(ctx context.Context) Result { return gateRow(ctx, cfg, o) })
	}
	return []Result{kubectl, kubeconfig, g}
}

// kubeconfigRow checks that KUBECONFIG names a readable regular file, as
// kubectl under systemd (no HOME) needs it.
func kubeconfigRow(cfg *config.Config) Result {
	r := Result{Name: RowKubeconfig}
	if cfg.Kubeconfig == "" {
		r.Status = Warn
		r.Detail = "KUBECONFIG is empty: kubectl's own lookup (KUBECONFIG, ~/.kube/config), which under systemd (no HOME) finds none and fails on localhost:8080"
		r.Fix = setKey(cfg, "KUBECONFIG", gate.DefaultKubeconfig)
		return r
	}
	f, err := os.Open(cfg.Kubeconfig)
	if err == nil {
		defer f.Close()
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && !fi.Mode().IsRegular() {
			err = errors.New("not a regular file")
		}
		if err == nil {
			_, err = f.Read(make([]byte, 1))
			if errors.Is(err, io.EOF) {
				err = errors.New("empty file")
			}
		}
		if err == nil {
			r.Status, r.Detail = OK, fmt.Sprintf("%s is readable (%d bytes)", cfg.Kubeconfig, fi.Size())
			return r
		}
	}
	r.Status, r.Detail = Fail, fmt.Sprintf("kubeconfig %s (SBPS_MARSHAL_KUBECONFIG): %s: kubectl cannot ask for the node label", cfg.Kubeconfig, reason(err))
	switch {
	case errors.Is(err, fs.ErrPermission):
		r.Fix = "run doctor as root, as the service runs, or make " + cfg.Kubeconfig + " readable by root"
	default:
		r.Fix = "put this node's kubeconfig at " + cfg.Kubeconfig + " (CSM: " + gate.DefaultKubeconfig + ", the admin kubeconfig the old agent used), or " + setKey(cfg, "KUBECONFIG", "<path of this node's kubeconfig>")
	}
	return r
}

// gateRow asks the agent's gate whether this node may project.
func gateRow(ctx context.Context, cfg *config.Config, o Options) Result {
	r := Result{Name: RowGate}
	g, err := gate.Parse(cfg.Gate, cfg.NodeName, cfg.KubectlBin, cfg.Kubeconfig, o.Logger)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), setKey(cfg, "GATE", "kubectl, file:<path> or none")
		return r
	}
	open, why, err := g.Open(ctx)
	switch {
	case err != nil && strings.Contains(err.Error(), "(NotFound)"):
		r.Status, r.Detail = Fail, errText(err)
		r.Fix = fmt.Sprintf("the cluster has no node %s: %s (kubectl get nodes lists them)", cfg.NodeName, setKey(cfg, "NODE_NAME", "<this node's Kubernetes name>"))
	case err != nil:
		r.Status, r.Detail = Fail, errText(err)
		r.Fix = "the agent keeps tpg1 as it is while the gate cannot be read: check the API server and SBPS_MARSHAL_KUBECONFIG (" + orDefault(cfg.Kubeconfig, "empty") + "), or choose another SBPS_MARSHAL_GATE in " + envFile(cfg)
	case open:
		r.Status, r.Detail = OK, why+": the agent projects images on this node"
	default:
		r.Status = Warn
		r.Detail = why + ": the agent projects nothing on this node and keeps tpg1 of " + cfg.TargetIQN + " disabled"
		switch {
		case strings.HasPrefix(cfg.Gate, "file:"):
			r.Fix = "if this node should serve boot images: touch " + strings.TrimPrefix(cfg.Gate, "file:")
		default:
			r.Fix = fmt.Sprintf("if this node should serve boot images: kubectl label node %s %s=%s (CSM labels the workers of HSM group iscsi_worker through config_sbps_iscsi_targets.yml)", cfg.NodeName, gate.Label, gate.Value)
		}
	}
	return r
}

// reason is err without the path a *fs.PathError repeats.
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// statExec says why p is not an executable regular file, if it is not.
func statExec(p string) (os.FileInfo, error) {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return nil, errors.New(reason(err))
	case !fi.Mode().IsRegular():
		return nil, errors.New("not a regular file")
	case fi.Mode().Perm()&0o111 == 0:
		return nil, errors.New("not executable")
	}
	return fi, nil
}
