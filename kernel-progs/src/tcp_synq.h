/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp_synq: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __TCP_SYNQ_H
#define __TCP_SYNQ_H

#include "sonde.h"

/*
 * Why a listening socket refused a connection; decodes as "ACCEPT_QUEUE",
 * "SYN_ACCEPT_QUEUE", "SYN_QUEUE". One byte (packed).
 */
enum synq_kind {
	SYNQ_KIND_ACCEPT_QUEUE = 1,	/* the handshake completed (final ACK, or a
					 * SYN cookie's ACK) but the accept queue
					 * was full: TcpExt ListenOverflows and
					 * ListenDrops */
	SYNQ_KIND_SYN_ACCEPT_QUEUE = 2,	/* a SYN dropped, the accept queue full:
					 * ListenOverflows and ListenDrops */
	SYNQ_KIND_SYN_QUEUE = 3,	/* a SYN dropped, the SYN queue full and
					 * SYN cookies off: ListenDrops only */
} __attribute__((packed));

/* Address family of the listening socket; decodes as "IPv4", "IPv6". */
enum synq_family {
	SYNQ_FAMILY_IPv4 = 2,	/* AF_INET */
	SYNQ_FAMILY_IPv6 = 10,	/* AF_INET6 (dual-stack listeners included) */
} __attribute__((packed));

/*
 * Key of the `counts` map (value: __u64 refusals): the listening socket, by
 * network namespace, local address and port, and the kind. No padding.
 */
struct synq_key {
	sonde_netns netns;
	sonde_port port;	/* the listening port */
	enum synq_kind kind;
	enum synq_family family;
	sonde_ip addr;		/* the listening address (0.0.0.0 / :: for any) */
};

/*
 * One refusal, in the ring buffer `events` (knob emit_events). saddr/sport
 * is the listening socket, daddr/dport the client (from the refused
 * segment; empty when it could not be read).
 */
struct tcp_synq_event {
	sonde_ktime ts;
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	sonde_port sport;
	sonde_port dport;
	__u32 backlog;		/* [count] connections in the accept queue */
	__u32 max_backlog;	/* [count] the accept queue's limit: listen()'s backlog, capped by somaxconn */
	__u32 syn_queue;	/* [count] handshakes in progress (request sockets) */
	enum synq_kind kind;
	enum synq_family family;
};

#endif /* __TCP_SYNQ_H */
