//go:build kernel

package uml

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBootRealLIO boots the guest once and checks what every kernel test
// relies on: LIO's configfs, a working targetcli, the command's output and
// exit status, and a host whose / the guest cannot write.
func TestBootRealLIO(t *testing.T) {
	dir := t.TempDir()
	hostFile := filepath.Join("/etc", "sbps-uml-must-not-reach-host-"+strconv.Itoa(os.Getpid()))
	script := strings.Join([]string{
		"test -d /sys/kernel/config/target/core || { echo no LIO in configfs; exit 90; }",
		"targetcli /iscsi create iqn.2023-06.csm.iscsi:uml-test || exit 91",
		"targetcli saveconfig /etc/target/saveconfig.json || exit 92",
		"grep -q iqn.2023-06.csm.iscsi:uml-test /etc/target/saveconfig.json || exit 93",
		"touch " + hostFile,
		"echo shared > " + filepath.Join(dir, "from-guest"),
		"echo marker-on-stdout; echo marker-on-stderr >&2",
		"exit 7",
	}, "\n")
	var streamed bytes.Buffer
	res, err := Run(context.Background(), Config{Timeout: 5 * time.Minute, Output: &streamed}, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 7 {
		t.Fatalf("exit code %d, want 7; output:\n%s\nconsole:\n%s", res.ExitCode, res.Output, tail(res.Console, 30))
	}
	for _, want := range []string{"Created target iqn.2023-06.csm.iscsi:uml-test.", "marker-on-stdout", "marker-on-stderr"} {
		if !strings.Contains(string(res.Output), want) {
			t.Errorf("output lacks %q:\n%s", want, res.Output)
		}
	}
	if !bytes.Equal(streamed.Bytes(), res.Output) {
		t.Errorf("streamed output differs from the output file:\nstreamed %q\nfile     %q", streamed.Bytes(), res.Output)
	}
	if _, err := os.Stat(hostFile); err == nil {
		os.Remove(hostFile)
		t.Errorf("the guest wrote %s on the host's root", hostFile)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "from-guest")); err != nil || string(b) != "shared\n" {
		t.Errorf("the guest's write to the shared /tmp: %q, %v", b, err)
	}
	if res.Boot <= 0 || res.Boot > res.Elapsed {
		t.Errorf("boot time %v of %v is not measured", res.Boot, res.Elapsed)
	}
	t.Logf("boot %v, run %v", res.Boot, res.Elapsed)
}

// TestTimeoutKillsOnlyTheGuest: a guest past its timeout is killed with
// every host process of its group, and nothing else.
func TestTimeoutKillsOnlyTheGuest(t *testing.T) {
	res, err := Run(context.Background(), Config{Timeout: 25 * time.Second}, "sh", "-c", "sleep 1000 & sleep 1000")
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("Run: err = %v, want a timeout", err)
	}
	if res == nil || res.Group <= 0 {
		t.Fatalf("no process group in the result: %+v", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := groupMembers(t, res.Group)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host processes of the guest's group %d still run: %v", res.Group, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if syscall.Getpgrp() == res.Group {
		t.Fatal("the guest ran in the test's own process group")
	}
}

func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces; split after ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 2 && fields[2] == strconv.Itoa(pgid) && fields[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}
