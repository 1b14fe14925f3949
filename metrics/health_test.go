package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// scrape returns GET /metrics of h.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// TestAlertSeriesExistBeforeAnyPass scrapes a fresh registry: every series
// an alert of deploy/monitoring reads must be there, at its starting value,
// before the first pass, or the alert cannot tell "fine" from "no data".
func TestAlertSeriesExistBeforeAnyPass(t *testing.T) {
	m := newTest(t)
	body := scrape(t, m.Handler(nil))
	want := []string{
		`sbps_marshal_ready 0`,
		`sbps_marshal_gate{state="open"} 0`,
		`sbps_marshal_gate{state="closed"} 0`,
		`sbps_marshal_gate{state="unknown"} 1`,
		`sbps_marshal_resync_interval_seconds 0`,
		`sbps_marshal_last_full_resync_timestamp_seconds 0`,
		`sbps_marshal_consecutive_failed_passes 0`,
		`sbps_marshal_mass_delete_refusals_total 0`,
	}
	for _, r := range heldReasons {
		want = append(want, fmt.Sprintf(`sbps_marshal_held_deletes{reason="%s"} 0`, r))
	}
	for _, k := range passKinds {
		for _, o := range passOutcomes {
			want = append(want, fmt.Sprintf(`sbps_marshal_passes_total{kind="%s",outcome="%s"} 0`, k, o))
		}
	}
	for _, src := range []InventorySource{SourceS3, SourceIMS, SourceManifest, SourceLIO} {
		want = append(want, fmt.Sprintf(`sbps_marshal_inventory_errors_total{source="%s"} 0`, src))
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		lines[l] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("fresh /metrics lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestReadyGauge(t *testing.T) {
	m := newTest(t)
	ready := errors.New("first full reconcile not done")
	m.CollectReady(func() error { return ready })
	check := func(want float64) {
		t.Helper()
		exp := fmt.Sprintf("\n# HELP sbps_marshal_ready 1 when the agent's projections are current (the latest pass succeeded after a full one), 0 otherwise; /readyz says why.\n# TYPE sbps_marshal_ready gauge\nsbps_marshal_ready %g\n", want)
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(exp), "sbps_marshal_ready"); err != nil {
			t.Error(err)
		}
	}
	check(0)
	ready = nil
	check(1)
}

func TestSetGate(t *testing.T) {
	tests := []struct {
		name string
		open bool
		err  error
		want GateState
	}{
		{"open", true, nil, GateOpen},
		{"closed", false, nil, GateClosed},
		{"no answer", false, errors.New("kubectl: connection refused"), GateUnknown},
		{"no answer wins over open", true, errors.New("timeout"), GateUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTest(t)
			m.SetGate(true, nil) // the previous state must be cleared
			m.SetGate(tt.open, tt.err)
			for _, s := range gateStates {
				want := 0.0
				if s == tt.want {
					want = 1
				}
				if got := testutil.ToFloat64(m.gate.WithLabelValues(string(s))); got != want {
					t.Errorf("SetGate(%v, %v): gate{state=%q} = %v, want %v", tt.open, tt.err, s, got, want)
				}
			}
		})
	}
}

func TestSetResyncInterval(t *testing.T) {
	m := newTest(t)
	m.SetResyncInterval(3 * time.Minute)
	if got := testutil.ToFloat64(m.resyncInterval); got != 180 {
		t.Errorf("resync_interval_seconds = %v, want 180", got)
	}
}

func TestConsecutiveFailedPasses(t *testing.T) {
	m := newTest(t)
	ok := &projector.Report{Desired: &projector.Desired{RootfsComplete: true}, Plan: &projector.Plan{}}
	steps := []struct {
		kind PassKind
		rep  *projector.Report
		err  error
		want float64
	}{
		{FullPass, nil, errors.New("S3 listing failed: 503"), 1},
		{FullPass, nil, errors.New("S3 listing failed: 503"), 2},
		{KeysPass, ok, errors.New("1 of 2 operation(s) failed"), 3},
		{FullPass, nil, fmt.Errorf("shutting down: %w", context.Canceled), 3}, // shutdown: no change
		{FullPass, nil, nil, 0}, // node gate closed: not a failure
		{FullPass, nil, errors.New("node gate cannot answer"), 1},
		{KeysPass, ok, nil, 0},
	}
	for i, s := range steps {
		m.ObservePass(s.kind, s.rep, s.err, nil)
		if got := testutil.ToFloat64(m.failedInARow); got != s.want {
			t.Errorf("after pass %d (%v): consecutive_failed_passes = %v, want %v", i, s.err, got, s.want)
		}
	}
}

