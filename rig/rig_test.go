package rig

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
)

// startS3 starts versitygw for one test and reports how long it took.
func startS3(t *testing.T, natsURL string) *S3 {
	t.Helper()
	begin := time.Now()
	s, err := StartS3(t.Context(), S3Options{Dir: t.TempDir(), NATSURL: natsURL})
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Logf("versitygw answered and bucket %q created %s after start", s.Bucket(), time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

// subscribe connects to n and delivers every message on subject to a
// channel.
func subscribe(t *testing.T, url, subject string) <-chan *nats.Msg {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("nats.Connect(%s): %v", url, err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe(subject, ch); err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush subscription: %v", err)
	}
	return ch
}

// notification is the part of a versitygw bucket notification the tests check.
type notification struct {
	Records []struct {
		EventName string `json:"eventName"`
		S3        struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key  string `json:"key"`
				Size int64  `json:"size"`
				ETag string `json:"eTag"`
			} `json:"object"`
		} `json:"s3"`
	} `json:"Records"`
	// Test event fields (no Records).
	Event   string `json:"Event"`
	Service string `json:"Service"`
	Bucket  string `json:"Bucket"`
	Time    string `json:"Time"`
}

// next waits for the next message whose decoded form satisfies match,
// failing after the deadline. Messages that don't match are skipped.
func next(t *testing.T, ch <-chan *nats.Msg, what string, match func(notification) bool) notification {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			var n notification
			if err := json.Unmarshal(m.Data, &n); err != nil {
				t.Fatalf("notification is not JSON: %v: %s", err, m.Data)
			}
			if match(n) {
				return n
			}
			t.Logf("skipping notification while waiting for %s: %s", what, m.Data)
		case <-deadline:
			t.Fatalf("no %s notification within 10s", what)
		}
	}
}

func TestBucketNotificationsReachNATS(t *testing.T) {
	n := NATSForTest(t, NATSOptions{})
	ch := subscribe(t, n.ClientURL(), DefaultSubject)
	s := startS3(t, n.ClientURL())

	// versitygw publishes a test event when it connects to NATS.
	te := next(t, ch, "startup test event", func(n notification) bool { return n.Event != "" })
	if te.Event != "s3:TestEvent" || te.Service != "S3" || len(te.Records) != 0 {
		t.Errorf("startup event = %+v, want Event s3:TestEvent, Service S3, no Records", te)
	}
	if _, err := time.Parse(time.RFC3339, te.Time); err != nil {
		t.Errorf("startup event Time %q is not RFC 3339: %v", te.Time, err)
	}

	tests := []struct {
		name string
		key  string
		data string
	}{
		{name: "plain", key: "PE/pe-image.squashfs", data: "squashfs bytes"},
		{name: "space and unicode", key: "images/ä b/rootfs ü.squashfs", data: "other bytes!"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			etag, err := s.Put(t.Context(), tc.key, []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(etag, `"`) {
				t.Errorf("Put ETag = %s, want the quoted form S3 sends", etag)
			}
			put := next(t, ch, "put of "+tc.key, func(n notification) bool {
				return len(n.Records) == 1 && n.Records[0].S3.Object.Key == tc.key
			}).Records[0]
			if put.EventName != "s3:ObjectCreated:Put" {
				t.Errorf("eventName = %q, want s3:ObjectCreated:Put", put.EventName)
			}
			if put.S3.Object.ETag != etag {
				t.Errorf("eTag = %s, want %s (quoted, as PutObject returned it)", put.S3.Object.ETag, etag)
			}
			if put.S3.Object.Size != int64(len(tc.data)) || put.S3.Bucket.Name != DefaultBucket {
				t.Errorf("size, bucket = %d, %q; want %d, %q", put.S3.Object.Size, put.S3.Bucket.Name, len(tc.data), DefaultBucket)
			}
			got, err := os.ReadFile(filepath.Join(s.MountDir(), tc.key))
			if err != nil || string(got) != tc.data {
				t.Errorf("MountDir file for %q = %q, %v; want %q", tc.key, got, err, tc.data)
			}

			if err := s.Delete(t.Context(), tc.key); err != nil {
				t.Fatal(err)
			}
			del := next(t, ch, "delete of "+tc.key, func(n notification) bool {
				return len(n.Records) == 1 && n.Records[0].S3.Object.Key == tc.key
			}).Records[0]
			if del.EventName != "s3:ObjectRemoved:Delete" {
				t.Errorf("eventName = %q, want s3:ObjectRemoved:Delete", del.EventName)
			}
		})
	}
}

func TestS3RestartKeepsDataAndEndpoint(t *testing.T) {
	s := startS3(t, "")
	ctx := t.Context()
	if _, err := s.Put(ctx, "PE/keep", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	endpoint := s.Endpoint()

	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running() = true after Kill")
	}
	if _, err := s.Put(ctx, "PE/while-down", []byte("x")); err == nil {
		t.Fatal("Put while the server is killed succeeded, want an error")
	}
	begin := time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	t.Logf("versitygw restart took %s", time.Since(begin).Round(time.Millisecond))
	if s.Endpoint() != endpoint || !s.Running() {
		t.Fatalf("after Restart endpoint = %s, running = %v; want %s, true", s.Endpoint(), s.Running(), endpoint)
	}
	out, err := s.Client().HeadObject(ctx, headInput(s.Bucket(), "PE/keep"))
	if err != nil {
		t.Fatalf("HeadObject after restart: %v", err)
	}
	if *out.ContentLength != 4 {
		t.Errorf("size after restart = %d, want 4", *out.ContentLength)
	}
}

