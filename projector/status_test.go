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

	// A held deletion is counted alike.
	heldPlan := &Plan{Held: []Change{{Action: Delete, Name: stale.ID.Name, Reason: "kept while pending"}}}
	heldCounts := map[State]int{}
	for _, e := range StatusOf(d, heldPlan, actual, layout, testIQN, 1) {
		heldCounts[e.State]++
	}
	if got := StatusCounts(d, heldPlan, actual, layout, testIQN, 1); !maps.Equal(got, heldCounts) || got[Held] != 1 {
		t.Fatalf("with a held deletion: StatusCounts = %v, StatusOf counts %v; want one held", got, heldCounts)
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

func TestServedScanMatchesIndex(t *testing.T) {
	a := peProjection("PE/a.squashfs", 10)
	b := peProjection("PE/b.squashfs", 20)
	dup := backstoreOf(a)
	dup.Name = "dup"
	size := int64(99)
	dup.Size = &size
	actual := node(nil, backstoreOf(a), backstoreOf(b), dup, fileio("other", "/srv/x.img", "w", 5))
	index, scan := servedFiles(actual, layout), servedScan(actual, layout)
	for _, f := range []string{a.File, b.File, "/srv/x.img", layout.FileFor("PE/none.squashfs")} {
		s1, n1, ok1 := index(f)
		s2, n2, ok2 := scan(f)
		if s1 != s2 || n1 != n2 || ok1 != ok2 {
			t.Errorf("%s: index says %d %s %v, scan %d %s %v", f, s1, n1, ok1, s2, n2, ok2)
		}
	}
	if s, n, ok := scan(a.File); !ok || s != 99 || n != "dup" {
		t.Errorf("a file served twice: scan = %d %s %v, want the last backstore, dup, size 99", s, n, ok)
	}
	if _, _, ok := servedScan(nil, layout)(a.File); ok {
		t.Error("no LIO state serves nothing")
	}
}
