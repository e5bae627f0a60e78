/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kernel.h: the kernel types sonde's programs touch, and nothing more.
 *
 * Every struct that mirrors a kernel structure carries
 * __attribute__((preserve_access_index)): clang then records each field
 * access as a CO-RE relocation, and the loader rewrites the offset against
 * the BTF of the kernel it runs on. The layouts below only need the right
 * field names and types; their offsets here do not matter, and fields we do
 * not read are left out. Anonymous unions of the kernel may be flattened:
 * relocation matches fields by name and looks through anonymous members.
 *
 * To read a new field: add it here with the kernel's name and type, then use
 * BPF_CORE_READ() (or a direct access on a tracepoint context). If the field
 * does not exist on every supported kernel, guard the access with
 * bpf_core_field_exists() and note the kernel change in core_fixes.h.
 *
 * Wire formats (IP, TCP, UDP headers) and the BPF UAPI constants are ABI and
 * are defined plainly, without relocation.
 *
 * We do not include <linux/bpf.h>: it pulls <asm/types.h>, which lives in a
 * host-architecture directory that `-target bpf` does not search. The few
 * UAPI constants the programs use are repeated here with their ABI values.
 */
#ifndef __SONDE_KERNEL_H
#define __SONDE_KERNEL_H

/* ---- basic types ------------------------------------------------------ */

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;

typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

typedef _Bool bool;
#define true 1
#define false 0

#ifndef NULL
#define NULL ((void *)0)
#endif

/* ---- BPF UAPI (include/uapi/linux/bpf.h) -------------------------------- */

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_map_update_elem() flags */
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

/* bpf_ringbuf_submit() / bpf_ringbuf_output() flags */
enum {
	BPF_RB_NO_WAKEUP = 1ULL << 0,
	BPF_RB_FORCE_WAKEUP = 1ULL << 1,
};

/* bpf_ringbuf_query() flags */
enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
	BPF_RB_CONS_POS = 2,
	BPF_RB_PROD_POS = 3,
};

/* ---- constants from the networking UAPI -------------------------------- */

#define AF_INET 2
#define AF_INET6 10

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define TCP_TIME_WAIT 6		/* include/net/tcp_states.h */
#define TCP_CLOSE 7
#define TCP_NEW_SYN_RECV 12
#define RTN_LOCAL 2		/* include/uapi/linux/rtnetlink.h */
#define RTF_LOCAL 0x80000000U	/* include/uapi/linux/ipv6_route.h */

/* ---- wire formats (fixed by the protocols, no relocation) -------------- */

struct sonde_iphdr {
	__u8 ver_ihl;		/* version << 4 | header length in words */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;	/* flags (3 bits) and offset (13 bits) */
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct sonde_ipv6hdr {
	__be32 ver_class_flow;	/* version << 28 | class | flow label */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* The start of a TCP or UDP header: both begin with the two ports. */
struct sonde_l4ports {
	__be16 source;
	__be16 dest;
};

#define SONDE_TCP_FLAGS_OFF 13	/* byte holding CWR ECE URG ACK PSH RST SYN FIN */
#define SONDE_TCP_FLAG_RST 0x04

/* ---- kernel structures (CO-RE) ---------------------------------------- */

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
};

/* A full IPv4/IPv6 socket starts with struct sock (not TIME_WAIT/request socks). */
struct inet_sock {
	__be16 inet_sport;
};

struct net_device {
	possible_net_t nd_net;
};

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned long _skb_refdst;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	unsigned char *head;
};

/* The routes behind skb_rtable() / skb_dst(); the dst_entry comes first. */
struct rtable {
	__u16 rt_type;
};

struct rt6_info {
	__u32 rt6i_flags;
};

/* Tracepoint records: common header, then the fields of TP_STRUCT__entry. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* tcp:tcp_receive_reset (class tcp_event_sk) */
struct trace_event_raw_tcp_event_sk {
	struct trace_entry ent;
	const void *skaddr;
};

/* tcp:tcp_send_reset, kernel >= 6.10 (its own event); see core_fixes.h */
struct trace_event_raw_tcp_send_reset {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
};

/* tcp:tcp_send_reset, kernel < 6.10 (class tcp_event_sk_skb) */
struct trace_event_raw_tcp_event_sk_skb {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
};

/*
 * Values differ between kernels: never compare with these numbers, use
 * bpf_core_enum_value(). Only the enumerators we name are listed.
 */
