/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sonde.h: the well-known record types shared by every kernel program.
 *
 * Userspace decodes records by reading the object's own BTF. A field whose
 * type is one of the typedefs below is turned into something a person can read
 * without any per-probe code:
 *
 *   sonde_netns        network namespace inode   -> int, plus `pod` (the pod map)
 *   sonde_ip           IPv4 or IPv6 address      -> "10.0.0.1" / "fd00::1"
 *                      (16 bytes, IPv4 stored v4-mapped: ::ffff:a.b.c.d)
 *   sonde_port         TCP/UDP port, host order  -> int
 *   sonde_stack_id     id in the `stacks` map    -> array of "sym+0xoff" frames
 *                      (negative: no stack)
 *   sonde_ktime        bpf_ktime_get_ns()        -> int (nanoseconds)
 *   sonde_ifindex      interface index           -> interface name
 *   sonde_drop_reason  enum skb_drop_reason      -> "NO_SOCKET" (names from the running kernel)
 *   sonde_tcp_state    TCP state (sk_state)      -> "ESTABLISHED"
 *   sonde_l4proto      IPPROTO_*                 -> "TCP" / "UDP" / "ICMP" / ...
 *   sonde_ethproto     ETH_P_* in host order     -> "IPv4" / "IPv6" / "ARP" / ...
 *   sonde_ksym         kernel text address       -> "sym+0xoff"
 *
 * Enums defined by a program decode to the enumerator name with the enum's own
 * name, upper-cased, stripped: `enum rst_kind { RST_KIND_NOSOCK }` -> "NOSOCK".
 *
 * Events go through a ring buffer declared with SONDE_EVENTS(map, bytes, type):
 * the record type is published in .rodata as `__sonde_record_<map>` so
 * userspace knows how to decode the map's records. Reservation failures are
 * counted in the per-CPU `dropped` map, never lost silently.
 *
 * Below the typedefs: the catalog declarations (SONDE_PROGRAM, SONDE_VARIANT
 * and friends: what userspace offers and attaches), the map and helper
 * conventions every program uses (SONDE_EVENTS, sonde_reserve/sonde_submit,
 * the `dropped` map, the sonde_wakeup_bytes knob) and CO-RE helpers to read
 * a network namespace, an address or a packet's tuple. This file includes
 * the kernel types and the libbpf headers it needs: a program includes
 * "sonde.h" first.
 */
#ifndef __SONDE_H
#define __SONDE_H

#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

typedef __u32 sonde_netns;		/* [none] netns inode; `pod` beside it */
typedef __u8 sonde_ip[16];		/* [none] IPv4 or IPv6 address; IPv4 stored v4-mapped */
typedef __u16 sonde_port;		/* [none] TCP/UDP port, host order */
typedef __s32 sonde_stack_id;		/* [none] frames from `stacks`; [] if none */
typedef __u64 sonde_ktime;		/* [ns, CLOCK_MONOTONIC] bpf_ktime_get_ns() */
typedef __u32 sonde_ifindex;		/* [none] named in sonde's netns, else "if<N>" */
typedef __u32 sonde_drop_reason;	/* [none] the running kernel's skb_drop_reason name */
typedef __u8 sonde_tcp_state;		/* [none] TCP state (sk_state) */
typedef __u8 sonde_l4proto;		/* [none] IP protocol (IPPROTO_*) */
typedef __u16 sonde_ethproto;		/* [none] Ethernet protocol (ETH_P_*), host order */
typedef __u64 sonde_ksym;		/* [none] kernel text address, symbolized */

/* ---- the catalog: what the program is and how it attaches --------------- */

