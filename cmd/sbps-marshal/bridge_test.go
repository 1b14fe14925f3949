package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf/tlstest"
	"github.com/sbps-marshal/sbps-marshal/rig"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// spiffeNATS starts a SPIFFE Workload API and a NATS server that requires
// TLS client certificates issued under its bundle, and returns the
// environment of a program that uses it with NATS_SPIFFE=true, plus a
// subscriber connection holding a certificate of its own.
func spiffeNATS(t *testing.T) (env []string, sub *nats.Conn) {
	t.Helper()
	spire := svidtest.New(t, svidtest.Options{})
	n, err := rig.StartSPIFFENATS(t.TempDir(), spire)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	if nc, err := nats.Connect(n.ClientURL(), nats.Timeout(15*time.Second), nats.Secure(&tls.Config{RootCAs: spire.CertPool(), MinVersion: tls.VersionTLS12})); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected; the server must require one")
	}
	subCert, err := spire.IssueX509("spiffe://shasta/ncn/subscriber")
	if err != nil {
		t.Fatal(err)
	}
	sub, err = nats.Connect(n.ClientURL(), nats.Timeout(15*time.Second), nats.Secure(&tls.Config{Certificates: []tls.Certificate{subCert}, RootCAs: spire.CertPool(), MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	t.Cleanup(sub.Close)
	env = []string{
		"SBPS_MARSHAL_NODE_NAME=ncn-w001",
		"SBPS_MARSHAL_STATE_DIR=" + t.TempDir(),
		"SBPS_MARSHAL_NATS_URL=" + n.ClientURL(),
		"SBPS_MARSHAL_NATS_SPIFFE=true",
		"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=" + spire.SocketPath(),
		"SBPS_MARSHAL_LOG_FORMAT=logfmt",
	}
	return env, sub
}

// TestBridgeNATSSPIFFE: `sbps-marshal bridge webhook` with NATS_SPIFFE=true
// publishes to a NATS server that accepts only the node's X.509-SVID.
func TestBridgeNATSSPIFFE(t *testing.T) {
	env, sub := spiffeNATS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the bridge listens there
	env = append(env, "SBPS_MARSHAL_BRIDGE_LISTEN="+addr)
	cfg, _, err := config.Load(config.Sources{Environ: env}, flag.NewFlagSet("bridge", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, sub, cfg.NATSS3Subject)

	logs := startWebhook(t, cfg)

	note := []byte(`{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"PE/spiffe.squashfs","size":5,"eTag":"abc"}}}]}`)
	// 503 until the bridge listens and has its NATS connection.
	testutil.WaitFor(t, 30*time.Second, "the bridge to accept a notification", func() error {
		resp, err := http.Post("http://"+addr+"/", "application/json", bytes.NewReader(note))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST = %d", resp.StatusCode)
		}
		return nil
	})
	m, err := msgs.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no notification on %s: %v\n%s", cfg.NATSS3Subject, err, logs.String())
	}
	if !bytes.Equal(m.Data, note) {
		t.Errorf("published %q, want the notification unchanged", m.Data)
	}
}

// TestResyncAllNATSSPIFFE: `sbps-marshal resync --all` with
// NATS_SPIFFE=true reaches the fleet through a NATS server that accepts
// only the node's X.509-SVID.
func TestResyncAllNATSSPIFFE(t *testing.T) {
	env, sub := spiffeNATS(t)
	msgs, err := sub.SubscribeSync("sbps.control.resync")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"resync", "--all"}, &out, &errb, env); code != 0 {
		t.Fatalf("resync --all = %d\n%s%s", code, out.String(), errb.String())
	}
	m, err := msgs.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no resync request: %v", err)
	}
	if !strings.Contains(string(m.Data), "sbps-marshal resync --all") {
		t.Errorf("resync request %q does not name its requester", m.Data)
	}
}

// TestBridgeWebhookTLS: `sbps-marshal bridge webhook` with BRIDGE_TLS_CERT,
// BRIDGE_TLS_KEY and BRIDGE_TOKEN_FILE accepts a notification over HTTPS
// with the token as the password of the URL, as a Ceph RGW topic's
// push-endpoint https://sbps:<token>@host:port sends it (HTTP Basic), and
// refuses one without it.
func TestBridgeWebhookTLS(t *testing.T) {
	n := rig.NATSForTest(t, rig.NATSOptions{})
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "CSM platform CA")
	certFile, keyFile := tlstest.WriteKeyPair(t, dir, ca.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}))
	const token = "s3cr3t-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the bridge listens there
	cfg, _, err := config.Load(config.Sources{Environ: []string{
		"SBPS_MARSHAL_NODE_NAME=ncn-w001",
		"SBPS_MARSHAL_STATE_DIR=" + t.TempDir(),
		"SBPS_MARSHAL_NATS_URL=" + n.ClientURL(),
		"SBPS_MARSHAL_BRIDGE_LISTEN=" + addr,
		"SBPS_MARSHAL_BRIDGE_TLS_CERT=" + certFile,
		"SBPS_MARSHAL_BRIDGE_TLS_KEY=" + keyFile,
		"SBPS_MARSHAL_BRIDGE_TOKEN_FILE=" + tokenFile,
	}}, flag.NewFlagSet("bridge", flag.ContinueOnError))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs := subscribe(t, sub, cfg.NATSS3Subject)
	logs := startWebhook(t, cfg)

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	note := []byte(`{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"boot-images"},"object":{"key":"PE/tls.squashfs","size":5,"eTag":"abc"}}}]}`)
	post := func(url string) (int, error) {
		resp, err := client.Post(url, "application/json", bytes.NewReader(note))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	testutil.WaitFor(t, 30*time.Second, "the bridge to accept a notification over HTTPS with the token in the URL", func() error {
		code, err := post("https://sbps:" + token + "@" + addr + "/")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("POST = %d", code)
		}
		return err
	})
	if m, err := msgs.NextMsg(10 * time.Second); err != nil || !bytes.Equal(m.Data, note) {
		t.Fatalf("published %v, %v; want the notification unchanged\n%s", m, err, logs.String())
	}
	if code, err := post("https://" + addr + "/"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("POST without the token = %d, %v; want 401", code, err)
	}
	if code, err := post("https://sbps:wrong@" + addr + "/"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("POST with a wrong token = %d, %v; want 401", code, err)
	}
	if _, err := http.Post("http://"+addr+"/", "application/json", bytes.NewReader(note)); err == nil {
		if _, err := msgs.NextMsg(500 * time.Millisecond); err == nil {
			t.Error("a plain-HTTP POST was published")
		}
	}
}

// subscribe subscribes nc to subject and waits until the server has it.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	msgs, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// startWebhook runs `sbps-marshal bridge webhook` with cfg until the test
// ends, then checks it exited 0; it returns the bridge's log.
func startWebhook(t *testing.T, cfg *config.Config) *testutil.SyncBuffer {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- bridgeMain(ctx, "webhook", cfg, slog.New(slog.NewTextHandler(logs, nil)), &bytes.Buffer{}, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("bridge exited %d:\n%s", code, logs.String())
		}
	})
	return logs
}
