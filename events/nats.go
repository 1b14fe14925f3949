package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/events/s3event"
)

// Default subjects and limits.
const (
	DefaultS3Subject     = "sbps.s3.events"
	DefaultIMSSubject    = "sbps.ims.events"
	DefaultResyncSubject = "sbps.control.resync"
	DefaultMaxMessage    = 1 << 20
	// ConsumerPrefix starts the name of every node's durable consumer.
	ConsumerPrefix = "sbps-marshal-"
)

// NATSConfig configures the NATS source. Field comments name the agent's
// configuration key and the default.
type NATSConfig struct {
	// URLs are the servers to connect to (NATS_URL, comma list). Required.
	URLs []string
	// Auth is how the source authenticates and verifies the server.
	Auth Auth
	// S3Subject carries S3 bucket notifications (NATS_S3_SUBJECT).
	// Defaults to DefaultS3Subject.
	S3Subject string
	// IMSSubject carries IMS change events (NATS_IMS_SUBJECT). Defaults to
	// DefaultIMSSubject.
	IMSSubject string
	// ResyncSubject carries fleet resync requests, always on core NATS.
	// Defaults to DefaultResyncSubject.
	ResyncSubject string
	// Stream is the JetStream stream holding S3Subject and IMSSubject
	// (NATS_STREAM). Empty means core subscriptions (lost events are
	// caught by resyncs).
	Stream string
	// NodeName names this node's durable consumer, ConsumerPrefix+NodeName.
	// Required with Stream.
	NodeName string
	// Bucket is the only bucket whose records become events (S3_BUCKET).
	// Records of other buckets are dropped and counted. Empty keeps all.
	Bucket string
	// MaxMessage is the largest message decoded, in bytes; larger ones are
	// dropped and counted. Defaults to DefaultMaxMessage (1 MiB).
	MaxMessage int64
	// ReconnectWait is the base wait between connection attempts, plus up
	// to the same again of random jitter. Defaults to 2s.
	ReconnectWait time.Duration
	// AckWait is how long JetStream waits for Done before redelivering.
	// Defaults to 2 minutes.
	AckWait time.Duration
	// NakDelay is the redelivery delay after Done(err), doubled with every
	// delivery of the same message up to MaxNakDelay. Defaults to 2s.
	NakDelay time.Duration
	// MaxNakDelay caps NakDelay. Defaults to 1 minute.
	MaxNakDelay time.Duration
}

// NATSSource turns NATS messages into events: S3 notifications and IMS
// change events (core subscriptions, or a JetStream durable consumer when
// Stream is set), fleet resync requests, and a Resync after every reconnect.
type NATSSource struct {
	cfg       NATSConfig
	opts      []nats.Option // authentication and TLS, checked by NewNATS
	logger    *slog.Logger
	stats     counters
	connected atomic.Bool
}

// Connected reports whether the source holds a NATS connection now.
func (s *NATSSource) Connected() bool { return s.connected.Load() }

// NewNATS checks cfg and reads its credential and TLS files; it does not
// connect. Errors name the setting to fix.
func NewNATS(cfg NATSConfig, logger *slog.Logger) (*NATSSource, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.URLs = nonEmptyURLs(cfg.URLs)
	if len(cfg.URLs) == 0 {
		return nil, errors.New("events: no NATS URL (NATS_URL); without a bus leave the NATS source out and rely on resyncs")
	}
	cfg.setDefaults()
	if err := cfg.checkNames(); err != nil {
		return nil, err
	}
	opts, err := cfg.Auth.Options()
	if err != nil {
		return nil, err
	}
	return &NATSSource{cfg: cfg, opts: opts, logger: logger.With("component", "events.nats")}, nil
}

