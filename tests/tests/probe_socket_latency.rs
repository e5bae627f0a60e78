//! socket_latency, for real (root): in a private network namespace per address family,
//! a TCP server that sleeps 150 ms before each read while a client sends, a UDP
//! receiver that does the same, readers that read at once, and a TCP send call that
//! blocks because the peer does not read for 300 ms. The script's exported histograms,
//! counters and events for each namespace's pod must say exactly which reads and
//! writes were slow. A second test checks the per-socket and per-thread state maps
//! are emptied by reads, closes and send returns.

use sonde::script::record::DecodedEntries;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rhai::Map;
use sonde_tests::kernel::{int, load};
use sonde_tests::run::{finish, start, summary_values};
use sonde_tests::{require_root, NetnsThread};

const SLOW_READ: Duration = Duration::from_millis(150);
const BLOCKED_WRITE: usize = 512 * 1024;

fn set_buf(fd: i32, opt: i32, bytes: i32) {
    // SAFETY: setsockopt on a descriptor the caller owns, with an int option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &bytes as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// What the namespace did, to compare with what sonde exported.
struct Done {
    server_port: u16,
    client_port: u16,
    udp_port: u16,
    writer_port: u16,
}

/// Runs in the namespace. Slow reads (over 100 ms): 3 TCP, 1 UDP, and the first read
/// of the blocked-writer phase: 5. Slow writes: the one blocked send call.
fn scenario(ip: IpAddr) -> Done {
    // Phase A: the server reads each message 150 ms after it was sent.
    let l = TcpListener::bind((ip, 0)).unwrap();
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut srv, _) = l.accept().unwrap();
    c.set_nodelay(true).unwrap();
    srv.set_nodelay(true).unwrap();
    let mut buf = [0u8; 4096];
    for i in 0..3u8 {
        c.write_all(&[i; 100]).unwrap();
        std::thread::sleep(SLOW_READ);
        srv.read_exact(&mut buf[..100]).unwrap();
        // The ack is read as soon as it is sent: fast.
        srv.write_all(&[i]).unwrap();
        c.read_exact(&mut buf[..1]).unwrap();
    }
    // Fast readers: each message read right after it arrived.
    for i in 0..20u8 {
        c.write_all(&[i; 100]).unwrap();
        srv.read_exact(&mut buf[..100]).unwrap();
    }
    let done_ports = (
        l.local_addr().unwrap().port(),
        c.local_addr().unwrap().port(),
    );
    drop(c);
    drop(srv);

    // UDP: one datagram read 150 ms late, then 5 read at once.
    let u = UdpSocket::bind((ip, 0)).unwrap();
    let tx = UdpSocket::bind((ip, 0)).unwrap();
    tx.send_to(b"late", u.local_addr().unwrap()).unwrap();
    std::thread::sleep(SLOW_READ);
    assert_eq!(u.recv(&mut buf).unwrap(), 4);
    for _ in 0..5 {
        tx.send_to(b"soon", u.local_addr().unwrap()).unwrap();
        assert_eq!(u.recv(&mut buf).unwrap(), 4);
    }

    // Phase C: small buffers both sides, the peer reads nothing for 300 ms: the one
    // write() call of 512 KiB blocks until it does.
    let l = TcpListener::bind((ip, 0)).unwrap();
    set_buf(l.as_raw_fd(), libc::SO_RCVBUF, 4096);
    let mut w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    set_buf(w.as_raw_fd(), libc::SO_SNDBUF, 4096);
    let (mut r, _) = l.accept().unwrap();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut n = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            match r.read(&mut buf).unwrap() {
                0 => break n,
                k => n += k,
            }
        }
    });
    let t0 = Instant::now();
    let sent = w.write(&vec![7u8; BLOCKED_WRITE]).unwrap();
    assert_eq!(sent, BLOCKED_WRITE, "one blocking write sends everything");
    assert!(t0.elapsed() >= Duration::from_millis(250));
    let writer_port = w.local_addr().unwrap().port();
    drop(w);
    assert_eq!(reader.join().unwrap(), BLOCKED_WRITE);

    Done {
        server_port: done_ports.0,
        client_port: done_ports.1,
        udp_port: u.local_addr().unwrap().port(),
        writer_port,
    }
}

