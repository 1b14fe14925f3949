package agent

// docs/RELIABILITY.md is generated from the reliability tests' own rows.
//
// Each reliability test (TestReliability*, TestKill*) records one row per
// scenario: the fault, the expected outcome, what it observed (facts it
// measured, such as "saveconfig.json LUNs unchanged: true") and how many
// LUNs its guard saw wrongly removed, plus timings from that run. Run with
// -update, a test writes its rows to testdata/reliability/<Test>.json and
// TestReliabilityDoc rewrites docs/RELIABILITY.md from all of them:
//
//	go test -count=1 -run 'Reliab|Kill' ./agent/ -update
//
// A normal run fails when a test observes something other than its recorded
// row (timings aside), or when docs/RELIABILITY.md differs from what the
// recorded rows generate: the table cannot drift from the tests.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"testing"
)

var update = flag.Bool("update", false, "record the reliability tests' rows in testdata/reliability/ and rewrite docs/RELIABILITY.md from them")

const (
	relRowsDir = "testdata/reliability"
	relDocPath = "../docs/RELIABILITY.md"
)

// relRow is one row of docs/RELIABILITY.md as a test observed it.
type relRow struct {
	Test     string   `json:"test"` // t.Name() of the (sub)test that observed it
	Scenario string   `json:"scenario"`
	Expected string   `json:"expected"`
	Observed []string `json:"observed"`                       // facts the test measured; compared on every run
	Removed  *int     `json:"luns_wrongly_removed,omitempty"` // nil: the test has no LUN guard
	Failed   bool     `json:"failed,omitempty"`
	// Measured holds timings and counts of the recording run; they vary
	// from run to run and are not compared.
	Measured []string `json:"measured,omitempty"`

	mu gosync.Mutex
	t  *testing.T
}

// saw records a fact the test measured (deterministic: compared with the
// recorded row on every run).
func (r *relRow) saw(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Observed = append(r.Observed, fmt.Sprintf(format, args...))
}

// measured records a timing or count of this run (not compared).
func (r *relRow) measured(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Measured = append(r.Measured, fmt.Sprintf(format, args...))
}

// guard records how many LUNs g has seen wrongly removed so far.
func (r *relRow) guard(g *relLUNGuard) {
	g.mu.Lock()
	n := len(g.removed)
	g.mu.Unlock()
	r.mu.Lock()
	r.Removed = &n
	r.mu.Unlock()
}

// relRows collects a top-level test's rows and, when it ends, records them
// (-update) or compares them with the recorded ones.
type relRows struct {
	mu   gosync.Mutex
	top  string
	rows []*relRow
}

// relTable starts the rows of top-level test t.
func relTable(t *testing.T) *relRows {
	t.Helper()
	tb := &relRows{top: t.Name()}
	t.Cleanup(func() { tb.finish(t) })
	return tb
}

// row starts a row for (sub)test t.
func (tb *relRows) row(t *testing.T, scenario, expected string) *relRow {
	r := &relRow{Test: t.Name(), Scenario: scenario, Expected: expected, t: t}
	tb.mu.Lock()
	tb.rows = append(tb.rows, r)
	tb.mu.Unlock()
	return r
}

func (tb *relRows) finish(t *testing.T) {
	t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, r := range tb.rows {
		r.Failed = r.t.Failed()
	}
	path := filepath.Join(relRowsDir, tb.top+".json")
	if *update {
		data, err := json.MarshalIndent(tb.rows, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(relRowsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if t.Failed() {
		return // the failure says more than a row comparison would
	}
	recorded, err := relReadRows(path)
	if err != nil {
		t.Errorf("%v; record the rows with: go test -count=1 -run '^%s$' ./agent/ -update", err, tb.top)
		return
	}
	got := relRowKeys(tb.rows)
	want := relRowKeys(recorded)
	if !slices.Equal(got, want) {
		t.Errorf("%s observed rows that differ from %s (docs/RELIABILITY.md is generated from it):\n got: %s\nwant: %s\nIf the change is intended, record it: go test -count=1 -run '^%s$' ./agent/ -update, then go test -run TestReliabilityDoc ./agent/ -update",
			tb.top, path, strings.Join(got, "\n      "), strings.Join(want, "\n      "), tb.top)
	}
}

// relRowKeys is what a normal run compares: everything but the timings.
func relRowKeys(rows []*relRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, fmt.Sprintf("%s | %s | %s | %s | removed=%s failed=%v", r.Test, r.Scenario, r.Expected, strings.Join(r.Observed, "; "), relRemoved(r), r.Failed))
	}
	return out
}

// relRemoved is the LUNs-wrongly-removed cell.
func relRemoved(r *relRow) string {
	if r.Removed == nil {
		return "not watched"
	}
	return fmt.Sprint(*r.Removed)
}

func relReadRows(path string) ([]*relRow, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the recorded reliability rows: %w", err)
	}
	var rows []*relRow
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rows, nil
}

