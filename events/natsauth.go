package events

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// Auth is how a NATS client authenticates and verifies the server: the
// NATS_CREDS, NATS_NKEY_SEED and NATS_TLS_* files, or the node's
// X.509-SVID (NATS_SPIFFE). Every NATS connection (the event source, the
// LUN registry, the bridges, `resync --all`) takes its options from
// Auth.Options, so all of them accept and refuse the same settings.
type Auth struct {
	// Creds is a .creds file (NATS_CREDS): user JWT and NKey seed. Optional.
	Creds string
	// NKeySeed is a file holding an NKey user seed (NATS_NKEY_SEED).
	// Optional; not together with Creds.
	NKeySeed string
	// TLSCA, TLSCert and TLSKey are PEM files (NATS_TLS_CA, NATS_TLS_CERT,
	// NATS_TLS_KEY). Cert and Key go together. Optional.
	TLSCA, TLSCert, TLSKey string
	// TLSConfig is used as is when set (NATS_SPIFFE=true: the caller builds
	// it from the node's X.509-SVID, with a GetClientCertificate callback
	// so that every connection presents the SVID of the moment). Not
	// together with TLSCert and TLSKey; TLSCA, when set, replaces its
	// RootCAs.
	TLSConfig *tls.Config
	// RootCAs, when set, is asked at every connection for the roots that
	// verify the server's certificate and host name (NATS_SPIFFE=true
	// without NATS_TLS_CA: the SPIRE trust bundle as it is then). An error
	// fails that connection attempt, which is retried. Not with TLSCA.
	RootCAs func() (*x509.CertPool, error)
}

// Options checks a and returns its nats.go options. It applies them once,
// so that unreadable or malformed files fail here rather than at the first
// connection. Errors name the setting to fix and never hold a seed.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.Creds != "" && a.NKeySeed != "":
		return nil, errors.New("events: set NATS_CREDS or NATS_NKEY_SEED, not both")
	case a.Creds != "":
		if _, err := os.Stat(a.Creds); err != nil {
			return nil, fmt.Errorf("events: NATS_CREDS: %w; point it at the node's .creds file", err)
		}
		opts = append(opts, nats.UserCredentials(a.Creds))
	case a.NKeySeed != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeed)
		if err != nil {
			// The error names the file, never the seed.
			return nil, fmt.Errorf("events: NATS_NKEY_SEED %s: %w; the file must hold an NKey user seed (SU...)", a.NKeySeed, err)
		}
		opts = append(opts, o)
	}
	switch {
	case a.TLSConfig != nil && (a.TLSCert != "" || a.TLSKey != ""):
		return nil, errors.New("events: NATS_SPIFFE and NATS_TLS_CERT/KEY exclude each other; use one")
	case a.RootCAs != nil && a.TLSCA != "":
		return nil, errors.New("events: NATS_TLS_CA and the SPIRE trust bundle exclude each other as the server's roots; use one")
	case (a.TLSCert == "") != (a.TLSKey == ""):
		return nil, errors.New("events: NATS_TLS_CERT and NATS_TLS_KEY go together; set both or neither")
	}
	if a.TLSConfig != nil {
		opts = append(opts, nats.Secure(a.TLSConfig.Clone()))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.RootCAs != nil {
		opts = append(opts, RootCAs(a.RootCAs))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("events: NATS TLS or credentials: %w; check NATS_TLS_*/NATS_CREDS/NATS_NKEY_SEED", err)
		}
	}
	return opts, nil
}

// RootCAs is a nats.go option that asks roots, at every connection, for the
// pool that verifies the server. Unlike nats.RootCAs it does not call roots
// when applied, so it can be set up before the roots exist (the SPIRE
// agent is down): until they do, connection attempts fail and are retried.
func RootCAs(roots func() (*x509.CertPool, error)) nats.Option {
	return func(o *nats.Options) error {
		if o.TLSConfig == nil {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.RootCAsCB = roots
		o.Secure = true
		return nil
	}
}
