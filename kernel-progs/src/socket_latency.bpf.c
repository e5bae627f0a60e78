// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * socket_latency: how long data waits on a TCP or UDP socket for the
 * application, and how long TCP send calls take.
 *
 * Read side: from the moment data is queued on a socket that had none
 * waiting (the socket's data-ready callback) to the next read that returns
 * data (recvmsg/read, MSG_PEEK and error-queue reads excluded). A reader that
 * is busy or asleep makes it large; a reader blocked in recv makes it tiny.
 * The start time lives in `rx` keyed by the socket (its address) and is
 * deleted by that read, or when a TCP socket closes; `rx` is an LRU hash, so
 * an entry of a UDP socket closed with unread data ages out. The entry keeps
 * the socket's ports: a socket reallocated at the same address with other
 * ports does not inherit a stale start time.
 *
 * Write side: the time a TCP send call spends from the start of the copy
 * into the socket (tcp_sendmsg_locked, after the socket lock is taken) to
 * its return: mostly waiting for send buffer space, i.e. a peer that reads
 * slowly, a small window or a slow network. Keyed by thread in `tx`, deleted
 * by the return. There is no tracepoint where data leaves the write queue
 * (tcp_write_xmit), so the time between a write and its transmission, as
 * opposed to the call's own duration, is not measured.
 *
 * Every latency goes into the log2 histogram `hist` and the sum `sums`, per
 * (netns, direction); latencies over slow_ns and over threshold_ns are
 * counted in `counts`; those over threshold_ns are sent as records with the
 * socket's tuple (IPv4 and IPv6) and the task (knob emit_events).
 *
 * Variants:
 *   tracepoint        raw tracepoints sock:sk_data_ready (6.6+),
 *                     sock:sock_recv_length, sock:sock_send_length (6.4+),
 *                     tcp:tcp_sendmsg_locked (6.11+), sock:inet_sock_set_state
 *   tracepoint-read   the same without tcp_sendmsg_locked: read side only
 *                     (6.6 to 6.10)
 *   kprobe            kernels without those tracepoints (5.10, 6.1):
 *                     kprobes sock_def_readable (data queued: sockets with
 *                     the default callback, i.e. not taken over by a kernel
 *                     user or sockmap), tcp_cleanup_rbuf (TCP read, with the
 *                     bytes copied), skb_consume_udp (UDP read), kprobe and
 *                     kretprobe tcp_sendmsg (the whole send call, socket
 *                     lock wait included), and the inet_sock_set_state raw
 *                     tracepoint for closes
 *
 * Maps:  rx (LRU hash, socket -> struct rx_start), tx (LRU hash, pid_tgid ->
 *        struct tx_start), hist, counts, sums (LRU per-CPU hashes), events
 *        (ring buffer of struct socket_latency_event), dropped (sonde.h).
 * Knobs: slow_ns (1 ms), threshold_ns (100 ms), emit_events (true),
 *        sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "socket_latency.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("time data waits on TCP/UDP sockets before the application reads "
	      "it, and TCP send call duration: log2 histograms and counts over "
	      "1 ms / 100 ms per netns; events over the threshold with tuple "
	      "and task");
SONDE_VARIANT("tracepoint",
	      "rtp_data_ready rtp_recv_length rtp_set_state "
	      "rtp_sendmsg_locked rtp_send_length",
	      "raw tracepoints sk_data_ready, sock_recv_length, "
	      "tcp_sendmsg_locked, sock_send_length, inet_sock_set_state "
	      "(6.11+): read and write sides");
SONDE_VARIANT("tracepoint-read", "rtp_data_ready rtp_recv_length rtp_set_state",
	      "raw tracepoints sk_data_ready, sock_recv_length, "
	      "inet_sock_set_state (6.6 to 6.10): read side only, no "
	      "tcp_sendmsg_locked");
SONDE_VARIANT("kprobe",
	      "kp_def_readable kp_cleanup_rbuf kp_consume_udp rtp_set_state "
	      "kp_tcp_sendmsg kretp_tcp_sendmsg",
	      "kprobes sock_def_readable, tcp_cleanup_rbuf, skb_consume_udp, "
	      "tcp_sendmsg (+ kretprobe) and raw tracepoint inet_sock_set_state "
	      "(kernels before 6.6: 5.10, 6.1)");

