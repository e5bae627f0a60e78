//! procfs readers and their parsers, per network namespace.
//!
//! Files under `/proc/<pid>/net/` show the namespace of `<pid>`. The pid comes from
//! the namespace scan ([`super::netns_list`]); after a read the pid's namespace is
//! checked again, so a pid that exited and was reused elsewhere in between is
//! reported as [`SourceError::Gone`] rather than read as the wrong pod. A namespace
//! held only by an `ip netns` bind mount has no pid: its files are read from
//! `/proc/thread-self/net/` by a short-lived thread that `setns`es into it.
//!
//! The parsers take the file's text and are tested on text captured from a real
//! kernel (`testdata/`).
//!
//! ```
//! let text = "Tcp: ActiveOpens PassiveOpens\nTcp: 12 3\n";
//! let mut seen = Vec::new();
//! sonde::sources::procfs::parse_tables(text, |sec, name, v| seen.push(format!("{sec}.{name}={v}"))).unwrap();
//! assert_eq!(seen, ["Tcp.ActiveOpens=12", "Tcp.PassiveOpens=3"]);
//! ```

use std::cell::RefCell;
use std::io::Read;

use super::{Netns, SourceError};

/// Reads `/proc/<pid>/net/<file>` of `ns` into `buf` (cleared first).
pub fn read_net(ns: &Netns, file: &str, buf: &mut String) -> Result<(), SourceError> {
    buf.clear();
    if ns.pid == 0 {
        let path = ns.ns_path();
        let what = format!("/proc/thread-self/net/{file}");
        let p = what.clone();
        let text = super::netlink::in_netns(&path, ns.inode, move || std::fs::read_to_string(p))?;
        return text
            .map(|t| buf.push_str(&t))
            .map_err(|e| SourceError::Io { what, source: e });
    }
    let path = format!("/proc/{}/net/{file}", ns.pid);
    match std::fs::File::open(&path).and_then(|mut f| f.read_to_string(buf)) {
        Ok(_) => {}
        Err(e) => {
            return Err(if pid_in(ns.pid, ns.inode) {
                SourceError::Io {
                    what: path,
                    source: e,
                }
            } else {
                SourceError::Gone { inode: ns.inode }
            })
        }
    }
    if !pid_in(ns.pid, ns.inode) {
        return Err(SourceError::Gone { inode: ns.inode });
    }
    Ok(())
}

/// Whether `pid` still lives in the namespace `inode`.
pub fn pid_in(pid: u32, inode: u64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .and_then(|l| {
            l.to_str()
                .and_then(|s| s.strip_prefix("net:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
        })
        == Some(inode)
}

thread_local! {
    /// One text buffer per thread, reused by every read.
    static BUF: RefCell<String> = RefCell::new(String::with_capacity(16 * 1024));
}

/// Runs `f` on the text of `file` in `ns`, with a reused buffer.
pub fn with_net_file<T>(
    ns: &Netns,
    file: &str,
    f: impl FnOnce(&str) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        read_net(ns, file, &mut b)?;
        f(&b)
    })
}

fn format_err(what: &str, detail: impl Into<String>) -> SourceError {
    SourceError::Format {
        what: what.to_string(),
        detail: detail.into(),
    }
}

/// Column names of `/proc/net/dev`, receive side then transmit side.
pub const NETDEV_FIELDS: [&str; 16] = [
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "rx_fifo",
    "rx_frame",
    "rx_compressed",
    "rx_multicast",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
    "tx_fifo",
    "tx_collisions",
    "tx_carrier",
    "tx_compressed",
];

/// One interface of `/proc/net/dev`: values in [`NETDEV_FIELDS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub values: [u64; 16],
}

