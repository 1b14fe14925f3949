package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Files inside a node directory.
const (
	liveFile     = "live.json"      // the simulated kernel (configfs) state
	liveLockFile = "live.lock"      // flock'd around every read-modify-write of liveFile and countersFile
	nodeFile     = "node.json"      // static node settings (nodeConfig)
	faultsFile   = "faults.json"    // Faults
	countersFile = "counters.json"  // counters
	lockFile     = "targetcli.lock" // model of /var/run/targetcli.lock
	pidFile      = "targetclid.pid" // model of /var/run/targetclid.pid
	socketFile   = "targetclid.sock"
)

// state is the live "kernel" state. It is kept slim (no attribute blobs) so
// that a command costs little even with thousands of objects; config()
// expands it to saveconfig.json form.
type state struct {
	StorageObjects []storageObject `json:"storage_objects"`
	Targets        []target        `json:"targets"`
}

type storageObject struct {
	Plugin    string `json:"plugin"`
	Name      string `json:"name"`
	Dev       string `json:"dev,omitempty"`
	Size      int64  `json:"size"`
	WWN       string `json:"wwn"`
	WriteBack bool   `json:"write_back"`
	// Full, when set, is the object as seeded; it is written back verbatim.
	Full *lio.StorageObject `json:"full,omitempty"`
}

func (so *storageObject) path() string { return "/backstores/" + so.Plugin + "/" + so.Name }

type target struct {
	Fabric string                     `json:"fabric"`
	WWN    string                     `json:"wwn"`
	TPGs   []tpg                      `json:"tpgs"`
	Extra  map[string]json.RawMessage `json:"extra,omitempty"`
}

type tpg struct {
	Tag        int                        `json:"tag"`
	Enable     bool                       `json:"enable"`
	Attributes map[string]json.RawMessage `json:"attributes"`
	Parameters map[string]string          `json:"parameters"`
	LUNs       []lun                      `json:"luns"`
	Portals    []json.RawMessage          `json:"portals"`
	NodeACLs   []lio.NodeACL              `json:"node_acls"`
	Extra      map[string]json.RawMessage `json:"extra,omitempty"`
}

type lun struct {
	Index int    `json:"index"`
	SO    string `json:"so"` // "/backstores/<plugin>/<name>"
	Alias string `json:"alias"`
	ALUA  string `json:"alua"`
}

func (s *state) so(plugin, name string) (int, *storageObject) {
	for i := range s.StorageObjects {
		if s.StorageObjects[i].Plugin == plugin && s.StorageObjects[i].Name == name {
			return i, &s.StorageObjects[i]
		}
	}
	return -1, nil
}

func (s *state) tpg(iqn string, tag int) *tpg {
	for i := range s.Targets {
		if s.Targets[i].WWN != iqn {
			continue
		}
		for j := range s.Targets[i].TPGs {
			if s.Targets[i].TPGs[j].Tag == tag {
				return &s.Targets[i].TPGs[j]
			}
		}
	}
	return nil
}

// objects is what a targetcli process reads from configfs at start: one
// unit per storage object and per LUN.
func (s *state) objects() int {
	n := len(s.StorageObjects)
	for _, t := range s.Targets {
		for _, g := range t.TPGs {
			n += len(g.LUNs)
		}
	}
	return n
}

// deleteSO removes a storage object and, as LIO does, every LUN backed by it
// in every TPG, with the node ACL mappings of those LUNs.
func (s *state) deleteSO(i int) {
	p := s.StorageObjects[i].path()
	s.StorageObjects = slices.Delete(s.StorageObjects, i, i+1)
	for ti := range s.Targets {
		for gi := range s.Targets[ti].TPGs {
			g := &s.Targets[ti].TPGs[gi]
			for li := 0; li < len(g.LUNs); {
				if g.LUNs[li].SO == p {
					g.deleteLUN(li)
					continue
				}
				li++
			}
		}
	}
}

func (g *tpg) lunAt(index int) int {
	for i, l := range g.LUNs {
		if l.Index == index {
			return i
		}
	}
	return -1
}

func (g *tpg) deleteLUN(i int) {
	idx := g.LUNs[i].Index
	g.LUNs = slices.Delete(g.LUNs, i, i+1)
	for ai := range g.NodeACLs {
		a := &g.NodeACLs[ai]
		a.MappedLUNs = slices.DeleteFunc(a.MappedLUNs, func(m lio.MappedLUN) bool { return m.TPGLUN == idx })
	}
}

