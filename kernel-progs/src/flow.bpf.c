// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flow: bytes and packets per IPv4/IPv6 5-tuple on the node's interfaces,
 * from traffic control (clsact) ingress and egress hooks. Observe only: the
 * programs never change, redirect or drop a packet, and return
 * TC_ACT_UNSPEC ("next filter, else the default"), so programs of other
 * tools attached to the same hook still run.
 *
 * Attachment is not a fixed hook: the loader attaches tc_ingress and
 * tc_egress to every interface whose name matches the script's
 * `interfaces` param, and to matching interfaces as they appear (TCX links
 * on 6.6+, cls_bpf filters under clsact before).
 *
 * Variants:
 *   tc          pods from veth peers: a packet on the host side of a veth
 *               is counted for the network namespace of the other side,
 *               read from the device (needs bpf_probe_read_kernel in TC
 *               programs: root, no kernel lockdown);
 *   tc-host     the knob `pods` off: every packet is counted for the
 *               host's namespace (netns 0), directions as seen by the host.
 *
 * Per packet: the headers are read with bpf_skb_load_bytes (IPv4 options
 * and IPv6 extension headers skipped), the flow counted in `flows`, the
 * remote end classified through `addrs`, and the pair counted in `peers`.
 *
 * A flow whose byte count crosses large_flow_bytes (0: never) is reported
 * once in `events` (struct flow_event): the elephants, with their pod.
 *
 * Maps:  flows (LRU hash, struct flow_key -> struct flow_value),
 *        peers (LRU per-CPU hash, struct peer_key -> struct flow_value),
 *        addrs (LRU hash, sonde_ip -> sonde_netns: addresses of local pods),
 *        events (ring buffer, struct flow_event), dropped (sonde.h).
 * Knobs: pods (true), peer_prefix4 (24), peer_prefix6 (64),
 *        large_flow_bytes (0), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "flow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("bytes and packets per IPv4/IPv6 5-tuple and per pod and peer, "
	      "from TC ingress/egress on the interfaces matching the "
	      "`interfaces` param");
SONDE_VARIANT("tc", "tc_ingress tc_egress",
	      "clsact ingress + egress; veth traffic counted for the pod behind "
	      "the veth (reads the peer device: needs bpf_probe_read_kernel in "
	      "TC programs, no kernel lockdown)");
SONDE_VARIANT("tc-host", "tc_ingress tc_egress",
	      "clsact ingress + egress; every packet counted for the host (no "
	      "pods, no peer pods)");
SONDE_FORCES_KNOB("tc-host", pods, false);

/* Knob: count veth traffic for the pod on the other side (variant `tc`). */
const volatile bool pods = true;
/* Knobs: bits of a remote address kept in `peers` when it is not a local pod. */
const volatile __u32 peer_prefix4 = 24;
const volatile __u32 peer_prefix6 = 64;
/* Knob: report a flow once when its bytes at one hook cross this; 0 = never. */
const volatile __u64 large_flow_bytes = 0;

SONDE_EVENTS(events, 64 * 1024, struct flow_event);

/*
 * One entry per flow and hook. Shared (not per-CPU): a flow is mostly
 * handled by one CPU at a time, and the atomic adds stay uncontended.
 * 8192 entries keep a script's read of the whole map under its limits.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

/* Per local end, direction, protocol and remote end; hot keys: per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct peer_key);
	__type(value, struct flow_value);
} peers SEC(".maps");

/* Addresses seen as the local end of a pod's veth (or of lo, for the host). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, sonde_ip);	/* [none] a local address of a pod or of the host */
	__type(value, sonde_netns);	/* [none] its network namespace */
} addrs SEC(".maps");

/* What the interface of a packet says about its local end. */
struct local_end {
	sonde_netns netns;
	bool peer_side;		/* a veth: the local end is its peer */
	bool learn;		/* the local address belongs to netns (veth peer, lo) */
};

/*
 * The TC context is the kernel's struct sk_buff: read its device, and for a
 * veth the peer device, stored first in the veth's private area
 * (struct veth_priv.peer since veth's creation, 2.6.24), which follows
 * struct net_device aligned to NETDEV_ALIGN (netdev_priv(); from 6.12 the
 * flexible member `priv` at the same offset, the struct being
 * cacheline-padded).
 */
