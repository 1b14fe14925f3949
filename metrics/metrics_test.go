package metrics

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/internal/version"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

const target = "iqn.2023-06.csm.iscsi:n1"

var layout = projector.Layout{Bucket: "boot-images", Mount: "/mnt", PEPrefix: "PE/"}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *fakeClock { c := &fakeClock{}; c.set(t); return c }
func (c *fakeClock) set(t time.Time)  { c.t.Store(&t) }
func (c *fakeClock) now() time.Time   { return *c.t.Load() }
func (c *fakeClock) add(d time.Duration) {
	c.set(c.now().Add(d))
}

func newTest(t *testing.T, opts ...Option) *Metrics {
	t.Helper()
	return New(append([]Option{WithoutRuntimeCollectors()}, opts...)...)
}

// massDeletePlan is a real plan from the projector whose deletes the guard
// holds: two managed backstores, nothing desired, MAX_DELETE_FRACTION=0.5.
func massDeletePlan(t *testing.T) *projector.Plan {
	t.Helper()
	actual, err := lio.Parse([]byte(`{"storage_objects":[
		{"plugin":"fileio","name":"a","dev":"/mnt/PE/a","wwn":"x"},
		{"plugin":"fileio","name":"b","dev":"/mnt/PE/b","wwn":"y"}],
		"targets":[{"fabric":"iscsi","wwn":"` + target + `","tpgs":[{"tag":1,"luns":[]}]}]}`))
	if err != nil {
		t.Fatalf("parsing saveconfig: %v", err)
	}
	plan, err := projector.MakePlan(&projector.Desired{RootfsComplete: true}, actual, layout,
		projector.PlanOptions{Target: target, MaxDeleteFraction: 0.5})
	if err != nil {
		t.Fatalf("MakePlan: %v", err)
	}
	if len(plan.Held) != 2 {
		t.Fatalf("MakePlan held %d deletes, want 2 (the guard's behaviour changed?)", len(plan.Held))
	}
	return plan
}

func result(kind lio.OpKind, o lio.Outcome) lio.Result {
	return lio.Result{Op: lio.Op{Kind: kind, Backstore: "b"}, Outcome: o}
}

