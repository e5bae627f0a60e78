/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sock_pressure: records and map keys shared with userspace (decoded by
 * field name from BTF).
 */
#ifndef __SOCK_PRESSURE_H
#define __SOCK_PRESSURE_H

#include "sonde.h"

/*
 * What the kernel refused. Decodes as "RCVQUEUE_FULL", "RECV_BUF_LIMIT",
 * "SEND_BUF_LIMIT", "UDP_RCVBUF", "UDP_MEM".
 */
enum pressure_kind {
	PRESSURE_KIND_RCVQUEUE_FULL = 0,	/* sock:sock_rcvqueue_full: a packet for a
						 * socket whose receive buffer is full
						 * (ICMP ping and other sockets that
						 * queue through sock_queue_rcv_skb) */
	PRESSURE_KIND_RECV_BUF_LIMIT = 1,	/* sock:sock_exceed_buf_limit, receive:
						 * the protocol's memory limit (tcp_mem,
						 * udp_mem) or the cgroup's refused it */
	PRESSURE_KIND_SEND_BUF_LIMIT = 2,	/* the same for memory to send */
	PRESSURE_KIND_UDP_RCVBUF = 3,		/* udp:udp_fail_queue_rcv_skb, -ENOMEM:
						 * the socket's receive buffer is full
						 * (the kernel's Udp RcvbufErrors) */
	PRESSURE_KIND_UDP_MEM = 4,		/* the same, any other error (-ENOBUFS:
						 * protocol memory, Udp MemErrors) */
};

/*
 * Key of `counts` (value: __u64 refusals, per CPU). l4proto is the socket's
 * protocol (sk_protocol: TCP, UDP, ICMP, or the protocol of a raw socket).
 */
struct pressure_key {
	sonde_netns netns;
	enum pressure_kind kind;
	sonde_l4proto l4proto;
};

/*
 * One refusal, in the ring buffer `events` (knob emit_events). saddr/sport is
 * the socket's local end, daddr/dport its peer when it is connected (0
 * otherwise: the sender of a refused datagram is not in the tracepoints of
 * every kernel). Buffer sizes are the socket's at the time, in bytes.
 */
struct sock_pressure_event {
	sonde_ktime ts;
	__s64 allocated;	/* [pages or errno] BUF_LIMIT kinds: the protocol's memory in use, in
				 * pages; the error code for UDP kinds; else 0 */
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	enum pressure_kind kind;
	__s32 rmem_alloc;	/* [bytes] receive memory in use */
	__s32 rcvbuf;		/* [bytes] SO_RCVBUF */
	__s32 wmem_queued;	/* [bytes] send memory queued */
	__s32 sndbuf;		/* [bytes] SO_SNDBUF */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6 (others: no addresses) */
	sonde_l4proto l4proto;
};

#endif /* __SOCK_PRESSURE_H */
