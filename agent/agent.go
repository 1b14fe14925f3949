// Package agent wires the configuration to the clients (S3, IMS, SPIFFE,
// targetcli, NATS, the LUN registry) and runs the reconcile loop: a full
// pass at start, then incremental passes for events (coalesced for 50 ms;
// each re-reads only the keys and images it names), full passes on the
// resync timer, on request (SIGHUP, fleet resync) and sooner while images
// are pending, all behind the node gate, with metrics and systemd
// notification.
//
// Only one pass runs at a time; events and requests that arrive during a
// pass are served by the next one.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/gate"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/registry"
	"github.com/sbps-marshal/sbps-marshal/sdnotify"
	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
)

// Agent is one node's projector with its clients.
type Agent struct {
	cfg        *config.Config
	log        *slog.Logger
	driver     *lio.Driver
	guard      *lio.Guard     // the one writer of saveconfig.json (driver saves to its staging file)
	target     systemctl.Unit // target.service, started when LIO was not restored (SYSTEMCTL_BIN empty: never)
	s3         *bucket.Client
	ims        *ims.Client
	Reconciler *projector.Reconciler

	lastReport atomic.Pointer[projector.Report]
	resync     chan string
	sources    []events.Source
	ownDigest  string                  // digest of saveconfig.json after the agent's latest pass
	counts     map[projector.State]int // status view of the latest pass, by state (Run's goroutine only)

	metrics     *metrics.Metrics
	notifier    *sdnotify.Notifier
	gate        gate.Gate
	fallback    *registry.Fallback // fleet registry with its local fallback, when LUN_REGISTRY resolved to nats
	regChoice   RegistryChoice     // the LUN registry in use, LUN_REGISTRY=auto resolved
	sessions    *sessionGuard      // resets iSCSI sessions when the LUN map changed under them
	closers     []func()           // resources to release on Close
	onPass      func(trigger string, rep *projector.Report, err error)
	onBatch     func(batch []events.Event)
	ready       atomic.Pointer[string] // nil: ready; else why not
	lastFull    atomic.Int64           // unix nanoseconds of the latest successful full pass
	startBudget time.Duration          // READY=1 at the latest this long after Run starts; 0 = StartBudget
}

// Options are dependencies tests and the demo may replace.
type Options struct {
	// TargetcliEnv is added to targetcli's environment (the simulator's node).
	TargetcliEnv []string
	// OnTargetcli, when set, is told when each targetcli process or
	// targetclid request ran (lio.DriverConfig.OnCall).
	OnTargetcli func(start, end time.Time)
	// Token overrides the IMS token source chosen by IMS_AUTH.
	Token ims.TokenSource
	// Lstat overrides how files under the mount are examined (tests model
	// s3fs showing a fresh upload at 0 bytes with it).
	Lstat func(string) (fs.FileInfo, error)
	// Getenv is how systemd's NOTIFY_SOCKET and WATCHDOG_USEC are read;
	// defaults to os.Getenv.
	Getenv func(string) string
	// OnPass, when set, is called after every pass of Run with what
	// triggered it and its outcome (rep is nil when the pass stopped before
	// planning).
	OnPass func(trigger string, rep *projector.Report, err error)
	// OnBatch, when set, is called with each batch of events Run takes,
	// before it decides what they ask for.
	OnBatch func(batch []events.Event)
}

