package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/s3event"
)

// DefaultMaxBody is the largest notification the webhook accepts, in bytes
// (the agents' own limit, s3event.MaxSize).
const DefaultMaxBody = s3event.MaxSize

// Reasons a webhook request is rejected, as keys of WebhookStats.Rejected.
const (
	RejectMethod      = "method"       // not a POST: 405
	RejectContentType = "content_type" // not a JSON media type: 415
	RejectOversized   = "oversized"    // body over MaxBody: 413
	RejectUndecodable = "undecodable"  // not an S3 notification: 400
	RejectBadRecords  = "bad_records"  // a notification none of whose records is usable: 400
	RejectBodyRead    = "body_read"    // the body could not be read: 400
)

var rejectReasons = []string{RejectMethod, RejectContentType, RejectOversized, RejectUndecodable, RejectBadRecords, RejectBodyRead}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// Subject is where notifications are published (NATS_S3_SUBJECT).
	// Defaults to events.DefaultS3Subject.
	Subject string
	// Stream is the JetStream stream holding Subject (NATS_STREAM). When
	// set, a request is answered 200 only after the stream acknowledged the
	// message, which carries a Nats-Msg-Id so that redeliveries are dropped
	// within the stream's duplicate window. Empty: core NATS publish and
	// flush.
	Stream string
	// Token, when not empty, is the shared secret every request must carry
	// as "Authorization: Bearer <token>" (or as the password of HTTP Basic
	// authentication, for RGW push endpoints written as
	// https://user:<token>@host/). Empty: no authentication (bind loopback).
	Token string
	// MaxBody bounds the request body in bytes. Defaults to DefaultMaxBody
	// (1 MiB).
	MaxBody int64
	// PublishTimeout bounds the wait for NATS (flush or stream ack).
	// Defaults to DefaultPublishTimeout (5s).
	PublishTimeout time.Duration
}

// WebhookStats are the webhook's counters since it was built.
type WebhookStats struct {
	Received     uint64            // requests seen
	Published    uint64            // notifications NATS (or the stream) took; includes Duplicates
	Duplicates   uint64            // of Published: the stream already held that Nats-Msg-Id
	Tests        uint64            // test events answered 200 without publishing
	Empty        uint64            // notifications without records answered 200 without publishing
	Unauthorized uint64            // 401: missing or wrong token
	Unavailable  uint64            // 503: NATS down, slow, or the stream refused
	Rejected     map[string]uint64 // by reason (Reject* constants); every reason present
}

// Webhook is the HTTP push endpoint Ceph RGW topics point at: it checks each
// POSTed notification and publishes its body, unchanged, to NATS. It is an
// http.Handler, safe for concurrent use.
type Webhook struct {
	cfg WebhookConfig
	pub *publisher
	log *slog.Logger

	received, published, duplicates, tests, empty, unauthorized, unavailable atomic.Uint64
	rejected                                                                 map[string]*atomic.Uint64 // fixed keys, built in NewWebhook
}

var _ http.Handler = (*Webhook)(nil)

// NewWebhook returns a Webhook publishing through nc. It does not touch the
// network.
func NewWebhook(nc *nats.Conn, cfg WebhookConfig, log *slog.Logger) (*Webhook, error) {
	if cfg.Subject == "" {
		cfg.Subject = events.DefaultS3Subject
	}
	if cfg.MaxBody <= 0 || cfg.MaxBody > s3event.MaxSize {
		cfg.MaxBody = DefaultMaxBody
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pub, err := newPublisher(nc, cfg.Stream, cfg.PublishTimeout)
	if err != nil {
		return nil, err
	}
	cfg.PublishTimeout = pub.timeout
	w := &Webhook{cfg: cfg, pub: pub, log: log.With("component", "bridge webhook"), rejected: map[string]*atomic.Uint64{}}
	for _, r := range rejectReasons {
		w.rejected[r] = new(atomic.Uint64)
	}
	return w, nil
}

// Stats returns the counters so far.
func (w *Webhook) Stats() WebhookStats {
	s := WebhookStats{
		Received: w.received.Load(), Published: w.published.Load(), Duplicates: w.duplicates.Load(),
		Tests: w.tests.Load(), Empty: w.empty.Load(), Unauthorized: w.unauthorized.Load(),
		Unavailable: w.unavailable.Load(), Rejected: map[string]uint64{},
	}
	for r, c := range w.rejected {
		s.Rejected[r] = c.Load()
	}
	return s
}

// ServeHTTP handles one RGW notification. Answers: 200 published (or a test
// event or an empty notification, not published); 400 not a notification;
// 401 token missing or wrong; 405 not POST; 413 too large; 415 not JSON;
// 503 NATS did not take it (RGW retries).
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.received.Add(1)
	log := w.log.With("remote", r.RemoteAddr)
	if !w.admitted(rw, r, log) {
		return
	}
	body, ok := w.readBody(rw, r, log)
	if !ok {
		return
	}
	n, ok := w.publishable(rw, log, body)
	if !ok {
		return
	}
	w.publishNotification(r.Context(), rw, log, body, n)
}

// admitted checks method, token and Content-Type, answering the request
// itself when one is wrong.
func (w *Webhook) admitted(rw http.ResponseWriter, r *http.Request, log *slog.Logger) bool {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		w.reject(rw, log, RejectMethod, http.StatusMethodNotAllowed, "only POST is accepted", nil)
		return false
	}
	if !w.authorized(r) {
		w.unauthorized.Add(1)
		log.Warn("unauthorized request: missing or wrong token (see BRIDGE_TOKEN_FILE)")
		rw.Header().Set("WWW-Authenticate", `Bearer realm="sbps-marshal bridge"`)
		http.Error(rw, "unauthorized", http.StatusUnauthorized)
		return false
	}
	if !jsonMediaType(r.Header.Get("Content-Type")) {
		w.reject(rw, log, RejectContentType, http.StatusUnsupportedMediaType, "Content-Type must be application/json", nil)
		return false
	}
	return true
}

