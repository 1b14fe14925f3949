// Package imsevent defines the IMS change event that sbps-marshal's IMS
// bridge publishes on NATS and the agent consumes: its JSON schema (version
// 1, documented in SCHEMA.md), Encode, a validating Decode and the
// JetStream de-duplication id.
//
// IMS emits no events itself; the bridge polls IMS and publishes one Event
// per image created, changed or deleted. An Event is a hint: the agent
// re-reads the image from IMS before acting, so a lost, repeated or reordered
// event costs at most one extra read.
//
// # Guarantees
//
//   - Decode accepts only version 1, an image id that is a canonical UUID
//     (returned in lower case), a known change, a bounded message
//     (MaxSize) and bounded, printable fields. Anything else is refused with
//     an error naming the field, so no unchecked id ever reaches a URL or a
//     command line.
//   - Encode refuses what Decode would refuse, so every encoded event decodes
//     to an equal Event.
//   - DedupID is a pure function of (id, change, digest): the same change of
//     the same image gives the same id on every publisher and every poll.
//   - Everything is pure and safe for concurrent use; there is no shared state.
package imsevent
