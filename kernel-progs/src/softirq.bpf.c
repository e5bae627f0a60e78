// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * softirq: per softirq vector (NET_RX, TIMER, ...), how long a raised softirq
 * waits before its handler runs (delay: softirq_raise -> softirq_entry) and
 * how long the handler runs (run: softirq_entry -> softirq_exit), as log2
 * histograms kept in the kernel, with counts over two thresholds and a
 * record for each time over the first.
 *
 * A softirq is raised, pending and run on one CPU, and a vector never nests
 * with itself on a CPU, so the state is a per-CPU array indexed by vector
 * (`state`): the time of the first raise not yet run, and the time the
 * running handler started. Nothing is keyed by object, nothing can leak.
 * A raise seen while the vector is already pending keeps the first time
 * (the wait of the oldest request). An entry with no raise recorded (raised
 * before the program was attached, or pended without the tracepoint) gives
 * no delay sample; an exit with no entry gives no run sample.
 *
 * Node-level: softirqs run on behalf of whatever was interrupted, so there
 * is no pod. Records carry the CPU and the interrupted task (ksoftirqd when
 * the softirq was deferred to it).
 *
 * Variants (the same logic, userspace attaches one set):
 *   "raw_tracepoint"  raw_softirq_raise, raw_softirq_entry, raw_softirq_exit
 *                     on raw tracepoints (no perf record built: cheaper on
 *                     this very hot path). The tracepoints' single argument,
 *                     the vector number, has not changed since 2.6.37.
 *   "tracepoint"      tp_softirq_raise, tp_softirq_entry, tp_softirq_exit
 *                     on irq:softirq_* (class softirq, field `vec`), where
 *                     raw tracepoints cannot be attached.
 *
 * Maps:  state (per-CPU array, vector -> struct vec_state), hist (per-CPU
 *        hash, struct softirq_hist_key -> __u64), totals (per-CPU hash,
 *        struct softirq_key -> struct softirq_total), events (ring buffer
 *        of struct softirq_event), dropped (sonde.h).
 * Knobs: slow_ns (10 ms), very_slow_ns (100 ms), emit_events (true),
 *        sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "softirq.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("softirq delay (raise -> entry) and run time (entry -> exit) per "
	      "vector: log2 histograms and counts over slow_ns / very_slow_ns "
	      "in the kernel, events with the cpu over slow_ns");
SONDE_VARIANT("raw_tracepoint",
	      "raw_softirq_raise raw_softirq_entry raw_softirq_exit",
	      "raw tracepoints softirq_raise, softirq_entry, softirq_exit");
SONDE_VARIANT("tracepoint", "tp_softirq_raise tp_softirq_entry tp_softirq_exit",
	      "irq:softirq_raise, irq:softirq_entry, irq:softirq_exit");

/* Knob: a delay or run time over this is slow: counted and reported. */
const volatile __u64 slow_ns = 10 * 1000 * 1000;
/* Knob: the second tier, counted apart (KubeSkoop's *_100MS). */
const volatile __u64 very_slow_ns = 100 * 1000 * 1000;
/* Knob: send a record for each time over slow_ns. */
const volatile bool emit_events = true;

struct vec_state {
	__u64 raised;		/* [ns, CLOCK_MONOTONIC] first raise not yet run, 0: none */
	__u64 entered;		/* [ns, CLOCK_MONOTONIC] handler start, 0: not running */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SOFTIRQ_NR_VECS);
	__type(key, __u32);	/* [none] softirq vector number */
	__type(value, struct vec_state);
} state SEC(".maps");

/* At most SOFTIRQ_NR_VECS * 2 phases * 64 slots keys: no eviction needed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SOFTIRQ_NR_VECS * 2 * 64);
	__type(key, struct softirq_hist_key);
	__type(value, __u64);	/* [count] samples */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SOFTIRQ_NR_VECS * 2);
	__type(key, struct softirq_key);
	__type(value, struct softirq_total);
} totals SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct softirq_event);

static __always_inline void account(__u32 vec, enum softirq_phase phase, __u64 ns)
{
	struct softirq_hist_key hk = {
		.vec = vec, .phase = phase, .slot = sonde_log2_slot(ns, SONDE_LOG2_SLOTS_MAX),
	};
	struct softirq_key k = { .vec = vec, .phase = phase };
	struct softirq_total *t;
	struct softirq_event *e;
	bool slow = ns > slow_ns;

	sonde_count_percpu(hist, &hk, 1);

	t = bpf_map_lookup_elem(&totals, &k);
	if (!t) {
		struct softirq_total zero = {};

		bpf_map_update_elem(&totals, &k, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&totals, &k);
		if (!t)
			return;
	}
	t->count += 1;		/* per-CPU value: no other writer */
	t->sum_ns += ns;
	if (slow)
		t->slow += 1;
	if (ns > very_slow_ns)
		t->very_slow += 1;

	if (!emit_events || !slow)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	e->ts = bpf_ktime_get_ns();
	e->latency_ns = ns;
	e->vec = vec;
	e->phase = phase;
	e->cpu = bpf_get_smp_processor_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	sonde_submit(events, e);
}

static __always_inline int on_raise(__u32 vec)
{
	struct vec_state *s = bpf_map_lookup_elem(&state, &vec);

	if (s && !s->raised)
		s->raised = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_entry(__u32 vec)
{
	struct vec_state *s = bpf_map_lookup_elem(&state, &vec);
	__u64 now = bpf_ktime_get_ns();
	__u64 raised;

	if (!s)
		return 0;
	raised = s->raised;
	s->raised = 0;
	s->entered = now;
	if (raised && now > raised)
		account(vec, SOFTIRQ_PHASE_DELAY, now - raised);
	return 0;
}

static __always_inline int on_exit(__u32 vec)
{
	struct vec_state *s = bpf_map_lookup_elem(&state, &vec);
	__u64 now = bpf_ktime_get_ns();
	__u64 entered;

	if (!s)
		return 0;
	entered = s->entered;
	s->entered = 0;
	if (entered && now > entered)
		account(vec, SOFTIRQ_PHASE_RUN, now - entered);
	return 0;
}

/* ---- raw tracepoints: void (*)(void *, unsigned int vec_nr) ----------- */

SEC("raw_tp/softirq_raise")
int BPF_PROG(raw_softirq_raise, unsigned int vec_nr)
{
	return on_raise(vec_nr);
}

SEC("raw_tp/softirq_entry")
int BPF_PROG(raw_softirq_entry, unsigned int vec_nr)
{
	return on_entry(vec_nr);
}

SEC("raw_tp/softirq_exit")
int BPF_PROG(raw_softirq_exit, unsigned int vec_nr)
{
	return on_exit(vec_nr);
}

/* ---- classic tracepoints: irq:softirq_*, record class softirq --------- */

SEC("tracepoint/irq/softirq_raise")
int tp_softirq_raise(struct trace_event_raw_softirq *ctx)
{
	return on_raise(ctx->vec);
}

SEC("tracepoint/irq/softirq_entry")
int tp_softirq_entry(struct trace_event_raw_softirq *ctx)
{
	return on_entry(ctx->vec);
}

SEC("tracepoint/irq/softirq_exit")
int tp_softirq_exit(struct trace_event_raw_softirq *ctx)
{
	return on_exit(ctx->vec);
}
