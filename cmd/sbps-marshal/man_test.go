package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// TestManPage (issue 16): `sbps-marshal man` is a section 8 page that
// groff renders without a warning, with every command, flag and key.
func TestManPage(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Fatalf("this test renders the man page with groff: install groff-base (scripts/test-deps does): %v", err)
	}
	code, page, errOut := runCLI(nil, "man")
	if code != 0 || errOut != "" {
		t.Fatalf("man = %d %q", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "sbps-marshal.8")
	if err := os.WriteFile(file, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(groff, "-man", "-ww", "-z", file)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("groff -man -ww -z: %v\n%s", err, stderr.String())
	}
	if man, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command(man, "--warnings", "-l", file)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings -l: %v\n%s", err, stderr.String())
		}
	}

	if !strings.Contains(page, "\n.TH SBPS\\-MARSHAL 8 ") {
		t.Errorf("not a section 8 page:\n%.300s", page)
	}
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "CONFIGURATION", "FILES", "EXIT STATUS", "SIGNALS", "SEE ALSO"} {
		if !strings.Contains(page, "\n.SH "+s+"\n") {
			t.Errorf("no section %s", s)
		}
	}
	for _, k := range append(config.Keys(), config.EnvFileKey()) {
		if !strings.Contains(page, roff(k.Env)) || !strings.Contains(page, roff(k.Flag)) {
			t.Errorf("the page lacks %s / %s", k.Env, k.Flag)
		}
	}
	for _, c := range commands {
		if !strings.Contains(page, "\n\\fB"+roff(c.Name)+"\\fR") {
			t.Errorf("COMMANDS lacks %s", c.Name)
		}
		for _, f := range c.Flags {
			if !strings.Contains(page, roff("--"+f.Name)) {
				t.Errorf("the page lacks --%s", f.Name)
			}
		}
	}
	for _, e := range exitStatuses() {
		if !strings.Contains(page, "\n.TP\n\\fB"+strconv.Itoa(e.Code)+"\\fR\n") {
			t.Errorf("EXIT STATUS lacks %d", e.Code)
		}
	}
	if !strings.Contains(page, "\n\\fBSIGHUP\\fR\nRun: a full resync now") {
		t.Errorf("SIGNALS lacks SIGHUP")
	}
}

func TestRoff(t *testing.T) {
	tests := []struct{ in, want string }{
		{"--json", `\-\-json`},
		{`a\b`, `a\eb`},
		{".hidden", `\&.hidden`},
		{"'quoted", `\&'quoted`},
		{"plain", "plain"},
	}
	for _, tt := range tests {
		if got := roff(tt.in); got != tt.want {
			t.Errorf("roff(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
