package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the JetStream KV bucket of the fleet registry
// (LUN_KV_BUCKET).
const DefaultBucket = "sbps-luns"

// KVConfig configures a KV registry. The zero value is usable.
type KVConfig struct {
	// Bucket is the KV bucket. Defaults to DefaultBucket.
	Bucket string
	// Replicas of the bucket when this registry creates it. Defaults to 1.
	Replicas int
	// History kept per key when this registry creates the bucket (an audit
	// trail of who held an index). Defaults to 8; at least 1.
	History int
	// Quarantine is how long a released index stays reserved. Defaults to
	// DefaultQuarantine; a negative value means no quarantine.
	Quarantine time.Duration
	// Node names this agent in the entries it allocates.
	Node string
	// Now is the clock for quarantine decisions. Defaults to time.Now.
	Now func() time.Time
	// CacheTTL bounds how old the snapshot of index claims may be before an
	// allocation reloads it. The snapshot only guides the search; it never
	// decides ownership. Defaults to 30s.
	CacheTTL time.Duration
}

// KV is the fleet registry over a JetStream KV bucket. Its methods are safe
// for concurrent use, and any number of KV values (one per agent, on
// separate connections) may share a bucket. See the package documentation
// for the key layout and the atomicity argument.
type KV struct {
	js  jetstream.JetStream
	cfg KVConfig
	now func() time.Time
	max int // highest index handed out: MaxIndex (lower in tests)

	bindMu sync.Mutex
	kv     jetstream.KeyValue // +checklocks:bindMu; nil until bound

	mu     sync.Mutex
	cache  map[int]slot // +checklocks:mu; last seen idx.<n> claims
	loaded time.Time    // +checklocks:mu; when cache was last loaded in full
}

var _ Registry = (*KV)(nil)

// slot is a cached idx.<n> record and its revision.
type slot struct {
	rec idxRecord
	rev uint64
}

// idxRecord is the value of idx.<n>: which name owns index n, and its entry.
type idxRecord struct {
	Name string `json:"name"`
	Entry
}

// pointer is the value of name.<name>.
type pointer struct {
	Index int `json:"index"`
}

// NewKV returns a registry over cfg.Bucket reached through js. It does no
// I/O: the bucket is looked up (and created if missing) on first use, so an
// agent can start while NATS is down.
func NewKV(js jetstream.JetStream, cfg KVConfig) *KV {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.History <= 0 {
		cfg.History = 8
	}
	if cfg.Quarantine == 0 {
		cfg.Quarantine = DefaultQuarantine
	} else if cfg.Quarantine < 0 {
		cfg.Quarantine = 0
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	return &KV{js: js, cfg: cfg, now: clock(cfg.Now), max: MaxIndex, cache: map[int]slot{}}
}

func idxKey(n int) string        { return "idx." + strconv.Itoa(n) }
func nameKey(name string) string { return "name." + name }

func (k *KV) wrap(op, name string, err error) error {
	return fmt.Errorf("fleet LUN registry (KV bucket %s): %s %s: %w; check that NATS_URL is reachable and JetStream is enabled", k.cfg.Bucket, op, name, err)
}

// bucket binds the KV bucket, creating it if missing.
func (k *KV) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	k.bindMu.Lock()
	defer k.bindMu.Unlock()
	if k.kv != nil {
		return k.kv, nil
	}
	// A JetStream API request whose answer is lost (seen when several
	// agents create the bucket at once) would wait for the caller's whole
	// deadline: each attempt gets its own, and an unanswered one is retried.
	for {
		attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := k.bindOnce(attempt)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return kv, err
		}
	}
}

func (k *KV) bindOnce(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := k.js.KeyValue(ctx, k.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = k.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      k.cfg.Bucket,
			Description: "sbps-marshal fleet LUN registry: name.<projection> -> index, idx.<n> -> owner",
			History:     uint8(min(k.cfg.History, 64)),
			Replicas:    k.cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) { // another agent created it first
			kv, err = k.js.KeyValue(ctx, k.cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("binding KV bucket %s: %w", k.cfg.Bucket, err)
	}
	k.kv = kv
	return kv, nil
}

// getPointer returns name's pointer, or index -1 when absent; rev is the
// pointer's revision (0 when absent: create-if-absent).
func getPointer(ctx context.Context, kv jetstream.KeyValue, name string) (index int, rev uint64, err error) {
	e, err := kv.Get(ctx, nameKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return -1, 0, nil
	}
	if err != nil {
		return -1, 0, err
	}
	var p pointer
	if err := json.Unmarshal(e.Value(), &p); err != nil || checkIndex(p.Index) != nil {
		// A damaged pointer is treated as stale; it is overwritten by CAS.
		return -1, e.Revision(), nil
	}
	return p.Index, e.Revision(), nil
}

// getIdx reads idx.<n> and refreshes the cache. ok is false when absent.
func (k *KV) getIdx(ctx context.Context, kv jetstream.KeyValue, n int) (s slot, ok bool, err error) {
	e, err := kv.Get(ctx, idxKey(n))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		k.forget(n)
		return slot{}, false, nil
	}
	if err != nil {
		return slot{}, false, err
	}
	var r idxRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return slot{}, false, fmt.Errorf("idx.%d holds malformed JSON (%w); inspect it with `nats kv get %s idx.%d`", n, err, k.cfg.Bucket, n)
	}
	s = slot{rec: r, rev: e.Revision()}
	k.remember(n, s)
	return s, true, nil
}

