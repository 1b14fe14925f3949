package metrics

import (
	"context"
	"errors"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/internal/version"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

const namespace = "sbps_marshal"

// PassKind names the kind of a reconcile pass: the kind label of
// sbps_marshal_pass_duration_seconds and sbps_marshal_passes_total.
type PassKind string

const (
	// FullPass reads S3 and IMS afresh: at start, on the resync timer,
	// SIGHUP or `sbps-marshal resync`, a fleet resync, a NATS
	// (re)connection, and when a failed pass is retried. Only a successful
	// full pass sets sbps_marshal_last_full_resync_timestamp_seconds.
	FullPass PassKind = "full"
	// KeysPass re-reads only the S3 keys and IMS images events named, and
	// repairs LIO after an outside change of saveconfig.json.
	KeysPass PassKind = "keys"
)

// InventorySource is where an inventory error came from: the source label
// of sbps_marshal_inventory_errors_total.
type InventorySource string

const (
	SourceS3       InventorySource = "s3"       // listing the bucket
	SourceIMS      InventorySource = "ims"      // listing IMS, or an IMS record that does not decode
	SourceManifest InventorySource = "manifest" // fetching a manifest.json
	SourceLIO      InventorySource = "lio"      // reading saveconfig.json or applying to LIO
)

var (
	passBuckets    = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	latencyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// Metrics holds the agent's metrics on a registry of its own. All methods
// are safe for concurrent use; a scrape never sees a half-applied SetStatus.
type Metrics struct {
	reg *prometheus.Registry

	readyState
	now func() time.Time

	passDuration   *prometheus.HistogramVec
	passes         *prometheus.CounterVec
	applyDuration  *prometheus.HistogramVec
	lioOps         *prometheus.CounterVec
	events         *prometheus.CounterVec
	eventLatency   prometheus.Histogram
	lastFullResync prometheus.Gauge
	inventoryErrs  *prometheus.CounterVec
	massDelete     prometheus.Counter
	regFallbacks   prometheus.Counter

	*health // ready, gate, resync interval, held deletes, failed passes in a row (health.go)

	status *statusCollector
	funcs  *funcCollector

	noRuntime bool // WithoutRuntimeCollectors
}

// Option tunes New.
type Option func(*Metrics)

// WithClock replaces time.Now (for the resync timestamp and event latency).
func WithClock(now func() time.Time) Option { return func(m *Metrics) { m.now = now } }

// WithoutRuntimeCollectors leaves out the Go runtime and process collectors
// (go_*, process_*), which New registers by default.
func WithoutRuntimeCollectors() Option { return func(m *Metrics) { m.noRuntime = true } }

// New returns the agent's metrics, registered on a new private registry.
func New(opts ...Option) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: time.Now, status: newStatusCollector(), funcs: newFuncCollector()}
	m.newPassMetrics()
	m.newEventMetrics()
	m.newInventoryMetrics()
	m.health = newHealth(m)
	m.initLabels()
	for _, o := range opts {
		o(m)
	}
	m.reg.MustRegister(m.passDuration, m.passes, m.applyDuration, m.lioOps, m.events, m.eventLatency,
		m.lastFullResync, m.inventoryErrs, m.massDelete, m.regFallbacks, buildInfo(), m.status, m.funcs)
	m.health.register(m.reg)
	if !m.noRuntime {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// newPassMetrics makes the metrics of passes and of what they apply.
func (m *Metrics) newPassMetrics() {
	m.passDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "pass_duration_seconds",
		Help:    "Duration of reconcile passes (inventory, plan, apply), by kind and outcome.",
		Buckets: passBuckets,
	}, []string{"kind", "outcome"})
	m.passes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "passes_total",
		Help: "Reconcile passes, by kind and outcome, including passes that failed before producing a report.",
	}, []string{"kind", "outcome"})
	m.applyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "apply_duration_seconds",
		Help:    "Duration of applying one batch of operations to LIO through targetcli, by outcome.",
		Buckets: passBuckets,
	}, []string{"outcome"})
	m.lioOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "lio_operations_total",
		Help: "LIO operations by op kind and outcome (applied, already_done, failed, not_attempted).",
	}, []string{"op", "outcome"})
}

