package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sbps-marshal/sbps-marshal/internal/testutil"
	"github.com/sbps-marshal/sbps-marshal/naming"
	"github.com/sbps-marshal/sbps-marshal/rig"
)

func TestCommands(t *testing.T) {
	ctx := t.Context()
	s, err := rig.StartStack(ctx, rig.StackOptions{Dir: t.TempDir(), NoNATS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	env := append(s.AgentEnv(), "SBPS_MARSHAL_RESYNC_INTERVAL=1h", "SBPS_MARSHAL_LOG_FORMAT=logfmt")
	// targetcli (the simulator) inherits the process environment.
	for _, kv := range s.Node.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb, env)
		return code, out.String(), errb.String()
	}

	if code, out, _ := run("version"); code != 0 || !strings.HasPrefix(out, "sbps-marshal ") {
		t.Errorf("version = %d %q", code, out)
	}
	if code, out, _ := run("config"); code != 0 || !strings.Contains(out, "SBPS_MARSHAL_TARGET_IQN="+s.Node.IQN()+"\n") {
		t.Errorf("config = %d\n%s", code, out)
	}
	if code, _, errOut := run("run", "--ims-tagging=True"); code != 1 || !strings.Contains(errOut, `SBPS_MARSHAL_IMS_TAGGING="True"`) {
		t.Errorf("bad flag value: exit %d, stderr %q; want 1 naming the key", code, errOut)
	}
	if code, out, errOut := run("plan"); code != 0 || !strings.Contains(out, "no changes") {
		t.Fatalf("plan on an empty node = %d\n%s%s", code, out, errOut)
	}

	// The daemon, in this process.
	logs := &testutil.SyncBuffer{}
	done := make(chan int, 1)
	go func() { done <- Main([]string{"run"}, &bytes.Buffer{}, logs, env) }()
	testutil.WaitFor(t, 30*time.Second, "the first pass", func() error {
		select {
		case code := <-done:
			t.Fatalf("run exited %d before its first pass:\n%s", code, logs.String())
		default:
		}
		if !strings.Contains(logs.String(), "first pass done") {
			return errors.New("not logged yet")
		}
		return nil
	})

	key, err := s.PutPE(ctx, "CPE-hup.squashfs", []byte("projected on SIGHUP"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run("plan"); code != 2 || !strings.Contains(out, "create") {
		t.Errorf("plan with a new image = %d\n%s; want exit 2 and a create", code, out)
	}
	// No event bus and a 1h timer: only SIGHUP makes the agent look again.
	if code, out, errOut := run("resync"); code != 0 {
		t.Fatalf("resync = %d %s%s", code, out, errOut)
	}
	id := naming.For(naming.PEInput("boot-images", key))
	testutil.WaitFor(t, 30*time.Second, "the image projected after SIGHUP", func() error {
		c, err := s.Saved()
		if err != nil {
			return err
		}
		if _, ok := c.FileIO(id.Name); !ok {
			return fmt.Errorf("no backstore %s yet", id.Name)
		}
		return nil
	})
	// The apply is logged just after saveconfig.json is written.
	testutil.WaitFor(t, 30*time.Second, "the apply logged as triggered by SIGHUP", func() error {
		if !strings.Contains(logs.String(), "msg=applied trigger=SIGHUP") {
			return errors.New("not logged yet")
		}
		return nil
	})
	if code, out, _ := run("plan"); code != 0 {
		t.Errorf("plan after projection = %d\n%s", code, out)
	}
	code, out, _ := run("status", "--json")
	var entries []struct {
		State, Backstore, Multipath string
		LUN                         *int
	}
	if err := json.Unmarshal([]byte(out), &entries); code != 0 || err != nil || len(entries) != 1 || entries[0].State != "projected" || entries[0].Backstore != id.Name || entries[0].LUN == nil {
		t.Errorf("status --json = %d %v\n%s", code, err, out)
	}
	if code, _, errOut := run("sync"); code != 1 || !strings.Contains(errOut, "another sbps-marshal (pid") {
		t.Errorf("sync while the daemon runs = %d %q; want the lock refusal naming the pid", code, errOut)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d after SIGTERM\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
}
