// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcp_reset: TCP resets sent and received, counted per network namespace and
 * kind in the kernel, and optionally reported one by one with their tuple,
 * socket state and kernel stack.
 *
 * Kinds (enum rst_kind):
 *   NOSOCK   a segment matched no socket (closed port): reset sent in reply
 *   ACTIVE   a socket aborts its own connection (tcp_send_active_reset:
 *            close with unread data, SO_LINGER {1, 0}, abort on memory or
 *            keepalive timeout)
 *   PROCESS  a socket replies to a segment it rejects (tcp_v4/v6_send_reset
 *            with a socket, including TIME_WAIT and request sockets)
 *   RECEIVE  a socket receives a reset (tcp:tcp_receive_reset)
 *
 * Variants (userspace picks one and attaches exactly these programs):
 *
 *   "tp_btf"             kernel >= 6.10, with its own BTF
 *       tpb_send_reset, tpb_receive_reset: "tracepoint" on the BTF-enabled
 *       raw tracepoints of the same events. Typed arguments read in place
 *       (no perf record is built), the namespace read with plain loads.
 *       Needs /sys/kernel/btf/vmlinux (the kernel checks the program
 *       against its own BTF).
 *
 *   "tracepoint"         kernel >= 6.10
 *       tp_send_reset, tp_receive_reset. All four kinds: since 6.10
 *       tcp:tcp_send_reset fires for every reset sent, with skb == NULL for
 *       ACTIVE and sk == NULL for NOSOCK.
 *
 *   "kprobe"             kernel < 6.10 with kprobes
 *       kp_v4_send_reset, kp_v6_send_reset, kp_active_reset,
 *       tp_receive_reset. All four kinds. tp_send_reset is NOT attached: on
 *       these kernels it reports the same ACTIVE and PROCESS resets the
 *       kprobes see, and would count them twice.
 *
 *   "tp_btf-legacy"      kernel < 6.10 without kprobes, with its own BTF
 *       tpb_send_reset, tpb_receive_reset; what "tracepoint-legacy" sees.
 *
 *   "tracepoint-legacy"  kernel < 6.10 without kprobes
 *       tp_send_reset, tp_receive_reset. ACTIVE, RECEIVE, and PROCESS from
 *       full sockets only. Before 6.10 the tracepoint does not fire for
 *       NOSOCK, nor for resets sent on behalf of TIME_WAIT or request
 *       sockets: those are not counted, and userspace should say so.
 *
 * Because each kind has exactly one source in every variant, no knob is
 * needed to avoid double counting (a `tp_sk_only` filter would never have
 * anything to drop: before 6.10 the tracepoint always has a socket, and from
 * 6.10 the kprobes are not used).
 *
 * The kprobes fire on function entry, before the kernel's own early returns;
 * they repeat the two that matter (no reset in reply to a reset; no
 * socket-less reset for a packet that was not routed to this host). A reset
 * the kernel then fails to build (no memory, TCP-MD5 key mismatch) is still
 * counted.
 *
 * Tuples: from the socket for ACTIVE and RECEIVE; for a reset sent in reply
 * to a segment (NOSOCK, PROCESS), from that segment's headers reversed, so
 * saddr/sport is always the host sending the reset. The address fields of
 * the tracepoint records are never read (their layout changed in 6.10).
 *
 * Maps:  events (ring buffer of struct tcp_reset_event), counts (resets per
 *        struct reset_key), stacks (kernel stacks), dropped (from sonde.h).
 * Knobs: emit_events (true), stack (false), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "core_fixes.h"
#include "tcp_reset.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("TCP RST segments sent and received, with tuple, state, netns and "
	      "kind");
SONDE_VARIANT("tp_btf", "tpb_send_reset tpb_receive_reset",
	      "BTF raw tracepoints tcp_send_reset (all kinds, kernel >= 6.10) + "
	      "tcp_receive_reset");
