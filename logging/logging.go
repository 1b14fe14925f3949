// Package logging builds sbps-marshal's slog.Logger for where its stderr
// goes: the systemd journal, a terminal, or anything else (a file, a pipe).
//
//   - Journal (JOURNAL_STREAM names stderr's device and inode, as
//     sd-daemon(3) and systemd.exec(5) document): every line starts with its
//     syslog priority, <3> error, <4> warning, <6> info, <7> debug, which
//     journald strips and records as PRIORITY, so `journalctl -p err` shows
//     the agent's errors. A record is always one line, so one journal entry:
//     newlines inside it are escaped (\n). The time is left out (journald
//     stamps every entry) unless the format is json.
//   - Terminal: LOG_FORMAT=auto gives the coloured text handler (tint),
//     without colour when NO_COLOR is set to anything but "" (no-color.org)
//     or TERM=dumb.
//   - Anything else: logfmt (slog's TextHandler), never colour codes, even
//     with LOG_FORMAT=text.
//
// A Logger built here is safe for concurrent use; each record is one Write
// to the underlying writer.
package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
)

// Formats of LOG_FORMAT.
const (
	FormatAuto   = "auto"   // text (colour) on a terminal, logfmt otherwise
	FormatText   = "text"   // tint's human-readable lines; colour only on a terminal
	FormatLogfmt = "logfmt" // key=value, slog.TextHandler
	FormatJSON   = "json"   // one JSON object per line, slog.JSONHandler
)

// Options say how to log. The zero value logs logfmt at info level, or
// coloured text on a terminal, and reads the environment with os.Getenv.
type Options struct {
	// Format is LOG_FORMAT: auto, text, logfmt or json. Defaults to auto;
	// an unknown value is logfmt.
	Format string
	// Level is LOG_LEVEL: debug, info, warn or error. Defaults to info; an
	// unknown value is info.
	Level string
	// Getenv reads JOURNAL_STREAM, NO_COLOR and TERM. Defaults to os.Getenv.
	Getenv func(string) string
}

// New returns the logger that writes to w as o says, with syslog priority
// prefixes when w is the journal stream (Journal).
func New(w io.Writer, o Options) *slog.Logger {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(o.Level)); err != nil {
		level = slog.LevelInfo
	}
	journal := Journal(w, getenv)
	terminal := !journal && isTerminal(w)
	format := o.Format
	if format == "" || format == FormatAuto {
		format = FormatLogfmt
		if terminal {
			format = FormatText
		}
	}
	out := w
	var sh *shared
	if journal {
		sh = &shared{w: w}
		out = &sh.buf
	}
	var h slog.Handler
	switch format {
	case FormatJSON:
		h = slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})
	case FormatText:
		h = tint.NewHandler(out, &tint.Options{Level: level, TimeFormat: time.TimeOnly,
			NoColor: !terminal || noColor(getenv), ReplaceAttr: dropTimeIf(journal)})
	default:
		h = slog.NewTextHandler(out, &slog.HandlerOptions{Level: level, ReplaceAttr: dropTimeIf(journal)})
	}
	if journal {
		h = &journalHandler{inner: h, s: sh}
	}
	return slog.New(h)
}

// Journal reports whether w is connected to the systemd journal: it is an
// *os.File whose device and inode are those JOURNAL_STREAM names
// ("<device>:<inode>", decimal), as sd-daemon(3) says to check. A service
// whose stderr was redirected elsewhere inherits JOURNAL_STREAM but fails
// the match.
func Journal(w io.Writer, getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	js := getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	dev, ino, ok := strings.Cut(js, ":")
	if !ok {
		return false
	}
	wantDev, err1 := strconv.ParseUint(dev, 10, 64)
	wantIno, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == wantDev && uint64(st.Ino) == wantIno
}

// PriorityPrefix is "<N>", the syslog priority prefix of level l, when w
// is the journal stream (Journal), else "": for lines written to stderr
// without the logger (a command's fatal error) that must still reach
// `journalctl -p err`.
func PriorityPrefix(w io.Writer, l slog.Level, getenv func(string) string) string {
	if !Journal(w, getenv) {
		return ""
	}
	return fmt.Sprintf("<%d>", Priority(l))
}

// Priority is the syslog priority journald records for level l
// (sd-daemon(3)): 3 error, 4 warning, 6 info, 7 debug.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// noColor is NO_COLOR set and not empty (no-color.org), or TERM=dumb.
func noColor(getenv func(string) string) bool {
	return getenv("NO_COLOR") != "" || getenv("TERM") == "dumb"
}

func dropTimeIf(journal bool) func([]string, slog.Attr) slog.Attr {
	if !journal {
		return nil
	}
	return func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
}

// shared is the state every handler derived from one journalHandler uses:
// the inner handler formats into buf under mu, Handle prefixes and writes.
type shared struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

// journalHandler prefixes each record with its syslog priority and keeps it
// on one line.
type journalHandler struct {
	inner slog.Handler // writes into s.buf
	s     *shared
}

var _ slog.Handler = (*journalHandler)(nil)

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	line := bytes.TrimRight(h.s.buf.Bytes(), "\n")
	out := make([]byte, 0, len(line)+8)
	out = fmt.Appendf(out, "<%d>", Priority(r.Level))
	out = appendOneLine(out, line)
	out = append(out, '\n')
	_, err := h.s.w.Write(out)
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), s: h.s}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), s: h.s}
}

// appendOneLine appends line with CR and LF escaped as \r and \n, so that
// journald keeps it as one entry. logfmt and JSON already quote them inside
// values; the text handler does not escape a message.
func appendOneLine(out, line []byte) []byte {
	for _, c := range line {
		switch c {
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		default:
			out = append(out, c)
		}
	}
	return out
}
