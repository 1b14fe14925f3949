package lio

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode says how the Driver runs targetcli.
type Mode string

const (
	// Batch runs one targetcli process per stage with the commands on
	// stdin, then an explicit saveconfig. targetcli carries on after errors
	// and exits 0 in this mode, so results come from its output per command
	// and from saveconfig.json read back afterwards.
	Batch Mode = "batch"
	// OneShot runs one `targetcli "<command>"` process per command (exit
	// status and stderr per command), then one for saveconfig.
	OneShot Mode = "oneshot"
	// Daemon sends each command to targetclid over its unix socket; no
	// process is started.
	Daemon Mode = "daemon"
)

// Modes lists every Mode, the default first.
func Modes() []Mode { return []Mode{Batch, OneShot, Daemon} }

// Describe says, for people, how the mode runs targetcli.
func (m Mode) Describe() string {
	switch m {
	case Batch:
		return "one targetcli process per batch of changes"
	case OneShot:
		return "one targetcli process per command"
	case Daemon:
		return "requests to targetclid over its socket"
	}
	return "unknown mode"
}

// ParseMode accepts a Mode's name; "" means Batch.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return Batch, nil
	}
	names := make([]string, 0, len(Modes()))
	for _, m := range Modes() {
		if Mode(s) == m {
			return m, nil
		}
		names = append(names, string(m))
	}
	return "", fmt.Errorf("unknown targetcli mode %q: want %s", s, strings.Join(names, ", "))
}

// DriverConfig configures a Driver. The zero value drives the system's targetcli
// in batch mode.
type DriverConfig struct {
	// Mode selects how targetcli runs. Defaults to Batch.
	Mode Mode
	// Binary is the targetcli executable. Defaults to "/usr/bin/targetcli".
	Binary string
	// Socket is targetclid's unix socket (Daemon mode only). Defaults to
	// "/var/run/targetclid.sock".
	Socket string
	// SaveFile is the file targetcli's saveconfig writes and the driver
	// reads back to verify. Defaults to "/etc/target/saveconfig.json".
	SaveFile string
	// Home is TARGETCLI_HOME (targetcli's preferences, history and log) for
	// every process the driver starts, so the agent never shares an
	// administrator's preferences. Defaults to a private directory created
	// by New under os.TempDir and removed by Close.
	Home string
	// Env is added to the environment of every targetcli process, as
	// "KEY=value" strings.
	Env []string
	// Timeout bounds one targetcli process or one targetclid request; the
	// process gets SIGTERM, then SIGKILL 5 s later. Defaults to 2 minutes.
	Timeout time.Duration
	// OnCall, when set, is told when each targetcli process (from just
	// before it is started until it was waited for) or targetclid request
	// ran: the time that is LIO's, not the agent's.
	OnCall func(start, end time.Time)
}

// Defaults used for zero DriverConfig fields.
const (
	DefaultBinary   = "/usr/bin/targetcli"
	DefaultSocket   = "/var/run/targetclid.sock"
	DefaultSaveFile = "/etc/target/saveconfig.json"
	DefaultTimeout  = 2 * time.Minute
)

// Driver applies operations to LIO through targetcli. It implements
// Applier. Calls to Apply and Save are serialized; a Driver may be shared by
// goroutines.
type Driver struct {
	cfg     DriverConfig
	log     *slog.Logger
	ownHome bool

	mu sync.Mutex // held for the whole of Apply and Save: one change set at a time

	procs    atomic.Int64
	requests atomic.Int64

	saved *SavedFile // saveconfig.json, parsed again only when it changed
}

// Saved is the driver's reader of saveconfig.json; share it so that a file
// the driver just read back is not parsed again by others.
func (d *Driver) Saved() *SavedFile { return d.saved }

var _ Applier = (*Driver)(nil)

