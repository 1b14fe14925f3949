// Package rig starts the real servers the agent talks to, on loopback, for
// integration tests and for `make demo`: an embedded NATS server with
// JetStream (StartNATS) and a versitygw S3 gateway process with the posix
// backend that publishes bucket notifications to that NATS (StartS3).
// Optionally the bucket is mounted read-only through real s3fs-fuse
// (MountS3FS), as on a CSM worker.
//
// Nothing here is a mock: each server is the real program. The functions take
// contexts and option structs, not testing.TB, so the demo binary can use
// them too.
//
// versitygw is found through FindVersityGW (VERSITYGW_BIN, then
// .tools/bin/versitygw under the module root as built by `make tools`, then
// PATH). Its output goes to a log file in the directory it was given, and a
// start failure quotes the tail of that log. Embedded NATS logs are off
// unless NATS_LOGGING=debug (or trace).
//
// Tests that mount s3fs need /dev/fuse and the Debian package s3fs; without
// them they fail with a message naming the package, unless SBPS_NO_FUSE=1 is
// set, in which case they skip.
//
// Concurrency: the methods of NATS and S3 are safe for concurrent use; Stop,
// Kill, Restart and Shutdown serialise with each other. Endpoints, ports and
// credentials never change over a server's life, including across Restart.
// Children are started in their own process group with a parent-death signal,
// so a crashed test binary does not leave versitygw running.
package rig
