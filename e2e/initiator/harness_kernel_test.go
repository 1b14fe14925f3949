//go:build kernel

package initiator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

const (
	nodeName = "ncn-w001"
	iqn      = "iqn.2023-06.csm.iscsi:" + nodeName
	// saveFile is Debian's rtslib default save file; see the package doc.
	saveFile = "/etc/rtslib-fb-target/saveconfig.json"
	bucket   = rig.DefaultBucket
	portalIP = "127.0.0.1"
)

// ---- the node's LIO ----

// run runs a command and returns its combined output and exit code; a
// command that cannot start fails the test.
func run(t *testing.T, stdin string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out), 0
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, code := run(t, "", name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

// resetNode empties LIO, logs every iSCSI session out, forgets every node
// record and removes the save files, now and when the test ends.
func resetNode(t *testing.T) {
	t.Helper()
	clean := func() {
		run(t, "", "iscsiadm", "-m", "node", "-u")
		run(t, "", "iscsiadm", "-m", "node", "-o", "delete")
		run(t, "", "iscsiadm", "-m", "discoverydb", "-t", "st", "-p", portalIP, "-o", "delete")
		if out, code := run(t, "", "targetcli", "clearconfig confirm=True"); code != 0 {
			t.Errorf("targetcli clearconfig confirm=True: exit %d\n%s", code, out)
		}
		for _, d := range []string{"/etc/rtslib-fb-target", "/etc/target"} {
			os.RemoveAll(d)
			os.MkdirAll(d, 0o755)
		}
	}
	clean()
	t.Cleanup(clean)
}

// provision sets up the node's target as CSM's playbook does
// (config_sbps_iscsi_targets.yml): the target, a portal on the node's
// address instead of targetcli's 0.0.0.0 default, tpg1's write protection
// and generated ACLs, saved. It checks the result in saveconfig.json.
func provision(t *testing.T) {
	t.Helper()
	tpg := "/iscsi/" + iqn + "/tpg1"
	script := strings.Join([]string{
		"/iscsi create " + iqn,
		tpg + "/portals delete 0.0.0.0 3260",
		tpg + "/portals create " + portalIP + " 3260",
		tpg + " set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1",
		"saveconfig",
		"",
	}, "\n")
	out, code := run(t, script, "targetcli")
	c, err := loadSaved()
	if err != nil || code != 0 {
		t.Fatalf("provisioning the target as CSM's playbook does: exit %d, %v\n%s", code, err, out)
	}
	tg, ok := c.Target(iqn)
	if !ok {
		t.Fatalf("provisioning: no target %s in %s\n%s", iqn, saveFile, out)
	}
	tp, ok := tg.TPG(1)
	if !ok {
		t.Fatalf("provisioning: no tpg1 in %s\n%s", saveFile, out)
	}
	for _, a := range []string{"demo_mode_write_protect", "prod_mode_write_protect", "generate_node_acls"} {
		if v, _ := tp.Attr(a); v != 1 {
			t.Fatalf("provisioning: tpg1 %s=%d, want 1\n%s", a, v, out)
		}
	}
}

// loadSaved reads saveconfig.json, retrying for up to 2 s while rtslib
// 2.1.75 is caught rewriting it in place.
func loadSaved() (*lio.Config, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := lio.Load(saveFile)
		if !errors.Is(err, lio.ErrIncomplete) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lunMap returns backstore name -> LUN index in tpg1 of the node's target,
// for every fileio backstore that has a LUN there.
func lunMap(c *lio.Config) map[string]int {
	out := map[string]int{}
	tp, ok := c.TPG(iqn, 1)
	if !ok {
		return out
	}
	for _, so := range c.StorageObjects {
		if l, ok := tp.LUNFor(so.Path()); ok {
			out[so.Name] = l.Index
		}
	}
	return out
}

// waitSaved polls saveconfig.json every 20 ms until cond holds and returns
// how long that took; it fails the test after timeout with the last state.
func waitSaved(t *testing.T, timeout time.Duration, what string, cond func(map[string]int) bool) time.Duration {
	t.Helper()
	start := time.Now()
	var last map[string]int
	var lastErr error
	for time.Since(start) < timeout {
		c, err := loadSaved()
		if err == nil {
			last = lunMap(c)
			if cond(last) {
				return time.Since(start)
			}
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not in %s after %v; it has LUNs %v (read error: %v); see the agent's log above", what, saveFile, timeout, last, lastErr)
	return 0
}

// ---- the services around the agent ----

type stack struct {
	dir   string
	nats  *rig.NATS
	s3    *rig.S3
	spire *svidtest.Server
	ims   *imstest.Server
	env   []string
}

// scratch is a directory on an ext4 file system in guest memory: versitygw
// keeps each object's metadata in user xattrs, which neither hostfs (the
// guest's /tmp) nor the 6.1 kernel's tmpfs supports.
var (
	scratchOnce sync.Once
	scratchErr  error
)

const scratch = "/srv/sbps-e2e"

func scratchDir(t *testing.T) string {
	t.Helper()
	scratchOnce.Do(func() {
		img := "/run/sbps-e2e-ext4.img"
		for _, c := range [][]string{
			{"truncate", "-s", "1G", img},
			{"mkfs.ext4", "-q", "-F", img},
			{"mkdir", "-p", scratch},
			{"mount", "-o", "loop", img, scratch},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				scratchErr = fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
				return
			}
		}
	})
	if scratchErr != nil {
		t.Fatalf("an ext4 scratch file system in the guest for versitygw: %v (needs e2fsprogs and the loop module)", scratchErr)
	}
	dir, err := os.MkdirTemp(scratch, "stack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{dir: scratchDir(t)}
	var err error
	if s.nats, err = rig.StartNATS(filepath.Join(s.dir, "nats")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nats.Shutdown)
	// The stream an operator creates once for the cluster (`sbps-marshal
	// bridge` does it too); the agent never creates it.
	nc, err := nats.Connect(s.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(t.Context(), js, "SBPS", []string{rig.DefaultSubject, "sbps.ims.events"}); err != nil {
		t.Fatalf("create the JetStream stream SBPS: %v", err)
	}
	if s.s3, err = rig.StartS3(context.Background(), rig.S3Options{Dir: filepath.Join(s.dir, "s3"), NATSURL: s.nats.ClientURL()}); err != nil {
		t.Fatalf("versitygw in the guest: %v", err)
	}
	t.Cleanup(func() { s.s3.Stop() })
	// Unix socket paths are short; t.TempDir's may not be.
	spireDir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(spireDir) })
	// SPIRE attests the calling binary: register the agent's own path
	// (CSM registers only /usr/bin/sbps-marshal-spire-agent, for the old
	// agent's CLI; that source is not covered here).
	entries := []svidtest.Entry{svidtest.PathEntry(svidtest.DefaultID, os.Getenv(agentEnv))}
	if s.spire, err = svidtest.Start(spireDir, svidtest.Options{Entries: entries}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.spire.Close)
	if s.ims, err = imstest.Start(imstest.Options{Verify: s.spire.Verifier(rig.Audience)}, imstest.ListenOptions{TLS: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ims.Close() })

	cred := filepath.Join(s.dir, "ims.s3fs")
	c := s.s3.Credentials()
	ca := filepath.Join(s.dir, "platform-ca.pem")
	xname := filepath.Join(s.dir, "xname")
	for path, data := range map[string]string{
		cred:  c.AccessKeyID + ":" + c.SecretAccessKey + "\n",
		ca:    string(s.ims.CACertPEM()),
		xname: "x3000c0s1b0n0\n",
	} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.env = append(os.Environ(),
		"SBPS_MARSHAL_S3_HOST="+strings.TrimPrefix(s.s3.Endpoint(), "http://"),
		"SBPS_MARSHAL_S3_PROTO=http",
		"SBPS_MARSHAL_S3_CREDENTIAL_FILE="+cred,
		"SBPS_MARSHAL_S3_BUCKET="+bucket,
		"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT="+s.mount(),
		"SBPS_MARSHAL_API_GATEWAY="+s.ims.URL(),
		"SBPS_MARSHAL_CA_FILE="+ca,
		"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH="+s.spire.SocketPath(),
		"SBPS_MARSHAL_XNAME_FILE="+xname,
		"SBPS_MARSHAL_LIO_SAVE_FILE="+saveFile,
		"SBPS_MARSHAL_NODE_NAME="+nodeName,
		"SBPS_MARSHAL_STATE_DIR="+filepath.Join(s.dir, "state"),
		"SBPS_MARSHAL_GATE=none",
		"SBPS_MARSHAL_METRICS_ADDR=",
		"SBPS_MARSHAL_NATS_URL="+s.nats.ClientURL(),
		"SBPS_MARSHAL_NATS_STREAM=SBPS",
		"SBPS_MARSHAL_RESYNC_INTERVAL=1h",
		"SBPS_MARSHAL_LOG_FORMAT=logfmt",
	)
	return s
}

// mount is what the agent takes for the s3fs mount: versitygw's posix
// bucket directory (package doc).
func (s *stack) mount() string { return s.s3.MountDir() }

// ---- images ----

// image is one boot image made with mksquashfs from known content.
type image struct {
	name  string
	key   string // S3 key of the squashfs
	src   string // the directory it was made from
	data  []byte // the squashfs
	id    naming.ID
	imsID string // "" for a PE image
}

// makeSquashfs builds a squashfs of a small tree with payload random bytes
// in one file.
func makeSquashfs(t *testing.T, name string, payload int) (src string, data []byte) {
	t.Helper()
	dir := t.TempDir()
	src = filepath.Join(dir, "src")
	files := map[string][]byte{
		"etc/os-release":        []byte("NAME=" + name + "\n"),
		"usr/share/doc/README":  bytes.Repeat([]byte(name+" "), 500),
		"var/empty":             nil,
		"opt/" + name + "/blob": make([]byte, payload),
	}
	rand.Read(files["opt/"+name+"/blob"])
	for p, b := range files {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, name+".squashfs")
	mustRun(t, "mksquashfs", src, out, "-noappend", "-quiet", "-no-progress", "-all-root", "-processors", "1")
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return src, data
}

// putPE uploads a new squashfs under PE/ and returns it.
func (s *stack) putPE(t *testing.T, name string, payload int) (*image, time.Time) {
	t.Helper()
	img := &image{name: name, key: "PE/" + name + ".squashfs"}
	img.src, img.data = makeSquashfs(t, name, payload)
	img.id = naming.For(naming.PEInput(bucket, img.key))
	start := time.Now()
	if _, err := s.s3.Put(context.Background(), img.key, img.data); err != nil {
		t.Fatalf("upload %s: %v", img.key, err)
	}
	return img, start
}

// addIMSImage uploads a rootfs and its manifest.json as IMS does and
// registers the image in IMS, tagged for projection.
func (s *stack) addIMSImage(t *testing.T, name string, payload int) *image {
	t.Helper()
	ctx := context.Background()
	img := &image{name: name, imsID: imstest.NewID()}
	img.key = img.imsID + "/rootfs"
	img.src, img.data = makeSquashfs(t, name, payload)
	etag, err := s.s3.Put(ctx, img.key, img.data)
	if err != nil {
		t.Fatalf("upload %s: %v", img.key, err)
	}
	etag = strings.Trim(etag, `"`)
	link := "s3://" + bucket + "/" + img.key
	img.id = naming.For(naming.RootfsInput(link, etag))
	manifestKey := img.imsID + "/manifest.json"
	manifest := fmt.Sprintf(`{"version":"1.0","created":"%s","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"","link":{"type":"s3","path":"%s","etag":"%s"}}]}`,
		time.Now().UTC().Format("2006-01-02 15:04:05"), link, etag)
	if _, err := s.s3.Put(ctx, manifestKey, []byte(manifest)); err != nil {
		t.Fatalf("upload %s: %v", manifestKey, err)
	}
	s.ims.Put(imstest.Image{ID: img.imsID, Name: name, Metadata: map[string]string{"sbps-project": "true"},
		Link: &imstest.Link{Type: "s3", Path: "s3://" + bucket + "/" + manifestKey}})
	return img
}

// ---- the agent ----

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// startAgent starts `sbps-marshal run` in its own process group, so that
// a kill takes its targetcli children with it, as systemd's stop of the
// unit's control group does.
func (s *stack) startAgent(t *testing.T) *agentProc {
	t.Helper()
	log := filepath.Join(s.dir, "agent.log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "---- sbps-marshal run started %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(os.Getenv(agentEnv), "run")
	cmd.Env, cmd.Stdout, cmd.Stderr = s.env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s run: %v (the host's TestMain builds it; is %s set?)", os.Getenv(agentEnv), err, agentEnv)
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{}), log: log}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.kill()
		b, _ := os.ReadFile(log)
		if t.Failed() || os.Getenv("SBPS_TEST_LOG") != "" {
			t.Logf("agent log:\n%s", tailString(string(b), 6000))
			return
		}
		// Errors and warnings are findings even when the test passes.
		var bad []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Logf("the agent logged %d errors and warnings:\n%s", len(bad), tailString(strings.Join(bad, "\n"), 4000))
		}
	})
	return a
}

