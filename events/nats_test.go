package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/events/s3event"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func TestNATSCoreDecodesFiltersAndCounts(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	src := newNATS(t, NATSConfig{URLs: []string{n.ClientURL()}, MaxMessage: 4096})
	r := run(t, src, 16)
	probeCore(t, nc, r, DefaultS3Subject) // the source subscribes resync, IMS, then S3
	before := statOf(src.Stats(), "s3", OutcomeEvent)

	pub := func(subject string, data []byte) {
		t.Helper()
		if err := nc.Publish(subject, data); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	pub(DefaultS3Subject, []byte(`{"Event":"s3:TestEvent","Bucket":"Test-Bucket"}`))
	pub(DefaultS3Subject, s3Note("other-bucket", "s3:ObjectCreated:Put", "PE/x"))
	pub(DefaultS3Subject, []byte("not json"))
	pub(DefaultS3Subject, append(s3Note(testBucket, "s3:ObjectCreated:Put", "PE/big"), bytes.Repeat([]byte(" "), 5000)...))
	pub(DefaultIMSSubject, []byte(`{"version":1,"id":"../../etc"}`))
	pub(DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/a.squashfs", "PE/b.squashfs"))
	pub(DefaultS3Subject, s3Note(testBucket, "s3:ObjectRemoved:Delete", "PE/c.squashfs"))
	pub(DefaultIMSSubject, imsNote(t, 7, imsevent.Deleted))

	// Subjects are separate subscriptions: order holds within one only.
	got := r.collect(t, 4, 5*time.Second)
	var s3s []Event
	var imss []Event
	for _, ev := range got {
		switch ev.Kind {
		case S3Object:
			s3s = append(s3s, ev)
		case IMSImage:
			imss = append(imss, ev)
		default:
			t.Errorf("unexpected event %v", ev)
		}
		ev.Done(nil) // no-op without JetStream
	}
	want := []string{"created PE/a.squashfs", "created PE/b.squashfs", "removed PE/c.squashfs"}
	if len(s3s) != len(want) || len(imss) != 1 {
		t.Fatalf("got %d S3 and %d IMS events, want %d and 1: %v", len(s3s), len(imss), len(want), got)
	}
	for i, w := range want {
		ev := s3s[i]
		if got := ev.S3.Kind.String() + " " + ev.S3.Key; got != w {
			t.Errorf("S3 event %d = %q, want %q", i, got, w)
		}
		if ev.Source != "nats "+DefaultS3Subject {
			t.Errorf("Source = %q, want %q", ev.Source, "nats "+DefaultS3Subject)
		}
		if ev.S3.Bucket != testBucket || ev.Received.IsZero() {
			t.Errorf("event %v: bucket %q, received %v", ev, ev.S3.Bucket, ev.Received)
		}
	}
	ev := imss[0]
	if ev.IMS.ID != "00000000-0000-4000-8000-000000000007" || ev.IMS.Change != imsevent.Deleted {
		t.Errorf("IMS event = %+v, want image ...007 deleted", ev.IMS)
	}
	if ev.Source != "nats "+DefaultIMSSubject {
		t.Errorf("Source = %q", ev.Source)
	}
	stats := src.Stats()
	for _, c := range []struct {
		source, outcome string
		want            uint64
	}{
		{"s3", OutcomeTest, 1},
		{"s3", OutcomeOtherBucket, 1},
		{"s3", OutcomeUndecodable, 1},
		{"s3", OutcomeOversized, 1},
		{"ims", OutcomeUndecodable, 1},
		{"ims", OutcomeEvent, 1},
	} {
		if got := statOf(stats, c.source, c.outcome); got != c.want {
			t.Errorf("Stats()[%s/%s] = %d, want %d (all: %v)", c.source, c.outcome, got, c.want, stats)
		}
	}
	if got := statOf(stats, "s3", OutcomeEvent) - before; got != 3 {
		t.Errorf("s3 events counted = %d, want 3", got)
	}
	r.noneQueued(t, S3Object)
}

func TestNATSPartialNotificationKeepsGoodRecords(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	src := newNATS(t, NATSConfig{URLs: []string{n.ClientURL()}})
	r := run(t, src, 16)
	probeCore(t, nc, r, DefaultS3Subject)
	msg := `{"Records":[{"eventSource":"aws:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"PE/ok","size":1,"eTag":"\"e\""}}},` +
		`{"eventSource":"aws:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"size":1}}}]}`
	if err := nc.Publish(DefaultS3Subject, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	ev := r.nextKind(t, S3Object, 5*time.Second)
	if ev.S3.Key != "PE/ok" || ev.S3.ETag != "e" || ev.S3.Producer != s3event.ProducerVersityGW {
		t.Errorf("record = %+v, want PE/ok etag e from versitygw", ev.S3)
	}
	testutil.WaitFor(t, 5*time.Second, "the bad record counted", func() error {
		if got := statOf(src.Stats(), "s3", OutcomeBadRecord); got != 1 {
			return errorf("bad_record = %d, want 1", got)
		}
		return nil
	})
}

func TestNATSReconnectEmitsResyncAndResubscribes(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	src := newNATS(t, NATSConfig{URLs: []string{n.ClientURL()}})
	r := run(t, src, 16)
	probeCore(t, nc, r, DefaultS3Subject)
	if err := n.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	ev := r.nextKind(t, Resync, 15*time.Second)
	if ev.Source != "nats reconnect" || !strings.Contains(ev.Reason, "missed") {
		t.Errorf("resync = %v, want source %q and a reason saying events were missed", ev, "nats reconnect")
	}
	if got := statOf(src.Stats(), "nats", OutcomeReconnect); got < 1 {
		t.Errorf("reconnect count = %d, want >= 1", got)
	}
	probeCore(t, nc, r, DefaultS3Subject) // the test's own connection reconnects too
}

func TestNATSStartsWithoutServerAndConnectsLater(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	url := n.ClientURL()
	n.Shutdown()
	src := newNATS(t, NATSConfig{URLs: []string{url}})
	r := run(t, src, 16)
	// Start must keep running while no server answers.
	select {
	case err := <-r.done:
		t.Fatalf("Start returned %v without a server; it must retry in the background", err)
	default:
	}
	testutil.WaitFor(t, 10*time.Second, "a connection attempt", func() error {
		if statOf(src.Stats(), "nats", OutcomeUnreachable) == 0 {
			return errors.New("source has not tried to connect yet")
		}
		return nil
	})
	if err := n.Restart(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	ev := r.nextKind(t, Resync, 15*time.Second)
	if !strings.Contains(ev.Reason, "after starting without it") {
		t.Errorf("resync reason = %q, want it to say the bus came late", ev.Reason)
	}
	nc := connect(t, url)
	probeCore(t, nc, r, DefaultS3Subject)
}

func TestFleetResync(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	src := newNATS(t, NATSConfig{URLs: []string{n.ClientURL()}, ResyncSubject: "ops.resync"})
	r := run(t, src, 16)
	probeCore(t, nc, r, DefaultS3Subject)
	if err := PublishResync(t.Context(), nc, "ops.resync", "admin@ncn-m001\x00\n"); err != nil {
		t.Fatalf("PublishResync: %v", err)
	}
	ev := r.nextKind(t, Resync, 5*time.Second)
	if ev.Source != "fleet resync" || ev.Reason != "fleet resync requested by admin@ncn-m001" {
		t.Errorf("resync = %q / %q, want %q / %q", ev.Source, ev.Reason, "fleet resync", "fleet resync requested by admin@ncn-m001")
	}
	// Any message counts, even plain text.
	if err := nc.Publish("ops.resync", []byte("cron")); err != nil {
		t.Fatal(err)
	}
	if ev := r.nextKind(t, Resync, 5*time.Second); ev.Reason != "fleet resync requested by cron" {
		t.Errorf("reason = %q, want requested by cron", ev.Reason)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := PublishResync(ctx, nc, "", "x"); err == nil {
		t.Errorf("PublishResync with a canceled context = nil, want an error")
	}
}

func TestNewNATSRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed")
	if err := os.WriteFile(seed, []byte("not a seed"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := []string{"nats://127.0.0.1:4222"}
	tests := []struct {
		name string
		cfg  NATSConfig
		want string
	}{
		{"no url", NATSConfig{URLs: []string{" ", ""}}, "NATS_URL"},
		{"creds and seed", NATSConfig{URLs: url, Auth: Auth{Creds: seed, NKeySeed: seed}}, "not both"},
		{"missing creds", NATSConfig{URLs: url, Auth: Auth{Creds: filepath.Join(dir, "none.creds")}}, "NATS_CREDS"},
		{"bad seed", NATSConfig{URLs: url, Auth: Auth{NKeySeed: seed}}, "NATS_NKEY_SEED"},
		{"cert without key", NATSConfig{URLs: url, Auth: Auth{TLSCert: seed}}, "together"},
		{"spiffe and client certificate files", NATSConfig{URLs: url, Auth: Auth{TLSConfig: &tls.Config{}, TLSCert: seed, TLSKey: seed}}, "exclude"},
		{"two sources of roots", NATSConfig{URLs: url, Auth: Auth{RootCAs: func() (*x509.CertPool, error) { return nil, nil }, TLSCA: seed}}, "exclude"},
		{"missing CA", NATSConfig{URLs: url, Auth: Auth{TLSCA: filepath.Join(dir, "ca.pem")}}, "NATS_TLS"},
		{"wildcard subject", NATSConfig{URLs: url, S3Subject: "sbps.>"}, "NATS_S3_SUBJECT"},
		{"same subjects", NATSConfig{URLs: url, S3Subject: "a", IMSSubject: "a"}, "differ"},
		{"stream without node", NATSConfig{URLs: url, Stream: "SBPS"}, "node name"},
		{"node with dot", NATSConfig{URLs: url, Stream: "SBPS", NodeName: "ncn.w001"}, "node name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewNATS(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewNATS(%s) = %v, want an error mentioning %q", tc.name, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "not a seed") {
				t.Errorf("error %q leaks the seed file's content", err)
			}
		})
	}
	s, err := NewNATS(NATSConfig{URLs: []string{"nats://a:1, nats://b:2"[:12], "nats://b:2"}}, nil)
	if err != nil {
		t.Fatalf("NewNATS(minimal) = %v", err)
	}
	c := s.Config()
	if c.S3Subject != DefaultS3Subject || c.IMSSubject != DefaultIMSSubject || c.ResyncSubject != DefaultResyncSubject || c.MaxMessage != DefaultMaxMessage {
		t.Errorf("defaults = %+v", c)
	}
}
