package csmworker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/deploy"
	"github.com/sbps-marshal/sbps-marshal/gate/kubectltest"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
)

// converge is the generous bound for a worker to reach the fleet's map.
const converge = 3 * time.Minute

// buildAgent builds the real cmd/sbps-marshal into dir (with -race when
// the test runs with it).
func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "sbps-marshal")
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "-o", bin, "github.com/sbps-marshal/sbps-marshal/cmd/sbps-marshal")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build sbps-marshal: %v\n%s", err, out)
	}
	return bin
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

// readEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile= does for
// the simple, unquoted lines written here.
func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for l := range strings.SplitSeq(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		env = append(env, l)
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// provisioned is what CSM's playbook puts into a worker's LIO: the target,
// tpg1 with its portal and attributes. The agent must never save a file
// without it.
type provisioned struct {
	iqn     string
	portals []string
	attrs   map[string]string
	params  map[string]string
}

func provisionedOf(c *lio.Config, iqn string) (provisioned, error) {
	p := provisioned{iqn: iqn, attrs: map[string]string{}, params: map[string]string{}}
	tgt, ok := c.Target(iqn)
	if !ok {
		return p, fmt.Errorf("target %s is missing", iqn)
	}
	tpg, ok := tgt.TPG(1)
	if !ok {
		return p, fmt.Errorf("target %s has no tpg1", iqn)
	}
	if !bool(tpg.Enable) {
		return p, fmt.Errorf("target %s tpg1 is disabled", iqn)
	}
	for _, raw := range tpg.Portals {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return p, err
		}
		p.portals = append(p.portals, b.String())
	}
	sort.Strings(p.portals)
	for k, v := range tpg.Attributes {
		p.attrs[k] = strings.TrimSpace(string(v))
	}
	maps.Copy(p.params, tpg.Parameters)
	return p, nil
}

// check reports how c falls short of what was provisioned.
func (want provisioned) check(c *lio.Config) error {
	got, err := provisionedOf(c, want.iqn)
	if err != nil {
		return err
	}
	if !slices.Equal(got.portals, want.portals) {
		return fmt.Errorf("tpg1 portals %v, provisioned %v", got.portals, want.portals)
	}
	if !maps.Equal(got.attrs, want.attrs) {
		return fmt.Errorf("tpg1 attributes %v, provisioned %v", got.attrs, want.attrs)
	}
	if !maps.Equal(got.params, want.params) {
		return fmt.Errorf("tpg1 parameters %v, provisioned %v", got.params, want.params)
	}
	return nil
}

// lunMap is image file (fileio dev) -> LUN index in tpg1 of iqn.
func lunMap(c *lio.Config, iqn string) map[string]int {
	out := map[string]int{}
	tpg, ok := c.TPG(iqn, 1)
	if !ok {
		return out
	}
	for _, l := range tpg.LUNs {
		dev := "(no storage object " + l.StorageObject + ")"
		if name, ok := strings.CutPrefix(l.StorageObject, "/backstores/fileio/"); ok {
			if so, ok := c.FileIO(name); ok {
				dev = so.Dev
			}
		}
		out[dev] = l.Index
	}
	return out
}

// worker is one simulated CSM worker running the real agent.
type worker struct {
	name    string
	dir     string
	node    *sim.Node
	unit    *systemctltest.Fake
	envFile string
	metrics string
	log     string
	want    provisioned

	cmd  *exec.Cmd
	done chan error

	mu         sync.Mutex
	watchErr   error // first saveconfig.json seen without the provisioned target
	watchSeen  int   // saveconfig.json versions seen
	watchLast  []byte
	stopWatch  chan struct{}
	watchEnded chan struct{}
}

// start runs `sbps-marshal run` as systemd runs the unit: env -i, the
// unit's Environment=, the EnvironmentFile's lines, working directory /.
func (w *worker) start(t *testing.T, bin string, unitEnv []string) {
	t.Helper()
	envBin, err := exec.LookPath("env")
	if err != nil {
		t.Fatalf("env(1) is needed to start the agent with an empty environment: %v", err)
	}
	args := append([]string{"-i"}, unitEnv...)
	args = append(args, readEnvFile(t, w.envFile)...)
	args = append(args, bin, "run")
	f, err := os.OpenFile(w.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "==== start %s\n", time.Now().Format(time.RFC3339Nano))
	w.cmd = exec.Command(envBin, args...)
	w.cmd.Dir = "/"
	w.cmd.Stdout, w.cmd.Stderr = f, f
	if err := w.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start agent: %v", w.name, err)
	}
	w.done = make(chan error, 1)
	go func() { w.done <- w.cmd.Wait(); f.Close() }()
}

