package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// CollectReady makes sbps_marshal_ready read ready() at every scrape: 1
// while it returns nil (projections current: what /readyz answers 200
// for), 0 otherwise. Before the first call it reads 0. A later call
// replaces ready.
func (m *Metrics) CollectReady(ready func() error) {
	m.readyFn.Store(&ready)
}

// readyState is CollectReady's state inside Metrics.
type readyState struct {
	readyFn atomic.Pointer[func() error]
}

// readyGauge is sbps_marshal_ready, registered by New.
func (m *Metrics) readyGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ready",
		Help: "1 when the agent's projections are current (the latest pass succeeded after a full one), 0 otherwise; /readyz says why.",
	}, func() float64 {
		if f := m.readyFn.Load(); f != nil && (*f)() == nil {
			return 1
		}
		return 0
	})
}
