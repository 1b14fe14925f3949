package projector

import (
	"context"
	"errors"
	"fmt"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Changes is what a batch of events asks an incremental pass to read again.
type Changes struct {
	// PEKeys are S3 keys under PE_PREFIX: one HEAD each.
	PEKeys []string
	// Images are IMS images to read again with one GET each (IMS change
	// events, S3 events on a rootfs an image uses); an image IMS no longer
	// has is dropped from the desired state.
	Images []string
	// Refresh are IMS images to read again that may only be added or
	// updated, never removed: the images an S3 notification for
	// "<id>/manifest.json" names (IMS wrote a manifest, BOS may have tagged
	// the image already). A 404, an untagged or unreadable image keeps
	// whatever the previous pass had; removals are left to the full resync
	// and to IMS change events.
	Refresh []string
}

func (c Changes) empty() bool { return len(c.PEKeys)+len(c.Images)+len(c.Refresh) == 0 }

// SyncChanges is SyncKeys with Changes: PE keys and images are read again
// as SyncKeys does, then the images in Refresh are added (Inventory.Refresh).
// With no previous full pass it runs a full one.
func (r *Reconciler) SyncChanges(ctx context.Context, o SyncOptions, c Changes) (*Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return r.pass(ctx, o, nil)
	}
	return r.pass(ctx, o, func(before *lio.Config) (*Desired, error) {
		d := r.last
		if len(c.PEKeys)+len(c.Images) > 0 {
			var err error
			if d, err = r.Inventory.Update(ctx, d, before, c.PEKeys, c.Images); err != nil {
				return nil, err
			}
		}
		return r.Inventory.Refresh(ctx, d, before, c.Refresh)
	})
}

// Refresh returns a copy of d in which the given IMS images are read again
// (one IMS GET each, a cached manifest and a HEAD) and added: every
// projection, pending image and held backstore d had is still there, so a
// refresh never makes a pass delete anything. An image IMS answers 404 for
// is left as d had it, whoever answered the 404. An image that no longer
// qualifies (untagged, link gone) is left as d had it too; the full resync
// removes it. An error means IMS or S3 could not say; d stands.
func (inv *Inventory) Refresh(ctx context.Context, d *Desired, actual *lio.Config, ids []string) (*Desired, error) {
	if inv.Images == nil || len(ids) == 0 {
		return d, nil
	}
	served := servedScan(actual, inv.Layout)
	if len(ids) > 16 {
		served = servedFiles(actual, inv.Layout)
	}
	n := d
	for _, id := range ids {
		img, err := inv.Images.Get(ctx, id)
		if errors.Is(err, ims.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("IMS image %s (named by its manifest's S3 notification): %w", id, err)
		}
		if ok, _ := ims.Projectable(img, inv.Tagging); !ok {
			continue
		}
		next := n.clone()
		next.forgetImage(id)
		if err := inv.addImage(ctx, next, served, img, inv.fromHead); err != nil {
			return nil, fmt.Errorf("IMS image %s (named by its manifest's S3 notification): %w", id, err)
		}
		keepAll(next, n)
		n = next
	}
	return n, nil
}

// keepAll puts back into n every projection, pending image and held
// backstore that prev had and n lost, as prev had it.
func keepAll(n, prev *Desired) {
	for name, p := range prev.Projections {
		if _, ok := n.Projections[name]; !ok {
			if _, pending := n.Pending[name]; !pending {
				n.Projections[name] = p
			}
		}
	}
	for name, p := range prev.Pending {
		if _, ok := n.Pending[name]; !ok {
			if _, projected := n.Projections[name]; !projected {
				n.Pending[name] = p
			}
		}
	}
	for name, p := range prev.Unconfirmed {
		if _, ok := n.Unconfirmed[name]; !ok {
			if n.Unconfirmed == nil {
				n.Unconfirmed = map[string]Problem{}
			}
			n.Unconfirmed[name] = p
		}
	}
}
