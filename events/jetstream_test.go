package events

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

const testStream = "SBPS"

// jsSetup starts a server with the stream and returns the server and a
// JetStream context for publishing.
func jsSetup(t testing.TB) (url string, nc *nats.Conn, js jetstream.JetStream) {
	t.Helper()
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc = connect(t, n.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(t.Context(), js, testStream, []string{DefaultS3Subject, DefaultIMSSubject}); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return n.ClientURL(), nc, js
}

func jsPublish(t testing.TB, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	if _, err := js.Publish(t.Context(), subject, data); err != nil {
		t.Fatalf("js publish %s: %v", subject, err)
	}
}

func jsSource(t testing.TB, url, node string) *NATSSource {
	t.Helper()
	return newNATS(t, NATSConfig{URLs: []string{url}, Stream: testStream, NodeName: node, NakDelay: 20 * time.Millisecond, MaxNakDelay: 100 * time.Millisecond})
}

// waitSettled waits until the node's consumer has nothing pending or
// unacknowledged.
func waitSettled(t testing.TB, js jetstream.JetStream, node string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the consumer to settle", func() error {
		c, err := js.Consumer(t.Context(), testStream, ConsumerPrefix+node)
		if err != nil {
			return err
		}
		info, err := c.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return fmt.Errorf("consumer %s: pending %d, ack pending %d, redelivered %d", node, info.NumPending, info.NumAckPending, info.NumRedelivered)
		}
		return nil
	})
}

func keys(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		switch ev.Kind {
		case S3Object:
			out = append(out, ev.S3.Key)
		case IMSImage:
			out = append(out, ev.IMS.ID)
		}
	}
	return out
}

func TestJetStreamCatchesUpOnWhatWasPublishedBeforeStart(t *testing.T) {
	url, _, js := jsSetup(t)
	var want []string
	for i := range 20 {
		k := fmt.Sprintf("PE/img-%02d.squashfs", i)
		want = append(want, k)
		jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", k))
	}
	jsPublish(t, js, DefaultIMSSubject, imsNote(t, 1, imsevent.Created))
	want = append(want, "00000000-0000-4000-8000-000000000001")

	src := jsSource(t, url, "w001")
	r := run(t, src, 64)
	got := r.collect(t, len(want), 10*time.Second)
	if g, w := strings.Join(keys(got), " "), strings.Join(want, " "); g != w {
		t.Errorf("events = %s, want %s (in stream order)", g, w)
	}
	if got[0].Source != "jetstream SBPS/sbps-marshal-w001" {
		t.Errorf("Source = %q, want %q", got[0].Source, "jetstream SBPS/sbps-marshal-w001")
	}
	for _, ev := range got {
		ev.Done(nil)
	}
	waitSettled(t, js, "w001")
	if got := statOf(src.Stats(), "jetstream", OutcomeAck); got != uint64(len(want)) {
		t.Errorf("acks = %d, want %d", got, len(want))
	}
}

func TestJetStreamAgentDownCatchesUpWithoutRepeats(t *testing.T) {
	url, _, js := jsSetup(t)
	jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/first"))
	src := jsSource(t, url, "w002")
	r := run(t, src, 16)
	ev := r.nextKind(t, S3Object, 10*time.Second)
	ev.Done(nil)
	waitSettled(t, js, "w002")
	r.stop(t)

	// Agent down: these must be delivered when it comes back.
	for _, k := range []string{"PE/second", "PE/third"} {
		jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectRemoved:Delete", k))
	}
	r2 := run(t, jsSource(t, url, "w002"), 16)
	got := r2.collect(t, 2, 10*time.Second)
	if g := strings.Join(keys(got), " "); g != "PE/second PE/third" {
		t.Errorf("after restart got %s, want PE/second PE/third (PE/first was acked)", g)
	}
	for _, ev := range got {
		ev.Done(nil)
	}
	waitSettled(t, js, "w002")
}

func TestJetStreamDoneErrorRedelivers(t *testing.T) {
	url, _, js := jsSetup(t)
	// One message, two records: a failure of either NAKs the message.
	jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/a", "PE/b"))
	src := jsSource(t, url, "w003")
	r := run(t, src, 16)

	first := r.collect(t, 2, 10*time.Second)
	first[0].Done(nil)
	first[1].Done(errors.New("targetcli failed"))
	first[1].Done(nil) // ignored: Done counts once

	again := r.collect(t, 2, 10*time.Second)
	if g := strings.Join(keys(again), " "); g != "PE/a PE/b" {
		t.Errorf("redelivered %s, want PE/a PE/b", g)
	}
	for _, ev := range again {
		ev.Done(nil)
	}
	waitSettled(t, js, "w003")
	st := src.Stats()
	if statOf(st, "jetstream", OutcomeNak) != 1 || statOf(st, "jetstream", OutcomeAck) != 1 {
		t.Errorf("stats = %v, want exactly 1 nak and 1 ack", st)
	}
}

