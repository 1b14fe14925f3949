package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// What deploy/bridges holds: the systemd units of the two bridges, their
// example env file and Kubernetes manifests (issue 16).
const (
	bridgeDir     = "bridges"
	bridgeEnvFile = "bridges/sbps-marshal-bridge.env"
	bridgeEnvDst  = "/etc/sysconfig/sbps-marshal-bridge" // the units' EnvironmentFile
	bridgeBinDst  = "/usr/bin/sbps-marshal"
)

// bridgeUnits are the units and the bridge each runs. exposure is what
// `systemd-analyze security --offline=true` gave each (systemd 252): root
// without capabilities in its own user namespace; what remains is root's uid
// (SPIRE registers uid 0), the host's network and root directory, and no IP
// allow list (site-specific).
var bridgeUnits = []struct {
	file, sub string
	exposure  float64
}{
	{"sbps-marshal-bridge-webhook.service", "webhook", 1.4},
	{"sbps-marshal-bridge-ims.service", "ims", 1.4},
}

// bridgeKeySections returns the configuration keys a bridge reads
// (cmd/sbps-marshal/bridge.go, natsauth, agent.NewIMSClient, the logger), in
// the order of the example env file. The webhook's are every BRIDGE_ key but
// BRIDGE_POLL_INTERVAL, so that a new webhook key joins the file by itself.
func bridgeKeySections() []struct {
	title string
	keys  []string
} {
	var webhook []string
	for _, k := range config.Keys() {
		name := strings.TrimPrefix(k.Env, config.EnvPrefix)
		if strings.HasPrefix(name, "BRIDGE_") && name != "BRIDGE_POLL_INTERVAL" {
			webhook = append(webhook, name)
		}
	}
	return []struct {
		title string
		keys  []string
	}{
		{"Both bridges: NATS and logging", []string{
			"NATS_URL", "NATS_STREAM", "NATS_S3_SUBJECT", "NATS_IMS_SUBJECT",
			"NATS_CREDS", "NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY",
			"NATS_SPIFFE", "NATS_SPIFFE_SERVER_ID", "SPIFFE_SOURCE", "SPIRE_AGENT_PATH", "SPIRE_AGENT_SOCK_PATH",
			"LOG_FORMAT", "LOG_LEVEL",
		}},
		{"bridge webhook (sbps-marshal-bridge-webhook.service)", webhook},
		{"bridge ims (sbps-marshal-bridge-ims.service)", []string{
			"BRIDGE_POLL_INTERVAL", "API_GATEWAY", "IMS_URI", "IMS_TIMEOUT", "IMS_AUTH", "IMS_TOKEN_FILE",
			"SPIRE_JWT_AUDIENCE", "XNAME_FILE", "CA_FILE", "TLS_INSECURE_SKIP_VERIFY", "STATE_DIR",
		}},
	}
}

// bridgeConfigKey returns the key whose environment variable is env: one of
// config.Keys(), or config.EnvFileKey() (which the units set to read no
// other env file).
func bridgeConfigKey(env string) (config.Key, bool) {
	if env == config.EnvFileKey().Env {
		return config.EnvFileKey(), true
	}
	i := slices.IndexFunc(config.Keys(), func(k config.Key) bool { return k.Env == env })
	if i < 0 {
		return config.Key{}, false
	}
	return config.Keys()[i], true
}

// bridgeParseUnit reads a unit file into section -> key -> values.
func bridgeParseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseUnit(t, path, data)
}

// bridgeUnitEnv returns the unit's Environment= assignments as KEY=value.
func bridgeUnitEnv(u map[string]map[string][]string) []string {
	var env []string
	for _, v := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(v) {
			env = append(env, strings.Trim(kv, `"`))
		}
	}
	return env
}

// bridgeBuild builds the real command into a temporary directory: the units'
// ExecStart and the manifests' args are run with it, and systemd-analyze
// verify wants ExecStart's binary to exist.
func bridgeBuild(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH; cannot build cmd/sbps-marshal to run the bridges' command lines")
	}
	bin := filepath.Join(t.TempDir(), "sbps-marshal")
	cmd := exec.CommandContext(t.Context(), goBin, "build", "-o", bin, "../cmd/sbps-marshal")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/sbps-marshal: %v\n%s", err, out)
	}
	return bin
}

