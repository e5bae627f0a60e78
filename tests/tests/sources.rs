//! The procfs and netlink sources against the standard tools, at the same moment, in
//! the host network namespace and in a test namespace (`ip netns add` + `ip netns
//! exec`).
//!
//! Counters are checked as "tool, sonde, tool again": sonde's value must lie
//! between the two tool readings, whatever traffic flowed meanwhile. Gauges (socket
//! counts) are read the same way and must equal the tool's reading when both tool
//! readings agree (retried a few times on the busy host).
//!
//! Needs root, iproute2 (`ip`, `ss`, `nstat`, `tc`), `conntrack` and
//! `prometheus-node-exporter`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use sonde::sources::{netlink, netns_list_within, procfs, Netns};
use sonde_tests::require_root;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a tool in `netns` (`ip netns exec`), or on the host when `None`.
fn tool(netns: Option<&str>, args: &[&str]) -> String {
    match netns {
        Some(n) => {
            let mut a = vec!["ip", "netns", "exec", n];
            a.extend_from_slice(args);
            sh(&a)
        }
        None => sh(args),
    }
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A named network namespace with a process in it, and traffic on its loopback;
/// removed on drop.
struct TestNs {
    ns: sonde_tests::NamedNetns,
    inode: u64,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let name = format!("sonde-src-{tag}-{}", std::process::id());
        let ns = sonde_tests::NamedNetns::held(&name);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let inode = ns.inode();
        // Wait until the holder runs inside the namespace.
        for _ in 0..100 {
            if netns_list_within(std::time::Duration::ZERO)
                .iter()
                .any(|n| n.inode == inode && n.pid != 0)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TestNs { ns, inode }
    }

    fn netns(&self) -> Netns {
        netns_list_within(std::time::Duration::ZERO)
            .iter()
            .find(|n| n.inode == self.inode)
            .cloned()
            .expect("test namespace listed")
    }

    /// Runs `f` on a thread inside the namespace (sockets made there live there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            // SAFETY: a namespace fd; only this thread changes namespace.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }
}

fn host() -> Netns {
    let own = Netns::own_inode();
    netns_list_within(std::time::Duration::ZERO)
        .iter()
        .find(|n| n.inode == own)
        .cloned()
        .unwrap()
}

/// Some UDP traffic over loopback in the namespace the thread is in.
fn udp_traffic(n: usize) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..n {
        a.send_to(&[7u8; 300], b.local_addr().unwrap()).unwrap();
    }
    // One to a closed port: Udp NoPorts, an ICMP unreachable.
    let _ = a.send_to(b"x", "127.0.0.1:9");
}

#[track_caller]
fn between(what: &str, lo: u64, v: u64, hi: u64) {
    assert!(
        lo <= v && v <= hi,
        "{what}: sonde {v} not within the tool's [{lo}, {hi}]"
    );
}

