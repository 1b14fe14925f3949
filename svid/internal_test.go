package svid

import (
	"testing"
	"time"
)

func TestRefreshAfter(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		want     time.Duration
	}{
		{name: "one hour refreshes at 80%", lifetime: time.Hour, want: 48 * time.Minute},
		{name: "ten minutes refreshes at 80%", lifetime: 10 * time.Minute, want: 8 * time.Minute},
		{name: "one minute refreshes 30s before expiry", lifetime: time.Minute, want: 30 * time.Second},
		{name: "two minutes refreshes 30s before expiry", lifetime: 2 * time.Minute, want: 90 * time.Second},
		{name: "short token refreshes at half-time", lifetime: 20 * time.Second, want: 10 * time.Second},
		{name: "no lifetime", lifetime: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refreshAfter(tt.lifetime); got != tt.want {
				t.Errorf("refreshAfter(%v) = %v, want %v", tt.lifetime, got, tt.want)
			}
		})
	}
}

func TestSocketAddr(t *testing.T) {
	tests := []struct {
		name     string
		socket   string
		wantAddr string
		wantPath string
	}{
		{name: "default", socket: "", wantAddr: "unix:///var/lib/spire/agent.sock", wantPath: "/var/lib/spire/agent.sock"},
		{name: "plain path", socket: "/run/spire/sock", wantAddr: "unix:///run/spire/sock", wantPath: "/run/spire/sock"},
		{name: "go-spiffe form", socket: "unix:///run/spire/sock", wantAddr: "unix:///run/spire/sock", wantPath: "/run/spire/sock"},
		{name: "tcp is passed through", socket: "tcp://127.0.0.1:8081", wantAddr: "tcp://127.0.0.1:8081", wantPath: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, path := socketAddr(tt.socket)
			if addr != tt.wantAddr || path != tt.wantPath {
				t.Errorf("socketAddr(%q) = (%q, %q), want (%q, %q)", tt.socket, addr, path, tt.wantAddr, tt.wantPath)
			}
		})
	}
}