// bridgeRun runs the built command with args and exactly env: no inherited
// SBPS_MARSHAL_ variable, no env file unless env or args name one.
func bridgeRun(t *testing.T, bin string, args, env []string) (code int, stderr string) {
	t.Helper()
	clean := append([]string{"PATH=/usr/bin:/bin", config.EnvFileKey().Env + "="}, env...)
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = clean
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), errb.String()
	}
	t.Fatalf("running %s %q: %v", bin, args, err)
	return 0, ""
}

// bridgeCheckCommand runs a bridge's command line args with env twice:
//
//   - as given, but NATS_URL and NATS_STREAM (which needs NATS_URL) removed:
//     the bridge must stop with "NATS_URL is empty", which bridgeMain says
//     only once the command line was understood (a line that is not exits
//     64) and the rest of the configuration loaded (a bad key exits 1
//     naming the key);
//   - `config` with the whole env: the whole configuration loads (exit 0).
func bridgeCheckCommand(t *testing.T, bin, what string, args, env []string) {
	t.Helper()
	var noNATS []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, config.EnvPrefix+"NATS_URL=") && !strings.HasPrefix(kv, config.EnvPrefix+"NATS_STREAM=") {
			noNATS = append(noNATS, kv)
		}
	}
	code, stderr := bridgeRun(t, bin, args, noNATS)
	if code != 1 || !strings.Contains(stderr, "NATS_URL is empty") {
		t.Errorf("%s: %q without NATS_URL: exit %d, stderr:\n%s\nwant exit 1 and \"NATS_URL is empty\" (the command line parsed and the configuration loaded)", what, args, code, stderr)
	}
	cfgArgs := append([]string{"config"}, args[2:]...) // bridge <sub> [flags] -> config [flags]
	if code, stderr := bridgeRun(t, bin, cfgArgs, env); code != 0 {
		t.Errorf("%s: sbps-marshal %q with its whole configuration: exit %d, stderr:\n%s", what, cfgArgs, code, stderr)
	}
}

// TestBridgeUnits checks each bridge unit: its settings, that ExecStart
// runs the real command's bridge, `systemd-analyze verify`, and its
// `systemd-analyze security` exposure.
func TestBridgeUnits(t *testing.T) {
	bin := bridgeBuild(t)
	for _, bu := range bridgeUnits {
		path := filepath.Join(bridgeDir, bu.file)
		u := bridgeParseUnit(t, path)
		t.Run(bu.sub+"/keys", func(t *testing.T) { bridgeCheckUnitKeys(t, path, bu.sub, u) })
		t.Run(bu.sub+"/execstart", func(t *testing.T) {
			argv := strings.Fields(u["Service"]["ExecStart"][0])
			if len(argv) < 3 || argv[0] != bridgeBinDst {
				t.Fatalf("%s: ExecStart %q, want %s bridge %s ...", path, argv, bridgeBinDst, bu.sub)
			}
			bridgeCheckCommand(t, bin, path+" ExecStart", argv[1:], bridgeUnitEnv(u))
		})
		t.Run(bu.sub+"/verify", func(t *testing.T) { bridgeVerify(t, path, bin) })
		t.Run(bu.sub+"/security", func(t *testing.T) { bridgeSecurity(t, path, bin, bu.exposure) })
	}
	// The check above can fail: a flag the bridge does not take exits 64.
	t.Run("control", func(t *testing.T) {
		code, _ := bridgeRun(t, bin, []string{"bridge", "webhook", "--no-such-flag"}, nil)
		if code != 64 {
			t.Errorf("bridge webhook --no-such-flag: exit %d, want 64", code)
		}
	})
}

