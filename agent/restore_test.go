package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/systemctl/systemctltest"
)

// runAgentPasses runs a until the test ends and returns a channel that gets
// every pass's error (nil for a good pass).
func runAgentPasses(t *testing.T, a *Agent) <-chan error {
	t.Helper()
	passes := make(chan error, 100)
	a.onPass = func(_ string, _ *projector.Report, err error) {
		select {
		case passes <- err:
		default:
		}
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return passes
}

// projectedLUNs is backstore path -> LUN index of the node's tpg1 in c.
func projectedLUNs(c *lio.Config, iqn string) map[string]int {
	out := map[string]int{}
	if t, ok := c.Target(iqn); ok {
		if tpg, ok := t.TPG(1); ok {
			for _, l := range tpg.LUNs {
				out[l.StorageObject] = l.Index
			}
		}
	}
	return out
}

// TestLIONotRestoredKeepsSaveconfig is issue 14 point 3 (a): the kernel lost
// the node's target (target.service failed) while saveconfig.json still has
// it. The agent starts: saveconfig.json stays byte for byte, and /readyz,
// sbps_marshal_ready, STATUS= and status name the condition and the fix.
// Before the guard, the start-up save wrote the empty live state over it.
func TestLIONotRestoredKeepsSaveconfig(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	if _, err := s.PutPE(ctx, "CPE-restore.squashfs", []byte("programming environment")); err != nil {
		t.Fatal(err)
	}
	sync(t, newAgent(t, s), projector.SyncOptions{Trigger: "provision"})
	before, err := os.ReadFile(s.Node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	if len(luns(t, s)) != 1 {
		t.Fatalf("setup: want one LUN projected, have %v", luns(t, s))
	}
	if err := s.Node.Clear(); err != nil { // target.service stopped: targetctl clear
		t.Fatal(err)
	}
	fake := systemctltest.Install(t, t.TempDir(), systemctltest.Options{Start: []string{"false"}, State: "failed"})
	ns := listenNotify(t)
	addr := freeAddr(t)
	a := newAgentWith(t, s, Options{Getenv: func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return ns.path
		}
		return ""
	}}, "SBPS_MARSHAL_METRICS_ADDR="+addr, "SBPS_MARSHAL_SYSTEMCTL_BIN="+fake.Path, "SBPS_MARSHAL_TARGET_SERVICE_TIMEOUT=2s")
	passes := runAgentPasses(t, a)
	if err := <-passes; err == nil {
		t.Fatal("first pass succeeded with LIO's target lost")
	}
	after, err := os.ReadFile(s.Node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("saveconfig.json changed while LIO was not restored:\nbefore %d bytes, after %d bytes:\n%s", len(before), len(after), after)
	}
	for _, want := range []string{"LIO's live state has lost", "target " + s.Node.IQN(), "target.service", "failed"} {
		if err := a.Ready(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Ready() = %v, want it to say %q", err, want)
		}
	}
	if code, body := get("http://" + addr + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "systemctl start target.service") {
		t.Errorf("/readyz = %d %q, want 503 naming the fix", code, body)
	}
	if _, body := get("http://" + addr + "/metrics"); !strings.Contains(body, "\nsbps_marshal_ready 0\n") {
		t.Errorf("/metrics lacks sbps_marshal_ready 0")
	}
	testutil.WaitFor(t, 20*time.Second, "READY=1 and STATUS= naming the condition", func() error {
		msgs := strings.Join(ns.seen(), "\n")
		if !strings.Contains(msgs, "READY=1") || !strings.Contains(msgs, "LIO's live state has lost") {
			return fmt.Errorf("notifications so far: %q", msgs)
		}
		return nil
	})
	if err := a.LIOCondition(ctx); err == nil || !strings.Contains(err.Error(), "target "+s.Node.IQN()) {
		t.Errorf("LIOCondition = %v, want the loss named", err)
	}
	if calls := fake.Calls(t); !slices.ContainsFunc(calls, func(c string) bool { return strings.HasSuffix(c, "start target.service") }) {
		t.Errorf("systemctl calls = %q, want a start of target.service", calls)
	}
	if after, _ := os.ReadFile(s.Node.SaveFile()); !bytes.Equal(before, after) {
		t.Errorf("saveconfig.json changed by the retries")
	}
}

