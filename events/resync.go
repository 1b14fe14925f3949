package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
)

// maxWho bounds the requester name carried in a fleet resync request.
const maxWho = 128

// resyncRequest is the body of a fleet resync request. Any message on the
// resync subject requests a resync; this body only names who asked.
type resyncRequest struct {
	Who  string    `json:"who"`
	Time time.Time `json:"time"`
}

// PublishResync asks every agent listening on subject (DefaultResyncSubject
// when empty) for a full resync, naming who asked, and waits until the
// server has the request (or ctx ends). Used by `sbps-marshal resync --all`.
// Agents that are down at the time resync on start anyway.
func PublishResync(ctx context.Context, nc *nats.Conn, subject, who string) error {
	if subject == "" {
		subject = DefaultResyncSubject
	}
	if !validSubject(subject) {
		return fmt.Errorf("events: resync subject %q is not a NATS subject", subject)
	}
	if nc == nil {
		return errors.New("events: PublishResync needs a NATS connection")
	}
	// An ended context publishes nothing: FlushWithContext alone may still
	// see the server's answer first and report success.
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("events: resync request on %s not sent: %w", subject, err)
	}
	data, err := json.Marshal(resyncRequest{Who: cleanWho(who), Time: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("events: encode resync request: %w", err)
	}
	if err := nc.Publish(subject, data); err != nil {
		return fmt.Errorf("events: publish resync request on %s: %w", subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("events: resync request on %s not confirmed by the NATS server: %w; check NATS_URL and retry", subject, err)
	}
	return nil
}

// resyncWho names the requester of a resync message: the "who" of a JSON
// request, else the text itself, cleaned for logging.
func resyncWho(data []byte) string {
	var r resyncRequest
	if json.Unmarshal(data, &r) == nil && r.Who != "" {
		return cleanWho(r.Who)
	}
	return cleanWho(string(data))
}

// cleanWho keeps printable characters, at most maxWho bytes; "" is
// "unknown".
func cleanWho(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxWho {
		s = strings.ToValidUTF8(s[:maxWho], "")
	}
	if s == "" {
		return "unknown"
	}
	return s
}
