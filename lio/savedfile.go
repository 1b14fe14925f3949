package lio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
)

// SavedFile reads one saveconfig.json and parses it again only when its
// content changed (compared by SHA-256): reading and hashing 20 MB costs a
// few tens of milliseconds, parsing it most of a second, and the agent
// reads the file several times per pass while it rarely changes in between.
//
// The *Config it returns is shared by every caller until the file changes:
// treat it as read-only. Safe for concurrent use.
type SavedFile struct {
	Path string

	mu     sync.Mutex
	digest string  // hex SHA-256 of the content cfg was parsed from
	cfg    *Config // +checklocks:mu
}

// Load returns the parsed file and the hex SHA-256 of its content (the
// digest events.ContentDigest computes). Errors are those of Load and Parse:
// a half-written file is ErrIncomplete, and it is not cached.
func (f *SavedFile) Load() (*Config, string, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, "", fmt.Errorf("read LIO saved state: %w", err)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	f.mu.Lock()
	if f.cfg != nil && f.digest == digest {
		c := f.cfg
		f.mu.Unlock()
		return c, digest, nil
	}
	f.mu.Unlock()
	c, err := Parse(data)
	if err != nil {
		return nil, digest, fmt.Errorf("%s: %w", f.Path, err)
	}
	f.mu.Lock()
	f.cfg, f.digest = c, digest
	f.mu.Unlock()
	return c, digest, nil
}