// TestTargetServiceRestoresLIO is issue 14 point 3 (b): with target.service
// stopped (live state empty, saveconfig.json intact), the labelled agent
// sees `systemctl is-active target.service` answer inactive, starts it (the
// stand-in restores the file into the simulator as targetctl restore
// does), waits until LIO holds the target, and reconciles: the projections
// come back with their LUN numbers, and the agent is ready.
func TestTargetServiceRestoresLIO(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	if _, err := s.PutPE(ctx, "CPE-restore.squashfs", []byte("programming environment")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPE(ctx, "CPE-restore-2.squashfs", []byte("programming environment 2")); err != nil {
		t.Fatal(err)
	}
	sync(t, newAgent(t, s), projector.SyncOptions{Trigger: "provision"})
	saved, err := s.Saved()
	if err != nil {
		t.Fatal(err)
	}
	want := projectedLUNs(saved, s.Node.IQN())
	if len(want) != 2 {
		t.Fatalf("setup: want two LUNs, have %v", want)
	}
	if err := s.Node.Clear(); err != nil {
		t.Fatal(err)
	}
	fake := systemctltest.Install(t, filepath.Join(t.TempDir(), "bin"), systemctltest.Options{
		Start: append([]string{"env"}, append(s.Node.Env(), sim.Targetctl(t), "restore", s.Node.SaveFile())...),
		Stop:  append([]string{"env"}, append(s.Node.Env(), sim.Targetctl(t), "clear")...),
	})
	a := newAgent(t, s, "SBPS_MARSHAL_SYSTEMCTL_BIN="+fake.Path)
	passes := runAgentPasses(t, a)
	if err := <-passes; err != nil {
		t.Fatalf("first pass = %v, want LIO restored by target.service and reconciled", err)
	}
	if fake.State(t) != "active" {
		t.Errorf("target.service is %s, want active", fake.State(t))
	}
	live, err := s.Node.Live()
	if err != nil {
		t.Fatal(err)
	}
	if got := projectedLUNs(live, s.Node.IQN()); !mapsEqual(got, want) {
		t.Errorf("live LUNs after the restore = %v, want %v", got, want)
	}
	if err := a.Ready(); err != nil {
		t.Errorf("Ready() = %v, want ready", err)
	}
	calls := fake.Calls(t)
	if len(calls) != 2 || !strings.HasSuffix(calls[0], "is-active target.service") || !strings.HasSuffix(calls[1], "start target.service") {
		t.Errorf("systemctl calls = %q, want is-active then start", calls)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestReadyWhileFirstPassHangs is issue 14 point 5: a first pass that
// cannot finish (here targetcli hangs; at boot, S3, IMS or the Kubernetes
// API) must not hold back READY=1: systemd would kill the agent at
// TimeoutStartSec and restart it in a loop, and `systemctl enable --now`
// would hang. READY=1 comes after the start budget, not ready.
func TestReadyWhileFirstPassHangs(t *testing.T) {
	s := startStack(t)
	if err := s.Node.SetFaults(sim.Faults{HangAt: 1}); err != nil {
		t.Fatal(err)
	}
	ns := listenNotify(t)
	a := newAgentWith(t, s, Options{Getenv: func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return ns.path
		}
		return ""
	}}, "SBPS_MARSHAL_TARGETCLI_TIMEOUT=20s")
	a.startBudget = 300 * time.Millisecond
	start := time.Now()
	runAgentPasses(t, a)
	testutil.WaitFor(t, 20*time.Second, "READY=1 while the first pass hangs", func() error {
		msgs := strings.Join(ns.seen(), "\n")
		if !strings.Contains(msgs, "READY=1") || !strings.Contains(msgs, "first pass still running") {
			return fmt.Errorf("notifications so far: %q", msgs)
		}
		return nil
	})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("READY=1 after %s, want about the start budget", d)
	}
	if a.Ready() == nil {
		t.Error("Ready() = nil while the first pass hangs")
	}
}