fn ip_link_stats(netns: Option<&str>) -> BTreeMap<String, [u64; 4]> {
    let v: Value = serde_json::from_str(&tool(netns, &["ip", "-j", "-s", "link"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = &l["stats64"];
            let g = |d: &str, k: &str| s[d][k].as_u64().unwrap();
            (
                l["ifname"].as_str().unwrap().to_string(),
                [
                    g("rx", "bytes"),
                    g("rx", "packets"),
                    g("tx", "bytes"),
                    g("tx", "packets"),
                ],
            )
        })
        .collect()
}

fn check_netdev(ns: &Netns, netns: Option<&str>) {
    let before = ip_link_stats(netns);
    let ours = procfs::netdev(ns).unwrap();
    let after = ip_link_stats(netns);
    assert!(!ours.is_empty());
    for d in &ours {
        let (Some(b), Some(a)) = (before.get(&d.name), after.get(&d.name)) else {
            continue; // an interface created or removed in between
        };
        let v = [d.values[0], d.values[1], d.values[8], d.values[9]];
        for (i, what) in ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"]
            .iter()
            .enumerate()
        {
            between(&format!("{} {what}", d.name), b[i], v[i], a[i]);
        }
    }
    assert!(ours.iter().any(|d| d.name == "lo"));
}

#[test]
fn netdev_matches_ip_s_link() {
    if !require_root("netdev_matches_ip_s_link") {
        return;
    }
    check_netdev(&host(), None);
    let t = TestNs::new("dev");
    t.run(|| udp_traffic(50));
    check_netdev(&t.netns(), Some(&t.ns.name));
    let lo = procfs::netdev(&t.netns()).unwrap();
    let lo = lo.iter().find(|d| d.name == "lo").unwrap();
    assert!(
        lo.values[1] >= 50,
        "the test traffic is in the test namespace: {lo:?}"
    );
}

fn nstat(netns: Option<&str>) -> BTreeMap<String, u64> {
    let v: Value = serde_json::from_str(&tool(netns, &["nstat", "-asz", "--json"])).unwrap();
    v["kernel"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect()
}

/// Counters that are gauges or settings, not monotonic.
const NOT_COUNTERS: [&str; 7] = [
    "IpForwarding",
    "IpDefaultTTL",
    "TcpRtoAlgorithm",
    "TcpRtoMin",
    "TcpRtoMax",
    "TcpMaxConn",
    "TcpCurrEstab",
];

fn check_nstat(ns: &Netns, netns: Option<&str>) -> usize {
    let before = nstat(netns);
    let mut ours = BTreeMap::new();
    let mut put = |sec: &str, name: &str, v: i64| {
        ours.insert(format!("{sec}{name}"), v as u64);
    };
    procfs::snmp(ns, &mut put).unwrap();
    procfs::netstat(ns, &mut put).unwrap();
    let after = nstat(netns);
    let mut checked = 0;
    for (k, v) in &ours {
        if NOT_COUNTERS.contains(&k.as_str()) || k.starts_with("IcmpMsg") {
            continue;
        }
        let (Some(b), Some(a)) = (before.get(k), after.get(k)) else {
            continue;
        };
        // nstat (iproute2 6.1) shows a counter past 2^32 modulo 2^32 (seen with
        // IpExtInOctets on a busy machine: 4376513451 read as 81546155); the kernel's
        // file, which sonde reads, has the whole value.
        let v = if *a < 1 << 32 && *v >= 1 << 32 {
            *v & 0xffff_ffff
        } else {
            *v
        };
        between(k, *b, v, *a);
        checked += 1;
    }
    checked
}

#[test]
fn snmp_and_netstat_match_nstat() {
    if !require_root("snmp_and_netstat_match_nstat") {
        return;
    }
    let n = check_nstat(&host(), None);
    assert!(n > 150, "only {n} counters compared");
    let t = TestNs::new("nstat");
    t.run(|| udp_traffic(20));
    let n = check_nstat(&t.netns(), Some(&t.ns.name));
    assert!(n > 150, "only {n} counters compared");
    let mut no_ports = 0;
    procfs::snmp(&t.netns(), |s, n, v| {
        if s == "Udp" && n == "NoPorts" {
            no_ports = v;
        }
    })
    .unwrap();
    assert_eq!(
        no_ports, 1,
        "the one datagram to a closed port, in the test namespace"
    );
}

/// `ss -tan` counts per state name (sonde's names).
fn ss_states(netns: Option<&str>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in tool(netns, &["ss", "-tanH"]).lines() {
        let st = line.split_whitespace().next().unwrap_or("");
        let name = match st {
            "ESTAB" => "ESTABLISHED",
            "SYN-SENT" => "SYN_SENT",
            "SYN-RECV" => "SYN_RECV",
            "FIN-WAIT-1" => "FIN_WAIT1",
            "FIN-WAIT-2" => "FIN_WAIT2",
            "TIME-WAIT" => "TIME_WAIT",
            "UNCONN" => "CLOSE",
            "CLOSE-WAIT" => "CLOSE_WAIT",
            "LAST-ACK" => "LAST_ACK",
            "LISTEN" => "LISTEN",
            "CLOSING" => "CLOSING",
            other => panic!("ss state {other}"),
        };
        *m.entry(name.to_string()).or_default() += 1;
    }
    m
}

fn sonde_states(ns: &Netns) -> BTreeMap<String, u64> {
    let s = netlink::tcp_summary(ns).unwrap();
    netlink::TCP_STATES
        .iter()
        .enumerate()
        .filter(|(i, _)| s.states[*i] > 0)
        .map(|(i, n)| (n.to_string(), s.states[i]))
        .collect()
}

/// Gauges: equal to the tool when the tool read the same before and after.
fn settle<T: PartialEq + std::fmt::Debug>(
    what: &str,
    tries: usize,
    mut tool: impl FnMut() -> T,
    mut ours: impl FnMut() -> T,
) {
    let mut last = None;
    for _ in 0..tries {
        let b = tool();
        let o = ours();
        let a = tool();
        if b == a {
            if o == b {
                return;
            }
            last = Some((b, o));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what}: tool and sonde never agreed on a quiet moment: {last:?}");
}

#[test]
fn tcp_summary_matches_ss() {
    if !require_root("tcp_summary_matches_ss") {
        return;
    }
    let t = TestNs::new("ss");
    // In the test namespace: a listener, 3 established pairs, one of them with
    // unread data, and one connection not accepted yet.
    let keep = t.run(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = std::net::TcpListener::bind("[::1]:0").ok();
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            c.write_all(&[1u8; 1000]).unwrap();
            conns.push((c, s));
        }
        let pending = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l, l6, conns, pending)
    });
    let ns = t.netns();
    let name = t.ns.name.clone();
    settle(
        "test netns states",
        5,
        || ss_states(Some(&name)),
        || sonde_states(&ns),
    );
    let s = netlink::tcp_summary(&ns).unwrap();
    assert_eq!(
        s.states[1], 8,
        "3 pairs and the pending connection, both ends each: {s:?}"
    );
    assert_eq!(s.rx_queue, 3000, "{s:?}");
    assert_eq!(s.accept_queue, 1, "{s:?}");
    drop(keep);
    settle(
        "host states",
        20,
        || ss_states(None),
        || sonde_states(&host()),
    );
}

