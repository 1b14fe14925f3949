package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/internal/mountinfo"
)

// Status is a row's verdict.
type Status string

const (
	// OK: as the agent needs it.
	OK Status = "OK"
	// Warn: the agent runs, but something is off, or the row could not be
	// checked because another failed.
	Warn Status = "WARN"
	// Fail: the agent cannot do its job on this node until it is fixed.
	Fail Status = "FAIL"
)

// Result is one row: a dependency, its status, what was found, and for a
// row that is not OK the fix (what to run or change, naming the file or
// key). The JSON field names are stable.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// The rows, in the order Run returns them.
const (
	RowConfig        = "configuration"
	RowKubectl       = "kubectl"
	RowKubeconfig    = "kubeconfig"
	RowGate          = "node gate"
	RowTargetcli     = "targetcli"
	RowTargetService = "target.service"
	RowSaveconfig    = "saveconfig.json"
	RowLIORestored   = "LIO restored"
	RowLIOTarget     = "LIO target"
	RowMount         = "s3fs mount"
	RowS3            = "S3"
	RowSPIFFE        = "SPIFFE"
	RowIMS           = "IMS"
	RowNATS          = "NATS"
	RowStream        = "NATS stream"
	RowRegistry      = "LUN registry"
	RowService       = "sbps-marshal.service"
)

// Rows lists every row name in output order.
func Rows() []string {
	return []string{RowConfig, RowKubectl, RowKubeconfig, RowGate, RowTargetcli, RowTargetService, RowSaveconfig,
		RowLIORestored, RowLIOTarget, RowMount, RowS3, RowSPIFFE, RowIMS, RowNATS, RowStream, RowRegistry, RowService}
}

// DefaultMountinfo is where the s3fs mount is looked up.
const DefaultMountinfo = mountinfo.Self

// DefaultTimeout bounds each step of a check when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options are what tests and the command may set; the zero value checks
// this node.
type Options struct {
	// Mountinfo is the mount table the s3fs mount is looked up in.
	// Defaults to DefaultMountinfo.
	Mountinfo string
	// Timeout bounds each step (one kubectl, systemctl or targetcli run,
	// one S3, IMS or NATS request, the listing of the mount). Defaults to
	// DefaultTimeout.
	Timeout time.Duration
	// TargetcliEnv is added to targetcli's environment (the simulator's
	// node in tests), as agent.Options.TargetcliEnv.
	TargetcliEnv []string
	// Logger gets the agent code's own log lines. Defaults to discarding.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Mountinfo == "" {
		o.Mountinfo = DefaultMountinfo
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Check yields the rows Names, in that order; rows within one check may
// depend on each other (run in order), different checks run concurrently.
type Check struct {
	Names []string
	Run   func(ctx context.Context) []Result
}

// Checks are the checks of every row but the configuration's, for cfg.
func Checks(cfg *config.Config, o Options) []Check {
	o = o.withDefaults()
	return []Check{
		{Names: []string{RowKubectl, RowKubeconfig, RowGate}, Run: func(ctx context.Context) []Result { return checkGate(ctx, cfg, o) }},
		{Names: []string{RowTargetcli, RowTargetService, RowSaveconfig, RowLIORestored, RowLIOTarget}, Run: func(ctx context.Context) []Result { return checkLIO(ctx, cfg, o) }},
		{Names: []string{RowMount}, Run: func(ctx context.Context) []Result { return []Result{checkMount(ctx, cfg, o)} }},
		{Names: []string{RowS3}, Run: func(ctx context.Context) []Result { return []Result{checkS3(ctx, cfg, o)} }},
		{Names: []string{RowSPIFFE, RowIMS}, Run: func(ctx context.Context) []Result { return checkIMS(ctx, cfg, o) }},
		{Names: []string{RowNATS, RowStream, RowRegistry}, Run: func(ctx context.Context) []Result { return checkNATS(ctx, cfg, o) }},
		{Names: []string{RowService}, Run: func(ctx context.Context) []Result {
			return []Result{bounded(ctx, o.Timeout, RowService, "check systemd: systemctl status sbps-marshal",
				func(ctx context.Context) Result { return serviceRow(ctx, cfg, o) })}
		}},
	}
}

// Run checks the node: the configuration row (cfgErr is the error loading
// the configuration gave, cfg is nil then and every other row says it was
// not checked), then every check of Checks, concurrently. The rows come in
// the order of Rows.
func Run(ctx context.Context, cfg *config.Config, cfgErr error, o Options) []Result {
	o = o.withDefaults()
	rows := []Result{configRow(cfg, cfgErr)}
	if cfg == nil {
		for _, name := range Rows()[1:] {
			rows = append(rows, Result{Name: name, Status: Warn, Detail: "not checked: the configuration failed",
				Fix: "fix the configuration row first, then run `sbps-marshal doctor` again"})
		}
		return rows
	}
	checks := Checks(cfg, o)
	out := make([][]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { out[i] = complete(c.Names, c.Run(ctx)) })
	}
	wg.Wait()
	for _, rs := range out {
		rows = append(rows, rs...)
	}
	return rows
}