SONDE_REQUIRES_STRUCT("tp_btf", trace_event_raw_tcp_send_reset,
	"kernel < 6.10: tcp_send_reset misses resets sent with no socket");
SONDE_VARIANT("tracepoint", "tp_send_reset tp_receive_reset",
	      "tcp:tcp_send_reset (all kinds, kernel >= 6.10) + "
	      "tcp:tcp_receive_reset");
SONDE_REQUIRES_STRUCT("tracepoint", trace_event_raw_tcp_send_reset,
	"kernel < 6.10: tcp_send_reset misses resets sent with no socket");
SONDE_VARIANT("kprobe",
	      "kp_v4_send_reset kp_v6_send_reset kp_active_reset "
	      "tp_receive_reset",
	      "kprobes tcp_v4/v6_send_reset, tcp_send_active_reset + "
	      "tcp:tcp_receive_reset");
SONDE_VARIANT("tp_btf-legacy", "tpb_send_reset tpb_receive_reset",
	      "BTF raw tracepoints tcp_send_reset + tcp_receive_reset; misses "
	      "resets sent with no socket (NOSOCK)");
SONDE_REQUIRES_NO_STRUCT("tp_btf-legacy", trace_event_raw_tcp_send_reset,
	"kernel >= 6.10 uses the full tp_btf variant");
SONDE_VARIANT("tracepoint-legacy", "tp_send_reset tp_receive_reset",
	      "tcp:tcp_send_reset + tcp:tcp_receive_reset; misses resets sent "
	      "with no socket (NOSOCK)");
SONDE_REQUIRES_NO_STRUCT("tracepoint-legacy", trace_event_raw_tcp_send_reset,
	"kernel >= 6.10 uses the full tracepoint variant");

/* Knob: send a record per reset; when false only `counts` is kept. */
const volatile bool emit_events = true;
/* Knob: capture the kernel stack of each reported reset into `stacks`. */
const volatile bool stack = false;

SONDE_EVENTS(events, 1024 * 1024, struct tcp_reset_event);
SONDE_STACKS(stacks, 1024);

/* Resets per (netns, kind). LRU: counters of namespaces gone for good age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct reset_key);
	__type(value, __u64);	/* [count] resets */
} counts SEC(".maps");

/* Fill the record's tuple from the segment that caused the reset, reversed. */
static __always_inline bool reply_tuple(const struct sk_buff *skb, struct tcp_reset_event *e)
{
	struct sonde_tuple pkt;

	if (!sonde_skb_tuple(skb, &pkt))
		return false;
	e->family = pkt.family;
	__builtin_memcpy(e->saddr, pkt.daddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, pkt.saddr, sizeof(sonde_ip));
	e->sport = pkt.dport;
	e->dport = pkt.sport;
	return true;
}

static __always_inline void sock_tuple(const struct sock *sk, struct tcp_reset_event *e)
{
	struct sonde_tuple t;

	sonde_sk_tuple(sk, &t);
	e->family = t.family;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->sport = t.sport;
	e->dport = t.dport;
}

/*
 * Count one reset and, when asked, report it. sk and skb may each be NULL
 * (not both): skb is the segment the reset answers, if any. `btf`: sk and
 * skb are typed pointers of a tp_btf program (plain loads).
 */
static __always_inline void record(void *ctx, enum rst_kind kind, const struct sock *sk,
				   const struct sk_buff *skb, bool btf)
{
	struct reset_key key;
	struct tcp_reset_event *e;

	__builtin_memset(&key, 0, sizeof(key));
	key.netns = btf ? sonde_sk_netns_btf(sk) : sonde_sk_netns(sk);
	if (!key.netns)
		key.netns = btf ? sonde_skb_netns_btf(skb) : sonde_skb_netns(skb);
	key.kind = kind;
	sonde_count(counts, &key, 1);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;

	e->ts = bpf_ktime_get_ns();
	e->netns = key.netns;
	e->kind = kind;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->state = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : TCP_CLOSE;
	if (!skb || !reply_tuple(skb, e))
		sock_tuple(sk, e);
	e->stack = stack ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	sonde_submit(events, e);
}

