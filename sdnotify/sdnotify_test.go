package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env returns a getenv over a literal map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// listen opens a unixgram socket as systemd would and returns its
// NOTIFY_SOCKET value and a function that reads the next datagram.
func listen(t *testing.T, abstract bool) (string, func() string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@sbps-marshal-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listening on %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return name, func() string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading a notification from %s: %v", name, err)
		}
		return string(buf[:n])
	}
}

func TestMessages(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			sock, next := listen(t, abstract)
			n := New(env(map[string]string{"NOTIFY_SOCKET": sock}))
			if !n.Enabled() {
				t.Fatalf("Enabled() = false with NOTIFY_SOCKET=%s", sock)
			}
			tests := []struct {
				name string
				send func() error
				want string
			}{
				{"ready", n.Ready, "READY=1"},
				{"status", func() error { return n.Status("42 projected, 1 pending, last resync 12s ago") }, "STATUS=42 projected, 1 pending, last resync 12s ago"},
				{"status newline", func() error { return n.Status("a\nREADY=1\r") }, "STATUS=a READY=1 "},
				{"watchdog", n.Watchdog, "WATCHDOG=1"},
				{"stopping", n.Stopping, "STOPPING=1"},
			}
			for _, tt := range tests {
				if err := tt.send(); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if got := next(); got != tt.want {
					t.Errorf("%s: systemd received %q, want %q", tt.name, got, tt.want)
				}
			}
		})
	}
}

func TestNoSocketIsNoop(t *testing.T) {
	for _, n := range []*Notifier{New(env(nil)), {}, nil} {
		if n.Enabled() {
			t.Errorf("Enabled() = true without NOTIFY_SOCKET")
		}
		for _, err := range []error{n.Ready(), n.Status("x"), n.Watchdog(), n.Stopping()} {
			if err != nil {
				t.Errorf("no NOTIFY_SOCKET: got %v, want nil", err)
			}
		}
		if d, ok := n.WatchdogInterval(); ok || d != 0 {
			t.Errorf("WatchdogInterval() = %v, %v without NOTIFY_SOCKET, want 0, false", d, ok)
		}
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name, socket, want string
	}{
		{"missing socket", filepath.Join(t.TempDir(), "absent.sock"), "connecting to NOTIFY_SOCKET"},
		{"relative", "notify.sock", "neither an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(env(map[string]string{"NOTIFY_SOCKET": tt.socket})).Ready()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ready() with NOTIFY_SOCKET=%s = %v, want an error containing %q", tt.socket, err, tt.want)
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name   string
		env    map[string]string
		want   time.Duration
		wantOK bool
	}{
		{"set", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "60000000"}, 60 * time.Second, true},
		{"our pid", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30 * time.Second, true},
		{"other pid", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, 0, false},
		{"bad pid", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 0, false},
		{"unset", map[string]string{"NOTIFY_SOCKET": "/run/x"}, 0, false},
		{"zero", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"}, 0, false},
		{"negative", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "-5"}, 0, false},
		{"garbage", map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "60s"}, 0, false},
		{"no socket", map[string]string{"WATCHDOG_USEC": "60000000"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := newNotifier(env(tt.env), pid).WatchdogInterval()
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("WatchdogInterval() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	// New uses this process's pid.
	n := New(env(map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": fmt.Sprint(os.Getpid())}))
	if d, ok := n.WatchdogInterval(); !ok || d != time.Second {
		t.Errorf("New with WATCHDOG_PID = own pid: WatchdogInterval() = %v, %v; want 1s, true", d, ok)
	}
}
