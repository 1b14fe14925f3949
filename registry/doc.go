// Package registry keeps LUN numbers stable across the fleet: every worker
// presents an image at the same LUN index for the image's whole life, and
// an index is not given to another image until its quarantine is over
// (an initiator that knows a LUN index and is then shown another image at
// it reads the wrong image: a known cause of corruption and of CSM's "LUN
// assignment changed" incidents).
//
// Three implementations of Registry: KV (the fleet registry in a JetStream
// KV bucket, default "sbps-luns"), Local (one JSON file in STATE_DIR, for
// LUN_REGISTRY=local and for outages), and Fallback (KV within a time
// limit, else Local, with Reconcile when the fleet is back).
//
// # Allocation
//
// The index chosen for a new name is the lowest index in 0..65535 that was
// never handed out, or whose image was released at least the quarantine
// (LUN_QUARANTINE, default 24h) ago. A name that already has an index keeps
// it; a released name asking again within the quarantine (or later, if
// nobody took it) gets its old index back. When every index is in use or in
// quarantine the answer is ErrExhausted. Adopt is the same with a preferred
// index: the index already used on the node is taken if it is free, else
// the registry's answer (the name's existing index, or the lowest free one)
// is returned and the caller reports the mismatch.
//
// # Key layout and atomicity of KV
//
// Two key spaces, each written only by create-if-absent or compare-and-swap
// on the key's revision:
//
//   - idx.<n> = {"name", "index", "image", "first_seen", "released_at",
//     "node"}: the claim on index n. It is the single authority on who owns
//     n. Every change of owner or state of n (claim, reactivation, release,
//     reuse after quarantine) is one create or CAS on this one key, so two
//     names can never both own n: of two writers starting from the same
//     revision exactly one succeeds, and the loser re-reads and moves on.
//   - name.<name> = {"index"}: the pointer from a name to its index, valid
//     only while idx.<index> names it back (Lookup and All check both).
//
// Index(name): (1) read the pointer; if idx.<p> is owned by name, return p
// (reactivating it by CAS if released). (2) Otherwise claim the lowest
// claimable index n with create-if-absent (or CAS over an expired release,
// or over a claim that already names this name). (3) Publish the pointer by
// create-if-absent (or CAS over a stale one). An agent that loses (3) read
// a pointer that another agent published first: it deletes its own claim
// (a CAS on the claim's revision, so it never removes a later write, and
// only when the winning pointer names another index) and starts again at
// (1), where it finds the winner's index. So every agent racing on the same
// image ends with the same number, and no index has two owners. A crash
// between (2) and (3) leaves a claim that names the crashed image; it is
// never given to another image, and the image's next allocation takes it
// over. When a write's outcome is unknown (timeout), nothing is rolled back.
//
// Each KV keeps a snapshot of the idx.* keys to find candidates without a
// round trip per index; it is reloaded every CacheTTL and before declaring
// exhaustion. The snapshot only guides the search: ownership is decided by
// the server's create/CAS, never by the cache.
//
// # Local
//
// The same rules over one JSON file: each operation is a read-modify-write
// under a flock of <file>.lock, written as temp file + fsync + rename +
// directory fsync, so a crash leaves the old or the new file; a half-written
// temp file is ignored.
//
// # Fallback
//
// Each fleet call gets LUN_REGISTRY_TIMEOUT (default 2s). On failure the
// call is answered by Local, OnLocal is called and LocalUses counts it; for
// RetryAfter after a failure the fleet is skipped so a pass over many images
// does not wait once per image. Fleet answers are mirrored into Local, so
// images the fleet already numbered keep their numbers during an outage.
// Local changes are marked unsynced; while a name has unsynced changes it is
// answered locally. Reconcile offers them with Adopt (first writer wins)
// and replays releases; a disagreement is returned as a Conflict and never
// renumbered.
//
// # Concurrency
//
// All methods of KV, Local and Fallback are safe for concurrent use. Any
// number of agents (KV values on separate connections) may share a bucket,
// and several processes may share a Local directory. Operations on
// different names do not block each other beyond the server's serialisation
// of each key; operations on one name converge on one answer. No method
// starts a goroutine that outlives it.
package registry
