package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbps-marshal/sbps-marshal/projector"
)

// What the alerts of deploy/monitoring read. Every series an alert uses
// exists, at 0 or its starting state, from New on: an alert on a series that
// appears only after the first failure cannot tell "no failure" from "no
// data".

// GateState is the state label of sbps_marshal_gate.
type GateState string

const (
	GateOpen    GateState = "open"    // the node serves images
	GateClosed  GateState = "closed"  // not labelled: tpg1 disabled, nothing projected
	GateUnknown GateState = "unknown" // not asked yet, or the gate could not answer
)

// heldOther is the reason label of a held change without a code.
const heldOther = "other"

var (
	passKinds    = []PassKind{FullPass, KeysPass}
	passOutcomes = []string{"success", "error"}
	gateStates   = []GateState{GateOpen, GateClosed, GateUnknown}
	heldReasons  = append(codeNames(projector.HeldCodes()), heldOther)
)

func codeNames(codes []projector.Code) []string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = string(c)
	}
	return out
}

// health holds the gauges the alerts read besides the pass counters.
type health struct {
	m *Metrics

	gate           *prometheus.GaugeVec
	resyncInterval prometheus.Gauge
	heldDeletes    *prometheus.GaugeVec
	failedInARow   prometheus.Gauge

	mu       sync.Mutex
	failures int // passes failed in a row
}

func newHealth(m *Metrics) *health {
	h := &health{
		m: m,
		gate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "gate",
			Help: "1 for the node gate's latest answer (GATE): open (serving images), closed (tpg1 disabled, nothing projected), unknown (not asked yet or no answer); the other states 0.",
		}, []string{"state"}),
		resyncInterval: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "resync_interval_seconds",
			Help: "RESYNC_INTERVAL: the period of full passes; 0 until the agent sets it.",
		}),
		heldDeletes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "held_deletes",
			Help: "Projections the latest pass would remove (or recreate) but kept, by reason (projector.HeldCodes): mass_delete (needs sync --allow-mass-delete), ims_incomplete, unconfirmed, pending, refused; other without a code.",
		}, []string{"reason"}),
		failedInARow: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "consecutive_failed_passes",
			Help: "Passes failed in a row (any kind); 0 after a pass that did not fail.",
		}),
	}
	for _, s := range gateStates {
		h.gate.WithLabelValues(string(s)).Set(b2f(s == GateUnknown))
	}
	for _, r := range heldReasons {
		h.heldDeletes.WithLabelValues(r)
	}
	return h
}

func (h *health) register(reg *prometheus.Registry) {
	reg.MustRegister(h.m.readyGauge(), h.gate, h.resyncInterval, h.heldDeletes, h.failedInARow)
}

// initLabels makes the label values the alerts read exist at 0 before the
// first pass, so that increase() sees the first failure.
func (m *Metrics) initLabels() {
	for _, k := range passKinds {
		for _, o := range passOutcomes {
			m.passes.WithLabelValues(string(k), o)
		}
	}
	for _, src := range []InventorySource{SourceS3, SourceIMS, SourceManifest, SourceLIO} {
		m.inventoryErrs.WithLabelValues(string(src))
	}
}

// SetGate records the node gate's latest answer as sbps_marshal_gate{state}:
// open or closed, unknown when err is not nil.
func (m *Metrics) SetGate(open bool, err error) {
	state := GateClosed
	switch {
	case err != nil:
		state = GateUnknown
	case open:
		state = GateOpen
	}
	for _, s := range gateStates {
		m.gate.WithLabelValues(string(s)).Set(b2f(s == state))
	}
}

// SetResyncInterval records RESYNC_INTERVAL as
// sbps_marshal_resync_interval_seconds, which the resync-stale alert
// multiplies.
func (m *Metrics) SetResyncInterval(d time.Duration) { m.resyncInterval.Set(d.Seconds()) }

// observeHealth updates the failed-passes-in-a-row gauge and, from a report
// with a plan, the held deletes by reason.
func (m *Metrics) observeHealth(rep *projector.Report, err error) {
	if err == nil || !errorsIsContext(err) {
		m.health.mu.Lock()
		if err != nil {
			m.failures++
		} else {
			m.failures = 0
		}
		m.failedInARow.Set(float64(m.failures))
		m.health.mu.Unlock()
	}
	if rep == nil || rep.Plan == nil {
		return
	}
	counts := map[string]int{}
	for _, c := range rep.Plan.Held {
		code := string(c.Code)
		if !slices.Contains(heldReasons, code) {
			code = heldOther
		}
		counts[code]++
	}
	for _, r := range heldReasons {
		m.heldDeletes.WithLabelValues(r).Set(float64(counts[r]))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
