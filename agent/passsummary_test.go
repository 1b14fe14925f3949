package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/projector"
)

// lines splits what the agent logged into lines.
func lines(log *testutil.SyncBuffer) []string {
	return strings.Split(strings.TrimSpace(log.String()), "\n")
}

var logfmtField = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// summaries returns the fields of every FullPassSummary line of log.
func summaries(log *testutil.SyncBuffer) []map[string]string {
	var out []map[string]string
	for _, l := range lines(log) {
		if !strings.Contains(l, `msg="`+FullPassSummary+`"`) {
			continue
		}
		f := map[string]string{}
		for _, m := range logfmtField.FindAllStringSubmatch(l, -1) {
			f[m[1]] = strings.Trim(m[2], `"`)
		}
		out = append(out, f)
	}
	return out
}

// TestFullPassSummary: the daemon logs exactly one FullPassSummary line per
// full pass (none for an event's pass), with its counts, at info when the
// pass succeeded or the gate is closed and at error when it failed: the line
// a runbook greps instead of the old agent's "START SCAN".
func TestFullPassSummary(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	if _, err := s.PutPE(ctx, "CPE-summary-a.squashfs", []byte("pe image a")); err != nil {
		t.Fatal(err)
	}
	// The gate is open while dir/g/open exists, closed while it is missing,
	// and cannot answer while dir/g is a regular file (ENOTDIR).
	dir := t.TempDir()
	g := filepath.Join(dir, "g")
	if err := os.MkdirAll(g, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g, "open"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	passes := make(chan string, 16)
	log := &testutil.SyncBuffer{}
	a, _ := newAgentLogged(t, s, Options{OnPass: func(trigger string, _ *projector.Report, _ error) { passes <- trigger }}, log,
		"SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_GATE=file:"+filepath.Join(g, "open"))
	runAgent(t, a)
	// waitFor takes passes until one whose trigger starts with prefix,
	// and counts the full ones (those the test or the timer asked for).
	full := 0
	waitFor := func(prefix string) {
		t.Helper()
		for {
			select {
			case tr := <-passes:
				switch tr {
				case "start", "resync timer", "summary test", "closed gate", "broken gate":
					full++
				}
				if strings.HasPrefix(tr, prefix) {
					return
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no pass triggered by %q after 30s", prefix)
			}
		}
	}
	check := func(step string, want map[string]string) {
		t.Helper()
		got := summaries(log)
		if len(got) != full {
			t.Fatalf("%s: %d %q lines after %d full passes, want one each:\n%s", step, len(got), FullPassSummary, full, strings.Join(lines(log), "\n"))
		}
		last := got[len(got)-1]
		for k, v := range want {
			if last[k] != v {
				t.Errorf("%s: %s=%q, want %q (line %v)", step, k, last[k], v, last)
			}
		}
		if _, err := time.ParseDuration(last["duration"]); err != nil {
			t.Errorf("%s: duration=%q: %v", step, last["duration"], err)
		}
	}

	waitFor("start")
	check("start", map[string]string{"level": "INFO", "outcome": "success", "trigger": "start",
		"desired": "1", "current": "1", "created": "1", "removed": "0", "held": "0", "failed": "0", "pending": "0", "rejected": "0"})

	// An event's pass logs no summary.
	if _, err := s.PutPE(ctx, "CPE-summary-b.squashfs", []byte("pe image b")); err != nil {
		t.Fatal(err)
	}
	waitFor("s3-object created")
	check("after an event's pass", nil)

	a.Resync("summary test")
	waitFor("summary test")
	check("resync", map[string]string{"level": "INFO", "outcome": "success", "trigger": "summary test",
		"desired": "2", "current": "2", "created": "0", "removed": "0", "held": "0", "failed": "0"})

	// Closed: nothing projected, still one line per full pass.
	if err := os.Remove(filepath.Join(g, "open")); err != nil {
		t.Fatal(err)
	}
	a.Resync("closed gate")
	waitFor("closed gate")
	check("closed gate", map[string]string{"level": "INFO", "outcome": "gate_closed", "trigger": "closed gate"})
	gate := `
# HELP sbps_marshal_gate 1 for the node gate's latest answer (GATE): open (serving images), closed (tpg1 disabled, nothing projected), unknown (not asked yet or no answer); the other states 0.
# TYPE sbps_marshal_gate gauge
sbps_marshal_gate{state="closed"} 1
sbps_marshal_gate{state="open"} 0
sbps_marshal_gate{state="unknown"} 0
sbps_marshal_resync_interval_seconds 3600
`
	gate = strings.Replace(gate, "sbps_marshal_resync_interval_seconds", "# HELP sbps_marshal_resync_interval_seconds RESYNC_INTERVAL: the period of full passes; 0 until the agent sets it.\n# TYPE sbps_marshal_resync_interval_seconds gauge\nsbps_marshal_resync_interval_seconds", 1)
	if err := promtestutil.GatherAndCompare(a.Metrics().Registry(), strings.NewReader(gate), "sbps_marshal_gate", "sbps_marshal_resync_interval_seconds"); err != nil {
		t.Errorf("closed gate: %v", err)
	}

	// The gate cannot answer: the pass fails, at error priority, with why
	// (last: a failed pass is retried after 1 s, 2 s, ...).
	if err := os.RemoveAll(g); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.Resync("broken gate")
	waitFor("broken gate")
	check("failed pass", map[string]string{"level": "ERROR", "outcome": "error", "trigger": "broken gate"})
	if got := summaries(log); !strings.Contains(got[len(got)-1]["err"], "node gate") || got[len(got)-1]["desired"] != "" {
		t.Errorf("failed pass: %v, want the gate's error and no counts", got[len(got)-1])
	}
	for _, l := range lines(log) {
		if strings.Contains(l, FullPassSummary) {
			t.Log(l)
		}
	}
}
