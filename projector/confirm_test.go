package projector

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/naming"
)

// imsFleet is n tagged IMS images on the IMS server built to the OpenAPI
// spec, each with its manifest and rootfs in the bucket, and LIO serving
// every one of them.
type imsFleet struct {
	srv    *imstest.Server
	inv    *Inventory
	ids    []string          // sorted
	names  map[string]string // image id -> backstore name
	actual *lio.Config
}

func newIMSFleet(t *testing.T, n int) *imsFleet {
	t.Helper()
	f := &imsFleet{srv: imstest.StartTest(t, imstest.Options{}), names: map[string]string{}}
	c, err := ims.New(ims.Config{BaseURL: f.srv.ImagesURL(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	b := newMemBucket(t)
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) // sorted by i
		f.ids = append(f.ids, id)
		b.put(id+"/rootfs", "r-"+id, 20, 20)
		b.putManifest(id, id+"/rootfs", "r-"+id)
		f.srv.Put(imstest.Image{ID: id, Name: "img", Metadata: map[string]string{"sbps-project": "true"},
			Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json"}})
	}
	f.inv = newInventory(b, nil)
	f.inv.Images = c
	d, err := f.inv.Desired(t.Context(), nil, nil)
	if err != nil || len(d.Projections) != n {
		t.Fatalf("first pass: %d projections, %v; want %d", len(d.Projections), err, n)
	}
	var sos []lio.StorageObject
	for _, name := range sortedKeys(d.Projections) {
		p := d.Projections[name]
		sos = append(sos, backstoreOf(p))
		f.names[p.Users[0].ID] = name
	}
	f.actual = node(nil, sos...)
	f.actual.StorageObjects = sos
	for i := range sos {
		f.actual.StorageObjects[i].Dev = f.inv.Layout.FileFor(d.Projections[sos[i].Name].Key)
	}
	return f
}

// pass runs the inventory and the plan as a full pass does.
func (f *imsFleet) pass(t *testing.T, prev *Desired) (*Desired, *Plan) {
	t.Helper()
	d, err := f.inv.Desired(t.Context(), f.actual, prev)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := MakePlan(d, f.actual, f.inv.Layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d, plan
}

func (f *imsFleet) deletedImages(p *Plan) []string {
	var ids []string
	for id, name := range f.names {
		if slices.ContainsFunc(p.Changes, func(c Change) bool { return c.Action == Delete && c.Name == name }) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// apply removes the planned deletes from LIO, as a pass would.
func (f *imsFleet) apply(p *Plan) {
	f.actual.StorageObjects = slices.DeleteFunc(f.actual.StorageObjects, func(so lio.StorageObject) bool {
		return slices.ContainsFunc(p.Changes, func(c Change) bool { return c.Action == Delete && c.Name == so.Name })
	})
}

// TestNoLUNGoesForAnImageNotConfirmedGone (issue 15, point 2): IMS's
// listing leaves out 20 projected images; the 16 first by id really were
// deleted, the other 4 still exist. Today's code confirmed only the first 16
// and took the rest as gone. Every image a listing leaves out must be
// confirmed gone with its own GET before its LUN goes; the GETs are
// budgeted per pass and the rest are held, visibly, until a later pass
// confirms them.
func TestNoLUNGoesForAnImageNotConfirmedGone(t *testing.T) {
	t.Run("the rest exist", func(t *testing.T) {
		f := newIMSFleet(t, 50)
		prev, _ := f.pass(t, nil)
		gone, hidden := f.ids[:16], f.ids[16:20]
		for _, id := range gone {
			if err := f.srv.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		f.srv.Hide(hidden...)
		for pass := 1; pass <= 3; pass++ {
			d, plan := f.pass(t, prev)
			for _, id := range f.deletedImages(plan) {
				if slices.Contains(hidden, id) {
					t.Fatalf("pass %d deletes the LUN of image %s, which IMS still has (the listing left it out): %s", pass, id, summary(plan))
				}
			}
			for _, id := range hidden {
				if !slices.ContainsFunc(plan.Held, func(c Change) bool { return c.Name == f.names[id] }) {
					t.Errorf("pass %d: image %s's LUN is not held (plan %s)", pass, id, summary(plan))
				}
			}
			f.apply(plan)
			prev = d
		}
	})

	t.Run("budget", func(t *testing.T) {
		f := newIMSFleet(t, 50)
		prev, _ := f.pass(t, nil)
		gone := f.ids[:20]
		for _, id := range gone {
			if err := f.srv.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		getsBefore := f.srv.Stats().Gets
		d, plan := f.pass(t, prev)
		if n := f.srv.Stats().Gets - getsBefore; n != maxConfirmations {
			t.Errorf("first pass sent %d IMS GETs, want the budget of %d", n, maxConfirmations)
		}
		if got, want := f.deletedImages(plan), gone[:maxConfirmations]; !slices.Equal(got, want) {
			t.Errorf("first pass deletes the LUNs of %d images, want the %d confirmed gone: %s", len(got), len(want), summary(plan))
		}
		var held []string
		for _, id := range gone[maxConfirmations:] {
			i := slices.IndexFunc(plan.Held, func(c Change) bool { return c.Name == f.names[id] })
			if i < 0 {
				t.Errorf("image %s (not confirmed yet) is not held: %s", id, summary(plan))
				continue
			}
			held = append(held, id)
			if r := plan.Held[i].Reason; !strings.Contains(r, "not confirmed gone") || !strings.Contains(r, id) {
				t.Errorf("held reason = %q, want it to name image %s and say it is not confirmed gone", r, id)
			}
			if c := plan.Held[i].Code; c != HeldUnconfirmed {
				t.Errorf("held code = %q, want %q", c, HeldUnconfirmed)
			}
		}
		// The status view shows them held, as other held deletes.
		counts := StatusCounts(d, plan, f.actual, f.inv.Layout, testIQN, 1)
		if counts[Held] != len(held) {
			t.Errorf("status counts %v, want %d held", counts, len(held))
		}
		f.apply(plan)

		// The next pass confirms the rest and only then removes them.
		_, plan = f.pass(t, d)
		if got, want := f.deletedImages(plan), gone[maxConfirmations:]; !slices.Equal(got, want) {
			t.Errorf("second pass deletes the LUNs of %q, want %q: %s", got, want, summary(plan))
		}
		if len(plan.Held) != 0 {
			t.Errorf("second pass holds %s, want nothing held", summary(plan))
		}
	})
}

// TestEventPathNoMoreWillingToDeleteThanAFullPass (issue 15, point 3): an
// IMS change event makes the agent GET the image. While the API gateway has
// no route to IMS (Envoy answers 404 with an empty body for every path, as
// during an IMS redeploy) that 404 is not IMS saying the image is gone: the
// event must change nothing, as a full pass holds. IMS's own 404 (its
// problem details) still removes the image's LUN.
func TestEventPathNoMoreWillingToDeleteThanAFullPass(t *testing.T) {
	f := newIMSFleet(t, 4)
	d, _ := f.pass(t, nil)
	id := f.ids[1]

	f.srv.SetGatewayNoRoute(true)
	full, plan := f.pass(t, d)
	if full.RootfsComplete || len(plan.Changes) != 0 || len(plan.Held) != len(f.ids) {
		t.Fatalf("full pass with no route to IMS: complete %v, plan %q; want incomplete, every LUN held", full.RootfsComplete, summary(plan))
	}
	n, err := f.inv.Update(t.Context(), d, f.actual, nil, []string{id})
	if err == nil {
		plan, _ := MakePlan(n, f.actual, f.inv.Layout, opts)
		t.Fatalf("event for image %s with no route to IMS: no error, plan %q; want an error and nothing changed", id, summary(plan))
	}
	if !strings.Contains(err.Error(), "gateway") {
		t.Errorf("event error = %v, want it to say the 404 came from the API gateway", err)
	}

	f.srv.SetGatewayNoRoute(false)
	if err := f.srv.Delete(id); err != nil {
		t.Fatal(err)
	}
	n, err = f.inv.Update(t.Context(), d, f.actual, nil, []string{id})
	if err != nil {
		t.Fatalf("event for image %s deleted in IMS: %v", id, err)
	}
	plan, err = MakePlan(n, f.actual, f.inv.Layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.deletedImages(plan); !slices.Equal(got, []string{id}) {
		t.Errorf("event for image %s deleted in IMS deletes the LUNs of %q, want only its own: %s", id, got, summary(plan))
	}
}

// TestKindFromTheProjectionNotThePath (issue 15, point 4): an IMS rootfs
// whose manifest points under PE/ is a rootfs projection, whatever its path
// says. During an IMS outage it is held like every rootfs, not deleted as a
// PE image no longer in S3's PE listing would be. The kind comes from the
// projection's identity as LIO records it (the backstore name is the hash
// of the PE or the rootfs naming input); a backstore that is not a PE
// projection of its file is treated as a rootfs, the safe answer.
func TestKindFromTheProjectionNotThePath(t *testing.T) {
	srv := imstest.StartTest(t, imstest.Options{})
	c, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	b := newMemBucket(t)
	b.put("PE/shared.squashfs", "pe", 30, 30)
	for i := range 6 { // enough PE images that the mass-delete guard stays out of it
		b.put(fmt.Sprintf("PE/other-%d.squashfs", i), "pe", 30, 30)
	}
	b.put(id1+"/rootfs", "r1", 20, 20)
	b.putManifest(id1, id1+"/rootfs", "r1")
	b.put("PE/"+id2+"/rootfs", "r2", 20, 20)
	b.putManifest(id2, "PE/"+id2+"/rootfs", "r2")
	for _, id := range []string{id1, id2} {
		srv.Put(imstest.Image{ID: id, Name: "img", Metadata: map[string]string{"sbps-project": "true"},
			Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json"}})
	}
	inv := newInventory(b, nil)
	inv.Images = c
	d, err := inv.Desired(t.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sos []lio.StorageObject
	rootfsUnderPE := ""
	for _, name := range sortedKeys(d.Projections) {
		p := d.Projections[name]
		sos = append(sos, lio.StorageObject{Plugin: "fileio", Name: name, Dev: p.File, WWN: p.ID.WWN, Size: &p.Size})
		if p.Kind == Rootfs && p.Key == "PE/"+id2+"/rootfs" {
			rootfsUnderPE = name
		}
	}
	if rootfsUnderPE == "" {
		t.Fatalf("image %s (rootfs under PE/) is not projected as a rootfs: %+v", id2, d.Projections)
	}
	// A backstore with no record: a name that is no projection's identity.
	sos = append(sos, fileio("0123456789abcde", inv.Layout.FileFor("PE/unknown.squashfs"), "0123456789abcde0123456789abcde0", 5))
	actual := node(nil, sos...)

	// IMS goes down, and the PE image PE/shared.squashfs is deleted in S3.
	delete(b.objs, "PE/shared.squashfs")
	srv.FailNext(1000, 503)
	d2, err := inv.Desired(t.Context(), actual, d)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := MakePlan(d2, actual, inv.Layout, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range plan.Changes {
		if ch.Action == Delete && ch.Name != naming.For(naming.PEInput("boot-images", "PE/shared.squashfs")).Name {
			t.Errorf("IMS down: plan deletes %s (%s); only the PE image may go: %s", ch.Name, ch.Dev, summary(plan))
		}
	}
	for _, name := range []string{rootfsUnderPE, "0123456789abcde"} {
		if !slices.ContainsFunc(plan.Held, func(c Change) bool {
			return c.Name == name && strings.Contains(c.Reason, "IMS information is incomplete")
		}) {
			t.Errorf("IMS down: %s is not held as a rootfs: %s", name, summary(plan))
		}
	}
	entries := StatusOf(d2, plan, actual, inv.Layout, testIQN, 1)
	for _, e := range entries {
		if e.Backstore == rootfsUnderPE && e.Kind != Rootfs {
			t.Errorf("status shows %s as %s, want rootfs", rootfsUnderPE, e.Kind)
		}
	}
}

// TestOneFileOneProjection (issue 15, point 7): two IMS images name the same
// rootfs, one manifest with the etag quoted. Their naming inputs differ, so
// today they became two backstores over one file, which targetcli refuses
// on every pass. One file is one projection, shown for both images; a
// backstore already serving the file keeps its name (nodes may be booted
// from it), otherwise the identity of the unquoted etag is used.
func TestOneFileOneProjection(t *testing.T) {
	srv := imstest.StartTest(t, imstest.Options{})
	c, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), Token: ims.NoToken{}})
	if err != nil {
		t.Fatal(err)
	}
	b := newMemBucket(t)
	rootfs := id1 + "/rootfs"
	b.put(rootfs, "abc", 20, 20)
	b.putManifest(id1, rootfs, "abc")
	b.putManifest(id2, rootfs, `"abc"`)
	for _, id := range []string{id2, id1} {
		srv.Put(imstest.Image{ID: id, Name: "img-" + id[:4], Metadata: map[string]string{"sbps-project": "true"},
			Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json"}})
	}
	inv := newInventory(b, nil)
	inv.Images = c
	unquoted := naming.For(naming.RootfsInput("s3://boot-images/"+rootfs, "abc")).Name
	quoted := naming.For(naming.RootfsInput("s3://boot-images/"+rootfs, `"abc"`)).Name

	check := func(t *testing.T, actual *lio.Config, want string) {
		t.Helper()
		d, err := inv.Desired(t.Context(), actual, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Projections) != 1 {
			t.Fatalf("Desired = %d projections %q for one rootfs file; want 1", len(d.Projections), sortedKeys(d.Projections))
		}
		p, ok := d.Projections[want]
		if !ok {
			t.Fatalf("projection is %q, want %s", sortedKeys(d.Projections), want)
		}
		var ids []string
		for _, u := range p.Users {
			ids = append(ids, u.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{id2, id1}) {
			t.Errorf("projection %s is shown for images %q, want both %q", want, ids, []string{id2, id1})
		}
	}
	t.Run("nothing projected yet: the unquoted etag's identity", func(t *testing.T) {
		check(t, node(nil), unquoted)
	})
	t.Run("the quoted one already serves the file: it stays", func(t *testing.T) {
		size := int64(20)
		check(t, node(nil, lio.StorageObject{Plugin: "fileio", Name: quoted, Dev: inv.Layout.FileFor(rootfs), WWN: naming.For(naming.RootfsInput("s3://boot-images/"+rootfs, `"abc"`)).WWN, Size: &size}), quoted)
	})
}
