package projector

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/ims"
)

// Work is what one pass must do.
type Work struct {
	Full    bool    // list S3 and IMS afresh
	Trigger string  // what asked for the pass, for the logs
	Changes Changes // what an event pass reads again (nothing: repair LIO only)
}

// WorkFor maps a batch of events to the work it asks for: the one place
// that knows what each kind of event means. ok=false means nothing to do:
// the watcher reporting a save of the reconciler's own, or S3 keys no
// projection uses.
func (r *Reconciler) WorkFor(batch []events.Event) (w Work, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Trigger = describe(batch)
	drift := false
	for _, ev := range batch {
		switch ev.Kind {
		case events.Resync:
			w.Full = true
		case events.S3Object:
			r.s3Work(&w.Changes, ev.S3.Key)
		case events.IMSImage:
			w.Changes.Images = appendNew(w.Changes.Images, ev.IMS.ID)
		case events.LIOChanged:
			drift = drift || !r.ownSave(ev.Digest)
		}
	}
	c := w.Changes
	return w, w.Full || drift || len(c.PEKeys)+len(c.Images)+len(c.Refresh) > 0
}

// s3Work adds what an S3 notification for key asks for: a PE key is read
// again; IMS writing <id>/manifest.json refreshes that image and those
// using the manifest (never a reason to delete); any other key re-reads
// the images whose rootfs it is.
func (r *Reconciler) s3Work(c *Changes, key string) {
	if strings.HasPrefix(key, r.Inventory.Layout.PEPrefix) {
		c.PEKeys = appendNew(c.PEKeys, key)
		return
	}
	using := r.imagesUsing(key)
	if id, ok := ims.ManifestKeyID(key); ok {
		c.Refresh = appendNew(c.Refresh, id)
		for _, id := range using {
			c.Refresh = appendNew(c.Refresh, id)
		}
		return
	}
	for _, id := range using {
		c.Images = appendNew(c.Images, id)
	}
}

// imagesUsing returns the IMS images whose manifest or rootfs is the S3
// key, as of the latest pass.
func (r *Reconciler) imagesUsing(key string) []string {
	if r.last == nil {
		return nil
	}
	return r.last.ImagesByKey[key]
}

// noteOwn records the digest of saveconfig.json content a pass read or
// wrote: LIO's state the reconciler has reconciled.
func (r *Reconciler) noteOwn(digest string) {
	if digest != "" {
		r.own = digest
	}
}

// ownSave reports whether the watcher's report of content with digest
// needs no repair. The watcher reads the file some time after it changes:
// by the time its event is handled, a later pass may have saved again and
// the content it reported (an earlier save of the reconciler's own) is
// gone; only what is on disk now can need a repair.
func (r *Reconciler) ownSave(digest string) bool {
	if r.own == "" {
		return false
	}
	if digest == r.own {
		return true
	}
	if r.Saved == nil {
		return false
	}
	_, now, err := r.Saved.Load()
	return err == nil && now == r.own
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// describe names what caused a pass: the first event that asks for one
// (an outside LIO change only when nothing else does), and how many more.
func describe(batch []events.Event) string {
	if len(batch) == 0 {
		return ""
	}
	lead := batch[0]
	for _, ev := range batch {
		if ev.Kind != events.LIOChanged {
			lead = ev
			break
		}
	}
	if len(batch) == 1 {
		return lead.String()
	}
	return fmt.Sprintf("%s and %d more event(s)", lead.String(), len(batch)-1)
}
