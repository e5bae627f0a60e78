//! flow, for real (root): private network namespaces joined to the host by veth pairs
//! (the host side matches the `interfaces` pattern), TCP and UDP over IPv4 and IPv6 with
//! known payloads. Per-flow bytes and packets in the kernel must be exactly the payload
//! plus the headers of every packet; the script's per-pod series must say the same; a
//! veth created after start is attached within a couple of seconds; and after sonde
//! ends, no filter, TCX link or clsact qdisc of sonde is left on the interfaces.
//! Both attach modes run: TCX links and clsact/cls_bpf filters (what 5.10 and 6.1 use).

use std::time::{Duration, Instant};

use rhai::Map;
use sonde::script::ParamValue;
use sonde_tests::kernel::{int, load, s, struct_entries as entries};
use sonde_tests::require_root;
use sonde_tests::run::{finish, start, summary_row};
use sonde_tests::veth::{no_sonde_left, text, Pod};

/// Bytes and packets of one flow: the pod's packets to the host at the host veth.
fn flow(loaded: &sonde::bpf::Loaded, iface: &str, sport: u16, dport: u16, l4: &str) -> (i64, i64) {
    let found: Vec<(Map, Map)> = entries(loaded, "flows")
        .into_iter()
        .filter(|(k, _)| {
            s(k, "ifindex") == iface
                && int(k, "sport") == sport as i64
                && int(k, "dport") == dport as i64
                && s(k, "l4proto") == l4
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {l4} flow {sport}->{dport} on {iface}: {found:?}"
    );
    let (k, v) = &found[0];
    assert_eq!(s(k, "dir"), "TX", "the pod sent it: {k:?}");
    (int(v, "bytes"), int(v, "packets"))
}

fn kernel_counts_exact_bytes(mode: &str, tag: &str, n: u8) {
    let a = Pod::new(tag, n);
    let pattern = format!("sfl{tag}*");
    let (mut loaded, _env) = load(
        "flow",
        &[
            ("interfaces", ParamValue::Str(pattern.clone())),
            ("tc_mode", ParamValue::Str(mode.into())),
        ],
    );
    assert_eq!(loaded.variant.name, "tc");
    assert_eq!(loaded.tc_interfaces(), vec![a.host.clone()]);
    if mode == "netlink" {
        let f = text("tc", &["filter", "show", "dev", &a.host, "ingress"]);
        assert!(f.contains("tc_ingress"), "cls_bpf filter attached: {f}");
    } else {
        let tcx = sonde::bpf::tc::tcx_programs(&a.host);
        assert_eq!(tcx, ["tc_ingress", "tc_egress"], "TCX links attached");
    }

    // UDP: each datagram is Ethernet 14 + IP + UDP 8 + payload.
    let (sp, dp) = a.udp(a.v4, 7, 200);
    assert_eq!(
        flow(&loaded, &a.host, sp, dp, "UDP"),
        (7 * (14 + 20 + 8 + 200), 7)
    );
    let (sp, dp) = a.udp(a.v6, 5, 300);
    assert_eq!(
        flow(&loaded, &a.host, sp, dp, "UDP"),
        (5 * (14 + 40 + 8 + 300), 5)
    );

    // TCP: payload + 54 (v4) or 74 (v6) bytes of headers per packet, the SYN's MSS
    // option 4 more; segmentation offload must not hide packets.
    let payload = 300_000;
    for (pair, hdr) in [(a.v4, 54), (a.v6, 74)] {
        let (sp, dp) = a.tcp(pair, payload);
        let (bytes, packets) = flow(&loaded, &a.host, sp, dp, "TCP");
        assert!(packets as usize > payload / 1460, "{packets} packets");
        assert_eq!(
            bytes,
            payload as i64 + packets * hdr + 4,
            "TCP bytes = payload + headers ({packets} packets)"
        );
    }

    // The pod's series: its netns, TX, the host's address masked to /24 and /64.
    let peers = entries(&loaded, "peers");
    let mine: Vec<&(Map, Map)> = peers
        .iter()
        .filter(|(k, _)| int(k, "netns") == a.ns.inode as i64 && s(k, "dir") == "TX")
        .collect();
    let udp4 = mine
        .iter()
        .find(|(k, _)| s(k, "l4proto") == "UDP" && s(k, "peer") == format!("10.77.{n}.0"))
        .unwrap_or_else(|| panic!("UDP v4 peer entry in {mine:?}"));
    assert_eq!(int(&udp4.1, "bytes"), 7 * (14 + 20 + 8 + 200));
    assert_eq!(int(&udp4.0, "peer_known"), 0);
    let udp6 = mine
        .iter()
        .find(|(k, _)| s(k, "l4proto") == "UDP" && s(k, "peer") == format!("fd77:{n}::"))
        .unwrap_or_else(|| panic!("UDP v6 peer entry in {mine:?}"));
    assert_eq!(int(&udp6.1, "packets"), 5);
    let pod = udp6.0["pod"].clone().cast::<Map>();
    assert_eq!(s(&pod, "name"), format!("netns:{}", a.ns.inode));

    // A pod created now is attached within a couple of seconds.
    let b = Pod::new(&format!("{tag}b"), n + 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !loaded.tc_interfaces().contains(&b.host) {
        assert!(
            Instant::now() < deadline,
            "{} not attached after 3s: {:?}",
            b.host,
            loaded.tc_interfaces()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sp, dp) = b.udp(b.v4, 3, 100);
    assert_eq!(
        flow(&loaded, &b.host, sp, dp, "UDP"),
        (3 * (14 + 20 + 8 + 100), 3)
    );

    let _ = sonde_tests::kernel::drain(&mut loaded, &_env);
    drop(loaded);
    no_sonde_left(&a.host);
    no_sonde_left(&b.host);
}

#[test]
fn flow_kernel_counts_tcx() {
    if !require_root("flow_kernel_counts_tcx") {
        return;
    }
    if !sonde::bpf::kernel_at_least(6, 6) {
        sonde_tests::cannot_run("flow_kernel_counts_tcx", "TCX needs kernel 6.6+");
        return;
    }
    kernel_counts_exact_bytes("tcx", "x", 11);
}

#[test]
fn flow_kernel_counts_netlink() {
    if !require_root("flow_kernel_counts_netlink") {
        return;
    }
    kernel_counts_exact_bytes("netlink", "n", 21);
}

/// The script as a user runs it: per-pod series with exact bytes, the peer as a subnet.
#[test]
fn flow_script_exports_pod_series() {
    if !require_root("flow_script_exports_pod_series") {
        return;
    }
    let a = Pod::new("s", 31);
    let pattern = format!("interfaces=nothing*,{}", a.host);
    let run = start(&[
        "run",
        "scripts/flow.rhai",
        "--for",
        "3s",
        "-p",
        &pattern,
        "-p",
        "peer=subnet",
        "-p",
        "large_flow_bytes=1000",
    ]);
    a.udp(a.v4, 4, 500);
    a.udp(a.v6, 2, 1000);
    let (out, err) = finish(run);
    let pod = format!("pod=netns:{}", a.ns.inode);
    let (bytes, packets) = out
        .split_once("sonde_flow_packets_total")
        .unwrap_or_else(|| panic!("no packets family in:\n{out}\n{err}"));
    let v4 = [
        pod.as_str(),
        "direction=tx",
        "protocol=UDP",
        "peer=10.77.31.0/24",
    ];
    let v6 = [
        pod.as_str(),
        "direction=tx",
        "protocol=UDP",
        "peer=fd77:31::/64",
    ];
    assert_eq!(summary_row(bytes, &v4), 4 * (14 + 20 + 8 + 500), "{out}");
    assert_eq!(summary_row(packets, &v4), 4, "{out}");
    assert_eq!(summary_row(bytes, &v6), 2 * (14 + 40 + 8 + 1000), "{out}");
    assert_eq!(summary_row(packets, &v6), 2, "{out}");
    // The flows that crossed 1000 bytes, once each.
    let large: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=FLOW_LARGE") && l.contains("protocol=UDP"))
        .collect();
    assert_eq!(large.len(), 2, "{out}");
    assert!(
        large
            .iter()
            .all(|l| l.contains(&pod) && l.contains(&format!("interface={}", a.host))),
        "{large:?}"
    );
    no_sonde_left(&a.host);
}
