// Command sbps-marshal-demo runs the agent's main job on one machine: it
// starts the rig (NATS, a real S3 server, an IMS server with SPIFFE
// authentication, a simulated node's LIO), runs the real `sbps-marshal run`
// against it, and narrates a short scenario. It stops everything it started.
//
// Run it with `make demo`.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, out io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(out, "\n==> "+format+"\n", a...) }
	bin, err := filepath.Abs("bin/sbps-marshal")
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s not found: run `make build` (make demo does it for you)", bin)
	}
	dir, err := os.MkdirTemp("", "sbps-marshal-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	say("Starting the rig: NATS (JetStream), versitygw (real S3), IMS (OpenAPI shapes, JWT-SVID auth), SPIFFE Workload API, simulated LIO node")
	start := time.Now()
	st, err := rig.StartStack(ctx, rig.StackOptions{Dir: dir, NodeName: "ncn-w001"})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(out, "    up in %s; S3 %s, IMS %s, target %s\n", time.Since(start).Round(time.Millisecond), st.S3.Endpoint(), st.IMS.URL(), st.Node.IQN())

	env := append(os.Environ(), st.AgentEnv()...)
	// Events only: JetStream stream SBPS, and no periodic resync during the demo.
	env = append(env, "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_LOG_FORMAT=logfmt",
		"SBPS_MARSHAL_NATS_STREAM=SBPS", "SBPS_MARSHAL_BRIDGE_POLL_INTERVAL=1s")
	logFile := filepath.Join(dir, "agent.log")
	logW, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logW.Close()
	bridgeLog, err := os.Create(filepath.Join(dir, "bridge.log"))
	if err != nil {
		return err
	}
	defer bridgeLog.Close()
	say("Starting `%s bridge ims` (polls IMS once for the cluster, publishes image changes to NATS)", bin)
	bridge := exec.Command(bin, "bridge", "ims")
	bridge.Env, bridge.Stdout, bridge.Stderr = env, bridgeLog, bridgeLog
	if err := bridge.Start(); err != nil {
		return err
	}
	defer func() {
		bridge.Process.Signal(syscall.SIGTERM)
		bridge.Wait()
	}()
	agent := exec.Command(bin, "run")
	agent.Env, agent.Stdout, agent.Stderr = env, logW, logW
	say("Starting the agent: %s run (the binary an operator runs; it reacts to S3 notifications and IMS events, no polling)", bin)
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		agent.Wait()
		log, _ := os.ReadFile(logFile)
		say("Agent log (abridged)")
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		for _, l := range lines {
			if strings.Contains(l, "msg=applied") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "stopped") {
				fmt.Fprintln(out, "   ", trim(l, 220))
			}
		}
	}()
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var b, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &e
		err := cmd.Run()
		if err != nil {
			return b.String() + e.String(), err
		}
		return b.String(), nil
	}
	waitFor := func(what string, id naming.ID, present bool) error {
		t0 := time.Now()
		for time.Since(t0) < 60*time.Second {
			c, err := st.Saved()
			if err == nil {
				_, has := c.FileIO(id.Name)
				if has == present {
					lun := ""
					if tgt, ok := c.Target(st.Node.IQN()); ok && present {
						if tpg, ok := tgt.TPG(1); ok {
							if l, ok := tpg.LUNFor("/backstores/fileio/" + id.Name); ok {
								lun = fmt.Sprintf(" as lun%d", l.Index)
							}
						}
					}
					verb := map[bool]string{true: "appeared", false: "is gone"}[present]
					fmt.Fprintf(out, "    %s: backstore %s (WWID %s)%s %s after %s\n", what, id.Name, id.WWID, lun, verb, time.Since(t0).Round(time.Millisecond))
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return fmt.Errorf("%s: backstore %s did not %s within 60s; see the agent log", what, id.Name, map[bool]string{true: "appear", false: "go"}[present])
	}
	// Wait for the agent's first pass.
	for i := 0; ; i++ {
		if log, _ := os.ReadFile(logFile); bytes.Contains(log, []byte("first pass done")) {
			break
		}
		if i > 1500 {
			return fmt.Errorf("the agent did not start; log:\n%s", readTail(logFile))
		}
		time.Sleep(20 * time.Millisecond)
	}

	say("Uploading a programming-environment image to s3://boot-images/PE/ and a rootfs image registered in IMS")
	peData, err := rig.ImageBytes(dir, 256<<10)
	if err != nil {
		return err
	}
	peKey, err := st.PutPE(ctx, "CPE-base.x86_64-24.11.squashfs", peData)
	if err != nil {
		return err
	}
	rootfs, err := rig.ImageBytes(dir, 512<<10)
	if err != nil {
		return err
	}
	img, err := st.AddImage(ctx, "compute-cos-2.5", rootfs, false)
	if err != nil {
		return err
	}
	peID := naming.For(naming.PEInput("boot-images", peKey))
	rfID := naming.For(naming.RootfsInput("s3://boot-images/"+img.RootfsKey, img.RootfsETag))
	fmt.Fprintf(out, "    PE key %s\n    IMS image %s (%s), rootfs %s etag %s, not tagged yet\n", peKey, img.ID, img.Name, img.RootfsKey, img.RootfsETag)
	if err := waitFor("PE image", peID, true); err != nil {
		return err
	}

	say("Tagging the IMS image for projection (metadata sbps-project=true, as BOS does); the bridge sees it at its next poll")
	if err := st.IMS.Tag(img.ID); err != nil {
		return err
	}
	if err := waitFor("rootfs image", rfID, true); err != nil {
		return err
	}

	say("sbps-marshal status")
	s, err := run("status")
	if err != nil {
		return fmt.Errorf("status: %w\n%s", err, s)
	}
	fmt.Fprint(out, indent(s))

	say("Untagging the IMS image")
	if err := st.IMS.Untag(img.ID); err != nil {
		return err
	}
	if err := waitFor("rootfs image", rfID, false); err != nil {
		return err
	}
	say("Deleting the PE image from S3")
	if err := st.S3.Delete(ctx, peKey); err != nil {
		return err
	}
	if err := waitFor("PE image", peID, false); err != nil {
		return err
	}

	say("sbps-marshal plan (nothing left to do: exit code 0)")
	p, err := run("plan")
	fmt.Fprint(out, indent(p))
	if err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	fmt.Fprintf(out, "\n    targetcli processes the agent started: %d\n", st.Node.Processes())
	say("Stopping everything")
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
