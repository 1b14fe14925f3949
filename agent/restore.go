package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
)

// targetService is the unit that restores saveconfig.json into the kernel
// (TARGET_SERVICE, through SYSTEMCTL_BIN); a zero Unit when SYSTEMCTL_BIN
// is empty (never started).
func targetService(cfg *config.Config) systemctl.Unit {
	if cfg.SystemctlBin == "" {
		return systemctl.Unit{}
	}
	return systemctl.Unit{Bin: cfg.SystemctlBin, Name: cfg.TargetService, Timeout: cfg.TargetServiceTimeout}
}

// ensureLIO saves LIO's live state through the guard, which refuses when
// live state lost what saveconfig.json holds: LIO was not restored
// (target.service stopped, failed, or not yet run at boot). Then, on a
// labelled node (open), it does what the old agent did: when `systemctl
// is-active target.service` is not active, `systemctl start
// target.service` (which restores the file into the kernel), and waits
// until LIO holds it. An error names the condition and the fix; the pass
// is not run.
func (a *Agent) ensureLIO(ctx context.Context, open bool) error {
	err := a.guard.Save(ctx)
	if err == nil || !errors.Is(err, lio.ErrNotRestored) {
		return err
	}
	unit := a.target
	if !open {
		return fmt.Errorf("%w (node gate closed: %s is not started for an unlabelled node)", err, a.cfg.TargetService)
	}
	if unit.Name == "" {
		return fmt.Errorf("%w (SYSTEMCTL_BIN is empty: the agent does not start %s itself)", err, a.cfg.TargetService)
	}
	state, serr := unit.IsActive(ctx)
	if serr != nil {
		return fmt.Errorf("%w; asking systemd about %s failed: %v", err, unit.Name, serr)
	}
	if state == systemctl.Active {
		return fmt.Errorf("%w; %s is active but LIO does not hold what it restores: restart it (`systemctl restart %s`) or restore the file with `targetctl restore %s`",
			err, unit.Name, unit.Name, a.cfg.LIOSaveFile)
	}
	a.log.Warn("LIO was not restored; starting the unit that restores it, as the old agent did", "unit", unit.Name, "state", string(state), "err", err)
	a.notifier.Status(fmt.Sprintf("LIO not restored (%s is %s): starting it", unit.Name, state))
	if serr := unit.Start(ctx); serr != nil {
		return fmt.Errorf("%w; %s was %s and starting it failed: %v", err, unit.Name, state, serr)
	}
	// target.service is a oneshot: LIO should hold the file once start
	// returns. Look until it does, for at most the unit's timeout.
	deadline := time.Now().Add(max(unit.Timeout, time.Second))
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err = a.guard.Save(ctx)
		if err == nil {
			a.log.Info("LIO restored", "unit", unit.Name)
			return nil
		}
		if !errors.Is(err, lio.ErrNotRestored) || time.Now().After(deadline) {
			break
		}
		a.notifier.Watchdog() // waiting on target.service is progress, not a hang
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(wait):
		}
	}
	if errors.Is(err, lio.ErrNotRestored) {
		return fmt.Errorf("%w; %s was started but LIO still does not hold the file: see `systemctl status %s` and `journalctl -u %s`", err, unit.Name, unit.Name, unit.Name)
	}
	return err
}

// notReady records why projections are not current, for /readyz,
// sbps_marshal_ready and STATUS=.
func (a *Agent) notReady(err error) {
	why := "latest pass failed: " + err.Error()
	if a.lastFull.Load() == 0 {
		why = "first full reconcile not done: " + err.Error()
	}
	a.ready.Store(&why)
}

// SaveLive saves LIO's live state to saveconfig.json through the guard
// (`sbps-marshal sync` before its pass): refused, with the reason, when
// live state lost what the file holds.
func (a *Agent) SaveLive(ctx context.Context) error { return a.guard.Save(ctx) }

// LIOCondition says whether LIO's live state holds what saveconfig.json
// holds, without writing the file: nil, or the condition and the fix
// (`sbps-marshal status`).
func (a *Agent) LIOCondition(ctx context.Context) error { return a.guard.Check(ctx) }

// StartBudget is how long after Run starts READY=1 is sent at the latest,
// even while the first pass is still running (waiting on S3, IMS, the
// Kubernetes API or target.service): well under the unit's
// TimeoutStartSec, so that an outage at boot neither gets the agent killed
// and restarted in a loop nor makes `systemctl enable --now` hang.
const StartBudget = 60 * time.Second

// startReady sends READY=1 (and calls ready) once: when the returned
// function is called after the first pass attempt, or StartBudget after
// now, whichever comes first.
func (a *Agent) startReady(ready func()) func() {
	var sent atomic.Bool
	send := func(why string) {
		if sent.Swap(true) {
			return
		}
		if why != "" {
			a.notifier.Status(why)
		}
		a.notifier.Ready()
		if ready != nil {
			ready()
		}
	}
	budget := a.startBudget
	if budget <= 0 {
		budget = StartBudget
	}
	t := time.AfterFunc(budget, func() {
		a.log.Warn("first pass still running; telling systemd the agent is up", "after", budget)
		send("first pass still running after " + budget.String() + "; not ready (see /readyz)")
	})
	return func() {
		t.Stop()
		send("")
	}
}
