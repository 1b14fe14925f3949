package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// registerOnce registers c, or returns the collector already registered
// under the same descriptors.
func registerOnce[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: two different metrics with one name
	}
	return c
}

// SetLUNRegistry records the LUN registry in use (LUN_REGISTRY after auto
// is resolved: nats, local or off) as sbps_marshal_lun_registry{mode} = 1,
// the other modes 0.
func (m *Metrics) SetLUNRegistry(mode string) {
	g := registerOnce(m.reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "lun_registry",
		Help: "1 for the LUN registry in use (LUN_REGISTRY, auto resolved): nats, local or off.",
	}, []string{"mode"}))
	for _, md := range []string{"nats", "local", "off"} {
		v := 0.0
		if md == mode {
			v = 1
		}
		g.WithLabelValues(md).Set(v)
	}
}

// SessionReset counts one reset of the iSCSI sessions of tpg1 (initiators
// made to log in again because a LUN number changed under them), by
// outcome (done, failed), as sbps_marshal_session_resets_total.
func (m *Metrics) SessionReset(outcome string) {
	registerOnce(m.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "session_resets_total",
		Help: "Resets of tpg1's iSCSI sessions (disable and enable) because a LUN number changed under live sessions, by outcome.",
	}, []string{"outcome"})).WithLabelValues(outcome).Inc()
}