// kill SIGKILLs the agent's process group and waits for the agent.
func (a *agentProc) kill() {
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
	<-a.done
}

// stop sends SIGTERM and expects a clean exit.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
		if a.err != nil {
			t.Errorf("sbps-marshal run after SIGTERM: %v; see the agent log", a.err)
		}
	case <-time.After(2 * time.Minute):
		t.Error("sbps-marshal run did not exit 2 minutes after SIGTERM")
		a.kill()
	}
}

// waitReady waits until the log holds n "first pass done; ready" lines.
func (a *agentProc) waitReady(t *testing.T, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 4*time.Minute {
		b, _ := os.ReadFile(a.log)
		if strings.Count(string(b), "first pass done; ready") >= n {
			return time.Since(start)
		}
		select {
		case <-a.done:
			t.Fatalf("sbps-marshal run exited before its first pass: %v\n%s", a.err, tailString(string(b), 4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(a.log)
	t.Fatalf("sbps-marshal run not ready after 4 minutes\n%s", tailString(string(b), 4000))
	return 0
}

// targetcliChildren returns the pids of targetcli processes whose parent
// is pid.
func targetcliChildren(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if len(f) > 1 && f[1] == strconv.Itoa(pid) && bytes.Contains(cmdline, []byte("targetcli")) {
			out = append(out, p)
		}
	}
	return out
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// ---- the initiator ----

type initiator struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startInitiator starts iscsid in the foreground as this test's child,
// discovers the node's portal and logs in to every target found.
func startInitiator(t *testing.T) *initiator {
	t.Helper()
	i := &initiator{cmd: exec.Command("iscsid", "-f"), done: make(chan struct{})}
	var log bytes.Buffer
	i.cmd.Stdout, i.cmd.Stderr = &log, &log
	// iscsid signals its whole process group when it stops: give it its own.
	i.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := i.cmd.Start(); err != nil {
		t.Fatalf("start iscsid -f: %v (install the Debian package open-iscsi)", err)
	}
	go func() { i.cmd.Wait(); close(i.done) }()
	t.Cleanup(func() {
		run(t, "", "iscsiadm", "-m", "node", "-u")
		i.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-i.done:
		case <-time.After(10 * time.Second):
			i.cmd.Process.Kill()
			<-i.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, code := run(t, "", "iscsiadm", "-m", "discovery", "-t", "st", "-p", portalIP)
		if code == 0 && strings.Contains(out, iqn) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("iscsiadm -m discovery -t st -p %s: exit %d\n%s\niscsid: %s", portalIP, code, out, log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustRun(t, "iscsiadm", "-m", "node", "-l")
	return i
}

// rescan asks the target for its LUNs again on every session.
func rescan(t *testing.T) {
	t.Helper()
	mustRun(t, "iscsiadm", "-m", "session", "-R")
}

// disk is one SCSI disk the initiator has.
type disk struct {
	dev    string // sdX
	hctl   string // host:channel:target:lun
	lun    int
	cached string // the WWID the kernel read when it attached the disk
	wwid   string // the WWID the target gives now (INQUIRY VPD 0x83); "" if none
	size   int64  // bytes
}

func (d disk) String() string {
	return fmt.Sprintf("%s(lun%d %s size %d, attached as %s)", d.dev, d.lun, d.wwid, d.size, d.cached)
}

// scsiID finds scsi_id (udev's; /usr/lib/udev is not on PATH).
func scsiID(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/lib/udev/scsi_id", "/lib/udev/scsi_id"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("scsi_id"); err == nil {
		return p
	}
	t.Fatal("scsi_id not found (/usr/lib/udev/scsi_id): install the Debian package udev")
	return ""
}

// view lists the iSCSI disks, asking the target for each one's identity.
func view(t *testing.T) []disk {
	t.Helper()
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		t.Fatal(err)
	}
	var out []disk
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "sd") {
			continue
		}
		sys := "/sys/block/" + e.Name()
		link, err := os.Readlink(sys + "/device")
		if err != nil {
			continue
		}
		d := disk{dev: e.Name(), hctl: filepath.Base(link)}
		parts := strings.Split(d.hctl, ":")
		if len(parts) != 4 {
			t.Fatalf("%s/device -> %s: not host:channel:target:lun", sys, link)
		}
		d.lun, _ = strconv.Atoi(parts[3])
		if b, err := os.ReadFile(sys + "/device/wwid"); err == nil {
			// "naa.6001405…" -> multipath's "36001405…"
			d.cached = "3" + strings.TrimPrefix(strings.TrimSpace(string(b)), "naa.")
		}
		if b, err := os.ReadFile(sys + "/size"); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			d.size = n * 512
		}
		if out, code := run(t, "", scsiID(t), "-g", "-u", "-d", "/dev/"+d.dev); code == 0 {
			d.wwid = strings.TrimSpace(out)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lun < out[j].lun })
	return out
}

// byWWID returns the disks whose target now gives wwid.
func byWWID(v []disk, wwid string) []disk {
	var out []disk
	for _, d := range v {
		if d.wwid == wwid {
			out = append(out, d)
		}
	}
	return out
}

const blkFlsBuf = 0x1261 // BLKFLSBUF

// readDisk reads the whole disk, past the page cache's old copy.
func readDisk(t *testing.T, dev string) []byte {
	t.Helper()
	f, err := os.Open("/dev/" + dev)
	if err != nil {
		t.Fatalf("open /dev/%s: %v", dev, err)
	}
	defer f.Close()
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkFlsBuf, 0); e != 0 {
		t.Fatalf("BLKFLSBUF /dev/%s: %v", dev, e)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read /dev/%s: %v", dev, err)
	}
	return b
}

// checkImage checks that the disk serves img: its bytes, its squashfs
// content, and that a write is refused.
func checkImage(t *testing.T, d disk, img *image) {
	t.Helper()
	got := readDisk(t, d.dev)
	if !bytes.Equal(got, img.data) {
		t.Errorf("%s: /dev/%s (%d bytes) differs from the uploaded squashfs (%d bytes)", img.key, d.dev, len(got), len(img.data))
		return
	}
	mnt := t.TempDir()
	mustRun(t, "mount", "-t", "squashfs", "-o", "ro", "/dev/"+d.dev, mnt)
	if err := sameTree(img.src, mnt); err != nil {
		t.Errorf("%s: the squashfs mounted from /dev/%s: %v", img.key, d.dev, err)
	}
	mustRun(t, "umount", mnt)
	checkWriteRefused(t, d, img)
}

// checkWriteRefused: the kernel refuses to open the disk for writing (the
// target reports Write Protect), and a SCSI WRITE(10) sent past the kernel's
// flag with SG_IO is refused by the target itself (CHECK CONDITION, DATA
// PROTECT). The bytes stay.
func checkWriteRefused(t *testing.T, d disk, img *image) {
	t.Helper()
	dev := "/dev/" + d.dev
	if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Errorf("%s: %s opened for writing; want EROFS (tpg1 demo_mode_write_protect=1)", img.key, dev)
	} else if !errors.Is(err, syscall.EROFS) {
		t.Errorf("%s: opening %s for writing: %v, want EROFS", img.key, dev, err)
	}
	status, senseKey, err := scsiWrite10(dev, 0, bytes.Repeat([]byte("refuse!!"), 64))
	switch {
	case err != nil:
		t.Errorf("%s: SG_IO WRITE(10) to %s: %v", img.key, dev, err)
	case status == 0:
		t.Errorf("%s: the target accepted a SCSI WRITE(10) to %s; a write-protected TPG must refuse it", img.key, dev)
	case status != 2 || senseKey != 7:
		t.Errorf("%s: SCSI WRITE(10) to %s: status 0x%x sense key 0x%x, want CHECK CONDITION (0x2) with DATA PROTECT (0x7)", img.key, dev, status, senseKey)
	}
	if got := readDisk(t, d.dev); !bytes.Equal(got, img.data) {
		t.Errorf("%s: /dev/%s changed after a refused write", img.key, d.dev)
	}
}

