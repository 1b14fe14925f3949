package registry

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// MaxIndex is the highest LUN index LIO accepts; indexes run 0..MaxIndex.
const MaxIndex = 65535

// DefaultQuarantine is how long a released index stays reserved for its
// image before another image may get it (LUN_QUARANTINE).
const DefaultQuarantine = 24 * time.Hour

// Sentinel errors. A Fallback never falls back to the local registry on
// these: they would be the same answer there.
var (
	// ErrExhausted means every index 0..65535 is in use or in quarantine.
	// Release images or shorten LUN_QUARANTINE.
	ErrExhausted = errors.New("registry: no free LUN index in 0..65535 (every index is in use or in quarantine); delete unused images or shorten LUN_QUARANTINE")
	// ErrInvalidName means a projection name is not [A-Za-z0-9_-]{1,128}.
	ErrInvalidName = errors.New("registry: invalid projection name")
	// ErrIndexRange means an index outside 0..65535 was offered.
	ErrIndexRange = errors.New("registry: LUN index out of range 0..65535")
)

// Meta describes the image behind a projection and the node asking.
type Meta struct {
	// Image is a human label: the PE S3 key or the IMS image id/name. It is
	// stored, never interpreted.
	Image string
	// InUse are LUN indexes the asking node's TPG already uses for other
	// storage objects (LUNs the agent does not own). A new allocation
	// avoids them: an index is handed out only when it is free both in the
	// registry and in the TPG. Not stored; a name that already has an
	// index keeps it.
	InUse []int
}

// Entry is the registry record of one projection name.
type Entry struct {
	Index      int        `json:"index"`
	Image      string     `json:"image,omitempty"`
	FirstSeen  time.Time  `json:"first_seen"`
	ReleasedAt *time.Time `json:"released_at,omitempty"` // nil while in use
	Node       string     `json:"node,omitempty"`        // who allocated it
}

// Released reports whether the entry's image was released.
func (e Entry) Released() bool { return e.ReleasedAt != nil }

// expired reports whether e was released at least q before now, so its
// index may go to another image.
func (e Entry) expired(now time.Time, q time.Duration) bool {
	return e.ReleasedAt != nil && now.Sub(*e.ReleasedAt) >= q
}

// Registry hands out fleet-stable LUN indexes keyed by projection name
// (naming.ID.Name).
type Registry interface {
	// Index returns name's index, allocating the lowest free one if name has
	// none, and marks it in use (a released name within quarantine gets its
	// old index back).
	Index(ctx context.Context, name string, meta Meta) (int, error)
	// Release marks name's index released; it stays reserved for the
	// quarantine. Releasing an unknown or released name is a no-op.
	Release(ctx context.Context, name string) error
	// Lookup returns name's entry without changing anything.
	Lookup(ctx context.Context, name string) (Entry, bool, error)
	// Adopt offers index for name (an index already in use on the node).
	// First writer wins: it returns the registry's index for name, which
	// differs from index when the registry already had one for name or
	// index belongs to another image. The caller reports a mismatch; it
	// never moves the LUN on its own.
	Adopt(ctx context.Context, name string, index int, meta Meta) (int, error)
	// All returns every entry, released ones included, keyed by name.
	All(ctx context.Context) (map[string]Entry, error)
}

// Conflict is a local allocation the fleet registry disagrees with, found
// by Fallback.Reconcile. Nothing is renumbered; the caller reports it.
type Conflict struct {
	Name  string // projection name
	Image string // its image label
	Local int    // index the node allocated while the fleet was unreachable
	Fleet int    // index the fleet registry holds for Name
	// Owner is the name that holds Local in the fleet registry, if another
	// image got that number; empty otherwise.
	Owner string
}

func (c Conflict) String() string {
	s := fmt.Sprintf("projection %s (%s): node allocated LUN %d while the fleet registry was unreachable, fleet registry says LUN %d", c.Name, c.Image, c.Local, c.Fleet)
	if c.Owner != "" {
		s += fmt.Sprintf(" (fleet gave LUN %d to %s)", c.Local, c.Owner)
	}
	return s + "; move it only on operator request (sbps-marshal sync --renumber)"
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: want a backstore name such as 0123456789abcde ([A-Za-z0-9_-], at most 128)", ErrInvalidName, name)
	}
	return nil
}

func checkIndex(i int) error {
	if i < 0 || i > MaxIndex {
		return fmt.Errorf("%w: %d", ErrIndexRange, i)
	}
	return nil
}

// clock returns now, or time.Now when now is nil.
func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

func ptime(t time.Time) *time.Time { return &t }
