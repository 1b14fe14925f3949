package rig

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// natsReadyTimeout bounds how long StartNATS and Restart wait for the
// embedded server to accept connections.
const natsReadyTimeout = 10 * time.Second

// NATS is an embedded nats-server with JetStream, listening on a loopback
// port chosen at first start and kept across Restart. Its methods are safe for
// concurrent use.
type NATS struct {
	dir  string
	port int         // fixed after the first start
	tls  *tls.Config // nil: plain connections
	noJS bool

	mu  sync.Mutex
	srv *server.Server // +checklocks:mu; nil while shut down
}

// StartNATS starts an embedded NATS server with JetStream on a random
// loopback port, storing JetStream data under dir/nats. It returns once the
// server accepts connections. Server logs are off unless the environment
// variable NATS_LOGGING is "debug" or "trace".
func StartNATS(dir string) (*NATS, error) {
	return StartNATSWith(dir, NATSOptions{})
}

// NATSOptions configure StartNATSWith. The zero value is StartNATS's server.
type NATSOptions struct {
	// TLS, when set, is the server's TLS configuration, and every client
	// must complete a TLS handshake with it. Set ClientAuth to
	// tls.RequireAndVerifyClientCert and ClientCAs to require client
	// certificates (mTLS). Restart keeps it.
	TLS *tls.Config
	// NoJetStream starts a core-NATS-only server, as a deployment without
	// JetStream has.
	NoJetStream bool
}

// NATSForTest starts an embedded NATS server for one test, storing under
// t.TempDir() and shut down when the test ends; it fails the test if the
// server cannot start.
func NATSForTest(t testing.TB, o NATSOptions) *NATS {
	t.Helper()
	n, err := StartNATSWith(t.TempDir(), o)
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// StartNATSWith is StartNATS with options.
func StartNATSWith(dir string, o NATSOptions) (*NATS, error) {
	if dir == "" {
		return nil, errors.New("rig: StartNATS needs a directory for JetStream storage (for tests, pass t.TempDir())")
	}
	n := &NATS{dir: dir, port: server.RANDOM_PORT, noJS: o.NoJetStream}
	if o.TLS != nil {
		n.tls = o.TLS.Clone()
	}
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *NATS) options() *server.Options {
	o := &server.Options{
		ServerName: "sbps-rig",
		Host:       "127.0.0.1",
		Port:       n.port,
		NoSigs:     true,
		NoLog:      true,
		JetStream:  !n.noJS,
		StoreDir:   filepath.Join(n.dir, "nats"),
		// No cluster, gateway, leafnode or monitoring listeners.
		HTTPPort: 0,
	}
	if n.tls != nil {
		o.TLS = true
		o.TLSConfig = n.tls.Clone()
		o.TLSVerify = n.tls.ClientAuth == tls.RequireAndVerifyClientCert
		o.TLSTimeout = 5 // seconds; the race detector slows handshakes
	}
	return o
}

func (n *NATS) start() error {
	opts := n.options()
	level := strings.ToLower(os.Getenv("NATS_LOGGING"))
	if level == "debug" || level == "trace" {
		opts.NoLog = false
		opts.Debug = true
		opts.Trace = level == "trace"
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("rig: configure embedded NATS (store %s): %w", opts.StoreDir, err)
	}
	if !opts.NoLog {
		srv.SetLogger(stderrLogger{}, opts.Debug, opts.Trace)
	}
	srv.Start()
	if !srv.ReadyForConnections(natsReadyTimeout) {
		srv.Shutdown()
		return fmt.Errorf("rig: embedded NATS on 127.0.0.1:%d not ready after %s (run with NATS_LOGGING=debug to see why)", n.port, natsReadyTimeout)
	}
	if n.port == server.RANDOM_PORT {
		addr, ok := srv.Addr().(*net.TCPAddr)
		if !ok {
			srv.Shutdown()
			return fmt.Errorf("rig: embedded NATS listens on unexpected address %v", srv.Addr())
		}
		n.port = addr.Port
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

// ClientURL is the nats:// URL clients connect to. It stays the same across
// Restart.
func (n *NATS) ClientURL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", n.port)
}

// Port is the loopback TCP port the server listens on.
func (n *NATS) Port() int { return n.port }

// Server returns the running embedded server, or nil while it is shut down.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and waits until it is down. It is safe to call
// more than once.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart shuts the server down (if running) and starts it again on the same
// port with the same JetStream store, returning once it accepts connections.
// Connected clients see a disconnect and, with reconnects enabled, come back.
func (n *NATS) Restart() error {
	n.Shutdown()
	var err error
	// The port was just released; binding it again normally succeeds at once,
	// but retry briefly in case the kernel is still tearing the socket down.
	deadline := time.Now().Add(natsReadyTimeout)
	for {
		if err = n.start(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rig: restart embedded NATS on port %d: %w", n.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stderrLogger prints server logs to stderr. Unlike the server's own logger,
// Fatalf does not exit the process: a listen failure on Restart must come
// back to the caller as an error.
type stderrLogger struct{}

func (stderrLogger) logf(level, format string, v ...any) {
	fmt.Fprintf(os.Stderr, "nats-server %s %s\n", level, fmt.Sprintf(format, v...))
}

func (l stderrLogger) Noticef(format string, v ...any) { l.logf("INF", format, v...) }
func (l stderrLogger) Warnf(format string, v ...any)   { l.logf("WRN", format, v...) }
func (l stderrLogger) Fatalf(format string, v ...any)  { l.logf("FTL", format, v...) }
func (l stderrLogger) Errorf(format string, v ...any)  { l.logf("ERR", format, v...) }
func (l stderrLogger) Debugf(format string, v ...any)  { l.logf("DBG", format, v...) }
func (l stderrLogger) Tracef(format string, v ...any)  { l.logf("TRC", format, v...) }

// StartSPIFFENATS starts NATS with TLS that requires and verifies client
// certificates issued under spire's bundle; the server presents a
// certificate for 127.0.0.1 that spire issued to spiffe://shasta/ncn/nats.
func StartSPIFFENATS(dir string, spire *svidtest.Server) (*NATS, error) {
	cert, err := spire.IssueX509("spiffe://shasta/ncn/nats", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	return StartNATSWith(dir, NATSOptions{TLS: &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    spire.CertPool(),
		MinVersion:   tls.VersionTLS12,
	}})
}
