// Command sbps-marshal projects CSM boot images as iSCSI LUNs on this node.
//
//	sbps-marshal [run]               the daemon (default, as the old systemd unit runs it)
//	sbps-marshal plan [--json]       what a pass would change; exit 0 nothing, 2 something, 1 error
//	sbps-marshal sync [--allow-mass-delete] [--renumber]
//	                                 one full pass, then a summary
//	sbps-marshal status [--json]     every projection and its state; exit 0, 1 error or LIO not
//	                                 restored, 3 S3 or IMS unreachable (LIO's view shown)
//	sbps-marshal resync [--all]      ask the running agent (--all: every agent, through NATS) for a full pass now
//	sbps-marshal bridge webhook|ims  publish Ceph RGW notifications / IMS changes to NATS
//	sbps-marshal config [--json]     the effective configuration, secrets redacted
//	sbps-marshal doctor [--json]     check what the agent needs on this node
//	sbps-marshal version             also --version
//	sbps-marshal help [command]      also --help, -h, <command> --help
//	sbps-marshal completion bash     a bash completion script
//	sbps-marshal man                 the manual page, roff, section 8
//
// Flags go before or after the command (sbps-marshal --json status is
// sbps-marshal status --json); a flag a command does not take is refused.
// Every command but version, help, completion and man takes the
// configuration flags (one per key of config.Keys()). A command line that
// is not understood exits 64 (EX_USAGE), never 2: plan's 2 means "something
// would change".
//
// The commands table (cli.go) and config.Keys() are the one source of the
// parser, --help (help.go), the bash completion (completion.go) and the man
// page (man.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/internal/version"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/logging"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}

// Main runs one command and returns the exit code. Every command that reads
// the configuration reads config.DefaultEnvFile, as the unit does.
func Main(args []string, stdout, stderr io.Writer, environ []string) int {
	return mainWith(config.DefaultEnvFile, args, stdout, stderr, environ)
}

// mainWith is Main with the default env file given (tests).
func mainWith(defaultEnvFile string, args []string, stdout, stderr io.Writer, environ []string) int {
	inv, err := parseArgs(args)
	if err != nil {
		return usageFailed(stderr, err)
	}
	cmd := inv.cmd.Name
	if inv.help {
		writeHelp(stdout, inv.topic)
		return exitOK
	}
	// parseArgs has checked every flag against the command: the FlagSet
	// only fills in values.
	fs := flag.NewFlagSet("sbps-marshal "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	given := map[string]*bool{}
	for _, f := range inv.cmd.Flags {
		given[f.Name] = fs.Bool(f.Name, false, f.Help)
	}
	on := func(name string) bool { return given[name] != nil && *given[name] }

	if !inv.cmd.Config {
		if err := fs.Parse(inv.flags); err != nil {
			return usageFailed(stderr, &usageError{cmd: cmd, msg: err.Error()})
		}
		switch cmd {
		case "version":
			fmt.Fprintln(stdout, version.String())
		case "completion":
			writeBashCompletion(stdout)
		case "man":
			writeMan(stdout)
		default:
			return unhandled(stderr, cmd)
		}
		return exitOK
	}

	cfg, rest, err := config.Load(config.Sources{Args: inv.flags, Environ: environ, DefaultEnvFile: defaultEnvFile}, fs)
	if err == nil && len(rest) > 0 {
		return usageFailed(stderr, &usageError{cmd: cmd, msg: fmt.Sprintf("unexpected argument %q", rest[0])})
	}
	if cmd == "doctor" {
		// doctor reports a bad configuration as one of its rows.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		var log *slog.Logger
		if cfg != nil {
			log = newLogger(cfg, stderr)
		}
		return doctorMain(ctx, cfg, err, log, on("json"), stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return exitError
	}
	log := newLogger(cfg, stderr)
	for _, n := range cfg.Notices {
		log.Warn(n)
	}
	switch cmd {
	case "config":
		if on("json") {
			cfg.PrintJSON(stdout)
		} else {
			cfg.Print(stdout)
		}
		return exitOK
	case "resync":
		if on("all") {
			return resyncAll(cfg, log, stdout, stderr)
		}
		return resync(cfg, stdout, stderr)
	case "bridge":
		// A bridge runs anywhere NATS and IMS are reachable: no LIO, no mount.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return bridgeMain(ctx, inv.sub, cfg, log, stdout, stderr)
	}
	if err := cfg.CheckFiles(); err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", strings.ReplaceAll(err.Error(), "\n", "\nsbps-marshal: "))
		return exitError
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := agent.New(ctx, cfg, log, agent.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return exitError
	}
	defer a.Close()

	switch cmd {
	case "plan":
		return plan(ctx, a, on("json"), stdout, stderr)
	case "status":
		return status(ctx, a, on("json"), stdout, stderr)
	}
	lock, err := agent.AcquireLock(cfg.StateDir)
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return exitError
	}
	defer lock.Release()
	switch cmd {
	case "sync":
		return syncOnce(ctx, a, projector.SyncOptions{AllowMassDelete: on("allow-mass-delete"), Renumber: on("renumber"), Trigger: "sync command"}, stdout, stderr)
	case "run":
		return run(ctx, a, log)
	}
	return unhandled(stderr, cmd)
}

// unhandled reports a command of the table that mainWith does not run (a
// programming error; every command is run by a test of this package).
func unhandled(stderr io.Writer, cmd string) int {
	fmt.Fprintf(stderr, "sbps-marshal: internal error: command %s has no handler\n", cmd)
	return exitError
}

// usageFailed reports a command line that is not understood, and where
// its help is.
func usageFailed(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run '%s' for usage.\n", ue.hint())
	}
	return exitUsage
}

