/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * netif_txlat: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __NETIF_TXLAT_H
#define __NETIF_TXLAT_H

#include "sonde.h"

#define TXLAT_IFNAMSIZ 16	/* IFNAMSIZ */
#define TXLAT_MAX_SLOT 40	/* log2 slots 0..40: up to 2^40 ns (~18 min); larger go to 40 */

/* Where the time went: QDISC (net_dev_queue -> net_dev_start_xmit), DRIVER (-> net_dev_xmit). */
enum txlat_stage {
	TXLAT_STAGE_QDISC = 0,
	TXLAT_STAGE_DRIVER = 1,
};

/*
 * One transmit interface in one network namespace, one stage. ifname is the
 * device's name as the kernel knows it in its own namespace: an ifindex alone
 * cannot be named from the host (sonde_ifindex is resolved in sonde's own
 * namespace, and indexes repeat across namespaces), so it is a plain number.
 * Key of `totals`.
 */
struct txlat_key {
	sonde_netns netns;
	__u32 ifindex;	/* [none] interface index, in its own namespace */
	char ifname[TXLAT_IFNAMSIZ];
	enum txlat_stage stage;
};

/* Value of `totals` (per CPU, summed by userspace). */
struct txlat_total {
	__u64 sum_ns;		/* [ns] time spent in the stage, all packets */
	__u64 slow;		/* [count] packets over threshold_ms */
};

/* Key of `hist` (value: packets in log2 slot `slot` of nanoseconds). */
struct txlat_hist_key {
	sonde_netns netns;
	__u32 ifindex;	/* [none] interface index, in its own namespace */
	char ifname[TXLAT_IFNAMSIZ];
	enum txlat_stage stage;
	__u32 slot;	/* [log2 slot of ns] slot i counts packets in (2^(i-1), 2^i] ns */
};

/* One packet slower than threshold_ms in one stage, in the ring buffer `events`. */
struct netif_txlat_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] time spent in `stage` */
	__u64 qdisc_ns;		/* [ns] DRIVER events: the same packet's qdisc time (0 if unknown) */
	sonde_ip saddr;		/* QDISC only: the packet's tuple, read before the driver */
	sonde_ip daddr;		/*   takes it (zero for DRIVER: the skb may be freed by then) */
	sonde_netns netns;
	__u32 ifindex;	/* [none] interface index, in its own namespace (see `ifname`) */
	char ifname[TXLAT_IFNAMSIZ];
	enum txlat_stage stage;
	__u32 len;		/* [bytes] skb->len */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6, 0 when unknown or not IP */
	sonde_l4proto l4proto;
	__u8 __pad;	/* [none] padding, always 0 */
};

#endif /* __NETIF_TXLAT_H */
