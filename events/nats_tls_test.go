package events

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// TestNATSWithSVID: the source presents the node's X.509-SVID to a NATS
// server that requires client certificates issued under the SPIRE bundle,
// and verifies the server's host-name certificate against the bundle
// (RootCAs, asked at every connection) or against a CA file (TLSCA).
func TestNATSWithSVID(t *testing.T) {
	spire := svidtest.New(t, svidtest.Options{})
	n, err := rig.StartSPIFFENATS(t.TempDir(), spire)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	x509, err := svid.NewX509Source(ctx, svid.X509Config{Socket: spire.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x509.Close() })
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, spire.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	// Without a client certificate the server refuses the connection.
	if nc, err := nats.Connect(n.ClientURL(), nats.Timeout(15*time.Second), nats.RootCAs(caFile)); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected; the server must require the SVID")
	}
	web, err := x509.WebTLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(n.ClientURL(), nats.Timeout(15*time.Second), nats.Secure(web))
	if err != nil {
		t.Fatalf("connect with the SVID: %v", err)
	}
	t.Cleanup(pub.Close)

	tests := []struct {
		name string
		cfg  NATSConfig
	}{
		{"server verified by the SPIRE bundle", NATSConfig{Auth: Auth{TLSConfig: x509.ClientTLSConfig(), RootCAs: x509.Roots}}},
		{"server verified by a CA file", NATSConfig{Auth: Auth{TLSConfig: x509.ClientTLSConfig(), TLSCA: caFile}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.URLs = []string{n.ClientURL()}
			src := newNATS(t, tt.cfg)
			r := run(t, src, 16)
			probeCore(t, pub, r, DefaultS3Subject)
			if !src.Connected() {
				t.Error("Connected() = false after an event arrived")
			}
		})
	}
}
