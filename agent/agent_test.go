package agent

import (
	"flag"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func startStack(t *testing.T) *rig.Stack {
	t.Helper()
	s, err := rig.StartStack(t.Context(), rig.StackOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newAgent(t *testing.T, s *rig.Stack, env ...string) *Agent {
	t.Helper()
	return newAgentWith(t, s, Options{}, env...)
}

func newAgentWith(t *testing.T, s *rig.Stack, o Options, env ...string) *Agent {
	t.Helper()
	var w io.Writer = io.Discard
	if os.Getenv("SBPS_TEST_LOG") != "" {
		w = os.Stderr
	}
	a, _ := newAgentLogged(t, s, o, w, env...)
	return a
}

// newAgentLogged builds an agent on the stack whose log (debug level) goes
// to w, with the stack's configuration plus env.
func newAgentLogged(t *testing.T, s *rig.Stack, o Options, w io.Writer, env ...string) (*Agent, *config.Config) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg, _, err := config.Load(config.Sources{Environ: append(s.AgentEnv(), env...)}, fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckFiles(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.TargetcliEnv == nil {
		o.TargetcliEnv = s.Node.Env()
	}
	a, err := New(t.Context(), cfg, log, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, cfg
}

func sync(t *testing.T, a *Agent, o projector.SyncOptions) *projector.Report {
	t.Helper()
	rep, err := a.SyncOnce(t.Context(), o)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}

// luns returns backstore name -> LUN index for the managed fileio objects in
// saveconfig.json, failing when a backstore has no LUN.
func luns(t *testing.T, s *rig.Stack) map[string]int {
	t.Helper()
	c, err := s.Saved()
	if err != nil {
		t.Fatal(err)
	}
	tgt, _ := c.Target(s.Node.IQN())
	tpg, _ := tgt.TPG(1)
	out := map[string]int{}
	for _, so := range c.StorageObjects {
		if so.Plugin != "fileio" || !strings.HasPrefix(so.Dev, s.Mount()+"/") {
			continue
		}
		l, ok := tpg.LUNFor(so.Path())
		if !ok {
			t.Errorf("backstore %s has no LUN", so.Name)
			continue
		}
		if wb := so.WriteBack; wb == nil || *wb {
			t.Errorf("backstore %s write_back = %v, want false", so.Name, wb)
		}
		out[so.Name] = l.Index
	}
	return out
}

func names(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func want(t *testing.T, s *rig.Stack, step string, ids ...naming.ID) {
	t.Helper()
	var w []string
	for _, id := range ids {
		w = append(w, id.Name)
	}
	slices.Sort(w)
	if got := names(luns(t, s)); !slices.Equal(got, w) {
		t.Fatalf("%s: projected %v, want %v", step, got, w)
	}
	c, _ := s.Saved()
	for _, id := range ids {
		so, ok := c.FileIO(id.Name)
		if ok && so.WWN != id.WWN {
			t.Errorf("%s: backstore %s wwn %s, want %s", step, id.Name, so.WWN, id.WWN)
		}
	}
}

func peID(key string) naming.ID { return naming.For(naming.PEInput("boot-images", key)) }

func rootfsID(img rig.Image) naming.ID {
	return naming.For(naming.RootfsInput("s3://boot-images/"+img.RootfsKey, img.RootfsETag))
}

func TestProjectionLifecycle(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	// lagging is a file s3fs shows at 0 bytes, as it does for a while after an upload.
	var lagging atomic.Pointer[string]
	a := newAgentWith(t, s, Options{Lstat: func(p string) (fs.FileInfo, error) {
		if l := lagging.Load(); l != nil && *l == p {
			return zeroSize{p}, nil
		}
		return os.Lstat(p)
	}})
	data := func(n int) []byte {
		b, err := rig.ImageBytes(t.TempDir(), n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	pe, err := s.PutPE(ctx, "CPE-base.x86_64-24.11.squashfs", data(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	cos, err := s.AddImage(ctx, "cos-2.5", data(96<<10), true)
	if err != nil {
		t.Fatal(err)
	}
	untagged, err := s.AddImage(ctx, "not-for-sbps", data(32<<10), false)
	if err != nil {
		t.Fatal(err)
	}
	rep := sync(t, a, projector.SyncOptions{Trigger: "test"})
	want(t, s, "PE and tagged rootfs", peID(pe), rootfsID(cos))
	if len(rep.Results) != 4 {
		t.Errorf("first pass applied %d ops, want 4 (2 backstores, 2 LUNs)", len(rep.Results))
	}
	if rep := sync(t, a, projector.SyncOptions{}); !rep.Plan.Empty() {
		t.Errorf("second pass planned %d changes, want none", len(rep.Plan.Changes))
	}

	t.Run("tag and untag", func(t *testing.T) {
		s.IMS.Tag(untagged.ID)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "tagged", peID(pe), rootfsID(cos), rootfsID(untagged))
		s.IMS.Untag(untagged.ID)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "untagged", peID(pe), rootfsID(cos))
	})

	t.Run("rebuilt rootfs: new identity replaces the old", func(t *testing.T) {
		old := rootfsID(cos)
		if err := s.ReplaceRootfs(ctx, &cos, data(80<<10)); err != nil {
			t.Fatal(err)
		}
		if rootfsID(cos) == old {
			t.Fatal("new content kept the etag")
		}
		sync(t, a, projector.SyncOptions{})
		want(t, s, "rebuilt", peID(pe), rootfsID(cos))
	})

	t.Run("s3fs lagging: pending until the size matches", func(t *testing.T) {
		key, err := s.PutPE(ctx, "fresh.squashfs", data(40<<10))
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(s.Mount(), key)
		lagging.Store(&file)
		rep := sync(t, a, projector.SyncOptions{})
		want(t, s, "lagging", peID(pe), rootfsID(cos))
		if r := rep.Desired.Pending[peID(key).Name].Reason; !strings.Contains(r, "s3fs shows 0 bytes") {
			t.Errorf("pending reason = %q", r)
		}
		lagging.Store(nil)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "caught up", peID(pe), rootfsID(cos), peID(key))
		s.S3.Delete(ctx, key)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "PE deleted", peID(pe), rootfsID(cos))
	})

	t.Run("bad key and manifest without etag are rejected", func(t *testing.T) {
		if _, err := s.PutPE(ctx, "bad name,with=comma.squashfs", data(1024)); err != nil {
			t.Fatal(err)
		}
		noEtag := imstest.NewID()
		s.S3.Put(ctx, noEtag+"/rootfs", data(1024))
		s.S3.Put(ctx, noEtag+"/manifest.json", []byte(`{"version":"1.0","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","link":{"type":"s3","path":"s3://boot-images/`+noEtag+`/rootfs"}}]}`))
		s.IMS.Put(imstest.Image{ID: noEtag, Name: "no-etag", Metadata: map[string]string{"sbps-project": "true"}, Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + noEtag + "/manifest.json"}})
		rep := sync(t, a, projector.SyncOptions{})
		want(t, s, "rejections", peID(pe), rootfsID(cos))
		var reasons []string
		for _, p := range rep.Desired.Rejected {
			reasons = append(reasons, p.Key+": "+p.Reason)
		}
		joined := strings.Join(reasons, "\n")
		if !strings.Contains(joined, "PE/bad name,with=comma.squashfs: cannot be given to targetcli") || !strings.Contains(joined, "rootfs link has no etag") {
			t.Errorf("rejected:\n%s", joined)
		}
		s.S3.Delete(ctx, "PE/bad name,with=comma.squashfs")
		s.IMS.Delete(noEtag)
	})

	t.Run("IMS down: rootfs projections stay", func(t *testing.T) {
		s.IMS.FailNext(100, 503)
		rep := sync(t, a, projector.SyncOptions{})
		s.IMS.FailNext(0, 0)
		want(t, s, "IMS down", peID(pe), rootfsID(cos))
		if rep.Desired.RootfsComplete {
			t.Error("RootfsComplete = true with IMS answering 503")
		}
	})

	t.Run("S3 down: nothing changes", func(t *testing.T) {
		before, _ := os.ReadFile(s.Node.SaveFile())
		if err := s.S3.Stop(); err != nil {
			t.Fatal(err)
		}
		_, err := a.SyncOnce(ctx, projector.SyncOptions{})
		if err == nil || !strings.Contains(err.Error(), "nothing changes") {
			t.Errorf("sync with S3 down: %v", err)
		}
		after, _ := os.ReadFile(s.Node.SaveFile())
		if string(before) != string(after) {
			t.Error("saveconfig.json changed while S3 was down")
		}
		if err := s.S3.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("empty IMS listing: nothing removed", func(t *testing.T) {
		extra, _ := s.AddImage(ctx, "cos-2.6", data(16<<10), true)
		extra2, _ := s.AddImage(ctx, "cos-2.7", data(16<<10), true)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "three rootfs", peID(pe), rootfsID(cos), rootfsID(extra), rootfsID(extra2))
		// IMS answers with an empty listing, but the images still exist:
		// the listing is partial, even the operator's override removes nothing.
		s.IMS.SetListMode(imstest.ListEmpty)
		rep := sync(t, a, projector.SyncOptions{AllowMassDelete: true})
		want(t, s, "empty listing", peID(pe), rootfsID(cos), rootfsID(extra), rootfsID(extra2))
		if len(rep.Plan.Held) != 3 || !strings.Contains(rep.Plan.Held[0].Reason, "listing is partial") {
			t.Errorf("held = %+v, want the three rootfs held as a partial listing", rep.Plan.Held)
		}
		s.IMS.SetListMode(imstest.ListAll)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "back", peID(pe), rootfsID(cos), rootfsID(extra), rootfsID(extra2))
	})

	t.Run("many images really deleted: mass-delete guard", func(t *testing.T) {
		var gone []rig.Image
		for _, img := range s.IMS.Images() {
			if img.ID != cos.ID && img.Metadata["sbps-project"] == "true" {
				gone = append(gone, rig.Image{ID: img.ID})
			}
		}
		if len(gone) != 2 {
			t.Fatalf("%d other tagged images, want 2", len(gone))
		}
		for _, img := range gone {
			s.IMS.Delete(img.ID)
		}
		s.IMS.Delete(cos.ID)
		rep := sync(t, a, projector.SyncOptions{})
		if len(rep.Plan.Held) != 3 || !strings.Contains(rep.Plan.Held[0].Reason, "--allow-mass-delete") {
			t.Fatalf("held = %+v, want the mass-delete guard's reason naming the override", rep.Plan.Held)
		}
		if len(luns(t, s)) != 4 {
			t.Errorf("projected %v; the guard should keep all four", luns(t, s))
		}
		sync(t, a, projector.SyncOptions{AllowMassDelete: true})
		want(t, s, "operator allowed", peID(pe))
		// Bring the rest of the scenario's state back.
		cos, _ = s.AddImage(ctx, "cos-2.5", data(96<<10), true)
		sync(t, a, projector.SyncOptions{})
		want(t, s, "restored", peID(pe), rootfsID(cos))
	})

	t.Run("foreign backstores untouched", func(t *testing.T) {
		foreign := filepath.Join(t.TempDir(), "scratch.img")
		os.WriteFile(foreign, make([]byte, 4096), 0o644)
		for _, cmd := range []string{
			"/backstores/fileio create name=scratch file_or_dev=" + foreign,
			"/iscsi/" + s.Node.IQN() + "/tpg1/luns create /backstores/fileio/scratch",
			"saveconfig",
		} {
			if out, err := s.Node.Run(ctx, cmd); err != nil {
				t.Fatalf("%s: %v %s", cmd, err, out)
			}
		}
		rep := sync(t, a, projector.SyncOptions{AllowMassDelete: true})
		c, _ := s.Saved()
		if _, ok := c.FileIO("scratch"); !ok {
			t.Error("foreign backstore removed")
		}
		if !slices.Contains(rep.Plan.Foreign, "/backstores/fileio/scratch") {
			t.Errorf("foreign = %v", rep.Plan.Foreign)
		}
	})

	t.Run("status", func(t *testing.T) {
		entries, _, err := a.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var projected int
		for _, e := range entries {
			if e.State == projector.Projected {
				projected++
				if e.LUN == nil || e.WWID == "" || e.Backstore == "" {
					t.Errorf("projected entry lacks identity: %+v", e)
				}
			}
		}
		if projected != 2 {
			t.Errorf("%d projected entries, want 2: %+v", projected, entries)
		}
	})
}

// TestMigrationFromOldAgent: a node whose LUNs the old Python agent made
// (its naming, its three targetcli processes per image) plans zero changes.
func TestMigrationFromOldAgent(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	peKey, err := s.PutPE(ctx, "CPE-base.x86_64-24.11.squashfs", []byte(strings.Repeat("pe", 3000)))
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.AddImage(ctx, "cos", []byte(strings.Repeat("rootfs", 2000)), true)
	if err != nil {
		t.Fatal(err)
	}
	// The old agent: create the backstore (targetcli's default write_back),
	// create the LUN (lowest free index), save; one process each.
	for key, id := range map[string]naming.ID{peKey: peID(peKey), img.RootfsKey: rootfsID(img)} {
		for _, cmd := range []string{
			"/backstores/fileio create " + id.Name + " " + filepath.Join(s.Mount(), key) + " wwn=" + id.WWN,
			"/iscsi/" + s.Node.IQN() + "/tpg1/luns create /backstores/fileio/" + id.Name,
			"saveconfig",
		} {
			if out, err := s.Node.Run(ctx, cmd); err != nil {
				t.Fatalf("%s: %v %s", cmd, err, out)
			}
		}
	}
	before := lunsAny(t, s)
	if len(before) != 2 {
		t.Fatalf("old agent state has %d LUNs, want 2", len(before))
	}
	a := newAgent(t, s)
	rep, err := a.SyncOnce(ctx, projector.SyncOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Plan.Empty() || len(rep.Plan.Held) != 0 {
		t.Fatalf("plan after migration: %+v held %+v, want nothing", rep.Plan.Changes, rep.Plan.Held)
	}
	sync(t, a, projector.SyncOptions{})
	if after := lunsAny(t, s); !sameLUNs(before, after) {
		t.Errorf("LUNs changed: before %v after %v", before, after)
	}
}

// lunsAny is luns without the write_back check (the old agent left
// targetcli's default, write_back=true): storage object path -> LUN index.
func lunsAny(t *testing.T, s *rig.Stack) map[string]int {
	t.Helper()
	return lunsOf(t, s.Node.SaveFile(), s.Node.IQN())
}

// lunsOf maps each LUN's storage object path to its index in tpg1 of
// the target, as saveconfig.json at path has it.
func lunsOf(t *testing.T, path, iqn string) map[string]int {
	t.Helper()
	c, err := lio.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tgt, _ := c.Target(iqn)
	tpg, _ := tgt.TPG(1)
	out := map[string]int{}
	for _, l := range tpg.LUNs {
		out[l.StorageObject] = l.Index
	}
	return out
}

type zeroSize struct{ name string }

func (z zeroSize) Name() string       { return filepath.Base(z.name) }
func (z zeroSize) Size() int64        { return 0 }
func (z zeroSize) Mode() fs.FileMode  { return 0o644 }
func (z zeroSize) ModTime() time.Time { return time.Time{} }
func (z zeroSize) IsDir() bool        { return false }
func (z zeroSize) Sys() any           { return nil }

func sameLUNs(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
