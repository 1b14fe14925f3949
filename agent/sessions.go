package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// LUNMapFile is the file in STATE_DIR that records, for tpg1, every LUN
// index and the storage object behind it that an iSCSI session may have
// seen since the sessions were last reset, and whether a reset is owed.
const LUNMapFile = "lun-map.json"

// lunMapRecord is LUNMapFile's content.
type lunMapRecord struct {
	Target string `json:"target"`
	// Seen is LUN index -> storage object ("/backstores/fileio/<name>")
	// for every LUN a session may have seen since the last reset, including
	// LUNs removed since (a session may still hold their devices).
	Seen map[int]string `json:"seen"`
	// ResetOwed, when not empty, says why the sessions must be reset even
	// though no index changed in Seen (Seen is not known: a rebuilt worker
	// without the fleet registry).
	ResetOwed string `json:"reset_owed,omitempty"`
}

// MapChange is one LUN whose number changed under sessions that may have
// seen the old map.
type MapChange struct {
	Index  int
	Was    string // storage object a session may have seen at Index
	Now    string // storage object at Index now; "" when it moved away
	NowIdx int    // where Was is now, when it moved; -1 otherwise
}

func (c MapChange) String() string {
	if c.Now != "" {
		return fmt.Sprintf("lun%d: %s -> %s", c.Index, c.Was, c.Now)
	}
	return fmt.Sprintf("lun%d: %s moved to lun%d", c.Index, c.Was, c.NowIdx)
}

// MapChanges compares the map sessions may have seen with the map LIO holds
// now and returns every index that points at another storage object than
// before, and every storage object that is now at another index. LUNs only
// added (an index nobody saw) or only removed (the image gone) are not
// changes: no session reads another image through them.
func MapChanges(seen, now map[int]string) []MapChange {
	where := make(map[string]int, len(now))
	for i, so := range now {
		where[so] = i
	}
	var out []MapChange
	for _, i := range slices.Sorted(maps.Keys(seen)) {
		was := seen[i]
		if so, ok := now[i]; ok {
			if so != was {
				out = append(out, MapChange{Index: i, Was: was, Now: so, NowIdx: -1})
			}
			continue
		}
		if j, ok := where[was]; ok {
			out = append(out, MapChange{Index: i, Was: was, NowIdx: j})
		}
	}
	return out
}

// lunMapOf is tpg1's LUN index -> storage object in c.
func lunMapOf(c *lio.Config, iqn string) map[int]string {
	out := map[int]string{}
	tpg, ok := c.TPG(iqn, 1)
	if !ok {
		return out
	}
	for _, l := range tpg.LUNs {
		out[l.Index] = l.StorageObject
	}
	return out
}

// sessionGuard makes initiators log in again when the LUN map changed under
// their sessions: before a pass it makes sure the map sessions may have
// seen is recorded (begin), after it compares that record with what LIO
// holds and, when an index changed, disables and enables tpg1 (LIO drops
// every session of a TPG it disables; initiators log in again and scan the
// new map), then records the new map (end). The record is written before
// any change it protects and cleared only after the reset, so an agent
// killed in between resets on its next pass.
type sessionGuard struct {
	path  string // STATE_DIR/lun-map.json
	iqn   string
	fleet func() bool // LUN numbers come from the fleet registry (a rebuilt worker gets the old map back)
	state func(ctx context.Context) (*lio.Config, error)
	// resetTPG disables and enables tpg1 through the reconciler, the only
	// writer to LIO (projector.Reconciler.ResetSessions).
	resetTPG func(ctx context.Context, why string) (*projector.Report, error)
	log      *slog.Logger
	m        *metrics.Metrics
	// localUses counts LUN numbers the fleet registry's local fallback
	// handed out (nil without the fleet registry): a worker that trusted
	// the fleet for its map but got local numbers owes a reset.
	localUses func() uint64
	crash     func() error // tests: called before a reset; an error stops there as a crash would

	record     *lunMapRecord
	trustFleet bool   // the record was started empty, trusting the fleet registry's numbers
	localAt    uint64 // localUses when it was
}

func (g *sessionGuard) load() (*lunMapRecord, error) {
	b, err := os.ReadFile(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the recorded LUN map %s: %w", g.path, err)
	}
	var r lunMapRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("the recorded LUN map %s is not valid JSON (%v); remove it and the agent resets the iSCSI sessions once to be safe", g.path, err)
	}
	if r.Seen == nil {
		r.Seen = map[int]string{}
	}
	return &r, nil
}

func (g *sessionGuard) save(r *lunMapRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := g.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("recording the LUN map: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, g.path)
	}
	if err != nil {
		return fmt.Errorf("recording the LUN map in %s: %w", g.path, err)
	}
	if d, err := os.Open(filepath.Dir(g.path)); err == nil {
		d.Sync()
		d.Close()
	}
	g.record = r
	return nil
}

