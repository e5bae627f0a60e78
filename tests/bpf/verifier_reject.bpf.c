// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// A test object, not a probe: two tracepoint programs on the same hook, one the
// verifier accepts and one it rejects, for the tests of sonde's load errors
// (tests/tests/kernel.rs). Built by `make -C tests/bpf`; the object is committed
// like the probes' so that running the tests needs no clang.

// No headers: nothing here needs more than the section attribute.
#define SEC(name) __attribute__((section(name), used))

SEC("tracepoint/syscalls/sys_enter_getppid")
int accepted(void *ctx)
{
	return 0;
}

// A program's stack is 512 bytes: a read 1 KiB below the frame pointer is out of
// bounds, and the verifier says so when the program is loaded ("invalid read from
// stack R10 off=-1024 size=8"). Written in assembly so that the compiler cannot
// drop or reshape the read.
SEC("tracepoint/syscalls/sys_enter_getppid")
int past_the_stack(void *ctx)
{
	long r;

	asm volatile("%0 = *(u64 *)(r10 - 1024)" : "=r"(r));
	return r != 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
