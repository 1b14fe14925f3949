package imsevent

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Version is the schema version this package writes and the only one it reads.
const Version = 1

// Limits applied by Encode and Decode.
const (
	// MaxSize is the largest encoded event accepted, in bytes.
	MaxSize = 16 << 10
	// MaxFields is the most entries Fields may have.
	MaxFields = 16
	// MaxETagLen is the longest ETag accepted, in bytes.
	MaxETagLen = 128
	// MaxSourceLen is the longest Source accepted, in bytes.
	MaxSourceLen = 256
)

// Change is what happened to the image record.
type Change string

// The known changes.
const (
	Created Change = "created" // a new image record appeared
	Changed Change = "changed" // one or more of Fields changed
	Deleted Change = "deleted" // the image record is gone
)

// Field names a bridge puts in Event.Fields. Consumers must treat a name
// they do not know as "something else changed" and re-read the image.
const (
	FieldName     = "name"     // ImageRecord.name
	FieldLink     = "link"     // ImageRecord.link (path, etag or type, or null)
	FieldMetadata = "metadata" // ImageRecord.metadata (e.g. the sbps-project tag)
	FieldArch     = "arch"     // ImageRecord.arch
)

// Event is one change of one IMS image record.
type Event struct {
	// Version is the schema version; Encode writes Version when it is 0.
	Version int `json:"version"`
	// ID is the IMS image id, a canonical UUID.
	ID string `json:"id"`
	// Change is created, changed or deleted.
	Change Change `json:"change"`
	// Fields lists what changed; required (at least one) for Changed and
	// absent otherwise.
	Fields []string `json:"fields,omitempty"`
	// ETag is the rootfs link etag of the new record, unquoted; "" when
	// there is none or for a deletion.
	ETag string `json:"etag"`
	// Digest is the publisher's hash of the new record's relevant fields
	// (see the Digest function): lower-case hex, 16 to 64 digits. Required
	// for Created and Changed, optional for Deleted. It makes DedupID differ
	// between two successive changes of the same image.
	Digest string `json:"digest,omitempty"`
	// Time is when the publisher saw the change.
	Time time.Time `json:"time"`
	// Source names the publisher, e.g. "sbps-marshal bridge ims@ncn-w001".
	Source string `json:"source"`
}

// DedupID returns the JetStream de-duplication id (the Nats-Msg-Id header)
// for e: "ims:<id>:<change>:<digest>", or "ims:<id>:<change>" without a
// digest. The same change of the same image, published twice (a bridge
// restart, two bridges), gets the same id, so JetStream drops the copy within
// its duplicate window; a different change gets a different id because its
// digest differs. Call it on a validated Event (from Decode, or one Encode
// accepts).
func (e Event) DedupID() string {
	id := "ims:" + strings.ToLower(e.ID) + ":" + string(e.Change)
	if e.Digest != "" {
		id += ":" + e.Digest
	}
	return id
}

