package projector

import (
	"cmp"
	"slices"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

// State of one entry of the status view.
type State string

const (
	Projected State = "projected" // LUN present and correct
	Missing   State = "missing"   // desired, not (correctly) in LIO yet
	Pending   State = "pending"   // exists, not ready to project (s3fs lagging, ...)
	Rejected  State = "rejected"  // will not be projected until it changes
	Held      State = "held"      // no longer desired, kept (see reason)
	Stale     State = "stale"     // no longer desired, will be removed
	Foreign   State = "foreign"   // not managed by this agent; left alone
)

// Entry is one line of `sbps-marshal status`.
type Entry struct {
	State     State      `json:"state"`
	Kind      Kind       `json:"kind,omitempty"`
	Key       string     `json:"key,omitempty"` // S3 key (PE key, or rootfs key)
	Images    []ImageRef `json:"images,omitempty"`
	Backstore string     `json:"backstore,omitempty"`
	WWN       string     `json:"wwn,omitempty"`
	WWID      string     `json:"multipath_wwid,omitempty"`
	LUN       *int       `json:"lun,omitempty"`
	// RegistryLUN is the fleet registry's index for this backstore, when
	// a registry is in use and knows it; a LUN that differs from it is
	// reported, not moved.
	RegistryLUN *int   `json:"registry_lun,omitempty"`
	Size        int64  `json:"size,omitempty"`
	File        string `json:"file,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Code classes Reason for pending, rejected and held entries
	// (ProblemCodes, HeldCodes).
	Code Code `json:"reason_code,omitempty"`
}

// StatusOf builds the status view from a pass's inputs and outcome.
// actual is LIO's current saved state (after the pass, if it applied).
func StatusOf(d *Desired, plan *Plan, actual *lio.Config, layout Layout, target string, tag int) []Entry {
	var out []Entry
	if actual != nil {
		out = make([]Entry, 0, len(actual.StorageObjects)+len(d.Pending)+len(d.Rejected))
	}
	walkStatus(d, plan, actual, layout, target, tag, func(e Entry) { out = append(out, e) })
	slices.SortStableFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(stateOrder(a.State), stateOrder(b.State)), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Backstore, b.Backstore))
	})
	return out
}

// StatusCounts counts the entries of the status view by state, without
// building them: what every pass logs, at a fraction of the cost on a node
// with thousands of LUNs.
func StatusCounts(d *Desired, plan *Plan, actual *lio.Config, layout Layout, target string, tag int) map[State]int {
	counts := map[State]int{}
	luns := lunNames(actual, target, tag)
	held := heldChanges(plan)
	if actual == nil {
		actual = &lio.Config{}
	}
	inLIO := make(map[string]bool, len(actual.StorageObjects))
	for i := range actual.StorageObjects {
		so := &actual.StorageObjects[i]
		if so.Plugin != "fileio" || !layout.Managed(so.Dev) {
			counts[Foreign]++
			continue
		}
		inLIO[so.Name] = true
		_, hasLUN := luns[so.Name]
		state, _, _ := classify(so, d, held, hasLUN, target)
		counts[state]++
	}
	for name := range d.Projections {
		if !inLIO[name] {
			counts[Missing]++
		}
	}
	for name := range d.Pending {
		if !inLIO[name] {
			counts[Pending]++
		}
	}
	counts[Rejected] += len(d.Rejected)
	for s, n := range counts {
		if n == 0 {
			delete(counts, s)
		}
	}
	return counts
}

// lunNames maps the fileio backstores with a LUN in the target's TPG to
// their LUN index.
func lunNames(actual *lio.Config, target string, tag int) map[string]int {
	if tag == 0 {
		tag = 1
	}
	t, ok := actual.Target(target)
	if !ok {
		return nil
	}
	tpg, ok := t.TPG(tag)
	if !ok {
		return nil
	}
	out := make(map[string]int, len(tpg.LUNs))
	for _, l := range tpg.LUNs {
		if name, ok := strings.CutPrefix(l.StorageObject, "/backstores/fileio/"); ok {
			out[name] = l.Index
		}
	}
	return out
}

func heldChanges(plan *Plan) map[string]Change {
	held := map[string]Change{}
	for _, h := range plan.Held {
		held[h.Name] = h
	}
	return held
}

// classify is the state of a managed backstore in the status view, and why.
func classify(so *lio.StorageObject, d *Desired, held map[string]Change, hasLUN bool, target string) (State, string, Code) {
	if p, ok := d.Projections[so.Name]; ok {
		switch {
		case !serves(so, &p):
			return Missing, "will be recreated: " + mismatch(so, &p), ""
		case !hasLUN:
			return Missing, "backstore has no LUN in " + target, ""
		}
		return Projected, "", ""
	}
	if h, ok := held[so.Name]; ok {
		return Held, h.Reason, h.Code
	}
	return Stale, "no longer desired", ""
}

// walkStatus hands each entry of the status view, unsorted, to emit.
func walkStatus(d *Desired, plan *Plan, actual *lio.Config, layout Layout, target string, tag int, emit func(Entry)) {
	if plan.Refused != "" {
		inner := emit
		emit = func(e Entry) {
			if e.State == Missing {
				e.Reason = plan.Refused
			}
			inner(e)
		}
	}
	if actual == nil {
		actual = &lio.Config{} // LIO's state could not be read after the pass
	}
	seen := walkLIO(d, plan, actual, layout, target, tag, emit)
	for name, p := range d.Projections {
		if !seen[name] {
			emit(Entry{State: Missing, Kind: p.Kind, Key: p.Key, Images: p.Users, Backstore: name, WWN: p.ID.WWN, WWID: p.ID.WWID, Size: p.Size, File: p.File, Reason: "not projected yet"})
		}
	}
	for name, pr := range d.Pending {
		if !seen[name] {
			emit(problemEntry(Pending, pr))
		}
	}
	for _, pr := range d.Rejected {
		emit(problemEntry(Rejected, pr))
	}
}

// walkLIO emits an entry for every backstore in LIO, and returns the names
// of the managed ones.
func walkLIO(d *Desired, plan *Plan, actual *lio.Config, layout Layout, target string, tag int, emit func(Entry)) map[string]bool {
	var luns map[string]*lio.LUN // by storage object path, for foreign backstores too
	if tpg, ok := actual.TPG(target, tagOr1(tag)); ok {
		luns = tpg.LUNsByObject()
	}
	lunOf := func(path string) *int {
		if l, ok := luns[path]; ok {
			idx := l.Index
			return &idx
		}
		return nil
	}
	held := heldChanges(plan)
	seen := make(map[string]bool, len(actual.StorageObjects))
	for _, so := range actual.StorageObjects {
		e := Entry{Backstore: so.Name, WWN: so.WWN, LUN: lunOf(so.Path()), Size: so.SizeBytes(), File: so.Dev}
		if so.Plugin != "fileio" || !layout.Managed(so.Dev) {
			e.State, e.Backstore = Foreign, so.Path()
			emit(e)
			continue
		}
		seen[so.Name] = true
		e.WWID = naming.WWIDFromWWN(so.WWN)
		e.Kind = layout.KindOf(so.Name, so.Dev)
		e.Key = strings.TrimPrefix(so.Dev, layout.Mount+"/")
		e.State, e.Reason, e.Code = classify(&so, d, held, e.LUN != nil, target)
		if p, ok := d.Projections[so.Name]; ok {
			e.Images = p.Users
		}
		emit(e)
	}
	return seen
}

// Status is the status view of this pass, with the registry's index of
// each LUN when a registry is in use.
func (r *Report) Status(layout Layout, target string, tag int) []Entry {
	entries := StatusOf(r.Desired, r.Plan, r.After, layout, target, tag)
	for i := range entries {
		if idx, ok := r.Registry[entries[i].Backstore]; ok {
			entries[i].RegistryLUN = &idx
		}
	}
	return entries
}

// StatusCounts counts this pass's status view by state (see StatusCounts).
func (r *Report) StatusCounts(layout Layout, target string, tag int) map[State]int {
	return StatusCounts(r.Desired, r.Plan, r.After, layout, target, tag)
}

func problemEntry(s State, pr Problem) Entry {
	return Entry{State: s, Kind: pr.Kind, Key: pr.Key, Images: pr.Images, Backstore: pr.Name, Reason: pr.Reason, Code: pr.Code}
}

func stateOrder(s State) int {
	return slices.Index([]State{Projected, Missing, Pending, Held, Stale, Rejected, Foreign}, s)
}
