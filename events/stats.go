package events

import (
	"slices"
	"strings"
	"sync"
)

// StatsSource is a Source that counts what it saw (NATSSource, Watcher);
// the agent exports its counters as metrics.
type StatsSource interface {
	Source
	Stats() []Stat
}

// ConnectedSource is a Source with a connection to report (NATSSource).
type ConnectedSource interface {
	Source
	Connected() bool
}

// Stat is one counter: how many times Source saw Outcome. It maps directly
// to a metric with two labels.
type Stat struct {
	Source  string // "s3", "ims", "resync", "nats", "jetstream", "saveconfig"
	Outcome string // e.g. "event", "undecodable", "other_bucket"
	Count   uint64
}

// Outcomes counted (not every source uses every one).
const (
	OutcomeEvent        = "event"        // an event was emitted
	OutcomeTest         = "test"         // a producer's test notification, dropped
	OutcomeOtherBucket  = "other_bucket" // a record for another bucket, dropped
	OutcomeUndecodable  = "undecodable"  // a message that does not decode, dropped
	OutcomeBadRecord    = "bad_record"   // one record of a notification skipped
	OutcomeOversized    = "oversized"    // a message over MaxMessage, dropped
	OutcomeNoRecords    = "no_records"   // a notification without records
	OutcomeUnknownSubj  = "unknown_subject"
	OutcomeConnect      = "connect"
	OutcomeUnreachable  = "unreachable" // no server answered at start; retrying
	OutcomeDisconnect   = "disconnect"
	OutcomeReconnect    = "reconnect"
	OutcomeSlowConsumer = "slow_consumer" // NATS dropped messages: a resync follows
	OutcomeStreamMiss   = "stream_missing"
	OutcomeConsumerErr  = "consumer_error"
	OutcomeAck          = "ack"
	OutcomeNak          = "nak"
	OutcomeTerm         = "term"
	OutcomeIncomplete   = "incomplete" // saveconfig.json half-written, retried
	OutcomeInvalid      = "invalid"    // saveconfig.json is not valid rtslib JSON
	OutcomeMissing      = "missing"    // saveconfig.json absent
	OutcomeIgnored      = "ignored"    // a file event for another file
)

// counters is a set of Stat counters, safe for concurrent use.
type counters struct {
	mu sync.Mutex
	m  map[[2]string]uint64 // +checklocks:mu
}

func (c *counters) add(source, outcome string, n uint64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[[2]string]uint64)
	}
	c.m[[2]string{source, outcome}] += n
	c.mu.Unlock()
}

func (c *counters) inc(source, outcome string) { c.add(source, outcome, 1) }

// snapshot returns the counters sorted by source, then outcome.
func (c *counters) snapshot() []Stat {
	c.mu.Lock()
	out := make([]Stat, 0, len(c.m))
	for k, v := range c.m {
		out = append(out, Stat{Source: k[0], Outcome: k[1], Count: v})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Stat) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		return strings.Compare(a.Outcome, b.Outcome)
	})
	return out
}

var (
	_ StatsSource     = (*NATSSource)(nil)
	_ StatsSource     = (*Watcher)(nil)
	_ ConnectedSource = (*NATSSource)(nil)
)
