// Command sbps-marshal-soak runs the agent on the rig (NATS with JetStream,
// versitygw, the IMS server, the SPIFFE Workload API, the targetcli
// simulator) for SOAK_DURATION under a steady stream of uploads, tags,
// untags and deletes, with random faults (NATS restarts, IMS 503s, targetcli
// failures, and S3 answering 500 or 503, slower than the agent's S3_TIMEOUT,
// or resetting connections, through a rig.FaultProxy in front of versitygw).
// At the end it checks that LIO holds exactly the desired state
// and prints what happened: events, faults, LUNs wrongly removed (must be 0),
// 0-byte LUNs, and the time to converge.
//
// Usage: SOAK_DURATION=3m go run ./cmd/sbps-marshal-soak [-seed N] [-keep]
// (or `make soak`). It exits 1 if a LUN was wrongly removed or the state did
// not converge.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/events/imsevent"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func main() {
	os.Exit(run())
}

func run() int {
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed (operations and faults)")
	keep := flag.Bool("keep", false, "keep the rig's directory (logs, S3 data, LIO state) afterwards")
	interval := flag.Duration("interval", 150*time.Millisecond, "time between two operations")
	faultEvery := flag.Duration("fault-every", 6*time.Second, "mean time between two faults")
	faultList := flag.String("faults", strings.Join(allFaults, ","), "faults to inject, comma-separated")
	flag.Parse()
	duration := 3 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "sbps-marshal-soak: SOAK_DURATION=%q: want a positive duration such as 3m\n", v)
			return 2
		}
		duration = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := os.MkdirTemp("", "sbps-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	s, err := rig.StartStack(ctx, rig.StackOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sbps-marshal-soak: starting the rig:", err, "(run `make tools` for versitygw)")
		return 2
	}
	defer s.Close()
	kinds := strings.Split(*faultList, ",")
	for _, f := range kinds {
		if !slices.Contains(allFaults, f) {
			fmt.Fprintf(os.Stderr, "sbps-marshal-soak: unknown fault %q (known: %s)\n", f, strings.Join(allFaults, ", "))
			return 2
		}
	}
	// The agent's S3 client goes through a fault proxy; the soak's own
	// uploads and deletes go to versitygw directly, as IMS's and users' do.
	proxy, err := rig.StartFaultProxy(s.S3.Endpoint())
	if err != nil {
		fmt.Fprintln(os.Stderr, "sbps-marshal-soak: starting the S3 fault proxy:", err)
		return 2
	}
	defer proxy.Close()
	sk := &soak{s: s, proxy: proxy, seed: *seed, kinds: kinds, rng: rand.New(rand.NewPCG(*seed, 1)), ops: map[string]int{}, faults: map[string]int{},
		images: map[string]*image{}, pe: map[string]bool{}, lastUndesired: map[string]time.Time{}, seen: map[string]time.Time{}}
	fmt.Printf("soak: seed %d, duration %s, rig in %s\n", *seed, duration, dir)
	code, err := sk.run(ctx, dir, duration, *interval, *faultEvery)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sbps-marshal-soak:", err)
		fmt.Fprintln(os.Stderr, "agent log:", dir+"/agent.log (kept with -keep)")
		return 2
	}
	return code
}

// allFaults are the faults the soak knows how to inject.
var allFaults = []string{"nats-restart", "ims-503", "targetcli-fail", "targetcli-die", "s3-500", "s3-503", "s3-slow", "s3-reset"}

// s3Timeout is the agent's SBPS_MARSHAL_S3_TIMEOUT in the soak (seconds): low,
// so that an s3-slow fault (held far longer) fails a pass instead of
// stalling it for the default 30 s.
const s3Timeout = 2

type image struct {
	img    rig.Image
	tagged bool
}

type soak struct {
	s     *rig.Stack
	proxy *rig.FaultProxy // between the agent and versitygw
	rng   *rand.Rand
	seed  uint64
	kinds []string // faults to inject
	js    jetstream.JetStream

	mu            sync.Mutex
	pe            map[string]bool // PE key -> present
	images        map[string]*image
	lastUndesired map[string]time.Time // backstore name -> last time it stopped being desired
	ops           map[string]int
	faults        map[string]int
	seen          map[string]time.Time // backstore name -> when its current presence (live with a LUN) began
	wrong         map[string]string    // backstore -> why
	zero          map[string]bool
	samples       int
	n             int
	s3ClearAt     time.Time // when the S3 fault set now is cleared (zero: none set)
}