/*
 * A program declares, next to its code, everything userspace needs to offer
 * and attach it: a one-line summary, its variants in order of preference
 * (each a set of programs and a summary for `sonde probes`), what kernel a
 * variant needs, and the knobs a variant forces. The runtime's build reads
 * these declarations from the object's `.sonde.catalog` section (an
 * unallocated section: neither the kernel nor the BTF sees it); each
 * program's hook is its SEC() name:
 *
 *     tracepoint/<category>/<event>   classic tracepoint
 *     raw_tp/<event>                  raw tracepoint
 *     tp_btf/<event>                  BTF-enabled raw tracepoint
 *     kprobe/<function>, kretprobe/<function>
 *     classifier/ingress, classifier/egress   TC on the script's interfaces
 *
 *     SONDE_PROGRAM("TCP resets sent and received, per netns and kind");
 *     SONDE_VARIANT("tp_btf", "tpb_send_reset tpb_receive_reset",
 *                   "BTF raw tracepoints tcp_send_reset + tcp_receive_reset");
 *     SONDE_REQUIRES_STRUCT("tp_btf", trace_event_raw_tcp_send_reset,
 *                           "kernel < 6.10: resets with no socket are missed");
 *     SONDE_REQUIRES_NO_STRUCT("legacy", trace_event_raw_tcp_send_reset,
 *                              "kernel >= 6.10 uses the full variant");
 *     SONDE_REQUIRES_FIELD("tracepoint", trace_event_raw_kfree_skb, rx_sk,
 *                          "kernel < 6.12: drops carry no socket");
 *     SONDE_FORCES_KNOB("tc-host", pods, false);
 *
 * A variant lists its programs separated by spaces. The loader takes the
 * first variant whose hooks and requirements this kernel meets. Texts are
 * plain string literals without `"` or `\`. The build fails on a variant
 * naming a program the object lacks, a program no variant attaches, a
 * requirement or knob for an undeclared variant, or a knob the object lacks.
 */
#define __SONDE_CATALOG(entry)							\
	__asm__(".pushsection .sonde.catalog,\"\",@progbits\n\t"		\
		".asciz \"" entry "\"\n\t.popsection")
#define SONDE_PROGRAM(summary)							\
	__SONDE_CATALOG("program\\n" summary)
#define SONDE_VARIANT(name, programs, summary)					\
	__SONDE_CATALOG("variant\\n" name "\\n" programs "\\n" summary)
