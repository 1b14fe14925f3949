package imsevent

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const uuid = "5d6e3a8c-2f1b-4c7e-9a0d-1b2c3d4e5f60"

var t0 = time.Date(2026, 8, 20, 9, 14, 3, 512000000, time.UTC)

func validEvent() Event {
	return Event{
		Version: 1, ID: uuid, Change: Changed, Fields: []string{FieldLink, FieldMetadata},
		ETag: "92917931abf93d1adfe0f1d8dce3b293-3", Digest: Digest("p", "e"),
		Time: t0, Source: "sbps-marshal bridge ims@ncn-w001",
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
	}{
		{name: "changed", ev: validEvent()},
		{name: "created", ev: Event{Version: 1, ID: uuid, Change: Created, ETag: "abc", Digest: Digest("x"), Time: t0, Source: "s"}},
		{name: "deleted without digest", ev: Event{Version: 1, ID: uuid, Change: Deleted, Time: t0, Source: "s"}},
		{name: "deleted with digest", ev: Event{Version: 1, ID: uuid, Change: Deleted, Digest: Digest(), Time: t0, Source: "s"}},
		{name: "unknown field name passes", ev: func() Event { e := validEvent(); e.Fields = []string{"future_thing"}; return e }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := Encode(tt.ev)
			if err != nil {
				t.Fatalf("Encode(%+v) error = %v", tt.ev, err)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(%q) error = %v", data, err)
			}
			if !reflect.DeepEqual(got, tt.ev) {
				t.Errorf("Decode(%q) = %+v, want %+v", data, got, tt.ev)
			}
			if got.DedupID() != tt.ev.DedupID() {
				t.Errorf("Decode(%q).DedupID() = %q, want %q", data, got.DedupID(), tt.ev.DedupID())
			}
		})
	}
}

func TestEncodeDefaults(t *testing.T) {
	e := validEvent()
	e.Version = 0
	e.Time = t0.In(time.FixedZone("X", 3600))
	data, err := Encode(e)
	if err != nil {
		t.Fatalf("Encode(%+v) error = %v", e, err)
	}
	want := `{"version":1,"id":"` + uuid + `","change":"changed","fields":["link","metadata"],"etag":"92917931abf93d1adfe0f1d8dce3b293-3","digest":"` + Digest("p", "e") + `","time":"2026-08-20T09:14:03.512Z","source":"sbps-marshal bridge ims@ncn-w001"}`
	if string(data) != want {
		t.Errorf("Encode(%+v) = %s, want %s", e, data, want)
	}
}

func TestDecodeNormalizes(t *testing.T) {
	in := `{"version":1,"id":"5D6E3A8C-2F1B-4C7E-9A0D-1B2C3D4E5F60","change":"deleted","time":"2026-08-20T11:14:03.512+02:00","source":"s","unknown":{"x":1}}`
	got, err := Decode([]byte(in))
	if err != nil {
		t.Fatalf("Decode(%q) error = %v", in, err)
	}
	if got.ID != uuid || !got.Time.Equal(t0) || got.Time.Location() != time.UTC {
		t.Errorf("Decode(%q) = id %q time %v, want id %q time %v UTC", in, got.ID, got.Time, uuid, t0)
	}
}