func run(ctx context.Context, a *agent.Agent, log *slog.Logger) int {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			log.Info("SIGHUP: full resync requested")
			a.Resync("SIGHUP")
		}
	}()
	log.Info("starting", "version", version.String())
	if err := a.Run(ctx, func() { log.Info("first pass done; ready") }); err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func plan(ctx context.Context, a *agent.Agent, asJSON bool, stdout, stderr io.Writer) int {
	rep, err := a.SyncOnce(ctx, projector.SyncOptions{DryRun: true, Trigger: "plan"})
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal plan:", err)
		return 1
	}
	if asJSON {
		writeJSON(stdout, planJSON(rep))
	} else {
		printPlan(stdout, rep)
	}
	if rep.Plan.Empty() {
		return exitOK
	}
	return exitChanges
}

func syncOnce(ctx context.Context, a *agent.Agent, o projector.SyncOptions, stdout, stderr io.Writer) int {
	if err := a.SaveLive(ctx); err != nil {
		fmt.Fprintln(stderr, "sbps-marshal sync:", err)
		return 1
	}
	rep, err := a.SyncOnce(ctx, o)
	if rep != nil {
		printPlan(stdout, rep)
		applied := 0
		for _, r := range rep.Results {
			if r.OK() {
				applied++
			}
		}
		fmt.Fprintf(stdout, "\n%d operation(s) applied, %d failed, in %s\n", applied, len(rep.Failed()), rep.Duration.Round(time.Millisecond))
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal sync:", err)
		return 1
	}
	return 0
}

func status(ctx context.Context, a *agent.Agent, asJSON bool, stdout, stderr io.Writer) int {
	code := 0
	entries, rep, err := a.Status(ctx)
	switch {
	case err != nil:
		// The desired state could not be computed (S3 unreachable, say):
		// show what LIO holds, with the reason.
		var lioErr error
		if entries, lioErr = a.LIOStatus(ctx, err); lioErr != nil {
			fmt.Fprintln(stderr, "sbps-marshal status:", err)
			fmt.Fprintln(stderr, "sbps-marshal status:", lioErr)
			return 1
		}
		fmt.Fprintln(stderr, "sbps-marshal status: desired state unknown, showing what LIO holds:", err)
		code = exitDesiredUnknown
	case !rep.Desired.RootfsComplete:
		fmt.Fprintln(stderr, "sbps-marshal status: IMS information incomplete, rootfs projections are held as LIO has them:", rep.Desired.RootfsIncompleteReason)
		code = exitDesiredUnknown
	}
	// What the entries come from is saveconfig.json; say when LIO's live
	// state has lost part of it (LIO not restored), with the fix.
	if err := a.LIOCondition(ctx); errors.Is(err, lio.ErrNotRestored) {
		fmt.Fprintln(stderr, "sbps-marshal status: LIO not restored:", err)
		code = 1
	} else if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal status: cannot compare LIO's live state with saveconfig.json:", err)
	}
	if asJSON {
		if entries == nil {
			entries = []projector.Entry{}
		}
		writeJSON(stdout, entries)
		return code
	}
	printStatus(stdout, entries)
	return code
}

func resync(cfg *config.Config, stdout, stderr io.Writer) int {
	pid, err := agent.ReadPID(cfg.StateDir)
	if err == nil {
		err = syscall.Kill(pid, syscall.SIGHUP)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal resync:", err)
		return 1
	}
	fmt.Fprintf(stdout, "asked sbps-marshal (pid %d) for a full resync\n", pid)
	return 0
}

