package lio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNotRestored is what a LossError is: LIO's live state has lost part
// of what saveconfig.json holds (target.service stopped, failed, or not
// yet run at boot), so saving it would destroy the node's configuration.
var ErrNotRestored = errors.New("LIO's live state has lost what saveconfig.json holds (LIO not restored)")

// LossError refuses a save: what LIO's live state would have written lacks
// objects the file holds and that the agent did not mean to remove, or
// (when the file is missing or unreadable) lacks the node's own target.
type LossError struct {
	File string   // saveconfig.json
	Lost []string // what the file holds that live state lacks, e.g. "target iqn…", "lun3 (…) of iqn…/tpg1"
	// Missing is the node's target when the file could not be compared
	// (missing or unreadable) and live state lacks that target.
	Missing string
	// Unreadable says why the file could not be compared, if it could not.
	Unreadable string
}

func (e *LossError) Error() string {
	var what string
	if e.Missing != "" {
		what = fmt.Sprintf("LIO's live state has no target %s and %s cannot be compared (%s)", e.Missing, e.File, e.Unreadable)
	} else {
		shown := e.Lost
		more := ""
		if len(shown) > 4 {
			shown, more = shown[:4], fmt.Sprintf(" and %d more", len(e.Lost)-4)
		}
		what = fmt.Sprintf("LIO's live state has lost %s%s that %s holds", strings.Join(shown, ", "), more, e.File)
	}
	return what + "; not saving over it. LIO was not restored (target.service stopped, failed or not yet run): " +
		"`systemctl start target.service` restores the file into the kernel; if the loss was meant, save it yourself with `targetcli saveconfig " + e.File + "`"
}

// Is makes errors.Is(err, ErrNotRestored) true for a LossError.
func (e *LossError) Is(target error) bool { return target == ErrNotRestored }

// Guard is the one writer of saveconfig.json. targetcli never saves to the
// file itself: the Driver it wraps saves LIO's live state to a staging file
// beside it (StagingFile), and the Guard installs that by rename only when
// it keeps every target, TPG, portal, node ACL, TPG attribute and
// parameter, LUN and storage object the file holds, except those the
// operations of the call meant to remove. A file that is missing or not
// valid JSON is written again from live state, unless live state lacks the
// node's target. Every Apply and Save of the agent goes through it.
//
// Calls are serialised by the Driver's own lock only for its part; the
// Guard expects one caller at a time (the reconciler's pass lock).
type Guard struct {
	d       *Driver
	file    string
	staging string
	saved   *SavedFile
	target  string
}

var _ Applier = (*Guard)(nil)

// StagingFile is where a guarded Driver saves LIO's live state for file:
// beside it, so that installing is a rename on one file system.
func StagingFile(file string) string { return file + ".sbps-live" }

// NewGuard wraps d, whose SaveFile must be StagingFile(file). target is the
// node's target IQN: live state without it is never saved over a file that
// cannot be compared ("" skips that check).
func NewGuard(d *Driver, file, target string) (*Guard, error) {
	if d.cfg.SaveFile != StagingFile(file) {
		return nil, fmt.Errorf("LIO save guard: the driver saves to %s, want the staging file %s", d.cfg.SaveFile, StagingFile(file))
	}
	return &Guard{d: d, file: file, staging: d.cfg.SaveFile, saved: &SavedFile{Path: file}, target: target}, nil
}

// Saved reads saveconfig.json (not the staging file).
func (g *Guard) Saved() *SavedFile { return g.saved }

// Driver is the wrapped driver.
func (g *Guard) Driver() *Driver { return g.d }

// Apply runs ops through the driver, then installs the live state it saved
// if nothing the file holds was lost, except what ops remove. A refusal is
// a *LossError joined to the driver's error; the results are the driver's
// (judged from live state as saved).
//
// The removals among ops are written to IntentFile(file) before targetcli
// runs and forgotten once the live state is installed: an agent killed
// between a delete and its save leaves the kernel without an object the
// file still holds, and the next agent must tell that loss, which it
// meant, from LIO not restored.
func (g *Guard) Apply(ctx context.Context, ops []Op) ([]Result, error) {
	had := g.readFile(ctx)
	g.clearStaging()
	meant, err := g.recordIntent(ops)
	if err != nil {
		return make([]Result, len(ops)), err
	}
	res, err := g.d.Apply(ctx, ops)
	return res, errors.Join(err, g.installMeant(had, meant))
}

