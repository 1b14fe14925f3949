package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The real-kernel report: -kernel-bench reads the output of `make
// bench-kernel` (e2e/lio's BenchmarkModes and e2e/initiator's
// TestComputeNodeView, inside User-Mode Linux) and writes
// docs/BENCHMARKS-KERNEL.md from it alone. It is a file of its own so that
// `make bench`, which rewrites docs/BENCHMARKS.md, never erases it.

// kernelRun is what one output file holds.
type kernelRun struct {
	file     string
	command  []string // "kernel-bench: command" lines (the Makefile's)
	machine  string
	loads    []string // host load before and after
	cpu      string
	booted   []string // "uml: guest booted in …" lines
	rows     map[int]map[string]kernelRow
	sizes    []int
	facts    []string                  // seed and notrun lines
	failures map[int]map[string]string // row -> why it failed
	stopped  string                    // why the run was stopped before its end, if it was
	measured []string                  // e2e/initiator's MEASURED lines
	elapsed  []string                  // go test's "ok pkg 123s"
	failed   bool
}

// kernelRow is one BenchmarkModes sub-benchmark: its ns/op and metrics.
type kernelRow map[string]float64

var (
	benchLine    = regexp.MustCompile(`^BenchmarkModes/luns=(\d+)/([a-z]+/[a-z0-9]+)(?:-\d+)?\s+\d+\s+(.*)$`)
	measuredLine = regexp.MustCompile(`MEASURED (.*): ([0-9.]+(?:ms|s|m[0-9.]+s))\s*$`)
	failLine     = regexp.MustCompile(`^--- FAIL: BenchmarkModes/luns=(\d+)/([a-z]+/[a-z0-9]+)$`)
	okLine       = regexp.MustCompile(`^(ok|FAIL)\s+(\S+)\s+([0-9.]+s)`)
)

// parseKernelRun reads one output file.
func parseKernelRun(name string, data string) (*kernelRun, error) {
	r := &kernelRun{file: name, rows: map[int]map[string]kernelRow{}, failures: map[int]map[string]string{}}
	lines := strings.Split(data, "\n")
	for i, l := range lines {
		l = strings.TrimRight(l, "\r ")
		if m := failLine.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			size, _ := strconv.Atoi(m[1])
			why := strings.TrimSpace(lines[i+1])
			if _, rest, ok := strings.Cut(why, ".go:"); ok {
				if _, rest, ok = strings.Cut(rest, ": "); ok {
					why = rest
				}
			}
			if j := strings.Index(why, ": targetcli shell version"); j >= 0 {
				why = why[:j]
			}
			if r.failures[size] == nil {
				r.failures[size] = map[string]string{}
			}
			r.failures[size][m[2]] = why
			if r.rows[size] == nil {
				r.rows[size] = map[string]kernelRow{}
				r.sizes = append(r.sizes, size)
			}
			continue
		}
		if m := benchLine.FindStringSubmatch(l); m != nil {
			size, _ := strconv.Atoi(m[1])
			row := kernelRow{}
			f := strings.Fields(m[3])
			for i := 0; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %q: %v", name, l, err)
				}
				row[f[i+1]] = v
			}
			if r.rows[size] == nil {
				r.rows[size] = map[string]kernelRow{}
				r.sizes = append(r.sizes, size)
			}
			r.rows[size][m[2]] = row
			continue
		}
		if m := measuredLine.FindStringSubmatch(l); m != nil {
			r.measured = append(r.measured, m[1]+": "+m[2])
			continue
		}
		if m := okLine.FindStringSubmatch(l); m != nil {
			r.elapsed = append(r.elapsed, fmt.Sprintf("%s %s in %s", m[2], map[string]string{"ok": "passed", "FAIL": "FAILED"}[m[1]], m[3]))
			r.failed = r.failed || m[1] == "FAIL"
			continue
		}
		switch {
		case strings.HasPrefix(l, "cpu: "):
			r.cpu = strings.TrimPrefix(l, "cpu: ")
		case strings.HasPrefix(l, "uml: guest booted"):
			r.booted = append(r.booted, strings.TrimPrefix(l, "uml: "))
		case strings.HasPrefix(l, "kernel-bench: command "):
			r.command = append(r.command, strings.TrimPrefix(l, "kernel-bench: command "))
		case strings.HasPrefix(l, "kernel-bench: machine "):
			r.machine = strings.TrimPrefix(l, "kernel-bench: machine ")
		case strings.HasPrefix(l, "kernel-bench: host-load-"):
			when, load, _ := strings.Cut(strings.TrimPrefix(l, "kernel-bench: host-load-"), " ")
			if i := strings.Index(load, "load average:"); i >= 0 {
				load = strings.TrimSpace(load[i+len("load average:"):])
			}
			r.loads = append(r.loads, when+" "+load)
		case strings.HasPrefix(l, "kernel-bench: stopped "):
			r.stopped = strings.TrimPrefix(l, "kernel-bench: stopped ")
		case strings.HasPrefix(l, "kernel-bench: seed "), strings.HasPrefix(l, "kernel-bench: notrun "):
			if !slices.Contains(r.facts, l) {
				r.facts = append(r.facts, l)
			}
		}
	}
	if len(r.rows) == 0 && len(r.measured) == 0 {
		return nil, fmt.Errorf("%s: no BenchmarkModes result and no MEASURED line: not the output of make bench-kernel", name)
	}
	return r, nil
}

