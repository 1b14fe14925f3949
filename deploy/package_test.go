package deploy

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The files every package must hold, with their modes.
var packaged = []struct {
	path     string
	mode     os.FileMode
	src      string // repository file it is a copy of; "" = the binary or generated
	packager string // only in this package ("rpm", "deb"); "" = both
	rpmFlags string // rpm FILEFLAGS: c config, n noreplace, d doc, l license
}{
	{"/etc/sysconfig/sbps-marshal", 0o600, "deploy/sbps-marshal.env", "", "cn"},
	{"/usr/bin/sbps-marshal", 0o755, "", "", ""},
	{"/usr/lib/systemd/system/sbps-marshal.service", 0o644, "deploy/sbps-marshal.service", "", ""},
	{"/usr/share/bash-completion/completions/sbps-marshal", 0o644, "", "", ""},
	{"/usr/share/doc/sbps-marshal/CHANGELOG.md", 0o644, "CHANGELOG.md", "", "d"},
	{"/usr/share/doc/sbps-marshal/README.md", 0o644, "README.md", "", "d"},
	{"/usr/share/doc/sbps-marshal/copyright", 0o644, "LICENSE", "deb", ""},
	{"/usr/share/licenses/sbps-marshal/LICENSE", 0o644, "LICENSE", "rpm", "l"},
	{"/usr/share/man/man8/sbps-marshal.8.gz", 0o644, "", "", "d"},
	{"/etc/sysconfig/sbps-marshal-bridge", 0o600, "deploy/bridges/sbps-marshal-bridge.env", "", "cn"},
	{"/usr/lib/systemd/system/sbps-marshal-bridge-webhook.service", 0o644, "deploy/bridges/sbps-marshal-bridge-webhook.service", "", ""},
	{"/usr/lib/systemd/system/sbps-marshal-bridge-ims.service", 0o644, "deploy/bridges/sbps-marshal-bridge-ims.service", "", ""},
	{"/usr/share/doc/sbps-marshal/bridges/README.md", 0o644, "deploy/bridges/README.md", "", "d"},
	{"/usr/share/doc/sbps-marshal/bridges/kubernetes/config.yaml", 0o644, "deploy/bridges/kubernetes/config.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/bridges/kubernetes/ims.yaml", 0o644, "deploy/bridges/kubernetes/ims.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/bridges/kubernetes/webhook.yaml", 0o644, "deploy/bridges/kubernetes/webhook.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/README.md", 0o644, "deploy/monitoring/README.md", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/prometheusrule.yaml", 0o644, "deploy/monitoring/prometheusrule.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/dashboard.json", 0o644, "deploy/monitoring/dashboard.json", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/scrape.yaml", 0o644, "deploy/monitoring/scrape.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/servicemonitor.yaml", 0o644, "deploy/monitoring/servicemonitor.yaml", "", "d"},
	{"/usr/share/doc/sbps-marshal/monitoring/vmservicescrape.yaml", 0o644, "deploy/monitoring/vmservicescrape.yaml", "", "d"},
}

// packagedIn is the part of packaged that the packager's package holds.
func packagedIn(packager string) (paths []string) {
	for _, f := range packaged {
		if f.packager == "" || f.packager == packager {
			paths = append(paths, f.path)
		}
	}
	slices.Sort(paths)
	return paths
}

// The repository files the packages are built from, copied into a scratch tree.
var packageSources = []string{"deploy/nfpm.yaml", "deploy/sbps-marshal.env", "deploy/sbps-marshal.service",
	"deploy/scripts/preinstall.sh", "deploy/scripts/postinstall.sh", "deploy/scripts/preremove.sh",
	"deploy/scripts/postremove.sh", "README.md", "CHANGELOG.md", "LICENSE",
	"deploy/bridges/sbps-marshal-bridge-webhook.service", "deploy/bridges/sbps-marshal-bridge-ims.service",
	"deploy/bridges/sbps-marshal-bridge.env", "deploy/bridges/README.md", "deploy/bridges/kubernetes/config.yaml", "deploy/bridges/kubernetes/ims.yaml", "deploy/bridges/kubernetes/webhook.yaml", "deploy/monitoring/README.md", "deploy/monitoring/prometheusrule.yaml", "deploy/monitoring/dashboard.json", "deploy/monitoring/scrape.yaml", "deploy/monitoring/servicemonitor.yaml", "deploy/monitoring/vmservicescrape.yaml"}

