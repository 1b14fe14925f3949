package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestHandlerHealthAndReadiness(t *testing.T) {
	var notReady atomic.Pointer[error]
	setReady := func(err error) { notReady.Store(&err) }
	setReady(errors.New("first full reconcile not done"))
	m := newTest(t)
	srv := httptest.NewServer(m.Handler(func() error { return *notReady.Load() }))
	t.Cleanup(srv.Close)

	tests := []struct {
		name     string
		path     string
		ready    error
		wantCode int
		wantBody string
	}{
		{"alive before the first pass", "/healthz", errors.New("first full reconcile not done"), 200, "ok\n"},
		{"not ready before the first pass", "/readyz", errors.New("first full reconcile not done"), 503, "not ready: first full reconcile not done\n"},
		{"ready after it", "/readyz", nil, 200, "ok\n"},
		{"LIO unreachable", "/readyz", errors.New("LIO unreachable: targetcli timed out"), 503, "not ready: LIO unreachable: targetcli timed out\n"},
		{"alive while not ready", "/healthz", errors.New("LIO unreachable"), 200, "ok\n"},
		{"unknown path", "/nope", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setReady(tc.ready)
			code, body := get(t, srv.URL+tc.path)
			if code != tc.wantCode || (tc.wantBody != "" && body != tc.wantBody) {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestHandlerNilReadyIsReady(t *testing.T) {
	srv := httptest.NewServer(newTest(t).Handler(nil))
	t.Cleanup(srv.Close)
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /readyz = %d %q, want 200 \"ok\\n\"", code, body)
	}
}

// TestScrape feeds a pass and events the way the agent does and checks the
// exact series a scrape of /metrics shows, before and after.
func TestScrape(t *testing.T) {
	clock := newClock(time.Unix(1_800_000_000, 0))
	m := New(WithClock(clock.now))
	var received atomic.Uint64
	m.CollectEventStats(func() []events.Stat {
		return []events.Stat{{Source: "s3", Outcome: events.OutcomeEvent, Count: received.Load()}}
	})
	srv := httptest.NewServer(m.Handler(nil))
	t.Cleanup(srv.Close)

	before := []string{
		`sbps_marshal_build_info{commit=`,
		`sbps_marshal_inventory_errors_total{source="s3"} 0`,
		`sbps_marshal_last_full_resync_timestamp_seconds 0`,
		`sbps_marshal_mass_delete_refusals_total 0`,
		`sbps_marshal_event_source_outcomes_total{outcome="event",source="s3"} 0`,
		`go_goroutines `,
		`process_start_time_seconds `,
	}
	_, body := get(t, srv.URL+"/metrics")
	for _, line := range before {
		if !strings.Contains(body, line) {
			t.Errorf("first scrape lacks %q", line)
		}
	}
	if strings.Contains(body, "sbps_marshal_projections{") {
		t.Error("first scrape has sbps_marshal_projections before any status view")
	}

	received.Store(3)
	ev := events.Event{Kind: events.S3Object, Received: clock.now()}
	clock.add(1500 * time.Millisecond)
	m.ObservePass(FullPass, &projector.Report{
		Desired:  &projector.Desired{RootfsComplete: true},
		Plan:     massDeletePlan(t),
		Results:  []lio.Result{result(lio.CreateBackstore, lio.Applied), result(lio.CreateLUN, lio.Failed)},
		Duration: 1200 * time.Millisecond,
	}, nil, func() []projector.Entry {
		return []projector.Entry{
			entry(projector.Projected, projector.PE, ""),
			entry(projector.Held, projector.PE, projector.HeldMassDelete),
			entry(projector.Held, projector.PE, projector.HeldMassDelete),
			entry(projector.Rejected, projector.Rootfs, projector.CodeNoEtag),
		}
	})
	m.ObserveEvents([]events.Event{ev, ev, ev}, nil)

	after := []string{
		`sbps_marshal_projections{kind="pe",state="projected"} 1`,
		`sbps_marshal_projections{kind="pe",state="held"} 2`,
		`sbps_marshal_projections{kind="rootfs",state="rejected"} 1`,
		`sbps_marshal_projections{kind="rootfs",state="pending"} 0`,
		`sbps_marshal_image_problems{reason="no_etag",state="rejected"} 1`,
		`sbps_marshal_image_problems{reason="s3fs_lag",state="pending"} 0`,
		`sbps_marshal_lio_operations_total{op="create-backstore",outcome="applied"} 1`,
		`sbps_marshal_lio_operations_total{op="create-lun",outcome="failed"} 1`,
		`sbps_marshal_mass_delete_refusals_total 1`,
		`sbps_marshal_passes_total{kind="full",outcome="success"} 1`,
		`sbps_marshal_pass_duration_seconds_count{kind="full",outcome="success"} 1`,
		`sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="2.5"} 1`,
		`sbps_marshal_pass_duration_seconds_bucket{kind="full",outcome="success",le="1"} 0`,
		`sbps_marshal_last_full_resync_timestamp_seconds 1.8000000015e+09`,
		`sbps_marshal_events_total{outcome="applied",source="s3"} 3`,
		`sbps_marshal_event_apply_latency_seconds_count 3`,
		`sbps_marshal_event_apply_latency_seconds_sum 4.5`,
		`sbps_marshal_event_source_outcomes_total{outcome="event",source="s3"} 3`,
	}
	_, body = get(t, srv.URL+"/metrics")
	for _, line := range after {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("scrape after the pass lacks %q", line)
		}
	}
}

func TestServeDisabled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "", http.NotFoundHandler()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve(\"\") = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve with an empty address did not return at once")
	}
}

func TestServeBadAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tests := []struct{ name, addr string }{
		{"in use", ln.Addr().String()},
		{"not an address", "no-port-here"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Serve(t.Context(), tc.addr, http.NotFoundHandler())
			var opErr *net.OpError
			var addrErr *net.AddrError
			if err == nil || !(errors.As(err, &opErr) || errors.As(err, &addrErr)) || !strings.Contains(err.Error(), "METRICS_ADDR") {
				t.Errorf("Serve(%q) = %v, want a wrapped net error naming METRICS_ADDR", tc.addr, err)
			}
		})
	}
}

// ServeListener serves until the context ends, then returns nil and frees
// the port.
func TestServeListenerShutsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, newTest(t).Handler(nil)) }()

	if code, body := get(t, "http://"+addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return within 10s of the context ending")
	}
	// The port is free again: poll with a deadline (the kernel may lag).
	deadline := time.Now().Add(5 * time.Second)
	for {
		l2, err := net.Listen("tcp", addr)
		if err == nil {
			l2.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %s still busy after shutdown: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Serve on a real address also stops when the context ends.
func TestServeStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	t.Cleanup(cancel)
	start := time.Now()
	if err := Serve(ctx, "127.0.0.1:0", http.NotFoundHandler()); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Serve took %s to stop", d)
	}
}
