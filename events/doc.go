// Package events turns everything that may change what a node should
// project into one stream of typed events: S3 bucket notifications and IMS
// change events from NATS (core subscriptions or a JetStream durable
// consumer), fleet resync requests, NATS reconnections, changes of
// saveconfig.json on disk and SIGHUP.
//
// Events are hints. The consumer maps each to the projection keys it
// touches and re-reads the truth (S3, IMS, saveconfig.json) before acting,
// so a lost, repeated or reordered event costs at most one extra read, and
// a Resync (re-read everything) covers any event that may have been lost.
//
// # Sources
//
// Every source has Start(ctx, out chan<- Event) error, blocks until ctx
// ends and then returns nil; none closes out. Merge runs several on one
// channel.
//
//   - NATSSource (NewNATS): S3Object events (one per usable record of a
//     notification for the configured bucket; test notifications, other
//     buckets, oversized and undecodable messages are dropped, counted in
//     Stats and logged with the subject), IMSImage events, and Resync
//     events for a fleet resync request (core NATS, DefaultResyncSubject;
//     see PublishResync), after every reconnection, after a first
//     connection made only after Start, and when NATS reports that it
//     dropped messages for a slow consumer. It never returns because of a
//     bus outage: connecting and reconnecting are retried forever, with
//     jittered waits, in the background.
//   - With NATSConfig.Stream, S3 and IMS events come from the node's own
//     durable consumer ConsumerPrefix+NodeName on that stream (created when
//     missing; a missing stream is logged with how to create it, see
//     StreamHelp and EnsureStream, and retried). Every node has its own
//     consumer, so every node sees every event (fan-out); a node that was
//     down gets what it missed when it comes back.
//   - Watcher: LIOChanged with the digest (ContentDigest) of
//     saveconfig.json when its parsed content changed.
//   - Signals: Resync for each SIGHUP.
//
// # Delivery and acknowledgement
//
// Core NATS is at most once: events published while the node is
// disconnected are lost, and the Resync after the reconnection repairs
// that. JetStream is at least once: a message is acknowledged only when
// every event it produced is Done(nil); Done(err) NAKs it with a delay
// (NATSConfig.NakDelay, doubled per delivery up to MaxNakDelay) and
// JetStream redelivers it; a message whose events are not Done within
// NATSConfig.AckWait is redelivered too. Messages that produce no event
// are acknowledged at once (undecodable ones terminated, so they do not
// loop). The consumer must call Done exactly once per event; Done is a
// no-op for sources without acknowledgement.
//
// # Ordering
//
// Events of one NATS subject (or of the JetStream consumer) are emitted in
// the order the messages arrived, records of one notification in message
// order. Nothing is ordered across subjects or sources, producers reorder
// and duplicate, and JetStream redeliveries come out of order. Consumers
// must not depend on order; they re-read state.
//
// # Backpressure
//
// Sources send to out with a blocking send (until ctx ends); a slow
// consumer slows the sources down, it never loses an event inside this
// package. Upstream of it: core NATS buffers in the client up to nats.go's
// pending limits and then drops, which is counted (slow_consumer) and
// followed by a Resync; JetStream keeps at most 1,000 unacknowledged
// messages out per node and holds the rest in the stream; the Watcher
// collapses changes made while the consumer is busy into one event with
// the latest digest; Resync requests that arrive while one is still
// waiting to be taken collapse into it.
//
// # Concurrency
//
// All exported types are safe for concurrent use once built; Stats may be
// called at any time. Nothing is global: loggers are passed in.
package events