#define SONDE_REQUIRES_STRUCT(variant, kernel_struct, why)			\
	__SONDE_CATALOG("require\\n" variant "\\nkernel_struct\\n"		\
			#kernel_struct "\\n" why)
#define SONDE_REQUIRES_NO_STRUCT(variant, kernel_struct, why)			\
	__SONDE_CATALOG("require\\n" variant "\\nno_kernel_struct\\n"		\
			#kernel_struct "\\n" why)
#define SONDE_REQUIRES_FIELD(variant, kernel_struct, member, why)		\
	__SONDE_CATALOG("require\\n" variant "\\nkernel_field\\n"		\
			#kernel_struct "." #member "\\n" why)
#define SONDE_FORCES_KNOB(variant, knob, value)				\
	__SONDE_CATALOG("knob\\n" variant "\\n" #knob "\\n" #value)

/* ---- events: ring buffer, loss counter, batched wake-ups --------------- */

/*
 * SONDE_EVENTS(map, bytes, record): a ring buffer `map` of `bytes` bytes (a
 * power of two, a multiple of the page size; userspace may resize it before
 * load) that carries `record` structs, one per sample. The marker
 *
 *     record *const volatile __sonde_record_<map> = 0;
 *
 * is a .rodata variable whose BTF type points at `record`: userspace finds
 * the ring buffer's record type by name and decodes samples field by field.
 * Use it at file scope:
 *
 *     SONDE_EVENTS(events, 256 * 1024, struct tcp_reset_event);
 */
#define SONDE_EVENTS(map, bytes, record)					\
	struct {								\
		__uint(type, BPF_MAP_TYPE_RINGBUF);				\
		__uint(max_entries, bytes);					\
	} map SEC(".maps");							\
	record *const volatile __sonde_record_##map = 0

/*
 * SONDE_STACKS(map, entries): the stack trace map that sonde_stack_id fields
 * point into (kernel stacks, up to 127 frames). Named `stacks` by convention.
 * Userspace should delete an id once it has symbolized it; ids that collide
 * in the map come back negative (no stack) rather than overwriting an older
 * stack.
 */
#define SONDE_MAX_STACK_DEPTH 127
#define SONDE_STACKS(map, entries)						\
	struct {								\
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);				\
		__uint(max_entries, entries);					\
		__type(key, __u32);						\
		__uint(value_size, SONDE_MAX_STACK_DEPTH * sizeof(__u64));	\
	} map SEC(".maps")

/* Records lost because a ring buffer was full, per CPU (one slot, index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);	/* [none] always 0 */
	__type(value, __u64);	/* [count] records lost: their ring buffer was full */
} dropped SEC(".maps");

/*
 * Knob: wake the reader only once this many bytes are waiting. Userspace also
 * drains every ring buffer on a timer (every 100 ms), so a lone rare event is
 * seen within one period without a wake-up, and a burst costs one wake-up
 * per `sonde_wakeup_bytes` instead of one per record (the wake-up is the
 * expensive part of sending an event). 0 wakes the reader on every record.
 */
const volatile __u64 sonde_wakeup_bytes = 65536;

static __always_inline void sonde_count_dropped(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

	if (n)
		*n += 1;	/* per-CPU slot: no other writer */
}

static __always_inline void *sonde_reserve_in(void *ring, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(ring, size, 0);

	if (!rec)
		sonde_count_dropped();
	return rec;
}

/* Records submitted, for pacing wake-ups; per object, racy by design (a hint). */
__u64 sonde_submits = 0;

static __always_inline void sonde_submit_in(void *ring, void *rec, __u64 size)
{
	/*
	 * Wake the reader when this record makes the backlog cross
	 * sonde_wakeup_bytes, and while the backlog stays above it, on one
	 * record in 64: never on every record (an irq_work each, costlier than
	 * the record itself once a reader lags), never not at all (two CPUs
	 * reserving at once can both miss the crossing, and the reader's 100 ms
	 * timer alone lets a fast producer fill the ring). AVAIL_DATA already
	 * counts this reserved record and its 8-byte header.
	 */
	__u64 avail = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	__u64 rec_bytes = (size + 8 + 7) & ~7ULL;
	__u64 n = sonde_submits++;
	bool wake = sonde_wakeup_bytes == 0 ||
		    (avail >= sonde_wakeup_bytes &&
		     (avail - rec_bytes < sonde_wakeup_bytes || (n & 63) == 0));

	bpf_ringbuf_submit(rec, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/*
 * rec = sonde_reserve(events, sizeof(*rec)): space for one record, or NULL
 * (counted in `dropped`). Every non-NULL rec must reach sonde_submit (or
 * bpf_ringbuf_discard) on all paths: the verifier checks it.
 */
#define sonde_reserve(map, size) sonde_reserve_in(&(map), (size))
#define sonde_submit(map, rec) sonde_submit_in(&(map), (rec), sizeof(*(rec)))

/* ---- in-kernel counters -------------------------------------------------- */

/*
 * Add n to the __u64 value of `key` in a hash map, creating the entry when it
 * is missing. sonde_count: shared value, atomic add. sonde_count_percpu: for
 * per-CPU maps, where the slot is ours alone.
 */
static __always_inline void sonde_count_in(void *map, const void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST) == 0)
			return;
		v = bpf_map_lookup_elem(map, key);	/* another CPU created it */
		if (!v)
			return;
	}
	__sync_fetch_and_add(v, n);
}

static __always_inline void sonde_count_percpu_in(void *map, const void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST) == 0)
			return;
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			return;
	}
	*v += n;
}

