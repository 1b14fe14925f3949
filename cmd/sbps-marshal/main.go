// Command sbps-marshal projects CSM boot images as iSCSI LUNs on this node.
//
//	sbps-marshal [run]      the daemon (default, as the old systemd unit runs it)
//	sbps-marshal plan       what a pass would change; exit 0 nothing, 2 something, 1 error
//	sbps-marshal sync       one full pass, then a summary
//	sbps-marshal status     every projection and its state; exit 0, 1 error or LIO not restored, 3 S3 or IMS unreachable (LIO's view shown)
//	sbps-marshal resync     ask the running agent for a full pass now (SIGHUP)
//	sbps-marshal config     the effective configuration
//	sbps-marshal version
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
	"github.com/sbps-marshal/sbps-marshal/projector"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr, os.Environ()))
}

const usage = `usage: sbps-marshal [command] [flags]

commands:
  run       run the agent (default)
  plan      print what a pass would change (--json); exit 0 nothing, 2 something, 1 error
  sync      run one full pass and exit (--allow-mass-delete to pass the mass-delete guard)
  status    print every projection and its state (--json); exit 0 current, 1 error
            or LIO not restored, 3 desired state unknown or incomplete (S3 or IMS
            unreachable: what LIO holds is shown, with the reason)
  resync    ask the running agent for a full pass now (--all: every agent, through NATS)
  bridge    webhook | ims: publish Ceph RGW notifications or IMS changes to NATS
  config    print the effective configuration, secrets redacted
  version   print version, commit and Go version

Every command takes the configuration flags below; each also reads SBPS_MARSHAL_<KEY>,
and /etc/sysconfig/sbps-marshal (the unit's EnvironmentFile) unless --env-file names another.
`

// Exit codes of status beyond 0 (current) and 1 (error).
const exitDesiredUnknown = 3 // S3 or IMS unreachable: LIO's view shown, with the reason

// Main runs one command and returns the exit code. Every command reads
// config.DefaultEnvFile, as the unit does.
func Main(args []string, stdout, stderr io.Writer, environ []string) int {
	return mainWith(config.DefaultEnvFile, args, stdout, stderr, environ)
}

// mainWith is Main with the default env file given (tests).
func mainWith(defaultEnvFile string, args []string, stdout, stderr io.Writer, environ []string) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	sub := ""
	if cmd == "bridge" {
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			fmt.Fprintln(stderr, "sbps-marshal bridge: which bridge? webhook (Ceph RGW HTTP push -> NATS) or ims (IMS changes -> NATS)")
			return 1
		}
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("sbps-marshal "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage, "\nconfiguration:\n")
		config.Usage(stderr)
	}
	jsonOut := fs.Bool("json", false, "machine-readable output (plan, status)")
	allowMass := fs.Bool("allow-mass-delete", false, "sync: apply deletes the mass-delete guard held back")
	all := fs.Bool("all", false, "resync: ask every agent of the fleet, through NATS")
	renumber := fs.Bool("renumber", false, "sync: move LUNs whose index differs from the fleet registry (initiators see them move)")

	switch cmd {
	case "version":
		fmt.Fprintln(stdout, version.String())
		return 0
	case "help", "-h", "--help":
		fs.Usage()
		return 0
	case "run", "plan", "sync", "status", "resync", "config", "bridge", "doctor":
	default:
		fmt.Fprintf(stderr, "sbps-marshal: unknown command %q\n\n%s", cmd, usage)
		return 1
	}
	cfg, rest, err := config.Load(config.Sources{Args: args, Environ: environ, DefaultEnvFile: defaultEnvFile}, fs)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if cmd == "doctor" {
		// doctor reports a bad configuration as one of its rows.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		var log *slog.Logger
		if cfg != nil {
			log = newLogger(cfg, stderr)
		}
		return doctorMain(ctx, cfg, err, log, *jsonOut, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return 1
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "sbps-marshal %s: unexpected arguments %q\n", cmd, rest)
		return 1
	}
	log := newLogger(cfg, stderr)
	for _, n := range cfg.Notices {
		log.Warn(n)
	}
	if cmd == "config" {
		cfg.Print(stdout)
		return 0
	}
	if cmd == "resync" {
		if *all {
			return resyncAll(cfg, log, stdout, stderr)
		}
		return resync(cfg, stdout, stderr)
	}
	if cmd == "bridge" {
		// A bridge runs anywhere NATS and IMS are reachable: no LIO, no mount.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return bridgeMain(ctx, sub, cfg, log, stdout, stderr)
	}
	if err := cfg.CheckFiles(); err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", strings.ReplaceAll(err.Error(), "\n", "\nsbps-marshal: "))
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := agent.New(ctx, cfg, log, agent.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return 1
	}
	defer a.Close()

	switch cmd {
	case "plan":
		return plan(ctx, a, *jsonOut, stdout, stderr)
	case "status":
		return status(ctx, a, *jsonOut, stdout, stderr)
	}
	lock, err := agent.AcquireLock(cfg.StateDir)
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal:", err)
		return 1
	}
	defer lock.Release()
	if cmd == "sync" {
		return syncOnce(ctx, a, projector.SyncOptions{AllowMassDelete: *allowMass, Renumber: *renumber, Trigger: "sync command"}, stdout, stderr)
	}
	return run(ctx, a, log)
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
		return 0
	}
	return 2
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
	auth, err := agent.NewNATSAuth(svidCtx, cfg, log)
	if err == nil {
		defer auth.Close()
		err = auth.Wait(svidCtx) // the X.509-SVID, with NATS_SPIFFE=true
	}
	if err != nil {
		fmt.Fprintln(stderr, "sbps-marshal resync --all:", err)
		return 1
	}
	// A mutual TLS handshake on a busy node can outlast nats.go's default 2s.
	nc, err := nats.Connect(strings.Join(cfg.NATSURL, ","), append(auth.Options(), nats.Timeout(5*time.Second))...)
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
