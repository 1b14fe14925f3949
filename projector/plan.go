package projector

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Action is what a change does.
type Action string

const (
	Create   Action = "create"   // new backstore and LUN
	Recreate Action = "recreate" // backstore differs (file, size or wwn): delete, then create
	Map      Action = "map"      // backstore is right, its LUN is missing
	Renumber Action = "renumber" // LUN index differs from the registry; moved on request only
	Delete   Action = "delete"   // backstore no longer desired

	// The TPG's own changes, planned by GatePlan and SessionResetPlan.
	EnableTPG     Action = "enable-tpg"     // the node gate opened: serve the TPG's LUNs again
	DisableTPG    Action = "disable-tpg"    // the node gate closed: LIO closes every session of the TPG
	ResetSessions Action = "reset-sessions" // disable, then enable: initiators log in again to the LUN map LIO holds
)

// Change is one projection-level change, or one change of the TPG itself
// (EnableTPG, DisableTPG, ResetSessions: Name is empty).
type Change struct {
	Action     Action
	Name       string      // backstore name
	Projection *Projection // for create, recreate, map
	Dev        string      // existing backstore's file (recreate, delete)
	LUN        int         // existing LUN index, or lio.AutoLUN when there is none; for renumber, the new index
	OldLUN     int         // renumber: the index the LUN has now
	Code       Code        // held deletes: why, as a class (HeldCodes)
	Reason     string
}

