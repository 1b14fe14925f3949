package bridge

import (
	"slices"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/ims"
)

func TestIndexListing(t *testing.T) {
	const (
		a = "aaaaaaaa-0000-0000-0000-000000000001"
		b = "bbbbbbbb-0000-0000-0000-000000000002"
		c = "CCCCCCCC-0000-0000-0000-000000000003"
	)
	listing := ims.Listing{
		Images: []ims.Image{{ID: b, Name: "first b"}, {ID: "AAAAAAAA-0000-0000-0000-000000000001"}, {ID: "BBBBBBBB-0000-0000-0000-000000000002", Name: "second b"}},
		Errors: []ims.RecordError{{Index: 3, ID: c}},
	}
	l := indexListing(listing)
	if want := []string{b, a}; !slices.Equal(l.order, want) {
		t.Errorf("indexListing order = %q, want %q (lower-case, first of duplicates only)", l.order, want)
	}
	if got := l.imgs[b].Name; got != "first b" {
		t.Errorf("indexListing kept %q for a duplicate id, want the first record", got)
	}
	if !l.unknown["cccccccc-0000-0000-0000-000000000003"] || l.anonymous {
		t.Errorf("indexListing unknown = %v, anonymous = %v; want the undecoded id lower-cased, not anonymous", l.unknown, l.anonymous)
	}

	for _, id := range []string{"", "not-a-uuid"} {
		l := indexListing(ims.Listing{Errors: []ims.RecordError{{ID: id}}})
		if !l.anonymous || len(l.unknown) != 0 {
			t.Errorf("indexListing with an undecoded record of id %q: anonymous = %v, unknown = %v; want anonymous", id, l.anonymous, l.unknown)
		}
	}
}
