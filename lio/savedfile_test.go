package lio

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSavedFileParsesOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "saveconfig.json")
	first := bigSaveconfig(t, 3)
	if err := os.WriteFile(path, first, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &SavedFile{Path: path}
	c1, d1, err := f.Load()
	if err != nil || len(c1.StorageObjects) != 3 {
		t.Fatalf("Load = %d objects, %v", len(c1.StorageObjects), err)
	}
	// Same content, even rewritten: the same parsed value.
	os.WriteFile(path, first, 0o600)
	c2, d2, err := f.Load()
	if err != nil || c2 != c1 || d2 != d1 {
		t.Fatalf("unchanged content parsed again (same pointer %v, same digest %v, err %v)", c2 == c1, d2 == d1, err)
	}
	// Changed content: parsed again.
	os.WriteFile(path, bigSaveconfig(t, 4), 0o600)
	c3, d3, err := f.Load()
	if err != nil || c3 == c1 || d3 == d1 || len(c3.StorageObjects) != 4 {
		t.Fatalf("changed content: %d objects, same pointer %v, err %v", len(c3.StorageObjects), c3 == c1, err)
	}
	// A torn file is reported, never served from the cache.
	os.WriteFile(path, first[:len(first)/2], 0o600)
	if _, _, err := f.Load(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("torn file: %v, want ErrIncomplete", err)
	}
}

func (f *SavedFile) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// TestSavedFileTrustsASettledStamp: a file last changed well before it was
// read is not read again while its inode, size and times stay; any write
// changes them and is read.
func TestSavedFileTrustsASettledStamp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "saveconfig.json")
	old := time.Now().Add(-time.Hour)
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	write(bigSaveconfig(t, 3))
	f := &SavedFile{Path: path}
	c1, _, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	// The ctime of the write above is recent, so the first stamp is not
	// trusted yet; wait out the margin.
	time.Sleep(60 * time.Millisecond)
	if _, _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	reads := f.readCount()
	for range 3 {
		c, _, err := f.Load()
		if err != nil || c != c1 {
			t.Fatalf("Load = %p, %v; want the cached %p", c, err, c1)
		}
	}
	if n := f.readCount() - reads; n != 0 {
		t.Fatalf("settled, unchanged file read %d more times; want 0", n)
	}

	// Same size, same mtime (set back), new content: the ctime moved.
	other := bytes.Replace(bigSaveconfig(t, 3), []byte(`"wwn": "0000000000000000000000000000001"`), []byte(`"wwn": "ffffffffffffffffffffffffffffff1"`), 1)
	write(other)
	c2, _, err := f.Load()
	if err != nil || c2.StorageObjects[1].WWN != "ffffffffffffffffffffffffffffff1" {
		t.Fatalf("rewrite with the same size and mtime not seen: %v", err)
	}

	// Replaced by rename (rtslib ≥ 2.2): a new inode.
	time.Sleep(60 * time.Millisecond)
	f.Load()
	tmp := path + ".temp"
	if err := os.WriteFile(tmp, bigSaveconfig(t, 4), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(tmp, old, old)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if c, _, err := f.Load(); err != nil || len(c.StorageObjects) != 4 {
		t.Fatalf("renamed-in file not seen: %v", err)
	}
}

// TestSavedFileRacyStamp: a stamp taken just after a write is not trusted:
// a second write in the same clock tick with the same size would leave it
// unchanged, so the next Load reads the content again.
func TestSavedFileRacyStamp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "saveconfig.json")
	if err := os.WriteFile(path, bigSaveconfig(t, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &SavedFile{Path: path}
	if _, _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	reads := f.readCount()
	if _, _, err := f.Load(); err != nil {
		t.Fatal(err)
	}
	if f.readCount() != reads+1 {
		t.Fatal("a stamp taken right after a write was trusted; want the file read again")
	}
	// Invalidate (the watcher saw an event) also forces a read.
	time.Sleep(60 * time.Millisecond)
	f.Load()
	reads = f.readCount()
	f.Invalidate()
	f.Load()
	if f.readCount() != reads+1 {
		t.Fatal("Load after Invalidate did not read the file")
	}
}

func TestStampSettledBefore(t *testing.T) {
	now := time.Unix(1_800_000_000, 500_000_000)
	fine := fileStamp{ok: true, mtime: now.Add(-time.Second).UnixNano() + 123, ctime: now.Add(-time.Second).UnixNano() + 123}
	if !fine.settledBefore(now) {
		t.Error("a stamp a second old with ns times is not settled")
	}
	recent := fine
	recent.ctime = now.Add(-10 * time.Millisecond).UnixNano()
	if recent.settledBefore(now) {
		t.Error("a ctime 10ms before the read is settled; want racy")
	}
	coarse := fileStamp{ok: true, mtime: now.Add(-time.Second).Truncate(time.Second).UnixNano(), ctime: now.Add(-time.Second).Truncate(time.Second).UnixNano()}
	if coarse.settledBefore(now) {
		t.Error("whole-second times one second old are settled; want 2s of margin")
	}
	if (fileStamp{}).settledBefore(now) {
		t.Error("no stamp is settled")
	}
}
