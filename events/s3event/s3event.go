package s3event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits applied by Decode.
const (
	// MaxSize is the largest message Decode accepts, in bytes.
	MaxSize = 1 << 20
	// MaxRecords is the largest number of records one message may carry.
	MaxRecords = 1000
	// MaxKeyLen is the longest decoded object key accepted, in bytes (S3's limit).
	MaxKeyLen = 1024
	// MaxBucketLen is the longest bucket name accepted, in bytes.
	MaxBucketLen = 255
)

// Producer names, as found in Record.Producer.
const (
	ProducerAWS       = "aws"
	ProducerCeph      = "ceph"
	ProducerMinIO     = "minio"
	ProducerVersityGW = "versitygw"
	ProducerUnknown   = "unknown"
)

// Sentinel errors for messages refused whole.
var (
	// ErrTooLarge means the message is larger than the allowed size.
	ErrTooLarge = errors.New("message too large")
	// ErrTooManyRecords means the message has more than MaxRecords records.
	ErrTooManyRecords = errors.New("too many records")
)

// Kind is what happened to the object.
type Kind int

const (
	// Other is any event that neither creates nor removes an object
	// (restore, replication, tagging, ...).
	Other Kind = iota
	// Created means the object now exists with the record's ETag and Size.
	Created
	// Removed means the object (its current version) is gone.
	Removed
)

func (k Kind) String() string {
	switch k {
	case Created:
		return "created"
	case Removed:
		return "removed"
	default:
		return "other"
	}
}

// Notification is one decoded message.
type Notification struct {
	// Records holds the usable records in message order.
	Records []Record
	// Test is true for a producer's test event; Records is then empty.
	Test bool
}

// Record is one object event, the same shape for every producer.
type Record struct {
	Producer  string    // ProducerAWS, ProducerCeph, ...
	Bucket    string    // never empty
	Key       string    // decoded object key, never empty
	Kind      Kind      // from EventName
	EventName string    // as sent, e.g. "ObjectCreated:Put" or "s3:ObjectCreated:Put"
	ETag      string    // quotes stripped; "" for Removed or when not sent
	Size      int64     // bytes; -1 when unknown and always for Removed
	Sequencer string    // as sent; orders events of one key from one producer only
	Time      time.Time // eventTime; zero when not sent
}

