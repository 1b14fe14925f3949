package bridge

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// TLSListener serves HTTPS on ln with the certificate and key in certFile
// and keyFile (PEM). They are read now, so that a bad pair fails the
// start, and again at a handshake after either file changed, so that a
// renewed certificate (cert-manager, or an operator's copy) is served
// without a restart; a pair that does not load then keeps the last good one.
func TLSListener(ln net.Listener, certFile, keyFile string) (net.Listener, error) {
	kp := &keyPair{cert: certFile, key: keyFile}
	if err := kp.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	return tls.NewListener(ln, cfg), nil
}

// keyPair is a certificate and key read from files, and when they were.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	stamp   [2]time.Time // modification times of cert and key when read
}

func (kp *keyPair) load() error {
	stamp, err := kp.stamps()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(kp.cert, kp.key)
	if err != nil {
		return fmt.Errorf("bridge: BRIDGE_TLS_CERT %s and BRIDGE_TLS_KEY %s: %w; they must be a PEM certificate and its private key", kp.cert, kp.key, err)
	}
	kp.mu.Lock()
	kp.current, kp.stamp = &c, stamp
	kp.mu.Unlock()
	return nil
}

func (kp *keyPair) stamps() ([2]time.Time, error) {
	var st [2]time.Time
	for i, f := range []string{kp.cert, kp.key} {
		fi, err := os.Stat(f)
		if err != nil {
			return st, fmt.Errorf("bridge: BRIDGE_TLS_CERT/BRIDGE_TLS_KEY: %w", err)
		}
		st[i] = fi.ModTime()
	}
	return st, nil
}

// get is tls.Config.GetCertificate: the pair, read again if a file changed.
func (kp *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if st, err := kp.stamps(); err == nil {
		kp.mu.Lock()
		changed := st != kp.stamp
		kp.mu.Unlock()
		if changed {
			_ = kp.load() // a half-written renewal: keep serving the last good pair
		}
	}
	kp.mu.Lock()
	defer kp.mu.Unlock()
	return kp.current, nil
}
