//! tcp_state, for real (root): inside a private network namespace, connects refused by
//! a closed port, connects that time out (SYNs lost to an iptables DROP rule, one SYN
//! retry), a connect abandoned by the application, one that fails on an ICMPv6 error,
//! and a few normal connections held for a known time, in IPv4 and IPv6. The script's
//! exported counters, histogram and events for the namespace's pod must say exactly that.

use sonde::script::record::DecodedEntries;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sonde_tests::run::{events_of, interrupt, start, summary_rows as rows};
use sonde_tests::tcp::{connect, socket, DropRule};
use sonde_tests::{connect_refused, require_root, NetnsThread};
use std::os::fd::AsRawFd;

/// A port on `ip` with nothing listening.
fn closed_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// connect() with TCP_SYNCNT set first; returns the error it fails with.
fn connect_with_syncnt(addr: SocketAddr, syncnt: i32) -> std::io::Error {
    let sock = socket(addr, 0);
    // SAFETY: setsockopt(2) on an open descriptor, with an i32 option of its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            &syncnt as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_SYNCNT: {}", std::io::Error::last_os_error());
    connect(&sock, addr).expect_err(&format!("connect to {addr} must fail"))
}

/// `n` connections to a local listener, each end closed after `hold`.
fn hold_connections(ip: IpAddr, n: usize, hold: Duration) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let pairs: Vec<(TcpStream, TcpStream)> = (0..n)
        .map(|_| {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        })
        .collect();
    std::thread::sleep(hold);
    for (c, s) in pairs {
        drop(c);
        drop(s);
    }
    // Let the FIN/ACK exchange finish, so both ends reach CLOSE.
    std::thread::sleep(Duration::from_millis(50));
}

/// What the namespace did, to compare with what sonde exported.
struct Done {
    timeout_secs: f64,
}

fn scenario() -> Done {
    let v4: IpAddr = [127, 0, 0, 1].into();
    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    // Refused: 3 in IPv4, 2 in IPv6.
    connect_refused((v4, closed_port(v4)).into(), 3);
    connect_refused((v6, closed_port(v6)).into(), 2);
    // Lifetimes: 2 + 2 connections of ~300 ms, both ends: 8 samples in (256, 512] ms.
    std::thread::scope(|s| {
        s.spawn(|| hold_connections(v4, 2, Duration::from_millis(300)));
        s.spawn(|| hold_connections(v6, 2, Duration::from_millis(300)));
    });
    // Timeouts and aborts: every SYN to these ports is lost.
    let p4 = closed_port(v4);
    let p6 = closed_port(v6);
    let _lost4 = DropRule::all(false, "INPUT", p4);
    let _lost6 = DropRule::all(true, "INPUT", p6);
    // ICMPv6: a route through lo to an address nobody has; the looped-back SYN
    // cannot be forwarded and the kernel answers "no route".
    sonde_tests::ip(&["-6", "route", "add", "fd99::2/128", "dev", "lo"]);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for addr in [SocketAddr::from((v4, p4)), SocketAddr::from((v6, p6))] {
            s.spawn(move || {
                // One SYN retry: SYN at 0 s, again at 1 s, give up at 3 s.
                let e = connect_with_syncnt(addr, 1);
                assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "{addr}: {e}");
            });
            s.spawn(move || {
                // The application gives up first and closes the socket.
                let e = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
                assert_eq!(e.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
            });
        }
        s.spawn(|| {
            let e = connect_with_syncnt((Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2), 80).into(), 1);
            assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
        });
    });
    Done {
        timeout_secs: t0.elapsed().as_secs_f64(),
    }
}

fn row(out: &str, metric: &str, parts: &[&str]) -> u64 {
    let r = rows(out, metric, parts);
    assert_eq!(
        r.len(),
        1,
        "one row of {metric} with {parts:?}: {r:?}\n{out}"
    );
    r[0].parse().unwrap()
}

