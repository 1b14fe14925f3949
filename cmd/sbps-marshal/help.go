package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// What --help, the man page and the completion share beside the commands
// table and config.Keys().

const about = "sbps-marshal projects CSM boot images, squashfs files of the boot-images S3 bucket mounted by s3fs, " +
	"as read-only iSCSI LUNs through Linux LIO on this worker node, so compute nodes boot from them over multipath. " +
	"It is level-based: events (S3 and IMS notifications through NATS, a change to saveconfig.json, SIGHUP) trigger a pass, " +
	"and a pass re-reads S3, IMS and LIO and applies only the difference."

// flagSummary describes a command flag that several commands take, for
// the top-level list; a flag of one command uses its own help there.
var flagSummary = map[string]string{
	"json": "machine-readable output, JSON",
}

// configIntro says where the configuration comes from.
func configIntro() string {
	return fmt.Sprintf("Every key is read from, in order of precedence: its flag (--scan-frequency 60), the environment (%sSCAN_FREQUENCY=60), "+
		"the env file (--env-file or %s; default %s, the unit's EnvironmentFile, when it exists), and its default. "+
		"Values are checked: a bad one stops the command with one line naming the key, the value and what is expected. "+
		"The commands that read the configuration (%s) take every key's flag.",
		config.EnvPrefix, config.EnvFileKey().Env, config.DefaultEnvFile, strings.Join(configCommands(), ", "))
}

var files = []struct{ Path, What string }{
	{config.DefaultEnvFile, "the settings, read by the unit (EnvironmentFile=) and by every command; every key documented, commented out, with its default"},
	{"STATE_DIR/lock", "held by the running agent (and sync): one agent per node"},
	{"STATE_DIR/pid", "the running agent's pid, for resync"},
	{"STATE_DIR/lun-map.json", "what iSCSI sessions may have seen of the LUN map, written before a pass changes LIO"},
	{"LIO_SAVE_FILE", "LIO's saved state, default /etc/target/saveconfig.json; LIO_SAVE_FILE.sbps-live is LIO's live state saved beside it before each write"},
	{"/usr/lib/systemd/system/sbps-marshal.service", "the unit: Type=notify, runs sbps-marshal run, reloads with SIGHUP"},
}

var signals = []struct{ Name, What string }{
	{"SIGHUP", "run: a full resync now (what sbps-marshal resync and systemctl reload send)"},
	{"SIGTERM, SIGINT", "run, bridge: stop (the pass under way ends first); other commands: stop"},
}

// exitStatuses is the exit status of the whole command, for the top-level
// help and the man page.
func exitStatuses() []exitStatus {
	out := []exitStatus{{exitOK, "success"}, {exitError, "error; a configuration error included"}}
	for _, c := range commands {
		for _, e := range c.Exits {
			if e.Code != exitOK && e.Code != exitError {
				out = append(out, exitStatus{e.Code, c.Name + ": " + e.Meaning})
			}
		}
	}
	return append(out, usageExit)
}

var usageExit = exitStatus{exitUsage, "usage error: an unknown command or flag, a flag the command does not take, a missing or unexpected argument (EX_USAGE; not 2, which is plan's)"}

// commandExits is c's exit status, usage errors included.
func commandExits(c *command) []exitStatus {
	out := c.Exits
	if len(out) == 0 {
		out = []exitStatus{{exitOK, "success"}, {exitError, "error"}}
	}
	return append(out[:len(out):len(out)], usageExit)
}

// placeholder is the value a configuration flag takes, for synopses.
func placeholder(k config.Key) string {
	switch k.Kind {
	case "choice", "bool":
		return strings.Join(k.Choices, "|")
	case "seconds":
		return "SECONDS"
	case "duration":
		return "DURATION"
	case "path":
		return "PATH"
	case "float":
		return "NUMBER"
	case "list":
		return "LIST"
	}
	return "VALUE"
}

// synopsis is c's usage line, without "sbps-marshal ".
func synopsis(c *command) string {
	parts := []string{c.Name}
	if c.Args != "" {
		parts = append(parts, c.Args)
	}
	for _, f := range c.Flags {
		parts = append(parts, "[--"+f.Name+"]")
	}
	if c.Config {
		parts = append(parts, "[configuration flags]")
	}
	return strings.Join(parts, " ")
}

