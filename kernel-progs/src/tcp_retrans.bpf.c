// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcp_retrans: TCP retransmissions, counted in the kernel per (network
 * namespace, address family, socket state) in segments, and optionally
 * reported one by one with the tuple, the state and the kernel stack.
 *
 * Sources:
 *   tcp:tcp_retransmit_skb     a data, SYN or FIN segment retransmitted by a
 *                              socket (timeout, fast retransmit, loss probe
 *                              repair...). Counted as tcp_skb_pcount(skb)
 *                              segments, the unit of the kernel's own
 *                              RetransSegs counter. On kernels where the
 *                              event also reports failed attempts (err, see
 *                              core_fixes.h), only err == 0 is counted.
 *   tcp:tcp_retransmit_synack  a SYN-ACK retransmitted by a listener for a
 *                              pending connection (its request socket),
 *                              counted with state NEW_SYN_RECV.
 *
 * Together these match the namespace's Tcp RetransSegs (/proc/net/snmp) when
 * no transmit fails: RetransSegs also counts a segment whose transmission
 * the IP layer refused (a route or netfilter error), which the tracepoint of
 * 5.10 and 6.1 does not report.
 *
 * Variants (the same logic, userspace attaches one pair):
 *   "tp_btf"      tpb_retransmit_skb, tpb_retransmit_synack on the
 *                 BTF-enabled raw tracepoints of the same events: typed
 *                 arguments read in place (no perf record is built), socket
 *                 fields read with plain loads; needs the kernel's own BTF
 *                 (/sys/kernel/btf/vmlinux), 5.5+.
 *   "tracepoint"  tp_retransmit_skb, tp_retransmit_synack, every kernel
 *                 (both events exist since 4.16 and 4.15).
 *
 * Maps:  counts (per-CPU segments per struct retrans_key), events (ring
 *        buffer of struct tcp_retrans_event), stacks, dropped (sonde.h).
 * Knobs: emit_events (false), stack (false), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "core_fixes.h"
#include "tcp_retrans.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("TCP retransmitted segments counted in the kernel per netns, "
	      "family and state (SYN-ACKs included); optional "
	      "per-retransmission events with tuple and stack");
SONDE_VARIANT("tp_btf", "tpb_retransmit_skb tpb_retransmit_synack",
	      "BTF raw tracepoints tcp_retransmit_skb + tcp_retransmit_synack");
SONDE_VARIANT("tracepoint", "tp_retransmit_skb tp_retransmit_synack",
	      "tcp:tcp_retransmit_skb + tcp:tcp_retransmit_synack");

/* Knob: send a record per retransmission; when false only `counts` is kept. */
const volatile bool emit_events = false;
/* Knob: capture the kernel stack of each reported retransmission. */
const volatile bool stack = false;

/*
 * Segments per (netns, family, state). Per-CPU: a lossy path retransmits at
 * a high rate. LRU: keys of namespaces gone for good age out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct retrans_key);
	__type(value, __u64);	/* [count] segments retransmitted */
} counts SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct tcp_retrans_event);
SONDE_STACKS(stacks, 1024);

/*
 * tcp_skb_pcount(skb): TCP_SKB_CB(skb)->tcp_gso_segs, at least 1. `btf`: skb
 * is a typed pointer of a tp_btf program (plain load), else a probe read.
 */
static __always_inline __u16 skb_segs(const struct sk_buff *skb, bool btf)
{
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)((struct sk_buff___tcp *)skb)->cb;
	__u16 segs = btf ? cb->tcp_gso_segs : BPF_CORE_READ(cb, tcp_gso_segs);

	return segs ? segs : 1;
}

/*
 * Count `segs` segments retransmitted by `sk` (a full socket, or for a
 * SYN-ACK the request socket, whose sock_common has the tuple) and report
 * them when asked. netns_sk gives the namespace (the listener for a SYN-ACK).
 * `btf`: the sockets are typed pointers of a tp_btf program (plain loads).
 */
static __always_inline void record(void *ctx, const struct sock *sk,
				   const struct sock *netns_sk, __u8 state, __u16 segs,
				   bool btf)
{
	struct tcp_retrans_event *e;
	struct retrans_key key;
	struct sonde_tuple t;

	__builtin_memset(&key, 0, sizeof(key));
	key.netns = btf ? sonde_sk_netns_btf(netns_sk) : sonde_sk_netns(netns_sk);
	key.family = btf ? sk->__sk_common.skc_family : BPF_CORE_READ(sk, __sk_common.skc_family);
	key.state = state;
	sonde_count_percpu(counts, &key, segs);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	sonde_sk_tuple(sk, &t);
	e->ts = bpf_ktime_get_ns();
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = key.netns;
	e->sport = t.sport;
	e->dport = t.dport;
	e->segs = segs;
	e->family = t.family;
	e->state = state;
	e->stack = stack ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	sonde_submit(events, e);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_retransmit_skb(void *ctx)
{
	struct sk_buff *skb;
	struct sock *sk;
	int err;

	sonde_tcp_retransmit_skb_args(ctx, &skb, &sk, &err);
	if (err || !sk || !skb)
		return 0;
	record(ctx, sk, sk, BPF_CORE_READ(sk, __sk_common.skc_state), skb_segs(skb, false), false);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int tp_retransmit_synack(struct trace_event_raw_tcp_retransmit_synack *ctx)
{
	const struct sock *sk = ctx->skaddr;
	const struct sock *req = ctx->req;

	if (sk && req)
		record(ctx, req, sk, TCP_NEW_SYN_RECV, 1, false);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tpb_retransmit_skb, const struct sock *sk, const struct sk_buff *skb)
{
	if (sonde_tcp_retransmit_skb_btf_err(ctx) || !sk || !skb)
		return 0;
	record(ctx, sk, sk, sk->__sk_common.skc_state, skb_segs(skb, true), true);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tpb_retransmit_synack, const struct sock *sk, const struct sock *req)
{
	if (sk && req)
		record(ctx, req, sk, TCP_NEW_SYN_RECV, 1, true);
	return 0;
}
