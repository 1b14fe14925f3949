// Package sim simulates Linux LIO as targetcli-fb 2.1.53 / rtslib-fb 2.1.75
// (Debian 12) present it, for tests and the demo on machines without
// configfs. The executable cmd/targetcli-sim is a drop-in targetcli:
// one-shot (`targetcli "<cmd>"`), batch (commands on stdin) and, as
// targetclid, the daemon socket. It refuses to run unless TARGETCLI_SIM_DIR
// names a node directory made by NewNode.
//
// A node directory holds the live "kernel" state (live.json), separate from
// saveconfig.json exactly as configfs is, plus faults, counters and the
// locks. Reproduced behaviour: configshell's grammar (no quoting, silent
// truncation at the first illegal character, space splitting, keyword=value),
// targetcli's messages and exit codes, real file sizes, "need a size",
// duplicate names, lowest-free LUN index, backstore delete removing LUNs,
// the per-process UI tree that goes stale (the "Name 'lun0' already used by
// a sibling" bug), auto-save at the end of batch mode only, the daemon
// stopping at the first failing command, saveconfig.json in rtslib's format
// written in place (2.1.75) or by rename (2.2), and gzip backups.
//
// Concurrency and ordering: every command is one read-modify-write of the
// live state under an exclusive flock of live.lock, so processes and
// daemons of a node see each command's change atomically and in lock order.
// targetcli processes (one-shot and batch) also hold targetcli.lock for their
// whole life, so they run one after another; a second one blocks, as with
// /var/run/targetcli.lock. The daemon does not take that lock (targetclid
// doesn't) and serves one connection at a time. A Node's methods may be
// called from several goroutines.
package sim
