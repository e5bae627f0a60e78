// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcp_synq: connections refused by listening sockets whose queues are full,
 * counted in the kernel per listening socket (network namespace, address,
 * port) and kind, and optionally reported one by one with the client and
 * the queue lengths.
 *
 * A listener has two queues: the SYN queue (handshakes in progress, request
 * sockets) and the accept queue (connections waiting for accept(), at most
 * listen()'s backlog capped by net.core.somaxconn). The kernel refuses:
 *
 *   ACCEPT_QUEUE      the final ACK of a handshake (or a SYN cookie's ACK)
 *                     arrives while the accept queue is full. The client
 *                     thinks it is connected; its data is dropped and
 *                     retransmitted until there is room. TcpExt
 *                     ListenOverflows and ListenDrops.
 *   SYN_ACCEPT_QUEUE  a SYN arrives while the accept queue is full; the
 *                     client retransmits it. ListenOverflows, ListenDrops.
 *   SYN_QUEUE         a SYN arrives while the SYN queue is full and SYN
 *                     cookies are off (net.ipv4.tcp_syncookies = 0).
 *                     ListenDrops only.
 *
 * Variants (userspace picks one and attaches exactly these programs):
 *
 *   "kprobe"      kernels with kprobes: every kind
 *       kp_conn_request on tcp_conn_request (every SYN a listener handles),
 *       kp_v4_syn_recv_sock / kp_v6_syn_recv_sock on tcp_v4/v6_syn_recv_sock
 *       (every handshake completing). Each repeats the check the function
 *       makes first: sk_acceptq_is_full(), and in tcp_conn_request the SYN
 *       queue check before it (queue full and no cookies). A SYN that
 *       reuses the port of a TIME_WAIT connection skips the SYN queue check
 *       in the kernel; here it is counted as SYN_QUEUE when that queue is
 *       full and cookies are off. IPv4 handshakes of a dual-stack listener go
 *       through tcp_v4_syn_recv_sock from tcp_v6_syn_recv_sock: counted once,
 *       by the first.
 *
 *   "tp_btf"      kernels >= 6.12 (kfree_skb's rx_sk), with their own BTF
 *       tpb_kfree_skb on the BTF-enabled raw tracepoint kfree_skb:
 *       ACCEPT_QUEUE only. A segment dropped by a listening socket (rx_sk)
 *       with reason TCP_LISTEN_OVERFLOW (a request socket's final ACK), or
 *       with reason NO_SOCKET while its accept queue is full (a SYN cookie's
 *       ACK whose connection could not be queued: cookie_v4/v6_check gives
 *       no better reason). The SYN kinds are not seen: the kernel frees a
 *       refused SYN with consume_skb, as if handled, and no tracepoint
 *       carries the listener then; a namespace's ListenOverflows minus its
 *       ACCEPT_QUEUE count is them. Before 6.12 drops carry no socket: the
 *       variant requires kfree_skb's rx_sk, so the loader skips it there.
 *
 *   "tracepoint"  the same from skb:kfree_skb (tp_kfree_skb), for BTF from
 *       elsewhere than the running kernel.
 *
 * Maps:  counts (refusals per struct synq_key), events (ring buffer of
 *        struct tcp_synq_event), dropped (sonde.h).
 * Knobs: emit_events (false), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "core_fixes.h"
#include "tcp_synq.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("connections refused by TCP listeners with a full SYN or accept "
	      "queue, counted in the kernel per listening socket (netns, "
	      "address, port) and kind; optional per-refusal events");
SONDE_VARIANT("kprobe",
	      "kp_conn_request kp_v4_syn_recv_sock kp_v6_syn_recv_sock",
	      "kprobes tcp_conn_request (SYNs), tcp_v4/v6_syn_recv_sock "
	      "(completed handshakes): every kind");
SONDE_VARIANT("tp_btf", "tpb_kfree_skb",
	      "BTF raw tracepoint kfree_skb (kernel >= 6.12): ACCEPT_QUEUE only; "
	      "refused SYNs are not drops there");
SONDE_VARIANT("tracepoint", "tp_kfree_skb",
	      "skb:kfree_skb (kernel >= 6.12): ACCEPT_QUEUE only; refused SYNs "
	      "are not drops there");
SONDE_REQUIRES_FIELD("tp_btf", trace_event_raw_kfree_skb, rx_sk,
		     "kernel < 6.12: drops carry no socket, nothing to count");
SONDE_REQUIRES_FIELD("tracepoint", trace_event_raw_kfree_skb, rx_sk,
		     "kernel < 6.12: drops carry no socket, nothing to count");

/* Knob: send a record per refusal; when false only `counts` is kept. */
const volatile bool emit_events = false;

/* Refusals per (netns, listening address and port, kind). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct synq_key);
	__type(value, __u64);	/* [count] connections refused */
} counts SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct tcp_synq_event);

/*
 * The listener fields read here, matched by name against the running
 * kernel (the ___synq suffix is dropped when relocating).
 */
struct sock___synq {
	__u32 sk_ack_backlog;
	__u32 sk_max_ack_backlog;
} __attribute__((preserve_access_index));

struct request_sock_queue___synq {
	struct {
		int counter;
	} qlen;
} __attribute__((preserve_access_index));

struct inet_connection_sock___synq {
	struct request_sock_queue___synq icsk_accept_queue;
} __attribute__((preserve_access_index));

/* net.ipv4.tcp_syncookies: an int before 5.12, a u8 since. */
struct netns_ipv4___synq {
	__u8 sysctl_tcp_syncookies;
} __attribute__((preserve_access_index));

struct net___synq {
	struct netns_ipv4___synq ipv4;
} __attribute__((preserve_access_index));

/* The drop reasons of a refused final ACK (values from the running kernel). */
enum skb_drop_reason___synq {
	SKB_DROP_REASON_NO_SOCKET = 3,
	SKB_DROP_REASON_TCP_LISTEN_OVERFLOW = 40,
};

#define synq_reason_is(reason, enumerator)						\
	(bpf_core_enum_value_exists(enum skb_drop_reason___synq, enumerator) &&		\
	 (reason) == (__u32)bpf_core_enum_value(enum skb_drop_reason___synq, enumerator))

static __always_inline __u32 accept_queue_len(struct sock *sk)
{
	return BPF_CORE_READ((struct sock___synq *)sk, sk_ack_backlog);
}

static __always_inline __u32 accept_queue_max(struct sock *sk)
{
	return BPF_CORE_READ((struct sock___synq *)sk, sk_max_ack_backlog);
}

/* sk_acceptq_is_full(): the kernel lets the queue reach max + 1. */
static __always_inline bool accept_queue_full(struct sock *sk)
{
	return accept_queue_len(sk) > accept_queue_max(sk);
}

/* inet_csk_reqsk_queue_len(): request sockets of the listener. */
static __always_inline __u32 syn_queue_len(struct sock *sk)
{
	struct inet_connection_sock___synq *icsk = (void *)sk;

	return (__u32)BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
}

static __always_inline __u32 syncookies(struct sock *sk)
{
	struct net___synq *net = (void *)BPF_CORE_READ(sk, __sk_common.skc_net.net);
	__u8 small = 0;
	int v = 0;

	if (!net)
		return 0;
	if (bpf_core_field_size(net->ipv4.sysctl_tcp_syncookies) == 1) {
		bpf_core_read(&small, 1, &net->ipv4.sysctl_tcp_syncookies);
		return small;
	}
	bpf_core_read(&v, sizeof(v), &net->ipv4.sysctl_tcp_syncookies);
	return v;
}

/* Count one refusal by listener `sk` of segment `skb` (may be NULL). */
static __always_inline void refused(struct sock *sk, struct sk_buff *skb,
				    enum synq_kind kind)
{
	struct tcp_synq_event *e;
	struct sonde_tuple l, p;
	struct synq_key key;

	sonde_sk_tuple(sk, &l);
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = sonde_sk_netns(sk);
	key.port = l.sport;
	key.kind = kind;
	key.family = l.family == AF_INET6 ? SYNQ_FAMILY_IPv6 : SYNQ_FAMILY_IPv4;
	__builtin_memcpy(key.addr, l.saddr, sizeof(sonde_ip));
	sonde_count(counts, &key, 1);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	__builtin_memset(&p, 0, sizeof(p));
	if (skb)
		sonde_skb_tuple(skb, &p);
	e->ts = bpf_ktime_get_ns();
	__builtin_memcpy(e->saddr, l.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, p.saddr, sizeof(sonde_ip));
	e->netns = key.netns;
	e->sport = l.sport;
	e->dport = p.sport;
	e->backlog = accept_queue_len(sk);
	e->max_backlog = accept_queue_max(sk);
	e->syn_queue = syn_queue_len(sk);
	e->kind = kind;
	e->family = key.family;
	sonde_submit(events, e);
}

/* A segment dropped with `reason` by socket `sk`: a refused final ACK? */
static __always_inline int dropped_segment(struct sock *sk, struct sk_buff *skb,
					   __u32 reason)
{
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 0;
	if (synq_reason_is(reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW) ||
	    (synq_reason_is(reason, SKB_DROP_REASON_NO_SOCKET) && accept_queue_full(sk)))
		refused(sk, skb, SYNQ_KIND_ACCEPT_QUEUE);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tpb_kfree_skb, struct sk_buff *skb)
{
	return dropped_segment(sonde_kfree_skb_btf_rx_sk(ctx), skb,
			       sonde_kfree_skb_btf_reason(ctx));
}

SEC("tracepoint/skb/kfree_skb")
int tp_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	return dropped_segment(sonde_kfree_skb_rx_sk(ctx), ctx->skbaddr,
			       sonde_kfree_skb_reason(ctx));
}

