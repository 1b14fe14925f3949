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
//
// wiring.go builds the agent (New); loop.go is the loop (Run: wait, pass,
// record); what events ask for is the projector's to say
// (projector.Reconciler.WorkFor).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sbps-marshal/sbps-marshal/bucket"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/gate"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/registry"
	"github.com/sbps-marshal/sbps-marshal/sdnotify"
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
