package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Version is the targetcli version the simulator reproduces (Debian 12).
const Version = "2.1.53"

// Main runs the simulator executable with args (args[0] is the program
// name) and returns its exit status. As "targetclid", or with "daemon" as
// first argument, it serves the targetclid socket; otherwise it is
// targetcli: one-shot with arguments, batch on stdin without.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	dir := os.Getenv(EnvDir)
	if dir == "" {
		fmt.Fprintf(stderr, "%s: %s is not set. This is the sbps-marshal targetcli SIMULATOR, not real targetcli;\n"+
			"point %s at a node directory made by sim.NewNode (see lio/sim).\n", filepath.Base(args[0]), EnvDir, EnvDir)
		return 2
	}
	n, err := Open(dir)
	if err != nil {
		fmt.Fprintf(stderr, "targetcli simulator: %v\n", err)
		return 2
	}
	ctx := context.Background()
	if filepath.Base(args[0]) == "targetclid" || len(args) > 1 && args[1] == "daemon" {
		rest := args[1:]
		if len(rest) > 0 && rest[0] == "daemon" {
			rest = rest[1:]
		}
		return mainDaemon(ctx, n, rest, stderr)
	}
	return mainTargetcli(ctx, n, args, stdin, stdout, stderr)
}

func die() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

func mainTargetcli(ctx context.Context, n *Node, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Like targetcli: read the preferences, take the lock (blocking; it is
	// held until the process exits), then look at the arguments.
	loadPrefs(stdout)
	lk, err := flock(filepath.Join(n.dir, lockFile), true)
	if err != nil {
		fmt.Fprintf(stderr, "taking lock on lockfile failed: %v\n", err)
		return 1
	}
	defer lk.Close()
	if len(args) > 1 {
		switch args[1] {
		case "help", "--help", "-h":
			fmt.Fprintf(stderr, "Usage: %s [--version|--help|CMD|--disable-daemon]\n"+
				"  --version\t\tPrint version\n  --help\t\tPrint this information\n"+
				"  CMD\t\t\tRun targetcli shell command and exit\n  <nothing>\t\tEnter configuration shell\n"+
				"  --disable-daemon\tTurn-off the global auto use daemon flag\nSee man page for more information.\n", args[0])
			return 255
		case "version", "--version", "-v":
			fmt.Fprintf(stderr, "%s version %s\n", args[0], Version)
			return 0
		}
	}
	sh, err := startShell(ctx, n, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 255
	}
	if len(args) > 1 {
		err := sh.runLine(strings.Join(args[1:], " "))
		switch {
		case errors.Is(err, ErrDied):
			die()
		case errors.Is(err, errExit), err == nil:
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 1
	}
	code, err := sh.batch(stdin)
	if errors.Is(err, ErrDied) {
		die()
	}
	return code
}

// batch is targetcli reading commands from a non-terminal stdin: prompts
// and messages on stdout, errors logged on stderr and the run goes on; at
// EOF (or exit) auto_save_on_exit saves. An exception targetcli does not
// catch (ValueError, OSError) ends the process with a traceback, exit 1, and
// no save.
func (sh *shell) batch(in io.Reader) (int, error) {
	sh.info("targetcli shell version %s\nCopyright 2011-2013 by Datera, Inc and others.\nFor help on commands, type 'help'.\n", Version)
	r := bufio.NewReader(in)
	for {
		fmt.Fprint(sh.out, prompt(sh.cwd))
		line, err := r.ReadString('\n')
		if err != nil && line == "" {
			fmt.Fprint(sh.out, "exit\n")
			line = "exit"
		}
		err = sh.runLine(strings.TrimSpace(line))
		if errors.Is(err, errExit) {
			break
		}
		var ce *CommandError
		switch {
		case err == nil:
		case errors.Is(err, ErrDied):
			return 137, err
		case errors.As(err, &ce) && ce.Crash:
			fmt.Fprintf(sh.errw, "Traceback (most recent call last):\n"+
				"  File \"/usr/bin/targetcli\", line 329, in <module>\n    main()\n"+
				"  File \"/usr/bin/targetcli\", line 317, in main\n    shell.run_interactive()\n"+
				"  File \"/usr/lib/python3/dist-packages/configshell_fb/shell.py\", line 729, in _cli_loop\n"+
				"    self.run_cmdline(cmdline)\n%s: %s\n", ce.PyType, ce.Msg)
			return 1, nil
		case errors.As(err, &ce):
			fmt.Fprintln(sh.errw, ce.Msg)
		default:
			fmt.Fprintln(sh.errw, err)
			return 1, err
		}
	}
	if sh.noAutoSave {
		return 0, nil
	}
	sh.info("Global pref auto_save_on_exit=true")
	if err := sh.saveconfig(sh.cfg.SaveFile); err != nil {
		fmt.Fprintln(sh.errw, err)
		return 1, nil
	}
	return 0, nil
}

// prompt is ConfigShell._get_prompt with prompt_length 30.
func prompt(cwd []string) string {
	p := pathString(cwd)
	if len(p) > 30 {
		half := (30 - 3) / 2
		p = p[:half] + "..." + p[len(p)-half:]
	}
	return p + "> "
}

// Run runs one command line the way another administrator's
// `targetcli "<line>"` would: it takes the targetcli lock, counts as a
// process, pays the start delays, and never saves. stdout is what targetcli
// prints; a failed command returns a *CommandError. Use it to make drift
// behind the agent's back.
func (n *Node) Run(ctx context.Context, line string) (stdout string, err error) {
	lk, err := flock(filepath.Join(n.dir, lockFile), true)
	if err != nil {
		return "", fmt.Errorf("take targetcli lock of node %s: %w", n.dir, err)
	}
	defer lk.Close()
	var out strings.Builder
	sh, err := startShell(ctx, n, &out, &out)
	if err != nil {
		return "", err
	}
	err = sh.runLine(line)
	if errors.Is(err, errExit) {
		err = nil
	}
	return out.String(), err
}