// secs formats a duration given in ns.
func secs(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.2f s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.1f ms", ns/1e6)
	default:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	}
}

// kernelModes is the order of the modes in the tables.
var kernelModes = []string{"oneshot", "batch", "daemon"}

// renderKernel writes docs/BENCHMARKS-KERNEL.md from runs.
func renderKernel(files []string, runs []*kernelRun) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks on the real kernel LIO (User-Mode Linux)\n\n")
	w("Generated by `sbps-marshal-bench -kernel-bench %s` from the output of the runs below; every figure is from those files. `make bench-kernel` runs both sizes and the initiator test into one file (docs/bench-kernel/kernel.txt) and regenerates this page from it; `make bench-kernel-doc` regenerates it from the committed runs (`KERNEL_BENCH_FILES`). Issue 18, part 4. The simulator's benchmarks are in [BENCHMARKS.md](BENCHMARKS.md).\n\n", strings.Join(files, ","))
	w("**Read the ratios, not the absolute times.** These run on Debian's User-Mode Linux kernel (package `uml`): the real 6.1 LIO (configfs, target_core_file, iscsi_target_mod), real targetcli-fb 2.1.53, rtslib-fb 2.1.75, targetclid and open-iscsi, but every system call and page fault of a guest process is a round trip through the host's ptrace, so each targetcli process (Python start-up, configfs walk) costs seconds where a real node takes a fraction of one. What carries over to a real node is how the modes compare *within one run*: the *vs batch* columns, and the process and request counts.\n\n")
	w("A change is one new image: a fileio backstore and its LUN, as the agent projects it (`lio.Driver.Apply`: the commands, `saveconfig`, and the read-back of saveconfig.json that judges every op). Before each size the node's LIO is cleared, provisioned as CSM's playbook does, and seeded in one Python process of rtslib-fb making the calls `targetctl restore` makes (`targetctl restore` itself scans every storage object for each LUN, quadratic in their number: a first attempt at 1,000 LUNs through it was stopped unfinished); each measured apply is undone, untimed, before the next. targetclid runs last, started on the seeded LIO. The saveconfig.json reads are `lio.SavedFile` on the file real targetcli wrote at that size (median of 7): the first full parse, and the read-back of the same file with one new backstore and LUN (the first one-change apply's file) by a SavedFile that had read the one before.\n\n")
	for i, r := range runs {
		w("## Run %d (`%s`)\n\n", i+1, r.file)
		for _, c := range r.command {
			w("    %s\n", c)
		}
		if len(r.command) > 0 {
			w("\n")
		}
		if r.machine != "" {
			w("- Machine: %s", r.machine)
			if r.cpu != "" {
				w("; Go reports `cpu: %s`", r.cpu)
			}
			w("\n")
		}
		if len(r.loads) > 0 {
			w("- Host load average (1, 5, 15 min): %s. The machine has 2 cores shared with other work; a load above 2 stretches every figure of the run alike.\n", strings.Join(r.loads, "; "))
		}
		for _, e := range r.booted {
			w("- Guest: %s\n", e)
		}
		for _, e := range r.elapsed {
			w("- `go test`: %s\n", e)
		}
		if r.failed {
			w("- **The run failed**: its figures are partial.\n")
		}
		if r.stopped != "" {
			w("- Stopped before its end: %s\n", r.stopped)
		}
		w("\n")
		for _, size := range r.sizes {
			renderKernelSize(w, size, r.rows[size], r.failures[size], r.facts, r.failed)
		}
		if len(r.measured) > 0 {
			w("### Upload to LUN, delete to no LUN (e2e/initiator `TestComputeNodeView`)\n\n")
			w("The real `sbps-marshal run` in the guest (real NATS, versitygw as S3, the IMS server; TARGETCLI_MODE's default, batch), with a few LUNs present and an open-iscsi initiator on loopback (logged in where the line says so); one image each, measured once:\n\n| what | time |\n|---|---|\n")
			for _, m := range r.measured {
				what, d, _ := strings.Cut(m, ": ")
				w("| %s | %s |\n", what, d)
			}
			w("\n")
		}
	}
	w("%s", kernelNotes(runs))
	return b.String()
}