// relDoc generates docs/RELIABILITY.md from the recorded rows.
func relDoc(files map[string][]*relRow) []byte {
	var b bytes.Buffer
	b.WriteString(relDocHead)
	b.WriteString("| Scenario | Test | Expected outcome | Observed outcome | LUNs wrongly removed | Measured in the recording run |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	for _, top := range slices.Sorted(maps.Keys(files)) {
		for _, r := range files[top] {
			observed := strings.Join(r.Observed, "; ")
			if r.Failed {
				observed = "**FAILED** (see the test's output); " + observed
			}
			if observed == "" {
				observed = "—"
			}
			measured := strings.Join(r.Measured, "; ")
			if measured == "" {
				measured = "—"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %s |\n", cell(r.Scenario), r.Test, cell(r.Expected), cell(observed), relRemoved(r), cell(measured))
		}
	}
	b.WriteString(relIssue15Section())
	b.WriteString(relDocTail)
	return b.Bytes()
}

// relNamedTest is a test function named in docs/RELIABILITY.md: Dir is its
// package's directory from the repository's root.
type relNamedTest struct{ Dir, Name string }

// relIssue15 is issue 15's eight points ("no LUN removed on partial
// information") and the tests that failed before each fix and pass now.
// relCheckNamedTests fails when one of these functions is not in its
// package's _test.go files, so the list cannot drift from the code.
var relIssue15 = []struct {
	Point string
	Tests []relNamedTest
}{
	{"S3 listing: a page with IsTruncated=true and no continuation token, or repeating the previous token, is an error, never a smaller inventory",
		[]relNamedTest{{"bucket", "TestListRefusesAListingItCannotProveComplete"}}},
	{"IMS partial listing: no LUN goes for an image a listing left out unless a GET confirmed it gone (GETs budgeted per pass, the rest held)",
		[]relNamedTest{{"projector", "TestNoLUNGoesForAnImageNotConfirmedGone"}}},
	{"The event path: only IMS's own \"not found\" says an image is gone (a gateway's 404 does not); the event path is no more willing to delete than a full pass",
		[]relNamedTest{{"ims", "TestOnlyIMSSaysAnImageIsGone"}, {"projector", "TestEventPathNoMoreWillingToDeleteThanAFullPass"}}},
	{"Kind from path: rootfs or PE is decided from what the agent recorded about the projection, not from the file's path",
		[]relNamedTest{{"projector", "TestKindFromTheProjectionNotThePath"}}},
	{"saveconfig.json removed or invalid JSON: LIO's live state saved again, not ready while it lasts",
		[]relNamedTest{{"lio", "TestGuardResavesMissingOrInvalidFile"}, {"agent", "TestLIONotRestoredKeepsSaveconfig"}}},
	{"A registry LUN index LIO already uses: indexes allocated among those free in the registry and in the TPG",
		[]relNamedTest{{"registry", "TestIndexAvoidsIndexesTheTPGUses"}, {"projector", "TestNewLUNAvoidsIndexesTheTPGUses"}}},
	{"One rootfs named by two IMS images (one etag quoted): one file, one projection, shown for both images",
		[]relNamedTest{{"projector", "TestOneFileOneProjection"}}},
	{"`sbps-marshal resync` signals only a process that holds the agent's lock, not whatever has the stale pid",
		[]relNamedTest{{"cmd/sbps-marshal", "TestResyncSignalsOnlyTheLockHolder"}}},
}

// relIssue15Section is the generated section naming issue 15's tests.
func relIssue15Section() string {
	var b strings.Builder
	b.WriteString("\n## Issue 15: no LUN removed on partial information\n\n")
	b.WriteString("Each point has a test that failed on the code before its fix and passes now. The list is\n")
	b.WriteString("checked against the code: `TestReliabilityDoc` fails when a test named here is not a test\n")
	b.WriteString("function in its package's `_test.go` files.\n\n")
	b.WriteString("| # | Point | Test(s) |\n|---|---|---|\n")
	for i, p := range relIssue15 {
		var names []string
		for _, nt := range p.Tests {
			names = append(names, fmt.Sprintf("`%s` (%s)", nt.Name, nt.Dir))
		}
		fmt.Fprintf(&b, "| %d | %s | %s |\n", i+1, strings.ReplaceAll(p.Point, "|", `\|`), strings.Join(names, ", "))
	}
	return b.String()
}

// relCheckNamedTests parses the _test.go files of each package named in
// relIssue15 (root is the repository's root) and reports every named test
// that is not a top-level func there.
func relCheckNamedTests(root string) error {
	funcs := map[string]map[string]bool{} // dir -> test funcs
	var missing []string
	for _, p := range relIssue15 {
		for _, nt := range p.Tests {
			if funcs[nt.Dir] == nil {
				funcs[nt.Dir] = map[string]bool{}
				paths, err := filepath.Glob(filepath.Join(root, nt.Dir, "*_test.go"))
				if err != nil {
					return err
				}
				fset := token.NewFileSet()
				for _, path := range paths {
					f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
					if err != nil {
						return fmt.Errorf("parse %s: %w", path, err)
					}
					for _, d := range f.Decls {
						if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
							funcs[nt.Dir][fd.Name.Name] = true
						}
					}
				}
			}
			if !funcs[nt.Dir][nt.Name] {
				missing = append(missing, fmt.Sprintf("%s.%s", nt.Dir, nt.Name))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("docs/RELIABILITY.md names tests that do not exist: %s (no such func in the package's _test.go files); fix relIssue15 in agent/reldoc_test.go, then go test -run TestReliabilityDoc ./agent/ -update", strings.Join(missing, ", "))
	}
	return nil
}

const relDocHead = `# Reliability and security evidence

<!-- Generated by TestReliabilityDoc (agent/reldoc_test.go) from agent/testdata/reliability/*.json;
do not edit. Record: go test -count=1 -run 'Reliab|Kill' ./agent/ -update -->

Every fault and bad input the reliability tests inject into real components (the rig: embedded
NATS with JetStream, versitygw behind a fault-injecting proxy (` + "`rig.FaultProxy`" + `), the IMS server
` + "`ims/imstest`" + `, the SPIFFE Workload API ` + "`svid/svidtest`" + `, the targetcli simulator ` + "`lio/sim`" + `),
and what each test observed.

This table is generated. Each reliability test (` + "`TestReliability*`" + `, ` + "`TestKill*`" + `) records its
rows (scenario, expected outcome, the facts it observed, LUNs wrongly removed, timings) in
` + "`agent/testdata/reliability/<Test>.json`" + ` when run with ` + "`-update`" + `, and
` + "`TestReliabilityDoc`" + ` writes this file from them. A normal run fails when a test observes
something other than its recorded row (timings aside), when a reliability test has no recorded
rows, or when this file differs from what the rows generate.

"LUNs wrongly removed" is counted by a guard that samples the simulated kernel state (what
initiators see) every 5 ms during the test and records every watched LUN that is ever missing its
backstore or its LUN ("not watched": the test checks something else, such as bad input, and has
no guard). The last column holds timings of the run that recorded the row; they vary
from run to run and are not compared.

Run them: ` + "`go test -count=1 -run 'Reliab|Kill' ./agent/`" + ` (about 3 minutes on 2 cores); record and
regenerate: the same with ` + "`-update`" + `.

`

const relDocTail = `
## Fuzzing and unit tests of bad input

These run in their packages, not in this table: ` + "`FuzzParseManifest`" + `, ` + "`FuzzDecodeListing`" + ` (ims),
` + "`FuzzDecode`" + ` (events/imsevent, events/s3event), ` + "`FuzzCommandLine`" + ` (lio), ` + "`FuzzInventoryKeys`" + `
(projector), ` + "`FuzzLoadEnv`" + ` (config), ` + "`FuzzParseCredentials`" + ` (bucket). ` + "`make fuzz FUZZTIME=5m`" + `
runs them all.

## Soak

` + "`make soak`" + ` (SOAK_DURATION, default 3m) runs the agent in-process on the rig with a stream of
operations (PE uploads and deletes, IMS images added, tagged, untagged, deleted, with the IMS change
events the bridge would publish) and a random fault every few seconds: NATS restarts, IMS 503s,
targetcli failures and deaths, and S3 answering the agent 500 or 503, slower than its S3_TIMEOUT,
or resetting connections (` + "`rig.FaultProxy`" + ` in front of versitygw). At the end it requires the
exact desired state and zero LUNs wrongly removed, and prints its figures; it fails otherwise. Its
results are not kept here: run it to see them.

## Known gaps

- The targetcli simulator has no ` + "`set attribute`" + `; the writable-TPG test edits saveconfig.json, which
  is what the agent plans from.
- NATS ` + "`max_payload`" + ` (1 MB) stops event bodies larger than that before the agent, so a 10 MB event
  is only testable against the decoder (fuzz and unit tests), not over the bus.
`

// TestMain regenerates docs/RELIABILITY.md after the tests ran with
// -update, so that rows recorded by this run are in it.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if *update && code == 0 {
		files, err := relReadAll()
		if err == nil {
			err = relCheckNamedTests("..")
		}
		if err == nil {
			err = os.WriteFile(relDocPath, relDoc(files), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "regenerate %s: %v\n", relDocPath, err)
			code = 1
		}
	}
	os.Exit(code)
}

