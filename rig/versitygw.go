package rig

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sbps-marshal/sbps-marshal/internal/mountinfo"
)

const (
	// DefaultSubject is the NATS subject versitygw publishes bucket
	// notifications to unless S3Options.Subject says otherwise.
	DefaultSubject = "sbps.s3.events"
	// DefaultBucket is the bucket StartS3 creates unless S3Options.Bucket
	// says otherwise (the CSM bucket the agent projects from).
	DefaultBucket = "boot-images"

	versitygwToolHint = "versitygw not found: run `make tools` (builds github.com/versity/versitygw/cmd/versitygw@v1.8.0 into .tools/bin)"
	healthPath        = "/rig-health"
	logTailBytes      = 4096
	stopGrace         = 10 * time.Second
)

// FindVersityGW returns the path of the versitygw binary: the environment
// variable VERSITYGW_BIN if set, else <module root>/.tools/bin/versitygw
// (the module root is found by walking up from the working directory to
// go.mod), else versitygw on PATH.
func FindVersityGW() (string, error) {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("rig: VERSITYGW_BIN=%s is not an executable file; unset it or %s", p, versitygwToolHint)
	}
	if root, err := moduleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", "versitygw")
		if isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", errors.New(versitygwToolHint)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// moduleRoot walks up from the working directory to the first directory
// holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// S3Options configures StartS3.
type S3Options struct {
	// Dir holds everything the server writes: the posix backend root
	// (Dir/gw, with one directory per bucket) and the log (Dir/versitygw.log).
	// Required.
	Dir string
	// NATSURL is where bucket notifications are published. Empty means no
	// notifications.
	NATSURL string
	// Subject is the NATS subject for notifications. Defaults to
	// DefaultSubject.
	Subject string
	// Bucket is created at start. Defaults to DefaultBucket.
	Bucket string
	// Binary is the versitygw executable. Defaults to FindVersityGW().
	Binary string
	// StartTimeout bounds how long StartS3 and Restart wait for the server
	// to answer. Defaults to 30s.
	StartTimeout time.Duration
}

// S3 is a running versitygw process (posix backend) on a loopback port. Its
// methods are safe for concurrent use; Stop, Kill and Restart serialise.
type S3 struct {
	opts   S3Options
	root   string // posix backend root
	log    string // log file path
	port   int
	access string
	secret string
	client *s3.Client

	mu   sync.Mutex
	proc *process // +checklocks:mu; nil when stopped
}

// process is one run of the versitygw binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// StartS3 starts versitygw with the posix backend under opts.Dir on a free
// loopback port, with freshly generated root credentials and bucket
// notifications to opts.NATSURL, waits until it answers, and creates the
// bucket. On failure the error includes the tail of the server log.
func StartS3(ctx context.Context, opts S3Options) (*S3, error) {
	if opts.Dir == "" {
		return nil, errors.New("rig: StartS3 needs S3Options.Dir (for tests, pass t.TempDir())")
	}
	if opts.Subject == "" {
		opts.Subject = DefaultSubject
	}
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.Binary == "" {
		bin, err := FindVersityGW()
		if err != nil {
			return nil, err
		}
		opts.Binary = bin
	}
	s := &S3{
		opts:   opts,
		root:   filepath.Join(opts.Dir, "gw"),
		log:    filepath.Join(opts.Dir, "versitygw.log"),
		access: "rig" + randomHex(8),
		secret: randomHex(20),
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return nil, fmt.Errorf("rig: create versitygw root: %w", err)
	}
	// A free port found by listening on :0 can be taken by someone else
	// before versitygw binds it; try a few ports before giving up.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = s.start(ctx); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	s.client = s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint()),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.access, s.secret, ""),
	})
	if err := s.createBucket(ctx); err != nil {
		_ = s.Kill()
		return nil, err
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("rig: find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the binary and waits until the health endpoint answers.
func (s *S3) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("rig: open versitygw log: %w", err)
	}
	defer logf.Close() // the child has its own copy of the descriptor
	fmt.Fprintf(logf, "---- rig: starting versitygw on 127.0.0.1:%d at %s\n", s.port, time.Now().Format(time.RFC3339Nano))

	args := []string{
		"--port", fmt.Sprintf("127.0.0.1:%d", s.port),
		"--health", healthPath,
	}
	if s.opts.NATSURL != "" {
		args = append(args, "--event-nats-url", s.opts.NATSURL, "--event-nats-topic", s.opts.Subject)
	}
	args = append(args, "posix", s.root)
	// The process is not tied to ctx: it outlives StartS3 until Stop or Kill.
	cmd := exec.Command(s.opts.Binary, args...)
	cmd.Dir = s.opts.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Credentials go through the environment, not argv, so they never show
	// in ps output or in this package's errors.
	cmd.Env = append(filteredEnv(), "ROOT_ACCESS_KEY_ID="+s.access, "ROOT_SECRET_ACCESS_KEY="+s.secret)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rig: start %s: %w", s.opts.Binary, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitHealthy(ctx, p); err != nil {
		p.kill()
		return fmt.Errorf("%w\n---- tail of %s:\n%s", err, s.log, tail(s.log, logTailBytes))
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// filteredEnv is the environment without variables that would reconfigure
// versitygw behind the rig's back.
func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VGW_") || strings.HasPrefix(kv, "ROOT_") || strings.HasPrefix(kv, "LOGFILE=") || strings.HasPrefix(kv, "WEBHOOK=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *S3) waitHealthy(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	url := s.Endpoint() + healthPath
	hc := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health check answered %s", resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("rig: versitygw exited during start (%v)", p.err)
		case <-ctx.Done():
			return fmt.Errorf("rig: versitygw on %s not answering after %s (last: %v): %w", s.Endpoint(), s.opts.StartTimeout, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	off := max(fi.Size()-n, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	return string(b)
}

func (s *S3) createBucket(ctx context.Context) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.opts.Bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("rig: create bucket %q on versitygw %s: %w\n---- tail of %s:\n%s", s.opts.Bucket, s.Endpoint(), err, s.log, tail(s.log, logTailBytes))
	}
	return nil
}