func renderKernelSize(w func(string, ...any), size int, rows map[string]kernelRow, failures map[string]string, facts []string, failed bool) {
	w("### %d LUNs present\n\n", size)
	for _, f := range facts {
		if rest, ok := strings.CutPrefix(f, fmt.Sprintf("kernel-bench: seed luns=%d ", size)); ok {
			if _, v, ok := strings.Cut(rest, "="); ok {
				rest = v
			}
			w("Seeded (one rtslib-fb process, then saveconfig) in %s.\n\n", rest)
		}
	}
	w("| mode | 1 change | vs batch | processes, requests | 50 changes | vs batch | per change | processes, requests |\n|---|---|---|---|---|---|---|---|\n")
	for _, mode := range kernelModes {
		w("| %s |", map[string]string{"oneshot": "oneshot", "batch": "batch", "daemon": "targetclid (daemon)"}[mode])
		for _, n := range []int{1, 50} {
			row, ok := rows[fmt.Sprintf("%s/%d", mode, n)]
			base, bok := rows[fmt.Sprintf("batch/%d", n)]
			if !ok {
				if why, bad := failures[fmt.Sprintf("%s/%d", mode, n)]; bad {
					w(" failed: %s | | |", why)
				} else {
					w(" %s | | |", notRun(failed, size, fmt.Sprintf("%s/%d", mode, n), facts))
				}
				if n == 50 {
					w(" |")
				}
				continue
			}
			vs := ""
			if bok && base["ns/op"] > 0 {
				vs = fmt.Sprintf("%.2f×", row["ns/op"]/base["ns/op"])
			}
			w(" %s | %s |", secs(row["ns/op"]), vs)
			if n == 50 {
				w(" %s |", secs(row["ns/op"]/float64(n)))
			}
			w(" %.0f, %.0f |", row["procs/op"], row["requests/op"])
		}
		w("\n")
	}
	w("\n")
	for _, f := range facts {
		if rest, ok := strings.CutPrefix(f, fmt.Sprintf("kernel-bench: notrun luns=%d ", size)); ok {
			w("- Not run: %s (excluded by `-modes.skip`: too slow for the run's time budget in UML).\n", rest)
		}
	}
	full, fok := rows["read/full"]
	inc, iok := rows["read/incremental"]
	if fok || iok {
		w("\nThe agent's read of saveconfig.json (`lio.SavedFile`, in the guest):\n\n| read | time | file |\n|---|---|---|\n")
		if fok {
			w("| first full parse | %s | %.0f KB |\n", secs(full["ns/op"]), full["file-bytes"]/1e3)
		}
		if iok {
			w("| read-back of one new LUN (incremental) | %s | %.0f KB |\n", secs(inc["ns/op"]), inc["file-bytes"]/1e3)
		}
	}
	w("\n")
}

