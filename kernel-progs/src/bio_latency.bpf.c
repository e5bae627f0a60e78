// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bio_latency: block request latency, from the request being issued to the
 * driver (block_rq_issue) to its completion (block_rq_complete), as a log2
 * histogram per (disk, operation) kept in the kernel, with totals, counts
 * per issuing network namespace, and a record per request slower than
 * slow_ns.
 *
 * The request pointer ties issue to completion: the raw tracepoints give
 * `struct request *` (the classic tracepoint records only have dev and
 * sector). At issue, the start time, size, operation and the current task
 * go in `start` (LRU hash keyed by the request); the completion deletes the
 * entry, so nothing stays behind; a completion that was never seen (device
 * removed, program attached mid-flight) ages out of the LRU. A request that
 * is requeued and issued again is timed from its last issue. A partial
 * completion (nr_bytes < the bytes still to do) keeps the entry: the request
 * is timed to its last byte.
 *
 * The disk is the request's gendisk (disk_name, major, first minor):
 * partitions count toward their disk.
 *
 * The pod: the network namespace of the task current at issue. For
 * synchronous and direct I/O submitted by a process it is that process
 * (the block layer issues from the submitter's context when it can). It is
 * NOT the originator when the request is issued from a kworker or kblockd
 * (writeback of dirty pages, a requeue, a busy queue run later, a stacked
 * device such as loop or dm issuing to the disk below, I/O scheduler
 * dispatch from another context): those count toward the host (kworkers
 * live there). The record's pid and comm show which case it was.
 *
 * Variants: "raw_tracepoint" (raw_rq_issue, raw_rq_complete). Since the
 * tracepoint change "block: remove the request_queue to argument request
 * based tracepoints" (5.11, also in Debian's 5.10.262) block_rq_issue takes
 * (struct request *rq); before, (struct request_queue *q, struct request
 * *rq). The issue program reads the first argument and checks that it is a
 * request (its disk's queue is its queue): on a kernel with the older
 * arguments nothing is measured rather than something wrong.
 *
 * Maps:  start (LRU hash, request -> struct start), hist (LRU per-CPU hash,
 *        struct bio_hist_key -> __u64), totals (LRU per-CPU hash, struct
 *        bio_key -> struct bio_total), counts (LRU per-CPU hash, struct
 *        bio_pod_key -> __u64), events (ring buffer of struct
 *        bio_latency_event), dropped (sonde.h).
 * Knobs: slow_ns (10 ms), very_slow_ns (100 ms), emit_events (true),
 *        sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "core_fixes.h"
#include "bio_latency.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("block request latency (issue -> complete) per disk and "
	      "operation: log2 histograms, totals and per-pod counts in the "
	      "kernel, events over slow_ns with disk, op, bytes and the issuing "
	      "task");
SONDE_VARIANT("raw_tracepoint", "raw_rq_issue raw_rq_complete",
	      "raw tracepoints block_rq_issue, block_rq_complete (the request "
	      "pointer)");

/* Knob: a request slower than this is slow: counted and reported. */
const volatile __u64 slow_ns = 10 * 1000 * 1000;
/* Knob: the second tier, counted apart (KubeSkoop's BIOLAT_100MS). */
const volatile __u64 very_slow_ns = 100 * 1000 * 1000;
/* Knob: send a record per request over slow_ns. */
const volatile bool emit_events = true;

/* REQ_OP_* values (include/linux/blk_types.h), the same from 4.10 to 6.18. */
#define REQ_OP_READ 0
#define REQ_OP_WRITE 1
#define REQ_OP_FLUSH 2
#define REQ_OP_DISCARD 3

struct start {
	__u64 ts;	/* [ns, CLOCK_MONOTONIC] issued to the driver */
	__u32 bytes;	/* [bytes] request size */
	__u32 pid;	/* [none] the task current at issue */
	sonde_netns netns;	/* [none] its network namespace */
	enum bio_op op;
	char comm[16];
};

/* Requests in flight. LRU: a completion never seen ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);	/* [none] kernel address of the request */
	__type(value, struct start);
} start SEC(".maps");

/* LRU: disks come and go (loop, nbd, hot-plug); gone ones age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct bio_hist_key);
	__type(value, __u64);	/* [count] requests */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bio_key);
	__type(value, struct bio_total);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct bio_pod_key);
	__type(value, __u64);	/* [count] requests */
} counts SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct bio_latency_event);

