// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kernel_latency: how long packets take through the kernel's network stack,
 * per pod and direction, as log2 histograms kept in the kernel, with a count
 * and an event (tuple, stage times) per packet over threshold_ms.
 *
 * Variants (enum kl_interval in kernel_latency.h names what each measures):
 *
 *   tracepoint (raw tracepoints; every kernel >= 4.17, so 5.10 .. 6.18)
 *     RX  RECV_READ: net:netif_receive_skb (the device hands the packet to
 *         the stack, after GRO) -> skb:skb_copy_datagram_iovec (recvmsg
 *         copies it to the application; the first copy ends it). That is IP,
 *         netfilter, routing, TCP receive, the socket backlog, and the
 *         time the data waits in the receive queue until it is read: a slow
 *         reader shows here. tcp:tcp_probe (the segment entering
 *         tcp_rcv_established) splits it: mid_ns = the stack part, the rest
 *         is the socket part. Measured: TCP segments carrying data, IPv4 and
 *         IPv6; pure ACKs, SYNs, FINs are skipped at the start (they are
 *         never read). Not UDP: udp_recvmsg copies a linear datagram with
 *         copy_linear_skb(), which has no tracepoint, and frees it with
 *         __consume_stateless_skb(), which has none either, so a UDP start
 *         could never be ended (it would only churn the map).
 *     TX  TCP_DEVQ: TCP's departure time -> net:net_dev_queue. Since 4.20
 *         __tcp_transmit_skb stamps each segment it hands to IP with its
 *         departure time (skb->tstamp = tcp_wstamp_ns, CLOCK_MONOTONIC, the
 *         clock of bpf_ktime_get_ns); at the device queue, now - tstamp is
 *         the time through IP output, netfilter OUTPUT/POSTROUTING, routing
 *         and neighbour resolution (a segment waiting for ARP/NDP shows
 *         here). TCP only: no tracepoint sees a UDP datagram, or a TCP
 *         segment (TCP transmits clones), between the socket and the device
 *         queue. Segments paced into the future (fq, BBR) are skipped; a
 *         segment sent through stacked devices (vlan, vxlan) is measured at
 *         each device's queue.
 *   kprobe (kernels with kprobes; the stages KubeSkoop hooks, IPv6 added)
 *     RX  IP_RCV: ip_rcv/ipv6_rcv -> ip_local_deliver_finish/ip6_input_finish;
 *         mid: ip_local_deliver/ip6_input (PREROUTING and routing done), the
 *         rest is INPUT. Forwarded packets are dropped from the map at
 *         ip_forward/ip6_forward.
 *     TX  IP_XMIT: __ip_queue_xmit (TCP), ip_send_skb (UDP), ip6_xmit,
 *         ip6_send_skb -> ip_finish_output2/ip6_finish_output2 (about to
 *         resolve the neighbour); mid: ip_output/ip6_output (OUTPUT done),
 *         the rest is POSTROUTING.
 *
 * Per-skb start times: `rx_skbs` and `tx_skbs`, LRU hashes keyed by skb
 * address, written at the start hook and deleted at the end hook. Packets
 * that never reach the end hook: forwarded or bridged packets (deleted at
 * net:net_dev_queue in the tracepoint variant, at ip_forward in the kprobe
 * one), packets dropped on the way, TCP segments merged into the previous
 * one in the receive queue (their data is read with, and timed by, the
 * segment they joined), datagrams nobody reads. Their entries age out of the
 * LRU, and a reused address is overwritten by the next start hook, so a
 * stale time is never read: every skb reaching an end hook passed the start
 * hook, and the RX end hook also checks that the skb is an IP packet (a
 * Unix-socket skb at a reused address is not).
 *
 * Maps:  rx_skbs, tx_skbs (per-skb start times), hist (per-CPU log2 ns slots
 *        per pod, direction, interval), totals (per-CPU sum_ns and slow
 *        count), events (struct kernel_latency_event), dropped.
 * Knobs: threshold_ms (10), emit_events (true), sonde_wakeup_bytes.
 */
#include "sonde.h"
#include <bpf/bpf_tracing.h>
#include "kernel_latency.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("time packets take through the kernel stack per pod and "
	      "direction: log2 histograms and counts over threshold_ms in the "
	      "kernel, events with tuple and stage times for slow packets");
