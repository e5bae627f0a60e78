/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * core_fixes.h: one place for every difference between the kernels sonde
 * supports (5.10 .. 6.18), each behind an accessor that works on all of them.
 *
 * Every entry names the kernel release and the upstream change. The guards
 * are CO-RE checks (bpf_core_type_exists, bpf_core_field_exists,
 * bpf_core_enum_value_exists) that the loader resolves to constants before
 * the verifier runs, so the branch for the other kernels is dead code and its
 * (unresolvable) relocations are never executed.
 */
#ifndef __SONDE_CORE_FIXES_H
#define __SONDE_CORE_FIXES_H

#include "kernel.h"
#include <bpf/bpf_core_read.h>

/*
 * tcp:tcp_send_reset
 *
 * 4.15 ("tcp: add tracepoint trace_tcp_send_reset") added it in the event
 * class tcp_event_sk_skb, record struct trace_event_raw_tcp_event_sk_skb.
 * It fired from tcp_v4_send_reset()/tcp_v6_send_reset() only for a full
 * socket (so never for a closed port, a TIME_WAIT or a request socket), and
 * from tcp_send_active_reset() with skb == NULL.
 *
 * 6.10 ("trace: tcp: fully support trace_tcp_send_reset") made it an event
 * of its own, record struct trace_event_raw_tcp_send_reset, fired for every
 * reset the stack sends: sk may be NULL (no socket) and skb may be NULL
 * (active reset). The address fields changed layout in the same release
 * (sockaddr-sized saddr/daddr), so we never read them; skbaddr and skaddr
 * keep their names in both records.
 */
/*
 * The record is read with BPF_CORE_READ (a probe read) rather than direct
 * context loads: with two flavors clang merges both branches into one load
 * from a computed context offset, which the verifier rejects ("dereference
 * of modified ctx ptr").
 */
static __always_inline void sonde_tcp_send_reset_args(void *ctx,
						      struct sk_buff **skb,
						      struct sock **sk)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset)) {
		struct trace_event_raw_tcp_send_reset *rec = ctx;

		*skb = (struct sk_buff *)BPF_CORE_READ(rec, skbaddr);
		*sk = (struct sock *)BPF_CORE_READ(rec, skaddr);
	} else {
		struct trace_event_raw_tcp_event_sk_skb *rec = ctx;

		*skb = (struct sk_buff *)BPF_CORE_READ(rec, skbaddr);
		*sk = (struct sock *)BPF_CORE_READ(rec, skaddr);
	}
}

/*
 * skb:kfree_skb `reason`
 *
 * 5.17 ("net: skb: introduce kfree_skb_reason()") added `reason`, an
 * enum skb_drop_reason. Its numbering is not stable: enumerators are
 * inserted in most releases, even before NOT_SPECIFIED (Debian's 6.1 has
 * SKB_NOT_DROPPED_YET = 0, NOT_SPECIFIED = 1, NO_SOCKET = 2; 6.18 inserts
 * SKB_CONSUMED = 1, so NOT_SPECIFIED = 2, NO_SOCKET = 3). We store the raw
 * value; userspace names it from the running kernel's BTF. Before 5.17 the
 * reason is 0.
 */
static __always_inline __u32 sonde_kfree_skb_reason(struct trace_event_raw_kfree_skb *ctx)
{
	if (bpf_core_field_exists(ctx->reason))
		return (__u32)ctx->reason;
	return 0;
}

/* True when `reason` is the given enumerator on this kernel (never before 5.17). */
#define sonde_drop_reason_is(reason, enumerator)					\
	(bpf_core_enum_value_exists(enum skb_drop_reason, enumerator) &&		\
	 (reason) == (__u32)bpf_core_enum_value(enum skb_drop_reason, enumerator))

/*
 * skb:kfree_skb `rx_sk`
 *
 * 6.12 ("net: add rx_sk to trace_kfree_skb") added the receiving socket,
 * when the stack knows it (skb->sk is not set yet on receive).
 */