// New checks cfg, fills in defaults and returns a Driver. logger may be nil.
func New(cfg DriverConfig, logger *slog.Logger) (*Driver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var err error
	if cfg.Mode, err = ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.SaveFile == "" {
		cfg.SaveFile = DefaultSaveFile
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if _, err := saveCommand(cfg.SaveFile); err != nil {
		return nil, fmt.Errorf("LIO save file cannot be passed to targetcli: %w", err)
	}
	for _, kv := range cfg.Env {
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("targetcli environment entry %q is not KEY=value", kv)
		}
	}
	d := &Driver{cfg: cfg, log: logger.With("component", "lio", "mode", string(cfg.Mode)), saved: &SavedFile{Path: cfg.SaveFile}}
	if cfg.Home == "" && cfg.Mode != Daemon {
		home, err := os.MkdirTemp("", "sbps-marshal-targetcli-")
		if err != nil {
			return nil, fmt.Errorf("create a private TARGETCLI_HOME: %w (set DriverConfig.Home to a writable directory)", err)
		}
		d.cfg.Home, d.ownHome = home, true
	}
	return d, nil
}

// Close removes the private TARGETCLI_HOME that New created, if any.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ownHome {
		d.ownHome = false
		if err := os.RemoveAll(d.cfg.Home); err != nil {
			return fmt.Errorf("remove private TARGETCLI_HOME: %w", err)
		}
	}
	return nil
}

// Stats counts what the driver has done since New.
type Stats struct {
	Processes int64 // targetcli processes started
	Requests  int64 // targetclid requests sent
}

// Stats returns the counts so far.
func (d *Driver) Stats() Stats {
	return Stats{Processes: d.procs.Load(), Requests: d.requests.Load()}
}

// Mode returns the mode in use.
func (d *Driver) Mode() Mode { return d.cfg.Mode }

// Save runs targetcli's saveconfig.
func (d *Driver) Save(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.save(ctx)
}

// cmdResult is what targetcli said about one command.
type cmdResult struct {
	reached bool   // targetcli read the command (its prompt appeared, its process ran, its request was answered)
	failed  bool   // targetcli said it failed (one-shot exit status)
	crashed bool   // an exception targetcli did not catch ended its process in this command
	msg     string // targetcli's output for it
}

// Apply runs ops in order, in stages: a new stage starts wherever the ops
// switch between removing (delete backstore, delete LUN, disable TPG) and
// adding (create backstore, create LUN, enable TPG), because one targetcli
// process that deletes and then creates can fail on its stale object tree.
// Each stage ends with saveconfig, and the driver reads saveconfig.json back
// to judge every op of the stage: an op is Applied or AlreadyDone only if its
// change is in the saved file.
//
// An op whose values fail the argument checks is Failed with an *ArgError
// and never reaches targetcli. A stage that cannot finish (targetcli could
// not start or died, targetclid is unreachable, timeout, ctx ended) stops the
// call: its ops are judged from what was saved (the driver saves once more to
// capture live changes), later ops are NotAttempted, and the error says why.
func (d *Driver) Apply(ctx context.Context, ops []Op) ([]Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	results, lines, valid := linesFor(ops)
	if len(valid) == 0 {
		return results, nil
	}

	before, err := d.readState(ctx)
	if err != nil {
		d.log.Warn("cannot read LIO saved state before applying; judging by targetcli's output and the state after", "err", err)
		before = nil
	}
	for _, stage := range stages(ops, valid) {
		if err := ctx.Err(); err != nil {
			return results, fmt.Errorf("apply LIO changes: stopped before %s: %w", ops[stage[0]], context.Cause(ctx))
		}
		after, verr, runErr := d.applyStage(ctx, ops, lines, stage, before, results)
		if runErr != nil {
			return results, runErr
		}
		if verr == nil {
			before = after
		}
	}
	return results, nil
}

