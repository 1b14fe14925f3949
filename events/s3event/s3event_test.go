package s3event

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const refDir = "../../testdata/reference/s3events"

func readRef(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(refDir, name))
	if err != nil {
		t.Fatalf("reading reference sample: %v", err)
	}
	return data
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestDecodeReferenceSamples(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []Record
		test bool
	}{
		{name: "aws put", file: "aws-put.json", want: []Record{{
			Producer: ProducerAWS, Bucket: "mybucket", Key: "HappyFace.jpg", Kind: Created,
			EventName: "ObjectCreated:Put", ETag: "d41d8cd98f00b204e9800998ecf8427e", Size: 1024,
			Sequencer: "0055AED6DCD90281E5", Time: mustTime(t, "1970-01-01T00:00:00.000Z"),
		}}},
		{name: "aws test event", file: "aws-testevent.json", test: true},
		{name: "aws multipart upload", file: "aws-mpu-real.json", want: []Record{{
			Producer: ProducerAWS, Bucket: "noaa-goes17",
			Key:  "ABI-L2-MCMIPF/2019/216/17/OR_ABI-L2-MCMIPF-M6_G17_s20192161730341_e20192161739408_c20192161739497.nc",
			Kind: Created, EventName: "ObjectCreated:CompleteMultipartUpload",
			ETag: "92917931abf93d1adfe0f1d8dce3b293-3", Size: 24209676,
			Sequencer: "005D48A4848C315273", Time: mustTime(t, "2019-08-05T21:49:59.156Z"),
		}}},
		{name: "aws delete", file: "aws-delete-real.json", want: []Record{{
			Producer: ProducerAWS, Bucket: "noaa-dcdb-bathymetry-pds", Key: "docs/test.txt",
			Kind: Removed, EventName: "ObjectRemoved:Delete", ETag: "", Size: -1,
			Sequencer: "00659DDC0415E11641", Time: mustTime(t, "2024-01-09T23:51:32.093Z"),
		}}},
		{name: "rgw doc sample, size as string", file: "rgw-put.json", want: []Record{{
			Producer: ProducerCeph, Bucket: "mybucket1", Key: "myimage1.jpg", Kind: Created,
			EventName: "ObjectCreated:Put", ETag: "37b51d194a7513e45b56f6524f2d51f2", Size: 1024,
			Sequencer: "F7E6D75DC742D108", Time: mustTime(t, "2019-11-22T13:47:35.124724Z"),
		}}},
		{name: "rgw real, size as number", file: "rgw-put-real.json", want: []Record{{
			Producer: ProducerCeph, Bucket: "jayanth", Key: "notification.json", Kind: Created,
			EventName: "ObjectCreated:Put", ETag: "a60023221945e53a31f07df71f37f032", Size: 177,
			Sequencer: "66E42466712CA919", Time: mustTime(t, "2024-04-21T10:03:18.419013Z"),
		}}},
		{name: "minio wrapper, query-escaped key", file: "minio-nats-put.json", want: []Record{{
			Producer: ProducerMinIO, Bucket: "images", Key: "photos/my photo.jpg", Kind: Created,
			EventName: "s3:ObjectCreated:Put", ETag: "1d97bf45ecb37f7a7b699418070df08f", Size: 56060,
			Sequencer: "1892F0E3B8F2A6C4", Time: mustTime(t, "2026-02-12T20:18:48.123Z"),
		}}},
		{name: "versitygw, quoted etag, raw key", file: "versitygw-nats-put.json", want: []Record{{
			Producer: ProducerVersityGW, Bucket: "mybucket", Key: "photos/my photo.jpg", Kind: Created,
			EventName: "s3:ObjectCreated:Put", ETag: "1d97bf45ecb37f7a7b699418070df08f", Size: 56060,
			Sequencer: "1", Time: mustTime(t, "2026-08-19T23:47:51Z"),
		}}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.name, func(t *testing.T) {
			data := readRef(t, tt.file)
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s) error = %v, want nil", tt.file, err)
			}
			checkRecords(t, tt.file, got, Notification{Records: tt.want, Test: tt.test})
		})
	}
	// Every sample in the reference folder must be covered above.
	files, err := filepath.Glob(filepath.Join(refDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no reference samples in %s: %v", refDir, err)
	}
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("reference sample %s has no test case; add one", filepath.Base(f))
		}
	}
}

