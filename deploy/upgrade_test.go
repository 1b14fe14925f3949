package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// oldSpec builds a stand-in of the Python agent's package as
// Cray-HPE/sbps-marshal's sbps-marshal.spec makes it (version 1.0.3,
// release 1, noarch, vendor HPE): it owns only its unit and a wheel staging
// directory; its %post builds /usr/lib/sbps-marshal (a virtualenv: bin/
// sbps-marshal, lib/python3.*/site-packages/lib/*.py) and deletes the wheels;
// its %preun deletes /usr/lib/sbps-marshal, on upgrade too; its %postun is
// what SUSE's %service_del_postun does on upgrade (daemon-reload, then
// try-restart) plus what newer systemd-rpm-macros do instead (mark the unit
// needs-restart for the systemd package's file trigger, modelled by the
// systemd-triggers-stub subpackage). It had no configuration file: the
// agent read only its environment (an operator's drop-in, at most).
const oldSpec = `
Name: sbps-marshal
Version: 1.0.3
Release: 1
Summary: Stand-in of the Python sbps-marshal agent's package
License: MIT
Vendor: HPE
Group: System/Management
BuildArch: noarch
%global __os_install_post %{nil}
%define _build_id_links none

%description
Stand-in of the Python sbps-marshal 1.0.3 package (deploy/upgrade_test.go).

%package -n systemd-triggers-stub
Summary: Stand-in of the systemd package's rpm file triggers
%description -n systemd-triggers-stub
Restarts units marked needs-restart at the end of a transaction, as
systemd's triggers.systemd does (reload-or-restart --marked).

%install
mkdir -p %{buildroot}/usr/lib/systemd/system %{buildroot}/tmp/sbps-marshal-wheels
cat > %{buildroot}/usr/lib/systemd/system/sbps-marshal.service <<'EOF'
[Unit]
Description=System service that manages Squashfs images projected via iSCSI for IMS, PE, and other ancillary images similar to PE.
DefaultDependencies=no
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/lib/sbps-marshal/bin/sbps-marshal
Restart=on-failure
RestartSec=180s

[Install]
WantedBy=multi-user.target
EOF
echo wheel > %{buildroot}/tmp/sbps-marshal-wheels/sbps_marshal-1.0.3-py3-none-any.whl

%files
%config(missingok) /tmp/sbps-marshal-wheels
/usr/lib/systemd/system/sbps-marshal.service

%files -n systemd-triggers-stub

%post
mkdir -p /usr/lib/sbps-marshal/bin /usr/lib/sbps-marshal/lib/python3.6/site-packages/lib
echo '#!/usr/lib/sbps-marshal/bin/python3' > /usr/lib/sbps-marshal/bin/sbps-marshal
for m in __init__ auth config ims lio s3; do echo "# $m" > /usr/lib/sbps-marshal/lib/python3.6/site-packages/lib/$m.py; done
rm -Rf /tmp/sbps-marshal-wheels

%preun
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
	/usr/bin/systemctl --no-reload disable --now sbps-marshal.service || :
fi
rm -Rf /usr/lib/sbps-marshal

%postun
if [ "$1" -ge 1 ] && [ -x /usr/bin/systemctl ]; then
	/usr/bin/systemctl daemon-reload || :
	/usr/bin/systemctl try-restart sbps-marshal.service || :
	/usr/bin/systemctl set-property sbps-marshal.service Markers=+needs-restart || :
fi

%transfiletriggerin -n systemd-triggers-stub -- /usr/lib/systemd/system
[ -x /usr/bin/systemctl ] && /usr/bin/systemctl reload-or-restart --marked || :

%transfiletriggerpostun -n systemd-triggers-stub -- /usr/lib/systemd/system
[ -x /usr/bin/systemctl ] && /usr/bin/systemctl reload-or-restart --marked || :
`