func bridgeCheckUnitKeys(t *testing.T, path, sub string, u map[string]map[string][]string) {
	want := []struct{ section, key, value string }{
		// bridgeMain sends no sd_notify READY=1: exec, not notify.
		{"Service", "Type", "exec"},
		{"Service", "ExecStart", bridgeBinDst + " bridge " + sub},
		{"Service", "EnvironmentFile", "-" + bridgeEnvDst},
		{"Service", "Restart", "on-failure"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateUsers", "yes"},
		{"Service", "CapabilityBoundingSet", ""},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, w := range want {
		if got := u[w.section][w.key]; len(got) != 1 || got[0] != w.value {
			t.Errorf("%s: [%s] %s = %q, want exactly %q", path, w.section, w.key, got, w.value)
		}
	}
	// A bridge needs no LIO, configfs, /etc/target or s3fs mount, and
	// writes nothing but the IMS poller's StateDirectory.
	for _, k := range []string{"ReadWritePaths", "AmbientCapabilities", "User", "DynamicUser", "WatchdogSec", "NotifyAccess"} {
		if v, ok := u["Service"][k]; ok {
			t.Errorf("%s: [Service] %s = %q: a bridge should not need it (see the unit's comments)", path, k, v)
		}
	}
	env := bridgeUnitEnv(u)
	if !slices.Contains(env, config.EnvFileKey().Env+"=") {
		t.Errorf("%s: Environment= lacks %s= (else the bridge also reads the agent's %s)", path, config.EnvFileKey().Env, config.DefaultEnvFile)
	}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := bridgeConfigKey(name); !ok {
			t.Errorf("%s: Environment=%s: %s is not a configuration key (config.Keys())", path, kv, name)
		}
	}
	if sub == "ims" {
		sd := u["Service"]["StateDirectory"]
		if len(sd) != 1 || !slices.Contains(env, config.EnvPrefix+"STATE_DIR=/var/lib/"+sd[0]) {
			t.Errorf("%s: STATE_DIR must be the unit's StateDirectory (%q), the only place it may write; Environment= has %q", path, sd, env)
		}
	}
	// If the bridge learns to notify, the unit should say Type=notify.
	src, err := os.ReadFile("../cmd/sbps-marshal/bridge.go")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(src, []byte("sdnotify")) {
		t.Errorf("cmd/sbps-marshal/bridge.go now uses sdnotify: make %s Type=notify", path)
	}
}

// bridgeStubbed writes the unit with ExecStart pointing at bin (verify checks
// that the binary exists) into a temp dir, plus extra [Service] lines.
func bridgeStubbed(t *testing.T, path, bin, extra string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(data), "ExecStart="+bridgeBinDst+" ", "ExecStart="+bin+" ", 1)
	if s == string(data) {
		t.Fatalf("%s: no ExecStart=%s line", path, bridgeBinDst)
	}
	s = strings.Replace(s, "[Service]\n", "[Service]\n"+extra, 1)
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func bridgeVerify(t *testing.T, path, bin string) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd; scripts/test-deps installs it)")
	}
	// verify exits 0 on unknown keys and bad values, only warning: any
	// output fails, and the broken case proves the check can fail.
	for _, tt := range []struct {
		name, extra string
		clean       bool
	}{{"shipped", "", true}, {"broken", "ProtectHome=banana\nBogusKey=1\n", false}} {
		unit := bridgeStubbed(t, path, bin, tt.extra)
		cmd := exec.CommandContext(t.Context(), sa, "verify", unit)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
		out, err := cmd.CombinedOutput()
		if clean := err == nil && len(bytes.TrimSpace(out)) == 0; clean != tt.clean {
			t.Errorf("systemd-analyze verify %s (%s): err=%v output:\n%s\nwant clean=%v", path, tt.name, err, out, tt.clean)
		}
	}
}

func bridgeSecurity(t *testing.T, path, bin string, recorded float64) {
	checkExposure(t, path, bridgeStubbed(t, path, bin, ""), recorded)
}

// renderBridgeEnvFile writes the example /etc/sysconfig/sbps-marshal-bridge:
// the keys of bridgeKeySections, commented out, with their help and the
// value they take under the units (the key's default, or what a unit's
// Environment= sets).
func renderBridgeEnvFile(unitEnv map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString(`# /etc/sysconfig/sbps-marshal-bridge: settings of the bridges
# (sbps-marshal-bridge-webhook.service, sbps-marshal-bridge-ims.service)
#
# Read by systemd (EnvironmentFile=) before a bridge starts; the units make
# the bridge read no other env file (not the agent's
# /etc/sysconfig/sbps-marshal). Only the keys a bridge reads are listed,
# commented out, with the value a bridge gets without them: remove the
# leading "#" and edit. One KEY=VALUE a line, no spaces around "=".
#
# Set at least:
#   SBPS_MARSHAL_NATS_URL        the agents' NATS servers (required)
#   SBPS_MARSHAL_NATS_STREAM     the agents' stream, if they use one
#   SBPS_MARSHAL_BRIDGE_LISTEN   an address RGW reaches, e.g. the node's NMN
#                                address:9588 (the default is loopback only)
#   SBPS_MARSHAL_BRIDGE_TOKEN_FILE  and the same token in the RGW topic
# and the NATS authentication the agents' NATS requires. Keys that name
# secrets take file paths (mode 0600, root's, not under /root: the units
# hide /root); never put a secret's value here. Check the result with:
#
#     sbps-marshal config --env-file /etc/sysconfig/sbps-marshal-bridge
#
# Generated from the agent's key list (go test ./deploy -run TestBridgeEnvFile -update).
`)
	keys := config.Keys()
	for _, sec := range bridgeKeySections() {
		b.WriteString("\n# ===== " + sec.title + " =====\n")
		for _, name := range sec.keys {
			i := slices.IndexFunc(keys, func(k config.Key) bool { return k.Env == config.EnvPrefix+name })
			if i < 0 {
				panic("bridgeKeySections: no key " + name) // TestBridgeEnvFile reports it first
			}
			k := keys[i]
			b.WriteString("\n")
			for _, line := range wrap(fmt.Sprintf("%s (flag %s): %s", name, k.Flag, k.Help), 76) {
				b.WriteString("# " + line + "\n")
			}
			v := k.Default
			if uv, ok := unitEnv[k.Env]; ok && uv != v {
				for _, line := range wrap(fmt.Sprintf("The unit sets %s (the key's own default: %q).", uv, k.Default), 76) {
					b.WriteString("# " + line + "\n")
				}
				v = uv
			} else if v == "" {
				b.WriteString("# Default: empty.\n")
			}
			fmt.Fprintf(&b, "#%s=%s\n", k.Env, v)
		}
	}
	return b.Bytes()
}

