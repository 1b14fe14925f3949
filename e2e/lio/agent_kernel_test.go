//go:build kernel

package lio

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// world is what the agent talks to besides LIO, on loopback in the guest:
// the real S3 server (versitygw, whose posix folder plays the s3fs mount)
// and the IMS server built to IMS's OpenAPI spec, without authentication.
type world struct {
	s3   *rig.S3
	ims  *imstest.Server
	cred string
	dir  string
}

func startWorld(t *testing.T, dir string) *world {
	t.Helper()
	w := &world{dir: dir, cred: filepath.Join(dir, "s3.cred")}
	var err error
	if w.s3, err = rig.StartS3(t.Context(), rig.S3Options{Dir: filepath.Join(dir, "s3")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.s3.Stop() })
	if w.ims, err = imstest.Start(imstest.Options{}, imstest.ListenOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.ims.Close() })
	c := w.s3.Credentials()
	if err := os.WriteFile(w.cred, []byte(c.AccessKeyID+":"+c.SecretAccessKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// newAgent builds the real agent in this process on w, driving the guest's
// real targetcli in mode against the node n.
func newAgent(t *testing.T, n *node, w *world, mode string) *agent.Agent {
	t.Helper()
	env := []string{
		"SBPS_MARSHAL_S3_HOST=" + strings.TrimPrefix(w.s3.Endpoint(), "http://"),
		"SBPS_MARSHAL_S3_PROTO=http",
		"SBPS_MARSHAL_S3_CREDENTIAL_FILE=" + w.cred,
		"SBPS_MARSHAL_S3_BUCKET=" + w.s3.Bucket(),
		"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=" + w.s3.MountDir(),
		"SBPS_MARSHAL_API_GATEWAY=" + w.ims.URL(),
		"SBPS_MARSHAL_IMS_URI=apis/ims/v3/images",
		"SBPS_MARSHAL_IMS_AUTH=none",
		"SBPS_MARSHAL_STATE_DIR=" + filepath.Join(w.dir, "state"),
		"SBPS_MARSHAL_GATE=none",
		"SBPS_MARSHAL_METRICS_ADDR=",
		"SBPS_MARSHAL_LIO_SAVE_FILE=" + saveFile,
		"SBPS_MARSHAL_TARGETCLI_BIN=" + targetcli,
		"SBPS_MARSHAL_TARGETCLID_SOCKET=" + daemonSocket,
		"SBPS_MARSHAL_TARGETCLI_MODE=" + mode,
		"SBPS_MARSHAL_TARGET_IQN=" + n.iqn,
		"SBPS_MARSHAL_NODE_NAME=" + hostname,
		"SBPS_MARSHAL_LUN_REGISTRY=local",
	}
	cfg, _, err := config.Load(config.Sources{Environ: env}, flag.NewFlagSet("test", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	var out io.Writer = io.Discard
	if os.Getenv("SBPS_TEST_LOG") != "" {
		out = os.Stderr
	}
	a, err := agent.New(t.Context(), cfg, slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})), agent.Options{TargetcliEnv: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// ext4Dir is a fresh ext4 file system for the test: versitygw keeps object
// metadata in user xattrs, which neither the guest's hostfs /tmp nor the
// 6.1 kernel's tmpfs has.
func ext4Dir(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	dir := filepath.Join("/srv/e2e-lio", "ext4-"+t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"truncate", "-s", "512M", img}, {"mkfs.ext4", "-q", "-F", img}, {"mount", "-o", "loop", img, dir}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		clearLIO(t) // LIO lets go of the image files
		if out, err := exec.Command("umount", "-d", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// TestAgentReadOnlyImage (issue 18, "one failing create blocks the rest"):
// the real agent projects several PE images while one of them lies on a
// read-only mount. Before the fix the batch died on that image's OSError,
// every pass retried the same batch, the other images were never projected
// and status said only "not projected yet". Now the others are projected in
// the first pass and status gives that image's cause and fix.
func TestAgentReadOnlyImage(t *testing.T) {
	n := newNode(t)
	w := startWorld(t, ext4Dir(t))
	ctx := t.Context()
	good := []string{"a.squashfs", "b.squashfs", "d.squashfs"}
	for _, name := range append(good, "ro/c.squashfs") {
		if _, err := w.s3.Put(ctx, "PE/"+name, []byte(strings.Repeat(name, 4096))); err != nil {
			t.Fatal(err)
		}
	}
	readOnlyBind(t, filepath.Join(w.s3.MountDir(), "PE", "ro"))

	a := newAgent(t, n, w, "batch")
	if err := a.Reconciler.LIO.Save(ctx); err != nil { // as Run's first pass does
		t.Fatal(err)
	}
	rep, err := a.SyncOnce(ctx, projector.SyncOptions{Trigger: "test"})
	if err != nil {
		t.Errorf("first pass: %v", err)
	}
	if rep != nil {
		for _, r := range rep.Results {
			if !r.OK() {
				t.Errorf("%s: %s (%v): the image on the read-only mount reached targetcli", r.Op, r.Outcome, r.Err)
			}
		}
	}
	entries, _, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]projector.Entry{}
	for _, e := range entries {
		byKey[e.Key] = e
	}
	for _, name := range good {
		if e := byKey["PE/"+name]; e.State != projector.Projected {
			t.Errorf("status of PE/%s = %s %q, want projected", name, e.State, e.Reason)
		}
	}
	e := byKey["PE/ro/c.squashfs"]
	if e.State != projector.Pending || !strings.Contains(e.Reason, "read-only mount") || !strings.Contains(e.Reason, "read-write") {
		t.Errorf("status of PE/ro/c.squashfs = %s %q, want pending with the cause (read-only mount) and the fix (mount it read-write)", e.State, e.Reason)
	}
}
