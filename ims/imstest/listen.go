package imstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"
)

// ListenOptions says where and how Start serves.
type ListenOptions struct {
	// Addr is the listen address; defaults to "127.0.0.1:0" (a random port).
	Addr string
	// TLS serves HTTPS with a fresh self-signed certificate for 127.0.0.1,
	// ::1 and localhost; Server.Client and Server.CertPool trust it.
	TLS bool
}

// Start builds a Server and serves it on a real TCP listener until Close.
func Start(opts Options, lopts ListenOptions) (*Server, error) {
	s := NewServer(opts)
	addr := lopts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("imstest: listen on %s: %w", addr, err)
	}
	scheme := "http"
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if lopts.TLS {
		cert, pool, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, err
		}
		s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	s.baseURL = scheme + "://" + ln.Addr().String()
	s.client = &http.Client{Transport: tr}
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = s.httpSrv.Serve(ln) }()
	return s, nil
}

// URL is the server root, e.g. http://127.0.0.1:40123; "" if not started.
func (s *Server) URL() string { return s.baseURL }

// ImagesURL is the image collection at the CSM gateway path, the value a
// client's BaseURL takes (API_GATEWAY + "/apis/ims/v3/images").
func (s *Server) ImagesURL() string { return s.baseURL + "/apis/ims/v3/images" }

// Client returns an HTTP client that trusts the server (TLS) and uses no
// proxy; nil if not started.
func (s *Server) Client() *http.Client { return s.client }

// CACertPEM is the PEM certificate a client must trust to reach a TLS
// server (for the agent's CA_FILE); nil without TLS.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// Close stops a started server, cancelling requests in flight.
func (s *Server) Close() error {
	if s.httpSrv == nil {
		return errors.New("imstest: Close of a server that was not started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.httpSrv.Shutdown(ctx); err != nil {
		return s.httpSrv.Close()
	}
	return nil
}

func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("imstest: generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("imstest: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "imstest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("imstest: self-sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("imstest: parse certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
