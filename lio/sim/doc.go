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
// Also as on Debian 12's 6.1 kernel (held to the real thing by
// lio/conformance): saveconfig.json lists storage objects and each TPG's
// LUNs newest first, as configfs does; `/iscsi create IQN` makes the target
// with tpg1 enabled and the default portal 0.0.0.0:3260, and
// `<tpg> set attribute k=v ...` sets TPG attributes ("Parameter k is now
// 'v'."); clearconfig; a backing file on a read-only mount (statfs
// ST_RDONLY) fails "[Errno 30] Read-only file system" and leaves nothing
// behind; saveconfig makes or chmods the save folder 0600; fileio objects
// have no emulate_rsoc attribute; a TARGETCLI_HOME without prefs.bin makes
// the process print "Warning: Could not load preferences file
// <home>/prefs.bin." on stdout (and write it); batch mode's auto-save at
// the end of input prints "Configuration saved to <default save file>".
//
// Deliberate differences:
//   - The default save file (NodeOptions.SaveFile) is <dir>/saveconfig.json,
//     not Debian's /etc/rtslib-fb-target/saveconfig.json, so that tests need
//     no root and no /etc; set it to Debian's path to reproduce a node.
//   - A node made by NewNode starts with the CSM target already provisioned
//     (Seed: &lio.Config{} starts empty, as a fresh kernel does), and Env's
//     TARGETCLI_HOME already holds prefs.bin.
//   - Tracebacks are 5 lines, not ~25; their last line (the exception) is
//     real targetcli's.
//   - The save folder is chmod'ed 0600 only when running as root (real
//     saveconfig runs only as root; a non-root simulator could not enter a
//     0600 node directory).
//   - targetclid's preferences are not modelled: real targetclid on a fresh
//     TARGETCLI_HOME loses targetcli's defaults (a TPG it creates stays
//     disabled); the simulated daemon behaves as with a home where targetcli
//     ran before.
//   - Only fileio backstores, iscsi targets and the attribute group of
//     `set` are simulated; a new target's TPG attributes are the kernel's
//     defaults.
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