// Plan is the difference between desired and actual state.
type Plan struct {
	Changes []Change
	// Held are deletes that were not planned, with the reason: incomplete
	// information, a pending re-upload, or the mass-delete guard.
	Held []Change
	// Refused explains why creates were withheld (e.g. a writable TPG).
	Refused string
	// Managed counts the managed backstores found in LIO.
	Managed int
	// Foreign lists backstores and LUNs the agent does not own and left alone.
	Foreign []string
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// PlanOptions tune planning.
type PlanOptions struct {
	Target            string  // target IQN
	TPG               int     // TPG tag; 0 means 1
	MaxDeleteFraction float64 // refuse a pass deleting more than this fraction of managed projections
	AllowMassDelete   bool    // the operator's override of the guard
	AllowWritableTPG  bool    // project into a TPG that does not write-protect
	// Renumber moves LUNs whose index differs from LUNIndex's answer (the
	// operator's `sync --renumber`; initiators see the LUN move).
	Renumber bool
	// LUNIndex, when set, gives the LUN index a new projection must use
	// (fleet-stable numbering); otherwise LIO chooses.
	LUNIndex func(p Projection) (int, bool)
}

// MakePlan compares desired with LIO's saved state. It is pure: no I/O.
func MakePlan(d *Desired, actual *lio.Config, layout Layout, opts PlanOptions) (*Plan, error) {
	pl, err := newPlanner(d, actual, layout, opts)
	if err != nil {
		return nil, err
	}
	creates := pl.creates()
	deletes := pl.guardMassDelete(pl.deletes())
	creates = pl.refuseWritable(creates)
	pl.assignIndexes(creates)
	// Creates that keep or claim a known LUN index go before those that let
	// LIO pick the lowest free one, which could otherwise take that index.
	slices.SortStableFunc(creates, func(a, b Change) int {
		return boolInt(a.LUN == lio.AutoLUN) - boolInt(b.LUN == lio.AutoLUN)
	})
	pl.p.Changes = append(deletes, creates...)
	return pl.p, nil
}

// planner is what MakePlan's steps share. The steps visit every
// projection and LUN: on a node with 10,000 they must not allocate per
// item. Changes are few; they are sorted by name once found.
type planner struct {
	d        *Desired
	layout   Layout
	opts     PlanOptions
	tag      int
	tpg      *lio.TPG
	existing map[string]*lio.StorageObject // managed backstores by name
	luns     map[string]int                // fileio backstore name -> LUN index in the TPG
	p        *Plan
}

func newPlanner(d *Desired, actual *lio.Config, layout Layout, opts PlanOptions) (*planner, error) {
	tag := tagOr1(opts.TPG)
	tgt, ok := actual.Target(opts.Target)
	if !ok {
		return nil, fmt.Errorf("target %s is not in LIO's saved state: provision it (targetcli /iscsi create %s) or set TARGET_IQN", opts.Target, opts.Target)
	}
	tpg, ok := tgt.TPG(tag)
	if !ok {
		return nil, fmt.Errorf("target %s has no tpg%d: provision it or check TARGET_IQN", opts.Target, tag)
	}
	pl := &planner{d: d, layout: layout, opts: opts, tag: tag, tpg: tpg, p: &Plan{},
		existing: make(map[string]*lio.StorageObject, len(actual.StorageObjects)),
		luns:     make(map[string]int, len(tpg.LUNs)),
	}
	for i := range actual.StorageObjects {
		so := &actual.StorageObjects[i]
		if so.Plugin != "fileio" || !layout.Managed(so.Dev) {
			pl.p.Foreign = append(pl.p.Foreign, so.Path())
			continue
		}
		pl.existing[so.Name] = so
	}
	pl.p.Managed = len(pl.existing)
	for _, l := range tpg.LUNs {
		if name, ok := strings.CutPrefix(l.StorageObject, "/backstores/fileio/"); ok {
			pl.luns[name] = l.Index
		}
	}
	return pl, nil
}

// lunOf is the LUN index of a managed backstore, or lio.AutoLUN.
func (pl *planner) lunOf(name string) int {
	if idx, ok := pl.luns[name]; ok {
		return idx
	}
	return lio.AutoLUN
}

// creates plans what a desired projection needs: a new backstore, one
// recreated because it differs, a missing LUN, or (on request) a move to
// the registry's index.
func (pl *planner) creates() []Change {
	var creates []Change
	add := func(c Change, p Projection) { c.Projection = &p; creates = append(creates, c) }
	for name, proj := range pl.d.Projections {
		so, ok := pl.existing[name]
		switch {
		case !ok:
			add(Change{Action: Create, Name: name, LUN: lio.AutoLUN, Reason: "new image"}, proj)
		case !serves(so, &proj):
			add(Change{Action: Recreate, Name: name, Dev: so.Dev, LUN: pl.lunOf(name), Reason: mismatch(so, &proj)}, proj)
		case pl.lunOf(name) == lio.AutoLUN:
			add(Change{Action: Map, Name: name, LUN: lio.AutoLUN, Reason: "backstore has no LUN in " + pl.opts.Target}, proj)
		case pl.opts.Renumber && pl.opts.LUNIndex != nil:
			if idx, ok := pl.opts.LUNIndex(proj); ok && idx != pl.lunOf(name) {
				add(Change{Action: Renumber, Name: name, LUN: idx, OldLUN: pl.lunOf(name),
					Reason: fmt.Sprintf("lun%d differs from the fleet registry's lun%d (operator asked to renumber)", pl.lunOf(name), idx)}, proj)
			}
		}
	}
	slices.SortFunc(creates, func(a, b Change) int { return strings.Compare(a.Name, b.Name) })
	return creates
}

// deletes plans the removal of every managed backstore no longer desired,
// and holds those whose removal rests on partial information: a pending
// re-upload, incomplete IMS information (rootfs), an image IMS left out
// but has not confirmed gone.
func (pl *planner) deletes() []Change {
	var gone []string
	for name := range pl.existing {
		if _, ok := pl.d.Projections[name]; !ok {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	var deletes []Change
	d := pl.d
	for _, name := range gone {
		so := pl.existing[name]
		ch := Change{Action: Delete, Name: name, Dev: so.Dev, LUN: pl.lunOf(name), Reason: "no longer desired"}
		switch {
		case d.Pending[name].Reason != "":
			ch.Code, ch.Reason = HeldPending, "kept while pending: "+d.Pending[name].Reason
		case pl.layout.KindOf(so.Name, so.Dev) == Rootfs && !d.RootfsComplete:
			ch.Code, ch.Reason = HeldIMSIncomplete, "kept: IMS information is incomplete ("+d.RootfsIncompleteReason+")"
		case d.Unconfirmed[name].Reason != "":
			ch.Code, ch.Reason = HeldUnconfirmed, d.Unconfirmed[name].Reason
		default:
			deletes = append(deletes, ch)
			continue
		}
		pl.p.Held = append(pl.p.Held, ch)
	}
	return deletes
}

// guardMassDelete holds every delete when there are more than
// MAX_DELETE_FRACTION of the managed projections, unless the operator
// allowed it.
func (pl *planner) guardMassDelete(deletes []Change) []Change {
	limit := pl.opts.MaxDeleteFraction * float64(pl.p.Managed)
	if len(deletes) <= 1 || float64(len(deletes)) <= limit || pl.opts.AllowMassDelete {
		return deletes
	}
	reason := fmt.Sprintf("kept: this pass would delete %d of %d managed projections, more than MAX_DELETE_FRACTION=%g allows (%d); if that is intended run `sbps-marshal sync --allow-mass-delete`",
		len(deletes), pl.p.Managed, pl.opts.MaxDeleteFraction, int(math.Floor(limit)))
	for _, ch := range deletes {
		ch.Code, ch.Reason = HeldMassDelete, reason
		pl.p.Held = append(pl.p.Held, ch)
	}
	return nil
}

// refuseWritable withholds every create from a TPG that would let
// initiators write (unless ALLOW_WRITABLE_TPG), and holds the deletes of
// recreates with them.
func (pl *planner) refuseWritable(creates []Change) []Change {
	if len(creates) == 0 || pl.opts.AllowWritableTPG {
		return creates
	}
	why := writable(pl.tpg)
	if why == "" {
		return creates
	}
	t, tag := pl.opts.Target, pl.tag
	pl.p.Refused = fmt.Sprintf("not projecting %d image(s) into %s/tpg%d: %s; fix the TPG (targetcli /iscsi/%s/tpg%d set attribute demo_mode_write_protect=1 generate_node_acls=1) or set ALLOW_WRITABLE_TPG=true",
		len(creates), t, tag, why, t, tag)
	for _, c := range creates {
		if c.Action == Recreate {
			c.Code, c.Reason = HeldRefused, "kept: "+pl.p.Refused
			pl.p.Held = append(pl.p.Held, c)
		}
	}
	return nil
}

// assignIndexes gives new LUNs the registry's index (LUNIndex), unless the
// TPG already gives that index to another object: LIO would refuse it on
// every pass, so LIO picks a free one and the reason says so.
func (pl *planner) assignIndexes(creates []Change) {
	if pl.opts.LUNIndex == nil {
		return
	}
	taken := make(map[int]string, len(pl.tpg.LUNs)) // LUN index -> storage object
	for _, l := range pl.tpg.LUNs {
		taken[l.Index] = l.StorageObject
	}
	for i := range creates {
		c := &creates[i]
		if c.Action != Create && c.Action != Map && c.LUN != lio.AutoLUN {
			continue
		}
		idx, ok := pl.opts.LUNIndex(*c.Projection)
		if !ok {
			continue
		}
		if other, used := taken[idx]; used && other != "/backstores/fileio/"+c.Name {
			c.Reason += fmt.Sprintf(" (registry's lun%d is taken in tpg%d by %s; LIO picks a free index)", idx, pl.tag, other)
			continue
		}
		c.LUN = idx
	}
}

// serves reports whether an existing backstore serves the projection as it
// is (mismatch says why not).
func serves(so *lio.StorageObject, p *Projection) bool {
	return so.Dev == p.File && so.WWN == p.ID.WWN && so.SizeBytes() == p.Size
}

// mismatch says why an existing backstore does not serve the projection, or "".
func mismatch(so *lio.StorageObject, p *Projection) string {
	var diffs []string
	if so.Dev != p.File {
		diffs = append(diffs, fmt.Sprintf("file %s, want %s", so.Dev, p.File))
	}
	if so.WWN != p.ID.WWN {
		diffs = append(diffs, fmt.Sprintf("wwn %s, want %s", so.WWN, p.ID.WWN))
	}
	if got := so.SizeBytes(); got != p.Size {
		diffs = append(diffs, fmt.Sprintf("size %d, want %d", got, p.Size))
	}
	return strings.Join(diffs, "; ")
}

// writable says why a TPG would let initiators write, or "" if it protects
// its LUNs: generated ACLs in demo mode with demo_mode_write_protect=1 (as
// CSM provisions it), and every explicit ACL's mapped LUNs write-protected.
func writable(tpg *lio.TPG) string {
	gen, _ := tpg.Attr("generate_node_acls")
	demoWP, _ := tpg.Attr("demo_mode_write_protect")
	if gen == 1 && demoWP != 1 {
		return "generate_node_acls=1 but demo_mode_write_protect is not 1"
	}
	for _, acl := range tpg.NodeACLs {
		for _, m := range acl.MappedLUNs {
			if !m.WriteProtect {
				return "node ACL " + acl.NodeWWN + " maps lun" + strconv.Itoa(m.TPGLUN) + " read-write"
			}
		}
	}
	return ""
}

// Ops turns the plan into LIO operations: a TPG disable first, then
// deletes (LIO removes a backstore's LUNs with it), creates, and a TPG
// enable last.
func (p *Plan) Ops(target string, tpg int) []lio.Op {
	var ops []lio.Op
	for _, c := range p.Changes {
		if c.Action == DisableTPG || c.Action == ResetSessions {
			ops = append(ops, lio.Op{Kind: lio.DisableTPG, Target: target, TPG: tpg})
		}
	}
	for _, c := range p.Changes {
		switch c.Action {
		case Delete, Recreate:
			ops = append(ops, lio.Op{Kind: lio.DeleteBackstore, Backstore: c.Name})
		case Renumber:
			ops = append(ops, lio.Op{Kind: lio.DeleteLUN, Target: target, TPG: tpg, LUN: c.OldLUN})
		}
	}
	for _, c := range p.Changes {
		switch c.Action {
		case Create, Recreate:
			ops = append(ops, lio.Op{Kind: lio.CreateBackstore, Backstore: c.Name, File: c.Projection.File, WWN: c.Projection.ID.WWN})
			fallthrough
		case Map, Renumber:
			ops = append(ops, lio.Op{Kind: lio.CreateLUN, Backstore: c.Name, Target: target, TPG: tpg, LUN: c.LUN})
		}
	}
	for _, c := range p.Changes {
		if c.Action == EnableTPG || c.Action == ResetSessions {
			ops = append(ops, lio.Op{Kind: lio.EnableTPG, Target: target, TPG: tpg})
		}
	}
	return ops
}

// GatePlan makes the TPG follow the node gate: open, a disabled TPG is
// enabled; closed, an enabled one is disabled. why is the gate's answer.
// A target or TPG that LIO does not hold plans nothing: the next pass's
// MakePlan says what to provision.
func GatePlan(actual *lio.Config, target string, tag int, open bool, why string) *Plan {
	tpg, ok := actual.TPG(target, tagOr1(tag))
	if !ok || bool(tpg.Enable) == open {
		return &Plan{}
	}
	c := Change{Action: EnableTPG, Reason: "node gate open: " + why}
	if !open {
		c = Change{Action: DisableTPG, Reason: "node gate closed: " + why}
	}
	return &Plan{Changes: []Change{c}}
}

// SessionResetPlan disables and enables the TPG so that every initiator
// logs in again, to the LUN map LIO holds now; why says what changed.
func SessionResetPlan(why string) *Plan {
	return &Plan{Changes: []Change{{Action: ResetSessions, Reason: why}}}
}

func tagOr1(tag int) int {
	if tag == 0 {
		return 1
	}
	return tag
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
