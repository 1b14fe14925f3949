//go:build kernel

package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/uml"
)

// seccompWrapper runs argv under a seccomp allow list of system call numbers
// (the file $SC_ALLOW, one a line); any other call, and any call of another
// architecture than x86_64, fails with EPERM: what systemd installs for
// SystemCallFilter= with SystemCallErrorNumber=EPERM and
// SystemCallArchitectures=native. No dependencies: built in the test.
const seccompWrapper = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

type sockFilter struct {
	code   uint16
	jt, jf uint8
	k      uint32
}

type sockFprog struct {
	len    uint16
	filter *sockFilter
}

func main() {
	data, err := os.ReadFile(os.Getenv("SC_ALLOW"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(126)
	}
	const (
		ld    = 0x20 // BPF_LD|BPF_W|BPF_ABS
		jeq   = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
		ret   = 0x06 // BPF_RET|BPF_K
		allow = 0x7fff0000
		eperm = 0x00050000 | 1
	)
	prog := []sockFilter{{ld, 0, 0, 4}, {jeq, 1, 0, 0xc000003e}, {ret, 0, 0, eperm}, {ld, 0, 0, 0}}
	for _, f := range strings.Fields(string(data)) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(126)
		}
		prog = append(prog, sockFilter{jeq, 0, 1, uint32(n)}, sockFilter{ret, 0, 0, allow})
	}
	prog = append(prog, sockFilter{ret, 0, 0, eperm})
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(127)
	}
	runtime.LockOSThread()
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "no_new_privs:", e)
		os.Exit(126)
	}
	fp := sockFprog{uint16(len(prog)), &prog[0]}
	// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fp)
	if _, _, e := syscall.RawSyscall(317, 1, 1, uintptr(unsafe.Pointer(&fp))); e != 0 {
		fmt.Fprintln(os.Stderr, "seccomp:", e)
		os.Exit(126)
	}
	err = syscall.Exec(path, os.Args[1:], os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(126)
}
`

// unitSetting returns the single value of a [Service] key of the shipped unit.
func unitSetting(t *testing.T, key string) string {
	t.Helper()
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	v := parseUnit(t, unitFile, data)["Service"][key]
	if len(v) != 1 {
		t.Fatalf("%s: [Service] %s = %q, want one value", unitFile, key, v)
	}
	return v[0]
}

// syscallNumbers expands a SystemCallFilter= set (@groups nest) into x86_64
// system call numbers, by systemd-analyze and the kernel's unistd_64.h.
func syscallNumbers(t *testing.T, sa, filter string) []int {
	t.Helper()
	const header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
	f, err := os.Open(header)
	if err != nil {
		t.Skipf("%v: the system call numbers come from it (Debian: linux-libc-dev, which gcc brings)", err)
	}
	defer f.Close()
	nr := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 3 && fs[0] == "#define" && strings.HasPrefix(fs[1], "__NR_") {
			if n, err := strconv.Atoi(fs[2]); err == nil {
				nr[strings.TrimPrefix(fs[1], "__NR_")] = n
			}
		}
	}
	seen := map[string]bool{}
	var out []int
	var expand func(set string)
	expand = func(set string) {
		for i, l := range lines(run(t, "", nil, sa, "syscall-filter", set)) {
			if i == 0 || strings.HasPrefix(l, "#") {
				continue // the set's own name; comments
			}
			name := strings.Fields(l)[0]
			if seen[name] {
				continue
			}
			seen[name] = true
			if strings.HasPrefix(name, "@") {
				expand(name)
			} else if n, ok := nr[name]; ok {
				out = append(out, n)
			}
		}
	}
	for _, set := range strings.Fields(filter) {
		expand(set)
	}
	if len(out) < 100 {
		t.Fatalf("SystemCallFilter=%s expanded to only %d x86_64 system calls", filter, len(out))
	}
	return out
}

// TestUnitSandboxOnRealLIO runs what the agent does through targetcli on the
// real kernel LIO (User-Mode Linux), confined as the unit confines the
// agent: its CapabilityBoundingSet= (setpriv --bounding-set: root keeps only
// those) and its SystemCallFilter= with SystemCallErrorNumber=EPERM (a
// seccomp filter of the same calls). Every operation must succeed; and the
// confinement must bite: without CAP_DAC_OVERRIDE, a backstore over an image
// root does not own (as s3fs shows them) is refused, and a call outside the
// filter fails.
func TestUnitSandboxOnRealLIO(t *testing.T) {
	if err := uml.Check("/usr/bin/linux.uml"); err != nil {
		t.Skipf("no User-Mode Linux here: %v", err)
	}
	sa := tool(t, "systemd-analyze", "install systemd (Debian: apt-get install systemd)")
	caps := []string{"-all"}
	for _, c := range strings.Fields(unitSetting(t, "CapabilityBoundingSet")) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	if got := unitSetting(t, "SystemCallErrorNumber"); got != "EPERM" {
		t.Fatalf("SystemCallErrorNumber=%s: the filter below returns EPERM", got)
	}
	numbers := syscallNumbers(t, sa, unitSetting(t, "SystemCallFilter"))

	dir, err := os.MkdirTemp("/tmp", "sbps-unit-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "go.mod"), "module seccompwrapper\n\ngo 1.22\n")
	writeFile(t, filepath.Join(src, "main.go"), seccompWrapper)
	run(t, src, []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod"}, "go", "build", "-o", filepath.Join(dir, "seccomp"), ".")
	var allow, noMkdir bytes.Buffer
	mkdirs := map[int]bool{83: true, 258: true} // mkdir, mkdirat
	for _, n := range numbers {
		fmt.Fprintln(&allow, n)
		if !mkdirs[n] {
			fmt.Fprintln(&noMkdir, n)
		}
	}
	writeFile(t, filepath.Join(dir, "allow"), allow.String())
	writeFile(t, filepath.Join(dir, "allow-no-mkdir"), noMkdir.String())

	// The CSM playbook's part (full root), then the agent's operations
	// confined; "want" is what each line must print.
	iqn := "iqn.2023-06.csm.iscsi:sandbox"
	tpg := "/iscsi/" + iqn + "/tpg1"
	confined := "setpriv --bounding-set " + strings.Join(caps, ",") + " -- env SC_ALLOW=" + dir + "/allow " + dir + "/seccomp"
	steps := []struct{ want, cmd string }{
		{"ok", "targetcli /backstores/fileio create img " + dir + "/img write_back=false"},
		{"ok", "targetcli " + tpg + "/luns create /backstores/fileio/img add_mapped_luns=false"},
		{"ok", "targetcli " + tpg + " disable"},
		{"ok", "targetcli " + tpg + " enable"},
		{"ok", "targetcli saveconfig /etc/target/saveconfig.json"},
		{"ok", "targetcli saveconfig /etc/target/saveconfig.json.sbps-live"},
		{"ok", "targetcli ls"},
		// Batch mode: commands on stdin, as TARGETCLI_MODE=batch.
		{"ok", `sh -c "printf '%s\n' 'cd ` + tpg + `/luns' 'ls' 'exit' | targetcli"`},
		{"ok", "targetcli " + tpg + "/luns delete lun=0"},
		{"ok", "targetcli /backstores/fileio delete img"},
		{"ok", "cat /etc/target/saveconfig.json"},
	}
	var stepFile strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&stepFile, "%s|%s %s\n", s.want, confined, s.cmd)
	}
	// The confinement bites.
	fmt.Fprintf(&stepFile, "fail|setpriv --bounding-set -all,+dac_read_search -- targetcli /backstores/fileio create img2 %s/img write_back=false\n", dir)
	fmt.Fprintf(&stepFile, "fail|env SC_ALLOW=%s/allow-no-mkdir %s/seccomp mkdir %s/not-made\n", dir, dir, dir)
	fmt.Fprintf(&stepFile, "ok|env SC_ALLOW=%s/allow %s/seccomp mkdir %s/made\n", dir, dir, dir)
	writeFile(t, filepath.Join(dir, "steps"), stepFile.String())
	writeFile(t, filepath.Join(dir, "run.sh"), fmt.Sprintf(`D=%s