static __always_inline struct sock *sonde_kfree_skb_rx_sk(struct trace_event_raw_kfree_skb *ctx)
{
	if (bpf_core_field_exists(ctx->rx_sk))
		return (struct sock *)ctx->rx_sk;
	return NULL;
}

/*
 * SKB_CONSUMED (after 6.1): skbs freed with this reason are routed to
 * skb:consume_skb by the kernel and are not drops. The check in packet_loss
 * is defensive and costs one compare.
 */

/*
 * tcp:tcp_retransmit_skb `err`
 *
 * Up to 6.1 at least (Debian's 5.10 and 6.1 checked) the event belongs to
 * class tcp_event_sk_skb and __tcp_retransmit_skb() fires it only when the
 * retransmission was handed to the IP layer (err == 0). Newer kernels (a
 * 2025 netdev change, present in 6.18) give it its own record, struct
 * trace_event_raw_tcp_retransmit_skb with `err`, and fire it on every exit
 * of __tcp_retransmit_skb() after the early checks, failures
 * (-EAGAIN, -ENOMEM, -EBUSY, a refused transmit) included. *err is 0 on the
 * older kernels, where only successes are seen. skbaddr and skaddr keep
 * their names in both records.
 */
static __always_inline void sonde_tcp_retransmit_skb_args(void *ctx,
							  struct sk_buff **skb,
							  struct sock **sk, int *err)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *rec = ctx;

		*skb = (struct sk_buff *)BPF_CORE_READ(rec, skbaddr);
		*sk = (struct sock *)BPF_CORE_READ(rec, skaddr);
		*err = BPF_CORE_READ(rec, err);
	} else {
		struct trace_event_raw_tcp_event_sk_skb *rec = ctx;

		*skb = (struct sk_buff *)BPF_CORE_READ(rec, skbaddr);
		*sk = (struct sock *)BPF_CORE_READ(rec, skaddr);
		*err = 0;
	}
}

/*
 * The disk of a block request
 *
 * 5.10 has rq->rq_disk. 5.15 ("block: add an explicit ->disk backpointer to
 * the request_queue", d152c682f03c) gave the queue a `disk`, and a later
 * release ("block: remove the ->rq_disk field in struct request",
 * f3fa33acca9f) removed rq_disk: Debian's 6.1 only has rq->q->disk.
 */
static __always_inline struct gendisk *sonde_rq_disk(struct request *rq)
{
	if (bpf_core_field_exists(rq->rq_disk))
		return BPF_CORE_READ(rq, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

/*
 * The same differences seen from tp_btf programs, whose arguments are the
 * tracepoint's TP_PROTO (an array of __u64, ctx[i]). Reading an argument the
 * running kernel does not have fails verification, so each extra argument is
 * read only when the record type or field that arrived with it exists (one
 * commit added both):
 *
 *   skb:kfree_skb            (skb, location[, reason 5.17+][, rx_sk 6.12+])
 *   tcp:tcp_retransmit_skb   (sk, skb[, err: with struct
 *                            trace_event_raw_tcp_retransmit_skb])
 *   tcp:tcp_send_reset       (sk, skb[, reason 6.10+]): reason is not read
 */
static __always_inline __u32 sonde_kfree_skb_btf_reason(unsigned long long *ctx)
{
	if (bpf_core_field_exists(((struct trace_event_raw_kfree_skb *)0)->reason))
		return (__u32)ctx[2];
	return 0;
}

static __always_inline struct sock *sonde_kfree_skb_btf_rx_sk(unsigned long long *ctx)
{
	if (bpf_core_field_exists(((struct trace_event_raw_kfree_skb *)0)->rx_sk))
		return (struct sock *)ctx[3];
	return NULL;
}

static __always_inline int sonde_tcp_retransmit_skb_btf_err(unsigned long long *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb))
		return (int)ctx[2];
	return 0;
}

#endif /* __SONDE_CORE_FIXES_H */
