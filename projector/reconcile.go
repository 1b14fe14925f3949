package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/registry"
)

// Reconciler makes LIO match the desired state. It is the only writer to
// LIO (every write goes through apply, with the change it is for), and
// passes never overlap: the node gate's and the session reset's changes
// of the TPG are passes too (Gate, ResetSessions).
type Reconciler struct {
	Inventory *Inventory
	LIO       lio.Applier
	SaveFile  string // LIO_SAVE_FILE
	// Saved, when set, reads SaveFile through a cache shared with the
	// driver: a file already parsed is not parsed again.
	Saved  *lio.SavedFile
	Plan   PlanOptions
	Logger *slog.Logger
	// Registry, when set, gives every new LUN its fleet-stable index and
	// takes back the index of a removed one (LUN_REGISTRY); nil lets LIO
	// pick the lowest free index, as the old agent did.
	Registry LUNRegistry

	mu      sync.Mutex     // held for a whole pass
	last    *Desired       // desired state of the latest full pass, for repairs
	adopted bool           // the node's LUNs were offered to the registry
	indexes map[string]int // backstore name -> registry index, as learnt
	own     string         // digest of the saveconfig.json content the latest pass read or wrote
}

// LUNRegistry keeps LUN numbers stable across the fleet; registry.Registry
// implementations satisfy it.
type LUNRegistry interface {
	Index(ctx context.Context, name string, meta registry.Meta) (int, error)
	Lookup(ctx context.Context, name string) (registry.Entry, bool, error)
	Adopt(ctx context.Context, name string, index int, meta registry.Meta) (int, error)
	Release(ctx context.Context, name string) error
}

// SyncOptions tune one pass.
type SyncOptions struct {
	DryRun          bool   // plan only
	AllowMassDelete bool   // the operator's override of the mass-delete guard
	Renumber        bool   // move LUNs to their registry index (sync --renumber)
	Trigger         string // what caused the pass, for the logs
}

// Report is the outcome of one pass.
type Report struct {
	Trigger string // what caused the pass
	// Registry is the registry's LUN index of each backstore it knows
	// (nil without a registry).
	Registry map[string]int
	Desired  *Desired
	Before   *lio.Config // LIO's saved state the plan was made from
	Plan     *Plan
	Results  []lio.Result
	After    *lio.Config // saved state after applying (nil on a dry run)
	Duration time.Duration
}

// Failed returns the results that did not reach their desired state.
func (r *Report) Failed() []lio.Result {
	var out []lio.Result
	for _, res := range r.Results {
		if !res.OK() {
			out = append(out, res)
		}
	}
	return out
}

// Sync runs one full pass: inventory, plan, apply.
func (r *Reconciler) Sync(ctx context.Context, o SyncOptions) (*Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pass(ctx, o, nil)
}

// SyncKeys applies what events said changed: the PE keys and IMS images
// named are read again (no listing), everything else keeps the desired
// state of the previous pass, and LIO is read afresh, so outside changes
// are repaired too. With no previous full pass it runs a full one.
func (r *Reconciler) SyncKeys(ctx context.Context, o SyncOptions, peKeys, imageIDs []string) (*Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return r.pass(ctx, o, nil)
	}
	return r.pass(ctx, o, func(before *lio.Config) (*Desired, error) {
		return r.Inventory.Update(ctx, r.last, before, peKeys, imageIDs)
	})
}

// pass plans against the desired state compute returns, or a fresh
// inventory when compute is nil, and applies the plan.
func (r *Reconciler) pass(ctx context.Context, o SyncOptions, compute func(before *lio.Config) (*Desired, error)) (*Report, error) {
	start := time.Now()
	log := r.logger().With("trigger", o.Trigger)
	rep, err := r.plan(ctx, log, o, compute)
	if err != nil {
		return nil, err
	}
	if o.DryRun || rep.Plan.Empty() {
		rep.After = rep.Before
		rep.Duration = time.Since(start)
		return rep, nil
	}
	err = r.apply(ctx, log, rep)
	rep.Duration = time.Since(start)
	return rep, err
}