enum skb_drop_reason {
	SKB_NOT_DROPPED_YET = 0,
	SKB_CONSUMED = 1,
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
};

/* skb:kfree_skb; `reason` from 5.17, `rx_sk` from 6.12 (core_fixes.h) */
struct trace_event_raw_kfree_skb {
	struct trace_entry ent;
	void *skbaddr;
	void *location;
	void *rx_sk;
	unsigned short protocol;
	enum skb_drop_reason reason;
};

#pragma clang attribute pop

/* ---- flow: traffic control (TC) programs ------------------------------ */

#define TC_ACT_UNSPEC (-1)	/* include/uapi/linux/pkt_cls.h: next filter, else default */
#define IFF_LOOPBACK 0x8	/* include/uapi/linux/if.h */
#define NETDEV_ALIGN 32		/* include/linux/netdevice.h: netdev_priv() alignment */
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60

/*
 * The link type of a net_device (include/net/rtnetlink.h), and the members
 * of net_device that flow reads, as a CO-RE flavor of struct net_device (the
 * ___flow suffix is ignored when relocating): programs that do not read them
 * keep the plain struct above.
 */
struct rtnl_link_ops {
	const char *kind;
} __attribute__((preserve_access_index));

struct net_device___flow {
	possible_net_t nd_net;
	unsigned int flags;
	const struct rtnl_link_ops *rtnl_link_ops;
} __attribute__((preserve_access_index));

/* ---- virtcmd_latency: the network namespace of the current task ------- */

struct nsproxy___virtcmd {
	struct net *net_ns;
} __attribute__((preserve_access_index));

struct task_struct___virtcmd {
	struct nsproxy___virtcmd *nsproxy;
} __attribute__((preserve_access_index));

/* ---- softirq: the irq:softirq_* tracepoint record ------------------- */

/* irq:softirq_raise, softirq_entry, softirq_exit (class softirq) */
struct trace_event_raw_softirq {
	struct trace_entry ent;
	unsigned int vec;
} __attribute__((preserve_access_index));

/* ---- bio_latency: block requests, their disk, the issuing task -------- */

#define SONDE_DISK_NAME_LEN 32	/* DISK_NAME_LEN, include/linux/blkdev.h */
#define SONDE_REQ_OP_MASK 0xff	/* (1 << REQ_OP_BITS) - 1, REQ_OP_BITS = 8 on 5.10 .. 6.18 */

struct request_queue;

struct gendisk {
	int major;
	int first_minor;
	char disk_name[SONDE_DISK_NAME_LEN];
	struct request_queue *queue;
} __attribute__((preserve_access_index));

/* `disk` from 5.15 (see core_fixes.h) */
struct request_queue {
	struct gendisk *disk;
} __attribute__((preserve_access_index));

/* `rq_disk` until 5.19 (see core_fixes.h); cmd_flags is a blk_opf_t (__u32) from 6.0 */
struct request {
	struct request_queue *q;
	struct gendisk *rq_disk;
	unsigned int cmd_flags;
	unsigned int __data_len;
	__u64 __sector;
} __attribute__((preserve_access_index));

struct nsproxy___bio {
	struct net *net_ns;
} __attribute__((preserve_access_index));

struct task_struct___bio {
	struct nsproxy___bio *nsproxy;
} __attribute__((preserve_access_index));

/*
 * The context of a TC program (include/uapi/linux/bpf.h), UAPI and not
 * relocated: the verifier rewrites each access into the kernel's sk_buff.
 * Only the members up to gso_size (5.7+) are listed; their offsets are ABI.
 */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
	__u32 family;
	__u32 remote_ip4;
	__u32 local_ip4;
	__u32 remote_ip6[4];
	__u32 local_ip6[4];
	__u32 remote_port;
	__u32 local_port;
	__u32 data_meta;
	union { void *flow_keys; __u64 :64; } __attribute__((aligned(8)));
	__u64 tstamp;
	__u32 wire_len;
	__u32 gso_segs;
	union { void *sk; __u64 :64; } __attribute__((aligned(8)));
	__u32 gso_size;
};

/* ---- tcp_retrans, tcp_state: TCP tracepoints and socket fields --------- */