func TestStartS3Errors(t *testing.T) {
	dir := t.TempDir()
	failing := filepath.Join(dir, "fake-versitygw")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'bind: cannot start, this is the fake'\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts S3Options
		want string
	}{
		{name: "no dir", opts: S3Options{}, want: "S3Options.Dir"},
		{name: "exits at start", opts: S3Options{Dir: t.TempDir(), Binary: failing}, want: "this is the fake"},
		{name: "missing binary", opts: S3Options{Dir: t.TempDir(), Binary: filepath.Join(dir, "absent")}, want: "absent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := StartS3(t.Context(), tc.opts)
			if err == nil {
				_ = s.Kill()
				t.Fatalf("StartS3(%+v) succeeded, want an error containing %q", tc.opts, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("StartS3 error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestFindVersityGW(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "vgw")
	notExe := filepath.Join(dir, "plain")
	for p, mode := range map[string]os.FileMode{exe: 0o755, notExe: 0o644} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, env, want, wantErr string
	}{
		{name: "env wins", env: exe, want: exe},
		{name: "env not executable", env: notExe, wantErr: "make tools"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VERSITYGW_BIN", tc.env)
			got, err := FindVersityGW()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FindVersityGW() = %q, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FindVersityGW() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("nowhere", func(t *testing.T) {
		t.Setenv("VERSITYGW_BIN", "")
		t.Setenv("PATH", t.TempDir())
		t.Chdir(t.TempDir())
		_, err := FindVersityGW()
		if err == nil || !strings.Contains(err.Error(), "run `make tools`") {
			t.Fatalf("FindVersityGW() error = %v, want the make tools hint", err)
		}
	})
}

func TestNATSRestartKeepsPortAndStore(t *testing.T) {
	n := NATSForTest(t, NATSOptions{})
	url := n.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "RIG", Subjects: []string{"rig.>"}, Storage: nats.FileStorage}); err != nil {
		t.Fatalf("AddStream: %v", err)
	}
	if _, err := js.Publish("rig.one", []byte("1")); err != nil {
		t.Fatalf("Publish before restart: %v", err)
	}

	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if n.ClientURL() != url {
		t.Fatalf("ClientURL after Restart = %s, want %s", n.ClientURL(), url)
	}
	// The client reconnects on its own; poll until it has, then until the
	// stream answers.
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() || nc.Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatalf("client not reconnected 10s after restart (status %v)", nc.Status())
		}
		waitReconnect(t, nc)
	}
	for {
		info, err := js.StreamInfo("RIG", nats.MaxWait(time.Second))
		if err == nil {
			if info.State.Msgs != 1 {
				t.Fatalf("stream RIG holds %d messages after restart, want 1 (same store)", info.State.Msgs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream RIG not back 10s after restart: %v", err)
		}
	}
}

// waitReconnect blocks until nc is connected or a short deadline passes.
func waitReconnect(t *testing.T, nc *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestStartNATSNeedsDir(t *testing.T) {
	if _, err := StartNATS(""); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("StartNATS(\"\") error = %v, want one asking for a directory", err)
	}
}

func headInput(bucket, key string) *s3.HeadObjectInput {
	return &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
}

// TestS3FSMount mounts the bucket through real s3fs-fuse and reads an
// uploaded object through the mount. Without s3fs or /dev/fuse it fails
// naming the package to install, unless SBPS_NO_FUSE=1.
func TestS3FSMount(t *testing.T) {
	s := startS3(t, "")
	ctx := t.Context()
	const key, data = "PE/fuse image ü.squashfs", "read through s3fs"
	if _, err := s.Put(ctx, key, []byte(data)); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "boot images")
	begin := time.Now()
	unmount, err := MountS3FS(ctx, s, mnt)
	if errors.Is(err, ErrNoFUSE) && os.Getenv("SBPS_NO_FUSE") == "1" {
		t.Skipf("SBPS_NO_FUSE=1: %v", err)
	}
	if err != nil {
		t.Fatalf("MountS3FS: %v", err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	t.Logf("s3fs mounted in %s", time.Since(begin).Round(time.Millisecond))

	path := filepath.Join(mnt, key)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := os.ReadFile(path)
		if err == nil && string(got) == data {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read %s through s3fs = %q, %v; want %q", path, got, err, data)
		}
		<-tick.C
	}
	entries, err := os.ReadDir(filepath.Join(mnt, "PE"))
	if err != nil || len(entries) != 1 || entries[0].Name() != filepath.Base(key) {
		t.Errorf("ReadDir(PE) through s3fs = %v, %v; want [%s]", entries, err, filepath.Base(key))
	}
	if err := os.WriteFile(filepath.Join(mnt, "PE", "new"), []byte("x"), 0o644); err == nil {
		t.Errorf("writing through the read-only mount succeeded, want an error")
	}

	if err := unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if mounted, err := isFUSEMount(mnt); err != nil || mounted {
		t.Errorf("after unmount isFUSEMount(%s) = %v, %v; want false", mnt, mounted, err)
	}
}

func TestMountS3FSWithoutS3FS(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	s := &S3{opts: S3Options{Dir: t.TempDir(), Bucket: DefaultBucket}}
	_, err := MountS3FS(t.Context(), s, filepath.Join(t.TempDir(), "mnt"))
	if !errors.Is(err, ErrNoFUSE) || !strings.Contains(err.Error(), "apt-get install s3fs") || !strings.Contains(err.Error(), "SBPS_NO_FUSE=1") {
		t.Fatalf("MountS3FS without s3fs = %v, want ErrNoFUSE naming the s3fs package and SBPS_NO_FUSE=1", err)
	}
}