// desired returns the backstore names that should be projected now.
func (k *soak) desiredLocked() map[string]bool {
	out := map[string]bool{}
	for key := range k.pe {
		out[naming.For(naming.PEInput("boot-images", key)).Name] = true
	}
	for _, im := range k.images {
		if im.tagged {
			out[rootfsName(im.img)] = true
		}
	}
	return out
}

func rootfsName(img rig.Image) string {
	return naming.For(naming.RootfsInput("s3://boot-images/"+img.RootfsKey, img.RootfsETag)).Name
}

// change applies f to the model and records which names stopped being desired.
func (k *soak) change(f func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	before := k.desiredLocked()
	f()
	after := k.desiredLocked()
	now := time.Now()
	for name := range before {
		if !after[name] {
			k.lastUndesired[name] = now
		}
	}
}

func (k *soak) run(ctx context.Context, dir string, duration, interval, faultEvery time.Duration) (int, error) {
	nc, err := nats.Connect(k.s.NATS.ClientURL(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	if k.js, err = jetstream.New(nc); err != nil {
		return 0, err
	}
	if _, err := events.EnsureStream(ctx, k.js, "SBPS", []string{"sbps.s3.events", "sbps.ims.events"}); err != nil {
		return 0, err
	}
	// A baseline large enough that the mass-delete guard never stands in
	// the way of the stream of deletes.
	for range 10 {
		if err := k.uploadPE(ctx); err != nil {
			return 0, err
		}
	}
	for range 6 {
		if err := k.addImage(ctx, true); err != nil {
			return 0, err
		}
	}
	logf, err := os.Create(dir + "/agent.log")
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	cfg, _, err := config.Load(config.Sources{Environ: append(k.s.AgentEnv(),
		"SBPS_MARSHAL_NATS_STREAM=SBPS", "SBPS_MARSHAL_RESYNC_INTERVAL=30s", "SBPS_MARSHAL_TARGETCLI_TIMEOUT=3s",
		"SBPS_MARSHAL_S3_HOST="+k.proxy.Host(), "SBPS_MARSHAL_S3_PROTO=http", fmt.Sprintf("SBPS_MARSHAL_S3_TIMEOUT=%d", s3Timeout))}, fs)
	if err != nil {
		return 0, err
	}
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := agent.New(ctx, cfg, log, agent.Options{TargetcliEnv: k.s.Node.Env()})
	if err != nil {
		return 0, err
	}
	defer a.Close()
	runCtx, stopRun := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(runCtx, nil) }()
	defer func() { stopRun(); <-runDone }()

	guardCtx, stopGuard := context.WithCancel(ctx)
	defer stopGuard()
	guardDone := make(chan struct{})
	go k.guard(guardCtx, guardDone)

	start := time.Now()
	end := start.Add(duration)
	nextFault := start.Add(k.jitter(faultEvery))
	var opErrs int
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastReport := start
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-runDone:
			return 0, fmt.Errorf("the agent's Run returned during the soak: %v", err)
		case <-tick.C:
		}
		if err := k.step(ctx); err != nil {
			opErrs++ // e.g. an S3 upload racing a fault; the model was not changed
		}
		if !k.s3ClearAt.IsZero() && time.Now().After(k.s3ClearAt) {
			k.proxy.Set(rig.FaultNone)
			k.s3ClearAt = time.Time{}
		}
		if time.Now().After(nextFault) {
			k.fault(ctx)
			nextFault = time.Now().Add(k.jitter(faultEvery))
		}
		if time.Since(lastReport) > 30*time.Second {
			lastReport = time.Now()
			k.mu.Lock()
			fmt.Printf("soak: %s: %d operations, %d faults, %d desired\n", time.Since(start).Round(time.Second), sum(k.ops), sum(k.faults), len(k.desiredLocked()))
			k.mu.Unlock()
		}
	}
	// The load stops; every fault is cleared. Measure convergence.
	k.s.IMS.FailNext(0, 0)
	k.s.Node.SetFaults(sim.Faults{})
	k.proxy.Set(rig.FaultNone)
	loadEnd := time.Now()
	var last error
	for time.Since(loadEnd) < 90*time.Second {
		if last = k.exact(); last == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	converge := time.Since(loadEnd)
	stopGuard()
	<-guardDone

	k.mu.Lock()
	defer k.mu.Unlock()
	fmt.Printf("\nsoak results (seed %d, duration %s)\n", k.seed, duration)
	fmt.Printf("  operations        %d  %s\n", sum(k.ops), kv(k.ops))
	fmt.Printf("  operation errors  %d  (S3/IMS refused during a fault; retried as new operations)\n", opErrs)
	fmt.Printf("  faults injected   %d  %s\n", sum(k.faults), kv(k.faults))
	ps := k.proxy.Stats()
	fmt.Printf("  S3 fault proxy    %d of the agent's %d S3 requests faulted (S3_TIMEOUT %ds)\n", ps.Faulted, ps.Requests, s3Timeout)
	fmt.Printf("  desired at end    %d backstores (%d PE, %d IMS images, %d tagged)\n", len(k.desiredLocked()), len(k.pe), len(k.images), countTagged(k.images))
	fmt.Printf("  live samples      %d\n", k.samples)
	fmt.Printf("  LUNs wrongly removed  %d\n", len(k.wrong))
	for name, why := range k.wrong {
		fmt.Printf("    %s: %s\n", name, why)
	}
	fmt.Printf("  0-byte LUNs       %d\n", len(k.zero))
	if last != nil {
		fmt.Printf("  convergence       NOT converged 90s after the load stopped: %v\n", last)
	} else {
		fmt.Printf("  convergence       %s after the load stopped (exact: no missing, extra, duplicate or orphaned backstore or LUN)\n", converge.Round(time.Millisecond))
	}
	if mfs, err := a.Metrics().Registry().Gather(); err == nil {
		for _, mf := range mfs {
			name := mf.GetName()
			if !strings.HasSuffix(name, "passes_total") && !strings.HasSuffix(name, "events_total") && !strings.HasSuffix(name, "lio_operations_total") {
				continue
			}
			var parts []string
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetValue())
				}
				parts = append(parts, fmt.Sprintf("%s=%g", strings.Join(labels, "/"), m.GetCounter().GetValue()))
			}
			fmt.Printf("  %-17s %s\n", strings.TrimPrefix(name, "sbps_marshal_"), strings.Join(parts, " "))
		}
	}
	if len(k.wrong) > 0 || len(k.zero) > 0 || last != nil {
		return 1, nil
	}
	return 0, nil
}

