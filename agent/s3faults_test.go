package agent

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// relS3Proxy starts a rig.FaultProxy in front of the stack's versitygw and
// returns it with the environment that points the agent's S3 client at it
// (uploads by the test still go to versitygw directly, as IMS's do).
func relS3Proxy(t *testing.T, s *rig.Stack) (*rig.FaultProxy, []string) {
	t.Helper()
	p, err := rig.StartFaultProxy(s.S3.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, []string{"SBPS_MARSHAL_S3_HOST=" + p.Host(), "SBPS_MARSHAL_S3_PROTO=http"}
}

// TestReliabilityS3Faults puts a fault-injecting proxy between the running
// agent and versitygw and has S3 answer 500, 503, answer slower than the
// client's timeout, and reset connections. Each must end as an S3 outage
// does: no LUN removed (saveconfig.json's LUNs unchanged), the agent not
// ready with a reason naming S3, and recovery by itself once the fault is
// cleared (an upload made during the fault projected, ready again).
func TestReliabilityS3Faults(t *testing.T) {
	s := startStack(t)
	p, env := relS3Proxy(t, s)
	base := []naming.ID{relPutPE(t, s, "base-1.squashfs"), rootfsID(relAddImage(t, s, "cos", true))}
	r := relRun(t, s, Options{}, append(env, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_S3_TIMEOUT=3")...)
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	want := append([]naming.ID(nil), base...)
	row := relTable(t)

	cases := []struct {
		name, slug string
		inject     func()
	}{
		{"500", "500", func() { p.Set(rig.Fault500) }},
		{"503", "503", func() { p.Set(rig.Fault503) }},
		{"slower than S3_TIMEOUT", "slow", func() { p.SetSlow(10 * time.Minute) }},
		{"connection reset", "reset", func() { p.Set(rig.FaultReset) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := row.row(t, "S3 "+tc.name+" (fault proxy in front of versitygw)",
				"no LUN removed; not ready, reason names S3; recovers by itself once cleared")
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("agent log:\n%s", relTail(r.log.String(), 6000))
				}
			})
			savedBefore := luns(t, s)
			failed := r.log.count("pass failed")
			faulted := p.Stats().Faulted
			tc.inject()
			id := relPutPE(t, s, "during-"+tc.slug+".squashfs")
			start := time.Now()
			r.Resync("test: S3 " + tc.name)
			relWait(t, 90*time.Second, "a failed pass while S3 answers "+tc.name, func() error {
				if r.log.count("pass failed") > failed {
					return nil
				}
				return fmt.Errorf("no failed pass (proxy faulted %d requests)", p.Stats().Faulted-faulted)
			})
			rec.measured("first failed pass %s after the fault", time.Since(start).Round(100*time.Millisecond))
			if p.Stats().Faulted == faulted {
				t.Errorf("the proxy faulted no request: the agent did not talk to S3 through it")
			}
			why := r.Ready()
			if why == nil || !strings.Contains(why.Error(), "S3") {
				t.Errorf("Ready() while S3 answers %s = %v, want an error naming S3", tc.name, why)
			}
			rec.saw("not ready, reason names S3: %v", why != nil && strings.Contains(why.Error(), "S3"))
			savedDuring := luns(t, s)
			if !maps.Equal(savedDuring, savedBefore) {
				t.Errorf("saveconfig.json's LUNs changed while S3 answered %s: %v, before %v", tc.name, savedDuring, savedBefore)
			}
			rec.saw("saveconfig.json LUNs unchanged: %v", maps.Equal(savedDuring, savedBefore))
			r.alive(t)
			p.Set(rig.FaultNone)
			cleared := time.Now()
			want = append(want, id)
			relWait(t, 60*time.Second, "recovery after S3 "+tc.name, func() error {
				if err := relExact(s, want...); err != nil {
					return err
				}
				return r.Ready()
			})
			rec.saw("recovered by itself (upload made during the fault projected, ready): true")
			rec.measured("recovered %s after the fault cleared", time.Since(cleared).Round(100*time.Millisecond))
			g.watch(id)
			rec.guard(g)
		})
	}
	g.check(t, "S3 faults")
}
