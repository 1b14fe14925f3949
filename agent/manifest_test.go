package agent

import (
	"fmt"
	"slices"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// passLog records, for every pass of the agent, the S3 keys of the events
// taken since the previous pass (batches that asked for nothing included).
type passLog struct {
	mu      gosync.Mutex
	pending []string
	passes  [][]string
	keys    []string // every S3 key taken
}

func (l *passLog) onPass(string, *projector.Report, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.passes = append(l.passes, l.pending)
	l.pending = nil
}

func (l *passLog) onBatch(batch []events.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range batch {
		if ev.Kind == events.S3Object {
			l.pending = append(l.pending, ev.S3.Key)
			l.keys = append(l.keys, ev.S3.Key)
		}
	}
}

// passesWith counts the passes that followed an event for key.
func (l *passLog) passesWith(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, keys := range l.passes {
		if slices.Contains(keys, key) {
			n++
		}
	}
	return n
}

// taken counts the events taken for key.
func (l *passLog) taken(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, k := range l.keys {
		if k == key {
			n++
		}
	}
	return n
}

// waitFor waits up to 30 s for ok; a failure shows the passes seen.
func (l *passLog) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, func() error {
		if ok() {
			return nil
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		return fmt.Errorf("S3 keys before each pass: %q; taken since: %q", l.passes, l.pending)
	})
}

// TestManifestNotificationProjectsTaggedImage (issue 14, point 7): IMS
// writes <image id>/manifest.json when it creates an image, and BOS tags
// images with an IMS PATCH, which makes no S3 event. The real versitygw
// notification of the manifest's upload, on real NATS, makes the agent GET
// that one image from IMS (no listing) and project it, with no IMS bridge
// running and the resync 600 s away. Manifest notifications never delete:
// the image deleted in IMS (IMS's own 404) keeps its LUN on the next one;
// and keys that only look like a manifest reach no IMS request.
func TestManifestNotificationProjectsTaggedImage(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	var log passLog
	a := newAgentWith(t, s, Options{OnPass: log.onPass, OnBatch: log.onBatch}, "SBPS_MARSHAL_RESYNC_INTERVAL=600s", "SBPS_MARSHAL_IMS_TAGGING=true")
	runAgent(t, a)

	// The image exists in IMS, tagged, before its manifest is uploaded: its
	// rootfs first, then the record, then the manifest (what IMS does).
	img := rig.Image{ID: imstest.NewID(), Name: "cos-manifest-event"}
	img.RootfsKey, img.ManifestKey = img.ID+"/rootfs", img.ID+"/manifest.json"
	etag, err := s.S3.Put(ctx, img.RootfsKey, []byte("rootfs bytes announced by a manifest"))
	if err != nil {
		t.Fatal(err)
	}
	img.RootfsETag = strings.Trim(etag, `"`)
	s.IMS.Put(imstest.Image{ID: img.ID, Name: img.Name, Metadata: map[string]string{"sbps-project": "true"},
		Link: &imstest.Link{Type: "s3", Path: "s3://" + s.S3.Bucket() + "/" + img.ManifestKey}})
	manifest := fmt.Sprintf(`{"version":"1.0","created":"%s","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"","link":{"type":"s3","path":"s3://%s/%s","etag":"%s"}}]}`,
		time.Now().UTC().Format("2006-01-02 15:04:05"), s.S3.Bucket(), img.RootfsKey, img.RootfsETag)

	before := s.IMS.Stats()
	start := time.Now()
	if _, err := s.S3.Put(ctx, img.ManifestKey, []byte(manifest)); err != nil {
		t.Fatal(err)
	}
	waitLUNs(t, s, "manifest notification of a tagged image", rootfsID(img))
	t.Logf("manifest upload -> LUN in saveconfig.json: %s (issue 14 asks for at most 2s)", time.Since(start).Round(time.Millisecond))
	after := s.IMS.Stats()
	if n := after.Lists - before.Lists; n != 0 {
		t.Errorf("the manifest notification caused %d IMS listings, want none (one GET of image %s)", n, img.ID)
	}
	if n := after.Gets - before.Gets; n < 1 {
		t.Errorf("the manifest notification caused %d IMS GETs, want one of image %s", n, img.ID)
	}
	log.waitFor(t, "the pass of the manifest's notification", func() bool { return log.passesWith(img.ManifestKey) == 1 })

	// Keys that are not exactly <uuid>/manifest.json: taken, but no IMS
	// request. The PE upload after them marks when they have been handled.
	before = s.IMS.Stats()
	lookAlikes := []string{"deleted/" + img.ManifestKey, img.ID + "/manifest.json.bak", strings.ToUpper(img.ID) + "/manifest.json", "not-a-uuid/manifest.json"}
	for _, key := range lookAlikes {
		if _, err := s.S3.Put(ctx, key, []byte(manifest)); err != nil {
			t.Fatal(err)
		}
	}
	pe, err := s.PutPE(ctx, "marker.squashfs", []byte("marker"))
	if err != nil {
		t.Fatal(err)
	}
	waitLUNs(t, s, "PE marker", rootfsID(img), peID(pe))
	log.waitFor(t, "the PE marker's pass", func() bool { return log.passesWith(pe) == 1 })
	for _, key := range lookAlikes {
		if n := log.taken(key); n != 1 {
			t.Errorf("the agent took %d events for %s before the marker's, want 1", n, key)
		}
	}
	if n := s.IMS.Stats().Gets - before.Gets; n != 0 {
		t.Errorf("keys that only look like an IMS manifest caused %d IMS GETs, want none", n)
	}

	// IMS deletes the image (its own 404); a manifest notification for it
	// must not remove the LUN.
	if err := s.IMS.Delete(img.ID); err != nil {
		t.Fatal(err)
	}
	before = s.IMS.Stats()
	if _, err := s.S3.Put(ctx, img.ManifestKey, []byte(manifest)); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, "the pass of the second manifest notification", func() bool { return log.passesWith(img.ManifestKey) == 2 })
	if n := s.IMS.Stats().Gets - before.Gets; n < 1 {
		t.Errorf("the second manifest notification caused %d IMS GETs, want one", n)
	}
	want(t, s, "after a manifest notification for an image IMS deleted", rootfsID(img), peID(pe))
}
