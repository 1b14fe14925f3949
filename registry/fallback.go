package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTimeout is how long Fallback waits for the fleet registry before
// using the local one (LUN_REGISTRY_TIMEOUT).
const DefaultTimeout = 2 * time.Second

// FallbackConfig configures a Fallback. The zero value is usable.
type FallbackConfig struct {
	// Timeout bounds each fleet registry call. Defaults to DefaultTimeout.
	Timeout time.Duration
	// RetryAfter is how long, after the fleet registry failed, calls go
	// straight to the local registry without waiting for the fleet again.
	// Reconcile always tries the fleet. Defaults to 10s; negative means
	// always try the fleet first.
	RetryAfter time.Duration
	// OnLocal, if set, is called each time an operation was answered by the
	// local registry because the fleet registry failed or was skipped
	// (err is the fleet's error, or nil when skipped within RetryAfter or
	// because name has unreconciled local changes). The agent logs and
	// counts it. It must not block.
	OnLocal func(op, name string, err error)
	// Now is the clock for RetryAfter. Defaults to time.Now.
	Now func() time.Time
}

// Fallback is a Registry that asks the fleet registry within a time limit
// and answers from the local registry when the fleet does not answer in
// time. Fleet answers are mirrored into the local registry, so it knows the
// fleet's numbers while the fleet is down; local changes are marked
// unsynced and offered to the fleet by Reconcile. While a name has unsynced
// local changes, it is answered locally, so a node never renumbers an image
// behind its operator's back. Its methods are safe for concurrent use.
type Fallback struct {
	fleet Registry
	local *Local
	cfg   FallbackConfig
	now   func() time.Time

	localUses atomic.Uint64

	mu        sync.Mutex
	downUntil time.Time // +checklocks:mu
}

var _ Registry = (*Fallback)(nil)

// NewFallback wraps fleet (normally a *KV) with local.
func NewFallback(fleet Registry, local *Local, cfg FallbackConfig) *Fallback {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 10 * time.Second
	}
	return &Fallback{fleet: fleet, local: local, cfg: cfg, now: clock(cfg.Now)}
}

// LocalUses counts operations answered by the local registry.
func (f *Fallback) LocalUses() uint64 { return f.localUses.Load() }

// fallsBack reports whether err is the fleet not answering (as opposed to
// an answer the local registry would give too).
func fallsBack(err error) bool {
	return err != nil && !errors.Is(err, ErrExhausted) && !errors.Is(err, ErrInvalidName) && !errors.Is(err, ErrIndexRange)
}

func (f *Fallback) skipFleet() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now().Before(f.downUntil)
}

func (f *Fallback) fleetDown() {
	if f.cfg.RetryAfter < 0 {
		return
	}
	f.mu.Lock()
	f.downUntil = f.now().Add(f.cfg.RetryAfter)
	f.mu.Unlock()
}

func (f *Fallback) fleetUp() {
	f.mu.Lock()
	f.downUntil = time.Time{}
	f.mu.Unlock()
}

func (f *Fallback) usedLocal(op, name string, err error) {
	f.localUses.Add(1)
	if f.cfg.OnLocal != nil {
		f.cfg.OnLocal(op, name, err)
	}
}

// try runs fn against the fleet with the timeout. ok is false when the
// caller must use the local registry; err is then the fleet's error (nil
// when skipped). A non-fallback error is returned with ok true.
func (f *Fallback) try(ctx context.Context, fn func(ctx context.Context) error) (ok bool, err error) {
	if f.skipFleet() {
		return false, nil
	}
	tctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	err = fn(tctx)
	if fallsBack(err) && ctx.Err() == nil {
		f.fleetDown()
		return false, err
	}
	if err == nil {
		f.fleetUp()
	}
	return true, err
}

func (f *Fallback) allocate(ctx context.Context, op, name string, meta Meta, want int) (int, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	le, known, err := f.local.entry(name)
	if err != nil {
		return 0, err
	}
	if known && le.Unsynced {
		f.usedLocal(op, name, nil)
		return f.local.allocate(name, meta, want)
	}
	var n int
	ok, ferr := f.try(ctx, func(ctx context.Context) (err error) {
		if want < 0 {
			n, err = f.fleet.Index(ctx, name, meta)
		} else {
			n, err = f.fleet.Adopt(ctx, name, want, meta)
		}
		return err
	})
	if ok {
		if ferr != nil {
			return 0, ferr
		}
		if !known || le.Index != n || le.ReleasedAt != nil {
			f.mirrorFromFleet(ctx, name)
		}
		return n, nil
	}
	f.usedLocal(op, name, ferr)
	n, err = f.local.allocate(name, meta, want)
	if err != nil {
		return 0, fmt.Errorf("fleet LUN registry unreachable (%v) and the local registry failed too: %w", ferr, err)
	}
	return n, nil
}

// mirrorFromFleet copies the fleet's entry for name into the local
// registry. It is best effort: the local copy only matters while the fleet
// is unreachable.
func (f *Fallback) mirrorFromFleet(ctx context.Context, name string) {
	_, _ = f.try(ctx, func(ctx context.Context) error {
		e, ok, err := f.fleet.Lookup(ctx, name)
		if err == nil && ok {
			err = f.local.mirror(name, e, nil)
		}
		return err
	})
}

