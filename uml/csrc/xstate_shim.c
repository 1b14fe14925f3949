/*
 * Preloaded into linux.uml by package uml (see doc.go, "XSAVE").
 *
 * UML 6.1 reads and writes a guest thread's FPU state with
 * PTRACE_{GET,SET}REGSET NT_X86_XSTATE and an 832-byte buffer. The host
 * kernel accepts a SETREGSET only of its full XSAVE size (CPUID 0xD.0:ECX),
 * which is larger on AVX-512 and AMX CPUs, and answers EFAULT. This wrapper
 * passes such calls through a buffer of the host's size: a read copies the
 * first bytes out; a write reads the current state, lays UML's bytes over
 * its start and writes the whole. Every other ptrace call is untouched.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define XSTATE_NOTE 0x202 /* NT_X86_XSTATE */

static long (*next_ptrace)(int, pid_t, void *, void *);
static unsigned char whole[1 << 16];

static size_t host_xsave_size(void)
{
	unsigned int eax, ebx, ecx, edx;
	if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx))
		return 0;
	return ecx;
}

long ptrace(enum __ptrace_request req, ...)
{
	va_list ap;
	va_start(ap, req);
	pid_t pid = va_arg(ap, pid_t);
	void *addr = va_arg(ap, void *);
	void *data = va_arg(ap, void *);
	va_end(ap);

	if (!next_ptrace)
		next_ptrace = (long (*)(int, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");

	if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) && (long)addr == XSTATE_NOTE) {
		struct iovec *small = data;
		size_t size = host_xsave_size();
		if (size > small->iov_len && size <= sizeof whole) {
			struct iovec all = {whole, size};
			long r = next_ptrace(PTRACE_GETREGSET, pid, addr, &all);
			if (r < 0)
				return r;
			if (req == PTRACE_GETREGSET) {
				memcpy(small->iov_base, whole, small->iov_len);
				return r;
			}
			memcpy(whole, small->iov_base, small->iov_len);
			all.iov_len = size;
			return next_ptrace(PTRACE_SETREGSET, pid, addr, &all);
		}
	}
	return next_ptrace(req, pid, addr, data);
}