const pkgVersion = "1.2.3"

// tool finds a program or fails the test saying how to get it.
func tool(t *testing.T, name, hint string, dirs ...string) string {
	t.Helper()
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed to check the packages: %s", name, hint)
	}
	return p
}

// run runs a command and returns its stdout, failing the test with stderr.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildTree builds the binary, its bash completion and man page (as `make
// share` does) into a scratch copy of the repository's packaged files, so
// that bin/ and dist/ of the working tree are left alone, and returns it.
func buildTree(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range packageSources {
		copyFile(t, filepath.Join(repo, f), filepath.Join(root, f))
	}
	ldflags := "-X github.com/sbps-marshal/sbps-marshal/internal/version.Version=v" + pkgVersion +
		" -X github.com/sbps-marshal/sbps-marshal/internal/version.Commit=test"
	// As `make build`: static (SLES 15 SP4/SP5 have glibc 2.31, older than
	// this machine's) and without build paths.
	bin := filepath.Join(root, "bin", "sbps-marshal")
	run(t, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/sbps-marshal")
	// As `make share`.
	share := filepath.Join(root, "bin", "share")
	writeFile(t, filepath.Join(share, "bash-completion", "sbps-marshal"), run(t, "", nil, bin, "completion", "bash"))
	writeFile(t, filepath.Join(share, "man", "sbps-marshal.8"), run(t, "", nil, bin, "man"))
	run(t, "", nil, "gzip", "-n", "-9", "-f", filepath.Join(share, "man", "sbps-marshal.8"))
	return root
}

// nfpmPackage packages the tree buildTree made with deploy/nfpm.yaml, as
// `make rpm` or `make deb` with PKG_VERSION=version, and returns its path.
func nfpmPackage(t *testing.T, root, packager, version string) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nfpm := tool(t, "nfpm", "run `make tools` (installs it into .tools/bin)", filepath.Join(repo, ".tools", "bin"))
	dist := t.TempDir()
	run(t, root, []string{"VERSION=" + version}, nfpm, "package", "--config", "deploy/nfpm.yaml", "--packager", packager, "--target", dist+"/")
	got, _ := filepath.Glob(filepath.Join(dist, "*"))
	if len(got) != 1 {
		t.Fatalf("nfpm --packager %s made %v, want one package", packager, got)
	}
	return got[0]
}