static __always_inline void local_end(struct __sk_buff *ctx, struct local_end *l)
{
	struct sk_buff *skb = (struct sk_buff *)(void *)ctx;
	struct net_device___flow *dev, *peer = NULL;
	const struct rtnl_link_ops *ops;
	const char *kind;
	char name[5] = {};
	__u64 priv;

	l->netns = 0;
	l->peer_side = false;
	l->learn = false;
	if (!pods)
		return;
	dev = (struct net_device___flow *)BPF_CORE_READ(skb, dev);
	if (!dev)
		return;
	l->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	if (BPF_CORE_READ(dev, flags) & IFF_LOOPBACK) {
		l->learn = true;
		return;
	}
	ops = BPF_CORE_READ(dev, rtnl_link_ops);
	if (!ops)
		return;
	kind = BPF_CORE_READ(ops, kind);
	if (!kind || bpf_probe_read_kernel(name, sizeof(name), kind))
		return;
	if (name[0] != 'v' || name[1] != 'e' || name[2] != 't' || name[3] != 'h' || name[4])
		return;
	priv = (__u64)(void *)dev + ((bpf_core_type_size(struct net_device) + NETDEV_ALIGN - 1) &
				     ~(NETDEV_ALIGN - 1));
	if (bpf_probe_read_kernel(&peer, sizeof(peer), (void *)priv) || !peer)
		return;
	l->netns = BPF_CORE_READ(peer, nd_net.net, ns.inum);
	l->peer_side = true;
	l->learn = true;
}

/* Keeps the first `bits` bits of the address (a v4-mapped one: of its IPv4 part). */
static __always_inline void mask_ip(sonde_ip ip, bool v4)
{
	__s32 keep = v4 ? 96 + (__s32)(peer_prefix4 > 32 ? 32 : peer_prefix4)
			: (__s32)(peer_prefix6 > 128 ? 128 : peer_prefix6);

#pragma unroll
	for (int i = 0; i < 16; i++) {
		__s32 bits = keep - i * 8;

		if (bits <= 0)
			ip[i] = 0;
		else if (bits < 8)
			ip[i] &= (__u8)(0xff << (8 - bits));
	}
}

/*
 * The packet's tuple and the length of its headers (L2 to L4), or false
 * when it is not IP. The network header is found from skb->protocol: an
 * Ethernet-style header (14 bytes) when its EtherType is the protocol and
 * the IP version follows; none (L3 devices: tun, WireGuard) when the data
 * starts with the IP version.
 */
static __always_inline bool parse(struct __sk_buff *ctx, struct flow_key *k, __u32 *hdr_len)
{
	__u16 proto = bpf_ntohs((__u16)ctx->protocol);
	__u8 l2[15];
	__u8 version, nexthdr;
	__u32 nh, l4;
	bool first = true;

	if (proto == ETH_P_IP)
		version = 4;
	else if (proto == ETH_P_IPV6)
		version = 6;
	else
		return false;
	if (bpf_skb_load_bytes(ctx, 0, l2, sizeof(l2)))
		return false;
	if (((__u16)l2[12] << 8 | l2[13]) == proto && l2[14] >> 4 == version)
		nh = 14;
	else if (l2[0] >> 4 == version)
		nh = 0;
	else
		return false;

	if (version == 4) {
		struct sonde_iphdr ip;

		if (bpf_skb_load_bytes(ctx, nh, &ip, sizeof(ip)))
			return false;
		sonde_ip_from_v4(k->saddr, ip.saddr);
		sonde_ip_from_v4(k->daddr, ip.daddr);
		nexthdr = ip.protocol;
		l4 = nh + (ip.ver_ihl & 0x0f) * 4;
		first = !(ip.frag_off & bpf_htons(0x1fff));
	} else {
		struct sonde_ipv6hdr ip6;

		if (bpf_skb_load_bytes(ctx, nh, &ip6, sizeof(ip6)))
			return false;
		__builtin_memcpy(k->saddr, ip6.saddr, sizeof(sonde_ip));
		__builtin_memcpy(k->daddr, ip6.daddr, sizeof(sonde_ip));
		nexthdr = ip6.nexthdr;
		l4 = nh + sizeof(ip6);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 ext[8];

			if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
			    nexthdr != IPPROTO_DSTOPTS && nexthdr != IPPROTO_FRAGMENT &&
			    nexthdr != IPPROTO_AH)
				break;
			if (bpf_skb_load_bytes(ctx, l4, ext, sizeof(ext)))
				return false;
			if (nexthdr == IPPROTO_FRAGMENT) {
				/* offset in the upper 13 bits of bytes 2-3 */
				if (((__u16)ext[2] << 8 | ext[3]) & 0xfff8)
					first = false;
				l4 += 8;
			} else if (nexthdr == IPPROTO_AH) {
				l4 += ((__u32)ext[1] + 2) * 4;
			} else {
				l4 += ((__u32)ext[1] + 1) * 8;
			}
			nexthdr = ext[0];
		}
	}
	k->l4proto = nexthdr;
	*hdr_len = l4;
	if (!first)
		return true;	/* a later fragment: no L4 header */

	if (nexthdr == IPPROTO_TCP) {
		struct {
			struct sonde_l4ports ports;
			__u8 skip[8];
			__u8 doff;	/* data offset << 4 */
		} tcp;

		if (bpf_skb_load_bytes(ctx, l4, &tcp, sizeof(tcp)) == 0) {
			k->sport = bpf_ntohs(tcp.ports.source);
			k->dport = bpf_ntohs(tcp.ports.dest);
			*hdr_len = l4 + (tcp.doff >> 4) * 4;
		}
	} else if (nexthdr == IPPROTO_UDP) {
		struct sonde_l4ports udp;

		if (bpf_skb_load_bytes(ctx, l4, &udp, sizeof(udp)) == 0) {
			k->sport = bpf_ntohs(udp.source);
			k->dport = bpf_ntohs(udp.dest);
			*hdr_len = l4 + 8;
		}
	}
	return true;
}

