//! kernel_latency against the real kernel (root), tracepoint variant.
//!
//! - RX (recv_read: netif_receive_skb -> the application's copy): inside a private
//!   network namespace, over loopback, a TCP segment (IPv4 and IPv6) and a UDP
//!   datagram are read 40 ms after they arrive. The script, run as a user runs it,
//!   must count exactly the two TCP segments, as slow, and report each with its
//!   tuple and the stack/socket split; UDP is not measured by this variant.
//! - TX (tcp_devq: TCP hands the segment to IP -> net_dev_queue): two namespaces
//!   joined by a veth; the sender's SYN waits for the neighbour: the receiver
//!   ignores ARP (arp_ignore) or drops neighbour solicitations (ip6tables) for a
//!   moment, so the answer comes with the sender's next probe a second later (this
//!   kernel has no netem to delay it otherwise). The kernel maps,
//!   loaded directly, must hold the slow SYNs for the sender's namespace, IPv4 and
//!   IPv6, with their tuples; and no per-skb entry may be left behind.

use sonde::script::record::DecodedEntries;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use rhai::Map;
use sonde::script::ParamValue;
use sonde_tests::kernel::{drain, int, load, ours, s, struct_entries};
use sonde_tests::run::{finish, start, summary_row};
use sonde_tests::veth::NamedPair;
use sonde_tests::{ip, require_root, wait_up, NetnsThread};

const SLOW_READ: Duration = Duration::from_millis(40);

#[test]
fn kernel_latency_rx_slow_reader_v4_v6_tcp_udp() {
    if !require_root("kernel_latency_rx_slow_reader_v4_v6_tcp_udp") {
        return;
    }
    let run = start(&[
        "run",
        "scripts/kernel_latency.rhai",
        "--for",
        "3s",
        "-p",
        "threshold_ms=10",
    ]);
    let ns = NetnsThread::new().unwrap();
    let ports = ns.run(|| {
        let mut ports = Vec::new();
        for v6 in [false, true] {
            let l = if v6 {
                TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap()
            } else {
                TcpListener::bind(("127.0.0.1", 0)).unwrap()
            };
            let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (mut srv, _) = l.accept().unwrap();
            c.write_all(b"hello").unwrap();
            std::thread::sleep(SLOW_READ);
            let mut buf = [0u8; 16];
            assert_eq!(srv.read(&mut buf).unwrap(), 5);
            ports.push((
                c.local_addr().unwrap().port(),
                l.local_addr().unwrap().port(),
            ));
        }
        let rx = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let tx = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        tx.send_to(b"datagram", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(SLOW_READ);
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf).unwrap(), 8);
        ports.push((
            tx.local_addr().unwrap().port(),
            rx.local_addr().unwrap().port(),
        ));
        ports
    });
    let (out, _) = finish(run);
    let pod = format!("pod=netns:{}", ns.inode);

    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=RXKERNEL_SLOW") && l.contains(&pod))
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    assert!(!events.iter().any(|e| e.contains("protocol=UDP")), "{out}");
    let want = [("TCP", "127.0.0.1", ports[0]), ("TCP", "::1", ports[1])];
    for (e, (proto, addr, (sport, dport))) in events.iter().zip(want) {
        let head = format!(
            "type=RXKERNEL_SLOW {pod} protocol={proto} saddr={addr} sport={sport} \
             daddr={addr} dport={dport} interval=recv_read latency_ns="
        );
        assert!(e.starts_with(&head), "want {head}\ngot  {e}");
        let field = |k: &str| -> Option<u64> {
            e.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .map(|v| v.parse().unwrap())
        };
        let ns = field("latency_ns").unwrap();
        assert!((40_000_000..1_000_000_000).contains(&ns), "{e}");
        // tcp_probe split it: the stack part is short, the rest waited for the reader.
        let (stack, socket) = (field("stack_ns").unwrap(), field("socket_ns").unwrap());
        assert_eq!(stack + socket, ns, "{e}");
        assert!(stack < 10_000_000 && socket >= 39_000_000, "{e}");
    }
    let labels = [pod.as_str(), "direction=rx", "interval=recv_read}"];
    // The counter's row (histogram headers have the metric name before the braces).
    let row = format!("  {{{pod}");
    assert_eq!(
        summary_row(&out, &[&row, "direction=rx", "interval=recv_read}"]),
        2,
        "slow counter: {out}"
    );
    let header = out
        .lines()
        .find(|l| {
            l.starts_with("sonde_kernel_latency_seconds{")
                && labels.iter().all(|p| l.contains(p.trim_end_matches('}')))
        })
        .unwrap_or_else(|| panic!("no histogram for {pod}:\n{out}"));
    assert!(header.contains("count 2,"), "{header}");
}

/// Runs `f` on a thread inside the named namespace (`ip netns`).
fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

const A4: &str = "198.18.9.1";
const B4: &str = "198.18.9.2";
const A6: &str = "2001:db8:9::1";
const B6: &str = "2001:db8:9::2";

