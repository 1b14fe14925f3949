package tlsconf_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf/tlstest"
)

// systemCA plays CSM's platform CA in the system pool: TestMain makes it
// and points SSL_CERT_FILE at it (and SSL_CERT_DIR at an empty directory)
// before anything loads the system pool, which Go reads once per process.
var systemCA *tlstest.CA

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tlsconf-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	systemCA, err = tlstest.MakeCA("Platform CA (system pool)")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "ca-bundle.pem"), systemCA.PEM(), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "making the system pool's CA:", err)
		os.Exit(1)
	}
	os.Setenv("SSL_CERT_FILE", filepath.Join(dir, "ca-bundle.pem"))
	os.Setenv("SSL_CERT_DIR", filepath.Join(dir, "no-certs"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func ok(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }

func get(t *testing.T, o tlsconf.Options, url string) error {
	t.Helper()
	c, err := tlsconf.Client(o)
	if err != nil {
		t.Fatalf("Client(%+v): %v", o, err)
	}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "ok" {
		t.Fatalf("GET %s = %q, want ok", url, body)
	}
	return nil
}

// TestUnknownCANamesHostIssuerAndFix: a certificate from a CA neither the
// system pool nor CA_FILE holds fails with an error that names the host,
// the issuer and the fixes: CA_FILE, and the service's alternative.
func TestUnknownCANamesHostIssuerAndFix(t *testing.T) {
	unknown := tlstest.NewCA(t, "RGW Private CA")
	srv := tlstest.Server(t, unknown.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}), http.HandlerFunc(ok))
	host := strings.TrimPrefix(srv.URL, "https://")
	o := tlsconf.Options{Service: "S3", Alternative: "S3_PROTO=http, as the s3fs mount of boot-images uses"}

	err := get(t, o, srv.URL)
	var ve *tlsconf.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("GET with an unknown CA: err = %v, want a *tlsconf.VerifyError", err)
	}
	for _, want := range []string{"S3", host, "CN=RGW Private CA", "CA_FILE", "S3_PROTO=http"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if ve.Host != host || !strings.Contains(ve.Issuer, "RGW Private CA") {
		t.Errorf("VerifyError host %q issuer %q, want %q and the unknown CA", ve.Host, ve.Issuer, host)
	}
}

// TestCAFileAddsToSystemPool: with CA_FILE naming one CA, servers issued by
// it and servers issued by the system pool's CA are both trusted.
func TestCAFileAddsToSystemPool(t *testing.T) {
	dir := t.TempDir()
	extra := tlstest.NewCA(t, "Extra CA (CA_FILE)")
	o := tlsconf.Options{Service: "IMS", CAFile: extra.WritePEM(t, dir, "extra.pem")}

	viaFile := tlstest.Server(t, extra.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}), http.HandlerFunc(ok))
	if err := get(t, o, viaFile.URL); err != nil {
		t.Errorf("server issued by the CA_FILE CA: %v", err)
	}
	viaSystem := tlstest.Server(t, systemCA.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}), http.HandlerFunc(ok))
	if err := get(t, o, viaSystem.URL); err != nil {
		t.Errorf("server issued by the system pool's CA, with CA_FILE set to another CA: %v (CA_FILE must add to the system pool, not replace it)", err)
	}
	if err := get(t, tlsconf.Options{Service: "IMS"}, viaSystem.URL); err != nil {
		t.Errorf("server issued by the system pool's CA, no CA_FILE: %v", err)
	}
}

// TestInsecureSkipVerify: TLS_INSECURE_SKIP_VERIFY=true reaches a server
// whose CA nobody trusts.
func TestInsecureSkipVerify(t *testing.T) {
	unknown := tlstest.NewCA(t, "RGW Private CA")
	srv := tlstest.Server(t, unknown.Issue(t, []string{"127.0.0.1"}, time.Time{}, time.Time{}), http.HandlerFunc(ok))
	if err := get(t, tlsconf.Options{Service: "S3", InsecureSkipVerify: true}, srv.URL); err != nil {
		t.Errorf("with InsecureSkipVerify: %v", err)
	}
}

// TestOtherFailuresNameTheirFix: a host name the certificate does not
// name, and an expired certificate, get their own fix, not CA_FILE.
func TestOtherFailuresNameTheirFix(t *testing.T) {
	tests := []struct {
		name       string
		hosts      []string
		from, till time.Time
		want       string
	}{
		{"wrong host", []string{"rgw-vip.nmn"}, time.Time{}, time.Time{}, "the certificate is for rgw-vip.nmn, not 127.0.0.1"},
		{"expired", []string{"127.0.0.1"}, time.Now().Add(-48 * time.Hour), time.Now().Add(-24 * time.Hour), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tlstest.Server(t, systemCA.Issue(t, tt.hosts, tt.from, tt.till), http.HandlerFunc(ok))
			err := get(t, tlsconf.Options{Service: "IMS"}, srv.URL)
			var ve *tlsconf.VerifyError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "Platform CA (system pool)") {
				t.Errorf("err = %v, want a VerifyError naming the issuer and %q", err, tt.want)
			}
		})
	}
}

// TestCAFileErrors: an unreadable or empty CA_FILE is refused with the
// key, the path and what it must hold.
func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o644)
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.pem"), "no such file"},
		{notPEM, "holds no PEM certificate"},
	} {
		_, err := tlsconf.Client(tlsconf.Options{Service: "S3", CAFile: tt.path})
		if err == nil || !strings.Contains(err.Error(), "CA_FILE") || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Client(CAFile %s) = %v, want an error naming CA_FILE, the path and %q", tt.path, err, tt.want)
		}
	}
}
