package lio

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
