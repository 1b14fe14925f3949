package agent

// Reliability tests: real faults injected into the rig's real components
// (NATS, versitygw, the IMS server, the SPIFFE Workload API, the targetcli
// simulator) while Agent.Run runs. Each test measures outcomes: LUNs wrongly
// removed (sampled from the simulated kernel state every few milliseconds),
// images lost, 0-byte LUNs, time to recover, and records its rows for
// docs/RELIABILITY.md (reldoc_test.go), which TestReliabilityDoc generates.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// ---- helpers ---------------------------------------------------------------

// relLog is a concurrency-safe buffer for a test's logger.
type relLog struct {
	mu     gosync.Mutex
	b      bytes.Buffer
	passes []relPass
}

func (l *relLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// notePass records every pass of the agent (Options.OnPass), so that a
// test waiting for its own pass cannot miss it when later passes follow.
func (l *relLog) notePass(trigger string, rep *projector.Report, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.passes = append(l.passes, relPass{trigger: trigger, rep: rep, err: err})
}

// passesSince returns the passes recorded after the first n.
func (l *relLog) passesSince(n int) ([]relPass, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]relPass(nil), l.passes[min(n, len(l.passes)):]...), len(l.passes)
}

type relPass struct {
	trigger string
	rep     *projector.Report
	err     error
}

func (l *relLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain s.
func (l *relLog) count(s string) int { return strings.Count(l.String(), s) }

// relNewAgent is newAgentWith with the agent's logger writing to buf at
// debug level (and to stderr too when SBPS_TEST_LOG is set).
func relNewAgent(t *testing.T, s *rig.Stack, o Options, buf *relLog, env ...string) (*Agent, *config.Config) {
	t.Helper()
	o.OnPass = buf.notePass
	var w io.Writer = buf
	if os.Getenv("SBPS_TEST_LOG") != "" {
		w = relMulti{buf, os.Stderr}
	}
	return newAgentLogged(t, s, o, w, env...)
}

type relMulti struct {
	a *relLog
	b *os.File
}

func (m relMulti) Write(p []byte) (int, error) {
	m.b.Write(p)
	return m.a.Write(p)
}

// relAgent is an agent whose Run loop runs in a goroutine.
type relAgent struct {
	*Agent
	log  *relLog
	done chan error
}

// relRun starts Agent.Run and waits for its first successful pass. The
// cleanup stops it and fails the test if Run returned an error.
func relRun(t *testing.T, s *rig.Stack, o Options, env ...string) *relAgent {
	t.Helper()
	buf := &relLog{}
	a, _ := relNewAgent(t, s, o, buf, env...)
	return relStart(t, a, buf)
}

func relStart(t *testing.T, a *Agent, buf *relLog) *relAgent {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	r := &relAgent{Agent: a, log: buf, done: make(chan error, 1)}
	ready := make(chan struct{})
	var once gosync.Once
	go func() { r.done <- a.Run(ctx, func() { once.Do(func() { close(ready) }) }) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after its context ended")
		}
	})
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("Run returned before its first pass: %v\n%s", err, buf.String())
	case <-time.After(40 * time.Second):
		t.Fatalf("no successful first pass after 40s\n%s", relTail(buf.String(), 3000))
	}
	return r
}

// alive fails the test if Run has returned (the agent must never exit
// because of a fault).
func (r *relAgent) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("Run returned during a fault: %v", err)
	default:
	}
}

func relTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// relWait polls f until it returns nil, failing with its last error after
// timeout. It returns how long it took.
func relWait(t *testing.T, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: still %v after %s", what, err, timeout)
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// relLUNGuard samples the node's live (kernel) state until the test ends and
// records every watched projection that was ever missing its backstore or
// its LUN, and every managed backstore of 0 bytes.
type relLUNGuard struct {
	s       *rig.Stack
	mu      gosync.Mutex
	watched map[string]bool
	removed map[string]bool
	zero    map[string]bool
	samples int
}

func relGuard(t *testing.T, s *rig.Stack, ids ...naming.ID) *relLUNGuard {
	t.Helper()
	g := &relLUNGuard{s: s, watched: map[string]bool{}, removed: map[string]bool{}, zero: map[string]bool{}}
	g.watch(ids...)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			g.sample()
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return g
}

func (g *relLUNGuard) watch(ids ...naming.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		g.watched[id.Name] = true
	}
}

func (g *relLUNGuard) unwatch(ids ...naming.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		delete(g.watched, id.Name)
	}
}

