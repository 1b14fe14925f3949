package imstest

import "testing"

// StartTest starts a plain-HTTP server on a random loopback port and closes
// it when the test ends.
func StartTest(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts, ListenOptions{})
	if err != nil {
		t.Fatalf("start IMS test server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close IMS test server: %v", err)
		}
	})
	return s
}
