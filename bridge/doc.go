// Package bridge publishes to NATS the changes the agents cannot get there
// by themselves: Ceph RGW bucket notifications (Webhook, the HTTP push
// endpoint of `sbps-marshal bridge webhook`) and IMS image changes
// (IMSPoller, `sbps-marshal bridge ims`, which polls IMS once for the whole
// cluster). Everything published is a hint: agents re-read S3 and IMS before
// acting, so a duplicate costs one extra read and their periodic resync
// repairs anything lost.
//
// # Webhook delivery
//
// One notification per POST, published byte for byte to the S3 subject. The
// answer is 200 only once NATS has the message: with a stream, after the
// stream acknowledged it; without, after a flush reached the server. NATS
// down, slow (PublishTimeout) or the stream refusing → 503, and RGW
// (persistent topic; http-ack-level non-error on recent Ceph) retries, so a
// notification RGW sent is delivered at least once. Each message carries
// Nats-Msg-Id = NotificationID: redeliveries within the stream's duplicate
// window (2 minutes with events.EnsureStream) are stored once; later ones are
// duplicate hints. Test events and notifications without records get 200 and
// are not published; bodies that are not notifications get 400 (RGW should
// not retry those), over MaxBody 413, non-JSON types 415, a missing or
// wrong token 401. Listen binds loopback when the address names no host.
//
// # IMS poller delivery
//
// Every Interval the poller lists IMS, compares with its snapshot and
// publishes one imsevent.Event per image created, changed (Fields says which
// of link, metadata, name, arch) or deleted: creations and changes in
// listing order, then deletions by id. An event counts as sent when NATS has
// it (stream ack with a stream); the snapshot is advanced per published
// event and saved after the poll, so an event NATS did not take is published
// again at the next poll (at least once while the bridge runs).
//
//   - First run ever (no snapshot in the store): the poller records the
//     snapshot and publishes nothing; agents' start-up resync covers that
//     state.
//   - Restart: the snapshot comes back from the store (JetStream KV bucket
//     DefaultKVBucket, or a state file), so changes made while the bridge was
//     down are published once, and nothing else. A change published but not
//     yet saved when the bridge died is published again, with the same
//     de-duplication id.
//   - Deletes are never guessed: a failed listing publishes nothing; ids of
//     records that do not decode (Listing.Errors) are never deleted, and any
//     such record without a readable id holds back every delete; every other
//     missing image is confirmed gone with a GET (404) first, and when IMS
//     still has one the listing is known to be incomplete and every delete
//     waits for a later poll.
//   - High availability: several bridges may run. Each publishes every
//     change it sees, with Nats-Msg-Id = Event.DedupID(), which is the same
//     on every bridge for the same change; with a stream the copies are
//     dropped within its duplicate window, without one agents get harmless
//     duplicate hints.
//
// # Concurrency
//
// Webhook and IMSPoller are safe for concurrent use; Stats may be called at
// any time. PollOnce calls are serialised. Nothing is global; loggers are
// passed in. Tokens are compared in constant time and never logged.
package bridge
