package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/internal/mountinfo"
)

// checkMount is the s3fs mount row: SQUASHFS_S3FS_MOUNT is a fuse.s3fs
// mount point in the mount table, and it serves files: a listing and the
// stat of one file answer within the timeout (a hung s3fs blocks them in
// the kernel; the row then says so instead of hanging).
func checkMount(ctx context.Context, cfg *config.Config, o Options) Result {
	r := Result{Name: RowMount}
	remount := fmt.Sprintf("mount the bucket at %s (its /etc/fstab entry: `mount %s`; by hand: s3fs %s %s -o ro,url=%s://%s,passwd_file=%s,use_path_request_style)",
		cfg.Mount, cfg.Mount, cfg.S3Bucket, cfg.Mount, cfg.S3Proto, cfg.S3Host, orDefault(cfg.S3CredentialFile, "/root/.ims.s3fs"))
	mounts, err := mountinfo.Read(o.Mountinfo)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, "cannot read the mount table: "+errText(err), "run doctor on the node itself (it reads "+o.Mountinfo+")"
		return r
	}
	found, ok := mountinfo.Find(mounts, cfg.Mount)
	if !ok {
		r.Status = Fail
		r.Detail = fmt.Sprintf("%s (SQUASHFS_S3FS_MOUNT) is not a mount point (not in %s): the agent sees no image files and projects nothing new", cfg.Mount, o.Mountinfo)
		r.Fix = remount + "; or, if the bucket is mounted elsewhere, " + setKey(cfg, "SQUASHFS_S3FS_MOUNT", "<its mount point>")
		return r
	}
	mounted := fmt.Sprintf("%s is mounted (%s from %s)", cfg.Mount, found.FSType, found.Source)
	res := bounded(ctx, o.Timeout, RowMount,
		fmt.Sprintf("s3fs is hung: umount -l %s, then mount it again (%s); check S3 (the S3 row) and s3fs's log (journalctl -t s3fs)", cfg.Mount, remount),
		func(ctx context.Context) Result { return serving(cfg.Mount) })
	if res.Status != OK {
		res.Detail = mounted + " but does not serve files: " + res.Detail
		if res.Fix == "" {
			res.Fix = fmt.Sprintf("check S3 (the S3 row) and s3fs's log (journalctl -t s3fs); remount: umount -l %s, then %s", cfg.Mount, remount)
		}
		return res
	}
	r.Status, r.Detail = OK, mounted+"; "+res.Detail
	if found.FSType != "fuse.s3fs" {
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s is mounted as %s, not fuse.s3fs; %s", cfg.Mount, found.FSType, res.Detail)
		r.Fix = "check that SQUASHFS_S3FS_MOUNT names the s3fs mount of " + cfg.S3Bucket + " in " + envFile(cfg)
	}
	return r
}

// serving lists the mount and stats one file in it (in the top folder or
// the first few folders below it). It may block in the kernel: run it
// bounded.
func serving(mount string) Result {
	start := time.Now()
	fail := func(err error) Result { return Result{Name: RowMount, Status: Fail, Detail: errText(err)} }
	top, err := readDir(mount, 64)
	if err != nil {
		return fail(err)
	}
	file := ""
	for _, e := range top {
		if e.Type().IsRegular() {
			file = filepath.Join(mount, e.Name())
			break
		}
	}
	for i := 0; file == "" && i < len(top) && i < 4; i++ {
		if !top[i].IsDir() {
			continue
		}
		sub, err := readDir(filepath.Join(mount, top[i].Name()), 16)
		if err != nil {
			return fail(err)
		}
		for _, e := range sub {
			if e.Type().IsRegular() {
				file = filepath.Join(mount, top[i].Name(), e.Name())
				break
			}
		}
	}
	if file == "" {
		return Result{Name: RowMount, Status: OK, Detail: fmt.Sprintf("listing answers in %s (%d entries, no file to stat)", time.Since(start).Round(10*time.Microsecond), len(top))}
	}
	if _, err := os.Stat(file); err != nil {
		return fail(err)
	}
	return Result{Name: RowMount, Status: OK, Detail: fmt.Sprintf("listing and stat of %s answer in %s", file, time.Since(start).Round(10*time.Microsecond))}
}

func readDir(dir string, n int) ([]os.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	es, err := f.ReadDir(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	return es, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
