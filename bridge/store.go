package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultKVBucket is the JetStream key-value bucket the IMS poller keeps its
// snapshot in.
const DefaultKVBucket = "sbps-ims-bridge"

// ImageState is what the IMS poller remembers of one image: a digest of
// each field it watches and of the whole record. Digests, not values, so
// that a snapshot stays small (about 180 bytes per image).
type ImageState struct {
	Digest   string `json:"d"` // the event Digest of the record
	Name     string `json:"n"`
	Arch     string `json:"a"`
	Link     string `json:"l"`
	Metadata string `json:"m"`
}

// Store keeps the IMS poller's snapshot across restarts. Implementations
// must be safe for use by one poller at a time; several bridges may share
// one store (they then write the same values).
type Store interface {
	// Load returns the snapshot by image id. found is false when no
	// snapshot was ever saved (first run: the poller records one and
	// publishes nothing).
	Load(ctx context.Context) (images map[string]ImageState, found bool, err error)
	// Save records images as the snapshot; changed lists the ids whose
	// entry was added, replaced or removed since the last successful Save
	// (a store may write only those).
	Save(ctx context.Context, images map[string]ImageState, changed []string) error
}

const (
	kvImagePrefix = "image."
	kvBaselineKey = "baseline"
)

// KVStore is a Store in a JetStream key-value bucket: one key per image
// ("image.<id>") plus a "baseline" marker written by the first Save, so a
// Save writes only what changed.
type KVStore struct {
	kv jetstream.KeyValue
}

var _ Store = (*KVStore)(nil)

// NewKVStore opens the bucket (DefaultKVBucket when empty), creating it when
// missing (file storage, one revision per key).
func NewKVStore(ctx context.Context, js jetstream.JetStream, bucket string) (*KVStore, error) {
	if bucket == "" {
		bucket = DefaultKVBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "sbps-marshal bridge ims: last IMS snapshot",
			History:     1,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket) // created by another bridge meanwhile
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: JetStream key-value bucket %s (JetStream must be enabled on the server; the account needs KV rights): %w", bucket, err)
	}
	return &KVStore{kv: kv}, nil
}

// Load reads every key of the bucket.
func (s *KVStore) Load(ctx context.Context) (map[string]ImageState, bool, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, false, fmt.Errorf("bridge: reading the IMS snapshot from bucket %s: %w", s.kv.Bucket(), err)
	}
	defer w.Stop()
	images := map[string]ImageState{}
	found := false
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, false, fmt.Errorf("bridge: reading the IMS snapshot from bucket %s: %w", s.kv.Bucket(), ctx.Err())
		}
		if e == nil { // every current value has been delivered
			return images, found, nil
		}
		switch k := e.Key(); {
		case k == kvBaselineKey:
			found = true
		case strings.HasPrefix(k, kvImagePrefix):
			var st ImageState
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				// A damaged entry: forget it; the image comes back as
				// "created", a harmless hint.
				continue
			}
			images[strings.TrimPrefix(k, kvImagePrefix)] = st
		}
	}
}

// Save writes the changed entries, then the baseline marker.
func (s *KVStore) Save(ctx context.Context, images map[string]ImageState, changed []string) error {
	for _, id := range changed {
		var err error
		if st, ok := images[id]; ok {
			b, _ := json.Marshal(st)
			_, err = s.kv.Put(ctx, kvImagePrefix+id, b)
		} else {
			err = s.kv.Purge(ctx, kvImagePrefix+id)
		}
		if err != nil {
			return fmt.Errorf("bridge: saving image %s to bucket %s: %w", id, s.kv.Bucket(), err)
		}
	}
	if _, err := s.kv.Get(ctx, kvBaselineKey); errors.Is(err, jetstream.ErrKeyNotFound) {
		if _, err := s.kv.Put(ctx, kvBaselineKey, []byte("1")); err != nil {
			return fmt.Errorf("bridge: saving the baseline marker to bucket %s: %w", s.kv.Bucket(), err)
		}
	} else if err != nil {
		return fmt.Errorf("bridge: reading the baseline marker of bucket %s: %w", s.kv.Bucket(), err)
	}
	return nil
}

// FileStore is a Store in one JSON file, replaced atomically (write to a
// temporary file, fsync, rename) with mode 0600.
type FileStore struct {
	path string
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a FileStore at path; nothing is read until Load.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

type fileSnapshot struct {
	Version int                   `json:"version"`
	Images  map[string]ImageState `json:"images"`
}

// Load reads the file; a missing file means no snapshot yet.
func (s *FileStore) Load(ctx context.Context) (map[string]ImageState, bool, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]ImageState{}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("bridge: reading the IMS snapshot: %w", err)
	}
	var snap fileSnapshot
	if err := json.Unmarshal(b, &snap); err != nil || snap.Version != 1 {
		return nil, false, fmt.Errorf("bridge: IMS snapshot %s is damaged (remove it: the bridge then records a new one and publishes nothing for that poll): %v", s.path, err)
	}
	if snap.Images == nil {
		snap.Images = map[string]ImageState{}
	}
	return snap.Images, true, nil
}

// Save writes the whole snapshot.
func (s *FileStore) Save(ctx context.Context, images map[string]ImageState, changed []string) error {
	b, err := json.Marshal(fileSnapshot{Version: 1, Images: images})
	if err != nil {
		return fmt.Errorf("bridge: encoding the IMS snapshot: %w", err)
	}
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bridge: creating the directory of the IMS snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ims-bridge-*.tmp")
	if err != nil {
		return fmt.Errorf("bridge: writing the IMS snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("bridge: writing the IMS snapshot %s: %w", s.path, err)
	}
	return nil
}
