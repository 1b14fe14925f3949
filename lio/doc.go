// Package lio is the agent's only way to Linux LIO: the saveconfig.json model
// that tells what LIO has, the argument checks that keep anything unexpected
// off a targetcli command line, and the driver that applies operations
// through targetcli (one-shot, batch or targetclid).
//
// Nothing else in the agent runs targetcli or writes LIO state.
//
// # Command-line safety
//
// targetcli has no quoting: a space splits a value, '=' turns it into a
// key=value pair, and everything from the first character its grammar does
// not accept is silently dropped. Every name, path, IQN and wwn therefore
// passes a strict allowlist (CheckName, CheckPath, CheckIQN, CheckWWN,
// Validate) before a command is built, and every built command is parsed
// back with a model of configshell's grammar and must yield exactly the
// intended tokens. A refused value gives an *ArgError wrapping
// ErrUnsafeArgument that names the character, and no process or request is
// made for it.
//
// # Driver: concurrency and ordering
//
// A Driver runs one Apply or Save at a time (further calls wait), and may be
// shared by goroutines. Within Apply, ops run in the order given, split into
// stages wherever they switch between removing and adding (targetcli's tree
// goes stale after a delete in the same process). Each stage ends with
// saveconfig, and then saveconfig.json is read back: an op is reported
// Applied or AlreadyDone only if its change is in that file. After a stage
// that did not finish (targetcli died or timed out) the driver saves once
// more so that the file explains the state left behind, and runs no later
// stage. targetcli processes also serialize among themselves on
// /var/run/targetcli.lock; targetclid serves one connection at a time.
package lio
