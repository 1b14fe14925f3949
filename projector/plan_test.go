package projector

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

const testIQN = "iqn.2023-06.csm.iscsi:ncn-w001"

var layout = Layout{Bucket: "boot-images", Mount: "/var/lib/cps-local/boot-images", PEPrefix: "PE/"}

func peProjection(key string, size int64) Projection {
	return Projection{Kind: PE, ID: naming.For(naming.PEInput("boot-images", key)), Key: key, File: layout.FileFor(key), Size: size}
}

func rootfsProjection(key, etag string, size int64) Projection {
	return Projection{Kind: Rootfs, ID: naming.For(naming.RootfsInput("s3://boot-images/"+key, etag)), Key: key, ETag: etag, File: layout.FileFor(key), Size: size}
}

func desiredOf(ps ...Projection) *Desired {
	d := &Desired{Projections: map[string]Projection{}, Pending: map[string]Problem{}, RootfsComplete: true}
	for _, p := range ps {
		d.Projections[p.ID.Name] = p
	}
	return d
}

// node builds LIO saved state as CSM provisions a worker: one target, tpg1
// with generated, write-protected ACLs.
func node(tpgAttrs map[string]int, sos ...lio.StorageObject) *lio.Config {
	attrs := map[string]json.RawMessage{"generate_node_acls": raw(1), "demo_mode_write_protect": raw(1), "prod_mode_write_protect": raw(1)}
	for k, v := range tpgAttrs {
		attrs[k] = raw(v)
	}
	tpg := lio.TPG{Tag: 1, Enable: true, Attributes: attrs}
	for i, so := range sos {
		if so.Plugin == "fileio" && !strings.HasPrefix(so.Name, "nolun") {
			tpg.LUNs = append(tpg.LUNs, lio.LUN{Index: i, StorageObject: so.Path()})
		}
	}
	return &lio.Config{StorageObjects: sos, Targets: []lio.Target{{Fabric: "iscsi", WWN: testIQN, TPGs: []lio.TPG{tpg}}}}
}

func raw(v int) json.RawMessage { return json.RawMessage(fmt.Sprint(v)) }

func fileio(name, dev, wwn string, size int64) lio.StorageObject {
	return lio.StorageObject{Plugin: "fileio", Name: name, Dev: dev, WWN: wwn, Size: &size}
}

func backstoreOf(p Projection) lio.StorageObject { return fileio(p.ID.Name, p.File, p.ID.WWN, p.Size) }

var opts = PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5}

func summary(p *Plan) string {
	var parts []string
	for _, c := range p.Changes {
		parts = append(parts, fmt.Sprintf("%s %s lun%d", c.Action, c.Name, c.LUN))
	}
	for _, c := range p.Held {
		parts = append(parts, fmt.Sprintf("held %s (%s)", c.Name, c.Code))
	}
	return strings.Join(parts, ", ")
}

