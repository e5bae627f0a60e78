/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * virtcmd_latency: records shared with userspace (decoded by field name
 * from BTF).
 */
#ifndef __VIRTCMD_LATENCY_H
#define __VIRTCMD_LATENCY_H

#include "sonde.h"

/* Key of `hist` (value: __u64 commands, per CPU): sonde's log2 slot of the latency in ns. */
struct hist_key {
	__u32 slot;	/* [log2 slot of ns] slot i counts commands in (2^(i-1), 2^i] ns */
};

/* Key of `counts` (value: __u64 commands, per CPU). */
struct virtcmd_key {
	sonde_netns netns;	/* of the task that sent it */
	__u8 class;		/* [none] VIRTIO_NET_CTRL_* class (RX, MAC, VLAN, MQ, ...) */
	__u8 cmd;		/* [none] command within the class */
	__u8 slow;		/* [none] 1: latency over threshold_ns */
	__u8 pad;	/* [none] padding, always 0 */
};

/* One command slower than threshold_ns, in the ring buffer `events`. */
struct virtcmd_event {
	sonde_ktime ts;
	__u64 latency_ns;	/* [ns] virtnet_send_command call -> return */
	sonde_netns netns;	/* of the task that sent it */
	__u32 pid;	/* [none] the task that sent it */
	__u8 class;	/* [none] VIRTIO_NET_CTRL_* class */
	__u8 cmd;	/* [none] command within the class */
	__u8 ok;		/* [none] what virtnet_send_command returned */
	__u8 pad;	/* [none] padding, always 0 */
	char comm[16];
};

#endif /* __VIRTCMD_LATENCY_H */
