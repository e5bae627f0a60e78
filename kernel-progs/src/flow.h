/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flow: map keys and values shared with userspace (decoded by field name
 * from BTF). Padding is always zeroed.
 */
#ifndef __FLOW_H
#define __FLOW_H

#include "sonde.h"

/*
 * Direction seen from the local end of an interface: for a veth whose peer
 * is in another network namespace (a pod), the pod; otherwise the namespace
 * the interface is in (the host). A packet entering the host from a pod's
 * veth is TX (the pod sent it); a packet entering from an uplink is RX.
 */
enum flow_dir {
	FLOW_DIR_RX = 0,
	FLOW_DIR_TX = 1,
};

/* Key of `flows`: one packet stream as seen at one hook. */
struct flow_key {
	sonde_ip saddr;		/* the packet's own source and destination */
	sonde_ip daddr;
	sonde_ifindex ifindex;	/* where it was seen */
	enum flow_dir dir;
	sonde_port sport;	/* TCP/UDP, host order; 0 otherwise */
	sonde_port dport;
	sonde_l4proto l4proto;
	__u8 pad[3];	/* [none] padding, always 0 */
};

/*
 * Value of `flows` and `peers`. Bytes as on the wire, Ethernet header
 * included; a GSO/GRO packet counts as the segments it stands for, each
 * with its headers.
 */
struct flow_value {
	__u64 bytes;	/* [bytes] Ethernet header included */
	__u64 packets;	/* [count] GSO/GRO packets as their segments */
};

/*
 * Key of `peers`: the same traffic per local end and remote end, ports
 * folded. The remote end is a pod of this node when its address was seen
 * as the local address of a pod's veth (peer_known = 1, peer_netns its
 * namespace, peer zeroed), otherwise its address masked to
 * peer_prefix4/peer_prefix6 bits.
 */
struct peer_key {
	sonde_ip peer;
	sonde_netns netns;	/* local end */
	sonde_netns peer_netns;	/* remote end, when peer_known */
	enum flow_dir dir;
	sonde_l4proto l4proto;
	__u8 peer_known;	/* [none] 1: peer_netns is the remote end's */
	__u8 pad[2];	/* [none] padding, always 0 */
};

/* A flow whose bytes crossed large_flow_bytes, in the ring buffer `events`. */
struct flow_event {
	sonde_ktime ts;
	sonde_ip saddr;
	sonde_ip daddr;
	__u64 bytes;		/* [bytes] at the crossing */
	__u64 packets;	/* [count] the flow's packets at the crossing */
	sonde_netns netns;	/* local end */
	sonde_ifindex ifindex;
	enum flow_dir dir;
	sonde_port sport;
	sonde_port dport;
	sonde_l4proto l4proto;
	__u8 pad[3];	/* [none] padding, always 0 */
};

#endif /* __FLOW_H */
