package uml

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config says how to boot the guest. The zero value boots
// /usr/bin/linux.uml with 1 GiB and a 10-minute timeout.
type Config struct {
	// Kernel is the UML kernel binary. Defaults to $UML_KERNEL, then
	// /usr/bin/linux.uml.
	Kernel string
	// Mem is the guest's memory, in the kernel's mem= form. Defaults to "1G".
	Mem string
	// Timeout bounds the whole run, boot included. Defaults to 10 minutes.
	Timeout time.Duration
	// Env is added to the command's environment, as KEY=value.
	Env []string
	// Dir is the command's working directory inside the guest. Defaults to
	// the scratch directory.
	Dir string
	// Scratch is the host directory shared with the guest for the scripts,
	// the command's output, its exit status and the console log. It must be
	// under /tmp (the only host folder the guest can write). Defaults to a
	// new directory under /tmp, removed after the run unless Keep is set.
	Scratch string
	// Keep leaves a scratch directory that Run created in place.
	Keep bool
	// Output, when set, receives the command's stdout and stderr as the
	// guest writes them.
	Output io.Writer
}

// Result is what one run brought back.
type Result struct {
	// ExitCode is the command's exit status inside the guest.
	ExitCode int
	// Output is the command's stdout and stderr, interleaved.
	Output []byte
	// Console is the guest kernel's console: boot messages and what the
	// guest's init printed while setting up.
	Console []byte
	// Boot is the time from starting the kernel to starting the command.
	Boot time.Duration
	// Elapsed is the whole run, power-off included.
	Elapsed time.Duration
	// Group is the host process group the guest ran in (the kernel's pid).
	Group int
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Modules the guest loads, in order; modprobe brings their dependencies.
var Modules = []string{
	"configfs", "target_core_mod", "target_core_file", "iscsi_target_mod",
	"iscsi_tcp", "sd_mod", "squashfs", "loop",
}

const (
	defaultKernel  = "/usr/bin/linux.uml"
	defaultMem     = "1G"
	defaultTimeout = 10 * time.Minute
	hostShared     = "/tmp"
)

// Run boots the guest, runs argv inside it and powers it off. The error is
// for the run itself (the guest could not boot, the command never started,
// the timeout or ctx ended it); the command's own failure is a non-zero
// Result.ExitCode with a nil error.
func Run(ctx context.Context, cfg Config, argv ...string) (*Result, error) {
	if len(argv) == 0 {
		return nil, errors.New("uml: no command to run in the guest")
	}
	if cfg.Kernel == "" {
		cfg.Kernel = os.Getenv("UML_KERNEL")
	}
	if cfg.Kernel == "" {
		cfg.Kernel = defaultKernel
	}
	if cfg.Mem == "" {
		cfg.Mem = defaultMem
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if err := Check(cfg.Kernel); err != nil {
		return nil, err
	}
	shim, err := xstateShim()
	if err != nil {
		return nil, err
	}
	scratch := cfg.Scratch
	if scratch == "" {
		if scratch, err = os.MkdirTemp(hostShared, "sbps-uml-"); err != nil {
			return nil, fmt.Errorf("uml: scratch directory under %s: %w", hostShared, err)
		}
		if !cfg.Keep {
			defer os.RemoveAll(scratch)
		}
	}
	if scratch, err = filepath.Abs(scratch); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(scratch+"/", hostShared+"/") || strings.ContainsAny(scratch, " \t\n'\"\\$`") {
		return nil, fmt.Errorf("uml: scratch directory %q must be under %s with no spaces or quotes: the guest sees only the host's %s, through the kernel command line", scratch, hostShared, hostShared)
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || !envName.MatchString(k) {
			return nil, fmt.Errorf("uml: environment entry %q is not KEY=value with KEY a shell variable name", kv)
		}
	}
	g := guest{scratch: scratch, dir: cfg.Dir, env: cfg.Env, argv: argv}
	if err := g.write(); err != nil {
		return nil, err
	}
	return boot(ctx, cfg, g, shim)
}

func boot(ctx context.Context, cfg Config, g guest, shim string) (*Result, error) {
	console, err := os.Create(g.path("console.log"))
	if err != nil {
		return nil, fmt.Errorf("uml: %w", err)
	}
	defer console.Close()
	umid := "sbps-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	cmd := exec.Command(cfg.Kernel,
		"mem="+cfg.Mem, "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
		"init="+g.path("init"), "con=null", "con0=null,fd:1",
		"umid="+umid, "uml_dir="+g.scratch+"/")
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+shim)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("uml: start %s: %w", cfg.Kernel, err)
	}
	group := cmd.Process.Pid // setsid: the session and process group are the kernel's pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	stopFollow := make(chan struct{})
	followed := make(chan struct{})
	go func() { defer close(followed); follow(g.path("output"), cfg.Output, stopFollow) }()

	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	var why error
	select {
	case <-done:
	case <-timer.C:
		why = fmt.Errorf("uml: the guest ran past its %v timeout; killed its process group %d", cfg.Timeout, group)
	case <-ctx.Done():
		why = fmt.Errorf("uml: %w; killed the guest's process group %d", context.Cause(ctx), group)
	}
	// Kill whatever of the group is left: after a clean power-off nothing
	// is, after a timeout every guest process is a host process of it.
	_ = syscall.Kill(-group, syscall.SIGKILL)
	if why != nil {
		<-done
	}
	close(stopFollow)
	<-followed

	res := &Result{Elapsed: time.Since(start), Group: group}
	res.Output, _ = os.ReadFile(g.path("output"))
	res.Console, _ = os.ReadFile(g.path("console.log"))
	if b, err := os.ReadFile(g.path("started")); err == nil {
		if ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && ns > start.UnixNano() {
			res.Boot = time.Unix(0, ns).Sub(start)
		}
	}
	if why != nil {
		return res, fmt.Errorf("%w\n%s", why, tail(res.Console, 15))
	}
	status, err := os.ReadFile(g.path("status"))
	if err != nil {
		return res, fmt.Errorf("uml: the guest powered off without running the command (no exit status); console:\n%s", tail(res.Console, 25))
	}
	if res.ExitCode, err = strconv.Atoi(strings.TrimSpace(string(status))); err != nil {
		return res, fmt.Errorf("uml: the guest's exit status %q is not a number", status)
	}
	return res, nil
}

// follow copies what the guest appends to path into w until stop closes.
func follow(path string, w io.Writer, stop <-chan struct{}) {
	if w == nil {
		return
	}
	var off int64
	copyNew := func() {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return
		}
		n, _ := io.Copy(w, f)
		off += n
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			copyNew()
			return
		case <-tick.C:
			copyNew()
		}
	}
}

func tail(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
