// Package gobuild builds the project's helper programs (the targetcli and
// targetctl simulators, the kubectl and spire-agent stand-ins) from the
// source tree, for tests, the demo and the bench.
package gobuild

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

const module = "github.com/sbps-marshal/sbps-marshal"

// Build runs `go build -o out pkg` in the module's source tree; pkg is
// relative to it ("./cmd/targetcli-sim").
func Build(out, pkg string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, root, err, stderr.Bytes())
	}
	return nil
}

// Root is the module's source tree: where this file was compiled from, or,
// in a binary built with -trimpath (make build), the module `go list`
// finds from the working directory.
func Root() (string, error) {
	if _, here, _, ok := runtime.Caller(0); ok && filepath.IsAbs(here) {
		root := filepath.Join(filepath.Dir(here), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if dir := strings.TrimSpace(string(out)); err == nil && dir != "" {
		return dir, nil
	}
	return "", errors.New("cannot find the source tree of " + module + " (built with -trimpath, and the working directory is not in the repository): run from the repository")
}