/// The dumps `tcp_summary` leaves out (a family `sockstat` shows without sockets)
/// change nothing: namespaces with IPv4 sockets only (and TIME_WAIT ones), with IPv6
/// sockets only, with a dual-stack listener and IPv4 clients (v4-mapped sockets), and
/// without any, each against `ss`.
#[test]
fn tcp_summary_per_family_matches_ss() {
    if !require_root("tcp_summary_per_family_matches_ss") {
        return;
    }
    let pairs = |listen: &'static str, to: &'static str, closed: usize| {
        move || {
            let l = std::net::TcpListener::bind(listen).unwrap();
            let at = l.local_addr().unwrap().port();
            let addr = format!("{to}:{at}");
            let mut kept = Vec::new();
            for i in 0..3 + closed {
                let c = std::net::TcpStream::connect(&addr).unwrap();
                let (s, _) = l.accept().unwrap();
                if i < closed {
                    // The active closer goes to TIME_WAIT.
                    drop(c);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    drop(s);
                } else {
                    kept.push((c, s));
                }
            }
            (l, kept)
        }
    };
    let v4 = TestNs::new("fam4");
    let keep4 = v4.run(pairs("127.0.0.1:0", "127.0.0.1", 2));
    let v6 = TestNs::new("fam6");
    let keep6 = v6.run(pairs("[::1]:0", "[::1]", 0));
    let dual = TestNs::new("famd");
    let keepd = dual.run(pairs("[::]:0", "127.0.0.1", 0));
    let none = TestNs::new("fam0");
    for (t, what) in [
        (&v4, "IPv4 and TIME_WAIT"),
        (&v6, "IPv6"),
        (&dual, "dual-stack"),
        (&none, "no sockets"),
    ] {
        let ns = t.netns();
        let name = t.ns.name.clone();
        settle(what, 5, || ss_states(Some(&name)), || sonde_states(&ns));
    }
    let states = sonde_states(&v4.netns());
    assert_eq!(states.get("ESTABLISHED"), Some(&6), "{states:?}");
    assert_eq!(states.get("TIME_WAIT"), Some(&2), "{states:?}");
    assert_eq!(sonde_states(&dual.netns()).get("ESTABLISHED"), Some(&6));
    assert!(sonde_states(&none.netns()).is_empty());
    drop((keep4, keep6, keepd));
}