// Save saves LIO's live state to saveconfig.json, guarded: nothing the file
// holds may be lost but what an earlier, unfinished Apply meant to remove.
func (g *Guard) Save(ctx context.Context) error {
	had := g.readFile(ctx)
	g.clearStaging()
	if err := g.d.Save(ctx); err != nil {
		return err
	}
	return g.installMeant(had, g.intent())
}

// Check saves LIO's live state to a file of its own beside the staging
// file and says whether saving it over saveconfig.json would be refused;
// neither saveconfig.json nor the staging file is touched, so `sbps-marshal
// status` and doctor may check while the agent runs and saves.
func (g *Guard) Check(ctx context.Context) error {
	had := g.readFile(ctx)
	f, err := os.CreateTemp(filepath.Dir(g.staging), filepath.Base(g.staging)+".check-*")
	if err != nil {
		return fmt.Errorf("LIO save guard: a file for checking LIO's live state beside %s: %w", g.staging, err)
	}
	check := f.Name()
	f.Close()
	os.Remove(check)                 // only its name was wanted: the save creates it, as it creates the staging file
	defer os.Remove(check + ".temp") // rtslib's own temporary file
	defer os.Remove(check)
	if err := g.d.SaveTo(ctx, check); err != nil {
		return err
	}
	_, _, err = g.judgeFile(check, had, g.intent())
	return err
}

// IntentFile is where a Guard keeps the removals of an Apply until their
// result is saved: beside file, as JSON.
func IntentFile(file string) string { return file + ".sbps-intent" }

// intent is what IntentFile holds.
type intent struct {
	Removals []Op `json:"removals"`
}

// intent reads the removals an earlier Apply meant and did not see saved.
// A file that cannot be read means none: the guard then refuses more, never
// less.
func (g *Guard) intent() []Op {
	data, err := os.ReadFile(IntentFile(g.file))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			g.d.log.Warn("cannot read the agent's recorded LIO removals; treating none as meant", "file", IntentFile(g.file), "err", err)
		}
		return nil
	}
	var in intent
	if err := json.Unmarshal(data, &in); err != nil {
		g.d.log.Warn("the agent's recorded LIO removals are not valid JSON; treating none as meant", "file", IntentFile(g.file), "err", err)
		return nil
	}
	return in.Removals
}

// recordIntent adds the removals among ops to those already recorded and
// writes them durably; it returns them all.
func (g *Guard) recordIntent(ops []Op) ([]Op, error) {
	meant := g.intent()
	added := false
	for _, op := range ops {
		if (op.Kind == DeleteBackstore || op.Kind == DeleteLUN) && !slices.Contains(meant, op) {
			meant = append(meant, op)
			added = true
		}
	}
	if !added {
		return meant, nil
	}
	data, err := json.Marshal(intent{Removals: meant})
	if err != nil {
		return nil, err
	}
	path := IntentFile(g.file)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("recording the LIO removals about to be made in %s: %w (nothing was changed; the folder of %s must be writable by the agent)", path, err, g.file)
	}
	return meant, nil
}

// installMeant installs as install does and, once the live state is in the
// file, forgets the recorded removals.
func (g *Guard) installMeant(had fileState, meant []Op) error {
	current, err := g.install(had, meant)
	if err != nil || !current {
		return err
	}
	if err := os.Remove(IntentFile(g.file)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		g.d.log.Warn("cannot remove the agent's recorded LIO removals after saving", "file", IntentFile(g.file), "err", err)
	}
	return nil
}

// fileState is saveconfig.json as read before a change.
type fileState struct {
	cfg    *Config
	digest string
	err    error // nil, or why it cannot be compared (fs.ErrNotExist when missing)
}

