package lio_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

var modes = []lio.Mode{lio.Batch, lio.OneShot, lio.Daemon}

// simNode is a simulated node with a driver in the given mode pointed at it.
type simNode struct {
	node   *sim.Node
	driver *lio.Driver
	images string // directory of image files
}

func newSimNode(t testing.TB, mode lio.Mode) *simNode {
	t.Helper()
	dir := t.TempDir()
	node, err := sim.NewNode(filepath.Join(dir, "node"), sim.NodeOptions{})
	if err != nil {
		t.Fatalf("sim.NewNode: %v", err)
	}
	cfg := lio.DriverConfig{Mode: mode, Binary: sim.Binary(t), SaveFile: node.SaveFile(), Env: node.Env(),
		Socket: node.SocketPath(), Timeout: time.Minute}
	if mode == lio.Daemon {
		startDaemon(t, node)
	}
	d, err := lio.New(cfg, nil)
	if err != nil {
		t.Fatalf("lio.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	return &simNode{node: node, driver: d, images: images}
}

// startDaemon serves targetclid for node in this process until the test
// ends, and waits until the socket answers.
func startDaemon(t testing.TB, node *sim.Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.ServeDaemon(ctx, "") }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(node.SocketPath()); err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("simulated targetclid stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulated targetclid did not create %s within 10s", node.SocketPath())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// image creates an image file of size bytes and returns its path.
func (n *simNode) image(t testing.TB, name string, size int64) string {
	t.Helper()
	p := filepath.Join(n.images, name)
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (n *simNode) saved(t testing.TB) *lio.Config {
	t.Helper()
	c, err := lio.Load(n.node.SaveFile())
	if err != nil {
		t.Fatalf("read saveconfig.json: %v", err)
	}
	return c
}

// lunOf returns the LUN index of backstore name in tpg1, or -1.
func lunOf(c *lio.Config, iqn, name string) int {
	t, ok := c.Target(iqn)
	if !ok {
		return -1
	}
	tpg, ok := t.TPG(1)
	if !ok {
		return -1
	}
	if l, ok := tpg.LUNFor("/backstores/fileio/" + name); ok {
		return l.Index
	}
	return -1
}

func outcomes(res []lio.Result) string {
	var b strings.Builder
	for i, r := range res {
		fmt.Fprintf(&b, "\n  %d %v: %v msg=%q err=%v", i, r.Op, r.Outcome, r.Message, r.Err)
	}
	return b.String()
}

// TestDriverMixedPlan applies, in every mode, a plan that mixes deletes and
// creates, ops already in effect, a missing image, an unsafe name, and a
// delete-then-create that a single targetcli process would get wrong
// ("lun0 already used by a sibling"); then checks each reported outcome
// against saveconfig.json.
func TestDriverMixedPlan(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			n := newSimNode(t, mode)
			iqn := n.node.IQN()
			a, b, c := n.image(t, "a.squashfs", 4096), n.image(t, "b.squashfs", 8192), n.image(t, "c.squashfs", 512)
			setup := []lio.Op{
				{Kind: lio.CreateBackstore, Backstore: "aaa", File: a, WWN: "aaa1"},
				{Kind: lio.CreateLUN, Backstore: "aaa", Target: iqn, LUN: lio.AutoLUN},
				{Kind: lio.CreateBackstore, Backstore: "bbb", File: b, WWN: "bbb1"},
				{Kind: lio.CreateLUN, Backstore: "bbb", Target: iqn, LUN: lio.AutoLUN},
			}
			res, err := n.driver.Apply(t.Context(), setup)
			if err != nil {
				t.Fatalf("setup Apply: %v%s", err, outcomes(res))
			}
			for i, r := range res {
				if r.Outcome != lio.Applied {
					t.Fatalf("setup op %d: %v, want applied%s", i, r.Outcome, outcomes(res))
				}
			}
			if got := lunOf(n.saved(t), iqn, "aaa"); got != 0 {
				t.Fatalf("aaa is lun%d after setup, want lun0", got)
			}

			plan := []lio.Op{
				{Kind: lio.DeleteBackstore, Backstore: "aaa"},                                     // 0 applied; frees lun0
				{Kind: lio.DeleteBackstore, Backstore: "zzz"},                                     // 1 already gone
				{Kind: lio.DeleteLUN, Target: iqn, LUN: 9},                                        // 2 already gone
				{Kind: lio.CreateBackstore, Backstore: "bbb", File: b, WWN: "bbb1"},               // 3 already there
				{Kind: lio.CreateBackstore, Backstore: "ccc", File: c, WWN: "ccc1"},               // 4 applied
				{Kind: lio.CreateLUN, Backstore: "ccc", Target: iqn, LUN: lio.AutoLUN},            // 5 applied at lun0
				{Kind: lio.CreateBackstore, Backstore: "ddd", File: n.images + "/gone", WWN: "d"}, // 6 missing file: need a size
				{Kind: lio.CreateLUN, Backstore: "bbb", Target: iqn, LUN: lio.AutoLUN},            // 7 already mapped
				{Kind: lio.CreateBackstore, Backstore: "e e", File: c, WWN: "e"},                  // 8 unsafe name
				{Kind: lio.EnableTPG, Target: iqn},                                                // 9 already enabled
			}
			want := []lio.Outcome{lio.Applied, lio.AlreadyDone, lio.AlreadyDone, lio.AlreadyDone, lio.Applied,
				lio.Applied, lio.Failed, lio.AlreadyDone, lio.Failed, lio.AlreadyDone}
			res, err = n.driver.Apply(t.Context(), plan)
			if err != nil {
				t.Fatalf("Apply: %v%s", err, outcomes(res))
			}
			for i, r := range res {
				if r.Outcome != want[i] {
					t.Errorf("op %d (%v) = %v, want %v%s", i, r.Op, r.Outcome, want[i], outcomes(res))
				}
			}
			if msg := res[6].Message; !strings.Contains(msg, "need a size") {
				t.Errorf("missing image: Message = %q, want targetcli's \"need a size\"", msg)
			}
			if !errors.Is(res[8].Err, lio.ErrUnsafeArgument) {
				t.Errorf("unsafe name: Err = %v, want ErrUnsafeArgument", res[8].Err)
			}

			saved := n.saved(t)
			if _, ok := saved.FileIO("aaa"); ok {
				t.Error("aaa is still in saveconfig.json")
			}
			if _, ok := saved.FileIO("ddd"); ok {
				t.Error("ddd (missing image) is in saveconfig.json")
			}
			so, ok := saved.FileIO("ccc")
			if !ok || so.Dev != c || so.WWN != "ccc1" || so.SizeBytes() != 512 || so.WriteBack == nil || *so.WriteBack {
				t.Errorf("ccc in saveconfig.json = %+v, want over %s, wwn ccc1, 512 bytes, write_back false", so, c)
			}
			if got := lunOf(saved, iqn, "ccc"); got != 0 {
				t.Errorf("ccc is lun%d, want lun0 (the lowest free after aaa's delete)", got)
			}
			if got := lunOf(saved, iqn, "bbb"); got != 1 {
				t.Errorf("bbb is lun%d, want lun1 unchanged", got)
			}
			live, err := n.node.Live()
			if err != nil {
				t.Fatal(err)
			}
			if len(live.StorageObjects) != len(saved.StorageObjects) {
				t.Errorf("live has %d storage objects, saveconfig.json %d: the driver did not save", len(live.StorageObjects), len(saved.StorageObjects))
			}

			// Processes: batch runs one per stage (setup, then deletes and
			// creates); one-shot one per valid command plus a save per stage;
			// the daemon none, one request per command and save instead.
			const perCommand = 4 + 1 + 9 + 2
			st := n.driver.Stats()
			wantProcs := map[lio.Mode]int64{lio.Batch: 3, lio.OneShot: perCommand, lio.Daemon: 0}[mode]
			if st.Processes != wantProcs {
				t.Errorf("Stats().Processes = %d, want %d", st.Processes, wantProcs)
			}
			simProcs := wantProcs
			if mode == lio.Daemon {
				simProcs = 1 // the simulated targetclid itself
			}
			if got := n.node.Processes(); int64(got) != simProcs {
				t.Errorf("the simulator counted %d processes, want %d", got, simProcs)
			}
			if mode == lio.Daemon && st.Requests != perCommand {
				t.Errorf("Stats().Requests = %d, want %d", st.Requests, perCommand)
			}
		})
	}
}

