//go:build kernel

package lio

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// Flags of BenchmarkModes (the guest's test binary gets the host's flags).
var (
	modesLUNs = flag.String("modes.luns", "100,1000", "BenchmarkModes: comma-separated numbers of LUNs present before each measured apply")
	modesSkip = flag.String("modes.skip", "1000/oneshot/50,1000/batch/50,1000/daemon/50", "BenchmarkModes: comma-separated LUNS/MODE/CHANGES rows not to run (too slow in UML); each is reported as not run, with the estimate from the same run")
)

// BenchmarkModes (issue 18, part 4) measures, on the real kernel LIO in
// User-Mode Linux, for each size in -modes.luns (LUNs present, seeded in
// one rtslib-fb process: seedLUNs):
//
//   - one apply of 1 and of 50 changes (a change = a backstore and its LUN,
//     as the agent projects a new image, with the driver's saveconfig and
//     read-back) in oneshot, batch and targetclid (daemon) modes, each
//     undone, untimed, before the next: sub-benchmarks MODE/CHANGES;
//   - the agent's read of that saveconfig.json (the file real targetcli
//     wrote) through lio.SavedFile: the first full parse (read/full) and
//     the read-back of the file with one new LUN (read/incremental), the
//     median of readReps reads each.
//
// Rows named in -modes.skip are not run; the benchmark prints a
// "kernel-bench: notrun" line for each, for one-shot with the estimate the
// same run gives (its one-change apply × (2·CHANGES+1)/3 processes). Other facts of the run (seeding
// time, file size) are printed as "kernel-bench:" lines, which
// cmd/sbps-marshal-bench -kernel-bench turns into docs/BENCHMARKS-KERNEL.md
// with the standard benchmark lines. UML makes every system call slow:
// compare the modes' ratios, not the absolute times.
//
//	SBPS_UML_TIMEOUT=55m go test -tags kernel -run '^$' -bench Modes -benchtime 1x -timeout 60m ./e2e/lio/
func BenchmarkModes(b *testing.B) {
	var facts []string
	note := func(format string, args ...any) {
		line := "kernel-bench: " + fmt.Sprintf(format, args...)
		facts = append(facts, line)
		b.Log(line)
	}
	// At 1,000 LUNs in UML one batch apply of one change took over a minute, and one
	// batch of 50 changes ran past the driver's default 2-minute limit.
	driverTimeout, targetclidWait, targetclidProbe = 30*time.Minute, 30*time.Minute, 30*time.Minute
	skip := map[string]bool{}
	for _, s := range strings.Split(*modesSkip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			skip[s] = true
		}
	}
	for _, s := range strings.Split(*modesLUNs, ",") {
		size, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || size < 1 {
			b.Fatalf("-modes.luns: %q is not a number of LUNs", s)
		}
		b.Run(fmt.Sprintf("luns=%d", size), func(b *testing.B) { modesAt(b, size, skip, note) })
	}
	// Printed once every sub-benchmark is done, so that no line lands
	// inside a benchmark's result line.
	fmt.Println(strings.Join(facts, "\n"))
}

// readReps is how many times each saveconfig.json read is timed.
const readReps = 7

// modesAt is BenchmarkModes for one size.
func modesAt(b *testing.B, size int, skip map[string]bool, note func(string, ...any)) {
	n := newNode(b)
	// The images' folder without the '=' of the benchmark's name, a
	// character the driver refuses in a path.
	n.images = fmt.Sprintf("/srv/e2e-lio/modes-%d", size)
	if err := os.MkdirAll(n.images, 0o755); err != nil {
		b.Fatal(err)
	}
	seed := newDriver(b, lio.Batch)
	start := time.Now()
	seedLUNs(b, n, size)
	if err := seed.Save(b.Context()); err != nil {
		b.Fatalf("saving the %d seeded LUNs: %v", size, err)
	}
	if c := saved(b); len(c.StorageObjects) != size {
		b.Fatalf("after seeding %d LUNs, %s holds %d storage objects", size, saveFile, len(c.StorageObjects))
	}
	note("seed luns=%d rtslib+saveconfig=%.2fs", size, time.Since(start).Seconds())
	before, err := os.ReadFile(saveFile)
	if err != nil {
		b.Fatal(err)
	}

	var after []byte // saveconfig.json after the first one-change apply
	one := map[lio.Mode]time.Duration{}
	measure := func(mode lio.Mode, changes int, d, undo *lio.Driver) {
		row := fmt.Sprintf("%d/%s/%d", size, mode, changes)
		if skip[row] {
			if t, ok := one[mode]; ok && mode == lio.OneShot {
				// One-shot runs one process per command and one for
				// saveconfig: 2N+1 processes, against 3 for one change.
				note("notrun luns=%d %s/%d estimate=%.0fs (the one-change apply of this run x %d/3 processes)", size, mode, changes, t.Seconds()*float64(2*changes+1)/3, 2*changes+1)
			} else {
				note("notrun luns=%d %s/%d", size, mode, changes)
			}
			return
		}
		b.Run(fmt.Sprintf("%s/%d", mode, changes), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var ops, dels []lio.Op
				for j := range changes {
					file, id := image(b, n.images, fmt.Sprintf("%s-%d-%d-%d.squashfs", mode, changes, i, j), 1<<20)
					bs, lun := n.projectOps(file, id)
					ops = append(ops, bs, lun)
					dels = append(dels, lio.Op{Kind: lio.DeleteBackstore, Backstore: id.Name})
				}
				stats := d.Stats()
				b.StartTimer()
				t0 := time.Now()
				err := applyAll(b, d, ops)
				elapsed := time.Since(t0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				now := d.Stats()
				b.ReportMetric(float64(now.Processes-stats.Processes), "procs/op")
				b.ReportMetric(float64(now.Requests-stats.Requests), "requests/op")
				if changes == 1 {
					one[mode] = elapsed
				}
				if after == nil && changes == 1 {
					if after, err = os.ReadFile(saveFile); err != nil {
						b.Fatal(err)
					}
				}
				if err := applyAll(b, undo, dels); err != nil {
					b.Fatalf("undoing: %v", err)
				}
				b.StartTimer()
			}
		})
	}
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot} {
		d := newDriver(b, mode)
		for _, changes := range []int{1, 50} {
			measure(mode, changes, d, seed)
		}
	}
	// targetclid last, undoing through itself: it keeps its own object
	// tree, which changes made by other processes would leave stale.
	startTargetclid(b)
	daemon := newDriver(b, lio.Daemon)
	for _, changes := range []int{1, 50} {
		measure(lio.Daemon, changes, daemon, daemon)
	}
	if after == nil {
		b.Fatal("no one-change apply ran: nothing to read back")
	}
	readSaved(b, before, after)
}

