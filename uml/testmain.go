package uml

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// GuestEnv is set to "1" in the environment of a test binary that TestMain
// started inside the guest.
const GuestEnv = "SBPS_UML_GUEST"

// InGuest reports whether this process runs inside the guest that TestMain
// booted.
func InGuest() bool { return os.Getenv(GuestEnv) == "1" }

// TestMain runs a test package inside the guest: on the host it boots UML
// once and runs this same test binary there, with the same flags, streaming
// its output, and exits with its status; inside the guest it runs the
// tests. setup, if not nil, runs on the host before the boot with a
// directory under /tmp that the guest sees and that is removed after the
// run, and returns KEY=value entries for the guest's environment (paths of
// binaries it built there, say). Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { uml.TestMain(m, nil) }
//
// The test binary must be under /tmp (go test builds it there unless
// GOTMPDIR says otherwise). A host that cannot boot the guest fails the
// package with Check's one-line error; nothing is skipped.
func TestMain(m *testing.M, setup func(dir string) ([]string, error)) {
	if InGuest() {
		os.Exit(m.Run())
	}
	os.Exit(hostMain(setup))
}

func hostMain(setup func(dir string) ([]string, error)) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "uml:", err)
		return 1
	}
	if !strings.HasPrefix(self, hostShared+"/") {
		fmt.Fprintf(os.Stderr, "uml: the test binary %s is not under %s, the only host folder the guest sees: unset GOTMPDIR or point it under %s\n", self, hostShared, hostShared)
		return 1
	}
	env := []string{GuestEnv + "=1"}
	if setup != nil {
		dir, err := os.MkdirTemp(hostShared, "sbps-uml-setup-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "uml: a directory for the guest's test run:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		more, err := setup(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "uml: setting up the guest's test run:", err)
			return 1
		}
		env = append(env, more...)
	}
	for _, k := range []string{"SBPS_UML_DEBUG", "NATS_LOGGING"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	wd, _ := os.Getwd()
	timeout := 30 * time.Minute
	if v := os.Getenv("SBPS_UML_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			timeout = d
		}
	}
	res, err := Run(context.Background(), Config{
		Timeout: timeout,
		Env:     env,
		Dir:     wd,
		Output:  os.Stdout,
		Mem:     "2G",
	}, append([]string{self}, os.Args[1:]...)...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if res.ExitCode != 0 || os.Getenv("SBPS_UML_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "uml: guest console (tail):\n%s\n", tail(res.Console, 20))
	}
	fmt.Fprintf(os.Stderr, "uml: guest booted in %v, ran %v, exit %d\n", res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond), res.ExitCode)
	return res.ExitCode
}
