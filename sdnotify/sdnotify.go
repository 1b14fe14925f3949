package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// sendTimeout bounds one datagram write: a stuck systemd must not stall the
// agent's main loop.
const sendTimeout = 2 * time.Second

// Notifier sends state notifications to systemd. The zero value is a no-op
// notifier (as if NOTIFY_SOCKET were unset).
type Notifier struct {
	socket   string        // NOTIFY_SOCKET; "" = no-op
	watchdog time.Duration // from WATCHDOG_USEC; 0 = no watchdog for this process
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through getenv
// (os.Getenv in the agent). A malformed WATCHDOG_USEC, or a WATCHDOG_PID
// naming another process, means "no watchdog".
func New(getenv func(string) string) *Notifier {
	return newNotifier(getenv, os.Getpid())
}

func newNotifier(getenv func(string) string, pid int) *Notifier {
	n := &Notifier{socket: getenv("NOTIFY_SOCKET")}
	usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return n
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		wp, err := strconv.Atoi(p)
		if err != nil || wp != pid {
			return n
		}
	}
	n.watchdog = time.Duration(usec) * time.Microsecond
	return n
}

// Enabled reports whether notifications go anywhere (NOTIFY_SOCKET is set).
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Ready sends READY=1: the service is up (the agent sends it after its
// first full reconcile).
func (n *Notifier) Ready() error { return n.send("READY=1") }

// Status sends STATUS=<s>, the line `systemctl status` shows. Newlines in s
// become spaces so that s cannot add other assignments to the message.
func (n *Notifier) Status(s string) error {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	return n.send("STATUS=" + s)
}

// Watchdog sends WATCHDOG=1, resetting systemd's watchdog timer.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// WatchdogInterval returns the unit's watchdog interval (WatchdogSec=) and
// true when systemd expects pings from this process; ping at half of it.
func (n *Notifier) WatchdogInterval() (time.Duration, bool) {
	if n == nil || n.socket == "" || n.watchdog <= 0 {
		return 0, false
	}
	return n.watchdog, true
}

// Stopping sends STOPPING=1: the service is shutting down.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

// send writes one datagram to NOTIFY_SOCKET.
func (n *Notifier) send(msg string) error {
	if n == nil || n.socket == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("systemd notify: NOTIFY_SOCKET=%q is neither an absolute path nor an abstract @name: start the agent from systemd or unset NOTIFY_SOCKET", n.socket)
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("systemd notify: connecting to NOTIFY_SOCKET %s: %w", n.socket, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("systemd notify: %w", err)
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("systemd notify: sending %q to %s: %w", firstLine(msg), n.socket, err)
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
