//go:build kernel

package conformance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// row is one command form with its situation and what must come of it.
// Lines, ops and files may use {T} (the target IQN), {IMG} (the image
// directory with a.img, b.img, c.img and x.img of 1 MiB), {RO} (a
// read-only mount holding r.img) and {WORK} (the row's work directory).
type row struct {
	name  string
	bare  bool                         // no provisioning: LIO starts empty
	setup []string                     // lines run after provisioning, in one batch process
	prep  func(t *testing.T, w *world) // after setup, before the row runs
	ops   []lio.Op                     // run through lio.Driver
	lines []string                     // or: raw lines, one command each
	save  string                       // the driver's SaveFile; default Debian's
	exits []int                        // one-shot exit status per op or line; nil: all 0
	crash bool                         // batch mode: targetcli dies with a traceback (exit 1) at the first op or line whose exit is 1
	// batchExit, when not 0, is the batch process's exit status where
	// exits and crash do not tell it (a crash only one process meets).
	batchExit int
	msgs      []string                          // per op or line: text its message must contain in every mode ("" = no check)
	want      []lio.Outcome                     // per op: the driver's outcome in every mode
	check     func(t *testing.T, c *runContext) // more checks, per side and mode
}

// obs is what one side did for one row in one mode.
type obs struct {
	exits    []int    // recorded exit statuses: one per process (driver rows), per line (one-shot raw rows) or of the batch
	msgs     []string // per op or line, normalised
	atExit   string   // batch: output after the last line (auto-save), normalised
	banner   string   // batch: output before the first prompt, normalised
	outcomes []lio.Outcome
	errs     []string // per op: normalised Result.Err
	applyErr error
	saved    string // the save file through lio.Parse, normalised; "<absent>" when there is none
	sent     []string
}

type runContext struct {
	row  row
	mode lio.Mode
	w    *world
	o    *obs
}

var modes = lio.Modes()

func runTable(t *testing.T, rows []row) {
	sides := startSides(t)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			for _, mode := range modes {
				t.Run(string(mode), func(t *testing.T) {
					dir := t.TempDir()
					var got [2]*runContext
					for i, s := range sides {
						got[i] = runRow(t, r, mode, newWorld(t, s, dir))
						expect(t, got[i])
					}
					agree(t, got[0], got[1])
				})
			}
		})
	}
}

// runRow runs r on one side in one mode from a freshly cleared LIO.
func runRow(t *testing.T, r row, mode lio.Mode, w *world) *runContext {
	t.Helper()
	var lines []string
	if !r.bare {
		lines = append(lines, provision...)
	}
	for _, l := range r.setup {
		lines = append(lines, w.expand(l))
	}
	w.fresh(t, lines)
	if r.prep != nil {
		r.prep(t, w)
	}
	socket := w.socket
	c := &runContext{row: r, mode: mode, w: w, o: &obs{}}
	home := filepath.Join(t.TempDir(), w.name+"-home") // fresh: targetcli warns it has no prefs.bin
	if r.ops != nil {
		runDriver(t, c, socket, home)
	} else {
		runLines(t, c, socket, home)
	}
	return c
}

func (c *runContext) saveFile() string {
	if c.row.save != "" {
		return c.w.expand(c.row.save)
	}
	return debianSave
}

func runDriver(t *testing.T, c *runContext, socket, home string) {
	t.Helper()
	w := c.w
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), w.name+"-calls.jsonl")
	d, err := lio.New(lio.DriverConfig{
		Mode: c.mode, Binary: self, Socket: socket, SaveFile: c.saveFile(), Home: home, Timeout: 3 * time.Minute,
		Env: append([]string{recBinEnv + "=" + w.bin, recLogEnv + "=" + log}, w.env...),
	}, nil)
	if err != nil {
		t.Fatalf("lio.New: %v", err)
	}
	defer d.Close()
	ops := make([]lio.Op, len(c.row.ops))
	for i, op := range c.row.ops {
		op.File = w.expand(op.File)
		ops[i] = op
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := d.Apply(ctx, ops)
	c.o.applyErr = err
	for _, r := range res {
		c.o.outcomes = append(c.o.outcomes, r.Outcome)
		c.o.msgs = append(c.o.msgs, normalise(w.side, []string{home}, r.Message))
		e := ""
		if r.Err != nil {
			e = normalise(w.side, []string{home}, r.Err.Error())
		}
		c.o.errs = append(c.o.errs, e)
	}
	for _, cl := range readCalls(t, log) {
		c.o.exits = append(c.o.exits, cl.Exit)
		c.o.sent = append(c.o.sent, strings.Join(cl.Args, " ")+"|"+cl.Stdin)
	}
	c.o.saved = savedState(t, c.saveFile())
}

func runLines(t *testing.T, c *runContext, socket, home string) {
	t.Helper()
	w := c.w
	env := append(os.Environ(), append(w.env, "TARGETCLI_HOME="+home)...)
	lines := make([]string, len(c.row.lines))
	for i, l := range c.row.lines {
		lines[i] = w.expand(l)
	}
	homes := []string{home}
	switch c.mode {
	case lio.OneShot:
		for _, l := range lines {
			r := runProc(t, w.bin, env, "", l)
			c.o.exits = append(c.o.exits, r.exit)
			c.o.msgs = append(c.o.msgs, normalise(w.side, homes, r.stdout+"\n"+r.stderr))
		}
	case lio.Batch:
		r := runCombined(t, w.bin, env, strings.Join(lines, "\n")+"\n")
		c.o.exits = []int{r.exit}
		banner, segs := segments(r.stdout)
		c.o.banner = normalise(w.side, homes, banner)
		for i := range lines {
			m := ""
			if i < len(segs) {
				m = segs[i]
			}
			c.o.msgs = append(c.o.msgs, normalise(w.side, homes, m))
		}
		if len(segs) > len(lines) {
			c.o.atExit = normalise(w.side, homes, strings.Join(segs[len(lines):], ""))
		}
	case lio.Daemon:
		for _, l := range lines {
			c.o.msgs = append(c.o.msgs, normalise(w.side, homes, request(t, socket, l)))
		}
	}
	// The state the lines left (saveconfig dumps configfs, not the
	// daemon's tree).
	state := filepath.Join(w.dir, "state-"+w.name, "saveconfig.json")
	if out := request(t, w.socket, "saveconfig "+state); !strings.Contains(out, "Configuration saved to") {
		t.Fatalf("%s: saveconfig %s after the row: %q", w.name, state, out)
	}
	c.o.saved = savedState(t, state)
}