func (g *Guard) readFile(ctx context.Context) fileState {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, digest, err := g.saved.Load()
		if err == nil || !errors.Is(err, ErrIncomplete) || attempt == 5 {
			return fileState{cfg: c, digest: digest, err: err}
		}
		select {
		case <-ctx.Done():
			return fileState{err: err}
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (g *Guard) clearStaging() {
	_ = os.Remove(g.staging)
	_ = os.Remove(g.staging + ".temp") // rtslib's own temporary file
}

// judge reads the staging file and decides. data is nil when the driver
// saved nothing.
func (g *Guard) judge(had fileState, meant []Op) (data []byte, live *Config, err error) {
	return g.judgeFile(g.staging, had, meant)
}

// judgeFile is judge for LIO's live state as saved to staging.
func (g *Guard) judgeFile(staging string, had fileState, meant []Op) (data []byte, live *Config, err error) {
	data, err = os.ReadFile(staging)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading LIO's live state as saved to %s: %w", staging, err)
	}
	if live, err = Parse(data); err != nil {
		return nil, nil, fmt.Errorf("LIO's live state as saved to %s: %w", staging, err)
	}
	if had.err == nil {
		if lost := Lost(had.cfg, live, meant); len(lost) > 0 {
			return nil, nil, &LossError{File: g.file, Lost: lost}
		}
		return data, live, nil
	}
	if g.target != "" {
		if t, ok := live.Target(g.target); !ok || len(t.TPGs) == 0 {
			why := "missing"
			if !errors.Is(had.err, fs.ErrNotExist) {
				why = had.err.Error()
			}
			return nil, nil, &LossError{File: g.file, Missing: g.target, Unreadable: why}
		}
	}
	return data, live, nil
}

// install puts the staging file in place when judge allows it. current
// says that saveconfig.json now holds LIO's live state (installed, or
// already equal to it).
func (g *Guard) install(had fileState, meant []Op) (current bool, err error) {
	defer g.clearStaging()
	data, _, err := g.judge(had, meant)
	if err != nil || data == nil {
		return false, err
	}
	sum := sha256.Sum256(data)
	if had.err == nil && hex.EncodeToString(sum[:]) == had.digest {
		return true, nil // unchanged: no write, no watcher event
	}
	if had.err != nil && !errors.Is(had.err, fs.ErrNotExist) {
		// Keep what could not be read, for the operator.
		if err := os.Rename(g.file, g.file+".unreadable"); err == nil {
			g.d.log.Warn("saveconfig.json could not be read; kept as .unreadable and written again from LIO's live state",
				"file", g.file, "kept", g.file+".unreadable", "err", had.err)
		}
	}
	if err := os.Rename(g.staging, g.file); err != nil {
		return false, fmt.Errorf("installing LIO's live state as %s: %w", g.file, err)
	}
	g.saved.Invalidate()
	return true, nil
}

// Lost lists what had holds that live lacks, other than what meant
// removes: storage objects, targets, TPGs, portals, node ACLs and their
// mapped LUNs, TPG attribute and parameter keys, and LUNs (a LUN index now
// backed by another storage object counts as lost). Pure.
func Lost(had, live *Config, meant []Op) []string {
	if had == nil {
		return nil
	}
	gone := removedBy(meant)
	lost := lostStorageObjects(had, live, gone)
	for _, t := range had.Targets {
		lost = append(lost, lostInTarget(t, live, gone)...)
	}
	slices.Sort(lost) // stable for tests and logs
	return lost
}

// removals is what a list of ops removes on purpose.
type removals struct {
	so  map[string]bool // storage object paths
	lun map[string]bool // lunKey of each LUN
}

// removedBy collects the storage objects and LUNs that meant deletes.
func removedBy(meant []Op) removals {
	gone := removals{so: map[string]bool{}, lun: map[string]bool{}}
	for _, op := range meant {
		switch op.Kind {
		case DeleteBackstore:
			gone.so["/backstores/fileio/"+op.Backstore] = true
		case DeleteLUN:
			gone.lun[lunKey(op.Target, op.TPGTag(), op.LUN)] = true
		}
	}
	return gone
}

func lostStorageObjects(had, live *Config, gone removals) []string {
	var lost []string
	for _, so := range had.StorageObjects {
		if gone.so[so.Path()] {
			continue
		}
		if !slices.ContainsFunc(live.StorageObjects, func(l StorageObject) bool { return l.Plugin == so.Plugin && l.Name == so.Name }) {
			lost = append(lost, "storage object "+so.Path())
		}
	}
	return lost
}

// lostInTarget lists the target itself when live lacks it, else what each
// of its TPGs lost.
func lostInTarget(t Target, live *Config, gone removals) []string {
	lt, ok := live.Target(t.WWN)
	if !ok {
		return []string{"target " + t.WWN}
	}
	var lost []string
	for _, tpg := range t.TPGs {
		where := fmt.Sprintf("%s/tpg%d", t.WWN, tpg.Tag)
		ltpg, ok := lt.TPG(tpg.Tag)
		if !ok {
			lost = append(lost, "TPG "+where)
			continue
		}
		lost = append(lost, lostPortals(tpg, ltpg, where)...)
		lost = append(lost, lostSettings(tpg, ltpg, where)...)
		luns, removed := lostLUNs(t.WWN, tpg, ltpg, where, gone)
		lost = append(lost, luns...)
		lost = append(lost, lostNodeACLs(tpg, ltpg, where, removed)...)
	}
	return lost
}

func lostPortals(had TPG, live *TPG, where string) []string {
	livePortals := map[string]bool{}
	for _, p := range live.Portals {
		livePortals[portalKey(p)] = true
	}
	var lost []string
	for _, p := range had.Portals {
		if !livePortals[portalKey(p)] {
			lost = append(lost, "portal "+portalKey(p)+" of "+where)
		}
	}
	return lost
}

// lostSettings lists the attribute and parameter keys live lacks; their
// values may differ.
func lostSettings(had TPG, live *TPG, where string) []string {
	var lost []string
	for k := range had.Attributes {
		if _, ok := live.Attributes[k]; !ok {
			lost = append(lost, "attribute "+k+" of "+where)
		}
	}
	for k := range had.Parameters {
		if _, ok := live.Parameters[k]; !ok {
			lost = append(lost, "parameter "+k+" of "+where)
		}
	}
	return lost
}

// lostLUNs lists the LUNs live lacks or backs by another storage object,
// and returns the indexes of the LUNs removed on purpose, whose mappings
// are not lost either.
func lostLUNs(wwn string, had TPG, live *TPG, where string, gone removals) (lost []string, removed map[int]bool) {
	removed = map[int]bool{}
	for _, l := range had.LUNs {
		if gone.lun[lunKey(wwn, had.Tag, l.Index)] || gone.so[l.StorageObject] {
			removed[l.Index] = true
			continue
		}
		i := slices.IndexFunc(live.LUNs, func(x LUN) bool { return x.Index == l.Index })
		switch {
		case i < 0:
			lost = append(lost, fmt.Sprintf("lun%d (%s) of %s", l.Index, l.StorageObject, where))
		case live.LUNs[i].StorageObject != l.StorageObject:
			lost = append(lost, fmt.Sprintf("lun%d (%s, now %s) of %s", l.Index, l.StorageObject, live.LUNs[i].StorageObject, where))
		}
	}
	return lost, removed
}

func lostNodeACLs(had TPG, live *TPG, where string, removed map[int]bool) []string {
	var lost []string
	for _, acl := range had.NodeACLs {
		i := slices.IndexFunc(live.NodeACLs, func(x NodeACL) bool { return x.NodeWWN == acl.NodeWWN })
		if i < 0 {
			lost = append(lost, "node ACL "+acl.NodeWWN+" of "+where)
			continue
		}
		for _, m := range acl.MappedLUNs {
			if removed[m.TPGLUN] {
				continue
			}
			if !slices.ContainsFunc(live.NodeACLs[i].MappedLUNs, func(x MappedLUN) bool { return x.Index == m.Index && x.TPGLUN == m.TPGLUN }) {
				lost = append(lost, fmt.Sprintf("mapped lun%d of node ACL %s of %s", m.Index, acl.NodeWWN, where))
			}
		}
	}
	return lost
}

func lunKey(target string, tag, index int) string {
	return target + "/" + strconv.Itoa(tag) + "/" + strconv.Itoa(index)
}

// portalKey is "ip:port" of a portal as rtslib saves it, or its JSON.
func portalKey(raw json.RawMessage) string {
	var p struct {
		IP   string `json:"ip_address"`
		Port int    `json:"port"`
	}
	if json.Unmarshal(raw, &p) != nil || p.IP == "" {
		return string(bytes.TrimSpace(raw))
	}
	return p.IP + ":" + strconv.Itoa(p.Port)
}
