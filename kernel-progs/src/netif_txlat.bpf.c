// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * netif_txlat: how long transmitted packets wait in the qdisc and in the
 * driver, per interface (network namespace + device), as log2 histograms kept
 * in the kernel, with a count and an event per packet over threshold_ms.
 *
 * Stages, from the three net:* transmit tracepoints (all in 5.10 .. 6.18,
 * arguments unchanged):
 *   QDISC   net_dev_queue (__dev_queue_xmit, before the qdisc enqueue)
 *           -> net_dev_start_xmit (xmit_one, the qdisc let it go to the driver)
 *   DRIVER  net_dev_start_xmit -> net_dev_xmit (ndo_start_xmit returned)
 * A device without a queue (loopback, veth without a qdisc, vlan) has a QDISC
 * time of a few hundred nanoseconds: the packet goes straight to the driver.
 *
 * Per-skb state: `skbs`, an LRU hash keyed by (skb address, ifindex), written
 * at net_dev_queue, read at net_dev_start_xmit and deleted at net_dev_xmit.
 * The ifindex in the key keeps stacked devices apart (vlan or bond on top of
 * a NIC: the same skb is queued on the upper device, then, from its driver,
 * on the lower one before the upper's net_dev_xmit). Nothing leaks:
 *   - a packet that completes is deleted at net_dev_xmit;
 *   - NETDEV_TX_BUSY (driver full, skb requeued) keeps the entry for the
 *     retry; the qdisc time is taken at the first start_xmit only;
 *   - a packet the qdisc drops (tail drop, policer, qdisc reset) never
 *     reaches start_xmit. Its entry stays until the LRU evicts it, or until
 *     the address is reused: every skb reaching start_xmit went through
 *     __dev_queue_xmit -> net_dev_queue on that device first, which
 *     overwrites the entry, so a stale entry is never read as a start time.
 *     Deleting at skb:kfree_skb / skb:consume_skb would cost a hash delete on
 *     every freed skb of the machine (every received packet too) to save
 *     map slots the LRU reclaims anyway; not worth it.
 *   Not measured: segments of a GSO packet split in software because the
 *   device lacks TSO (validate_xmit_skb after the qdisc makes new skbs that
 *   were never queued; the original skb's entry ages out), and skbs sent by
 *   dev_direct_xmit (AF_PACKET qdisc bypass, AF_XDP), which skip
 *   net_dev_start_xmit.
 *
 * Variants:
 *   raw_tracepoint  raw_tp/net_dev_queue, raw_tp/net_dev_start_xmit,
 *                   raw_tp/net_dev_xmit (rtp_*): no perf record to fill, the
 *                   device pointer is an argument. Every kernel >= 4.17.
 *   tracepoint      tracepoint/net/... (tp_*): the same on the classic
 *                   records, for a kernel or policy without raw tracepoints.
 *                   The record has no device pointer: the device is taken
 *                   from skb->dev while the skb is alive, the entry is keyed
 *                   by skb address alone (stacked devices then share it: the
 *                   lower device's times are measured, the upper's driver
 *                   time is lost).
 *
 * The QDISC event carries the packet's tuple (read at start_xmit, the skb is
 * still ours); the DRIVER event has none: after ndo_start_xmit the skb may be
 * freed or handed on (veth), its headers are no longer trustworthy.
 *
 * Maps:  skbs (per-skb start times), hist (per-CPU log2 ns slots per
 *        interface and stage), totals (per-CPU sum_ns and slow count per
 *        interface and stage), events (struct netif_txlat_event), dropped.
 * Knobs: threshold_ms (100), emit_events (true), sonde_wakeup_bytes.
 */
#include "sonde.h"
#include <bpf/bpf_tracing.h>
#include "netif_txlat.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("transmit time in the qdisc (net_dev_queue -> net_dev_start_xmit) "
	      "and in the driver (-> net_dev_xmit) per interface and netns: "
	      "log2 histograms and counts over threshold_ms in the kernel, "
	      "events for slow packets");
SONDE_VARIANT("raw_tracepoint",
	      "rtp_net_dev_queue rtp_net_dev_start_xmit rtp_net_dev_xmit",
	      "raw tracepoints net_dev_queue, net_dev_start_xmit, net_dev_xmit");