// nonEmptyURLs trims the URLs and drops the empty ones; nil if none is left.
func nonEmptyURLs(in []string) []string {
	var urls []string
	for _, u := range in {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

func (cfg *NATSConfig) setDefaults() {
	if cfg.S3Subject == "" {
		cfg.S3Subject = DefaultS3Subject
	}
	if cfg.IMSSubject == "" {
		cfg.IMSSubject = DefaultIMSSubject
	}
	if cfg.ResyncSubject == "" {
		cfg.ResyncSubject = DefaultResyncSubject
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 2 * time.Second
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 2 * time.Minute
	}
	if cfg.NakDelay <= 0 {
		cfg.NakDelay = 2 * time.Second
	}
	if cfg.MaxNakDelay <= 0 {
		cfg.MaxNakDelay = time.Minute
	}
}

// checkNames checks the subjects, and with a stream the stream and
// consumer names, that NATS would otherwise refuse or misread.
func (cfg *NATSConfig) checkNames() error {
	for _, s := range []struct{ key, v string }{
		{"NATS_S3_SUBJECT", cfg.S3Subject}, {"NATS_IMS_SUBJECT", cfg.IMSSubject}, {"resync subject", cfg.ResyncSubject},
	} {
		if !validSubject(s.v) {
			return fmt.Errorf("events: %s %q is not a NATS subject (dot-separated tokens, no spaces, no wildcards)", s.key, s.v)
		}
	}
	if cfg.S3Subject == cfg.IMSSubject || cfg.S3Subject == cfg.ResyncSubject || cfg.IMSSubject == cfg.ResyncSubject {
		return fmt.Errorf("events: the S3 (%s), IMS (%s) and resync (%s) subjects must differ", cfg.S3Subject, cfg.IMSSubject, cfg.ResyncSubject)
	}
	if cfg.Stream != "" {
		if !validName(cfg.Stream) {
			return fmt.Errorf("events: NATS_STREAM %q is not a stream name (no spaces, '.', '*', '>', '/' or '\\')", cfg.Stream)
		}
		if !validName(cfg.NodeName) {
			return fmt.Errorf("events: node name %q cannot name a JetStream consumer (empty, or has spaces, '.', '*', '>', '/' or '\\'); set the node name", cfg.NodeName)
		}
	}
	return nil
}

// Config returns the configuration with defaults filled in.
func (s *NATSSource) Config() NATSConfig { return s.cfg }

// Stats returns the counters by source ("s3", "ims", "resync", "nats",
// "jetstream") and outcome, sorted.
func (s *NATSSource) Stats() []Stat { return s.stats.snapshot() }

// ConsumerName is this node's durable consumer name.
func (s *NATSSource) ConsumerName() string { return ConsumerPrefix + s.cfg.NodeName }

// Start connects and emits events until ctx ends, then returns nil. It
// never returns because of a bus outage: the first connection and every
// reconnection are retried forever in the background, and each
// reconnection (and a first connection made only after the start) emits a
// Resync, since events may have been missed.
func (s *NATSSource) Start(ctx context.Context, out chan<- Event) error {
	em := &emitter{ctx: ctx, out: out}
	defer em.stop()

	// A pending resync: reconnect handlers run on nats.go's callback
	// goroutine and must not block, so they leave a reason here and one
	// goroutine forwards it. Several pending resyncs collapse into one.
	resyncs := make(chan Event, 1)
	requestResync := func(source, reason string) {
		ev := Event{Kind: Resync, Source: source, Reason: reason, Received: time.Now()}
		select {
		case resyncs <- ev:
		default: // one is pending already; it covers this one
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-resyncs:
				if em.send(ev) {
					s.stats.inc("resync", OutcomeEvent)
				}
			}
		}
	})

	backoff := newBackoff(s.cfg.ReconnectWait, 30*time.Second)
	for {
		nc, closed, err := s.connect(requestResync)
		if err == nil {
			err = s.run(ctx, nc, closed, em)
			s.shutdown(nc, closed)
			if ctx.Err() != nil {
				return nil
			}
		}
		if err != nil {
			s.logger.Error("NATS connection failed; retrying (projections stay as they are)", "err", err)
		}
		if !backoff.wait(ctx) {
			return nil
		}
	}
}

// shutdown drains the connection so that the server has dropped this
// node's subscriptions and pending pull requests before Start returns (a
// message must not go to a request nobody reads: it would wait AckWait),
// then closes it.
func (s *NATSSource) shutdown(nc *nats.Conn, closed <-chan struct{}) {
	if nc.IsConnected() {
		if err := nc.Drain(); err == nil {
			t := time.NewTimer(5 * time.Second)
			select {
			case <-closed:
			case <-t.C:
				s.logger.Warn("NATS drain did not finish within 5s; closing")
			}
			t.Stop()
		}
	}
	nc.Close()
}

// connect builds the connection with handlers. With RetryOnFailedConnect
// it returns at once even if no server answers.
func (s *NATSSource) connect(requestResync func(source, reason string)) (*nats.Conn, <-chan struct{}, error) {
	cs := &connState{closed: make(chan struct{})}
	opts := append(s.connOptions(cs, requestResync), s.opts...)
	nc, err := nats.Connect(strings.Join(s.cfg.URLs, ","), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("events: connect to NATS: %w", err)
	}
	cs.state.Store(1)
	if nc.IsConnected() {
		s.connected.Store(true)
	} else {
		cs.state.Store(2)
		s.stats.inc("nats", OutcomeUnreachable)
		s.logger.Warn("NATS not reachable; retrying in the background (projecting without events meanwhile)", "servers", len(s.cfg.URLs))
	}
	return nc, cs.closed, nil
}