func TestJetStreamEveryNodeSeesEveryEvent(t *testing.T) {
	url, _, js := jsSetup(t)
	a := run(t, jsSource(t, url, "w010"), 64)
	b := run(t, jsSource(t, url, "w011"), 64)
	var want []string
	for i := range 10 {
		k := fmt.Sprintf("PE/fan-%d", i)
		want = append(want, k)
		jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", k))
	}
	for name, r := range map[string]*running{"w010": a, "w011": b} {
		got := r.collect(t, len(want), 10*time.Second)
		if g, w := strings.Join(keys(got), " "), strings.Join(want, " "); g != w {
			t.Errorf("node %s got %s, want %s", name, g, w)
		}
		for _, ev := range got {
			ev.Done(nil)
		}
		waitSettled(t, js, name)
	}
}

func TestJetStreamDropsBadMessagesWithoutLooping(t *testing.T) {
	url, _, js := jsSetup(t)
	jsPublish(t, js, DefaultS3Subject, []byte("{garbage"))
	jsPublish(t, js, DefaultIMSSubject, []byte(`{"version":2}`))
	jsPublish(t, js, DefaultS3Subject, s3Note("other", "s3:ObjectCreated:Put", "PE/x"))
	jsPublish(t, js, DefaultS3Subject, []byte(`{"Event":"s3:TestEvent"}`))
	jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/good"))
	src := jsSource(t, url, "w004")
	r := run(t, src, 16)
	ev := r.nextKind(t, S3Object, 10*time.Second)
	if ev.S3.Key != "PE/good" {
		t.Errorf("first event = %v, want PE/good", ev)
	}
	ev.Done(nil)
	waitSettled(t, js, "w004")
	st := src.Stats()
	if statOf(st, "jetstream", OutcomeTerm) != 2 || statOf(st, "jetstream", OutcomeAck) != 3 {
		t.Errorf("stats = %v, want 2 terminated (undecodable) and 3 acked", st)
	}
}

func TestJetStreamWaitsForMissingStream(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	src := jsSource(t, n.ClientURL(), "w005")
	r := run(t, src, 16)
	testutil.WaitFor(t, 10*time.Second, "the missing stream reported", func() error {
		if statOf(src.Stats(), "jetstream", OutcomeStreamMiss) == 0 {
			return errors.New("missing stream not reported yet")
		}
		return nil
	})
	if _, err := EnsureStream(t.Context(), js, testStream, []string{DefaultS3Subject, DefaultIMSSubject}); err != nil {
		t.Fatal(err)
	}
	jsPublish(t, js, DefaultIMSSubject, imsNote(t, 5, imsevent.Changed))
	ev := r.nextKind(t, IMSImage, 15*time.Second)
	if ev.IMS.Change != imsevent.Changed {
		t.Errorf("event = %v", ev)
	}
	ev.Done(nil)
	waitSettled(t, js, "w005")
}

func TestEnsureStreamChecksSubjects(t *testing.T) {
	_, _, js := jsSetup(t)
	st, err := EnsureStream(t.Context(), js, testStream, []string{DefaultS3Subject})
	if err != nil || st == nil {
		t.Fatalf("EnsureStream(existing, subset) = %v, %v", st, err)
	}
	info := st.CachedInfo()
	if info.Config.Retention != jetstream.LimitsPolicy || info.Config.MaxAge != StreamMaxAge {
		t.Errorf("stream config = %+v, want limits retention, max age %s", info.Config, StreamMaxAge)
	}
	_, err = EnsureStream(t.Context(), js, testStream, []string{"sbps.other"})
	if err == nil || !strings.Contains(err.Error(), "nats stream edit") {
		t.Errorf("EnsureStream(missing subject) = %v, want an error saying how to add it", err)
	}
}

func TestSubjectCovers(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"sbps.s3.events", "sbps.s3.events", true},
		{"sbps.*.events", "sbps.s3.events", true},
		{"sbps.>", "sbps.s3.events", true},
		{"sbps.>", "sbps", false},
		{"sbps.s3", "sbps.s3.events", false},
		{"sbps.s3.events.x", "sbps.s3.events", false},
	}
	for _, tc := range tests {
		if got := subjectCovers(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("subjectCovers(%q, %q) = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
	}
}

func TestJetStreamSurvivesServerRestart(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	nc := connect(t, n.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(t.Context(), js, testStream, []string{DefaultS3Subject, DefaultIMSSubject}); err != nil {
		t.Fatal(err)
	}
	src := jsSource(t, n.ClientURL(), "w006")
	r := run(t, src, 16)
	jsPublish(t, js, DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/before"))
	ev := r.nextKind(t, S3Object, 10*time.Second)
	ev.Done(nil)
	waitSettled(t, js, "w006")

	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if ev := r.nextKind(t, Resync, 15*time.Second); ev.Source != "nats reconnect" {
		t.Errorf("resync source = %q, want nats reconnect", ev.Source)
	}
	// The test's own connection reconnects too; publish until stored.
	testutil.WaitFor(t, 15*time.Second, "a publish stored after the restart", func() error {
		_, err := js.Publish(t.Context(), DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", "PE/after"))
		return err
	})
	ev = r.nextKind(t, S3Object, 15*time.Second)
	if ev.S3.Key != "PE/after" {
		t.Errorf("after restart got %s, want PE/after (PE/before was acked)", ev.S3.Key)
	}
	ev.Done(nil)
	waitSettled(t, js, "w006")
}
