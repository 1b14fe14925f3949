package agent

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/bridge"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// jetStreamStack is a stack whose NATS has the SBPS stream, and a
// connection to it.
func jetStreamStack(t *testing.T) (*rig.Stack, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := startStack(t)
	nc, js := streamOn(t, s)
	return s, nc, js
}

// streamOn connects to the stack's NATS (reconnecting across restarts) and
// makes sure the SBPS stream holds the S3 and IMS subjects.
func streamOn(t *testing.T, s *rig.Stack) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.NATS.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(t.Context(), js, "SBPS", []string{"sbps.s3.events", "sbps.ims.events"}); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// runAgent runs a until the test ends (or stop is called) and waits for its
// first pass.
func runAgent(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- a.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent stopped before its first pass: %v", err)
	}
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestIMSBridgeDrivesProjection: `sbps-marshal bridge ims` sees a tag and an
// untag in IMS and publishes them; the agent projects and removes the image
// on those events alone (no resync timer).
func TestIMSBridgeDrivesProjection(t *testing.T) {
	ctx := t.Context()
	s, nc, _ := jetStreamStack(t)
	img, err := s.AddImage(ctx, "cos-bridge", []byte("rootfs seen through the IMS bridge"), false)
	if err != nil {
		t.Fatal(err)
	}
	env := append(s.AgentEnv(), "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS")
	cfg, _, err := config.Load(config.Sources{Environ: env}, flag.NewFlagSet("bridge", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewIMSClient(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	poller, err := bridge.NewIMSPoller(nc, client, bridge.NewFileStore(filepath.Join(t.TempDir(), "bridge.json")),
		bridge.IMSConfig{Subject: "sbps.ims.events", Stream: "SBPS", Source: "test bridge"}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := poller.PollOnce(ctx); err != nil { // first run: the snapshot
		t.Fatal(err)
	}
	a := newAgent(t, s, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS")
	runAgent(t, a)
	waitLUNs(t, s, "untagged: nothing")
	lists := a.ims.Stats().Lists

	s.IMS.Tag(img.ID)
	if res, err := poller.PollOnce(ctx); err != nil {
		t.Fatalf("poll after tagging: %v (%+v)", err, res)
	}
	waitLUNs(t, s, "tagged through the bridge", rootfsID(img))

	s.IMS.Untag(img.ID)
	if _, err := poller.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	waitLUNs(t, s, "untagged through the bridge")
	if n := a.ims.Stats().Lists - lists; n != 0 {
		t.Errorf("the agent listed IMS %d times; the events alone should have driven it (GET per image)", n)
	}
}

// TestAgentCatchesUpAfterDowntime: events published while the agent is
// stopped wait in its durable consumer and are delivered on restart.
func TestAgentCatchesUpAfterDowntime(t *testing.T) {
	ctx := t.Context()
	s, _, js := jetStreamStack(t)
	env := []string{"SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS"}
	first := newAgent(t, s, env...)
	stop := runAgent(t, first)
	stop()

	var keys []string
	for i := range 3 {
		key, err := s.PutPE(ctx, fmt.Sprintf("while-down-%d.squashfs", i), []byte(fmt.Sprintf("uploaded while the agent was down %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	cons, err := js.Consumer(ctx, "SBPS", events.ConsumerPrefix+s.NodeName)
	if err != nil {
		t.Fatalf("the stopped agent's durable consumer: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, "the 3 uploads waiting in the stopped agent's consumer", func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending < 3 {
			return fmt.Errorf("pending %d", info.NumPending)
		}
		return nil
	})

	second := newAgent(t, s, env...)
	runAgent(t, second)
	waitLUNs(t, s, "after restart", peID(keys[0]), peID(keys[1]), peID(keys[2]))
	testutil.WaitFor(t, 20*time.Second, "every missed event delivered and acknowledged", func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		}
		return nil
	})
}
