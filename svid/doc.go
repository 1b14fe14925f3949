// Package svid gives the agent its SPIFFE credentials from the SPIRE agent's
// Workload API (a unix socket, by default /var/lib/spire/agent.sock).
//
// JWTSource hands out the JWT-SVID the agent presents to IMS as a bearer
// token. It accepts only the sbps-marshal workload IDs
// (spiffe://shasta/ncn/workload/sbps-marshal or
// spiffe://shasta/ncn/<xname>/workload/sbps-marshal), caches the token until
// shortly before it expires and fetches a new one on demand; Invalidate drops
// the cache after the server refused the token. X509Source provides
// *tls.Config values for mTLS (NATS) from the node's X.509-SVID and trust
// bundle, rotating both as the SPIRE agent pushes updates: every handshake
// presents the SVID of the moment. StartX509Source does not wait for the
// SPIRE agent (handshakes fail until the first SVID arrives, and it keeps
// retrying); NewX509Source waits for the first SVID.
//
// Where the SVIDs come from (SBPS_MARSHAL_SPIFFE_SOURCE, see Resolve):
// SPIRE attests the process that calls the Workload API by its binary, and
// CSM registers the agent's ID only for /usr/bin/sbps-marshal-spire-agent,
// a hard link of spire-agent. With a CLI in JWTConfig or X509Config the
// sources run that CLI (`api fetch jwt -audience <aud> -socketPath <sock>
// -output json`, `api fetch x509 -socketPath <sock> -write <dir>`), with a
// timeout, in its own process group, as the old agent did; without one
// they call the Workload API from this process, which SPIRE refuses with
// PermissionDenied "no identity issued" unless this binary's path is
// registered too (the error says so).
//
// Concurrency: all methods of JWTSource and X509Source are safe for concurrent
// use. Concurrent Token calls that miss the cache share one Workload API
// fetch; each caller still stops waiting when its own ctx ends, and the fetch
// itself is bounded by JWTConfig.FetchTimeout, not by any one caller's ctx.
// A failed fetch is not cached: the next Token call tries again.
//
// Tokens and keys are never logged and never appear in errors.
package svid
