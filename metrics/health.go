package metrics

import (
	"strings"
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

// HeldReason is the reason label of sbps_marshal_held_deletes: why a
// projection that is no longer desired was kept.
type HeldReason string

const (
	HeldMassDelete    HeldReason = "mass_delete"    // the mass-delete guard (MAX_DELETE_FRACTION): needs `sbps-marshal sync --allow-mass-delete`
	HeldIMSIncomplete HeldReason = "ims_incomplete" // IMS listing or records unreadable: no rootfs projection is removed
	HeldUnconfirmed   HeldReason = "unconfirmed"    // left out of the IMS listing, not confirmed gone by a GET yet
	HeldPending       HeldReason = "pending"        // kept while its replacement is pending (s3fs lag, re-upload)
	HeldOther         HeldReason = "other"
)

// Prefixes of the projector's held-delete reasons (projector.MakePlan,
// projector.Inventory); MassDeleteReasonPrefix is the mass-delete guard's.
const (
	heldIMSIncompletePrefix = "kept: IMS information is incomplete"
	heldUnconfirmedPrefix   = "kept: the IMS listing left out image"
	heldPendingPrefix       = "kept while pending: "
)

var (
	passKinds    = []PassKind{FullPass, KeysPass, RepairPass}
	passOutcomes = []string{"success", "error"}
	gateStates   = []GateState{GateOpen, GateClosed, GateUnknown}
	heldReasons  = []HeldReason{HeldMassDelete, HeldIMSIncomplete, HeldUnconfirmed, HeldPending, HeldOther}
)

// HeldReasonOf classifies the reason of a held delete.
func HeldReasonOf(reason string) HeldReason {
	switch {
	case strings.HasPrefix(reason, MassDeleteReasonPrefix):
		return HeldMassDelete
	case strings.HasPrefix(reason, heldIMSIncompletePrefix):
		return HeldIMSIncomplete
	case strings.HasPrefix(reason, heldUnconfirmedPrefix):
		return HeldUnconfirmed
	case strings.HasPrefix(reason, heldPendingPrefix):
		return HeldPending
	}
	return HeldOther
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
			Help: "Projections no longer desired but kept by the latest pass, by reason: mass_delete (needs sync --allow-mass-delete), ims_incomplete, unconfirmed, pending, other.",
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
		h.heldDeletes.WithLabelValues(string(r))
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
	counts := map[HeldReason]int{}
	for _, c := range rep.Plan.Held {
		if c.Action == projector.Delete {
			counts[HeldReasonOf(c.Reason)]++
		}
	}
	for _, r := range heldReasons {
		m.heldDeletes.WithLabelValues(string(r)).Set(float64(counts[r]))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
