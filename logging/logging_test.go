package logging

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// env is a Getenv over a fixed map.
func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// tempFile is a regular file standing in for stderr, and its JOURNAL_STREAM
// value.
func tempFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func contents(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func logAll(log *slog.Logger) {
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
}

func TestJournalPriorities(t *testing.T) {
	for _, format := range []string{"", FormatAuto, FormatLogfmt, FormatJSON, FormatText} {
		t.Run("format="+format, func(t *testing.T) {
			f, js := tempFile(t)
			logAll(New(f, Options{Format: format, Level: "debug", Getenv: env(map[string]string{"JOURNAL_STREAM": js})}))
			lines := strings.Split(strings.TrimSuffix(contents(t, f), "\n"), "\n")
			want := []string{"<7>", "<6>", "<4>", "<3>"}
			if len(lines) != len(want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
			}
			for i, l := range lines {
				if !strings.HasPrefix(l, want[i]) {
					t.Errorf("line %d = %q, want prefix %s", i, l, want[i])
				}
				if strings.Contains(l, "\x1b[") {
					t.Errorf("line %d = %q has colour codes in the journal", i, l)
				}
			}
		})
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		level slog.Level
		want  int
	}{
		{slog.LevelDebug - 4, 7}, {slog.LevelDebug, 7}, {slog.LevelInfo, 6}, {slog.LevelInfo + 2, 6},
		{slog.LevelWarn, 4}, {slog.LevelError, 3}, {slog.LevelError + 4, 3},
	}
	for _, tt := range tests {
		if got := Priority(tt.level); got != tt.want {
			t.Errorf("Priority(%v) = %d, want %d", tt.level, got, tt.want)
		}
	}
}

func TestJournalStreamMatch(t *testing.T) {
	f, js := tempFile(t)
	other, otherJS := tempFile(t)
	var buf bytes.Buffer
	tests := []struct {
		name string
		w    io.Writer
		js   string
		want bool
	}{
		{"match", f, js, true},
		{"unset", f, "", false},
		{"other inode (stderr redirected, variable inherited)", other, js, false},
		{"other file's stream", f, otherJS, false},
		{"garbage", f, "x:y", false},
		{"no colon", f, strings.ReplaceAll(js, ":", ""), false},
		{"not a file", &buf, js, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Journal(tt.w, env(map[string]string{"JOURNAL_STREAM": tt.js})); got != tt.want {
				t.Errorf("Journal(%s, JOURNAL_STREAM=%q) = %v, want %v", tt.name, tt.js, got, tt.want)
			}
		})
	}
	// Mismatch: plain logfmt with time, no prefix.
	New(other, Options{Getenv: env(map[string]string{"JOURNAL_STREAM": js})}).Error("e")
	got := contents(t, other)
	if strings.HasPrefix(got, "<") || !strings.HasPrefix(got, "time=") || !strings.Contains(got, `level=ERROR msg=e`) {
		t.Errorf("log with JOURNAL_STREAM of another file = %q, want plain logfmt with time", got)
	}
}

func TestJournalOneEntryPerRecord(t *testing.T) {
	for _, format := range []string{FormatLogfmt, FormatJSON, FormatText} {
		t.Run(format, func(t *testing.T) {
			f, js := tempFile(t)
			log := New(f, Options{Format: format, Getenv: env(map[string]string{"JOURNAL_STREAM": js})})
			log.With("component", "x").WithGroup("g").Warn("first line\nsecond line\r\n", "err", "a\nb")
			got := contents(t, f)
			if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
				t.Fatalf("record = %q, want exactly one line", got)
			}
			if !strings.HasPrefix(got, "<4>") || !strings.Contains(got, `first line\nsecond line`) {
				t.Errorf("record = %q, want <4> and the message's newline escaped", got)
			}
			if format != FormatJSON && strings.Contains(got, "time=") {
				t.Errorf("record = %q has a time; journald stamps entries itself", got)
			}
		})
	}
}

func TestNotTerminalNoColour(t *testing.T) {
	for _, format := range []string{FormatAuto, FormatText} {
		f, _ := tempFile(t)
		New(f, Options{Format: format, Getenv: env(nil)}).Error("e", "k", "v")
		if got := contents(t, f); strings.Contains(got, "\x1b[") {
			t.Errorf("LOG_FORMAT=%s to a file = %q, want no colour codes", format, got)
		}
	}
	f, _ := tempFile(t)
	New(f, Options{Getenv: env(nil)}).Info("i")
	if got := contents(t, f); !strings.Contains(got, "level=INFO msg=i") {
		t.Errorf("LOG_FORMAT=auto to a file = %q, want logfmt", got)
	}
}

// openPTY returns the terminal side of a new pseudo-terminal, and the side
// to read what was written to it.
func openPTY(t *testing.T) (tty, ptmx *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here (%v): colour on a terminal is untested", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("ptsname: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

func readSome(t *testing.T, f *os.File) string {
	t.Helper()
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestTerminalColourAndNoColor(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		colour bool
	}{
		{"colour", map[string]string{"TERM": "xterm"}, true},
		{"NO_COLOR=1", map[string]string{"NO_COLOR": "1"}, false},
		{"NO_COLOR empty means unset", map[string]string{"NO_COLOR": ""}, true},
		{"TERM=dumb", map[string]string{"TERM": "dumb"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tty, ptmx := openPTY(t)
			if !isTerminal(tty) {
				t.Fatal("isTerminal(pty) = false")
			}
			New(tty, Options{Getenv: env(tt.env)}).Error("boom", "k", "v")
			got := readSome(t, ptmx)
			if c := strings.Contains(got, "\x1b["); c != tt.colour {
				t.Errorf("on a terminal with %v: %q, colour = %v, want %v", tt.env, got, c, tt.colour)
			}
			if strings.Contains(got, "msg=") || !strings.Contains(got, "boom") {
				t.Errorf("on a terminal: %q, want the text handler's line", got)
			}
		})
	}
}

func TestDevNullIsNotATerminal(t *testing.T) {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Errorf("isTerminal(%s) = true, want false", os.DevNull)
	}
}

func TestLevel(t *testing.T) {
	f, _ := tempFile(t)
	logAll(New(f, Options{Level: "warn", Getenv: env(nil)}))
	got := contents(t, f)
	if strings.Contains(got, "msg=i") || strings.Contains(got, "msg=d") || !strings.Contains(got, "msg=w") {
		t.Errorf("LOG_LEVEL=warn logged %q", got)
	}
}

func TestPriorityPrefix(t *testing.T) {
	f, js := tempFile(t)
	if got := PriorityPrefix(f, slog.LevelError, env(map[string]string{"JOURNAL_STREAM": js})); got != "<3>" {
		t.Errorf("PriorityPrefix(journal, error) = %q, want <3>", got)
	}
	if got := PriorityPrefix(f, slog.LevelError, env(nil)); got != "" {
		t.Errorf("PriorityPrefix(not journal, error) = %q, want \"\"", got)
	}
}
