package testutil

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeT records a Fatalf instead of ending the test, so WaitFor's failure
// can be checked.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f) // as t.Fatalf, WaitFor must not go on
}

func TestWaitForReturnsOnceTrue(t *testing.T) {
	n := 0
	WaitFor(t, 5*time.Second, "the third call", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Errorf("f called %d times, want 3", n)
	}
}

func TestWaitForFailsNamingWhatAndWhy(t *testing.T) {
	ft := &fakeT{TB: t}
	var msg string
	func() {
		defer func() {
			if r := recover(); r != ft {
				t.Fatalf("WaitFor did not fail the test (recovered %v)", r)
			}
		}()
		WaitFor(ft, 30*time.Millisecond, "the LUN", func() error { return errors.New("no LUN 7") })
	}()
	msg = ft.failed
	for _, want := range []string{"the LUN", "no LUN 7", "30ms"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure %q does not name %q", msg, want)
		}
	}
}

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("x"))
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Errorf("len = %d, want 800", got)
	}
}

func TestSetEnv(t *testing.T) {
	env := []string{"A=1", "B=2", "AB=3"}
	got := SetEnv(env, "A=9", "C=4")
	want := []string{"B=2", "AB=3", "A=9", "C=4"}
	if !slices.Equal(got, want) {
		t.Errorf("SetEnv = %q, want %q", got, want)
	}
	if env[0] != "A=1" {
		t.Errorf("SetEnv changed its input: %q", env)
	}
}
