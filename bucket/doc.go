// Package bucket is the agent's S3 inventory: it lists, heads and fetches
// objects of the boot-images bucket (Ceph RGW in CSM) with aws-sdk-go-v2,
// path-style addressing, verified TLS and a small bounded number of retries.
//
// List is all-or-nothing: a failure on any page returns an error and no
// objects, so a caller never deletes projections on partial information.
// ETags are returned without their quotes and treated as opaque strings
// (multipart uploads keep their "<hex>-<parts>" form).
//
// Credentials come from LoadCredentialFile (S3_CREDENTIAL_FILE, one line
// KEYID:SECRET, mode 0600) or the SDK's default chain. Secrets never appear
// in errors.
//
// Concurrency: a Client is safe for concurrent use by many goroutines; its
// request counters (Stats) are atomic. Calls do not share state beyond the
// HTTP connection pool, so their results come in whatever order they finish.
package bucket
