package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf/tlstest"
)

// TestTLSListener: HTTPS with the configured pair, a renewed pair served
// without a restart, plain HTTP refused, and a bad pair failing the start.
func TestTLSListener(t *testing.T) {
	ca := tlstest.NewCA(t, "CSM platform CA")
	dir := t.TempDir()
	first := ca.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{})
	certFile, keyFile := tlstest.WriteKeyPair(t, dir, first)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := TLSListener(raw, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // the plain-HTTP request below is refused on purpose
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "https://" + raw.Addr().String() + "/"

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	served := func() *x509.Certificate {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET over TLS: %v", err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0]
	}
	if got := served(); !got.Equal(first.Leaf) {
		t.Fatalf("served serial %v, want the configured certificate %v", got.SerialNumber, first.Leaf.SerialNumber)
	}

	renewed := ca.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{})
	later := time.Now().Add(time.Minute)
	tlstest.WriteKeyPair(t, dir, renewed)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got := served(); !got.Equal(renewed.Leaf) {
		t.Errorf("after renewal served serial %v, want the renewed %v", got.SerialNumber, renewed.Leaf.SerialNumber)
	}

	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + raw.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was served on the TLS listener")
		}
	}

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw2.Close()
	_, err = TLSListener(raw2, certFile, keyFile)
	if err == nil || !strings.Contains(err.Error(), "BRIDGE_TLS_KEY") {
		t.Errorf("TLSListener with a bad key: %v, want an error naming BRIDGE_TLS_KEY", err)
	}
	if got := served(); !got.Equal(renewed.Leaf) {
		t.Errorf("with a bad key on disk served %v, want the last good pair %v", got.SerialNumber, renewed.Leaf.SerialNumber)
	}

}