// Index implements Registry.
func (f *Fallback) Index(ctx context.Context, name string, meta Meta) (int, error) {
	return f.allocate(ctx, "index", name, meta, -1)
}

// Adopt implements Registry.
func (f *Fallback) Adopt(ctx context.Context, name string, index int, meta Meta) (int, error) {
	if err := checkIndex(index); err != nil {
		return 0, err
	}
	return f.allocate(ctx, "adopt", name, meta, index)
}

// Release implements Registry.
func (f *Fallback) Release(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	le, known, err := f.local.entry(name)
	if err != nil {
		return err
	}
	if !(known && le.Unsynced) {
		ok, ferr := f.try(ctx, func(ctx context.Context) error { return f.fleet.Release(ctx, name) })
		if ok {
			if ferr == nil && known {
				f.mirrorFromFleet(ctx, name)
			}
			return ferr
		}
		f.usedLocal("release", name, ferr)
	} else {
		f.usedLocal("release", name, nil)
	}
	return f.local.Release(ctx, name)
}

// Lookup implements Registry.
func (f *Fallback) Lookup(ctx context.Context, name string) (Entry, bool, error) {
	if err := checkName(name); err != nil {
		return Entry{}, false, err
	}
	le, known, err := f.local.entry(name)
	if err != nil {
		return Entry{}, false, err
	}
	if known && le.Unsynced {
		return le.Entry, true, nil
	}
	var e Entry
	var found bool
	ok, ferr := f.try(ctx, func(ctx context.Context) (err error) {
		e, found, err = f.fleet.Lookup(ctx, name)
		return err
	})
	if ok {
		return e, found, ferr
	}
	f.usedLocal("lookup", name, ferr)
	return le.Entry, known, nil
}

// All implements Registry: the fleet's entries with unsynced local ones
// laid over them, or the local registry when the fleet does not answer.
func (f *Fallback) All(ctx context.Context) (map[string]Entry, error) {
	var all map[string]Entry
	ok, ferr := f.try(ctx, func(ctx context.Context) (err error) {
		all, err = f.fleet.All(ctx)
		return err
	})
	if ok && ferr != nil {
		return nil, ferr
	}
	if !ok {
		f.usedLocal("all", "", ferr)
		return f.local.All(ctx)
	}
	pend, err := f.local.unsynced()
	if err != nil {
		return nil, err
	}
	for name, le := range pend {
		all[name] = le.Entry
	}
	return all, nil
}

// Reconcile offers every unsynced local change to the fleet registry, first
// writer wins: a local allocation is adopted at its index when the fleet
// has no other number for the image and nobody else holds the index; a
// local release is replayed when the fleet agrees on the index. Any
// disagreement is returned as a Conflict and the local record is replaced
// by the fleet's (so later answers agree with the fleet); nothing on the
// node is renumbered. Call it when NATS reconnects and periodically; it
// returns the fleet's error, with the conflicts found so far, when the
// fleet is still unreachable.
func (f *Fallback) Reconcile(ctx context.Context) ([]Conflict, error) {
	pend, err := f.local.unsynced()
	if err != nil {
		return nil, err
	}
	var conflicts []Conflict
	var fleetAll map[string]Entry // loaded on the first conflict
	for name, le := range pend {
		tctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
		c, err := f.reconcileOne(tctx, name, le)
		cancel()
		if err != nil {
			f.fleetDown()
			return conflicts, fmt.Errorf("reconciling local LUN %d of %s with the fleet registry: %w", le.Index, name, err)
		}
		if c != nil {
			if fleetAll == nil {
				tctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
				fleetAll, err = f.fleet.All(tctx)
				cancel()
				if err != nil {
					fleetAll = map[string]Entry{}
				}
			}
			for owner, e := range fleetAll {
				if owner != name && e.Index == c.Local {
					c.Owner = owner
				}
			}
			conflicts = append(conflicts, *c)
		}
	}
	f.fleetUp()
	return conflicts, nil
}

func (f *Fallback) reconcileOne(ctx context.Context, name string, le localEntry) (*Conflict, error) {
	meta := Meta{Image: le.Image}
	fleet, found, err := f.fleet.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if le.ReleasedAt == nil || !found {
		// Adopt also reserves a locally released index for its quarantine.
		n, err := f.fleet.Adopt(ctx, name, le.Index, meta)
		if err != nil {
			return nil, err
		}
		if n == le.Index && le.ReleasedAt != nil {
			if err := f.fleet.Release(ctx, name); err != nil {
				return nil, err
			}
		}
	} else if fleet.Index == le.Index {
		if err := f.fleet.Release(ctx, name); err != nil {
			return nil, err
		}
	}
	fleet, found, err = f.fleet.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("fleet registry lost %s right after adopting it", name)
	}
	if err := f.local.mirror(name, fleet, &le); err != nil {
		return nil, err
	}
	if fleet.Index != le.Index {
		return &Conflict{Name: name, Image: le.Image, Local: le.Index, Fleet: fleet.Index}, nil
	}
	return nil, nil
}
