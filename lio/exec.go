package lio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// CmdError is a targetcli process that could not start or did not finish
// normally (killed, timed out, or an exit status that is not targetcli's
// "command failed"). It carries the arguments and the end of the output.
type CmdError struct {
	Args     []string // arguments after the binary
	Commands int      // command lines fed on stdin (batch), 0 otherwise
	ExitCode int      // -1 when the process did not exit by itself
	Output   string   // the last part of what it printed
	Err      error
}

func (e *CmdError) Error() string {
	what := "targetcli"
	if len(e.Args) > 0 {
		what += fmt.Sprintf(" %q", strings.Join(e.Args, " "))
	}
	if e.Commands > 0 {
		what += fmt.Sprintf(" with %d commands on stdin", e.Commands)
	}
	msg := fmt.Sprintf("%s: %v", what, e.Err)
	if e.ExitCode >= 0 {
		msg += fmt.Sprintf(" (exit status %d)", e.ExitCode)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += ": " + out
	}
	return msg
}

func (e *CmdError) Unwrap() error { return e.Err }

// errExit is CmdError.Err for a process that exited with a status targetcli
// does not use for a refused command.
var errExit = errors.New("targetcli stopped abnormally; the commands after its last output did not run")

type procResult struct {
	started bool
	stdout  string // with stderr interleaved when run combined
	stderr  string
	exit    int
}

// run starts targetcli with args, feeds stdin, and waits. With combined,
// stdout and stderr share one pipe so that messages stay in order. The
// error is set only when the process could not start or was stopped;
// exit statuses are left to the caller.
func (d *Driver) run(ctx context.Context, args []string, stdin string, combined bool) (procResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.Timeout,
		fmt.Errorf("targetcli ran longer than %s (raise the targetcli timeout if LIO holds many objects)", d.cfg.Timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cfg.Binary, args...)
	cmd.Env = d.env()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if combined {
		cmd.Stderr = &out
	}
	nCmds := strings.Count(stdin, "\n")
	if d.cfg.OnCall != nil {
		start := time.Now()
		defer func() { d.cfg.OnCall(start, time.Now()) }()
	}
	if err := cmd.Start(); err != nil {
		return procResult{exit: -1}, &CmdError{Args: args, Commands: nCmds, ExitCode: -1,
			Err: fmt.Errorf("could not start %s: %w (set the targetcli binary path)", d.cfg.Binary, err)}
	}
	d.procs.Add(1)
	waitErr := cmd.Wait()
	res := procResult{started: true, stdout: withoutPrefsWarning(out.String()), stderr: errOut.String(), exit: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		return res, &CmdError{Args: args, Commands: nCmds, ExitCode: -1, Output: tail(res.stdout + res.stderr), Err: context.Cause(ctx)}
	}
	if res.exit < 0 {
		return res, &CmdError{Args: args, Commands: nCmds, ExitCode: -1, Output: tail(res.stdout + res.stderr), Err: waitErr}
	}
	return res, nil
}

// prefsWarning is what targetcli prints on stdout, before anything else,
// when TARGETCLI_HOME has no prefs.bin yet (the driver's private home on
// its first process). It says nothing about the command.
var prefsWarning = regexp.MustCompile(`^Warning: Could not load preferences file \S*prefs\.bin\.\n`)

func withoutPrefsWarning(stdout string) string {
	if loc := prefsWarning.FindStringIndex(stdout); loc != nil {
		return stdout[loc[1]:]
	}
	return stdout
}

func (d *Driver) env() []string {
	env := make([]string, 0, len(os.Environ())+len(d.cfg.Env)+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TARGETCLI_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "TARGETCLI_HOME="+d.cfg.Home)
	return append(env, d.cfg.Env...)
}

