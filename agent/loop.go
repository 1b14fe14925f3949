package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// Run is the daemon: every full pass first makes sure LIO holds what
// saveconfig.json holds and saves its live state through the guard
// (ensureLIO), then reconciles; it keeps reconciling until ctx ends: on events
// (coalesced; each batch re-reads only what it names), on the resync timer,
// on Resync requests, and sooner while images are pending. Errors of a pass
// are logged and retried with backoff; they never stop the loop, and an
// event source's outage never stops it.
func (a *Agent) Run(ctx context.Context, ready func()) error {
	l := a.newLoop(ctx, ready)
	defer l.stop()
	w := projector.Work{Full: true, Trigger: "start"}
	for {
		next, ok := l.process(ctx, w)
		if !ok {
			return nil
		}
		if w, ok = l.wait(ctx, next); !ok {
			return nil
		}
	}
}

// loop is Run's state from one pass to the next.
type loop struct {
	a        *Agent
	evs      <-chan events.Event
	watchdog <-chan time.Time
	stopTick func()
	started  func() // READY=1 once (startReady)
	first    bool
	retry    retry
	batch    []events.Event // the events the next pass serves
}

// retry is when to look again after a failed pass, or while images are
// pending or IMS incomplete, and whether the last pass failed: its retry
// is a full pass whatever asked for it.
type retry struct {
	backoff
	failed bool
}

// newLoop starts the event sources, the metrics endpoint and the watchdog
// ticker; stop stops the ticker and tells systemd the agent is stopping.
func (a *Agent) newLoop(ctx context.Context, ready func()) *loop {
	l := &loop{a: a, evs: a.startSources(ctx), stopTick: func() {}, first: true,
		retry: retry{backoff: backoff{min: time.Second, max: a.cfg.ResyncInterval}}}
	a.serveMetrics(ctx)
	if iv, ok := a.notifier.WatchdogInterval(); ok {
		t := time.NewTicker(iv / 2)
		l.watchdog, l.stopTick = t.C, t.Stop
		a.notifier.Watchdog()
	}
	l.started = a.startReady(ready)
	return l
}

func (l *loop) stop() {
	l.stopTick()
	l.a.notifier.Stopping()
}

// startSources merges every event source into one channel until ctx ends.
func (a *Agent) startSources(ctx context.Context) <-chan events.Event {
	evs := make(chan events.Event, 1024)
	go func() {
		if err := events.Merge(ctx, evs, a.sources...); err != nil && ctx.Err() == nil {
			a.log.Error("event sources stopped; continuing with periodic resyncs", "err", err)
		}
	}()
	return evs
}

// serveMetrics serves /metrics, /healthz and /readyz on METRICS_ADDR.
func (a *Agent) serveMetrics(ctx context.Context) {
	if a.cfg.MetricsAddr == "" {
		return
	}
	go func() {
		if err := metrics.Serve(ctx, a.cfg.MetricsAddr, a.metrics.Handler(a.Ready)); err != nil {
			a.log.Error("metrics endpoint stopped", "addr", a.cfg.MetricsAddr, "err", err)
		}
	}()
}

// process runs one pass of w and what follows it: the full pass's
// summary, the events it served, systemd's status and, after the first
// attempt, READY=1. It returns the wait until the next full pass, or false
// once ctx ended.
func (l *loop) process(ctx context.Context, w projector.Work) (time.Duration, bool) {
	a := l.a
	start := time.Now()
	rep, err := a.pass(ctx, w)
	if w.Full && ctx.Err() == nil {
		a.logFullPass(w.Trigger, time.Since(start), rep, err)
	}
	if a.onPass != nil {
		a.onPass(w.Trigger, rep, err)
	}
	l.finishBatch(err)
	if ctx.Err() != nil {
		return 0, false
	}
	next := l.nextResync(w, rep, err)
	a.notifier.Status(a.statusLine(rep, err))
	if l.first {
		// After the first attempt, good or not: systemd must not wait for
		// S3, IMS or the Kubernetes API (startReady).
		l.first = false
		l.started()
	}
	return next, true
}

// finishBatch acknowledges the events the pass served: after a failure
// JetStream delivers them again.
func (l *loop) finishBatch(err error) {
	for _, ev := range l.batch {
		ev.Done(err)
	}
	if len(l.batch) > 0 {
		l.a.metrics.ObserveEvents(l.batch, err)
	}
	l.batch = nil
}

