package metrics_test

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// The agent builds one Metrics, serves its handler on METRICS_ADDR (with
// metrics.Serve) and reports every pass; /readyz turns 200 after the first
// successful full pass.
func Example() {
	m := metrics.New()
	var firstDone atomic.Bool
	ready := func() error {
		if !firstDone.Load() {
			return errors.New("first full reconcile not done")
		}
		return nil
	}
	srv := httptest.NewServer(m.Handler(ready)) // the agent: go metrics.Serve(ctx, cfg.MetricsAddr, m.Handler(ready))
	defer srv.Close()

	readyz := func() {
		resp, err := srv.Client().Get(srv.URL + "/readyz")
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, body)
	}
	readyz()

	rep := &projector.Report{Desired: &projector.Desired{RootfsComplete: true}, Plan: &projector.Plan{}, Duration: time.Second}
	m.ObservePass(metrics.FullPass, rep, nil, func() []projector.Entry {
		return []projector.Entry{{State: projector.Projected, Kind: projector.PE}} // rep.Status(...) in the agent
	})
	firstDone.Store(true)
	readyz()
	// Output:
	// 503 not ready: first full reconcile not done
	// 200 ok
}