func (g *relLUNGuard) sample() {
	c, err := g.s.Node.Live()
	if err != nil {
		return
	}
	tgt, _ := c.Target(g.s.Node.IQN())
	tpg, ok := tgt.TPG(1)
	if !ok {
		return
	}
	present := map[string]bool{}
	for _, so := range c.StorageObjects {
		if so.Plugin != "fileio" || !strings.HasPrefix(so.Dev, g.s.Mount()+"/") {
			continue
		}
		if _, ok := tpg.LUNFor(so.Path()); ok {
			present[so.Name] = true
		}
		if so.SizeBytes() <= 0 {
			g.mu.Lock()
			g.zero[so.Name] = true
			g.mu.Unlock()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.samples++
	for name := range g.watched {
		if !present[name] {
			g.removed[name] = true
		}
	}
}

// check fails the test when a watched LUN was ever missing or a 0-byte LUN
// existed, and logs the measurement.
func (g *relLUNGuard) check(t *testing.T, step string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.samples == 0 {
		t.Fatalf("%s: the LUN guard took no sample of the live state", step)
	}
	t.Logf("%s: LUNs wrongly removed = %d, 0-byte LUNs = %d (%d samples of the live state)", step, len(g.removed), len(g.zero), g.samples)
	if len(g.removed) > 0 {
		t.Errorf("%s: %d LUN(s) wrongly removed from the live state: %v", step, len(g.removed), relKeys(g.removed))
	}
	if len(g.zero) > 0 {
		t.Errorf("%s: 0-byte LUN(s) projected: %v", step, relKeys(g.zero))
	}
}

func relKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// exact checks that the live and saved state hold exactly ids, each
// backstore with exactly one LUN, and no LUN without its backstore.
func relExact(s *rig.Stack, ids ...naming.ID) error {
	var want []string
	for _, id := range ids {
		want = append(want, id.Name)
	}
	slices.Sort(want)
	for _, src := range []string{"live", "saved"} {
		cfg, err := s.Node.Live()
		if src == "saved" {
			cfg, err = s.Saved()
		}
		if err != nil {
			return fmt.Errorf("%s state: %w", src, err)
		}
		tgt, _ := cfg.Target(s.Node.IQN())
		tpg, ok := tgt.TPG(1)
		if !ok {
			return fmt.Errorf("%s state: no tpg1", src)
		}
		var got []string
		objects := map[string]bool{}
		for _, so := range cfg.StorageObjects {
			objects[so.Path()] = true
			if so.Plugin != "fileio" || !strings.HasPrefix(so.Dev, s.Mount()+"/") {
				continue
			}
			got = append(got, so.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s backstores %v, want %v", src, got, want)
		}
		perObject := map[string]int{}
		for _, l := range tpg.LUNs {
			if !objects[l.StorageObject] {
				return fmt.Errorf("%s: lun%d has no backstore (%s)", src, l.Index, l.StorageObject)
			}
			perObject[l.StorageObject]++
		}
		for _, name := range got {
			if n := perObject["/backstores/fileio/"+name]; n != 1 {
				return fmt.Errorf("%s: backstore %s has %d LUNs, want 1", src, name, n)
			}
		}
	}
	return nil
}

func relData(t *testing.T, n int) []byte {
	t.Helper()
	b, err := rig.ImageBytes(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func relPutPE(t *testing.T, s *rig.Stack, name string) naming.ID {
	t.Helper()
	key, err := s.PutPE(t.Context(), name, relData(t, 8<<10))
	if err != nil {
		t.Fatal(err)
	}
	return peID(key)
}

func relAddImage(t *testing.T, s *rig.Stack, name string, tagged bool) rig.Image {
	t.Helper()
	img, err := s.AddImage(t.Context(), name, relData(t, 8<<10), tagged)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func relStream(t *testing.T, s *rig.Stack) jetstream.JetStream {
	t.Helper()
	_, js := streamOn(t, s)
	return js
}

// relPassAfter resyncs and waits for a pass that started after now to finish.
func relPassAfter(t *testing.T, r *relAgent, trigger string) *projector.Report {
	t.Helper()
	_, seen := r.log.passesSince(0)
	r.Resync(trigger)
	var rep *projector.Report
	relWait(t, 30*time.Second, "a pass triggered by "+trigger, func() error {
		passes, _ := r.log.passesSince(seen)
		for _, p := range passes {
			if p.trigger == trigger && p.rep != nil {
				rep = p.rep
				return nil
			}
		}
		var triggers []string
		for _, p := range passes {
			triggers = append(triggers, fmt.Sprintf("%q (err %v)", p.trigger, p.err))
		}
		return fmt.Errorf("passes since the request: %v", triggers)
	})
	return rep
}

// ---- faults on the bus and the services ---------------------------------------

// TestReliabilityNATSRestart kills the NATS server while uploads flow and
// brings it back: the agent keeps running, every uploaded image ends up
// projected (nothing lost), no LUN is removed.
func TestReliabilityNATSRestart(t *testing.T) {
	s := startStack(t)
	relStream(t, s)
	base := []naming.ID{relPutPE(t, s, "base-1.squashfs"), relPutPE(t, s, "base-2.squashfs")}
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS")
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	rec := relTable(t).row(t, "NATS server killed and restarted while uploads flow (JetStream stream SBPS); uploads made while it is down",
		"agent keeps running; every upload projected, those made during the outage by the resync after reconnect; no LUN removed")
	defer rec.guard(g)

	all := slices.Clone(base)
	upload := func(i int) {
		all = append(all, relPutPE(t, s, fmt.Sprintf("flow-%02d.squashfs", i)))
	}
	for i := range 3 {
		upload(i)
	}
	s.NATS.Shutdown()
	for i := 3; i < 8; i++ { // uploads while the bus is down: their notifications are lost
		upload(i)
	}
	r.alive(t)
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	for i := 8; i < 10; i++ {
		upload(i)
	}
	waitLUNs(t, s, "after NATS restart", all...)
	t.Logf("NATS restart -> all %d images projected: %s (events lost by the agent = 0)", len(all), time.Since(restarted).Round(time.Millisecond))
	rec.saw("uploads projected: %d of %d (5 made while NATS was down)", len(all)-len(base), 10)
	rec.measured("all projected %s after the restart", time.Since(restarted).Round(100*time.Millisecond))
	r.alive(t)
	rec.saw("agent running")
	if n := r.log.count("reconnect"); n == 0 {
		t.Error("no reconnect logged; the resync after reconnect is what catches up")
	}
	rec.saw("reconnect logged: %v", r.log.count("reconnect") > 0)
	err := relExact(s, all...)
	if err != nil {
		t.Error(err)
	}
	rec.saw("exact state: %v", err == nil)
	g.check(t, "NATS restart")
}

// TestReliabilityS3Outage stops and kills the S3 server: passes fail with
// nothing changed, and the agent recovers by itself when S3 is back.
func TestReliabilityS3Outage(t *testing.T) {
	s := startStack(t)
	base := []naming.ID{relPutPE(t, s, "base-1.squashfs"), rootfsID(relAddImage(t, s, "cos", true))}
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	row := relTable(t)
	for _, how := range []string{"stop", "kill"} {
		t.Run(how, func(t *testing.T) {
			what := map[string]string{"stop": "S3 unreachable (versitygw stopped)", "kill": "S3 process killed (SIGKILL)"}[how]
			rec := row.row(t, what, "pass fails with nothing changed; not ready, reason names S3; recovers by itself once S3 is back")
			defer rec.guard(g)
			savedBefore := luns(t, s)
			failedBefore := r.log.count("pass failed")
			var err error
			if how == "stop" {
				err = s.S3.Stop()
			} else {
				err = s.S3.Kill()
			}
			if err != nil {
				t.Fatal(err)
			}
			r.Resync("test: S3 " + how)
			relWait(t, 20*time.Second, "a failed pass while S3 is down", func() error {
				if r.log.count("pass failed") > failedBefore {
					return nil
				}
				return fmt.Errorf("no failed pass")
			})
			why := r.Ready()
			if why == nil || !strings.Contains(why.Error(), "S3") {
				t.Errorf("Ready() with S3 down = %v, want an error naming S3", why)
			}
			rec.saw("not ready, reason names S3: %v", why != nil && strings.Contains(why.Error(), "S3"))
			rec.saw("saveconfig.json LUNs unchanged: %v", maps.Equal(luns(t, s), savedBefore))
			r.alive(t)
			if err := s.S3.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
			back := time.Now()
			// An upload right after the restart: the agent's own retry (backoff)
			// must pick it up, no resync asked for.
			id := relPutPE(t, s, "after-"+how+".squashfs")
			base = append(base, id)
			relWait(t, 40*time.Second, "recovery after S3 "+how, func() error {
				if err := relExact(s, base...); err != nil {
					return err
				}
				return r.Ready()
			})
			t.Logf("S3 %s: recovered (new image projected, ready) %s after restart", how, time.Since(back).Round(time.Millisecond))
			rec.saw("recovered by itself (upload after the restart projected, ready)")
			rec.measured("recovered %s after the restart", time.Since(back).Round(100*time.Millisecond))
			g.watch(id)
		})
	}
	g.check(t, "S3 outage")
}

// TestReliabilityIMSFaults injects IMS answering 503, 500, 401, slower than
// IMS_TIMEOUT, the Workload API going away, and listings missing half the
// images or all of them. Projections stay; the agent retries by itself.
func TestReliabilityIMSFaults(t *testing.T) {
	s := startStack(t)
	var base []naming.ID
	for i := range 4 {
		base = append(base, rootfsID(relAddImage(t, s, fmt.Sprintf("cos-%d", i), true)))
	}
	base = append(base, relPutPE(t, s, "pe.squashfs"))
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_IMS_TIMEOUT=1")
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	want := slices.Clone(base)
	row := relTable(t)
	const imsExpected = "rootfs information incomplete, no rootfs delete, state unchanged during the fault; new image projected by itself once cleared"

	// recoverFrom injects a fault, adds a tagged image while it lasts, checks
	// the agent saw the fault and kept everything, clears it and measures
	// how long the new image takes to appear with no help.
	recoverFrom := func(t *testing.T, name string, inject, clear func(), saw func() error) {
		t.Helper()
		rec := row.row(t, name, imsExpected)
		defer rec.guard(g)
		inject()
		img := relAddImage(t, s, "new-during-"+name, true)
		rep := relPassAfter(t, r, "test: "+name)
		sawErr := saw()
		if sawErr != nil {
			t.Errorf("%s: %v", name, sawErr)
		}
		rec.saw("fault seen by the agent: %v", sawErr == nil)
		if rep.Desired.RootfsComplete {
			t.Errorf("%s: RootfsComplete = true during the fault", name)
		}
		rec.saw("rootfs information incomplete during the fault: %v", !rep.Desired.RootfsComplete)
		t.Logf("%s: pass during the fault says: %s", name, rep.Desired.RootfsIncompleteReason)
		unchanged := relExact(s, want...)
		if unchanged != nil {
			t.Errorf("%s: state changed during the fault: %v", name, unchanged)
		}
		rec.saw("state unchanged during the fault: %v", unchanged == nil)
		r.alive(t)
		clear()
		cleared := time.Now()
		want = append(want, rootfsID(img))
		relWait(t, 30*time.Second, name+": recovery", func() error { return relExact(s, want...) })
		t.Logf("%s: recovered %s after the fault cleared (automatic retry)", name, time.Since(cleared).Round(time.Millisecond))
		rec.saw("new image projected by itself after the fault cleared")
		rec.measured("recovered %s after the fault cleared", time.Since(cleared).Round(100*time.Millisecond))
		g.watch(rootfsID(img))
	}
	failures := func() func() error {
		before := r.ims.Stats().Failures
		return func() error {
			if r.ims.Stats().Failures > before {
				return nil
			}
			return fmt.Errorf("IMS client saw no failure")
		}
	}
	for _, status := range []int{503, 500} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			saw := failures()
			recoverFrom(t, fmt.Sprint("IMS ", status), func() { s.IMS.FailNext(1_000_000, status) }, func() { s.IMS.FailNext(0, 0) }, saw)
		})
	}
	t.Run("401 refetches the token", func(t *testing.T) {
		saw := failures()
		fetches := s.SPIFFE.Counts().FetchJWTSVID
		recoverFrom(t, "IMS 401", func() { s.IMS.FailNext(1_000_000, 401) }, func() { s.IMS.FailNext(0, 0) }, func() error {
			if err := saw(); err != nil {
				return err
			}
			if got := s.SPIFFE.Counts().FetchJWTSVID; got <= fetches {
				return fmt.Errorf("no JWT-SVID fetched from the Workload API after the 401 (fetches %d -> %d)", fetches, got)
			}
			return nil
		})
		if r.ims.Stats().Retries == 0 {
			t.Error("IMS client Retries = 0; a 401 must be retried once with a fresh token")
		}
		row.rows[len(row.rows)-1].saw("401 retried with a fresh JWT-SVID: %v", r.ims.Stats().Retries > 0)
	})
	t.Run("slower than IMS_TIMEOUT", func(t *testing.T) {
		saw := failures()
		recoverFrom(t, "IMS slower than IMS_TIMEOUT", func() { s.IMS.SetLatency(2500 * time.Millisecond) }, func() { s.IMS.SetLatency(0) }, saw)
	})
	t.Run("Workload API down", func(t *testing.T) {
		saw := failures()
		recoverFrom(t, "Workload API down", func() {
			s.SPIFFE.Stop()
			s.IMS.FailNext(1, 401) // the cached token is refused: a fresh one is needed
		}, func() {
			if err := s.SPIFFE.Restart(); err != nil {
				t.Fatal(err)
			}
		}, func() error {
			if err := saw(); err != nil {
				return err
			}
			rep := r.LastReport()
			if why := rep.Desired.RootfsIncompleteReason; !strings.Contains(why, "Workload API") && !strings.Contains(why, s.SPIFFE.SocketPath()) && !strings.Contains(why, "SVID") {
				return fmt.Errorf("unclear error with the Workload API down: %q", why)
			}
			return nil
		})
	})
	t.Run("listing missing half the images", func(t *testing.T) {
		rec := row.row(t, "IMS listing missing half the images", "images the listing left out are confirmed with a GET; their deletes held; no LUN removed")
		defer rec.guard(g)
		s.IMS.SetListMode(imstest.ListDropHalf)
		rep := relPassAfter(t, r, "test: half listing")
		s.IMS.SetListMode(imstest.ListAll)
		err := relExact(s, want...)
		if err != nil {
			t.Errorf("half listing: %v (held: %d, planned: %d)", err, len(rep.Plan.Held), len(rep.Plan.Changes))
		}
		rec.saw("state unchanged: %v", err == nil)
		rec.measured("%d deletes held", len(rep.Plan.Held))
		if len(rep.Plan.Held) > 0 {
			t.Logf("half listing: %d deletes held: %s", len(rep.Plan.Held), trimTo(rep.Plan.Held[0].Reason, 200))
		}
		relPassAfter(t, r, "test: full listing again")
		if err := relExact(s, want...); err != nil {
			t.Error(err)
		}
	})
	t.Run("empty listing", func(t *testing.T) {
		rec := row.row(t, "IMS listing empty", "every rootfs delete held with a reason (partial-listing check, then the mass-delete guard); no LUN removed")
		defer rec.guard(g)
		s.IMS.SetListMode(imstest.ListEmpty)
		rep := relPassAfter(t, r, "test: empty listing")
		s.IMS.SetListMode(imstest.ListAll)
		err := relExact(s, want...)
		if err != nil {
			t.Errorf("empty listing: %v", err)
		}
		rec.saw("state unchanged: %v", err == nil)
		rec.saw("at least every rootfs delete held: %v", len(rep.Plan.Held) >= len(want)-1)
		rec.measured("%d deletes held", len(rep.Plan.Held))
		// Held by the partial-listing check (a GET finds the images) or by
		// the mass-delete guard; either way every rootfs delete is held with
		// a reason.
		if len(rep.Plan.Held) < len(want)-1 {
			t.Errorf("empty listing: %d deletes held, want %d", len(rep.Plan.Held), len(want)-1)
		}
		for _, h := range rep.Plan.Held {
			if h.Reason == "" {
				t.Errorf("empty listing: delete of %s held without a reason", h.Name)
			}
		}
		if len(rep.Plan.Held) > 0 {
			t.Logf("empty listing: %d deletes held: %s", len(rep.Plan.Held), trimTo(rep.Plan.Held[0].Reason, 200))
		}
	})
	g.check(t, "IMS faults")
}

// TestReliabilityWorkloadAPIAbsentAtStart starts the agent with no Workload
// API socket: PE images are projected, rootfs waits with a clear reason, and
// everything is projected once the SPIRE agent comes up.
func TestReliabilityWorkloadAPIAbsentAtStart(t *testing.T) {
	s := startStack(t)
	pe := relPutPE(t, s, "pe.squashfs")
	img := relAddImage(t, s, "cos", true)
	s.SPIFFE.Stop()
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	waitLUNs(t, s, "PE without the Workload API", pe)
	rec := relTable(t).row(t, "Workload API socket absent at start", "PE projected; rootfs waits with the socket in the reason; rootfs projected once the API is up")
	rec.saw("PE projected without the Workload API")
	rep := r.LastReport()
	if rep.Desired.RootfsComplete {
		t.Fatal("RootfsComplete with no Workload API")
	}
	why := rep.Desired.RootfsIncompleteReason
	t.Logf("reason with the Workload API absent: %s", why)
	if !strings.Contains(why, s.SPIFFE.SocketPath()) && !strings.Contains(why, "Workload API") {
		t.Errorf("reason %q does not name the Workload API or its socket", why)
	}
	rec.saw("rootfs waits, reason names the Workload API or its socket: %v", !rep.Desired.RootfsComplete && (strings.Contains(why, s.SPIFFE.SocketPath()) || strings.Contains(why, "Workload API")))
	r.alive(t)
	if err := s.SPIFFE.Restart(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	relWait(t, 30*time.Second, "rootfs after the Workload API is up", func() error { return relExact(s, pe, rootfsID(img)) })
	t.Logf("Workload API up -> rootfs projected: %s", time.Since(up).Round(time.Millisecond))
	rec.saw("rootfs projected by itself once the API is up")
	rec.measured("rootfs projected %s after the API is up", time.Since(up).Round(100*time.Millisecond))
}

// ---- targetcli and saveconfig.json ----------------------------------------------

// TestReliabilityTargetcliFaults makes targetcli fail the Nth command, die
// mid-batch, hang past TARGETCLI_TIMEOUT, and wait on a lock held by another
// process. The agent retries with backoff and converges once the fault
// clears; nothing is removed; no backstore is left without its LUN.
func TestReliabilityTargetcliFaults(t *testing.T) {
	s := startStack(t)
	base := []naming.ID{relPutPE(t, s, "base-1.squashfs"), relPutPE(t, s, "base-2.squashfs")}
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_TARGETCLI_TIMEOUT=2s")
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	want := slices.Clone(base)

	cases := []struct {
		name   string
		faults sim.Faults
		hold   bool // hold targetcli's lock from the test
	}{
		{name: "fail 2nd command", faults: sim.Faults{FailAt: 2, FailMessage: "simulated failure: Could not create StorageObject"}},
		{name: "die mid-batch", faults: sim.Faults{DieAfter: 3}},
		{name: "hang", faults: sim.Faults{HangAt: 2}},
		{name: "lock held by another process", hold: true},
	}
	row := relTable(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := row.row(t, "targetcli: "+tc.name+" (TARGETCLI_TIMEOUT=2s)", "pass fails and is retried with backoff; converges exactly once the fault clears; no LUN removed")
			defer rec.guard(g)
			failed := r.log.count("pass failed")
			var unlock func()
			if tc.hold {
				unlock = relHoldLock(t, filepath.Join(s.Node.Dir(), "targetcli.lock"))
			}
			if err := s.Node.SetFaults(tc.faults); err != nil {
				t.Fatal(err)
			}
			slug := strings.ReplaceAll(tc.name, " ", "-")
			var ids []naming.ID
			for i := range 3 {
				ids = append(ids, relPutPE(t, s, fmt.Sprintf("%s-%d.squashfs", slug, i)))
			}
			r.Resync("test: " + tc.name)
			relWait(t, 30*time.Second, "a failed pass", func() error {
				if r.log.count("pass failed") > failed {
					return nil
				}
				return fmt.Errorf("no failed pass")
			})
			rec.saw("pass failed during the fault")
			r.alive(t)
			cleared := time.Now()
			if unlock != nil {
				unlock()
			}
			want = append(want, ids...)
			relWait(t, 40*time.Second, tc.name+": convergence", func() error { return relExact(s, want...) })
			t.Logf("%s: converged %s after the fault (retries with backoff; failed passes: %d)", tc.name, time.Since(cleared).Round(time.Millisecond), r.log.count("pass failed")-failed)
			rec.saw("converged exactly by itself (no backstore without its LUN)")
			rec.measured("converged %s after the fault; %d failed passes", time.Since(cleared).Round(100*time.Millisecond), r.log.count("pass failed")-failed)
			g.watch(ids...)
			s.Node.SetFaults(sim.Faults{})
		})
	}
	if err := relExact(s, want...); err != nil {
		t.Error(err)
	}
	g.check(t, "targetcli faults")
}

// relHoldLock takes an exclusive flock on path, as another targetcli would.
func relHoldLock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	var once gosync.Once
	unlock := func() { once.Do(func() { f.Close() }) }
	t.Cleanup(unlock)
	return unlock
}

// TestReliabilitySaveconfigTorn has saveconfig.json written in place with a
// pause mid-write (rtslib 2.1.75), emptied, and replaced by an outside tool
// with an older version while the agent runs: nothing is removed and the
// agent converges.
func TestReliabilitySaveconfigTorn(t *testing.T) {
	s := startStack(t)
	base := []naming.ID{relPutPE(t, s, "base-1.squashfs"), relPutPE(t, s, "base-2.squashfs")}
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	waitLUNs(t, s, "baseline", base...)
	g := relGuard(t, s, base...)
	want := slices.Clone(base)
	old, err := os.ReadFile(s.Node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	row := relTable(t)

	t.Run("half-written in place", func(t *testing.T) {
		rec := row.row(t, "saveconfig.json half-written in place (rtslib 2.1.75, SavePause) while the agent reads it", "converges exactly; no LUN removed")
		defer rec.guard(g)
		if err := s.Node.SetFaults(sim.Faults{SaveMode: sim.SaveInPlace, SavePause: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		defer s.Node.SetFaults(sim.Faults{})
		// Readers racing the slow in-place save: the agent's own passes, plus
		// resyncs asked for while a save is in progress.
		for i := range 4 {
			want = append(want, relPutPE(t, s, fmt.Sprintf("torn-%d.squashfs", i)))
			r.Resync("test: torn save")
		}
		start := time.Now()
		relWait(t, 40*time.Second, "convergence with torn saves", func() error { return relExact(s, want...) })
		rec.saw("converged exactly")
		rec.measured("converged in %s", time.Since(start).Round(100*time.Millisecond))
	})
	t.Run("emptied", func(t *testing.T) {
		rec := row.row(t, "saveconfig.json emptied", "LIO's live state saved again; converges exactly; no LUN removed")
		defer rec.guard(g)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agent log:\n%s", relTail(r.log.String(), 2500))
			}
		})
		// Let the passes the previous step queued finish, so that no save of
		// the agent's own rewrites the file behind the test's back.
		relPassAfter(t, r, "test: settle before emptying")
		if err := os.WriteFile(s.Node.SaveFile(), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		id := relPutPE(t, s, "after-empty.squashfs")
		want = append(want, id)
		start := time.Now()
		r.Resync("test: empty saveconfig")
		relWait(t, 30*time.Second, "convergence after saveconfig.json was emptied", func() error { return relExact(s, want...) })
		t.Logf("emptied saveconfig.json -> converged in %s", time.Since(start).Round(time.Millisecond))
		rec.saw("converged exactly")
		rec.measured("converged in %s", time.Since(start).Round(100*time.Millisecond))
	})
	t.Run("replaced by an outside tool", func(t *testing.T) {
		rec := row.row(t, "saveconfig.json replaced by an outside tool (an older copy)", "converges exactly; no LUN removed")
		defer rec.guard(g)
		// An older saveconfig.json (only the baseline) copied over the file,
		// as a backup restore would, while the live state has more.
		if err := os.WriteFile(s.Node.SaveFile()+".tmp", old, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(s.Node.SaveFile()+".tmp", s.Node.SaveFile()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		relWait(t, 30*time.Second, "convergence after an outside replace", func() error { return relExact(s, want...) })
		t.Logf("replaced saveconfig.json -> converged in %s", time.Since(start).Round(time.Millisecond))
		rec.saw("converged exactly")
		rec.measured("converged in %s", time.Since(start).Round(100*time.Millisecond))
	})
	g.watch(want...)
	r.alive(t)
	g.check(t, "saveconfig.json torn/empty/replaced")
}

// TestReliabilityZeroByteUpload has s3fs show a fresh upload at 0 bytes
// while the agent runs: the image waits as pending, no 0-byte LUN ever
// exists, and it is projected by itself once s3fs catches up.
func TestReliabilityZeroByteUpload(t *testing.T) {
	s := startStack(t)
	var lagging atomic.Pointer[string]
	lstat := func(p string) (fs.FileInfo, error) {
		if l := lagging.Load(); l != nil && strings.HasPrefix(p, *l) {
			return zeroSize{p}, nil
		}
		return os.Lstat(p)
	}
	base := relPutPE(t, s, "base.squashfs")
	r := relRun(t, s, Options{Lstat: lstat}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	waitLUNs(t, s, "baseline", base)
	g := relGuard(t, s, base)
	prefix := filepath.Join(s.Mount(), "PE", "fresh")
	lagging.Store(&prefix)
	fresh := relPutPE(t, s, "fresh.squashfs")
	img := relAddImage(t, s, "fresh-rootfs", true) // its rootfs is visible; the PE one is not
	rec := relTable(t).row(t, "s3fs shows a fresh upload at 0 bytes", "image pending with a reason, never a 0-byte LUN; projected by itself once s3fs shows its size")
	defer rec.guard(g)
	rep := relPassAfter(t, r, "test: s3fs lagging")
	_, pending := rep.Desired.Pending[fresh.Name]
	if !pending {
		t.Errorf("fresh upload not pending: pending %v", rep.Desired.Pending)
	}
	rec.saw("pending while 0 bytes: %v", pending)
	if err := relExact(s, base, rootfsID(img)); err != nil {
		t.Error(err)
	}
	lagging.Store(nil)
	caught := time.Now()
	relWait(t, 30*time.Second, "projection once s3fs shows the size", func() error { return relExact(s, base, rootfsID(img), fresh) })
	t.Logf("s3fs caught up -> projected in %s (pending retried with backoff)", time.Since(caught).Round(time.Millisecond))
	rec.saw("projected by itself once s3fs caught up")
	rec.measured("projected %s after s3fs caught up", time.Since(caught).Round(100*time.Millisecond))
	g.check(t, "s3fs 0 bytes")
	g.mu.Lock()
	rec.saw("0-byte LUNs: %d", len(g.zero))
	g.mu.Unlock()
}

// ---- bad input ---------------------------------------------------------------------

// TestReliabilityBadKeys uploads S3 keys no targetcli command line can carry
// safely, and a symlink in the mount pointing outside it: each is rejected
// with a reason in the status, and none reaches targetcli or LIO.
func TestReliabilityBadKeys(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	good := relPutPE(t, s, "good.squashfs")
	bad := []string{
		"PE/with space.squashfs",
		"PE/with\nnewline.squashfs",
		"PE/a=b.squashfs",
		"PE/a,b.squashfs",
		`PE/quote".squashfs`,
		"PE/quote'.squashfs",
		"PE/ünïcödé.squashfs",
		"PE/semi;colon.squashfs",
		"PE/dollar$(id).squashfs",
		"PE/" + strings.Repeat("x/", 130) + "long.squashfs",
	}
	var stored []string
	for _, k := range bad {
		if _, err := s.S3.Put(ctx, k, []byte("bad key image")); err != nil {
			t.Logf("S3 refused key %q itself: %v", k, err)
			continue
		}
		stored = append(stored, k)
	}
	// ../ in a key: versitygw stores it normalised (or refuses it), so the
	// listing never carries "..". The inventory refuses such a key anyway
	// (FuzzInventoryKeys checks every accepted key stays under the mount).
	if _, err := s.S3.Put(ctx, "PE/../escape.squashfs", []byte("x")); err != nil {
		t.Logf("S3 refused PE/../escape.squashfs: %v", err)
	}
	// A symlink under the mount pointing outside it.
	secret := filepath.Join(t.TempDir(), "secret.img")
	os.WriteFile(secret, []byte("not for export"), 0o600)
	if err := os.Symlink(secret, filepath.Join(s.Mount(), "PE", "link.squashfs")); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(s.Mount(), "PE", "linkdir")
	os.MkdirAll(filepath.Dir(secret)+"/d", 0o755)
	os.WriteFile(filepath.Dir(secret)+"/d/img.squashfs", []byte("outside"), 0o600)
	os.Symlink(filepath.Dir(secret)+"/d", dirLink)

	rec := relTable(t).row(t, "S3 keys with space, newline, `=`, `,`, quotes, `;`, `$( )`, unicode, a 336-byte path; `../`; symlinks in the mount to a file or directory outside it",
		"each rejected with a reason in the status; no targetcli command for them; nothing exported outside the mount")
	a := newAgent(t, s)
	cmdsBefore := s.Node.Commands()
	rep := sync(t, a, projector.SyncOptions{Trigger: "test"})
	if err := relExact(s, good); err != nil {
		t.Fatal(err)
	}
	rec.saw("good image projected alone")
	entries := a.statusOf(rep)
	rejected := map[string]string{}
	for _, e := range entries {
		if e.State == projector.Rejected {
			rejected[e.Key] = e.Reason
		}
	}
	unrejected := 0
	for _, k := range append(stored, "PE/link.squashfs") {
		if why, ok := rejected[k]; !ok || why == "" {
			t.Errorf("key %q not rejected with a reason (status %+v)", k, rejected)
			unrejected++
		}
	}
	rec.saw("stored hostile keys and the file symlink not rejected with a reason: %d", unrejected)
	// The symlinked directory: either not listed by S3 or rejected.
	for k, why := range rejected {
		t.Logf("rejected %q: %s", k, why)
	}
	// Nothing hostile reached targetcli: 2 ops (+ saveconfig, and the
	// batch's line that turns auto_save_on_exit off) for the good image only.
	n := s.Node.Commands() - cmdsBefore
	if n > 4 {
		t.Errorf("%d targetcli commands for one good image, want at most 4 (auto-save off, create, LUN, saveconfig)", n)
	}
	rec.saw("targetcli commands beyond the good image's: %d", max(0, n-4))
	live, _ := s.Node.Live()
	exported := 0
	for _, so := range live.StorageObjects {
		if so.Dev == secret || strings.Contains(so.Dev, "link") || !strings.HasPrefix(so.Dev, s.Mount()+"/") {
			t.Errorf("exported %s", so.Dev)
			exported++
		}
	}
	rec.saw("exported outside the mount or through a symlink: %d", exported)
	rec.measured("%d keys rejected (S3 stored %d hostile keys)", len(rejected), len(stored))
	t.Logf("rejected keys counted in status: %d (S3 accepted %d hostile keys)", len(rejected), len(stored))
}

// TestReliabilityHostileEvents publishes malformed, hostile and large
// messages on the event subjects: each is dropped and counted, the agent keeps
// running, and a good event right after them is applied.
func TestReliabilityHostileEvents(t *testing.T) {
	s := startStack(t)
	js := relStream(t, s)
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS")
	hostile := map[string][][]byte{
		"sbps.s3.events": {
			[]byte(`not json`), []byte(`null`), []byte(`[]`), []byte(`{"Records":null}`),
			[]byte(`{"Records":[{"eventName":5,"s3":{"object":{"key":null}}}]}`),
			[]byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"PE/../../etc/shadow"}}}]}`),
			[]byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"PE/x y,z=1.squashfs"}}}]}`),
			append([]byte(`{"Records":[`), bytes.Repeat([]byte(`{"eventName":"s3:ObjectCreated:Put"},`), 20000)...),
			bytes.Repeat([]byte{0xff, 0x00, '{'}, 300_000), // ~900 kB of binary junk (the server's max_payload is 1 MB)
		},
		"sbps.ims.events": {
			[]byte(`{}`), []byte(`{"version":"1","id":5}`), []byte(`{"version":1,"id":"../../x","change":"changed"}`),
			[]byte(`{"version":1,"id":null,"change":null}`), bytes.Repeat([]byte(`[`), 500_000),
		},
	}
	n := 0
	for subj, msgs := range hostile {
		for _, m := range msgs {
			if _, err := js.Publish(t.Context(), subj, m); err != nil {
				t.Fatalf("publish %d bytes: %v", len(m), err)
			}
			n++
		}
	}
	rec := relTable(t).row(t, "Hostile event payloads over NATS (not JSON, nulls, wrong types, `../` keys, 20 000 records, ~900 kB binary)",
		"each dropped and counted; agent alive; the next good event applied")
	id := relPutPE(t, s, "after-hostile.squashfs")
	waitLUNs(t, s, "good upload after hostile events", id)
	r.alive(t)
	rec.saw("agent alive; good upload after them projected")
	if err := relExact(s, id); err != nil {
		t.Error(err)
	}
	var dropped uint64
	for _, src := range r.sources {
		if ns, ok := src.(*events.NATSSource); ok {
			for _, st := range ns.Stats() {
				switch st.Outcome {
				case events.OutcomeUndecodable, events.OutcomeBadRecord, events.OutcomeNoRecords, events.OutcomeOversized, events.OutcomeTerm:
					dropped += st.Count
				}
			}
			t.Logf("NATS source counters: %+v", ns.Stats())
		}
	}
	if dropped == 0 {
		t.Errorf("no hostile message counted as dropped (%d sent)", n)
	}
	rec.saw("hostile messages counted as dropped: %v", dropped > 0)
	rec.measured("%d messages sent, %d counter increments", n, dropped)
	t.Logf("%d hostile messages sent, %d counted as dropped or skipped; agent alive, good event applied", n, dropped)
}

