package events

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

func TestSignalsSIGHUPIsResync(t *testing.T) {
	// Keep the test process alive whatever the timing: with a Notify of
	// our own, SIGHUP never terminates it.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(guard) })

	r := run(t, SourceFunc(Signals), 4)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Signals may not have called Notify yet: send until it reports.
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-r.out:
			if ev.Kind != Resync || ev.Source != "SIGHUP" || ev.Reason != "SIGHUP" || ev.Received.IsZero() {
				t.Errorf("event = %+v, want a Resync from SIGHUP", ev)
			}
			ev.Done(nil) // no-op
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no Resync within 10s of SIGHUP")
		}
	}
}
