package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultLocalFile is the Local registry's file name inside STATE_DIR.
const DefaultLocalFile = "lun-registry.json"

// LocalConfig configures a Local registry.
type LocalConfig struct {
	// Dir is the directory of the file (STATE_DIR). Required.
	Dir string
	// File is the file name in Dir. Defaults to DefaultLocalFile; the lock
	// is File+".lock", the temporary file File+".tmp".
	File string
	// Quarantine is how long a released index stays reserved. Defaults to
	// DefaultQuarantine; a negative value means no quarantine.
	Quarantine time.Duration
	// Node names this agent in the entries it allocates.
	Node string
	// Now is the clock for quarantine decisions. Defaults to time.Now.
	Now func() time.Time
}

// Local is a registry kept in one JSON file, with the same semantics as KV.
// Every operation is a read-modify-write under an exclusive flock of the
// lock file (and a mutex within the process), and a change is written to a
// temporary file, fsynced and renamed over the file, then the directory is
// fsynced: a crash leaves the old or the new file, never a mix. A temporary
// file left behind by a crash is ignored and overwritten. Its methods are
// safe for concurrent use, also by several processes sharing Dir.
type Local struct {
	cfg             LocalConfig
	now             func() time.Time
	max             int // highest index handed out: MaxIndex (lower in tests)
	path, tmp, lock string

	mu sync.Mutex // serialises this process's users of the flock
}

var _ Registry = (*Local)(nil)

// localEntry is an Entry plus whether the fleet registry has confirmed it.
type localEntry struct {
	Entry
	// Unsynced marks a change made here (while the fleet registry was
	// unreachable) that Fallback.Reconcile has not offered to the fleet.
	Unsynced bool `json:"unsynced,omitempty"`
}

type localState struct {
	Version int                   `json:"version"`
	Entries map[string]localEntry `json:"entries"`
}

// NewLocal returns a registry in cfg.Dir, creating the directory if needed.
// Reading the file is left to each operation, so several processes can
// share it.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Dir == "" {
		return nil, errors.New("registry: Local needs a directory (STATE_DIR)")
	}
	if cfg.File == "" {
		cfg.File = DefaultLocalFile
	}
	if cfg.Quarantine == 0 {
		cfg.Quarantine = DefaultQuarantine
	} else if cfg.Quarantine < 0 {
		cfg.Quarantine = 0
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("local LUN registry: creating STATE_DIR %s: %w", cfg.Dir, err)
	}
	p := filepath.Join(cfg.Dir, cfg.File)
	return &Local{cfg: cfg, now: clock(cfg.Now), max: MaxIndex, path: p, tmp: p + ".tmp", lock: p + ".lock"}, nil
}

// Path is the registry file.
func (l *Local) Path() string { return l.path }

