// Package systemctl asks systemd about a unit and starts it through the
// systemctl command, as the old agent did for target.service: `systemctl
// is-active <unit>` and `systemctl start <unit>`. Each call has a timeout
// and runs in its own process group, killed whole when the call ends
// early. Safe for concurrent use.
package systemctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Defaults used for zero Unit fields.
const (
	DefaultBin     = "/usr/bin/systemctl"
	DefaultTimeout = 90 * time.Second
)

// Unit is one systemd unit reached through systemctl.
type Unit struct {
	// Bin is the systemctl executable, an absolute path. Defaults to
	// DefaultBin.
	Bin string
	// Name is the unit, e.g. "target.service".
	Name string
	// Timeout bounds one systemctl call (a start waits for the unit's
	// ExecStart, e.g. targetctl restore). Defaults to DefaultTimeout.
	Timeout time.Duration
}

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+\.(service|target|socket|mount|path|timer)$`)

// Check says what is wrong with u's binary path or unit name, if anything.
func (u Unit) Check() error {
	if u.Bin != "" && !filepath.IsAbs(u.Bin) {
		return fmt.Errorf("systemctl binary %q is not an absolute path", u.Bin)
	}
	if !unitRE.MatchString(u.Name) || strings.HasPrefix(u.Name, "-") {
		return fmt.Errorf("unit name %q is not a systemd unit name (want e.g. target.service)", u.Name)
	}
	return nil
}

// State is what `systemctl is-active` prints: "active", "inactive",
// "failed", "activating", "deactivating", "reloading", …
type State string

// Active is the state of a running unit.
const Active State = "active"

// IsActive asks `systemctl is-active <unit>`. It exits 0 for an active unit
// and non-zero (3) otherwise, printing the state either way; the state is
// returned, and an error only when systemctl could not answer.
func (u Unit) IsActive(ctx context.Context) (State, error) {
	out, code, err := u.run(ctx, "is-active", u.Name)
	if err != nil {
		return "", err
	}
	state := State(strings.TrimSpace(firstLine(out)))
	switch {
	case code == 0 && state == Active:
		return Active, nil
	case code != 0 && state != "" && state != Active && !strings.ContainsAny(string(state), " \t:"):
		return state, nil
	}
	return "", fmt.Errorf("%s is-active %s: unexpected answer %q (exit status %d)", u.bin(), u.Name, strings.TrimSpace(out), code)
}

// IsEnabled asks `systemctl is-enabled <unit>`: enabled, disabled, masked,
// static, ... (systemctl(1)); it exits non-zero for every state but the
// enabled ones, so the state is what it prints. An error says systemctl
// could not answer, or does not know the unit.
func (u Unit) IsEnabled(ctx context.Context) (string, error) {
	out, code, err := u.run(ctx, "is-enabled", u.Name)
	if err != nil {
		return "", err
	}
	state := strings.TrimSpace(firstLine(out))
	if state == "" || strings.ContainsAny(state, " \t:") {
		return "", fmt.Errorf("%s is-enabled %s: unexpected answer %q (exit status %d)", u.bin(), u.Name, strings.TrimSpace(out), code)
	}
	return state, nil
}

// Start runs `systemctl start <unit>` and waits for it (for a oneshot unit
// such as target.service, until its ExecStart finished).
func (u Unit) Start(ctx context.Context) error {
	out, code, err := u.run(ctx, "start", u.Name)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s start %s: exit status %d: %s (see `systemctl status %s` and `journalctl -u %s`)",
			u.bin(), u.Name, code, strings.TrimSpace(out), u.Name, u.Name)
	}
	return nil
}

func (u Unit) bin() string {
	if u.Bin == "" {
		return DefaultBin
	}
	return u.Bin
}

// run runs systemctl with args and returns its combined output and exit
// status; err is set when it could not start or did not finish in time.
func (u Unit) run(ctx context.Context, args ...string) (string, int, error) {
	if err := u.Check(); err != nil {
		return "", -1, err
	}
	timeout := u.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%s %s took longer than %s", u.bin(), strings.Join(args, " "), timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin(), append([]string{"--no-ask-password", "--no-pager"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), -1, fmt.Errorf("%w", context.Cause(ctx))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return out.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return out.String(), -1, fmt.Errorf("running %s %s: %w (set SYSTEMCTL_BIN)", u.bin(), strings.Join(args, " "), err)
	}
	return out.String(), 0, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
