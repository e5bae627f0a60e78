// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * packet_loss: packets the kernel drops (skb:kfree_skb), counted in the
 * kernel per (network namespace, drop reason, protocol), and optionally
 * reported one by one with the packet's tuple, the freeing location and the
 * kernel stack.
 *
 * Variants (the same logic, userspace attaches one):
 *   "tp_btf"      tpb_kfree_skb, the BTF-enabled raw tracepoint kfree_skb:
 *                 typed arguments read in place (no perf record is built)
 *                 and the namespace read with plain loads; needs the
 *                 kernel's own BTF (/sys/kernel/btf/vmlinux), 5.5+.
 *   "tracepoint"  tp_kfree_skb on skb:kfree_skb, every kernel.
 *
 * Drop reasons exist from 5.17 (0 before), and their numbering differs
 * between kernels: the raw value is stored and userspace names it from the
 * running kernel's enum skb_drop_reason (see core_fixes.h).
 *
 * Network namespace: the device's, else the owning socket's, else (6.12+)
 * the receiving socket's; 0 when none is known.
 *
 * Maps:  counts (per-CPU packets per struct drop_key), events (ring buffer
 *        of struct packet_loss_event), stacks (kernel stacks), dropped
 *        (from sonde.h).
 * Knobs: emit_events (false), stack (false), skip_not_specified (false),
 *        sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "core_fixes.h"
#include "packet_loss.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("skb:kfree_skb drops counted in the kernel per netns, reason and "
	      "protocol; optional per-drop events with tuple and stack");
SONDE_VARIANT("tp_btf", "tpb_kfree_skb",
	      "BTF raw tracepoint kfree_skb");
SONDE_VARIANT("tracepoint", "tp_kfree_skb",
	      "skb:kfree_skb");

/* Knob: send a record per drop; when false only `counts` is kept. */
const volatile bool emit_events = false;
/* Knob: capture the kernel stack of each reported drop into `stacks`. */
const volatile bool stack = false;
/*
 * Knob: ignore drops with reason SKB_DROP_REASON_NOT_SPECIFIED (plain
 * kfree_skb() calls, many of them not losses). Has no effect before 5.17,
 * where no drop has a reason.
 */
const volatile bool skip_not_specified = false;

/*
 * Packets per (netns, reason, protocol). Per-CPU: drops can come at line
 * rate. LRU: keys of namespaces gone for good age out instead of filling the
 * map; an evicted key reads as a counter reset.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct drop_key);
	__type(value, __u64);	/* [count] packets dropped */
} counts SEC(".maps");

SONDE_EVENTS(events, 1024 * 1024, struct packet_loss_event);
SONDE_STACKS(stacks, 1024);

/*
 * Count one drop and, when asked, report it. `btf`: skb and rx_sk are typed
 * pointers of a tp_btf program (plain loads), else untyped (probe reads).
 */
static __always_inline int drop(void *ctx, struct sk_buff *skb, void *location,
				__u32 reason, struct sock *rx_sk, __u16 protocol, bool btf)
{
	struct packet_loss_event *e;
	struct sonde_tuple t;
	struct drop_key key;

	if (sonde_drop_reason_is(reason, SKB_CONSUMED))
		return 0;	/* not a drop (the kernel sends these to consume_skb) */
	if (skip_not_specified && sonde_drop_reason_is(reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;

	__builtin_memset(&key, 0, sizeof(key));
	key.netns = btf ? sonde_skb_netns_btf(skb) : sonde_skb_netns(skb);
	if (!key.netns)
		key.netns = btf ? sonde_sk_netns_btf(rx_sk) : sonde_sk_netns(rx_sk);
	key.reason = reason;
	key.protocol = protocol;
	sonde_count_percpu(counts, &key, 1);

	if (!emit_events)
		return 0;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return 0;

	sonde_skb_tuple(skb, &t);
	e->ts = bpf_ktime_get_ns();
	e->location = (sonde_ksym)location;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = key.netns;
	e->reason = reason;
	e->protocol = key.protocol;
	e->family = t.family;
	e->sport = t.sport;
	e->dport = t.dport;
	e->l4proto = t.l4proto;
	e->stack = stack ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	sonde_submit(events, e);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tpb_kfree_skb, struct sk_buff *skb, void *location)
{
	if (!skb)
		return 0;
	return drop(ctx, skb, location, sonde_kfree_skb_btf_reason(ctx),
		    sonde_kfree_skb_btf_rx_sk(ctx), bpf_ntohs(skb->protocol), true);
}

SEC("tracepoint/skb/kfree_skb")
int tp_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	return drop(ctx, ctx->skbaddr, ctx->location, sonde_kfree_skb_reason(ctx),
		    sonde_kfree_skb_rx_sk(ctx), ctx->protocol, false);
}
