/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp_retrans: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __TCP_RETRANS_H
#define __TCP_RETRANS_H

#include "sonde.h"

/*
 * Address family of the socket; decodes as "IPv4", "IPv6". One byte (packed),
 * so that struct retrans_key, hashed on every retransmission, is 8 bytes.
 */
enum retrans_family {
	RETRANS_FAMILY_IPv4 = 2,	/* AF_INET */
	RETRANS_FAMILY_IPv6 = 10,	/* AF_INET6 (v4-mapped peers included) */
} __attribute__((packed));

/*
 * Key of the `counts` map (value: __u64 segments, per CPU). state is the
 * socket's state when it retransmits: ESTABLISHED, SYN_SENT (a SYN),
 * FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING, SYN_RECV (Fast Open), or
 * NEW_SYN_RECV for a SYN-ACK retransmitted by a listener. The 2 bytes of
 * tail padding are always zero.
 */
struct retrans_key {
	sonde_netns netns;
	enum retrans_family family;
	sonde_tcp_state state;
};

/*
 * One retransmission, in the ring buffer `events` (knob emit_events).
 * saddr/sport is the local end, daddr/dport the peer.
 */
struct tcp_retrans_event {
	sonde_ktime ts;
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	sonde_stack_id stack;	/* kernel stack; [] with knob `stack` off, or none */
	sonde_port sport;
	sonde_port dport;
	__u16 segs;		/* [count] segments retransmitted (1 unless TSO/GSO) */
	__u16 family;		/* [none] AF_INET, AF_INET6 */
	sonde_tcp_state state;	/* as in struct retrans_key */
};

#endif /* __TCP_RETRANS_H */
