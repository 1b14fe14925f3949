package events

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/rig"
)

// BenchmarkPublishToEvent measures the latency from a publish on an
// embedded nats-server to the event leaving the source, one message at a
// time (unloaded latency), and reports p50 and p99 in microseconds. Run
// with -benchtime=1000x for 1,000 messages.
func BenchmarkPublishToEvent(b *testing.B) {
	b.Run("core", func(b *testing.B) {
		n := rig.NATSForTest(b, rig.NATSOptions{})
		nc := connect(b, n.ClientURL())
		src := newNATS(b, NATSConfig{URLs: []string{n.ClientURL()}})
		r := run(b, src, 16)
		probeCore(b, nc, r, DefaultS3Subject)
		benchLatency(b, r, func(i int) error {
			return nc.Publish(DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", fmt.Sprintf("PE/b-%d", i)))
		})
	})
	b.Run("jetstream", func(b *testing.B) {
		url, _, js := jsSetup(b)
		src := jsSource(b, url, "bench")
		r := run(b, src, 16)
		benchLatency(b, r, func(i int) error {
			// Asynchronous publish: the clock starts when the message
			// leaves, not when the stream's ack comes back.
			_, err := js.PublishAsync(DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", fmt.Sprintf("PE/b-%d", i)))
			return err
		})
	})
}

func benchLatency(b *testing.B, r *running, publish func(i int) error) {
	b.Helper()
	var lat []time.Duration
	i := 0
	for b.Loop() {
		key := fmt.Sprintf("PE/b-%d", i)
		t0 := time.Now()
		if err := publish(i); err != nil {
			b.Fatal(err)
		}
		for {
			ev := r.next(b, 10*time.Second)
			ev.Done(nil)
			if ev.Kind == S3Object && ev.S3.Key == key {
				break
			}
		}
		lat = append(lat, time.Since(t0))
		i++
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
