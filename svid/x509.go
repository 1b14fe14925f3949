package svid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// DefaultTrustDomain is CSM's SPIFFE trust domain.
const DefaultTrustDomain = "shasta"

// X509Config configures an X509Source.
type X509Config struct {
	// Socket is the Workload API socket, as in JWTConfig. Defaults to
	// DefaultSocket.
	Socket string
	// TrustDomain whose bundle verifies servers. Defaults to
	// DefaultTrustDomain.
	TrustDomain string
	// ServerID, when set, is the only SPIFFE ID TLSConfig accepts from a
	// server; otherwise any ID in TrustDomain is accepted.
	ServerID string
}

// X509Source keeps the node's X.509-SVID and trust bundle current, watching
// the Workload API, and builds TLS client configurations from them.
type X509Source struct {
	src        *workloadapi.X509Source
	td         spiffeid.TrustDomain
	authorizer tlsconfig.Authorizer
}

// NewX509Source connects to the Workload API and waits until the first
// X.509-SVID arrives or ctx ends. Close it when done.
func NewX509Source(ctx context.Context, cfg X509Config) (*X509Source, error) {
	tdName := cfg.TrustDomain
	if tdName == "" {
		tdName = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", tdName, err)
	}
	authorizer := tlsconfig.AuthorizeMemberOf(td)
	if cfg.ServerID != "" {
		id, err := spiffeid.FromString(cfg.ServerID)
		if err != nil {
			return nil, fmt.Errorf("server SPIFFE ID %q: %w", cfg.ServerID, err)
		}
		authorizer = tlsconfig.AuthorizeID(id)
	}
	addr, path := socketAddr(cfg.Socket)
	if err := checkSocket(path); err != nil {
		return nil, err
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		return nil, fmt.Errorf("get X.509-SVID from SPIRE agent at %s (is the agent running and this workload registered?): %w", addr, err)
	}
	return &X509Source{src: src, td: td, authorizer: authorizer}, nil
}

// TLSConfig is an mTLS client configuration: the client certificate is the
// current X.509-SVID and the server must present an X.509-SVID that chains
// to the trust domain's bundle (and has ServerID, if set). Host names are
// not checked; SPIFFE IDs are. Both follow rotation without a new config.
func (s *X509Source) TLSConfig() *tls.Config {
	return tlsconfig.MTLSClientConfig(s.src, s.src, s.authorizer)
}

// WebTLSConfig is an mTLS client configuration for a server whose
// certificate is an ordinary host-name certificate issued under the trust
// domain's bundle: the client certificate is the current X.509-SVID, the
// roots are the bundle as it is now, and the host name is verified as
// usual. Call it again after a bundle rotation.
func (s *X509Source) WebTLSConfig() (*tls.Config, error) {
	bundle, err := s.src.GetX509BundleForTrustDomain(s.td)
	if err != nil {
		return nil, fmt.Errorf("X.509 bundle for trust domain %q: %w", s.td.Name(), err)
	}
	roots := x509.NewCertPool()
	for _, c := range bundle.X509Authorities() {
		roots.AddCert(c)
	}
	return tlsconfig.MTLSWebClientConfig(s.src, roots), nil
}

// Close stops watching the Workload API.
func (s *X509Source) Close() error {
	return s.src.Close()
}
