// Package bench holds the fleet-scale benchmark suite of sbps-marshal
// (`make bench`, docs/BENCHMARKS.md): in-memory S3 and IMS stand-ins that
// count requests the way the real servers would see them, a fleet builder,
// and a counting S3 proxy for the real versitygw. The Go benchmarks of this
// package measure the in-process parts (no-change resync, event pass); the
// end-to-end figures come from cmd/sbps-marshal-bench, which uses the same
// pieces with the rig's real servers.
//
// Everything here is safe for concurrent use unless a doc comment says
// otherwise.
package bench
