// Package sdnotify tells systemd about the agent's state (sd_notify(3))
// without cgo: READY=1 after the first reconcile, STATUS= lines that
// `systemctl status` shows, WATCHDOG=1 pings and STOPPING=1.
//
// A Notifier is built from the environment once, with New(os.Getenv); tests
// pass their own lookup function, so nothing here reads or changes the
// process environment. When NOTIFY_SOCKET is unset (not started by systemd,
// or Type= is not notify) every method is a no-op that returns nil, so
// callers never need to check. The zero Notifier is such a no-op notifier.
//
// Watchdog: when the unit sets WatchdogSec=, systemd passes WATCHDOG_USEC
// (and WATCHDOG_PID). WatchdogInterval returns that interval; the caller
// sends Watchdog() from its main loop at about half of it, so that a hung
// loop, not merely a live process, is what stops the pings.
//
// Each message is one datagram on a new unixgram connection, the way
// libsystemd sends them; both the path form and the abstract "@name" form
// of NOTIFY_SOCKET work. Methods are safe for concurrent use.
//
// Child processes (targetcli, kubectl) inherit NOTIFY_SOCKET unless the
// caller removes it from their environment; with NotifyAccess=main in the
// unit, systemd ignores anything they might send.
package sdnotify