static __always_inline enum bio_op req_op(struct request *rq)
{
	switch (BPF_CORE_READ(rq, cmd_flags) & SONDE_REQ_OP_MASK) {
	case REQ_OP_READ:
		return BIO_OP_READ;
	case REQ_OP_WRITE:
		return BIO_OP_WRITE;
	case REQ_OP_FLUSH:
		return BIO_OP_FLUSH;
	case REQ_OP_DISCARD:
		return BIO_OP_DISCARD;
	default:
		return BIO_OP_OTHER;
	}
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(raw_rq_issue, struct request *rq)
{
	struct task_struct___bio *task;
	struct gendisk *disk;
	struct start s;
	__u64 key = (__u64)rq;

	/* A request's disk points back to its queue (see the header comment). */
	disk = sonde_rq_disk(rq);
	if (!disk || BPF_CORE_READ(disk, queue) != BPF_CORE_READ(rq, q))
		return 0;

	__builtin_memset(&s, 0, sizeof(s));
	s.ts = bpf_ktime_get_ns();
	s.bytes = BPF_CORE_READ(rq, __data_len);
	s.op = req_op(rq);
	s.pid = bpf_get_current_pid_tgid() >> 32;
	task = (struct task_struct___bio *)bpf_get_current_task();
	s.netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	bpf_map_update_elem(&start, &key, &s, BPF_ANY);
	return 0;
}

static __always_inline void total(const struct bio_key *k, const struct start *s, __u64 ns,
				  bool slow)
{
	struct bio_total *t = bpf_map_lookup_elem(&totals, k);

	if (!t) {
		struct bio_total zero = {};

		bpf_map_update_elem(&totals, k, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&totals, k);
		if (!t)
			return;
	}
	t->ios += 1;		/* per-CPU value: no other writer */
	t->bytes += s->bytes;
	t->latency_ns += ns;
	if (slow)
		t->slow += 1;
	if (ns > very_slow_ns)
		t->very_slow += 1;
}

/* void (*)(void *, struct request *rq, blk_status_t error, unsigned int nr_bytes) */
SEC("raw_tp/block_rq_complete")
int BPF_PROG(raw_rq_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	struct bio_latency_event *e;
	struct bio_hist_key hk;
	struct bio_pod_key pk;
	struct gendisk *disk;
	struct bio_key k;
	struct start *sp;
	struct start s;
	__u64 key = (__u64)rq;
	__u64 now, ns;
	bool slow;

	sp = bpf_map_lookup_elem(&start, &key);
	if (!sp)
		return 0;
	if (nr_bytes < BPF_CORE_READ(rq, __data_len))
		return 0;	/* partial completion: more to come */
	now = bpf_ktime_get_ns();
	s = *sp;
	bpf_map_delete_elem(&start, &key);
	ns = now > s.ts ? now - s.ts : 0;
	slow = ns > slow_ns;

	__builtin_memset(&k, 0, sizeof(k));
	disk = sonde_rq_disk(rq);
	bpf_probe_read_kernel_str(k.disk, sizeof(k.disk), &disk->disk_name);
	k.op = s.op;
	total(&k, &s, ns, slow);

	__builtin_memset(&hk, 0, sizeof(hk));
	__builtin_memcpy(hk.disk, k.disk, sizeof(hk.disk));
	hk.op = s.op;
	hk.slot = sonde_log2_slot(ns, SONDE_LOG2_SLOTS_MAX);
	sonde_count_percpu(hist, &hk, 1);

	__builtin_memset(&pk, 0, sizeof(pk));
	pk.netns = s.netns;
	pk.op = s.op;
	pk.slow = slow;
	__builtin_memcpy(pk.disk, k.disk, sizeof(pk.disk));
	sonde_count_percpu(counts, &pk, 1);

	if (!emit_events || !slow)
		return 0;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return 0;
	e->ts = now;
	e->latency_ns = ns;
	e->sector = BPF_CORE_READ(rq, __sector);
	e->bytes = s.bytes;
	e->pid = s.pid;
	e->netns = s.netns;
	e->op = s.op;
	e->major = BPF_CORE_READ(disk, major);
	e->minor = BPF_CORE_READ(disk, first_minor);
	e->error = error;
	__builtin_memcpy(e->disk, k.disk, sizeof(e->disk));
	__builtin_memcpy(e->comm, s.comm, sizeof(e->comm));
	sonde_submit(events, e);
	return 0;
}
