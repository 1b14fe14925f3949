package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// guest writes the two scripts the guest runs: init (PID 1, on the host's
// root as the kernel mounted it) protects the host and chroots into the
// overlay; stage2 sets up LIO and runs the command.
type guest struct {
	scratch string
	dir     string
	env     []string
	argv    []string
}

func (g guest) path(name string) string { return filepath.Join(g.scratch, name) }

func (g guest) write() error {
	for name, text := range map[string]string{"init": g.initScript(), "stage2": g.stage2Script()} {
		if err := os.WriteFile(g.path(name), []byte(text), 0o755); err != nil {
			return fmt.Errorf("uml: write the guest's %s script: %w", name, err)
		}
	}
	for _, name := range []string{"status", "output", "started"} {
		if err := os.Remove(g.path(name)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("uml: clear %s from an earlier run: %w", name, err)
		}
	}
	return nil
}

// initScript runs as PID 1 on the host's / (hostfs, read-write): it writes
// nothing there. /mnt gets a tmpfs that holds the overlay's upper layer.
func (g guest) initScript() string {
	return `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
set -e
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=0755 tmpfs /mnt
K=$(uname -r)
insmod /usr/lib/uml/modules/$K/kernel/fs/overlayfs/overlay.ko
mkdir /mnt/upper /mnt/work /mnt/root
mount -t overlay overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work /mnt/root
mount -t hostfs -o /tmp hostfs /mnt/root/tmp
mount -t devtmpfs devtmpfs /mnt/root/dev
mount -t proc proc /mnt/root/proc
mount -t sysfs sys /mnt/root/sys
mount -t tmpfs -o mode=0755 tmpfs /mnt/root/run
exec chroot /mnt/root /bin/sh ` + g.path("stage2") + `
`
}

func (g guest) stage2Script() string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
poweroff() { python3 -c 'import ctypes; ctypes.CDLL(None).reboot(0x4321fedc)'; }
fail() { echo "uml guest: $*" >&2; poweroff; }
K=$(uname -r)
mkdir -p /lib/modules && rm -rf /lib/modules/$K && ln -s /usr/lib/uml/modules/$K /lib/modules/$K || fail "link the modules"
for m in ` + strings.Join(Modules, " ") + `; do modprobe $m || fail "modprobe $m"; done
mount -t configfs configfs /sys/kernel/config || fail "mount configfs"
ip link set lo up || fail "bring lo up"
mkdir -p /run/dbus /run/lock /var/run && dbus-daemon --system --fork || fail "start the system D-Bus"
rm -rf /etc/target /etc/rtslib-fb-target /root/.targetcli /etc/iscsi/nodes /etc/iscsi/send_targets
mkdir -p /etc/target /etc/rtslib-fb-target /etc/iscsi/nodes /root
`)
	b.WriteString("export HOME=/root TMPDIR=/tmp\n")
	// Guest threads switch only the first 832 bytes of XSAVE state (doc.go).
	godebug := "cpu.avx512f=off"
	env := g.env
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok && v != "" {
			godebug = v + "," + godebug
			env = append(env[:i:i], env[i+1:]...)
			break
		}
	}
	b.WriteString("export GODEBUG=" + quote(godebug) + "\n")
	b.WriteString("export GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		b.WriteString("export " + k + "=" + quote(v) + "\n")
	}
	dir := g.dir
	if dir == "" {
		dir = g.scratch
	}
	b.WriteString("cd " + quote(dir) + " || fail \"cd " + dir + "\"\n")
	b.WriteString("date +%s%N > " + g.path("started") + "\n")
	quoted := make([]string, len(g.argv))
	for i, a := range g.argv {
		quoted[i] = quote(a)
	}
	b.WriteString(strings.Join(quoted, " ") + " > " + g.path("output") + " 2>&1 < /dev/null\n")
	b.WriteString("echo $? > " + g.path("status") + "\nsync\npoweroff\n")
	return b.String()
}

// quote makes s one word for /bin/sh.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