func TestObservePass(t *testing.T) {
	complete := &projector.Desired{RootfsComplete: true}
	type pass struct {
		kind PassKind
		rep  *projector.Report
		err  error
	}
	tests := []struct {
		name       string
		passes     func(t *testing.T) []pass
		ops        map[[2]string]float64 // op, outcome
		passCounts map[[2]string]float64 // kind, outcome
		durations  int                   // histogram series with observations
		invErrs    map[InventorySource]float64
		massDelete float64
		lastResync bool
	}{
		{
			name: "full pass with results",
			passes: func(*testing.T) []pass {
				return []pass{{FullPass, &projector.Report{Desired: complete, Plan: &projector.Plan{}, Duration: time.Second, Results: []lio.Result{
					result(lio.CreateBackstore, lio.Applied), result(lio.CreateLUN, lio.Applied),
					result(lio.CreateBackstore, lio.AlreadyDone), result(lio.DeleteBackstore, lio.Applied),
				}}, nil}}
			},
			ops: map[[2]string]float64{
				{"create-backstore", "applied"}: 1, {"create-lun", "applied"}: 1,
				{"create-backstore", "already_done"}: 1, {"delete-backstore", "applied"}: 1,
			},
			passCounts: map[[2]string]float64{{"full", "success"}: 1},
			durations:  1,
			lastResync: true,
		},
		{
			name: "failed ops make a lio error",
			passes: func(*testing.T) []pass {
				return []pass{{KeysPass, &projector.Report{Desired: complete, Plan: &projector.Plan{}, Duration: time.Second, Results: []lio.Result{
					result(lio.CreateBackstore, lio.Failed), result(lio.CreateLUN, lio.NotAttempted),
				}}, errors.New("1 of 2 operation(s) failed")}}
			},
			ops:        map[[2]string]float64{{"create-backstore", "failed"}: 1, {"create-lun", "not_attempted"}: 1},
			passCounts: map[[2]string]float64{{"keys", "error"}: 1},
			durations:  1,
			invErrs:    map[InventorySource]float64{SourceLIO: 1},
		},
		{
			name: "mass delete refused once per pass",
			passes: func(t *testing.T) []pass {
				rep := &projector.Report{Desired: complete, Plan: massDeletePlan(t), Duration: time.Millisecond}
				return []pass{{FullPass, rep, nil}, {FullPass, rep, nil}}
			},
			passCounts: map[[2]string]float64{{"full", "success"}: 2},
			durations:  1,
			massDelete: 2,
			lastResync: true,
		},
		{
			name: "held for other reasons is no refusal",
			passes: func(*testing.T) []pass {
				plan := &projector.Plan{Held: []projector.Change{
					{Action: projector.Delete, Name: "a", Reason: "kept while pending: s3fs shows 0 bytes, S3 says 4096"},
					{Action: projector.Delete, Name: "b", Reason: "kept: IMS information is incomplete (IMS listing failed: x)"},
				}}
				return []pass{{FullPass, &projector.Report{Desired: complete, Plan: plan}, nil}}
			},
			passCounts: map[[2]string]float64{{"full", "success"}: 1},
			durations:  1,
			lastResync: true,
		},
		{
			name: "S3 listing failure",
			passes: func(*testing.T) []pass {
				err := &projector.SourceError{Source: projector.SourceS3, Err: errors.New("S3 listing failed, nothing changes this pass: 503")}
				return []pass{{FullPass, nil, fmt.Errorf("pass: %w", err)}}
			},
			passCounts: map[[2]string]float64{{"full", "error"}: 1},
			invErrs:    map[InventorySource]float64{SourceS3: 1},
		},
		{
			name: "saveconfig unreadable",
			passes: func(*testing.T) []pass {
				return []pass{{KeysPass, nil, fmt.Errorf("reading /etc/target/saveconfig.json: %w", lio.ErrIncomplete)}}
			},
			passCounts: map[[2]string]float64{{"keys", "error"}: 1},
			invErrs:    map[InventorySource]float64{SourceLIO: 1},
		},
		{
			name: "shutdown is no inventory error",
			passes: func(*testing.T) []pass {
				return []pass{{FullPass, nil, fmt.Errorf("reading: %w", context.Canceled)}}
			},
			passCounts: map[[2]string]float64{{"full", "error"}: 1},
		},
		{
			name: "IMS and manifest gaps",
			passes: func(*testing.T) []pass {
				ims := &projector.Desired{RootfsIncompleteSource: projector.SourceIMS, RootfsIncompleteReason: "IMS listing failed: ims: GET x: 503"}
				recs := &projector.Desired{RootfsIncompleteSource: projector.SourceIMS, RootfsIncompleteReason: "2 IMS record(s) could not be read, first: ims: image record 3"}
				man := &projector.Desired{RootfsIncompleteSource: projector.SourceManifest, RootfsIncompleteReason: "image 1: fetching manifest 1/manifest.json: timeout"}
				return []pass{
					{FullPass, &projector.Report{Desired: ims, Plan: &projector.Plan{}}, nil},
					{FullPass, &projector.Report{Desired: recs, Plan: &projector.Plan{}}, nil},
					{FullPass, &projector.Report{Desired: man, Plan: &projector.Plan{}}, nil},
				}
			},
			passCounts: map[[2]string]float64{{"full", "success"}: 3},
			durations:  1,
			invErrs:    map[InventorySource]float64{SourceIMS: 2, SourceManifest: 1},
			lastResync: true,
		},
		{
			name: "a successful repair pass does not set the resync time",
			passes: func(*testing.T) []pass {
				return []pass{{KeysPass, &projector.Report{Desired: complete, Plan: &projector.Plan{}}, nil}}
			},
			passCounts: map[[2]string]float64{{"keys", "success"}: 1},
			durations:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock(time.Unix(1_700_000_000, 500_000_000))
			m := newTest(t, WithClock(clock.now))
			for _, p := range tc.passes(t) {
				m.ObservePass(p.kind, p.rep, p.err, nil)
			}
			if got, want := testutil.CollectAndCount(m.lioOps), len(tc.ops); got != want {
				t.Errorf("lio_operations_total has %d series, want %d", got, want)
			}
			for k, want := range tc.ops {
				if got := testutil.ToFloat64(m.lioOps.WithLabelValues(k[0], k[1])); got != want {
					t.Errorf("lio_operations_total{op=%q,outcome=%q} = %v, want %v", k[0], k[1], got, want)
				}
			}
			// Every kind and outcome exists from the start (alerts read them).
			if got, want := testutil.CollectAndCount(m.passes), len(passKinds)*len(passOutcomes); got != want {
				t.Errorf("passes_total has %d series, want %d", got, want)
			}
			for _, k := range passKinds {
				for _, o := range passOutcomes {
					want := tc.passCounts[[2]string{string(k), o}]
					if got := testutil.ToFloat64(m.passes.WithLabelValues(string(k), o)); got != want {
						t.Errorf("passes_total{kind=%q,outcome=%q} = %v, want %v", k, o, got, want)
					}
				}
			}
			if got := testutil.CollectAndCount(m.passDuration); got != tc.durations {
				t.Errorf("pass_duration_seconds has %d series, want %d", got, tc.durations)
			}
			for _, src := range []InventorySource{SourceS3, SourceIMS, SourceManifest, SourceLIO} {
				if got, want := testutil.ToFloat64(m.inventoryErrs.WithLabelValues(string(src))), tc.invErrs[src]; got != want {
					t.Errorf("inventory_errors_total{source=%q} = %v, want %v", src, got, want)
				}
			}
			if got := testutil.ToFloat64(m.massDelete); got != tc.massDelete {
				t.Errorf("mass_delete_refusals_total = %v, want %v", got, tc.massDelete)
			}
			want := 0.0
			if tc.lastResync {
				want = 1_700_000_000.5
			}
			if got := testutil.ToFloat64(m.lastFullResync); got != want {
				t.Errorf("last_full_resync_timestamp_seconds = %v, want %v", got, want)
			}
		})
	}
}