// Endpoint is the server's base URL, http://127.0.0.1:<port>. It stays the
// same across Restart.
func (s *S3) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", s.port) }

// Bucket is the bucket created at start.
func (s *S3) Bucket() string { return s.opts.Bucket }

// Subject is the NATS subject notifications go to.
func (s *S3) Subject() string { return s.opts.Subject }

// Credentials are the root access key and secret the server accepts.
func (s *S3) Credentials() aws.Credentials {
	return aws.Credentials{AccessKeyID: s.access, SecretAccessKey: s.secret, Source: "rig"}
}

// MountDir is the posix directory holding the bucket's objects: object key
// "a/b" is the file MountDir()/a/b. It stands in for the s3fs mount.
func (s *S3) MountDir() string { return filepath.Join(s.root, s.opts.Bucket) }

// LogFile is the path of the server's log.
func (s *S3) LogFile() string { return s.log }

// Client is an S3 client for the server with root credentials and
// path-style addressing.
func (s *S3) Client() *s3.Client { return s.client }

// Put uploads data as key (one PutObject) and returns the ETag as the
// server sent it (quoted).
func (s *S3) Put(ctx context.Context, key string, data []byte) (string, error) {
	return s.PutReader(ctx, key, bytes.NewReader(data))
}

// PutReader uploads the content of r as key (one PutObject); r is read
// from its current offset to the end and must be seekable so the request can
// be signed (an *os.File is).
func (s *S3) PutReader(ctx context.Context, key string, r io.ReadSeeker) (string, error) {
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key), Body: r})
	if err != nil {
		return "", fmt.Errorf("rig: put s3://%s/%s: %w", s.opts.Bucket, key, err)
	}
	return aws.ToString(out.ETag), nil
}

// PutMultipart uploads key as a multipart upload, one part per element of
// parts (every part but the last must be at least 5 MiB), and returns the
// ETag as the server sent it (quoted, "<hex>-<len(parts)>").
func (s *S3) PutMultipart(ctx context.Context, key string, parts [][]byte) (string, error) {
	b := aws.String(s.opts.Bucket)
	mu, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String(key)})
	if err != nil {
		return "", fmt.Errorf("rig: start multipart upload of s3://%s/%s: %w", s.opts.Bucket, key, err)
	}
	var done []types.CompletedPart
	for i, data := range parts {
		n := int32(i + 1)
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{Bucket: b, Key: aws.String(key), UploadId: mu.UploadId, PartNumber: aws.Int32(n), Body: bytes.NewReader(data)})
		if err != nil {
			_, _ = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: b, Key: aws.String(key), UploadId: mu.UploadId})
			return "", fmt.Errorf("rig: upload part %d of s3://%s/%s: %w", n, s.opts.Bucket, key, err)
		}
		done = append(done, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	out, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: b, Key: aws.String(key), UploadId: mu.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: done}})
	if err != nil {
		return "", fmt.Errorf("rig: complete multipart upload of s3://%s/%s: %w", s.opts.Bucket, key, err)
	}
	return aws.ToString(out.ETag), nil
}

// Delete removes key.
func (s *S3) Delete(ctx context.Context, key string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("rig: delete s3://%s/%s: %w", s.opts.Bucket, key, err)
	}
	return nil
}

// Running reports whether the server process is up.
func (s *S3) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the process to exit, killing it if it
// has not exited after 10s. Stopping a stopped server does nothing.
func (s *S3) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	if p == nil {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
		p.kill()
		return fmt.Errorf("rig: versitygw (pid %d) ignored SIGTERM for %s and was killed", p.cmd.Process.Pid, stopGrace)
	}
}

// Kill ends the process with SIGKILL (a crash, for fault tests) and waits
// for it to exit.
func (s *S3) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	if p != nil {
		p.kill()
	}
	return nil
}