func (k *soak) jitter(mean time.Duration) time.Duration {
	return mean/2 + time.Duration(k.rng.Int64N(int64(mean)))
}

// step runs one random operation, as users and IMS would.
func (k *soak) step(ctx context.Context) error {
	k.mu.Lock()
	npe, nimg, ntagged := len(k.pe), len(k.images), countTagged(k.images)
	k.mu.Unlock()
	switch r := k.rng.IntN(100); {
	case r < 25:
		return k.uploadPE(ctx)
	case r < 40 && npe > 10:
		return k.deletePE(ctx)
	case r < 55:
		return k.addImage(ctx, k.rng.IntN(2) == 0)
	case r < 70:
		return k.setTag(ctx, true)
	case r < 85 && ntagged > 5:
		return k.setTag(ctx, false)
	case nimg > 8:
		return k.deleteImage(ctx)
	default:
		return k.uploadPE(ctx)
	}
}

func (k *soak) data() []byte {
	b := make([]byte, 2048+k.rng.IntN(4096))
	for i := range b {
		b[i] = byte(k.rng.Uint32())
	}
	return b
}

func (k *soak) uploadPE(ctx context.Context) error {
	k.mu.Lock()
	k.n++
	name := fmt.Sprintf("soak-%05d.squashfs", k.n)
	k.mu.Unlock()
	key, err := k.s.PutPE(ctx, name, k.data())
	if err != nil {
		return err
	}
	k.change(func() { k.pe[key] = true; k.ops["upload"]++ })
	return nil
}

