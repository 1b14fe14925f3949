package events

import (
	"context"
	"time"
)

// CoalescerConfig configures a Coalescer.
type CoalescerConfig struct {
	// Window is how long a batch stays open after its first event.
	// Defaults to 50ms.
	Window time.Duration
	// MaxBatch closes a batch early when it holds this many events.
	// Defaults to 1024.
	MaxBatch int
}

// Coalescer groups events that arrive close together into batches, so that
// a burst is applied in one LIO batch.
type Coalescer struct {
	cfg   CoalescerConfig
	apply func(ctx context.Context, batch []Event)
}

// NewCoalescer returns a Coalescer that hands each batch to apply.
//
// A batch opens with its first event and closes Window later or when it
// holds MaxBatch events, whichever comes first; latency added is therefore
// at most Window. Batches are handed over in arrival order, one at a time:
// apply runs on Start's goroutine and no event is read while it runs
// (backpressure reaches the sources). Events keep their arrival order
// within and across batches. apply owns the batch: it must call Done on
// every event in it.
func NewCoalescer(cfg CoalescerConfig, apply func(ctx context.Context, batch []Event)) *Coalescer {
	if cfg.Window <= 0 {
		cfg.Window = 50 * time.Millisecond
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1024
	}
	return &Coalescer{cfg: cfg, apply: apply}
}

// Start reads events from in and hands batches to apply until ctx ends or
// in is closed; it returns nil. When in is closed, the open batch is
// handed over first. When ctx ends, events of the open batch are not
// handed over: Start calls their Done with ctx's error (JetStream then
// redelivers them).
func (c *Coalescer) Start(ctx context.Context, in <-chan Event) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var batch []Event
	var timeout <-chan time.Time // nil while no batch is open
	flush := func() {
		if len(batch) > 0 {
			b := batch
			batch = nil
			c.apply(ctx, b)
		}
		timer.Stop()
		timeout = nil
	}
	for {
		select {
		case <-ctx.Done():
			for _, ev := range batch {
				ev.Done(ctx.Err())
			}
			return nil
		case ev, ok := <-in:
			if !ok {
				flush()
				return nil
			}
			if len(batch) == 0 {
				timer.Reset(c.cfg.Window)
				timeout = timer.C
			}
			batch = append(batch, ev)
			if len(batch) >= c.cfg.MaxBatch {
				flush()
			}
		case <-timeout:
			flush()
		}
	}
}
