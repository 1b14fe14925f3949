// Package kubectltest is a kubectl stand-in for tests: a small program
// (built by Build or Binary from ./kubectl) that behaves like real kubectl
// where the node gate depends on it.
//
// It finds its kubeconfig as kubectl (client-go's loading rules) does: the
// --kubeconfig flag (a missing file is an error), else the first existing
// file of the KUBECONFIG variable's colon-separated list, else
// $HOME/.kube/config, which for a process without HOME (a systemd system
// service) is .kube/config under the working directory. With no kubeconfig
// it does what real kubectl does, falls back to localhost:8080, and fails:
//
//	The connection to the server localhost:8080 was refused - did you specify the right host or port?
//
// with exit status 1. With one, it reads the cluster's nodes from the
// fixture its server names ("file:///path/nodes.json", written by
// WriteCluster; the shape of `kubectl get nodes -o json`) and answers
//
//	get node <name> -o jsonpath={.metadata.labels.<label>}
//	get nodes --selector=<k>=<v>[,...] -o jsonpath={.items[*].metadata.name}
//
// (the agent's query and the old Python agent's), printing without a
// trailing newline, as kubectl's jsonpath output does. An unknown node is
// `Error from server (NotFound): nodes "<name>" not found`, exit 1.
package kubectltest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/internal/gobuild"
)

// Refused is what real kubectl prints, last, when it has no kubeconfig and
// nothing listens on localhost:8080.
const Refused = "The connection to the server localhost:8080 was refused - did you specify the right host or port?"

// Node is one Kubernetes node of the fixture.
type Node struct {
	Name   string
	Labels map[string]string
}

// nodeList is the fixture: the shape of `kubectl get nodes -o json`.
type nodeList struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Items      []nodeItem `json:"items"`
}

type nodeItem struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
}