func tail(s string) string {
	const max = 2000
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

// runOneShot runs one process per command, then one for saveconfig.
// targetcli exits 0 on success and 1 with the message on stderr when the
// command fails; anything else stops the stage.
func (d *Driver) runOneShot(ctx context.Context, lines []line) ([]cmdResult, bool, error) {
	said := make([]cmdResult, len(lines))
	for i, l := range lines {
		args := []string{l.String()}
		res, err := d.run(ctx, args, "", false)
		msg := strings.TrimSpace(res.stdout + "\n" + res.stderr)
		// A killed process (exit -1) did not refuse the command; the
		// saved state decides.
		said[i] = cmdResult{reached: res.started, failed: res.exit > 0, msg: msg}
		if err != nil {
			return said, false, err
		}
		if res.exit != 0 && res.exit != 1 {
			return said, false, &CmdError{Args: args, ExitCode: res.exit, Output: tail(msg), Err: errExit}
		}
	}
	if err := d.save(ctx); err != nil {
		return said, false, err
	}
	return said, true, nil
}

// promptRE finds configshell's prompt ("/> ", or a long path shortened with
// "...") at the start of a line: targetcli prints it before reading each
// command from stdin, so the text between two prompts is one command's output.
var promptRE = regexp.MustCompile(`(?m)^/[^\s]*> `)

// batchSegments splits a batch run's combined output at the prompts. The
// text before the first prompt (the banner) is dropped; segment i is the
// output of the i-th line read.
func batchSegments(out string) []string {
	locs := promptRE.FindAllStringIndex(out, -1)
	segs := make([]string, len(locs))
	for i, loc := range locs {
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		segs[i] = out[loc[1]:end]
	}
	return segs
}

// runBatch runs the stage's commands and saveconfig in one targetcli
// process reading stdin. targetcli logs errors and carries on, and exits 0
// either way; a non-zero exit means it died. When it died of an exception
// in one of the stage's commands (a Python traceback: OSError from a
// backing file on a read-only mount, the stale tree's ValueError), that
// command is failed with the exception and the rest of the stage runs in a
// fresh process: one failing command never holds back the others.
func (d *Driver) runBatch(ctx context.Context, lines []line) ([]cmdResult, bool, error) {
	said := make([]cmdResult, len(lines))
	for start := 0; ; {
		part, saved, crashed, err := d.batchOnce(ctx, lines[start:])
		copy(said[start:], part)
		if crashed < 0 {
			return said, saved, err
		}
		d.log.Warn("targetcli died of an exception in one command; running the rest of the stage in a new process",
			"command", lines[start+crashed].String(), "exception", part[crashed].msg, "left", len(lines)-start-crashed-1)
		start += crashed + 1
	}
}

// noAutoSave is the first line of every batch: targetcli's
// auto_save_on_exit (on by default, also in the driver's private home)
// would save again at end of input, to rtslib's default file rather than
// SaveFile, rotate its backups once more, and fail the run where that
// folder is read-only. The driver's own saveconfig is the one save.
var noAutoSave = line{Command: "set", PParams: []string{"global"}, KParams: []kparam{{"auto_save_on_exit", "false"}}}

// batchOnce runs lines and saveconfig in one process. crashed is the index
// of the command whose exception ended the process (its result says so),
// or -1.
func (d *Driver) batchOnce(ctx context.Context, lines []line) (said []cmdResult, saved bool, crashed int, err error) {
	save, err := saveCommand(d.cfg.SaveFile)
	if err != nil {
		return make([]cmdResult, len(lines)), false, -1, err
	}
	var script strings.Builder
	for _, l := range append(append([]line{noAutoSave}, lines...), save) {
		script.WriteString(l.String())
		script.WriteByte('\n')
	}

	res, runErr := d.run(ctx, nil, script.String(), true)
	segs := batchSegments(res.stdout)
	said = make([]cmdResult, len(lines))
	if len(segs) == 0 && runErr == nil && res.exit == 0 {
		// No prompts to go by: every command ran (the process finished
		// normally) and the saved state decides each outcome.
		for i := range said {
			said[i].reached = true
		}
		return said, savedMessage(res.stdout, d.cfg.SaveFile), -1, nil
	}
	if len(segs) > 0 {
		segs = segs[1:] // noAutoSave's answer
	}
	for i := range said {
		if i < len(segs) {
			said[i] = cmdResult{reached: true, msg: strings.TrimSpace(segs[i])}
		}
	}
	saved = len(segs) > len(lines) && savedMessage(strings.Join(segs[len(lines):], ""), d.cfg.SaveFile)
	if runErr != nil {
		return said, saved, -1, runErr
	}
	if res.exit == 0 {
		return said, saved, -1, nil
	}
	last := len(segs) - 1
	switch {
	case last >= 0 && last < len(lines) && isTraceback(said[last].msg):
		said[last] = cmdResult{reached: true, failed: true, crashed: true, msg: exception(said[last].msg)}
		return said, false, last, nil
	case saved && len(segs) > len(lines):
		// Every command and the save ran; what failed came after them
		// (an exit hook of targetcli's own).
		d.log.Warn("targetcli exited with an error after the driver's save; the commands ran", "exit", res.exit, "output", tail(strings.Join(segs[len(lines):], "")))
		return said, saved, -1, nil
	}
	return said, saved, -1, &CmdError{Commands: len(lines) + 2, ExitCode: res.exit, Output: tail(res.stdout), Err: errExit}
}

// isTraceback reports whether targetcli's output for a command is a Python
// traceback: an exception targetcli did not catch.
func isTraceback(msg string) bool { return strings.Contains(msg, "Traceback (most recent call last):") }

// exception is the exception line of a traceback (its last line), or msg
// itself when it is none.
func exception(msg string) string {
	if !isTraceback(msg) {
		return msg
	}
	msg = strings.TrimSpace(msg)
	return strings.TrimSpace(msg[strings.LastIndexByte(msg, '\n')+1:])
}
