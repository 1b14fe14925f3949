// Package tlsconf builds the TLS client settings the agent uses for S3 and
// IMS, as a CSM worker needs them, and explains verification failures.
//
// Certificates are verified against the system pool (on SLES the bundle
// /var/lib/ca-certificates/ca-bundle.pem, into which update-ca-certificates
// folds CSM's platform CA from /etc/pki/trust/anchors) plus the PEM bundle
// CA_FILE names: CA_FILE adds to the system pool, it never replaces it.
// Verification is off only with an explicit InsecureSkipVerify
// (TLS_INSECURE_SKIP_VERIFY=true), which the old Python agent did
// unconditionally for S3 and IMS.
//
// A failed verification comes back as a *VerifyError that names the host,
// the certificate's subject and issuer, and the fix for that service.
// Clients built here are safe for concurrent use.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Options say how one service's TLS connections are verified.
type Options struct {
	// Service names the peer in errors: "S3", "IMS". Defaults to "server".
	Service string
	// CAFile is a PEM bundle trusted in addition to the system pool
	// (CA_FILE). Empty: the system pool alone.
	CAFile string
	// InsecureSkipVerify turns certificate verification off
	// (TLS_INSECURE_SKIP_VERIFY=true). Callers warn about it at start.
	InsecureSkipVerify bool
	// Alternative is a further fix for this service told with a
	// verification failure, e.g. for S3 "S3_PROTO=http, as the s3fs mount of
	// boot-images uses (url=http://rgw-vip.nmn)". Empty: CA_FILE only.
	Alternative string
}

// Config returns the client TLS configuration o describes: TLS 1.2 or
// newer, roots the system pool plus CAFile's certificates.
func Config(o Options) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.InsecureSkipVerify {
		c.InsecureSkipVerify = true // TLS_INSECURE_SKIP_VERIFY=true, asked for explicitly and warned about
		return c, nil
	}
	if o.CAFile == "" {
		return c, nil // nil RootCAs: the system pool
	}
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("CA_FILE for %s: %w: point CA_FILE at a readable PEM bundle of the CA that issued %s's certificate", o.service(), err, o.service())
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		// No system pool on this platform: CA_FILE alone.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA_FILE %s for %s holds no PEM certificate: point it at the PEM bundle of the CA that issued %s's certificate (on CSM the platform CA, /etc/pki/trust/anchors/platform-ca-certs.crt)", o.CAFile, o.service(), o.service())
	}
	c.RootCAs = pool
	return c, nil
}

// Client returns an HTTP client for the service: http.DefaultTransport's
// settings (proxy from the environment, timeouts) with Config(o), and
// verification failures turned into *VerifyError.
func Client(o Options) (*http.Client, error) {
	tc, err := Config(o)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: &explainer{next: tr, o: o}}, nil
}

// explainer turns a failed certificate verification into a *VerifyError
// naming the request's host.
type explainer struct {
	next *http.Transport
	o    Options
}

func (e *explainer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := e.next.RoundTrip(req)
	if err != nil {
		err = Explain(req.URL.Host, err, e.o)
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (e *explainer) CloseIdleConnections() { e.next.CloseIdleConnections() }

// VerifyError is a certificate verification failure of a TLS connection,
// with what an operator needs to fix it.
type VerifyError struct {
	Service string // "S3", "IMS"
	Host    string // host[:port] dialled
	Subject string // the server certificate's subject
	Issuer  string // the server certificate's issuer
	Fix     string // what to do
	Err     error  // the verification error
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%s at %s: TLS certificate not trusted (subject %q, issuer %q): %v; fix: %s",
		e.Service, e.Host, e.Subject, e.Issuer, e.Err, e.Fix)
}

func (e *VerifyError) Unwrap() error { return e.Err }

// Explain returns err as a *VerifyError when it is a certificate
// verification failure of a connection to host, else err unchanged.
func Explain(host string, err error, o Options) error {
	var ve *VerifyError
	if errors.As(err, &ve) {
		return err
	}
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		return err
	}
	e := &VerifyError{Service: o.service(), Host: host, Err: cve.Err}
	if len(cve.UnverifiedCertificates) > 0 {
		leaf := cve.UnverifiedCertificates[0]
		e.Subject, e.Issuer = leaf.Subject.String(), leaf.Issuer.String()
	}
	e.Fix = fix(e, cve.Err, o)
	return e
}

func fix(e *VerifyError, err error, o Options) string {
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var fixes []string
	switch {
	case errors.As(err, &hostErr):
		names := "no DNS name"
		if hostErr.Certificate != nil && len(hostErr.Certificate.DNSNames) > 0 {
			names = strings.Join(hostErr.Certificate.DNSNames, ", ")
		}
		fixes = append(fixes, fmt.Sprintf("the certificate is for %s, not %s: use a host name it names", names, e.Host))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		fixes = append(fixes, "the certificate has expired or is not valid yet: renew it, or check this node's clock")
	default:
		fixes = append(fixes, fmt.Sprintf("set CA_FILE (SBPS_MARSHAL_CA_FILE in /etc/sysconfig/sbps-marshal) to a PEM bundle holding the CA that issued it (%q), added to the system pool; on CSM that is usually the platform CA, /etc/pki/trust/anchors/platform-ca-certs.crt (or run update-ca-certificates to fold it into the system bundle)", e.Issuer))
	}
	if o.Alternative != "" {
		fixes = append(fixes, o.Alternative)
	}
	return strings.Join(fixes, "; or ")
}

func (o Options) service() string {
	if o.Service == "" {
		return "server"
	}
	return o.Service
}