// addLUN adds a new LUN first: configfs, and so rtslib's dump, lists the
// newest LUN first.
func (g *tpg) addLUN(l lun) { g.LUNs = slices.Insert(g.LUNs, 0, l) }

// config expands the state to saveconfig.json form, as rtslib's dump() does.
func (s *state) config() *lio.Config {
	c := &lio.Config{
		FabricModules:  []json.RawMessage{},
		StorageObjects: make([]lio.StorageObject, 0, len(s.StorageObjects)),
		Targets:        make([]lio.Target, 0, len(s.Targets)),
	}
	var attrs [2]json.RawMessage // by write_back: the same for every object
	for _, so := range s.StorageObjects {
		if so.Full != nil {
			c.StorageObjects = append(c.StorageObjects, *so.Full)
			continue
		}
		c.StorageObjects = append(c.StorageObjects, so.expand(&attrs))
	}
	for _, t := range s.Targets {
		lt := lio.Target{Fabric: t.Fabric, WWN: t.WWN, TPGs: make([]lio.TPG, 0, len(t.TPGs)), Extra: t.Extra}
		for _, g := range t.TPGs {
			lg := lio.TPG{
				Tag:        g.Tag,
				Enable:     lio.Flag(g.Enable),
				Attributes: g.Attributes,
				Parameters: g.Parameters,
				LUNs:       make([]lio.LUN, 0, len(g.LUNs)),
				Portals:    nonNil(g.Portals),
				NodeACLs:   nonNil(g.NodeACLs),
				Extra:      g.Extra,
			}
			for _, l := range g.LUNs {
				lg.LUNs = append(lg.LUNs, lio.LUN{Index: l.Index, StorageObject: l.SO, Alias: l.Alias, ALUAGroup: l.ALUA})
			}
			for ai := range lg.NodeACLs {
				lg.NodeACLs[ai].MappedLUNs = nonNil(lg.NodeACLs[ai].MappedLUNs)
			}
			lt.TPGs = append(lt.TPGs, lg)
		}
		c.Targets = append(c.Targets, lt)
	}
	return c
}