// newEventMetrics makes the metrics of the events the agent takes.
func (m *Metrics) newEventMetrics() {
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "events_total",
		Help: "Events taken by the agent, by source and outcome (applied, failed, ignored); their sum is the events received.",
	}, []string{"source", "outcome"})
	m.eventLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "event_apply_latency_seconds",
		Help:    "Time from an event's receipt to the end of the pass that applied it.",
		Buckets: latencyBuckets,
	})
}

// newInventoryMetrics makes the metrics of the inventory and of what
// guards the projections.
func (m *Metrics) newInventoryMetrics() {
	m.lastFullResync = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "last_full_resync_timestamp_seconds",
		Help: "Unix time of the end of the latest successful full pass; 0 before the first.",
	})
	m.inventoryErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "inventory_errors_total",
		Help: "Errors reading the inventory, by source (s3, ims, manifest, lio).",
	}, []string{"source"})
	m.massDelete = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "mass_delete_refusals_total",
		Help: "Passes whose deletes the mass-delete guard (MAX_DELETE_FRACTION) held back.",
	})
	m.regFallbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "registry_fallbacks_total",
		Help: "Times the LUN registry could not be used and LIO chose the LUN index.",
	})
}

// buildInfo is sbps_marshal_build_info: always 1, its labels name the build.
func buildInfo() prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": commit(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// Registry returns the private registry (for tests and for adding
// collectors of other packages).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetStatus replaces the projection counts with those of entries (the status
// view of the latest pass, projector.StatusOf): sbps_marshal_projections by
// kind and state, and sbps_marshal_image_problems by state and reason class.
// States and reasons absent from entries read 0.
func (m *Metrics) SetStatus(entries []projector.Entry) { m.status.set(entries) }

// SetStatusFunc is SetStatus for the view f builds, built at the next
// scrape rather than now.
func (m *Metrics) SetStatusFunc(f func() []projector.Entry) { m.status.setLazy(f) }

// ObservePass records one reconcile pass. Call it after every pass with what
// the reconciler returned (rep may be nil when the pass failed early), and
// with what builds the pass's status view, called at the next scrape (nil
// leaves the projection counts as they are).
//
// It observes the pass duration (when rep is not nil), counts the pass by
// outcome, counts rep.Results by op kind and outcome, counts a mass-delete
// refusal when rep.Plan.Held has a delete held by the mass-delete guard
// (projector.HeldMassDelete), counts inventory errors (see below), sets the
// last full resync time after a successful FullPass, and calls
// SetStatusFunc(status).
//
// Inventory errors are attributed as follows: an error with no report is
// the source a projector.SourceError names (s3: the listing failed), else
// lio (saveconfig.json could not be read); an error with a report is lio
// (applying failed); a report whose rootfs information is incomplete adds
// its projector.Desired.RootfsIncompleteSource (ims or manifest).
func (m *Metrics) ObservePass(kind PassKind, rep *projector.Report, err error, status func() []projector.Entry) {
	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	k := string(kind)
	m.passes.WithLabelValues(k, outcome).Inc()
	m.observeHealth(rep, err)
	if rep != nil {
		m.passDuration.WithLabelValues(k, outcome).Observe(rep.Duration.Seconds())
		m.ObserveChanges(rep)
		if rep.Plan != nil {
			for _, h := range rep.Plan.Held {
				if h.Action == projector.Delete && h.Code == projector.HeldMassDelete {
					m.massDelete.Inc()
					break
				}
			}
		}
		if d := rep.Desired; d != nil && !d.RootfsComplete {
			src := InventorySource(d.RootfsIncompleteSource)
			if src == "" {
				src = SourceManifest
			}
			m.InventoryError(src)
		}
	}
	var se *projector.SourceError
	switch {
	case err == nil:
	case rep != nil:
		m.InventoryError(SourceLIO)
	case errors.As(err, &se):
		m.InventoryError(InventorySource(se.Source))
	case errorsIsContext(err):
		// Shutting down is not an inventory error.
	default:
		m.InventoryError(SourceLIO)
	}
	if kind == FullPass && err == nil && rep != nil {
		m.lastFullResync.Set(float64(m.now().UnixNano()) / 1e9)
	}
	if status != nil {
		m.SetStatusFunc(status)
	}
}

