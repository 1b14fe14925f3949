//go:build kernel

package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/uml"
)

// Environment of the recorder: the test binary started by lio.Driver in
// place of targetcli (see record).
const (
	recBinEnv = "SBPS_CONFORMANCE_REC_BIN" // the targetcli to run
	recLogEnv = "SBPS_CONFORMANCE_REC_LOG" // the JSON-lines log to append to
	simEnv    = "SBPS_CONFORMANCE_SIM"     // the simulator binary, built on the host
)

func TestMain(m *testing.M) {
	if bin := os.Getenv(recBinEnv); bin != "" {
		os.Exit(record(bin, os.Getenv(recLogEnv)))
	}
	uml.TestMain(m, func(dir string) ([]string, error) {
		// Go builds slowly in the guest: build the simulator here, under
		// /tmp, which the guest shares.
		bin, err := sim.Build(dir)
		if err != nil {
			return nil, err
		}
		return []string{simEnv + "=" + bin}, nil
	})
}

// call is one targetcli process the driver started, as the recorder saw it.
type call struct {
	Args  []string `json:"args"`
	Stdin string   `json:"stdin"`
	Exit  int      `json:"exit"`
}

// record runs bin with this process's arguments and stdin, its stdout and
// stderr straight on this process's (so that their order is kept where the
// driver joined them), appends the call to log and exits with its status.
func record(bin, log string) int {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance recorder: reading stdin:", err)
		return 126
	}
	cmd := exec.Command(bin, os.Args[1:]...)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, recBinEnv+"=") && !strings.HasPrefix(kv, recLogEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	_ = cmd.Run()
	exit := 127
	if cmd.ProcessState != nil {
		exit = cmd.ProcessState.ExitCode()
	}
	line, _ := json.Marshal(call{Args: os.Args[1:], Stdin: string(in), Exit: exit})
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance recorder: opening the log:", err)
		return 126
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "conformance recorder: writing the log:", err)
		return 126
	}
	if exit < 0 {
		return 137 // killed by a signal
	}
	return exit
}

func readCalls(t *testing.T, log string) []call {
	t.Helper()
	data, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read the recorder's log: %v", err)
	}
	var calls []call
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l == "" {
			continue
		}
		var c call
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("recorder's log line %q: %v", l, err)
		}
		calls = append(calls, c)
	}
	return calls
}
