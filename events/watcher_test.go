package events

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
)

// saveconfig returns valid rtslib JSON with n fileio backstores, about
// 300 bytes each, tagged with gen so that generations differ.
func saveconfig(gen, n int) []byte {
	var b strings.Builder
	b.WriteString("{\n  \"fabric_modules\": [],\n  \"storage_objects\": [\n")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `    {"plugin": "fileio", "name": "g%dn%d", "dev": "/var/lib/cps-local/boot-images/PE/img-%d.squashfs", "size": %d, "wwn": "0123456789abcdef0123456789abcde", "write_back": false, "attributes": {"block_size": 512}}`, gen, i, i, 4096*(i+1))
	}
	b.WriteString("\n  ],\n  \"targets\": []\n}\n")
	return []byte(b.String())
}

type watchRig struct {
	dir, path string
	w         *Watcher
	r         *running
}

// startWatcher writes initial (if not nil), starts a watcher and waits
// until it has read its baseline.
func startWatcher(t *testing.T, cfg WatcherConfig, initial []byte) *watchRig {
	t.Helper()
	dir := t.TempDir()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(dir, "saveconfig.json")
	}
	if initial != nil {
		if err := os.WriteFile(cfg.Path, initial, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w, err := NewWatcher(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	wr := &watchRig{dir: dir, path: cfg.Path, w: w}
	wr.r = run(t, w, 8)
	if initial != nil {
		ev := wr.r.next(t, 10*time.Second)
		if want := ContentDigest(initial); ev.Kind != LIOChanged || ev.Source != "fsnotify (baseline)" || ev.Digest != want {
			t.Fatalf("first event = %v, want the baseline with digest %s", ev, want)
		}
	}
	return wr
}

func (wr *watchRig) stat(outcome string) uint64 { return statOf(wr.w.Stats(), "saveconfig", outcome) }

// waitStat waits until the counter reaches at least n.
func (wr *watchRig) waitStat(t *testing.T, outcome string, n uint64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the watcher's counter", func() error {
		if got := wr.stat(outcome); got < n {
			return fmt.Errorf("saveconfig/%s = %d, want >= %d", outcome, got, n)
		}
		return nil
	})
}