func (k *soak) deletePE(ctx context.Context) error {
	k.mu.Lock()
	keys := sortedKeys(k.pe)
	k.mu.Unlock()
	key := keys[k.rng.IntN(len(keys))]
	k.change(func() { delete(k.pe, key); k.ops["delete"]++ })
	return k.s.S3.Delete(ctx, key)
}

func (k *soak) addImage(ctx context.Context, tagged bool) error {
	k.mu.Lock()
	k.n++
	name := fmt.Sprintf("soak-image-%05d", k.n)
	k.mu.Unlock()
	img, err := k.s.AddImage(ctx, name, k.data(), tagged)
	if err != nil {
		return err
	}
	k.change(func() { k.images[img.ID] = &image{img: img, tagged: tagged}; k.ops["image"]++ })
	return k.imsEvent(ctx, img.ID, imsevent.Created, nil)
}

func (k *soak) pickImage(tagged bool) *image {
	k.mu.Lock()
	defer k.mu.Unlock()
	var ids []string
	for _, id := range sortedKeys(k.images) {
		if k.images[id].tagged == tagged {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return k.images[ids[k.rng.IntN(len(ids))]]
}

func (k *soak) setTag(ctx context.Context, tag bool) error {
	im := k.pickImage(!tag)
	if im == nil {
		return nil
	}
	var err error
	if tag {
		err = k.s.IMS.Tag(im.img.ID)
		k.change(func() { im.tagged = true; k.ops["tag"]++ })
	} else {
		k.change(func() { im.tagged = false; k.ops["untag"]++ })
		err = k.s.IMS.Untag(im.img.ID)
	}
	if err != nil {
		return err
	}
	return k.imsEvent(ctx, im.img.ID, imsevent.Changed, []string{imsevent.FieldMetadata})
}

func (k *soak) deleteImage(ctx context.Context) error {
	im := k.pickImage(k.rng.IntN(2) == 0)
	if im == nil {
		return nil
	}
	k.change(func() { delete(k.images, im.img.ID); k.ops["delete-image"]++ })
	if err := k.s.IMS.Delete(im.img.ID); err != nil {
		return err
	}
	return k.imsEvent(ctx, im.img.ID, imsevent.Deleted, nil)
}

// imsEvent publishes what `sbps-marshal bridge ims` would. While NATS is
// down it is lost, as the bridge's would be: the resync after the agent
// reconnects must catch up.
func (k *soak) imsEvent(ctx context.Context, id string, change imsevent.Change, fields []string) error {
	k.mu.Lock()
	k.n++
	n := k.n
	k.mu.Unlock()
	msg, err := imsevent.Encode(imsevent.Event{Version: 1, ID: id, Change: change, Fields: fields,
		Digest: imsevent.Digest(id, fmt.Sprint(n)), Time: time.Now(), Source: "soak"})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = k.js.Publish(pctx, "sbps.ims.events", msg)
	return err
}

// fault injects one random fault.
func (k *soak) fault(ctx context.Context) {
	kind := k.kinds[k.rng.IntN(len(k.kinds))]
	switch kind {
	case "nats-restart":
		k.s.NATS.Shutdown()
		time.Sleep(time.Duration(200+k.rng.IntN(1500)) * time.Millisecond) // the outage itself
		if err := k.s.NATS.Restart(); err != nil {
			fmt.Fprintln(os.Stderr, "soak: NATS restart:", err)
		}
	case "ims-503":
		k.s.IMS.FailNext(1+k.rng.IntN(8), 503)
	case "targetcli-fail":
		k.s.Node.SetFaults(sim.Faults{FailAt: 1 + k.rng.IntN(3), FailMessage: "soak: injected failure"})
	case "targetcli-die":
		k.s.Node.SetFaults(sim.Faults{DieAfter: 1 + k.rng.IntN(3)})
	case "s3-500", "s3-503", "s3-slow", "s3-reset":
		// S3 misbehaves for the agent for 1-5 s (one fault at a time: a new
		// one replaces the one set), then is cleared by the main loop.
		switch kind {
		case "s3-500":
			k.proxy.Set(rig.Fault500)
		case "s3-503":
			k.proxy.Set(rig.Fault503)
		case "s3-slow":
			k.proxy.SetSlow(10 * time.Minute) // far beyond S3_TIMEOUT; released when cleared
		case "s3-reset":
			k.proxy.Set(rig.FaultReset)
		}
		k.s3ClearAt = time.Now().Add(time.Duration(1000+k.rng.IntN(4000)) * time.Millisecond)
	}
	k.mu.Lock()
	k.faults[kind]++
	k.mu.Unlock()
}

// guard samples the live LIO state and records LUNs removed while desired
// all along since they were last seen.
func (k *soak) guard(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	k.wrong, k.zero = map[string]string{}, map[string]bool{}
	for ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		c, err := k.s.Node.Live()
		if err != nil {
			continue
		}
		tgt, _ := c.Target(k.s.Node.IQN())
		tpg, ok := tgt.TPG(1)
		if !ok {
			continue
		}
		now := time.Now()
		live := map[string]bool{}
		for _, so := range c.StorageObjects {
			if so.Plugin != "fileio" || !strings.HasPrefix(so.Dev, k.s.Mount()+"/") {
				continue
			}
			if _, ok := tpg.LUNFor(so.Path()); ok {
				live[so.Name] = true
			}
			if so.SizeBytes() <= 0 {
				k.mu.Lock()
				k.zero[so.Name] = true
				k.mu.Unlock()
			}
		}
		k.mu.Lock()
		k.samples++
		desired := k.desiredLocked()
		// k.seen holds when each live LUN's current presence began. A LUN
		// that disappears although it stayed desired during all of that
		// presence was removed wrongly; one that stopped being desired at
		// some point (untag, then tag again) may have been removed rightly.
		for name, since := range k.seen {
			if live[name] {
				continue
			}
			if desired[name] && k.lastUndesired[name].Before(since) {
				k.wrong[name] = fmt.Sprintf("removed at %s, desired all along since it appeared at %s", now.Format(time.TimeOnly), since.Format(time.TimeOnly))
			}
			delete(k.seen, name)
		}
		for name := range live {
			if _, ok := k.seen[name]; !ok {
				k.seen[name] = now
			}
		}
		k.mu.Unlock()
	}
}

// exact reports how the live and saved state differ from the model.
func (k *soak) exact() error {
	k.mu.Lock()
	want := sortedKeys(k.desiredLocked())
	k.mu.Unlock()
	for _, src := range []string{"live", "saved"} {
		c, err := k.s.Node.Live()
		if src == "saved" {
			c, err = k.s.Saved()
		}
		if err != nil {
			return err
		}
		tgt, _ := c.Target(k.s.Node.IQN())
		tpg, ok := tgt.TPG(1)
		if !ok {
			return errors.New(src + ": no tpg1")
		}
		var got []string
		objects := map[string]bool{}
		for _, so := range c.StorageObjects {
			objects[so.Path()] = true
			if so.Plugin == "fileio" && strings.HasPrefix(so.Dev, k.s.Mount()+"/") {
				got = append(got, so.Name)
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: %d backstores, want %d (missing %v, extra %v)", src, len(got), len(want), minus(want, got), minus(got, want))
		}
		per := map[string]int{}
		for _, l := range tpg.LUNs {
			if !objects[l.StorageObject] {
				return fmt.Errorf("%s: lun%d without backstore", src, l.Index)
			}
			per[l.StorageObject]++
		}
		for _, name := range got {
			if per["/backstores/fileio/"+name] != 1 {
				return fmt.Errorf("%s: backstore %s has %d LUNs", src, name, per["/backstores/fileio/"+name])
			}
		}
	}
	return nil
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func kv(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "(" + strings.Join(parts, " ") + ")"
}

func countTagged(m map[string]*image) int {
	n := 0
	for _, im := range m {
		if im.tagged {
			n++
		}
	}
	return n
}