SONDE_VARIANT("tracepoint",
	      "rtp_netif_receive_skb rtp_tcp_probe "
	      "rtp_skb_copy_datagram_iovec rtp_net_dev_queue",
	      "raw tracepoints; RX: netif_receive_skb -> "
	      "skb_copy_datagram_iovec (to the reader; tcp_probe splits stack "
	      "and socket time), TX: TCP's departure stamp -> net_dev_queue "
	      "(TCP only)");
SONDE_VARIANT("kprobe",
	      "kp_ip_rcv kp_ipv6_rcv kp_ip_local_deliver kp_ip6_input "
	      "kp_ip_local_deliver_finish kp_ip6_input_finish kp_ip_forward "
	      "kp_ip6_forward kp___ip_queue_xmit kp_ip_send_skb kp_ip6_xmit "
	      "kp_ip6_send_skb kp_ip_output kp_ip6_output "
	      "kp_ip_finish_output2 kp_ip6_finish_output2",
	      "kprobes along the IP layer; RX: ip_rcv/ipv6_rcv -> "
	      "ip_local_deliver_finish/ip6_input_finish, TX: __ip_queue_xmit, "
	      "ip_send_skb, ip6_xmit, ip6_send_skb -> ip(6)_finish_output2");

/* Knob: a packet slower than this (milliseconds) is counted as slow and reported. */
const volatile __u64 threshold_ms = 10;
/* Knob: one record per slow packet; when false only the maps are kept. */
const volatile bool emit_events = true;

struct start {
	__u64 ts;	/* [ns, CLOCK_MONOTONIC] the start hook */
	__u64 mid;		/* [ns, CLOCK_MONOTONIC] 0 until the mid hook */
	sonde_netns netns;
	__u32 __pad;	/* [none] padding, always 0 */
};

/* Received packets between their start and end hooks (see above). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);	/* [none] kernel address of the skb */
	__type(value, struct start);
} rx_skbs SEC(".maps");

/* Transmitted packets between their start and end hooks (kprobe variant). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);	/* [none] kernel address of the skb */
	__type(value, struct start);
} tx_skbs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kl_hist_key);
	__type(value, __u64);	/* [count] packets */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kl_key);
	__type(value, struct kl_total);
} totals SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct kernel_latency_event);

/* Histogram, total and, over the threshold, an event with the packet's tuple. */
static __always_inline void done(struct sk_buff *skb, sonde_netns netns, enum kl_dir dir,
				 enum kl_interval interval, __u64 ns, __u64 mid_ns)
{
	struct kernel_latency_event *e;
	struct kl_total *t, zero = {};
	struct kl_hist_key hk;
	struct sonde_tuple tu;
	struct kl_key k;
	bool slow = ns > threshold_ms * 1000000ULL;

	__builtin_memset(&hk, 0, sizeof(hk));
	hk.netns = netns;
	hk.dir = dir;
	hk.interval = interval;
	hk.slot = sonde_log2_slot(ns, KL_MAX_SLOT);
	sonde_count_percpu(hist, &hk, 1);

	__builtin_memset(&k, 0, sizeof(k));
	k.netns = netns;
	k.dir = dir;
	k.interval = interval;
	t = bpf_map_lookup_elem(&totals, &k);
	if (!t) {
		bpf_map_update_elem(&totals, &k, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&totals, &k);
	}
	if (t) {
		t->sum_ns += ns;	/* per-CPU value: ours alone */
		if (slow)
			t->slow += 1;
	}

	if (!emit_events || !slow)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	sonde_skb_tuple(skb, &tu);
	e->ts = bpf_ktime_get_ns();
	e->latency_ns = ns;
	e->mid_ns = mid_ns;
	__builtin_memcpy(e->saddr, tu.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, tu.daddr, sizeof(sonde_ip));
	e->netns = netns;
	e->dir = dir;
	e->interval = interval;
	e->len = BPF_CORE_READ((struct sk_buff___lat *)skb, len);
	e->sport = tu.sport;
	e->dport = tu.dport;
	e->family = tu.family;
	e->l4proto = tu.l4proto;
	e->__pad = 0;
	sonde_submit(events, e);
}

static __always_inline void begin(void *map, struct sk_buff *skb, sonde_netns netns)
{
	__u64 key = (__u64)skb;
	struct start s = { .ts = bpf_ktime_get_ns(), .netns = netns };

	bpf_map_update_elem(map, &key, &s, BPF_ANY);
}