// bridgeUnitsEnv is every Environment= of the bridge units but ENV_FILE.
func bridgeUnitsEnv(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, bu := range bridgeUnits {
		for _, kv := range bridgeUnitEnv(bridgeParseUnit(t, filepath.Join(bridgeDir, bu.file))) {
			k, v, _ := strings.Cut(kv, "=")
			if k != config.EnvFileKey().Env {
				out[k] = v
			}
		}
	}
	return out
}

// TestBridgeEnvFile fails when the example env file differs from what
// config.Keys() and the units give; -update rewrites it.
func TestBridgeEnvFile(t *testing.T) {
	for _, sec := range bridgeKeySections() {
		for _, name := range sec.keys {
			if _, ok := bridgeConfigKey(config.EnvPrefix + name); !ok {
				t.Fatalf("bridgeKeySections names %s, which is not a configuration key (config.Keys())", name)
			}
		}
	}
	checkGenerated(t, bridgeEnvFile, renderBridgeEnvFile(bridgeUnitsEnv(t)), "TestBridgeEnvFile")
}

// TestBridgeEnvFileLoads reads the example as systemd and the bridge do: as
// shipped it sets nothing; with every key uncommented it sets only
// configuration keys, each to the value the file shows, and both bridges
// load it (they stop at "NATS_URL is empty", which it leaves empty).
func TestBridgeEnvFileLoads(t *testing.T) {
	path, vals := uncommented(t, bridgeEnvFile)
	n := 0
	for _, sec := range bridgeKeySections() {
		n += len(sec.keys)
	}
	if len(vals) != n {
		t.Errorf("%s sets %d keys uncommented, bridgeKeySections has %d", bridgeEnvFile, len(vals), n)
	}
	for k := range vals {
		if _, ok := bridgeConfigKey(k); !ok {
			t.Errorf("%s sets %s, which is not a configuration key", bridgeEnvFile, k)
		}
	}
	bin := bridgeBuild(t)
	for _, bu := range bridgeUnits {
		bridgeCheckCommand(t, bin, bridgeEnvFile+" uncommented", []string{"bridge", bu.sub, "--env-file", path}, nil)
	}
}

