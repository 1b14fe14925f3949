package lio_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

const guardIQN = "iqn.2023-06.csm.iscsi:ncn-w001"

func TestLost(t *testing.T) {
	base := func() *lio.Config {
		return &lio.Config{
			StorageObjects: []lio.StorageObject{{Plugin: "fileio", Name: "a", Dev: "/m/a"}, {Plugin: "fileio", Name: "b", Dev: "/m/b"}},
			Targets: []lio.Target{{Fabric: "iscsi", WWN: guardIQN, TPGs: []lio.TPG{{
				Tag:        1,
				Attributes: map[string]json.RawMessage{"demo_mode_write_protect": json.RawMessage("1")},
				Parameters: map[string]string{"AuthMethod": "CHAP,None"},
				Portals:    []json.RawMessage{json.RawMessage(`{"ip_address":"10.252.1.7","iser":false,"offload":false,"port":3260}`)},
				LUNs:       []lio.LUN{{Index: 0, StorageObject: "/backstores/fileio/a"}, {Index: 1, StorageObject: "/backstores/fileio/b"}},
				NodeACLs:   []lio.NodeACL{{NodeWWN: "iqn.x:c1", MappedLUNs: []lio.MappedLUN{{Index: 0, TPGLUN: 1}}}},
			}}}},
		}
	}
	tpg := func(c *lio.Config) *lio.TPG { return &c.Targets[0].TPGs[0] }
	tests := []struct {
		name  string
		live  func(c *lio.Config)
		meant []lio.Op
		want  []string
	}{
		{name: "same", live: func(*lio.Config) {}},
		{name: "emptied", live: func(c *lio.Config) { *c = lio.Config{} },
			want: []string{"storage object /backstores/fileio/a", "storage object /backstores/fileio/b", "target " + guardIQN}},
		{name: "backstore deleted as meant", live: func(c *lio.Config) {
			c.StorageObjects = c.StorageObjects[:1]
			tpg(c).LUNs = tpg(c).LUNs[:1]
			tpg(c).NodeACLs[0].MappedLUNs = nil
		}, meant: []lio.Op{{Kind: lio.DeleteBackstore, Backstore: "b"}}},
		{name: "LUN deleted as meant", live: func(c *lio.Config) { tpg(c).LUNs = tpg(c).LUNs[1:] },
			meant: []lio.Op{{Kind: lio.DeleteLUN, Target: guardIQN, LUN: 0}}},
		{name: "LUN deleted, not meant", live: func(c *lio.Config) { tpg(c).LUNs = tpg(c).LUNs[1:] },
			meant: []lio.Op{{Kind: lio.DeleteLUN, Target: guardIQN, LUN: 7}},
			want:  []string{"lun0 (/backstores/fileio/a) of " + guardIQN + "/tpg1"}},
		{name: "LUN repointed", live: func(c *lio.Config) { tpg(c).LUNs[0].StorageObject = "/backstores/fileio/b" },
			want: []string{"lun0 (/backstores/fileio/a, now /backstores/fileio/b) of " + guardIQN + "/tpg1"}},
		{name: "TPG gone", live: func(c *lio.Config) { c.Targets[0].TPGs = nil }, want: []string{"TPG " + guardIQN + "/tpg1"}},
		{name: "portal, attribute, parameter, ACL gone", live: func(c *lio.Config) {
			g := tpg(c)
			g.Portals, g.Attributes, g.Parameters, g.NodeACLs = nil, map[string]json.RawMessage{}, map[string]string{}, nil
		}, want: []string{
			"attribute demo_mode_write_protect of " + guardIQN + "/tpg1", "node ACL iqn.x:c1 of " + guardIQN + "/tpg1",
			"parameter AuthMethod of " + guardIQN + "/tpg1", "portal 10.252.1.7:3260 of " + guardIQN + "/tpg1"}},
		{name: "mapped LUN gone", live: func(c *lio.Config) { tpg(c).NodeACLs[0].MappedLUNs = nil },
			want: []string{"mapped lun0 of node ACL iqn.x:c1 of " + guardIQN + "/tpg1"}},
		{name: "additions are no loss", live: func(c *lio.Config) {
			c.StorageObjects = append(c.StorageObjects, lio.StorageObject{Plugin: "fileio", Name: "c"})
			tpg(c).LUNs = append(tpg(c).LUNs, lio.LUN{Index: 2, StorageObject: "/backstores/fileio/c"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := base()
			// a deep enough copy: the live side is rebuilt, not shared
			tt.live(live)
			got := lio.Lost(base(), live, tt.meant)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Lost() = %q, want %q", got, tt.want)
			}
		})
	}
}

// guarded is a simulated node whose driver saves to the staging file, and
// the guard that installs it as the node's saveconfig.json.
func guarded(t *testing.T, mode lio.Mode) (node *sim.Node, g *lio.Guard, file, img string) {
	t.Helper()
	dir := t.TempDir()
	// As on Debian, targetcli's default save file (where batch mode's
	// auto-save at end of input goes, while the simulator ignores
	// auto_save_on_exit=false) is not the file the agent keeps.
	var err error
	node, err = sim.NewNode(filepath.Join(dir, "node"), sim.NodeOptions{SaveFile: filepath.Join(dir, "rtslib-fb-target", "saveconfig.json")})
	if err != nil {
		t.Fatalf("sim.NewNode: %v", err)
	}
	file = filepath.Join(dir, "target", "saveconfig.json")
	initial, err := os.ReadFile(node.SaveFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := lio.New(lio.DriverConfig{Mode: mode, Binary: sim.Binary(t), SaveFile: lio.StagingFile(file),
		Env: node.Env(), Socket: node.SocketPath(), Timeout: time.Minute}, nil)
	if err != nil {
		t.Fatalf("lio.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	g, err = lio.NewGuard(d, file, node.IQN())
	if err != nil {
		t.Fatalf("lio.NewGuard: %v", err)
	}
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(images, "x.squashfs"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	return node, g, file, filepath.Join(images, "x.squashfs")
}

// TestGuardKeepsFileWhenLiveLost: the kernel lost the node's target
// (target.service stopped) while saveconfig.json still has it: neither a
// save nor an apply may write the file, and the refusal names the fix.
func TestGuardKeepsFileWhenLiveLost(t *testing.T) {
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot} {
		t.Run(string(mode), func(t *testing.T) {
			node, g, file, img := guarded(t, mode)
			ctx := t.Context()
			if err := g.Save(ctx); err != nil {
				t.Fatalf("Save with live state intact: %v", err)
			}
			before, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := node.Clear(); err != nil {
				t.Fatal(err)
			}
			err = g.Save(ctx)
			if !errors.Is(err, lio.ErrNotRestored) || !strings.Contains(err.Error(), "target "+node.IQN()) || !strings.Contains(err.Error(), "systemctl start target.service") {
				t.Errorf("Save with live state emptied = %v, want ErrNotRestored naming the target and the fix", err)
			}
			_, err = g.Apply(ctx, []lio.Op{
				{Kind: lio.CreateBackstore, Backstore: "x", File: img, WWN: "0123456789abcdef0123456789abcde"},
				{Kind: lio.CreateLUN, Backstore: "x", Target: node.IQN(), LUN: 3},
			})
			if !errors.Is(err, lio.ErrNotRestored) {
				t.Errorf("Apply with live state emptied = %v, want ErrNotRestored", err)
			}
			after, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("saveconfig.json changed although live state lost its target:\nbefore %s\nafter %s", before, after)
			}
			if err := g.Check(ctx); !errors.Is(err, lio.ErrNotRestored) {
				t.Errorf("Check = %v, want ErrNotRestored", err)
			}
			c, err := lio.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := node.Restore(c); err != nil {
				t.Fatal(err)
			}
			if err := g.Save(ctx); err != nil {
				t.Errorf("Save after the restore = %v, want nil", err)
			}
			if _, err := os.Stat(lio.StagingFile(file)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("staging file left behind: %v", err)
			}
		})
	}
}

// TestGuardResavesMissingOrInvalidFile is issue 15 point 5: a removed or
// invalid saveconfig.json is written again from live state, unless live
// state lacks the node's target.
func TestGuardResavesMissingOrInvalidFile(t *testing.T) {
	for _, tt := range []struct {
		name  string
		spoil func(path string) error
	}{
		{"removed", os.Remove},
		{"invalid JSON", func(p string) error { return os.WriteFile(p, []byte("{\"targets\": [}\n"), 0o600) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			node, g, file, _ := guarded(t, lio.Batch)
			ctx := t.Context()
			if err := tt.spoil(file); err != nil {
				t.Fatal(err)
			}
			if err := g.Save(ctx); err != nil {
				t.Fatalf("Save = %v, want the file written again", err)
			}
			c, err := lio.Load(file)
			if err != nil {
				t.Fatalf("saveconfig.json after Save: %v", err)
			}
			if _, ok := c.Target(node.IQN()); !ok {
				t.Errorf("saveconfig.json written again lacks %s", node.IQN())
			}
			if err := tt.spoil(file); err != nil {
				t.Fatal(err)
			}
			spoilt, _ := os.ReadFile(file)
			if err := node.Clear(); err != nil {
				t.Fatal(err)
			}
			err = g.Save(ctx)
			if !errors.Is(err, lio.ErrNotRestored) || !strings.Contains(err.Error(), "no target "+node.IQN()) {
				t.Errorf("Save with live state empty = %v, want ErrNotRestored naming the target", err)
			}
			now, _ := os.ReadFile(file)
			if !bytes.Equal(now, spoilt) {
				t.Errorf("saveconfig.json = %q, want it left as it was (%q)", now, spoilt)
			}
		})
	}
}

// TestGuardKnowsRemovalsOfAKilledApply: an agent killed after targetcli
// deleted a LUN and before the save leaves the kernel without an object
// the file holds. The removal was recorded before targetcli ran, so the
// next agent's save installs the live state; the same loss without the
// record (made behind the agent's back) is still refused.
func TestGuardKnowsRemovalsOfAKilledApply(t *testing.T) {
	node, g, file, img := guarded(t, lio.Batch)
	ctx := t.Context()
	create := []lio.Op{
		{Kind: lio.CreateBackstore, Backstore: "x", File: img, WWN: "0123456789abcdef0123456789abcde"},
		{Kind: lio.CreateLUN, Backstore: "x", Target: node.IQN(), LUN: 3},
	}
	if _, err := g.Apply(ctx, create); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if _, err := os.Stat(lio.IntentFile(file)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an Apply without removals left %s: %v", lio.IntentFile(file), err)
	}
	tpg := "/iscsi/" + node.IQN() + "/tpg1/luns"

	// Behind the agent's back: refused.
	if _, err := node.Run(ctx, tpg+" delete lun=3"); err != nil {
		t.Fatal(err)
	}
	if err := g.Save(ctx); !errors.Is(err, lio.ErrNotRestored) {
		t.Fatalf("Save after an outside delete = %v, want ErrNotRestored", err)
	}
	if _, err := node.Run(ctx, tpg+" create /backstores/fileio/x lun=3 add_mapped_luns=false"); err != nil {
		t.Fatal(err)
	}

	// The agent's own delete, cut off before any save: the batch dies
	// right after the delete (command 2, after `set global`) and the
	// driver's save that follows fails, as if the agent had been killed
	// between the two.
	del := lio.Op{Kind: lio.DeleteLUN, Target: node.IQN(), LUN: 3}
	if err := node.SetFaults(sim.Faults{DieAfter: 2, FailAt: 3}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Apply(ctx, []lio.Op{del})
	if err == nil {
		t.Fatal("Apply whose targetcli died returned no error")
	}
	if err := node.SetFaults(sim.Faults{}); err != nil {
		t.Fatal(err)
	}
	live, err := node.Live()
	if err != nil {
		t.Fatal(err)
	}
	if tgt, _ := live.Target(node.IQN()); func() bool { g, _ := tgt.TPG(1); _, ok := g.LUNFor("/backstores/fileio/x"); return ok }() {
		t.Fatal("the test's kill came before the delete: lun3 is still live")
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Fatal("the cut-off Apply saved: the test's faults came after the save")
	}
	if _, err := os.Stat(lio.IntentFile(file)); err != nil {
		t.Fatalf("the cut-off Apply left no record of its removal: %v", err)
	}
	if err := g.Save(ctx); err != nil {
		t.Fatalf("Save after the agent's own killed delete = %v, want the live state installed", err)
	}
	saved, err := lio.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if tgt, _ := saved.Target(node.IQN()); func() bool { g, _ := tgt.TPG(1); _, ok := g.LUNFor("/backstores/fileio/x"); return ok }() {
		t.Error("saveconfig.json still has lun3 after the save")
	}
	if _, err := os.Stat(lio.IntentFile(file)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record of removals outlived their save: %v", err)
	}
}

// TestGuardCheckLeavesTheStagingFile: Check (`sbps-marshal status`,
// doctor) saves LIO's live state to a file of its own, so it may run while
// the agent saves: the agent's staging file is neither removed nor
// overwritten, and nothing is left behind.
func TestGuardCheckLeavesTheStagingFile(t *testing.T) {
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot} {
		t.Run(string(mode), func(t *testing.T) {
			node, g, file, _ := guarded(t, mode)
			staging := lio.StagingFile(file)
			agents := []byte("the agent's save, not yet judged")
			if err := os.WriteFile(staging, agents, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := g.Check(t.Context()); err != nil {
				t.Fatalf("Check with live state intact: %v", err)
			}
			if got, err := os.ReadFile(staging); err != nil || !bytes.Equal(got, agents) {
				t.Errorf("staging file after Check = %q, %v; want the agent's content untouched", got, err)
			}
			if err := node.Clear(); err != nil {
				t.Fatal(err)
			}
			if err := g.Check(t.Context()); !errors.Is(err, lio.ErrNotRestored) {
				t.Errorf("Check with live state emptied = %v, want ErrNotRestored", err)
			}
			left, _ := filepath.Glob(staging + ".check-*")
			if len(left) > 0 {
				t.Errorf("Check left %q behind", left)
			}
		})
	}
}
