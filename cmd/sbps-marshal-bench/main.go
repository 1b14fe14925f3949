// Command sbps-marshal-bench measures the agent at fleet scale on the rig
// (real NATS, real versitygw behind a counting proxy, the IMS server, the
// targetcli simulator with a per-process and a per-object cost) and writes
// docs/BENCHMARKS.md. Run it with `make bench`.
//
// For each scale N it measures: converge from empty (batch and daemon
// mode), the no-change full resync, event → LUN latency for single uploads,
// a burst of uploads published at once, the agent's memory with N
// projections, and the remote requests of the steady state. Scales above
// -real-max use in-memory S3 and IMS stand-ins (package bench) with the
// same request counting; NATS, the simulator and saveconfig.json stay real.
//
// The agent runs in this process (package agent, as `sbps-marshal run`
// builds it), so its passes, LIO calls and profiles can be observed. CPU
// figures are this process's user+system time, which also covers the
// in-process NATS server, IMS server and S3 proxy; versitygw and the
// targetcli simulator are separate processes and not included.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/bench"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

// The old agent's cost model (Cray-HPE/sbps-marshal, marshal/bin/agent.py): three targetcli processes per
// change, a full rescan with one manifest GET per IMS image every 180 s.
const (
	oldProcsPerChange = 3
	oldScan           = 180 * time.Second
)

type options struct {
	scales        []int
	realMax       int
	events        int
	eventsMid     int
	eventsLarge   int
	burst         int
	resyncs       int
	startDelay    time.Duration
	perObject     time.Duration
	steadyEvery   time.Duration
	steadyWindow  time.Duration
	out           string
	profileDir    string
	command       string
	skipDaemon    bool
	goBench       string
	eventsTimeout time.Duration
}

func main() {
	var o options
	scale := flag.String("scale", "100,1000,10000", "image counts N to measure, comma-separated (make bench: BENCH_SCALE)")
	flag.IntVar(&o.realMax, "real-max", 1000, "largest N run against the real versitygw and IMS server; above it S3 and IMS are in memory")
	flag.IntVar(&o.events, "events", 1000, "single-upload events at N < 1000")
	flag.IntVar(&o.eventsMid, "events-mid", 200, "single-upload events at 1000 <= N < 10000")
	flag.IntVar(&o.eventsLarge, "events-large", 100, "single-upload events at N >= 10000 (the simulator takes about 1.5 s per event there)")
	flag.IntVar(&o.burst, "burst", 1000, "uploads published at once")
	flag.IntVar(&o.resyncs, "resyncs", 3, "no-change full resyncs per scale")
	flag.DurationVar(&o.startDelay, "start-delay", 100*time.Millisecond, "simulated targetcli cost per process start")
	flag.DurationVar(&o.perObject, "per-object", 50*time.Microsecond, "simulated targetcli cost per LIO object (storage object or LUN) read at process start")
	flag.DurationVar(&o.steadyEvery, "steady-interval", 5*time.Second, "RESYNC_INTERVAL during the steady-state window")
	flag.DurationVar(&o.steadyWindow, "steady-window", 16*time.Second, "length of the steady-state window")
	flag.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "report file ('' prints only)")
	flag.StringVar(&o.profileDir, "profile-dir", "", "write CPU profiles of the largest scale's resync and event phases here")
	flag.StringVar(&o.goBench, "go-bench", "", "output of `go test -bench ./bench` to include in the report")
	flag.BoolVar(&o.skipDaemon, "skip-daemon", false, "skip the daemon-mode converge")
	kernelBench := flag.String("kernel-bench", "", "comma-separated outputs of `make bench-kernel` (real kernel LIO in User-Mode Linux): write only the kernel report (-kernel-out) from them, run nothing")
	kernelOut := flag.String("kernel-out", "docs/BENCHMARKS-KERNEL.md", "the kernel report's file with -kernel-bench ('' prints only)")
	flag.Parse()
	if *kernelBench != "" {
		if err := kernelReport(*kernelBench, *kernelOut); err != nil {
			fmt.Fprintln(os.Stderr, "kernel report:", err)
			os.Exit(1)
		}
		return
	}
	for _, f := range strings.Split(*scale, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			fmt.Fprintf(os.Stderr, "-scale: %q is not an image count >= 2\n", f)
			os.Exit(2)
		}
		o.scales = append(o.scales, n)
	}
	o.command = "sbps-marshal-bench " + strings.Join(os.Args[1:], " ")
	o.eventsTimeout = 2 * time.Minute
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	}
}

// result holds the figures of one scale.
type result struct {
	N       int
	Backend string

	ConvergeWall, ConvergeLIO, ConvergeCPU, ConvergeSimCPU time.Duration
	ConvergeProcs, ConvergePasses                          int
	ConvergeVia                                            string
	DaemonWall, DaemonCPU                                  time.Duration
	DaemonProcs, DaemonRequests                            int64

	ResyncWall, ResyncCPU                         time.Duration // per pass (median wall, mean CPU)
	ResyncListPages, ResyncIMS, ResyncManifests   float64
	ResyncHeads, ResyncProcs                      float64
	Events                                        int
	EventP50, EventP99, AgentP50, AgentP99        time.Duration
	OwnP50, OwnP99                                time.Duration // from the notification's arrival
	EventCPU                                      time.Duration // agent process CPU per event
	EventLists                                    int64
	EventPasses                                   int
	EventTriggers                                 map[string]int
	BurstWall                                     time.Duration
	BurstProcs, BurstPasses, BurstWindowsMax      int
	HeapInuse, RSS                                uint64
	Projections                                   int
	SteadyWindow                                  time.Duration
	SteadyPasses                                  int
	SteadyS3, SteadyIMS                           int64
	SteadyS3PerPass, SteadyIMSPerPass, SteadyHour float64
	OldHour                                       float64
	SteadyOnlyListings                            bool
}