/// Parses `/proc/net/dev`.
pub fn parse_netdev(text: &str) -> Result<Vec<NetDev>, SourceError> {
    let mut out = Vec::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            return Err(format_err("net/dev", format!("line without `:`: {line}")));
        };
        let mut values = [0u64; 16];
        let mut n = 0;
        for (i, v) in rest.split_ascii_whitespace().enumerate() {
            if i >= 16 {
                break;
            }
            values[i] = v
                .parse()
                .map_err(|_| format_err("net/dev", format!("not a number: {v}")))?;
            n = i + 1;
        }
        if n != 16 {
            return Err(format_err("net/dev", format!("{n} columns: {line}")));
        }
        out.push(NetDev {
            name: name.trim().to_string(),
            values,
        });
    }
    Ok(out)
}

/// `/proc/<pid>/net/dev` of `ns`.
pub fn netdev(ns: &Netns) -> Result<Vec<NetDev>, SourceError> {
    with_net_file(ns, "dev", parse_netdev)
}

/// Parses the two-line tables of `/proc/net/snmp` and `/proc/net/netstat`
/// (`Tcp: Name1 Name2` then `Tcp: 1 2`), calling `f(section, name, value)` for each
/// value. Values may be negative (`Tcp: MaxConn` is -1).
pub fn parse_tables(text: &str, mut f: impl FnMut(&str, &str, i64)) -> Result<(), SourceError> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        if names.trim().is_empty() {
            continue;
        }
        let Some(values) = lines.next() else {
            return Err(format_err("snmp table", format!("no values for `{names}`")));
        };
        let (Some((sec, names)), Some((sec2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            return Err(format_err("snmp table", format!("no section in `{names}`")));
        };
        if sec != sec2 {
            return Err(format_err(
                "snmp table",
                format!("section `{sec}` followed by `{sec2}`"),
            ));
        }
        let mut vs = values.split_ascii_whitespace();
        for name in names.split_ascii_whitespace() {
            let v = vs.next().ok_or_else(|| {
                format_err("snmp table", format!("{sec}: fewer values than names"))
            })?;
            let v = v
                .parse::<i64>()
                .or_else(|_| v.parse::<u64>().map(|u| u as i64))
                .map_err(|_| {
                    format_err("snmp table", format!("{sec}.{name}: not a number: {v}"))
                })?;
            f(sec, name, v);
        }
    }
    Ok(())
}

/// `/proc/<pid>/net/snmp` of `ns` (sections `Ip`, `Icmp`, `IcmpMsg`, `Tcp`, `Udp`,
/// `UdpLite`).
pub fn snmp(ns: &Netns, f: impl FnMut(&str, &str, i64)) -> Result<(), SourceError> {
    with_net_file(ns, "snmp", |t| parse_tables(t, f))
}

/// `/proc/<pid>/net/netstat` of `ns` (sections `TcpExt`, `IpExt`, `MPTcpExt`).
pub fn netstat(ns: &Netns, f: impl FnMut(&str, &str, i64)) -> Result<(), SourceError> {
    with_net_file(ns, "netstat", |t| parse_tables(t, f))
}

/// Parses `/proc/net/sockstat` or `sockstat6` (`TCP: inuse 5 orphan 0 ...`), calling
/// `f(section, name, value)`: `("sockets", "used", 290)`, `("TCP", "inuse", 5)`,
/// `("TCP6", "inuse", 2)`.
pub fn parse_sockstat(text: &str, mut f: impl FnMut(&str, &str, i64)) -> Result<(), SourceError> {
    for line in text.lines() {
        let Some((sec, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        while let Some(name) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| format_err("sockstat", format!("{sec}.{name}: no value")))?;
            let v = v
                .parse::<i64>()
                .map_err(|_| format_err("sockstat", format!("{sec}.{name}: not a number: {v}")))?;
            f(sec, name, v);
        }
    }
    Ok(())
}

/// `/proc/<pid>/net/sockstat` and `sockstat6` of `ns`. The `mem` values are in
/// pages (see [`page_size`]).
pub fn sockstat(ns: &Netns, mut f: impl FnMut(&str, &str, i64)) -> Result<(), SourceError> {
    with_net_file(ns, "sockstat", |t| parse_sockstat(t, &mut f))?;
    // No IPv6 in this kernel: the v4 file is all there is.
    match with_net_file(ns, "sockstat6", |t| parse_sockstat(t, &mut f)) {
        Err(SourceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        r => r,
    }
}

/// The page size, the unit of `sockstat`'s `mem`.
pub fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as i64
    } else {
        4096
    }
}