// readSaved times lio.SavedFile on the real saveconfig.json: the first
// full parse of before, and the read of after (before plus one new
// backstore and LUN, as real targetcli wrote it) by a SavedFile that last
// read before. Each is the median of readReps reads.
func readSaved(b *testing.B, before, after []byte) {
	p := filepath.Join(b.TempDir(), "saveconfig.json")
	write := func(data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	load := func(f *lio.SavedFile) time.Duration {
		t0 := time.Now()
		if _, _, err := f.Load(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds())
	}
	b.Run("read/full", func(b *testing.B) {
		var d []time.Duration
		for range readReps {
			write(before)
			d = append(d, load(&lio.SavedFile{Path: p}))
		}
		b.ReportMetric(median(d), "ns/op")
		b.ReportMetric(float64(len(before)), "file-bytes")
	})
	b.Run("read/incremental", func(b *testing.B) {
		var d []time.Duration
		for range readReps {
			f := &lio.SavedFile{Path: p}
			write(before)
			load(f)
			write(after)
			d = append(d, load(f))
		}
		b.ReportMetric(median(d), "ns/op")
		b.ReportMetric(float64(len(after)), "file-bytes")
	})
}

// seedScript creates the backstores and LUNs listed in a JSON file
// through rtslib-fb, with the calls `targetctl restore` makes
// (FileIOStorageObject, then LUN on tpg1), but handing each LUN its
// storage object: restore looks each one up with a scan of every storage
// object in configfs, quadratic in the number of LUNs (more than 11
// minutes for 1,000 in UML, unfinished). The kernel state is the same.
const seedScript = `
import json, sys
from rtslib_fb import FabricModule, Target, TPG, LUN, FileIOStorageObject
spec = json.load(open(sys.argv[1]))
tpg = TPG(Target(FabricModule("iscsi"), spec["iqn"], mode="lookup"), 1, mode="lookup")
for o in spec["objects"]:
    so = FileIOStorageObject(o["name"], dev=o["dev"], size=o["size"], wwn=o["wwn"], write_back=False)
    LUN(tpg, o["index"], storage_object=so)
`

// seedLUNs adds size backstores and LUNs to n's tpg1 (1 MiB files named
// and numbered as the agent names PE images) in one Python process of
// rtslib-fb (seedScript): far faster than targetcli or targetctl restore
// at 1,000 LUNs, and the same kernel state.
func seedLUNs(b *testing.B, n *node, size int) {
	type object struct {
		Name  string `json:"name"`
		Dev   string `json:"dev"`
		Size  int64  `json:"size"`
		WWN   string `json:"wwn"`
		Index int    `json:"index"`
	}
	spec := struct {
		IQN     string   `json:"iqn"`
		Objects []object `json:"objects"`
	}{IQN: n.iqn}
	for i := range size {
		file, id := image(b, n.images, fmt.Sprintf("seed-%04d.squashfs", i), 1<<20)
		spec.Objects = append(spec.Objects, object{Name: id.Name, Dev: file, Size: 1 << 20, WWN: id.WWN, Index: i})
	}
	data, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	specFile, script := filepath.Join(dir, "seed.json"), filepath.Join(dir, "seed.py")
	if err := os.WriteFile(specFile, data, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(seedScript), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("python3", script, specFile).CombinedOutput(); err != nil {
		b.Fatalf("seeding %d LUNs through rtslib: %v\n%s", size, err, out)
	}
}

// applyAll applies ops and fails unless every op holds afterwards.
func applyAll(tb testing.TB, d *lio.Driver, ops []lio.Op) error {
	tb.Helper()
	res, err := d.Apply(tb.Context(), ops)
	if err != nil {
		return fmt.Errorf("%w%s", err, outcomes(res))
	}
	for _, r := range res {
		if !r.OK() {
			return fmt.Errorf("%s: %s: %v%s", r.Op, r.Outcome, r.Err, outcomes(res))
		}
	}
	return nil
}
