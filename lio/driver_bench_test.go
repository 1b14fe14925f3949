package lio_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// BenchmarkApplyCreates builds and applies, through the targetcli
// simulator, a plan of 1,000 creates (500 images, each a fileio create and
// a LUN create) on an empty node, in each mode. It reports the
// targetcli processes and targetclid requests per plan; ns/op is the wall
// time of one whole plan.
//
//	go test ./lio -run '^$' -bench ApplyCreates -benchtime 1x
func BenchmarkApplyCreates(b *testing.B) {
	const images = 500
	dir := b.TempDir()
	files := make([]string, images)
	for i := range files {
		files[i] = filepath.Join(dir, fmt.Sprintf("image-%04d.squashfs", i))
		if err := os.WriteFile(files[i], make([]byte, 4096), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, mode := range modes {
		b.Run(string(mode), func(b *testing.B) {
			var procs, reqs int64
			for b.Loop() {
				b.StopTimer()
				n := newSimNode(b, mode)
				iqn := n.node.IQN()
				b.StartTimer()

				ops := make([]lio.Op, 0, 2*images)
				for i, f := range files {
					name := fmt.Sprintf("%015x", i)
					ops = append(ops, lio.Op{Kind: lio.CreateBackstore, Backstore: name, File: f, WWN: fmt.Sprintf("%031x", i)})
				}
				for i := range files {
					ops = append(ops, lio.Op{Kind: lio.CreateLUN, Backstore: fmt.Sprintf("%015x", i), Target: iqn, LUN: lio.AutoLUN})
				}
				res, err := n.driver.Apply(b.Context(), ops)
				if err != nil {
					b.Fatalf("Apply: %v", err)
				}
				for i, r := range res {
					if r.Outcome != lio.Applied {
						b.Fatalf("op %d %v: %v %v", i, r.Op, r.Outcome, r.Err)
					}
				}

				b.StopTimer()
				st := n.driver.Stats()
				procs += st.Processes
				reqs += st.Requests
				b.StartTimer()
			}
			b.ReportMetric(float64(procs)/float64(b.N), "procs/op")
			b.ReportMetric(float64(reqs)/float64(b.N), "requests/op")
		})
	}
}