func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Restart stops the server if it runs and starts it again on the same port
// with the same credentials and data, waiting until it answers.
func (s *S3) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	// The port may linger for a moment after the old process exits.
	deadline := time.Now().Add(s.opts.StartTimeout)
	for {
		err := s.start(ctx)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ErrNoFUSE means MountS3FS cannot run here: /dev/fuse or the s3fs program
// is missing. Tests that need the mount fail on it unless SBPS_NO_FUSE=1.
var ErrNoFUSE = errors.New("s3fs mount unavailable")

const s3fsHint = "install the Debian package s3fs (`apt-get install s3fs`; .ci/run does this) and make sure /dev/fuse exists, or set SBPS_NO_FUSE=1 to skip s3fs tests"

// MountS3FS mounts s's bucket read-only at mountpoint (created if missing)
// with the real s3fs-fuse: path-style requests to s.Endpoint(), keys from a
// 0600 passwd file in s's directory, `-o ro`. It returns once the mount is
// in place; the returned function unmounts it and waits for s3fs to exit
// (calling it again does nothing). s3fs logs go to <S3Options.Dir>/s3fs.log.
//
// A CSM worker mounts boot-images read-write, and the real kernel LIO needs
// that: it opens a fileio backing file read-write even with write_back=false
// and fails on a read-only mount. Projecting from the mount takes
// MountS3FSWritable.
func MountS3FS(ctx context.Context, s *S3, mountpoint string) (unmount func() error, err error) {
	return mountS3FS(ctx, s, mountpoint, "ro")
}

// MountS3FSWritable is MountS3FS with the mount read-write (`-o rw`), as a
// CSM worker mounts boot-images.
func MountS3FSWritable(ctx context.Context, s *S3, mountpoint string) (unmount func() error, err error) {
	return mountS3FS(ctx, s, mountpoint, "rw")
}

func mountS3FS(ctx context.Context, s *S3, mountpoint, access string) (unmount func() error, err error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("rig: %w: /dev/fuse: %v; %s", ErrNoFUSE, err, s3fsHint)
	}
	bin, err := exec.LookPath("s3fs")
	if err != nil {
		return nil, fmt.Errorf("rig: %w: s3fs not on PATH; %s", ErrNoFUSE, s3fsHint)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("rig: s3fs mountpoint: %w", err)
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("rig: create s3fs mountpoint: %w", err)
	}
	passwd, err := os.CreateTemp(s.opts.Dir, "s3fs-passwd-*")
	if err != nil {
		return nil, fmt.Errorf("rig: create s3fs passwd file: %w", err)
	}
	// CreateTemp makes the file 0600, which s3fs insists on.
	_, werr := fmt.Fprintf(passwd, "%s:%s\n", s.access, s.secret)
	if cerr := passwd.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("rig: write s3fs passwd file: %w", werr)
	}
	logPath := filepath.Join(s.opts.Dir, "s3fs.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rig: open s3fs log: %w", err)
	}
	defer logf.Close()

	opts := strings.Join([]string{
		access,
		"url=" + s.Endpoint(),
		"use_path_request_style",
		"passwd_file=" + passwd.Name(),
		"endpoint=us-east-1",
		"stat_cache_expire=1",
		"dbglevel=warn",
	}, ",")
	cmd := exec.Command(bin, s.opts.Bucket, mountpoint, "-f", "-o", opts)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rig: start s3fs: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	var once sync.Once
	var unmountErr error
	unmount = func() error {
		once.Do(func() {
			if err := syscall.Unmount(mountpoint, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
				// Busy: detach now, the kernel finishes when it is unused.
				_ = syscall.Unmount(mountpoint, syscall.MNT_DETACH)
			}
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				p.kill()
				unmountErr = fmt.Errorf("rig: s3fs did not exit %s after unmounting %s and was killed", stopGrace, mountpoint)
			}
		})
		return unmountErr
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		mounted, err := isFUSEMount(mountpoint)
		if err != nil {
			_ = unmount()
			return nil, err
		}
		if mounted {
			return unmount, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("rig: s3fs exited before mounting %s (%v)\n---- tail of %s:\n%s", mountpoint, p.err, logPath, tail(logPath, logTailBytes))
		case <-ctx.Done():
			_ = unmount()
			return nil, fmt.Errorf("rig: s3fs did not mount %s: %w\n---- tail of %s:\n%s", mountpoint, ctx.Err(), logPath, tail(logPath, logTailBytes))
		case <-tick.C:
		}
	}
}

// isFUSEMount reports whether mountpoint is a FUSE mount point, per
// /proc/self/mountinfo.
func isFUSEMount(mountpoint string) (bool, error) {
	mounts, err := mountinfo.Read(mountinfo.Self)
	if err != nil {
		return false, fmt.Errorf("rig: read mount table: %w", err)
	}
	m, ok := mountinfo.Find(mounts, mountpoint)
	return ok && strings.HasPrefix(m.FSType, "fuse"), nil
}