#define sonde_count(map, key, n) sonde_count_in(&(map), (key), (n))
#define sonde_count_percpu(map, key, n) sonde_count_percpu_in(&(map), (key), (n))

/* ---- log2 histograms ---------------------------------------------------- */

/*
 * The slot of v in sonde's log2 histograms: slot i counts values in
 * (2^(i-1), 2^i], slot 0 values <= 1 (one more than the index of the top bit
 * of v - 1). Slots above `max` go to `max`, which the script exports as its
 * last finite bucket and +Inf. The key of such a map has a `slot` field beside
 * its labels; `bpf::hist` (stdlib/README.md) groups the slots back.
 */
#define SONDE_LOG2_SLOTS_MAX 64	/* the top slot a __u64 can reach */

static __always_inline __u32 sonde_log2_slot(__u64 v, __u32 max)
{
	__u32 slot = 0;

	if (v <= 1)
		return 0;
	v -= 1;
#pragma unroll
	for (int shift = 32; shift > 0; shift >>= 1) {
		if (v >> shift) {
			v >>= shift;
			slot += shift;
		}
	}
	slot += 1;
	return slot > max ? max : slot;
}

/* ---- addresses ------------------------------------------------------------ */

/* IPv4 address (network order) -> v4-mapped sonde_ip ::ffff:a.b.c.d */
static __always_inline void sonde_ip_from_v4(sonde_ip dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, 4);
}

/* IPv6 address in kernel memory (e.g. &sk->__sk_common.skc_v6_daddr) -> sonde_ip */
static __always_inline void sonde_ip_from_in6(sonde_ip dst, const struct in6_addr *src)
{
	if (bpf_probe_read_kernel(dst, sizeof(sonde_ip), src))
		__builtin_memset(dst, 0, sizeof(sonde_ip));
}

/* ---- network namespace ------------------------------------------------------ */

