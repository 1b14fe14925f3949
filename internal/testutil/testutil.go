// Package testutil holds the helpers every package's tests share: polling
// for an outcome, a log destination safe across goroutines, and a test
// logger. Starting real servers is the rig's job (package rig).
package testutil

import (
	"bytes"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// pollInterval is how often WaitFor checks; it is not a wait for an outcome.
const pollInterval = 10 * time.Millisecond

// WaitFor calls f until it returns nil, and fails the test with f's last
// error, naming what was awaited, once timeout has passed.
func WaitFor(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still not there after %s: %v", what, timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// SyncBuffer is a bytes.Buffer that a logger on another goroutine and the
// test can use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LogEnv is the environment variable that makes Logger print: set
// SBPS_TEST_LOG=1 to see the logs of the code under test.
const LogEnv = "SBPS_TEST_LOG"

// Logger is a logger for code under test: silent unless SBPS_TEST_LOG is
// set, then at debug level on stderr, each line naming the test.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv(LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// SetEnv returns a copy of environ (os.Environ form) with each KEY=value
// of kvs replacing any earlier value of KEY.
func SetEnv(environ []string, kvs ...string) []string {
	out := append([]string(nil), environ...)
	for _, kv := range kvs {
		key, _, _ := strings.Cut(kv, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		out = append(out, kv)
	}
	return out
}