func TestWatcherInPlaceRewriteWithPauseEmitsFinalDigestOnce(t *testing.T) {
	wr := startWatcher(t, WatcherConfig{Debounce: 30 * time.Millisecond, Retries: 8, RetryDelay: 20 * time.Millisecond}, saveconfig(1, 5))
	next := saveconfig(2, 100) // ~25 KB
	// rtslib 2.1.75: truncate and rewrite the same file.
	f, err := os.OpenFile(wr.path, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	half := len(next) / 2
	if _, err := f.Write(next[:half]); err != nil {
		t.Fatal(err)
	}
	// The pause: hold the rest back until the watcher has seen the
	// half-written file.
	wr.waitStat(t, OutcomeIncomplete, 1)
	if _, err := f.Write(next[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ev := wr.r.next(t, 10*time.Second)
	if ev.Kind != LIOChanged || ev.Source != "fsnotify" {
		t.Fatalf("event = %v, want lio-changed from fsnotify", ev)
	}
	if want := ContentDigest(next); ev.Digest != want {
		t.Errorf("digest = %s, want the final content's %s", ev.Digest, want)
	}
	ev.Done(nil)
	// The write of the second half may be reported again; never a
	// half-written content.
	for _, ev := range wr.r.drain() {
		if ev.Digest != ContentDigest(next) {
			t.Errorf("later event digest = %s, want only the final content's", ev.Digest)
		}
	}
}

func TestWatcherRenameIntoPlace(t *testing.T) {
	wr := startWatcher(t, WatcherConfig{Debounce: 30 * time.Millisecond}, saveconfig(1, 3))
	next := saveconfig(2, 3)
	tmp := wr.path + ".temp" // rtslib >= 2.2
	if err := os.WriteFile(tmp, next, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, wr.path); err != nil {
		t.Fatal(err)
	}
	ev := wr.r.next(t, 10*time.Second)
	if ev.Kind != LIOChanged || ev.Digest != ContentDigest(next) {
		t.Errorf("event = %v, want lio-changed with digest %s", ev, ContentDigest(next))
	}
}

func TestWatcherIgnoresOtherFilesReportsSameContent(t *testing.T) {
	initial := saveconfig(1, 3)
	wr := startWatcher(t, WatcherConfig{Debounce: 30 * time.Millisecond}, initial)
	for _, name := range []string{"other.json", "saveconfig.json.temp", "saveconfig.json~"} {
		if err := os.WriteFile(filepath.Join(wr.dir, name), saveconfig(9, 1), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wr.waitStat(t, OutcomeIgnored, 3)
	wr.r.noneQueued(t, LIOChanged)
	// The same content written again is reported: in between it may have
	// been different (the agent's save, then an outside undo), and only the
	// consumer knows what it last wrote.
	if err := os.WriteFile(wr.path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	if ev := wr.r.next(t, 10*time.Second); ev.Digest != ContentDigest(initial) {
		t.Errorf("event = %v, want the rewritten content's digest", ev)
	}
	next := saveconfig(2, 3)
	if err := os.WriteFile(wr.path, next, 0o600); err != nil {
		t.Fatal(err)
	}
	if ev := wr.r.next(t, 10*time.Second); ev.Digest != ContentDigest(next) {
		t.Errorf("event = %v, want digest of the new content", ev)
	}
	if got := wr.stat(OutcomeEvent); got != 3 {
		t.Errorf("events = %d, want 3 (baseline, same content, new content)", got)
	}
}

func TestWatcherBurstWithinDebounceIsOneEvent(t *testing.T) {
	const debounce = 400 * time.Millisecond
	wr := startWatcher(t, WatcherConfig{Debounce: debounce}, saveconfig(0, 3))
	var last []byte
	prev := time.Now()
	var maxGap time.Duration
	for i := 1; i <= 50; i++ {
		last = saveconfig(i, 3)
		if err := os.WriteFile(wr.path, last, 0o600); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		maxGap = max(maxGap, now.Sub(prev))
		prev = now
	}
	if maxGap >= debounce/2 {
		t.Skipf("the machine paused %s between two writes, too close to the %s debounce for this test", maxGap, debounce)
	}
	ev := wr.r.next(t, 10*time.Second)
	if ev.Digest != ContentDigest(last) {
		t.Errorf("digest = %s, want the last write's %s", ev.Digest, ContentDigest(last))
	}
	wr.r.noneQueued(t, LIOChanged)
	if e, inc := wr.stat(OutcomeEvent), wr.stat(OutcomeIncomplete); e != 2 || inc != 0 {
		t.Errorf("reads: %d events, %d incomplete; want the baseline and exactly one read for the burst", e, inc)
	}
}

func TestWatcherFileRemovedAndBack(t *testing.T) {
	content := saveconfig(1, 2)
	wr := startWatcher(t, WatcherConfig{Debounce: 20 * time.Millisecond}, content)
	if err := os.Remove(wr.path); err != nil {
		t.Fatal(err)
	}
	wr.waitStat(t, OutcomeMissing, 1)
	if d := wr.w.Digest(); d != "" {
		t.Errorf("Digest() after removal = %q, want empty", d)
	}
	if err := os.WriteFile(wr.path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if ev := wr.r.next(t, 10*time.Second); ev.Digest != ContentDigest(content) {
		t.Errorf("event = %v, want the restored file's digest", ev)
	}
}

func TestWatcherInvalidFileIsNotAnEvent(t *testing.T) {
	wr := startWatcher(t, WatcherConfig{Debounce: 20 * time.Millisecond}, saveconfig(1, 2))
	if err := os.WriteFile(wr.path, []byte(`{"storage_objects": "nope"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	wr.waitStat(t, OutcomeInvalid, 1)
	wr.r.noneQueued(t, LIOChanged)
}

func TestWatcherWaitsForDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "target")
	path := filepath.Join(dir, "saveconfig.json")
	w, err := NewWatcher(WatcherConfig{Path: path, Debounce: 20 * time.Millisecond, DirPoll: 10 * time.Millisecond}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, w, 4)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The baseline read finds no file once the directory is watched.
	testutil.WaitFor(t, 10*time.Second, "the directory watched", func() error {
		if statOf(w.Stats(), "saveconfig", OutcomeMissing) == 0 {
			return errors.New("directory not watched yet")
		}
		return nil
	})
	content := saveconfig(1, 1)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if ev := r.next(t, 10*time.Second); ev.Digest != ContentDigest(content) {
		t.Errorf("event = %v", ev)
	}
}