// Digest hashes the parts a publisher considers relevant of an image record
// (for example link.path, link.etag and the sorted "key=value" metadata
// entries) into a value for Event.Digest: 32 lower-case hex digits of
// SHA-256 over the length-prefixed parts, so that no two different lists of
// parts collide by concatenation. The order of parts matters.
func Digest(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// FieldError reports the field of an event that was refused.
type FieldError struct {
	Field  string // JSON member name, e.g. "id"
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("imsevent: %s: %s", e.Field, e.Reason)
}

// ErrTooLarge means an event is larger than MaxSize.
var ErrTooLarge = errors.New("event too large")

// Encode validates e and returns its JSON form. A zero Version means
// Version; Time is written in UTC with nanoseconds.
func Encode(e Event) ([]byte, error) {
	if e.Version == 0 {
		e.Version = Version
	}
	e.Time = e.Time.UTC()
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("%w; fix the publisher", err)
	}
	data, err := json.Marshal(wireFrom(e))
	if err != nil {
		return nil, fmt.Errorf("imsevent: encoding event for image %s: %w", e.ID, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("imsevent: event for image %s is %d bytes, over %d: %w", e.ID, len(data), MaxSize, ErrTooLarge)
	}
	return data, nil
}

// wire is the JSON form; Time is a string so that Decode can name it in
// errors, and Version a pointer so that a missing version is told apart.
type wire struct {
	Version *int     `json:"version"`
	ID      string   `json:"id"`
	Change  Change   `json:"change"`
	Fields  []string `json:"fields,omitempty"`
	ETag    string   `json:"etag"`
	Digest  string   `json:"digest,omitempty"`
	Time    string   `json:"time"`
	Source  string   `json:"source"`
}

func wireFrom(e Event) wire {
	v := e.Version
	return wire{
		Version: &v, ID: e.ID, Change: e.Change, Fields: e.Fields, ETag: e.ETag,
		Digest: e.Digest, Time: e.Time.Format(time.RFC3339Nano), Source: e.Source,
	}
}

// Decode parses and validates one event. Members this version does not know
// are ignored (additions that change meaning bump the version). The returned
// ID is in lower case and Time in UTC.
func Decode(data []byte) (Event, error) {
	if len(data) > MaxSize {
		return Event{}, fmt.Errorf("imsevent: event of %d bytes is over the %d-byte limit: %w; the message is not an IMS change event", len(data), MaxSize, ErrTooLarge)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Event{}, &FieldError{Field: te.Field, Reason: fmt.Sprintf("has JSON type %s, want %s", te.Value, te.Type)}
		}
		return Event{}, fmt.Errorf("imsevent: not a JSON object: %w; the message is not an IMS change event", err)
	}
	if w.Version == nil {
		return Event{}, &FieldError{Field: "version", Reason: "missing; the message is not an IMS change event"}
	}
	e := Event{
		Version: *w.Version, ID: strings.ToLower(w.ID), Change: w.Change, Fields: w.Fields,
		ETag: w.ETag, Digest: w.Digest, Source: w.Source,
	}
	if len(e.Fields) == 0 {
		e.Fields = nil // "fields": [] and absent mean the same
	}
	if w.Time == "" {
		return Event{}, &FieldError{Field: "time", Reason: "missing"}
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return Event{}, &FieldError{Field: "time", Reason: fmt.Sprintf("%q is not RFC 3339", clip(w.Time))}
	}
	e.Time = t.UTC()
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

func (e Event) validate() error {
	if e.Version != Version {
		return &FieldError{Field: "version", Reason: fmt.Sprintf("%d is not supported (this agent reads version %d); upgrade the agent or the bridge so they match", e.Version, Version)}
	}
	if !isUUID(e.ID) {
		return &FieldError{Field: "id", Reason: fmt.Sprintf("%q is not a UUID (IMS image ids are UUIDs)", clip(e.ID))}
	}
	switch e.Change {
	case Created, Deleted:
		if len(e.Fields) > 0 {
			return &FieldError{Field: "fields", Reason: fmt.Sprintf("only allowed with change %q, not %q", Changed, e.Change)}
		}
	case Changed:
		if len(e.Fields) == 0 {
			return &FieldError{Field: "fields", Reason: `missing; a "changed" event must name at least one field`}
		}
	default:
		return &FieldError{Field: "change", Reason: fmt.Sprintf("%q is not one of created, changed, deleted", clip(string(e.Change)))}
	}
	if len(e.Fields) > MaxFields {
		return &FieldError{Field: "fields", Reason: fmt.Sprintf("%d entries, at most %d allowed", len(e.Fields), MaxFields)}
	}
	for i, f := range e.Fields {
		if !isFieldName(f) {
			return &FieldError{Field: fmt.Sprintf("fields[%d]", i), Reason: fmt.Sprintf("%q is not a field name (a-z first, then a-z 0-9 _ ., at most 32)", clip(f))}
		}
		for _, g := range e.Fields[:i] {
			if f == g {
				return &FieldError{Field: fmt.Sprintf("fields[%d]", i), Reason: fmt.Sprintf("%q listed twice", f)}
			}
		}
	}
	if len(e.ETag) > MaxETagLen || !isPrintable(e.ETag, false) || strings.ContainsAny(e.ETag, `"\`) {
		return &FieldError{Field: "etag", Reason: fmt.Sprintf("%q is not an unquoted etag (printable ASCII, no spaces or quotes, at most %d bytes)", clip(e.ETag), MaxETagLen)}
	}
	switch {
	case e.Digest == "" && e.Change != Deleted:
		return &FieldError{Field: "digest", Reason: fmt.Sprintf("missing; required for %q so that successive changes get different de-duplication ids", e.Change)}
	case e.Digest != "" && !isDigest(e.Digest):
		return &FieldError{Field: "digest", Reason: fmt.Sprintf("%q is not 16 to 64 lower-case hex digits", clip(e.Digest))}
	}
	if e.Time.IsZero() {
		return &FieldError{Field: "time", Reason: "missing"}
	}
	if e.Source == "" || len(e.Source) > MaxSourceLen || !isPrintable(e.Source, true) {
		return &FieldError{Field: "source", Reason: fmt.Sprintf("%q must be 1 to %d bytes of printable ASCII", clip(e.Source), MaxSourceLen)}
	}
	return nil
}

// isUUID reports whether s is 8-4-4-4-12 hex digits (either case).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigest(s string) bool {
	if len(s) < 16 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isFieldName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func isPrintable(s string, space bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' && space {
			continue
		}
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// clip keeps hostile values out of error messages at full length.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