/* Inode of the socket's network namespace; 0 when sk is NULL. */
static __always_inline sonde_netns sonde_sk_netns(const struct sock *sk)
{
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/*
 * Inode of the packet's network namespace: the device's, else the owning
 * socket's; 0 when the skb has neither.
 */
static __always_inline sonde_netns sonde_skb_netns(const struct sk_buff *skb)
{
	struct net_device *dev;
	sonde_netns inum = 0;

	if (!skb)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (dev)
		inum = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	if (!inum)
		inum = sonde_sk_netns(BPF_CORE_READ(skb, sk));
	return inum;
}

/* ---- tuples ------------------------------------------------------------------ */

/* A connection or packet tuple; ports in host order, addresses as sonde_ip. */
struct sonde_tuple {
	sonde_ip saddr;
	sonde_ip daddr;
	sonde_port sport;
	sonde_port dport;
	__u16 family;		/* AF_INET / AF_INET6, 0 when unknown */
	sonde_l4proto l4proto;
	__u8 tcp_flags;		/* byte 13 of the TCP header, 0 otherwise */
};

/*
 * The socket's local (saddr, sport) and remote (daddr, dport) ends. Works
 * for every kind of socket (full, TIME_WAIT, request): all start with struct
 * sock_common. A full socket that has just been closed has lost its local
 * port number there (unhashed), so its source port comes from inet_sport.
 */
static __always_inline void sonde_sk_tuple(const struct sock *sk, struct sonde_tuple *t)
{
	__u8 state;

	__builtin_memset(t, 0, sizeof(*t));
	if (!sk)
		return;
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->l4proto = IPPROTO_TCP;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (!t->sport && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV)
		t->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	if (t->family == AF_INET) {
		sonde_ip_from_v4(t->saddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		sonde_ip_from_v4(t->daddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	} else if (t->family == AF_INET6) {
		sonde_ip_from_in6(t->saddr, &sk->__sk_common.skc_v6_rcv_saddr);
		sonde_ip_from_in6(t->daddr, &sk->__sk_common.skc_v6_daddr);
	}
}

/*
 * The packet's own tuple, from the headers at skb->head + skb->network_header
 * (IPv4 or IPv6, chosen by skb->protocol and checked against the version
 * field). The L4 header is located from the IP header itself (IPv4 header
 * length; IPv6 next header without extension headers) rather than from
 * skb->transport_header, which is not yet set at some drop points. Ports are
 * read for TCP and UDP, and not for non-first IPv4 fragments.
 *
 * Returns false (tuple zeroed) when the skb holds no IP packet we can read.
 */
static __always_inline bool sonde_skb_tuple(const struct sk_buff *skb, struct sonde_tuple *t)
{
	unsigned char *head;
	__u16 nh;
	__be16 proto;
	__u32 l4;

	__builtin_memset(t, 0, sizeof(*t));
	if (!skb)
		return false;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	proto = BPF_CORE_READ(skb, protocol);
	if (!head || nh == (__u16)~0U)
		return false;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct sonde_iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.ver_ihl >> 4 != 4)
			return false;
		t->family = AF_INET;
		t->l4proto = ip.protocol;
		sonde_ip_from_v4(t->saddr, ip.saddr);
		sonde_ip_from_v4(t->daddr, ip.daddr);
		if (ip.frag_off & bpf_htons(0x1fff))
			return true;	/* later fragment: no L4 header */
		l4 = nh + (ip.ver_ihl & 0x0f) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct sonde_ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) ||
		    (bpf_ntohl(ip6.ver_class_flow) >> 28) != 6)
			return false;
		t->family = AF_INET6;
		t->l4proto = ip6.nexthdr;
		__builtin_memcpy(t->saddr, ip6.saddr, sizeof(sonde_ip));
		__builtin_memcpy(t->daddr, ip6.daddr, sizeof(sonde_ip));
		l4 = nh + sizeof(ip6);
	} else {
		return false;
	}

	if (t->l4proto == IPPROTO_TCP) {
		struct {
			struct sonde_l4ports ports;
			__u8 skip[SONDE_TCP_FLAGS_OFF - sizeof(struct sonde_l4ports)];
			__u8 flags;
		} tcp;

		if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + l4) == 0) {
			t->sport = bpf_ntohs(tcp.ports.source);
			t->dport = bpf_ntohs(tcp.ports.dest);
			t->tcp_flags = tcp.flags;
		}
	} else if (t->l4proto == IPPROTO_UDP) {
		struct sonde_l4ports udp;

		if (bpf_probe_read_kernel(&udp, sizeof(udp), head + l4) == 0) {
			t->sport = bpf_ntohs(udp.source);
			t->dport = bpf_ntohs(udp.dest);
		}
	}
	return true;
}

/* ---- BTF-typed pointers (tp_btf programs) ------------------------------------ */

/*
 * sonde_sk_netns and sonde_skb_netns for BTF-typed pointers: the arguments of
 * a tp_btf program, whose kernel types the verifier knows, and what is loaded
 * through them. Plain loads, which the verifier turns into direct reads that
 * cannot fault, instead of one bpf_probe_read_kernel() call per pointer hop.
 * Not for untyped pointers (classic or raw tracepoint arguments, kprobes).
 */
static __always_inline sonde_netns sonde_sk_netns_btf(const struct sock *sk)
{
	struct net *net;

	if (!sk)
		return 0;
	net = sk->__sk_common.skc_net.net;
	return net ? net->ns.inum : 0;
}

static __always_inline sonde_netns sonde_skb_netns_btf(const struct sk_buff *skb)
{
	struct net_device *dev;
	sonde_netns inum = 0;

	if (!skb)
		return 0;
	dev = skb->dev;
	if (dev) {
		struct net *net = dev->nd_net.net;

		inum = net ? net->ns.inum : 0;
	}
	if (!inum)
		inum = sonde_sk_netns_btf(skb->sk);
	return inum;
}

#endif /* __SONDE_H */
