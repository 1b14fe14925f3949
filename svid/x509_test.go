package svid_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
