/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kernel_latency: records shared with userspace (decoded by field name from BTF).
 */
#ifndef __KERNEL_LATENCY_H
#define __KERNEL_LATENCY_H

#include "sonde.h"

#define KL_MAX_SLOT 40		/* log2 slots 0..40 of nanoseconds; larger go to 40 */

enum kl_dir {
	KL_DIR_RX = 0,
	KL_DIR_TX = 1,
};

/*
 * Which interval was measured; each variant measures one per direction (see
 * kernel_latency.bpf.c for the exact hooks). `mid` is the stage boundary
 * reported as mid_ns:
 *   RECV_READ  net:netif_receive_skb -> skb:skb_copy_datagram_iovec (first copy
 *              to the application); mid: tcp:tcp_probe (TCP only: the segment
 *              reached TCP), so stack = start..mid, socket = mid..end; TCP only
 *   TCP_DEVQ   TCP's departure stamp (skb->tstamp, set in __tcp_transmit_skb)
 *              -> net:net_dev_queue; no mid
 *   IP_RCV     ip_rcv/ipv6_rcv -> ip_local_deliver_finish/ip6_input_finish;
 *              mid: ip_local_deliver/ip6_input (routed, PREROUTING passed)
 *   IP_XMIT    __ip_queue_xmit/ip_send_skb/ip6_xmit/ip6_send_skb ->
 *              ip_finish_output2/ip6_finish_output2; mid: ip_output/ip6_output
 *              (OUTPUT passed)
 */
enum kl_interval {
	KL_INTERVAL_RECV_READ = 0,
	KL_INTERVAL_TCP_DEVQ = 1,
	KL_INTERVAL_IP_RCV = 2,
	KL_INTERVAL_IP_XMIT = 3,
};

/* Key of `totals`: one pod, direction and interval. */
struct kl_key {
	sonde_netns netns;
	enum kl_dir dir;
	enum kl_interval interval;
};

/* Value of `totals` (per CPU, summed by userspace). */
struct kl_total {
	__u64 sum_ns;		/* [ns] all packets measured */
	__u64 slow;		/* [count] packets over threshold_ms */
};

/* Key of `hist` (value: packets in log2 slot `slot` of nanoseconds). */
struct kl_hist_key {
	sonde_netns netns;
	enum kl_dir dir;
	enum kl_interval interval;
	__u32 slot;	/* [log2 slot of ns] slot i counts packets in (2^(i-1), 2^i] ns */
};

/* One packet slower than threshold_ms, in the ring buffer `events`. */
struct kernel_latency_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] the whole interval */
	__u64 mid_ns;		/* [ns] start -> mid (see enum kl_interval); 0 when not seen */
	sonde_ip saddr;		/* the packet's own addresses and ports */
	sonde_ip daddr;
	sonde_netns netns;
	enum kl_dir dir;
	enum kl_interval interval;
	__u32 len;		/* [bytes] skb->len at the end hook */
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* [none] AF_INET, AF_INET6 */
	sonde_l4proto l4proto;
	__u8 __pad;	/* [none] padding, always 0 */
};

#endif /* __KERNEL_LATENCY_H */
