package bridge

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// countingBody counts the bytes read from a response body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countingTransport counts the response body bytes of every request.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		resp.Body = countingBody{resp.Body, &c.n}
	}
	return resp, err
}

// benchIMS is the IMS server built to the OpenAPI spec holding n image
// records shaped like a CSM system's (name, created, arch, an S3 link with
// a multipart etag, BOS's tag on a third of them), and the real IMS client
// talking to it over loopback HTTP, counting the bytes it receives.
func benchIMS(b *testing.B, n int) (*imstest.Server, *ims.Client, *countingTransport) {
	b.Helper()
	srv := imstest.StartTest(b, imstest.Options{})
	for i := range n {
		id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761%(1<<32), i%0xffff, i%0xfff, i%0xfff, i)
		meta := map[string]string{}
		if i%3 == 0 {
			meta["sbps-project"] = "true"
		}
		srv.Put(imstest.Image{ID: id, Name: fmt.Sprintf("cray-shasta-compute-sles15sp5.x86_64-2.6.%d", i), Metadata: meta,
			Link: &imstest.Link{Type: "s3", Path: "s3://boot-images/" + id + "/manifest.json", Etag: fmt.Sprintf("%032x-%d", i*7919, 1+i%40)}})
	}
	tr := &countingTransport{next: http.DefaultTransport.(*http.Transport).Clone()}
	c, err := ims.New(ims.Config{BaseURL: srv.ImagesURL(), HTTPClient: &http.Client{Transport: tr}, Token: ims.NoToken{}})
	if err != nil {
		b.Fatal(err)
	}
	return srv, c, tr
}

// BenchmarkIMSListing1000 is what one IMS listing costs the cluster at
// 1,000 images, through the real IMS client: time per listing (request,
// transfer, decode; IMS's own database time not included) and the bytes
// received (body-bytes/op). It sets the price of the IMS bridge's poll
// (BRIDGE_POLL_INTERVAL): one listing per poll for the whole cluster.
//
//	go test -run '^$' -bench 'IMSListing|IMSPoll' -benchmem ./bridge/
func BenchmarkIMSListing1000(b *testing.B) {
	const n = 1000
	_, c, tr := benchIMS(b, n)
	b.ReportAllocs()
	tr.n.Store(0)
	for b.Loop() {
		l, err := c.List(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(l.Images) != n {
			b.Fatalf("IMS listing: %d images, want %d", len(l.Images), n)
		}
	}
	b.ReportMetric(float64(tr.n.Load())/float64(b.N), "body-bytes/op")
}

// BenchmarkIMSPoll1000 is one steady-state poll of `sbps-marshal bridge
// ims` at 1,000 images: the listing, the comparison with the snapshot,
// nothing published (nothing changed), on real NATS.
func BenchmarkIMSPoll1000(b *testing.B) {
	const n = 1000
	_, c, tr := benchIMS(b, n)
	bus, err := rig.StartNATS(b.TempDir())
	if err != nil {
		b.Fatalf("StartNATS: %v", err)
	}
	b.Cleanup(bus.Shutdown)
	nc, err := nats.Connect(bus.ClientURL())
	if err != nil {
		b.Fatalf("connect %s: %v", bus.ClientURL(), err)
	}
	b.Cleanup(nc.Close)
	p, err := NewIMSPoller(nc, c, NewFileStore(filepath.Join(b.TempDir(), "snapshot.json")), IMSConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.PollOnce(b.Context()); err != nil { // first run: records the snapshot
		b.Fatal(err)
	}
	b.ReportAllocs()
	tr.n.Store(0)
	for b.Loop() {
		res, err := p.PollOnce(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if res.Listed != n {
			b.Fatalf("poll listed %d images, want %d", res.Listed, n)
		}
	}
	b.ReportMetric(float64(tr.n.Load())/float64(b.N), "body-bytes/op")
}
