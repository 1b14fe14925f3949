package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// DefaultSaveFile is where rtslib keeps LIO's saved configuration.
const DefaultSaveFile = "/etc/target/saveconfig.json"

// ContentDigest is the digest the Watcher reports for saveconfig.json
// content: lower-case hex SHA-256. The agent computes it over the content
// of its own saves to recognise them.
func ContentDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// WatcherConfig configures the saveconfig.json watcher.
type WatcherConfig struct {
	// Path is the file to watch (LIO_SAVE_FILE). Defaults to DefaultSaveFile.
	Path string
	// Debounce is how long the file must stay quiet before it is read.
	// Defaults to 200ms.
	Debounce time.Duration
	// Retries is how many more times a half-written file (lio.ErrIncomplete)
	// is read before giving up until the next change. Defaults to 5.
	Retries int
	// RetryDelay is the wait before the first retry, doubled for each next
	// one. Defaults to 50ms.
	RetryDelay time.Duration
	// DirPoll is how often a missing directory is looked for again.
	// Defaults to 5s.
	DirPoll time.Duration
	// Saved, when set, is the reader of Path shared with the agent: content
	// it has already parsed (the agent's own saves) is recognised by its
	// digest instead of being parsed again.
	Saved *lio.SavedFile
}

// Watcher emits a LIOChanged event when saveconfig.json's content changes:
// it watches the directory (rtslib ≥ 2.2 renames a temp file into place,
// 2.1.75 rewrites the file in place), waits until the file has been quiet
// for the debounce, reads and parses it (retrying a half-written file), and
// emits only when the digest differs from the last one seen.
type Watcher struct {
	cfg    WatcherConfig
	logger *slog.Logger
	stats  counters

	mu   sync.Mutex
	last string // +checklocks:mu; digest last emitted (or read at start)
}

// NewWatcher checks cfg; it does not touch the file system.
func NewWatcher(cfg WatcherConfig, logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Path == "" {
		cfg.Path = DefaultSaveFile
	}
	p, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("events: LIO_SAVE_FILE %q: %w", cfg.Path, err)
	}
	cfg.Path = filepath.Clean(p)
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 50 * time.Millisecond
	}
	if cfg.DirPoll <= 0 {
		cfg.DirPoll = 5 * time.Second
	}
	return &Watcher{cfg: cfg, logger: logger.With("component", "events.watcher", "file", cfg.Path)}, nil
}

// Stats returns the counters (source "saveconfig") by outcome.
func (w *Watcher) Stats() []Stat { return w.stats.snapshot() }

// Digest returns the digest of the content last emitted, or read when
// Start began; "" before that or while the file is missing.
func (w *Watcher) Digest() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Start watches until ctx ends, then returns nil. It emits the content
// found once the directory is watched (so a change made before the watch
// began is not missed), then one event per settled change: after every
// burst of writes, once the debounce has passed and the file parses. It does
// not drop a content equal to one it reported before: the file may have
// changed and changed back in between, and only the consumer knows what it
// last wrote (compare Event.Digest with ContentDigest of your own save).
// A missing directory is waited for. It returns an error only if inotify
// cannot be used.
func (w *Watcher) Start(ctx context.Context, out chan<- Event) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("events: watch %s: %w; raise fs.inotify.max_user_instances", w.cfg.Path, err)
	}
	defer fw.Close()
	dir := filepath.Dir(w.cfg.Path)
	if watching, err := w.watchDir(ctx, fw, dir); !watching {
		return err
	}
	if d, ok := w.read(ctx); ok && !w.emit(ctx, out, d, "fsnotify (baseline)") {
		return nil
	}
	return w.follow(ctx, fw, dir, out)
}

// watchDir adds dir to fw, waiting (polling every DirPoll) while it does
// not exist. It returns false with a nil error when ctx ends first.
func (w *Watcher) watchDir(ctx context.Context, fw *fsnotify.Watcher, dir string) (bool, error) {
	for warned := false; ; {
		err := fw.Add(dir)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("events: watch directory %s: %w; check permissions or raise fs.inotify.max_user_watches", dir, err)
		}
		if !warned {
			w.logger.Warn("directory of saveconfig.json missing; waiting for it", "dir", dir)
			warned = true
		}
		t := time.NewTimer(w.cfg.DirPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, nil
		case <-t.C:
		}
	}
}

