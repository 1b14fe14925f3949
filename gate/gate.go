package gate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Label and Value are the Kubernetes node label that opens the kubectl
// gate: iscsi=sbps, as the old agent.
const (
	Label = "iscsi"
	Value = "sbps"
)

// DefaultKubeconfig is the kubeconfig the old agent passed to kubectl on
// a CSM worker (SBPS_MARSHAL_KUBECONFIG's default).
const DefaultKubeconfig = "/etc/kubernetes/admin.conf"

// DefaultTimeout bounds one kubectl call when Kubectl.Timeout is zero.
const DefaultTimeout = 15 * time.Second

// maxOutput caps the kubectl stdout and stderr kept (a label is short).
const maxOutput = 4096

// Gate says whether this node may project images.
type Gate interface {
	// Open reports whether the gate is open and why. A non-nil error means
	// the gate could not be read; the caller keeps its current state.
	Open(ctx context.Context) (open bool, why string, err error)
}

var (
	_ Gate = (*Kubectl)(nil)
	_ Gate = File{}
	_ Gate = None{}
)

// Parse builds the gate named by spec (SBPS_MARSHAL_GATE): "kubectl",
// "file:<absolute path>" or "none". nodeName, kubectlBin and kubeconfig
// are used, and validated, only for "kubectl"; kubeconfig may be empty
// (kubectl's own lookup: KUBECONFIG, ~/.kube/config). logger may be nil.
func Parse(spec, nodeName, kubectlBin, kubeconfig string, logger *slog.Logger) (Gate, error) {
	switch {
	case spec == "none":
		return None{}, nil
	case spec == "kubectl":
		k, err := NewKubectl(nodeName, kubectlBin, logger)
		if err != nil {
			return nil, err
		}
		if err := checkKubeconfig(kubeconfig); err != nil {
			return nil, err
		}
		k.Kubeconfig = kubeconfig
		return k, nil
	case strings.HasPrefix(spec, "file:"):
		p := strings.TrimPrefix(spec, "file:")
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("gate %q: the file gate needs an absolute path: set SBPS_MARSHAL_GATE=file:/path/to/file", spec)
		}
		return File{Path: filepath.Clean(p)}, nil
	}
	return nil, fmt.Errorf("gate %q: unknown gate: set SBPS_MARSHAL_GATE to kubectl, file:<absolute path> or none", spec)
}

// None is always open.
type None struct{}

// Open returns true.
func (None) Open(context.Context) (bool, string, error) {
	return true, "gate disabled (GATE=none)", nil
}

// File is open iff Path exists. Its content is ignored.
type File struct {
	Path string
}

// Open stats Path: present means open, missing means closed, any other
// error (permission, I/O) is returned.
func (f File) Open(ctx context.Context) (bool, string, error) {
	if err := ctx.Err(); err != nil {
		return false, "", fmt.Errorf("gate file %s: %w", f.Path, err)
	}
	_, err := os.Stat(f.Path)
	switch {
	case err == nil:
		return true, fmt.Sprintf("gate file %s exists", f.Path), nil
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Sprintf("gate file %s is missing (create it to open the gate)", f.Path), nil
	}
	return false, "", fmt.Errorf("gate file %s: %w (check its directory's permissions)", f.Path, err)
}

// Kubectl is open iff the node's label iscsi is "sbps".
type Kubectl struct {
	Node string // Kubernetes node name; checked by NewKubectl
	Bin  string // absolute path of kubectl; checked by NewKubectl
	// Kubeconfig is passed as --kubeconfig: a system service has no HOME,
	// so kubectl would find no ~/.kube/config and fall back to
	// localhost:8080. Empty = kubectl's own lookup (for a shell with
	// KUBECONFIG or ~/.kube/config). Parse sets it; checked at every Open.
	Kubeconfig string
	Timeout    time.Duration // one kubectl call; 0 = DefaultTimeout
	Logger     *slog.Logger  // nil = discard
}

// NewKubectl checks node and bin and returns a kubectl gate without a
// kubeconfig (set Kubeconfig, or use Parse).
func NewKubectl(node, bin string, logger *slog.Logger) (*Kubectl, error) {
	if err := CheckNodeName(node); err != nil {
		return nil, err
	}
	if err := checkBin(bin); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Kubectl{Node: node, Bin: bin, Logger: logger.With("component", "gate", "gate", "kubectl", "node", node)}, nil
}

// Open runs `kubectl get node <node> -o jsonpath={.metadata.labels.iscsi}
// --kubeconfig=<Kubeconfig>`.
func (k *Kubectl) Open(ctx context.Context) (bool, string, error) {
	if err := k.check(); err != nil {
		return false, "", err
	}
	label, err := k.nodeLabel(ctx)
	if err != nil {
		return false, "", err
	}
	switch label {
	case Value:
		return true, fmt.Sprintf("node %s is labelled %s=%s", k.Node, Label, Value), nil
	case "":
		return false, fmt.Sprintf("node %s has no %s label (label it: kubectl label node %s %s=%s)", k.Node, Label, k.Node, Label, Value), nil
	}
	return false, fmt.Sprintf("node %s is labelled %s=%q, not %s", k.Node, Label, label, Value), nil
}

