/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * bio_latency: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __BIO_LATENCY_H
#define __BIO_LATENCY_H

#include "sonde.h"

/*
 * The operation of a request (REQ_OP_* in cmd_flags, same values on every
 * kernel): decodes to "READ", "WRITE", "FLUSH", "DISCARD", "OTHER".
 */
enum bio_op {
	BIO_OP_READ = 0,
	BIO_OP_WRITE = 1,
	BIO_OP_FLUSH = 2,
	BIO_OP_DISCARD = 3,
	BIO_OP_OTHER = 4,
};

/* Key of `hist` (value: __u64 requests, per CPU): log2 slot of the latency in ns. */
struct bio_hist_key {
	char disk[32];		/* gendisk disk_name: "sda", "nvme0n1", "loop3" */
	enum bio_op op;
	__u32 slot;	/* [log2 slot of ns] slot i counts requests in (2^(i-1), 2^i] ns */
};

/* Key of `totals`. */
struct bio_key {
	char disk[32];
	enum bio_op op;
};

/* Value of `totals` (per CPU; userspace sums the CPUs field by field). */
struct bio_total {
	__u64 ios;		/* [count] requests completed (the histogram's count) */
	__u64 bytes;		/* [bytes] their size */
	__u64 latency_ns;	/* [ns] the sum of their latencies (the histogram's sum) */
	__u64 slow;		/* [count] requests over slow_ns */
	__u64 very_slow;	/* [count] requests over very_slow_ns */
};

/*
 * Key of `counts` (value: __u64 requests, per CPU): requests per network
 * namespace of the task that issued them. The 3 bytes after `slow` are zero.
 */
struct bio_pod_key {
	sonde_netns netns;
	enum bio_op op;
	__u8 slow;		/* [none] 1: over slow_ns */
	char disk[32];
};

/* One request slower than slow_ns, in the ring buffer `events`. */
struct bio_latency_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] issued to the driver -> completed */
	__u64 sector;	/* [sectors] first sector, 512 bytes each */
	__u32 bytes;	/* [bytes] request size */
	__u32 pid;		/* [none] the task current when the request was issued */
	sonde_netns netns;	/* its network namespace */
	enum bio_op op;
	__u32 major;	/* [none] the disk's major */
	__u32 minor;		/* [none] the disk's first minor (partitions are not told apart) */
	__s32 error;		/* [none] blk_status_t of the completion, 0: OK */
	char disk[32];
	char comm[16];
};

#endif /* __BIO_LATENCY_H */