func TestMakePlan(t *testing.T) {
	pe := peProjection("PE/CPE-base.x86_64-24.11.squashfs", 1000)
	pe2 := peProjection("PE/CPE-nvidia.x86_64-23.05.squashfs", 2000)
	rf := rootfsProjection("4842867f-a9bc-4c2a-ad84-fcc3c931bdad/rootfs", "2a94bb6ce5be4f6f0aa5af23f969d739-56", 3000)
	rf2 := rootfsProjection("00d18ed1-20a3-4df2-affb-a88fda00b6f6/rootfs", "4add976679c7e955c4b16d7e2cfa114e-32", 4000)
	resized := pe
	resized.Size = 1001
	foreign := fileio("scratch", "/srv/scratch.img", "x", 10)
	block := lio.StorageObject{Plugin: "block", Name: "disk", Dev: "/dev/sdb", WWN: "y"}
	incomplete := desiredOf(pe)
	incomplete.RootfsComplete, incomplete.RootfsIncompleteReason = false, "IMS: 503"
	pending := desiredOf(pe2, rf, rf2)
	pending.Pending[pe.ID.Name] = Problem{Kind: PE, Name: pe.ID.Name, Reason: "s3fs shows 0 bytes, S3 says 1000"}

	tests := []struct {
		name   string
		d      *Desired
		actual *lio.Config
		opts   PlanOptions
		want   string
	}{
		{"create on an empty node", desiredOf(pe, rf), node(nil), opts,
			fmt.Sprintf("create %s lun-1, create %s lun-1", rf.ID.Name, pe.ID.Name)},
		{"nothing to do", desiredOf(pe, rf), node(nil, backstoreOf(pe), backstoreOf(rf)), opts, ""},
		{"size differs: recreate at the same LUN", desiredOf(resized, rf), node(nil, backstoreOf(rf), backstoreOf(pe)), opts,
			fmt.Sprintf("recreate %s lun1", pe.ID.Name)},
		{"no longer desired", desiredOf(pe, rf, rf2), node(nil, backstoreOf(pe), backstoreOf(rf), backstoreOf(rf2), backstoreOf(pe2)), opts,
			fmt.Sprintf("delete %s lun3", pe2.ID.Name)},
		{"foreign backstores left alone", desiredOf(), node(nil, foreign, block), opts, ""},
		{"IMS incomplete: rootfs kept, PE deleted", incomplete, node(nil, backstoreOf(pe), backstoreOf(rf), backstoreOf(pe2), backstoreOf(rf2), backstoreOf(peProjection("PE/a", 1)), backstoreOf(peProjection("PE/b", 1))), opts,
			fmt.Sprintf("delete %s lun4, delete %s lun2, delete %s lun5, held %s (ims_incomplete), held %s (ims_incomplete)", peProjection("PE/a", 1).ID.Name, pe2.ID.Name, peProjection("PE/b", 1).ID.Name, rf.ID.Name, rf2.ID.Name)},
		{"pending re-upload keeps the old LUN", pending, node(nil, backstoreOf(pe), backstoreOf(pe2), backstoreOf(rf), backstoreOf(rf2)), opts,
			"held " + pe.ID.Name + " (pending)"},
		{"mass delete refused", desiredOf(pe), node(nil, backstoreOf(pe), backstoreOf(pe2), backstoreOf(rf), backstoreOf(rf2)), opts,
			fmt.Sprintf("held %s (mass_delete), held %s (mass_delete), held %s (mass_delete)", pe2.ID.Name, rf.ID.Name, rf2.ID.Name)},
		{"mass delete allowed", desiredOf(pe), node(nil, backstoreOf(pe), backstoreOf(pe2), backstoreOf(rf), backstoreOf(rf2)), PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5, AllowMassDelete: true},
			fmt.Sprintf("delete %s lun1, delete %s lun2, delete %s lun3", pe2.ID.Name, rf.ID.Name, rf2.ID.Name)},
		{"one delete is never mass", desiredOf(), node(nil, backstoreOf(pe)), opts, fmt.Sprintf("delete %s lun0", pe.ID.Name)},
		{"writable TPG: no creates", desiredOf(pe, rf), node(map[string]int{"demo_mode_write_protect": 0}), opts, ""},
		{"writable TPG allowed", desiredOf(pe), node(map[string]int{"demo_mode_write_protect": 0}), PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5, AllowWritableTPG: true},
			fmt.Sprintf("create %s lun-1", pe.ID.Name)},
		{"backstore without LUN gets mapped", desiredOf(pe), func() *lio.Config {
			c := node(nil, backstoreOf(pe))
			c.Targets[0].TPGs[0].LUNs = nil
			return c
		}(), opts, fmt.Sprintf("map %s lun-1", pe.ID.Name)},
		{"registry index used for new LUNs", desiredOf(pe), node(nil), PlanOptions{Target: testIQN, MaxDeleteFraction: 0.5, LUNIndex: func(Projection) (int, bool) { return 17, true }},
			fmt.Sprintf("create %s lun17", pe.ID.Name)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := MakePlan(tt.d, tt.actual, layout, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(p); got != tt.want {
				t.Errorf("plan = %q\nwant   %q", got, tt.want)
			}
		})
	}
}