// begin makes sure the map sessions may have seen is recorded before a pass
// may change LIO. Without a record (a new or rebuilt STATE_DIR) it is what
// LIO holds now; when LIO holds no LUN either (a rebuilt worker), the map
// of the sessions from before the rebuild is unknown: with the fleet
// registry the numbers come back as they were, without it a reset is owed.
func (g *sessionGuard) begin(ctx context.Context) error {
	if g.record != nil {
		return nil
	}
	r, err := g.load()
	if err != nil || r != nil {
		g.record = r
		return err
	}
	c, err := g.state(ctx)
	if err != nil {
		return err
	}
	r = &lunMapRecord{Target: g.iqn, Seen: lunMapOf(c, g.iqn)}
	if len(r.Seen) == 0 {
		if g.fleet() {
			g.trustFleet = true
			if g.localUses != nil {
				g.localAt = g.localUses()
			}
		} else {
			r.ResetOwed = "no recorded LUN map and no LUN in LIO (a new or rebuilt worker) without the fleet LUN registry: the numbers sessions saw before cannot be known"
		}
	}
	return g.save(r)
}

// end compares the recorded map with what LIO holds after a pass. final
// says the pass succeeded, so that the map will not change again for the
// same reason: only then are sessions reset.
func (g *sessionGuard) end(ctx context.Context, final bool) error {
	if g.record == nil {
		return nil
	}
	c, err := g.state(ctx)
	if err != nil {
		return err
	}
	now := lunMapOf(c, g.iqn)
	if g.trustFleet && g.localUses != nil && g.localUses() > g.localAt && g.record.ResetOwed == "" {
		if err := g.save(&lunMapRecord{Target: g.iqn, Seen: g.record.Seen,
			ResetOwed: "a new or rebuilt worker got LUN numbers from the local registry while the fleet registry did not answer: they may differ from those sessions saw before"}); err != nil {
			return err
		}
	}
	if g.trustFleet && len(now) > 0 {
		g.trustFleet = false // the first pass that projected decided
	}
	changes := MapChanges(g.record.Seen, now)
	why := g.record.ResetOwed
	if len(changes) > 0 {
		names := make([]string, 0, len(changes))
		for _, ch := range changes {
			names = append(names, ch.String())
		}
		sort.Strings(names)
		why = "LUN numbers changed under sessions that may have seen the old map: " + strings.Join(names, "; ")
	}
	if why == "" || len(now) == 0 {
		// Nothing a session saw points elsewhere (or nothing to log in to
		// yet): sessions may now see what LIO holds, and still hold what
		// was removed.
		seen := maps.Clone(g.record.Seen)
		maps.Copy(seen, now)
		if maps.Equal(seen, g.record.Seen) {
			return nil
		}
		return g.save(&lunMapRecord{Target: g.iqn, Seen: seen, ResetOwed: g.record.ResetOwed})
	}
	if !final {
		g.log.Warn("LUN map changed under live sessions; they are reset once the pass succeeds", "why", why)
		return nil
	}
	return g.reset(ctx, why, now)
}

// reset disables and enables tpg1: LIO closes every session of a TPG it
// disables, and the initiators log in again to the map LIO holds now.
func (g *sessionGuard) reset(ctx context.Context, why string, now map[int]string) error {
	if g.crash != nil {
		if err := g.crash(); err != nil {
			return err
		}
	}
	g.log.Warn("resetting tpg1's iSCSI sessions so that initiators log in again to the final LUN map (as the old agent's target.service restart)",
		"target", g.iqn, "why", why, "luns", len(now))
	rep, err := g.resetTPG(ctx, why)
	if rep != nil {
		g.m.ObserveChanges(rep)
	}
	if err == nil && len(rep.Results) != 2 {
		err = fmt.Errorf("LIO answered %d of the 2 operations (disable, enable)", len(rep.Results))
	}
	if err != nil {
		g.m.SessionReset("failed")
		return fmt.Errorf("resetting the iSCSI sessions of %s tpg1 (%s): %w; the reset is retried at the next pass", g.iqn, why, err)
	}
	g.m.SessionReset("done")
	return g.save(&lunMapRecord{Target: g.iqn, Seen: maps.Clone(now)})
}

func newSessionGuard(a *Agent) *sessionGuard {
	g := &sessionGuard{
		path:     filepath.Join(a.cfg.StateDir, LUNMapFile),
		iqn:      a.cfg.TargetIQN,
		fleet:    a.regChoice.Fleet,
		state:    a.Reconciler.StateOrResave,
		resetTPG: a.Reconciler.ResetSessions,
		log:      a.log.With("component", "sessions"),
		m:        a.metrics,
	}
	if a.fallback != nil {
		g.localUses = a.fallback.LocalUses
	}
	return g
}
