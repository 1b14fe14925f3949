package ims

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TagKey is the IMS metadata key that marks an image for projection; the
// value must be exactly TagValue.
const (
	TagKey   = "sbps-project"
	TagValue = "true"
)

// Image is one IMS ImageRecord (OpenAPI components/schemas/ImageRecord).
// Fields IMS adds later are ignored.
type Image struct {
	// ID is the IMS image id, a UUID (validated on decode).
	ID string `json:"id"`
	// Name is the image name; IMS requires it.
	Name string `json:"name"`
	// Created is kept as IMS sent it; several forms occur in the field,
	// see [ParseCreated].
	Created string `json:"created,omitempty"`
	// Arch is "x86_64" or "aarch64" on current IMS; empty when absent.
	Arch string `json:"arch,omitempty"`
	// Link points at the image's manifest.json; nil when IMS sent null or
	// no link (an image still being built).
	Link *Link `json:"link,omitempty"`
	// Metadata holds the flat string annotations. nil means the record had
	// no metadata (or null): an IMS older than 3.16 without tagging. A
	// non-nil empty map means tagging exists and the image has no tags.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Link is an IMS ArtifactLinkRecord.
type Link struct {
	// Path is the artifact location, "s3://bucket/key" for type s3.
	Path string `json:"path"`
	// Etag identifies the artifact version; it may be empty.
	Etag string `json:"etag,omitempty"`
	// Type is the artifact repository kind, "s3" in CSM.
	Type string `json:"type"`
}

// CreatedTime parses [Image.Created] with [ParseCreated].
func (img Image) CreatedTime() (time.Time, error) { return ParseCreated(img.Created) }

// Tagged reports whether the image carries sbps-project=true.
func (img Image) Tagged() bool { return img.Metadata[TagKey] == TagValue }

// Projectable applies the old agent's IMS_TAGGING rule: with tagging off
// every image is projectable; an image without metadata (IMS < 3.16) is
// projectable; otherwise only metadata["sbps-project"] == "true" is. reason
// explains a false answer and is empty for true.
func Projectable(img Image, tagging bool) (ok bool, reason string) {
	switch {
	case !tagging:
		return true, ""
	case img.Metadata == nil:
		return true, ""
	default:
		v, found := img.Metadata[TagKey]
		if !found {
			return false, fmt.Sprintf("image %s is not tagged: metadata has no %q key (tag it with %s=%s)", img.ID, TagKey, TagKey, TagValue)
		}
		if v != TagValue {
			return false, fmt.Sprintf("image %s has %s=%q, only %q projects", img.ID, TagKey, v, TagValue)
		}
		return true, ""
	}
}

// createdLayouts are the timestamp forms IMS records and manifests carry:
// Python str(datetime) with a space, isoformat with T, either with or without
// fractional seconds and zone, and the compact form seen in field manifests.
var createdLayouts = [...]string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999",
	"20060102150405",
}

// ParseCreated parses an IMS "created" timestamp. Accepted forms:
// "2020-01-14 03:17:14", "2020-01-14T03:17:14.565885" (no zone: UTC),
// "...+00:00", "...Z" and "20240815093713". The result is in UTC.
func ParseCreated(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("ims: empty created timestamp")
	}
	for _, layout := range createdLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("ims: created timestamp %q is in none of the known forms (e.g. 2020-01-14 03:17:14, 2020-01-14T03:17:14.565885Z, 20240815093713)", excerpt([]byte(s), 64))
}

// ValidID reports whether id is a UUID in its canonical textual form
// (8-4-4-4-12 hexadecimal digits), which is what IMS issues. Anything else is
// refused before it reaches a URL.
func ValidID(id string) error {
	if len(id) != 36 {
		return fmt.Errorf("ims: image id %q is not a UUID (want 8-4-4-4-12 hex digits)", excerpt([]byte(id), 64))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return fmt.Errorf("ims: image id %q is not a UUID (want 8-4-4-4-12 hex digits)", id)
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return fmt.Errorf("ims: image id %q is not a UUID (want 8-4-4-4-12 hex digits)", id)
			}
		}
	}
	return nil
}

// Listing is the result of [Client.List]: the records that decoded and the
// ones that did not. A caller deciding deletes must treat the ids in Errors
// as "unknown", not as "gone".
type Listing struct {
	Images []Image
	Errors []RecordError
}

// RecordError describes one listing record that could not be decoded.
type RecordError struct {
	// Index is the record's position in the IMS response array.
	Index int
	// ID is the record's id when it could be read, else "".
	ID string
	// Err says what is wrong with the record.
	Err error
}

func (e RecordError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("ims: image record %d (id %s): %v", e.Index, e.ID, e.Err)
	}
	return fmt.Sprintf("ims: image record %d (no readable id): %v", e.Index, e.Err)
}

func (e RecordError) Unwrap() error { return e.Err }

// decodeListing decodes a GET /v3/images body. The body must be a JSON array;
// each element is decoded on its own so one bad record does not lose the rest.
func decodeListing(body []byte) (Listing, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return Listing{}, fmt.Errorf("ims: image listing is not a JSON array of records: %w (body starts %q)", err, excerpt(body, 120))
	}
	l := Listing{Images: make([]Image, 0, len(raws))}
	for i, raw := range raws {
		img, err := decodeImage(raw)
		if err != nil {
			l.Errors = append(l.Errors, RecordError{Index: i, ID: peekID(raw), Err: err})
			continue
		}
		l.Images = append(l.Images, img)
	}
	return l, nil
}

// decodeImage decodes and validates one ImageRecord.
func decodeImage(raw []byte) (Image, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Image{}, fmt.Errorf("record is not a JSON object (starts %q)", excerpt(raw, 40))
	}
	var img Image
	if err := json.Unmarshal(raw, &img); err != nil {
		return Image{}, fmt.Errorf("decode: %w", err)
	}
	if img.ID == "" {
		return Image{}, errors.New("record has no id")
	}
	if err := ValidID(img.ID); err != nil {
		return Image{}, err
	}
	if img.Name == "" {
		return Image{}, errors.New("record has no name")
	}
	return img, nil
}

// peekID returns the record's id if it is a string, best effort.
func peekID(raw []byte) string {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	var id string
	if json.Unmarshal(probe.ID, &id) != nil {
		return ""
	}
	return excerpt([]byte(id), 64)
}

// excerpt returns at most n bytes of b with control characters replaced, for
// error messages.
func excerpt(b []byte, n int) string {
	truncated := false
	if len(b) > n {
		b, truncated = b[:n], true
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
	if truncated {
		s += "…"
	}
	return s
}
