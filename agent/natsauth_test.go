package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// natsServerID is the SPIFFE ID of the NATS servers' X.509-SVIDs.
const natsServerID = "spiffe://shasta/ncn/nats"

// testConnectTimeout bounds a test's own NATS connection, TLS handshake
// included: generous, since handshakes under the race detector on a busy
// machine can take longer than nats.go's default 2s.
const testConnectTimeout = 15 * time.Second

// mtlsNATS is a NATS server that requires TLS client certificates issued
// under the SPIRE bundle of clients, and records the serial number of every
// client certificate it accepted.
type mtlsNATS struct {
	*rig.NATS
	mu      gosync.Mutex
	serials []*big.Int
}

// startMTLSNATS starts it, presenting a certificate from issuer for
// natsServerID and names (host names or IP addresses).
func startMTLSNATS(t *testing.T, issuer, clients *svidtest.Server, names ...string) *mtlsNATS {
	t.Helper()
	cert, err := issuer.IssueX509(natsServerID, names...)
	if err != nil {
		t.Fatal(err)
	}
	m := &mtlsNATS{}
	n, err := rig.StartNATSWith(t.TempDir(), rig.NATSOptions{TLS: &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients.CertPool(),
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.serials = append(m.serials, cs.PeerCertificates[0].SerialNumber)
			return nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	m.NATS = n
	return m
}

// accepted reports whether the server accepted a client certificate with
// this serial number.
func (m *mtlsNATS) accepted(serial *big.Int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.ContainsFunc(m.serials, func(s *big.Int) bool { return s.Cmp(serial) == 0 })
}

// publisher connects to the server with its own certificate from spire,
// verifying the server against roots.
func publisher(t *testing.T, m *mtlsNATS, spire *svidtest.Server, roots *x509.CertPool) *nats.Conn {
	t.Helper()
	cert, err := spire.IssueX509("spiffe://shasta/ncn/publisher")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(m.ClientURL(), nats.Timeout(testConnectTimeout), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.Secure(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, InsecureSkipVerify: roots == nil, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("publisher: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// spiffeConfig is a configuration with NATS_SPIFFE=true for url and the
// Workload API of spire, plus env.
func spiffeConfig(t *testing.T, url, socket string, env ...string) *config.Config {
	t.Helper()
	environ := append([]string{
		"SBPS_MARSHAL_NODE_NAME=ncn-w001",
		"SBPS_MARSHAL_NATS_URL=" + url,
		"SBPS_MARSHAL_NATS_SPIFFE=true",
		"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=" + socket,
	}, env...)
	cfg, _, err := config.Load(config.Sources{Environ: environ}, flag.NewFlagSet("test", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startSource builds the NATS event source the way the agent does and
// runs it until the test ends.
func startSource(t *testing.T, cfg *config.Config, log *slog.Logger) (*events.NATSSource, *natsauth.Auth, chan events.Event) {
	t.Helper()
	auth, err := natsauth.New(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("natsauth.New() error = %v", err)
	}
	t.Cleanup(auth.Close)
	src, err := natsSource(cfg, log, auth)
	if err != nil {
		t.Fatalf("natsSource() error = %v", err)
	}
	out := make(chan events.Event, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	return src, auth, out
}

// probe publishes S3 notifications for key until the source delivers one,
// skipping other events.
func probe(t *testing.T, pub *nats.Conn, out <-chan events.Event, key string) {
	t.Helper()
	note := []byte(`{"Records":[{"eventSource":"aws:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"` + key + `","size":1,"eTag":"e"}}}]}`)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if err := pub.Publish("sbps.s3.events", note); err != nil {
			t.Fatalf("publish: %v", err)
		}
		select {
		case ev := <-out:
			ev.Done(nil)
			if ev.Kind == events.S3Object && ev.S3.Key == key {
				return
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("the source delivered no S3 event for %s within 20s", key)
}

func testLog(w io.Writer) *slog.Logger {
	if os.Getenv("SBPS_TEST_LOG") != "" {
		w = io.MultiWriter(w, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestNATSSPIFFE: with NATS_SPIFFE=true the agent's NATS connections
// present the node's X.509-SVID to a server that requires it, and verify
// the server as configured: a host-name certificate under the SPIRE bundle
// or under NATS_TLS_CA, or an SVID with NATS_SPIFFE_SERVER_ID. A server
// that fails the check is refused, and the refusal is logged.
func TestNATSSPIFFE(t *testing.T) {
	spire := svidtest.New(t, svidtest.Options{})
	platform := svidtest.New(t, svidtest.Options{}) // another CA, as cert-manager's
	platformCA := filepath.Join(t.TempDir(), "platform-ca.pem")
	if err := os.WriteFile(platformCA, platform.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("server refuses clients without the SVID", func(t *testing.T) {
		m := startMTLSNATS(t, spire, spire, "127.0.0.1")
		if nc, err := nats.Connect(m.ClientURL(), nats.Timeout(testConnectTimeout), nats.Secure(&tls.Config{RootCAs: spire.CertPool(), MinVersion: tls.VersionTLS12})); err == nil {
			nc.Close()
			t.Error("a client without a certificate connected")
		}
		foreign, err := platform.IssueX509(svidtest.DefaultID)
		if err != nil {
			t.Fatal(err)
		}
		if nc, err := nats.Connect(m.ClientURL(), nats.Timeout(testConnectTimeout), nats.Secure(&tls.Config{Certificates: []tls.Certificate{foreign}, RootCAs: spire.CertPool(), MinVersion: tls.VersionTLS12})); err == nil {
			nc.Close()
			t.Error("a client with a certificate from another CA connected")
		}
	})

	tests := []struct {
		name   string
		issuer *svidtest.Server // of the server's certificate
		names  []string         // the server's certificate is valid for
		env    []string
		roots  *x509.CertPool // the publisher's; nil: unverified
		wantOK bool
		// wantErr is in the logged failure when the agent refuses the server.
		wantErr string
	}{
		{name: "host-name certificate under the SPIRE bundle", issuer: spire, names: []string{"127.0.0.1"}, roots: spire.CertPool(), wantOK: true},
		{name: "host-name certificate under NATS_TLS_CA", issuer: platform, names: []string{"127.0.0.1"}, roots: platform.CertPool(),
			env: []string{"SBPS_MARSHAL_NATS_TLS_CA=" + platformCA}, wantOK: true},
		{name: "server SVID with NATS_SPIFFE_SERVER_ID", issuer: spire,
			env: []string{"SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=" + natsServerID}, wantOK: true},
		{name: "certificate for another host", issuer: spire, names: []string{"nats.local"}, wantErr: "cannot validate certificate for 127.0.0.1"},
		{name: "host-name certificate from a CA that is not trusted", issuer: platform, names: []string{"127.0.0.1"}, wantErr: "certificate signed by unknown authority"},
		{name: "server SVID without NATS_SPIFFE_SERVER_ID", issuer: spire, wantErr: "cannot validate certificate for 127.0.0.1"},
		{name: "server SVID with another ID", issuer: spire, env: []string{"SBPS_MARSHAL_NATS_SPIFFE_SERVER_ID=spiffe://shasta/ncn/other"},
			wantErr: `unexpected ID \"` + natsServerID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startMTLSNATS(t, tt.issuer, spire, tt.names...)
			cfg := spiffeConfig(t, m.ClientURL(), spire.SocketPath(), tt.env...)
			logs := &relLog{}
			src, auth, out := startSource(t, cfg, testLog(logs))

			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			if err := auth.Wait(ctx); err != nil {
				t.Fatalf("Wait() = %v", err)
			}
			// The other connections (LUN registry, bridges, resync --all).
			opts, err := auth.Options()
			if err != nil {
				t.Fatalf("Options() = %v", err)
			}
			nc, err := nats.Connect(m.ClientURL(), append(opts, nats.Timeout(testConnectTimeout))...)
			if nc != nil {
				defer nc.Close()
			}
			if !tt.wantOK {
				if err == nil {
					t.Error("nats.Connect with Options() accepted the server, want it refused")
				}
				if err != nil && !strings.Contains(err.Error(), strings.ReplaceAll(tt.wantErr, `\"`, `"`)) {
					t.Errorf("nats.Connect with Options() error = %v, want it to contain %q", err, tt.wantErr)
				}
				testutil.WaitFor(t, 20*time.Second, "the event source logging why it cannot connect", func() error {
					for line := range strings.SplitSeq(logs.String(), "\n") {
						if strings.Contains(line, "NATS connection attempt failed") && strings.Contains(line, tt.wantErr) {
							return nil
						}
					}
					return fmt.Errorf("no failed attempt logged with %q", tt.wantErr)
				})
				if src.Connected() {
					t.Error("the event source connected to a server it must refuse")
				}
				return
			}
			if err != nil {
				t.Fatalf("nats.Connect with Options() = %v", err)
			}
			probe(t, publisher(t, m, spire, tt.roots), out, "PE/probe.squashfs")
			if !m.accepted(spire.X509SVID().SerialNumber) {
				t.Error("the server never saw the node's X.509-SVID")
			}
		})
	}
}

// TestNATSSPIFFERotation: after the SPIRE agent rotates the X.509-SVID, the
// event source's next connection presents the new one.
func TestNATSSPIFFERotation(t *testing.T) {
	spire := svidtest.New(t, svidtest.Options{})
	m := startMTLSNATS(t, spire, spire, "127.0.0.1")
	cfg := spiffeConfig(t, m.ClientURL(), spire.SocketPath())
	_, auth, out := startSource(t, cfg, testLog(io.Discard))
	pub := publisher(t, m, spire, spire.CertPool())
	probe(t, pub, out, "PE/before.squashfs")
	first := spire.X509SVID()
	if !m.accepted(first.SerialNumber) {
		t.Fatal("the server did not see the first X.509-SVID")
	}

	rotated, err := spire.RotateX509()
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the rotated SVID reaching the agent", func() error {
		c, err := auth.Auth().TLSConfig.GetClientCertificate(nil)
		if err != nil || c.Leaf.SerialNumber.Cmp(rotated.SerialNumber) != 0 {
			return fmt.Errorf("still the old SVID (%v)", err)
		}
		return nil
	})
	if err := m.Restart(); err != nil { // every client reconnects
		t.Fatal(err)
	}
	probe(t, pub, out, "PE/after.squashfs")
	if !m.accepted(rotated.SerialNumber) {
		t.Error("after the rotation and a reconnect the server did not see the new X.509-SVID")
	}
}

// TestNATSSPIFFEWithoutSPIREAgent: with the SPIRE agent down the source
// starts at once without a connection and says why; once the agent comes
// up, it connects and asks for a resync.
func TestNATSSPIFFEWithoutSPIREAgent(t *testing.T) {
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The CA (and so the NATS server's certificate) exists before the agent
	// serves: a stopped svidtest server keeps its keys.
	spire, err := svidtest.Start(dir, svidtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spire.Close)
	spire.Stop()
	m := startMTLSNATS(t, spire, spire, "127.0.0.1")
	cfg := spiffeConfig(t, m.ClientURL(), spire.SocketPath())
	logs := &relLog{}
	started := time.Now()
	src, _, out := startSource(t, cfg, testLog(logs))
	if d := time.Since(started); d > natsauth.FirstSVIDWait+5*time.Second {
		t.Errorf("building and starting the source took %s with the SPIRE agent down, want at most about natsauth.FirstSVIDWait (%s)", d, natsauth.FirstSVIDWait)
	}
	testutil.WaitFor(t, 20*time.Second, "the missing SVID logged", func() error {
		for _, want := range []string{"no X.509-SVID from the SPIRE agent yet", "NATS connection attempt failed"} {
			if !strings.Contains(logs.String(), want) {
				return fmt.Errorf("no %q yet", want)
			}
		}
		return nil
	})
	if src.Connected() {
		t.Fatal("connected without an SVID")
	}

	if err := spire.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(60 * time.Second)
	for resynced := false; !resynced; {
		select {
		case ev := <-out:
			ev.Done(nil)
			resynced = ev.Kind == events.Resync && strings.Contains(ev.Reason, "after starting without it")
		case <-deadline:
			t.Fatalf("no resync after the SPIRE agent came up; log:\n%s", logs.String())
		}
	}
	probe(t, publisher(t, m, spire, spire.CertPool()), out, "PE/late.squashfs")
}

// TestNATSSPIFFEDrivesProjection: the whole agent with NATS_SPIFFE=true
// takes its events from a NATS server that requires the node's SVID, and
// projects an image on an IMS change event alone.
func TestNATSSPIFFEDrivesProjection(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	m := startMTLSNATS(t, s.SPIFFE, s.SPIFFE, "127.0.0.1")
	var mu gosync.Mutex
	var applied []string // triggers of the passes that changed LIO
	a := newAgentWith(t, s, Options{OnPass: func(trigger string, rep *projector.Report, err error) {
		if rep != nil && len(rep.Results) > 0 {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, trigger)
		}
	}}, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_URL="+m.ClientURL(), "SBPS_MARSHAL_NATS_SPIFFE=true")
	runAgent(t, a)
	img, err := s.AddImage(ctx, "cos-spiffe", []byte("rootfs announced over NATS with mTLS"), true)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := imsevent.Encode(imsevent.Event{Version: 1, ID: img.ID, Change: imsevent.Created,
		Digest: imsevent.Digest(img.ID, "created"), Time: time.Now(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pub := publisher(t, m, s.SPIFFE, s.SPIFFE.CertPool())
	// Core NATS: publish until the agent's subscription has it (a repeated
	// event costs one more GET).
	deadline := time.Now().Add(30 * time.Second)
	for !projected(t, s, rootfsID(img).Name) {
		if time.Now().After(deadline) {
			t.Fatal("the image was not projected on its IMS event within 30s")
		}
		if err := pub.Publish("sbps.ims.events", msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !m.accepted(s.SPIFFE.X509SVID().SerialNumber) {
		t.Error("the NATS server never saw the node's X.509-SVID")
	}
	testutil.WaitFor(t, 20*time.Second, "the projecting pass recorded", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(applied) == 0 {
			return fmt.Errorf("no pass changed LIO yet")
		}
		if !strings.Contains(applied[0], img.ID) {
			return fmt.Errorf("the pass that projected the image was triggered by %q, want its IMS event", applied[0])
		}
		return nil
	})
}

// projected reports whether saveconfig.json has the backstore.
func projected(t *testing.T, s *rig.Stack, name string) bool {
	t.Helper()
	c, err := s.Saved()
	if err != nil {
		return false
	}
	_, ok := c.FileIO(name)
	return ok
}