func TestDecodeRefusals(t *testing.T) {
	base := func(mut func(m map[string]any)) string {
		m := map[string]any{
			"version": 1, "id": uuid, "change": "changed", "fields": []string{"link"},
			"etag": "e", "digest": Digest("a"), "time": "2026-08-20T09:14:03Z", "source": "s",
		}
		mut(m)
		b, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		return string(b)
	}
	tests := []struct {
		name      string
		input     string
		wantField string // FieldError.Field, or "" for a non-field error
		wantMsg   string
	}{
		{name: "not json", input: `nope`, wantMsg: "not a JSON object"},
		{name: "array", input: `[1]`, wantMsg: "not a JSON object"},
		{name: "too large", input: `{"pad":"` + strings.Repeat("x", MaxSize) + `"}`, wantMsg: "over the"},
		{name: "no version", input: base(func(m map[string]any) { delete(m, "version") }), wantField: "version", wantMsg: "missing"},
		{name: "version 2", input: base(func(m map[string]any) { m["version"] = 2 }), wantField: "version", wantMsg: "2 is not supported"},
		{name: "version as string", input: base(func(m map[string]any) { m["version"] = "1" }), wantField: "version", wantMsg: "JSON type"},
		{name: "id path traversal", input: base(func(m map[string]any) { m["id"] = "../../etc/passwd" }), wantField: "id", wantMsg: "not a UUID"},
		{name: "id with shell", input: base(func(m map[string]any) { m["id"] = "5d6e3a8c-2f1b-4c7e-9a0d-1b2c3d4e5f6;" }), wantField: "id", wantMsg: "not a UUID"},
		{name: "id without dashes", input: base(func(m map[string]any) { m["id"] = strings.ReplaceAll(uuid, "-", "") }), wantField: "id", wantMsg: "not a UUID"},
		{name: "id missing", input: base(func(m map[string]any) { delete(m, "id") }), wantField: "id", wantMsg: "not a UUID"},
		{name: "unknown change", input: base(func(m map[string]any) { m["change"] = "renamed" }), wantField: "change", wantMsg: "not one of"},
		{name: "changed without fields", input: base(func(m map[string]any) { delete(m, "fields") }), wantField: "fields", wantMsg: "at least one"},
		{name: "created with fields", input: base(func(m map[string]any) { m["change"] = "created" }), wantField: "fields", wantMsg: "only allowed"},
		{name: "bad field name", input: base(func(m map[string]any) { m["fields"] = []string{"Link"} }), wantField: "fields[0]", wantMsg: "not a field name"},
		{name: "duplicate field", input: base(func(m map[string]any) { m["fields"] = []string{"link", "link"} }), wantField: "fields[1]", wantMsg: "twice"},
		{name: "too many fields", input: base(func(m map[string]any) {
			f := make([]string, MaxFields+1)
			for i := range f {
				f[i] = "f" + string(rune('a'+i))
			}
			m["fields"] = f
		}), wantField: "fields", wantMsg: "at most"},
		{name: "quoted etag", input: base(func(m map[string]any) { m["etag"] = `"abc"` }), wantField: "etag", wantMsg: "unquoted"},
		{name: "etag with newline", input: base(func(m map[string]any) { m["etag"] = "a\nb" }), wantField: "etag", wantMsg: "unquoted"},
		{name: "missing digest", input: base(func(m map[string]any) { delete(m, "digest") }), wantField: "digest", wantMsg: "missing"},
		{name: "upper-case digest", input: base(func(m map[string]any) { m["digest"] = "ABCDEF0123456789" }), wantField: "digest", wantMsg: "hex"},
		{name: "short digest", input: base(func(m map[string]any) { m["digest"] = "abc" }), wantField: "digest", wantMsg: "hex"},
		{name: "no time", input: base(func(m map[string]any) { delete(m, "time") }), wantField: "time", wantMsg: "missing"},
		{name: "bad time", input: base(func(m map[string]any) { m["time"] = "yesterday" }), wantField: "time", wantMsg: "RFC 3339"},
		{name: "no source", input: base(func(m map[string]any) { delete(m, "source") }), wantField: "source", wantMsg: "printable"},
		{name: "source with control", input: base(func(m map[string]any) { m["source"] = "a\x1b[31m" }), wantField: "source", wantMsg: "printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.input))
			if err == nil {
				t.Fatalf("Decode(%.80q) = %+v, nil; want an error", tt.input, got)
			}
			var fe *FieldError
			if tt.wantField != "" {
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Errorf("Decode(%.80q) error = %v, want a FieldError for %q", tt.input, err, tt.wantField)
				}
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Decode(%.80q) error = %q, want it to contain %q", tt.input, err, tt.wantMsg)
			}
			if !reflect.DeepEqual(got, Event{}) {
				t.Errorf("Decode(%.80q) = %+v with an error, want the zero Event", tt.input, got)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name      string
		mut       func(e *Event)
		wantField string
	}{
		{name: "bad id", mut: func(e *Event) { e.ID = "x" }, wantField: "id"},
		{name: "zero time", mut: func(e *Event) { e.Time = time.Time{} }, wantField: "time"},
		{name: "version 2", mut: func(e *Event) { e.Version = 2 }, wantField: "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.mut(&e)
			data, err := Encode(e)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Errorf("Encode(%+v) = %s, %v; want a FieldError for %q", e, data, err, tt.wantField)
			}
		})
	}
}