/* Knob: latencies over this are counted as slow (`counts`, over SLOW). */
const volatile __u64 slow_ns = 1000 * 1000;
/* Knob: latencies over this are counted (over THRESHOLD) and reported. */
const volatile __u64 threshold_ns = 100 * 1000 * 1000;
/* Knob: send a record per latency over threshold_ns. */
const volatile bool emit_events = true;

#define SKLAT_TCP_LISTEN 10	/* include/net/tcp_states.h */
#define SKLAT_MSG_PEEK 2	/* include/linux/socket.h */
#define SKLAT_MSG_ERRQUEUE 0x2000

/* A socket with data waiting since `ts`; `ports` tells its incarnation. */
struct rx_start {
	__u64 ts;	/* [ns, CLOCK_MONOTONIC] first unread data queued */
	__u32 ports;	/* [none] local port << 16 | remote port (network order) */
};

/* A send call in progress on `sk` since `ts`. */
struct tx_start {
	__u64 ts;	/* [ns, CLOCK_MONOTONIC] send call start */
	__u64 sk;	/* [none] kernel address of the socket */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);	/* [none] kernel address of the socket */
	__type(value, struct rx_start);
} rx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);	/* [none] pid_tgid of the sending task */
	__type(value, struct tx_start);
} tx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sklat_hist_key);
	__type(value, __u64);	/* [count] latencies */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sklat_key);
	__type(value, __u64);	/* [count] latencies */
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sklat_sum_key);
	__type(value, __u64);	/* [ns] the sum of the latencies */
} sums SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct socket_latency_event);

/* AF_INET/AF_INET6 TCP or UDP socket: the only ones measured. */
static __always_inline bool inet_stream_or_dgram(const struct sock *sk)
{
	const struct sock___sk *s = (const void *)sk;
	__u16 family, proto;

	if (!sk)
		return false;
	family = BPF_CORE_READ(s, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return false;
	proto = BPF_CORE_READ(s, sk_protocol);
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline __u32 sk_ports(const struct sock *sk)
{
	return (__u32)BPF_CORE_READ(sk, __sk_common.skc_num) << 16 |
	       BPF_CORE_READ(sk, __sk_common.skc_dport);
}

static __always_inline void record(const struct sock *sk, enum sklat_dir dir, __u64 delta,
				   int bytes)
{
	struct sklat_hist_key h;
	struct sklat_sum_key sk_key;
	struct sklat_key k;
	struct socket_latency_event *e;
	struct sonde_tuple t;
	sonde_netns netns = sonde_sk_netns(sk);

	__builtin_memset(&h, 0, sizeof(h));
	h.netns = netns;
	h.dir = dir;
	h.slot = sonde_log2_slot(delta, SONDE_LOG2_SLOTS_MAX);
	sonde_count_percpu(hist, &h, 1);
	__builtin_memset(&sk_key, 0, sizeof(sk_key));
	sk_key.netns = netns;
	sk_key.dir = dir;
	sonde_count_percpu(sums, &sk_key, delta);

	if (delta <= slow_ns)
		return;
	__builtin_memset(&k, 0, sizeof(k));
	k.netns = netns;
	k.dir = dir;
	k.over = SKLAT_OVER_SLOW;
	sonde_count_percpu(counts, &k, 1);
	if (delta <= threshold_ns)
		return;
	k.over = SKLAT_OVER_THRESHOLD;
	sonde_count_percpu(counts, &k, 1);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	sonde_sk_tuple(sk, &t);
	e->ts = bpf_ktime_get_ns();
	e->latency_ns = delta;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = netns;
	e->dir = dir;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->bytes = bytes;
	e->sport = t.sport;
	e->dport = t.dport;
	e->family = t.family;
	e->l4proto = BPF_CORE_READ((const struct sock___sk *)sk, sk_protocol);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	sonde_submit(events, e);
}

/* ---- read side ------------------------------------------------------------ */

/* Data queued on sk: start the clock unless data was already waiting. */
static __always_inline void data_ready(const struct sock *sk)
{
	struct rx_start s, *old;
	__u64 key = (__u64)sk;

	if (!inet_stream_or_dgram(sk))
		return;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == SKLAT_TCP_LISTEN)
		return;		/* a connection to accept, not data */
	s.ts = bpf_ktime_get_ns();
	s.ports = sk_ports(sk);
	old = bpf_map_lookup_elem(&rx, &key);
	if (old && old->ports == s.ports)
		return;		/* earlier data still unread: keep its time */
	bpf_map_update_elem(&rx, &key, &s, BPF_ANY);
}

/* The application read `bytes` from sk: the waiting data has been seen. */
static __always_inline void data_read(const struct sock *sk, int bytes)
{
	__u64 key = (__u64)sk;
	struct rx_start *s;
	__u64 ts;
	__u32 ports;

	s = bpf_map_lookup_elem(&rx, &key);
	if (!s)
		return;
	ts = s->ts;
	ports = s->ports;
	bpf_map_delete_elem(&rx, &key);
	if (ports != sk_ports(sk))
		return;		/* left by an earlier socket at this address */
	record(sk, SKLAT_DIR_READ, bpf_ktime_get_ns() - ts, bytes);
}

/* void trace_sk_data_ready(const struct sock *sk) */
SEC("raw_tp/sk_data_ready")
int BPF_PROG(rtp_data_ready, const struct sock *sk)
{
	data_ready(sk);
	return 0;
}

/* void trace_sock_recv_length(struct sock *sk, int ret, int flags) */
SEC("raw_tp/sock_recv_length")
int BPF_PROG(rtp_recv_length, struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || (flags & (SKLAT_MSG_PEEK | SKLAT_MSG_ERRQUEUE)))
		return 0;
	data_read(sk, ret);
	return 0;
}