// systemctlStub models, inside the test's rpm --root, what systemd does
// with sbps-marshal.service: a masked unit (a file or link in
// /etc/systemd/system) refuses start and restart jobs, while a running
// process keeps running; try-restart starts only a running unit. What runs
// is the ExecStart of the unit file at the time of its (re)start, kept in
// /run/stub/active; every call and every (re)start is logged in /run/stub/log.
const systemctlStub = `#!/bin/sh
S=/run/stub
u=sbps-marshal.service
echo "systemctl $*" >>$S/log
cmd= marked=no now=no
for a in "$@"; do
	case $a in
	--marked) marked=yes ;;
	--now) now=yes ;;
	-*) ;;
	*) [ -n "$cmd" ] || cmd=$a ;;
	esac
done
masked() { [ -e /etc/systemd/system/$u ] || [ -L /etc/systemd/system/$u ]; }
execstart() {
	while IFS= read -r l; do
		case $l in ExecStart=*) echo "${l#ExecStart=}" ;; esac
	done </usr/lib/systemd/system/$u
}
start() {
	if masked; then
		echo "Failed to $1 $u: Unit $u is masked." >&2
		echo "refused $1: masked" >>$S/log
		exit 1
	fi
	execstart >$S/active
	echo "started $(execstart)" >>$S/log
}
case $cmd in
mask) mkdir -p /etc/systemd/system && ln -s /dev/null /etc/systemd/system/$u ;;
unmask) rm -f /etc/systemd/system/$u ;;
is-enabled) if masked; then echo masked; else echo disabled; fi; exit 1 ;;
is-active) if [ -e $S/active ]; then echo active; else echo inactive; exit 3; fi ;;
start | restart) start $cmd ;;
try-restart) [ ! -e $S/active ] || start try-restart ;;
stop) rm -f $S/active ;;
disable) [ $now = no ] || rm -f $S/active ;;
set-property) case "$*" in *Markers=+needs-restart*) : >$S/marked ;; esac ;;
reload-or-restart)
	[ $marked = yes ] && [ -e $S/marked ] || exit 0
	rm -f $S/marked
	[ ! -e $S/active ] || start reload-or-restart
	;;
esac
exit 0
`

// chrootRoot is a directory for rpm --root: rpm runs package scripts
// chrooted into it, so it holds /bin/sh and the few programs the scripts
// use, copied with their libraries, and, withSystemd, the systemctl model
// above and /run/systemd/system (systemd running).
type chrootRoot struct {
	t    *testing.T
	dir  string
	rpm  string
	args []string
}

