package doctor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/doctor"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/gate/kubectltest"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
)

// node is a worker on the rig with everything the agent needs in place:
// NATS with the stream and the registry bucket, versitygw, IMS, SPIRE
// registered as on CSM, the simulated LIO, target.service active, the
// node labelled through a kubectl that needs its kubeconfig, and a mount
// table that shows the bucket's folder as the s3fs mount.
type node struct {
	s         *rig.Stack
	dir       string
	env       []string
	mountinfo string
}

const stream = "SBPS"

func startNode(t *testing.T) *node {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	s, err := rig.StartStack(ctx, rig.StackOptions{Dir: filepath.Join(dir, "rig")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	nc, err := nats.Connect(s.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, stream, []string{"sbps.s3.events", "sbps.ims.events"}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "sbps-luns"}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "etc", "kubernetes", "admin.conf")
	if err := kubectltest.WriteCluster(kubeconfig, kubectltest.Node{Name: s.NodeName, Labels: map[string]string{"iscsi": "sbps"}}); err != nil {
		t.Fatal(err)
	}
	unit := systemctltest.Install(t, filepath.Join(dir, "active"), systemctltest.Options{State: "active"})
	unit.AddUnit(t, doctor.AgentUnit, "active", "enabled")
	if _, err := s.PutPE(ctx, "CPE-doctor.x86_64.squashfs", []byte("a programming environment")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddImage(ctx, "compute-doctor", []byte("a rootfs"), true); err != nil {
		t.Fatal(err)
	}
	n := &node{s: s, dir: dir}
	n.mountinfo = n.writeMountinfo(t, "mountinfo", s.Mount())
	n.env = append(s.AgentEnv(),
		"SBPS_MARSHAL_GATE=kubectl",
		"SBPS_MARSHAL_KUBECTL_BIN="+kubectltest.Binary(t),
		"SBPS_MARSHAL_KUBECONFIG="+kubeconfig,
		"SBPS_MARSHAL_SYSTEMCTL_BIN="+unit.Path,
		"SBPS_MARSHAL_NATS_STREAM="+stream,
		"SBPS_MARSHAL_LUN_REGISTRY=auto",
	)
	return n
}

// writeMountinfo writes a mount table in which each of mounts is an s3fs
// mount, as on a CSM worker, and returns its path.
func (n *node) writeMountinfo(t *testing.T, name string, mounts ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
	b.WriteString("25 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n")
	for i, m := range mounts {
		fmt.Fprintf(&b, "%d 22 0:%d / %s ro,nosuid,nodev,relatime shared:%d - fuse.s3fs s3fs ro,user_id=0,group_id=0\n",
			40+i, 40+i, strings.ReplaceAll(m, " ", `\040`), 40+i)
	}
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// check runs doctor on the node with the environment changed by kvs.
func (n *node) check(t *testing.T, o doctor.Options, kvs ...string) []doctor.Result {
	t.Helper()
	cfg, _, err := config.Load(config.Sources{Environ: testutil.SetEnv(n.env, kvs...)}, flag.NewFlagSet("doctor", flag.ContinueOnError))
	if o.Mountinfo == "" {
		o.Mountinfo = n.mountinfo
	}
	o.TargetcliEnv = n.s.Node.Env()
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	rows := doctor.Run(t.Context(), cfg, err, o)
	if names := rowNames(rows); strings.Join(names, ",") != strings.Join(doctor.Rows(), ",") {
		t.Errorf("rows %q, want %q in that order", names, doctor.Rows())
	}
	return rows
}

func rowNames(rows []doctor.Result) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Name)
	}
	return out
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func table(rows []doctor.Result) string {
	var b bytes.Buffer
	doctor.WriteTable(&b, rows)
	return b.String()
}

// TestDoctor is issue 16: an all-OK node first, then one thing broken at a
// time; the row it breaks has the status and a fix that names what to
// run or change, and doctor fails (exit 1) exactly when a row is FAIL.
func TestDoctor(t *testing.T) {
	n := startNode(t)
	s := n.s

	rows := n.check(t, doctor.Options{})
	for _, r := range rows {
		if r.Status != doctor.OK {
			t.Errorf("all-OK node: %s is %s: %s (fix: %s)", r.Name, r.Status, r.Detail, r.Fix)
		}
	}
	if doctor.Failed(rows) {
		t.Error("all-OK node: Failed() = true")
	}
	for name, want := range map[string][]string{
		doctor.RowGate:      {"labelled iscsi=sbps"},
		doctor.RowTargetcli: {"version 2.1.53", "TARGETCLI_MODE=batch"},
		doctor.RowLIOTarget: {s.Node.IQN() + "/tpg1 enabled", "10.252.1.7:3260", "demo_mode_write_protect=1", "prod_mode_write_protect=1"},
		doctor.RowMount:     {"fuse.s3fs", "stat of"},
		doctor.RowSPIFFE:    {"spiffe://shasta/ncn/workload/sbps-marshal", "from cli"},
		doctor.RowIMS:       {"1 images, 1 to project", "from cli"},
		doctor.RowNATS:      {"JetStream enabled"},
		doctor.RowStream:    {"stream SBPS holds"},
		doctor.RowRegistry:  {"nats (fleet", "KV bucket sbps-luns"},
	} {
		r, _ := doctor.Find(rows, name)
		for _, w := range want {
			if !strings.Contains(r.Detail, w) {
				t.Errorf("all-OK node: %s detail %q lacks %q", name, r.Detail, w)
			}
		}
	}
	if t.Failed() {
		t.Fatalf("the all-OK node is not:\n%s", table(rows))
	}
	t.Logf("all-OK node:\n%s", table(rows))

	unlabelled := filepath.Join(n.dir, "unlabelled.conf")
	if err := kubectltest.WriteCluster(unlabelled, kubectltest.Node{Name: s.NodeName}); err != nil {
		t.Fatal(err)
	}
	inactive := systemctltest.Install(t, filepath.Join(n.dir, "inactive"), systemctltest.Options{State: "inactive"})
	inactive.AddUnit(t, doctor.AgentUnit, "active", "enabled")
	agentUnit := func(name, state, enabled string) string {
		f := systemctltest.Install(t, filepath.Join(n.dir, name), systemctltest.Options{State: "active"})
		f.AddUnit(t, doctor.AgentUnit, state, enabled)
		return f.Path
	}
	wrongKey := filepath.Join(n.dir, "wrong.cred")
	c := s.S3.Credentials()
	if err := os.WriteFile(wrongKey, []byte(c.AccessKeyID+":not-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noJS := rig.NATSForTest(t, rig.NATSOptions{NoJetStream: true})
	spiffeNATS, err := rig.StartSPIFFENATS(t.TempDir(), s.SPIFFE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spiffeNATS.Shutdown)
	saved, err := os.ReadFile(s.Node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	live, err := s.Node.Live()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		env   []string
		o     doctor.Options
		setup func(t *testing.T) // breaks the node; restored by t.Cleanup
		row   string
		want  doctor.Status
		fix   []string // the fix names these
		fails bool     // another row fails because of it (exit 1 though the row is not FAIL)
		ok    []string // rows that stay OK
	}{
		{name: "configuration invalid", env: []string{"SBPS_MARSHAL_IMS_TAGGING=True"},
			row: doctor.RowConfig, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_IMS_TAGGING", "environment"}},
		{name: "kubectl missing", env: []string{"SBPS_MARSHAL_KUBECTL_BIN=" + filepath.Join(n.dir, "no", "kubectl")},
			row: doctor.RowKubectl, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_KUBECTL_BIN"}},
		{name: "kubeconfig missing", env: []string{"SBPS_MARSHAL_KUBECONFIG=" + filepath.Join(n.dir, "missing.conf")},
			row: doctor.RowKubeconfig, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_KUBECONFIG", "/etc/kubernetes/admin.conf"}},
		{name: "kubeconfig empty", env: []string{"SBPS_MARSHAL_KUBECONFIG="},
			row: doctor.RowKubeconfig, want: doctor.Warn, fix: []string{"SBPS_MARSHAL_KUBECONFIG=/etc/kubernetes/admin.conf"},
			fails: true}, // kubectl without a kubeconfig asks localhost:8080: the gate cannot be read
		{name: "node unlabelled", env: []string{"SBPS_MARSHAL_KUBECONFIG=" + unlabelled},
			row: doctor.RowGate, want: doctor.Warn, fix: []string{"kubectl label node " + s.NodeName + " iscsi=sbps"}},
		{name: "gate file missing", env: []string{"SBPS_MARSHAL_GATE=file:" + filepath.Join(n.dir, "gate")},
			row: doctor.RowGate, want: doctor.Warn, fix: []string{"touch " + filepath.Join(n.dir, "gate")}},
		{name: "target.service inactive", env: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN=" + inactive.Path},
			row: doctor.RowTargetService, want: doctor.Fail, fix: []string{"systemctl enable --now target.service"}},
		{name: "agent held after an upgrade from the Python agent", env: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN=" + agentUnit("held", "inactive", "masked")},
			row: doctor.RowService, want: doctor.Warn, fix: []string{"systemctl unmask sbps-marshal && systemctl restart sbps-marshal"}},
		{name: "agent not enabled after a fresh install", env: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN=" + agentUnit("fresh", "inactive", "disabled")},
			row: doctor.RowService, want: doctor.Warn, fix: []string{"systemctl enable --now sbps-marshal"}},
		{name: "agent failed", env: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN=" + agentUnit("failed", "failed", "enabled")},
			row: doctor.RowService, want: doctor.Warn, fix: []string{"journalctl -u sbps-marshal -p err"}},
		{name: "systemctl missing", env: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN=" + filepath.Join(n.dir, "no", "systemctl")},
			row: doctor.RowTargetService, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_SYSTEMCTL_BIN"}},
		{name: "LIO not restored",
			setup: func(t *testing.T) {
				if err := s.Node.Clear(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Node.Restore(live) })
			},
			row: doctor.RowLIORestored, want: doctor.Fail, fix: []string{"systemctl start target.service"}},
		{name: "saveconfig.json torn",
			setup: func(t *testing.T) {
				if err := os.WriteFile(s.Node.SaveFile(), saved[:len(saved)/2], 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.WriteFile(s.Node.SaveFile(), saved, 0o600) })
			},
			row: doctor.RowSaveconfig, want: doctor.Fail, fix: []string{".unreadable", "targetctl restore"}},
		{name: "saveconfig.json missing",
			setup: func(t *testing.T) {
				if err := os.Remove(s.Node.SaveFile()); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.WriteFile(s.Node.SaveFile(), saved, 0o600) })
			},
			row: doctor.RowSaveconfig, want: doctor.Warn, fix: []string{"sbps-marshal sync"}},
		{name: "tpg1 writable",
			setup: func(t *testing.T) {
				setAttr(t, n, "demo_mode_write_protect=0")
				t.Cleanup(func() { setAttr(t, n, "demo_mode_write_protect=1") })
			},
			row: doctor.RowLIOTarget, want: doctor.Fail, fix: []string{"demo_mode_write_protect=1", "targetcli saveconfig"}},
		{name: "target missing", env: []string{"SBPS_MARSHAL_TARGET_IQN=iqn.2023-06.csm.iscsi:ncn-w999"},
			row: doctor.RowLIOTarget, want: doctor.Fail, fix: []string{"config_sbps_iscsi_targets.yml", "SBPS_MARSHAL_TARGET_IQN"}},
		{name: "targetcli missing", env: []string{"SBPS_MARSHAL_TARGETCLI_BIN=" + filepath.Join(n.dir, "no", "targetcli")},
			row: doctor.RowTargetcli, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_TARGETCLI_BIN", "targetcli-fb"}},
		{name: "targetclid socket missing", env: []string{"SBPS_MARSHAL_TARGETCLI_MODE=daemon", "SBPS_MARSHAL_TARGETCLID_SOCKET=" + filepath.Join(n.dir, "targetclid.sock")},
			row: doctor.RowTargetcli, want: doctor.Fail, fix: []string{"targetclid.socket", "SBPS_MARSHAL_TARGETCLI_MODE=batch"}},
		{name: "targetclid running", env: []string{"SBPS_MARSHAL_TARGETCLI_MODE=daemon", "SBPS_MARSHAL_TARGETCLID_SOCKET=" + s.Node.SocketPath()},
			setup: func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- s.Node.ServeDaemon(ctx, s.Node.SocketPath()) }()
				t.Cleanup(func() { cancel(); <-done })
				testutil.WaitFor(t, 10*time.Second, "targetclid listening", func() error {
					_, err := os.Stat(s.Node.SocketPath())
					return err
				})
			},
			row: doctor.RowTargetcli, want: doctor.OK, ok: []string{doctor.RowLIORestored}}, // saved through targetclid
		{name: "targetclid gone", env: []string{"SBPS_MARSHAL_TARGETCLI_MODE=daemon", "SBPS_MARSHAL_TARGETCLID_SOCKET=" + filepath.Join(n.dir, "stale.sock")},
			setup: func(t *testing.T) {
				// The socket file of a targetclid that stopped.
				ln, err := net.Listen("unix", filepath.Join(n.dir, "stale.sock"))
				if err != nil {
					t.Fatal(err)
				}
				ln.(*net.UnixListener).SetUnlinkOnClose(false)
				ln.Close()
				t.Cleanup(func() { os.Remove(filepath.Join(n.dir, "stale.sock")) })
			},
			row: doctor.RowTargetcli, want: doctor.Fail, fix: []string{"systemctl restart targetclid.socket", "SBPS_MARSHAL_TARGETCLI_MODE=batch"}},
		{name: "mount missing", o: doctor.Options{Mountinfo: n.writeMountinfo(t, "no-s3fs")},
			row: doctor.RowMount, want: doctor.Fail, fix: []string{"mount " + s.Mount(), "s3fs boot-images"}},
		{name: "mount not serving", env: []string{"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=" + filepath.Join(n.dir, "crashed")},
			o:   doctor.Options{Mountinfo: n.writeMountinfo(t, "crashed-s3fs", filepath.Join(n.dir, "crashed"))},
			row: doctor.RowMount, want: doctor.Fail, fix: []string{"umount -l " + filepath.Join(n.dir, "crashed")}},
		{name: "s3fs hung", env: []string{"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=" + filepath.Join(n.dir, "hung")},
			o: doctor.Options{Mountinfo: n.writeMountinfo(t, "hung-s3fs", filepath.Join(n.dir, "hung")), Timeout: time.Second},
			setup: func(t *testing.T) {
				// Opening a FIFO blocks in the kernel until a writer comes,
				// as a listing of a hung s3fs does.
				hung := filepath.Join(n.dir, "hung")
				if err := syscall.Mkfifo(hung, 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if w, err := os.OpenFile(hung, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						w.Close() // lets the abandoned listing return
					}
					os.Remove(hung)
				})
			},
			row: doctor.RowMount, want: doctor.Fail, fix: []string{"s3fs is hung", "umount -l " + filepath.Join(n.dir, "hung")}},
		{name: "S3 down", env: []string{"SBPS_MARSHAL_S3_HOST=" + closedPort(t)},
			row: doctor.RowS3, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_S3_HOST"}},
		{name: "S3 wrong credentials", env: []string{"SBPS_MARSHAL_S3_CREDENTIAL_FILE=" + wrongKey},
			row: doctor.RowS3, want: doctor.Fail, fix: []string{"S3 refused the key", wrongKey}},
		{name: "S3 TLS not verified", env: []string{"SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY=true", "SBPS_MARSHAL_S3_PROTO=http"},
			row: doctor.RowConfig, want: doctor.Warn, fix: []string{"SBPS_MARSHAL_TLS_INSECURE_SKIP_VERIFY"}},
		{name: "IMS down", env: []string{"SBPS_MARSHAL_API_GATEWAY=http://" + closedPort(t)},
			row: doctor.RowIMS, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_API_GATEWAY"}},
		{name: "IMS refuses the SVID", env: []string{"SBPS_MARSHAL_SPIRE_JWT_AUDIENCE=not-ims"},
			row: doctor.RowIMS, want: doctor.Fail, fix: []string{"IMS refused the JWT-SVID", "SBPS_MARSHAL_SPIRE_JWT_AUDIENCE"}},
		{name: "SPIRE CLI absent", env: []string{"SBPS_MARSHAL_SPIFFE_SOURCE=cli", "SBPS_MARSHAL_SPIRE_AGENT_PATH=" + filepath.Join(n.dir, "no", "sbps-marshal-spire-agent")},
			row: doctor.RowSPIFFE, want: doctor.Fail, fix: []string{"ln /usr/bin/spire-agent " + filepath.Join(n.dir, "no", "sbps-marshal-spire-agent"), "SBPS_MARSHAL_SPIRE_AGENT_PATH"}},
		{name: "SPIRE CLI absent, auto", env: []string{"SBPS_MARSHAL_SPIRE_AGENT_PATH=" + filepath.Join(n.dir, "no", "sbps-marshal-spire-agent")},
			row: doctor.RowSPIFFE, want: doctor.Fail, fix: []string{"ln /usr/bin/spire-agent", "SPIFFE_SOURCE=auto"}},
		{name: "NATS with the node's X.509-SVID", env: []string{"SBPS_MARSHAL_NATS_URL=" + spiffeNATS.ClientURL(), "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_STREAM=", "SBPS_MARSHAL_LUN_REGISTRY=local"},
			row: doctor.RowNATS, want: doctor.OK},
		{name: "NATS without an X.509-SVID", env: []string{"SBPS_MARSHAL_NATS_URL=" + spiffeNATS.ClientURL(), "SBPS_MARSHAL_NATS_SPIFFE=true", "SBPS_MARSHAL_NATS_STREAM=", "SBPS_MARSHAL_LUN_REGISTRY=local",
			"SBPS_MARSHAL_SPIFFE_SOURCE=cli", "SBPS_MARSHAL_SPIRE_AGENT_PATH=" + filepath.Join(n.dir, "no", "sbps-marshal-spire-agent")},
			o:   doctor.Options{Timeout: 2 * time.Second},
			row: doctor.RowNATS, want: doctor.Fail, fix: []string{"SPIFFE row", "SPIRE_AGENT_PATH"}},
		{name: "NATS down", env: []string{"SBPS_MARSHAL_NATS_URL=nats://" + closedPort(t)},
			row: doctor.RowNATS, want: doctor.Fail, fix: []string{"SBPS_MARSHAL_NATS_URL"}},
		{name: "no JetStream", env: []string{"SBPS_MARSHAL_NATS_URL=" + noJS.ClientURL()},
			row: doctor.RowStream, want: doctor.Fail, fix: []string{"enable JetStream", "SBPS_MARSHAL_NATS_STREAM"}},
		{name: "no JetStream, no stream", env: []string{"SBPS_MARSHAL_NATS_URL=" + noJS.ClientURL(), "SBPS_MARSHAL_NATS_STREAM="},
			row: doctor.RowRegistry, want: doctor.Warn, fix: []string{"enable JetStream", "SBPS_MARSHAL_LUN_REGISTRY=local"}},
		{name: "stream missing", env: []string{"SBPS_MARSHAL_NATS_STREAM=NOSUCH"},
			row: doctor.RowStream, want: doctor.Fail, fix: []string{"nats stream add NOSUCH", "sbps.s3.events,sbps.ims.events"}},
		{name: "registry bucket missing", env: []string{"SBPS_MARSHAL_LUN_KV_BUCKET=nosuch"},
			row: doctor.RowRegistry, want: doctor.Warn, fix: []string{"SBPS_MARSHAL_LUN_KV_BUCKET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			rows := n.check(t, tc.o, tc.env...)
			r, _ := doctor.Find(rows, tc.row)
			t.Logf("%s %s: %s\nfix: %s", r.Name, r.Status, r.Detail, r.Fix)
			if r.Status != tc.want {
				t.Errorf("%s is %s, want %s:\n%s", tc.row, r.Status, tc.want, table(rows))
			}
			for _, w := range tc.fix {
				if !strings.Contains(r.Fix, w) {
					t.Errorf("%s fix %q lacks %q", tc.row, r.Fix, w)
				}
			}
			if failed, want := doctor.Failed(rows), tc.want == doctor.Fail || tc.fails; failed != want {
				t.Errorf("Failed() = %v, want %v (exit %d):\n%s", failed, want, map[bool]int{true: 1}[want], table(rows))
			}
			for _, name := range tc.ok {
				if r, _ := doctor.Find(rows, name); r.Status != doctor.OK {
					t.Errorf("%s is %s: %s", name, r.Status, r.Detail)
				}
			}
			for _, o := range rows {
				if o.Status != doctor.OK && o.Fix == "" {
					t.Errorf("%s is %s without a fix", o.Name, o.Status)
				}
			}
		})
	}
}

// setAttr sets a tpg1 attribute in LIO and saves it, as an administrator
// with targetcli would.
func setAttr(t *testing.T, n *node, kv string) {
	t.Helper()
	tpg := "/iscsi/" + n.s.Node.IQN() + "/tpg1"
	for _, line := range []string{tpg + " set attribute " + kv, "saveconfig " + n.s.Node.SaveFile()} {
		if out, err := n.s.Node.Run(t.Context(), line); err != nil {
			t.Fatalf("targetcli %s: %v\n%s", line, err, out)
		}
	}
}

// TestWriteJSON: the rows as a JSON array with stable field names.
func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	rows := []doctor.Result{{Name: doctor.RowS3, Status: doctor.Fail, Detail: "d", Fix: "f"}, {Name: doctor.RowIMS, Status: doctor.OK, Detail: "ok"}}
	if err := doctor.WriteJSON(&b, rows); err != nil {
		t.Fatal(err)
	}
	var got []map[string]string
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{"name": "S3", "status": "FAIL", "detail": "d", "fix": "f"}, {"name": "IMS", "status": "OK", "detail": "ok", "fix": ""}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("WriteJSON = %v, want %v", got, want)
	}
}

// TestDoctorS3FS: the bucket mounted with real s3fs-fuse, found in this
// process's own mount table, serving the image files.
func TestDoctorS3FS(t *testing.T) {
	n := startNode(t)
	mnt := filepath.Join(t.TempDir(), "boot-images")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmount, err := rig.MountS3FS(t.Context(), n.s.S3, mnt)
	if errors.Is(err, rig.ErrNoFUSE) && os.Getenv("SBPS_NO_FUSE") == "1" {
		t.Skipf("SBPS_NO_FUSE=1: %v", err)
	}
	if err != nil {
		t.Fatalf("%v (install Debian's s3fs and run as root with /dev/fuse, or set SBPS_NO_FUSE=1 to skip this test)", err)
	}
	t.Cleanup(func() { unmount() })
	rows := n.check(t, doctor.Options{Mountinfo: doctor.DefaultMountinfo}, "SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT="+mnt)
	r, _ := doctor.Find(rows, doctor.RowMount)
	if r.Status != doctor.OK || !strings.Contains(r.Detail, "fuse.s3fs") || !strings.Contains(r.Detail, "stat of "+mnt+"/") {
		t.Errorf("s3fs mount row = %s %q, want OK: fuse.s3fs, a file under %s stated", r.Status, r.Detail, mnt)
	}
	if doctor.Failed(rows) {
		t.Errorf("doctor over a real s3fs mount failed:\n%s", table(rows))
	}
}