// check checks the fields again at every Open: they are exported and may
// have been set directly.
func (k *Kubectl) check() error {
	if err := CheckNodeName(k.Node); err != nil {
		return err
	}
	if err := checkBin(k.Bin); err != nil {
		return err
	}
	if err := checkKubeconfig(k.Kubeconfig); err != nil {
		return err
	}
	if k.Kubeconfig == "" {
		return nil
	}
	// The file can come and go (a node joining Kubernetes): checked at
	// every call, so that its absence is named, not kubectl's fallback to
	// localhost:8080.
	fi, err := os.Stat(k.Kubeconfig)
	switch {
	case err != nil:
		return fmt.Errorf("gate: kubeconfig %s: %w (kubectl needs it: a system service has no ~/.kube/config; set SBPS_MARSHAL_KUBECONFIG to this node's kubeconfig, or choose another SBPS_MARSHAL_GATE; the TPG state is left as it is)", k.Kubeconfig, underlying(err))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("gate: kubeconfig %s is not a regular file (set SBPS_MARSHAL_KUBECONFIG to this node's kubeconfig; the TPG state is left as it is)", k.Kubeconfig)
	}
	return nil
}

// nodeLabel runs kubectl, within Timeout, for the node's label Label; ""
// when the node has no such label.
func (k *Kubectl) nodeLabel(ctx context.Context) (string, error) {
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("kubectl took longer than %v", timeout))
	defer cancel()

	args := []string{"get", "node", k.Node, "-o", "jsonpath={.metadata.labels." + Label + "}"}
	if k.Kubeconfig != "" {
		// One argument: the path can never be taken for another flag.
		args = append(args, "--kubeconfig="+k.Kubeconfig)
	}
	var stdout, stderr limitedBuffer
	cmd := k.command(ctx, args, &stdout, &stderr)

	start := time.Now()
	err := cmd.Run()
	logger := k.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.DebugContext(ctx, "kubectl", "args", args, "took", time.Since(start), "err", err)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			msg = ": " + msg
		}
		return "", fmt.Errorf("gate: %s %s: %w%s (the TPG state is left as it is; check SBPS_MARSHAL_KUBECONFIG and the API server, or set SBPS_MARSHAL_GATE)",
			k.Bin, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// command builds the kubectl process in its own process group, killed as a
// whole when ctx ends: a kubectl wrapper script's children must not outlive
// the timeout or hold the pipes open.
func (k *Kubectl) command(ctx context.Context, args []string, stdout, stderr io.Writer) *exec.Cmd {
	cmd := exec.CommandContext(ctx, k.Bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// CheckNodeName reports whether name is a valid Kubernetes node name: an
// RFC 1123 DNS subdomain (lower-case letters, digits, '-' and '.', each
// dot-separated label starting and ending with a letter or digit, at most
// 253 characters).
func CheckNodeName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("gate: node name %q %s: set SBPS_MARSHAL_NODE_NAME to the Kubernetes node name", name, why)
	}
	if name == "" {
		return bad("is empty")
	}
	if len(name) > 253 {
		return bad("is longer than 253 characters")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return bad("has an empty or over-long dot-separated part")
		}
		for i, r := range label {
			alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
			if !alnum && (r != '-' || i == 0 || i == len(label)-1) {
				return bad("is not an RFC 1123 name (lower-case letters, digits, '-' and '.')")
			}
		}
	}
	return nil
}

// checkPlainPath checks that p is a clean absolute path of plain
// characters (letters, digits, /._+-), so that it reaches a command line
// as one harmless argument. what and key name it in the error.
func checkPlainPath(what, p, key string) error {
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("gate: %s %q is not a clean absolute path: set %s", what, p, key)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-", r)) {
			return fmt.Errorf("gate: %s path %q has a character other than letters, digits and /._+-: set %s", what, p, key)
		}
	}
	return nil
}

// checkKubeconfig checks a kubeconfig path; empty is allowed (kubectl's
// own lookup).
func checkKubeconfig(p string) error {
	if p == "" {
		return nil
	}
	return checkPlainPath("kubeconfig", p, "SBPS_MARSHAL_KUBECONFIG")
}

// underlying is the error of a *fs.PathError without its path, which the
// caller's message already names.
func underlying(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkBin checks that bin is a clean absolute path of plain characters
// naming an executable regular file.
func checkBin(bin string) error {
	if err := checkPlainPath("kubectl", bin, "SBPS_MARSHAL_KUBECTL_BIN"); err != nil {
		return err
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return fmt.Errorf("gate: kubectl %s: %w (install kubectl, set SBPS_MARSHAL_KUBECTL_BIN, or choose another SBPS_MARSHAL_GATE)", bin, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("gate: kubectl %s is not an executable file (set SBPS_MARSHAL_KUBECTL_BIN)", bin)
	}
	return nil
}

// limitedBuffer keeps the first maxOutput bytes written and discards the
// rest, so a runaway kubectl cannot fill memory.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