// savedState reads a saveconfig.json through lio.Parse and writes it back
// with the LUN aliases (random on both sides) blanked.
func savedState(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := lio.Parse(data)
	if err != nil {
		t.Fatalf("lio.Parse(%s): %v", path, err)
	}
	for ti := range cfg.Targets {
		for gi := range cfg.Targets[ti].TPGs {
			for li := range cfg.Targets[ti].TPGs[gi].LUNs {
				cfg.Targets[ti].TPGs[gi].LUNs[li].Alias = "<random>"
			}
		}
	}
	out, err := lio.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// expect checks the row's own expectations on one side.
func expect(t *testing.T, c *runContext) {
	t.Helper()
	r, o, who := c.row, c.o, c.w.name+" targetcli, "+string(c.mode)
	n := len(r.lines)
	if r.ops != nil {
		n = len(r.ops)
	}
	exitOf := func(i int) int {
		if i < len(r.exits) {
			return r.exits[i]
		}
		return 0
	}
	crashAt := -1
	if r.crash {
		for i := range n {
			if exitOf(i) == 1 {
				crashAt = i
				break
			}
		}
	}
	switch {
	case c.mode == lio.OneShot:
		// Driver rows: one process per op, then saveconfig.
		for i := range n {
			if i < len(o.exits) && o.exits[i] != exitOf(i) {
				t.Errorf("%s: %s exited %d, want %d", who, what(c, i), o.exits[i], exitOf(i))
			}
		}
	case c.mode == lio.Batch && len(o.exits) > 0:
		want := r.batchExit
		if crashAt >= 0 {
			want = 1
		}
		if o.exits[0] != want {
			t.Errorf("%s: the batch process exited %d, want %d", who, o.exits[0], want)
		}
	}
	for i, m := range r.msgs {
		if m == "" || c.mode == lio.Batch && crashAt >= 0 && i > crashAt {
			continue
		}
		m = c.w.expand(m)
		if i >= len(o.msgs) || !strings.Contains(o.msgs[i], m) {
			got := "<none>"
			if i < len(o.msgs) {
				got = o.msgs[i]
			}
			t.Errorf("%s: the message for %s is %q; want it to contain %q", who, what(c, i), got, m)
		}
	}
	for i, want := range r.want {
		if i >= len(o.outcomes) {
			t.Errorf("%s: no result for op %d", who, i)
			continue
		}
		if o.outcomes[i] != want {
			t.Errorf("%s: the driver judged %s %v (err %s), want %v", who, what(c, i), o.outcomes[i], o.errs[i], want)
		}
	}
	if r.check != nil {
		r.check(t, c)
	}
}

func what(c *runContext, i int) string {
	if c.row.ops != nil {
		return fmt.Sprintf("op %d (%s)", i, c.row.ops[i].Kind)
	}
	return fmt.Sprintf("%q", c.row.lines[i])
}

// agree fails where real and simulated targetcli differ.
func agree(t *testing.T, real, simu *runContext) {
	t.Helper()
	a, b := real.o, simu.o
	cmp := func(what string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			t.Errorf("%s: %s differ:\n real: %q\n  sim: %q", real.mode, what, fmt.Sprint(x), fmt.Sprint(y))
		}
	}
	cmp("exit statuses", a.exits, b.exits)
	for i := range max(len(a.msgs), len(b.msgs)) {
		cmp(fmt.Sprintf("messages for %s", what(real, i)), at(a.msgs, i), at(b.msgs, i))
	}
	cmp("batch banners", a.banner, b.banner)
	cmp("batch output at exit", a.atExit, b.atExit)
	cmp("driver outcomes", a.outcomes, b.outcomes)
	for i := range max(len(a.errs), len(b.errs)) {
		cmp(fmt.Sprintf("driver errors for %s", what(real, i)), at(a.errs, i), at(b.errs, i))
	}
	cmp("Apply failed", a.applyErr != nil, b.applyErr != nil)
	cmp("commands the driver sent", a.sent, b.sent)
	if a.saved != b.saved {
		t.Errorf("%s: saveconfig.json differs (through lio.Parse):\n%s", real.mode, lineDiff(a.saved, b.saved))
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "<none>"
}

// lineDiff shows where two texts part, with some context.
func lineDiff(real, simu string) string {
	x, y := strings.Split(real, "\n"), strings.Split(simu, "\n")
	i := 0
	for i < len(x) && i < len(y) && x[i] == y[i] {
		i++
	}
	from := max(0, i-4)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d\n--- real\n", i+1)
	b.WriteString(strings.Join(x[from:min(len(x), i+12)], "\n"))
	b.WriteString("\n--- sim\n")
	b.WriteString(strings.Join(y[from:min(len(y), i+12)], "\n"))
	return b.String()
}
