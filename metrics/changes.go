package metrics

import "github.com/sbps-marshal/sbps-marshal/projector"

// ObserveChanges counts the LIO operations of a report by op kind and
// outcome: a pass's (ObservePass calls it), and the node gate's and the
// session reset's changes of the TPG (projector.Reconciler.Gate,
// ResetSessions), which are not passes.
func (m *Metrics) ObserveChanges(rep *projector.Report) {
	for _, r := range rep.Results {
		m.lioOps.WithLabelValues(string(r.Op.Kind), outcomeLabel(r.Outcome)).Inc()
	}
}
