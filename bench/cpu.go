package bench

import (
	"runtime"
	"syscall"
	"time"
)

// ProcessCPU is the user+system CPU time this process has used so far.
func ProcessCPU() time.Duration { return rusage(syscall.RUSAGE_SELF) }

// ChildrenCPU is the user+system CPU time of the child processes this
// process has waited for (targetcli processes, for instance).
func ChildrenCPU() time.Duration { return rusage(syscall.RUSAGE_CHILDREN) }

const rusageThread = 1 // RUSAGE_THREAD

// threadCPU runs f locked to its OS thread and returns the CPU time that
// thread spent in it.
func threadCPU(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := rusage(rusageThread)
	f()
	return rusage(rusageThread) - start
}

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
