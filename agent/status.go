package agent

import (
	"context"
	"fmt"

	"github.com/sbps-marshal/sbps-marshal/projector"
)

// Unknown is the state of a managed backstore in LIOStatus: LIO holds it,
// but whether it is still desired cannot be told (S3 could not be read).
// The agent never removes a projection on such a pass.
const Unknown projector.State = "unknown"

// LIOStatus is the status view from what LIO holds alone (saveconfig.json),
// for when the desired state cannot be computed: every managed backstore is
// Unknown with why as its reason, every other one Foreign, each with its
// LUN, WWID and file.
func (a *Agent) LIOStatus(ctx context.Context, why error) ([]projector.Entry, error) {
	actual, err := projector.ReadSaved(ctx, a.cfg.LIOSaveFile)
	if err != nil {
		return nil, fmt.Errorf("reading what LIO holds (%s): %w", a.cfg.LIOSaveFile, err)
	}
	entries := projector.StatusOf(&projector.Desired{}, &projector.Plan{}, actual, a.Reconciler.Inventory.Layout, a.cfg.TargetIQN, 1)
	for i := range entries {
		if entries[i].State == projector.Stale { // managed, and nothing is known to be desired
			entries[i].State, entries[i].Reason = Unknown, "desired state unknown, LIO's projection kept: "+why.Error()
		}
	}
	return entries, nil
}
