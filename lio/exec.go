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
	res := procResult{started: true, stdout: out.String(), stderr: errOut.String(), exit: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		return res, &CmdError{Args: args, Commands: nCmds, ExitCode: -1, Output: tail(res.stdout + res.stderr), Err: context.Cause(ctx)}
	}
	if res.exit < 0 {
		return res, &CmdError{Args: args, Commands: nCmds, ExitCode: -1, Output: tail(res.stdout + res.stderr), Err: waitErr}
	}
	return res, nil
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
// either way; a non-zero exit means it died.
func (d *Driver) runBatch(ctx context.Context, lines []line) ([]cmdResult, bool, error) {
	save, err := saveCommand(d.cfg.SaveFile)
	if err != nil {
		return make([]cmdResult, len(lines)), false, err
	}
	var script strings.Builder
	for _, l := range lines {
		script.WriteString(l.String())
		script.WriteByte('\n')
	}
	script.WriteString(save.String())
	script.WriteByte('\n')

	res, runErr := d.run(ctx, nil, script.String(), true)
	segs := batchSegments(res.stdout)
	said := make([]cmdResult, len(lines))
	if len(segs) == 0 && runErr == nil && res.exit == 0 {
		// No prompts to go by: every command ran (the process finished
		// normally) and the saved state decides each outcome.
		for i := range said {
			said[i].reached = true
		}
		return said, savedMessage(res.stdout), nil
	}
	for i := range said {
		if i < len(segs) {
			said[i] = cmdResult{reached: true, msg: strings.TrimSpace(segs[i])}
		}
	}
	saved := len(segs) > len(lines) && savedMessage(strings.Join(segs[len(lines):], ""))
	if runErr != nil {
		return said, saved, runErr
	}
	if res.exit != 0 {
		return said, saved, &CmdError{Commands: len(lines) + 1, ExitCode: res.exit, Output: tail(res.stdout), Err: errExit}
	}
	return said, saved, nil
}