/* A TCP socket closing takes its pending read with it. */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(rtp_set_state, const struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;

	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&rx, &key);
	return 0;
}

/* void sock_def_readable(struct sock *sk) */
SEC("kprobe/sock_def_readable")
int BPF_KPROBE(kp_def_readable, struct sock *sk)
{
	data_ready(sk);
	return 0;
}

/* void tcp_cleanup_rbuf(struct sock *sk, int copied): end of a TCP read */
SEC("kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(kp_cleanup_rbuf, struct sock *sk, int copied)
{
	if (copied > 0)
		data_read(sk, copied);
	return 0;
}

/* void skb_consume_udp(struct sock *sk, struct sk_buff *skb, int len): a UDP read */
SEC("kprobe/skb_consume_udp")
int BPF_KPROBE(kp_consume_udp, struct sock *sk, struct sk_buff *skb, int len)
{
	data_read(sk, len);
	return 0;
}

/* ---- write side ----------------------------------------------------------- */

static __always_inline void send_start(const struct sock *sk, bool first)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tx_start s = { .ts = bpf_ktime_get_ns(), .sk = (__u64)sk };
	struct tx_start *old;

	if (first) {
		/* tcp_sendmsg_locked fires once per buffer it fills: keep the first */
		old = bpf_map_lookup_elem(&tx, &id);
		if (old && old->sk == s.sk)
			return;
	}
	bpf_map_update_elem(&tx, &id, &s, BPF_ANY);
}

/* The send call of this thread returned `ret`; sk is NULL when unknown. */
static __always_inline void send_end(const struct sock *sk, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tx_start *s;
	const struct sock *on;
	__u64 ts;

	s = bpf_map_lookup_elem(&tx, &id);
	if (!s)
		return;
	ts = s->ts;
	on = (const struct sock *)s->sk;
	bpf_map_delete_elem(&tx, &id);
	if (sk && sk != on)
		return;		/* the entry was left by another socket's path */
	record(on, SKLAT_DIR_WRITE, bpf_ktime_get_ns() - ts, ret);
}

/* trace_tcp_sendmsg_locked(sk, msg, skb, size_goal), in the copy loop */
SEC("raw_tp/tcp_sendmsg_locked")
int BPF_PROG(rtp_sendmsg_locked, const struct sock *sk)
{
	send_start(sk, true);
	return 0;
}

/* void trace_sock_send_length(struct sock *sk, int ret, int flags) */
SEC("raw_tp/sock_send_length")
int BPF_PROG(rtp_send_length, struct sock *sk, int ret, int flags)
{
	send_end(sk, ret);
	return 0;
}

/* int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size) */
SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kp_tcp_sendmsg, struct sock *sk)
{
	send_start(sk, false);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kretp_tcp_sendmsg, int ret)
{
	send_end(NULL, ret);
	return 0;
}
