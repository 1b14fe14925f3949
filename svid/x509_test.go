package svid_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// handshake runs a TLS handshake between client and server configs over an
// in-memory pipe and returns the client's error and the server's view.
func handshake(t *testing.T, client, server *tls.Config) (clientErr error, serverState tls.ConnectionState, serverErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	tc, ts := tls.Client(c, client), tls.Server(s, server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serverErr = ts.HandshakeContext(ctx)
		serverState = ts.ConnectionState()
		if serverErr != nil {
			s.Close() // unblock the client
		}
	}()
	clientErr = tc.HandshakeContext(ctx)
	if clientErr != nil {
		c.Close() // unblock the server
	}
	<-done
	return clientErr, serverState, serverErr
}

func TestX509SourceHandshake(t *testing.T) {
	const natsID = "spiffe://shasta/ncn/nats"
	srv := svidtest.New(t, svidtest.Options{})
	foreign := svidtest.New(t, svidtest.Options{})

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name       string
		serverID   string                          // X509Config.ServerID
		serverCert func() (tls.Certificate, error) // what the server presents
		client     func(*svid.X509Source) (*tls.Config, error)
		wantOK     bool
	}{
		{
			name:       "server SVID in trust domain",
			serverCert: func() (tls.Certificate, error) { return srv.IssueX509(natsID) },
			client:     spiffeConfig,
			wantOK:     true,
		},
		{
			name:       "server has the expected ID",
			serverID:   natsID,
			serverCert: func() (tls.Certificate, error) { return srv.IssueX509(natsID) },
			client:     spiffeConfig,
			wantOK:     true,
		},
		{
			name:       "server has another ID",
			serverID:   natsID,
			serverCert: func() (tls.Certificate, error) { return srv.IssueX509("spiffe://shasta/ncn/impostor") },
			client:     spiffeConfig,
		},
		{
			name:       "server from another CA",
			serverCert: func() (tls.Certificate, error) { return foreign.IssueX509(natsID) },
			client:     spiffeConfig,
		},
		{
			name:       "host-name server certificate under the bundle",
			serverCert: func() (tls.Certificate, error) { return srv.IssueX509(natsID, "nats.local") },
			client:     webConfig("nats.local"),
			wantOK:     true,
		},
		{
			name:       "host-name certificate for another host",
			serverCert: func() (tls.Certificate, error) { return srv.IssueX509(natsID, "nats.local") },
			client:     webConfig("other.local"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := svid.NewX509Source(ctx, svid.X509Config{Socket: srv.Addr(), ServerID: tt.serverID})
			if err != nil {
				t.Fatalf("NewX509Source() error = %v", err)
			}
			t.Cleanup(func() { src.Close() })
			clientCfg, err := tt.client(src)
			if err != nil {
				t.Fatalf("client config: %v", err)
			}
			cert, err := tt.serverCert()
			if err != nil {
				t.Fatalf("server certificate: %v", err)
			}
			serverCfg := &tls.Config{
				Certificates: []tls.Certificate{cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    srv.CertPool(),
				MinVersion:   tls.VersionTLS12,
			}
			clientErr, state, serverErr := handshake(t, clientCfg, serverCfg)
			if !tt.wantOK {
				if clientErr == nil {
					t.Fatal("client handshake succeeded, want the client to refuse the server")
				}
				return
			}
			if clientErr != nil || serverErr != nil {
				t.Fatalf("handshake: client error = %v, server error = %v; want both nil", clientErr, serverErr)
			}
			if len(state.PeerCertificates) == 0 || len(state.PeerCertificates[0].URIs) != 1 {
				t.Fatal("server saw no client X.509-SVID")
			}
			if got := state.PeerCertificates[0].URIs[0].String(); got != svidtest.DefaultID {
				t.Errorf("client certificate SPIFFE ID = %q, want %q", got, svidtest.DefaultID)
			}
		})
	}
}

func spiffeConfig(src *svid.X509Source) (*tls.Config, error) { return src.TLSConfig(), nil }

func webConfig(serverName string) func(*svid.X509Source) (*tls.Config, error) {
	return func(src *svid.X509Source) (*tls.Config, error) {
		cfg, err := src.WebTLSConfig()
		if err != nil {
			return nil, err
		}
		cfg.ServerName = serverName
		return cfg, nil
	}
}

func TestX509SourceNoAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	_, err := svid.NewX509Source(t.Context(), svid.X509Config{Socket: path})
	if err == nil || !strings.Contains(err.Error(), "is the SPIRE agent running") {
		t.Fatalf("NewX509Source(missing socket) error = %v, want one asking whether the SPIRE agent runs", err)
	}
}