// connState is what the handlers of one connection share.
type connState struct {
	closed    chan struct{} // closed when the connection is closed for good
	closeOnce sync.Once
	// state: 0 while nats.Connect runs, then 1 if it connected at once or
	// 2 if it did not (the first connection then comes later and missed
	// events, so it asks for a resync).
	state atomic.Int32
	// lastErr is the latest failed attempt's error logged, so that an
	// outage logs its cause once, not at every retry; "" after connecting.
	lastErr atomic.Pointer[string]
}

// connOptions makes the connection retry forever and keeps Connected, the
// counters and the log current; every (re)connection that may have missed
// events asks for a resync.
func (s *NATSSource) connOptions(cs *connState, requestResync func(source, reason string)) []nats.Option {
	return []nats.Option{
		nats.Name("sbps-marshal " + s.cfg.NodeName),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(s.cfg.ReconnectWait),
		nats.ReconnectJitter(s.cfg.ReconnectWait, s.cfg.ReconnectWait),
		nats.ConnectHandler(func(nc *nats.Conn) {
			cs.lastErr.Store(nil)
			s.connected.Store(true)
			s.stats.inc("nats", OutcomeConnect)
			s.logger.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
			if cs.state.Load() == 2 {
				requestResync("nats reconnect", "connected to NATS after starting without it; events may have been missed")
			}
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			s.connected.Store(false)
			s.stats.inc("nats", OutcomeDisconnect)
			s.logger.Warn("disconnected from NATS; reconnecting (projections stay as they are)", "err", err)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			msg := err.Error()
			if prev := cs.lastErr.Swap(&msg); prev == nil || *prev != msg {
				s.logger.Warn("NATS connection attempt failed; retrying (projecting without events meanwhile)", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			cs.lastErr.Store(nil)
			s.connected.Store(true)
			s.stats.inc("nats", OutcomeReconnect)
			s.logger.Info("reconnected to NATS; resyncing", "url", nc.ConnectedUrlRedacted())
			requestResync("nats reconnect", "reconnected to NATS at "+nc.ConnectedUrlRedacted()+"; events may have been missed")
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			s.connected.Store(false)
			cs.closeOnce.Do(func() { close(cs.closed) })
		}),
		nats.ErrorHandler(s.asyncErrorHandler(requestResync)),
	}
}

// asyncErrorHandler logs NATS's asynchronous errors; messages dropped for a
// slow consumer were missed, so those ask for a resync.
func (s *NATSSource) asyncErrorHandler(requestResync func(source, reason string)) nats.ErrHandler {
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		if errors.Is(err, nats.ErrSlowConsumer) {
			s.stats.inc("nats", OutcomeSlowConsumer)
			s.logger.Warn("NATS dropped messages for a slow consumer; resyncing", "subject", subj)
			requestResync("nats slow consumer", "NATS dropped messages on "+subj+" (slow consumer); events were missed")
			return
		}
		s.logger.Warn("NATS asynchronous error", "subject", subj, "err", err)
	}
}

// run subscribes and serves until ctx ends (nil) or the connection closes
// for good (an error).
func (s *NATSSource) run(ctx context.Context, nc *nats.Conn, closed <-chan struct{}, em *emitter) error {
	resyncSub, err := nc.Subscribe(s.cfg.ResyncSubject, func(m *nats.Msg) {
		who := resyncWho(m.Data)
		s.logger.Info("fleet resync requested", "by", who, "subject", m.Subject)
		if em.send(Event{Kind: Resync, Source: "fleet resync", Reason: "fleet resync requested by " + who, Received: time.Now()}) {
			s.stats.inc("resync", OutcomeEvent)
		}
	})
	if err != nil {
		return fmt.Errorf("events: subscribe to %s: %w", s.cfg.ResyncSubject, err)
	}
	defer resyncSub.Unsubscribe()

	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Stream == "" {
		// S3 last: a connection's subscriptions reach the server in order,
		// so an S3 message delivered proves all subscriptions are in place.
		for _, subj := range []string{s.cfg.IMSSubject, s.cfg.S3Subject} {
			source := "nats " + subj
			sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
				s.handle(m.Subject, m.Data, source, nil, em)
			})
			if err != nil {
				return fmt.Errorf("events: subscribe to %s: %w", subj, err)
			}
			defer sub.Unsubscribe()
		}
	} else {
		wg.Go(func() { s.consumeJetStream(runCtx, nc, em) })
	}

	select {
	case <-ctx.Done():
		return nil
	case <-closed:
		return errors.New("events: NATS connection closed")
	}
}

