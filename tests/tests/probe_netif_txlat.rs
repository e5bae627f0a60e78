//! netif_txlat against the real kernel (root): two network namespaces joined by a
//! veth pair, a token bucket (`tbf`, 100 kbit/s) on the sender's end so packets wait
//! in the qdisc for a known time, and a known number of datagrams sent through it.
//!
//! - the script, run as a user runs it: qdisc-time histogram of that interface in
//!   the large buckets, slow counter and TXLAT_QDISC_SLOW events with the interface
//!   name (as named inside its namespace) and the tuple, driver time small;
//! - the kernel maps, loaded directly, for each variant: one qdisc and one driver
//!   sample per packet the hooks saw (see [`HOOK_MISSES`]), and no per-skb entry left
//!   once the queue drained.
//!
//! Only the namespaces the test makes are looked at; IPv6 is off and the neighbour
//! is static on the test link, so the datagrams are the only packets on it.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use rhai::Map;
use sonde::script::ParamValue;
use sonde_tests::kernel::{entries, int, load, s};
use sonde_tests::run::{finish, start};
use sonde_tests::veth::NamedPair;
use sonde_tests::{ip, require_root, wait_up};

/// Datagram payload: 1000 bytes + 8 UDP + 20 IP + 14 Ethernet = 1042 bytes on the wire,
/// 83 ms each at 100 kbit/s.
const PAYLOAD: usize = 1000;
const SENDER: &str = "198.18.7.1";
const RECEIVER: &str = "198.18.7.2";
const PORT: u16 = 9;

/// Two namespaces `<tag>a`/`<tag>b`, a veth pair `<tag>a`/`<tag>b` between them, a
/// slow tbf on the sender's end. Removed on drop.
struct Link {
    a: String,
    b: String,
    dev: String,
    inode: u32,
    /// Deletes both namespaces when the link is dropped.
    _pair: NamedPair,
}

impl Link {
    fn new(tag: &str) -> Link {
        let pair = NamedPair::new(tag, "02:00:00:00:07");
        for ns in [&pair.a, &pair.b] {
            let sysctl = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
                .arg("net.ipv6.conf.all.disable_ipv6=1")
                .arg("net.ipv6.conf.default.disable_ipv6=1")
                .status()
                .unwrap();
            assert!(sysctl.success());
        }
        let link = Link {
            dev: pair.a.clone(),
            inode: pair.inode_a,
            a: pair.a.clone(),
            b: pair.b.clone(),
            _pair: pair,
        };
        let (a, b) = (&link.a, &link.b);
        ip(&["-n", a, "addr", "add", &format!("{SENDER}/24"), "dev", a]);
        ip(&["-n", b, "addr", "add", &format!("{RECEIVER}/24"), "dev", b]);
        ip(&[
            "-n",
            a,
            "neigh",
            "add",
            RECEIVER,
            "lladdr",
            "02:00:00:00:07:02",
            "dev",
            a,
            "nud",
            "permanent",
        ]);
        // The receiver answers each datagram with an ICMP port unreachable: a static
        // entry there too, or the sender's link would carry its ARP reply.
        ip(&[
            "-n",
            b,
            "neigh",
            "add",
            SENDER,
            "lladdr",
            "02:00:00:00:07:01",
            "dev",
            b,
            "nud",
            "permanent",
        ]);
        ip(&["-n", a, "link", "set", a, "up"]);
        ip(&["-n", b, "link", "set", b, "up"]);
        wait_up(a, a);
        wait_up(b, b);
        let tc = Command::new("ip")
            .args(["netns", "exec", a, "tc", "qdisc", "add", "dev", a, "root"])
            .args(["tbf", "rate", "100kbit", "burst", "1600", "latency", "5s"])
            .output()
            .unwrap();
        assert!(
            tc.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&tc.stderr)
        );
        link
    }

    /// Sends `n` datagrams from the sender's namespace to the receiver.
    fn send(&self, n: usize) {
        let path = format!("/run/netns/{}", self.a);
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = UdpSocket::bind((SENDER, 0)).unwrap();
            for _ in 0..n {
                sock.send_to(&[7u8; PAYLOAD], (RECEIVER, PORT)).unwrap();
            }
        })
        .join()
        .unwrap();
    }
}