#[test]
fn kernel_latency_tx_syn_waiting_for_the_neighbour_v4_v6() {
    if !require_root("kernel_latency_tx_syn_waiting_for_the_neighbour_v4_v6") {
        return;
    }
    let (mut loaded, env) = load("kernel_latency", &[("threshold_ms", ParamValue::Int(10))]);
    assert_eq!(loaded.variant.name, "tracepoint");

    let pair = NamedPair::new("klt", "02:00:00:00:09");
    let (a, b) = (pair.a.as_str(), pair.b.as_str());
    let (inode_a, inode_b) = (pair.inode_a, pair.inode_b);
    ip(&["-n", a, "addr", "add", &format!("{A4}/24"), "dev", a]);
    ip(&["-n", b, "addr", "add", &format!("{B4}/24"), "dev", b]);
    ip(&[
        "-n",
        a,
        "addr",
        "add",
        &format!("{A6}/64"),
        "dev",
        a,
        "nodad",
    ]);
    ip(&[
        "-n",
        b,
        "addr",
        "add",
        &format!("{B6}/64"),
        "dev",
        b,
        "nodad",
    ]);
    for (ns, dev) in [(a, a), (b, b)] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The receiver knows the sender statically: only the sender resolves.
    for addr in [A4, A6] {
        ip(&[
            "-n",
            b,
            "neigh",
            "replace",
            addr,
            "lladdr",
            "02:00:00:00:09:01",
            "dev",
            b,
            "nud",
            "permanent",
        ]);
    }
    wait_up(a, a);
    wait_up(b, b);
    let (l4, l6) = in_netns(b, || {
        (
            TcpListener::bind((B4, 0)).unwrap(),
            TcpListener::bind((B6, 0)).unwrap(),
        )
    });
    let (p4, p6) = (
        l4.local_addr().unwrap().port(),
        l6.local_addr().unwrap().port(),
    );
    let server = std::thread::spawn(move || {
        for l in [l4, l6] {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(c.read(&mut buf).unwrap(), 4);
        }
    });
    let mut locals = Vec::new();
    for (peer, port) in [(B4, p4), (B6, p6)] {
        // The receiver ignores neighbour requests for a moment; the sender's next
        // probe, a second later, is answered, and only then does the SYN leave.
        // IPv4: ARP, ignored with arp_ignore; IPv6: neighbour solicitations,
        // dropped by ip6tables (ICMPv6 is not IPv4's ARP: no sysctl for it).
        // runs: sysctl ip6tables
        let (hold, release): (Vec<&str>, Vec<&str>) = if peer == B4 {
            (
                vec!["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=8"],
                vec!["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=0"],
            )
        } else {
            let rule = [
                "INPUT",
                "-p",
                "icmpv6",
                "--icmpv6-type",
                "neighbour-solicitation",
                "-j",
                "DROP",
            ];
            (
                [&["ip6tables", "-I"][..], &rule].concat(),
                [&["ip6tables", "-D"][..], &rule].concat(),
            )
        };
        let netns_exec = |ns: &str, args: &[&str]| {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns])
                .args(args)
                .status()
                .unwrap();
            assert!(ok.success(), "{args:?}");
        };
        netns_exec(b, &hold);
        let bname = b.to_string();
        let release: Vec<String> = release.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = Command::new("ip")
                .args(["netns", "exec", &bname])
                .args(&release)
                .status();
        });
        let sport = in_netns(a, move || {
            let mut c = TcpStream::connect((peer, port)).unwrap();
            c.write_all(b"ping").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let port = c.local_addr().unwrap().port();
            let _ = c.read(&mut [0u8; 1]); // the server closes after reading
            port
        });
        locals.push(sport);
    }
    server.join().unwrap();

    let events = ours(drain(&mut loaded, &env), inode_a);
    let syns: Vec<&Map> = events
        .iter()
        .filter(|e| s(e, "dir") == "TX" && int(e, "latency_ns") > 100_000_000)
        .collect();
    assert_eq!(syns.len(), 2, "one slow SYN per family: {events:#?}");
    for (e, (local, peer, sport, dport)) in syns
        .iter()
        .zip([(A4, B4, locals[0], p4), (A6, B6, locals[1], p6)])
    {
        assert_eq!(s(e, "interval"), "TCP_DEVQ");
        assert_eq!(s(e, "l4proto"), "TCP");
        assert_eq!(s(e, "saddr"), local);
        assert_eq!(s(e, "daddr"), peer);
        assert_eq!(int(e, "sport"), sport as i64);
        assert_eq!(int(e, "dport"), dport as i64);
        assert_eq!(int(e, "mid_ns"), 0);
    }

    // Kernel-side aggregation for the sender's pod: both SYNs slow, in the histogram
    // above 64 ms (slot 27 = (67 ms, 134 ms]).
    let totals: Vec<(Map, Map)> = struct_entries(&loaded, "totals")
        .into_iter()
        .filter(|(k, _)| int(k, "netns") == inode_a as i64 && s(k, "dir") == "TX")
        .collect();
    assert_eq!(totals.len(), 1, "{totals:?}");
    assert_eq!(int(&totals[0].1, "slow"), 2, "{totals:?}");
    let slow_slots: i64 = sonde_tests::kernel::map_entries(&loaded, "hist", inode_a)
        .iter()
        .filter(|(k, _)| s(k, "dir") == "TX" && int(k, "slot") >= 27)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(slow_slots, 2);

    // Every received data segment was read: nothing left in the per-skb map.
    let left: Vec<_> = loaded
        .maps
        .decoded_entries("rx_skbs")
        .unwrap()
        .into_iter()
        .map(|e| e.cast::<Map>()["value"].clone().cast::<Map>())
        .filter(|v| {
            let n = int(v, "netns");
            n == inode_a as i64 || n == inode_b as i64
        })
        .collect();
    assert!(left.is_empty(), "per-skb entries left: {left:?}");
    // The receiver's reads were timed (the pings, read at once).
    let rx_b: i64 = sonde_tests::kernel::map_entries(&loaded, "hist", inode_b)
        .iter()
        .filter(|(k, _)| s(k, "dir") == "RX")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rx_b, 2, "one RX sample per ping");
}
