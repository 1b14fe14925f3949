package lio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// SavedFile reads one saveconfig.json for every reader in the agent (the
// driver, the reconciler, the watcher) and does as little as the change
// since the last read allows. A node serving 10,000 images has a 20 MB
// file: reading and hashing it costs about 15 ms, decoding all of it most
// of a second, and the agent reads it several times per event.
//
//   - File unchanged on disk (same inode, size, mtime and ctime, and the
//     last read began well after its last change): the last result, without
//     reading.
//   - Same content (a fast 64-bit hash, then the SHA-256 callers see is
//     not computed again): the last result, without parsing.
//   - Changed content: parsed again, decoding only the storage objects,
//     LUNs and node ACLs whose bytes changed (parseCache).
//
// The *Config it returns is shared by every caller until the file changes,
// and its elements across changes: treat it as read-only. Safe for
// concurrent use; reads are serialised.
type SavedFile struct {
	Path string

	mu      sync.Mutex
	digest  string      // +checklocks:mu; hex SHA-256 of the content cfg was parsed from
	key     elemKey     // +checklocks:mu; fast hash of that content
	cfg     *Config     // +checklocks:mu
	stamp   fileStamp   // +checklocks:mu; of the file cfg was read from
	settled bool        // +checklocks:mu; a later write is sure to change stamp
	buf     []byte      // +checklocks:mu; read buffer, kept between reads
	cache   *parseCache // +checklocks:mu
	reads   int         // +checklocks:mu; files read (for tests)
}

// Load returns the parsed file and the hex SHA-256 of its content (the
// digest events.ContentDigest computes). Errors are those of Load and Parse:
// a half-written file is ErrIncomplete, and it is not cached.
func (f *SavedFile) Load() (*Config, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg != nil && f.settled {
		if st, err := os.Stat(f.Path); err == nil && stampOf(st) == f.stamp {
			return f.cfg, f.digest, nil
		}
	}
	began := time.Now()
	data, stamp, err := f.read()
	if err != nil {
		f.settled = false
		return nil, "", fmt.Errorf("read LIO saved state: %w", err)
	}
	if f.cache == nil {
		f.cache = newParseCache()
	}
	// Whether the content changed is asked of a fast 64-bit hash under a
	// per-process random seed (two versions of the file colliding is a
	// 2^-64 chance); the SHA-256 callers see is computed for new content.
	key := elemKey{h1: maphash.Bytes(f.cache.seeds[0], data), n: len(data)}
	if f.cfg == nil || key != f.key {
		c, err := f.cache.parse(data)
		if err != nil {
			f.settled = false
			return nil, "", fmt.Errorf("%s: %w", f.Path, err)
		}
		sum := sha256.Sum256(data)
		f.cfg, f.digest, f.key = c, hex.EncodeToString(sum[:]), key
	}
	f.stamp, f.settled = stamp, stamp.settledBefore(began)
	return f.cfg, f.digest, nil
}

// Invalidate makes the next Load read the file even if its stamp did not
// change. The watcher calls it for every file system event on the file.
func (f *SavedFile) Invalidate() {
	f.mu.Lock()
	f.settled = false
	f.mu.Unlock()
}

// read reads the whole file into f.buf. The stamp is taken from the open
// file before reading, so a write during the read leaves a stamp that no
// longer matches, and the next Load reads again.
func (f *SavedFile) read() ([]byte, fileStamp, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fileStamp{}, err
	}
	f.reads++
	// The buffer only grows: a file caught while rtslib rewrites it in
	// place is short for a moment, and the next read needs the full size.
	if want := int(st.Size()) + 512; cap(f.buf) < want {
		f.buf = make([]byte, 0, want)
	}
	buf := f.buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		n, err := fh.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fileStamp{}, err
		}
	}
	f.buf = buf
	return buf, stampOf(st), nil
}

// fileStamp is what a write to the file changes: its inode (rtslib ≥ 2.2
// renames a new file into place), size, mtime and ctime (rtslib 2.1.75
// rewrites it in place). ok is false where the platform gives none.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns since the epoch
	ok           bool
}

// settledBefore reports whether a write after t is sure to change the
// stamp. File times come from a clock that ticks every few milliseconds,
// so two writes within one tick can leave the same times (and a rewrite
// the same size): a stamp is trusted only once its times are well before
// the read began (git's "racy clean" rule). Times with no sub-second part
// come from a file system that keeps whole seconds.
func (s fileStamp) settledBefore(t time.Time) bool {
	if !s.ok {
		return false
	}
	margin := 50 * time.Millisecond
	if s.mtime%int64(time.Second) == 0 || s.ctime%int64(time.Second) == 0 {
		margin = 2 * time.Second
	}
	limit := t.Add(-margin).UnixNano()
	return s.mtime < limit && s.ctime < limit
}