// kernelFlags handles -kernel-bench: it writes the kernel report and
// reports whether it did (main then returns).
func kernelReport(list, out string) error {
	var files []string
	var runs []*kernelRun
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		r, err := parseKernelRun(f, string(data))
		if err != nil {
			return err
		}
		files = append(files, f)
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		return fmt.Errorf("-kernel-bench: no file")
	}
	report := renderKernel(files, runs)
	fmt.Print(report)
	if out == "" {
		return nil
	}
	return os.WriteFile(out, []byte(report), 0o644)
}

// kernelNotes is the choice of TARGETCLI_MODE's default, with the ratios
// it rests on computed from runs.
func kernelNotes(runs []*kernelRun) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## TARGETCLI_MODE's default\n\n")
	w("The ratios these runs give (each against batch in the same run, lower is faster):\n\n")
	for _, r := range runs {
		for _, size := range r.sizes {
			rows := r.rows[size]
			var parts []string
			for _, mode := range []string{"oneshot", "daemon"} {
				for _, n := range []int{1, 50} {
					row, ok := rows[fmt.Sprintf("%s/%d", mode, n)]
					base, bok := rows[fmt.Sprintf("batch/%d", n)]
					if ok && bok && base["ns/op"] > 0 {
						parts = append(parts, fmt.Sprintf("%s × %d: %.2f×", mode, n, row["ns/op"]/base["ns/op"]))
					}
				}
			}
			if len(parts) > 0 {
				w("- %d LUNs: %s.\n", size, strings.Join(parts, "; "))
			}
		}
	}
	w("\n%s", modeChoice)
	return b.String()
}

// modeChoice says why TARGETCLI_MODE's default is what it is. It names no
// figure: the ratios it rests on are computed above it from the runs.
const modeChoice = `**The default stays ` + "`batch`" + `.**

- **oneshot** starts one targetcli process per command and one for saveconfig (2N+1 per apply of N changes), and every start loads Python and walks every LIO object in configfs: it is the slowest mode in every row, and the gap widens with the size of the change. With more LUNs present the one-change ratios close in, because what every mode pays once per apply (rtslib's walk of configfs, the saveconfig of every object) grows with the LUNs and outweighs the process starts. It stays for the old agent's behaviour and for debugging, never as a default.
- **batch** starts one process per apply whatever N is, so its cost is one start, the commands, and one saveconfig: it needs nothing running beside the agent and does not depend on anyone else's view of LIO.
- **targetclid** starts no process, yet the ratios above do not put it ahead of batch in every row, and where it is ahead the gain is a fraction of the apply, not a multiple. So a process start is not what an apply mostly costs: rtslib's work in configfs and the saveconfig of every object are, and targetclid pays them as batch does. Against that gain it adds a service that must be running (a dead or wedged targetclid stops every apply) and an object tree of its own, which goes stale when anything else changes LIO (CSM's playbook, an operator's targetcli). So ` + "`TARGETCLI_MODE=daemon`" + ` stays an option for nodes that run targetclid and where only the agent changes LIO, not the default.
- Numbers that would change this: targetclid ahead of batch by a multiple, in every row, on real hardware (where a process start may be a larger share of an apply than in UML).
`

// notRun is a missing row's cell: skipped on purpose (a notrun line), or
// not reached in a run that failed or was stopped.
func notRun(failed bool, size int, row string, facts []string) string {
	for _, f := range facts {
		if strings.HasPrefix(f, fmt.Sprintf("kernel-bench: notrun luns=%d %s", size, row)) {
			return "not run (below)"
		}
	}
	if failed {
		return "not reached"
	}
	return "not run"
}