// TestDriverFaults: a command that fails, and a targetcli that dies in the
// middle of a stage. Whatever happens, every op reported applied or
// already-done is in saveconfig.json, and every new backstore reported
// otherwise is not.
func TestDriverFaults(t *testing.T) {
	const n = 8
	tests := []struct {
		name     string
		faults   sim.Faults
		wantErr  bool
		failedAt int              // op index expected to fail with targetcli's message, or -1
		applied  map[lio.Mode]int // ops reported applied
	}{
		// Command numbers count every command of the stage, saveconfig too.
		{"fail the 3rd command", sim.Faults{FailAt: 3, FailMessage: "simulated failure"}, false, 2,
			map[lio.Mode]int{lio.Batch: n - 1, lio.OneShot: n - 1, lio.Daemon: n - 1}},
		// Batch and one-shot save the live state with a new process after
		// the crash, so the five commands that ran are saved and applied. A
		// dead daemon cannot save: nothing is in saveconfig.json, so
		// nothing is reported applied.
		{"die after the 5th command", sim.Faults{DieAfter: 5}, true, -1,
			map[lio.Mode]int{lio.Batch: 5, lio.OneShot: 5, lio.Daemon: 0}},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(string(mode)+"/"+tt.name, func(t *testing.T) {
				node := newSimNode(t, mode)
				var ops []lio.Op
				for i := range n {
					name := fmt.Sprintf("img%d", i)
					ops = append(ops, lio.Op{Kind: lio.CreateBackstore, Backstore: name, File: node.image(t, name, 1024), WWN: fmt.Sprintf("%x", 0xa0+i)})
				}
				faults := tt.faults
				if mode == lio.Batch {
					// A batch starts with the line that turns
					// auto_save_on_exit off: one command more.
					faults.FailAt += min(faults.FailAt, 1)
					faults.DieAfter += min(faults.DieAfter, 1)
				}
				if err := node.node.SetFaults(faults); err != nil {
					t.Fatal(err)
				}
				res, err := node.driver.Apply(t.Context(), ops)
				if (err != nil) != tt.wantErr {
					t.Fatalf("Apply error = %v, want error %v%s", err, tt.wantErr, outcomes(res))
				}
				saved := node.saved(t)
				applied := 0
				for i, r := range res {
					_, present := saved.FileIO(r.Op.Backstore)
					if r.OK() != present {
						t.Errorf("op %d reported %v but present in saveconfig.json = %v%s", i, r.Outcome, present, outcomes(res))
					}
					if r.Outcome == lio.Applied {
						applied++
					}
					if i == tt.failedAt && (r.Outcome != lio.Failed || !strings.Contains(r.Message, "simulated failure")) {
						t.Errorf("op %d = %v %q, want failed with targetcli's message", i, r.Outcome, r.Message)
					}
				}
				if applied != tt.applied[mode] {
					t.Errorf("%d ops applied, want %d%s", applied, tt.applied[mode], outcomes(res))
				}
			})
		}
	}
}

