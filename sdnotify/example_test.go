package sdnotify_test

import (
	"context"
	"os"
	"time"

	"github.com/sbps-marshal/sbps-marshal/sdnotify"
)

// The agent's main loop: READY=1 once the first reconcile is done, then
// WATCHDOG=1 at half the unit's WatchdogSec while the loop runs.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	n := sdnotify.New(os.Getenv)
	_ = n.Ready() // after the first full reconcile
	_ = n.Status("42 projected, 1 pending, last resync 12s ago")
	var tick <-chan time.Time
	if d, ok := n.WatchdogInterval(); ok {
		t := time.NewTicker(d / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			_ = n.Stopping()
			return
		case <-tick:
			_ = n.Watchdog()
		}
	}
}