func run(ctx context.Context, o options) error {
	machine := describeMachine()
	fmt.Print(machine)
	var results []*result
	start := time.Now()
	for i, n := range o.scales {
		fmt.Printf("\n== N=%d\n", n)
		r, err := scale(ctx, o, n, i == len(o.scales)-1)
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
		results = append(results, r)
	}
	report := render(o, machine, results, time.Since(start))
	fmt.Println()
	fmt.Print(report)
	if o.out == "" {
		return nil
	}
	return os.WriteFile(o.out, []byte(report), 0o644)
}

// timed wraps the agent's LIO applier to see its calls.
type timed struct {
	lio.Applier
	mu      sync.Mutex
	busy    time.Duration
	calls   int
	created map[string]time.Time // backstore name -> when Apply returned it created
}

func (t *timed) Apply(ctx context.Context, ops []lio.Op) ([]lio.Result, error) {
	t.mu.Lock()
	app := t.Applier
	t.mu.Unlock()
	start := time.Now()
	res, err := app.Apply(ctx, ops)
	end := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.busy += end.Sub(start)
	t.calls++
	for _, r := range res {
		if r.Op.Kind == lio.CreateBackstore && r.OK() {
			t.created[r.Op.Backstore] = end
		}
	}
	return res, err
}

// swap replaces the LIO behind the timer and returns the previous one.
func (t *timed) swap(app lio.Applier) lio.Applier {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.Applier
	t.Applier = app
	return old
}

func (t *timed) stats() (time.Duration, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.busy, t.calls
}

func (t *timed) createdCount(names map[string]bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := 0
	for n := range names {
		if _, ok := t.created[n]; ok {
			c++
		}
	}
	return c
}

// env is one scale's world: the rig, the S3 and IMS the agent reads
// (real or in memory), and the relay of S3 notifications to the agent.
type env struct {
	o       options
	n       int
	dir     string
	st      *rig.Stack
	mem     bool
	mb      *bench.MemBucket
	mi      *bench.MemIMS
	proxy   *bench.Proxy
	s3Host  string
	nc      *nats.Conn
	relay   *relay
	spanMu  sync.Mutex
	spans   []span      // targetcli processes run since the last drainSpans
	batches []time.Time // when each S3 event of the batches the agent took arrived
}

const agentSubject = "bench.s3.events"

