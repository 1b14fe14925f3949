//go:build kernel

package rebuild

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
	tg, ok := c.Target(iqn)
	if !ok {
		return out
	}
	tp, ok := tg.TPG(1)
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