fn tc_qdiscs(netns: Option<&str>) -> Vec<Value> {
    let v: Value = serde_json::from_str(&tool(netns, &["tc", "-j", "-s", "qdisc"])).unwrap();
    v.as_array().unwrap().clone()
}

fn check_qdiscs(ns: &Netns, netns: Option<&str>) -> usize {
    let before = tc_qdiscs(netns);
    let ours = netlink::qdiscs(ns).unwrap();
    let after = tc_qdiscs(netns);
    let find = |v: &[Value], q: &netlink::Qdisc| {
        v.iter()
            .find(|t| {
                t["dev"].as_str() == Some(&q.ifname)
                    && t["kind"].as_str() == Some(&q.kind)
                    && t["handle"].as_str() == Some(&q.handle)
            })
            .cloned()
    };
    let mut checked = 0;
    for q in &ours {
        let (Some(b), Some(a)) = (find(&before, q), find(&after, q)) else {
            continue;
        };
        let g = |v: &Value, k: &str| v[k].as_u64().unwrap();
        for (k, v) in [
            ("bytes", q.bytes),
            ("packets", q.packets),
            ("drops", q.drops),
            ("overlimits", q.overlimits),
            ("requeues", q.requeues),
        ] {
            between(
                &format!("{} {} {k}", q.ifname, q.kind),
                g(&b, k),
                v,
                g(&a, k),
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn qdiscs_match_tc() {
    if !require_root("qdiscs_match_tc") {
        return;
    }
    assert!(check_qdiscs(&host(), None) >= 1);
    let t = TestNs::new("tc");
    let veth = "link add sdummy0 type veth peer name sdummy1";
    let mut args = vec!["ip", "-n", &t.ns.name];
    args.extend(veth.split(' '));
    sh(&args);
    sh(&["ip", "-n", &t.ns.name, "link", "set", "sdummy0", "up"]);
    sh(&["ip", "-n", &t.ns.name, "link", "set", "sdummy1", "up"]);
    sh(&[
        "ip",
        "-n",
        &t.ns.name,
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        "sdummy0",
    ]);
    tool(
        Some(&t.ns.name),
        &[
            "tc", "qdisc", "add", "dev", "sdummy0", "root", "handle", "7:", "pfifo", "limit", "5",
        ],
    );
    t.run(|| {
        let s = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
        for _ in 0..40 {
            let _ = s.send_to(&[0u8; 200], "10.77.0.9:9");
        }
    });
    let ns = t.netns();
    assert!(check_qdiscs(&ns, Some(&t.ns.name)) >= 1);
    let q = netlink::qdiscs(&ns).unwrap();
    let p = q
        .iter()
        .find(|q| q.ifname == "sdummy0" && q.kind == "pfifo")
        .unwrap_or_else(|| panic!("pfifo on sdummy0, named in its own namespace: {q:?}"));
    assert_eq!((p.handle.as_str(), p.parent.as_str()), ("7:", "root"));
    // The datagrams wait for an ARP answer that never comes; the ARP requests go
    // out through the qdisc.
    assert!(p.packets >= 1, "{p:?}");
}

fn conntrack_tool(netns: Option<&str>) -> (BTreeMap<String, u64>, u64) {
    let mut sums = BTreeMap::new();
    for line in tool(netns, &["conntrack", "-S"]).lines() {
        for kv in line.split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                if k != "cpu" {
                    *sums.entry(k.to_string()).or_default() += v.parse::<u64>().unwrap();
                }
            }
        }
    }
    let count = tool(netns, &["conntrack", "-C"]).trim().parse().unwrap();
    (sums, count)
}

fn check_conntrack(ns: &Netns, netns: Option<&str>) {
    let (b, _) = conntrack_tool(netns);
    let ours = netlink::conntrack(ns).unwrap();
    let (a, _) = conntrack_tool(netns);
    let mut checked = 0;
    for (i, name) in netlink::CONNTRACK_STATS.iter().enumerate() {
        if let (Some(lo), Some(hi)) = (b.get(*name), a.get(*name)) {
            between(&format!("conntrack {name}"), *lo, ours.stats[i], *hi);
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} conntrack stats compared: {b:?}");
    assert!(ours.cpus >= 1);
    let name = netns.map(str::to_string);
    settle(
        "conntrack entries",
        10,
        || conntrack_tool(name.as_deref()).1,
        || netlink::conntrack(ns).unwrap().entries,
    );
}

#[test]
fn conntrack_matches_the_conntrack_tool() {
    if !require_root("conntrack_matches_the_conntrack_tool") {
        return;
    }
    if !have("conntrack") {
        sonde_tests::cannot_run(
            "conntrack_matches_the_conntrack_tool",
            "no conntrack tool (apt-get install conntrack)",
        );
        return;
    }
    check_conntrack(&host(), None);
    let t = TestNs::new("ct");
    check_conntrack(&t.netns(), Some(&t.ns.name));
}

#[test]
fn sockstat_matches_the_file_read_inside_the_namespace() {
    if !require_root("sockstat_matches_the_file_read_inside_the_namespace") {
        return;
    }
    let t = TestNs::new("sock");
    let _keep = t.run(|| {
        let u: Vec<_> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        u
    });
    let ns = t.netns();
    let read = |text: &str| {
        let mut m = BTreeMap::new();
        procfs::parse_sockstat(text, |s, n, v| {
            m.insert(format!("{s}.{n}"), v);
        })
        .unwrap();
        m
    };
    let name = t.ns.name.clone();
    settle(
        "sockstat",
        10,
        || {
            let mut m = read(&tool(Some(&name), &["cat", "/proc/net/sockstat"]));
            m.extend(read(&tool(Some(&name), &["cat", "/proc/net/sockstat6"])));
            m.remove("TCP.mem");
            m.remove("UDP.mem");
            m
        },
        || {
            let mut m = BTreeMap::new();
            procfs::sockstat(&ns, |s, n, v| {
                m.insert(format!("{s}.{n}"), v);
            })
            .unwrap();
            m.remove("TCP.mem");
            m.remove("UDP.mem");
            m
        },
    );
    let mut udp = 0;
    procfs::sockstat(&ns, |s, n, v| {
        if s == "UDP" && n == "inuse" {
            udp = v;
        }
    })
    .unwrap();
    assert_eq!(udp, 3);
}

/// node_exporter on a free port with the collectors sonde replaces.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start() -> Option<NodeExporter> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("prometheus-node-exporter")
            .args([
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--collector.disable-defaults",
                "--collector.softnet",
                "--collector.sockstat",
                "--collector.netstat",
                "--collector.netstat.fields=.*",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let ne = NodeExporter { child, port };
        for _ in 0..100 {
            if ne.scrape().is_some() {
                return Some(ne);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    fn scrape(&self) -> Option<BTreeMap<String, f64>> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn softnet_and_netstat_match_node_exporter() {
    if !require_root("softnet_and_netstat_match_node_exporter") {
        return;
    }
    if !have("prometheus-node-exporter") {
        sonde_tests::cannot_run(
            "softnet_and_netstat_match_node_exporter",
            "no prometheus-node-exporter",
        );
        return;
    }
    let ne = NodeExporter::start().expect("node_exporter starts");
    let b = ne.scrape().unwrap();
    let soft = procfs::softnet().unwrap();
    let mut ours = BTreeMap::new();
    procfs::snmp(&host(), |s, n, v| {
        ours.insert(format!("node_netstat_{s}_{n}"), v as f64);
    })
    .unwrap();
    procfs::netstat(&host(), |s, n, v| {
        ours.insert(format!("node_netstat_{s}_{n}"), v as f64);
    })
    .unwrap();
    let a = ne.scrape().unwrap();
    for c in &soft {
        for (k, v) in [
            ("processed", c.processed),
            ("dropped", c.dropped),
            ("times_squeezed", c.time_squeeze),
        ] {
            let key = format!("node_softnet_{k}_total{{cpu=\"{}\"}}", c.cpu);
            between(&key, b[&key] as u64, v, a[&key] as u64);
        }
    }
    let mut checked = 0;
    for (k, v) in &ours {
        if k.contains("CurrEstab") || k.contains("MaxConn") || k.contains("Rto") {
            continue;
        }
        if let (Some(lo), Some(hi)) = (b.get(k), a.get(k)) {
            between(k, *lo as u64, *v as u64, *hi as u64);
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} netstat counters compared");
    // sockstat: gauges, equal on a quiet moment (node_exporter's names:
    // node_sockstat_TCP_inuse, node_sockstat_sockets_used, node_sockstat_TCP6_inuse...).
    let keys = [
        ("sockets", "used"),
        ("TCP", "inuse"),
        ("TCP", "orphan"),
        ("TCP", "alloc"),
        ("UDP", "inuse"),
        ("RAW", "inuse"),
        ("TCP6", "inuse"),
        ("UDP6", "inuse"),
    ];
    settle(
        "sockstat against node_exporter",
        20,
        || {
            let m = ne.scrape().unwrap();
            // node_exporter reads while our scrape's connection is open: both of its
            // ends are TCP sockets in use (and allocated) that sonde's read does not see.
            let during_scrape = |s: &str, n: &str| match (s, n) {
                ("sockets", "used") | ("TCP", "inuse") | ("TCP", "alloc") => 2,
                _ => 0,
            };
            keys.iter()
                .map(|(s, n)| m[&format!("node_sockstat_{s}_{n}")] as i64 - during_scrape(s, n))
                .collect::<Vec<_>>()
        },
        || {
            let mut m = BTreeMap::new();
            procfs::sockstat(&host(), |s, n, v| {
                m.insert(format!("{s}.{n}"), v);
            })
            .unwrap();
            keys.iter()
                .map(|(s, n)| m[&format!("{s}.{n}")])
                .collect::<Vec<_>>()
        },
    );
}

#[test]
fn fd_and_io_sum_the_processes_of_the_namespace() {
    if !require_root("fd_and_io_sum_the_processes_of_the_namespace") {
        return;
    }
    let t = TestNs::new("fd");
    let ns = t.netns();
    assert_eq!(ns.pids.len(), 1, "only the holder: {ns:?}");
    let pid = ns.pids[0];
    let fds = procfs::pod_fds(&ns);
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let sockets = links.iter().filter(|l| l.starts_with("socket:")).count() as u64;
    assert_eq!(
        (fds.processes, fds.fds, fds.sockets),
        (1, links.len() as u64, sockets),
        "{links:?}"
    );
    let io = procfs::pod_io(&ns);
    let mut direct = procfs::Io::default();
    procfs::parse_io(
        &std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap(),
        &mut direct,
    )
    .unwrap();
    // `sleep` does no I/O after start: the sums are its counters.
    assert_eq!(io, direct);
}

#[test]
fn a_namespace_held_only_by_a_bind_mount_is_listed_and_read() {
    if !require_root("a_namespace_held_only_by_a_bind_mount_is_listed_and_read") {
        return;
    }
    let t = TestNs::new("bind");
    let mut ns = t.netns();
    ns.pid = 0; // as if no process were in it: read through setns
    let dev = procfs::netdev(&ns).unwrap();
    assert_eq!(dev.len(), 1, "only lo: {dev:?}");
    let q = netlink::tcp_summary(&ns).unwrap();
    assert_eq!(q.states.iter().sum::<u64>(), 0);
    drop(t);
    // Gone: the next scan drops it, and a read of the stale entry says so.
    assert!(!netns_list_within(std::time::Duration::ZERO)
        .iter()
        .any(|n| n.inode == ns.inode));
    let mut stale = ns.clone();
    stale.pid = u32::MAX - 1;
    assert!(matches!(
        procfs::netdev(&stale),
        Err(sonde::sources::SourceError::Gone { .. })
    ));
}

/// The source scripts as the daemon runs them, in process: a namespace's series carry
/// its pod labels, and go away with it.
#[test]
fn series_of_a_namespace_that_is_gone_are_removed() {
    use sonde::metrics::Registry;
    use sonde::script::{Instance, Limits, Script, ScriptContext};
    use std::sync::Arc;
    if !require_root("series_of_a_namespace_that_is_gone_are_removed") {
        return;
    }
    let t = TestNs::new("gone");
    let pod = format!("pod=\"netns:{}\"", t.inode);
    let registry = Arc::new(Registry::new("n1"));
    // Every family of every script, detail too: all must go with the namespace.
    registry.set_pod_detail(sonde::metrics::PodDetail {
        all: true,
        ..Default::default()
    });
    let limits = Limits {
        call_deadline: std::time::Duration::from_secs(5),
        ..Limits::default()
    };
    let mut insts: Vec<Instance> = [
        "netdev",
        "snmp",
        "tcpext",
        "sock",
        "tcpsummary",
        "conntrack",
        "qdisc",
        "fd",
        "io",
    ]
    .iter()
    .map(|name| {
        let path = sonde_tests::repo_root().join(format!("scripts/{name}.rhai"));
        let src = std::fs::read_to_string(&path).unwrap();
        let script = Script::compile(name, &src, &limits).unwrap();
        let params = script.manifest().resolve_params(&[]).unwrap();
        let mut ctx = ScriptContext::detached(name);
        ctx.registry = registry.clone();
        ctx.pods = Arc::new(sonde::pods::HostResolver::new("n1"));
        Instance::start(&script, &params, ctx, &limits).unwrap()
    })
    .collect();
    let tick = |insts: &mut Vec<Instance>| {
        netns_list_within(std::time::Duration::ZERO);
        for i in insts.iter_mut() {
            i.on_tick();
            assert!(i.errors().is_empty(), "{}: {:?}", i.name(), i.errors());
        }
        registry.render_prometheus()
    };
    let text = tick(&mut insts);
    for family in [
        "sonde_netdev_receive_packets_total",
        "sonde_snmp_udp_in_datagrams_total",
        "sonde_tcpext_listen_drops_total",
        "sonde_sock_udp_inuse",
        "sonde_tcpsummary_sockets",
        "sonde_conntrack_entries",
        "sonde_fd_open_fds",
        "sonde_io_read_syscalls_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(family) && l.contains(&pod) && l.contains("namespace=\"\"")),
            "{family} has no series for {pod}:\n{}",
            text.lines()
                .filter(|l| l.starts_with(family))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The host is pod "" namespace "".
    assert!(text
        .lines()
        .any(|l| l.starts_with("sonde_snmp_tcp_active_opens_total{") && l.contains("pod=\"\"")));
    drop(t);
    let text = tick(&mut insts);
    let left: Vec<_> = text.lines().filter(|l| l.contains(&pod)).collect();
    assert!(
        left.is_empty(),
        "series of the deleted namespace remain: {left:?}"
    );
}

/// `sonde run` of a source script: the test namespace's TCP sockets by state.
#[test]
fn sonde_run_tcpsummary_counts_the_test_namespace() {
    if !require_root("sonde_run_tcpsummary_counts_the_test_namespace") {
        return;
    }
    let t = TestNs::new("run");
    let _keep = t.run(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let s = l.accept().unwrap().0;
        (l, c, s)
    });
    let out = sonde_tests::sonde_ok(&["run", "scripts/tcpsummary.rhai", "--for", "1s"]);
    // `sonde run` names an `ip netns` namespace by its name, as the daemon does.
    let pod = format!("pod={}", t.ns.name);
    assert_eq!(
        sonde_tests::run::summary_row(&out, &[&pod, "state=ESTABLISHED}"]),
        2,
        "{out}"
    );
    assert_eq!(
        sonde_tests::run::summary_row(&out, &[&pod, "state=LISTEN}"]),
        1,
        "{out}"
    );
}
