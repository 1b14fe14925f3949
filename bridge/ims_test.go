package bridge

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

type imsRig struct {
	nats   *rig.NATS
	nc     *nats.Conn
	ims    *imstest.Server
	client *ims.Client
	msgs   chan *nats.Msg
	stream jetstream.Stream // nil without a stream
}

func newIMSRig(t *testing.T, withStream bool) *imsRig {
	t.Helper()
	r := &imsRig{nats: rig.NATSForTest(t, rig.NATSOptions{}), ims: imstest.StartTest(t, imstest.Options{})}
	r.nc = connect(t, r.nats.ClientURL())
	if withStream {
		r.stream = ensureStream(t, r.nc)
	}
	r.msgs = subscribe(t, r.nc, imsSubject)
	c, err := ims.New(ims.Config{BaseURL: r.ims.ImagesURL(), HTTPClient: r.ims.Client(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	r.client = c
	return r
}

func (r *imsRig) kvStore(t *testing.T) Store {
	t.Helper()
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewKVStore(t.Context(), js, "")
	if err != nil {
		t.Fatalf("NewKVStore: %v", err)
	}
	return s
}

func (r *imsRig) poller(t *testing.T, store Store) *IMSPoller {
	t.Helper()
	cfg := IMSConfig{Source: "bridge test", PublishTimeout: 2 * time.Second}
	if r.stream != nil {
		cfg.Stream = testStream
	}
	p, err := NewIMSPoller(r.nc, r.client, store, cfg, testutil.Logger(t))
	if err != nil {
		t.Fatalf("NewIMSPoller: %v", err)
	}
	return p
}

// got is one published event in a comparable form: "change id fields".
func describeEvent(ev imsevent.Event) string {
	s := string(ev.Change) + " " + ev.ID
	if len(ev.Fields) > 0 {
		s += " " + strings.Join(ev.Fields, ",")
	}
	return s
}

// collect returns the events published so far, decoding each with
// imsevent.Decode and checking its Nats-Msg-Id; it waits until want events
// came, then briefly for any extra.
func (r *imsRig) collect(t *testing.T, want int) []string {
	t.Helper()
	var out []string
	deadline := time.After(5 * time.Second)
	for len(out) < want {
		select {
		case m := <-r.msgs:
			out = append(out, r.decode(t, m))
		case <-deadline:
			t.Fatalf("got %d events %q, want %d", len(out), out, want)
		}
	}
	r.nc.Flush()
	for {
		select {
		case m := <-r.msgs:
			out = append(out, r.decode(t, m))
		case <-time.After(100 * time.Millisecond):
			return out
		}
	}
}

func (r *imsRig) decode(t *testing.T, m *nats.Msg) string {
	t.Helper()
	ev, err := imsevent.Decode(m.Data)
	if err != nil {
		t.Fatalf("imsevent.Decode(%s) refused a published event: %v", m.Data, err)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != ev.DedupID() {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, ev.DedupID())
	}
	if ev.Change != imsevent.Deleted && ev.Digest == "" {
		t.Errorf("event %s has no digest", m.Data)
	}
	return describeEvent(ev)
}

func put(s *imstest.Server, id, name, path, etag string, meta map[string]string) {
	img := imstest.Image{ID: id, Name: name, Metadata: meta}
	if path != "" {
		img.Link = &imstest.Link{Path: path, Etag: etag, Type: "s3"}
	}
	s.Put(img)
}

func TestIMSPollerSequence(t *testing.T) {
	for _, withStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", withStream), func(t *testing.T) {
			r := newIMSRig(t, withStream)
			a, b := imstest.NewID(), imstest.NewID()
			put(r.ims, a, "base", "s3://boot-images/a/manifest.json", "e1", map[string]string{})
			p := r.poller(t, r.kvStore(t))
			res, err := p.PollOnce(t.Context())
			if err != nil || !res.Baseline {
				t.Fatalf("first PollOnce = %+v, %v; want a baseline", res, err)
			}
			if got := r.collect(t, 0); len(got) != 0 {
				t.Fatalf("first run published %q, want nothing", got)
			}
			steps := []struct {
				name   string
				change func()
				want   []string
			}{
				{"nothing", func() {}, nil},
				{"create", func() { put(r.ims, b, "new", "s3://boot-images/b/manifest.json", "e2", map[string]string{}) }, []string{"created " + b}},
				{"tag", func() { r.ims.Tag(b) }, []string{"changed " + b + " metadata"}},
				{"untag", func() { r.ims.Untag(b) }, []string{"changed " + b + " metadata"}},
				{"link etag", func() {
					put(r.ims, b, "new", "s3://boot-images/b/manifest.json", "e3", map[string]string{})
				}, []string{"changed " + b + " link"}},
				{"link removed", func() { put(r.ims, b, "new", "", "", map[string]string{}) }, []string{"changed " + b + " link"}},
				{"rename and relink", func() {
					put(r.ims, a, "renamed", "s3://boot-images/a2/manifest.json", "e9", map[string]string{})
				}, []string{"changed " + a + " link,name"}},
				{"arch", func() {
					img, _ := r.ims.Image(b)
					img.Arch = "aarch64"
					r.ims.Put(img)
				}, []string{"changed " + b + " arch"}},
				{"two at once", func() { r.ims.Tag(a); r.ims.Delete(b) }, []string{"changed " + a + " metadata", "deleted " + b}},
				{"nothing again", func() {}, nil},
			}
			for _, s := range steps {
				s.change()
				if _, err := p.PollOnce(t.Context()); err != nil {
					t.Fatalf("%s: PollOnce: %v", s.name, err)
				}
				if got := r.collect(t, len(s.want)); !slices.Equal(got, s.want) {
					t.Errorf("%s: events %q, want %q", s.name, got, s.want)
				}
			}
			st := p.Stats()
			if st.Created != 1 || st.Changed != 7 || st.Deleted != 1 || st.Images != 1 {
				t.Errorf("Stats = %+v, want created 1, changed 7, deleted 1, images 1", st)
			}
			if r.stream != nil {
				if n := streamMsgs(t, r.stream); n != 9 {
					t.Errorf("stream holds %d messages, want 9", n)
				}
			}
		})
	}
}

