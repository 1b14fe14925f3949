package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
)

var update = flag.Bool("update", false, "rewrite sbps-marshal.env from config.Keys()")

const envFile = "sbps-marshal.env"

// renderEnvFile writes the example env file for keys.
func renderEnvFile(keys []config.Key) []byte {
	var b bytes.Buffer
	b.WriteString(`# /etc/sysconfig/sbps-marshal: settings of sbps-marshal.service
#
# Read by systemd (EnvironmentFile=) before the agent starts. Every key the
# agent knows is listed below, commented out, with its default value: to
# change one, remove the leading "#" and edit the value. One KEY=VALUE a line,
# no spaces around "="; values may be quoted. The commands an operator runs
# (plan, status, sync, config, ...) read this file too, as the service does;
# the environment and command-line flags override it. Check the result with:
#
#     sbps-marshal config      (prints the effective configuration)
#
# Keys that name secrets take file paths; never put a secret's value here.
# Keys of the old Python agent keep their names and defaults.
#
# Generated from the agent's key list (go test ./deploy -run TestEnvFile -update).
`)
	for _, k := range keys {
		b.WriteString("\n")
		name := strings.TrimPrefix(k.Env, config.EnvPrefix)
		for _, line := range wrap(fmt.Sprintf("%s (flag %s): %s", name, k.Flag, k.Help), 76) {
			b.WriteString("# " + line + "\n")
		}
		if k.Default == "" {
			b.WriteString("# Default: empty.\n")
		}
		fmt.Fprintf(&b, "#%s=%s\n", k.Env, k.Default)
	}
	return b.Bytes()
}

// wrap splits s into lines of at most width bytes at spaces (a longer
// word gets a line of its own).
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	return append(lines, line)
}

// TestEnvFile fails when sbps-marshal.env misses a key, shows a wrong
// default or help, or has keys the agent does not know.
func TestEnvFile(t *testing.T) {
	checkGenerated(t, envFile, renderEnvFile(config.Keys()), "TestEnvFile")
}

// checkGenerated fails when the file at path differs from want, naming the
// first line that differs and the test to run with -update, which writes
// want instead.
func checkGenerated(t *testing.T, path string, want []byte, test string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s differs from config.Keys() at line %d:\n got: %q\nwant: %q\nrun: go test ./deploy -run %s -update", path, i+1, g, w, test)
		}
	}
}

// uncommented checks that the example env file at file sets nothing as
// shipped, and returns a copy with every key uncommented and what that
// copy sets, read as systemd reads it.
func uncommented(t *testing.T, file string) (path string, vals map[string]string) {
	t.Helper()
	shipped, err := config.ReadEnvFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(shipped) != 0 {
		t.Errorf("%s as shipped sets %v, want every key commented out", file, shipped)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var un bytes.Buffer
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(line, "#"+config.EnvPrefix) {
			line = line[1:]
		}
		un.WriteString(line)
	}
	path = filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(path, un.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if vals, err = config.ReadEnvFile(path); err != nil {
		t.Fatal(err)
	}
	return path, vals
}

// TestEnvFileParses checks the file the way the agent and systemd read it:
// as shipped it sets nothing; with every key uncommented it sets each key
// to its default, and that configuration loads.
func TestEnvFileParses(t *testing.T) {
	path, vals := uncommented(t, envFile)
	keys := config.Keys()
	for _, k := range keys {
		v, ok := vals[k.Env]
		if !ok {
			t.Errorf("%s: no line for %s", envFile, k.Env)
			continue
		}
		if v != k.Default {
			t.Errorf("%s: %s=%q, want the default %q", envFile, k.Env, v, k.Default)
		}
	}
	if len(vals) != len(keys) {
		t.Errorf("%s sets %d keys, config.Keys() has %d", envFile, len(vals), len(keys))
	}
	_, _, err := config.Load(config.Sources{
		Args:     []string{"--env-file", path},
		Hostname: func() (string, error) { return "ncn-w001", nil },
	}, flag.NewFlagSet("test", flag.ContinueOnError))
	if err != nil {
		t.Errorf("loading %s with every key uncommented: %v", envFile, err)
	}
}