// relReadAll reads every recorded row file: top-level test name -> rows.
func relReadAll() (map[string][]*relRow, error) {
	paths, err := filepath.Glob(filepath.Join(relRowsDir, "*.json"))
	if err != nil {
		return nil, err
	}
	files := map[string][]*relRow{}
	for _, p := range paths {
		rows, err := relReadRows(p)
		if err != nil {
			return nil, err
		}
		files[strings.TrimSuffix(filepath.Base(p), ".json")] = rows
	}
	return files, nil
}

// TestReliabilityDoc checks that docs/RELIABILITY.md is what the recorded
// rows generate, that every reliability test (TestReliability*, TestKill*)
// has recorded rows, and that every row file belongs to a test that exists.
func TestReliabilityDoc(t *testing.T) {
	if *update {
		// Rows are being recorded, possibly after this test; TestMain
		// writes the file once every test has run.
		return
	}
	if err := relCheckNamedTests(".."); err != nil {
		t.Error(err)
	}
	files, err := relReadAll()
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]string{} // reliability test name -> file
	sources, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sources {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			name, ok := strings.CutPrefix(line, "func ")
			if !ok || !strings.HasPrefix(name, "TestReliability") && !strings.HasPrefix(name, "TestKill") {
				continue
			}
			if i := strings.IndexByte(name, '('); i > 0 && name[:i] != "TestReliabilityDoc" {
				defined[name[:i]] = p
			}
		}
	}
	if len(defined) == 0 {
		t.Fatal("found no TestReliability* or TestKill* test in agent/*_test.go")
	}
	for name, file := range defined {
		if len(files[name]) == 0 {
			t.Errorf("%s (%s) has no recorded rows in %s; record them: go test -count=1 -run '^%s$' ./agent/ -update", name, file, relRowsDir, name)
		}
	}
	for name := range files {
		if _, ok := defined[name]; !ok {
			t.Errorf("%s/%s.json belongs to no test in agent/*_test.go; remove it and regenerate: go test -run TestReliabilityDoc ./agent/ -update", relRowsDir, name)
		}
	}
	want := relDoc(files)
	got, err := os.ReadFile(relDocPath)
	if err != nil {
		t.Fatalf("%v; generate it: go test -run TestReliabilityDoc ./agent/ -update", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Errorf("docs/RELIABILITY.md is not what the tests' recorded rows generate (first difference at line %d):\n have: %s\n want: %s\nIt is generated, not edited: go test -run TestReliabilityDoc ./agent/ -update", i+1, line(gl), line(wl))
	}
}

// TestDocNamesOnlyTestsThatExist shows that relCheckNamedTests
// catches a name in relIssue15 that is not a test function in its package.
func TestDocNamesOnlyTestsThatExist(t *testing.T) {
	saved := relIssue15
	t.Cleanup(func() { relIssue15 = saved })
	relIssue15 = append(slices.Clone(saved), struct {
		Point string
		Tests []relNamedTest
	}{"renamed", []relNamedTest{{"projector", "TestNoSuchTestAnywhere"}}})
	err := relCheckNamedTests("..")
	if err == nil || !strings.Contains(err.Error(), "projector.TestNoSuchTestAnywhere") {
		t.Fatalf("relCheckNamedTests with a missing name = %v, want an error naming projector.TestNoSuchTestAnywhere", err)
	}
}