/// The value of the summary row of `metric` containing every one of `parts`.
fn row(out: &str, metric: &str, parts: &[&str]) -> Option<u64> {
    let found = summary_values(out, metric, parts);
    assert!(found.len() <= 1, "{metric} {parts:?}: {found:?}\n{out}");
    found.first().copied()
}

/// A log2 histogram in the summary: (count, [(bucket lower bound in ns, count)]).
fn histogram(out: &str, header: &str) -> (u64, Vec<(f64, u64)>) {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no {header} in\n{out}"));
    let count = head
        .split("count ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {head}"));
    let unit = |t: &str| -> f64 {
        let (n, mul) = match t.chars().last() {
            Some('K') => (&t[..t.len() - 1], 1024f64),
            Some('M') => (&t[..t.len() - 1], 1024f64 * 1024.0),
            Some('G') => (&t[..t.len() - 1], 1024f64 * 1024.0 * 1024.0),
            _ => (t, 1.0),
        };
        n.parse::<f64>().unwrap() * mul
    };
    let buckets = lines
        .take_while(|l| l.starts_with("  ("))
        .map(|l| {
            let lo = l
                .trim_start()
                .trim_start_matches('(')
                .split(',')
                .next()
                .unwrap();
            let n = l
                .split(']')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            (unit(lo), n.parse().unwrap())
        })
        .collect();
    (count, buckets)
}

/// The JSON events of one pod.
fn events_of(out: &str, pod: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.to_string().contains(pod))
        .collect()
}