func TestIMSPollerNoDeletesFromBadListings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    func(r *imsRig)
		clear    func(r *imsRig)
		wantErr  bool
		deferred bool
	}{
		{"IMS 503", func(r *imsRig) { r.ims.FailNext(1, 503) }, func(*imsRig) {}, true, false},
		{"half listing", func(r *imsRig) { r.ims.SetListMode(imstest.ListDropHalf) }, func(r *imsRig) { r.ims.SetListMode(imstest.ListAll) }, false, true},
		{"empty listing", func(r *imsRig) { r.ims.SetListMode(imstest.ListEmpty) }, func(r *imsRig) { r.ims.SetListMode(imstest.ListAll) }, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newIMSRig(t, true)
			var ids []string
			for i := range 6 {
				id := imstest.NewID()
				ids = append(ids, id)
				put(r.ims, id, fmt.Sprint("img", i), "s3://boot-images/x/manifest.json", "e", map[string]string{})
			}
			p := r.poller(t, r.kvStore(t))
			if _, err := p.PollOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			// A real delete happens while IMS misbehaves.
			r.ims.Delete(ids[5])
			tc.fault(r)
			res, err := p.PollOnce(t.Context())
			if (err != nil) != tc.wantErr {
				t.Fatalf("PollOnce during the fault = %+v, %v; want error %v", res, err, tc.wantErr)
			}
			if got := r.collect(t, 0); len(got) != 0 {
				t.Fatalf("published %q during the fault, want nothing", got)
			}
			if tc.deferred && (!res.Partial || res.Deferred == 0) {
				t.Errorf("PollOnce = %+v, want partial with deferred deletes", res)
			}
			tc.clear(r)
			if _, err := p.PollOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got, want := r.collect(t, 1), []string{"deleted " + ids[5]}; !slices.Equal(got, want) {
				t.Errorf("after the fault: events %q, want %q", got, want)
			}
		})
	}
}

