package events

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Signals emits a Resync event (Source and Reason "SIGHUP") for every
// SIGHUP until ctx ends, then returns nil. SIGHUPs that arrive while an
// event is still waiting to be taken collapse into it. SIGTERM and SIGINT
// are not touched (main's context handles them).
func Signals(ctx context.Context, out chan<- Event) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
			ev := Event{Kind: Resync, Source: "SIGHUP", Reason: "SIGHUP", Received: time.Now()}
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