// WriteCluster writes a kubeconfig at path (its directory is created) whose
// cluster is a fixture holding nodes, in path + ".nodes.json". Calling it
// again replaces the nodes (relabelling, say).
func WriteCluster(path string, nodes ...Node) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("kubectltest: kubeconfig path %q is not absolute", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	list := nodeList{APIVersion: "v1", Kind: "List"}
	for _, n := range nodes {
		var it nodeItem
		it.Metadata.Name, it.Metadata.Labels = n.Name, n.Labels
		list.Items = append(list.Items, it)
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	fixture := path + ".nodes.json"
	if err := os.WriteFile(fixture, data, 0o600); err != nil {
		return err
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    server: file://%s
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
users:
- name: kubernetes-admin
  user: {}
`, fixture)
	return os.WriteFile(path, []byte(kubeconfig), 0o600)
}

// Run is the stand-in: it runs kubectl's command line args with the
// environment getenv and returns what kubectl prints on stdout, or the
// error it prints on stderr before exiting 1.
func Run(args []string, getenv func(string) string) (string, error) {
	explicit, rest, err := globalFlags(args)
	if err != nil {
		return "", err
	}
	path, err := kubeconfigPath(explicit, getenv)
	if err != nil {
		return "", err
	}
	if path == "" {
		return "", errors.New(`E0101 00:00:00.000000       1 memcache.go:265] "Unhandled Error" err="couldn't get current server API group list: Get \"http://localhost:8080/api?timeout=32s\": dial tcp 127.0.0.1:8080: connect: connection refused"` + "\n" + Refused)
	}
	nodes, err := readCluster(path)
	if err != nil {
		return "", err
	}
	return query(rest, nodes)
}

// globalFlags takes --kubeconfig out of args; other flags stay.
func globalFlags(args []string) (kubeconfig *string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--kubeconfig":
			if i+1 == len(args) {
				return nil, nil, errors.New("error: flag needs an argument: --kubeconfig")
			}
			v := args[i+1]
			kubeconfig = &v
			i++
		case strings.HasPrefix(a, "--kubeconfig="):
			v := strings.TrimPrefix(a, "--kubeconfig=")
			kubeconfig = &v
		default:
			rest = append(rest, a)
		}
	}
	return kubeconfig, rest, nil
}

// kubeconfigPath follows client-go's loading rules; "" means none.
func kubeconfigPath(explicit *string, getenv func(string) string) (string, error) {
	if explicit != nil && *explicit != "" {
		if _, err := os.Stat(*explicit); err != nil {
			return "", fmt.Errorf("error: stat %s: %w", *explicit, underlying(err))
		}
		return *explicit, nil
	}
	if list := getenv("KUBECONFIG"); list != "" {
		for p := range strings.SplitSeq(list, ":") {
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	// homedir.HomeDir() is $HOME on Linux; without it the path is relative.
	home := filepath.Join(getenv("HOME"), ".kube", "config")
	if _, err := os.Stat(home); err == nil {
		return home, nil
	}
	return "", nil
}

func underlying(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func readCluster(path string) ([]Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("error: loading config file %q: %w", path, underlying(err))
	}
	server := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "server:"); ok {
			server = strings.TrimSpace(v)
			break
		}
	}
	if server == "" {
		return nil, errors.New("error: invalid configuration: no configuration has been provided, try setting KUBERNETES_MASTER environment variable")
	}
	fixture, ok := strings.CutPrefix(server, "file://")
	if !ok {
		return nil, fmt.Errorf("Unable to connect to the server: the kubectl stand-in serves only file:// fixtures, got %s", server)
	}
	raw, err := os.ReadFile(fixture)
	if err != nil {
		return nil, fmt.Errorf("Unable to connect to the server: %w", underlying(err))
	}
	var list nodeList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("Unable to connect to the server: fixture %s: %w", fixture, err)
	}
	nodes := make([]Node, 0, len(list.Items))
	for _, it := range list.Items {
		nodes = append(nodes, Node{Name: it.Metadata.Name, Labels: it.Metadata.Labels})
	}
	return nodes, nil
}

// query answers `get node(s) ...`.
func query(args []string, nodes []Node) (string, error) {
	var positional []string
	output, selector := "", ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--output" || a == "-l" || a == "--selector":
			if i+1 == len(args) {
				return "", fmt.Errorf("error: flag needs an argument: %s", a)
			}
			if a == "-o" || a == "--output" {
				output = args[i+1]
			} else {
				selector = args[i+1]
			}
			i++
		case strings.HasPrefix(a, "-o="), strings.HasPrefix(a, "--output="):
			_, output, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "--selector="), strings.HasPrefix(a, "-l="):
			_, selector, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "-"):
			return "", fmt.Errorf("error: unknown flag: %s\nSee 'kubectl get --help' for usage.", a)
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) < 2 || positional[0] != "get" || (positional[1] != "node" && positional[1] != "nodes" && positional[1] != "no") {
		return "", fmt.Errorf("error: the kubectl stand-in answers only `get node(s)`, got %q", strings.Join(args, " "))
	}
	switch len(positional) {
	case 3:
		name := positional[2]
		i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == name })
		if i < 0 {
			return "", fmt.Errorf("Error from server (NotFound): nodes %q not found", name)
		}
		label, ok := strings.CutPrefix(output, "jsonpath={.metadata.labels.")
		if !ok || !strings.HasSuffix(label, "}") {
			return "", fmt.Errorf("error: the kubectl stand-in answers only -o jsonpath={.metadata.labels.<label>} for one node, got %q", output)
		}
		return nodes[i].Labels[strings.TrimSuffix(label, "}")], nil
	case 2:
		if output != "jsonpath={.items[*].metadata.name}" {
			return "", fmt.Errorf("error: the kubectl stand-in answers only -o jsonpath={.items[*].metadata.name} for a node list, got %q", output)
		}
		var names []string
		for _, n := range nodes {
			if matches(n.Labels, selector) {
				names = append(names, n.Name)
			}
		}
		return strings.Join(names, " "), nil
	}
	return "", fmt.Errorf("error: the kubectl stand-in answers one node name at most, got %q", strings.Join(positional[2:], " "))
}

// matches reports whether labels satisfy an equality selector k=v,k2=v2.
func matches(labels map[string]string, selector string) bool {
	if selector == "" {
		return true
	}
	for req := range strings.SplitSeq(selector, ",") {
		k, v, _ := strings.Cut(req, "=")
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Build compiles the stand-in into dir/kubectl and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "kubectl")
	if err := gobuild.Build(bin, "./gate/kubectltest/kubectl"); err != nil {
		return "", fmt.Errorf("build kubectl stand-in: %w", err)
	}
	return bin, nil
}

var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kubectl-standin-")
	if err != nil {
		return "", err
	}
	return Build(dir)
})

// Binary returns the stand-in built once for this test process. It fails
// the test when the build fails.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := buildOnce()
	if err != nil {
		tb.Fatalf("kubectl stand-in: %v", err)
	}
	return bin
}