// TestDriverTimeout: a targetcli that hangs is stopped after the timeout and
// the call says so.
func TestDriverTimeout(t *testing.T) {
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot} {
		t.Run(string(mode), func(t *testing.T) {
			n := newSimNode(t, mode)
			if err := n.node.SetFaults(sim.Faults{HangAt: 1}); err != nil {
				t.Fatal(err)
			}
			d, err := lio.New(lio.DriverConfig{Mode: mode, Binary: sim.Binary(t), SaveFile: n.node.SaveFile(), Env: n.node.Env(), Timeout: 300 * time.Millisecond}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			start := time.Now()
			res, err := d.Apply(t.Context(), []lio.Op{{Kind: lio.CreateBackstore, Backstore: "h", File: n.image(t, "h", 1), WWN: "1"}})
			if err == nil || !strings.Contains(err.Error(), "longer than") {
				t.Fatalf("Apply error = %v, want a timeout%s", err, outcomes(res))
			}
			if el := time.Since(start); el > 20*time.Second {
				t.Errorf("Apply took %v after a 300ms timeout", el)
			}
			if res[0].Outcome == lio.Applied || res[0].Outcome == lio.AlreadyDone {
				t.Errorf("hung op reported %v", res[0].Outcome)
			}
		})
	}
}

// TestApplyFailsWhenItsSaveFails: a save file that cannot be written fails
// the call, naming the file, in every mode (batch mode goes on after its
// failed saveconfig and exits 0: only the missing confirmation shows it).
func TestApplyFailsWhenItsSaveFails(t *testing.T) {
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot, lio.Daemon} {
		t.Run(string(mode), func(t *testing.T) {
			n := newSimNode(t, mode)
			blocker := filepath.Join(t.TempDir(), "not-a-folder")
			if err := os.WriteFile(blocker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			saveFile := filepath.Join(blocker, "saveconfig.json")
			cfg := lio.DriverConfig{Mode: mode, Binary: sim.Binary(t), SaveFile: saveFile, Env: n.node.Env(),
				Socket: n.node.SocketPath(), Timeout: time.Minute}
			d, err := lio.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			op := lio.Op{Kind: lio.CreateBackstore, Backstore: "a", File: n.image(t, "a", 1024), WWN: "aaaa"}
			_, err = d.Apply(t.Context(), []lio.Op{op})
			if err == nil || !strings.Contains(err.Error(), saveFile) {
				t.Fatalf("Apply with an unwritable save file: err = %v, want one naming %s", err, saveFile)
			}
		})
	}
}
