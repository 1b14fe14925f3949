//go:build kernel

package initiator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const metricsAddr = "127.0.0.1:9478"

// TestRebuiltWorkerUnderLiveSession: images A, B, C are projected at LUNs
// 0, 1, 2 and an initiator reads each by WWID; the worker is rebuilt (agent
// stopped, every backstore deleted with targetcli, STATE_DIR wiped) with A
// gone from S3, so the rebuilt agent numbers B and C from 0; A comes back
// after the first pass, at a new number. Without logging out or in, after
// the agent's session reset and the initiator's own recovery (plus the
// rescans multipathd/udev would cause), every disk reads the bytes of the
// image whose WWID the kernel reports for it, and every image is reachable.
func TestRebuiltWorkerUnderLiveSession(t *testing.T) {
	resetNode(t)
	provision(t)
	s := startStack(t)
	s.env = append(s.env, "SBPS_MARSHAL_LUN_REGISTRY=local", "SBPS_MARSHAL_METRICS_ADDR="+metricsAddr)
	a := s.startAgent(t)
	a.waitReady(t, 1)

	// One at a time, so that the numbers are A=0, B=1, C=2.
	var imgs []*image
	for _, n := range []string{"image-a", "image-b", "image-c"} {
		img, _ := s.putPE(t, n, 256<<10)
		imgs = append(imgs, img)
		waitSaved(t, 2*time.Minute, n+" projected", func(m map[string]int) bool { _, ok := m[img.id.Name]; return ok })
	}
	byWWIDImg := map[string]*image{}
	for _, img := range imgs {
		byWWIDImg[img.id.WWID] = img
	}
	c, err := loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	before := lunMap(c)
	t.Logf("LUN map before the rebuild: %s", mapString(before, imgs))

	startInitiator(t)
	v, err := pollView(t, time.Minute, func(v []disk) error { return checkPaths(t, v, imgs, byWWIDImg) })
	if err != nil {
		t.Fatalf("before the rebuild: %v\nthe initiator sees %v", err, v)
	}
	t.Logf("initiator before the rebuild:\n%s", describe(v))

	// ---- the rebuild ----
	a.stop(t)
	if err := s.s3.Delete(context.Background(), imgs[0].key); err != nil {
		t.Fatal(err)
	}
	c, err = loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	for _, so := range c.StorageObjects {
		mustRun(t, "targetcli", "/backstores/"+so.Plugin+" delete "+so.Name)
	}
	mustRun(t, "targetcli", "saveconfig")
	if c, err = loadSaved(); err != nil || len(lunMap(c)) != 0 || len(c.StorageObjects) != 0 {
		t.Fatalf("after deleting every backstore: %v, LUNs %v", err, lunMap(c))
	}
	if _, ok := c.Target(iqn); !ok {
		t.Fatalf("the rebuild lost the node's target")
	}
	state := filepath.Join(s.dir, "state")
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	t.Logf("rebuilt: LIO has the target, portal and attributes and no backstore; STATE_DIR wiped; %s deleted from S3", imgs[0].key)
	mark := dmesgLen(t)

	b := s.startAgent(t)
	start := time.Now()
	b.waitReady(t, 2)
	waitSaved(t, 2*time.Minute, "B and C projected by the rebuilt agent", func(m map[string]int) bool {
		_, okB := m[imgs[1].id.Name]
		_, okC := m[imgs[2].id.Name]
		return okB && okC
	})
	v0 := view(t) // no rescan: the kernel's identities as the session attached them
	t.Logf("right after the rebuilt agent's first pass, before any rescan (check: %v):\n%s", checkPaths(t, v0, imgs, byWWIDImg), describe(v0))
	resetLine := waitLog(t, b, 30*time.Second, "resetting tpg1's iSCSI sessions")
	agentReset := resetLine != ""
	if agentReset {
		t.Logf("the agent's reset, %v after its start: %s", time.Since(start).Round(time.Millisecond), resetLine)
	} else {
		t.Errorf("the rebuilt agent logged no session reset within 30 s of its first pass; its map changed under the live session")
	}
	if n := resets(t); n < 1 {
		t.Errorf("sbps_marshal_session_resets_total{outcome=\"done\"} = %v, want >= 1", n)
	}
	// A comes back: the lowest free number, not its old one.
	if _, err := s.s3.Put(context.Background(), imgs[0].key, imgs[0].data); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, 2*time.Minute, "A projected again", func(m map[string]int) bool { return len(m) == 3 })
	c, err = loadSaved()
	if err != nil {
		t.Fatal(err)
	}
	after := lunMap(c)
	t.Logf("LUN map after the rebuild: %s", mapString(after, imgs))
	changed := false
	for _, img := range imgs {
		if before[img.id.Name] != after[img.id.Name] {
			changed = true
		}
	}
	if !changed {
		t.Fatalf("precondition: the rebuilt worker gave every image its old number (%v); the test needs a renumbering", after)
	}
	if n := strings.Count(sinceStart(b), "resetting tpg1's iSCSI sessions"); n != 1 {
		t.Errorf("the rebuilt agent reset the sessions %d times, want once", n)
	}

	if !agentReset {
		// What the initiator sees when nothing resets the sessions, then
		// what the agent's reset would do, done by hand as sessions.go does
		// it (tpg1 disable, enable), for the report. The test has failed.
		v, err := pollView(t, 20*time.Second, func(v []disk) error { return checkPaths(t, v, imgs, byWWIDImg) })
		t.Logf("WITHOUT any reset, %v after the rebuilt agent's start (err=%v):\n%s", time.Since(start).Round(time.Millisecond), err, describe(v))
		t.Logf("sessions:\n%s", sessionStates(t))
		t.Logf("dmesg since the rebuild:\n%s", dmesgSince(t, mark))
		mark = dmesgLen(t)
		tpg := "/iscsi/" + iqn + "/tpg1"
		mustRun(t, "targetcli", tpg+" disable")
		mustRun(t, "targetcli", tpg+" enable")
		start = time.Now()
		t.Logf("tpg1 disabled and enabled by hand (the agent's reset)")
	}

	// ---- the initiator's recovery ----
	// No login or logout: iscsid reconnects by itself; the rescans stand
	// for what multipathd/udev do on a compute node.
	v, err = pollView(t, 90*time.Second, func(v []disk) error { return checkPaths(t, v, imgs, byWWIDImg) })
	t.Logf("initiator %v after the reset (err=%v):\n%s", time.Since(start).Round(time.Millisecond), err, describe(v))
	t.Logf("sessions:\n%s", sessionStates(t))
	t.Logf("dmesg since the reset:\n%s", dmesgSince(t, mark))
	if err == nil {
		b.stop(t)
		return
	}
	t.Errorf("after the tpg1 disable+enable reset (agent's: %v), without logout/login: %v", agentReset, err)

	// The old agent's way: restart target.service (save, clearconfig,
	// restore), observed for the report; the assertion above stands.
	mark = dmesgLen(t)
	b.stop(t)
	mustRun(t, "targetctl", "save", saveFile)
	mustRun(t, "targetctl", "clear")
	mustRun(t, "targetctl", "restore", saveFile)
	v, err = pollView(t, 90*time.Second, func(v []disk) error { return checkPaths(t, v, imgs, byWWIDImg) })
	t.Logf("after targetctl save/clear/restore (target.service restart): err=%v\n%s", err, describe(v))
	t.Logf("sessions:\n%s", sessionStates(t))
	t.Logf("dmesg since the restart:\n%s", dmesgSince(t, mark))
}