func checkRecords(t *testing.T, input string, got, want Notification) {
	t.Helper()
	if got.Test != want.Test {
		t.Errorf("Decode(%q).Test = %v, want %v", input, got.Test, want.Test)
	}
	if len(got.Records) != len(want.Records) {
		t.Fatalf("Decode(%q) = %d records %+v, want %d", input, len(got.Records), got.Records, len(want.Records))
	}
	for i := range want.Records {
		g, w := got.Records[i], want.Records[i]
		if !g.Time.Equal(w.Time) {
			t.Errorf("Decode(%q).Records[%d].Time = %v, want %v", input, i, g.Time, w.Time)
		}
		g.Time, w.Time = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("Decode(%q).Records[%d] = %+v, want %+v", input, i, g, w)
		}
	}
}

// rec builds a one-record message; object is the JSON of s3.object.
func rec(source, name, bucket, object string) string {
	return `{"eventSource":"` + source + `","eventName":"` + name + `","s3":{"bucket":{"name":"` + bucket + `"},"object":` + object + `}}`
}

func msg(records ...string) string {
	return `{"Records":[` + strings.Join(records, ",") + `]}`
}

func TestDecodeVariants(t *testing.T) {
	awsPut := rec("aws:s3", "ObjectCreated:Put", "b", `{"key":"a/b","size":1,"eTag":"e"}`)
	snsOf := func(inner string) string {
		s, _ := json.Marshal(inner)
		return `{"Type":"Notification","MessageId":"x","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":` + string(s) + `,"Timestamp":"2024-01-01T00:00:00Z"}`
	}
	tests := []struct {
		name  string
		input string
		want  Notification
	}{
		{
			name:  "sns envelope",
			input: snsOf(msg(awsPut)),
			want:  Notification{Records: []Record{{Producer: ProducerAWS, Bucket: "b", Key: "a/b", Kind: Created, EventName: "ObjectCreated:Put", ETag: "e", Size: 1}}},
		},
		{
			name:  "sns envelope of a test event",
			input: snsOf(`{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}`),
			want:  Notification{Test: true},
		},
		{
			name:  "versitygw test event",
			input: `{"Bucket":"Test-Bucket","Event":"s3:TestEvent","Service":"S3","Time":"2026-08-19T23:47:51Z"}`,
			want:  Notification{Test: true},
		},
		{
			name:  "aws form-encoded key",
			input: msg(rec("aws:s3", "ObjectCreated:Put", "b", `{"key":"PE/my+image%2B1%25.squashfs","size":2,"eTag":"e"}`)),
			want:  Notification{Records: []Record{{Producer: ProducerAWS, Bucket: "b", Key: "PE/my image+1%.squashfs", Kind: Created, EventName: "ObjectCreated:Put", ETag: "e", Size: 2}}},
		},
		{
			name:  "minio key with %2F and +",
			input: `{"EventName":"s3:ObjectCreated:Put","Key":"b/PE/x y+z","Records":[` + rec("minio:s3", "s3:ObjectCreated:Put", "b", `{"key":"PE%2Fx+y%2Bz","size":3,"eTag":"e"}`) + `]}`,
			want:  Notification{Records: []Record{{Producer: ProducerMinIO, Bucket: "b", Key: "PE/x y+z", Kind: Created, EventName: "s3:ObjectCreated:Put", ETag: "e", Size: 3}}},
		},
		{
			name:  "versitygw key with literal % and +",
			input: msg(rec("aws:s3", "s3:ObjectCreated:Put", "b", `{"key":"PE/100%+a%2F.img","size":4,"eTag":"\"e\"","versionId":null}`)),
			want:  Notification{Records: []Record{{Producer: ProducerVersityGW, Bucket: "b", Key: "PE/100%+a%2F.img", Kind: Created, EventName: "s3:ObjectCreated:Put", ETag: "e", Size: 4}}},
		},
		{
			name:  "ceph key with literal % and +",
			input: msg(rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"a%zz+b","size":5,"eTag":"e"}`)),
			want:  Notification{Records: []Record{{Producer: ProducerCeph, Bucket: "b", Key: "a%zz+b", Kind: Created, EventName: "ObjectCreated:Put", ETag: "e", Size: 5}}},
		},
		{
			name:  "old rgw: s3: prefix, lowercase etag, aws:s3 source, size string",
			input: `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"s3:ObjectCreated:Put","eventId":"","opaqueData":"","s3":{"bucket":{"name":"b","id":"x.1"},"object":{"key":"k+1","size":"42","etag":"abc"}}}]}`,
			want:  Notification{Records: []Record{{Producer: ProducerCeph, Bucket: "b", Key: "k+1", Kind: Created, EventName: "s3:ObjectCreated:Put", ETag: "abc", Size: 42}}},
		},
		{
			name:  "rgw delete marker created: removed, no etag, unknown size",
			input: msg(rec("ceph:s3", "ObjectRemoved:DeleteMarkerCreated", "b", `{"key":"k","size":0,"eTag":""}`)),
			want:  Notification{Records: []Record{{Producer: ProducerCeph, Bucket: "b", Key: "k", Kind: Removed, EventName: "ObjectRemoved:DeleteMarkerCreated", Size: -1}}},
		},
		{
			name:  "ceph lua single Records object",
			input: `{"Records":` + rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"k","size":7,"eTag":""}`) + `}`,
			want:  Notification{Records: []Record{{Producer: ProducerCeph, Bucket: "b", Key: "k", Kind: Created, EventName: "ObjectCreated:Put", Size: 7}}},
		},
		{
			name:  "unknown producer keeps the key raw, other kind",
			input: msg(rec("storj:s3", "ObjectRestore:Completed", "b", `{"key":"a+b%20"}`)),
			want:  Notification{Records: []Record{{Producer: ProducerUnknown, Bucket: "b", Key: "a+b%20", Kind: Other, EventName: "ObjectRestore:Completed", Size: -1}}},
		},
		{
			name:  "lifecycle expiration is removed",
			input: msg(rec("aws:s3", "LifecycleExpiration:Delete", "b", `{"key":"k"}`)),
			want:  Notification{Records: []Record{{Producer: ProducerAWS, Bucket: "b", Key: "k", Kind: Removed, EventName: "LifecycleExpiration:Delete", Size: -1}}},
		},
		{
			name:  "duplicates are kept: dedupe is the caller's",
			input: msg(awsPut, awsPut),
			want: Notification{Records: []Record{
				{Producer: ProducerAWS, Bucket: "b", Key: "a/b", Kind: Created, EventName: "ObjectCreated:Put", ETag: "e", Size: 1},
				{Producer: ProducerAWS, Bucket: "b", Key: "a/b", Kind: Created, EventName: "ObjectCreated:Put", ETag: "e", Size: 1},
			}},
		},
		{name: "empty Records array", input: `{"Records":[]}`, want: Notification{}},
		{name: "null Records", input: `{"Records":null}`, want: Notification{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatalf("Decode(%q) error = %v, want nil", tt.input, err)
			}
			checkRecords(t, tt.input, got, tt.want)
		})
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	good := rec("aws:s3", "ObjectCreated:Put", "b", `{"key":"good","size":1,"eTag":"e"}`)
	tests := []struct {
		name      string
		bad       string
		wantField string
	}{
		{name: "no bucket", bad: rec("aws:s3", "ObjectCreated:Put", "", `{"key":"k"}`), wantField: "s3.bucket.name"},
		{name: "no key", bad: rec("aws:s3", "ObjectCreated:Put", "b", `{"size":1}`), wantField: "s3.object.key"},
		{name: "empty key", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":""}`), wantField: "s3.object.key"},
		{name: "key decodes to empty", bad: rec("aws:s3", "ObjectCreated:Put", "b", `{"key":"%00"}`), wantField: "s3.object.key"},
		{name: "bad escape from aws", bad: rec("aws:s3", "ObjectCreated:Put", "b", `{"key":"a%zz"}`), wantField: "s3.object.key"},
		{name: "bad utf-8 from minio", bad: rec("minio:s3", "s3:ObjectCreated:Put", "b", `{"key":"a%FF"}`), wantField: "s3.object.key"},
		{name: "key too long", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"`+strings.Repeat("k", MaxKeyLen+1)+`"}`), wantField: "s3.object.key"},
		{name: "key of wrong type", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":5}`), wantField: "s3.object.key"},
		{name: "negative size", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"k","size":-1}`), wantField: "s3.object.size"},
		{name: "size not a number", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"k","size":"big"}`), wantField: "s3.object.size"},
		{name: "fractional size", bad: rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"k","size":1.5}`), wantField: "s3.object.size"},
		{name: "no event name", bad: rec("ceph:s3", "", "b", `{"key":"k"}`), wantField: "eventName"},
		{name: "no s3 member", bad: `{"eventName":"ObjectCreated:Put"}`, wantField: "s3"},
		{name: "record not an object", bad: `"hello"`, wantField: "(record)"},
		{name: "bad time", bad: `{"eventName":"ObjectCreated:Put","eventTime":"yesterday","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}`, wantField: "eventTime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := msg(good, tt.bad, good)
			got, err := Decode([]byte(input))
			if err == nil {
				t.Fatalf("Decode(%q) error = nil, want a record error", input)
			}
			var re *RecordError
			if !errors.As(err, &re) {
				t.Fatalf("Decode(%q) error = %v, want a *RecordError", input, err)
			}
			if re.Index != 1 || re.Field != tt.wantField {
				t.Errorf("Decode(%q) error at record %d field %q, want record 1 field %q", input, re.Index, re.Field, tt.wantField)
			}
			if !strings.Contains(err.Error(), "record 1") || !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("Decode(%q) error = %q, want it to name record 1 and %s", input, err, tt.wantField)
			}
			if len(got.Records) != 2 || got.Records[0].Key != "good" || got.Records[1].Key != "good" {
				t.Errorf("Decode(%q) = %+v, want the two valid records kept", input, got.Records)
			}
		})
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	many := msg(strings.Repeat(rec("ceph:s3", "ObjectCreated:Put", "b", `{"key":"k"}`)+",", MaxRecords) + `{}`)
	tests := []struct {
		name    string
		input   string
		wantErr error  // errors.Is target, or nil to only require an error
		wantMsg string // substring of the message
	}{
		{name: "not json", input: `not json`, wantMsg: "not a JSON object"},
		{name: "json array", input: `[]`, wantMsg: "not a JSON object"},
		{name: "empty object", input: `{}`, wantMsg: "not an S3 notification"},
		{name: "records is a string", input: `{"Records":"x"}`, wantMsg: "neither an array nor an object"},
		{name: "sns message not a string", input: `{"Type":"Notification","Message":{}}`, wantMsg: "SNS envelope"},
		{name: "sns inside sns refused", input: `{"Message":"{\"Message\":\"{}\"}"}`, wantMsg: "not an S3 notification"},
		{name: "too many records", input: many, wantErr: ErrTooManyRecords, wantMsg: "more than 1000 records"},
		{name: "too large", input: `{"Records":[],"pad":"` + strings.Repeat("x", MaxSize) + `"}`, wantErr: ErrTooLarge, wantMsg: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.input))
			if err == nil {
				t.Fatalf("Decode(%.60q) error = nil, want one", tt.input)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Decode(%.60q) error = %v, want errors.Is %v", tt.input, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Decode(%.60q) error = %q, want it to contain %q", tt.input, err, tt.wantMsg)
			}
			if len(got.Records) != 0 || got.Test {
				t.Errorf("Decode(%.60q) = %+v, want nothing", tt.input, got)
			}
		})
	}
}

