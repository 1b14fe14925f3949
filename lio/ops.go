package lio

import (
	"context"
	"fmt"
)

// OpKind names one change to LIO.
type OpKind string

const (
	// CreateBackstore creates a fileio backstore over an existing file:
	// name, absolute path, wwn; never a size; write_back=false.
	CreateBackstore OpKind = "create-backstore"
	// DeleteBackstore deletes a fileio backstore; LIO also removes its LUNs.
	DeleteBackstore OpKind = "delete-backstore"
	// CreateLUN maps a fileio backstore into a TPG with add_mapped_luns=false,
	// at LUN index Op.LUN or, when Op.LUN is AutoLUN, the lowest free one.
	CreateLUN OpKind = "create-lun"
	// DeleteLUN removes LUN index Op.LUN from a TPG.
	DeleteLUN OpKind = "delete-lun"
	// EnableTPG and DisableTPG switch a TPG on or off.
	EnableTPG  OpKind = "enable-tpg"
	DisableTPG OpKind = "disable-tpg"
)

// AutoLUN asks LIO to choose the LUN index (the lowest free one).
const AutoLUN = -1

// Op is one change to LIO. Which fields matter depends on Kind.
type Op struct {
	Kind      OpKind
	Backstore string // fileio backstore name (create/delete backstore, create LUN)
	File      string // absolute path of the image file (create backstore)
	WWN       string // unit serial (create backstore)
	Target    string // target IQN (LUN and TPG ops)
	TPG       int    // TPG tag (LUN and TPG ops); 0 means 1
	LUN       int    // LUN index (delete LUN; create LUN, where AutoLUN lets LIO choose)
}

// TPGTag returns the TPG tag, defaulting to 1.
func (op Op) TPGTag() int {
	if op.TPG == 0 {
		return 1
	}
	return op.TPG
}

func (op Op) String() string {
	switch op.Kind {
	case CreateBackstore:
		return fmt.Sprintf("create fileio %s over %s (wwn %s)", op.Backstore, op.File, op.WWN)
	case DeleteBackstore:
		return fmt.Sprintf("delete fileio %s", op.Backstore)
	case CreateLUN:
		if op.LUN == AutoLUN {
			return fmt.Sprintf("create LUN for %s in %s/tpg%d", op.Backstore, op.Target, op.TPGTag())
		}
		return fmt.Sprintf("create lun%d for %s in %s/tpg%d", op.LUN, op.Backstore, op.Target, op.TPGTag())
	case DeleteLUN:
		return fmt.Sprintf("delete lun%d in %s/tpg%d", op.LUN, op.Target, op.TPGTag())
	case EnableTPG, DisableTPG:
		return fmt.Sprintf("%s %s/tpg%d", op.Kind, op.Target, op.TPGTag())
	}
	return string(op.Kind)
}

// Outcome is what happened to one Op.
type Outcome int

const (
	// NotAttempted: the op never ran (an earlier failure stopped the batch,
	// or the context ended).
	NotAttempted Outcome = iota
	// Applied: the op made its change.
	Applied
	// AlreadyDone: LIO was already in the state the op asks for.
	AlreadyDone
	// Failed: targetcli refused or the change is not in LIO's saved state.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case AlreadyDone:
		return "already-done"
	case Failed:
		return "failed"
	}
	return "not-attempted"
}

// Result reports one Op. Message is targetcli's own output for it, if any.
type Result struct {
	Op      Op
	Outcome Outcome
	Message string
	Err     error
}

// OK reports whether LIO now holds what the op asked for.
func (r Result) OK() bool { return r.Outcome == Applied || r.Outcome == AlreadyDone }

// Applier applies ordered operations to LIO and saves the result to
// saveconfig.json. Results come back in the order of ops, one per op. The
// error is for the call as a whole (targetcli could not be started, timed
// out, the context ended); the per-op results say what is known regardless.
type Applier interface {
	Apply(ctx context.Context, ops []Op) ([]Result, error)
	// Save writes LIO's live state to saveconfig.json.
	Save(ctx context.Context) error
}
