package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestResyncSignalsOnlyTheLockHolder (issue 15, point 8): an agent that was
// killed leaves STATE_DIR/pid behind, and the pid may now be another
// process's. resync must signal only an agent that holds STATE_DIR/lock.
func TestResyncSignalsOnlyTheLockHolder(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Fatalf("this test needs flock(1) (util-linux) to hold STATE_DIR/lock as the agent does: %v", err)
	}
	start := func(t *testing.T, name string, args ...string) *child {
		t.Helper()
		c := &child{cmd: exec.Command(name, args...), done: make(chan error, 1)}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.done <- c.cmd.Wait() }()
		t.Cleanup(func() {
			_ = c.cmd.Process.Kill()
			<-c.ended()
		})
		return c
	}
	resync := func(t *testing.T, dir string, pid int) (int, string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := Main([]string{"resync"}, &out, &errb, []string{"SBPS_MARSHAL_STATE_DIR=" + dir})
		return code, out.String() + errb.String()
	}
	// exited waits up to 2s for c to end and reports the signal that ended
	// it, if any.
	exited := func(c *child) (syscall.Signal, bool) {
		select {
		case err := <-c.ended():
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return ws.Signal(), true
				}
			}
			return 0, true
		case <-time.After(2 * time.Second):
			return 0, false
		}
	}

	t.Run("stale pid file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "lock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		bystander := start(t, "sleep", "30") // now has the dead agent's pid
		code, out := resync(t, dir, bystander.cmd.Process.Pid)
		if code == 0 {
			t.Errorf("resync with nobody holding the lock = 0 (%s); want an error", out)
		}
		if !strings.Contains(out, "lock") || !strings.Contains(out, "not running") {
			t.Errorf("resync output %q; want it to say the agent is not running (no one holds the lock)", out)
		}
		if sig, done := exited(bystander); done {
			t.Fatalf("resync signalled process %d, which does not hold the lock (it ended with signal %v)", bystander.cmd.Process.Pid, sig)
		}
	})

	t.Run("agent holds the lock", func(t *testing.T) {
		dir := t.TempDir()
		lock := filepath.Join(dir, "lock")
		agent := start(t, flock, "--exclusive", lock, "sleep", "30")
		deadline := time.Now().Add(5 * time.Second)
		for !locked(lock) {
			if time.Now().After(deadline) {
				t.Fatal("flock(1) did not take the lock within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if code, out := resync(t, dir, agent.cmd.Process.Pid); code != 0 {
			t.Fatalf("resync = %d (%s); want 0", code, out)
		}
		if sig, done := exited(agent); !done || sig != syscall.SIGHUP {
			t.Errorf("the lock holder ended %v with signal %v; want SIGHUP", done, sig)
		}
	})
}

// child is a process a test started; its Wait runs once, in a goroutine.
type child struct {
	cmd     *exec.Cmd
	done    chan error
	once    sync.Once
	endedCh chan error
}

// ended returns a channel that yields Wait's result once the child ended,
// to any number of readers.
func (c *child) ended() <-chan error {
	c.once.Do(func() {
		c.endedCh = make(chan error, 1)
		go func() {
			err := <-c.done
			c.endedCh <- err
			close(c.endedCh)
		}()
	})
	return c.endedCh
}

// locked reports whether someone holds an exclusive flock on path.
func locked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}
