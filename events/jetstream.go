package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamMaxAge is how long EnsureStream's stream keeps messages: a node
// down for longer catches up by its start-up resync instead.
const StreamMaxAge = 24 * time.Hour

// StreamHelp tells an operator how to create the stream the agent needs.
func StreamHelp(stream string, subjects ...string) string {
	return fmt.Sprintf("create it with: nats stream add %s --subjects %q --retention limits --max-age %s --storage file --discard old --dupe-window 2m --defaults (limits retention: every node's durable consumer sees every message; do not use work-queue retention)",
		stream, joinSubjects(subjects), StreamMaxAge)
}

func joinSubjects(subjects []string) string {
	out := ""
	for i, s := range subjects {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// EnsureStream returns the stream name, creating it if it does not exist:
// file storage, limits retention (so every node's durable consumer sees
// every message: fan-out), messages kept StreamMaxAge, a 2-minute duplicate
// window for the IMS bridge's de-duplication ids. An existing stream is
// returned as is, with an error if it does not hold all subjects.
func EnsureStream(ctx context.Context, js jetstream.JetStream, name string, subjects []string) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        name,
			Description: "sbps-marshal: S3 bucket notifications and IMS change events",
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardOld,
			MaxAge:      StreamMaxAge,
			Duplicates:  2 * time.Minute,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, name) // created concurrently
		}
	}
	if err != nil {
		return nil, fmt.Errorf("events: ensure JetStream stream %s: %w", name, err)
	}
	have := st.CachedInfo().Config.Subjects
	for _, want := range subjects {
		found := false
		for _, h := range have {
			if subjectCovers(h, want) {
				found = true
				break
			}
		}
		if !found {
			return st, fmt.Errorf("events: JetStream stream %s exists but does not hold subject %s (it holds %v); add it with: nats stream edit %s --subjects %q",
				name, want, have, name, joinSubjects(append(append([]string(nil), have...), want)))
		}
	}
	return st, nil
}

// subjectCovers reports whether pattern (possibly with * and >) matches
// the literal subject.
func subjectCovers(pattern, subject string) bool {
	pt := splitDots(pattern)
	st := splitDots(subject)
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// consumerConfig is this node's durable consumer: every message of both
// subjects from the start of the stream (a node that was down catches up),
// explicit acks, redelivered until acked.
func (s *NATSSource) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        s.ConsumerName(),
		Description:    "sbps-marshal on node " + s.cfg.NodeName,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  1000,
		FilterSubjects: []string{s.cfg.S3Subject, s.cfg.IMSSubject},
	}
}

// consumeJetStream pulls from the node's durable consumer until ctx ends,
// creating the consumer when missing and retrying every failure forever.
func (s *NATSSource) consumeJetStream(ctx context.Context, nc *nats.Conn, em *emitter) {
	js, err := jetstream.New(nc)
	if err != nil { // only on invalid options
		s.logger.Error("JetStream unavailable", "err", err)
		return
	}
	source := "jetstream " + s.cfg.Stream + "/" + s.ConsumerName()
	log := s.logger.With("stream", s.cfg.Stream, "consumer", s.ConsumerName())
	bo := newBackoff(500*time.Millisecond, 30*time.Second)
	for ctx.Err() == nil {
		cons, err := s.consumer(ctx, js)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				s.stats.inc("jetstream", OutcomeStreamMiss)
				log.Error("JetStream stream missing; no S3 or IMS events until it exists (resyncs still run); "+
					StreamHelp(s.cfg.Stream, s.cfg.S3Subject, s.cfg.IMSSubject), "err", err)
			} else {
				s.stats.inc("jetstream", OutcomeConsumerErr)
				log.Warn("cannot set up the durable consumer; retrying", "err", err)
			}
			bo.wait(ctx)
			continue
		}
		iter, err := cons.Messages(jetstream.PullMaxMessages(256))
		if err != nil {
			s.stats.inc("jetstream", OutcomeConsumerErr)
			log.Warn("cannot pull from the durable consumer; retrying", "err", err)
			bo.wait(ctx)
			continue
		}
		log.Info("consuming JetStream events")
		for {
			msg, err := iter.Next(jetstream.NextContext(ctx))
			if err != nil {
				iter.Stop()
				if ctx.Err() == nil {
					s.stats.inc("jetstream", OutcomeConsumerErr)
					log.Warn("JetStream pull stopped; setting up again", "err", err)
					bo.wait(ctx)
				}
				break
			}
			bo.reset()
			ack := &jsAck{msg: msg, src: s}
			s.handle(msg.Subject(), msg.Data(), source, ack, em)
		}
	}
}

