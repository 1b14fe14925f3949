package svidtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
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

// issuedSVID is an X.509-SVID the Workload API hands out.
type issuedSVID struct {
	der    []byte // leaf certificate
	keyDER []byte // PKCS #8 private key
	leaf   *x509.Certificate
}

// issueSVID issues a new X.509-SVID for the workload (X509ID, X509TTL).
func (s *Server) issueSVID() (issuedSVID, error) {
	der, key, err := s.issueX509(s.x509ID, s.x509TTL, nil)
	if err != nil {
		return issuedSVID{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return issuedSVID{}, fmt.Errorf("marshal key of X.509-SVID for %s: %w", s.x509ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return issuedSVID{}, fmt.Errorf("parse X.509-SVID for %s: %w", s.x509ID, err)
	}
	return issuedSVID{der: der, keyDER: keyDER, leaf: leaf}, nil
}

// issueX509 makes a leaf X.509-SVID for id, valid for ttl, usable for both
// client and server authentication. names become DNS names, or IP
// addresses when they parse as one. It returns the leaf DER and its key.
func (s *Server) issueX509(id spiffeid.ID, ttl time.Duration, names []string) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key for %s: %w", id, err)
	}
	var dnsNames []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, n)
		}
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"svidtest"}},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
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

// IssueX509 issues an X.509-SVID for id from the server's CA, for the other
// party of a TLS test, such as a NATS server. names are host names, or IP
// addresses ("127.0.0.1"), the certificate is also valid for.
func (s *Server) IssueX509(id string, names ...string) (tls.Certificate, error) {
	parsed, err := spiffeid.FromString(id)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	der, key, err := s.issueX509(parsed, s.x509TTL, names)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse X.509-SVID for %s: %w", id, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// X509SVID is the workload's X.509-SVID the Workload API hands out now.
func (s *Server) X509SVID() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.x509.leaf
}

// RotateX509 issues the workload a new X.509-SVID (new key and serial) and
// sends it on every open FetchX509SVID stream, as the SPIRE agent does when
// an SVID nears its expiry. It returns the new certificate.
func (s *Server) RotateX509() (*x509.Certificate, error) {
	sv, err := s.issueSVID()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.x509 = sv
	close(s.x509Rotated)
	s.x509Rotated = make(chan struct{})
	return sv.leaf, nil
}

// CACert is the root of the server's X.509 bundle.
func (s *Server) CACert() *x509.Certificate { return s.caCert }

// CACertPEM is CACert in PEM form, for a CA file.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.caCert.Raw})
}

// CertPool is a pool holding the server's X.509 bundle, for the other party
// of a TLS test (a NATS server's client CAs, say).
func (s *Server) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.caCert)
	return pool
}