func TestDedupID(t *testing.T) {
	a := validEvent()
	b := validEvent()
	b.Time = t0.Add(time.Hour)
	b.Source = "another bridge"
	c := validEvent()
	c.Digest = Digest("p", "e2")
	d := Event{Version: 1, ID: uuid, Change: Deleted, Time: t0, Source: "s"}
	upper := validEvent()
	upper.ID = strings.ToUpper(uuid)
	tests := []struct {
		name string
		x, y Event
		same bool
	}{
		{name: "same change, other time and source", x: a, y: b, same: true},
		{name: "upper-case id", x: a, y: upper, same: true},
		{name: "other digest", x: a, y: c, same: false},
		{name: "other change", x: a, y: d, same: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.x.DedupID() == tt.y.DedupID(); got != tt.same {
				t.Errorf("DedupID() %q vs %q: equal = %v, want %v", tt.x.DedupID(), tt.y.DedupID(), got, tt.same)
			}
		})
	}
	if got, want := d.DedupID(), "ims:"+uuid+":deleted"; got != want {
		t.Errorf("DedupID() = %q, want %q", got, want)
	}
	if got, want := a.DedupID(), "ims:"+uuid+":changed:"+a.Digest; got != want {
		t.Errorf("DedupID() = %q, want %q", got, want)
	}
}

func TestDigest(t *testing.T) {
	tests := []struct {
		name string
		x, y []string
		same bool
	}{
		{name: "same parts", x: []string{"a", "b"}, y: []string{"a", "b"}, same: true},
		{name: "concatenation does not collide", x: []string{"ab", "c"}, y: []string{"a", "bc"}, same: false},
		{name: "order matters", x: []string{"a", "b"}, y: []string{"b", "a"}, same: false},
		{name: "empty part counts", x: []string{"a"}, y: []string{"a", ""}, same: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dx, dy := Digest(tt.x...), Digest(tt.y...)
			if (dx == dy) != tt.same {
				t.Errorf("Digest(%q) = %s, Digest(%q) = %s; equal want %v", tt.x, dx, tt.y, dy, tt.same)
			}
			if !isDigest(dx) {
				t.Errorf("Digest(%q) = %q, not a valid digest", tt.x, dx)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range []Event{validEvent(), {Version: 1, ID: uuid, Change: Deleted, Time: t0, Source: "s"}} {
		data, err := Encode(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"version":1,"id":"../x","change":"created"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			if !reflect.DeepEqual(e, Event{}) {
				t.Fatalf("Decode(%q) returned %+v with error %v", data, e, err)
			}
			return
		}
		if !isUUID(e.ID) || e.ID != strings.ToLower(e.ID) {
			t.Fatalf("Decode(%q).ID = %q, not a lower-case UUID", data, e.ID)
		}
		// Whatever Decode accepts, Encode accepts and round-trips.
		again, err := Encode(e)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)) error = %v", data, err)
		}
		e2, err := Decode(again)
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("Decode(Encode(%+v)) = %+v, %v", e, e2, err)
		}
	})
}

func TestDecodeEmptyFieldsIsNil(t *testing.T) {
	in := `{"version":1,"id":"` + uuid + `","change":"deleted","fields":[],"time":"2026-08-20T09:14:03Z","source":"s"}`
	got, err := Decode([]byte(in))
	if err != nil || got.Fields != nil {
		t.Errorf("Decode(%q) = fields %#v, %v; want nil, nil", in, got.Fields, err)
	}
}
