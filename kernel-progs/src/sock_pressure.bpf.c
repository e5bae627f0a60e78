// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock_pressure: data the kernel refused to queue on a socket for lack of
 * buffer space, counted in the kernel per (network namespace, kind, socket
 * protocol), optionally reported one by one with the socket's tuple and
 * buffer sizes.
 *
 * Hooks (one variant, "raw_tracepoint", every kernel from 5.10 on):
 *   sock:sock_rcvqueue_full(sk, skb)          -> RCVQUEUE_FULL
 *   sock:sock_exceed_buf_limit(sk, prot, allocated, kind)
 *                                             -> RECV_BUF_LIMIT, SEND_BUF_LIMIT
 *   udp:udp_fail_queue_rcv_skb(rc, sk[, skb]) -> UDP_RCVBUF (rc -ENOMEM),
 *                                                UDP_MEM (other rc)
 *
 * Raw tracepoints, because their arguments are the same on every kernel we
 * support while the classic records are not: udp_fail_queue_rcv_skb's record
 * has only `rc` and `lport` up to 6.9 and the datagram's addresses from 6.10
 * ("net: udp: add IP/port data to the tracepoint udp/udp_fail_queue_rcv_skb"),
 * which also added the skb argument; none of the three records has the
 * socket, hence no network namespace, while the raw arguments do. Only the
 * arguments present everywhere are read (a raw tracepoint program that reads
 * one more argument than the kernel passes loads but does not attach).
 *
 * UDP_RCVBUF counts exactly what the kernel adds to Udp RcvbufErrors, and
 * UDP_MEM what it adds to Udp MemErrors. IPv6 (Udp6 RcvbufErrors, MemErrors)
 * only from 6.10: the change above also made __udpv6_queue_rcv_skb() fire the
 * tracepoint; before it (5.10, 6.1: checked in Debian's 6.1 image) only IPv4
 * UDP does. RCVQUEUE_FULL is what ICMP ping sockets and others that queue
 * through sock_queue_rcv_skb() add to their sk_drops (/proc/net/icmp
 * "drops"). Raw sockets used to be among them; 6.18 checks their buffer
 * before cloning the packet for them, without this tracepoint (seen here:
 * their drops rise, nothing fires).
 * TCP never takes these paths for a full receive queue (it counts
 * TcpExt TCPRcvQDrop / TCPBacklogDrop without a tracepoint); it shows up here
 * only through the BUF_LIMIT kinds.
 *
 * Maps:  counts (LRU per-CPU hash, struct pressure_key -> __u64), events
 *        (ring buffer of struct sock_pressure_event), dropped (sonde.h).
 * Knobs: emit_events (false), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "sock_pressure.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("data refused by sockets for lack of buffer space (receive queue "
	      "full, protocol memory limit, UDP receive buffer errors) counted "
	      "in the kernel per netns, kind and protocol; optional per-refusal "
	      "events");
SONDE_VARIANT("raw_tracepoint",
	      "rtp_rcvqueue_full rtp_exceed_buf_limit rtp_udp_fail_queue",
	      "raw tracepoints sock_rcvqueue_full, sock_exceed_buf_limit, "
	      "udp_fail_queue_rcv_skb");

/* Knob: send a record per refusal; when false only `counts` is kept. */
const volatile bool emit_events = false;

#define SK_MEM_RECV 1		/* include/net/sock.h: the `kind` argument */
#define SP_ENOMEM 12		/* include/uapi/asm-generic/errno-base.h */

/*
 * Refusals per (netns, kind, protocol). Per-CPU: a flood refuses at line
 * rate. LRU: keys of namespaces gone for good age out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct pressure_key);
	__type(value, __u64);	/* [count] refusals */
} counts SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct sock_pressure_event);

static __always_inline void refused(const struct sock *sk, enum pressure_kind kind,
				    __s64 allocated)
{
	const struct sock___sk *s = (const void *)sk;
	struct sock_pressure_event *e;
	struct pressure_key key;
	struct sonde_tuple t;

	if (!sk)
		return;
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = sonde_sk_netns(sk);
	key.kind = kind;
	key.l4proto = BPF_CORE_READ(s, sk_protocol);
	sonde_count_percpu(counts, &key, 1);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	sonde_sk_tuple(sk, &t);
	e->ts = bpf_ktime_get_ns();
	e->allocated = allocated;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = key.netns;
	e->kind = kind;
	e->rmem_alloc = BPF_CORE_READ(s, sk_backlog.rmem_alloc.counter);
	e->rcvbuf = BPF_CORE_READ(s, sk_rcvbuf);
	e->wmem_queued = BPF_CORE_READ(s, sk_wmem_queued);
	e->sndbuf = BPF_CORE_READ(s, sk_sndbuf);
	e->family = t.family;
	if (t.family == AF_INET || t.family == AF_INET6) {
		e->sport = t.sport;
		e->dport = t.dport;
	} else {
		e->sport = 0;
		e->dport = 0;
	}
	e->l4proto = key.l4proto;
	sonde_submit(events, e);
}

/* void trace_sock_rcvqueue_full(struct sock *sk, struct sk_buff *skb) */
SEC("raw_tp/sock_rcvqueue_full")
int BPF_PROG(rtp_rcvqueue_full, struct sock *sk)
{
	refused(sk, PRESSURE_KIND_RCVQUEUE_FULL, 0);
	return 0;
}

/*
 * void trace_sock_exceed_buf_limit(struct sock *sk, struct proto *prot,
 *                                  long allocated, int kind)
 */
SEC("raw_tp/sock_exceed_buf_limit")
int BPF_PROG(rtp_exceed_buf_limit, struct sock *sk, void *prot, long allocated, int kind)
{
	refused(sk,
		kind == SK_MEM_RECV ? PRESSURE_KIND_RECV_BUF_LIMIT : PRESSURE_KIND_SEND_BUF_LIMIT,
		allocated);
	return 0;
}

/* void trace_udp_fail_queue_rcv_skb(int rc, struct sock *sk[, struct sk_buff *skb]) */
SEC("raw_tp/udp_fail_queue_rcv_skb")
int BPF_PROG(rtp_udp_fail_queue, int rc, struct sock *sk)
{
	refused(sk, rc == -SP_ENOMEM ? PRESSURE_KIND_UDP_RCVBUF : PRESSURE_KIND_UDP_MEM, rc);
	return 0;
}