// nextResync is the wait until the next full pass: RESYNC_INTERVAL, less
// while passes fail or images are pending (backing off while it lasts).
func (l *loop) nextResync(w projector.Work, rep *projector.Report, err error) time.Duration {
	a := l.a
	l.retry.failed = err != nil
	next := a.cfg.ResyncInterval
	switch {
	case err != nil:
		next = l.retry.next()
		a.log.Error("pass failed; projections are left as they are", "err", err, "retry_in", next)
	case rep == nil: // node gate closed: look again at the next resync
	default:
		if !w.Full { // a full pass has its summary (logFullPass)
			a.logPass(rep)
		}
		if len(rep.Desired.Pending) > 0 || !rep.Desired.RootfsComplete {
			next = min(next, l.retry.next())
		} else {
			l.retry.reset()
		}
	}
	return next
}

// wait waits for what asks for the next pass: a Resync request, the resync
// timer, or a batch of events that needs one; it pings systemd's watchdog
// meanwhile. It returns false once ctx ended.
func (l *loop) wait(ctx context.Context, next time.Duration) (projector.Work, bool) {
	timer := time.NewTimer(next)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return projector.Work{}, false
		case trigger := <-l.a.resync:
			return projector.Work{Full: true, Trigger: trigger}, true
		case <-timer.C:
			return projector.Work{Full: true, Trigger: "resync timer"}, true
		case <-l.watchdog:
			l.a.notifier.Watchdog()
		case ev := <-l.evs:
			if w, ok := l.take(ctx, ev); ok {
				return w, true
			}
		}
	}
}

// take collects the batch ev starts and asks the reconciler what it needs
// (projector.Reconciler.WorkFor); a batch that needs nothing is
// acknowledged at once.
func (l *loop) take(ctx context.Context, ev events.Event) (projector.Work, bool) {
	a := l.a
	batch := a.collect(ctx, ev, l.evs)
	if a.onBatch != nil {
		a.onBatch(batch)
	}
	w, ok := a.Reconciler.WorkFor(batch)
	if !ok {
		for _, ev := range batch {
			ev.Done(nil)
		}
		a.metrics.IgnoreEvents(batch)
		return w, false
	}
	w.Full = w.Full || l.retry.failed
	l.batch = batch
	return w, true
}

// pass runs one pass of work w behind the node gate, and records it.
func (a *Agent) pass(ctx context.Context, w projector.Work) (*projector.Report, error) {
	kind := metrics.KeysPass
	if w.Full {
		kind = metrics.FullPass
	}
	if open, err := a.beforePass(ctx, w.Full); err != nil || !open {
		a.metrics.ObservePass(kind, nil, err, nil)
		if err != nil {
			a.notReady(err)
		}
		return nil, err
	}
	var rep *projector.Report
	var err error
	if w.Full {
		rep, err = a.Reconciler.Sync(ctx, projector.SyncOptions{Trigger: w.Trigger})
	} else {
		rep, err = a.Reconciler.SyncChanges(ctx, projector.SyncOptions{Trigger: w.Trigger}, w.Changes)
	}
	// A full pass always compares (the first one finds what a killed agent
	// left owed); an event pass only when it changed LIO.
	if rep != nil && (w.Full || len(rep.Results) > 0) {
		err = errors.Join(err, a.sessions.end(ctx, err == nil))
	}
	a.record(ctx, kind, rep, err)
	return rep, err
}

// beforePass applies the node gate (false: closed, no pass) and records
// the LUN map sessions may have seen before the pass can change LIO; after
// it, a changed map resets the sessions (sessions.go).
func (a *Agent) beforePass(ctx context.Context, full bool) (bool, error) {
	open, err := a.applyGate(ctx, full)
	if err != nil || !open {
		return open, err
	}
	return true, a.sessions.begin(ctx)
}

// record keeps a pass's outcome: its status counts, the time of the last
// successful full pass, readiness and metrics, then the report itself.
func (a *Agent) record(ctx context.Context, kind metrics.PassKind, rep *projector.Report, err error) {
	var status func() []projector.Entry
	if rep != nil {
		defer a.lastReport.Store(rep) // once the pass is recorded
		if len(rep.Results) > 0 {
			a.settleSaved()
		}
		status = func() []projector.Entry { return a.statusOf(rep) }
		a.counts = rep.StatusCounts(a.Reconciler.Inventory.Layout, a.cfg.TargetIQN, 1)
		if kind == metrics.FullPass && err == nil {
			a.lastFull.Store(time.Now().UnixNano())
			a.reconcileRegistry(ctx)
		}
	}
	a.metrics.ObservePass(kind, rep, err, status)
	if err != nil {
		a.notReady(err)
	} else if a.lastFull.Load() != 0 {
		a.ready.Store(nil)
	}
}

// A batch of events ends when none came for quietGap, or coalesceWindow
// after its first event, so that a burst applies in one LIO batch while a
// lone event does not wait for the whole window.
const (
	coalesceWindow = 50 * time.Millisecond
	quietGap       = 5 * time.Millisecond
)