/// One histogram of the run summary: `(upper bound in raw units, count)` per bucket
/// row under the header line that contains every one of `parts`.
fn summary_hist(out: &str, parts: &[&str]) -> Vec<(f64, u64)> {
    let mut lines = out.lines();
    lines
        .by_ref()
        .find(|l| l.contains(" count ") && parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no histogram with {parts:?} in:\n{out}"));
    let mut rows = Vec::new();
    for l in lines {
        let Some(rest) = l.strip_prefix("  ") else {
            break;
        };
        if !rest.starts_with('(') && !rest.starts_with('[') {
            break;
        }
        let close = rest.find(']').unwrap();
        let upper = rest[..close].rsplit(", ").next().unwrap().trim();
        let (num, mult) = match upper.chars().last().unwrap() {
            'K' => (&upper[..upper.len() - 1], 1024f64),
            'M' => (&upper[..upper.len() - 1], 1024f64 * 1024.0),
            'G' => (&upper[..upper.len() - 1], 1024f64 * 1024.0 * 1024.0),
            _ => (upper, 1f64),
        };
        let count = rest[close + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        rows.push((num.parse::<f64>().unwrap() * mult, count));
    }
    rows
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Packets the tracepoints may not report, per run. On this kernel (6.18), about one
/// packet in 200 through the tbf reaches neither net_dev_start_xmit nor net_dev_xmit
/// program although the qdisc counts it as sent (`tc -s qdisc`: "Sent 12 pkt"):
/// measured with `kernel.bpf_stats_enabled=1`, both programs' `run_cnt` is one short
/// and `recursion_misses` stays 0, with the programs loaded directly as with
/// `sonde run`. What the hooks do see must be exact: both stages count the same
/// packets, each once, and nothing is left in `skbs`.
const HOOK_MISSES: u64 = 1;

#[test]
fn netif_txlat_script_reports_qdisc_time_of_a_slow_tbf() {
    if !require_root("netif_txlat_script_reports_qdisc_time_of_a_slow_tbf") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let link = Link::new("txs");
    let run = start(&[
        "run",
        "scripts/netif_txlat.rhai",
        "--for",
        "4s",
        "-p",
        "threshold_ms=50",
    ]);
    // 12 packets: the first leaves at once (the bucket holds one), each next one waits
    // 83 ms more than the one before: the second one only the 39 ms the bucket lacks, so 10 wait over 50 ms, the last ~0.9 s.
    link.send(12);
    let (out, _) = finish(run);
    // `sonde run` names an `ip netns` namespace by its name, as the daemon does.
    let pod = format!("pod={}", link.a);
    let iface = format!("interface={}", link.dev);

    let qdisc = summary_hist(&out, &["netif_txlat_qdisc_seconds", &pod, &iface]);
    let seen: u64 = qdisc.iter().map(|(_, c)| c).sum();
    let missed = 12 - seen.min(12);
    assert!(
        seen <= 12 && missed <= HOOK_MISSES,
        "one qdisc sample per packet: {qdisc:?}\n{out}"
    );
    let over_64m: u64 = qdisc
        .iter()
        .filter(|(hi, _)| *hi > 64.0 * 1024.0 * 1024.0)
        .map(|(_, c)| c)
        .sum();
    assert!(
        over_64m >= 10 - missed,
        "qdisc times in the (64M, ...] ns buckets: {qdisc:?}"
    );
    let driver = summary_hist(&out, &["netif_txlat_driver_seconds", &pod, &iface]);
    assert_eq!(
        driver.iter().map(|(_, c)| c).sum::<u64>(),
        seen,
        "the driver stage counts the packets the qdisc stage counted: {out}"
    );
    let worst_driver = driver
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(hi, _)| *hi)
        .fold(0.0, f64::max);
    assert!(
        worst_driver <= 16.0 * 1024.0 * 1024.0,
        "veth driver time stays small: {driver:?}"
    );

    let slow = |stage: &str| {
        sonde_tests::run::summary_row(&out, &[&pod, &iface, &format!("stage={stage}}}")])
    };
    let slow_qdisc = slow("qdisc");
    assert!(
        slow_qdisc <= 10 && slow_qdisc + missed >= 10,
        "{slow_qdisc} slow: {out}"
    );
    assert_eq!(slow("driver"), 0, "{out}");

    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=TXLAT_QDISC_SLOW") && l.contains(&pod))
        .collect();
    assert_eq!(
        events.len() as u64,
        slow_qdisc,
        "one event per slow packet: {out}"
    );
    for e in &events {
        assert!(e.contains(&iface), "{e}");
        assert!(
            e.contains(&format!("protocol=UDP saddr={SENDER} sport=",))
                && e.contains(&format!("daddr={RECEIVER} dport={PORT}")),
            "{e}"
        );
        assert!(e.contains("len=1042"), "{e}");
        let ns: u64 = e
            .split_whitespace()
            .find_map(|f| f.strip_prefix("latency_ns="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(ns > 50_000_000 && ns < 3_000_000_000, "{e}");
    }
    assert!(
        !out.lines()
            .any(|l| l.starts_with("type=TXLAT_NETDEV_SLOW") && l.contains(&pod)),
        "{out}"
    );
}

fn exact_counts_and_no_leak(variant: &str, tag: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut loaded, env) = load(
        "netif_txlat",
        &[
            ("threshold_ms", ParamValue::Int(50)),
            ("variant", ParamValue::Str(variant.into())),
        ],
    );
    assert_eq!(loaded.variant.name, variant);
    let link = Link::new(tag);
    link.send(6);
    // 6 packets at 83 ms each: the queue is empty after ~0.5 s.
    std::thread::sleep(Duration::from_millis(1200));

    let ours = |k: &Map| int(k, "netns") == link.inode as i64 && s(k, "ifname") == link.dev;
    let mut per_stage = std::collections::BTreeMap::<String, i64>::new();
    let mut slow_slots = 0;
    for (k, v) in entries(&loaded, "hist").iter().filter(|(k, _)| ours(k)) {
        let n = v.as_int().unwrap();
        *per_stage.entry(s(k, "stage")).or_default() += n;
        if s(k, "stage") == "QDISC" && int(k, "slot") >= 26 {
            slow_slots += n; // slot 26 = (32 ms, 64 ms]
        }
        assert!(
            s(k, "stage") == "QDISC" || int(k, "slot") <= 24,
            "driver time over 16 ms: {k:?}"
        );
    }
    let seen = per_stage.get("QDISC").copied().unwrap_or(0);
    let missed = 6 - seen.min(6);
    assert!(
        seen <= 6 && missed as u64 <= HOOK_MISSES,
        "one sample per packet: {per_stage:?}"
    );
    assert_eq!(per_stage.get("DRIVER"), Some(&seen), "{per_stage:?}");
    assert!(
        slow_slots >= 5 - missed,
        "qdisc waits of 83 ms and more: {slow_slots}"
    );
    let mut slow_total = 0;
    let totals: Vec<_> = entries(&loaded, "totals")
        .into_iter()
        .filter(|(k, _)| ours(k))
        .collect();
    for (k, v) in &totals {
        let v = v.clone().cast::<Map>();
        let (sum, slow) = (int(&v, "sum_ns"), int(&v, "slow"));
        if s(k, "stage") == "QDISC" {
            // Waits: 0 (the bucket holds one packet), 39 ms (the tokens it lacks for
            // the second), then 83 ms (1042 bytes at 100 kbit/s) more for each next one:
            // 0 + 39 + 122 + 205 + 289 + 372 = 1027 ms, 4 over 50 ms.
            // A packet the hooks missed takes its wait (372 ms at most) out of the sum.
            assert!(slow <= 4 && slow + missed >= 4, "{v:?}");
            let low = if missed == 0 {
                950_000_000
            } else {
                600_000_000
            };
            assert!(sum > low && sum < 1_200_000_000, "{v:?}");
            slow_total = slow;
        } else {
            assert_eq!(slow, 0, "{v:?}");
        }
    }
    assert_eq!(totals.len(), 2, "{totals:?}");
    let leftover: Vec<_> = entries(&loaded, "skbs")
        .into_iter()
        .filter(|(_, v)| int(&v.clone().cast::<Map>(), "netns") == link.inode as i64)
        .collect();
    assert!(leftover.is_empty(), "per-skb entries left: {leftover:?}");

    let events: Vec<Map> =
        sonde_tests::kernel::ours(sonde_tests::kernel::drain(&mut loaded, &env), link.inode);
    assert_eq!(events.len() as i64, slow_total, "{events:#?}");
    for e in &events {
        assert_eq!(s(e, "stage"), "QDISC");
        assert_eq!(s(e, "ifname"), link.dev);
        assert_eq!(s(e, "saddr"), SENDER);
        assert_eq!(int(e, "dport"), PORT as i64);
        assert_eq!(int(e, "len"), 1042);
    }
}

#[test]
fn netif_txlat_raw_tracepoints_exact_and_no_leak() {
    if !require_root("netif_txlat_raw_tracepoints_exact_and_no_leak") {
        return;
    }
    exact_counts_and_no_leak("raw_tracepoint", "txr");
}

#[test]
fn netif_txlat_classic_tracepoints_exact_and_no_leak() {
    if !require_root("netif_txlat_classic_tracepoints_exact_and_no_leak") {
        return;
    }
    exact_counts_and_no_leak("tracepoint", "txc");
}