// expand is the object as rtslib dumps a fileio backstore the simulator
// created; attrs caches the attribute blobs.
func (so *storageObject) expand(attrs *[2]json.RawMessage) lio.StorageObject {
	wbi := 0
	if so.WriteBack {
		wbi = 1
	}
	if attrs[wbi] == nil {
		attrs[wbi] = rawJSON(fileioAttributes(so.WriteBack))
	}
	size, wb, aio := so.Size, so.WriteBack, false
	return lio.StorageObject{
		Plugin:     so.Plugin,
		Name:       so.Name,
		Dev:        so.Dev,
		Size:       &size,
		WWN:        so.WWN,
		WriteBack:  &wb,
		AIO:        &aio,
		Attributes: attrs[wbi],
		ALUATPGs:   json.RawMessage("[" + defaultALUATPG + "]"),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// stateFromConfig turns a saveconfig-form config into live state. Storage
// objects are kept verbatim, except those the simulator would dump exactly
// so itself: they stay slim, so that a node seeded with thousands of them
// costs a command little.
func stateFromConfig(c *lio.Config) *state {
	s := &state{}
	var attrs [2]json.RawMessage
	for _, so := range c.StorageObjects {
		slim := storageObject{Plugin: so.Plugin, Name: so.Name, Dev: so.Dev, Size: so.SizeBytes(), WWN: so.WWN}
		if so.WriteBack != nil {
			slim.WriteBack = *so.WriteBack
		}
		if so.Plugin != "fileio" || !sameDump(slim.expand(&attrs), so) {
			full := so
			slim.Full = &full
		}
		s.StorageObjects = append(s.StorageObjects, slim)
	}
	for _, t := range c.Targets {
		st := target{Fabric: t.Fabric, WWN: t.WWN, Extra: t.Extra}
		for _, g := range t.TPGs {
			sg := tpg{
				Tag: g.Tag, Enable: bool(g.Enable), Attributes: g.Attributes, Parameters: g.Parameters,
				Portals: g.Portals, NodeACLs: g.NodeACLs, Extra: g.Extra,
			}
			for _, l := range g.LUNs { // in the file's order
				sg.LUNs = append(sg.LUNs, lun{Index: l.Index, SO: l.StorageObject, Alias: l.Alias, ALUA: l.ALUAGroup})
			}
			st.TPGs = append(st.TPGs, sg)
		}
		s.Targets = append(s.Targets, st)
	}
	return s
}

// sameDump reports whether a and b are written to saveconfig.json alike.
func sameDump(a, b lio.StorageObject) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// store reads and writes the live state of one node directory. Every change
// is a read-modify-write under an exclusive flock of live.lock, written with
// temp+rename, so concurrent processes (one-shot, batch, daemon) never see a
// torn state. A store caches the last state it saw and re-reads the file only
// when its identity (inode, size, mtime) changed.
type store struct {
	dir    string
	cache  *state
	cached fileID
}

// racyWindow is how old live.json's mtime must be before its identity alone
// is trusted.
const racyWindow = 2 * time.Second

type fileID struct {
	ino   uint64
	size  int64
	mtime int64
}

func statID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	return id, nil
}

// flock opens (creating) path and takes an exclusive lock on it. With block
// false it fails with errLocked when another open file holds the lock.
func flock(path string, block bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if !block {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}

var errLocked = errors.New("lock held by another process")

// locked runs fn with live.lock held.
func (s *store) locked(fn func() error) error {
	f, err := flock(filepath.Join(s.dir, liveLockFile), true)
	if err != nil {
		return fmt.Errorf("lock simulated kernel state in %s: %w", s.dir, err)
	}
	defer f.Close() // closing releases the flock
	return fn()
}

// loadLocked returns the current live state; the caller holds live.lock.
func (s *store) loadLocked() (*state, error) {
	p := filepath.Join(s.dir, liveFile)
	id, err := statID(p)
	if err != nil {
		return nil, fmt.Errorf("read simulated kernel state: %w (is %s a node made by sim.NewNode?)", err, s.dir)
	}
	// The identity proves the file unchanged only once its mtime is
	// older than the file system's timestamp granularity (up to a second
	// on some, e.g. UML's hostfs): a rewrite of the same size in the same
	// tick can reuse the inode (the rename frees it) and keep the mtime.
	if s.cache != nil && id == s.cached && time.Since(time.Unix(0, id.mtime)) > racyWindow {
		return s.cache, nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read simulated kernel state: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("simulated kernel state %s is corrupt: %w", p, err)
	}
	s.cache, s.cached = st, id
	return st, nil
}

// saveLocked writes st as the live state; the caller holds live.lock.
func (s *store) saveLocked(st *state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	p := filepath.Join(s.dir, liveFile)
	if err := writeFileAtomic(p, data, 0o600); err != nil {
		s.cache = nil
		return fmt.Errorf("write simulated kernel state: %w", err)
	}
	id, err := statID(p)
	if err != nil {
		s.cache = nil
		return nil
	}
	s.cache, s.cached = st, id
	return nil
}

// read returns a snapshot of the live state. The snapshot is shared with the
// cache: callers must not modify it.
func (s *store) read() (*state, error) {
	var st *state
	err := s.locked(func() error {
		var err error
		st, err = s.loadLocked()
		return err
	})
	return st, err
}

// mutate applies fn to the live state and writes it back if fn reports a
// change. When fn fails the cache is dropped, since fn may have changed it
// half-way.
func (s *store) mutate(fn func(st *state) (changed bool, err error)) error {
	return s.locked(func() error {
		st, err := s.loadLocked()
		if err != nil {
			return err
		}
		changed, err := fn(st)
		if err != nil {
			s.cache = nil
			return err
		}
		if !changed {
			return nil
		}
		return s.saveLocked(st)
	})
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// counters are node-wide tallies, kept under live.lock.
type counters struct {
	Processes int `json:"processes"` // targetcli and targetclid processes started
	Commands  int `json:"commands"`  // counted commands run (see Faults)
}

func (s *store) countersLocked() (counters, error) {
	var c counters
	data, err := os.ReadFile(filepath.Join(s.dir, countersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("counters in %s are corrupt: %w", s.dir, err)
	}
	return c, nil
}

func (s *store) bump(fn func(c *counters)) (counters, Faults, error) {
	var c counters
	var f Faults
	err := s.locked(func() error {
		var err error
		if c, err = s.countersLocked(); err != nil {
			return err
		}
		fn(&c)
		data, _ := json.Marshal(c)
		if err := writeFileAtomic(filepath.Join(s.dir, countersFile), data, 0o600); err != nil {
			return err
		}
		f, err = readFaults(s.dir)
		return err
	})
	return c, f, err
}

// rawJSON encodes v, which cannot fail for the maps of raw values used here.
func rawJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("sim: encoding a constant: " + err.Error())
	}
	return b
}
