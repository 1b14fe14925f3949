package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// batches records what a Coalescer hands over.
type batches struct {
	mu    sync.Mutex
	sizes []int
	total int
	keys  []string
}

func (b *batches) apply(_ context.Context, batch []Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(batch))
	b.total += len(batch)
	for _, ev := range batch {
		if ev.Kind == S3Object {
			b.keys = append(b.keys, ev.S3.Key)
		}
		ev.Done(nil)
	}
}

func (b *batches) snapshot() (sizes []int, total int, keys []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.sizes...), b.total, append([]string(nil), b.keys...)
}

func TestCoalescerThousandNATSEventsFewBatchesNoneLost(t *testing.T) {
	n := startNATS(t)
	nc := connect(t, n.ClientURL())
	src := newNATS(t, NATSConfig{URLs: []string{n.ClientURL()}})
	events := make(chan Event, 16)
	ctx, cancel := context.WithCancel(context.Background())
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Start(ctx, events) }()

	// Wait for the subscriptions with a probe, before batching starts.
	probe := &running{out: events, done: srcDone}
	probeCore(t, nc, probe, DefaultS3Subject)

	var got batches
	c := NewCoalescer(CoalescerConfig{}, got.apply)
	coDone := make(chan error, 1)
	go func() { coDone <- c.Start(ctx, events) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{srcDone, coDone} {
			if err := <-ch; err != nil {
				t.Errorf("Start = %v, want nil", err)
			}
		}
	})

	const total = 1000
	start := time.Now()
	for i := range total {
		if err := nc.Publish(DefaultS3Subject, s3Note(testBucket, "s3:ObjectCreated:Put", fmt.Sprintf("PE/burst-%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() error {
		_, _, keys := got.snapshot()
		if n := countPrefix(keys, "PE/burst-"); n < total {
			return fmt.Errorf("%d of %d events handed over", n, total)
		}
		return nil
	})
	elapsed := time.Since(start)
	sizes, _, keys := got.snapshot()
	var burst []string
	for _, k := range keys {
		if len(k) > 9 && k[:9] == "PE/burst-" {
			burst = append(burst, k)
		}
	}
	for i, k := range burst {
		if want := fmt.Sprintf("PE/burst-%04d", i); k != want {
			t.Fatalf("event %d = %s, want %s (lost, duplicated or reordered)", i, k, want)
		}
	}
	t.Logf("1000 events in %d batches %v within %s", len(sizes), sizes, elapsed)
	if len(sizes) > 40 {
		t.Errorf("%d batches for a burst of %d, want few (window 50ms)", len(sizes), total)
	}
}

func countPrefix(keys []string, prefix string) int {
	n := 0
	for _, k := range keys {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

func TestCoalescerMaxBatchAndClose(t *testing.T) {
	in := make(chan Event, 10)
	for range 10 {
		in <- Event{Kind: Resync}
	}
	close(in)
	var got batches
	c := NewCoalescer(CoalescerConfig{Window: time.Hour, MaxBatch: 4}, got.apply)
	if err := c.Start(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	sizes, total, _ := got.snapshot()
	if fmt.Sprint(sizes) != "[4 4 2]" || total != 10 {
		t.Errorf("batches = %v (total %d), want [4 4 2]: full batches at once, the rest on close", sizes, total)
	}
}

func TestCoalescerWindow(t *testing.T) {
	in := make(chan Event)
	handed := make(chan []Event, 1)
	c := NewCoalescer(CoalescerConfig{Window: 30 * time.Millisecond}, func(_ context.Context, b []Event) { handed <- b })
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go c.Start(ctx, in)
	sent := time.Now()
	in <- Event{Kind: Resync, Reason: "a"}
	in <- Event{Kind: Resync, Reason: "b"}
	select {
	case b := <-handed:
		if len(b) != 2 || b[0].Reason != "a" || b[1].Reason != "b" {
			t.Errorf("batch = %v, want a then b", b)
		}
		if d := time.Since(sent); d < 30*time.Millisecond {
			t.Errorf("batch handed over after %s, before the 30ms window closed", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no batch")
	}
}

func TestCoalescerShutdownFailsOpenBatch(t *testing.T) {
	in := make(chan Event, 1)
	var doneErr error
	var mu sync.Mutex
	in <- Event{Kind: Resync, ack: newAcker(func(err error) { mu.Lock(); doneErr = err; mu.Unlock() })}
	ctx, cancel := context.WithCancel(t.Context())
	c := NewCoalescer(CoalescerConfig{Window: time.Hour}, func(context.Context, []Event) { t.Error("batch handed over after shutdown") })
	result := make(chan error, 1)
	go func() { result <- c.Start(ctx, in) }()
	waitFor(t, 5*time.Second, func() error {
		if len(in) != 0 {
			return errors.New("event not read yet")
		}
		return nil
	})
	cancel()
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(doneErr, context.Canceled) {
		t.Errorf("Done(%v) for the open batch, want context.Canceled (so JetStream redelivers at once)", doneErr)
	}
}

func TestMerge(t *testing.T) {
	out := make(chan Event, 4)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	emit := func(reason string) Source {
		return SourceFunc(func(ctx context.Context, out chan<- Event) error {
			out <- Event{Kind: Resync, Reason: reason}
			<-ctx.Done()
			return nil
		})
	}
	res := make(chan error, 1)
	go func() { res <- Merge(ctx, out, emit("a"), emit("b")) }()
	seen := map[string]bool{}
	for range 2 {
		select {
		case ev := <-out:
			seen[ev.Reason] = true
		case <-time.After(10 * time.Second):
			t.Fatal("Merge did not forward")
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("seen %v, want a and b", seen)
	}
	cancel()
	if err := <-res; err != nil {
		t.Errorf("Merge after cancel = %v, want nil", err)
	}

	// A failing source stops the others and its error comes back.
	boom := errors.New("boom")
	err := Merge(t.Context(), out, emit("c"), SourceFunc(func(context.Context, chan<- Event) error { return boom }))
	if !errors.Is(err, boom) {
		t.Errorf("Merge = %v, want boom", err)
	}
}

func TestEventDoneZeroAndString(t *testing.T) {
	Event{}.Done(errors.New("x")) // must not panic
	calls := 0
	ev := Event{Kind: LIOChanged, Digest: "abcdef0123456789", Source: "fsnotify", ack: newAcker(func(error) { calls++ })}
	ev.Done(nil)
	ev.Done(nil)
	if calls != 1 {
		t.Errorf("ack hook ran %d times, want 1", calls)
	}
	if got, want := ev.String(), "lio-changed digest=abcdef012345 from fsnotify"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