// TestReliabilityHostileIMS serves IMS records with wrong types, nulls,
// duplicate rootfs artifacts and a 10 MB body, plus a 10 MB manifest: each is
// refused with a clear reason and the other images are projected.
func TestReliabilityHostileIMS(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	good := relAddImage(t, s, "good", true)
	bad := map[string]string{} // id -> what
	put := func(what string, raw string) {
		id := imstest.NewID()
		s.IMS.PutRaw(id, []byte(strings.ReplaceAll(raw, "ID", id)))
		bad[id] = what
	}
	put("name of the wrong type", `{"id":"ID","name":5,"metadata":{"sbps-project":"true"}}`)
	put("metadata of the wrong type", `{"id":"ID","name":"x","metadata":["sbps-project"]}`)
	put("link of the wrong type", `{"id":"ID","name":"x","link":"s3://boot-images/x","metadata":{"sbps-project":"true"}}`)
	put("nulls", `{"id":"ID","name":null,"link":null,"metadata":null,"created":null}`)
	put("10 MB record", `{"id":"ID","name":"`+strings.Repeat("A", 10<<20)+`","metadata":{"sbps-project":"true"}}`)
	// Manifests: two rootfs artifacts, and one of 10 MB.
	manifest := func(name, body string) {
		id := imstest.NewID()
		s.S3.Put(ctx, id+"/rootfs", []byte("rootfs "+name))
		s.S3.Put(ctx, id+"/manifest.json", []byte(strings.ReplaceAll(body, "ID", id)))
		s.IMS.Put(imstest.Image{ID: id, Name: name, Metadata: map[string]string{"sbps-project": "true"},
			Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json"}})
		bad[id] = name
	}
	art := `{"type":"application/vnd.cray.image.rootfs.squashfs","link":{"type":"s3","path":"s3://boot-images/ID/rootfs","etag":"abc"}}`
	manifest("duplicate rootfs", `{"version":"1.0","artifacts":[`+art+`,`+art+`]}`)
	manifest("10 MB manifest", `{"version":"1.0","artifacts":[`+art+`],"pad":"`+strings.Repeat("B", 10<<20)+`"}`)
	manifest("manifest of the wrong types", `{"version":1,"artifacts":{"type":null}}`)

	rec := relTable(t).row(t, "IMS records of wrong types, nulls, a 10 MB record; manifests with duplicate rootfs artifacts, wrong types, 10 MB",
		"each record or manifest rejected with a reason (or left untagged); the good image projected; a newly tagged image projected")
	a := newAgent(t, s)
	rep := sync(t, a, projector.SyncOptions{Trigger: "test"})
	if err := relExact(s, rootfsID(good)); err != nil {
		t.Fatal(err)
	}
	rec.saw("good image projected")
	unreasoned := 0
	reasons := map[string]string{}
	for _, p := range rep.Desired.Rejected {
		for _, u := range p.Images {
			reasons[u.ID] = p.Reason
		}
	}
	for id, what := range bad {
		if what == "metadata of the wrong type" || what == "nulls" || what == "name of the wrong type" || what == "link of the wrong type" || what == "10 MB record" {
			// Records that do not decode are listed as errors (and hold
			// rootfs deletes), or decode as untagged.
			if why, ok := reasons[id]; ok {
				t.Logf("%s: rejected: %s", what, trimTo(why, 160))
			} else {
				t.Logf("%s: not projected (not tagged once decoded)", what)
			}
			continue
		}
		why, ok := reasons[id]
		if !ok || why == "" {
			t.Errorf("%s (%s): not rejected with a reason; incomplete=%q", what, id, rep.Desired.RootfsIncompleteReason)
			unreasoned++
			continue
		}
		t.Logf("%s: rejected: %s", what, trimTo(why, 160))
	}
	// The rest is unaffected: a newly tagged good image is projected.
	rec.saw("bad manifests not rejected with a reason: %d", unreasoned)
	more := relAddImage(t, s, "more", true)
	sync(t, a, projector.SyncOptions{})
	err := relExact(s, rootfsID(good), rootfsID(more))
	if err != nil {
		t.Error(err)
	}
	rec.saw("newly tagged image projected: %v", err == nil)
}

// TestReliabilityWritableTPG: the agent refuses to project into a TPG that
// lets initiators write, says how to fix it, and projects once it is fixed.
func TestReliabilityWritableTPG(t *testing.T) {
	s := startStack(t)
	// The simulator has no `set attribute`; an administrator's change is
	// modelled in saveconfig.json, which is what the agent plans from.
	setWP := func(v int) {
		data, err := os.ReadFile(s.Node.SaveFile())
		if err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatal(err)
		}
		tpg := c["targets"].([]any)[0].(map[string]any)["tpgs"].([]any)[0].(map[string]any)
		tpg["attributes"].(map[string]any)["demo_mode_write_protect"] = v
		out, _ := json.MarshalIndent(c, "", "  ")
		if err := os.WriteFile(s.Node.SaveFile(), out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setWP(0)
	id := relPutPE(t, s, "pe.squashfs")
	rec := relTable(t).row(t, "Writable TPG (`demo_mode_write_protect=0`)", "creates refused with the cause and the fix; no targetcli command; projected once fixed")
	a := newAgent(t, s)
	cmds := s.Node.Commands()
	rep := sync(t, a, projector.SyncOptions{Trigger: "test"})
	fix := strings.Contains(rep.Plan.Refused, "demo_mode_write_protect") && strings.Contains(rep.Plan.Refused, "ALLOW_WRITABLE_TPG")
	if !fix {
		t.Errorf("Refused = %q, want the cause and the fix", rep.Plan.Refused)
	}
	rec.saw("refused, naming the cause and the fix: %v", fix)
	if err := relExact(s); err != nil {
		t.Errorf("projected into a writable TPG: %v", err)
	}
	n := s.Node.Commands() - cmds
	if n > 0 {
		t.Errorf("%d targetcli commands run against a writable TPG, want 0", n)
	}
	rec.saw("targetcli commands against the writable TPG: %d", n)
	setWP(1)
	sync(t, a, projector.SyncOptions{})
	err := relExact(s, id)
	if err != nil {
		t.Error(err)
	}
	rec.saw("projected once fixed: %v", err == nil)
}

// ---- secrets ---------------------------------------------------------------------------

// relToken is the agent's real JWT-SVID source, remembering every
// token it handed out.
type relToken struct {
	*svid.JWTSource
	mu     gosync.Mutex
	tokens []string
}

func (r *relToken) Token(ctx context.Context) (string, error) {
	tok, err := r.JWTSource.Token(ctx)
	if err == nil {
		r.mu.Lock()
		r.tokens = append(r.tokens, tok)
		r.mu.Unlock()
	}
	return tok, err
}

var _ ims.Invalidator = (*relToken)(nil)

// TestReliabilitySecretsNotLogged runs a full scenario (events, IMS 401 and
// token refetch, S3 and NATS outages, targetcli failure) with debug logs and
// greps them for the S3 secret key, every JWT-SVID used, and the NATS
// password: none may appear.
func TestReliabilitySecretsNotLogged(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	relStream(t, s)
	const natsPassword = "n4ts-PASSW0RD-do-not-log"
	natsURL := strings.Replace(s.NATS.ClientURL(), "nats://", "nats://sbps:"+natsPassword+"@", 1)
	buf := &relLog{}
	// Through the SPIRE agent CLI, which the rig's SPIRE registers as CSM's.
	tok := &relToken{JWTSource: svid.NewJWTSource(svid.JWTConfig{Socket: s.SPIFFE.SocketPath(), Audience: rig.Audience,
		Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		CLI:    &svid.CLI{Path: s.SpireAgent, Socket: s.SPIFFE.SocketPath()}})}
	pe := relPutPE(t, s, "pe.squashfs")
	a, cfg := relNewAgent(t, s, Options{Token: tok}, buf, "SBPS_MARSHAL_NATS_URL="+natsURL, "SBPS_MARSHAL_NATS_STREAM=SBPS",
		"SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_LOG_LEVEL=debug", "SBPS_MARSHAL_TARGETCLI_TIMEOUT=2s")
	cfg.Print(buf)
	r := relStart(t, a, buf)
	img := relAddImage(t, s, "cos", true)
	s.IMS.FailNext(1, 401)
	relPassAfter(t, r, "test: 401")
	relWait(t, 20*time.Second, "rootfs projected", func() error { return relExact(s, pe, rootfsID(img)) })
	s.NATS.Shutdown()
	if err := s.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	s.Node.SetFaults(sim.Faults{FailAt: 1})
	id2 := relPutPE(t, s, "pe-2.squashfs")
	s.S3.Stop()
	r.Resync("test: S3 down")
	relWait(t, 20*time.Second, "failed pass", func() error {
		if strings.Contains(buf.String(), "pass failed") {
			return nil
		}
		return fmt.Errorf("none")
	})
	if err := s.S3.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	relWait(t, 40*time.Second, "convergence", func() error { return relExact(s, pe, rootfsID(img), id2) })

	logs := buf.String()
	tok.mu.Lock()
	tokens := slices.Clone(tok.tokens)
	tok.mu.Unlock()
	if len(tokens) < 2 {
		t.Errorf("captured %d JWT-SVIDs, want at least 2 (first, and the refetch after the 401)", len(tokens))
	}
	secrets := map[string]string{"S3 secret key": s.S3.Credentials().SecretAccessKey, "NATS password": natsPassword}
	for i, tk := range tokens {
		secrets[fmt.Sprintf("JWT-SVID #%d", i+1)] = tk
		// The signature alone must not leak either.
		if parts := strings.Split(tk, "."); len(parts) == 3 {
			secrets[fmt.Sprintf("JWT-SVID #%d signature", i+1)] = parts[2]
		}
	}
	rec := relTable(t).row(t, "Secrets in logs: S3 secret key, JWT-SVIDs, NATS password in the URL (debug level; 401 refetch, NATS restart, targetcli failure, S3 outage)",
		"none of them in the logs")
	leaks := 0
	for what, secret := range secrets {
		if secret == "" {
			t.Errorf("%s is empty: the scenario did not use it", what)
			continue
		}
		if strings.Contains(logs, secret) {
			leaks++
			i := strings.Index(logs, secret)
			t.Errorf("%s appears in the logs: …%s…", what, logs[max(0, i-200):i])
		}
	}
	t.Logf("%d bytes of debug logs, %d secrets checked, %d leaked", len(logs), len(secrets), leaks)
	rec.saw("secrets leaked: %d", leaks)
	rec.measured("%d secrets checked in %d bytes of logs", len(secrets), len(logs))
	if !strings.Contains(logs, "level=DEBUG") {
		t.Error("no debug line logged: the scenario did not run at debug level")
	}
}

// TestReliabilityIncompleteBacksOff: one IMS record that never decodes keeps
// rootfs information incomplete (deletes held, as they must be), but the
// agent's retries must back off rather than list IMS every second forever:
// every worker of the fleet would do it.
func TestReliabilityIncompleteBacksOff(t *testing.T) {
	s := startStack(t)
	good := relAddImage(t, s, "good", true)
	s.IMS.PutRaw(imstest.NewID(), []byte(`{"id":"not-a-uuid","name":5}`))
	lists := s.IMS.Stats().Lists
	r := relRun(t, s, Options{}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	relWait(t, 20*time.Second, "good image projected", func() error { return relExact(s, rootfsID(good)) })
	if rep := r.LastReport(); rep.Desired.RootfsComplete {
		t.Fatal("RootfsComplete with a record that does not decode")
	}
	start := time.Now()
	window := 8 * time.Second
	relWait(t, 2*window, "observation window", func() error {
		if time.Since(start) < window {
			return fmt.Errorf("%d IMS listings so far", s.IMS.Stats().Lists-lists)
		}
		return nil
	})
	n := s.IMS.Stats().Lists - lists
	t.Logf("IMS listings in the first %s with one undecodable record: %d", time.Since(start).Round(time.Second), n)
	rec := relTable(t).row(t, "One IMS record that never decodes (rootfs information stays incomplete)", "deletes held; retries back off (at most 5 IMS listings in 8 s)")
	rec.saw("at most 5 listings in 8 s: %v", n <= 5)
	rec.measured("%d IMS listings in 8 s", n)
	// Exponential backoff from 1 s: passes at about 0, 1, 3, 7 s.
	if n > 5 {
		t.Errorf("%d full IMS listings in %s while one record stays undecodable; want backoff (at most 5)", n, window)
	}
}