// checkPaths: every image is on a running disk, and every disk whose
// target gives a WWID is running, has the kernel's identity equal to the
// target's, and reads the bytes of the image with that WWID.
func checkPaths(t *testing.T, v []disk, imgs []*image, byWWID map[string]*image) error {
	t.Helper()
	var errs []string
	found := map[string]bool{}
	for _, d := range v {
		st := devState(d.dev)
		if d.wwid == "" {
			continue // a LUN the target no longer has
		}
		img := byWWID[d.wwid]
		if img == nil {
			errs = append(errs, fmt.Sprintf("%s %s: WWID of no image", d.hctl, d))
			continue
		}
		if d.cached != d.wwid {
			errs = append(errs, fmt.Sprintf("%s %s: the kernel still has %s, the target gives %s", d.hctl, d.dev, d.cached, d.wwid))
		}
		if st != "running" {
			errs = append(errs, fmt.Sprintf("%s %s: device state %q", d.hctl, d.dev, st))
			continue
		}
		got, err := readDev(d.dev)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("%s %s (%s): %v", d.hctl, d.dev, img.name, err))
		case !bytes.Equal(got, img.data):
			other := "no image"
			for _, o := range imgs {
				if bytes.Equal(got, o.data) {
					other = o.name
				}
			}
			errs = append(errs, fmt.Sprintf("%s %s: WWID of %s but reads %d bytes of %s", d.hctl, d.dev, img.name, len(got), other))
		default:
			found[img.name] = true
		}
	}
	for _, img := range imgs {
		if !found[img.name] {
			errs = append(errs, img.name+" is on no running disk that reads its bytes")
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// pollView rescans every session and checks the view until cond holds or
// timeout passes; it returns the last view and cond's last error.
func pollView(t *testing.T, timeout time.Duration, cond func([]disk) error) ([]disk, error) {
	t.Helper()
	start := time.Now()
	for {
		run(t, "", "iscsiadm", "-m", "session", "-R")
		v := view(t)
		err := cond(v)
		if err == nil || time.Since(start) > timeout {
			return v, err
		}
		time.Sleep(time.Second)
	}
}

func readDev(dev string) ([]byte, error) {
	f, err := os.Open("/dev/" + dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Past the page cache's copy of what the LUN served before.
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkFlsBuf, 0); e != 0 {
		return nil, fmt.Errorf("BLKFLSBUF: %v", e)
	}
	return io.ReadAll(f)
}

func devState(dev string) string {
	b, _ := os.ReadFile("/sys/block/" + dev + "/device/state")
	return strings.TrimSpace(string(b))
}

func describe(v []disk) string {
	var b strings.Builder
	for _, d := range v {
		fmt.Fprintf(&b, "  %s %s state=%s kernel-wwid=%s target-wwid=%s size=%d\n", d.hctl, d.dev, devState(d.dev), d.cached, d.wwid, d.size)
	}
	return b.String()
}

func mapString(m map[string]int, imgs []*image) string {
	var parts []string
	for _, img := range imgs {
		if n, ok := m[img.id.Name]; ok {
			parts = append(parts, fmt.Sprintf("%s=lun%d", img.name, n))
		} else {
			parts = append(parts, img.name+"=none")
		}
	}
	return strings.Join(parts, " ")
}

func sessionStates(t *testing.T) string {
	out, _ := run(t, "", "iscsiadm", "-m", "session", "-P", "3")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		for _, k := range []string{"iSCSI Connection State", "iSCSI Session State", "Internal iscsid Session State", "Attached scsi disk", "scsi"} {
			if strings.HasPrefix(l, k) {
				keep = append(keep, "  "+l)
				break
			}
		}
	}
	return strings.Join(keep, "\n")
}

func dmesgLen(t *testing.T) int {
	out, _ := run(t, "", "dmesg")
	return len(strings.Split(out, "\n"))
}

func dmesgSince(t *testing.T, n int) string {
	out, _ := run(t, "", "dmesg")
	lines := strings.Split(out, "\n")
	if n > len(lines) {
		n = 0
	}
	return tailString(strings.Join(lines[n:], "\n"), 6000)
}

// sinceStart is the agent's log since its last start.
func sinceStart(a *agentProc) string {
	log := readLog(a)
	if i := strings.LastIndex(log, "---- sbps-marshal run started"); i >= 0 {
		log = log[i:]
	}
	return log
}

func readLog(a *agentProc) string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

// waitLog waits until the agent's log, since its last start, has a line
// containing s, and returns it; "" when none came within timeout.
func waitLog(t *testing.T, a *agentProc, timeout time.Duration, s string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(sinceStart(a), "\n") {
			if strings.Contains(l, s) {
				return l
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}

var resetsRE = regexp.MustCompile(`(?m)^sbps_marshal_session_resets_total\{outcome="done"\} (\S+)$`)

// resets is sbps_marshal_session_resets_total{outcome="done"}, or -1.
func resets(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Errorf("metrics: %v", err)
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := resetsRE.FindSubmatch(b)
	if m == nil {
		t.Errorf("no sbps_marshal_session_resets_total{outcome=\"done\"} in /metrics")
		return -1
	}
	var f float64
	fmt.Sscan(string(m[1]), &f)
	return f
}