// consumer creates or updates this node's durable consumer, falling back
// to the existing one if it cannot be updated.
func (s *NATSSource) consumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(cctx, s.cfg.Stream, s.consumerConfig())
	if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
		return cons, err
	}
	existing, gerr := js.Consumer(cctx, s.cfg.Stream, s.ConsumerName())
	if gerr != nil {
		return nil, fmt.Errorf("events: create durable consumer %s on stream %s: %w; check the stream holds %s and %s", s.ConsumerName(), s.cfg.Stream, err, s.cfg.S3Subject, s.cfg.IMSSubject)
	}
	s.logger.Warn("durable consumer exists with a configuration that cannot be updated; using it as is (delete it to recreate)", "consumer", s.ConsumerName(), "err", err)
	return existing, nil
}

// jsAck acknowledges one JetStream message once all its events are done.
type jsAck struct {
	msg jetstream.Msg
	src *NATSSource

	remaining atomic.Int32
	mu        sync.Mutex
	err       error // +checklocks:mu; first failure
}

// attach gives each event an ack hook counting down to the message's ack.
func (a *jsAck) attach(evs []Event) {
	a.remaining.Store(int32(len(evs)))
	for i := range evs {
		evs[i].ack = newAcker(a.done)
	}
}

func (a *jsAck) done(err error) {
	if err != nil {
		a.mu.Lock()
		if a.err == nil {
			a.err = err
		}
		a.mu.Unlock()
	}
	if a.remaining.Add(-1) != 0 {
		return
	}
	a.mu.Lock()
	err = a.err
	a.mu.Unlock()
	log := a.src.logger.With("subject", a.msg.Subject())
	if err == nil {
		a.src.stats.inc("jetstream", OutcomeAck)
		if aerr := a.msg.Ack(); aerr != nil {
			log.Warn("JetStream ack failed; the message will be redelivered", "err", aerr)
		}
		return
	}
	a.src.stats.inc("jetstream", OutcomeNak)
	delay := a.nakDelay()
	if errors.Is(err, context.Canceled) {
		delay = 0
	}
	log.Info("event failed; JetStream redelivers it", "delay", delay, "err", err)
	var nerr error
	if delay == 0 {
		nerr = a.msg.Nak()
	} else {
		nerr = a.msg.NakWithDelay(delay)
	}
	if nerr != nil {
		log.Warn("JetStream nak failed; the message is redelivered after the ack wait", "err", nerr)
	}
}

// nakDelay doubles NakDelay with every delivery, up to MaxNakDelay.
func (a *jsAck) nakDelay() time.Duration {
	d := a.src.cfg.NakDelay
	if md, err := a.msg.Metadata(); err == nil {
		for n := uint64(1); n < md.NumDelivered && d < a.src.cfg.MaxNakDelay; n++ {
			d *= 2
		}
	}
	return min(d, a.src.cfg.MaxNakDelay)
}

// finishEmpty settles a message that produced no event so that it is not
// redelivered: terminated if it was refused (bad), acknowledged otherwise
// (a test notification, another bucket).
func (a *jsAck) finishEmpty(bad bool) {
	var err error
	if bad {
		a.src.stats.inc("jetstream", OutcomeTerm)
		err = a.msg.TermWithReason("sbps-marshal: undecodable or oversized")
	} else {
		a.src.stats.inc("jetstream", OutcomeAck)
		err = a.msg.Ack()
	}
	if err != nil {
		a.src.logger.Warn("JetStream ack of a dropped message failed; it will be redelivered and dropped again", "subject", a.msg.Subject(), "err", err)
	}
}