static __always_inline void middle(void *map, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	struct start *s = bpf_map_lookup_elem(map, &key);

	if (s && !s->mid)
		s->mid = bpf_ktime_get_ns();
}

static __always_inline void end(void *map, struct sk_buff *skb, enum kl_dir dir,
				enum kl_interval interval)
{
	__u64 key = (__u64)skb, now;
	struct start *s = bpf_map_lookup_elem(map, &key);
	struct start c;

	if (!s)
		return;
	now = bpf_ktime_get_ns();
	c = *s;
	bpf_map_delete_elem(map, &key);
	done(skb, c.netns, dir, interval, now - c.ts, c.mid ? c.mid - c.ts : 0);
}

static __always_inline void forget(void *map, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;

	bpf_map_delete_elem(map, &key);
}

static __always_inline sonde_netns dev_netns(struct net_device *dev)
{
	return BPF_CORE_READ((struct net_device___lat *)dev, nd_net.net, ns.inum);
}

/* ---- tracepoint variant --------------------------------------------------- */

/*
 * A received packet worth timing to the reader: IPv4 (first fragment or
 * whole) or IPv6, carrying a TCP segment with payload. At netif_receive_skb
 * skb->data is the network header (network_header is set just after).
 */
static __always_inline bool rx_readable(struct sk_buff___lat *skb)
{
	__be16 proto = BPF_CORE_READ(skb, protocol);
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 l4off;
	__u8 l4proto, doff;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct sonde_iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), data) || ip.ver_ihl >> 4 != 4)
			return false;
		if (ip.frag_off & bpf_htons(0x1fff))
			return false;
		l4proto = ip.protocol;
		l4off = (ip.ver_ihl & 0x0f) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct sonde_ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), data) ||
		    (bpf_ntohl(ip6.ver_class_flow) >> 28) != 6)
			return false;
		l4proto = ip6.nexthdr;
		l4off = sizeof(ip6);
	} else {
		return false;
	}
	if (l4proto != IPPROTO_TCP)
		return false;
	/* data offset: the high nibble of byte 12 of the TCP header, in words */
	if (bpf_probe_read_kernel(&doff, 1, data + l4off + 12))
		return false;
	return len > l4off + (doff >> 4) * 4;
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(rtp_netif_receive_skb, struct sk_buff *skb)
{
	struct sk_buff___lat *s = (void *)skb;

	if (!rx_readable(s))
		return 0;
	begin(&rx_skbs, skb, dev_netns(BPF_CORE_READ(s, dev)));
	return 0;
}

SEC("raw_tp/tcp_probe")
int BPF_PROG(rtp_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	middle(&rx_skbs, skb);
	return 0;
}

SEC("raw_tp/skb_copy_datagram_iovec")
int BPF_PROG(rtp_skb_copy_datagram_iovec, struct sk_buff *skb, int len)
{
	__u64 key = (__u64)skb;
	__be16 proto;

	if (!bpf_map_lookup_elem(&rx_skbs, &key))
		return 0;
	proto = BPF_CORE_READ((struct sk_buff___lat *)skb, protocol);
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6)) {
		forget(&rx_skbs, skb);	/* a reused address (a Unix socket's skb) */
		return 0;
	}
	end(&rx_skbs, skb, KL_DIR_RX, KL_INTERVAL_RECV_READ);
	return 0;
}

/*
 * net_dev_queue: a TCP segment reaches a device queue (TCP_DEVQ), and a
 * received packet being forwarded or bridged will never be read.
 */
SEC("raw_tp/net_dev_queue")
int BPF_PROG(rtp_net_dev_queue, struct sk_buff *skb)
{
	struct sk_buff___lat *s = (void *)skb;
	struct sock___lat *sk;
	__s64 stamp, now;
	__u16 family;
	__u8 state;

	forget(&rx_skbs, skb);
	sk = (void *)BPF_CORE_READ(s, sk);
	if (!sk)
		return 0;
	/* request and TIME_WAIT sockets end after sock_common: no sk_protocol */
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_NEW_SYN_RECV || state == TCP_TIME_WAIT)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	stamp = BPF_CORE_READ(s, tstamp);
	now = bpf_ktime_get_ns();
	if (stamp <= 0 || stamp > now)
		return 0;	/* not stamped, or paced to leave later */
	done(skb, dev_netns(BPF_CORE_READ(s, dev)), KL_DIR_TX, KL_INTERVAL_TCP_DEVQ,
	     now - stamp, 0);
	return 0;
}