// New builds the agent from a validated configuration.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options) (*Agent, error) {
	s3HTTP, err := httpClientFor(cfg, "S3")
	if err != nil {
		return nil, err
	}
	imsHTTP, err := httpClientFor(cfg, "IMS")
	if err != nil {
		return nil, err
	}
	var creds *aws.Credentials
	if cfg.S3CredentialFile != "" {
		c, err := bucket.LoadCredentialFile(cfg.S3CredentialFile)
		if err != nil {
			return nil, fmt.Errorf("S3_CREDENTIAL_FILE: %w", err)
		}
		creds = &c
	}
	s3, err := bucket.New(ctx, bucket.Config{
		Endpoint:    cfg.S3Proto + "://" + cfg.S3Host,
		Bucket:      cfg.S3Bucket,
		Credentials: creds,
		HTTPClient:  s3HTTP,
		Timeout:     cfg.S3Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client: %w", err)
	}
	imsClient, err := newIMSClient(cfg, log, imsHTTP, o.Token)
	if err != nil {
		return nil, err
	}
	mode, err := lio.ParseMode(cfg.TargetcliMode)
	if err != nil {
		return nil, err
	}
	home := filepath.Join(cfg.StateDir, "targetcli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("creating the private TARGETCLI_HOME: %w", err)
	}
	driver, err := lio.New(lio.DriverConfig{
		Mode:     mode,
		Binary:   cfg.TargetcliBin,
		Socket:   cfg.TargetclidSocket,
		SaveFile: lio.StagingFile(cfg.LIOSaveFile),
		Home:     home,
		Env:      o.TargetcliEnv,
		OnCall:   o.OnTargetcli,
		Timeout:  cfg.TargetcliTimeout,
	}, log)
	if err != nil {
		return nil, err
	}
	guard, err := lio.NewGuard(driver, cfg.LIOSaveFile, cfg.TargetIQN)
	if err != nil {
		return nil, err
	}
	auth, err := NewNATSAuth(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			auth.Close()
		}
	}()
	sources, err := eventSources(cfg, log, guard.Saved(), auth)
	if err != nil {
		return nil, err
	}
	g, err := gate.Parse(cfg.Gate, cfg.NodeName, cfg.KubectlBin, cfg.Kubeconfig, log)
	if err != nil {
		return nil, fmt.Errorf("GATE: %w", err)
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	m := metrics.New()
	m.CollectLIOStats(driver.Stats)
	for _, src := range sources {
		switch src := src.(type) {
		case *events.NATSSource:
			m.CollectEventStats(src.Stats)
			m.CollectNATSConnected(src.Connected)
		case *events.Watcher:
			m.CollectEventStats(src.Stats)
		}
	}
	reg, fallback, closeReg, choice, err := lunRegistry(ctx, cfg, log, m, auth)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !built {
			closeReg()
		}
	}()
	layout := projector.Layout{Bucket: cfg.S3Bucket, Mount: cfg.Mount, PEPrefix: cfg.PEPrefix}
	a := &Agent{
		cfg: cfg, log: log, driver: driver, guard: guard, target: targetService(cfg), s3: s3, ims: imsClient,
		resync: make(chan string, 1), sources: sources,
		metrics: m, notifier: sdnotify.New(getenv), gate: g, fallback: fallback, regChoice: choice, closers: []func(){closeReg, auth.Close}, onPass: o.OnPass, onBatch: o.OnBatch,
		Reconciler: &projector.Reconciler{
			Inventory: &projector.Inventory{Objects: s3, Images: imsClient, Layout: layout, Tagging: cfg.IMSTagging, Lstat: o.Lstat},
			LIO:       m.InstrumentApplier(guard),
			SaveFile:  cfg.LIOSaveFile,
			Saved:     guard.Saved(),
			Plan: projector.PlanOptions{
				Target:            cfg.TargetIQN,
				TPG:               1,
				MaxDeleteFraction: cfg.MaxDeleteFraction,
				AllowWritableTPG:  cfg.AllowWritableTPG,
			},
			Logger:   log,
			Registry: reg,
		},
	}
	a.sessions = newSessionGuard(a)
	notReady := "first full reconcile not done"
	a.ready.Store(&notReady)
	m.CollectReady(a.Ready)
	m.SetResyncInterval(cfg.ResyncInterval)
	built = true
	return a, nil
}

// Metrics exposes the agent's metrics (for the HTTP endpoint and tests).
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }

// Ready is nil once the first full reconcile is done and the latest pass
// succeeded; otherwise it says why not.
func (a *Agent) Ready() error {
	if why := a.ready.Load(); why != nil {
		return errors.New(*why)
	}
	return nil
}

// Close releases the agent's resources.
func (a *Agent) Close() error {
	for _, c := range a.closers {
		c()
	}
	return a.driver.Close()
}

// Driver exposes the targetcli driver (for its counters).
func (a *Agent) Driver() *lio.Driver { return a.driver }

// LastReport returns the outcome of the latest pass, or nil.
func (a *Agent) LastReport() *projector.Report { return a.lastReport.Load() }