// sgIOHdr is Linux's struct sg_io_hdr (amd64 layout).
type sgIOHdr struct {
	interfaceID    int32
	dxferDirection int32
	cmdLen         uint8
	mxSbLen        uint8
	iovecCount     uint16
	dxferLen       uint32
	dxferp         uintptr
	cmdp           uintptr
	sbp            uintptr
	timeout        uint32
	flags          uint32
	packID         int32
	usrPtr         uintptr
	status         uint8
	maskedStatus   uint8
	msgStatus      uint8
	sbLenWr        uint8
	hostStatus     uint16
	driverStatus   uint16
	resid          int32
	duration       uint32
	info           uint32
}

// scsiWrite10 sends one WRITE(10) of data (whole 512-byte blocks) at lba
// with SG_IO and returns the SCSI status and the sense key.
func scsiWrite10(dev string, lba uint32, data []byte) (status, senseKey uint8, err error) {
	const (
		sgIO         = 0x2285
		sgDxferToDev = -2
	)
	f, err := os.Open(dev)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	blocks := len(data) / 512
	cdb := []byte{0x2a, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, byte(blocks >> 8), byte(blocks), 0}
	sense := make([]byte, 64)
	h := sgIOHdr{
		interfaceID: 'S', dxferDirection: sgDxferToDev,
		cmdLen: uint8(len(cdb)), mxSbLen: uint8(len(sense)),
		dxferLen: uint32(len(data)), dxferp: uintptr(unsafe.Pointer(&data[0])),
		cmdp: uintptr(unsafe.Pointer(&cdb[0])), sbp: uintptr(unsafe.Pointer(&sense[0])),
		timeout: 20000,
	}
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), sgIO, uintptr(unsafe.Pointer(&h)))
	runtime.KeepAlive(data)
	runtime.KeepAlive(cdb)
	runtime.KeepAlive(sense)
	if e != 0 {
		return 0, 0, e
	}
	if h.hostStatus != 0 || h.driverStatus&^0x08 != 0 { // DRIVER_SENSE is expected
		return h.status, 0, fmt.Errorf("host status 0x%x driver status 0x%x", h.hostStatus, h.driverStatus)
	}
	if h.sbLenWr > 2 {
		switch sense[0] & 0x7f {
		case 0x70, 0x71:
			senseKey = sense[2] & 0x0f
		case 0x72, 0x73:
			senseKey = sense[1] & 0x0f
		}
	}
	return h.status, senseKey, nil
}