func (a *Agent) collect(ctx context.Context, first events.Event, evs <-chan events.Event) []events.Event {
	batch := []events.Event{first}
	deadline := time.NewTimer(coalesceWindow)
	defer deadline.Stop()
	quiet := time.NewTimer(quietGap)
	defer quiet.Stop()
	for len(batch) < 10000 {
		select {
		case ev := <-evs:
			batch = append(batch, ev)
			quiet.Reset(quietGap)
		case <-quiet.C:
			return batch
		case <-deadline.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

func (a *Agent) logPass(rep *projector.Report) {
	counts := a.counts
	a.log.Info("pass done", "duration", rep.Duration.Round(time.Millisecond), "changes", len(rep.Plan.Changes),
		"projected", counts[projector.Projected], "pending", counts[projector.Pending], "rejected", counts[projector.Rejected],
		"held", counts[projector.Held], "foreign", counts[projector.Foreign])
}

// FullPassSummary is the message of the one line the daemon logs per full
// pass (start, resync timer, SIGHUP, `resync --all`, the retry of a failed
// pass), at info when it succeeded or the node gate is closed and at error
// when it failed; `journalctl -u sbps-marshal -g 'full pass summary'`
// finds them. It replaces the old agent's "START SCAN"/"END SCAN" pair.
// Its fields:
//
//   - outcome: success, error or gate_closed (nothing projected);
//   - trigger: what asked for the pass;
//   - duration: from asking the node gate to the end of the pass;
//   - desired, current: projections the inventory wants, and projected
//     after the pass;
//   - created, removed: projections (re)created or mapped, and removed, by
//     this pass, every operation of theirs applied;
//   - held: deletes kept back (IMS incomplete, unconfirmed, pending, the
//     mass-delete guard); failed: LIO operations that failed;
//   - pending, rejected: images not projected, with reasons in
//     `sbps-marshal status`;
//   - err: why it failed.
//
// A pass that failed before planning (S3 unreachable, the gate or
// saveconfig.json unreadable) has no counts. A pass cut short by shutdown
// logs no summary.
const FullPassSummary = "full pass summary"

// logFullPass logs the FullPassSummary line of one full pass.
func (a *Agent) logFullPass(trigger string, d time.Duration, rep *projector.Report, err error) {
	level, outcome := slog.LevelInfo, "success"
	switch {
	case err != nil:
		level, outcome = slog.LevelError, "error"
	case rep == nil:
		outcome = "gate_closed"
	}
	attrs := []any{"outcome", outcome, "trigger", trigger, "duration", d.Round(time.Millisecond)}
	if rep != nil && rep.Plan != nil && rep.Desired != nil {
		created, removed := appliedChanges(rep)
		attrs = append(attrs, "desired", len(rep.Desired.Projections), "current", a.counts[projector.Projected],
			"created", created, "removed", removed, "held", len(rep.Plan.Held), "failed", len(rep.Failed()),
			"pending", a.counts[projector.Pending], "rejected", a.counts[projector.Rejected])
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	a.log.Log(context.Background(), level, FullPassSummary, attrs...)
}

// appliedChanges counts the plan's changes whose operations all reached
// their state: created (create, recreate, map) and removed (delete).
func appliedChanges(rep *projector.Report) (created, removed int) {
	ran, failed := map[string]bool{}, map[string]bool{}
	for _, r := range rep.Results {
		ran[r.Op.Backstore] = true
		if !r.OK() {
			failed[r.Op.Backstore] = true
		}
	}
	for _, c := range rep.Plan.Changes {
		if !ran[c.Name] || failed[c.Name] {
			continue
		}
		switch c.Action {
		case projector.Create, projector.Recreate, projector.Map:
			created++
		case projector.Delete:
			removed++
		}
	}
	return created, removed
}

// reconcileRegistry offers what the local registry handed out during a
// fleet registry outage back to the fleet; disagreements are reported,
// never renumbered.
func (a *Agent) reconcileRegistry(ctx context.Context) {
	if a.fallback == nil || a.fallback.LocalUses() == 0 {
		return
	}
	conflicts, err := a.fallback.Reconcile(ctx)
	if err != nil {
		a.log.Warn("fleet LUN registry still unreachable; local numbers kept", "err", err)
		return
	}
	for _, c := range conflicts {
		a.log.Error("LUN number conflict with the fleet registry; left as it is (sbps-marshal sync --renumber moves it)", "conflict", c.String())
	}
}

// settleSaved reads saveconfig.json once more shortly after a pass wrote
// it, off the event path: the read right after a write cannot trust the
// file's times (lio.SavedFile), so without it the next event's pass would
// read and hash the whole file again (about 6 ms at 10,000 LUNs).
func (a *Agent) settleSaved() {
	saved := a.Reconciler.Saved
	if saved == nil {
		return
	}
	time.AfterFunc(100*time.Millisecond, func() { saved.Load() })
}

// backoff doubles from min to max.
type backoff struct{ min, max, cur time.Duration }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