// buildPackages builds the binary and both packages at pkgVersion and
// returns the rpm and deb paths.
func buildPackages(t *testing.T) (rpmPath, debPath string) {
	t.Helper()
	root := buildTree(t)
	return nfpmPackage(t, root, "rpm", pkgVersion), nfpmPackage(t, root, "deb", pkgVersion)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestPackages builds the RPM and DEB as `make rpm`/`make deb` do and checks
// what an operator gets: the files, their modes, the config file marked
// noreplace, the per-distribution dependencies, and a binary that runs.
func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the binary and the rpm/deb packages takes a while")
	}
	rpmBin := tool(t, "rpm", "install it (Debian: apt-get install rpm; .ci/run does)")
	dpkgDeb := tool(t, "dpkg-deb", "install dpkg (Debian/Ubuntu have it)")
	rpmPath, debPath := buildPackages(t)

	t.Run("rpm", func(t *testing.T) {
		if got, want := lines(run(t, "", nil, rpmBin, "-qpl", rpmPath)), packagedIn("rpm"); !slices.Equal(got, want) {
			t.Errorf("rpm -qpl = %q, want %q", got, want)
		}
		got := run(t, "", nil, rpmBin, "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n", rpmPath)
		if got != "sbps-marshal "+pkgVersion+" 1 x86_64 MIT\n" {
			t.Errorf("rpm name/version/release/arch/license = %q", got)
		}
		modes := run(t, "", nil, rpmBin, "-qp", "--qf", "[%{FILENAMES} %{FILEMODES:perms} %{FILEFLAGS:fflags}\n]", rpmPath)
		for _, f := range packaged {
			if f.packager == "deb" {
				continue
			}
			line := f.path + " -" + permString(f.mode) + " " + f.rpmFlags
			if !slices.Contains(lines(modes), strings.TrimSpace(line)) {
				t.Errorf("rpm file %s: want %q in:\n%s", f.path, line, modes)
			}
		}
		if got, want := lines(run(t, "", nil, rpmBin, "-qpR", rpmPath)), []string{"targetcli", "(s3fs or s3fs-fuse)"}; !containsAll(got, want) {
			t.Errorf("rpm -qpR = %q, want it to contain %q", got, want)
		}
		scripts := run(t, "", nil, rpmBin, "-qp", "--scripts", rpmPath)
		for _, want := range []string{"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "systemctl daemon-reload", "systemctl mask sbps-marshal.service"} {
			if !strings.Contains(scripts, want) {
				t.Errorf("rpm scripts lack %q:\n%s", want, scripts)
			}
		}
	})

	t.Run("deb", func(t *testing.T) {
		var files []string
		modes := map[string]string{}
		for _, l := range lines(run(t, "", nil, dpkgDeb, "-c", debPath)) {
			f := strings.Fields(l) // perms owner size date time ./path
			if len(f) < 6 || strings.HasPrefix(f[0], "d") {
				continue
			}
			p := strings.TrimPrefix(f[len(f)-1], ".")
			files = append(files, p)
			modes[p] = f[0]
		}
		slices.Sort(files)
		if want := packagedIn("deb"); !slices.Equal(files, want) {
			t.Errorf("dpkg-deb -c files = %q, want %q", files, want)
		}
		for _, f := range packaged {
			if f.packager == "rpm" {
				continue
			}
			if got := modes[f.path]; got != "-"+permString(f.mode) {
				t.Errorf("deb %s mode %s, want -%s", f.path, got, permString(f.mode))
			}
		}
		if got := run(t, "", nil, dpkgDeb, "-f", debPath, "Package", "Version", "Architecture", "Depends"); got !=
			"Package: sbps-marshal\nVersion: "+pkgVersion+"-1\nArchitecture: amd64\nDepends: targetcli-fb, s3fs\n" {
			t.Errorf("deb control fields:\n%s", got)
		}
		ctl := t.TempDir()
		run(t, "", nil, dpkgDeb, "-e", debPath, ctl)
		if conf, err := os.ReadFile(filepath.Join(ctl, "conffiles")); err != nil || string(conf) != "/etc/sysconfig/sbps-marshal\n/etc/sysconfig/sbps-marshal-bridge\n" {
			t.Errorf("deb conffiles = %q, %v; want the agent's and the bridges' env files", conf, err)
		}

		// The packaged files are the repository's, and the binary runs.
		x := t.TempDir()
		run(t, "", nil, dpkgDeb, "-x", debPath, x)
		for _, f := range packaged {
			if f.src == "" || f.packager == "rpm" {
				continue
			}
			got, err := os.ReadFile(filepath.Join(x, f.path))
			if err != nil {
				t.Fatal(err)
			}
			src, err := os.ReadFile(filepath.Join("..", f.src))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, src) {
				t.Errorf("packaged %s differs from %s", f.path, f.src)
			}
		}
		// The completion and man page are the binary's own, and load.
		if c, err := os.ReadFile(filepath.Join(x, "usr/share/bash-completion/completions/sbps-marshal")); err != nil || !bytes.Contains(c, []byte("complete -")) {
			t.Errorf("packaged bash completion has no `complete` command (err %v):\n%.300s", err, c)
		}
		if man := run(t, "", nil, "gzip", "-dc", filepath.Join(x, "usr/share/man/man8/sbps-marshal.8.gz")); !strings.Contains(man, ".TH SBPS\\-MARSHAL 8") {
			t.Errorf("packaged man page is not sbps-marshal(8):\n%.300s", man)
		}
		if out := run(t, "", nil, filepath.Join(x, "usr/bin/sbps-marshal"), "version"); !strings.HasPrefix(out, "sbps-marshal v"+pkgVersion+" (commit test,") {
			t.Errorf("packaged sbps-marshal version = %q, want v%s and commit test", out, pkgVersion)
		}
		// Static: no program interpreter (a dynamic binary built here needs
		// this machine's glibc, newer than SLES 15 SP4/SP5's 2.31).
		bin, err := elf.Open(filepath.Join(x, "usr/bin/sbps-marshal"))
		if err != nil {
			t.Fatal(err)
		}
		defer bin.Close()
		for _, p := range bin.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the packaged sbps-marshal is dynamically linked (PT_INTERP): build it with CGO_ENABLED=0")
			}
		}
	})
}

