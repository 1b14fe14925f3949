package uml

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Packages are the Debian packages the guest needs on the host, as
// `apt-get install` takes them.
var Packages = []string{"user-mode-linux", "targetcli-fb", "python3-rtslib-fb", "open-iscsi", "kmod", "dbus", "iproute2"}

// guestTools are the programs the guest runs, with the package of each.
var guestTools = map[string]string{
	"targetcli":   "targetcli-fb",
	"iscsiadm":    "open-iscsi",
	"iscsid":      "open-iscsi",
	"modprobe":    "kmod",
	"insmod":      "kmod",
	"dbus-daemon": "dbus",
	"python3":     "python3-rtslib-fb",
	"ip":          "iproute2",
}

// Check reports, in one line, what is missing to boot kernel with LIO: the
// kernel, its modules and the programs the guest runs. It says which Debian
// packages to install.
func Check(kernel string) error {
	var missing []string
	pkgs := map[string]bool{}
	if _, err := os.Stat(kernel); err != nil {
		missing = append(missing, kernel)
		pkgs["user-mode-linux"] = true
	} else if dirs, _ := filepath.Glob("/usr/lib/uml/modules/*/kernel/drivers/target"); len(dirs) == 0 {
		missing = append(missing, "/usr/lib/uml/modules/*/kernel/drivers/target")
		pkgs["user-mode-linux"] = true
	}
	for tool, pkg := range guestTools {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				missing = append(missing, tool)
				pkgs[pkg] = true
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var install []string
	for _, p := range Packages {
		if pkgs[p] {
			install = append(install, p)
		}
	}
	return fmt.Errorf("uml: the real-kernel tests need %s (missing %s): run `apt-get install %s` as root", strings.Join(install, ", "), strings.Join(missing, ", "), strings.Join(install, " "))
}

//go:embed csrc/xstate_shim.c
var shimSource []byte

// xstateShim builds csrc/xstate_shim.c once per source version into the user's
// cache and returns the shared object's path.
func xstateShim() (string, error) {
	sum := sha256.Sum256(shimSource)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "sbps-marshal")
	so := filepath.Join(dir, "uml-xstate-"+hex.EncodeToString(sum[:8])+".so")
	if _, err := os.Stat(so); err == nil {
		return so, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("uml: cache directory for the XSAVE shim: %w", err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return "", fmt.Errorf("uml: building the XSAVE shim (doc.go) needs a C compiler; %s was not found: run `apt-get install gcc` or set CC", cc)
	}
	src := filepath.Join(dir, "uml-xstate.c")
	if err := os.WriteFile(src, shimSource, 0o644); err != nil {
		return "", fmt.Errorf("uml: %w", err)
	}
	tmp := so + ".tmp" + fmt.Sprint(os.Getpid())
	out, err := exec.Command(cc, "-O2", "-shared", "-fPIC", "-o", tmp, src, "-ldl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("uml: build the XSAVE shim with %s: %v: %s", cc, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, so); err != nil {
		return "", fmt.Errorf("uml: %w", err)
	}
	return so, nil
}