// complete returns one row per name, in order: a check that returned
// fewer (a bug) still shows every row.
func complete(names []string, got []Result) []Result {
	out := make([]Result, len(names))
	for i, n := range names {
		out[i] = Result{Name: n, Status: Warn, Detail: "not checked", Fix: "report this: the doctor check yielded no row"}
		for _, r := range got {
			if r.Name == n {
				out[i] = r
			}
		}
	}
	return out
}

// Failed reports whether any row failed: `sbps-marshal doctor` then exits 1.
func Failed(rows []Result) bool {
	for _, r := range rows {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Find returns the row called name.
func Find(rows []Result, name string) (Result, bool) {
	for _, r := range rows {
		if r.Name == name {
			return r, true
		}
	}
	return Result{}, false
}

// WriteTable writes the rows as a table (name, status, detail), each row
// that is not OK followed by its "fix: …" line, then a count.
func WriteTable(w io.Writer, rows []Result) error {
	nameW := len("CHECK")
	for _, r := range rows {
		nameW = max(nameW, len(r.Name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %-6s %s\n", nameW, "CHECK", "STATUS", "DETAIL")
	count := map[Status]int{}
	for _, r := range rows {
		count[r.Status]++
		fmt.Fprintf(&b, "%-*s  %-6s %s\n", nameW, r.Name, r.Status, oneLine(r.Detail))
		if r.Status != OK && r.Fix != "" {
			fmt.Fprintf(&b, "%-*s  %-6s fix: %s\n", nameW, "", "", oneLine(r.Fix))
		}
	}
	fmt.Fprintf(&b, "\n%d checks: %d OK, %d WARN, %d FAIL\n", len(rows), count[OK], count[Warn], count[Fail])
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the rows as a JSON array of {name, status, detail, fix}.
func WriteJSON(w io.Writer, rows []Result) error {
	if rows == nil {
		rows = []Result{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// bounded runs f with a deadline of d and returns its row, or, when f does
// not return within d (and a second's grace for it to report its own
// error), a FAIL row for name saying so, with fix: a step blocked in a
// system call (a hung s3fs) is abandoned, not waited for.
func bounded(ctx context.Context, d time.Duration, name, fix string, f func(context.Context) Result) Result {
	r, _ := boundedWith(ctx, d, name, fix, func(ctx context.Context) (Result, struct{}) { return f(ctx), struct{}{} })
	return r
}

// boundedWith is bounded for a step that also yields a value; an
// abandoned step yields the zero value.
func boundedWith[T any](ctx context.Context, d time.Duration, name, fix string, f func(context.Context) (Result, T)) (Result, T) {
	type out struct {
		r Result
		v T
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	ch := make(chan out, 1)
	go func() {
		r, v := f(ctx)
		ch <- out{r, v}
	}()
	select {
	case o := <-ch:
		return o.r, o.v
	case <-ctx.Done():
	}
	select {
	case o := <-ch:
		return o.r, o.v
	case <-time.After(time.Second):
		var zero T
		return Result{Name: name, Status: Fail, Detail: fmt.Sprintf("no answer within %s", d), Fix: fix}, zero
	}
}

// skipped is a row not checked because the row it needs (needs) failed.
func skipped(name, needs, because string) Result {
	return Result{Name: name, Status: Warn, Detail: "not checked: " + because, Fix: "fix the " + needs + " row first"}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// errText is err's message on one line.
func errText(err error) string { return oneLine(err.Error()) }
