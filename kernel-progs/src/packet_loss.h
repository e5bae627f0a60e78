/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_loss: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __PACKET_LOSS_H
#define __PACKET_LOSS_H

#include "sonde.h"

/*
 * Key of the `counts` map (value: __u64 packets, per CPU). reason is the raw
 * enum skb_drop_reason value of the running kernel (0 before 5.17); protocol
 * is skb->protocol in host order (0x0800 IPv4, 0x86dd IPv6, ...).
 * The 2 bytes of tail padding are always zero.
 */
struct drop_key {
	sonde_netns netns;
	sonde_drop_reason reason;
	sonde_ethproto protocol;
};

/* One dropped packet, in the ring buffer `events` (knob emit_events). */
struct packet_loss_event {
	sonde_ktime ts;
	sonde_ksym location;	/* where the skb was freed (kfree_skb's caller) */
	sonde_ip saddr;		/* the packet's own source and destination */
	sonde_ip daddr;
	sonde_netns netns;
	sonde_drop_reason reason;
	sonde_stack_id stack;	/* kernel stack; [] with knob `stack` off, or none */
	sonde_ethproto protocol;
	__u16 family;		/* [none] AF_INET, AF_INET6; 0 when the packet is not IP */
	sonde_port sport;	/* TCP/UDP ports; 0 for other protocols */
	sonde_port dport;
	sonde_l4proto l4proto;
};

#endif /* __PACKET_LOSS_H */
