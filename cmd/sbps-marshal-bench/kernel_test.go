package main

import (
	"strings"
	"testing"
)

// kernelSample is the shape of `make bench-kernel` output (figures from a
// 5-LUN trial run).
const kernelSample = `kernel-bench: command make bench-kernel KERNEL_LUNS=5
kernel-bench: machine 2 cores, Intel(R) Xeon(R) Processor, Linux 6.1
kernel-bench: host-load-before  11:26:07 up  1:15,  0 user,  load average: 3.03, 2.04, 2.40
goos: linux
cpu: Intel(R) Xeon(R) Processor
BenchmarkModes/luns=5/batch/1 	       1	2021115648 ns/op	         1.000 procs/op	         0 requests/op
BenchmarkModes/luns=5/oneshot/1         	       1	6214144256 ns/op	         3.000 procs/op	         0 requests/op
BenchmarkModes/luns=5/daemon/1          	       1	 683103488 ns/op	         0 procs/op	         3.000 requests/op
BenchmarkModes/luns=5/read/full         	       1	   1068800 ns/op	     12179 file-bytes
BenchmarkModes/luns=5/read/incremental  	       1	    748288 ns/op	     14225 file-bytes
kernel-bench: seed luns=5 rtslib+saveconfig=6.87s
kernel-bench: notrun luns=5 oneshot/50 estimate=311s (the one-change apply of this run x 101/3 processes)
--- FAIL: BenchmarkModes/luns=5/daemon/50
    modes_kernel_test.go:132: targetcli with 102 commands on stdin: targetcli ran longer than 2m0s (raise the targetcli timeout if LIO holds many objects): targetcli shell version 2.1.53
        Copyright 2011-2013 by Datera, Inc and others.
PASS
uml: guest booted in 3.722s, ran 31.262s, exit 0
ok  	github.com/sbps-marshal/sbps-marshal/e2e/lio	31.283s
    initiator_kernel_test.go:107: MEASURED upload -> LUN in saveconfig.json (PE/a.squashfs, initiator logged in and rescanning): 3.512s
kernel-bench: host-load-after  11:27:07 up  1:16,  0 user,  load average: 2.03, 2.04, 2.40
`

func TestKernelReport(t *testing.T) {
	r, err := parseKernelRun("k.txt", kernelSample)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.rows[5]["daemon/1"]["requests/op"]; got != 3 {
		t.Errorf("daemon/1 requests/op = %v, want 3", got)
	}
	doc := renderKernel([]string{"k.txt"}, []*kernelRun{r})
	for _, want := range []string{
		"| batch | 2.02 s | 1.00× | 1, 0 | not run |",
		"| oneshot | 6.21 s | 3.07× | 3, 0 | not run (below) |",
		"| targetclid (daemon) | 683.1 ms | 0.34× | 0, 3 | failed: targetcli with 102 commands on stdin: targetcli ran longer than 2m0s (raise the targetcli timeout if LIO holds many objects) |",
		"Not run: oneshot/50 estimate=311s",
		"| first full parse | 1.1 ms | 12 KB |",
		"| read-back of one new LUN (incremental) | 748 µs | 14 KB |",
		"before 3.03, 2.04, 2.40; after 2.03, 2.04, 2.40",
		"Seeded (one rtslib-fb process, then saveconfig) in 6.87s.",
		"| upload -> LUN in saveconfig.json (PE/a.squashfs, initiator logged in and rescanning) | 3.512s |",
		"- 5 LUNs: oneshot × 1: 3.07×; daemon × 1: 0.34×.",
		"    make bench-kernel KERNEL_LUNS=5",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	if _, err := parseKernelRun("x", "PASS\n"); err == nil {
		t.Error("an output without results parsed")
	}
}