SONDE_VARIANT("tracepoint",
	      "tp_net_dev_queue tp_net_dev_start_xmit tp_net_dev_xmit",
	      "net:net_dev_queue, net:net_dev_start_xmit, net:net_dev_xmit; a "
	      "stacked device (vlan, bond) loses its own driver time");

/* Knob: a stage slower than this (milliseconds) is counted as slow and reported. */
const volatile __u64 threshold_ms = 100;
/* Knob: one record per slow stage; when false only the maps are kept. */
const volatile bool emit_events = true;

#define NETDEV_TX_BUSY 0x10	/* include/linux/netdevice.h */
#define NET_XMIT_MASK 0x0f	/* rc below: the driver took the skb (dev_xmit_complete) */

struct skb_key {
	__u64 skb;	/* [none] kernel address of the skb */
	__u32 ifindex;		/* [none] 0 in the classic tracepoint variant */
	__u32 __pad;	/* [none] padding, always 0 */
};

struct skb_val {
	__u64 queued;		/* [ns, CLOCK_MONOTONIC] net_dev_queue */
	__u64 started;		/* [ns, CLOCK_MONOTONIC] first net_dev_start_xmit, 0 before */
	__u64 qdisc_ns;	/* [ns] queued -> started */
	sonde_netns netns;
	__u32 ifindex;	/* [none] interface index */
	char ifname[TXLAT_IFNAMSIZ];
};

/* Packets between net_dev_queue and net_dev_xmit, all devices (see above). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct skb_key);
	__type(value, struct skb_val);
} skbs SEC(".maps");

/* 2 stages x 41 slots per interface; LRU: interfaces gone for good age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct txlat_hist_key);
	__type(value, __u64);	/* [count] packets */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct txlat_key);
	__type(value, struct txlat_total);
} totals SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct netif_txlat_event);

/* The device's namespace, index and name, into a new skbs entry. */
static __always_inline void read_dev(struct net_device *dev, struct skb_val *v)
{
	struct net_device___lat *d = (struct net_device___lat *)dev;

	v->netns = BPF_CORE_READ(d, nd_net.net, ns.inum);
	v->ifindex = BPF_CORE_READ(d, ifindex);
	BPF_CORE_READ_STR_INTO(&v->ifname, d, name);
}

static __always_inline void account(struct skb_val *v, enum txlat_stage stage, __u64 ns)
{
	struct txlat_hist_key hk;
	struct txlat_total *t, zero = {};
	struct txlat_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.netns = v->netns;
	k.ifindex = v->ifindex;
	__builtin_memcpy(k.ifname, v->ifname, sizeof(k.ifname));
	k.stage = stage;

	__builtin_memset(&hk, 0, sizeof(hk));
	hk.netns = k.netns;
	hk.ifindex = k.ifindex;
	__builtin_memcpy(hk.ifname, k.ifname, sizeof(hk.ifname));
	hk.stage = stage;
	hk.slot = sonde_log2_slot(ns, TXLAT_MAX_SLOT);
	sonde_count_percpu(hist, &hk, 1);

	t = bpf_map_lookup_elem(&totals, &k);
	if (!t) {
		bpf_map_update_elem(&totals, &k, &zero, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&totals, &k);
		if (!t)
			return;
	}
	t->sum_ns += ns;	/* per-CPU value: ours alone */
	if (ns > threshold_ms * 1000000ULL)
		t->slow += 1;
}

static __always_inline void report(struct skb_val *v, enum txlat_stage stage, __u64 ns,
				   struct sk_buff *skb, __u32 len)
{
	struct netif_txlat_event *e;
	struct sonde_tuple t;

	if (!emit_events || ns <= threshold_ms * 1000000ULL)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	if (skb)
		sonde_skb_tuple(skb, &t);
	else
		__builtin_memset(&t, 0, sizeof(t));
	e->ts = bpf_ktime_get_ns();
	e->latency_ns = ns;
	e->qdisc_ns = stage == TXLAT_STAGE_DRIVER ? v->qdisc_ns : 0;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = v->netns;
	e->ifindex = v->ifindex;
	__builtin_memcpy(e->ifname, v->ifname, sizeof(e->ifname));
	e->stage = stage;
	e->len = len;
	e->sport = t.sport;
	e->dport = t.dport;
	e->family = t.family;
	e->l4proto = t.l4proto;
	e->__pad = 0;
	sonde_submit(events, e);
}