// sameTree compares two directory trees: names, types and file contents.
func sameTree(want, got string) error {
	list := func(root string) (map[string]string, error) {
		m := map[string]string{}
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if e.IsDir() {
				m[rel] = "dir"
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = string(b)
			return nil
		})
		return m, err
	}
	w, err := list(want)
	if err != nil {
		return err
	}
	g, err := list(got)
	if err != nil {
		return err
	}
	for p, wv := range w {
		gv, ok := g[p]
		switch {
		case !ok:
			return fmt.Errorf("%s is missing", p)
		case gv != wv:
			return fmt.Errorf("%s differs (%d bytes, want %d)", p, len(gv), len(wv))
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			return fmt.Errorf("%s is not in the source", p)
		}
	}
	return nil
}

// waitView rescans until cond holds for the initiator's view, and returns
// how long that took.
func waitView(t *testing.T, timeout time.Duration, what string, cond func([]disk) error) ([]disk, time.Duration) {
	t.Helper()
	start := time.Now()
	var last error
	var v []disk
	for time.Since(start) < timeout {
		rescan(t)
		v = view(t)
		if last = cond(v); last == nil {
			return v, time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not after %v of rescans: %v; the initiator sees %v", what, timeout, last, v)
	return nil, 0
}

// checkExact checks that the initiator's view is exactly the projected
// images: each at one disk, at the LUN saveconfig.json gives it, serving
// its bytes; no disk naming anything else; no disk whose LUN number now
// serves another image than the one the session attached there.
func checkExact(t *testing.T, v []disk, want []*image, luns map[string]int) {
	t.Helper()
	wanted := map[string]*image{}
	for _, img := range want {
		wanted[img.id.WWID] = img
		d, err := checkVisible(v, img, luns[img.id.Name])
		if err != nil {
			t.Error(err)
			continue
		}
		if got := readDisk(t, d.dev); !bytes.Equal(got, img.data) {
			t.Errorf("%s: %s serves other bytes than the uploaded squashfs", img.key, d)
		}
	}
	for _, d := range v {
		if d.wwid == "" {
			continue // a LUN that went away: the target answers no identity
		}
		if wanted[d.wwid] == nil {
			t.Errorf("the initiator sees %s, which is no projected image (stale)", d)
		}
		if d.cached != d.wwid {
			t.Errorf("%s: lun%d now serves %s under a live session that attached %s there (LUN number reused)", d.dev, d.lun, d.wwid, d.cached)
		}
	}
}

// names returns the backstore names of imgs.
func names(imgs []*image) map[string]bool {
	m := map[string]bool{}
	for _, img := range imgs {
		m[img.id.Name] = true
	}
	return m
}

// exactly reports whether the LUN map holds exactly the images in want.
func exactly(want []*image) func(map[string]int) bool {
	n := names(want)
	return func(m map[string]int) bool {
		if len(m) != len(n) {
			return false
		}
		for name := range m {
			if !n[name] {
				return false
			}
		}
		return true
	}
}