// permString renders the permission bits as ls does (rwxr-xr-x).
func permString(m os.FileMode) string { return m.Perm().String()[1:] }

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// TestVersion runs deploy/scripts/pkg-version (the Makefile's PKG_VERSION)
// in a scratch git repository at each point of a release history and checks
// that rpm and dpkg order the versions nfpm makes of it as they must: a tag
// is exactly its version, commits after it sort after it and before the next
// release, and a clone without tags sorts below every release, the Python
// agent's 1.0.3 included.
func TestVersion(t *testing.T) {
	rpmBin := tool(t, "rpm", "install it (Debian: apt-get install rpm)")
	dpkg := tool(t, "dpkg", "install dpkg (Debian/Ubuntu have it)")
	script, err := filepath.Abs("scripts/pkg-version")
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(run(t, repo, []string{"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t"}, "git", args...))
	}
	commit := func() string {
		t.Helper()
		git("commit", "-q", "--allow-empty", "-m", "c")
		return git("rev-parse", "--short=7", "HEAD")
	}
	version := func() (string, string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), script)
		cmd.Dir = repo
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("pkg-version: %v\n%s", err, stderr.String())
		}
		return strings.TrimSpace(stdout.String()), stderr.String()
	}
	git("init", "-q")
	git("config", "core.abbrev", "7")

	// A history, oldest first; each step says what pkg-version must print.
	type step struct{ pkg, rpm, deb string }
	var steps []step
	add := func(pkg string) {
		t.Helper()
		got, warn := version()
		if got != pkg {
			t.Fatalf("pkg-version = %q, want %q", got, pkg)
		}
		if strings.HasPrefix(pkg, "0.0.0-") != (warn != "") {
			t.Errorf("pkg-version for %s warned %q: want a warning exactly when there is no tag", pkg, warn)
		}
		// As nfpm writes them (semver prerelease -> "~", metadata -> "+").
		v, meta, _ := strings.Cut(pkg, "+")
		v = strings.Replace(v, "-", "~", 1)
		if meta != "" {
			v += "+" + meta
		}
		steps = append(steps, step{pkg, v, v + "-1"})
	}
	h := commit()
	add("0.0.0-git.g" + h)
	steps = append(steps, step{"(Python agent)", "1.0.3", "1.0.3-1"})
	git("tag", "-a", "v2.0.0", "-m", "2.0.0")
	add("2.0.0")
	h = commit()
	add("2.0.0+git.1.g" + h)
	for range 8 {
		commit()
	}
	h = commit()
	add("2.0.0+git.10.g" + h)
	if err := os.WriteFile(filepath.Join(repo, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	git("add", "f")
	add("2.0.0+git.10.g" + h + ".dirty")
	git("commit", "-q", "-m", "f")
	git("tag", "-a", "v2.0.1-rc.1", "-m", "rc")
	add("2.0.1-rc.1")
	h = commit()
	add("2.0.1-rc.1+git.1.g" + h)
	git("tag", "-a", "v2.0.1", "-m", "2.0.1")
	add("2.0.1")

	for i := 1; i < len(steps); i++ {
		a, b := steps[i-1], steps[i]
		if got := strings.TrimSpace(run(t, "", nil, rpmBin, "--eval", `%{lua: print(rpm.vercmp("`+a.rpm+`", "`+b.rpm+`"))}`)); got != "-1" {
			t.Errorf("rpm: vercmp(%s, %s) = %s, want -1 (%s before %s)", a.rpm, b.rpm, got, a.pkg, b.pkg)
		}
		if err := exec.Command(dpkg, "--compare-versions", a.deb, "lt", b.deb).Run(); err != nil {
			t.Errorf("dpkg: %s is not lt %s (%s before %s)", a.deb, b.deb, a.pkg, b.pkg)
		}
	}
}

// lintAccepted are the rpmlint and lintian findings on the packages that do
// not apply, each with why. Anything else fails TestPackageLint: fix it in
// deploy/nfpm.yaml or the scripts, or add it here with its reason.
var lintAccepted = map[string]string{
	// rpmlint (Debian's 2.4 with its default configuration)
	"only-non-binary-in-usr-lib":                "the systemd unit belongs in /usr/lib/systemd/system",
	"non-readable":                              "/etc/sysconfig/sbps-marshal is 0600 on purpose: NATS_URL may carry credentials",
	"no-signature":                              "signing is the release pipeline's job (nfpm rpm.signature.key_file), not the build's",
	"no-changelogname-tag":                      "the changes are in /usr/share/doc/sbps-marshal/CHANGELOG.md; no rpm %changelog is generated",
	"no-binary":                                 "rpmlint does not recognise the static Go binary /usr/bin/sbps-marshal",
	"invalid-license":                           "MIT is an SPDX identifier; this rpmlint configuration has no licence list",
	"manpage-not-compressed":                    "this rpmlint configuration wants bz2; SLES 15's man pages are gzip, as ours",
	"no-manual-page-for-binary":                 "follows from the bz2 setting above: sbps-marshal(8) is /usr/share/man/man8/sbps-marshal.8.gz",
	"dangerous-command-in-%pre":                 "preinstall.sh links the unit to /dev/null (a mask) only when systemctl cannot: an image build",
	"dangerous-command-in-%postun":              "postremove.sh removes that link (unmask) only when systemctl is missing, on a rollback to the Python agent",
	"statically-linked-binary":                  "static on purpose (CGO_ENABLED=0): SLES 15 SP4/SP5 have glibc 2.31, older than the build machine's",
	"position-independent-executable-suggested": "Go's -buildmode=pie links against the dynamic loader, which the static binary avoids (above)",
	"unstripped-binary-or-object":               "make build keeps Go's symbol table (not this package's choice; tracebacks need only pclntab)",
	"no-changelog":                              "the deb is for test rigs; CSM installs the RPM, whose changes are in CHANGELOG.md",
	"maintainer-script-calls-systemctl":         "one set of scripts serves the RPM and the deb (deb-systemd-helper does not exist on SLES)",
	"non-standard-file-perm":                    "/etc/sysconfig/sbps-marshal is 0600 on purpose (above)",
	"wrong-name-for-upstream-changelog":         "the changelog keeps the repository's name, CHANGELOG.md",
}

// lintFinding matches an rpmlint line ("sbps-marshal.x86_64: E: tag ...")
// or a lintian line ("E: sbps-marshal: tag [...]").
var lintFinding = regexp.MustCompile(`^(?:sbps-marshal\.\w+: ([EW]): (\S+)|([EWI]): sbps-marshal: (\S+))`)

// TestPackageLint runs rpmlint on the RPM and lintian on the deb and fails
// on any finding that lintAccepted does not explain.
// confinedCpio returns a directory holding a cpio that extracts absolute
// names relative to the working directory. rpmlint unpacks a package with
// `rpm2cpio | cpio -id` in a scratch directory, and nfpm writes absolute
// names into the archive (rpmbuild writes ./usr/...): GNU cpio would
// install the package's files on this machine, /usr/bin and /etc included.
func confinedCpio(t *testing.T) string {
	t.Helper()
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("cpio: %v; install it (Debian: apt-get install cpio)", err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\nexec " + cpio + " --no-absolute-filenames \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "cpio"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPackageLint(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building the binary and the rpm/deb packages takes a while")
	}
	rpmlint := tool(t, "rpmlint", "install it (Debian: apt-get install rpmlint; scripts/test-deps does)")
	lintian := tool(t, "lintian", "install it (Debian: apt-get install lintian; scripts/test-deps does)")
	rpmPath, debPath := buildPackages(t)
	// Neither linter may install anything on this machine (confinedCpio).
	absent := map[string]bool{}
	for _, f := range packaged {
		if _, err := os.Lstat(f.path); errors.Is(err, fs.ErrNotExist) {
			absent[f.path] = true
		}
	}
	defer func() {
		for p := range absent {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("linting the packages wrote %s on this machine", p)
			}
		}
	}()
	rpmlintCmd := exec.CommandContext(t.Context(), rpmlint, rpmPath)
	rpmlintCmd.Env = append(os.Environ(), "PATH="+confinedCpio(t)+":"+os.Getenv("PATH"))
	for _, c := range []struct {
		name string
		cmd  *exec.Cmd
	}{
		{"rpmlint", rpmlintCmd},
		{"lintian", exec.CommandContext(t.Context(), lintian, "--tag-display-limit", "0", debPath)},
	} {
		// Both exit non-zero when they find anything: the findings decide.
		out, err := c.cmd.CombinedOutput()
		var findings int
		for _, l := range lines(string(out)) {
			m := lintFinding.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			findings++
			tag := m[2] + m[4]
			if _, ok := lintAccepted[tag]; !ok {
				t.Errorf("%s: %s", c.name, l)
			}
		}
		if err != nil && findings == 0 {
			t.Errorf("%s failed without a finding: %v\n%s", c.name, err, out)
		}
		t.Logf("%s: %d findings, all explained in lintAccepted", c.name, findings)
	}
}
