package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// TestBashCompletion (issue 16): `sbps-marshal completion bash` is valid
// bash, and completes commands, each command's flags and the values of
// configuration flags as bash calls it.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("this test runs the completion script in bash: %v", err)
	}
	code, script, errOut := runCLI(nil, "completion", "bash")
	if code != 0 || errOut != "" {
		t.Fatalf("completion bash = %d %q", code, errOut)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "sbps-marshal")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	for _, w := range completionWords() {
		if !regexp.MustCompile(`^[A-Za-z0-9._:/-]+$`).MatchString(w) {
			t.Errorf("%q reaches the script unquoted but is not a plain word", w)
		}
	}
	for _, k := range config.Keys() {
		if !strings.Contains(script, k.Flag+" ") && !strings.Contains(script, k.Flag+"|") && !strings.Contains(script, k.Flag+")") {
			t.Errorf("the script lacks %s", k.Flag)
		}
	}
	for _, c := range commands {
		for _, f := range c.Flags {
			if got := complete(t, bash, file, "sbps-marshal", c.Name, "--"+f.Name); !strings.Contains(" "+got+" ", " --"+f.Name+" ") {
				t.Errorf("sbps-marshal %s --%s<TAB> = %q", c.Name, f.Name, got)
			}
		}
	}

	os.WriteFile(filepath.Join(dir, "saveconfig.json"), nil, 0o644)
	tests := []struct {
		words []string // the last is the word being completed
		want  string   // COMPREPLY, space-joined
	}{
		{[]string{"sbps-marshal", "st"}, "status"},
		{[]string{"sbps-marshal", "c"}, "config completion"},
		{[]string{"sbps-marshal", "sync", "--al"}, "--allow-mass-delete --allow-writable-tpg"},
		{[]string{"sbps-marshal", "plan", "--j"}, "--json"},
		{[]string{"sbps-marshal", "run", "--j"}, ""}, // run takes no --json
		{[]string{"sbps-marshal", "version", "--"}, "--help --version"},
		{[]string{"sbps-marshal", "--al"}, "--allow-mass-delete --all --allow-writable-tpg"}, // before the command: every flag
		{[]string{"sbps-marshal", "--log-level", "debug", "sy"}, "sync"},
		{[]string{"sbps-marshal", "--log-level", "d"}, "debug"},
		{[]string{"sbps-marshal", "status", "--log-level", "=", "w"}, "warn"},
		{[]string{"sbps-marshal", "status", "--log-level=w"}, "--log-level=warn"},
		{[]string{"sbps-marshal", "plan", "--s3-proto", ""}, "https http"},
		{[]string{"sbps-marshal", "plan", "--ims-tagging", ""}, "true false"},
		{[]string{"sbps-marshal", "plan", "--lio-save-file", dir + "/save"}, dir + "/saveconfig.json"},
		{[]string{"sbps-marshal", "plan", "--s3-host", ""}, ""},
		{[]string{"sbps-marshal", "bridge", ""}, "webhook ims"},
		{[]string{"sbps-marshal", "--nats-url", "nats://x:4222", "bridge", "i"}, "ims"},
		{[]string{"sbps-marshal", "bridge", "ims", ""}, ""},
		{[]string{"sbps-marshal", "completion", ""}, "bash"},
		{[]string{"sbps-marshal", "help", "re"}, "resync"},
	}
	for _, tt := range tests {
		if got := complete(t, bash, file, tt.words...); got != tt.want {
			t.Errorf("%q<TAB> = %q, want %q", tt.words, got, tt.want)
		}
	}
}

// complete sources script in bash, calls its function with COMP_WORDS set
// to words (the cursor at the end of the last) and returns COMPREPLY.
func complete(t *testing.T, bash, script string, words ...string) string {
	t.Helper()
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	prog := `source "$1" || exit 9
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
_sbps_marshal sbps-marshal
echo "${COMPREPLY[*]}"`
	var out, errb bytes.Buffer
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || errb.Len() > 0 {
		t.Fatalf("completing %q: %v\n%s", words, err, errb.String())
	}
	return strings.TrimSuffix(out.String(), "\n")
}