func TestIMSPollerUndecodableRecordIsNotDeleted(t *testing.T) {
	r := newIMSRig(t, false)
	a, b := imstest.NewID(), imstest.NewID()
	put(r.ims, a, "a", "", "", map[string]string{})
	put(r.ims, b, "b", "", "", map[string]string{})
	p := r.poller(t, NewFileStore(filepath.Join(t.TempDir(), "snap.json")))
	if _, err := p.PollOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.ims.PutRaw(b, json.RawMessage(fmt.Sprintf(`{"id":%q,"name":42}`, b)))
	res, err := p.PollOnce(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.collect(t, 0); len(got) != 0 {
		t.Errorf("published %q for a record that does not decode, want nothing", got)
	}
	if !res.Partial || res.Deferred != 1 {
		t.Errorf("PollOnce = %+v, want partial, 1 deferred", res)
	}
}

func TestIMSPollerRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, r *imsRig) func() Store
	}{
		{"kv", func(t *testing.T, r *imsRig) func() Store { return func() Store { return r.kvStore(t) } }},
		{"file", func(t *testing.T, r *imsRig) func() Store {
			path := filepath.Join(t.TempDir(), "ims-bridge.json")
			return func() Store { return NewFileStore(path) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newIMSRig(t, true)
			newStore := tc.store(t, r)
			var ids []string
			for i := range 20 {
				id := imstest.NewID()
				ids = append(ids, id)
				put(r.ims, id, fmt.Sprint("img", i), "s3://boot-images/x/manifest.json", "e", map[string]string{})
			}
			p1 := r.poller(t, newStore())
			if _, err := p1.PollOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			r.ims.Tag(ids[0])
			if _, err := p1.PollOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := r.collect(t, 1); len(got) != 1 {
				t.Fatalf("before restart: %q, want 1 event", got)
			}
			// The bridge is down while these happen.
			c := imstest.NewID()
			put(r.ims, c, "while-down", "", "", map[string]string{})
			r.ims.Delete(ids[1])
			p2 := r.poller(t, newStore())
			res, err := p2.PollOnce(t.Context())
			if err != nil || res.Baseline {
				t.Fatalf("PollOnce after restart = %+v, %v; want no baseline", res, err)
			}
			want := []string{"created " + c, "deleted " + ids[1]}
			if got := r.collect(t, 2); !slices.Equal(got, want) {
				t.Errorf("after restart: %q, want %q (only what changed while down)", got, want)
			}
		})
	}
}

func TestIMSPollerHADuplicatesDropped(t *testing.T) {
	r := newIMSRig(t, true)
	a := imstest.NewID()
	put(r.ims, a, "a", "", "", map[string]string{})
	p1, p2 := r.poller(t, NewFileStore(filepath.Join(t.TempDir(), "1.json"))), r.poller(t, NewFileStore(filepath.Join(t.TempDir(), "2.json")))
	for _, p := range []*IMSPoller{p1, p2} {
		if _, err := p.PollOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	r.ims.Tag(a)
	for _, p := range []*IMSPoller{p1, p2} {
		if _, err := p.PollOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := streamMsgs(t, r.stream); n != 1 {
		t.Errorf("stream holds %d messages after two bridges published the same change, want 1", n)
	}
	if d := p1.Stats().Duplicates + p2.Stats().Duplicates; d != 1 {
		t.Errorf("duplicates = %d, want 1", d)
	}
}

func TestIMSPollerNATSDown(t *testing.T) {
	r := newIMSRig(t, true)
	a := imstest.NewID()
	put(r.ims, a, "a", "", "", map[string]string{})
	p := r.poller(t, r.kvStore(t))
	if _, err := p.PollOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.ims.Tag(a)
	r.nats.Shutdown()
	if _, err := p.PollOnce(t.Context()); err == nil {
		t.Fatal("PollOnce with NATS down succeeded, want an error")
	}
	if err := r.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, r.nc)
	testutil.WaitFor(t, 15*time.Second, "a poll that publishes", func() error { _, err := p.PollOnce(t.Context()); return err })
	if got, want := r.collect(t, 1), []string{"changed " + a + " metadata"}; !slices.Equal(got, want) {
		t.Errorf("after NATS came back: %q, want %q", got, want)
	}
	if s := p.Stats(); s.PublishErrors == 0 {
		t.Errorf("Stats = %+v, want publish errors counted", s)
	}
}

func TestIMSPollerStart(t *testing.T) {
	r := newIMSRig(t, false)
	cfg := IMSConfig{Interval: 50 * time.Millisecond}
	p, err := NewIMSPoller(r.nc, r.client, NewFileStore(filepath.Join(t.TempDir(), "s.json")), cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := contextWithCancel(t)
	go func() { done <- p.Start(ctx) }()
	testutil.WaitFor(t, 5*time.Second, "two polls", func() error {
		if p.Stats().Polls < 2 {
			return fmt.Errorf("polls = %d", p.Stats().Polls)
		}
		return nil
	})
	a := imstest.NewID()
	put(r.ims, a, "a", "", "", nil)
	if got, want := r.collect(t, 1), []string{"created " + a}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
}