func resyncAll(cfg *config.Config, log *slog.Logger, stdout, stderr io.Writer) int {
	if len(cfg.NATSURL) == 0 {
		fmt.Fprintln(stderr, "sbps-marshal resync --all: needs NATS_URL (the fleet is reached through NATS)")
		return 1
	}
	svidCtx, cancelSVID := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelSVID()
	auth, err := natsauth.New(svidCtx, cfg, log)
	if err == nil {
		defer auth.Close()
		err = auth.Wait(svidCtx) // the X.509-SVID, with NATS_SPIFFE=true
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal resync --all:", err)
		return 1
	}
	// A mutual TLS handshake on a busy node can outlast nats.go's default 2s.
	var nc *nats.Conn
	opts, err := auth.Options()
	if err == nil {
		nc, err = nats.Connect(strings.Join(cfg.NATSURL, ","), append(opts, nats.Timeout(5*time.Second))...)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal resync --all: connecting to NATS:", err)
		return 1
	}
	defer nc.Close()
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := events.PublishResync(ctx, nc, cfg.NATSResyncSubject, "sbps-marshal resync --all on "+host); err != nil {
		fmt.Fprintln(stderr, "sbps-marshal resync --all:", err)
		return 1
	}
	fmt.Fprintf(stdout, "asked every agent for a full resync (subject %s)\n", cfg.NATSResyncSubject)
	return 0
}

func printStatus(w io.Writer, entries []projector.Entry) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tKIND\tLUN\tBACKSTORE\tWWID\tSIZE\tIMAGE\tREASON")
	for _, e := range entries {
		lun := "-"
		if e.LUN != nil {
			lun = fmt.Sprint(*e.LUN)
		}
		if e.RegistryLUN != nil && (e.LUN == nil || *e.LUN != *e.RegistryLUN) {
			lun += fmt.Sprintf(" (registry %d)", *e.RegistryLUN)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.State, dash(string(e.Kind)), lun, dash(e.Backstore), dash(e.WWID), size(e.Size), dash(imageLabel(e)), e.Reason)
	}
	tw.Flush()
}

func printPlan(w io.Writer, rep *projector.Report) {
	p := rep.Plan
	fmt.Fprintf(w, "%d desired, %d pending, %d rejected; %d managed backstores, %d foreign\n",
		len(rep.Desired.Projections), len(rep.Desired.Pending), len(rep.Desired.Rejected), p.Managed, len(p.Foreign))
	if p.Empty() && len(p.Held) == 0 && p.Refused == "" {
		fmt.Fprintln(w, "no changes")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tBACKSTORE\tLUN\tFILE\tREASON")
	for _, c := range p.Changes {
		file := c.Dev
		if c.Projection != nil {
			file = c.Projection.File
		}
		lun := "auto"
		if c.LUN >= 0 {
			lun = fmt.Sprint(c.LUN)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Action, c.Name, lun, file, c.Reason)
	}
	for _, c := range p.Held {
		fmt.Fprintf(tw, "hold\t%s\t%d\t%s\t%s\n", c.Name, c.LUN, c.Dev, c.Reason)
	}
	tw.Flush()
	if p.Refused != "" {
		fmt.Fprintln(w, "refused:", p.Refused)
	}
}

func planJSON(rep *projector.Report) any {
	type change struct {
		Action    projector.Action `json:"action"`
		Backstore string           `json:"backstore"`
		LUN       *int             `json:"lun,omitempty"`
		File      string           `json:"file,omitempty"`
		Key       string           `json:"key,omitempty"`
		WWN       string           `json:"wwn,omitempty"`
		Reason    string           `json:"reason"`
	}
	conv := func(cs []projector.Change, held bool) []change {
		out := []change{}
		for _, c := range cs {
			ch := change{Action: c.Action, Backstore: c.Name, File: c.Dev, Reason: c.Reason}
			if held {
				ch.Action = "hold"
			}
			if c.LUN >= 0 {
				lun := c.LUN
				ch.LUN = &lun
			}
			if c.Projection != nil {
				ch.File, ch.Key, ch.WWN = c.Projection.File, c.Projection.Key, c.Projection.ID.WWN
			}
			out = append(out, ch)
		}
		return out
	}
	return map[string]any{
		"changes":  conv(rep.Plan.Changes, false),
		"held":     conv(rep.Plan.Held, true),
		"refused":  rep.Plan.Refused,
		"desired":  len(rep.Desired.Projections),
		"pending":  len(rep.Desired.Pending),
		"rejected": len(rep.Desired.Rejected),
	}
}

func imageLabel(e projector.Entry) string {
	if len(e.Images) == 0 {
		return e.Key
	}
	var names []string
	for _, im := range e.Images {
		n := im.Name
		if n == "" {
			n = im.ID
		}
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func size(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprint(n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	return logging.New(w, logging.Options{Format: cfg.LogFormat, Level: cfg.LogLevel})
}