func TestPassDurationHistogram(t *testing.T) {
	m := newTest(t)
	for _, d := range []time.Duration{200 * time.Millisecond, 3 * time.Second, 3 * time.Second} {
		m.ObservePass(FullPass, &projector.Report{Desired: &projector.Desired{RootfsComplete: true}, Plan: &projector.Plan{}, Duration: d}, nil, nil)
	}
	m.ObservePass(KeysPass, &projector.Report{Plan: &projector.Plan{}, Duration: 40 * time.Millisecond}, errors.New("apply"), nil)
	want := `
# HELP sbps_marshal_pass_duration_seconds Duration of reconcile passes (inventory, plan, apply), by kind and outcome.
# TYPE sbps_marshal_pass_duration_seconds histogram
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="0.05"} 0
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="0.1"} 0
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="0.25"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="0.5"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="1"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="2.5"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="5"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="10"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="30"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="60"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="120"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="300"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="600"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="+Inf"} 3
sbps_marshal_pass_duration_seconds_sum{kind="full",outcome="success"} 6.2
sbps_marshal_pass_duration_seconds_count{kind="full",outcome="success"} 3
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="0.05"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="0.1"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="0.25"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="0.5"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="1"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="2.5"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="5"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="10"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="30"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="60"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="120"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="300"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="600"} 1
sbps_marshal_pass_duration_seconds_bucket{kind="keys",outcome="error",le="+Inf"} 1
sbps_marshal_pass_duration_seconds_sum{kind="keys",outcome="error"} 0.04
sbps_marshal_pass_duration_seconds_count{kind="keys",outcome="error"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_pass_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// entry is a status entry; code classes its reason (the text is for people
// and never read by metrics).
func entry(s projector.State, k projector.Kind, code projector.Code) projector.Entry {
	return projector.Entry{State: s, Kind: k, Code: code, Reason: "text beside " + string(code)}
}

func TestSetStatus(t *testing.T) {
	m := newTest(t)
	if got := testutil.CollectAndCount(m.status); got != 0 {
		t.Errorf("before SetStatus: %d series, want none", got)
	}
	m.SetStatus([]projector.Entry{
		entry(projector.Projected, projector.PE, ""),
		entry(projector.Projected, projector.PE, ""),
		entry(projector.Projected, projector.Rootfs, ""),
		entry(projector.Missing, projector.Rootfs, ""),
		entry(projector.Pending, projector.PE, projector.CodeS3fsLag),
		entry(projector.Rejected, projector.Rootfs, projector.CodeNoLink),
		entry(projector.Rejected, projector.Rootfs, projector.CodeNoLink),
		entry(projector.Rejected, projector.PE, projector.CodeEmpty),
		entry(projector.Held, projector.Rootfs, projector.HeldIMSIncomplete),
		entry(projector.Stale, projector.PE, ""),
		entry(projector.Foreign, "", ""),
	})
	want := `
# HELP sbps_marshal_projections Projections in the latest status view, by image kind (pe, rootfs; none for foreign backstores) and state.
# TYPE sbps_marshal_projections gauge
sbps_marshal_projections{kind="none",state="foreign"} 1
sbps_marshal_projections{kind="pe",state="foreign"} 0
sbps_marshal_projections{kind="pe",state="held"} 0
sbps_marshal_projections{kind="pe",state="missing"} 0
sbps_marshal_projections{kind="pe",state="pending"} 1
sbps_marshal_projections{kind="pe",state="projected"} 2
sbps_marshal_projections{kind="pe",state="rejected"} 1
sbps_marshal_projections{kind="pe",state="stale"} 1
sbps_marshal_projections{kind="rootfs",state="foreign"} 0
sbps_marshal_projections{kind="rootfs",state="held"} 1
sbps_marshal_projections{kind="rootfs",state="missing"} 1
sbps_marshal_projections{kind="rootfs",state="pending"} 0
sbps_marshal_projections{kind="rootfs",state="projected"} 1
sbps_marshal_projections{kind="rootfs",state="rejected"} 2
sbps_marshal_projections{kind="rootfs",state="stale"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_projections"); err != nil {
		t.Error(err)
	}
	wantProblems := map[string]float64{"pending/s3fs_lag": 1, "rejected/no_link": 2, "rejected/empty": 1}
	checkProblems(t, m, wantProblems)

	// The next view replaces the last: vanished states and reasons read 0,
	// and the foreign series without a kind disappears.
	m.SetStatus([]projector.Entry{entry(projector.Projected, projector.PE, "")})
	want = `
# HELP sbps_marshal_projections Projections in the latest status view, by image kind (pe, rootfs; none for foreign backstores) and state.
# TYPE sbps_marshal_projections gauge
sbps_marshal_projections{kind="pe",state="foreign"} 0
sbps_marshal_projections{kind="pe",state="held"} 0
sbps_marshal_projections{kind="pe",state="missing"} 0
sbps_marshal_projections{kind="pe",state="pending"} 0
sbps_marshal_projections{kind="pe",state="projected"} 1
sbps_marshal_projections{kind="pe",state="rejected"} 0
sbps_marshal_projections{kind="pe",state="stale"} 0
sbps_marshal_projections{kind="rootfs",state="foreign"} 0
sbps_marshal_projections{kind="rootfs",state="held"} 0
sbps_marshal_projections{kind="rootfs",state="missing"} 0
sbps_marshal_projections{kind="rootfs",state="pending"} 0
sbps_marshal_projections{kind="rootfs",state="projected"} 0
sbps_marshal_projections{kind="rootfs",state="rejected"} 0
sbps_marshal_projections{kind="rootfs",state="stale"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_projections"); err != nil {
		t.Error(err)
	}
	checkProblems(t, m, nil)

	// ObservePass with a status view sets it too; nil keeps it.
	m.ObservePass(FullPass, nil, errors.New("S3 listing failed"), nil)
	checkProblems(t, m, nil)
	m.ObservePass(FullPass, &projector.Report{Plan: &projector.Plan{}, Desired: &projector.Desired{RootfsComplete: true}}, nil,
		func() []projector.Entry {
			return []projector.Entry{entry(projector.Pending, projector.Rootfs, projector.CodeS3fsLag)}
		})
	checkProblems(t, m, map[string]float64{"pending/s3fs_lag": 1})
}

// checkProblems compares sbps_marshal_image_problems with want (by
// "state/reason"; absent keys must read 0) and checks that every state and
// reason class has a series.
func checkProblems(t *testing.T, m *Metrics, want map[string]float64) {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sbps_marshal_image_problems" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range mt.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got[l["state"]+"/"+l["reason"]] = mt.GetGauge().GetValue()
		}
	}
	if n, wantN := len(got), 2*len(projector.ProblemCodes()); n != wantN {
		t.Errorf("sbps_marshal_image_problems has %d series, want %d", n, wantN)
	}
	for k, v := range got {
		if v != want[k] {
			t.Errorf("sbps_marshal_image_problems{%s} = %v, want %v", k, v, want[k])
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("sbps_marshal_image_problems{%s} is missing", k)
		}
	}
}

func TestObserveEvents(t *testing.T) {
	clock := newClock(time.Unix(1000, 0))
	m := newTest(t, WithClock(clock.now))
	at := func(kind events.Kind, ago time.Duration) events.Event {
		return events.Event{Kind: kind, Source: "test", Received: clock.now().Add(-ago)}
	}
	m.ObserveEvents([]events.Event{at(events.S3Object, 2*time.Second), at(events.S3Object, time.Second), at(events.IMSImage, 500*time.Millisecond)}, nil)
	m.ObserveEvents([]events.Event{at(events.Resync, time.Hour)}, errors.New("S3 listing failed"))
	m.IgnoreEvents([]events.Event{at(events.LIOChanged, 0), at(events.LIOChanged, 0)})
	m.ObserveEvents([]events.Event{{Kind: events.Resync}}, nil) // no receive time: no latency

	tests := []struct {
		source, outcome string
		want            float64
	}{
		{"s3", "applied", 2},
		{"ims", "applied", 1},
		{"resync", "failed", 1},
		{"resync", "applied", 1},
		{"saveconfig", "ignored", 2},
	}
	for _, tc := range tests {
		if got := testutil.ToFloat64(m.events.WithLabelValues(tc.source, tc.outcome)); got != tc.want {
			t.Errorf("events_total{source=%q,outcome=%q} = %v, want %v", tc.source, tc.outcome, got, tc.want)
		}
	}
	if got := testutil.CollectAndCount(m.events); got != len(tests) {
		t.Errorf("events_total has %d series, want %d", got, len(tests))
	}
	want := `
# HELP sbps_marshal_event_apply_latency_seconds Time from an event's receipt to the end of the pass that applied it.
# TYPE sbps_marshal_event_apply_latency_seconds histogram
sbps_marshal_event_apply_latency_seconds_bucket{le="0.05"} 0
sbps_marshal_event_apply_latency_seconds_bucket{le="0.1"} 0
sbps_marshal_event_apply_latency_seconds_bucket{le="0.25"} 0
sbps_marshal_event_apply_latency_seconds_bucket{le="0.5"} 1
sbps_marshal_event_apply_latency_seconds_bucket{le="1"} 2
sbps_marshal_event_apply_latency_seconds_bucket{le="2.5"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="5"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="10"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="30"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="60"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="120"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="300"} 3
sbps_marshal_event_apply_latency_seconds_bucket{le="+Inf"} 3
sbps_marshal_event_apply_latency_seconds_sum 3.5
sbps_marshal_event_apply_latency_seconds_count 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_event_apply_latency_seconds"); err != nil {
		t.Error(err)
	}
}

