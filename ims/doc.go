// Package ims is the agent's client for the HPE CSM Image Management Service
// (IMS, OpenAPI spec in testdata/reference/ims/openapi.yaml) and the parser
// for the manifest.json files IMS images link to.
//
// It provides:
//
//   - [Client]: List and Get of image records (GET /v3/images[/{id}]) and the
//     metadata PATCH used for tagging, with a bearer token from a
//     [TokenSource], a per-request timeout (IMS_TIMEOUT) and a bounded body.
//   - [Image] and [Listing]: records decoded one by one, so a record with wrong
//     types is reported in [Listing.Errors] instead of losing the listing.
//   - [Projectable]: the old agent's tagging rule (IMS_TAGGING).
//   - [ParseManifest], [Manifest.Rootfs] and [SplitS3Path]: the single rootfs
//     squashfs artifact and its S3 location.
//
// Concurrency: a [Client] is safe for concurrent use by multiple goroutines
// once built; its counters ([Client.Stats]) are atomic. [FileToken] is safe
// for concurrent use. [Image], [Listing] and [Manifest] are plain values with
// no internal synchronisation. The client never retries except once after a
// 401 when its token source can be invalidated; callers own retry and backoff.
// Results carry no ordering promise beyond the order IMS returned.
package ims
