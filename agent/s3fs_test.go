package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// TestProjectFromS3FS projects an image from the bucket mounted with real
// s3fs-fuse, as on a CSM worker: the backstore's file is on the FUSE mount.
func TestProjectFromS3FS(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	mnt := filepath.Join(t.TempDir(), "boot-images")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// Read-write, as on a CSM worker: the kernel opens a fileio backing
	// file read-write, so an image on a read-only mount is pending.
	unmount, err := rig.MountS3FSWritable(ctx, s.S3, mnt)
	if errors.Is(err, rig.ErrNoFUSE) && os.Getenv("SBPS_NO_FUSE") == "1" {
		t.Skipf("SBPS_NO_FUSE=1: %v", err)
	}
	if err != nil {
		t.Fatalf("%v (install Debian's s3fs and run as root with /dev/fuse, or set SBPS_NO_FUSE=1 to skip this test)", err)
	}
	t.Cleanup(func() { unmount() })

	data := []byte("a programming environment image read through s3fs")
	key, err := s.PutPE(ctx, "CPE-s3fs.squashfs", data)
	if err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, s, "SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT="+mnt)
	id := peID(key)
	// s3fs may list a fresh object late or at 0 bytes: pending, then projected.
	testutil.WaitFor(t, 20*time.Second, "projection over the s3fs mount", func() error {
		rep, err := a.SyncOnce(ctx, projector.SyncOptions{Trigger: "test"})
		if err != nil {
			return err
		}
		if _, ok := rep.Desired.Projections[id.Name]; !ok {
			return fmt.Errorf("not desired yet (pending: %v)", rep.Desired.Pending[id.Name].Reason)
		}
		return nil
	})
	c, err := s.Saved()
	if err != nil {
		t.Fatal(err)
	}
	so, ok := c.FileIO(id.Name)
	if !ok {
		t.Fatalf("backstore %s not in saveconfig.json", id.Name)
	}
	if want := filepath.Join(mnt, key); so.Dev != want || so.SizeBytes() != int64(len(data)) {
		t.Errorf("backstore over %s, %d bytes; want %s, %d bytes", so.Dev, so.SizeBytes(), want, len(data))
	}
}
