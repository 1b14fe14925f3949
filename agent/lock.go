package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock is the agent's exclusive hold on STATE_DIR: one writer to LIO per node.
type Lock struct {
	f       *os.File
	pidFile string
}

// AcquireLock takes STATE_DIR/lock without waiting and writes STATE_DIR/pid.
// If another instance holds it, the error names that instance's pid.
func AcquireLock(stateDir string) (*Lock, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating STATE_DIR: %w", err)
	}
	path := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	pidFile := filepath.Join(stateDir, "pid")
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := ReadPID(stateDir)
			return nil, fmt.Errorf("another sbps-marshal (pid %d) holds %s; stop it first (systemctl stop sbps-marshal) or use a different STATE_DIR", pid, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", pidFile, err)
	}
	return &Lock{f: f, pidFile: pidFile}, nil
}

// Release drops the lock and removes the pid file.
func (l *Lock) Release() {
	os.Remove(l.pidFile)
	l.f.Close()
}

// ReadPID returns the pid of the running agent from STATE_DIR/pid, only
// while someone holds STATE_DIR/lock: an agent that was killed leaves its
// pid file behind, and that pid may since belong to another process, which
// must never be signalled.
func ReadPID(stateDir string) (int, error) {
	lockPath := filepath.Join(stateDir, "lock")
	f, err := os.Open(lockPath)
	if err != nil {
		return 0, fmt.Errorf("sbps-marshal is not running (cannot open %s: %w); start it (systemctl start sbps-marshal)", lockPath, err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return 0, fmt.Errorf("sbps-marshal is not running: nobody holds %s, so %s is left from an agent that was killed; start it (systemctl start sbps-marshal)",
			lockPath, filepath.Join(stateDir, "pid"))
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return 0, fmt.Errorf("checking that the agent holds %s: %w", lockPath, err)
	}
	data, err := os.ReadFile(filepath.Join(stateDir, "pid"))
	if err != nil {
		return 0, fmt.Errorf("no running agent found (reading pid file): %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s is malformed", filepath.Join(stateDir, "pid"))
	}
	return pid, nil
}