// stop sends SIGTERM (systemctl stop) and waits for the agent to exit.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("%s: agent exited with %v after SIGTERM\n%s", w.name, err, w.tail())
		}
	case <-time.After(150 * time.Second): // the unit's TimeoutStopSec
		w.cmd.Process.Kill()
		<-w.done
		t.Errorf("%s: agent did not stop within TimeoutStopSec", w.name)
	}
	w.cmd = nil
}

func (w *worker) tail() string {
	b, _ := os.ReadFile(w.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// logText is the agent's whole log, every start.
func (w *worker) logText() string {
	b, _ := os.ReadFile(w.log)
	return string(b)
}

// watch checks every version of saveconfig.json it can see, until
// stopWatching, against what was provisioned.
func (w *worker) watch() {
	w.stopWatch, w.watchEnded = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.watchEnded)
		for {
			w.observe()
			select {
			case <-w.stopWatch:
				w.observe()
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
}

func (w *worker) observe() {
	data, err := os.ReadFile(w.node.SaveFile())
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.watchErr == nil {
			w.watchErr = fmt.Errorf("saveconfig.json unreadable: %w", err)
		}
		return
	}
	if bytes.Equal(data, w.watchLast) {
		return
	}
	c, err := lio.Parse(data)
	if errors.Is(err, lio.ErrIncomplete) {
		return // caught mid-write (rtslib 2.1.75 rewrites in place)
	}
	w.watchLast = data
	w.watchSeen++
	if err == nil {
		err = w.want.check(c)
	}
	if err != nil && w.watchErr == nil {
		w.watchErr = fmt.Errorf("saveconfig.json version %d: %w", w.watchSeen, err)
	}
}

func (w *worker) stopWatching() (seen int, err error) {
	close(w.stopWatch)
	<-w.watchEnded
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watchSeen, w.watchErr
}

func (w *worker) saved(t *testing.T) *lio.Config {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := lio.Load(w.node.SaveFile())
		if err == nil {
			return c
		}
		if !errors.Is(err, lio.ErrIncomplete) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", w.name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *worker) live(t *testing.T) *lio.Config {
	t.Helper()
	c, err := w.node.Live()
	if err != nil {
		t.Fatalf("%s: live LIO: %v", w.name, err)
	}
	return c
}

func (w *worker) readyz() (int, string) {
	resp, err := http.Get("http://" + w.metrics + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// waitConverged waits until the worker's saveconfig.json and live LIO both
// project exactly the images of want, at want's LUNs when want has LUNs
// (else any), and /readyz says ready. It returns the saved map.
func (w *worker) waitConverged(t *testing.T, images []string, want map[string]int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(converge)
	var why string
	for time.Now().Before(deadline) {
		select {
		case err := <-w.done:
			t.Fatalf("%s: agent exited: %v\n%s", w.name, err, w.tail())
		default:
		}
		why = ""
		c, err := lio.Load(w.node.SaveFile())
		switch {
		case err != nil:
			why = err.Error()
		default:
			saved := lunMap(c, w.node.IQN())
			live := lunMap(w.live(t), w.node.IQN())
			got := slices.Sorted(maps.Keys(saved))
			switch {
			case !slices.Equal(got, images):
				why = fmt.Sprintf("saveconfig.json projects %v, want %v", got, images)
			case want != nil && !maps.Equal(saved, want):
				why = fmt.Sprintf("saveconfig.json LUN map %v, want the fleet's %v", saved, want)
			case !maps.Equal(saved, live):
				why = fmt.Sprintf("live LUN map %v differs from saveconfig.json's %v", live, saved)
			}
			if why == "" {
				if code, body := w.readyz(); code != http.StatusOK {
					why = fmt.Sprintf("/readyz = %d %q", code, body)
				} else {
					return saved
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := w.readyz()
	t.Fatalf("%s did not converge within %s: %s\n/readyz = %d %q\nagent log (tail):\n%s", w.name, converge, why, code, body, w.tail())
	return nil
}

// TestCSMWorkerRebuild is issue 14's end-to-end test: three CSM workers,
// each the real agent started as sbps-marshal.service with the default
// configuration except what a node's /etc/sysconfig/sbps-marshal sets,
// converge to one LUN map; worker 3 is rebuilt (STATE_DIR wiped, LIO's live
// state empty, target.service stopped, saveconfig.json intact) while the
// fleet deletes one image and adds two (through S3 notifications alone); it
// starts target.service itself, gets the fleet's map (not one of its own
// numbering: the fleet registry, LUN_REGISTRY=auto), and no saveconfig.json
// any worker wrote ever lost the provisioned target, portal or tpg1
// attributes.
func TestCSMWorkerRebuild(t *testing.T) {
	if _, err := os.Stat("/etc/sysconfig/sbps-marshal"); err == nil {
		t.Fatal("this host has /etc/sysconfig/sbps-marshal, which the agent would read too: the test needs a host without it")
	}
	ctx := t.Context()
	root := t.TempDir()
	bin := buildAgent(t, root)
	unitEnv := unitEnvironment(t)

	s, err := rig.StartStack(ctx, rig.StackOptions{Dir: filepath.Join(root, "rig")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if s.NATS == nil {
		t.Fatal("the rig started no NATS")
	}

	// The S3 credential file (/root/.ims.s3fs on a node) and the xname.
	credFile := filepath.Join(root, "root", ".ims.s3fs")
	if err := os.MkdirAll(filepath.Dir(credFile), 0o700); err != nil {
		t.Fatal(err)
	}
	cred := s.S3.Credentials()
	if err := os.WriteFile(credFile, []byte(cred.AccessKeyID+":"+cred.SecretAccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Kubernetes: the three workers labelled iscsi=sbps, reachable only
	// through the kubeconfig (kubectl without one falls back to
	// localhost:8080 and fails).
	names := []string{"ncn-w001", "ncn-w002", "ncn-w003"}
	admin := filepath.Join(root, "etc", "kubernetes", "admin.conf")
	var nodes []kubectltest.Node
	for _, n := range names {
		nodes = append(nodes, kubectltest.Node{Name: n, Labels: map[string]string{"iscsi": "sbps", "kubernetes.io/hostname": n}})
	}
	if err := kubectltest.WriteCluster(admin, nodes...); err != nil {
		t.Fatal(err)
	}
	kubectl := kubectltest.Binary(t)
	targetctl := sim.Targetctl(t)

	// Images: PE images in S3, IMS rootfs images (one tagged by BOS, one not).
	var images, peKeys []string
	for i := range 3 {
		data, err := rig.ImageBytes(root, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		key, err := s.PutPE(ctx, fmt.Sprintf("CPE-%d.x86_64.squashfs", i), data)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, filepath.Join(s.Mount(), key))
		peKeys = append(peKeys, key)
	}
	for i, tagged := range []bool{true, false} {
		data, err := rig.ImageBytes(root, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		img, err := s.AddImage(ctx, fmt.Sprintf("compute-cos-%d", i), data, tagged)
		if err != nil {
			t.Fatal(err)
		}
		if tagged {
			images = append(images, filepath.Join(s.Mount(), img.RootfsKey))
		}
	}
	sort.Strings(images)

	var workers []*worker
	for i, name := range names {
		dir := filepath.Join(root, name)
		// LIO as CSM's playbook leaves it: the target, tpg1 enabled with
		// CSM's attributes and a portal on the node's NMN address, saved
		// in saveconfig.json, restored by target.service at boot.
		n, err := sim.NewNode(filepath.Join(dir, "lio"), sim.NodeOptions{Hostname: name, PortalIP: fmt.Sprintf("10.252.1.%d", 7+i)})
		if err != nil {
			t.Fatal(err)
		}
		w := &worker{name: name, dir: dir, node: n, metrics: freeAddr(t), log: filepath.Join(dir, "agent.log"),
			envFile: filepath.Join(dir, "etc", "sysconfig", "sbps-marshal")}
		c, err := lio.Load(n.SaveFile())
		if err != nil {
			t.Fatal(err)
		}
		if w.want, err = provisionedOf(c, n.IQN()); err != nil {
			t.Fatalf("%s as provisioned: %v", name, err)
		}
		if len(w.want.portals) == 0 || len(w.want.attrs) == 0 {
			t.Fatalf("%s as provisioned has no portal or no tpg1 attributes: %+v", name, w.want)
		}
		w.unit = systemctltest.Install(t, filepath.Join(dir, "bin"), systemctltest.Options{
			Start: append([]string{"env"}, append(n.Env(), targetctl, "restore", n.SaveFile())...),
			Stop:  append([]string{"env"}, append(n.Env(), targetctl, "clear")...),
			State: "active", // restored at boot
		})
		xname := filepath.Join(dir, "etc", "cray", "xname")
		if err := os.MkdirAll(filepath.Dir(xname), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(xname, fmt.Appendf(nil, "x3000c0s%db0n0\n", 4+i), 0o644); err != nil {
			t.Fatal(err)
		}
		// What a CSM node's /etc/sysconfig/sbps-marshal sets: its name,
		// the endpoints, paths (here into the test's directories), the
		// stand-ins' binaries. Everything else is the default: GATE=kubectl,
		// SPIFFE_SOURCE=auto, LUN_REGISTRY=auto, IMS_AUTH=spiffe, resync
		// 180 s, no NATS stream.
		envFile := []string{
			"SBPS_MARSHAL_NODE_NAME=" + name,
			"SBPS_MARSHAL_S3_HOST=" + strings.TrimPrefix(s.S3.Endpoint(), "http://"),
			"SBPS_MARSHAL_S3_PROTO=http",
			"SBPS_MARSHAL_S3_CREDENTIAL_FILE=" + credFile,
			"SBPS_MARSHAL_S3_BUCKET=" + s.S3.Bucket(),
			"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=" + s.Mount(),
			"SBPS_MARSHAL_API_GATEWAY=" + s.IMS.URL(),
			"SBPS_MARSHAL_SPIRE_AGENT_PATH=" + s.SpireAgent,
			"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=" + s.SPIFFE.SocketPath(),
			"SBPS_MARSHAL_XNAME_FILE=" + xname,
			"SBPS_MARSHAL_LIO_SAVE_FILE=" + n.SaveFile(),
			"SBPS_MARSHAL_TARGETCLI_BIN=" + s.Targetcli,
			"SBPS_MARSHAL_TARGETCLID_SOCKET=" + n.SocketPath(),
			"SBPS_MARSHAL_STATE_DIR=" + filepath.Join(dir, "var", "lib", "sbps-marshal"),
			"SBPS_MARSHAL_NATS_URL=" + s.NATS.ClientURL(),
			// Three "nodes" share this host's loopback.
			"SBPS_MARSHAL_METRICS_ADDR=" + w.metrics,
			"SBPS_MARSHAL_KUBECTL_BIN=" + kubectl,
			"SBPS_MARSHAL_KUBECONFIG=" + admin,
			"SBPS_MARSHAL_SYSTEMCTL_BIN=" + w.unit.Path,
		}
		// The simulated LIO's own variables, for the targetcli it runs.
		envFile = append(envFile, n.Env()...)
		if err := os.MkdirAll(filepath.Dir(w.envFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(w.envFile, []byte(strings.Join(envFile, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		workers = append(workers, w)
	}
	for _, w := range workers {
		w.watch()
	}
	t.Cleanup(func() {
		for _, w := range workers {
			w.stop(t)
		}
	})

	// Day one: all three start together and converge to one map.
	for _, w := range workers {
		w.start(t, bin, unitEnv)
	}
	first := workers[0].waitConverged(t, images, nil)
	for _, w := range workers[1:] {
		w.waitConverged(t, images, first)
	}
	t.Logf("fleet LUN map: %v", first)
	seen := map[int]string{}
	for img, l := range first {
		if other, dup := seen[l]; dup {
			t.Fatalf("lun%d holds both %s and %s", l, other, img)
		}
		seen[l] = img
	}
	// The effective configuration is the default where the env file is silent.
	cfgCmd := exec.Command(bin, "config", "--env-file", workers[0].envFile)
	cfgCmd.Env, cfgCmd.Dir = unitEnv, "/"
	out, err := cfgCmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sbps-marshal config: %v\n%s", err, out)
	}
	for _, want := range []string{"SPIFFE_SOURCE=auto", "LUN_REGISTRY=auto", "GATE=kubectl", "IMS_AUTH=spiffe"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sbps-marshal config lacks %q:\n%s", want, out)
		}
	}
	// What each agent chose from the defaults: the spire-agent CLI (SPIRE
	// registers only its path) and the fleet registry on JetStream.
	for _, w := range workers {
		log := w.logText()
		for _, want := range []string{`msg="SPIFFE source" for=IMS source=cli`, `msg="LUN registry" mode=nats`, `msg="fetched JWT-SVID"`} {
			if !strings.Contains(log, want) {
				t.Errorf("%s: agent log lacks %s:\n%s", w.name, want, log)
			}
		}
	}
	// SPIRE registered only the CLI's path: the agent went through it.
	if c := s.SPIFFE.Counts(); c.Denied != 0 || c.FetchJWTSVID == 0 {
		t.Errorf("SPIFFE Workload API counts %+v: want JWT-SVIDs fetched (by the CLI) and none denied (the agent calling it itself)", c)
	}

	// Rebuild worker 3: stop the agent, wipe STATE_DIR, LIO's live state
	// empty with target.service stopped, saveconfig.json as it was.
	w3 := workers[2]
	w3.stop(t)
	before, err := os.ReadFile(w3.node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(w3.dir, "var", "lib", "sbps-marshal")); err != nil {
		t.Fatal(err)
	}
	if err := w3.node.Clear(); err != nil {
		t.Fatal(err)
	}
	w3.unit.SetState(t, "inactive")
	if got := lunMap(w3.live(t), w3.node.IQN()); len(got) != 0 {
		t.Fatalf("rebuilt worker's live LIO still projects %v", got)
	}
	if _, ok := w3.live(t).Target(w3.node.IQN()); ok {
		t.Fatal("rebuilt worker's live LIO still has its target")
	}
	if got := lunMap(w3.saved(t), w3.node.IQN()); !maps.Equal(got, first) {
		t.Fatalf("setup: rebuilt worker's saveconfig.json holds %v, want the old projections %v", got, first)
	}
	// Meanwhile the fleet moves on, through S3 notifications alone: one
	// PE image deleted (its LUN quarantined), two added, the later name
	// first, so that a worker numbering on its own would likely differ.
	gone := filepath.Join(s.Mount(), peKeys[0])
	freed := first[gone]
	if err := s.S3.Delete(ctx, peKeys[0]); err != nil {
		t.Fatal(err)
	}
	images = slices.DeleteFunc(images, func(img string) bool { return img == gone })
	fleet := first
	for _, name := range []string{"CPE-z-new.x86_64.squashfs", "CPE-a-new.x86_64.squashfs"} {
		data, err := rig.ImageBytes(root, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		key, err := s.PutPE(ctx, name, data)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, filepath.Join(s.Mount(), key))
		sort.Strings(images)
		fleet = workers[0].waitConverged(t, images, nil)
		workers[1].waitConverged(t, images, fleet)
	}
	t.Logf("fleet LUN map while worker 3 is down: %v", fleet)
	for img, l := range fleet {
		if old, ok := first[img]; ok && old != l {
			t.Errorf("%s moved from lun%d to lun%d", img, old, l)
		}
		if _, ok := first[img]; !ok && l == freed {
			t.Errorf("new image %s got lun%d, freed by %s within the quarantine", img, l, gone)
		}
	}

	callsBefore := len(w3.unit.Calls(t))
	w3.start(t, bin, unitEnv)
	got := w3.waitConverged(t, images, fleet)
	if log := w3.logText(); strings.Count(log, `msg="LUN registry" mode=nats`) < 2 || !strings.Contains(log, "LIO restored") {
		t.Errorf("rebuilt worker's log lacks the fleet registry or the restore by target.service:\n%s", log)
	}
	if w3.unit.State(t) != "active" {
		t.Errorf("target.service is %s after the rebuild, want active (started by the agent)", w3.unit.State(t))
	}
	calls := w3.unit.Calls(t)[callsBefore:]
	if !slices.ContainsFunc(calls, func(c string) bool { return strings.HasSuffix(c, "start target.service") }) {
		t.Errorf("systemctl calls after the rebuild = %q, want the agent to start target.service", calls)
	}
	if err := w3.want.check(w3.live(t)); err != nil {
		t.Errorf("rebuilt worker's live LIO: %v", err)
	}
	after, err := os.ReadFile(w3.node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rebuilt worker: LUN map %v; saveconfig.json %s by the agent; systemctl calls %q",
		got, map[bool]string{true: "unchanged", false: "rewritten"}[bytes.Equal(before, after)], calls)

	// The peers kept the map, and nothing lost the provisioned target.
	for _, w := range workers[:2] {
		if got := lunMap(w.saved(t), w.node.IQN()); !maps.Equal(got, fleet) {
			t.Errorf("%s after worker 3's rebuild: %v, want %v", w.name, got, fleet)
		}
	}
	for _, w := range workers {
		if err := w.want.check(w.saved(t)); err != nil {
			t.Errorf("%s: final saveconfig.json: %v", w.name, err)
		}
	}
	for _, w := range workers {
		w.stop(t)
	}
	for _, w := range workers {
		n, err := w.stopWatching()
		if err != nil {
			t.Errorf("%s: a saveconfig.json lost what CSM provisioned: %v", w.name, err)
		}
		if n < 2 {
			t.Errorf("%s: the watcher saw %d versions of saveconfig.json, want the agent's saves too", w.name, n)
		}
		t.Logf("%s: %d versions of saveconfig.json checked", w.name, n)
	}
}