/// One CPU's line of `/proc/net/softnet_stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Softnet {
    pub cpu: u32,
    /// Packets taken off the backlog or the NIC by this CPU's NAPI.
    pub processed: u64,
    /// Packets dropped because the backlog queue was full.
    pub dropped: u64,
    /// Times `net_rx_action` ran out of budget or time with work left.
    pub time_squeeze: u64,
    /// Packets steered to this CPU by RPS.
    pub received_rps: u64,
    /// Times the flow limit dropped a packet.
    pub flow_limit_count: u64,
}

/// Parses `/proc/net/softnet_stat` (hex columns). The CPU is the 13th column where
/// the kernel writes it (5.10+), the line number otherwise (offline CPUs then shift
/// the numbering, as on old kernels anyway).
pub fn parse_softnet(text: &str) -> Result<Vec<Softnet>, SourceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut cols = [0u64; 16];
        let mut n = 0;
        for (j, c) in line.split_ascii_whitespace().take(16).enumerate() {
            cols[j] = u64::from_str_radix(c, 16)
                .map_err(|_| format_err("softnet_stat", format!("not hex: {c}")))?;
            n = j + 1;
        }
        if n < 11 {
            return Err(format_err("softnet_stat", format!("{n} columns: {line}")));
        }
        out.push(Softnet {
            cpu: if n >= 13 { cols[12] as u32 } else { i as u32 },
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            received_rps: cols[9],
            flow_limit_count: cols[10],
        });
    }
    Ok(out)
}

/// `/proc/net/softnet_stat`: per CPU, not per namespace.
pub fn softnet() -> Result<Vec<Softnet>, SourceError> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").map_err(|e| SourceError::Io {
        what: "/proc/net/softnet_stat".into(),
        source: e,
    })?;
    parse_softnet(&text)
}

/// Totals of `/proc/net/ip_vs_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ipvs {
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Parses `/proc/net/ip_vs_stats`: two header lines, then the totals in hex
/// (connections, incoming packets, outgoing packets, incoming bytes, outgoing bytes).
pub fn parse_ipvs(text: &str) -> Result<Ipvs, SourceError> {
    let line = text
        .lines()
        .nth(2)
        .ok_or_else(|| format_err("ip_vs_stats", "fewer than 3 lines"))?;
    let mut v = [0u64; 5];
    let mut n = 0;
    for (i, c) in line.split_ascii_whitespace().take(5).enumerate() {
        v[i] = u64::from_str_radix(c, 16)
            .map_err(|_| format_err("ip_vs_stats", format!("not hex: {c}")))?;
        n = i + 1;
    }
    if n != 5 {
        return Err(format_err("ip_vs_stats", format!("{n} columns: {line}")));
    }
    Ok(Ipvs {
        connections: v[0],
        in_packets: v[1],
        out_packets: v[2],
        in_bytes: v[3],
        out_bytes: v[4],
    })
}

/// `/proc/<pid>/net/ip_vs_stats` of `ns`; [`SourceError::Missing`] without IPVS.
pub fn ipvs(ns: &Netns) -> Result<Ipvs, SourceError> {
    match with_net_file(ns, "ip_vs_stats", parse_ipvs) {
        Err(SourceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(SourceError::Missing {
                what: "ipvs",
                reason: "no /proc/net/ip_vs_stats (the ip_vs module is not loaded)".into(),
            })
        }
        r => r,
    }
}

/// Sums of `/proc/<pid>/io` over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Io {
    pub processes: u64,
    pub rchar: u64,
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub cancelled_write_bytes: u64,
}