func newChrootRoot(t *testing.T, rpmBin string, withSystemd bool) *chrootRoot {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"tmp", "var/tmp", "run/stub", "etc/systemd/system", "usr/bin", "bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"sh", "mkdir", "rm", "ln", "cat"} {
		copyProgram(t, dir, p)
	}
	// The scripts send output to /dev/null (and a mask links to it).
	if err := os.MkdirAll(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mknod(filepath.Join(dir, "dev/null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatalf("mknod /dev/null in the root: %v", err)
	}
	if withSystemd {
		if err := os.MkdirAll(filepath.Join(dir, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "usr/bin/systemctl"), []byte(systemctlStub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &chrootRoot{t: t, dir: dir, rpm: rpmBin, args: []string{"--root", dir, "--dbpath", "/var/lib/rpm"}}
	r.rpmRun("--initdb")
	return r
}

// copyProgram copies a host program and the libraries ldd names into the
// root, at the same paths, so that it runs chrooted.
func copyProgram(t *testing.T, root, name string) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(root, "usr/bin", name)
	if name == "sh" {
		dst = filepath.Join(root, "bin/sh")
	}
	copyMode(t, path, dst, 0o755)
	for _, l := range lines(run(t, "", nil, "ldd", path)) {
		f := strings.Fields(l)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		}
		if lib != "" {
			copyMode(t, lib, filepath.Join(root, lib), 0o755)
		}
	}
}

func copyMode(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from) // follows symlinks
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}

// rpmRun runs rpm on the root (dependencies ignored: targetcli and s3fs are
// not in it) and returns its combined output; it fails the test on error.
func (r *chrootRoot) rpmRun(args ...string) string {
	r.t.Helper()
	cmd := exec.CommandContext(r.t.Context(), r.rpm, append(append([]string{}, r.args...), args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("rpm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (r *chrootRoot) path(p string) string { return filepath.Join(r.dir, p) }

func (r *chrootRoot) exists(p string) bool {
	_, err := os.Lstat(r.path(p))
	return err == nil
}

func (r *chrootRoot) read(p string) string {
	r.t.Helper()
	data, err := os.ReadFile(r.path(p))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(data)
}

// systemctl runs the model as an operator would on the node.
func (r *chrootRoot) systemctl(args ...string) {
	r.t.Helper()
	run(r.t, "", nil, "chroot", append([]string{r.dir, "/usr/bin/systemctl"}, args...)...)
}

// active is the ExecStart of what runs ("" when stopped).
func (r *chrootRoot) active() string {
	data, err := os.ReadFile(r.path("run/stub/active"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// takeLog returns the systemctl calls and (re)starts since the last call.
func (r *chrootRoot) takeLog() string {
	r.t.Helper()
	data, _ := os.ReadFile(r.path("run/stub/log"))
	if err := os.WriteFile(r.path("run/stub/log"), nil, 0o644); err != nil {
		r.t.Fatal(err)
	}
	return string(data)
}

func (r *chrootRoot) version() string {
	r.t.Helper()
	return r.rpmRun("-q", "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH} %{VENDOR}\n", "sbps-marshal")
}

// buildOldPackages builds the stand-in of the Python agent's package and
// the systemd trigger stand-in with rpmbuild.
func buildOldPackages(t *testing.T) (old, triggers string) {
	t.Helper()
	rpmbuild := tool(t, "rpmbuild", "install it (Debian: apt-get install rpm)")
	top := t.TempDir()
	spec := filepath.Join(top, "sbps-marshal.spec")
	if err := os.WriteFile(spec, []byte(oldSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, rpmbuild, "-bb", "--quiet", "--define", "_topdir "+top, spec)
	old = filepath.Join(top, "RPMS/noarch/sbps-marshal-1.0.3-1.noarch.rpm")
	triggers = filepath.Join(top, "RPMS/noarch/systemd-triggers-stub-1.0.3-1.noarch.rpm")
	for _, p := range []string{old, triggers} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("rpmbuild made no %s: %v", p, err)
		}
	}
	return old, triggers
}

const (
	oldExec       = "/usr/lib/sbps-marshal/bin/sbps-marshal"
	newExec       = "/usr/bin/sbps-marshal run"
	dropIn        = "etc/systemd/system/sbps-marshal.service.d/site.conf"
	sysconfigFile = "etc/sysconfig/sbps-marshal"
)

// TestUpgradeFromPythonAgent installs the Python agent's package (a
// stand-in, above) in an rpm --root, starts it, then: rpm -U to this
// package, which must replace it (noarch -> x86_64) and leave none of its
// files, and hold the service (masked) so that neither the old package's
// restart on upgrade nor anything else starts the new agent before an
// operator releases it; the operator's switch; a rollback to 1.0.3 with
// rpm -U --oldpackage and forward again; an upgrade 2.0.0 -> 2.0.1, which
// restarts the running agent and keeps the edited configuration, unless
// /etc/sysconfig/services says DISABLE_RESTART_ON_UPDATE=yes; a rollback
// while held, which lifts the hold; a fresh install, which starts nothing; and all of it in a root without systemd,
// where the scripts must simply succeed. Needs root (rpm --root chroots to
// run package scripts); CI runs as root.
func TestUpgradeFromPythonAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binary and three packages")
	}
	if os.Getuid() != 0 {
		t.Skip("rpm --root runs package scripts chrooted: needs root (CI runs as root)")
	}
	rpmBin := tool(t, "rpm", "install it (Debian: apt-get install rpm)")
	old, triggers := buildOldPackages(t)
	tree := buildTree(t)
	v200 := nfpmPackage(t, tree, "rpm", "2.0.0")
	v201 := nfpmPackage(t, tree, "rpm", "2.0.1")

	r := newChrootRoot(t, rpmBin, true)
	r.rpmRun("--nodeps", "-i", triggers, old)
	// As the CSM playbook: an operator's drop-in, the agent started.
	writeFile(t, r.path(dropIn), "[Service]\nEnvironment=SBPS_MARSHAL_SCAN_FREQUENCY=60\n")
	r.systemctl("start", "sbps-marshal.service")
	if got := r.active(); got != oldExec {
		t.Fatalf("the Python agent runs %q, want %q", got, oldExec)
	}
	for _, p := range []string{"usr/lib/sbps-marshal/bin/sbps-marshal", "usr/lib/sbps-marshal/lib/python3.6/site-packages/lib/lio.py"} {
		if !r.exists(p) {
			t.Fatalf("the stand-in's %%post made no /%s", p)
		}
	}
	r.takeLog()

	t.Run("upgrade from 1.0.3 holds the service", func(t *testing.T) {
		r.t = t
		out := r.rpmRun("--nodeps", "-U", v200)
		if got := r.version(); got != "sbps-marshal-2.0.0-1.x86_64 sbps-marshal\n" {
			t.Errorf("after rpm -U: %q installed, want only sbps-marshal-2.0.0-1.x86_64", got)
		}
		for _, p := range []string{"usr/lib/sbps-marshal", "tmp/sbps-marshal-wheels"} {
			if r.exists(p) {
				t.Errorf("/%s of the Python agent is left after the upgrade", p)
			}
		}
		if u := r.read("usr/lib/systemd/system/sbps-marshal.service"); !strings.Contains(u, "ExecStart="+newExec) {
			t.Errorf("the unit is not the new one:\n%s", u)
		}
		if !r.exists(dropIn) || !r.exists(sysconfigFile) {
			t.Errorf("the operator's drop-in (%v) or the new %s (%v) is missing", r.exists(dropIn), sysconfigFile, r.exists(sysconfigFile))
		}
		log := r.takeLog()
		if got := r.active(); got != oldExec {
			t.Errorf("after the upgrade %q runs, want the Python agent still running until the operator switches\nsystemctl calls:\n%s", got, log)
		}
		if !strings.Contains(log, "systemctl mask sbps-marshal.service") || !strings.Contains(log, "refused try-restart: masked") || !strings.Contains(log, "refused reload-or-restart: masked") {
			t.Errorf("want the unit masked and both restarts of the old package refused; systemctl calls:\n%s", log)
		}
		if !strings.Contains(out, "sbps-marshal doctor && sbps-marshal plan") || !strings.Contains(out, "systemctl unmask sbps-marshal && systemctl restart sbps-marshal") {
			t.Errorf("rpm -U output does not say how to check and switch:\n%s", out)
		}
		t.Logf("rpm -U output:\n%s", out)
	})

	t.Run("operator switches", func(t *testing.T) {
		r.t = t
		r.systemctl("unmask", "sbps-marshal")
		r.systemctl("restart", "sbps-marshal")
		if got := r.active(); got != newExec {
			t.Errorf("after unmask and restart %q runs, want %q", got, newExec)
		}
		// The operator's settings, for the rollback and the next upgrade.
		writeFile(t, r.path(sysconfigFile), "SBPS_MARSHAL_SCAN_FREQUENCY=60\n")
		r.takeLog()
	})

	t.Run("rollback to 1.0.3 and forward", func(t *testing.T) {
		r.t = t
		r.rpmRun("--nodeps", "-U", "--oldpackage", old)
		if got := r.version(); got != "sbps-marshal-1.0.3-1.noarch HPE\n" {
			t.Errorf("after the rollback: %q installed", got)
		}
		if r.exists("usr/bin/sbps-marshal") || !r.exists("usr/lib/sbps-marshal/bin/sbps-marshal") {
			t.Errorf("after the rollback: /usr/bin/sbps-marshal left %v, the Python agent back %v", r.exists("usr/bin/sbps-marshal"), r.exists("usr/lib/sbps-marshal/bin/sbps-marshal"))
		}
		// rpm keeps an edited configuration file of a removed package.
		if got := r.read(sysconfigFile + ".rpmsave"); got != "SBPS_MARSHAL_SCAN_FREQUENCY=60\n" {
			t.Errorf("%s.rpmsave = %q, want the operator's settings", sysconfigFile, got)
		}
		log := r.takeLog()
		if strings.Contains(log, "started") {
			t.Errorf("the rollback (re)started the service; the operator does (systemctl restart sbps-marshal). systemctl calls:\n%s", log)
		}
		r.systemctl("restart", "sbps-marshal")
		if got := r.active(); got != oldExec {
			t.Errorf("after the rollback and a restart %q runs, want %q", got, oldExec)
		}
		r.takeLog()

		r.rpmRun("--nodeps", "-U", v200)
		if got := r.active(); got != oldExec {
			t.Errorf("forward again: %q runs, want the Python agent held", got)
		}
		if log := r.takeLog(); !strings.Contains(log, "systemctl mask sbps-marshal.service") {
			t.Errorf("forward again: not held; systemctl calls:\n%s", log)
		}
		// Back to 1.0.3 while held: the hold goes with it, the Python agent runs on.
		out := r.rpmRun("--nodeps", "-U", "--oldpackage", old)
		if log := r.takeLog(); !strings.Contains(log, "systemctl unmask sbps-marshal.service") || strings.Contains(log, "started") {
			t.Errorf("a rollback while held must unmask and start nothing; systemctl calls:\n%s", log)
		}
		if r.exists("etc/systemd/system/sbps-marshal.service") || r.active() != oldExec {
			t.Errorf("after a rollback while held: masked %v, %q runs; want unmasked, the Python agent running", r.exists("etc/systemd/system/sbps-marshal.service"), r.active())
		}
		if !strings.Contains(out, "back to the Python agent") {
			t.Errorf("a rollback while held does not say so:\n%s", out)
		}
		r.rpmRun("--nodeps", "-U", v200)
		r.systemctl("unmask", "sbps-marshal")
		r.systemctl("restart", "sbps-marshal")
		if err := os.Rename(r.path(sysconfigFile+".rpmsave"), r.path(sysconfigFile)); err != nil {
			t.Fatal(err)
		}
		r.takeLog()
	})

	t.Run("upgrade 2.0.0 to 2.0.1 restarts and keeps the settings", func(t *testing.T) {
		r.t = t
		r.rpmRun("--nodeps", "-U", v201)
		log := r.takeLog()
		if !strings.Contains(log, "systemctl try-restart sbps-marshal.service sbps-marshal-bridge-webhook.service sbps-marshal-bridge-ims.service\nstarted "+newExec) {
			t.Errorf("want a try-restart onto the new agent; systemctl calls:\n%s", log)
		}
		if got := r.read(sysconfigFile); got != "SBPS_MARSHAL_SCAN_FREQUENCY=60\n" {
			t.Errorf("%s after the upgrade = %q, want the operator's settings (noreplace)", sysconfigFile, got)
		}
		if r.exists(sysconfigFile + ".rpmsave") {
			t.Errorf("%s.rpmsave made by an upgrade", sysconfigFile)
		}
	})

	t.Run("DISABLE_RESTART_ON_UPDATE=yes keeps the agent running", func(t *testing.T) {
		r.t = t
		writeFile(t, r.path("etc/sysconfig/services"), "DISABLE_RESTART_ON_UPDATE=\"yes\"\n")
		t.Cleanup(func() { os.Remove(r.path("etc/sysconfig/services")) })
		out := r.rpmRun("--nodeps", "-U", "--oldpackage", v200)
		if log := r.takeLog(); strings.Contains(log, "started") || strings.Contains(log, "try-restart") {
			t.Errorf("restarted despite DISABLE_RESTART_ON_UPDATE=yes; systemctl calls:\n%s", log)
		}
		if !strings.Contains(out, "not restarted (DISABLE_RESTART_ON_UPDATE=yes") {
			t.Errorf("the upgrade does not say it did not restart:\n%s", out)
		}
	})

	t.Run("fresh install starts nothing", func(t *testing.T) {
		f := newChrootRoot(t, rpmBin, true)
		out := f.rpmRun("--nodeps", "-i", v200)
		if got := f.takeLog(); strings.Contains(got, "started") || strings.Contains(got, "systemctl enable") || strings.Contains(got, "systemctl mask") {
			t.Errorf("a fresh install enabled, masked or started the service; systemctl calls:\n%s", got)
		}
		if !strings.Contains(out, "systemctl enable --now sbps-marshal") {
			t.Errorf("a fresh install does not say what to do:\n%s", out)
		}
	})

	t.Run("without systemd", func(t *testing.T) {
		b := newChrootRoot(t, rpmBin, false)
		b.rpmRun("--nodeps", "-i", old)
		b.rpmRun("--nodeps", "-U", v200)
		if b.exists("usr/lib/sbps-marshal") {
			t.Error("/usr/lib/sbps-marshal is left")
		}
		// Masked by hand: the hold stands when systemd comes up.
		if l, err := os.Readlink(b.path("etc/systemd/system/sbps-marshal.service")); err != nil || l != "/dev/null" {
			t.Errorf("sbps-marshal.service not masked without systemctl: %q, %v", l, err)
		}
		b.rpmRun("--nodeps", "-U", "--oldpackage", old)
		if b.exists("etc/systemd/system/sbps-marshal.service") {
			t.Error("still masked after the rollback to 1.0.3")
		}
		b.rpmRun("--nodeps", "-U", v201)
		b.rpmRun("-e", "sbps-marshal")
	})
}
