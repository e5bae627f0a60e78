//! tcp_retrans, for real (root): TCP connections inside private network namespaces
//! lose their packets to an iptables DROP rule for a while, so the kernel retransmits
//! data, SYNs and SYN-ACKs; the script's exported counters for each namespace's pod
//! must equal what the namespace's own Tcp RetransSegs counter says, per family.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use sonde_tests::run::{events_of, interrupt, start_script, summary_values};
use sonde_tests::tcp::{loopback, DropRule};
use sonde_tests::{require_root, NetnsThread};

/// `Tcp: RetransSegs` of the calling thread's network namespace.
fn retrans_segs() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let names: Vec<&str> = tcp.next().unwrap().split_whitespace().collect();
    let values: Vec<&str> = tcp.next().unwrap().split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RetransSegs").unwrap();
    values[i].parse().unwrap()
}

/// SO_LINGER {1, 0}: close() resets the connection, so nothing is left to retransmit.
fn abort(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// In the namespace: data retransmits (ESTABLISHED), a SYN retransmit (SYN_SENT), then
/// SYN-ACK retransmits (NEW_SYN_RECV). Returns the namespace's RetransSegs increase.
fn lose_packets(v6: bool) -> u64 {
    let l = TcpListener::bind(loopback(v6)).unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let (srv, _) = l.accept().unwrap();
    let before = retrans_segs();

    // Everything sent to the listener's port is lost: the client retransmits its
    // data, and a second client its SYN.
    let drop_all = DropRule::all(v6, "INPUT", addr.port());
    c.write_all(&[7u8; 1000]).unwrap();
    // Gives up after one SYN retransmission (at 1 s) and closes the socket.
    let syn = TcpStream::connect_timeout(&addr, Duration::from_millis(1300));
    assert!(syn.is_err(), "the SYN must be lost");
    abort(c);
    drop(srv);
    drop(drop_all);

    // Only the client's bare ACKs are lost: the handshake never completes on the
    // listener's side, which retransmits its SYN-ACK.
    let drop_acks = DropRule::bare_acks(v6, "INPUT", addr.port());
    let half = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    // The reset (RST|ACK) passes the rule and removes the pending connection.
    abort(half);
    std::thread::sleep(Duration::from_millis(100));
    drop(drop_acks);
    retrans_segs() - before
}

/// Sum of the summary rows of `metric` that contain every one of `parts`.
fn rows_sum(out: &str, metric: &str, parts: &[&str]) -> u64 {
    summary_values(out, metric, parts).iter().sum()
}

/// The variant the loader picks here (6.18, its own BTF): the BTF-enabled raw
/// tracepoints.
#[test]
fn retransmits_match_the_namespace_counter_v4_and_v6() {
    if !require_root("retransmits_match_the_namespace_counter_v4_and_v6") {
        return;
    }
    retransmits_match(None, "tp_btf");
}

/// The classic tracepoints, asked for as a user would (`-p variant=tracepoint`).
#[test]
fn retransmits_match_the_namespace_counter_classic_tracepoints() {
    if !require_root("retransmits_match_the_namespace_counter_classic_tracepoints") {
        return;
    }
    retransmits_match(Some("tracepoint"), "tracepoint");
}

fn retransmits_match(variant: Option<&str>, expected: &str) {
    // Stopped once the namespaces' counters are read, however long that took.
    let run = start_script(
        "scripts/tcp_retrans.rhai",
        "120s",
        &["emit_events=true"],
        variant,
    );
    let ns4 = NetnsThread::new().unwrap();
    let ns6 = NetnsThread::new().unwrap();
    let (n4, n6) = std::thread::scope(|s| {
        let a = s.spawn(|| ns4.run(|| lose_packets(false)));
        let b = s.spawn(|| ns6.run(|| lose_packets(true)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (out, err) = interrupt(run);
    assert!(
        err.contains(&format!("tcp_retrans attached (variant {expected})")),
        "variant {expected} expected: {err}"
    );
    const M: &str = "sonde_tcp_retrans_segments_total";
    for (ns, family, kernel) in [(&ns4, "IPv4", n4), (&ns6, "IPv6", n6)] {
        let pod = format!("pod=netns:{},", ns.inode);
        let fam = format!("family={family},");
        eprintln!(
            "{family}: RetransSegs +{kernel}, exported {}",
            rows_sum(&out, M, &[&pod, &fam])
        );
        // At least: 1 data retransmit, 1 SYN, 1 SYN-ACK.
        assert!(kernel >= 3, "{family}: RetransSegs rose by {kernel}");
        assert_eq!(
            rows_sum(&out, M, &[&pod, &fam]),
            kernel,
            "{family}: exported total vs the namespace's RetransSegs\n{out}"
        );
        for state in ["ESTABLISHED", "SYN_SENT", "NEW_SYN_RECV"] {
            assert!(
                rows_sum(&out, M, &[&pod, &fam, &format!("state={state}}}")]) >= 1,
                "{family}: no {state} retransmission\n{out}"
            );
        }
        // The other family's rows are empty for this namespace.
        let other = if family == "IPv4" { "IPv6" } else { "IPv4" };
        assert_eq!(
            rows_sum(&out, M, &[&pod, &format!("family={other},")]),
            0,
            "{out}"
        );
        // One event per retransmitted segment here (no TSO on these small writes).
        let events = events_of(&out, "TCPRETRANS", ns.inode);
        assert_eq!(events.len() as u64, kernel, "{out}");
        let (saddr, wanted) = if family == "IPv4" {
            ("saddr=127.0.0.1 ", "daddr=127.0.0.1 ")
        } else {
            ("saddr=::1 ", "daddr=::1 ")
        };
        assert!(
            events
                .iter()
                .all(|e| e.contains(saddr) && e.contains(wanted) && e.contains("protocol=TCP")),
            "{events:#?}"
        );
        assert!(
            events.iter().any(|e| e.contains("state=NEW_SYN_RECV")),
            "{events:#?}"
        );
    }
}