// follow emits the file's content after every burst of changes, once the
// debounce has passed, until ctx ends (nil) or inotify gives up (an error).
func (w *Watcher) follow(ctx context.Context, fw *fsnotify.Watcher, dir string, out chan<- Event) error {
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return fmt.Errorf("events: inotify watch on %s closed", dir)
			}
			if !w.concerns(ev) {
				continue
			}
			w.invalidateSaved()
			debounce.Reset(w.cfg.Debounce)
		case err, ok := <-fw.Errors:
			if !ok {
				return fmt.Errorf("events: inotify watch on %s closed", dir)
			}
			// An overflow may have hidden a change of the file: read it.
			w.logger.Warn("inotify error; reading saveconfig.json again", "err", err)
			w.invalidateSaved()
			debounce.Reset(w.cfg.Debounce)
		case <-debounce.C:
			d, ok := w.read(ctx)
			if ok && !w.emit(ctx, out, d, "fsnotify") {
				return nil
			}
		}
	}
}

// concerns reports whether ev may have changed the watched file's content.
// Events of other files in the directory are counted as ignored.
func (w *Watcher) concerns(ev fsnotify.Event) bool {
	if filepath.Clean(ev.Name) != w.cfg.Path {
		w.stats.inc("saveconfig", OutcomeIgnored)
		return false
	}
	return ev.Op != fsnotify.Chmod
}

// invalidateSaved makes the shared reader look at the content again, even
// if the write left the file's times and size as they were.
func (w *Watcher) invalidateSaved() {
	if w.cfg.Saved != nil {
		w.cfg.Saved.Invalidate()
	}
}

// emit reports digest d; false means ctx ended.
func (w *Watcher) emit(ctx context.Context, out chan<- Event, d, source string) bool {
	w.setLast(d)
	w.stats.inc("saveconfig", OutcomeEvent)
	w.logger.Debug("saveconfig.json read", "digest", d, "source", source)
	select {
	case out <- Event{Kind: LIOChanged, Source: source, Digest: d, Received: time.Now()}:
		return true
	case <-ctx.Done():
		return false
	}
}

// load returns the digest of the file's content once it parses, through
// the shared reader when there is one.
func (w *Watcher) load() (string, error) {
	if w.cfg.Saved != nil {
		_, digest, err := w.cfg.Saved.Load()
		return digest, err
	}
	data, err := os.ReadFile(w.cfg.Path)
	if err != nil {
		return "", err
	}
	if _, err := lio.Parse(data); err != nil {
		return "", err
	}
	return ContentDigest(data), nil
}

func (w *Watcher) setLast(d string) {
	w.mu.Lock()
	w.last = d
	w.mu.Unlock()
}

// read reads and parses the file, retrying while it is half-written. It
// returns the content's digest, or false when there is nothing to report
// (missing, invalid, still half-written after the retries, ctx ended).
func (w *Watcher) read(ctx context.Context) (string, bool) {
	delay := w.cfg.RetryDelay
	for attempt := 0; ; attempt++ {
		digest, err := w.load()
		if errors.Is(err, fs.ErrNotExist) {
			w.stats.inc("saveconfig", OutcomeMissing)
			w.logger.Warn("saveconfig.json is missing; LIO will come up without LUNs at the next boot unless it is saved again")
			w.setLast("")
			return "", false
		}
		if err == nil {
			return digest, true
		}
		if !errors.Is(err, lio.ErrIncomplete) {
			w.stats.inc("saveconfig", OutcomeInvalid)
			w.logger.Warn("saveconfig.json cannot be read or does not parse; waiting for the next change", "err", err)
			return "", false
		}
		w.stats.inc("saveconfig", OutcomeIncomplete)
		if attempt == w.cfg.Retries {
			w.logger.Warn("saveconfig.json still half-written after retries; waiting for the next change", "attempts", attempt+1)
			return "", false
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", false
		case <-t.C:
		}
		delay *= 2
	}
}
