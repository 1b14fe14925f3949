package metrics

import (
	"cmp"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// kindNone is the kind label of entries without a kind (foreign backstores).
const kindNone = "none"

var (
	statusKinds  = []string{string(projector.PE), string(projector.Rootfs)}
	statusStates = []projector.State{projector.Projected, projector.Missing, projector.Pending,
		projector.Rejected, projector.Held, projector.Stale, projector.Foreign}
	problemStates = []projector.State{projector.Pending, projector.Rejected}
)

// statusCollector exposes the counts of the latest SetStatus, swapped in
// whole so that a scrape never sees a half-updated view.
type statusCollector struct {
	projections, problems, mismatches *prometheus.Desc

	counting   sync.Mutex // held while a pending view is counted
	mu         sync.Mutex
	pending    func() []projector.Entry // status view not counted yet (setLazy)
	projCounts map[[2]string]int        // kind, state; nil before the first set
	probCounts map[[2]string]int        // state, reason class
	mismatch   int                      // LUNs whose index differs from the registry's
}

func newStatusCollector() *statusCollector {
	return &statusCollector{
		projections: prometheus.NewDesc(namespace+"_projections",
			"Projections in the latest status view, by image kind (pe, rootfs; none for foreign backstores) and state.",
			[]string{"kind", "state"}, nil),
		problems: prometheus.NewDesc(namespace+"_image_problems",
			"Images not projected in the latest status view, by state (pending, rejected) and reason class.",
			[]string{"state", "reason"}, nil),
		mismatches: prometheus.NewDesc(namespace+"_lun_registry_mismatches",
			"LUNs in the latest status view whose index differs from the LUN registry's (moved only by sync --renumber).",
			nil, nil),
	}
}

// setLazy makes the next scrape count the status view f builds: building
// it costs tens of milliseconds on a node with 10,000 LUNs, too much for
// every pass, and a scrape comes every 15 s or more.
func (c *statusCollector) setLazy(f func() []projector.Entry) {
	c.mu.Lock()
	c.pending = f
	c.mu.Unlock()
}

func (c *statusCollector) set(entries []projector.Entry) {
	proj := map[[2]string]int{}
	for _, k := range statusKinds {
		for _, s := range statusStates {
			proj[[2]string{k, string(s)}] = 0
		}
	}
	prob := map[[2]string]int{}
	for _, s := range problemStates {
		for _, c := range projector.ProblemCodes() {
			prob[[2]string{string(s), string(c)}] = 0
		}
	}
	mismatch := 0
	for _, e := range entries {
		if e.LUN != nil && e.RegistryLUN != nil && *e.LUN != *e.RegistryLUN {
			mismatch++
		}
		kind := string(e.Kind)
		if kind == "" {
			kind = kindNone
		}
		proj[[2]string{kind, string(e.State)}]++
		if e.State == projector.Pending || e.State == projector.Rejected {
			code := e.Code
			if code == "" {
				code = projector.CodeOther
			}
			prob[[2]string{string(e.State), string(code)}]++
		}
	}
	c.mu.Lock()
	c.projCounts, c.probCounts, c.mismatch = proj, prob, mismatch
	c.pending = nil
	c.mu.Unlock()
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.projections
	ch <- c.problems
	ch <- c.mismatches
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.counting.Lock()
	c.mu.Lock()
	if f := c.pending; f != nil {
		c.mu.Unlock()
		c.set(f())
		c.mu.Lock()
	}
	c.counting.Unlock()
	proj, prob, mismatch := c.projCounts, c.probCounts, c.mismatch
	c.mu.Unlock()
	if proj != nil {
		ch <- prometheus.MustNewConstMetric(c.mismatches, prometheus.GaugeValue, float64(mismatch))
	}
	for k, n := range proj {
		ch <- prometheus.MustNewConstMetric(c.projections, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for k, n := range prob {
		ch <- prometheus.MustNewConstMetric(c.problems, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// funcCollector reads the agent's parts at scrape time: event source
// counters, the targetcli driver's counters and the NATS connection state.
type funcCollector struct {
	eventStats, processes, requests, natsConnected *prometheus.Desc

	mu     sync.Mutex
	evFns  []func() []events.Stat
	lioFn  func() lio.Stats
	natsFn func() bool
}

func newFuncCollector() *funcCollector {
	return &funcCollector{
		eventStats: prometheus.NewDesc(namespace+"_event_source_outcomes_total",
			"What the event sources saw, by source (s3, ims, resync, nats, jetstream, saveconfig) and outcome (event, undecodable, reconnect, ack, ...), since the start.",
			[]string{"source", "outcome"}, nil),
		processes: prometheus.NewDesc(namespace+"_targetcli_processes_total",
			"targetcli processes started by the driver.", nil, nil),
		requests: prometheus.NewDesc(namespace+"_targetclid_requests_total",
			"Requests sent to targetclid by the driver.", nil, nil),
		natsConnected: prometheus.NewDesc(namespace+"_nats_connected",
			"1 while the NATS connection is up, else 0; absent when NATS is not configured.", nil, nil),
	}
}

func (c *funcCollector) addEventStats(f func() []events.Stat) {
	if f == nil {
		return
	}
	c.mu.Lock()
	c.evFns = append(c.evFns, f)
	c.mu.Unlock()
}

func (c *funcCollector) setLIOStats(f func() lio.Stats) {
	c.mu.Lock()
	c.lioFn = f
	c.mu.Unlock()
}

func (c *funcCollector) setNATS(f func() bool) {
	c.mu.Lock()
	c.natsFn = f
	c.mu.Unlock()
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.eventStats
	ch <- c.processes
	ch <- c.requests
	ch <- c.natsConnected
}

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	evFns, lioFn, natsFn := slices.Clone(c.evFns), c.lioFn, c.natsFn
	c.mu.Unlock()

	sums := map[[2]string]uint64{}
	for _, f := range evFns {
		for _, s := range f() {
			sums[[2]string{s.Source, s.Outcome}] += s.Count
		}
	}
	keys := make([][2]string, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	for _, k := range keys {
		ch <- prometheus.MustNewConstMetric(c.eventStats, prometheus.CounterValue, float64(sums[k]), k[0], k[1])
	}
	if lioFn != nil {
		s := lioFn()
		ch <- prometheus.MustNewConstMetric(c.processes, prometheus.CounterValue, float64(s.Processes))
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Requests))
	}
	if natsFn != nil {
		v := 0.0
		if natsFn() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.natsConnected, prometheus.GaugeValue, v)
	}
}
