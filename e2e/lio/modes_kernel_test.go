//go:build kernel

package lio

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// seedLUNs is how many LUNs the node holds before each measured apply.
const seedLUNs = 100

// BenchmarkModes (issue 18, part 4): one apply of N changes (N new images:
// a backstore and a LUN each, as the agent projects them, with the
// driver's read-back of saveconfig.json) on a node already holding
// seedLUNs LUNs, in each targetcli mode, on the real kernel. Each apply is
// undone, untimed, before the next. It prints a table; UML makes every
// system call slow, so compare the modes' ratios, not the absolute times.
//
//	go test -tags kernel -run '^$' -bench Modes -benchtime 1x -timeout 40m ./e2e/lio/
func BenchmarkModes(b *testing.B) {
	n := newNode(b)
	seed := newDriver(b, lio.Batch)
	var ops []lio.Op
	for i := range seedLUNs {
		file, id := image(b, n.images, fmt.Sprintf("seed-%03d.squashfs", i), 1<<20)
		bs, lun := n.projectOps(file, id)
		ops = append(ops, bs, lun)
	}
	start := time.Now()
	if err := applyAll(b, seed, ops); err != nil {
		b.Fatalf("seeding %d LUNs: %v", seedLUNs, err)
	}
	b.Logf("seeded %d LUNs in one batch in %v", seedLUNs, time.Since(start).Round(time.Millisecond))

	type row struct {
		mode            lio.Mode
		changes         int
		elapsed         time.Duration
		procs, requests int64
	}
	var rows []row
	measure := func(b *testing.B, mode lio.Mode, changes int, undo *lio.Driver) {
		b.Run(fmt.Sprintf("%s/%d", mode, changes), func(b *testing.B) {
			d := newDriver(b, mode)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var ops, dels []lio.Op
				for j := range changes {
					file, id := image(b, n.images, fmt.Sprintf("%s-%d-%d-%d.squashfs", mode, changes, i, j), 1<<20)
					bs, lun := n.projectOps(file, id)
					ops = append(ops, bs, lun)
					dels = append(dels, lio.Op{Kind: lio.DeleteBackstore, Backstore: id.Name})
				}
				before := d.Stats()
				b.StartTimer()
				t0 := time.Now()
				err := applyAll(b, d, ops)
				elapsed := time.Since(t0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				after := d.Stats()
				rows = append(rows, row{mode, changes, elapsed, after.Processes - before.Processes, after.Requests - before.Requests})
				if err := applyAll(b, undo, dels); err != nil {
					b.Fatalf("undoing: %v", err)
				}
				b.StartTimer()
			}
		})
	}
	for _, mode := range []lio.Mode{lio.Batch, lio.OneShot} {
		for _, changes := range []int{1, 10, 50} {
			if mode == lio.OneShot && changes == 10 {
				continue // 21 processes: between the two that matter, and slow
			}
			measure(b, mode, changes, seed)
		}
	}
	// targetclid last, undoing through itself: it keeps its own object
	// tree, which changes made by other processes would leave stale.
	startTargetclid(b)
	daemon := newDriver(b, lio.Daemon)
	for _, changes := range []int{1, 10, 50} {
		measure(b, lio.Daemon, changes, daemon)
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\nOne apply on the real kernel LIO (UML) with %d LUNs present: N new images = N backstores + N LUNs + saveconfig + read-back\n", seedLUNs)
	w := tabwriter.NewWriter(&out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "mode\tN\tapply\tper image\tvs batch\tprocesses\trequests\t")
	base := map[int]time.Duration{}
	for _, r := range rows {
		if r.mode == lio.Batch {
			base[r.changes] = r.elapsed
		}
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%.2f s\t%.2f s\t%.2fx\t%d\t%d\t\n", r.mode, r.changes, r.elapsed.Seconds(),
			r.elapsed.Seconds()/float64(r.changes), r.elapsed.Seconds()/base[r.changes].Seconds(), r.procs, r.requests)
	}
	w.Flush()
	fmt.Fprint(os.Stdout, out.String())
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