// writeHelp writes the help of command topic, or of the whole command
// when topic is "".
func writeHelp(w io.Writer, topic string) {
	c := lookupCommand(topic)
	if c == nil {
		writeTopHelp(w)
		return
	}
	fmt.Fprintf(w, "Usage:\n  sbps-marshal %s\n\n", synopsis(c))
	summary := c.Summary
	fmt.Fprintln(w, wrap(strings.ToUpper(summary[:1])+summary[1:]+".", 0))
	for _, p := range paragraphs(c.Desc) {
		fmt.Fprintf(w, "\n%s\n", wrap(p, 0))
	}
	fmt.Fprintln(w, "\nFlags:")
	var rows [][2]string
	for _, f := range c.Flags {
		rows = append(rows, [2]string{"--" + f.Name, f.Help})
	}
	rows = append(rows, [2]string{"-h, --help", "print this help"})
	if c.Name == "version" {
		rows = append(rows, [2]string{"--version", "the same as sbps-marshal version"})
	}
	writeTable(w, rows)
	if c.Config {
		fmt.Fprintln(w, "  Flags may come before or after the command.")
	}
	writeExits(w, commandExits(c))
	if !c.Config {
		return
	}
	fmt.Fprintf(w, "\nConfiguration:\n")
	if c.Name == "config" {
		fmt.Fprintf(w, "%s\n\n", wrap(configIntro(), 2))
		writeKeys(w)
		return
	}
	fmt.Fprintln(w, wrap(fmt.Sprintf("%s reads the configuration: every key is also a flag, --<key> VALUE (--s3-host for %sS3_HOST), and --env-file PATH names the env file (default %s). "+
		"sbps-marshal help config lists all %d keys with their defaults; sbps-marshal config prints the effective values; man 8 sbps-marshal has both.",
		c.Name, config.EnvPrefix, config.DefaultEnvFile, len(config.Keys())), 2))
}

func writeTopHelp(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  sbps-marshal [command] [flags]\n\nCommands:\n", wrap(about, 0))
	var rows [][2]string
	for _, c := range commands {
		rows = append(rows, [2]string{c.Name, c.Summary})
	}
	writeTable(w, rows)
	fmt.Fprintln(w, "\nFlags (before or after the command; a command refuses one it does not take):")
	rows = [][2]string{
		{"-h, --help", "print this help; sbps-marshal help <command> (or <command> --help) for one command"},
		{"--version", "print version, commit and Go version"},
	}
	for _, f := range topFlags() {
		rows = append(rows, [2]string{"--" + f.Name, strings.Join(flagCommands(f.Name), ", ") + ": " + f.Help})
	}
	ef := config.EnvFileKey()
	rows = append(rows, [2]string{ef.Flag + " " + placeholder(ef), ef.Help + " (also " + ef.Env + ")"},
		[2]string{"--<key> VALUE", "any configuration key, below"})
	writeTable(w, rows)
	writeExits(w, exitStatuses())
	fmt.Fprintf(w, "\nConfiguration:\n%s\n\n", wrap(configIntro(), 2))
	writeKeys(w)
	fmt.Fprintln(w, "\nFiles:")
	for _, f := range files {
		fmt.Fprintf(w, "  %s\n%s\n", f.Path, wrap(f.What, 6))
	}
	fmt.Fprintln(w, "\nSee sbps-marshal help <command> for a command's flags and exit status, and man 8 sbps-marshal (sbps-marshal man | man -l -).")
}

// topFlags is every command flag once, with its top-level help.
func topFlags() []cmdFlag {
	var out []cmdFlag
	seen := map[string]bool{}
	for _, c := range commands {
		for _, f := range c.Flags {
			if seen[f.Name] {
				continue
			}
			seen[f.Name] = true
			if s, ok := flagSummary[f.Name]; ok {
				f.Help = s
			}
			out = append(out, f)
		}
	}
	return out
}

func writeExits(w io.Writer, exits []exitStatus) {
	fmt.Fprintln(w, "\nExit status:")
	for _, e := range exits {
		fmt.Fprintf(w, "  %-3d %s\n", e.Code, wrap(e.Meaning, 6)[6:])
	}
}

// writeKeys lists every configuration key: env, flag, default, help.
func writeKeys(w io.Writer) {
	for _, k := range config.Keys() {
		def := k.Default
		if def == "" {
			def = "empty"
		}
		fmt.Fprintf(w, "  %s  %s %s  (default %s)\n%s\n", k.Env, k.Flag, placeholder(k), def, wrap(k.Help, 6))
	}
}

// writeTable writes two columns, the second wrapped.
func writeTable(w io.Writer, rows [][2]string) {
	col := 0
	for _, r := range rows {
		col = max(col, len(r[0]))
	}
	indent := 2 + col + 2
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", col, r[0], wrap(r[1], indent)[indent:])
	}
}

func paragraphs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n\n")
}

// wrap fills s into lines of at most 100 columns, each indented by indent
// spaces (a longer word gets a line of its own).
func wrap(s string, indent int) string {
	const width = 100
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		switch {
		case n == 0:
			b.WriteString(pad + word)
			n = indent + len(word)
		case n+1+len(word) > width:
			b.WriteString("\n" + pad + word)
			n = indent + len(word)
		default:
			b.WriteString(" " + word)
			n += 1 + len(word)
		}
	}
	return b.String()
}