dd if=/dev/zero of=$D/img bs=1M count=4 2>/dev/null
chown 1000:1000 $D/img && chmod 0444 $D/img
targetcli /iscsi create %s >/dev/null
targetcli %s set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1 >/dev/null
while IFS='|' read -r want cmd; do
	if sh -c "$cmd" >$D/out 2>&1; then got=ok; else got=fail; fi
	echo "STEP $want $got $cmd :: $(tail -2 $D/out | tr '\n' ' ')"
done <$D/steps
`, dir, iqn, tpg))

	res, err := uml.Run(t.Context(), uml.Config{Timeout: 8 * time.Minute}, "sh", filepath.Join(dir, "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, l := range lines(string(res.Output)) {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "STEP" {
			continue
		}
		n++
		if f[1] != f[2] {
			t.Errorf("want %s, got %s: %s", f[1], f[2], strings.Join(f[3:], " "))
		}
	}
	if want := len(steps) + 3; n != want {
		t.Fatalf("the guest ran %d of %d steps (exit %d):\n%s", n, want, res.ExitCode, res.Output)
	}
	t.Logf("confined as the unit (%s, SystemCallFilter=%s: %d calls): %d targetcli steps on the real LIO (boot %v, total %v)",
		strings.Join(caps, ","), unitSetting(t, "SystemCallFilter"), len(numbers), len(steps), res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Second))
}
