package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/ims"
)

// DefaultPollInterval is how often the IMS poller lists IMS
// (BRIDGE_POLL_INTERVAL's default). BOS tags an image with an IMS PATCH,
// which makes no S3 event, so a tag reaches the agents at the next poll:
// on average half the interval later, at most one interval. One bridge
// polls for the whole cluster: 5 s is 12 listings a minute. At 1,000 images
// one listing is about 320 KB and 20-40 ms of client time
// (BenchmarkIMSListing1000), so 12 x 320 KB = 3.8 MB (64 KB/s) and under
// 0.5 s of client CPU a minute; the old agent, every worker listing every
// 180 s, cost IMS N/3 listings a minute on N workers.
const DefaultPollInterval = 5 * time.Second

// Images is what the poller needs of IMS; *ims.Client has it.
type Images interface {
	// List returns every image record; ids of records that did not decode
	// are in Listing.Errors.
	List(ctx context.Context) (ims.Listing, error)
	// Get returns one image record, an error matching ims.ErrNotFound when
	// it is gone. The poller confirms every delete with it.
	Get(ctx context.Context, id string) (ims.Image, error)
}

var _ Images = (*ims.Client)(nil)

// IMSConfig configures an IMSPoller.
type IMSConfig struct {
	// Interval is the time between two polls (BRIDGE_POLL_INTERVAL).
	// Defaults to DefaultPollInterval (5s).
	Interval time.Duration
	// Subject is where events are published (NATS_IMS_SUBJECT). Defaults
	// to events.DefaultIMSSubject.
	Subject string
	// Stream is the JetStream stream holding Subject (NATS_STREAM). When
	// set, every event is published with Nats-Msg-Id = Event.DedupID() and
	// counts as published once the stream acknowledged it. Empty: core
	// NATS publish and flush.
	Stream string
	// Source names the publisher in every event. Defaults to
	// "sbps-marshal bridge ims".
	Source string
	// PublishTimeout bounds one publish. Defaults to DefaultPublishTimeout.
	PublishTimeout time.Duration
	// Now is the clock for Event.Time. Defaults to time.Now.
	Now func() time.Time
}

// IMSStats are the poller's counters since it was built.
type IMSStats struct {
	Polls           uint64 // polls begun
	ListErrors      uint64 // polls whose listing failed as a whole (no events)
	Partial         uint64 // polls with a listing known to be incomplete
	Created         uint64 // events published, by change
	Changed         uint64
	Deleted         uint64
	Duplicates      uint64 // events the stream already held (another bridge, a restart)
	DeletesDeferred uint64 // images missing from a listing, not (yet) published as deleted
	PublishErrors   uint64 // polls stopped because NATS did not take an event
	StoreErrors     uint64 // snapshot loads or saves that failed
	Images          uint64 // images in the snapshot after the last poll
}

// PollResult says what one poll did.
type PollResult struct {
	Listed   int  // image records that decoded
	Baseline bool // first run: the snapshot was recorded, nothing published
	Partial  bool // the listing was incomplete; deletes were held back
	Created  int  // events published, by change
	Changed  int
	Deleted  int
	Deferred int // missing images not published as deleted
}

// IMSPoller polls IMS and publishes one imsevent.Event per image record
// created, changed or deleted since the previous poll. See the package
// documentation for its guarantees.
type IMSPoller struct {
	cfg    IMSConfig
	images Images
	store  Store
	pub    *publisher
	log    *slog.Logger

	mu      sync.Mutex // serialises polls; guards the fields below
	loaded  bool
	haveSn  bool                  // a snapshot exists (not the first run)
	snap    map[string]ImageState // by lower-case id
	unsaved map[string]bool       // ids changed in snap since the last successful Save

	polls, listErrors, partial, created, changed, deleted, duplicates,
	deferred, publishErrors, storeErrors, nimages atomic.Uint64
}

