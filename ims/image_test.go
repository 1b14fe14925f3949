package ims

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseCreated(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Time
		err  bool
	}{
		{"python str(datetime)", "2020-01-14 03:17:14", time.Date(2020, 1, 14, 3, 17, 14, 0, time.UTC), false},
		{"microseconds without zone", "2020-01-14T03:17:14.565885", time.Date(2020, 1, 14, 3, 17, 14, 565885000, time.UTC), false},
		{"microseconds with space", "2020-01-14 03:17:14.565885", time.Date(2020, 1, 14, 3, 17, 14, 565885000, time.UTC), false},
		{"offset", "2020-01-14T03:17:14.565885+00:00", time.Date(2020, 1, 14, 3, 17, 14, 565885000, time.UTC), false},
		{"offset converted to UTC", "2020-01-14T05:17:14+02:00", time.Date(2020, 1, 14, 3, 17, 14, 0, time.UTC), false},
		{"Z", "2018-07-28T03:26:01.234Z", time.Date(2018, 7, 28, 3, 26, 1, 234000000, time.UTC), false},
		{"compact field manifest", "20240815093713", time.Date(2024, 8, 15, 9, 37, 13, 0, time.UTC), false},
		{"empty", "", time.Time{}, true},
		{"placeholder", "<date '+%Y-%m-%d %H:%M:%S'>", time.Time{}, true},
		{"date only", "2020-01-14", time.Time{}, true},
		{"month 13", "2020-13-14 03:17:14", time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCreated(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseCreated(%q) error = %v, want error %v", tt.in, err, tt.err)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("ParseCreated(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestProjectable(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]string
		tagging bool
		want    bool
	}{
		{"tagging off, untagged", map[string]string{}, false, true},
		{"tagging off, value false", map[string]string{TagKey: "false"}, false, true},
		{"metadata absent (IMS < 3.16)", nil, true, true},
		{"tagged", map[string]string{TagKey: "true"}, true, true},
		{"empty metadata", map[string]string{}, true, false},
		{"other keys only", map[string]string{"foo": "bar"}, true, false},
		{"value True (only the string true)", map[string]string{TagKey: "True"}, true, false},
		{"value false", map[string]string{TagKey: "false"}, true, false},
		{"value empty", map[string]string{TagKey: ""}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := Image{ID: "46a2731e-a1d0-4f98-ba92-4f78c756bb12", Name: "n", Metadata: tt.md}
			got, reason := Projectable(img, tt.tagging)
			if got != tt.want {
				t.Errorf("Projectable(metadata %v, tagging %v) = %v (%s), want %v", tt.md, tt.tagging, got, reason, tt.want)
			}
			if !got && !strings.Contains(reason, img.ID) {
				t.Errorf("reason %q does not name the image", reason)
			}
			if got && reason != "" {
				t.Errorf("reason %q for a projectable image", reason)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"uuid4", "46a2731e-a1d0-4f98-ba92-4f78c756bb12", true},
		{"upper case", "46A2731E-A1D0-4F98-BA92-4F78C756BB12", true},
		{"empty", "", false},
		{"path traversal", "../../../v3/jobs/xxxxxxxxxxxxxxxxxxx", false},
		{"slash inside", "46a2731e-a1d0-4f98-ba92/4f78c756bb12", false},
		{"query", "46a2731e-a1d0-4f98-ba92-4f78c756bb1?", false},
		{"no dashes", "46a2731ea1d04f98ba924f78c756bb12", false},
		{"too long", "46a2731e-a1d0-4f98-ba92-4f78c756bb123", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidID(tt.id); (err == nil) != tt.ok {
				t.Errorf("ValidID(%q) = %v, want ok %v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestDecodeListing(t *testing.T) {
	const good = `{"id":"46a2731e-a1d0-4f98-ba92-4f78c756bb12","name":"a","created":"2020-01-14 03:17:14","arch":"x86_64","link":{"path":"s3://boot-images/x/manifest.json","etag":"e","type":"s3"},"metadata":{"sbps-project":"true"},"future_field":{"x":[1,2]}}`
	tests := []struct {
		name    string
		body    string
		images  int
		errIDs  []string
		listErr bool
		check   func(t *testing.T, l Listing)
	}{
		{"empty", `[]`, 0, nil, false, nil},
		{"one good with unknown fields", "[" + good + "]", 1, nil, false, func(t *testing.T, l Listing) {
			img := l.Images[0]
			if img.Link == nil || img.Link.Etag != "e" || img.Metadata[TagKey] != "true" || img.Arch != "x86_64" {
				t.Errorf("decoded %+v", img)
			}
		}},
		{"link null and metadata absent", `[{"id":"46a2731e-a1d0-4f98-ba92-4f78c756bb12","name":"a","link":null}]`, 1, nil, false, func(t *testing.T, l Listing) {
			if l.Images[0].Link != nil || l.Images[0].Metadata != nil {
				t.Errorf("decoded %+v, want nil link and nil metadata", l.Images[0])
			}
		}},
		{"metadata empty object is present", `[{"id":"46a2731e-a1d0-4f98-ba92-4f78c756bb12","name":"a","metadata":{}}]`, 1, nil, false, func(t *testing.T, l Listing) {
			if l.Images[0].Metadata == nil {
				t.Error("metadata {} decoded as absent")
			}
		}},
		{"wrong types among good ones", "[" + good + `,{"id":"11111111-2222-3333-4444-555555555555","name":7},{"id":42,"name":"x"},"string",null,{"id":"22222222-2222-3333-4444-555555555555","name":"b","metadata":{"sbps-project":true}},{"id":"33333333-2222-3333-4444-555555555555","name":"c","link":"s3://x"}]`,
			1, []string{"11111111-2222-3333-4444-555555555555", "", "", "", "22222222-2222-3333-4444-555555555555", "33333333-2222-3333-4444-555555555555"}, false, nil},
		{"missing id or name, bad id", `[{"name":"a"},{"id":"46a2731e-a1d0-4f98-ba92-4f78c756bb12"},{"id":"../x","name":"a"}]`, 0, []string{"", "46a2731e-a1d0-4f98-ba92-4f78c756bb12", "../x"}, false, nil},
		{"object instead of array", `{"images":[]}`, 0, nil, true, nil},
		{"html", `<html>gateway</html>`, 0, nil, true, nil},
		{"truncated", "[" + good, 0, nil, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := decodeListing([]byte(tt.body))
			if (err != nil) != tt.listErr {
				t.Fatalf("decodeListing error = %v, want error %v", err, tt.listErr)
			}
			if len(l.Images) != tt.images {
				t.Errorf("decodeListing: %d images, want %d", len(l.Images), tt.images)
			}
			if len(l.Errors) != len(tt.errIDs) {
				t.Fatalf("decodeListing: errors %v, want ids %q", l.Errors, tt.errIDs)
			}
			for i, e := range l.Errors {
				if e.ID != tt.errIDs[i] {
					t.Errorf("error %d id = %q, want %q (%v)", i, e.ID, tt.errIDs[i], e)
				}
				if e.Error() == "" || e.Err == nil {
					t.Errorf("error %d has no reason", i)
				}
			}
			if tt.check != nil && len(l.Images) > 0 {
				tt.check(t, l)
			}
		})
	}
}

func FuzzDecodeListing(f *testing.F) {
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"id":"46a2731e-a1d0-4f98-ba92-4f78c756bb12","name":"a","link":null,"metadata":{"sbps-project":"true"}}]`))
	f.Add([]byte(`[{"id":1},"x",null,[],{"metadata":[]}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<16 {
			return
		}
		l, err := decodeListing(body)
		if err != nil {
			if len(l.Images)+len(l.Errors) != 0 {
				t.Fatalf("error %v with a non-empty listing", err)
			}
			return
		}
		for _, img := range l.Images {
			if ValidID(img.ID) != nil || img.Name == "" {
				t.Fatalf("accepted an invalid record %+v", img)
			}
			if _, err := json.Marshal(img); err != nil {
				t.Fatalf("re-encode %+v: %v", img, err)
			}
			_, _ = Projectable(img, true)
			_, _ = img.CreatedTime()
		}
		var raws []json.RawMessage
		if json.Unmarshal(body, &raws) == nil && len(raws) != len(l.Images)+len(l.Errors) {
			t.Fatalf("%d records in, %d images + %d errors out", len(raws), len(l.Images), len(l.Errors))
		}
	})
}
