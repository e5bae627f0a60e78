/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tcp_state: map keys and records shared with userspace (decoded by field
 * name from BTF). Padding is always zeroed.
 */
#ifndef __TCP_STATE_H
#define __TCP_STATE_H

#include "sonde.h"

/* Address family of the socket; decodes as "IPv4", "IPv6". */
enum conn_family {
	CONN_FAMILY_IPv4 = 2,	/* AF_INET */
	CONN_FAMILY_IPv6 = 10,	/* AF_INET6 (v4-mapped peers included) */
};

/*
 * Why a connect failed (SYN_SENT -> CLOSE), from the socket's error at that
 * moment. Decodes as "REFUSED", "TIMEOUT", ...
 */
enum fail_reason {
	FAIL_REASON_REFUSED = 0,	/* ECONNREFUSED: a reset (or ICMP port unreachable) */
	FAIL_REASON_TIMEOUT = 1,	/* ETIMEDOUT: SYN retries exhausted, no answer */
	FAIL_REASON_UNREACHABLE = 2,	/* EHOSTUNREACH/ENETUNREACH: ICMP error, or one
					 * seen while retrying */
	FAIL_REASON_ABORTED = 3,	/* no error: the application closed or
					 * disconnected the socket while connecting */
	FAIL_REASON_OTHER = 4,		/* another error; see the event's `err` */
};

/* Key of `counts`: state transitions per (netns, from, to). */
struct transition_key {
	sonde_netns netns;
	sonde_tcp_state oldstate;
	sonde_tcp_state newstate;
};

/* Key of `failed`: failed connects per (netns, reason, family). */
struct fail_key {
	sonde_netns netns;
	enum fail_reason reason;
	enum conn_family family;
};

/*
 * Key of `lifetime`: connections that closed, per (netns, slot) where slot
 * is the log2 bucket of their lifetime in milliseconds (from ESTABLISHED to
 * CLOSE): slot i counts lifetimes in (2^(i-1), 2^i] ms, slot 0 <= 1 ms.
 */
struct lifetime_key {
	sonde_netns netns;
	__u32 slot;	/* [log2 slot of ms] lifetimes in (2^(i-1), 2^i] ms */
};

/* Key of `lifetime_sum`: the sum of those lifetimes in milliseconds. */
struct netns_key {
	sonde_netns netns;
};

/*
 * One failed connect, in the ring buffer `events` (knob emit_events).
 * saddr/sport is the local end, daddr/dport the peer it tried to reach.
 */
struct tcp_connect_event {
	sonde_ktime ts;
	__u64 elapsed_ns;	/* [ns] since the SYN was first sent (0 if unknown) */
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_netns netns;
	sonde_stack_id stack;	/* kernel stack; [] with knob `stack` off, or none */
	enum fail_reason reason;
	__s32 err;		/* [none] sk_err: the errno connect() reports */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6 */
};

#endif /* __TCP_STATE_H */