// linesFor builds the targetcli line of every op. An op whose values
// fail the argument checks is Failed in results; the indexes of the others
// are in valid.
func linesFor(ops []Op) (results []Result, lines []line, valid []int) {
	results = make([]Result, len(ops))
	lines = make([]line, len(ops))
	for i, op := range ops {
		results[i].Op = op
		l, err := commandFor(op)
		if err != nil {
			results[i].Outcome = Failed
			results[i].Err = fmt.Errorf("%s: %w", op, err)
			continue
		}
		lines[i] = l
		valid = append(valid, i)
	}
	return results, lines, valid
}

// applyStage runs the ops of one stage (indexes into ops and lines) and
// judges each into results from the state saved before and after it. It
// returns that state after, the error reading it, and the error that
// stops the call.
func (d *Driver) applyStage(ctx context.Context, ops []Op, lines []line, stage []int, before *Config, results []Result) (after *Config, verr, runErr error) {
	stageLines := make([]line, len(stage))
	for j, i := range stage {
		stageLines[j] = lines[i]
	}
	start := time.Now()
	said, saved, runErr := d.runStage(ctx, stageLines)
	if !saved {
		// Capture what the stage changed live, so that saveconfig.json
		// explains the state the call leaves behind. If that save fails
		// too, the call fails: the file does not hold what LIO does.
		if err := d.save(context.WithoutCancel(ctx)); err != nil {
			d.log.Warn("saving LIO state after an unfinished stage failed", "err", err)
			if runErr == nil {
				runErr = err
			}
		}
	}
	after, verr = d.readState(context.WithoutCancel(ctx))
	for j, i := range stage {
		results[i] = judge(ops[i], said[j], before, after, verr)
	}
	d.log.Debug("applied stage", "ops", len(stage), "elapsed", time.Since(start), "saved", saved, "err", runErr)
	return after, verr, runErr
}

// stages splits the valid op indexes wherever ops switch between removing
// and adding.
func stages(ops []Op, valid []int) [][]int {
	var out [][]int
	for k, i := range valid {
		if k == 0 || removes(ops[i].Kind) != removes(ops[valid[k-1]].Kind) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], i)
	}
	return out
}

func removes(k OpKind) bool { return k == DeleteBackstore || k == DeleteLUN || k == DisableTPG }

// runStage runs the commands of one stage and saveconfig, and reports what
// targetcli said per command, whether the save is known to have happened,
// and an error when the stage could not finish.
func (d *Driver) runStage(ctx context.Context, lines []line) ([]cmdResult, bool, error) {
	switch d.cfg.Mode {
	case OneShot:
		return d.runOneShot(ctx, lines)
	case Daemon:
		return d.runDaemon(ctx, lines)
	default:
		return d.runBatch(ctx, lines)
	}
}

func (d *Driver) save(ctx context.Context) error { return d.saveTo(ctx, d.cfg.SaveFile) }

// SaveTo saves LIO's live state to file instead of SaveFile: a check of
// the live state that must not touch what another process saves.
func (d *Driver) SaveTo(ctx context.Context, file string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.saveTo(ctx, file)
}

func (d *Driver) saveTo(ctx context.Context, file string) error {
	l, err := saveCommand(file)
	if err != nil {
		return err
	}
	var out string
	var res procResult
	if d.cfg.Mode == Daemon {
		out, err = d.request(ctx, l.String())
	} else {
		res, err = d.run(ctx, []string{l.String()}, "", false)
		out = res.stdout + res.stderr
	}
	if err != nil {
		return fmt.Errorf("save LIO state to %s: %w", file, err)
	}
	if d.cfg.Mode != Daemon && res.exit != 0 {
		return fmt.Errorf("save LIO state to %s: targetcli exit status %d: %s", file, res.exit, strings.TrimSpace(out))
	}
	if d.cfg.Mode == Daemon && !savedMessage(out, file) {
		return fmt.Errorf("save LIO state to %s: targetclid answered %q", file, strings.TrimSpace(out))
	}
	return nil
}

