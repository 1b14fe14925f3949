// Package systemctltest writes a systemctl stand-in for tests: a POSIX sh
// script that plays one oneshot unit such as target.service. `start`
// runs the unit's start command (e.g. `targetctl restore FILE`, as
// target.service's ExecStart) and makes the unit "active", or "failed"
// when the command fails (exit 1, as systemctl does); `stop` runs the stop
// command (`targetctl clear`) and makes it "inactive"; `is-active` prints
// the state and exits 0 when active, 3 otherwise, as real systemctl;
// `is-enabled` prints the unit's enablement (enabled, disabled, masked...)
// and exits 0 only for an enabled one. AddUnit adds more units, which only
// report their states. Every call is appended to a log. The script runs on the host and in the UML
// guest alike (it needs only /bin/sh).
package systemctltest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Options describe the unit the stand-in plays.
type Options struct {
	Unit  string   // defaults to "target.service"
	Start []string // command run by `start` (argv; words must not need quoting beyond single quotes)
	Stop  []string // command run by `stop`; none by default
	State string   // initial state; defaults to "inactive"
	// Enabled is what `is-enabled` says of the unit; defaults to "enabled".
	Enabled string
}

// Fake is an installed stand-in.
type Fake struct {
	Path  string // the script, to be used as SYSTEMCTL_BIN
	dir   string
	unit  string
	state string
}

// Install writes the stand-in into dir (created if needed). It fails tb on
// error.
func Install(tb testing.TB, dir string, o Options) *Fake {
	tb.Helper()
	if o.Unit == "" {
		o.Unit = "target.service"
	}
	if o.State == "" {
		o.State = "inactive"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if o.Enabled == "" {
		o.Enabled = "enabled"
	}
	f := &Fake{Path: filepath.Join(dir, "systemctl"), dir: dir, unit: o.Unit, state: filepath.Join(dir, o.Unit+".state")}
	f.AddUnit(tb, o.Unit, o.State, o.Enabled)
	script := fmt.Sprintf(`#!/bin/sh
# systemctl stand-in for %[1]s (sbps-marshal tests)
dir=%[2]s
echo "$*" >> %[3]s
while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done
verb="$1"; unit="$2"; state="$dir/$unit.state"
if [ $# -ne 2 ] || [ ! -f "$state" ]; then
	echo "Unit $unit could not be found." >&2; exit 4
fi
case "$verb" in
is-active)
	s=$(cat "$state"); echo "$s"; [ "$s" = active ] && exit 0; exit 3 ;;
is-enabled)
	e=$(cat "$dir/$unit.enabled"); echo "$e"; case "$e" in enabled|enabled-runtime|static|alias|indirect|generated) exit 0 ;; esac; exit 1 ;;
esac
if [ "$unit" != %[1]s ]; then
	echo "stand-in: $verb $unit is not modelled" >&2; exit 1
fi
case "$verb" in
start)
	if %[4]s; then echo active > "$state"; exit 0; fi
	echo failed > "$state"
	echo "Job for $unit failed because the control process exited with error code." >&2; exit 1 ;;
stop)
	%[5]s; echo inactive > "$state"; exit 0 ;;
esac
echo "Unknown command verb $verb." >&2; exit 1
`, quote(o.Unit), quote(dir), quote(filepath.Join(dir, "calls.log")), command(o.Start), command(o.Stop))
	if err := os.WriteFile(f.Path, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	return f
}

// AddUnit makes the stand-in know unit, in state (as `is-active` reports
// it) and enabled (as `is-enabled` does). Only the unit of Install can be
// started and stopped.
func (f *Fake) AddUnit(tb testing.TB, unit, state, enabled string) {
	tb.Helper()
	for name, v := range map[string]string{unit + ".state": state, unit + ".enabled": enabled} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(v+"\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// SetState sets the unit's state as `is-active` reports it.
func (f *Fake) SetState(tb testing.TB, s string) {
	tb.Helper()
	if err := os.WriteFile(f.state, []byte(s+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// State is the unit's state now.
func (f *Fake) State(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(f.state)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Calls are the argument lists systemctl was called with, in order.
func (f *Fake) Calls(tb testing.TB) []string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func command(argv []string) string {
	if len(argv) == 0 {
		return "true"
	}
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quote(a)
	}
	return strings.Join(q, " ")
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