// plan reads LIO's state, computes the desired state and plans the pass.
func (r *Reconciler) plan(ctx context.Context, log *slog.Logger, o SyncOptions, compute func(before *lio.Config) (*Desired, error)) (*Report, error) {
	read := r.state
	if !o.DryRun {
		read = r.stateOrResave
	}
	before, beforeDigest, err := read(ctx)
	if err != nil {
		return nil, err
	}
	if compute == nil {
		compute = func(before *lio.Config) (*Desired, error) { return r.Inventory.Desired(ctx, before, r.last) }
	}
	desired, err := compute(before)
	if err != nil {
		return nil, err
	}
	if !o.DryRun {
		r.last = desired
	}
	if !desired.RootfsComplete {
		log.Warn("rootfs information incomplete; no rootfs projection will be removed this pass", "reason", desired.RootfsIncompleteReason)
	}
	opts := r.Plan
	opts.AllowMassDelete = o.AllowMassDelete
	opts.Renumber = o.Renumber
	if r.Registry != nil && !o.DryRun {
		r.askRegistry(ctx, log, desired, before)
		opts.LUNIndex = func(p Projection) (int, bool) {
			idx, ok := r.indexes[p.ID.Name]
			return idx, ok
		}
	}
	plan, err := MakePlan(desired, before, r.Inventory.Layout, opts)
	if err != nil {
		return nil, err
	}
	if !o.DryRun {
		r.noteOwn(beforeDigest)
	}
	rep := &Report{Trigger: o.Trigger, Desired: desired, Before: before, Plan: plan}
	switch {
	case r.Registry != nil && o.DryRun:
		rep.Registry = r.lookupRegistry(ctx, log, before)
	case r.Registry != nil:
		rep.Registry = maps.Clone(r.indexes)
	}
	for _, h := range plan.Held {
		log.Warn("not removing projection", "backstore", h.Name, "file", h.Dev, "reason", h.Reason)
	}
	if plan.Refused != "" {
		log.Error(plan.Refused)
	}
	return rep, nil
}

// apply carries out rep.Plan: the only place that writes to LIO. It logs
// every operation with its change's reason, gives removed backstores'
// indexes back to the registry, and reads LIO's state back into rep.After.
func (r *Reconciler) apply(ctx context.Context, log *slog.Logger, rep *Report) error {
	ops := rep.Plan.Ops(r.Plan.Target, r.Plan.TPG)
	results, applyErr := r.LIO.Apply(ctx, ops)
	rep.Results = results
	changes := make(map[string]*Change, len(rep.Plan.Changes))
	for i := range rep.Plan.Changes {
		changes[rep.Plan.Changes[i].Name] = &rep.Plan.Changes[i] // TPG changes under ""
	}
	for _, res := range results {
		logResult(log, res, changes[res.Op.Backstore])
	}
	if r.Registry != nil {
		r.release(ctx, log, results, changes)
	}
	after, afterDigest, err := r.stateOrResave(ctx)
	if err != nil {
		err = fmt.Errorf("reading LIO's state back after applying: %w", err)
	}
	rep.After = after
	r.noteOwn(afterDigest)
	if applyErr != nil {
		return fmt.Errorf("applying %d operation(s): %w", len(ops), applyErr)
	}
	if failed := rep.Failed(); len(failed) > 0 {
		return fmt.Errorf("%d of %d operation(s) failed, first: %s: %s", len(failed), len(ops), failed[0].Op, firstNonEmpty(failed[0].Message, errString(failed[0].Err)))
	}
	return err
}