/*
 * net_dev_queue: the packet enters the device's qdisc (or goes straight on).
 * keyed: the entry's key carries the ifindex (raw tracepoints, where the
 * later hooks know the device).
 */
static __always_inline void on_queue(struct sk_buff *skb, bool keyed)
{
	struct skb_key key = { .skb = (__u64)skb };
	struct skb_val v;

	__builtin_memset(&v, 0, sizeof(v));
	read_dev(BPF_CORE_READ((struct sk_buff___lat *)skb, dev), &v);
	if (keyed)
		key.ifindex = v.ifindex;
	v.queued = bpf_ktime_get_ns();
	bpf_map_update_elem(&skbs, &key, &v, BPF_ANY);
}

/* net_dev_start_xmit: the qdisc released it to the driver. */
static __always_inline void on_start(struct sk_buff *skb, __u32 key_ifindex)
{
	struct skb_key key = { .skb = (__u64)skb, .ifindex = key_ifindex };
	struct skb_val *v = bpf_map_lookup_elem(&skbs, &key);
	__u64 now, ns;

	if (!v)
		return;
	now = bpf_ktime_get_ns();
	if (v->started) {
		v->started = now;	/* a retry after NETDEV_TX_BUSY */
		return;
	}
	v->started = now;
	ns = now - v->queued;
	v->qdisc_ns = ns;
	account(v, TXLAT_STAGE_QDISC, ns);
	report(v, TXLAT_STAGE_QDISC, ns, skb, BPF_CORE_READ((struct sk_buff___lat *)skb, len));
}

/* net_dev_xmit: the driver returned; rc says whether it took the packet. */
static __always_inline void on_xmit(struct sk_buff *skb, __u32 key_ifindex, int rc, __u32 len)
{
	struct skb_key key = { .skb = (__u64)skb, .ifindex = key_ifindex };
	struct skb_val *v = bpf_map_lookup_elem(&skbs, &key);
	struct skb_val copy;
	__u64 ns;

	if (!v || !v->started)
		return;
	if (rc >= NET_XMIT_MASK)
		return;		/* NETDEV_TX_BUSY: requeued, start_xmit comes again */
	ns = bpf_ktime_get_ns() - v->started;
	copy = *v;
	bpf_map_delete_elem(&skbs, &key);
	account(&copy, TXLAT_STAGE_DRIVER, ns);
	report(&copy, TXLAT_STAGE_DRIVER, ns, NULL, len);
}

/* ---- raw_tracepoint variant --------------------------------------------- */

SEC("raw_tp/net_dev_queue")
int BPF_PROG(rtp_net_dev_queue, struct sk_buff *skb)
{
	on_queue(skb, true);
	return 0;
}

SEC("raw_tp/net_dev_start_xmit")
int BPF_PROG(rtp_net_dev_start_xmit, struct sk_buff *skb, struct net_device *dev)
{
	on_start(skb, BPF_CORE_READ((struct net_device___lat *)dev, ifindex));
	return 0;
}

SEC("raw_tp/net_dev_xmit")
int BPF_PROG(rtp_net_dev_xmit, struct sk_buff *skb, int rc, struct net_device *dev,
	     unsigned int skb_len)
{
	on_xmit(skb, BPF_CORE_READ((struct net_device___lat *)dev, ifindex), rc, skb_len);
	return 0;
}

/* ---- classic tracepoint variant ----------------------------------------- */

SEC("tracepoint/net/net_dev_queue")
int tp_net_dev_queue(struct trace_event_raw_net_dev_template *ctx)
{
	on_queue((struct sk_buff *)ctx->skbaddr, false);
	return 0;
}

SEC("tracepoint/net/net_dev_start_xmit")
int tp_net_dev_start_xmit(struct trace_event_raw_net_dev_start_xmit *ctx)
{
	on_start((struct sk_buff *)ctx->skbaddr, 0);
	return 0;
}

SEC("tracepoint/net/net_dev_xmit")
int tp_net_dev_xmit(struct trace_event_raw_net_dev_xmit *ctx)
{
	on_xmit((struct sk_buff *)ctx->skbaddr, 0, ctx->rc, ctx->len);
	return 0;
}