func (k *KV) remember(n int, s slot) {
	k.mu.Lock()
	k.cache[n] = s
	k.mu.Unlock()
}

func (k *KV) forget(n int) {
	k.mu.Lock()
	delete(k.cache, n)
	k.mu.Unlock()
}

// writeIdx stores rec at idx.<n>: create-if-absent when rev is 0, else
// compare-and-swap on rev.
func (k *KV) writeIdx(ctx context.Context, kv jetstream.KeyValue, n int, rec idxRecord, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = kv.Create(ctx, idxKey(n), b)
	} else {
		nrev, err = kv.Update(ctx, idxKey(n), b, rev)
	}
	if err == nil {
		k.remember(n, slot{rec: rec, rev: nrev})
	}
	return nrev, err
}

// lost reports whether err is a definite loss of a create-if-absent or
// compare-and-swap: the write did not happen and someone else's did.
func lost(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// load replaces the cache with a snapshot of every idx.<n> key.
func (k *KV) load(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.Watch(ctx, "idx.>")
	if err != nil {
		return err
	}
	defer w.Stop()
	fresh := map[int]slot{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed before the snapshot ended")
			}
			if e == nil { // end of the initial values
				k.mu.Lock()
				k.cache, k.loaded = fresh, time.Now()
				k.mu.Unlock()
				return nil
			}
			n, err := strconv.Atoi(strings.TrimPrefix(e.Key(), "idx."))
			if err != nil || checkIndex(n) != nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(fresh, n)
				continue
			}
			var r idxRecord
			if json.Unmarshal(e.Value(), &r) != nil {
				r = idxRecord{Name: "\x00malformed"} // never free, never ours
			}
			fresh[n] = slot{rec: r, rev: e.Revision()}
		}
	}
}

func (k *KV) ensureLoaded(ctx context.Context, kv jetstream.KeyValue) error {
	k.mu.Lock()
	stale := k.loaded.IsZero() || time.Since(k.loaded) > k.cfg.CacheTTL
	k.mu.Unlock()
	if stale {
		return k.load(ctx, kv)
	}
	return nil
}

// candidate returns the lowest index, not in skip, that the cache shows
// absent, released longer ago than the quarantine, or claimed by name
// itself (a claim left behind by a crash, or a racing agent's claim for the
// same name). -1 when there is none.
func (k *KV) candidate(name string, now time.Time, skip map[int]int) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	for n := 0; n <= k.max; n++ {
		if skip[n] >= maxTries {
			continue
		}
		s, ok := k.cache[n]
		if !ok || s.rec.Name == name || s.rec.expired(now, k.cfg.Quarantine) {
			return n
		}
	}
	return -1
}

// maxTries bounds the write attempts on one index within one claim.
const maxTries = 3

// claim takes an index for name: want first when it is claimable (Adopt),
// else the lowest claimable. It returns the index and the revision of the
// claim.
func (k *KV) claim(ctx context.Context, kv jetstream.KeyValue, name string, meta Meta, want int) (int, uint64, error) {
	if err := k.ensureLoaded(ctx, kv); err != nil {
		return 0, 0, err
	}
	tries := map[int]int{}
	for _, i := range meta.InUse { // used in the node's TPG: never a candidate
		tries[i] = maxTries
	}
	reloaded := false
	for {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		now := k.now()
		n := k.nextIndex(name, want, now, tries)
		if n < 0 {
			if reloaded {
				return 0, 0, ErrExhausted
			}
			if err := k.load(ctx, kv); err != nil {
				return 0, 0, err
			}
			reloaded, tries = true, map[int]int{}
			continue
		}
		tries[n]++
		rec, rev, free := k.claimRecord(name, meta, n, now)
		if !free { // held by another image (only reached for want)
			tries[n] = maxTries
			continue
		}
		nrev, err := k.writeIdx(ctx, kv, n, rec, rev)
		if err == nil {
			return n, nrev, nil
		}
		if !lost(err) {
			return 0, 0, err
		}
		// Someone else wrote idx.<n> first: learn what they wrote and
		// re-evaluate n with the fresh record.
		if _, _, err := k.getIdx(ctx, kv, n); err != nil {
			return 0, 0, err
		}
	}
}