func TestPlanReasons(t *testing.T) {
	pe := peProjection("PE/x", 5)
	pe2 := peProjection("PE/y", 5)
	pe3 := peProjection("PE/z", 5)
	p, err := MakePlan(desiredOf(), node(nil, backstoreOf(pe), backstoreOf(pe2), backstoreOf(pe3)), layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Held) != 3 || !strings.Contains(p.Held[0].Reason, "would delete 3 of 3") || !strings.Contains(p.Held[0].Reason, "--allow-mass-delete") {
		t.Errorf("held = %+v, want the mass-delete reason naming the override", p.Held)
	}
	p, err = MakePlan(desiredOf(pe), node(map[string]int{"demo_mode_write_protect": 0}), layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Refused, "demo_mode_write_protect") || !strings.Contains(p.Refused, "ALLOW_WRITABLE_TPG") {
		t.Errorf("Refused = %q, want the cause and the fix", p.Refused)
	}
	if _, err := MakePlan(desiredOf(pe), node(nil), layout, PlanOptions{Target: "iqn.2023-06.csm.iscsi:other"}); err == nil || !strings.Contains(err.Error(), "not in LIO's saved state") {
		t.Errorf("unknown target: err = %v", err)
	}
}

func TestPlanOps(t *testing.T) {
	pe := peProjection("PE/x", 5)
	old := peProjection("PE/old", 5)
	resized := peProjection("PE/r", 6)
	actual := node(nil, backstoreOf(old), fileio(resized.ID.Name, resized.File, resized.ID.WWN, 5))
	p, err := MakePlan(desiredOf(pe, resized), actual, layout, PlanOptions{Target: testIQN, MaxDeleteFraction: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range p.Ops(testIQN, 1) {
		got = append(got, op.String())
	}
	want := []string{
		"delete fileio " + old.ID.Name,
		"delete fileio " + resized.ID.Name,
		fmt.Sprintf("create fileio %s over %s (wwn %s)", resized.ID.Name, resized.File, resized.ID.WWN),
		fmt.Sprintf("create lun1 for %s in %s/tpg1", resized.ID.Name, testIQN),
		fmt.Sprintf("create fileio %s over %s (wwn %s)", pe.ID.Name, pe.File, pe.ID.WWN),
		fmt.Sprintf("create LUN for %s in %s/tpg1", pe.ID.Name, testIQN),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ops =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestTPGPlans: the node gate and the session reset are planned changes of
// the TPG, carried out by the same Ops as every other change.
func TestTPGPlans(t *testing.T) {
	enabled := node(nil)
	disabled := node(nil)
	disabled.Targets[0].TPGs[0].Enable = false
	ops := func(p *Plan) string {
		var s []string
		for _, op := range p.Ops(testIQN, 1) {
			s = append(s, string(op.Kind))
		}
		return strings.Join(s, ", ")
	}
	tests := []struct {
		name       string
		plan       *Plan
		wantAction Action
		wantOps    string
	}{
		{"gate open, tpg enabled", GatePlan(enabled, testIQN, 0, true, "labelled"), "", ""},
		{"gate closed, tpg disabled", GatePlan(disabled, testIQN, 1, false, "not labelled"), "", ""},
		{"gate closes", GatePlan(enabled, testIQN, 1, false, "not labelled"), DisableTPG, "disable-tpg"},
		{"gate opens", GatePlan(disabled, testIQN, 0, true, "labelled"), EnableTPG, "enable-tpg"},
		{"target not provisioned", GatePlan(enabled, "iqn.2026-01.example:other", 1, false, "x"), "", ""},
		{"session reset", SessionResetPlan("lun3 changed"), ResetSessions, "disable-tpg, enable-tpg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Action
			if len(tt.plan.Changes) > 1 {
				t.Fatalf("changes = %+v, want at most one", tt.plan.Changes)
			}
			if len(tt.plan.Changes) == 1 {
				got = tt.plan.Changes[0].Action
				if tt.plan.Changes[0].Reason == "" {
					t.Errorf("change %s has no reason", got)
				}
			}
			if got != tt.wantAction || ops(tt.plan) != tt.wantOps {
				t.Errorf("plan %q, ops %q; want %q, %q", got, ops(tt.plan), tt.wantAction, tt.wantOps)
			}
		})
	}
	// Around projection changes, a disable comes first and an enable last.
	p := &Plan{Changes: []Change{{Action: EnableTPG}, {Action: Delete, Name: "a"}, {Action: DisableTPG}}}
	if got, want := ops(p), "disable-tpg, delete-backstore, enable-tpg"; got != want {
		t.Errorf("ops = %q, want %q", got, want)
	}
}