// Resync asks the running loop for a full pass now. It never blocks. A
// request still queued is replaced: one pass serves both, and it is
// logged under the latest requester.
func (a *Agent) Resync(trigger string) {
	for {
		select {
		case a.resync <- trigger:
			return
		default:
			select {
			case <-a.resync:
			default:
			}
		}
	}
}

// Status runs a dry pass and returns the status view.
func (a *Agent) Status(ctx context.Context) ([]projector.Entry, *projector.Report, error) {
	rep, err := a.Reconciler.Sync(ctx, projector.SyncOptions{DryRun: true, Trigger: "status"})
	if err != nil {
		return nil, nil, err
	}
	return a.statusOf(rep), rep, nil
}

func (a *Agent) statusOf(rep *projector.Report) []projector.Entry {
	return rep.Status(a.Reconciler.Inventory.Layout, a.cfg.TargetIQN, 1)
}

// SyncOnce runs one full pass. Unless it is a dry run it obeys the node
// gate: closed, it disables tpg1 and projects nothing.
func (a *Agent) SyncOnce(ctx context.Context, o projector.SyncOptions) (*projector.Report, error) {
	if !o.DryRun {
		open, err := a.applyGate(ctx, false) // `sync` saves through the guard itself first
		if err != nil {
			return nil, err
		}
		if !open {
			return nil, fmt.Errorf("node gate (GATE=%s) is closed: tpg1 is disabled and nothing is projected", a.cfg.Gate)
		}
		if err := a.sessions.begin(ctx); err != nil {
			return nil, err
		}
	}
	rep, err := a.Reconciler.Sync(ctx, o)
	if rep != nil {
		a.lastReport.Store(rep)
		if !o.DryRun {
			err = errors.Join(err, a.sessions.end(ctx, err == nil))
		}
	}
	return rep, err
}

// Run is the daemon: every full pass first makes sure LIO holds what
// saveconfig.json holds and saves its live state through the guard
// (ensureLIO), then reconciles; it keeps reconciling until ctx ends: on events
// (coalesced; each batch re-reads only what it names), on the resync timer,
// on Resync requests, and sooner while images are pending. Errors of a pass
// are logged and retried with backoff; they never stop the loop, and an
// event source's outage never stops it.
func (a *Agent) Run(ctx context.Context, ready func()) error {
	evs := make(chan events.Event, 1024)
	go func() {
		if err := events.Merge(ctx, evs, a.sources...); err != nil && ctx.Err() == nil {
			a.log.Error("event sources stopped; continuing with periodic resyncs", "err", err)
		}
	}()
	if a.cfg.MetricsAddr != "" {
		go func() {
			if err := metrics.Serve(ctx, a.cfg.MetricsAddr, a.metrics.Handler(a.Ready)); err != nil {
				a.log.Error("metrics endpoint stopped", "addr", a.cfg.MetricsAddr, "err", err)
			}
		}()
	}
	defer a.notifier.Stopping()
	watchdog := make(<-chan time.Time)
	if iv, ok := a.notifier.WatchdogInterval(); ok {
		t := time.NewTicker(iv / 2)
		defer t.Stop()
		watchdog = t.C
		a.notifier.Watchdog()
	}
	started := a.startReady(ready)
	backoff := newBackoff(time.Second, a.cfg.ResyncInterval)
	w := work{full: true, trigger: "start"}
	var batch []events.Event
	first := true
	for {
		passStart := time.Now()
		rep, err := a.pass(ctx, w)
		if w.full && ctx.Err() == nil {
			a.logFullPass(w.trigger, time.Since(passStart), rep, err)
		}
		if a.onPass != nil {
			a.onPass(w.trigger, rep, err)
		}
		for _, ev := range batch {
			ev.Done(err)
		}
		if len(batch) > 0 {
			a.metrics.ObserveEvents(batch, err)
		}
		batch = nil
		next := a.cfg.ResyncInterval
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			next = backoff.next()
			a.log.Error("pass failed; projections are left as they are", "err", err, "retry_in", next)
		case rep == nil: // node gate closed: look again at the next resync
		default:
			if !w.full { // a full pass has its summary (logFullPass)
				a.logPass(rep)
			}
			if len(rep.Desired.Pending) > 0 || !rep.Desired.RootfsComplete {
				// Look again soon, backing off while it lasts.
				next = min(next, backoff.next())
			} else {
				backoff.reset()
			}
		}
		a.notifier.Status(a.statusLine(rep, err))
		if first {
			// After the first attempt, good or not: systemd must not wait
			// for S3, IMS or the Kubernetes API (startReady).
			first = false
			started()
		}
		timer := time.NewTimer(next)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil
			case trigger := <-a.resync:
				w = work{full: true, trigger: trigger}
			case <-timer.C:
				w = work{full: true, trigger: "resync timer"}
			case <-watchdog:
				a.notifier.Watchdog()
				continue
			case ev := <-evs:
				batch = a.collect(ctx, ev, evs)
				if a.onBatch != nil {
					a.onBatch(batch)
				}
				var ok bool
				if w, ok = a.workFor(batch); !ok {
					for _, ev := range batch {
						ev.Done(nil)
					}
					a.metrics.IgnoreEvents(batch)
					batch = nil
					continue
				}
				if err != nil {
					// The last pass failed: its retry is a full pass.
					w.full = true
				}
			}
			timer.Stop()
			break wait
		}
	}
}

