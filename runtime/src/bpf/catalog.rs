//! The built-in kernel library: every program, its embedded object, its variants.
//!
//! A variant is one way of hooking the kernel: a list of (program, hook) pairs and
//! the kernel facts it needs. The loader takes the first variant whose hooks exist
//! here and records why the earlier ones were skipped, so `sonde probes` can say it.
//!
//! Adding a program: build `kernel-progs/src/<name>.bpf.c` into
//! `kernel-progs/obj/x86/<name>.bpf.o`, then add a [`ProgramSpec`] below and its
//! sources to [`crate::bpf::reference`] (the units of its fields).

/// A kernel fact a variant depends on.
#[derive(Debug, Clone, Copy)]
pub enum Require {
    /// The running kernel's BTF has this struct (a tracepoint record layout that
    /// arrived with a behaviour change, for example).
    KernelStruct(&'static str, &'static str),
    /// The running kernel's BTF lacks this struct.
    NoKernelStruct(&'static str, &'static str),
}

/// Where one program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A raw tracepoint (`raw_tp/<name>`): the tracepoint's arguments as they are,
    /// without the perf record the classic tracepoint fills; cheaper per event.
    RawTracepoint {
        name: &'static str,
    },
    /// A BTF-enabled raw tracepoint (`tp_btf/<name>`): as a raw tracepoint, with
    /// arguments the verifier knows the kernel types of, so the program reads their
    /// fields with plain loads instead of a probe-read helper call each. Needs the
    /// kernel's own BTF (`/sys/kernel/btf/vmlinux`): the kernel checks the program
    /// against it, so BTF from elsewhere (the embedded archive, an image) cannot stand
    /// in.
    BtfTracepoint {
        name: &'static str,
    },
    Kprobe {
        function: &'static str,
    },
    /// A kretprobe: runs when `function` returns.
    Kretprobe {
        function: &'static str,
    },
    /// Traffic control (clsact) on every interface matching the script's
    /// `interfaces` param, attached as interfaces appear: see [`crate::bpf::tc`].
    Tc {
        direction: TcDirection,
    },
}

/// The side of an interface a [`Hook::Tc`] program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDirection {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Program (function) name in the object.
    pub program: &'static str,
    pub hook: Hook,
}

#[derive(Debug)]
pub struct Variant {
    pub name: &'static str,
    /// What this variant covers, for `sonde probes`.
    pub summary: &'static str,
    pub attach: &'static [Attach],
    pub requires: &'static [Require],
    /// Knobs this variant forces, whatever the script asks.
    pub knobs: &'static [(&'static str, bool)],
}

#[derive(Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub object: &'static [u8],
    /// In order of preference.
    pub variants: &'static [Variant],
}

const fn tp(program: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach {
        program,
        hook: Hook::Tracepoint { category, name },
    }
}

const fn raw_tp(program: &'static str, name: &'static str) -> Attach {
    Attach {
        program,
        hook: Hook::RawTracepoint { name },
    }
}

const fn tp_btf(program: &'static str, name: &'static str) -> Attach {
    Attach {
        program,
        hook: Hook::BtfTracepoint { name },
    }
}

const fn kretp(program: &'static str, function: &'static str) -> Attach {
    Attach {
        program,
        hook: Hook::Kretprobe { function },
    }
}

const fn kp(program: &'static str, function: &'static str) -> Attach {
    Attach {
        program,
        hook: Hook::Kprobe { function },
    }
}

const fn tc(program: &'static str, direction: TcDirection) -> Attach {
    Attach {
        program,
        hook: Hook::Tc { direction },
    }
}

/// Kernel 6.10 ("tcp: add sk_rst_reason ...", "tcp: rstreason: ...") gave
/// `tcp_send_reset` its own record type and made it fire for resets sent with no
/// socket; its presence tells the two behaviours apart.
const TCP_SEND_RESET_RECORD: &str = "trace_event_raw_tcp_send_reset";

