package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
)

const testBucket = "boot-images"

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// running is a started source.
type running struct {
	out    chan Event
	cancel context.CancelFunc
	done   chan error
}

// run starts src on its own goroutine; Cleanup stops it and checks that it
// returned nil.
func run(t testing.TB, src Source, buf int) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: make(chan Event, buf), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Start(ctx, r.out) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the source and waits for Start to return nil.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Start returned %v after cancel, want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Start did not return within 10s of cancel")
	}
}

// next returns the next event, failing after d.
func (r *running) next(t testing.TB, d time.Duration) Event {
	t.Helper()
	select {
	case ev := <-r.out:
		return ev
	case err := <-r.done:
		t.Fatalf("source returned early: %v", err)
	case <-time.After(d):
		t.Fatalf("no event within %s", d)
	}
	return Event{}
}

// nextKind returns the next event of kind k, skipping (and acking) others.
func (r *running) nextKind(t testing.TB, k Kind, d time.Duration) Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no %s event within %s", k, d)
		}
		ev := r.next(t, left)
		if ev.Kind == k && !(k == S3Object && ev.S3.Key == "probe") {
			return ev
		}
		ev.Done(nil)
	}
}

// collect returns the next n events that are not probes or Resyncs.
func (r *running) collect(t testing.TB, n int, d time.Duration) []Event {
	t.Helper()
	deadline := time.Now().Add(d)
	var got []Event
	for len(got) < n {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("got %d events within %s, want %d: %v", len(got), d, n, got)
		}
		ev := r.next(t, left)
		if ev.Kind == Resync || (ev.Kind == S3Object && ev.S3.Key == "probe") {
			ev.Done(nil)
			continue
		}
		got = append(got, ev)
	}
	return got
}

// noneQueued fails if an event of kind k (other than a probe) is queued.
// Used only after a positive signal (a counter) showed the source processed
// what came before.
func (r *running) noneQueued(t testing.TB, k Kind) {
	t.Helper()
	for {
		select {
		case ev := <-r.out:
			if ev.Kind == k && !(k == S3Object && ev.S3.Key == "probe") {
				t.Fatalf("unexpected event %v", ev)
			}
		default:
			return
		}
	}
}

// drain returns the events queued now, without waiting.
func (r *running) drain() []Event {
	var out []Event
	for {
		select {
		case ev := <-r.out:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// statOf returns one counter from a Stats snapshot.
func statOf(stats []Stat, source, outcome string) uint64 {
	for _, s := range stats {
		if s.Source == source && s.Outcome == outcome {
			return s.Count
		}
	}
	return 0
}

// s3Note builds a versitygw-style bucket notification with one record per key.
func s3Note(bucket, eventName string, keys ...string) []byte {
	type obj struct {
		Key  string `json:"key"`
		Size int64  `json:"size"`
		ETag string `json:"eTag"`
	}
	type rec struct {
		EventSource string `json:"eventSource"`
		EventName   string `json:"eventName"`
		EventTime   string `json:"eventTime"`
		S3          struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object obj `json:"object"`
		} `json:"s3"`
	}
	var recs []rec
	for i, k := range keys {
		var r rec
		r.EventSource = "aws:s3"
		r.EventName = eventName
		r.EventTime = "2026-08-19T23:47:51Z"
		r.S3.Bucket.Name = bucket
		r.S3.Object = obj{Key: k, Size: int64(100 + i), ETag: fmt.Sprintf("\"etag-%d\"", i)}
		recs = append(recs, r)
	}
	data, err := json.Marshal(map[string]any{"Records": recs})
	if err != nil {
		panic(err)
	}
	return data
}

// imsNote builds an encoded IMS change event for image n.
func imsNote(t testing.TB, n int, change imsevent.Change) []byte {
	t.Helper()
	e := imsevent.Event{
		ID:     fmt.Sprintf("00000000-0000-4000-8000-%012d", n),
		Change: change,
		Digest: imsevent.Digest(fmt.Sprint(n)),
		Time:   time.Now(),
		Source: "test",
	}
	if change == imsevent.Changed {
		e.Fields = []string{imsevent.FieldMetadata}
	}
	data, err := imsevent.Encode(e)
	if err != nil {
		t.Fatalf("imsevent.Encode: %v", err)
	}
	return data
}

// newNATS builds a NATS source for the test server.
func newNATS(t testing.TB, cfg NATSConfig) *NATSSource {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = testBucket
	}
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = 50 * time.Millisecond
	}
	var logger *slog.Logger
	if tt, ok := t.(*testing.T); ok {
		logger = testutil.Logger(tt)
	}
	s, err := NewNATS(cfg, logger)
	if err != nil {
		t.Fatalf("NewNATS: %v", err)
	}
	return s
}

// probeCore publishes S3 probe notifications until one comes out of the
// source, proving the core subscriptions are in place, and acks it.
func probeCore(t testing.TB, nc *nats.Conn, r *running, subject string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := nc.Publish(subject, s3Note(testBucket, "s3:ObjectCreated:Put", "probe")); err != nil {
			t.Fatalf("publish probe: %v", err)
		}
		select {
		case ev := <-r.out:
			if ev.Kind == S3Object && ev.S3.Key == "probe" {
				ev.Done(nil)
				return
			}
			ev.Done(nil)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("source never delivered a probe on %s", subject)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