// k8sObject is the part of a Kubernetes object the tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec struct {
				Containers []struct {
					Name    string   `yaml:"name"`
					Image   string   `yaml:"image"`
					Command []string `yaml:"command"`
					Args    []string `yaml:"args"`
					Env     []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					EnvFrom []struct {
						ConfigMapRef struct {
							Name string `yaml:"name"`
						} `yaml:"configMapRef"`
					} `yaml:"envFrom"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// bridgeManifests decodes every YAML document of deploy/bridges/kubernetes.
func bridgeManifests(t *testing.T) map[string][]k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(bridgeDir, "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s/kubernetes: %v", bridgeDir, err)
	}
	out := map[string][]k8sObject{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(fh)
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fh.Close()
				t.Fatalf("%s: %v", f, err)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], o)
		}
		fh.Close()
	}
	return out
}

// TestBridgeManifests checks the Kubernetes manifests: they parse, hold the
// expected kinds with the placeholders marked, set only configuration keys,
// and each container's command line parses with the real command and that
// configuration.
func TestBridgeManifests(t *testing.T) {
	m := bridgeManifests(t)
	kinds := map[string][]string{
		"config.yaml":  {"ConfigMap", "Secret"},
		"webhook.yaml": {"Deployment", "Service", "PodDisruptionBudget"},
		"ims.yaml":     {"Deployment"},
	}
	var cm, secret *k8sObject
	for file, want := range kinds {
		var got []string
		for i, o := range m[file] {
			got = append(got, o.Kind)
			if o.Metadata.Namespace != "services" {
				t.Errorf("%s: %s %s in namespace %q, want the placeholder \"services\"", file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
			}
			switch o.Kind {
			case "ConfigMap":
				cm = &m[file][i]
			case "Secret":
				secret = &m[file][i]
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %q, want %q", file, got, want)
		}
	}
	if len(m) != len(kinds) {
		t.Errorf("manifests %v, want exactly %v", slices.Sorted(maps.Keys(m)), slices.Sorted(maps.Keys(kinds)))
	}
	if cm == nil || secret == nil {
		t.Fatal("config.yaml: no ConfigMap or Secret")
	}
	env := []string{}
	for k, v := range cm.Data {
		if _, ok := bridgeConfigKey(k); !ok {
			t.Errorf("ConfigMap %s: %s is not a configuration key (config.Keys())", cm.Metadata.Name, k)
		}
		env = append(env, k+"="+v)
		// Files the configuration names under the Secret's mount must be
		// keys of the Secret.
		if rest, ok := strings.CutPrefix(v, "/etc/sbps-marshal-bridge/"); ok {
			if _, ok := secret.StringData[rest]; !ok {
				t.Errorf("ConfigMap %s: %s=%s, but Secret %s has no key %q", cm.Metadata.Name, k, v, secret.Metadata.Name, rest)
			}
		}
	}
	bin := bridgeBuild(t)
	replicas := map[string]int{"webhook": 2, "ims": 1}
	for _, file := range []string{"webhook.yaml", "ims.yaml"} {
		d := m[file][0]
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", file, len(d.Spec.Template.Spec.Containers))
		}
		c := d.Spec.Template.Spec.Containers[0]
		t.Run(file, func(t *testing.T) {
			if !slices.Equal(c.Command, []string{bridgeBinDst}) || len(c.Args) != 2 || c.Args[0] != "bridge" {
				t.Fatalf("%s: command %q args %q, want [%s] [bridge <webhook|ims>]", file, c.Command, c.Args, bridgeBinDst)
			}
			sub := c.Args[1]
			if d.Spec.Replicas == nil || *d.Spec.Replicas != replicas[sub] {
				t.Errorf("%s: replicas %v, want %d (the file's comment says why)", file, d.Spec.Replicas, replicas[sub])
			}
			if !strings.Contains(c.Image, "PLACEHOLDER") {
				t.Errorf("%s: image %q is not marked PLACEHOLDER", file, c.Image)
			}
			if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef.Name != cm.Metadata.Name {
				t.Errorf("%s: envFrom %+v, want the ConfigMap %s", file, c.EnvFrom, cm.Metadata.Name)
			}
			cenv := slices.Clone(env)
			for _, e := range c.Env {
				if _, ok := bridgeConfigKey(e.Name); !ok {
					t.Errorf("%s: env %s is not a configuration key", file, e.Name)
				}
				cenv = append(cenv, e.Name+"="+e.Value)
			}
			bridgeCheckCommand(t, bin, file, c.Args, cenv)
			if sub == "webhook" {
				bridgeCheckWebhookPorts(t, m[file], cm.Data[config.EnvPrefix+"BRIDGE_LISTEN"])
			}
		})
	}
}

// bridgeCheckWebhookPorts checks that the Service reaches the port the
// bridge listens on.
func bridgeCheckWebhookPorts(t *testing.T, objs []k8sObject, listen string) {
	t.Helper()
	_, port, _ := strings.Cut(listen, ":")
	c := objs[0].Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || strconv.Itoa(c.Ports[0].ContainerPort) != port {
		t.Errorf("webhook.yaml: container ports %+v, want one on BRIDGE_LISTEN's port %s", c.Ports, port)
		return
	}
	svc := objs[1]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != c.Ports[0].Name {
		t.Errorf("webhook.yaml: Service ports %+v, want one whose targetPort is %q", svc.Spec.Ports, c.Ports[0].Name)
	}
}