func scale(ctx context.Context, o options, n int, largest bool) (*result, error) {
	dir, err := os.MkdirTemp("", "sbps-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	st, err := rig.StartStack(ctx, rig.StackOptions{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	e := &env{o: o, n: n, dir: dir, st: st, mem: n > o.realMax}
	r := &result{N: n, Backend: "versitygw + IMS server"}
	if e.mem {
		r.Backend = "in-memory S3 + IMS"
	}
	if e.nc, err = nats.Connect(st.NATS.ClientURL()); err != nil {
		return nil, err
	}
	defer e.nc.Close()
	if !e.mem {
		if e.proxy, err = bench.NewProxy(st.S3.Endpoint()); err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: e.proxy}
		go srv.Serve(ln)
		defer srv.Close()
		e.s3Host = ln.Addr().String()
		if e.relay, err = startRelay(e.nc, rig.DefaultSubject, agentSubject); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if err := e.populate(ctx); err != nil {
		return nil, err
	}
	fmt.Printf("   populated %d images (%s) in %s\n", n, r.Backend, time.Since(t0).Round(time.Millisecond))

	// Converge from empty, batch mode, with the simulated targetcli costs.
	if e.mem {
		// The simulator rewrites its whole live state after every command
		// (O(N²) for a batch of N): at this scale the agent converges into
		// the in-memory LIO, and the simulator is then seeded with the result.
		if err := e.convergeMem(ctx, r); err != nil {
			return nil, fmt.Errorf("converge: %w", err)
		}
	}
	if err := st.Node.SetFaults(sim.Faults{StartDelay: o.startDelay, PerObjectDelay: o.perObject}); err != nil {
		return nil, err
	}
	a, tm, err := e.newAgent(ctx, st.Node, "batch", "SBPS_MARSHAL_RESYNC_INTERVAL=1h")
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	procs0, cpu0, child0 := st.Node.Processes(), bench.ProcessCPU(), bench.ChildrenCPU()
	ready := make(chan struct{})
	runDone := make(chan error, 1)
	start := time.Now()
	go func() { runDone <- a.Run(runCtx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-runDone:
		return nil, fmt.Errorf("agent stopped before its first pass: %v", err)
	case <-time.After(10 * time.Minute):
		return nil, errors.New("converge did not finish in 10 minutes")
	}
	if !e.mem {
		r.ConvergeVia = "targetcli simulator"
		r.ConvergeWall = time.Since(start)
		r.ConvergeCPU = bench.ProcessCPU() - cpu0
		r.ConvergeSimCPU = bench.ChildrenCPU() - child0
		r.ConvergeProcs = st.Node.Processes() - procs0
		r.ConvergeLIO, r.ConvergePasses = tm.stats()
	}
	if got, err := managed(st.Node.SaveFile(), st.Mount()); err != nil || got != n {
		return nil, fmt.Errorf("converge: %d managed LUNs in saveconfig.json (err %v), want %d", got, err, n)
	}
	fmt.Printf("   converge (batch, %s): %s wall, %d targetcli processes, %s in LIO (simulator CPU %s), %s agent CPU\n", r.ConvergeVia, r.ConvergeWall.Round(time.Millisecond), r.ConvergeProcs, r.ConvergeLIO.Round(time.Millisecond), r.ConvergeSimCPU.Round(time.Millisecond), r.ConvergeCPU.Round(time.Millisecond))

	if !o.skipDaemon && !e.mem {
		if err := e.convergeDaemon(ctx, r); err != nil {
			return nil, fmt.Errorf("daemon converge: %w", err)
		}
	}
	if err := e.resync(ctx, a, r, largest); err != nil {
		return nil, fmt.Errorf("resync: %w", err)
	}
	if err := e.events(ctx, a, tm, r, largest); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if err := e.burstPhase(ctx, a, tm, r); err != nil {
		return nil, fmt.Errorf("burst: %w", err)
	}
	r.Projections, _ = managed(st.Node.SaveFile(), st.Mount())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapInuse, r.RSS = ms.HeapInuse, rss()
	fmt.Printf("   memory with %d projections: heap in use %d MB, process RSS %d MB\n", r.Projections, r.HeapInuse>>20, r.RSS>>20)
	stopRun()
	if err := <-runDone; err != nil {
		return nil, fmt.Errorf("agent Run: %w", err)
	}
	a.Close()
	if err := e.steady(ctx, r); err != nil {
		return nil, fmt.Errorf("steady state: %w", err)
	}
	return r, nil
}

// populate makes n images: n/2 PE images and the rest IMS rootfs images
// (rootfs, manifest.json, IMS record tagged for projection).
func (e *env) populate(ctx context.Context) error {
	if e.mem {
		e.mb = bench.NewMemBucket(e.st.Mount())
		e.mi = &bench.MemIMS{}
		bench.Populate(e.mb, e.mi, e.n)
		// targetcli (and its simulator) need every backstore's file.
		for i := range e.n / 2 {
			if err := e.memFile(bench.PEKey(i)); err != nil {
				return err
			}
		}
		for i := range e.n - e.n/2 {
			if err := e.memFile(bench.ImageID(i) + "/rootfs"); err != nil {
				return err
			}
		}
		return nil
	}
	jobs := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var err error
				if i < e.n/2 {
					_, err = e.st.S3.Put(ctx, bench.PEKey(i), []byte("pe image "+strconv.Itoa(i)))
				} else {
					_, err = e.st.AddImage(ctx, fmt.Sprintf("image-%05d", i), []byte("rootfs "+strconv.Itoa(i)), true)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range e.n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// newAgent builds an agent for node as `sbps-marshal run` would, reading
// e's S3 and IMS, with its LIO applier timed.
func (e *env) newAgent(ctx context.Context, node *sim.Node, mode string, extra ...string) (*agent.Agent, *timed, error) {
	vars := append(e.st.AgentEnv(),
		"SBPS_MARSHAL_NATS_S3_SUBJECT="+agentSubject,
		"SBPS_MARSHAL_TARGETCLI_MODE="+mode,
		"SBPS_MARSHAL_TARGETCLI_BIN="+e.st.Targetcli,
		"SBPS_MARSHAL_LIO_SAVE_FILE="+node.SaveFile(),
		"SBPS_MARSHAL_TARGETCLID_SOCKET="+node.SocketPath(),
		"SBPS_MARSHAL_TARGET_IQN="+node.IQN(),
		"SBPS_MARSHAL_STATE_DIR="+filepath.Join(node.Dir(), "agent-state"),
		"SBPS_MARSHAL_LUN_REGISTRY=off",
		"SBPS_MARSHAL_METRICS_ADDR=",
	)
	if e.s3Host != "" {
		vars = append(vars, "SBPS_MARSHAL_S3_HOST="+e.s3Host)
	}
	vars = append(vars, extra...)
	cfg, _, err := config.Load(config.Sources{Environ: vars}, flag.NewFlagSet("agent", flag.ContinueOnError))
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.CheckFiles(); err != nil {
		return nil, nil, err
	}
	opts := agent.Options{TargetcliEnv: node.Env(), OnTargetcli: e.addSpan, OnBatch: e.addBatch}
	if e.mem {
		opts.Lstat = e.mb.Lstat
	}
	log := slog.New(slog.DiscardHandler)
	if path := os.Getenv("SBPS_BENCH_AGENT_LOG"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, nil, err
		}
		log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := agent.New(ctx, cfg, log, opts)
	if err != nil {
		return nil, nil, err
	}
	if e.mem {
		a.Reconciler.Inventory.Objects = e.mb
		a.Reconciler.Inventory.Images = e.mi
	}
	tm := &timed{Applier: a.Reconciler.LIO, created: map[string]time.Time{}}
	a.Reconciler.LIO = tm
	return a, tm, nil
}

// convergeMem converges the empty node into the in-memory LIO (one
// Apply = one targetcli batch process), then seeds the simulated node
// with the result so the later phases run against the simulator.
func (e *env) convergeMem(ctx context.Context, r *result) error {
	ml, _, err := bench.NewMemLIO(filepath.Join(e.dir, "memlio"))
	if err != nil {
		return err
	}
	ml.SaveFile, ml.Lstat = e.st.Node.SaveFile(), e.mb.Lstat
	if err := ml.Save(ctx); err != nil {
		return err
	}
	a, tm, err := e.newAgent(ctx, e.st.Node, "batch", "SBPS_MARSHAL_NATS_URL=")
	if err != nil {
		return err
	}
	defer a.Close()
	tm.Applier = ml
	cpu0 := bench.ProcessCPU()
	start := time.Now()
	if _, err := a.SyncOnce(ctx, projector.SyncOptions{Trigger: "converge"}); err != nil {
		return err
	}
	r.ConvergeWall = time.Since(start)
	r.ConvergeCPU = bench.ProcessCPU() - cpu0 - ml.BusyCPU
	r.ConvergeLIO, r.ConvergePasses = tm.stats()
	r.ConvergeProcs = ml.Calls + 1 // + the save `sbps-marshal run` makes at start
	r.ConvergeVia = "in-memory LIO"
	c, err := lio.Load(e.st.Node.SaveFile())
	if err != nil {
		return err
	}
	node, err := sim.NewNode(e.st.Node.Dir(), sim.NodeOptions{Seed: c})
	if err != nil {
		return err
	}
	e.st.Node = node
	return nil
}

// convergeDaemon converges a second, empty node through targetclid.
func (e *env) convergeDaemon(ctx context.Context, r *result) error {
	node, err := sim.NewNode(filepath.Join(e.dir, "lio-daemon"), sim.NodeOptions{Hostname: "ncn-w002"})
	if err != nil {
		return err
	}
	if err := node.SetFaults(sim.Faults{StartDelay: e.o.startDelay, PerObjectDelay: e.o.perObject}); err != nil {
		return err
	}
	dctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- node.ServeDaemon(dctx, "") }()
	defer func() { stop(); <-served }()
	for i := 0; ; i++ {
		if _, err := os.Stat(node.SocketPath()); err == nil {
			break
		}
		if i > 500 {
			return errors.New("targetclid simulator did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a, _, err := e.newAgent(ctx, node, "daemon", "SBPS_MARSHAL_NATS_URL=")
	if err != nil {
		return err
	}
	defer a.Close()
	cpu0 := bench.ProcessCPU()
	start := time.Now()
	if _, err := a.SyncOnce(ctx, projector.SyncOptions{Trigger: "converge"}); err != nil {
		return err
	}
	r.DaemonWall, r.DaemonCPU = time.Since(start), bench.ProcessCPU()-cpu0
	s := a.Driver().Stats()
	r.DaemonProcs, r.DaemonRequests = s.Processes, s.Requests
	if got, err := managed(node.SaveFile(), e.st.Mount()); err != nil || got != e.n {
		return fmt.Errorf("%d managed LUNs (err %v), want %d", got, err, e.n)
	}
	fmt.Printf("   converge (daemon): %s wall, %d targetcli processes, %d targetclid requests, %s CPU\n", r.DaemonWall.Round(time.Millisecond), r.DaemonProcs, r.DaemonRequests, r.DaemonCPU.Round(time.Millisecond))
	return nil
}

// requests returns the S3 requests and IMS requests so far.
func (e *env) requests() (bench.Requests, int64, int64) {
	if e.mem {
		l, g := e.mi.Requests()
		return e.mb.Requests(), l + g, l
	}
	s := e.st.IMS.Stats()
	return e.proxy.Requests(), s.Requests, s.Lists
}

// waitPass asks for nothing; it waits until the agent reports a pass newer
// than prev whose trigger has the prefix.
func waitPass(ctx context.Context, a *agent.Agent, prev *projector.Report, prefix string, limit time.Duration) (*projector.Report, error) {
	deadline := time.Now().Add(limit)
	for {
		if rep := a.LastReport(); rep != nil && rep != prev && strings.HasPrefix(rep.Trigger, prefix) {
			return rep, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q pass within %s", prefix, limit)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// guardSaves is the targetcli processes a no-change full pass runs: one
// saveconfig of LIO's live state to the save guard's staging file, which
// is how the agent checks that LIO still holds what saveconfig.json holds
// (a node whose target.service did not restore LIO is never saved over).
const guardSaves = 1

func (e *env) resync(ctx context.Context, a *agent.Agent, r *result, largest bool) error {
	if largest && e.o.profileDir != "" {
		stop, err := profile(e.o.profileDir, fmt.Sprintf("resync-%d.prof", e.n))
		if err != nil {
			return err
		}
		defer stop()
	}
	s0, ims0, lists0 := e.requests()
	m0 := a.Reconciler.Inventory.Stats().ManifestGets
	procs0 := e.st.Node.Processes()
	cpu0 := bench.ProcessCPU()
	var walls []time.Duration
	for i := range e.o.resyncs {
		prev := a.LastReport()
		a.Resync(fmt.Sprintf("bench resync %d", i))
		rep, err := waitPass(ctx, a, prev, "bench resync", 5*time.Minute)
		if err != nil {
			return err
		}
		if !rep.Plan.Empty() {
			return fmt.Errorf("no-change resync planned %d changes", len(rep.Plan.Changes))
		}
		walls = append(walls, rep.Duration)
	}
	k := float64(e.o.resyncs)
	r.ResyncCPU = (bench.ProcessCPU() - cpu0) / time.Duration(e.o.resyncs)
	slices.Sort(walls)
	r.ResyncWall = walls[len(walls)/2]
	s, imsN, lists := e.requests()
	s = s.Sub(s0)
	r.ResyncListPages, r.ResyncHeads = float64(s.ListPages)/k, float64(s.Heads)/k
	r.ResyncIMS = float64(imsN-ims0) / k
	r.ResyncManifests = float64(a.Reconciler.Inventory.Stats().ManifestGets-m0) / k
	r.ResyncProcs = float64(e.st.Node.Processes()-procs0) / k
	if s.ManifestGets != 0 || r.ResyncManifests != 0 || lists-lists0 != int64(e.o.resyncs) || r.ResyncProcs != guardSaves {
		return fmt.Errorf("per pass: %.1f manifest GETs (S3 saw %d), %.1f IMS listings, %.1f targetcli processes; want 0, 1, %d",
			r.ResyncManifests, s.ManifestGets, float64(lists-lists0)/k, r.ResyncProcs, guardSaves)
	}
	fmt.Printf("   no-change resync: %s wall (median), %s CPU/pass, %.0f S3 list pages, %.0f IMS requests, %.0f manifest GETs, %.0f targetcli processes per pass\n",
		r.ResyncWall.Round(time.Millisecond), r.ResyncCPU.Round(time.Millisecond), r.ResyncListPages, r.ResyncIMS, r.ResyncManifests, r.ResyncProcs)
	return nil
}

// upload makes one new PE image and has its notification reach the agent.
func (e *env) upload(ctx context.Context, key string, i int, publish bool) error {
	if e.mem {
		etag := fmt.Sprintf("%032x", 1<<40+i)
		if err := e.memFile(key); err != nil {
			return err
		}
		e.mb.Put(key, etag, 1<<30, nil)
		if !publish {
			return nil
		}
		return e.nc.Publish(agentSubject, s3Notification(key, etag))
	}
	_, err := e.st.S3.Put(ctx, key, []byte("event image "+key))
	return err
}

// memFile makes the file s3fs would show for a new in-memory object (a
// sparse 1 GiB file): targetcli needs it to exist.
func (e *env) memFile(key string) error {
	p := filepath.Join(e.st.Mount(), key)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(1 << 30)
}

// s3Notification is a versitygw-style ObjectCreated notification.
func s3Notification(key, etag string) []byte {
	b, _ := json.Marshal(map[string]any{"Records": []any{map[string]any{
		"eventVersion": "2.2", "eventSource": "aws:s3", "eventName": "s3:ObjectCreated:Put",
		"eventTime": time.Now().UTC().Format(time.RFC3339Nano),
		"s3": map[string]any{"bucket": map[string]any{"name": "boot-images"},
			"object": map[string]any{"key": key, "size": 1 << 30, "eTag": `"` + etag + `"`}},
	}}})
	return b
}

func (e *env) events(ctx context.Context, a *agent.Agent, tm *timed, r *result, largest bool) error {
	// The simulator at zero modelled cost: what remains is its real work.
	if err := e.st.Node.SetFaults(sim.Faults{}); err != nil {
		return err
	}
	count := e.o.events
	switch {
	case e.n >= 10000:
		count = e.o.eventsLarge
	case e.n >= 1000:
		count = e.o.eventsMid
	}
	if largest && e.o.profileDir != "" {
		stop, err := profile(e.o.profileDir, fmt.Sprintf("event-%d.prof", e.n))
		if err != nil {
			return err
		}
		defer stop()
	}
	s0, _, lists0 := e.requests()
	cpu0 := bench.ProcessCPU()
	e.drainSpans()
	passes := watchPasses(ctx, a)
	var total, agentShare, ownShare []time.Duration
	for i := range count {
		key := fmt.Sprintf("PE/event-%05d.squashfs", i)
		id := naming.For(naming.PEInput("boot-images", key))
		_, calls0 := tm.stats()
		start := time.Now()
		if err := e.upload(ctx, key, i, true); err != nil {
			return err
		}
		uploaded := time.Since(start) // S3's own time (PUT, notification)
		d, err := waitInFile(ctx, e.st.Node.SaveFile(), "/backstores/fileio/"+id.Name+`"`, start, 2*time.Minute)
		if err != nil {
			return fmt.Errorf("event %d (%s): %w", i, key, err)
		}
		// Let the pass finish (read-back, report) before the next upload.
		for deadline := time.Now().Add(2 * time.Minute); ; {
			if _, calls := tm.stats(); calls > calls0 {
				if rep := a.LastReport(); rep != nil && strings.Contains(rep.Trigger, key) {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("event %d: the pass did not finish", i)
			}
			time.Sleep(time.Millisecond)
		}
		procs := e.drainSpans()
		if (i+1)%100 == 0 {
			fmt.Printf("     %d/%d events\n", i+1, count)
		}
		total = append(total, d)
		agentShare = append(agentShare, uncovered(start.Add(uploaded), start.Add(d), procs))
		arrived := e.arrival(start)
		if arrived.IsZero() {
			return fmt.Errorf("event %d: the agent took no batch of events after the upload", i)
		}
		ownShare = append(ownShare, uncovered(arrived, start.Add(d), procs))
	}
	r.Events = count
	r.EventPasses, r.EventTriggers = passes()
	r.EventCPU = (bench.ProcessCPU() - cpu0) / time.Duration(count)
	s, _, lists := e.requests()
	s = s.Sub(s0)
	if s.ListPages != 0 || lists != lists0 {
		return fmt.Errorf("%d events caused %d S3 list pages and %d IMS listings, want none", count, s.ListPages, lists-lists0)
	}
	r.EventLists = s.ListPages
	r.EventP50, r.EventP99 = pct(total, 50), pct(total, 99)
	r.AgentP50, r.AgentP99 = pct(agentShare, 50), pct(agentShare, 99)
	r.OwnP50, r.OwnP99 = pct(ownShare, 50), pct(ownShare, 99)
	fmt.Printf("   agent's own share (from the notification's arrival) p50 %s p90 %s p99 %s max %s\n", r.OwnP50.Round(time.Millisecond), pct(ownShare, 90).Round(time.Millisecond), r.OwnP99.Round(time.Millisecond), slices.Max(ownShare).Round(time.Millisecond))
	fmt.Printf("   agent share p90 %s, max %s\n", pct(agentShare, 90).Round(time.Millisecond), slices.Max(agentShare).Round(time.Millisecond))
	fmt.Printf("   %d passes for %d events: %v\n", r.EventPasses, count, r.EventTriggers)
	fmt.Printf("   event → LUN (%d uploads): p50 %s p99 %s; agent share p50 %s p99 %s; %s agent-process CPU/event\n",
		count, r.EventP50.Round(time.Millisecond), r.EventP99.Round(time.Millisecond), r.AgentP50.Round(time.Millisecond), r.AgentP99.Round(time.Millisecond), r.EventCPU.Round(time.Millisecond))
	return nil
}

func (e *env) burstPhase(ctx context.Context, a *agent.Agent, tm *timed, r *result) error {
	// The simulator rewrites its whole live state after every command: a
	// batch of 2,000 commands takes it minutes. The burst runs against the
	// in-memory LIO (one Apply = one targetcli batch process), taking over
	// from the simulator's saved state and handing back afterwards.
	ml, _, err := bench.NewMemLIO(filepath.Join(e.dir, "burst-memlio"))
	if err != nil {
		return err
	}
	ml.SaveFile = e.st.Node.SaveFile()
	if err := ml.Load(ml.SaveFile); err != nil {
		return err
	}
	real := tm.swap(ml)
	defer func() {
		tm.swap(real)
	}()
	names := map[string]bool{}
	keys := make([]string, e.o.burst)
	for i := range keys {
		keys[i] = fmt.Sprintf("PE/burst-%05d.squashfs", i)
		names[naming.For(naming.PEInput("boot-images", keys[i])).Name] = true
	}
	// Uploads first, their notifications held back; then all at once.
	var held [][]byte
	if e.relay != nil {
		e.relay.hold()
		jobs := make(chan int)
		var wg sync.WaitGroup
		var failed atomic.Value
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					if err := e.upload(ctx, keys[i], i, false); err != nil {
						failed.Store(err)
					}
				}
			}()
		}
		for i := range keys {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		// versitygw publishes after answering; give the last ones a moment.
		for deadline := time.Now().Add(30 * time.Second); e.relay.held() < len(keys) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if h := e.relay.held(); h < len(keys) {
			return fmt.Errorf("versitygw published %d notifications for %d uploads", h, len(keys))
		}
	} else {
		for i, k := range keys {
			etag := fmt.Sprintf("%032x", 1<<41+i)
			if err := e.memFile(k); err != nil {
				return err
			}
			e.mb.Put(k, etag, 1<<30, nil)
			held = append(held, s3Notification(k, etag))
		}
	}
	procs0 := ml.Calls
	_, calls0 := tm.stats()
	s0, _, lists0 := e.requests()
	start := time.Now()
	if e.relay != nil {
		if err := e.relay.release(); err != nil {
			return err
		}
	} else {
		for _, m := range held {
			if err := e.nc.Publish(agentSubject, m); err != nil {
				return err
			}
		}
		if err := e.nc.Flush(); err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(5 * time.Minute); tm.createdCount(names) < len(names); {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d burst uploads projected after 5 minutes (events lost?)", tm.createdCount(names), len(names))
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.BurstWall = time.Since(start)
	_, calls := tm.stats()
	r.BurstPasses = calls - calls0
	r.BurstProcs = ml.Calls - procs0
	s, _, lists := e.requests()
	if s.Sub(s0).ListPages != 0 || lists != lists0 {
		return fmt.Errorf("the burst caused a full listing (%d S3 pages, %d IMS listings): events were not enough", s.Sub(s0).ListPages, lists-lists0)
	}
	c, err := lio.Load(e.st.Node.SaveFile())
	if err != nil {
		return err
	}
	tgt, _ := c.Target(e.st.Node.IQN())
	tpg, _ := tgt.TPG(1)
	byObj := tpg.LUNsByObject()
	for n := range names {
		if _, ok := byObj["/backstores/fileio/"+n]; !ok {
			return fmt.Errorf("burst image %s has no LUN in saveconfig.json", n)
		}
	}
	fmt.Printf("   burst of %d: all projected in %s, %d passes, %d targetcli processes (%.1f per pass)\n",
		len(keys), r.BurstWall.Round(time.Millisecond), r.BurstPasses, r.BurstProcs, float64(r.BurstProcs)/float64(max(1, r.BurstPasses)))
	// Hand the result to the simulator for the later phases.
	node, err := sim.NewNode(e.st.Node.Dir(), sim.NodeOptions{Seed: c})
	if err != nil {
		return err
	}
	e.st.Node = node
	return nil
}

// steady runs a fresh agent with a short resync interval and counts the
// remote requests over a window of no changes.
func (e *env) steady(ctx context.Context, r *result) error {
	a, _, err := e.newAgent(ctx, e.st.Node, "batch", "SBPS_MARSHAL_RESYNC_INTERVAL="+e.o.steadyEvery.String())
	if err != nil {
		return err
	}
	defer a.Close()
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, func() { close(ready) }) }()
	defer func() { stop(); <-done }()
	select {
	case <-ready:
	case <-time.After(5 * time.Minute):
		return errors.New("agent not ready")
	}
	// Count from the end of one periodic pass to the end of the last of
	// the window's passes, so the window holds whole passes only.
	rep, err := waitPass(ctx, a, a.LastReport(), "resync timer", 2*e.o.steadyEvery+time.Minute)
	if err != nil {
		return err
	}
	s0, ims0, _ := e.requests()
	procs0 := e.st.Node.Processes()
	passes := 0
	t0 := time.Now()
	for time.Since(t0) < e.o.steadyWindow-e.o.steadyEvery/2 {
		if rep, err = waitPass(ctx, a, rep, "resync timer", 2*e.o.steadyEvery+time.Minute); err != nil {
			return err
		}
		passes++
	}
	window := time.Since(t0)
	s, imsN, _ := e.requests()
	s = s.Sub(s0)
	r.SteadyWindow, r.SteadyPasses = window.Round(100*time.Millisecond), passes
	r.SteadyS3, r.SteadyIMS = s.Total(), imsN-ims0
	r.SteadyOnlyListings = s.Total() == s.ListPages && r.SteadyIMS == int64(passes)
	if passes == 0 {
		return errors.New("no periodic pass in the window")
	}
	if p := e.st.Node.Processes() - procs0; p != guardSaves*passes || s.ManifestGets != 0 || s.Heads != 0 {
		return fmt.Errorf("steady state: %d targetcli processes in %d passes, %d manifest GETs, %d HEADs; want %d per pass (the guard's check of LIO) and none",
			p, passes, s.ManifestGets, s.Heads, guardSaves)
	}
	r.SteadyS3PerPass = float64(r.SteadyS3) / float64(passes)
	r.SteadyIMSPerPass = float64(r.SteadyIMS) / float64(passes)
	perHour := float64(time.Hour / oldScan) // the agent's default RESYNC_INTERVAL is also 180 s
	r.SteadyHour = (r.SteadyS3PerPass + r.SteadyIMSPerPass) * perHour
	r.OldHour = (r.SteadyS3PerPass + 1 + float64(e.n-e.n/2)) * perHour
	fmt.Printf("   steady state: %d periodic passes in %v: %d S3 requests, %d IMS requests → %.0f requests/hour at RESYNC_INTERVAL=180s (old agent: %.0f)\n",
		passes, r.SteadyWindow, r.SteadyS3, r.SteadyIMS, r.SteadyHour, r.OldHour)
	return nil
}

// watchPasses counts the agent's passes (by the kind of trigger) until the
// returned function is called.
func watchPasses(ctx context.Context, a *agent.Agent) func() (int, map[string]int) {
	stop := make(chan struct{})
	done := make(chan struct{})
	n, kinds := 0, map[string]int{}
	go func() {
		defer close(done)
		prev := a.LastReport()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Microsecond):
			}
			if rep := a.LastReport(); rep != prev && rep != nil {
				prev = rep
				n++
				kind, _, _ := strings.Cut(rep.Trigger, " ")
				kinds[kind]++
			}
		}
	}()
	return func() (int, map[string]int) {
		close(stop)
		<-done
		return n, kinds
	}
}

// relay forwards versitygw's notifications to the agent's subject, or
// holds them to release a burst at once.
type relay struct {
	nc       *nats.Conn
	to       string
	mu       sync.Mutex
	holding  bool
	buffered []*nats.Msg
}

func startRelay(nc *nats.Conn, from, to string) (*relay, error) {
	r := &relay{nc: nc, to: to}
	_, err := nc.Subscribe(from, func(m *nats.Msg) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.holding {
			r.buffered = append(r.buffered, m)
			return
		}
		nc.Publish(to, m.Data)
	})
	if err != nil {
		return nil, err
	}
	return r, nc.Flush()
}

func (r *relay) hold() {
	r.mu.Lock()
	r.holding = true
	r.mu.Unlock()
}

func (r *relay) held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.buffered {
		if bytes.Contains(m.Data, []byte("burst-")) {
			n++
		}
	}
	return n
}

func (r *relay) release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.buffered {
		if err := r.nc.Publish(r.to, m.Data); err != nil {
			return err
		}
	}
	r.buffered, r.holding = nil, false
	return r.nc.Flush()
}

// waitInFile polls path (cheaply: stat, then a byte search when it
// changed) until it contains needle; it returns the time since start.
func waitInFile(ctx context.Context, path, needle string, start time.Time, limit time.Duration) (time.Duration, error) {
	var lastMod time.Time
	var lastSize int64 = -1
	for time.Since(start) < limit {
		if fi, err := os.Stat(path); err == nil && (fi.ModTime() != lastMod || fi.Size() != lastSize) {
			at := time.Now()
			if found, err := probe.contains(path, []byte(needle)); err == nil && found {
				return at.Sub(start), nil
			}
			lastMod, lastSize = fi.ModTime(), fi.Size()
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return 0, fmt.Errorf("%s not in %s after %s", needle, path, limit)
}

// probe reads the file waitInFile polls into one buffer kept between
// reads: the bench runs in the agent's process, and reading a 20 MB
// saveconfig.json afresh after each of the simulator's writes made the
// agent's garbage collector work for the bench.
var probe fileProbe

type fileProbe struct{ buf []byte }

func (p *fileProbe) contains(path string, needle []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	n := 0
	for {
		if n == len(p.buf) {
			p.buf = append(p.buf, make([]byte, max(len(p.buf), 1<<20))...)
		}
		m, err := f.Read(p.buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
	}
	return bytes.Contains(p.buf[:n], needle), nil
}

// span is the run of one targetcli process, as the agent's driver saw it
// (agent.Options.OnTargetcli): from just before starting it until it was
// waited for.
type span struct{ start, end time.Time }

func (e *env) addSpan(start, end time.Time) {
	e.spanMu.Lock()
	e.spans = append(e.spans, span{start, end})
	e.spanMu.Unlock()
}

func (e *env) addBatch(batch []events.Event) {
	e.spanMu.Lock()
	defer e.spanMu.Unlock()
	for _, ev := range batch {
		if ev.Kind == events.S3Object {
			e.batches = append(e.batches, ev.Received)
		}
	}
}

// arrival is when the agent received the first S3 event, of those in the
// batches it took, that arrived after t (zero if none).
func (e *env) arrival(t time.Time) time.Time {
	e.spanMu.Lock()
	defer e.spanMu.Unlock()
	var first time.Time
	for _, at := range e.batches {
		if !at.Before(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// drainSpans returns the targetcli processes run since the last call.
func (e *env) drainSpans() []span {
	e.spanMu.Lock()
	defer e.spanMu.Unlock()
	out := e.spans
	e.spans = nil
	return out
}

// uncovered is the time between from and to when no targetcli process ran:
// an event's wait on the agent (and on S3's notification) rather than on
// LIO. The LUN appears in saveconfig.json before the process that saved it
// exits, so subtracting whole process times would undercount the agent.
func uncovered(from, to time.Time, procs []span) time.Duration {
	slices.SortFunc(procs, func(a, b span) int { return a.start.Compare(b.start) })
	var free time.Duration
	at := from
	for _, p := range procs {
		if !p.end.After(at) {
			continue
		}
		if p.start.After(at) {
			end := p.start
			if end.After(to) {
				end = to
			}
			free += end.Sub(at)
		}
		at = p.end
		if !at.Before(to) {
			return free
		}
	}
	if to.After(at) {
		free += to.Sub(at)
	}
	return free
}

// managed counts the LUNs of backstores over files under the mount.
func managed(save, mount string) (int, error) {
	c, err := lio.Load(save)
	if err != nil {
		return 0, err
	}
	files := map[string]bool{}
	for _, so := range c.StorageObjects {
		if so.Plugin == "fileio" && strings.HasPrefix(so.Dev, mount+"/") {
			files[so.Path()] = true
		}
	}
	n := 0
	for _, t := range c.Targets {
		for _, g := range t.TPGs {
			for _, l := range g.LUNs {
				if files[l.StorageObject] {
					n++
				}
			}
		}
	}
	return n, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func rss() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func profile(dir, name string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func describeMachine() string {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("machine: %d CPUs (nproc), %s, %s, load average at start %s\n", runtime.NumCPU(), cpu, runtime.Version(), loadavg())
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