/// Parses one `/proc/<pid>/io` and adds it to `sum`.
pub fn parse_io(text: &str, sum: &mut Io) -> Result<(), SourceError> {
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v: u64 = v
            .trim()
            .parse()
            .map_err(|_| format_err("io", format!("{k}: not a number")))?;
        let slot = match k {
            "rchar" => &mut sum.rchar,
            "wchar" => &mut sum.wchar,
            "syscr" => &mut sum.syscr,
            "syscw" => &mut sum.syscw,
            "read_bytes" => &mut sum.read_bytes,
            "write_bytes" => &mut sum.write_bytes,
            "cancelled_write_bytes" => &mut sum.cancelled_write_bytes,
            _ => continue,
        };
        *slot = slot.wrapping_add(v);
    }
    sum.processes += 1;
    Ok(())
}

/// `/proc/<pid>/io` summed over the processes of `ns` (the pod). Processes that exit
/// during the sum are left out.
///
/// Processes are grouped by network namespace, which is what a pod shares: this
/// works the same on cgroup v1 and v2 and needs no cgroup path conventions. A
/// host-network pod's processes count as the host's.
pub fn pod_io(ns: &Netns) -> Io {
    let mut sum = Io::default();
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        for pid in &ns.pids {
            b.clear();
            let ok = std::fs::File::open(format!("/proc/{pid}/io"))
                .and_then(|mut f| f.read_to_string(&mut b))
                .is_ok();
            if ok {
                let _ = parse_io(&b, &mut sum);
            }
        }
    });
    sum
}

/// Open file descriptors of the processes of `ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fds {
    pub processes: u64,
    pub fds: u64,
    /// Descriptors that are sockets.
    pub sockets: u64,
}

/// Counts `/proc/<pid>/fd` entries (and the sockets among them) of one process.
pub fn process_fds(pid: u32, sum: &mut Fds) -> std::io::Result<()> {
    let mut path = std::path::PathBuf::from(format!("/proc/{pid}/fd"));
    let dir = std::fs::read_dir(&path)?;
    let mut fds = 0;
    let mut sockets = 0;
    for e in dir.flatten() {
        fds += 1;
        path.push(e.file_name());
        if let Ok(l) = std::fs::read_link(&path) {
            if l.as_os_str().as_encoded_bytes().starts_with(b"socket:") {
                sockets += 1;
            }
        }
        path.pop();
    }
    sum.fds += fds;
    sum.sockets += sockets;
    sum.processes += 1;
    Ok(())
}