// pass runs one pass of work w behind the node gate, and records it.
func (a *Agent) pass(ctx context.Context, w work) (*projector.Report, error) {
	kind := metrics.KeysPass
	if w.full {
		kind = metrics.FullPass
	}
	if open, err := a.applyGate(ctx, w.full); err != nil || !open {
		a.metrics.ObservePass(kind, nil, err, nil)
		if err != nil {
			a.notReady(err)
		}
		return nil, err
	}
	// The LUN map sessions may have seen is recorded before the pass can
	// change LIO; after it, a changed map resets the sessions (sessions.go).
	if err := a.sessions.begin(ctx); err != nil {
		a.metrics.ObservePass(kind, nil, err, nil)
		a.notReady(err)
		return nil, err
	}
	var rep *projector.Report
	var err error
	if w.full {
		rep, err = a.Reconciler.Sync(ctx, projector.SyncOptions{Trigger: w.trigger})
	} else {
		rep, err = a.Reconciler.SyncChanges(ctx, projector.SyncOptions{Trigger: w.trigger}, w.changes)
	}
	// A full pass always compares (the first one finds what a killed agent
	// left owed); an event pass only when it changed LIO.
	if rep != nil && (w.full || len(rep.Results) > 0) {
		err = errors.Join(err, a.sessions.end(ctx, err == nil))
	}
	var status func() []projector.Entry
	if rep != nil {
		defer a.lastReport.Store(rep) // once the pass is recorded
		if len(rep.Results) > 0 {
			a.settleSaved()
		}
		if rep.AfterDigest != "" {
			a.ownDigest = rep.AfterDigest
		}
		status = func() []projector.Entry { return a.statusOf(rep) }
		a.counts = rep.StatusCounts(a.Reconciler.Inventory.Layout, a.cfg.TargetIQN, 1)
		if w.full && err == nil {
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
	return rep, err
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

// applyGate asks the node gate whether this node serves images, and makes
// tpg1 follow: disabled while closed (nothing is projected), enabled when
// open. When the gate cannot answer, LIO stays as it is and the pass is
// skipped. With full, LIO's live state is checked and saved first
// (ensureLIO): a node whose LIO was not restored is not reconciled.
func (a *Agent) applyGate(ctx context.Context, full bool) (bool, error) {
	open, why, err := a.gate.Open(ctx)
	a.metrics.SetGate(open, err)
	if err != nil {
		return false, fmt.Errorf("node gate (GATE=%s) cannot answer, leaving LIO as it is: %w", a.cfg.Gate, err)
	}
	if full {
		if err := a.ensureLIO(ctx, open); err != nil {
			return false, err
		}
	}
	rep, err := a.Reconciler.Gate(ctx, open, why)
	if rep != nil && !rep.Plan.Empty() {
		a.log.Warn("node gate changed; switching tpg1", "open", open, "why", why)
		a.metrics.ObserveChanges(rep)
	} else if err == nil && !open {
		a.log.Info("node gate closed; projecting nothing", "why", why)
	}
	return open, err
}

// statusLine is what `systemctl status` shows.
func (a *Agent) statusLine(rep *projector.Report, err error) string {
	last := "never"
	if t := a.lastFull.Load(); t != 0 {
		last = time.Since(time.Unix(0, t)).Round(time.Second).String() + " ago"
	}
	if rep == nil {
		if err != nil {
			return "pass failed (" + trimTo(err.Error(), 120) + "); last full resync " + last
		}
		return "node gate closed; projecting nothing"
	}
	counts := a.counts
	line := fmt.Sprintf("%d projected, %d pending, %d rejected; last full resync %s", counts[projector.Projected], counts[projector.Pending], counts[projector.Rejected], last)
	if err != nil {
		line += "; last pass failed: " + trimTo(err.Error(), 80)
	}
	return line
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func trimTo(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// work is what one pass must do.
type work struct {
	full    bool   // a full pass (listings)
	trigger string // for the logs
	// changes are the PE keys and IMS images to read again.
	changes projector.Changes
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

// workFor decides what a batch of events asks for. ok=false means nothing:
// the watcher reporting the agent's own save, or S3 keys nobody uses.
func (a *Agent) workFor(batch []events.Event) (w work, ok bool) {
	w.trigger = describe(batch)
	drift := false
	for _, ev := range batch {
		switch ev.Kind {
		case events.Resync:
			w.full = true
		case events.S3Object:
			key := ev.S3.Key
			if strings.HasPrefix(key, a.cfg.PEPrefix) {
				w.changes.PEKeys = appendNew(w.changes.PEKeys, key)
				continue
			}
			// IMS wrote <id>/manifest.json: read that image (one GET, no
			// listing), maybe tagged already. Never a reason to delete:
			// the images using the manifest are only refreshed.
			if id, ok := ims.ManifestKeyID(key); ok {
				w.changes.Refresh = appendNew(w.changes.Refresh, id)
				for _, id := range a.Reconciler.ImagesUsing(key) {
					w.changes.Refresh = appendNew(w.changes.Refresh, id)
				}
				continue
			}
			for _, id := range a.Reconciler.ImagesUsing(key) {
				w.changes.Images = appendNew(w.changes.Images, id)
			}
		case events.IMSImage:
			w.changes.Images = appendNew(w.changes.Images, ev.IMS.ID)
		case events.LIOChanged:
			if ev.Digest != a.ownDigest && !a.savedIsOwn() {
				drift = true
			}
		}
	}
	return w, w.full || drift || len(w.changes.PEKeys)+len(w.changes.Images)+len(w.changes.Refresh) > 0
}

// savedIsOwn reports whether saveconfig.json holds, now, what the agent's
// latest pass saved. The watcher reads the file some time after it changes:
// by the time its event is handled, a later pass may have saved again, and
// the content it reported (an earlier save of the agent's own) is gone.
// Only what is on disk now can need a repair.
func (a *Agent) savedIsOwn() bool {
	if a.Reconciler.Saved == nil || a.ownDigest == "" {
		return false
	}
	_, digest, err := a.Reconciler.Saved.Load()
	return err == nil && digest == a.ownDigest
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// describe names what caused a pass: the first event that asks for one
// (an outside LIO change only when nothing else does), and how many more.
func describe(batch []events.Event) string {
	if len(batch) == 0 {
		return ""
	}
	lead := batch[0]
	for _, ev := range batch {
		if ev.Kind != events.LIOChanged {
			lead = ev
			break
		}
	}
	if len(batch) == 1 {
		return lead.String()
	}
	return fmt.Sprintf("%s and %d more event(s)", lead.String(), len(batch)-1)
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

func eventSources(cfg *config.Config, log *slog.Logger, saved *lio.SavedFile, auth *NATSAuth) ([]events.Source, error) {
	w, err := events.NewWatcher(events.WatcherConfig{Path: cfg.LIOSaveFile, Saved: saved}, log)
	if err != nil {
		return nil, fmt.Errorf("saveconfig.json watcher: %w", err)
	}
	sources := []events.Source{w}
	if len(cfg.NATSURL) == 0 {
		return sources, nil
	}
	n, err := natsSource(cfg, log, auth)
	if err != nil {
		return nil, err
	}
	return append(sources, n), nil
}

// natsSource is the NATS event source of the configuration.
func natsSource(cfg *config.Config, log *slog.Logger, auth *NATSAuth) (*events.NATSSource, error) {
	nc := events.NATSConfig{
		URLs:      cfg.NATSURL,
		S3Subject: cfg.NATSS3Subject, IMSSubject: cfg.NATSIMSSubject, ResyncSubject: cfg.NATSResyncSubject, Stream: cfg.NATSStream,
		NodeName: cfg.NodeName, Bucket: cfg.S3Bucket, Auth: auth.Auth(),
	}
	n, err := events.NewNATS(nc, log)
	if err != nil {
		return nil, fmt.Errorf("NATS: %w", err)
	}
	return n, nil
}

// NewIMSClient builds the IMS client the configuration describes
// (API_GATEWAY, IMS_URI, IMS_AUTH, CA_FILE, IMS_TIMEOUT), as the agent uses it.
func NewIMSClient(cfg *config.Config, log *slog.Logger) (*ims.Client, error) {
	httpClient, err := httpClientFor(cfg, "IMS")
	if err != nil {
		return nil, err
	}
	return newIMSClient(cfg, log, httpClient, nil)
}

func newIMSClient(cfg *config.Config, log *slog.Logger, hc *http.Client, token ims.TokenSource) (*ims.Client, error) {
	if token == nil {
		var err error
		if token, err = tokenSource(cfg, log); err != nil {
			return nil, err
		}
	}
	c, err := ims.New(ims.Config{BaseURL: cfg.APIGateway + "/" + cfg.IMSURI, HTTPClient: hc, Token: token, Timeout: cfg.IMSTimeout})
	if err != nil {
		return nil, fmt.Errorf("IMS client: %w", err)
	}
	return c, nil
}

func tokenSource(cfg *config.Config, log *slog.Logger) (ims.TokenSource, error) {
	switch cfg.IMSAuth {
	case "none":
		return ims.NoToken{}, nil
	case "token-file":
		return ims.TokenFile(cfg.IMSTokenFile), nil
	}
	xname, err := svid.ReadXName(cfg.XNameFile)
	if err != nil {
		log.Warn("no xname; only the node-independent SPIFFE ID is accepted", "err", err)
		xname = ""
	}
	cli, err := SPIFFECLI(cfg, log, "IMS")
	if err != nil {
		return nil, err
	}
	return svid.NewJWTSource(svid.JWTConfig{Socket: cfg.SpireAgentSock, Audience: cfg.SpireJWTAudience, XName: xname, Logger: log, CLI: cli}), nil
}

// SPIFFECLI is the SPIRE agent CLI the SVID sources run, or nil when they
// call the Workload API themselves, as SPIFFE_SOURCE and SPIRE_AGENT_PATH
// decide; the choice and its reason are logged (for names what the SVID
// is for).
func SPIFFECLI(cfg *config.Config, log *slog.Logger, what string) (*svid.CLI, error) {
	source, why, err := svid.Resolve(cfg.SPIFFESource, cfg.SpireAgentPath)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE_SOURCE: %w", err)
	}
	log.Info("SPIFFE source", "for", what, "source", source, "why", why)
	if source != svid.SourceCLI {
		return nil, nil
	}
	return &svid.CLI{Path: cfg.SpireAgentPath, Socket: cfg.SpireAgentSock}, nil
}

// httpClientFor returns the HTTP client for IMS or S3: certificates
// verified against the system pool plus CA_FILE, unless
// TLS_INSECURE_SKIP_VERIFY=true; a verification failure names the host,
// the certificate's issuer and the fix.
func httpClientFor(cfg *config.Config, service string) (*http.Client, error) {
	o := tlsconf.Options{Service: service, CAFile: cfg.CAFile, InsecureSkipVerify: cfg.TLSInsecure}
	if service == "S3" {
		o.Alternative = "S3_PROTO=http, as the s3fs mount of " + cfg.S3Bucket + " itself uses (url=http://" + cfg.S3Host + ")"
	}
	return tlsconf.Client(o)
}

// backoff doubles from min to max.
type backoff struct{ min, max, cur time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
