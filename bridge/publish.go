package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable means NATS (or the JetStream stream) did not take a
// message: not connected, too slow, or the stream refused it. The webhook
// answers 503 for it so that RGW retries; the IMS poller retries on its next
// poll.
var ErrUnavailable = errors.New("bridge: NATS unavailable")

// DefaultPublishTimeout bounds one publish: the flush on core NATS, the
// stream's acknowledgement with JetStream.
const DefaultPublishTimeout = 5 * time.Second

// publisher publishes one message to core NATS (publish, then flush so the
// server has it) or, with a stream, to JetStream (waiting for the stream's
// acknowledgement). Safe for concurrent use.
type publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream // nil: core NATS
	stream  string
	timeout time.Duration
}

func newPublisher(nc *nats.Conn, stream string, timeout time.Duration) (*publisher, error) {
	if nc == nil {
		return nil, errors.New("bridge: no NATS connection: set NATS_URL")
	}
	if timeout <= 0 {
		timeout = DefaultPublishTimeout
	}
	p := &publisher{nc: nc, stream: stream, timeout: timeout}
	if stream != "" {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("bridge: JetStream context: %w", err)
		}
		p.js = js
	}
	return p, nil
}

// publish sends data to subject with msgID as Nats-Msg-Id (when not empty)
// and returns once NATS has it. dup reports that the stream already held a
// message with that id (JetStream only). Errors wrap ErrUnavailable.
func (p *publisher) publish(ctx context.Context, subject string, data []byte, msgID string) (dup bool, err error) {
	if !p.nc.IsConnected() {
		return false, fmt.Errorf("%w: not connected (status %s); it reconnects by itself", ErrUnavailable, p.nc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if p.js == nil {
		if msgID != "" {
			msg.Header.Set(jetstream.MsgIDHeader, msgID)
		}
		if err := p.nc.PublishMsg(msg); err != nil {
			return false, fmt.Errorf("%w: publish to %s: %w", ErrUnavailable, subject, err)
		}
		if err := p.nc.FlushWithContext(ctx); err != nil {
			return false, fmt.Errorf("%w: flush to %s: %w", ErrUnavailable, subject, err)
		}
		return false, nil
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(p.stream)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := p.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return false, fmt.Errorf("%w: JetStream stream %s did not acknowledge %s (does the stream exist and hold the subject?): %w", ErrUnavailable, p.stream, subject, err)
	}
	return ack.Duplicate, nil
}