/*
 * tcp_conn_request(rsk_ops, af_ops, sk, skb): a SYN for listener sk. Its
 * first checks, in order: the SYN queue full and no cookies to fall back on
 * -> drop; then the accept queue full -> drop.
 */
SEC("kprobe/tcp_conn_request")
int BPF_KPROBE(kp_conn_request, void *rsk_ops, void *af_ops, struct sock *sk,
	       struct sk_buff *skb)
{
	if (!sk)
		return 0;
	/* tcp_syn_flood_action(): with cookies on (1 or 2) the SYN goes on */
	if (syn_queue_len(sk) >= accept_queue_max(sk) && !syncookies(sk))
		refused(sk, skb, SYNQ_KIND_SYN_QUEUE);
	else if (accept_queue_full(sk))
		refused(sk, skb, SYNQ_KIND_SYN_ACCEPT_QUEUE);
	return 0;
}

/* tcp_v4_syn_recv_sock(sk, skb, ...): a handshake completing on listener sk. */
SEC("kprobe/tcp_v4_syn_recv_sock")
int BPF_KPROBE(kp_v4_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	if (sk && accept_queue_full(sk))
		refused(sk, skb, SYNQ_KIND_ACCEPT_QUEUE);
	return 0;
}

/*
 * tcp_v6_syn_recv_sock(sk, skb, ...): the same for IPv6; an IPv4 handshake
 * on a dual-stack listener is handed to tcp_v4_syn_recv_sock, counted there.
 */
SEC("kprobe/tcp_v6_syn_recv_sock")
int BPF_KPROBE(kp_v6_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	if (!sk || !skb || BPF_CORE_READ(skb, protocol) == bpf_htons(ETH_P_IP))
		return 0;
	if (accept_queue_full(sk))
		refused(sk, skb, SYNQ_KIND_ACCEPT_QUEUE);
	return 0;
}
