// Package natsauth is how every NATS connection of sbps-marshal
// authenticates and verifies the server: the agent's event source and LUN
// registry, the bridges, `resync --all` and doctor.
package natsauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// Auth is how every NATS connection authenticates: the agent's event
// source and fleet LUN registry, the bridges and `resync --all`. It holds
// the credentials and TLS files of the configuration and, with
// NATS_SPIFFE=true, the node's X.509-SVID from the SPIRE Workload API.
//
// With NATS_SPIFFE=true the client certificate is the SVID of the moment
// (read at every TLS handshake, so reconnections after a rotation present
// the new one), and the server is verified by:
//
//   - NATS_SPIFFE_SERVER_ID set: its X.509-SVID must have that SPIFFE ID
//     and chain to the SPIRE trust bundle; host names are not checked;
//   - NATS_TLS_CA set: its certificate must chain to that CA file and name
//     the host of NATS_URL (a cert-manager certificate, say);
//   - otherwise: its certificate must chain to the SPIRE trust bundle, as
//     it is at each connection, and name the host of NATS_URL.
type Auth struct {
	cfg  *config.Config
	x509 *svid.X509Source // nil unless NATS_SPIFFE=true and NATS_URL is set
}

// FirstSVIDWait bounds how long New waits for the first
// X.509-SVID: a running SPIRE agent answers in milliseconds, so that the
// first NATS connection already has it; a SPIRE agent that is down delays
// the start by this much, not more.
const FirstSVIDWait = 5 * time.Second

// New prepares the authentication cfg describes. With
// NATS_SPIFFE=true it starts getting the X.509-SVID (through the SPIRE
// agent CLI or the Workload API at SPIRE_AGENT_SOCK_PATH, as
// SPIFFE_SOURCE decides) and waits for the first X.509-SVID for at most
// FirstSVIDWait (or until ctx ends), then returns even without it: until
// the SVID arrives every TLS handshake fails, and NATS is retried as when
// no server answers (the agent projects on resyncs alone meanwhile). Close
// it when done.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Auth, error) {
	a := &Auth{cfg: cfg}
	if !cfg.NATSSPIFFE || len(cfg.NATSURL) == 0 {
		return a, nil
	}
	cli, err := svid.ChooseCLI(cfg.SPIFFESource, cfg.SpireAgentPath, cfg.SpireAgentSock, log, "NATS")
	if err != nil {
		return nil, fmt.Errorf("NATS_SPIFFE: %w", err)
	}
	src, err := svid.StartX509Source(svid.X509Config{
		Socket:   cfg.SpireAgentSock,
		ServerID: cfg.NATSSPIFFEServer,
		Logger:   log.With("component", "svid.x509", "for", "NATS"),
		CLI:      cli,
	})
	if err != nil {
		return nil, fmt.Errorf("NATS_SPIFFE: %w", err)
	}
	a.x509 = src
	wctx, cancel := context.WithTimeout(ctx, FirstSVIDWait)
	defer cancel()
	if err := src.Wait(wctx); err != nil {
		log.Warn("NATS_SPIFFE: no X.509-SVID yet; NATS connects once it arrives, projecting without events meanwhile", "waited", FirstSVIDWait, "err", err)
	}
	return a, nil
}

// Wait waits until the X.509-SVID has arrived or ctx ends; without
// NATS_SPIFFE it returns nil at once. One-shot commands call it before
// connecting; the daemon does not wait.
func (a *Auth) Wait(ctx context.Context) error {
	if a.x509 == nil {
		return nil
	}
	if err := a.x509.Wait(ctx); err != nil {
		return fmt.Errorf("NATS_SPIFFE: %w", err)
	}
	return nil
}

// Close stops watching the Workload API. It may be called more than once.
func (a *Auth) Close() {
	if a.x509 != nil {
		a.x509.Close()
	}
}

// spiffeTLS is the client TLS configuration presenting the SVID, and the
// roots that verify the server at each connection when they come from the
// SPIRE trust bundle (nil when NATS_TLS_CA or NATS_SPIFFE_SERVER_ID
// verifies it).
func (a *Auth) spiffeTLS() (*tls.Config, func() (*x509.CertPool, error)) {
	switch {
	case a.cfg.NATSSPIFFEServer != "":
		return a.x509.TLSConfig(), nil
	case a.cfg.NATSTLSCA != "":
		return a.x509.ClientTLSConfig(), nil
	default:
		return a.x509.ClientTLSConfig(), a.x509.Roots
	}
}

// Auth is the configuration's NATS authentication and TLS, with the
// X.509-SVID when NATS_SPIFFE=true.
func (a *Auth) Auth() events.Auth {
	cfg := a.cfg
	au := events.Auth{
		Creds: cfg.NATSCreds, NKeySeed: cfg.NATSNKeySeed,
		TLSCA: cfg.NATSTLSCA, TLSCert: cfg.NATSTLSCert, TLSKey: cfg.NATSTLSKey,
	}
	if a.x509 != nil {
		au.TLSConfig, au.RootCAs = a.spiffeTLS()
	}
	return au
}

// Options returns the nats.go connection options, or an error naming the
// setting to fix (events.Auth.Options).
func (a *Auth) Options() ([]nats.Option, error) { return a.Auth().Options() }
