/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * socket_latency: records and map keys shared with userspace (decoded by
 * field name from BTF).
 */
#ifndef __SOCKET_LATENCY_H
#define __SOCKET_LATENCY_H

#include "sonde.h"

/* Decodes as "READ", "WRITE". */
enum sklat_dir {
	SKLAT_DIR_READ = 0,	/* data queued on the socket -> the application reads it */
	SKLAT_DIR_WRITE = 1,	/* a TCP send call: start of the copy -> return */
};

/* Decodes as "SLOW", "THRESHOLD": which knob a latency went over. */
enum sklat_over {
	SKLAT_OVER_SLOW = 0,		/* > slow_ns (1 ms) */
	SKLAT_OVER_THRESHOLD = 1,	/* > threshold_ns (100 ms), also counted as SLOW */
};

/*
 * Key of `hist` (value: __u64 latencies, per CPU): sonde's log2 slot of the
 * latency in nanoseconds (slot i holds (2^(i-1), 2^i] ns).
 */
struct sklat_hist_key {
	sonde_netns netns;
	enum sklat_dir dir;
	__u32 slot;	/* [log2 slot of ns] slot i counts latencies in (2^(i-1), 2^i] ns */
};

/* Key of `counts` (value: __u64 latencies over the knob, per CPU). */
struct sklat_key {
	sonde_netns netns;
	enum sklat_dir dir;
	enum sklat_over over;
};

/* Key of `sums` (value: __u64 nanoseconds, per CPU): the histogram's sum. */
struct sklat_sum_key {
	sonde_netns netns;
	enum sklat_dir dir;
};

/*
 * One latency over threshold_ns, in the ring buffer `events`. saddr/sport is
 * the socket's local end, daddr/dport its peer (0 for an unconnected UDP
 * socket). pid and comm are the reading or writing task's.
 */
struct socket_latency_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] the read wait or the send call (`dir`) */
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	enum sklat_dir dir;
	__u32 pid;	/* [none] the reading or writing task */
	__s32 bytes;		/* [bytes] what the read or write returned */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6 */
	sonde_l4proto l4proto;	/* TCP, UDP */
	char comm[16];
};

#endif /* __SOCKET_LATENCY_H */
