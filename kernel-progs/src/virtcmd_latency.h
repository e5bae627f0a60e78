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
	__u32 slot;
};

/* Key of `counts` (value: __u64 commands, per CPU). */
struct virtcmd_key {
	sonde_netns netns;	/* of the task that sent it */
	__u8 class;		/* VIRTIO_NET_CTRL_* class (RX, MAC, VLAN, MQ, ...) */
	__u8 cmd;		/* command within the class */
	__u8 slow;		/* 1: latency over threshold_ns */
	__u8 pad;
};

/* One command slower than threshold_ns, in the ring buffer `events`. */
struct virtcmd_event {
	sonde_ktime ts;
	__u64 latency_ns;
	sonde_netns netns;	/* of the task that sent it */
	__u32 pid;
	__u8 class;
	__u8 cmd;
	__u8 ok;		/* what virtnet_send_command returned */
	__u8 pad;
	char comm[16];
};

#endif /* __VIRTCMD_LATENCY_H */