// savedMessage reports whether out holds targetcli's line for a save to
// file. "Configuration saved to" alone is not enough:
// batch targetcli's auto-save at end of input prints the same words for
// rtslib's default file (Debian: /etc/rtslib-fb-target/saveconfig.json),
// which is not the file the driver reads back.
func savedMessage(out, file string) bool {
	want := "Configuration saved to " + file
	for len(out) > 0 {
		var l string
		l, out, _ = strings.Cut(out, "\n")
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

// readState loads saveconfig.json, retrying while it is half-written. A
// missing file is an empty state.
func (d *Driver) readState(ctx context.Context) (*Config, error) {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, _, err := d.saved.Load()
		switch {
		case err == nil:
			return c, nil
		case errors.Is(err, fs.ErrNotExist):
			return &Config{}, nil
		case !errors.Is(err, ErrIncomplete) || attempt == 6:
			return nil, fmt.Errorf("read back LIO state to verify: %w", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("read back LIO state to verify: %w (last error: %v)", context.Cause(ctx), err)
		case <-t.C:
		}
		wait *= 2
	}
}

// judge decides an op's outcome from what targetcli said and what
// saveconfig.json holds before and after its stage.
func judge(op Op, said cmdResult, before, after *Config, verr error) Result {
	r := Result{Op: op, Message: said.msg}
	if !said.reached {
		r.Outcome = NotAttempted
		return r
	}
	if verr != nil {
		r.Outcome = Failed
		r.Err = fmt.Errorf("%s: cannot verify: %w", op, verr)
		return r
	}
	holds, why := satisfied(op, after)
	if !holds {
		r.Outcome = Failed
		if said.msg != "" {
			r.Err = fmt.Errorf("%s: targetcli: %s (%s)%s", op, gist(said.msg), why, remedy(op, said.msg))
		} else {
			r.Err = fmt.Errorf("%s: %s", op, why)
		}
		return r
	}
	switch {
	case said.crashed:
		// The change is there although targetcli died in the command
		// (the stale tree's ValueError comes after the kernel made the
		// LUN): the saved state decides, as below.
		r.Outcome = Applied
		if before != nil {
			if was, _ := satisfied(op, before); was {
				r.Outcome = AlreadyDone
			}
		}
	case succeeded(op, said.msg) && !said.failed:
		if op.Kind == CreateBackstore {
			if so, _ := after.FileIO(op.Backstore); so.WriteBack != nil && *so.WriteBack {
				r.Outcome = Failed
				r.Err = fmt.Errorf("%s: created with write_back on; delete and recreate it", op)
				return r
			}
		}
		r.Outcome = Applied
	case said.msg != "":
		// targetcli refused or said nothing changed, and the state holds:
		// it held already ("exists", "already enabled", "No storage object").
		r.Outcome = AlreadyDone
	default:
		// No output to go by (the process died after the command): the
		// saved state decides.
		r.Outcome = Applied
		if before != nil {
			if was, _ := satisfied(op, before); was {
				r.Outcome = AlreadyDone
			}
		}
	}
	return r
}

// succeeded reports whether msg is targetcli's success message for op.
func succeeded(op Op, msg string) bool {
	var want string
	switch op.Kind {
	case CreateBackstore:
		want = "Created fileio " + op.Backstore + " with size "
	case DeleteBackstore:
		want = "Deleted storage object " + op.Backstore + "."
	case CreateLUN:
		want = "Created LUN "
		if op.LUN != AutoLUN {
			want += strconv.Itoa(op.LUN) + "."
		}
	case DeleteLUN:
		want = "Deleted LUN " + strconv.Itoa(op.LUN) + "."
	case EnableTPG:
		want = "The TPGT has been enabled."
	case DisableTPG:
		want = "The TPGT has been disabled."
	}
	return want != "" && strings.Contains(msg, want)
}

// satisfied reports whether c holds what op asks for, and if not, why.
func satisfied(op Op, c *Config) (bool, string) {
	switch op.Kind {
	case CreateBackstore:
		return backstoreCreated(op, c)
	case DeleteBackstore:
		if _, ok := c.FileIO(op.Backstore); ok {
			return false, "fileio " + op.Backstore + " is still in saveconfig.json"
		}
		return true, ""
	case CreateLUN:
		return lunCreated(op, c)
	case DeleteLUN:
		return lunDeleted(op, c)
	case EnableTPG, DisableTPG:
		return tpgEnabledAsAsked(op, c)
	}
	return false, "unknown operation"
}

// tpgOf returns the TPG op names in c, or nil and why it is not there.
func tpgOf(op Op, c *Config) (*TPG, string) {
	t, ok := c.Target(op.Target)
	if !ok {
		return nil, "target " + op.Target + " is not in saveconfig.json"
	}
	tpg, ok := t.TPG(op.TPGTag())
	if !ok {
		return nil, fmt.Sprintf("tpg%d of %s is not in saveconfig.json", op.TPGTag(), op.Target)
	}
	return tpg, ""
}

func backstoreCreated(op Op, c *Config) (bool, string) {
	so, ok := c.FileIO(op.Backstore)
	switch {
	case !ok:
		return false, "fileio " + op.Backstore + " is not in saveconfig.json"
	case so.Dev != op.File:
		return false, fmt.Sprintf("fileio %s in saveconfig.json is over %s, not %s", op.Backstore, so.Dev, op.File)
	case so.WWN != op.WWN:
		return false, fmt.Sprintf("fileio %s in saveconfig.json has wwn %s, not %s", op.Backstore, so.WWN, op.WWN)
	}
	return true, ""
}

func lunCreated(op Op, c *Config) (bool, string) {
	tpg, why := tpgOf(op, c)
	if tpg == nil {
		return false, why
	}
	lun, ok := tpg.LUNFor("/backstores/fileio/" + op.Backstore)
	switch {
	case !ok:
		return false, "no LUN for fileio " + op.Backstore + " in saveconfig.json"
	case op.LUN != AutoLUN && lun.Index != op.LUN:
		return false, fmt.Sprintf("fileio %s is lun%d in saveconfig.json, not lun%d", op.Backstore, lun.Index, op.LUN)
	}
	return true, ""
}

// lunDeleted holds when the LUN index is gone, also with its whole TPG.
func lunDeleted(op Op, c *Config) (bool, string) {
	tpg, _ := tpgOf(op, c)
	if tpg == nil {
		return true, ""
	}
	for _, l := range tpg.LUNs {
		if l.Index == op.LUN {
			return false, fmt.Sprintf("lun%d (%s) is still in saveconfig.json", l.Index, l.StorageObject)
		}
	}
	return true, ""
}

func tpgEnabledAsAsked(op Op, c *Config) (bool, string) {
	tpg, why := tpgOf(op, c)
	if tpg == nil {
		return false, why
	}
	if want := op.Kind == EnableTPG; bool(tpg.Enable) != want {
		return false, fmt.Sprintf("tpg%d of %s has enable=%v in saveconfig.json", op.TPGTag(), op.Target, bool(tpg.Enable))
	}
	return true, ""
}

// gist is the line of targetcli's output that says what went wrong: the
// exception of a traceback, else the first line.
func gist(msg string) string {
	if isTraceback(msg) {
		return exception(msg)
	}
	return firstLine(msg)
}

// remedy is what an operator can do about a known failure, as a sentence
// to append to the error, or "".
func remedy(op Op, msg string) string {
	if op.Kind == CreateBackstore && strings.Contains(msg, "Read-only file system") {
		return fmt.Sprintf("; %s is on a read-only mount and the kernel opens a fileio backing file read-write even with write_back=false: "+
			"mount %s read-write (initiators still get a read-only LUN from the TPG's write protection)", op.File, path.Dir(op.File))
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