// InventoryError counts one inventory error from src, for errors the agent
// sees outside ObservePass.
func (m *Metrics) InventoryError(src InventorySource) {
	m.inventoryErrs.WithLabelValues(string(src)).Inc()
}

// ObserveEvents records a batch of events the agent handled with a pass
// whose error was err: each counts as applied (err nil) or failed, by source,
// and an applied event's latency from Received to now is observed.
func (m *Metrics) ObserveEvents(batch []events.Event, err error) {
	outcome := "applied"
	if err != nil {
		outcome = "failed"
	}
	now := m.now()
	for _, ev := range batch {
		m.events.WithLabelValues(eventSource(ev.Kind), outcome).Inc()
		if err == nil && !ev.Received.IsZero() {
			m.eventLatency.Observe(max(0, now.Sub(ev.Received).Seconds()))
		}
	}
}

// IgnoreEvents records a batch of events the agent took and dropped
// without a pass (e.g. the watcher reporting the agent's own save).
func (m *Metrics) IgnoreEvents(batch []events.Event) {
	for _, ev := range batch {
		m.events.WithLabelValues(eventSource(ev.Kind), "ignored").Inc()
	}
}

// RegistryFallback counts one time the LUN registry could not be used.
func (m *Metrics) RegistryFallback() { m.regFallbacks.Inc() }

// CollectEventStats adds an event source's cumulative counters (the Stats
// method of events.NATSSource and events.Watcher), read at every scrape as
// sbps_marshal_event_source_outcomes_total{source,outcome}. Counters of
// several functions with the same source and outcome are added up.
func (m *Metrics) CollectEventStats(f func() []events.Stat) { m.funcs.addEventStats(f) }

// CollectLIOStats makes the targetcli driver's cumulative counters
// (lio.Driver.Stats) readable at every scrape as
// sbps_marshal_targetcli_processes_total and
// sbps_marshal_targetclid_requests_total. A later call replaces f.
func (m *Metrics) CollectLIOStats(f func() lio.Stats) { m.funcs.setLIOStats(f) }

// CollectNATSConnected makes sbps_marshal_nats_connected read connected()
// at every scrape (1 connected, 0 not). Without it (NATS not configured)
// the metric is absent. A later call replaces f; nil removes it.
func (m *Metrics) CollectNATSConnected(connected func() bool) { m.funcs.setNATS(connected) }

// InstrumentApplier wraps a LIO applier so that every Apply call is timed
// into sbps_marshal_apply_duration_seconds (outcome error when the call
// failed or an op did not reach its state). Results are not counted here:
// ObservePass counts them from the report.
func (m *Metrics) InstrumentApplier(next lio.Applier) lio.Applier {
	return &timedApplier{next: next, m: m}
}

type timedApplier struct {
	next lio.Applier
	m    *Metrics
}

var _ lio.Applier = (*timedApplier)(nil)

func (a *timedApplier) Apply(ctx context.Context, ops []lio.Op) ([]lio.Result, error) {
	start := a.m.now()
	res, err := a.next.Apply(ctx, ops)
	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	for _, r := range res {
		if !r.OK() {
			outcome = "error"
		}
	}
	a.m.applyDuration.WithLabelValues(outcome).Observe(max(0, a.m.now().Sub(start).Seconds()))
	return res, err
}

func (a *timedApplier) Save(ctx context.Context) error { return a.next.Save(ctx) }

func outcomeLabel(o lio.Outcome) string { return strings.ReplaceAll(o.String(), "-", "_") }

// eventSource names an event's source as events.Stat does.
func eventSource(k events.Kind) string {
	switch k {
	case events.S3Object:
		return "s3"
	case events.IMSImage:
		return "ims"
	case events.LIOChanged:
		return "saveconfig"
	case events.Resync:
		return "resync"
	}
	return "other"
}

func errorsIsContext(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// commit is the build's commit as internal/version.String reports it.
func commit() string {
	if version.Commit != "" {
		return version.Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}
