package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// waitLUNs polls saveconfig.json until the managed backstores are exactly ids.
func waitLUNs(t *testing.T, s *rig.Stack, step string, ids ...naming.ID) time.Duration {
	t.Helper()
	var w []string
	for _, id := range ids {
		w = append(w, id.Name)
	}
	slices.Sort(w)
	start := time.Now()
	var got []string
	for time.Since(start) < 30*time.Second {
		if c, err := s.Saved(); err == nil {
			got = got[:0]
			for _, so := range c.StorageObjects {
				if so.Plugin == "fileio" && len(so.Dev) > len(s.Mount()) && so.Dev[:len(s.Mount())] == s.Mount() {
					got = append(got, so.Name)
				}
			}
			slices.Sort(got)
			if slices.Equal(got, w) {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: backstores %v, want %v after 30s", step, got, w)
	return 0
}

func TestEventsDriveProjection(t *testing.T) {
	ctx := t.Context()
	s := startStack(t)
	nc, err := nats.Connect(s.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, "SBPS", []string{"sbps.s3.events", "sbps.ims.events"}); err != nil {
		t.Fatal(err)
	}
	// No periodic resync during the test: only events can cause passes.
	a := newAgent(t, s, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_NATS_STREAM=SBPS")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- a.Run(runCtx, func() { close(ready) }) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-ready

	pagesBefore := a.s3.Stats().ListPages
	key, err := s.PutPE(ctx, "CPE-event.squashfs", []byte("pe image bytes, event driven"))
	if err != nil {
		t.Fatal(err)
	}
	d := waitLUNs(t, s, "upload notification", peID(key))
	t.Logf("S3 upload -> LUN in saveconfig.json: %s", d)
	if p := a.s3.Stats().ListPages - pagesBefore; p != 0 {
		t.Errorf("the upload event caused %d S3 list pages, want none (one HEAD)", p)
	}
	// The pass that projected it was the notification's (the report is
	// stored when the pass returns, just after saveconfig.json is written).
	deadline := time.Now().Add(10 * time.Second)
	for tr := ""; !strings.HasPrefix(tr, "s3-object created s3://boot-images/"+key); tr = a.LastReport().Trigger {
		if time.Now().After(deadline) {
			t.Fatalf("the pass that projected the upload was triggered by %q, want its S3 notification", tr)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Someone deletes the agent's backstore with targetcli behind its back.
	id := peID(key)
	for _, cmd := range []string{"/backstores/fileio delete " + id.Name, "saveconfig"} {
		if out, err := s.Node.Run(ctx, cmd); err != nil {
			t.Fatalf("%s: %v %s", cmd, err, out)
		}
	}
	imsBefore, pagesBefore := s.IMS.Stats().Requests, a.s3.Stats().ListPages
	d = waitLUNs(t, s, "drift repaired", id)
	t.Logf("outside targetcli delete -> repaired: %s", d)
	if n, p := s.IMS.Stats().Requests-imsBefore, a.s3.Stats().ListPages-pagesBefore; n != 0 || p != 0 {
		t.Errorf("repair sent %d IMS requests and %d S3 list pages, want none (repairs use the cached desired state)", n, p)
	}

	if err := s.S3.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	d = waitLUNs(t, s, "delete notification")
	t.Logf("S3 delete -> LUN gone: %s", d)

	// An IMS change event (what `sbps-marshal bridge ims` publishes) for an
	// image that was just tagged: projected after reading that one image,
	// without listing S3 or IMS.
	img, err := s.AddImage(ctx, "cos-event", []byte("rootfs bytes for an IMS event"), false)
	if err != nil {
		t.Fatal(err)
	}
	s.IMS.Tag(img.ID)
	lists, listPages := s.IMS.Stats().Lists, a.s3.Stats().ListPages
	msg, err := imsevent.Encode(imsevent.Event{Version: 1, ID: img.ID, Change: imsevent.Changed, Fields: []string{imsevent.FieldMetadata},
		Digest: imsevent.Digest(img.ID, "tagged"), Time: time.Now(), Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "sbps.ims.events", msg); err != nil {
		t.Fatal(err)
	}
	d = waitLUNs(t, s, "IMS tag event", rootfsID(img))
	t.Logf("IMS change event -> LUN: %s", d)
	if n, p := s.IMS.Stats().Lists-lists, a.s3.Stats().ListPages-listPages; n != 0 || p != 0 {
		t.Errorf("the IMS event caused %d IMS listings and %d S3 list pages, want none", n, p)
	}

	// `sbps-marshal status` shows it.
	entries, _, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.Backstore == rootfsID(img).Name && e.State == projector.Projected && len(e.Images) == 1 && e.Images[0].ID == img.ID {
			found = true
		}
	}
	if !found {
		t.Errorf("status does not show %s projected: %+v", img.ID, entries)
	}
}
