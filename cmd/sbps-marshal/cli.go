package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// The command line has one source of truth: the commands table below and
// config.Keys(). The parser, --help, `sbps-marshal completion bash` and
// `sbps-marshal man` are all generated from them, so they cannot drift.

// Exit codes. 0 and 1 are every command's; 2 and 3 belong to plan and status.
const (
	exitOK    = 0
	exitError = 1 // the command failed; a configuration error included
	// exitChanges is plan's "something would change"; a usage error must not
	// look like it, hence exitUsage.
	exitChanges        = 2
	exitDesiredUnknown = 3 // status: S3 or IMS unreachable: LIO's view shown, with the reason
	// exitUsage is a command line that is not understood (unknown command
	// or flag, a flag the command does not take, an unexpected argument):
	// EX_USAGE of sysexits.h, shown by systemd as status=64/USAGE. Not 2,
	// which plan uses for "something would change".
	exitUsage = 64
)

// exitStatus documents one exit code of a command.
type exitStatus struct {
	Code    int
	Meaning string
}

// cmdFlag is a flag of one command. Every command flag is a boolean.
type cmdFlag struct {
	Name string // without dashes: "json"
	Help string
}

// command is one subcommand of sbps-marshal.
type command struct {
	Name    string
	Args    string   // positional arguments in the synopsis: "webhook|ims"
	Subs    []string // the values of the one positional argument, if any
	Summary string   // one line, for the command list
	Desc    string   // paragraphs separated by blank lines, for help and man
	Flags   []cmdFlag
	// Config says the command reads the configuration: it takes
	// --env-file and every flag of config.Keys().
	Config bool
	Exits  []exitStatus // besides 0 and 1 (and exitUsage), or instead of their general meaning
}

// commands is every command, in the order help lists them. run is the
// default.
var commands = []command{
	{Name: "run", Config: true,
		Summary: "run the agent (the default when no command is given)",
		Desc: "Runs the agent until SIGTERM or SIGINT: a full pass at start, then one on every event (S3 and IMS events from NATS, a change to LIO_SAVE_FILE), on SIGHUP and every RESYNC_INTERVAL. " +
			"It holds STATE_DIR/lock, so only one agent runs on a node; a second one exits naming the pid that holds it. The systemd unit runs `sbps-marshal run`.",
		Exits: []exitStatus{{0, "stopped by SIGTERM or SIGINT"}, {1, "could not start, or stopped on an error"}}},
	{Name: "plan", Config: true,
		Summary: "print what a pass would change, changing nothing",
		Desc:    "Reads S3, IMS and LIO_SAVE_FILE as a pass does and prints the changes the pass would make, held changes and a refusal of the mass-delete guard. Nothing is changed; it may run beside the agent.",
		Flags:   []cmdFlag{{"json", "print the plan as one JSON object"}},
		Exits:   []exitStatus{{0, "nothing would change"}, {1, "error"}, {exitChanges, "something would change"}}},
	{Name: "sync", Config: true,
		Summary: "run one full pass now, then print a summary",
		Desc:    "Runs one full pass, applies it and prints what it did. It takes STATE_DIR/lock, so it is refused while the agent runs: use resync then, or stop the unit first.",
		Flags: []cmdFlag{
			{"allow-mass-delete", "apply the deletions the mass-delete guard (MAX_DELETE_FRACTION) holds back"},
			{"renumber", "move LUNs whose number differs from the fleet registry (initiators see them move; sessions are reset once)"},
		},
		Exits: []exitStatus{{0, "the pass was applied"}, {1, "error, or an operation failed"}}},
	{Name: "status", Config: true,
		Summary: "print every projection and its state",
		Desc: "Prints every projection: state, kind, LUN (and the fleet registry's LUN when it differs), backstore, WWID, size, image and reason. " +
			"States: projected, missing, pending, rejected, held, stale, foreign. When S3 or IMS cannot be read, what LIO holds is shown, with the reason.",
		Flags: []cmdFlag{{"json", "print the projections as a JSON array"}},
		Exits: []exitStatus{{0, "the desired state is known and LIO holds what saveconfig.json holds"}, {1, "error, or LIO not restored (its live state lost part of saveconfig.json)"},
			{exitDesiredUnknown, "S3 or IMS unreachable or IMS incomplete: what LIO holds is shown, with the reason"}}},
	{Name: "resync", Config: true,
		Summary: "ask the running agent for a full pass now (SIGHUP)",
		Desc:    "Sends SIGHUP to the agent that holds STATE_DIR/lock on this node, which runs a full pass. With --all, publishes a request on NATS_RESYNC_SUBJECT that every agent of the fleet answers with a full pass.",
		Flags:   []cmdFlag{{"all", "ask every agent of the fleet, through NATS (needs NATS_URL)"}},
		Exits:   []exitStatus{{0, "asked"}, {1, "no agent to ask, or NATS unreachable"}}},
	{Name: "bridge", Config: true, Args: "webhook|ims", Subs: []string{"webhook", "ims"},
		Summary: "publish Ceph RGW notifications (webhook) or IMS changes (ims) to NATS",
		Desc: "bridge webhook listens on BRIDGE_LISTEN for Ceph RGW's HTTP push notifications (with the token of BRIDGE_TOKEN_FILE) and publishes them on NATS_S3_SUBJECT. " +
			"bridge ims lists IMS every BRIDGE_POLL_INTERVAL and publishes every change on NATS_IMS_SUBJECT. One bridge of each kind serves the whole cluster; neither needs LIO or the s3fs mount. Both run until SIGTERM or SIGINT.",
		Exits: []exitStatus{{0, "stopped by SIGTERM or SIGINT"}, {1, "error (NATS_URL empty, say)"}}},
	{Name: "config", Config: true,
		Summary: "print the effective configuration, secrets redacted",
		Desc: "Prints every key as SBPS_MARSHAL_<KEY>=value lines, an env file that reads back as the same configuration, secrets redacted. " +
			"It does not check that the files the configuration names exist, so it can show a configuration the agent would refuse to start with.",
		Flags: []cmdFlag{{"json", "print one JSON object, SBPS_MARSHAL_<KEY> to value"}}},
	{Name: "doctor", Config: true,
		Summary: "check what the agent needs on this node, one row each",
		Desc:    "Checks every dependency of the agent on this node and prints one row each, with the fix for what fails. A configuration that does not load is reported as one of the rows.",
		Flags:   []cmdFlag{{"json", "print the checks as JSON"}},
		Exits:   []exitStatus{{0, "no check failed (warnings allowed)"}, {1, "a check failed"}}},
	{Name: "version",
		Summary: "print version, commit and Go version (also --version)"},
	{Name: "help", Args: "[command]",
		Summary: "print help: the whole command, or one command (also <command> --help)"},
	{Name: "completion", Args: "bash", Subs: []string{"bash"},
		Summary: "print a bash completion script",
		Desc:    "Prints a bash completion script for commands, flags, and the values of configuration flags (choices, true/false, file names). The packages install it; otherwise: sbps-marshal completion bash > /etc/bash_completion.d/sbps-marshal"},
	{Name: "man",
		Summary: "print the manual page (roff, section 8)",
		Desc:    "Prints this program's manual page in roff, section 8. The packages install it; otherwise read it with: sbps-marshal man | man -l -"},
}

