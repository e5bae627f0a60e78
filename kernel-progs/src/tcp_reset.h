/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp_reset: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __TCP_RESET_H
#define __TCP_RESET_H

#include "sonde.h"

/* Decodes as "NOSOCK", "ACTIVE", "PROCESS", "RECEIVE". */
enum rst_kind {
	RST_KIND_NOSOCK = 0,	/* sent in reply to a segment that matched no socket */
	RST_KIND_ACTIVE = 1,	/* sent by a socket aborting its connection (close with
				 * unread data, SO_LINGER 0, keepalive/memory abort) */
	RST_KIND_PROCESS = 2,	/* sent by a socket in reply to a bad segment (also
				 * TIME_WAIT and request sockets) */
	RST_KIND_RECEIVE = 3,	/* received by a socket */
};

/*
 * One reset, in the ring buffer `events`. saddr/sport is the local end (the
 * sender of a sent reset, the receiver of a received one), daddr/dport the
 * peer. netns is the local end's network namespace.
 */
struct tcp_reset_event {
	sonde_ktime ts;
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	enum rst_kind kind;
	__u32 pid;		/* [none] current task's tgid; unrelated to the socket in softirq */
	sonde_stack_id stack;	/* kernel stack; [] with knob `stack` off, or none */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6; 0 when no tuple was found */
	sonde_tcp_state state;	/* socket state when the reset is sent or received
				 * (CLOSE for an abort: the socket is closed first);
				 * TCP_CLOSE when there is no socket */
};

/* Key of the `counts` map: resets per network namespace and kind. */
struct reset_key {
	sonde_netns netns;
	enum rst_kind kind;
};

#endif /* __TCP_RESET_H */