// RecordError reports one record that was skipped.
type RecordError struct {
	Index int    // position in the message's Records
	Field string // JSON path inside the record, e.g. "s3.object.key"
	Err   error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("s3event: record %d: %s: %v (record skipped; a resync will pick the object up)", e.Index, e.Field, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// DecodeLimited reads one message of at most max bytes from r and decodes
// it. A max of zero or less, or above MaxSize, means MaxSize. It reads at
// most max+1 bytes.
func DecodeLimited(r io.Reader, max int64) (Notification, error) {
	if max <= 0 || max > MaxSize {
		max = MaxSize
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return Notification{}, fmt.Errorf("s3event: reading notification: %w", err)
	}
	if int64(len(data)) > max {
		return Notification{}, fmt.Errorf("s3event: notification over %d bytes: %w; raise the limit or check the producer", max, ErrTooLarge)
	}
	return Decode(data)
}

// Decode decodes one S3 notification message. See the package
// documentation for the accepted forms and the error contract: when err is
// not nil, the returned Records are still all valid.
func Decode(data []byte) (Notification, error) {
	if len(data) > MaxSize {
		return Notification{}, fmt.Errorf("s3event: notification of %d bytes is over the %d-byte limit: %w; check the producer", len(data), MaxSize, ErrTooLarge)
	}
	return decode(data, true)
}

// envelope is every top-level member we look at.
type envelope struct {
	Records json.RawMessage `json:"Records"`
	// MinIO wrapper.
	EventName *string `json:"EventName"`
	Key       *string `json:"Key"`
	// Test events.
	Event string `json:"Event"`
	// SNS envelope.
	Message json.RawMessage `json:"Message"`
}

func decode(data []byte, allowSNS bool) (Notification, error) {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Notification{}, fmt.Errorf("s3event: not a JSON object: %w; the message is not an S3 notification", err)
	}
	switch {
	case env.Records != nil:
		if bytes.Equal(env.Records, []byte("null")) {
			return Notification{}, nil
		}
	case strings.HasSuffix(env.Event, "TestEvent"):
		return Notification{Test: true}, nil
	case allowSNS && env.Message != nil:
		var inner string
		if err := json.Unmarshal(env.Message, &inner); err != nil {
			return Notification{}, fmt.Errorf("s3event: SNS envelope: Message is not a JSON string: %w", err)
		}
		n, err := decode([]byte(inner), false)
		if err != nil {
			err = fmt.Errorf("s3event: in SNS envelope Message: %w", err)
		}
		return n, err
	default:
		return Notification{}, errors.New(`s3event: no "Records", no test "Event" and no SNS "Message": the message is not an S3 notification`)
	}
	raws, err := splitRecords(env.Records)
	if err != nil {
		return Notification{}, err
	}
	minio := env.EventName != nil && env.Key != nil
	var n Notification
	var errs []error
	for i, raw := range raws {
		rec, err := decodeRecord(raw, minio)
		if err != nil {
			var re *RecordError
			if errors.As(err, &re) {
				re.Index = i
			}
			errs = append(errs, err)
			continue
		}
		n.Records = append(n.Records, rec)
	}
	return n, errors.Join(errs...)
}

// splitRecords returns the raw records of a Records array (or of a single
// Records object), refusing more than MaxRecords without decoding them all.
func splitRecords(raw json.RawMessage) ([]json.RawMessage, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return []json.RawMessage{raw}, nil
	}
	if len(trimmed) == 0 || trimmed[0] != '[' {
		return nil, errors.New(`s3event: "Records" is neither an array nor an object; the message is not an S3 notification`)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("s3event: Records: %w", err)
	}
	var out []json.RawMessage
	for dec.More() {
		if len(out) == MaxRecords {
			return nil, fmt.Errorf("s3event: more than %d records in one message: %w; split the messages at the producer", MaxRecords, ErrTooManyRecords)
		}
		var r json.RawMessage
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("s3event: Records[%d]: %w", len(out), err)
		}
		out = append(out, r)
	}
	return out, nil
}

