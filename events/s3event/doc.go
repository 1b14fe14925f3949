// Package s3event decodes S3 bucket notifications, as sent by every producer
// the agent may meet, into one flat Record type.
//
// # Producers and envelopes
//
// Decode accepts:
//
//   - AWS: {"Records":[...]}, eventSource "aws:s3", eventName without "s3:"
//     ("ObjectCreated:Put"), also wrapped in an SNS envelope whose "Message"
//     member is the notification as a JSON string (one level of wrapping);
//   - Ceph RGW: {"Records":[...]}, eventSource "ceph:s3"; old releases'
//     "s3:" eventName prefix and lowercase "etag" member; size as a JSON
//     number or a decimal string; Ceph's Lua NATS adapter's single object
//     {"Records":{...}} instead of an array;
//   - MinIO: {"EventName":..,"Key":"bucket/key","Records":[...]};
//   - versitygw: {"Records":[...]}, eventSource "aws:s3" but eventName with
//     the "s3:" prefix, quoted eTag, "versionId": null;
//   - test events ({"Event":"s3:TestEvent",...} from AWS, versitygw's
//     {"Bucket":"Test-Bucket","Event":"s3:TestEvent",...}): Notification.Test
//     is true, there are no records, and the error is nil.
//
// # Which producer, and how the object key is decoded
//
// The producer is told per record, in this order:
//
//  1. eventSource "ceph:s3", or a Ceph-only member (record "eventId" or
//     "opaqueData", bucket "id", object "etag" in lower case): ceph. Key raw.
//  2. eventSource "minio:s3", or the MinIO wrapper: minio. Key unescaped
//     with url.QueryUnescape (MinIO sends url.QueryEscape(key)).
//  3. eventSource "aws:s3" and eventName starting with "s3:": versitygw
//     (AWS itself never prefixes eventName). Key raw.
//  4. eventSource "aws:s3": aws. Key form-URL-decoded ("+" is a space,
//     %XX a byte), as AWS documents.
//  5. anything else: unknown. Key raw.
//
// A raw key is never unescaped, so a key that really contains "%" or "+"
// survives for producers that do not encode (ceph, versitygw, unknown).
// Decoded keys must be valid UTF-8, free of NUL and at most MaxKeyLen bytes.
//
// # Records and errors
//
// Kind comes from eventName with any "s3:" prefix removed: "ObjectCreated:*"
// is Created; "ObjectRemoved:*" (Delete, DeleteMarkerCreated) and the
// lifecycle expirations that remove the current object
// ("LifecycleExpiration:Delete", "LifecycleExpiration:DeleteMarkerCreated",
// Ceph's "ObjectLifecycle:Expiration:Current" and
// "ObjectLifecycle:Expiration:DeleteMarker") are Removed; anything else is Other.
// A Removed record always has ETag "" and Size -1; a Created record without
// a size has Size -1. ETag has one pair of surrounding quotes stripped and is
// otherwise opaque (multipart ETags look like "<hex>-<parts>").
//
// A record that cannot be used (no bucket, no key, a key that does not
// decode, a size that is not a non-negative integer, an eventTime that is not
// RFC 3339) is skipped and reported as a *RecordError naming its index and
// field. Decode then returns the valid records of the same message together
// with the joined errors: when err != nil, Notification.Records still holds
// every record that decoded, and each of them is complete. A message that is
// not a notification at all, larger than MaxSize, or with more than
// MaxRecords records is refused whole (no records; errors.Is ErrTooLarge or
// ErrTooManyRecords for the last two).
//
// # Guarantees
//
// Decoding is pure: no I/O, no shared state, safe for concurrent use. It does
// not de-duplicate or order records; producers redeliver and reorder, and the
// caller re-reads the truth from S3. Memory is bounded by MaxSize (Decode
// refuses larger input; DecodeLimited reads at most max+1 bytes) and by
// MaxRecords. No returned record has an empty Bucket or Key.
package s3event