func TestCollectEventStatsAtScrapeTime(t *testing.T) {
	m := newTest(t)
	var nats atomic.Uint64
	m.CollectEventStats(func() []events.Stat {
		return []events.Stat{{Source: "s3", Outcome: events.OutcomeEvent, Count: nats.Load()}, {Source: "nats", Outcome: events.OutcomeReconnect, Count: 1}}
	})
	m.CollectEventStats(func() []events.Stat {
		return []events.Stat{{Source: "saveconfig", Outcome: events.OutcomeEvent, Count: 4}, {Source: "s3", Outcome: events.OutcomeEvent, Count: 10}}
	})
	m.CollectEventStats(nil) // ignored
	tests := []struct {
		name  string
		nats  uint64
		wantS float64
	}{
		{"first scrape", 0, 10},
		{"after three more", 3, 13},
		{"after many", 1000, 1010},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nats.Store(tc.nats)
			want := fmt.Sprintf(`
# HELP sbps_marshal_event_source_outcomes_total What the event sources saw, by source (s3, ims, resync, nats, jetstream, saveconfig) and outcome (event, undecodable, reconnect, ack, ...), since the start.
# TYPE sbps_marshal_event_source_outcomes_total counter
sbps_marshal_event_source_outcomes_total{outcome="reconnect",source="nats"} 1
sbps_marshal_event_source_outcomes_total{outcome="event",source="s3"} %g
sbps_marshal_event_source_outcomes_total{outcome="event",source="saveconfig"} 4
`, tc.wantS)
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_event_source_outcomes_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCollectLIOStatsAndNATS(t *testing.T) {
	m := newTest(t)
	names := []string{"sbps_marshal_targetcli_processes_total", "sbps_marshal_targetclid_requests_total", "sbps_marshal_nats_connected"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(""), names...); err != nil {
		t.Errorf("before the functions are set, the metrics must be absent: %v", err)
	}
	var stats atomic.Pointer[lio.Stats]
	stats.Store(&lio.Stats{Processes: 3})
	m.CollectLIOStats(func() lio.Stats { return *stats.Load() })
	var up atomic.Bool
	m.CollectNATSConnected(up.Load)

	const head = `
# HELP sbps_marshal_nats_connected 1 while the NATS connection is up, else 0; absent when NATS is not configured.
# TYPE sbps_marshal_nats_connected gauge
sbps_marshal_nats_connected %d
# HELP sbps_marshal_targetcli_processes_total targetcli processes started by the driver.
# TYPE sbps_marshal_targetcli_processes_total counter
sbps_marshal_targetcli_processes_total %d
# HELP sbps_marshal_targetclid_requests_total Requests sent to targetclid by the driver.
# TYPE sbps_marshal_targetclid_requests_total counter
sbps_marshal_targetclid_requests_total %d
`
	tests := []struct {
		name           string
		stats          lio.Stats
		up             bool
		wantUp         int
		wantP, wantReq int64
	}{
		{"down", lio.Stats{Processes: 3}, false, 0, 3, 0},
		{"up, daemon requests", lio.Stats{Processes: 3, Requests: 7}, true, 1, 3, 7},
		{"down again", lio.Stats{Processes: 9, Requests: 7}, false, 0, 9, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stats.Store(&tc.stats)
			up.Store(tc.up)
			want := fmt.Sprintf(head, tc.wantUp, tc.wantP, tc.wantReq)
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
				t.Error(err)
			}
		})
	}
	m.CollectNATSConnected(nil)
	if n := testutil.CollectAndCount(m.funcs, "sbps_marshal_nats_connected"); n != 0 {
		t.Errorf("after CollectNATSConnected(nil): %d series, want 0", n)
	}
}

