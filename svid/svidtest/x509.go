package svidtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// backdate keeps fresh certificates valid on a peer whose clock is a little
// behind.
const backdate = time.Minute

func (s *Server) initCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"svidtest"}, CommonName: "svidtest CA " + s.td.Name()},
		URIs:                  []*url.URL{s.td.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(24 * time.Hour * 365),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse CA: %w", err)
	}
	s.caKey, s.caCert = key, cert
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("svidtest: read random serial: " + err.Error())
	}
	return n
}

// issueX509 makes a leaf X.509-SVID for id, valid for ttl, usable for both
// client and server authentication. It returns the leaf DER and its key.
func (s *Server) issueX509(id spiffeid.ID, ttl time.Duration, dnsNames []string) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", id, err)
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"svidtest"}},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.caCert, &key.PublicKey, s.caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign X.509-SVID for %s: %w", id, err)
	}
	return der, key, nil
}

// IssueX509 issues an X.509-SVID for id (with optional DNS names) from the
// server's CA, for the other party of a TLS test, such as a NATS server.
func (s *Server) IssueX509(id string, dnsNames ...string) (tls.Certificate, error) {
	parsed, err := spiffeid.FromString(id)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	der, key, err := s.issueX509(parsed, s.x509TTL, dnsNames)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse X.509-SVID for %s: %w", id, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CACert is the root of the server's X.509 bundle.
func (s *Server) CACert() *x509.Certificate { return s.caCert }

// CertPool is a pool holding the server's X.509 bundle, for the other party
// of a TLS test.
func (s *Server) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.caCert)
	return pool
}
