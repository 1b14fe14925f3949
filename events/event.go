package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/events/s3event"
)

// Kind says which member of an Event is set.
type Kind int

const (
	// S3Object is one record of an S3 bucket notification; Event.S3 is set.
	S3Object Kind = iota + 1
	// IMSImage is one IMS change event; Event.IMS is set.
	IMSImage
	// LIOChanged means saveconfig.json changed on disk; Event.Digest is set.
	LIOChanged
	// Resync asks for a full resync; Event.Reason says why.
	Resync
)

func (k Kind) String() string {
	switch k {
	case S3Object:
		return "s3-object"
	case IMSImage:
		return "ims-image"
	case LIOChanged:
		return "lio-changed"
	case Resync:
		return "resync"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Event is one hint that something may have changed. The agent re-reads the
// truth (S3, IMS, saveconfig.json) before acting on it.
type Event struct {
	Kind Kind
	// Source names where the event came from: "nats sbps.s3.events",
	// "jetstream SBPS/sbps-marshal-<node>", "fsnotify", "SIGHUP",
	// "nats reconnect", "fleet resync".
	Source string
	// S3 is the record, for Kind S3Object (one event per record).
	S3 *s3event.Record
	// IMS is the change event, for Kind IMSImage.
	IMS *imsevent.Event
	// Digest is ContentDigest of the saveconfig.json content now on disk
	// (which parsed), for Kind LIOChanged.
	Digest string
	// Reason says why a resync is wanted, for Kind Resync.
	Reason string
	// Received is when the source received the event.
	Received time.Time

	ack *acker
}

// acker runs an acknowledgement hook at most once.
type acker struct {
	once sync.Once
	fn   func(error)
}

func newAcker(fn func(error)) *acker { return &acker{fn: fn} }

// Done reports the outcome of handling the event. nil acknowledges a
// JetStream message; an error NAKs it with a delay so that JetStream
// redelivers it (an error wrapping context.Canceled NAKs without delay, so a
// restarted agent gets it at once). A message that produced several events
// (an S3 notification with several records) is acknowledged when all of
// them are done, and NAKed if any of them failed.
//
// Done is a no-op for sources without acknowledgement and for the zero
// Event. The consumer must call it exactly once per event; later calls are
// ignored.
func (e Event) Done(err error) {
	if e.ack != nil {
		e.ack.once.Do(func() { e.ack.fn(err) })
	}
}

func (e Event) String() string {
	switch e.Kind {
	case S3Object:
		if e.S3 != nil {
			return fmt.Sprintf("%s %s s3://%s/%s etag=%q from %s", e.Kind, e.S3.Kind, e.S3.Bucket, e.S3.Key, e.S3.ETag, e.Source)
		}
	case IMSImage:
		if e.IMS != nil {
			return fmt.Sprintf("%s %s %s from %s", e.Kind, e.IMS.Change, e.IMS.ID, e.Source)
		}
	case LIOChanged:
		return fmt.Sprintf("%s digest=%.12s from %s", e.Kind, e.Digest, e.Source)
	case Resync:
		return fmt.Sprintf("%s (%s) from %s", e.Kind, e.Reason, e.Source)
	}
	return fmt.Sprintf("%s from %s", e.Kind, e.Source)
}

// Source is a long-running producer of events. Start sends events to out
// and blocks until ctx is done; it returns nil then. It returns an error
// early only for a problem that retrying cannot fix (bad configuration).
// It never closes out.
type Source interface {
	Start(ctx context.Context, out chan<- Event) error
}

// SourceFunc adapts a function such as Signals to Source.
type SourceFunc func(ctx context.Context, out chan<- Event) error

// Start calls f(ctx, out).
func (f SourceFunc) Start(ctx context.Context, out chan<- Event) error { return f(ctx, out) }

var (
	_ Source = (*NATSSource)(nil)
	_ Source = (*Watcher)(nil)
	_ Source = SourceFunc(Signals)
)

// Merge runs every source with the same out channel (fan-in) and blocks
// until all have returned. When ctx ends they all stop and Merge returns
// nil. When a source returns early (with an error, or nil before ctx
// ended) the others are stopped too and Merge returns the errors joined. It
// never closes out. Events of one source keep their order; events of
// different sources interleave in no defined order.
func Merge(ctx context.Context, out chan<- Event, sources ...Source) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(sources))
	var wg sync.WaitGroup
	for i, s := range sources {
		wg.Go(func() {
			err := s.Start(ctx, out)
			if ctx.Err() == nil {
				if err == nil {
					err = fmt.Errorf("events: source %d (%T) stopped before shutdown", i, s)
				}
				errs[i] = err
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// emitter sends events to out until it is stopped. stop waits for sends in
// flight, so no event is sent after the source's Start has returned.
type emitter struct {
	ctx context.Context
	out chan<- Event

	mu      sync.RWMutex
	stopped bool // +checklocks:mu
}

// send delivers ev, blocking while out is full (backpressure). It reports
// false when ctx ended or the emitter is stopped; the event was then not
// delivered.
func (e *emitter) send(ev Event) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.stopped || e.ctx.Err() != nil {
		return false
	}
	select {
	case e.out <- ev:
		return true
	case <-e.ctx.Done():
		return false
	}
}

func (e *emitter) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
}