static TCP_RESET_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/tcp_reset.bpf.o");
static PACKET_LOSS_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/packet_loss.bpf.o");
static FLOW_OBJ: &[u8] = aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/flow.bpf.o");
static VIRTCMD_LATENCY_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/virtcmd_latency.bpf.o");
static SOFTIRQ_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/softirq.bpf.o");
static TCP_RETRANS_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/tcp_retrans.bpf.o");
static TCP_STATE_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/tcp_state.bpf.o");
static SOCKET_LATENCY_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/socket_latency.bpf.o");
static SOCK_PRESSURE_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/sock_pressure.bpf.o");
static BIO_LATENCY_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/bio_latency.bpf.o");
static NETIF_TXLAT_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/netif_txlat.bpf.o");
static KERNEL_LATENCY_OBJ: &[u8] =
    aya::include_bytes_aligned!("../../../kernel-progs/obj/x86/kernel_latency.bpf.o");

pub static PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "tcp_reset",
        summary: "TCP RST segments sent and received, with tuple, state, netns and kind",
        object: TCP_RESET_OBJ,
        variants: &[
            Variant {
                name: "tp_btf",
                summary: "BTF raw tracepoints tcp_send_reset (all kinds, kernel >= 6.10) + \
                          tcp_receive_reset",
                attach: &[
                    tp_btf("tpb_send_reset", "tcp_send_reset"),
                    tp_btf("tpb_receive_reset", "tcp_receive_reset"),
                ],
                requires: &[Require::KernelStruct(
                    TCP_SEND_RESET_RECORD,
                    "kernel < 6.10: tcp_send_reset misses resets sent with no socket",
                )],
                knobs: &[],
            },
            Variant {
                name: "tracepoint",
                summary: "tcp:tcp_send_reset (all kinds, kernel >= 6.10) + tcp:tcp_receive_reset",
                attach: &[
                    tp("tp_send_reset", "tcp", "tcp_send_reset"),
                    tp("tp_receive_reset", "tcp", "tcp_receive_reset"),
                ],
                requires: &[Require::KernelStruct(
                    TCP_SEND_RESET_RECORD,
                    "kernel < 6.10: tcp_send_reset misses resets sent with no socket",
                )],
                knobs: &[],
            },
            Variant {
                name: "kprobe",
                summary:
                    "kprobes tcp_v4/v6_send_reset, tcp_send_active_reset + tcp:tcp_receive_reset",
                attach: &[
                    kp("kp_v4_send_reset", "tcp_v4_send_reset"),
                    kp("kp_v6_send_reset", "tcp_v6_send_reset"),
                    kp("kp_active_reset", "tcp_send_active_reset"),
                    tp("tp_receive_reset", "tcp", "tcp_receive_reset"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tp_btf-legacy",
                summary: "BTF raw tracepoints tcp_send_reset + tcp_receive_reset; misses \
                          resets sent with no socket (NOSOCK)",
                attach: &[
                    tp_btf("tpb_send_reset", "tcp_send_reset"),
                    tp_btf("tpb_receive_reset", "tcp_receive_reset"),
                ],
                requires: &[Require::NoKernelStruct(
                    TCP_SEND_RESET_RECORD,
                    "kernel >= 6.10 uses the full tp_btf variant",
                )],
                knobs: &[],
            },
            Variant {
                name: "tracepoint-legacy",
                summary: "tcp:tcp_send_reset + tcp:tcp_receive_reset; misses resets sent with \
                          no socket (NOSOCK)",
                attach: &[
                    tp("tp_send_reset", "tcp", "tcp_send_reset"),
                    tp("tp_receive_reset", "tcp", "tcp_receive_reset"),
                ],
                requires: &[Require::NoKernelStruct(
                    TCP_SEND_RESET_RECORD,
                    "kernel >= 6.10 uses the full tracepoint variant",
                )],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "packet_loss",
        summary: "skb:kfree_skb drops counted in the kernel per netns, reason and protocol; \
                  optional per-drop events with tuple and stack",
        object: PACKET_LOSS_OBJ,
        variants: &[
            Variant {
                name: "tp_btf",
                summary: "BTF raw tracepoint kfree_skb",
                attach: &[tp_btf("tpb_kfree_skb", "kfree_skb")],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tracepoint",
                summary: "skb:kfree_skb",
                attach: &[tp("tp_kfree_skb", "skb", "kfree_skb")],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "softirq",
        summary: "softirq delay (raise -> entry) and run time (entry -> exit) per vector: \
                  log2 histograms and counts over slow_ns / very_slow_ns in the kernel, \
                  events with the cpu over slow_ns",
        object: SOFTIRQ_OBJ,
        variants: &[
            Variant {
                name: "raw_tracepoint",
                summary: "raw tracepoints softirq_raise, softirq_entry, softirq_exit",
                attach: &[
                    raw_tp("raw_softirq_raise", "softirq_raise"),
                    raw_tp("raw_softirq_entry", "softirq_entry"),
                    raw_tp("raw_softirq_exit", "softirq_exit"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tracepoint",
                summary: "irq:softirq_raise, irq:softirq_entry, irq:softirq_exit",
                attach: &[
                    tp("tp_softirq_raise", "irq", "softirq_raise"),
                    tp("tp_softirq_entry", "irq", "softirq_entry"),
                    tp("tp_softirq_exit", "irq", "softirq_exit"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "flow",
        summary: "bytes and packets per IPv4/IPv6 5-tuple and per pod and peer, from TC \
                  ingress/egress on the interfaces matching the `interfaces` param",
        object: FLOW_OBJ,
        variants: &[
            Variant {
                name: "tc",
                summary: "clsact ingress + egress; veth traffic counted for the pod behind \
                          the veth (reads the peer device: needs bpf_probe_read_kernel in TC \
                          programs, no kernel lockdown)",
                attach: &[
                    tc("tc_ingress", TcDirection::Ingress),
                    tc("tc_egress", TcDirection::Egress),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tc-host",
                summary: "clsact ingress + egress; every packet counted for the host (no pods, \
                          no peer pods)",
                attach: &[
                    tc("tc_ingress", TcDirection::Ingress),
                    tc("tc_egress", TcDirection::Egress),
                ],
                requires: &[],
                knobs: &[("pods", false)],
            },
        ],
    },
    ProgramSpec {
        name: "virtcmd_latency",
        summary: "virtio-net control command latency (virtnet_send_command): log2 histogram, \
                  counts over a threshold, events for slow commands",
        object: VIRTCMD_LATENCY_OBJ,
        variants: &[
            Variant {
                name: "kprobe",
                summary: "kprobe + kretprobe virtnet_send_command (virtio_net module loaded)",
                attach: &[
                    kp("kp_send_command", "virtnet_send_command"),
                    kretp("kretp_send_command", "virtnet_send_command"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "kprobe-reply",
                summary: "kprobe + kretprobe virtnet_send_command_reply (6.11+, where \
                          virtnet_send_command may be inlined)",
                attach: &[
                    kp("kp_send_command_reply", "virtnet_send_command_reply"),
                    kretp("kretp_send_command_reply", "virtnet_send_command_reply"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "tcp_retrans",
        summary: "TCP retransmitted segments counted in the kernel per netns, family and state \
                  (SYN-ACKs included); optional per-retransmission events with tuple and stack",
        object: TCP_RETRANS_OBJ,
        variants: &[
            Variant {
                name: "tp_btf",
                summary: "BTF raw tracepoints tcp_retransmit_skb + tcp_retransmit_synack",
                attach: &[
                    tp_btf("tpb_retransmit_skb", "tcp_retransmit_skb"),
                    tp_btf("tpb_retransmit_synack", "tcp_retransmit_synack"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tracepoint",
                summary: "tcp:tcp_retransmit_skb + tcp:tcp_retransmit_synack",
                attach: &[
                    tp("tp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
                    tp("tp_retransmit_synack", "tcp", "tcp_retransmit_synack"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "tcp_state",
        summary: "TCP state changes: transitions, failed connects by reason, connection \
                  lifetimes per netns; optional per-failure events",
        object: TCP_STATE_OBJ,
        variants: &[Variant {
            name: "raw_tracepoint",
            summary: "raw tracepoint sock:inet_sock_set_state",
            attach: &[raw_tp("tp_set_state", "inet_sock_set_state")],
            requires: &[],
            knobs: &[],
        }],
    },
    ProgramSpec {
        name: "socket_latency",
        summary: "time data waits on TCP/UDP sockets before the application reads it, and TCP \
                  send call duration: log2 histograms and counts over 1 ms / 100 ms per netns; \
                  events over the threshold with tuple and task",
        object: SOCKET_LATENCY_OBJ,
        variants: &[
            Variant {
                name: "tracepoint",
                summary: "raw tracepoints sk_data_ready, sock_recv_length, tcp_sendmsg_locked, \
                          sock_send_length, inet_sock_set_state (6.11+): read and write sides",
                attach: &[
                    raw_tp("rtp_data_ready", "sk_data_ready"),
                    raw_tp("rtp_recv_length", "sock_recv_length"),
                    raw_tp("rtp_set_state", "inet_sock_set_state"),
                    raw_tp("rtp_sendmsg_locked", "tcp_sendmsg_locked"),
                    raw_tp("rtp_send_length", "sock_send_length"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tracepoint-read",
                summary: "raw tracepoints sk_data_ready, sock_recv_length, inet_sock_set_state \
                          (6.6 to 6.10): read side only, no tcp_sendmsg_locked",
                attach: &[
                    raw_tp("rtp_data_ready", "sk_data_ready"),
                    raw_tp("rtp_recv_length", "sock_recv_length"),
                    raw_tp("rtp_set_state", "inet_sock_set_state"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "kprobe",
                summary: "kprobes sock_def_readable, tcp_cleanup_rbuf, skb_consume_udp, \
                          tcp_sendmsg (+ kretprobe) and raw tracepoint inet_sock_set_state \
                          (kernels before 6.6: 5.10, 6.1)",
                attach: &[
                    kp("kp_def_readable", "sock_def_readable"),
                    kp("kp_cleanup_rbuf", "tcp_cleanup_rbuf"),
                    kp("kp_consume_udp", "skb_consume_udp"),
                    raw_tp("rtp_set_state", "inet_sock_set_state"),
                    kp("kp_tcp_sendmsg", "tcp_sendmsg"),
                    kretp("kretp_tcp_sendmsg", "tcp_sendmsg"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "sock_pressure",
        summary: "data refused by sockets for lack of buffer space (receive queue full, \
                  protocol memory limit, UDP receive buffer errors) counted in the kernel per \
                  netns, kind and protocol; optional per-refusal events",
        object: SOCK_PRESSURE_OBJ,
        variants: &[Variant {
            name: "raw_tracepoint",
            summary: "raw tracepoints sock_rcvqueue_full, sock_exceed_buf_limit, \
                      udp_fail_queue_rcv_skb",
            attach: &[
                raw_tp("rtp_rcvqueue_full", "sock_rcvqueue_full"),
                raw_tp("rtp_exceed_buf_limit", "sock_exceed_buf_limit"),
                raw_tp("rtp_udp_fail_queue", "udp_fail_queue_rcv_skb"),
            ],
            requires: &[],
            knobs: &[],
        }],
    },
    ProgramSpec {
        name: "bio_latency",
        summary: "block request latency (issue -> complete) per disk and operation: log2 \
                  histograms, totals and per-pod counts in the kernel, events over slow_ns \
                  with disk, op, bytes and the issuing task",
        object: BIO_LATENCY_OBJ,
        variants: &[Variant {
            name: "raw_tracepoint",
            summary: "raw tracepoints block_rq_issue, block_rq_complete (the request pointer)",
            attach: &[
                raw_tp("raw_rq_issue", "block_rq_issue"),
                raw_tp("raw_rq_complete", "block_rq_complete"),
            ],
            requires: &[],
            knobs: &[],
        }],
    },
    ProgramSpec {
        name: "netif_txlat",
        summary: "transmit time in the qdisc (net_dev_queue -> net_dev_start_xmit) and in the \
                  driver (-> net_dev_xmit) per interface and netns: log2 histograms and counts \
                  over threshold_ms in the kernel, events for slow packets",
        object: NETIF_TXLAT_OBJ,
        variants: &[
            Variant {
                name: "raw_tracepoint",
                summary: "raw tracepoints net_dev_queue, net_dev_start_xmit, net_dev_xmit",
                attach: &[
                    raw_tp("rtp_net_dev_queue", "net_dev_queue"),
                    raw_tp("rtp_net_dev_start_xmit", "net_dev_start_xmit"),
                    raw_tp("rtp_net_dev_xmit", "net_dev_xmit"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "tracepoint",
                summary: "net:net_dev_queue, net:net_dev_start_xmit, net:net_dev_xmit; a \
                          stacked device (vlan, bond) loses its own driver time",
                attach: &[
                    tp("tp_net_dev_queue", "net", "net_dev_queue"),
                    tp("tp_net_dev_start_xmit", "net", "net_dev_start_xmit"),
                    tp("tp_net_dev_xmit", "net", "net_dev_xmit"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
    ProgramSpec {
        name: "kernel_latency",
        summary: "time packets take through the kernel stack per pod and direction: log2 \
                  histograms and counts over threshold_ms in the kernel, events with tuple and \
                  stage times for slow packets",
        object: KERNEL_LATENCY_OBJ,
        variants: &[
            Variant {
                name: "tracepoint",
                summary: "raw tracepoints; RX: netif_receive_skb -> skb_copy_datagram_iovec \
                          (to the reader; tcp_probe splits stack and socket time), TX: TCP's \
                          departure stamp -> net_dev_queue (TCP only)",
                attach: &[
                    raw_tp("rtp_netif_receive_skb", "netif_receive_skb"),
                    raw_tp("rtp_tcp_probe", "tcp_probe"),
                    raw_tp("rtp_skb_copy_datagram_iovec", "skb_copy_datagram_iovec"),
                    raw_tp("rtp_net_dev_queue", "net_dev_queue"),
                ],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "kprobe",
                summary: "kprobes along the IP layer; RX: ip_rcv/ipv6_rcv -> \
                          ip_local_deliver_finish/ip6_input_finish, TX: __ip_queue_xmit, \
                          ip_send_skb, ip6_xmit, ip6_send_skb -> ip(6)_finish_output2",
                attach: &[
                    kp("kp_ip_rcv", "ip_rcv"),
                    kp("kp_ipv6_rcv", "ipv6_rcv"),
                    kp("kp_ip_local_deliver", "ip_local_deliver"),
                    kp("kp_ip6_input", "ip6_input"),
                    kp("kp_ip_local_deliver_finish", "ip_local_deliver_finish"),
                    kp("kp_ip6_input_finish", "ip6_input_finish"),
                    kp("kp_ip_forward", "ip_forward"),
                    kp("kp_ip6_forward", "ip6_forward"),
                    kp("kp___ip_queue_xmit", "__ip_queue_xmit"),
                    kp("kp_ip_send_skb", "ip_send_skb"),
                    kp("kp_ip6_xmit", "ip6_xmit"),
                    kp("kp_ip6_send_skb", "ip6_send_skb"),
                    kp("kp_ip_output", "ip_output"),
                    kp("kp_ip6_output", "ip6_output"),
                    kp("kp_ip_finish_output2", "ip_finish_output2"),
                    kp("kp_ip6_finish_output2", "ip6_finish_output2"),
                ],
                requires: &[],
                knobs: &[],
            },
        ],
    },
];

/// Looks a program up by name.
pub fn find(name: &str) -> Option<&'static ProgramSpec> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// Names of all programs, for error messages.
pub fn names() -> Vec<&'static str> {
    PROGRAMS.iter().map(|p| p.name).collect()
}

/// Every field name (and `pod` key) of every record the built-in programs send,
/// computed once.
pub fn record_field_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = std::collections::BTreeSet::new();
        for spec in PROGRAMS {
            let Ok(types) = crate::bpf::decode::ObjectTypes::parse(spec.object) else {
                continue;
            };
            for map in types.record_maps() {
                if let Ok(d) = types.record_decoder(&map) {
                    names.extend(d.layout().into_iter().map(|(n, _, _)| n));
                    names.extend(d.pod_keys());
                }
            }
        }
        names.into_iter().collect()
    })
}
