package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// notifySocket is a fake systemd notification socket recording messages.
type notifySocket struct {
	path string
	mu   gosync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, string(buf[:n]))
			ns.mu.Unlock()
		}
	}()
	return ns
}

func (ns *notifySocket) seen() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.msgs...)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func tpgEnabled(t *testing.T, path, iqn string) bool {
	t.Helper()
	c, err := projector.ReadSaved(t.Context(), path) // retries a file caught mid-rewrite
	if err != nil {
		t.Fatal(err)
	}
	tgt, _ := c.Target(iqn)
	tpg, _ := tgt.TPG(1)
	return bool(tpg.Enable)
}

// TestOperations runs the agent as systemd and Prometheus see it: node gate,
// readiness, metrics moving, READY=1 then WATCHDOG=1.
func TestOperations(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	ns := listenNotify(t)
	gateFile := filepath.Join(t.TempDir(), "serve-images")
	addr := freeAddr(t)
	a := newAgentWith(t, s, Options{Getenv: func(k string) string {
		switch k {
		case "NOTIFY_SOCKET":
			return ns.path
		case "WATCHDOG_USEC":
			return "200000"
		}
		return ""
	}}, "SBPS_MARSHAL_GATE=file:"+gateFile, "SBPS_MARSHAL_METRICS_ADDR="+addr, "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	key, err := s.PutPE(ctx, "CPE-ops.squashfs", []byte("programming environment"))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, nil) }()
	t.Cleanup(func() { stop(); <-done })

	// Gate closed: tpg1 disabled, nothing projected, not ready.
	testutil.WaitFor(t, 20*time.Second, "tpg1 disabled by the closed gate", func() error {
		if tpgEnabled(t, s.Node.SaveFile(), s.Node.IQN()) {
			return fmt.Errorf("tpg1 still enabled")
		}
		return nil
	})
	if got := luns(t, s); len(got) != 0 {
		t.Errorf("projected %v with the gate closed", got)
	}
	if code, body := get("http://" + addr + "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the gate closed = %d %q, want 503", code, body)
	}

	// Gate opens: tpg1 enabled, the image projected, ready.
	if err := os.WriteFile(gateFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.Resync("test: gate opened")
	testutil.WaitFor(t, 20*time.Second, "projection after the gate opened", func() error {
		if !tpgEnabled(t, s.Node.SaveFile(), s.Node.IQN()) {
			return fmt.Errorf("tpg1 still disabled")
		}
		if _, ok := luns(t, s)[peID(key).Name]; !ok {
			return fmt.Errorf("not projected yet")
		}
		return nil
	})
	testutil.WaitFor(t, 20*time.Second, "/readyz", func() error {
		if code, body := get("http://" + addr + "/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d %q", code, body)
		}
		return nil
	})
	if code, _ := get("http://" + addr + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	_, metrics := get("http://" + addr + "/metrics")
	for _, want := range []string{
		`sbps_marshal_projections{kind="pe",state="projected"} 1`,
		`sbps_marshal_lio_operations_total{op="create-backstore",outcome="applied"} 1`,
		`sbps_marshal_lio_operations_total{op="create-lun",outcome="applied"} 1`,
		// The gate's changes of tpg1 are planned and counted as every other.
		`sbps_marshal_lio_operations_total{op="disable-tpg",outcome="applied"} 1`,
		`sbps_marshal_lio_operations_total{op="enable-tpg",outcome="applied"} 1`,
		`sbps_marshal_passes_total{kind="full",outcome="success"}`,
		`sbps_marshal_targetcli_processes_total`,
		`sbps_marshal_build_info{`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// systemd saw READY=1, a status line, then watchdog pings.
	testutil.WaitFor(t, 20*time.Second, "READY=1 then WATCHDOG=1", func() error {
		msgs := ns.seen()
		ready, watchdogAfter, status := -1, false, false
		for i, m := range msgs {
			switch {
			case m == "READY=1" && ready < 0:
				ready = i
			case m == "WATCHDOG=1" && ready >= 0:
				watchdogAfter = true
			case strings.HasPrefix(m, "STATUS=1 projected"):
				status = true
			}
		}
		if ready < 0 || !watchdogAfter || !status {
			return fmt.Errorf("notifications %q: want READY=1, then WATCHDOG=1, and a STATUS with the projection count", msgs)
		}
		return nil
	})
}
