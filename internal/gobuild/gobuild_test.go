package gobuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	out := filepath.Join(t.TempDir(), "targetcli")
	if err := Build(out, "./cmd/targetcli-sim"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("no executable at %s: %v", out, err)
	}
	if err := Build(filepath.Join(t.TempDir(), "x"), "./cmd/no-such-program"); err == nil || !strings.Contains(err.Error(), "no-such-program") {
		t.Errorf("Build of a missing package: %v, want an error naming it", err)
	}
}

// TestRootTrimpath: a binary built with -trimpath (as make build builds
// the bench) still finds the source tree from a working directory inside
// the repository, and says what to do from outside it.
func TestRootTrimpath(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prog := filepath.Join(dir, "main.go")
	if err := os.WriteFile(prog, []byte(`package main

import (
	"fmt"
	"os"

	"github.com/sbps-marshal/sbps-marshal/internal/gobuild"
)

func main() {
	root, err := gobuild.Root()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(root)
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "internal", "gobuild", "testdata-trimpath")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sub) })
	if err := os.Rename(prog, filepath.Join(sub, "main.go")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "root")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./internal/gobuild/testdata-trimpath")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -trimpath: %v\n%s", err, out)
	}
	run := exec.Command(bin)
	run.Dir = filepath.Join(root, "lio")
	out, err := run.Output()
	if err != nil || strings.TrimSpace(string(out)) != filepath.Clean(root) {
		t.Errorf("trimmed binary in the repository: %q, %v; want %s", out, err, root)
	}
	run = exec.Command(bin)
	run.Dir = dir
	out, _ = run.Output()
	if !strings.Contains(string(out), "run from the repository") {
		t.Errorf("trimmed binary outside the repository: %q, want an error saying to run from it", out)
	}
}