/// Open descriptors summed over the processes of `ns` (the pod), grouped as
/// [`pod_io`] groups them.
pub fn pod_fds(ns: &Netns) -> Fds {
    let mut sum = Fds::default();
    for pid in &ns.pids {
        let _ = process_fds(*pid, &mut sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn fixture(name: &str) -> String {
        let p = format!("{}/src/sources/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn tables(text: &str) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        parse_tables(text, |s, n, v| {
            m.insert(format!("{s}.{n}"), v);
        })
        .unwrap();
        m
    }

    #[test]
    fn netdev_of_a_real_kernel() {
        let devs = parse_netdev(&fixture("net_dev")).unwrap();
        let lo = devs.iter().find(|d| d.name == "lo").unwrap();
        // lo: every packet sent is received.
        assert_eq!(lo.values[0], lo.values[8]);
        assert_eq!(lo.values[1], lo.values[9]);
        assert!(lo.values[0] > 0);
        let eth = devs.iter().find(|d| d.name == "eth0").unwrap();
        assert_eq!(eth.values, FIXTURE_ETH0);
    }

    /// eth0's line of testdata/net_dev, by hand.
    const FIXTURE_ETH0: [u64; 16] = include!("testdata/net_dev.eth0");

    #[test]
    fn netdev_rejects_short_lines() {
        let t = "h1\nh2\n  lo: 1 2 3\n";
        assert!(matches!(parse_netdev(t), Err(SourceError::Format { .. })));
    }

    #[test]
    fn snmp_of_a_real_kernel() {
        let m = tables(&fixture("snmp"));
        assert_eq!(m["Tcp.MaxConn"], -1);
        assert_eq!(m["Ip.DefaultTTL"], 64);
        for k in [
            "Tcp.ActiveOpens",
            "Tcp.RetransSegs",
            "Tcp.OutRsts",
            "Udp.NoPorts",
            "Udp.RcvbufErrors",
            "Ip.InReceives",
            "Icmp.InMsgs",
            "UdpLite.InDatagrams",
        ] {
            assert!(m.contains_key(k), "{k}");
        }
    }

    #[test]
    fn netstat_of_a_real_kernel() {
        let m = tables(&fixture("netstat"));
        for k in [
            "TcpExt.ListenDrops",
            "TcpExt.ListenOverflows",
            "TcpExt.TCPTimeouts",
            "TcpExt.TCPAbortOnData",
            "TcpExt.TCPRcvQDrop",
            "IpExt.InOctets",
            "IpExt.OutOctets",
        ] {
            assert!(m.contains_key(k), "{k}");
        }
        assert!(m["IpExt.InOctets"] > 0);
    }

    #[test]
    fn tables_with_a_missing_value_are_an_error() {
        assert!(parse_tables("Tcp: A B\nTcp: 1\n", |_, _, _| {}).is_err());
        assert!(parse_tables("Tcp: A B\n", |_, _, _| {}).is_err());
        assert!(parse_tables("Tcp: A\nUdp: 1\n", |_, _, _| {}).is_err());
    }

    #[test]
    fn sockstat_of_a_real_kernel() {
        let mut m = BTreeMap::new();
        let mut put = |s: &str, n: &str, v| {
            m.insert(format!("{s}.{n}"), v);
        };
        parse_sockstat(&fixture("sockstat"), &mut put).unwrap();
        parse_sockstat(&fixture("sockstat6"), &mut put).unwrap();
        for k in [
            "sockets.used",
            "TCP.inuse",
            "TCP.orphan",
            "TCP.tw",
            "TCP.alloc",
            "TCP.mem",
            "UDP.inuse",
            "UDP.mem",
            "FRAG.memory",
            "TCP6.inuse",
            "UDP6.inuse",
            "RAW6.inuse",
        ] {
            assert!(m.contains_key(k), "{k}");
        }
        assert!(m["sockets.used"] > 0);
    }

    #[test]
    fn softnet_of_a_real_kernel() {
        let s = parse_softnet(&fixture("softnet_stat")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].cpu, 0);
        assert_eq!(s[1].cpu, 1);
        assert!(s[0].processed > 0);
        // An old kernel's 11 columns: the CPU is the line number.
        let old = parse_softnet("0000000a 00000001 00000002 0 0 0 0 0 0 00000003 00000004\n0000000b 0 0 0 0 0 0 0 0 0 0\n").unwrap();
        assert_eq!((old[1].cpu, old[1].processed), (1, 11));
        assert_eq!(
            (
                old[0].dropped,
                old[0].time_squeeze,
                old[0].received_rps,
                old[0].flow_limit_count
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn ipvs_stats_are_hex() {
        // The layout of net/netfilter/ipvs/ip_vs_ctl.c (ip_vs_stats_show).
        let t = "   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n      1A      2F3       10              100            1FFFF\n\n Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n       0        0        0                0                0\n";
        let s = parse_ipvs(t).unwrap();
        assert_eq!(
            s,
            Ipvs {
                connections: 0x1a,
                in_packets: 0x2f3,
                out_packets: 0x10,
                in_bytes: 0x100,
                out_bytes: 0x1ffff
            }
        );
        assert!(parse_ipvs("x\ny\n").is_err());
    }

    #[test]
    fn io_of_a_real_process() {
        let mut sum = Io::default();
        parse_io(&fixture("pid_io"), &mut sum).unwrap();
        parse_io(&fixture("pid_io"), &mut sum).unwrap();
        assert_eq!(sum.processes, 2);
        assert!(sum.rchar > 0 && sum.rchar % 2 == 0);
        assert!(sum.syscr > 0);
    }

    #[test]
    fn fds_of_this_process() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut a = Fds::default();
        process_fds(std::process::id(), &mut a).unwrap();
        drop(sock);
        assert!(a.fds >= 4 && a.sockets >= 1, "{a:?}");
    }
}