/* The kind of a reset tcp_send_reset reports (not both NULL). */
static __always_inline enum rst_kind send_kind(const struct sock *sk, const struct sk_buff *skb)
{
	if (!skb)
		return RST_KIND_ACTIVE;
	return sk ? RST_KIND_PROCESS : RST_KIND_NOSOCK;
}

SEC("tracepoint/tcp/tcp_send_reset")
int tp_send_reset(void *ctx)
{
	struct sk_buff *skb;
	struct sock *sk;

	sonde_tcp_send_reset_args(ctx, &skb, &sk);
	if (!sk && !skb)
		return 0;
	record(ctx, send_kind(sk, skb), sk, skb, false);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	const struct sock *sk = ctx->skaddr;

	if (sk)
		record(ctx, RST_KIND_RECEIVE, sk, NULL, false);
	return 0;
}

/*
 * Before 6.10 the third argument (reason) does not exist: it is not read.
 * One branch per kind: the verifier refuses to combine the two pointers in
 * one test (sk || skb compiles to an OR of them).
 */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tpb_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	if (sk && skb)
		record(ctx, RST_KIND_PROCESS, sk, skb, true);
	else if (skb)
		record(ctx, RST_KIND_NOSOCK, NULL, skb, true);
	else if (sk)
		record(ctx, RST_KIND_ACTIVE, sk, NULL, true);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tpb_receive_reset, struct sock *sk)
{
	if (sk)
		record(ctx, RST_KIND_RECEIVE, sk, NULL, true);
	return 0;
}

/* tcp_v4_send_reset(): no reset for a reset, nor for a socket-less non-local packet. */
static __always_inline bool v4_reset_is_sent(const struct sock *sk, const struct sk_buff *skb)
{
	struct sonde_tuple pkt;
	unsigned long refdst;
	struct rtable *rt;

	if (sonde_skb_tuple(skb, &pkt) && (pkt.tcp_flags & SONDE_TCP_FLAG_RST))
		return false;
	if (sk)
		return true;
	refdst = BPF_CORE_READ(skb, _skb_refdst) & ~1UL;	/* ~SKB_DST_NOREF */
	rt = (struct rtable *)refdst;
	return rt && BPF_CORE_READ(rt, rt_type) == RTN_LOCAL;
}

/* tcp_v6_send_reset(): same, with ipv6_unicast_destination() for the route. */
static __always_inline bool v6_reset_is_sent(const struct sock *sk, const struct sk_buff *skb)
{
	struct sonde_tuple pkt;
	unsigned long refdst;
	struct rt6_info *rt;

	if (sonde_skb_tuple(skb, &pkt) && (pkt.tcp_flags & SONDE_TCP_FLAG_RST))
		return false;
	if (sk)
		return true;
	refdst = BPF_CORE_READ(skb, _skb_refdst) & ~1UL;
	rt = (struct rt6_info *)refdst;
	return rt && (BPF_CORE_READ(rt, rt6i_flags) & RTF_LOCAL);
}

SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(kp_v4_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (skb && v4_reset_is_sent(sk, skb))
		record(ctx, sk ? RST_KIND_PROCESS : RST_KIND_NOSOCK, sk, skb, false);
	return 0;
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(kp_v6_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (skb && v6_reset_is_sent(sk, skb))
		record(ctx, sk ? RST_KIND_PROCESS : RST_KIND_NOSOCK, sk, skb, false);
	return 0;
}

SEC("kprobe/tcp_send_active_reset")
int BPF_KPROBE(kp_active_reset, struct sock *sk)
{
	if (sk)
		record(ctx, RST_KIND_ACTIVE, sk, NULL, false);
	return 0;
}