/* ---- kprobe variant ----------------------------------------------------- */

SEC("kprobe/ip_rcv")
int BPF_KPROBE(kp_ip_rcv, struct sk_buff *skb, struct net_device *dev)
{
	begin(&rx_skbs, skb, dev_netns(dev));
	return 0;
}

SEC("kprobe/ipv6_rcv")
int BPF_KPROBE(kp_ipv6_rcv, struct sk_buff *skb, struct net_device *dev)
{
	begin(&rx_skbs, skb, dev_netns(dev));
	return 0;
}

SEC("kprobe/ip_local_deliver")
int BPF_KPROBE(kp_ip_local_deliver, struct sk_buff *skb)
{
	middle(&rx_skbs, skb);
	return 0;
}

SEC("kprobe/ip6_input")
int BPF_KPROBE(kp_ip6_input, struct sk_buff *skb)
{
	middle(&rx_skbs, skb);
	return 0;
}

SEC("kprobe/ip_local_deliver_finish")
int BPF_KPROBE(kp_ip_local_deliver_finish, void *net, struct sock *sk, struct sk_buff *skb)
{
	end(&rx_skbs, skb, KL_DIR_RX, KL_INTERVAL_IP_RCV);
	return 0;
}

SEC("kprobe/ip6_input_finish")
int BPF_KPROBE(kp_ip6_input_finish, void *net, struct sock *sk, struct sk_buff *skb)
{
	end(&rx_skbs, skb, KL_DIR_RX, KL_INTERVAL_IP_RCV);
	return 0;
}

SEC("kprobe/ip_forward")
int BPF_KPROBE(kp_ip_forward, struct sk_buff *skb)
{
	forget(&rx_skbs, skb);
	return 0;
}

SEC("kprobe/ip6_forward")
int BPF_KPROBE(kp_ip6_forward, struct sk_buff *skb)
{
	forget(&rx_skbs, skb);
	return 0;
}

SEC("kprobe/__ip_queue_xmit")
int BPF_KPROBE(kp___ip_queue_xmit, struct sock *sk, struct sk_buff *skb)
{
	begin(&tx_skbs, skb, sonde_sk_netns(sk));
	return 0;
}

SEC("kprobe/ip_send_skb")
int BPF_KPROBE(kp_ip_send_skb, void *net, struct sk_buff *skb)
{
	begin(&tx_skbs, skb, sonde_sk_netns(BPF_CORE_READ((struct sk_buff___lat *)skb, sk)));
	return 0;
}

SEC("kprobe/ip6_xmit")
int BPF_KPROBE(kp_ip6_xmit, struct sock *sk, struct sk_buff *skb)
{
	begin(&tx_skbs, skb, sonde_sk_netns(sk));
	return 0;
}

SEC("kprobe/ip6_send_skb")
int BPF_KPROBE(kp_ip6_send_skb, struct sk_buff *skb)
{
	begin(&tx_skbs, skb, sonde_sk_netns(BPF_CORE_READ((struct sk_buff___lat *)skb, sk)));
	return 0;
}

SEC("kprobe/ip_output")
int BPF_KPROBE(kp_ip_output, void *net, struct sock *sk, struct sk_buff *skb)
{
	middle(&tx_skbs, skb);
	return 0;
}

SEC("kprobe/ip6_output")
int BPF_KPROBE(kp_ip6_output, void *net, struct sock *sk, struct sk_buff *skb)
{
	middle(&tx_skbs, skb);
	return 0;
}

SEC("kprobe/ip_finish_output2")
int BPF_KPROBE(kp_ip_finish_output2, void *net, struct sock *sk, struct sk_buff *skb)
{
	end(&tx_skbs, skb, KL_DIR_TX, KL_INTERVAL_IP_XMIT);
	return 0;
}

SEC("kprobe/ip6_finish_output2")
int BPF_KPROBE(kp_ip6_finish_output2, void *net, struct sock *sk, struct sk_buff *skb)
{
	end(&tx_skbs, skb, KL_DIR_TX, KL_INTERVAL_IP_XMIT);
	return 0;
}