type wireRecord struct {
	EventSource string          `json:"eventSource"`
	EventName   string          `json:"eventName"`
	EventTime   string          `json:"eventTime"`
	EventID     json.RawMessage `json:"eventId"`
	OpaqueData  json.RawMessage `json:"opaqueData"`
	S3          *struct {
		Bucket *struct {
			Name string          `json:"name"`
			ID   json.RawMessage `json:"id"`
		} `json:"bucket"`
		Object *struct {
			Key       *string         `json:"key"`
			Size      json.RawMessage `json:"size"`
			ETag      *string         `json:"eTag"`
			ETagOld   *string         `json:"etag"`
			Sequencer string          `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
}

func recErr(field string, format string, args ...any) error {
	return &RecordError{Field: field, Err: fmt.Errorf(format, args...)}
}

func decodeRecord(raw json.RawMessage, minioWrapper bool) (Record, error) {
	w, err := unmarshalRecord(raw)
	if err != nil {
		return Record{}, err
	}
	obj := w.S3.Object
	rec := Record{
		Producer:  producer(&w, minioWrapper),
		Bucket:    w.S3.Bucket.Name,
		EventName: w.EventName,
		Kind:      kindOf(w.EventName),
		Size:      -1,
		Sequencer: obj.Sequencer,
	}
	if rec.Key, err = objectKey(rec.Producer, *obj.Key); err != nil {
		return Record{}, err
	}

	if w.EventTime != "" {
		t, err := time.Parse(time.RFC3339Nano, w.EventTime)
		if err != nil {
			return Record{}, recErr("eventTime", "%q is not RFC 3339", truncate(w.EventTime))
		}
		rec.Time = t
	}

	if rec.Kind == Removed {
		return rec, nil
	}
	etag := obj.ETag
	if etag == nil {
		etag = obj.ETagOld
	}
	if etag != nil {
		rec.ETag = unquote(*etag)
	}
	size, err := parseSize(obj.Size)
	if err != nil {
		return Record{}, recErr("s3.object.size", "%v", err)
	}
	rec.Size = size
	return rec, nil
}

// unmarshalRecord parses one record and checks the fields every record
// needs: s3.bucket.name, s3.object.key and eventName.
func unmarshalRecord(raw json.RawMessage) (wireRecord, error) {
	var w wireRecord
	if err := json.Unmarshal(raw, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return w, recErr(te.Field, "has JSON type %s, want %s", te.Value, te.Type)
		}
		return w, recErr("(record)", "not a JSON object: %v", err)
	}
	if w.S3 == nil {
		return w, recErr("s3", "missing")
	}
	if w.S3.Bucket == nil || w.S3.Bucket.Name == "" {
		return w, recErr("s3.bucket.name", "missing or empty")
	}
	if w.S3.Object == nil || w.S3.Object.Key == nil || *w.S3.Object.Key == "" {
		return w, recErr("s3.object.key", "missing or empty")
	}
	bucket := w.S3.Bucket.Name
	if len(bucket) > MaxBucketLen || !utf8.ValidString(bucket) || strings.ContainsRune(bucket, 0) {
		return w, recErr("s3.bucket.name", "not a bucket name (over %d bytes, invalid UTF-8 or NUL)", MaxBucketLen)
	}
	if w.EventName == "" {
		return w, recErr("eventName", "missing or empty")
	}
	return w, nil
}

// objectKey is the record's key as stored: AWS and MinIO URL-encode it in
// notifications, the other producers send it as it is.
func objectKey(producer, key string) (string, error) {
	switch producer {
	case ProducerAWS, ProducerMinIO:
		k, err := url.QueryUnescape(key)
		if err != nil {
			return "", recErr("s3.object.key", "%s sends URL-encoded keys but %q does not decode: %v", producer, truncate(key), err)
		}
		key = k
	}
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return "", recErr("s3.object.key", "%q is not an object key (empty, over %d bytes, invalid UTF-8 or NUL)", truncate(key), MaxKeyLen)
	}
	return key, nil
}

func producer(w *wireRecord, minioWrapper bool) string {
	switch {
	case w.EventSource == "ceph:s3",
		w.EventID != nil, w.OpaqueData != nil,
		w.S3.Bucket.ID != nil,
		w.S3.Object.ETagOld != nil && w.S3.Object.ETag == nil:
		return ProducerCeph
	case w.EventSource == "minio:s3", minioWrapper:
		return ProducerMinIO
	case w.EventSource == "aws:s3" && strings.HasPrefix(w.EventName, "s3:"):
		return ProducerVersityGW
	case w.EventSource == "aws:s3":
		return ProducerAWS
	}
	return ProducerUnknown
}

func kindOf(name string) Kind {
	name = strings.TrimPrefix(name, "s3:")
	switch {
	case strings.HasPrefix(name, "ObjectCreated:"):
		return Created
	case strings.HasPrefix(name, "ObjectRemoved:"),
		name == "LifecycleExpiration:Delete",
		name == "LifecycleExpiration:DeleteMarkerCreated",
		name == "ObjectLifecycle:Expiration:Current",
		name == "ObjectLifecycle:Expiration:DeleteMarker":
		return Removed
	}
	return Other
}

// parseSize accepts a JSON number or a decimal string; absent or null is -1.
func parseSize(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return -1, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("not a string: %v", err)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a non-negative integer", truncate(s))
	}
	return n, nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// truncate keeps hostile values out of error messages at full length.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
