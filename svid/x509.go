package svid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultTrustDomain is CSM's SPIFFE trust domain.
const DefaultTrustDomain = "shasta"

// watchRetry is the wait before watching the Workload API again after the
// watch ended for good (go-spiffe retries most errors itself).
const watchRetry = 5 * time.Second

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
	// Logger gets a line when the first X.509-SVID arrives, at every
	// rotation, and when the Workload API cannot be watched (once per
	// distinct error). Defaults to discarding.
	Logger *slog.Logger
	// CLI, when set, gets the X.509-SVID through the SPIRE agent's
	// command line (SPIFFE_SOURCE=cli): `api fetch x509 -write`, run again
	// when the SVID is due for renewal (as JWTSource renews tokens) and
	// every few seconds while it fails.
	CLI *CLI
}

// X509Source keeps the node's X.509-SVID and trust bundle current, watching
// the Workload API in the background, and builds TLS client
// configurations from them. Every handshake uses the SVID and bundle of
// the moment, so connections made after a rotation present the new SVID.
type X509Source struct {
	addr       string // go-spiffe address, "unix:///path"
	td         spiffeid.TrustDomain
	authorizer tlsconfig.Authorizer
	log        *slog.Logger
	client     *workloadapi.Client
	cancel     context.CancelFunc
	done       chan struct{} // closed when the watch goroutine returns
	ready      chan struct{} // closed when the first X.509-SVID arrives
	closeOnce  sync.Once

	// mu guards everything below.
	mu      sync.Mutex
	svid    *x509svid.SVID
	bundles *x509bundle.Set
	lastErr error  // latest watch error, nil after an update
	logged  string // text of the latest watch error logged
}

var (
	_ x509svid.Source   = (*X509Source)(nil)
	_ x509bundle.Source = (*X509Source)(nil)
)

// StartX509Source starts watching the Workload API and returns at once,
// without waiting for the SPIRE agent: until the first X.509-SVID arrives,
// GetClientCertificate and Roots fail, and so does every TLS handshake
// that needs them. It keeps retrying while the agent is down. Close it when
// done. Errors are about cfg only.
func StartX509Source(cfg X509Config) (*X509Source, error) {
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
	addr, _ := socketAddr(cfg.Socket)
	ctx, cancel := context.WithCancel(context.Background())
	s := &X509Source{
		addr: addr, td: td, authorizer: authorizer, log: cfg.Logger,
		cancel: cancel, done: make(chan struct{}), ready: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.CLI != nil {
		go s.poll(ctx, *cfg.CLI)
		return s, nil
	}
	// grpc's default reconnect backoff grows to 2 minutes; a restarted SPIRE
	// agent should be found again within half a minute.
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr), workloadapi.WithDialOptions(
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 30 * time.Second,
		}, MinConnectTimeout: 20 * time.Second})))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("Workload API address %s: %w", addr, err)
	}
	s.client = client
	go s.watch(ctx)
	return s, nil
}