func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].Name == name {
			return &commands[i]
		}
	}
	return nil
}

func commandNames() []string {
	out := make([]string, len(commands))
	for i, c := range commands {
		out[i] = c.Name
	}
	return out
}

func (c *command) hasFlag(name string) bool {
	return slices.ContainsFunc(c.Flags, func(f cmdFlag) bool { return f.Name == name })
}

// flagCommands lists the commands that take the command flag name.
func flagCommands(name string) []string {
	var out []string
	for _, c := range commands {
		if c.hasFlag(name) {
			out = append(out, c.Name)
		}
	}
	return out
}

// configCommands lists the commands that read the configuration.
func configCommands() []string {
	var out []string
	for _, c := range commands {
		if c.Config {
			out = append(out, c.Name)
		}
	}
	return out
}

// configFlag reports whether name (without dashes) is --env-file or the
// flag of a configuration key: a flag that takes a value.
func configFlag(name string) bool {
	if "--"+name == config.EnvFileKey().Flag {
		return true
	}
	return slices.ContainsFunc(config.Keys(), func(k config.Key) bool { return k.Flag == "--"+name })
}

// invocation is a command line, understood.
type invocation struct {
	cmd     *command
	sub     string   // bridge's or completion's argument; help's command
	flags   []string // the flag arguments, in their order, for the command's FlagSet
	help    bool     // -h, --help, or the help command
	topic   string   // with help: the command whose help to print; "" = the whole command's
	version bool     // --version
}

// usageError is a command line that is not understood: exit 64.
type usageError struct {
	cmd string // the command, when known: for "sbps-marshal help <cmd>"
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return "sbps-marshal: " + e.msg
	}
	return "sbps-marshal " + e.cmd + ": " + e.msg
}

// hint names the help to read.
func (e *usageError) hint() string {
	if e.cmd == "" || e.cmd == "help" {
		return "sbps-marshal --help"
	}
	return "sbps-marshal help " + e.cmd
}

