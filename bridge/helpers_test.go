package bridge

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
)

const (
	testStream = "SBPS"
	s3Subject  = events.DefaultS3Subject
	imsSubject = events.DefaultIMSSubject
)

// connect connects with reconnects forever and no reconnect buffer, as
// bridgeMain does.
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ensureStream creates the stream the agents use and returns it.
func ensureStream(t *testing.T, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := events.EnsureStream(t.Context(), js, testStream, []string{s3Subject, imsSubject})
	if err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return st
}

// streamMsgs returns how many messages the stream holds.
func streamMsgs(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// subscribe collects the messages of subject.
func subscribe(t *testing.T, nc *nats.Conn, subject string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// waitConnected waits until nc is connected again.
func waitConnected(t *testing.T, nc *nats.Conn) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the NATS connection back", func() error {
		if !nc.IsConnected() {
			return context.DeadlineExceeded
		}
		return nil
	})
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	return ctx, cancel
}