// poll runs the SPIRE agent CLI until ctx ends: again when the SVID is due
// for renewal, and every watchRetry while it fails.
func (s *X509Source) poll(ctx context.Context, cli CLI) {
	defer close(s.done)
	for {
		wait := watchRetry
		c, err := cli.FetchX509(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.OnX509ContextWatchError(err)
		default:
			s.OnX509ContextUpdate(c)
			leaf := c.SVIDs[0].Certificates[0]
			renew := leaf.NotBefore.Add(refreshAfter(leaf.NotAfter.Sub(leaf.NotBefore)))
			wait = max(time.Until(renew), time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// NewX509Source is StartX509Source that waits until the first X.509-SVID
// arrives or ctx ends, for callers that cannot do without it.
func NewX509Source(ctx context.Context, cfg X509Config) (*X509Source, error) {
	_, path := socketAddr(cfg.Socket)
	if err := checkSocket(path); err != nil {
		return nil, err
	}
	s, err := StartX509Source(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Wait(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// watch runs the Workload API watch until ctx ends.
func (s *X509Source) watch(ctx context.Context) {
	defer close(s.done)
	for {
		_ = s.client.WatchX509Context(ctx, s)
		if ctx.Err() != nil {
			return
		}
		// go-spiffe retries by itself and gives up only on errors it deems
		// final (InvalidArgument, already passed to OnX509ContextWatchError);
		// an agent being reconfigured may still come back.
		t := time.NewTimer(watchRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (s *X509Source) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if len(c.SVIDs) == 0 || c.Bundles == nil {
		s.OnX509ContextWatchError(errors.New("the Workload API sent an update without an X.509-SVID or bundle"))
		return
	}
	sv := c.DefaultSVID()
	s.mu.Lock()
	first := s.svid == nil
	s.svid, s.bundles, s.lastErr, s.logged = sv, c.Bundles, nil, ""
	s.mu.Unlock()
	expires := sv.Certificates[0].NotAfter
	if first {
		s.log.Info("got X.509-SVID", "spiffe_id", sv.ID.String(), "expires_at", expires)
		close(s.ready)
	} else {
		s.log.Info("X.509-SVID rotated", "spiffe_id", sv.ID.String(), "expires_at", expires)
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (s *X509Source) OnX509ContextWatchError(err error) {
	if err == nil || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
		return
	}
	err = noIdentity(s.addr, err)
	s.mu.Lock()
	s.lastErr = err
	repeat := err.Error() == s.logged
	s.logged = err.Error()
	sv := s.svid
	s.mu.Unlock()
	if repeat {
		return
	}
	if sv == nil {
		s.log.Warn("no X.509-SVID from the SPIRE agent yet (is it running and this workload registered?); TLS connections that need it fail until it arrives, retrying",
			"addr", s.addr, "err", err)
		return
	}
	s.log.Warn("cannot watch the SPIRE agent's Workload API; keeping the current X.509-SVID until it expires, retrying",
		"addr", s.addr, "spiffe_id", sv.ID.String(), "expires_at", sv.Certificates[0].NotAfter, "err", err)
}

// Ready is closed once the first X.509-SVID has arrived.
func (s *X509Source) Ready() <-chan struct{} { return s.ready }

// Wait waits until the first X.509-SVID has arrived or ctx ends.
func (s *X509Source) Wait(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("get X.509-SVID from SPIRE agent at %s (is the agent running and this workload registered?): %w", s.addr, s.notYet(ctx.Err()))
	}
}

// notYet is err, with the latest watch error when there is one.
func (s *X509Source) notYet(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return fmt.Errorf("%w (latest: %v)", err, s.lastErr)
	}
	return err
}

// GetX509SVID returns the current X.509-SVID. It implements x509svid.Source.
func (s *X509Source) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	sv := s.svid
	s.mu.Unlock()
	if sv == nil {
		return nil, fmt.Errorf("no X.509-SVID from the SPIRE agent at %s yet: %w", s.addr, s.notYet(errNoSVID))
	}
	return sv, nil
}

var errNoSVID = errors.New("is the agent running and this workload registered?")

// GetX509BundleForTrustDomain returns the current X.509 bundle of td. It
// implements x509bundle.Source.
func (s *X509Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	bundles := s.bundles
	s.mu.Unlock()
	if bundles == nil {
		return nil, fmt.Errorf("no X.509 bundle from the SPIRE agent at %s yet: %w", s.addr, s.notYet(errNoSVID))
	}
	return bundles.GetX509BundleForTrustDomain(td)
}

// GetClientCertificate returns the current X.509-SVID as a TLS client
// certificate; it is a tls.Config GetClientCertificate callback, called at
// every handshake.
func (s *X509Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	sv, err := s.GetX509SVID()
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: sv.PrivateKey, Leaf: sv.Certificates[0]}
	for _, c := range sv.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// Roots returns the trust domain's X.509 bundle as it is now, as a
// certificate pool that verifies servers.
func (s *X509Source) Roots() (*x509.CertPool, error) {
	bundle, err := s.GetX509BundleForTrustDomain(s.td)
	if err != nil {
		return nil, fmt.Errorf("X.509 bundle for trust domain %q: %w", s.td.Name(), err)
	}
	roots := x509.NewCertPool()
	for _, c := range bundle.X509Authorities() {
		roots.AddCert(c)
	}
	return roots, nil
}

// TLSConfig is an mTLS client configuration: the client certificate is the
// current X.509-SVID and the server must present an X.509-SVID that chains
// to the trust domain's bundle (and has ServerID, if set). Host names are
// not checked; SPIFFE IDs are. Both follow rotation without a new config.
func (s *X509Source) TLSConfig() *tls.Config {
	return tlsconfig.MTLSClientConfig(s, s, s.authorizer)
}

// ClientTLSConfig is an mTLS client configuration that presents the
// current X.509-SVID at every handshake and verifies the server the usual
// way: its certificate must chain to RootCAs (the system roots while it is
// nil) and name the host. The caller sets RootCAs (from Roots, or its own
// CA) and ServerName, or lets its client library set them per connection.
func (s *X509Source) ClientTLSConfig() *tls.Config {
	return &tls.Config{GetClientCertificate: s.GetClientCertificate, MinVersion: tls.VersionTLS12}
}

// WebTLSConfig is ClientTLSConfig with RootCAs set to the trust domain's
// bundle as it is now: for a server whose certificate is an ordinary
// host-name certificate issued under the bundle. Call it again after a
// bundle rotation.
func (s *X509Source) WebTLSConfig() (*tls.Config, error) {
	roots, err := s.Roots()
	if err != nil {
		return nil, err
	}
	cfg := s.ClientTLSConfig()
	cfg.RootCAs = roots
	return cfg, nil
}

// Close stops watching the Workload API. It may be called more than once.
func (s *X509Source) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		if s.client != nil {
			err = s.client.Close()
		}
	})
	return err
}