// mtlsServer is a TLS server configuration that requires and verifies a
// client certificate issued by srv's CA, as a NATS server configured for
// the workload's SVID does.
func mtlsServer(t *testing.T, srv *svidtest.Server, names ...string) *tls.Config {
	t.Helper()
	cert, err := srv.IssueX509("spiffe://shasta/ncn/nats", names...)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    srv.CertPool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// TestX509SourceStartsWithoutAgent: StartX509Source returns at once with
// the SPIRE agent down; handshakes fail with an error that says why, and
// succeed once the agent comes up, with the same TLS configuration.
func TestX509SourceStartsWithoutAgent(t *testing.T) {
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logs := &testutil.SyncBuffer{}
	src, err := svid.StartX509Source(svid.X509Config{
		Socket: filepath.Join(dir, svidtest.SocketName),
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("StartX509Source() error = %v", err)
	}
	t.Cleanup(func() { src.Close() })
	select {
	case <-src.Ready():
		t.Fatal("Ready() is closed with no SPIRE agent")
	default:
	}
	clientCfg := src.ClientTLSConfig()
	if _, err := src.GetClientCertificate(nil); err == nil || !strings.Contains(err.Error(), "no X.509-SVID from the SPIRE agent") {
		t.Errorf("GetClientCertificate() with no agent: error = %v, want one saying no X.509-SVID arrived", err)
	}
	if _, err := src.Roots(); err == nil {
		t.Error("Roots() with no agent: nil error, want one")
	}
	testutil.WaitFor(t, 30*time.Second, "the watch error logged", func() error {
		if !strings.Contains(logs.String(), "no X.509-SVID from the SPIRE agent yet") {
			return fmt.Errorf("logs so far: %q", logs.String())
		}
		return nil
	})

	srv, err := svidtest.Start(dir, svidtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	serverCfg := mtlsServer(t, srv, "127.0.0.1")
	clientErr, _, serverErr := handshake(t, clientCfg, serverCfg)
	if clientErr == nil || serverErr == nil {
		t.Fatalf("handshake before the first SVID: client error = %v, server error = %v; want both to fail", clientErr, serverErr)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := src.Wait(ctx); err != nil {
		t.Fatalf("Wait() after the agent came up: %v", err)
	}
	roots, err := src.Roots()
	if err != nil {
		t.Fatalf("Roots() = %v", err)
	}
	clientCfg.RootCAs, clientCfg.ServerName = roots, "127.0.0.1"
	clientErr, state, serverErr := handshake(t, clientCfg, serverCfg)
	if clientErr != nil || serverErr != nil {
		t.Fatalf("handshake after the first SVID: client error = %v, server error = %v; want both nil", clientErr, serverErr)
	}
	if got, want := state.PeerCertificates[0].SerialNumber, srv.X509SVID().SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("client certificate serial = %v, want the served SVID's %v", got, want)
	}
	if !strings.Contains(logs.String(), "got X.509-SVID") {
		t.Errorf("log lacks the first SVID's arrival:\n%s", logs.String())
	}
}

// TestX509SourceRotation: after the SPIRE agent rotates the SVID, the next
// handshake presents the new one through the TLS configurations made
// before the rotation.
func TestX509SourceRotation(t *testing.T) {
	srv := svidtest.New(t, svidtest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	src, err := svid.NewX509Source(ctx, svid.X509Config{Socket: srv.Addr()})
	if err != nil {
		t.Fatalf("NewX509Source() error = %v", err)
	}
	t.Cleanup(func() { src.Close() })
	serverCfg := mtlsServer(t, srv, "nats.local")
	web, err := webConfig("nats.local")(src)
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string]*tls.Config{"TLSConfig": src.TLSConfig(), "WebTLSConfig": web}

	presented := func(name string, cfg *tls.Config) *big.Int {
		t.Helper()
		clientErr, state, serverErr := handshake(t, cfg, serverCfg)
		if clientErr != nil || serverErr != nil {
			t.Fatalf("%s handshake: client error = %v, server error = %v; want both nil", name, clientErr, serverErr)
		}
		return state.PeerCertificates[0].SerialNumber
	}
	before := srv.X509SVID().SerialNumber
	for name, cfg := range configs {
		if got := presented(name, cfg); got.Cmp(before) != 0 {
			t.Fatalf("%s presented serial %v, want the current SVID's %v", name, got, before)
		}
	}
	rotated, err := srv.RotateX509()
	if err != nil {
		t.Fatal(err)
	}
	if rotated.SerialNumber.Cmp(before) == 0 {
		t.Fatal("RotateX509 kept the serial number")
	}
	testutil.WaitFor(t, 30*time.Second, "the rotated SVID to reach the source", func() error {
		c, err := src.GetClientCertificate(nil)
		if err != nil {
			return err
		}
		if c.Leaf.SerialNumber.Cmp(rotated.SerialNumber) != 0 {
			return fmt.Errorf("presents serial %v, want %v", c.Leaf.SerialNumber, rotated.SerialNumber)
		}
		return nil
	})
	for name, cfg := range configs {
		if got := presented(name, cfg); got.Cmp(rotated.SerialNumber) != 0 {
			t.Errorf("%s after rotation presented serial %v, want the new SVID's %v", name, got, rotated.SerialNumber)
		}
	}
}