// heldPlan is a real plan from the projector that keeps the managed
// backstores it would delete, for the reason d and the managed set give.
func heldPlan(t *testing.T, d *projector.Desired, backstores ...[2]string) *projector.Plan {
	t.Helper()
	var sos []string
	for _, b := range backstores {
		sos = append(sos, fmt.Sprintf(`{"plugin":"fileio","name":%q,"dev":%q,"wwn":"x"}`, b[0], b[1]))
	}
	actual, err := lio.Parse([]byte(`{"storage_objects":[` + strings.Join(sos, ",") + `],
		"targets":[{"fabric":"iscsi","wwn":"` + target + `","tpgs":[{"tag":1,"luns":[]}]}]}`))
	if err != nil {
		t.Fatalf("parsing saveconfig: %v", err)
	}
	plan, err := projector.MakePlan(d, actual, layout, projector.PlanOptions{Target: target, MaxDeleteFraction: 0.5})
	if err != nil {
		t.Fatalf("MakePlan: %v", err)
	}
	return plan
}

func TestHeldDeletes(t *testing.T) {
	rootfs := [2]string{"r1", "/mnt/boot-images/abc/rootfs"}
	tests := []struct {
		name string
		plan func(t *testing.T) *projector.Plan
		want map[projector.Code]float64
	}{
		{"mass delete", massDeletePlan, map[projector.Code]float64{projector.HeldMassDelete: 2}},
		{"IMS incomplete", func(t *testing.T) *projector.Plan {
			return heldPlan(t, &projector.Desired{RootfsIncompleteReason: "IMS listing failed: 503"}, rootfs)
		}, map[projector.Code]float64{projector.HeldIMSIncomplete: 1}},
		{"pending", func(t *testing.T) *projector.Plan {
			return heldPlan(t, &projector.Desired{RootfsComplete: true,
				Pending: map[string]projector.Problem{"r1": {Name: "r1", Reason: "s3fs shows 0 bytes, S3 says 10"}}}, rootfs)
		}, map[projector.Code]float64{projector.HeldPending: 1}},
		{"unconfirmed", func(t *testing.T) *projector.Plan {
			// The reason projector.Inventory gives an image the IMS listing left out.
			return heldPlan(t, &projector.Desired{RootfsComplete: true,
				Unconfirmed: map[string]projector.Problem{"r1": {Name: "r1", Reason: "kept: the IMS listing left out image abc, not confirmed gone yet (0 of 1 left-out image(s) confirmed gone this pass, at most 16 IMS GETs per pass; the next pass asks again)"}}}, rootfs)
		}, map[projector.Code]float64{projector.HeldUnconfirmed: 1}},
		{"refused recreate, and a change without a code", func(t *testing.T) *projector.Plan {
			return &projector.Plan{Held: []projector.Change{
				{Action: projector.Recreate, Name: "r1", Code: projector.HeldRefused},
				{Action: projector.Delete, Name: "r2"},
			}}
		}, map[projector.Code]float64{projector.HeldRefused: 1, heldOther: 1}},
		{"nothing held", func(t *testing.T) *projector.Plan { return &projector.Plan{} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTest(t)
			// A previous pass's holds are replaced, not added to.
			m.ObservePass(FullPass, &projector.Report{Plan: massDeletePlan(t)}, nil, nil)
			m.ObservePass(FullPass, &projector.Report{Desired: &projector.Desired{RootfsComplete: true}, Plan: tt.plan(t)}, nil, nil)
			for _, r := range heldReasons {
				if got, want := testutil.ToFloat64(m.heldDeletes.WithLabelValues(r)), tt.want[projector.Code(r)]; got != want {
					t.Errorf("held_deletes{reason=%q} = %v, want %v", r, got, want)
				}
			}
		})
	}
	// A pass without a plan (failed early) leaves the holds as they were.
	m := newTest(t)
	m.ObservePass(FullPass, &projector.Report{Plan: massDeletePlan(t)}, nil, nil)
	m.ObservePass(FullPass, nil, errors.New("S3 listing failed"), nil)
	if got := testutil.ToFloat64(m.heldDeletes.WithLabelValues(string(projector.HeldMassDelete))); got != 2 {
		t.Errorf("after a failed pass without a plan: held_deletes{reason=mass_delete} = %v, want 2 (kept)", got)
	}
}
