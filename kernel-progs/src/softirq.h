/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * softirq: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __SOFTIRQ_H
#define __SOFTIRQ_H

#include "sonde.h"

/*
 * The softirq vectors, numbered as the kernel's own enum (include/linux/
 * interrupt.h, unchanged since 4.5 renamed BLOCK_IOPOLL to IRQ_POLL). They
 * decode to the names /proc/softirqs shows: "NET_RX", "TIMER", ...
 */
enum softirq_vec {
	SOFTIRQ_VEC_HI = 0,
	SOFTIRQ_VEC_TIMER = 1,
	SOFTIRQ_VEC_NET_TX = 2,
	SOFTIRQ_VEC_NET_RX = 3,
	SOFTIRQ_VEC_BLOCK = 4,
	SOFTIRQ_VEC_IRQ_POLL = 5,
	SOFTIRQ_VEC_TASKLET = 6,
	SOFTIRQ_VEC_SCHED = 7,
	SOFTIRQ_VEC_HRTIMER = 8,
	SOFTIRQ_VEC_RCU = 9,
};

#define SOFTIRQ_NR_VECS 10

/* What a time measures: decodes to "DELAY" or "RUN". */
enum softirq_phase {
	SOFTIRQ_PHASE_DELAY = 0,	/* raised -> handler starts (softirq_raise -> softirq_entry) */
	SOFTIRQ_PHASE_RUN = 1,		/* handler runs (softirq_entry -> softirq_exit) */
};

/* Key of `hist` (value: __u64 samples, per CPU): sonde's log2 slot of the time in ns. */
struct softirq_hist_key {
	enum softirq_vec vec;
	enum softirq_phase phase;
	__u32 slot;	/* [log2 slot of ns] slot i counts samples in (2^(i-1), 2^i] ns */
};

/* Key of `totals`. */
struct softirq_key {
	enum softirq_vec vec;
	enum softirq_phase phase;
};

/* Value of `totals` (per CPU; userspace sums the CPUs field by field). */
struct softirq_total {
	__u64 count;		/* [count] samples (the histogram's count) */
	__u64 sum_ns;		/* [ns] their sum (the histogram's sum) */
	__u64 slow;		/* [count] samples over slow_ns */
	__u64 very_slow;	/* [count] samples over very_slow_ns */
};

/* One delay or run time over slow_ns, in the ring buffer `events`. */
struct softirq_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] the delay or run time (`phase`) */
	enum softirq_vec vec;
	enum softirq_phase phase;
	__u32 cpu;	/* [none] the CPU it ran on */
	__u32 pid;		/* [none] the task the softirq interrupted (or ksoftirqd) */
	char comm[16];
};

#endif /* __SOFTIRQ_H */
