// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcp_state: TCP socket state changes (sock:inet_sock_set_state), turned in
 * the kernel into
 *   - transitions counted per (network namespace, old state, new state);
 *   - failed connects (SYN_SENT -> CLOSE) per (netns, reason, family), the
 *     reason read from the socket's error: REFUSED (a reset), TIMEOUT (SYN
 *     retries exhausted), UNREACHABLE (ICMP), ABORTED (closed by the
 *     application while connecting), OTHER;
 *   - connection lifetimes (ESTABLISHED -> CLOSE) as a log2 histogram of
 *     milliseconds per netns, with their sum.
 * and, optionally, one record per failed connect with its tuple, the errno
 * and the time since the first SYN.
 *
 * One variant, "raw_tracepoint": raw_tp/inet_sock_set_state (the tracepoint
 * exists since 4.16 with the same arguments: sk, oldstate, newstate). The
 * raw tracepoint skips filling the perf record; the tuple is read from the
 * socket only when a record is sent. Only IPPROTO_TCP sockets of family
 * AF_INET/AF_INET6 are counted (the tracepoint also fires for SCTP and
 * MPTCP).
 *
 * Per-socket state: `start` (LRU hash, socket address -> ktime) holds the
 * time a socket entered ESTABLISHED (or SYN_SENT when records are on, for
 * their elapsed_ns); every transition to CLOSE deletes the entry, which
 * every TCP socket makes before it is freed. The LRU bounds what a missed
 * transition could leave behind; a socket whose entry was evicted (more than
 * `start`'s size open at once) closes without a lifetime sample.
 *
 * Listen queue overflows are not state changes and no tracepoint reports
 * them on 5.10 or 6.1: they are in packet_loss (drop reason
 * TCP_LISTEN_OVERFLOW, kernels that have it) and in TcpExt ListenOverflows
 * and ListenDrops (/proc/net/netstat).
 *
 * Maps:  counts (transitions per struct transition_key), failed (per struct
 *        fail_key), lifetime (per struct lifetime_key), lifetime_sum (ms per
 *        struct netns_key), start, events (ring buffer of struct
 *        tcp_connect_event), stacks, dropped (sonde.h).
 * Knobs: emit_events (false), stack (false), sonde_wakeup_bytes (sonde.h).
 */
#include "sonde.h"
#include "tcp_state.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("TCP state changes: transitions, failed connects by reason, "
	      "connection lifetimes per netns; optional per-failure events");
SONDE_VARIANT("raw_tracepoint", "tp_set_state",
	      "raw tracepoint sock:inet_sock_set_state");

/* Knob: send a record per failed connect; when false only the maps are kept. */
const volatile bool emit_events = false;
/* Knob: capture the kernel stack of each reported failed connect. */
const volatile bool stack = false;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct transition_key);
	__type(value, __u64);	/* [count] transitions */
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fail_key);
	__type(value, __u64);	/* [count] failed connects */
} failed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct lifetime_key);
	__type(value, __u64);	/* [count] connections */
} lifetime SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct netns_key);
	__type(value, __u64);	/* [ms] the sum of the connections' lifetimes */
} lifetime_sum SEC(".maps");

/* Socket address -> bpf_ktime_get_ns() when it entered ESTABLISHED (or SYN_SENT). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);	/* [none] kernel address of the socket */
	__type(value, __u64);	/* [ns, CLOCK_MONOTONIC] ESTABLISHED (or SYN_SENT) */
} start SEC(".maps");

SONDE_EVENTS(events, 256 * 1024, struct tcp_connect_event);
SONDE_STACKS(stacks, 1024);

static __always_inline enum fail_reason fail_reason_of(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return FAIL_REASON_REFUSED;
	case ETIMEDOUT:
		return FAIL_REASON_TIMEOUT;
	case EHOSTUNREACH:
	case ENETUNREACH:
		return FAIL_REASON_UNREACHABLE;
	case 0:
		return FAIL_REASON_ABORTED;
	default:
		return FAIL_REASON_OTHER;
	}
}

static __always_inline void connect_failed(void *ctx, struct sock *sk, sonde_netns netns,
					   __u16 family, __u64 now, __u64 *started)
{
	struct tcp_connect_event *e;
	struct sonde_tuple t;
	struct fail_key key;
	int err;

	err = BPF_CORE_READ((struct sock___tcp *)sk, sk_err);
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = netns;
	key.reason = fail_reason_of(err);
	key.family = family;
	sonde_count(failed, &key, 1);

	if (!emit_events)
		return;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return;
	sonde_sk_tuple(sk, &t);
	e->ts = now;
	e->elapsed_ns = started ? now - *started : 0;
	__builtin_memcpy(e->saddr, t.saddr, sizeof(sonde_ip));
	__builtin_memcpy(e->daddr, t.daddr, sizeof(sonde_ip));
	e->netns = netns;
	e->reason = key.reason;
	e->err = err;
	e->sport = t.sport;
	e->dport = t.dport;
	e->family = family;
	e->stack = stack ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	sonde_submit(events, e);
}

static __always_inline void connection_closed(sonde_netns netns, __u64 now, __u64 started)
{
	struct lifetime_key lk;
	struct netns_key nk;
	__u64 ms = (now - started) / 1000000;

	__builtin_memset(&lk, 0, sizeof(lk));
	lk.netns = netns;
	lk.slot = sonde_log2_slot(ms, SONDE_LOG2_SLOTS_MAX);
	sonde_count(lifetime, &lk, 1);
	__builtin_memset(&nk, 0, sizeof(nk));
	nk.netns = netns;
	sonde_count(lifetime_sum, &nk, ms);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tp_set_state, struct sock *sk, int oldstate, int newstate)
{
	struct transition_key key;
	__u64 addr = (__u64)sk;
	__u64 now, *started;
	sonde_netns netns;
	__u16 family;

	if (!sk || BPF_CORE_READ((struct sock___tcp *)sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;

	netns = sonde_sk_netns(sk);
	__builtin_memset(&key, 0, sizeof(key));
	key.netns = netns;
	key.oldstate = oldstate;
	key.newstate = newstate;
	sonde_count(counts, &key, 1);

	if (newstate == TCP_ESTABLISHED || (emit_events && newstate == TCP_SYN_SENT)) {
		now = bpf_ktime_get_ns();
		bpf_map_update_elem(&start, &addr, &now, BPF_ANY);
		return 0;
	}
	if (newstate != TCP_CLOSE)
		return 0;

	now = bpf_ktime_get_ns();
	started = bpf_map_lookup_elem(&start, &addr);
	if (oldstate == TCP_SYN_SENT)
		connect_failed(ctx, sk, netns, family, now, started);
	else if (started)
		connection_closed(netns, now, *started);
	if (started)
		bpf_map_delete_elem(&start, &addr);
	return 0;
}
