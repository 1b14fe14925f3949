//go:build kernel

package initiator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// TestAgentKilledDuringApply: while the agent applies a burst (one image
// deleted in S3, four uploaded), its process group (the agent and the
// targetcli it runs) is SIGKILLed in the middle of a targetcli process;
// restarted, the agent converges, and the logged-in initiator's view is
// exact after a rescan: every projected image at its LUN with its bytes,
// nothing stale, no surviving LUN renumbered under the live session.
func TestAgentKilledDuringApply(t *testing.T) {
	resetNode(t)
	provision(t)
	s := startStack(t)
	a := s.startAgent(t)
	a.waitReady(t, 1)

	var desired []*image
	for i := range 3 {
		img, _ := s.putPE(t, fmt.Sprintf("before-%d", i), 256<<10)
		desired = append(desired, img)
	}
	waitSaved(t, 2*time.Minute, "the first three images", exactly(desired))
	c, err := loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	before := lunMap(c)
	startInitiator(t)
	v, _ := waitView(t, time.Minute, "the first three images visible", func(v []disk) error {
		for _, img := range desired {
			if _, err := checkVisible(v, img, before[img.id.Name]); err != nil {
				return err
			}
		}
		return nil
	})
	checkExact(t, v, desired, before)

	// The burst, and the kill in the middle of the first targetcli it causes.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 18))
	delay := time.Duration(rng.IntN(1500)) * time.Millisecond
	t.Logf("kill %v into a targetcli process of the burst (seed %d)", delay, seed)
	gone := desired[1]
	if err := s.s3.Delete(context.Background(), gone.key); err != nil {
		t.Fatal(err)
	}
	desired = append(desired[:1], desired[2:]...)
	for i := range 4 {
		img, _ := s.putPE(t, fmt.Sprintf("burst-%d", i), 256<<10)
		desired = append(desired, img)
	}
	// The burst's passes remove before they add, each stage its own
	// targetcli process: kill in the first or the second.
	nth := 1 + rng.IntN(2)
	t.Logf("killing in targetcli process %d of the burst", nth)
	seen := map[int]bool{}
	deadline := time.Now().Add(time.Minute)
	for {
		kids := targetcliChildren(a.cmd.Process.Pid)
		for _, p := range kids {
			seen[p] = true
		}
		if len(seen) >= nth && len(kids) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent ran %d targetcli processes within a minute of the burst, want %d; see its log", len(seen), nth)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(delay) // the kill point itself, not a wait for an outcome
	running := len(targetcliChildren(a.cmd.Process.Pid)) > 0
	a.kill()
	at, _ := loadSaved()
	var atKill map[string]int
	if at != nil {
		atKill = lunMap(at)
	}
	t.Logf("killed (targetcli still running: %v); saveconfig.json then had LUNs %v", running, atKill)
	if live, err := os.ReadDir("/sys/kernel/config/target/iscsi/" + iqn + "/tpgt_1/lun"); err == nil {
		t.Logf("configfs then had %d LUNs", len(live))
	}

	b := s.startAgent(t)
	b.waitReady(t, 2)
	took := waitSaved(t, 3*time.Minute, "convergence after the restart", exactly(desired))
	t.Logf("converged %v after the restart's first pass", took.Round(time.Millisecond))
	c, err = loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	after := lunMap(c)
	for _, img := range desired {
		if n, ok := before[img.id.Name]; ok && after[img.id.Name] != n {
			t.Errorf("%s was lun%d before the kill and is lun%d after", img.key, n, after[img.id.Name])
		}
	}
	v, _ = waitView(t, time.Minute, "every projected image visible", func(v []disk) error {
		for _, img := range desired {
			if _, err := checkVisible(v, img, after[img.id.Name]); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("the initiator sees %v", v)
	if ds := byWWID(v, gone.id.WWID); len(ds) != 0 {
		t.Errorf("%s deleted in S3, but the target still gives its WWID on %v", gone.key, ds)
	}
	checkExact(t, v, desired, after)
	b.stop(t)
}