// do runs fn on the file's state under the locks and writes the state back
// when fn reports a change.
func (l *Local) do(fn func(st *localState) (changed bool, err error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lf, err := os.OpenFile(l.lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("local LUN registry: opening lock %s: %w", l.lock, err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("local LUN registry: locking %s: %w", l.lock, err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck // Close unlocks too
	st, err := l.read()
	if err != nil {
		return err
	}
	changed, err := fn(st)
	if err != nil || !changed {
		return err
	}
	return l.write(st)
}

func (l *Local) read() (*localState, error) {
	st := &localState{Version: 1, Entries: map[string]localEntry{}}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local LUN registry: reading %s: %w", l.path, err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("local LUN registry: %s is not valid JSON (%w); it is only ever replaced by rename, so inspect it, and move it away to start an empty local registry (the fleet registry and Adopt restore the numbers)", l.path, err)
	}
	if st.Entries == nil {
		st.Entries = map[string]localEntry{}
	}
	return st, nil
}

func (l *Local) write(st *localState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("local LUN registry: %s %s: %w; check free space and permissions of STATE_DIR", what, l.tmp, err)
	}
	f, err := os.OpenFile(l.tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fail("creating", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fail("writing", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fail("syncing", err)
	}
	if err := f.Close(); err != nil {
		return fail("closing", err)
	}
	if err := os.Rename(l.tmp, l.path); err != nil {
		return fail("renaming", err)
	}
	d, err := os.Open(l.cfg.Dir)
	if err != nil {
		return fail("opening the directory of", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fail("syncing the directory of", err)
	}
	return nil
}

// allocate is Index (want < 0) and Adopt (want = the offered index) on st.
func (st *localState) allocate(name string, meta Meta, want int, now time.Time, q time.Duration, node string, max int) (int, bool, error) {
	if e, ok := st.Entries[name]; ok {
		if e.ReleasedAt == nil {
			return e.Index, false, nil
		}
		e.ReleasedAt, e.Node, e.Unsynced = nil, node, true
		if meta.Image != "" {
			e.Image = meta.Image
		}
		st.Entries[name] = e
		return e.Index, true, nil
	}
	held := make(map[int]bool, len(st.Entries))
	for _, e := range st.Entries {
		if !e.expired(now, q) {
			held[e.Index] = true
		}
	}
	for _, i := range meta.InUse {
		held[i] = true
	}
	n := -1
	if want >= 0 && want <= max && !held[want] {
		n = want
	} else {
		for i := 0; i <= max; i++ {
			if !held[i] {
				n = i
				break
			}
		}
	}
	if n < 0 {
		return 0, false, ErrExhausted
	}
	for other, e := range st.Entries { // quarantine over: the old owner loses it
		if e.Index == n {
			delete(st.Entries, other)
		}
	}
	st.Entries[name] = localEntry{Entry: Entry{Index: n, Image: meta.Image, FirstSeen: now, Node: node}, Unsynced: true}
	return n, true, nil
}

func (l *Local) allocate(name string, meta Meta, want int) (n int, err error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	err = l.do(func(st *localState) (bool, error) {
		var changed bool
		n, changed, err = st.allocate(name, meta, want, l.now(), l.cfg.Quarantine, l.cfg.Node, l.max)
		return changed, err
	})
	return n, err
}

// Index implements Registry.
func (l *Local) Index(_ context.Context, name string, meta Meta) (int, error) {
	return l.allocate(name, meta, -1)
}

// Adopt implements Registry.
func (l *Local) Adopt(_ context.Context, name string, index int, meta Meta) (int, error) {
	if err := checkIndex(index); err != nil {
		return 0, err
	}
	return l.allocate(name, meta, index)
}

// Release implements Registry.
func (l *Local) Release(_ context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return l.do(func(st *localState) (bool, error) {
		e, ok := st.Entries[name]
		if !ok || e.ReleasedAt != nil {
			return false, nil
		}
		e.ReleasedAt, e.Unsynced = ptime(l.now()), true
		st.Entries[name] = e
		return true, nil
	})
}

// Lookup implements Registry.
func (l *Local) Lookup(_ context.Context, name string) (e Entry, ok bool, err error) {
	if err := checkName(name); err != nil {
		return Entry{}, false, err
	}
	err = l.do(func(st *localState) (bool, error) {
		var le localEntry
		le, ok = st.Entries[name]
		e = le.Entry
		return false, nil
	})
	return e, ok, err
}

// All implements Registry.
func (l *Local) All(context.Context) (map[string]Entry, error) {
	out := map[string]Entry{}
	err := l.do(func(st *localState) (bool, error) {
		for n, e := range st.Entries {
			out[n] = e.Entry
		}
		return false, nil
	})
	return out, err
}

// entry returns name's record including its sync flag.
func (l *Local) entry(name string) (le localEntry, ok bool, err error) {
	err = l.do(func(st *localState) (bool, error) {
		le, ok = st.Entries[name]
		return false, nil
	})
	return le, ok, err
}

// unsynced returns the records not yet offered to the fleet.
func (l *Local) unsynced() (map[string]localEntry, error) {
	out := map[string]localEntry{}
	err := l.do(func(st *localState) (bool, error) {
		for n, e := range st.Entries {
			if e.Unsynced {
				out[n] = e
			}
		}
		return false, nil
	})
	return out, err
}

// mirror records the fleet's entry for name as synced, unless the local
// record changed since was (the record Reconcile offered; nil = any synced
// or absent record). Other synced records at the same index are dropped (the
// fleet moved that index on); unsynced ones stay for Reconcile to report.
func (l *Local) mirror(name string, fleet Entry, was *localEntry) error {
	return l.do(func(st *localState) (bool, error) {
		cur, ok := st.Entries[name]
		if was != nil && (!ok || !sameLocal(cur, *was)) {
			return false, nil
		}
		if was == nil && ok && cur.Unsynced {
			return false, nil
		}
		if ok && !cur.Unsynced && sameEntry(cur.Entry, fleet) {
			return false, nil
		}
		for other, e := range st.Entries {
			if other != name && e.Index == fleet.Index && !e.Unsynced {
				delete(st.Entries, other)
			}
		}
		st.Entries[name] = localEntry{Entry: fleet}
		return true, nil
	})
}

func sameEntry(a, b Entry) bool {
	ra, rb := a.ReleasedAt, b.ReleasedAt
	return a.Index == b.Index && a.Image == b.Image && a.Node == b.Node && a.FirstSeen.Equal(b.FirstSeen) &&
		(ra == nil) == (rb == nil) && (ra == nil || ra.Equal(*rb))
}

func sameLocal(a, b localEntry) bool { return a.Unsynced == b.Unsynced && sameEntry(a.Entry, b.Entry) }
