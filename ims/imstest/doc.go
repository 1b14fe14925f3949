// Package imstest is an in-memory IMS (Image Management Service) for tests
// and the demo, serving the image API of testdata/reference/ims/openapi.yaml:
// GET/POST/DELETE /v3/images and GET/PATCH/DELETE /v3/images/{image_id},
// mounted at both /v3/images and the CSM API gateway path
// /apis/ims/v3/images.
//
// Records have the spec's ImageRecord shape; metadata is omitted when the
// server emulates IMS older than 3.16 (Options.Legacy). PATCH follows IMS:
// metadata set/remove, arch, and link (409 when a different link is already
// set). A pluggable Verify checks bearer tokens (401 otherwise, like the
// gateway). Faults for reliability tests: FailNext (status for the next N
// requests), SetLatency, SetListMode (drop half, empty), Hide (leave
// chosen images out of the listing), SetGatewayNoRoute (Envoy's 404 with an
// empty body for every path, as during an IMS redeploy). Contract checks every
// exchange against the OpenAPI document with kin-openapi.
//
// Concurrency: a Server is safe for concurrent use; the Go API (Put, Tag,
// Untag, Delete, fault setters) may be called while requests are served and
// takes effect for requests that start afterwards. The listing order is the
// insertion order. Stats counters are atomic. A Contract is safe for
// concurrent use once loaded.
package imstest