// fakeApplier takes a clock step per Apply and returns canned results.
type fakeApplier struct {
	clock   *fakeClock
	step    time.Duration
	results []lio.Result
	err     error
	saves   int
}

func (f *fakeApplier) Apply(_ context.Context, ops []lio.Op) ([]lio.Result, error) {
	f.clock.add(f.step)
	return f.results, f.err
}

func (f *fakeApplier) Save(context.Context) error { f.saves++; return nil }

func TestInstrumentApplier(t *testing.T) {
	tests := []struct {
		name        string
		results     []lio.Result
		err         error
		wantOutcome string
	}{
		{"all applied", []lio.Result{result(lio.CreateLUN, lio.Applied), result(lio.CreateLUN, lio.AlreadyDone)}, nil, "success"},
		{"an op failed", []lio.Result{result(lio.CreateLUN, lio.Applied), result(lio.CreateLUN, lio.Failed)}, nil, "error"},
		{"call failed", []lio.Result{result(lio.CreateLUN, lio.NotAttempted)}, errors.New("timeout"), "error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock(time.Unix(0, 0))
			m := newTest(t, WithClock(clock.now))
			f := &fakeApplier{clock: clock, step: 1500 * time.Millisecond, results: tc.results, err: tc.err}
			a := m.InstrumentApplier(f)
			res, err := a.Apply(t.Context(), []lio.Op{{Kind: lio.CreateLUN}})
			if !errors.Is(err, tc.err) || len(res) != len(tc.results) {
				t.Fatalf("Apply = %d results, %v; want %d, %v (passed through)", len(res), err, len(tc.results), tc.err)
			}
			if err := a.Save(t.Context()); err != nil || f.saves != 1 {
				t.Errorf("Save = %v, saves %d; want nil, 1", err, f.saves)
			}
			want := fmt.Sprintf(`
# HELP sbps_marshal_apply_duration_seconds Duration of applying one batch of operations to LIO through targetcli, by outcome.
# TYPE sbps_marshal_apply_duration_seconds histogram
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="0.05"} 0
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="0.1"} 0
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="0.25"} 0
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="0.5"} 0
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="1"} 0
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="2.5"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="5"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="10"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="30"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="60"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="120"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="300"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="600"} 1
sbps_marshal_apply_duration_seconds_bucket{outcome="%[1]s",le="+Inf"} 1
sbps_marshal_apply_duration_seconds_sum{outcome="%[1]s"} 1.5
sbps_marshal_apply_duration_seconds_count{outcome="%[1]s"} 1
`, tc.wantOutcome)
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_apply_duration_seconds"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestBuildInfo(t *testing.T) {
	m := newTest(t)
	want := fmt.Sprintf(`
# HELP sbps_marshal_build_info Always 1; the labels name the running build.
# TYPE sbps_marshal_build_info gauge
sbps_marshal_build_info{commit=%q,goversion=%q,version=%q} 1
`, commit(), runtime.Version(), version.Version)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_build_info"); err != nil {
		t.Error(err)
	}
	if commit() == "" {
		t.Error("commit() is empty; want a commit or \"unknown\"")
	}
}

// feedAll drives every metric so that lint and the scrape see them all.
func feedAll(t *testing.T, m *Metrics) {
	t.Helper()
	m.ObservePass(FullPass, &projector.Report{
		Desired:  &projector.Desired{RootfsIncompleteReason: "IMS listing failed: 503"},
		Plan:     massDeletePlan(t),
		Results:  []lio.Result{result(lio.CreateBackstore, lio.Applied), result(lio.CreateLUN, lio.Failed)},
		Duration: 2 * time.Second,
	}, nil, func() []projector.Entry {
		return []projector.Entry{
			entry(projector.Projected, projector.PE, ""),
			entry(projector.Pending, projector.Rootfs, projector.CodeS3fsLag),
			entry(projector.Rejected, projector.Rootfs, projector.CodeNotInS3),
			entry(projector.Held, projector.PE, projector.HeldMassDelete),
		}
	})
	m.ObserveEvents([]events.Event{{Kind: events.S3Object, Received: time.Now().Add(-time.Second)}}, nil)
	m.IgnoreEvents([]events.Event{{Kind: events.LIOChanged}})
	m.RegistryFallback()
	m.InventoryError(SourceManifest)
	m.CollectEventStats(func() []events.Stat { return []events.Stat{{Source: "nats", Outcome: events.OutcomeConnect, Count: 1}} })
	m.CollectLIOStats(func() lio.Stats { return lio.Stats{Processes: 2} })
	m.CollectNATSConnected(func() bool { return true })
	a := m.InstrumentApplier(&fakeApplier{clock: newClock(time.Now())})
	if _, err := a.Apply(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestLint(t *testing.T) {
	m := New() // with the runtime collectors: they must lint too
	feedAll(t, m)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "sbps_marshal_") {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				// Low cardinality: no label may carry an image id, key, path or name.
				if v := l.GetValue(); strings.ContainsAny(v, "/ ") && name != "sbps_marshal_build_info" {
					t.Errorf("%s{%s=%q}: label value looks like a key or a path", name, l.GetName(), v)
				}
			}
		}
	}
}

