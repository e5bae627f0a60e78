// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * virtcmd_latency: how long virtio-net control commands take
 * (virtnet_send_command: set MAC, RX mode, VLAN filters, queue count...),
 * a synchronous round trip to the hypervisor, during which the sender (an
 * `ip link`, an `ethtool -L`, a kworker setting the RX mode) spins.
 *
 * No tracepoint exists: kprobe on entry stores the start time and the
 * command per task (pid_tgid) in `start`; the kretprobe computes the
 * latency, deletes the entry, and counts it in the log2 histogram `hist`
 * and in `counts` per (sender's netns, class, command, over the threshold). Commands over
 * threshold_ns are sent as records (knob emit_events).
 *
 * Variants (both kprobe-only, the function is in the virtio_net module and
 * can only be probed while it is loaded):
 *   kprobe        virtnet_send_command
 *   kprobe-reply  virtnet_send_command_reply (6.11+ keeps the work there, and
 *                 virtnet_send_command may be inlined into its callers)
 *
 * Maps:  start (LRU hash, pid_tgid -> struct start), hist (per-CPU hash,
 *        struct hist_key -> __u64), counts (per-CPU hash, struct
 *        virtcmd_key -> __u64), events (ring buffer, struct virtcmd_event),
 *        dropped (sonde.h).
 * Knobs: threshold_ns (10 ms), emit_events (true), sonde_wakeup_bytes.
 */
#include "sonde.h"
#include "virtcmd_latency.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What `sonde probes` lists and the loader attaches (see sonde.h). */
SONDE_PROGRAM("virtio-net control command latency (virtnet_send_command): log2 "
	      "histogram, counts over a threshold, events for slow commands");
SONDE_VARIANT("kprobe", "kp_send_command kretp_send_command",
	      "kprobe + kretprobe virtnet_send_command (virtio_net module "
	      "loaded)");
SONDE_VARIANT("kprobe-reply", "kp_send_command_reply kretp_send_command_reply",
	      "kprobe + kretprobe virtnet_send_command_reply (6.11+, where "
	      "virtnet_send_command may be inlined)");

/* Knob: a command slower than this counts as slow and is reported. */
const volatile __u64 threshold_ns = 10 * 1000 * 1000;
/* Knob: send a record per slow command. */
const volatile bool emit_events = true;

struct start {
	__u64 ts;	/* [ns, CLOCK_MONOTONIC] the call */
	__u8 class;	/* [none] VIRTIO_NET_CTRL_* class */
	__u8 cmd;	/* [none] command within the class */
};

/* In-flight commands. LRU: an entry whose return was missed ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);	/* [none] pid_tgid of the calling task */
	__type(value, struct start);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, struct hist_key);
	__type(value, __u64);	/* [count] commands */
} hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct virtcmd_key);
	__type(value, __u64);	/* [count] commands */
} counts SEC(".maps");

SONDE_EVENTS(events, 64 * 1024, struct virtcmd_event);

static __always_inline sonde_netns task_netns(void)
{
	struct task_struct___virtcmd *task = (struct task_struct___virtcmd *)bpf_get_current_task();

	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

static __always_inline int enter(__u8 class, __u8 cmd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct start s = { .ts = bpf_ktime_get_ns(), .class = class, .cmd = cmd };

	bpf_map_update_elem(&start, &id, &s, BPF_ANY);
	return 0;
}

static __always_inline int leave(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct virtcmd_event *e;
	struct virtcmd_key k;
	struct hist_key h;
	struct start *s;
	__u64 delta;
	__u8 class, cmd;

	s = bpf_map_lookup_elem(&start, &id);
	if (!s)
		return 0;
	delta = bpf_ktime_get_ns() - s->ts;
	class = s->class;
	cmd = s->cmd;
	bpf_map_delete_elem(&start, &id);

	h.slot = sonde_log2_slot(delta, SONDE_LOG2_SLOTS_MAX);
	sonde_count_percpu(hist, &h, 1);
	__builtin_memset(&k, 0, sizeof(k));
	k.netns = task_netns();
	k.class = class;
	k.cmd = cmd;
	k.slow = delta > threshold_ns;
	sonde_count_percpu(counts, &k, 1);

	if (!emit_events || !k.slow)
		return 0;
	e = sonde_reserve(events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->latency_ns = delta;
	e->pid = id >> 32;
	e->class = class;
	e->cmd = cmd;
	e->ok = ret != 0;
	e->netns = k.netns;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	sonde_submit(events, e);
	return 0;
}

/* bool virtnet_send_command(struct virtnet_info *vi, u8 class, u8 cmd, struct scatterlist *out) */
SEC("kprobe/virtnet_send_command")
int BPF_KPROBE(kp_send_command, void *vi, __u8 class, __u8 cmd)
{
	return enter(class, cmd);
}

SEC("kretprobe/virtnet_send_command")
int BPF_KRETPROBE(kretp_send_command, long ret)
{
	return leave(ret);
}

/* bool virtnet_send_command_reply(struct virtnet_info *vi, u8 class, u8 cmd, ...), 6.11+ */
SEC("kprobe/virtnet_send_command_reply")
int BPF_KPROBE(kp_send_command_reply, void *vi, __u8 class, __u8 cmd)
{
	return enter(class, cmd);
}

SEC("kretprobe/virtnet_send_command_reply")
int BPF_KRETPROBE(kretp_send_command_reply, long ret)
{
	return leave(ret);
}