// logResult logs one operation's outcome with what the change was for.
func logResult(log *slog.Logger, res lio.Result, c *Change) {
	attrs := []any{"op", res.Op.Kind, "backstore", res.Op.Backstore, "outcome", res.Outcome.String()}
	if res.Op.Kind == lio.CreateLUN {
		attrs = append(attrs, "lun", res.Op.LUN)
	}
	if c != nil {
		attrs = append(attrs, "action", c.Action, "reason", c.Reason)
		if c.Projection != nil {
			attrs = append(attrs, "key", c.Projection.Key)
			if len(c.Projection.Users) > 0 {
				attrs = append(attrs, "image", c.Projection.Users[0].ID, "image_name", c.Projection.Users[0].Name)
			}
		}
	}
	if res.OK() {
		log.Info("applied", attrs...)
	} else {
		log.Error("apply failed", append(attrs, "message", res.Message, "err", res.Err)...)
	}
}

// release gives the registry back the index of every backstore deleted
// because it is no longer desired.
func (r *Reconciler) release(ctx context.Context, log *slog.Logger, results []lio.Result, changes map[string]*Change) {
	for _, res := range results {
		if c, ok := changes[res.Op.Backstore]; ok && c.Action == Delete && res.Op.Kind == lio.DeleteBackstore && res.OK() {
			if err := r.Registry.Release(ctx, res.Op.Backstore); err != nil {
				log.Warn("could not release LUN index to the registry; it stays reserved", "backstore", res.Op.Backstore, "err", err)
			}
			delete(r.indexes, res.Op.Backstore)
		}
	}
}

// Gate makes the TPG follow the node gate (GatePlan): a pass of its own,
// between the other passes, of one change at most.
func (r *Reconciler) Gate(ctx context.Context, open bool, why string) (*Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyTPG(ctx, "node gate", func(before *lio.Config) *Plan {
		return GatePlan(before, r.Plan.Target, r.Plan.TPG, open, why)
	})
}

// ResetSessions disables and enables the TPG (SessionResetPlan), so that
// initiators log in again to the LUN map LIO holds; why says what changed.
func (r *Reconciler) ResetSessions(ctx context.Context, why string) (*Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyTPG(ctx, "session reset", func(*lio.Config) *Plan { return SessionResetPlan(why) })
}

// applyTPG plans a change of the TPG itself against LIO's state and
// applies it as a pass does.
func (r *Reconciler) applyTPG(ctx context.Context, trigger string, plan func(before *lio.Config) *Plan) (*Report, error) {
	start := time.Now()
	before, digest, err := r.stateOrResave(ctx)
	if err != nil {
		return nil, err
	}
	r.noteOwn(digest)
	rep := &Report{Trigger: trigger, Before: before, Plan: plan(before), After: before}
	if !rep.Plan.Empty() {
		err = r.apply(ctx, r.logger().With("trigger", trigger), rep)
	}
	rep.Duration = time.Since(start)
	return rep, err
}

// askRegistry offers the node's LUNs to the registry once (first writer
// wins, so a running fleet converges without moving LUNs), and asks it for
// the index of every projection that needs a new LUN. A registry that
// cannot answer never blocks projection: LIO then picks the index, and the
// log says so.
func (r *Reconciler) askRegistry(ctx context.Context, log *slog.Logger, d *Desired, before *lio.Config) {
	if r.indexes == nil {
		r.indexes = map[string]int{}
	}
	var luns map[string]*lio.LUN
	if tgt, ok := before.Target(r.Plan.Target); ok {
		if tpg, ok := tgt.TPG(max(r.Plan.TPG, 1)); ok {
			luns = tpg.LUNsByObject()
		}
	}
	if !r.adopted {
		for _, so := range before.StorageObjects {
			if so.Plugin != "fileio" || !r.Inventory.Layout.Managed(so.Dev) {
				continue
			}
			l, ok := luns[so.Path()]
			if !ok {
				continue
			}
			idx, err := r.Registry.Adopt(ctx, so.Name, l.Index, registry.Meta{Image: strings.TrimPrefix(so.Dev, r.Inventory.Layout.Mount+"/")})
			if err != nil {
				log.Warn("registry: could not offer an existing LUN", "backstore", so.Name, "lun", l.Index, "err", err)
				continue
			}
			r.indexes[so.Name] = idx
			if idx != l.Index {
				log.Warn("LUN index differs from the fleet registry; left as it is (sbps-marshal sync --renumber moves it)", "backstore", so.Name, "lun", l.Index, "registry", idx)
			}
		}
		r.adopted = true
	}
	// A new index must be free in the TPG too: a LUN the agent does not
	// own (or one the registry does not know) holds its index on this node.
	var inUse []int
	for _, l := range luns {
		inUse = append(inUse, l.Index)
	}
	slices.Sort(inUse)
	for name, p := range d.Projections {
		if _, ok := luns["/backstores/fileio/"+name]; ok {
			continue
		}
		if _, ok := r.indexes[name]; ok {
			continue
		}
		idx, err := r.Registry.Index(ctx, name, registry.Meta{Image: imageLabel(p), InUse: inUse})
		if err != nil {
			log.Warn("registry: no LUN index; LIO will pick one", "backstore", name, "err", err)
			continue
		}
		r.indexes[name] = idx
	}
}

