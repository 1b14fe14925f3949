// Package lio is the agent's only way to Linux LIO: the saveconfig.json model
// that tells what LIO has, the argument checks that keep anything unexpected
// off a targetcli command line, and the driver that applies operations
// through targetcli (one-shot, batch or targetclid).
//
// Nothing else in the agent runs targetcli or writes LIO state.
package lio