// NewIMSPoller returns a poller listing images and publishing through nc,
// with its snapshot in store. It does not touch the network.
func NewIMSPoller(nc *nats.Conn, images Images, store Store, cfg IMSConfig, log *slog.Logger) (*IMSPoller, error) {
	if images == nil || store == nil {
		return nil, errors.New("bridge: the IMS poller needs an IMS client and a snapshot store")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPollInterval
	}
	if cfg.Subject == "" {
		cfg.Subject = events.DefaultIMSSubject
	}
	if cfg.Source == "" {
		cfg.Source = "sbps-marshal bridge ims"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pub, err := newPublisher(nc, cfg.Stream, cfg.PublishTimeout)
	if err != nil {
		return nil, err
	}
	cfg.PublishTimeout = pub.timeout
	return &IMSPoller{cfg: cfg, images: images, store: store, pub: pub, log: log.With("component", "bridge ims"),
		unsaved: map[string]bool{}}, nil
}

// Stats returns the counters so far.
func (p *IMSPoller) Stats() IMSStats {
	return IMSStats{
		Polls: p.polls.Load(), ListErrors: p.listErrors.Load(), Partial: p.partial.Load(),
		Created: p.created.Load(), Changed: p.changed.Load(), Deleted: p.deleted.Load(),
		Duplicates: p.duplicates.Load(), DeletesDeferred: p.deferred.Load(),
		PublishErrors: p.publishErrors.Load(), StoreErrors: p.storeErrors.Load(), Images: p.nimages.Load(),
	}
}

// Start polls at once and then every Interval until ctx ends, then returns
// nil. A failed poll is logged and counted; the next one retries.
func (p *IMSPoller) Start(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		res, err := p.PollOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			p.log.Warn("IMS poll failed; retrying at the next poll", "err", err)
		case res.Created+res.Changed+res.Deleted > 0 || res.Baseline || res.Partial:
			p.log.Info("IMS poll", "images", res.Listed, "created", res.Created, "changed", res.Changed,
				"deleted", res.Deleted, "deferred_deletes", res.Deferred, "baseline", res.Baseline, "partial", res.Partial)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type change struct {
	ev    imsevent.Event
	state *ImageState // nil for a deletion
}

// PollOnce lists IMS once, publishes the changes since the previous poll in
// order (creations and changes in listing order, then deletions by id) and
// saves the snapshot. It stops at the first event NATS does not take; the
// events not published then come again at the next poll. Polls are
// serialised.
func (p *IMSPoller) PollOnce(ctx context.Context) (PollResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls.Add(1)
	var res PollResult
	if err := p.loadSnapshotLocked(ctx); err != nil {
		return res, err
	}
	listing, err := p.images.List(ctx)
	if err != nil {
		p.listErrors.Add(1)
		return res, fmt.Errorf("bridge: listing IMS images (nothing published; check IMS and the API gateway): %w", err)
	}
	l := indexListing(listing)
	res.Listed = len(l.order)
	if len(listing.Errors) > 0 {
		res.Partial = true
		p.log.Warn("IMS listing has records that do not decode; no deletes this poll for them", "bad_records", len(listing.Errors), "err", listing.Errors[0])
	}

	if !p.haveSn {
		if err := p.recordBaselineLocked(ctx, l); err != nil {
			return res, err
		}
		res.Baseline = true
		return res, nil
	}

	now := p.cfg.Now().UTC()
	changes := p.upsertsLocked(l, now)
	confirmed, deferred := p.confirmDeletes(ctx, p.missingLocked(l.cur), l.unknown, l.anonymous)
	res.Deferred = deferred
	if deferred > 0 {
		res.Partial = true
	}
	for _, id := range confirmed {
		changes = append(changes, change{ev: imsevent.Event{ID: id, Change: imsevent.Deleted, Digest: p.snap[id].Digest, Time: now, Source: p.cfg.Source}})
	}
	if res.Partial {
		p.partial.Add(1)
	}

	perr := p.publishChangesLocked(ctx, changes, &res)
	serr := p.save(ctx)
	return res, errors.Join(perr, serr)
}

// loadSnapshotLocked reads the snapshot from the store on the first poll
// only; later polls work on the copy in memory.
func (p *IMSPoller) loadSnapshotLocked(ctx context.Context) error {
	if p.loaded {
		return nil
	}
	snap, found, err := p.store.Load(ctx)
	if err != nil {
		p.storeErrors.Add(1)
		return err
	}
	if snap == nil {
		snap = map[string]ImageState{}
	}
	p.snap, p.haveSn, p.loaded = snap, found, true
	p.nimages.Store(uint64(len(snap)))
	return nil
}

// listed is one IMS listing indexed by lower-case id.
type listed struct {
	cur       map[string]ImageState
	imgs      map[string]ims.Image
	order     []string        // ids in listing order, the first of duplicates only
	unknown   map[string]bool // ids of records that did not decode
	anonymous bool            // a record did not decode and has no valid id
}

// indexListing keys the listing by lower-case id, keeping the first record
// of an id, and notes which records did not decode.
func indexListing(listing ims.Listing) listed {
	l := listed{cur: map[string]ImageState{}, imgs: map[string]ims.Image{}, order: []string{}, unknown: map[string]bool{}}
	for _, img := range listing.Images {
		id := strings.ToLower(img.ID)
		if _, dup := l.cur[id]; dup {
			continue
		}
		l.cur[id] = stateOf(img)
		l.imgs[id] = img
		l.order = append(l.order, id)
	}
	for _, re := range listing.Errors {
		if re.ID == "" || ims.ValidID(re.ID) != nil {
			l.anonymous = true
			continue
		}
		l.unknown[strings.ToLower(re.ID)] = true
	}
	return l
}

// recordBaselineLocked saves the first listing as the snapshot without
// publishing: on the first run there is no previous poll to compare with.
func (p *IMSPoller) recordBaselineLocked(ctx context.Context, l listed) error {
	for _, id := range l.order {
		p.snap[id] = l.cur[id]
		p.unsaved[id] = true
	}
	if err := p.save(ctx); err != nil {
		return err
	}
	p.haveSn = true
	p.log.Info("first run: IMS snapshot recorded, nothing published", "images", len(l.order))
	return nil
}

// upsertsLocked returns a created or changed event, in listing order, for
// every listed image that is new or differs from the snapshot.
func (p *IMSPoller) upsertsLocked(l listed, now time.Time) []change {
	var changes []change
	for _, id := range l.order {
		st := l.cur[id]
		prev, had := p.snap[id]
		ev := imsevent.Event{ID: id, ETag: etagOf(l.imgs[id]), Digest: st.Digest, Time: now, Source: p.cfg.Source}
		switch {
		case !had:
			ev.Change = imsevent.Created
		case prev != st:
			ev.Change, ev.Fields = imsevent.Changed, fieldsChanged(prev, st)
			if len(ev.Fields) == 0 { // only the digest differs: an older bridge's format
				ev.Fields = []string{imsevent.FieldLink}
			}
		default:
			continue
		}
		changes = append(changes, change{ev: ev, state: &st})
	}
	return changes
}

// missingLocked returns, sorted, the ids in the snapshot that are not in cur.
func (p *IMSPoller) missingLocked(cur map[string]ImageState) []string {
	var missing []string
	for id := range p.snap {
		if _, ok := cur[id]; !ok {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	return missing
}

// publishChangesLocked publishes changes in order, counting each in res and
// applying it to the snapshot; it stops at the first event NATS does not take.
func (p *IMSPoller) publishChangesLocked(ctx context.Context, changes []change, res *PollResult) error {
	for _, c := range changes {
		if err := p.publish(ctx, c.ev); err != nil {
			p.publishErrors.Add(1)
			return err
		}
		p.countPublished(c.ev.Change, res)
		if c.state != nil {
			p.snap[c.ev.ID] = *c.state
		} else {
			delete(p.snap, c.ev.ID)
		}
		p.unsaved[c.ev.ID] = true
	}
	return nil
}

// countPublished adds one published event of kind ch to res and the stats.
func (p *IMSPoller) countPublished(ch imsevent.Change, res *PollResult) {
	switch ch {
	case imsevent.Created:
		res.Created++
		p.created.Add(1)
	case imsevent.Changed:
		res.Changed++
		p.changed.Add(1)
	case imsevent.Deleted:
		res.Deleted++
		p.deleted.Add(1)
	}
}

// confirmDeletes decides which images missing from the listing are gone:
// none when the listing had records without a readable id; never those
// whose record did not decode; the others only when IMS answers 404 for
// them. An image IMS still has means the listing was incomplete: every
// remaining delete waits for a later poll. So does any error of Get.
func (p *IMSPoller) confirmDeletes(ctx context.Context, missing []string, unknown map[string]bool, anonymous bool) (gone []string, deferred int) {
	defer func() { p.deferred.Add(uint64(deferred)) }()
	if anonymous {
		return nil, len(missing)
	}
	for _, id := range missing {
		if unknown[id] {
			deferred++
			continue
		}
		_, err := p.images.Get(ctx, id)
		switch {
		case errors.Is(err, ims.ErrNotFound):
			gone = append(gone, id)
			continue
		case err == nil:
			p.log.Warn("IMS listing left out an image that still exists; holding back deletes until a complete listing", "image", id)
		default:
			p.log.Warn("cannot confirm that an image is gone; holding back deletes", "image", id, "err", err)
		}
		return nil, len(missing)
	}
	return gone, deferred
}

func (p *IMSPoller) publish(ctx context.Context, ev imsevent.Event) error {
	data, err := imsevent.Encode(ev)
	var fe *imsevent.FieldError
	if errors.As(err, &fe) && fe.Field == "etag" {
		ev.ETag = "" // an etag the schema cannot carry; the agent re-reads the image anyway
		data, err = imsevent.Encode(ev)
	}
	if err != nil {
		return fmt.Errorf("bridge: encoding the %s event of image %s: %w", ev.Change, ev.ID, err)
	}
	dup, err := p.pub.publish(ctx, p.cfg.Subject, data, ev.DedupID())
	if err != nil {
		return fmt.Errorf("bridge: publishing the %s event of image %s (it is published again at the next poll): %w", ev.Change, ev.ID, err)
	}
	if dup {
		p.duplicates.Add(1)
	}
	p.log.Debug("published", "image", ev.ID, "change", ev.Change, "fields", ev.Fields, "duplicate", dup)
	return nil
}

// save writes the unsaved part of the snapshot; on failure it is kept for
// the next poll.
func (p *IMSPoller) save(ctx context.Context) error {
	p.nimages.Store(uint64(len(p.snap)))
	if len(p.unsaved) == 0 && p.haveSn {
		return nil
	}
	changed := make([]string, 0, len(p.unsaved))
	for id := range p.unsaved {
		changed = append(changed, id)
	}
	slices.Sort(changed)
	if err := p.store.Save(ctx, p.snap, changed); err != nil {
		p.storeErrors.Add(1)
		return fmt.Errorf("bridge: saving the IMS snapshot (a restarted bridge may publish these changes again; harmless): %w", err)
	}
	clear(p.unsaved)
	return nil
}

// stateOf digests the fields of img the poller watches.
func stateOf(img ims.Image) ImageState {
	st := ImageState{
		Name: imsevent.Digest(imsevent.FieldName, img.Name),
		Arch: imsevent.Digest(imsevent.FieldArch, img.Arch),
	}
	if img.Link == nil {
		st.Link = imsevent.Digest(imsevent.FieldLink, "null")
	} else {
		st.Link = imsevent.Digest(imsevent.FieldLink, "set", img.Link.Path, img.Link.Etag, img.Link.Type)
	}
	if img.Metadata == nil {
		st.Metadata = imsevent.Digest(imsevent.FieldMetadata, "absent")
	} else {
		parts := []string{imsevent.FieldMetadata, "present"}
		keys := make([]string, 0, len(img.Metadata))
		for k := range img.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			parts = append(parts, k, img.Metadata[k])
		}
		st.Metadata = imsevent.Digest(parts...)
	}
	st.Digest = imsevent.Digest(st.Name, st.Arch, st.Link, st.Metadata)
	return st
}

// fieldsChanged names the fields that differ, in a fixed order.
func fieldsChanged(prev, cur ImageState) []string {
	var f []string
	if prev.Link != cur.Link {
		f = append(f, imsevent.FieldLink)
	}
	if prev.Metadata != cur.Metadata {
		f = append(f, imsevent.FieldMetadata)
	}
	if prev.Name != cur.Name {
		f = append(f, imsevent.FieldName)
	}
	if prev.Arch != cur.Arch {
		f = append(f, imsevent.FieldArch)
	}
	return f
}

// etagOf is the link etag of img without quotes, "" without a link.
func etagOf(img ims.Image) string {
	if img.Link == nil {
		return ""
	}
	return strings.Trim(img.Link.Etag, `"`)
}