// nextIndex is the index to try next: want while it has tries left (Adopt),
// else the lowest claimable one; -1 when there is none.
func (k *KV) nextIndex(name string, want int, now time.Time, tries map[int]int) int {
	if want >= 0 && want <= k.max && tries[want] < maxTries {
		return want
	}
	return k.candidate(name, now, tries)
}

// claimRecord builds the idx.<n> record that claims n for name, and the
// revision to write it at (0: create-if-absent), from the cached claim.
// free is false when another image holds n.
func (k *KV) claimRecord(name string, meta Meta, n int, now time.Time) (rec idxRecord, rev uint64, free bool) {
	k.mu.Lock()
	s, cached := k.cache[n]
	k.mu.Unlock()
	rec = idxRecord{Name: name, Entry: Entry{Index: n, Image: meta.Image, FirstSeen: now, Node: k.cfg.Node}}
	switch {
	case !cached:
		return rec, 0, true
	case s.rec.Name == name: // our own claim: take it over, keep its history
		rec.FirstSeen = s.rec.FirstSeen
		if rec.Image == "" {
			rec.Image = s.rec.Image
		}
		return rec, s.rev, true
	case s.rec.expired(now, k.cfg.Quarantine): // quarantine over: reuse
		return rec, s.rev, true
	default:
		return rec, 0, false
	}
}

// allocate is Index (want < 0) and Adopt (want = the offered index).
func (k *KV) allocate(ctx context.Context, name string, meta Meta, want int) (int, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	kv, err := k.bucket(ctx)
	if err != nil {
		return 0, k.wrap("allocating", name, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, k.wrap("allocating", name, err)
		}
		// 1. The name already has a valid index: use it, reactivating it
		// if it was released (within or after quarantine, as long as
		// nobody took it).
		p, prev, err := getPointer(ctx, kv, name)
		if err != nil {
			return 0, k.wrap("allocating", name, err)
		}
		if p >= 0 {
			s, ok, err := k.getIdx(ctx, kv, p)
			if err != nil {
				return 0, k.wrap("allocating", name, err)
			}
			if ok && s.rec.Name == name {
				err := k.reactivate(ctx, kv, p, s, meta)
				if err == nil {
					return p, nil
				}
				if lost(err) {
					continue
				}
				return 0, k.wrap("reactivating", name, err)
			}
			// Stale pointer: its index went to another image after the
			// quarantine. Allocate anew and move the pointer by CAS.
		}
		// 2. Claim an index. 3. Publish the pointer to it.
		n, published, err := k.claimAndPublish(ctx, kv, name, meta, want, prev)
		if err != nil || published {
			return n, err
		}
	}
}

// reactivate clears the release of name's own claim s on index p, taking
// the node and (when given) the image of meta. Nothing is written when s is
// not released.
func (k *KV) reactivate(ctx context.Context, kv jetstream.KeyValue, p int, s slot, meta Meta) error {
	if s.rec.ReleasedAt == nil {
		return nil
	}
	rec := s.rec
	rec.ReleasedAt = nil
	rec.Node = k.cfg.Node
	if meta.Image != "" {
		rec.Image = meta.Image
	}
	_, err := k.writeIdx(ctx, kv, p, rec, s.rev)
	return err
}

// claimAndPublish claims an index for name and points name.<name> at it
// (prev is the pointer's revision, 0 when there is none). published is
// false, with no error, when another agent published a pointer first: the
// caller starts over.
func (k *KV) claimAndPublish(ctx context.Context, kv jetstream.KeyValue, name string, meta Meta, want int, prev uint64) (n int, published bool, err error) {
	n, crev, err := k.claim(ctx, kv, name, meta, want)
	if errors.Is(err, ErrExhausted) {
		return 0, false, err
	}
	if err != nil {
		return 0, false, k.wrap("allocating", name, err)
	}
	err = publishPointer(ctx, kv, name, n, prev)
	if err == nil {
		return n, true, nil
	}
	if !lost(err) {
		// Unknown outcome: keep the claim (at worst an index is
		// parked for this name, and it is reused on its next
		// allocation).
		return 0, false, k.wrap("publishing index of", name, err)
	}
	k.rollBackClaim(ctx, kv, name, n, crev)
	return 0, false, nil
}