#[test]
fn failed_connects_lifetimes_and_transitions_v4_and_v6() {
    if !require_root("failed_connects_lifetimes_and_transitions_v4_and_v6") {
        return;
    }
    // Stopped once the scenario is over, however long that took.
    let run = start(&[
        "run",
        "scripts/tcp_state.rhai",
        "--for",
        "120s",
        "-p",
        "emit_events=true",
    ]);
    let ns = NetnsThread::new().unwrap();
    let done = ns.run(scenario);
    let (out, _) = interrupt(run);
    assert!(
        done.timeout_secs > 2.5,
        "SYN retries took {}",
        done.timeout_secs
    );
    let pod = format!("pod=netns:{},", ns.inode);

    const F: &str = "sonde_tcp_state_connect_failures_total";
    for (reason, family, n) in [
        ("REFUSED", "IPv4", 3),
        ("REFUSED", "IPv6", 2),
        ("TIMEOUT", "IPv4", 1),
        ("TIMEOUT", "IPv6", 1),
        ("ABORTED", "IPv4", 1),
        ("ABORTED", "IPv6", 1),
        ("UNREACHABLE", "IPv6", 1),
    ] {
        assert_eq!(
            row(
                &out,
                F,
                &[
                    &pod,
                    &format!("reason={reason},"),
                    &format!("family={family}}}")
                ]
            ),
            n,
            "{reason} {family}\n{out}"
        );
    }
    assert_eq!(rows(&out, F, &[&pod]).len(), 7, "no other failures\n{out}");

    // Lifetimes: 8 ends of ~300 ms connections. The histogram header carries the
    // pod, its bucket lines follow it.
    let header = format!(
        "sonde_tcp_state_connection_lifetime_seconds{{pod=netns:{}}}",
        ns.inode
    );
    let mut lines = out.lines().skip_while(|l| !l.starts_with(&header));
    let head = lines.next().unwrap_or_else(|| panic!("no {header}\n{out}"));
    assert!(head.contains("count 8,"), "{head}");
    let sum: f64 = head.rsplit("sum ").next().unwrap().trim().parse().unwrap();
    assert!((2.4..4.0).contains(&sum), "8 x ~0.3 s, got {sum}");
    let buckets: Vec<&str> = lines.take_while(|l| l.starts_with("  (")).collect();
    assert_eq!(buckets.len(), 1, "all in one bucket: {buckets:?}");
    // Bucket bounds print in the kernel's unit (milliseconds): (256, 512].
    let b: Vec<&str> = buckets[0].split_whitespace().collect();
    assert_eq!(&b[..3], &["(256,", "512]", "8"], "{buckets:?}");

    const T: &str = "sonde_tcp_state_transitions_total";
    let t = |from: &str, to: &str| row(&out, T, &[&pod, &format!("from={from},to={to}}}")]);
    // Active opens: 4 held connections; passive: their 4 accepted ends.
    assert_eq!(t("SYN_SENT", "ESTABLISHED"), 4, "{out}");
    assert_eq!(t("SYN_RECV", "ESTABLISHED"), 4, "{out}");
    // Every connect attempt: 5 refused + 2 timeouts + 2 aborts + 1 unreachable + 4.
    assert_eq!(t("CLOSE", "SYN_SENT"), 14, "{out}");
    assert_eq!(t("SYN_SENT", "CLOSE"), 10, "{out}");

    // One event per failure, with its tuple and errno.
    let events = events_of(&out, "TCPCONNECT_FAILED", ns.inode);
    assert_eq!(events.len(), 10, "{events:#?}");
    let timeouts: Vec<&&str> = events
        .iter()
        .filter(|e| e.contains("reason=TIMEOUT"))
        .collect();
    assert_eq!(timeouts.len(), 2, "{events:#?}");
    for e in &timeouts {
        assert!(e.contains("err=110"), "{e}");
        assert!(e.contains("elapsed=3") || e.contains("elapsed=2.9"), "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.contains("reason=UNREACHABLE") && e.contains("daddr=fd99::2 dport=80")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.contains("reason=REFUSED"))
            .all(|e| e.contains("err=111")),
        "{events:#?}"
    );
}

/// Every socket's `start` entry goes when the socket reaches CLOSE: 300 connections
/// (and 100 refused connects with events on, whose SYN_SENT entries are kept too)
/// leave the map no bigger than the machine's other traffic can make it.
#[test]
fn start_entries_are_deleted_on_close() {
    if !require_root("start_entries_are_deleted_on_close") {
        return;
    }
    use sonde::script::ParamValue;
    let (loaded, _env) =
        sonde_tests::kernel::load("tcp_state", &[("emit_events", ParamValue::Bool(true))]);
    let size = || loaded.maps.decoded_entries("start").unwrap().len();
    let before = size();
    let ns = NetnsThread::new().unwrap();
    ns.run(|| {
        let v4: IpAddr = [127, 0, 0, 1].into();
        connect_refused((v4, closed_port(v4)).into(), 100);
        for _ in 0..3 {
            hold_connections(v4, 50, Duration::ZERO);
            hold_connections(Ipv6Addr::LOCALHOST.into(), 50, Duration::ZERO);
        }
    });
    let transitions: u64 = sonde_tests::kernel::map_entries(&loaded, "counts", ns.inode)
        .iter()
        .filter(|(k, _)| sonde_tests::kernel::s(k, "newstate") == "ESTABLISHED")
        .map(|(_, v)| *v as u64)
        .sum();
    assert_eq!(transitions, 600, "both ends of 300 connections were seen");
    let after = size();
    assert!(
        after < before + 50,
        "start grew from {before} to {after}: entries of closed sockets leaked"
    );
}