#define TCP_ESTABLISHED 1	/* include/net/tcp_states.h */
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_LISTEN 10
#define ECONNREFUSED 111	/* include/uapi/asm-generic/errno.h */
#define ETIMEDOUT 110
#define EHOSTUNREACH 113
#define ENETUNREACH 101

/*
 * tcp:tcp_retransmit_skb on newer kernels (6.18 here): its own record, with
 * `err`, fired for failed attempts too. 5.10 and 6.1 use the class
 * tcp_event_sk_skb (struct above), fired only for a retransmission that was
 * sent. See core_fixes.h.
 */
struct trace_event_raw_tcp_retransmit_skb {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
	int err;
} __attribute__((preserve_access_index));

/* tcp:tcp_retransmit_synack: the listener and the request socket. */
struct trace_event_raw_tcp_retransmit_synack {
	struct trace_entry ent;
	const void *skaddr;
	const void *req;
} __attribute__((preserve_access_index));

/* TCP_SKB_CB(skb): the TCP control block in skb->cb (include/net/tcp.h). */
struct tcp_skb_cb {
	union {
		__u32 tcp_tw_isn;
		struct {
			__u16 tcp_gso_segs;	/* tcp_skb_pcount() */
			__u16 tcp_gso_size;
		};
	};
} __attribute__((preserve_access_index));

struct sk_buff___tcp {
	char cb[48];
} __attribute__((preserve_access_index));

/* The members of struct sock that tcp_state reads (5.6+: sk_protocol is a u16). */
struct sock___tcp {
	int sk_err;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

/* ---- netif_txlat, kernel_latency: transmit/receive path timing ------------- */

/*
 * Flavors (the ___lat suffix is dropped when relocating) of the structs above,
 * with the members these two programs read: adding them to the shared structs
 * would change every other object's BTF.
 */
struct sk_buff___lat {
	struct net_device *dev;
	struct sock *sk;
	union {
		__s64 tstamp;		/* ktime_t; TCP stores its departure time here */
		__u64 skb_mstamp_ns;
	};
	unsigned int len;
	__be16 protocol;
	__u16 network_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

struct net_device___lat {
	char name[16];
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

/* 5.6+ ("net: Make sk_protocol a 16-bit value"): a plain u16, no bitfield. */
struct sock___lat {
	struct sock_common __sk_common;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

/* Classic tracepoint records of net:net_dev_queue (class net_dev_template), */
struct trace_event_raw_net_dev_template {
	struct trace_entry ent;
	void *skbaddr;
	unsigned int len;
} __attribute__((preserve_access_index));

/* net:net_dev_start_xmit, */
struct trace_event_raw_net_dev_start_xmit {
	struct trace_entry ent;
	const void *skbaddr;
	unsigned int len;
} __attribute__((preserve_access_index));

/* and net:net_dev_xmit; all three unchanged from 5.10 to 6.18. */
struct trace_event_raw_net_dev_xmit {
	struct trace_entry ent;
	void *skbaddr;
	unsigned int len;
	int rc;
} __attribute__((preserve_access_index));

/* ---- socket_latency, sock_pressure: a socket's protocol and buffers ---- */

/*
 * The members of struct sock these two programs read, as a CO-RE flavor
 * (the ___sk suffix is ignored when relocating). sk_type and sk_protocol are
 * plain u16 since 5.6 (bitfields before). sk_backlog.rmem_alloc is the
 * receive memory in use, the value compared with sk_rcvbuf.
 */
struct sock___sk {
	struct sock_common __sk_common;
	struct {
		struct {
			int counter;
		} rmem_alloc;
	} sk_backlog;
	int sk_rcvbuf;
	int sk_sndbuf;
	int sk_wmem_queued;
	__u16 sk_type;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

/*
 * struct pt_regs for kprobes. Not relocated: its layout is the x86-64 entry
 * stack frame, fixed ABI. Field names follow the UAPI spelling that
 * bpf_tracing.h expects when no vmlinux.h is included (rdi, rsi, ...).
 */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long rbp;
	unsigned long rbx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long rax;
	unsigned long rcx;
	unsigned long rdx;
	unsigned long rsi;
	unsigned long rdi;
	unsigned long orig_rax;
	unsigned long rip;
	unsigned long cs;
	unsigned long eflags;
	unsigned long rsp;
	unsigned long ss;
};
#else
#error "kernel.h: struct pt_regs is only defined for __TARGET_ARCH_x86; add the target's layout"
#endif

#endif /* __SONDE_KERNEL_H */