#[test]
fn slow_readers_and_a_blocked_writer_v4_and_v6() {
    if !require_root("slow_readers_and_a_blocked_writer_v4_and_v6") {
        return;
    }
    // Namespaces first: their inodes cannot be reused by anyone during the run.
    let ns4 = NetnsThread::new().unwrap();
    let ns6 = NetnsThread::new().unwrap();
    let run = start(&[
        "run",
        "scripts/socket_latency.rhai",
        "--for",
        "5s",
        "-o",
        "json",
    ]);
    let v4: IpAddr = [127, 0, 0, 1].into();
    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    let d4 = std::thread::scope(|sc| {
        let a = sc.spawn(|| ns4.run(move || scenario(v4)));
        let b = sc.spawn(|| ns6.run(move || scenario(v6)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (out, _) = finish(run);
    let summary_start = out.find("sonde_socket_latency").unwrap_or(0);
    let summary = &out[summary_start..];

    for (ns, ip, d) in [(&ns4, v4, &d4.0), (&ns6, v6, &d4.1)] {
        let pod = format!("netns:{}", ns.inode);
        let p = format!("pod={pod},");
        const SLOW: &str = "sonde_socket_latency_slow_total";
        let over = |dir: &str, t: &str| {
            row(
                summary,
                SLOW,
                &[
                    &p,
                    &format!("direction={dir},"),
                    &format!("threshold={t}}}"),
                ],
            )
            .unwrap_or(0)
        };
        // Exactly the slow ones over 100 ms; the fast readers add none.
        assert_eq!(over("read", "100ms"), 5, "{ip}: slow reads\n{summary}");
        assert_eq!(over("write", "100ms"), 1, "{ip}: blocked writes\n{summary}");
        // Over 1 ms: those, and the fast readers at most by a scheduling accident.
        let read_1ms = over("read", "1ms");
        assert!(
            (5..=7).contains(&read_1ms),
            "{ip}: reads over 1 ms: {read_1ms}\n{summary}"
        );

        // The read histogram: 3 + 1 samples in (128 ms, 256 ms], one (256 ms, 1 s]
        // (the blocked-writer phase), and at least the 28 fast reads below 1 ms.
        let (count, buckets) = histogram(
            summary,
            &format!("sonde_socket_latency_seconds{{{p}direction=read}}"),
        );
        let over_100ms: u64 = buckets
            .iter()
            .filter(|(lo, _)| *lo >= 64.0 * 1024.0 * 1024.0)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(over_100ms, 5, "{ip}: {buckets:?}");
        let fast: u64 = buckets
            .iter()
            .filter(|(lo, _)| *lo < 1024.0 * 1024.0)
            .map(|(_, n)| n)
            .sum();
        assert!(fast >= 28, "{ip}: fast reads {fast}: {buckets:?}");
        assert!(count >= 33, "{ip}: {count} reads");

        // Events: the 5 slow reads and the blocked write, with their tuples.
        let evs = events_of(&out, &pod);
        assert_eq!(evs.len(), 6, "{ip}: {evs:#?}");
        let f = |e: &serde_json::Value, k: &str| e["fields"][k].clone();
        for e in &evs {
            assert_eq!(e["type"], "SOCKETLATENCY", "{e}");
            assert_eq!(f(e, "saddr"), ip.to_string(), "{e}");
            assert_eq!(f(e, "pid"), std::process::id(), "{e}");
            let ns_ = f(e, "latency_ns").as_i64().unwrap();
            assert!(ns_ > 100_000_000 && ns_ < 2_000_000_000, "{e}");
        }
        let tcp_slow: Vec<_> = evs
            .iter()
            .filter(|e| f(e, "direction") == "read" && f(e, "bytes") == 100)
            .collect();
        assert_eq!(tcp_slow.len(), 3, "{ip}: {evs:#?}");
        for e in tcp_slow {
            assert_eq!(f(e, "protocol"), "TCP", "{e}");
            assert_eq!(f(e, "sport"), d.server_port, "{e}");
            assert_eq!(f(e, "dport"), d.client_port, "{e}");
            assert_eq!(f(e, "daddr"), ip.to_string(), "{e}");
            assert!(f(e, "latency_ns").as_i64().unwrap() >= 145_000_000, "{e}");
        }
        let udp: Vec<_> = evs.iter().filter(|e| f(e, "protocol") == "UDP").collect();
        assert_eq!(udp.len(), 1, "{ip}: {evs:#?}");
        assert_eq!(f(udp[0], "sport"), d.udp_port);
        assert_eq!(f(udp[0], "bytes"), 4);
        let w: Vec<_> = evs
            .iter()
            .filter(|e| f(e, "direction") == "write")
            .collect();
        assert_eq!(w.len(), 1, "{ip}: {evs:#?}");
        assert_eq!(f(w[0], "sport"), d.writer_port);
        assert_eq!(f(w[0], "bytes"), BLOCKED_WRITE as i64);
        assert!(f(w[0], "latency_ns").as_i64().unwrap() >= 250_000_000);
    }
}

/// The `rx` entries whose socket has these ports (local port, peer port).
fn rx_entries(loaded: &sonde::bpf::Loaded, local: u16, peer: u16) -> Vec<Map> {
    let want = ((local as i64) << 16) | peer.swap_bytes() as i64;
    loaded
        .maps
        .decoded_entries("rx")
        .unwrap()
        .into_iter()
        .map(|e| e.cast::<Map>()["value"].clone().cast::<Map>())
        .filter(|v| int(v, "ports") == want)
        .collect()
}

#[test]
fn pending_reads_are_forgotten_on_read_and_close() {
    if !require_root("pending_reads_are_forgotten_on_read_and_close") {
        return;
    }
    let (loaded, _env) = load("socket_latency", &[]);
    let ns = NetnsThread::new().unwrap();
    let (l, mut c, mut srv) = ns.run(|| {
        let l = TcpListener::bind(("::1", 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let srv = l.accept().unwrap().0;
        (l, c, srv)
    });
    let sp = l.local_addr().unwrap().port();
    let cp = c.local_addr().unwrap().port();

    // Unread data: one entry, kept across more data.
    c.write_all(b"one").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(b"two").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let e = rx_entries(&loaded, sp, cp);
    assert_eq!(e.len(), 1, "{e:?}");
    let first_ts = int(&e[0], "ts");
    // Read: forgotten.
    let mut buf = [0u8; 16];
    assert_eq!(srv.read(&mut buf).unwrap(), 6);
    assert!(rx_entries(&loaded, sp, cp).is_empty());
    // Unread again, then both ends closed: forgotten too.
    c.write_all(b"three").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let e = rx_entries(&loaded, sp, cp);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(int(&e[0], "ts") > first_ts);
    drop(c);
    drop(srv);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        rx_entries(&loaded, sp, cp).is_empty(),
        "closed socket still in rx"
    );

    // Send calls: no entry left for this thread once they returned.
    let tid = ns.run(|| {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        for _ in 0..10 {
            c.write_all(&[1u8; 1000]).unwrap();
        }
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    });
    let key = ((std::process::id() as i64) << 32) | tid as i64;
    let left: Vec<_> = loaded
        .maps
        .decoded_entries("tx")
        .unwrap()
        .into_iter()
        .map(|e| e.cast::<Map>())
        .filter(|e| e["key"].as_int().ok() == Some(key))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