// handle decodes one message and emits its events. js is nil for core
// NATS; for JetStream it acknowledges the message once all events are done.
func (s *NATSSource) handle(subject string, data []byte, source string, js *jsAck, em *emitter) {
	received := time.Now()
	var evs []Event
	bad := false
	switch subject {
	case s.cfg.S3Subject:
		evs, bad = s.decodeS3(subject, data, source, received)
	case s.cfg.IMSSubject:
		evs, bad = s.decodeIMS(subject, data, source, received)
	default:
		s.stats.inc("nats", OutcomeUnknownSubj)
		s.logger.Warn("message on an unexpected subject dropped; check the stream's subjects", "subject", subject)
	}
	if js != nil {
		if len(evs) == 0 {
			js.finishEmpty(bad)
			return
		}
		js.attach(evs)
	}
	for i, ev := range evs {
		s.logger.Debug("event", "event", ev.String())
		if !em.send(ev) {
			// Shutting down: the rest was not handed over.
			for _, rest := range evs[i:] {
				rest.Done(context.Canceled)
			}
			return
		}
	}
}

// decodeS3 returns the events of one S3 notification; bad means it was
// refused whole (undecodable or oversized).
func (s *NATSSource) decodeS3(subject string, data []byte, source string, received time.Time) (evs []Event, bad bool) {

	if int64(len(data)) > s.cfg.MaxMessage {
		s.stats.inc("s3", OutcomeOversized)
		s.logger.Warn("S3 notification over the size limit dropped", "subject", subject, "bytes", len(data), "limit", s.cfg.MaxMessage)
		return nil, true
	}
	n, err := s3event.DecodeLimited(bytes.NewReader(data), s.cfg.MaxMessage)
	if err != nil {
		if len(n.Records) == 0 {
			outcome := OutcomeUndecodable
			if errors.Is(err, s3event.ErrTooLarge) {
				outcome = OutcomeOversized
			}
			s.stats.inc("s3", outcome)
			s.logger.Warn("undecodable S3 notification dropped", "subject", subject, "bytes", len(data), "err", err)
			return nil, true
		}
		s.stats.inc("s3", OutcomeBadRecord)
		s.logger.Warn("S3 notification with unusable records; using the others", "subject", subject, "err", err)
	}
	if n.Test {
		s.stats.inc("s3", OutcomeTest)
		s.logger.Debug("S3 test notification ignored", "subject", subject)
		return nil, false
	}
	if len(n.Records) == 0 {
		if err == nil {
			s.stats.inc("s3", OutcomeNoRecords)
		}
		return nil, false
	}
	evs = make([]Event, 0, len(n.Records))
	for i := range n.Records {
		rec := n.Records[i]
		if s.cfg.Bucket != "" && rec.Bucket != s.cfg.Bucket {
			s.stats.inc("s3", OutcomeOtherBucket)
			s.logger.Debug("S3 record for another bucket dropped", "subject", subject, "bucket", rec.Bucket)
			continue
		}
		s.stats.inc("s3", OutcomeEvent)
		evs = append(evs, Event{Kind: S3Object, Source: source, S3: &rec, Received: received})
	}
	return evs, false
}

// decodeIMS returns the event of one IMS change event; bad means it was
// refused (undecodable or oversized).
func (s *NATSSource) decodeIMS(subject string, data []byte, source string, received time.Time) (evs []Event, bad bool) {
	if int64(len(data)) > s.cfg.MaxMessage {
		s.stats.inc("ims", OutcomeOversized)
		s.logger.Warn("IMS change event over the size limit dropped", "subject", subject, "bytes", len(data), "limit", s.cfg.MaxMessage)
		return nil, true
	}
	e, err := imsevent.Decode(data)
	if err != nil {
		outcome := OutcomeUndecodable
		if errors.Is(err, imsevent.ErrTooLarge) {
			outcome = OutcomeOversized
		}
		s.stats.inc("ims", outcome)
		s.logger.Warn("undecodable IMS change event dropped", "subject", subject, "bytes", len(data), "err", err)
		return nil, true
	}
	s.stats.inc("ims", OutcomeEvent)
	return []Event{{Kind: IMSImage, Source: source, IMS: &e, Received: received}}, false
}

// validSubject accepts a literal subject: non-empty dot-separated tokens
// of printable characters other than space and the wildcards.
func validSubject(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for _, r := range tok {
			if unicode.IsSpace(r) || !unicode.IsPrint(r) {
				return false
			}
		}
	}
	return true
}

// validName accepts a JetStream stream or consumer name.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || strings.ContainsRune(".*>/\\", r) {
			return false
		}
	}
	return true
}

// backoff is an exponential wait with full jitter.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max} }

func (b *backoff) reset() { b.cur = 0 }

// wait sleeps for the next delay or until ctx ends; false means ctx ended.
func (b *backoff) wait(ctx context.Context) bool {
	switch {
	case b.cur == 0:
		b.cur = b.base
	case b.cur < b.max:
		b.cur = min(2*b.cur, b.max)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
