package projector

import (
	"maps"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

func TestStatusOfAndCounts(t *testing.T) {
	projected := peProjection("PE/projected.squashfs", 100)
	missing := peProjection("PE/missing.squashfs", 100)
	resized := peProjection("PE/resized.squashfs", 100)
	stale := peProjection("PE/stale.squashfs", 100)
	wrongSize := backstoreOf(resized)
	size := int64(7)
	wrongSize.Size = &size
	actual := node(nil,
		backstoreOf(projected), wrongSize, backstoreOf(stale),
		fileio("other", "/srv/other.img", "abc", 1),
	)
	d := desiredOf(projected, missing, resized)
	d.Pending["p"] = Problem{Kind: PE, Name: "p", Key: "PE/pending.squashfs", Reason: "size 0 on s3fs"}
	d.Rejected = []Problem{{Kind: Rootfs, Key: "x/rootfs", Reason: "no etag"}}
	plan := &Plan{}

	entries := StatusOf(d, plan, actual, layout, testIQN, 1)
	got := map[string]State{}
	for _, e := range entries {
		got[e.Key+e.Backstore] = e.State
	}
	want := map[string]State{
		projected.Key + projected.ID.Name: Projected,
		missing.Key + missing.ID.Name:     Missing,
		resized.Key + resized.ID.Name:     Missing,
		stale.Key + stale.ID.Name:         Stale,
		"/backstores/fileio/other":        Foreign,
		"PE/pending.squashfsp":            Pending,
		"x/rootfs":                        Rejected,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("states:\n got %v\nwant %v", got, want)
	}
	for i := 1; i < len(entries); i++ {
		if stateOrder(entries[i-1].State) > stateOrder(entries[i].State) {
			t.Fatalf("entries not sorted by state: %s before %s", entries[i-1].State, entries[i].State)
		}
	}

	counts := StatusCounts(d, plan, actual, layout, testIQN, 1)
	fromEntries := map[State]int{}
	for _, e := range entries {
		fromEntries[e.State]++
	}
	if !maps.Equal(counts, fromEntries) {
		t.Fatalf("StatusCounts = %v, want the counts of StatusOf %v", counts, fromEntries)
	}

	// A refused plan explains every missing entry.
	refused := &Plan{Refused: "tpg1 is writable"}
	for _, e := range StatusOf(d, refused, actual, layout, testIQN, 1) {
		if e.State == Missing && e.Reason != refused.Refused {
			t.Errorf("missing %s: reason %q, want the refusal", e.Backstore, e.Reason)
		}
	}
	// LIO unreadable after the pass: desired entries are all missing.
	for _, e := range StatusOf(d, plan, (*lio.Config)(nil), layout, testIQN, 1) {
		if e.State != Missing && e.State != Pending && e.State != Rejected {
			t.Errorf("with no LIO state, %s is %s", e.Backstore, e.State)
		}
	}
}