// lookupRegistry reads, without changing anything, the registry's index
// of each managed backstore (a dry run in a fresh process knows none).
func (r *Reconciler) lookupRegistry(ctx context.Context, log *slog.Logger, before *lio.Config) map[string]int {
	out := map[string]int{}
	for _, so := range before.StorageObjects {
		if so.Plugin != "fileio" || !r.Inventory.Layout.Managed(so.Dev) {
			continue
		}
		e, ok, err := r.Registry.Lookup(ctx, so.Name)
		if err != nil {
			log.Warn("registry: lookup failed; status shows no registry index", "backstore", so.Name, "err", err)
			return out
		}
		if ok && !e.Released() {
			out[so.Name] = e.Index
		}
	}
	return out
}

func imageLabel(p Projection) string {
	if len(p.Users) > 0 {
		return p.Users[0].ID + " " + p.Users[0].Name
	}
	return p.Key
}

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// StateOrResave is State, except that a saveconfig.json still empty or torn
// after the retries (an outside tool, a full disk) is written again from
// LIO's live state, as at start, and read once more.
func (r *Reconciler) StateOrResave(ctx context.Context) (*lio.Config, error) {
	c, _, err := r.stateOrResave(ctx)
	return c, err
}

func (r *Reconciler) stateOrResave(ctx context.Context) (*lio.Config, string, error) {
	c, digest, err := r.state(ctx)
	if !errors.Is(err, lio.ErrIncomplete) {
		return c, digest, err
	}
	r.logger().Warn("saveconfig.json stays unreadable; saving LIO's live state again", "err", err)
	if serr := r.LIO.Save(ctx); serr != nil {
		return nil, "", fmt.Errorf("%w; saving LIO's live state again also failed: %v", err, serr)
	}
	return r.state(ctx)
}

// State reads LIO's saved state, through the shared cache when there is one.
func (r *Reconciler) State(ctx context.Context) (*lio.Config, error) {
	c, _, err := r.state(ctx)
	return c, err
}

// state is State with the SHA-256 of the content read (empty without the
// shared cache).
func (r *Reconciler) state(ctx context.Context) (*lio.Config, string, error) {
	if r.Saved == nil {
		c, err := ReadSaved(ctx, r.SaveFile)
		return c, "", err
	}
	var digest string
	c, err := readSaved(ctx, func() (*lio.Config, error) {
		c, d, err := r.Saved.Load()
		digest = d
		return c, err
	})
	return c, digest, err
}

// ReadSaved loads saveconfig.json, retrying for a short while when it is
// caught half-written (rtslib 2.1.75 rewrites it in place).
func ReadSaved(ctx context.Context, path string) (*lio.Config, error) {
	return readSaved(ctx, func() (*lio.Config, error) { return lio.Load(path) })
}

func readSaved(ctx context.Context, load func() (*lio.Config, error)) (*lio.Config, error) {
	wait := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		c, err := load()
		if err == nil || !errors.Is(err, lio.ErrIncomplete) || attempt == 8 {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reading LIO's saved state: %w", context.Cause(ctx))
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