static __always_inline void add(struct flow_value *v, __u64 bytes, __u64 packets, bool atomic)
{
	if (atomic) {
		__sync_fetch_and_add(&v->bytes, bytes);
		__sync_fetch_and_add(&v->packets, packets);
	} else {
		v->bytes += bytes;
		v->packets += packets;
	}
}

/* Adds to the entry of `key`, creating it; returns the bytes now counted (0: none). */
static __always_inline __u64 count(void *map, const void *key, __u64 bytes, __u64 packets,
				   bool atomic)
{
	struct flow_value *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		struct flow_value init = { .bytes = bytes, .packets = packets };

		if (bpf_map_update_elem(map, key, &init, BPF_NOEXIST) == 0)
			return bytes;
		v = bpf_map_lookup_elem(map, key);	/* another CPU created it */
		if (!v)
			return 0;
	}
	add(v, bytes, packets, atomic);
	/* A plain read after the add: two CPUs crossing at once may both see it. */
	return v->bytes;
}

static __always_inline void report(const struct flow_key *k, sonde_netns netns, __u64 bytes)
{
	struct flow_value *v = bpf_map_lookup_elem(&flows, k);
	struct flow_event *e = sonde_reserve(events, sizeof(*e));

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	__builtin_memcpy(e->saddr, k->saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, k->daddr, sizeof(sonde_ip));
	e->bytes = bytes;
	e->packets = v ? v->packets : 0;
	e->netns = netns;
	e->ifindex = k->ifindex;
	e->dir = k->dir;
	e->sport = k->sport;
	e->dport = k->dport;
	e->l4proto = k->l4proto;
	sonde_submit(events, e);
}

static __always_inline int handle(struct __sk_buff *ctx, bool ingress)
{
	struct flow_key k;
	struct peer_key p;
	struct local_end l;
	__u32 hdr_len = 0, segs;
	__u64 bytes, packets, total;
	__u8 *local, *remote;
	sonde_netns *peer_netns;
	bool v4;

	__builtin_memset(&k, 0, sizeof(k));
	if (!parse(ctx, &k, &hdr_len))
		return TC_ACT_UNSPEC;
	local_end(ctx, &l);

	/* A packet leaving the host towards a pod is one the pod receives. */
	k.dir = (ingress != l.peer_side) ? FLOW_DIR_RX : FLOW_DIR_TX;
	k.ifindex = ctx->ifindex;
	segs = ctx->gso_segs;
	packets = segs > 1 ? segs : 1;
	bytes = ctx->len;
	if (segs > 1 && hdr_len < ctx->len)
		bytes += (__u64)(segs - 1) * hdr_len;

	total = count(&flows, &k, bytes, packets, true);
	if (large_flow_bytes && total >= large_flow_bytes && total - bytes < large_flow_bytes)
		report(&k, l.netns, total);

	local = k.dir == FLOW_DIR_TX ? k.saddr : k.daddr;
	remote = k.dir == FLOW_DIR_TX ? k.daddr : k.saddr;
	if (l.learn) {
		sonde_netns *known = bpf_map_lookup_elem(&addrs, local);

		if (!known || *known != l.netns)
			bpf_map_update_elem(&addrs, local, &l.netns, BPF_ANY);
	}

	__builtin_memset(&p, 0, sizeof(p));
	p.netns = l.netns;
	p.dir = k.dir;
	p.l4proto = k.l4proto;
	peer_netns = pods ? bpf_map_lookup_elem(&addrs, remote) : NULL;
	if (peer_netns) {
		p.peer_known = 1;
		p.peer_netns = *peer_netns;
	} else {
		__builtin_memcpy(p.peer, remote, sizeof(sonde_ip));
		v4 = ctx->protocol == bpf_htons(ETH_P_IP);
		mask_ip(p.peer, v4);
	}
	count(&peers, &p, bytes, packets, false);
	return TC_ACT_UNSPEC;
}

SEC("classifier/ingress")
int tc_ingress(struct __sk_buff *ctx)
{
	return handle(ctx, true);
}

SEC("classifier/egress")
int tc_egress(struct __sk_buff *ctx)
{
	return handle(ctx, false);
}
