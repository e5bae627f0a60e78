//! Series per pod network namespace, every built-in as the embedded config runs them:
//! a pod namespace with a veth `eth0` to the host and loopback, a TCP server with
//! connections, refused connects and UDP to a closed port in it. With the default
//! `metrics.pod_detail: core` the pod gets at most [`CORE_BUDGET`] series on
//! `/metrics` (Prometheus text); with `pod_detail: all` it gets everything the
//! scripts export, the detail families too. The count per family is printed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use sonde_tests::daemon::Daemon;
use sonde_tests::{ip, require_root, NamedNetns};

/// The most series a pod gets by default.
const CORE_BUDGET: usize = 50;

/// The built-in scripts of the embedded configuration (`packaging/config.yaml`:
/// every one, unless it lists some).
fn builtins() -> Vec<String> {
    sonde::daemon::config::Config::embedded().scripts.builtin
}

/// A pod: a held namespace `name`, a veth `eth0` (10.78.0.2) to the host end `host`
/// (10.78.0.1), loopback up.
struct Pod {
    ns: NamedNetns,
    host: String,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let ns = NamedNetns::held(name);
        let host = format!("crd{}h", std::process::id() % 100_000);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &host])
            .output();
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", name,
        ]);
        ip(&["addr", "add", "10.78.0.1/24", "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&["-n", name, "addr", "add", "10.78.0.2/24", "dev", "eth0"]);
        ip(&["-n", name, "link", "set", "eth0", "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        sonde_tests::wait_up(name, "eth0");
        Pod { ns, host }
    }

    /// Traffic in the pod, from a thread in it: a server with 3 connections (data
    /// both ways, kept 25 s), 5 refused connects, 5 datagrams to a closed port.
    fn traffic(&self) -> std::thread::JoinHandle<()> {
        let path = format!("/run/netns/{}", self.ns.name);
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let l = TcpListener::bind("10.78.0.2:0").unwrap();
            let at = l.local_addr().unwrap();
            let mut kept = Vec::new();
            for _ in 0..3 {
                let mut c = TcpStream::connect(at).unwrap();
                let (mut s, _) = l.accept().unwrap();
                c.write_all(&[1u8; 4096]).unwrap();
                let mut buf = [0u8; 4096];
                s.read_exact(&mut buf).unwrap();
                s.write_all(b"ok").unwrap();
                kept.push((c, s));
            }
            for _ in 0..5 {
                assert!(TcpStream::connect("127.0.0.1:1").is_err());
            }
            let u = UdpSocket::bind("10.78.0.2:0").unwrap();
            for _ in 0..5 {
                let _ = u.send_to(b"x", "10.78.0.2:9");
            }
            // Established connections for the ticks to see.
            std::thread::sleep(Duration::from_secs(25));
            drop(kept);
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
    }
}

/// Series of the pod in Prometheus text, by family (bucket, sum and count series
/// under the histogram's name).
fn by_family(text: &str, pod: &str) -> BTreeMap<String, usize> {
    let label = format!("pod=\"{pod}\"");
    let mut out = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
    {
        let name = l.split('{').next().unwrap_or("");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *out.entry(family.to_string()).or_default() += 1;
    }
    out
}

/// Scrapes until the pod's series from the sources (netdev, tcpsummary) and from
/// the kernel programs (tcp_reset, tcp_state) are all there, then once more after
/// the kernel scripts' next tick.
fn settled(d: &Daemon, pod: &str) -> String {
    let want = [
        "sonde_netdev_receive_bytes_total",
        "sonde_tcpsummary_sockets",
        "sonde_tcp_reset_segments_total",
        "sonde_tcp_state_connect_failures_total",
    ];
    let label = format!("pod=\"{pod}\"");
    let missing = |m: &str| -> Vec<&str> {
        want.iter()
            .copied()
            .filter(|w| {
                !m.lines()
                    .any(|l| l.starts_with(&format!("{w}{{")) && l.contains(&label))
            })
            .collect()
    };
    let mut m = String::new();
    for _ in 0..100 {
        m = d.metrics();
        if missing(&m).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing(&m).is_empty(),
        "{:?} missing for {pod}:\n{m}",
        missing(&m)
    );
    std::thread::sleep(Duration::from_secs(6));
    d.metrics()
}

#[test]
fn a_pod_gets_at_most_50_series_by_default_and_everything_with_pod_detail_all() {
    if !require_root("a_pod_gets_at_most_50_series_by_default_and_everything_with_pod_detail_all") {
        return;
    }
    let name = format!("crd{}", std::process::id() % 100_000);
    let pod = Pod::new(&name);
    let builtins = builtins();
    let builtins: Vec<&str> = builtins.iter().map(String::as_str).collect();

    let d = Daemon::start("cardinality-core", &builtins, "");
    let load = pod.traffic();
    let core_text = settled(&d, &name);
    drop(d);
    let core = by_family(&core_text, &name);
    let core_n: usize = core.values().sum();

    let d = Daemon::start(
        "cardinality-all",
        &builtins,
        "metrics:\n  pod_detail: all\n",
    );
    let load2 = pod.traffic();
    let all_text = settled(&d, &name);
    drop(d);
    let all = by_family(&all_text, &name);
    let all_n: usize = all.values().sum();
    let _ = load.join();
    let _ = load2.join();

    eprintln!("series of one pod namespace (lo + eth0), Prometheus text:");
    eprintln!("  pod_detail core: {core_n}: {core:?}");
    eprintln!("  pod_detail all:  {all_n}: {all:?}");
    assert!(
        core_n <= CORE_BUDGET,
        "{core_n} series for the pod by default, over {CORE_BUDGET}: {core:#?}"
    );
    // What an SRE looks at first is in the core set.
    for family in [
        "sonde_netdev_receive_bytes_total",
        "sonde_netdev_transmit_dropped_total",
        "sonde_tcp_reset_segments_total",
        "sonde_tcpsummary_sockets",
        "sonde_snmp_tcp_active_opens_total",
        "sonde_tcpext_listen_overflows_total",
        "sonde_sock_tcp_mem_bytes",
        "sonde_tcp_state_connect_failures_total",
    ] {
        assert!(
            core.contains_key(family),
            "{family} in the core set: {core:#?}"
        );
    }
    // Detail families are there with pod_detail: all, not by default.
    for family in [
        "sonde_snmp_ip_in_receives_total",
        "sonde_tcpext_tw_total",
        "sonde_io_read_bytes_total",
        "sonde_tcp_state_transitions_total",
    ] {
        assert!(!core.contains_key(family), "{family} is detail: {core:#?}");
        assert!(
            all.contains_key(family),
            "{family} with pod_detail all: {all:#?}"
        );
    }
    assert!(all_n > 3 * core_n, "all {all_n}, core {core_n}");
    // The host keeps every family: its series do not depend on pod_detail.
    let host = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("sonde_snmp_") && l.contains("pod=\"\""))
            .count()
    };
    assert_eq!(host(&core_text), host(&all_text));
    assert!(host(&core_text) > 40, "{}", host(&core_text));
}