func TestDecodeLimited(t *testing.T) {
	data := readRef(t, "aws-put.json")
	tests := []struct {
		name    string
		max     int64
		wantErr bool
	}{
		{name: "exact size fits", max: int64(len(data))},
		{name: "one byte short", max: int64(len(data)) - 1, wantErr: true},
		{name: "zero means MaxSize", max: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeLimited(bytes.NewReader(data), tt.max)
			if tt.wantErr {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("DecodeLimited(aws-put.json, %d) error = %v, want ErrTooLarge", tt.max, err)
				}
				return
			}
			if err != nil || len(got.Records) != 1 {
				t.Fatalf("DecodeLimited(aws-put.json, %d) = %+v, %v, want 1 record", tt.max, got, err)
			}
		})
	}
}

func TestKindString(t *testing.T) {
	for _, tt := range []struct {
		name string
		k    Kind
		want string
	}{{"created", Created, "created"}, {"removed", Removed, "removed"}, {"other", Other, "other"}} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.k.String(); got != tt.want {
				t.Errorf("Kind(%d).String() = %q, want %q", tt.k, got, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(refDir, "*.json"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"Records":{"eventSource":"ceph:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k","size":"1","etag":"x"}}}}`))
	f.Add([]byte(`{"Message":"{\"Records\":[{\"eventSource\":\"aws:s3\",\"eventName\":\"ObjectRemoved:Delete\",\"s3\":{\"bucket\":{\"name\":\"b\"},\"object\":{\"key\":\"a+b%2F\"}}}]}"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Decode(data)
		if len(n.Records) > MaxRecords {
			t.Fatalf("Decode returned %d records, over MaxRecords", len(n.Records))
		}
		if n.Test && (len(n.Records) > 0 || err != nil) {
			t.Fatalf("Decode returned a test event with records or an error: %+v, %v", n, err)
		}
		for i, r := range n.Records {
			if r.Bucket == "" || r.Key == "" {
				t.Fatalf("Decode(%q).Records[%d] has an empty bucket or key: %+v", data, i, r)
			}
			if r.Kind == Removed && (r.ETag != "" || r.Size != -1) {
				t.Fatalf("Decode(%q).Records[%d] removed with ETag/Size: %+v", data, i, r)
			}
			if r.Size < -1 {
				t.Fatalf("Decode(%q).Records[%d].Size = %d", data, i, r.Size)
			}
		}
	})
}
