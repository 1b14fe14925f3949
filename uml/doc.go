// Package uml boots Debian's User-Mode Linux kernel as an ordinary process
// and runs one command inside it, with the real Linux LIO target (configfs,
// target_core_file, iscsi_target_mod) and the iSCSI initiator loaded. It is
// how the project's tests reach the real kernel on machines that have no
// configfs and no KVM.
//
// # The guest
//
// The guest's root is the host's / seen read-only through an overlay: its
// writes go to a tmpfs and are gone at power-off. Only the host's /tmp is
// shared read-write (mounted over the guest's /tmp), so the command, its
// files and its results live under /tmp; Run's scratch directory is there.
// Inside, PID 1 loads the modules, mounts configfs on /sys/kernel/config,
// brings up lo, starts a system D-Bus (real targetcli exits 255 without
// one) and starts from an empty /etc/target, /etc/rtslib-fb-target,
// ~/.targetcli and /etc/iscsi/nodes. It then runs the command with the
// environment given, records its exit status in the scratch directory and
// powers the guest off.
//
// # The host
//
// The kernel runs in its own session (setsid): UML forks one host process
// per guest process, and a timeout or a cancelled context kills exactly that
// process group, never processes by name. The kernel's console goes to a
// file in the scratch directory, which Result carries.
//
// # XSAVE
//
// UML 6.1 hands the host's ptrace a fixed 832-byte XSAVE buffer, which the
// host refuses with EFAULT where the CPU's XSAVE area is larger (AVX-512 or
// AMX hosts): every guest process dies with "ptrace set fp regs failed".
// Run then preloads a small shim (csrc/xstate_shim.c, built with the C compiler
// cgo uses) that widens those two ptrace calls to the host's size. Guest
// threads still switch only the first 832 bytes, so Go programs in the guest
// get GODEBUG with AVX-512 off and glibc the matching tunable.
package uml