// publishPointer writes name.<name> = n: create-if-absent when prev is 0,
// else a CAS over the stale pointer at revision prev. Losing means another
// agent published first.
func publishPointer(ctx context.Context, kv jetstream.KeyValue, name string, n int, prev uint64) error {
	b, _ := json.Marshal(pointer{Index: n})
	var err error
	if prev == 0 {
		_, err = kv.Create(ctx, nameKey(name), b)
	} else {
		_, err = kv.Update(ctx, nameKey(name), b, prev)
	}
	return err
}

// rollBackClaim deletes our claim on n after losing the pointer race, unless
// the winner's pointer names the same index (a racing agent joined our
// claim). The delete is a CAS on our claim's revision crev, so it can never
// remove a later write.
func (k *KV) rollBackClaim(ctx context.Context, kv jetstream.KeyValue, name string, n int, crev uint64) {
	if cur, _, err := getPointer(ctx, kv, name); err == nil && cur != n {
		if err := kv.Delete(ctx, idxKey(n), jetstream.LastRevision(crev)); err == nil {
			k.forget(n)
		}
	}
}

// Index implements Registry.
func (k *KV) Index(ctx context.Context, name string, meta Meta) (int, error) {
	return k.allocate(ctx, name, meta, -1)
}

// Adopt implements Registry.
func (k *KV) Adopt(ctx context.Context, name string, index int, meta Meta) (int, error) {
	if err := checkIndex(index); err != nil {
		return 0, err
	}
	return k.allocate(ctx, name, meta, index)
}

// Release implements Registry.
func (k *KV) Release(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	kv, err := k.bucket(ctx)
	if err != nil {
		return k.wrap("releasing", name, err)
	}
	for {
		p, _, err := getPointer(ctx, kv, name)
		if err != nil {
			return k.wrap("releasing", name, err)
		}
		if p < 0 {
			return nil
		}
		s, ok, err := k.getIdx(ctx, kv, p)
		if err != nil {
			return k.wrap("releasing", name, err)
		}
		if !ok || s.rec.Name != name || s.rec.ReleasedAt != nil {
			return nil
		}
		rec := s.rec
		rec.ReleasedAt = ptime(k.now())
		_, err = k.writeIdx(ctx, kv, p, rec, s.rev)
		if err == nil {
			return nil
		}
		if !lost(err) {
			return k.wrap("releasing", name, err)
		}
	}
}

// Lookup implements Registry.
func (k *KV) Lookup(ctx context.Context, name string) (Entry, bool, error) {
	if err := checkName(name); err != nil {
		return Entry{}, false, err
	}
	kv, err := k.bucket(ctx)
	if err != nil {
		return Entry{}, false, k.wrap("looking up", name, err)
	}
	p, _, err := getPointer(ctx, kv, name)
	if err != nil || p < 0 {
		return Entry{}, false, k.wrapIf("looking up", name, err)
	}
	s, ok, err := k.getIdx(ctx, kv, p)
	if err != nil || !ok || s.rec.Name != name {
		return Entry{}, false, k.wrapIf("looking up", name, err)
	}
	return s.rec.Entry, true, nil
}

func (k *KV) wrapIf(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return k.wrap(op, name, err)
}

// All implements Registry. It returns the entries whose name pointer and
// index claim agree; a claim left behind by a crash between claiming and
// publishing is not listed (it is taken over by that name's next
// allocation).
func (k *KV) All(ctx context.Context) (map[string]Entry, error) {
	kv, err := k.bucket(ctx)
	if err != nil {
		return nil, k.wrap("listing", "all", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, k.wrap("listing", "all", err)
	}
	defer w.Stop()
	ptrs := map[string]int{}
	claims := map[int]idxRecord{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, k.wrap("listing", "all", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, k.wrap("listing", "all", errors.New("watcher closed early"))
			}
			if e == nil {
				done = true
				break
			}
			switch key := e.Key(); {
			case strings.HasPrefix(key, "name."):
				var p pointer
				if json.Unmarshal(e.Value(), &p) == nil {
					ptrs[strings.TrimPrefix(key, "name.")] = p.Index
				}
			case strings.HasPrefix(key, "idx."):
				n, err := strconv.Atoi(strings.TrimPrefix(key, "idx."))
				var r idxRecord
				if err == nil && json.Unmarshal(e.Value(), &r) == nil {
					claims[n] = r
				}
			}
		}
	}
	out := make(map[string]Entry, len(ptrs))
	for name, n := range ptrs {
		if r, ok := claims[n]; ok && r.Name == name {
			out[name] = r.Entry
		}
	}
	return out, nil
}