// readBody reads at most MaxBody bytes, answering 413 beyond that.
func (w *Webhook) readBody(rw http.ResponseWriter, r *http.Request, log *slog.Logger) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			w.reject(rw, log, RejectOversized, http.StatusRequestEntityTooLarge, fmt.Sprintf("notification larger than %d bytes", w.cfg.MaxBody), nil)
			return nil, false
		}
		w.reject(rw, log, RejectBodyRead, http.StatusBadRequest, "reading the body failed", err)
		return nil, false
	}
	return body, true
}

// publishable decodes body and says whether it is worth publishing; when
// not (a test event, no records, nothing usable) it answers the request.
func (w *Webhook) publishable(rw http.ResponseWriter, log *slog.Logger, body []byte) (s3event.Notification, bool) {
	n, err := s3event.Decode(body)
	switch {
	case n.Test:
		w.tests.Add(1)
		log.Info("test event received; not published")
		writeText(rw, http.StatusOK, "test event accepted")
		return n, false
	case err != nil && len(n.Records) == 0 && isRecordError(err):
		w.reject(rw, log, RejectBadRecords, http.StatusBadRequest, "no usable record in the notification", err)
		return n, false
	case err != nil && len(n.Records) == 0:
		w.reject(rw, log, RejectUndecodable, http.StatusBadRequest, "not an S3 bucket notification", err)
		return n, false
	case len(n.Records) == 0:
		w.empty.Add(1)
		writeText(rw, http.StatusOK, "notification without records; nothing to publish")
		return n, false
	case err != nil:
		// Some records are usable: publish the message, the agents skip
		// the others.
		log.Warn("notification with unusable records published anyway", "records", len(n.Records), "err", err)
	}
	return n, true
}

// publishNotification publishes body as received and answers 200, or 503
// so that RGW sends it again.
func (w *Webhook) publishNotification(ctx context.Context, rw http.ResponseWriter, log *slog.Logger, body []byte, n s3event.Notification) {
	id := NotificationID(n)
	dup, err := w.pub.publish(ctx, w.cfg.Subject, body, id)
	if err != nil {
		w.unavailable.Add(1)
		log.Warn("NATS did not take the notification; answering 503 so RGW retries", "subject", w.cfg.Subject, "err", err)
		rw.Header().Set("Retry-After", "5")
		http.Error(rw, "NATS unavailable; retry later", http.StatusServiceUnavailable)
		return
	}
	w.published.Add(1)
	if dup {
		w.duplicates.Add(1)
	}
	log.Debug("notification published", "subject", w.cfg.Subject, "records", len(n.Records), "msg_id", id, "duplicate", dup)
	writeText(rw, http.StatusOK, "published")
}

func (w *Webhook) reject(rw http.ResponseWriter, log *slog.Logger, reason string, status int, msg string, err error) {
	w.rejected[reason].Add(1)
	log.Warn("notification rejected", "reason", reason, "status", status, "err", err)
	http.Error(rw, msg, status)
}

// authorized compares the request's token with the configured one in
// constant time. Without a configured token every request is authorized.
func (w *Webhook) authorized(r *http.Request) bool {
	if w.cfg.Token == "" {
		return true
	}
	got := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		got = strings.TrimSpace(h[7:])
	} else if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(w.cfg.Token)) == 1
}

func isRecordError(err error) bool {
	var re *s3event.RecordError
	return errors.As(err, &re)
}

// jsonMediaType accepts application/json, text/json and any +json type.
func jsonMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

func writeText(rw http.ResponseWriter, status int, msg string) {
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(status)
	io.WriteString(rw, msg+"\n")
}

// NotificationID is the Nats-Msg-Id the webhook gives a notification:
// "s3:" and 32 hex digits of SHA-256 over every record's producer, bucket,
// key, event name, ETag, sequencer and event time. A redelivery of the same
// notification (RGW persistent topics retry) has the same id, whatever its
// formatting; two different events differ in at least the sequencer or the
// time.
func NotificationID(n s3event.Notification) string {
	h := sha256.New()
	var l [8]byte
	put := func(s string) {
		binary.BigEndian.PutUint64(l[:], uint64(len(s)))
		h.Write(l[:])
		io.WriteString(h, s)
	}
	for _, rec := range n.Records {
		put(rec.Producer)
		put(rec.Bucket)
		put(rec.Key)
		put(rec.EventName)
		put(rec.ETag)
		put(rec.Sequencer)
		put(rec.Time.UTC().Format(time.RFC3339Nano))
	}
	return "s3:" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Listen listens on addr for the webhook. An address without a host
// (":9588") listens on loopback only; to accept RGW from other hosts name
// the address explicitly ("0.0.0.0:9588") and set a token.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bridge: BRIDGE_LISTEN %q: want host:port: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("bridge: listen on %s (BRIDGE_LISTEN; is another bridge running?): %w", addr, err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends, then shuts down gracefully (requests
// in flight get up to 10 s) and returns nil. It closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bridge: serving the webhook on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bridge: serving the webhook on %s: %w", ln.Addr(), err)
	}
	return nil
}