// Every Metrics has its own registry: two can coexist, and nothing lands on
// the default registerer.
func TestPrivateRegistries(t *testing.T) {
	a, b := New(), New()
	a.RegistryFallback()
	if got := testutil.ToFloat64(b.regFallbacks); got != 0 {
		t.Errorf("b's registry_fallbacks_total = %v after a's increment, want 0", got)
	}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "sbps_marshal_") {
			t.Errorf("%s is on the default registry", mf.GetName())
		}
	}
}

func TestRegistryMismatchGauge(t *testing.T) {
	m := New(WithoutRuntimeCollectors())
	one, two := 1, 2
	m.SetStatus([]projector.Entry{
		{State: projector.Projected, Kind: projector.PE, LUN: &one, RegistryLUN: &one},
		{State: projector.Projected, Kind: projector.PE, LUN: &one, RegistryLUN: &two},
		{State: projector.Projected, Kind: projector.Rootfs, LUN: &two},
	})
	want := "# HELP sbps_marshal_lun_registry_mismatches LUNs in the latest status view whose index differs from the LUN registry's (moved only by sync --renumber).\n# TYPE sbps_marshal_lun_registry_mismatches gauge\nsbps_marshal_lun_registry_mismatches 1\n"
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sbps_marshal_lun_registry_mismatches"); err != nil {
		t.Error(err)
	}
}

// TestStatusBuiltAtScrape: a pass hands over how to build its status view;
// it is built once, by the next scrape, not by every pass.
func TestStatusBuiltAtScrape(t *testing.T) {
	m := newTest(t)
	calls := 0
	view := func() []projector.Entry {
		calls++
		return []projector.Entry{entry(projector.Projected, projector.PE, ""), entry(projector.Pending, projector.PE, projector.CodeS3fsLag)}
	}
	for range 3 {
		m.ObservePass(KeysPass, &projector.Report{Plan: &projector.Plan{}, Desired: &projector.Desired{RootfsComplete: true}}, nil, view)
	}
	if calls != 0 {
		t.Fatalf("status view built %d times by passes; want 0 before a scrape", calls)
	}
	checkProblems(t, m, map[string]float64{"pending/s3fs_lag": 1})
	checkProblems(t, m, map[string]float64{"pending/s3fs_lag": 1})
	if calls != 1 {
		t.Fatalf("status view built %d times by two scrapes; want 1", calls)
	}
}