// parseArgs splits the command line into the command, its argument and
// its flags, checking every flag against the command. Flags may come
// before or after the command, and before or after bridge's and
// completion's argument; "--" ends the flags.
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{}
	var pos []string
	var cmdFlags, cfgFlags []string // names, as given
	var flagErr *usageError         // the first flag not understood; reported once the command is known
	flagFailed := func(format string, a ...any) {
		if flagErr == nil {
			flagErr = &usageError{msg: fmt.Sprintf(format, a...)}
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		switch {
		case name == "h" || name == "help":
			inv.help = true
		case name == "version":
			inv.version = true
		case len(flagCommands(name)) > 0:
			if hasVal {
				if _, err := strconv.ParseBool(val); err != nil {
					flagFailed("--%s=%s: want --%s, --%s=true or --%s=false", name, val, name, name, name)
				}
			}
			cmdFlags = append(cmdFlags, name)
			inv.flags = append(inv.flags, a)
		case configFlag(name):
			cfgFlags = append(cfgFlags, name)
			inv.flags = append(inv.flags, a)
			if !hasVal {
				if i+1 == len(args) {
					flagFailed("--%s needs a value (--%s VALUE or --%s=VALUE)", name, name, name)
					break
				}
				i++
				inv.flags = append(inv.flags, args[i])
			}
		default:
			flagName, _, _ := strings.Cut(a, "=")
			flagFailed("unknown flag %s%s", flagName, suggest(name, allFlagNames(), "--"))
		}
	}

	name, named := "run", len(pos) > 0
	switch {
	case named:
		name, pos = pos[0], pos[1:]
	case inv.version:
		name = "version"
	case inv.help:
		name = "help" // the whole command's help, not run's
	}
	inv.cmd = lookupCommand(name)
	if inv.cmd == nil {
		return nil, &usageError{msg: fmt.Sprintf("unknown command %q%s", name, suggest(name, commandNames(), ""))}
	}
	c := inv.cmd
	if c.Name == "help" {
		if inv.help && named {
			inv.topic = "help" // sbps-marshal help --help
		}
		inv.help = true
		if len(pos) > 0 {
			if lookupCommand(pos[0]) == nil {
				return nil, &usageError{cmd: "help", msg: fmt.Sprintf("unknown command %q%s", pos[0], suggest(pos[0], commandNames(), ""))}
			}
			inv.sub, inv.topic, pos = pos[0], pos[0], pos[1:]
		}
	}
	if inv.help && c.Name != "help" {
		inv.topic = c.Name
		return inv, nil // help for c, whatever else the line says
	}
	if flagErr != nil {
		if named {
			flagErr.cmd = c.Name // its help lists its flags
		}
		return nil, flagErr
	}
	if len(c.Subs) > 0 {
		if len(pos) == 0 {
			return nil, &usageError{cmd: c.Name, msg: fmt.Sprintf("which one? %s", strings.Join(c.Subs, " or "))}
		}
		if !slices.Contains(c.Subs, pos[0]) {
			return nil, &usageError{cmd: c.Name, msg: fmt.Sprintf("unknown argument %q, want %s", pos[0], strings.Join(c.Subs, " or "))}
		}
		inv.sub, pos = pos[0], pos[1:]
	}
	if len(pos) > 0 {
		return nil, &usageError{cmd: c.Name, msg: fmt.Sprintf("unexpected argument %q", pos[0])}
	}
	if inv.help {
		return inv, nil
	}
	if inv.version && c.Name != "version" {
		return nil, &usageError{cmd: c.Name, msg: "--version goes alone: sbps-marshal --version"}
	}
	for _, f := range cmdFlags {
		if !c.hasFlag(f) {
			return nil, &usageError{cmd: c.Name, msg: fmt.Sprintf("--%s does not apply to %s; it applies to %s", f, c.Name, strings.Join(flagCommands(f), ", "))}
		}
	}
	if len(cfgFlags) > 0 && !c.Config {
		return nil, &usageError{cmd: c.Name, msg: fmt.Sprintf("--%s does not apply: %s reads no configuration", cfgFlags[0], c.Name)}
	}
	return inv, nil
}

// allFlagNames lists every flag without dashes.
func allFlagNames() []string {
	names := []string{"help", "version", strings.TrimPrefix(config.EnvFileKey().Flag, "--")}
	for _, c := range commands {
		for _, f := range c.Flags {
			if !slices.Contains(names, f.Name) {
				names = append(names, f.Name)
			}
		}
	}
	for _, k := range config.Keys() {
		names = append(names, strings.TrimPrefix(k.Flag, "--"))
	}
	return names
}

// suggest returns "; did you mean <prefix><name>?" for the closest of
// names to s (a prefix of it, or within two edits), or "".
func suggest(s string, names []string, prefix string) string {
	best, bestD := "", 3
	for _, n := range names {
		d := editDistance(s, n)
		if len(s) >= 2 && strings.HasPrefix(n, s) {
			d = 1
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + prefix + best + "?"
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
