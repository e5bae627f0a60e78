//! tcp_synq, for real (root): listeners with a backlog of 1 that never accept, in
//! private network namespaces, refuse connections, and the script's counts for each
//! namespace's pod must equal what `nstat` says of the namespace's TcpExt
//! ListenOverflows and ListenDrops.
//!
//! Two ways to overflow: handshakes completing while the accept queue is full (the
//! clients' final ACKs are held back by an iptables rule until every SYN was answered,
//! then the clients send data: the `ACCEPT_QUEUE` kind, seen by every variant), and
//! SYNs arriving while it is full (plain connects: `SYN_ACCEPT_QUEUE`, seen only by
//! the kprobe variant; the kernel frees a refused SYN as consumed, not as a drop).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use sonde_tests::run::{events_of, interrupt, start_script};
use sonde_tests::tcp::{connect_nowait, loopback, DropRule};
use sonde_tests::{require_root, NetnsThread};

/// Connections each namespace starts.
const CLIENTS: usize = 8;

/// TcpExt (ListenOverflows, ListenDrops) of the calling thread's namespace, from nstat.
fn listen_counters() -> (u64, u64) {
    let out = Command::new("nstat")
        .args(["-asz", "TcpExtListenOverflows", "TcpExtListenDrops"])
        .output()
        .expect("nstat");
    assert!(out.status.success(), "nstat failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(name)).then(|| f.next()?.parse::<u64>().ok())?
            })
            .unwrap_or_else(|| panic!("nstat has no {name}: {text}"))
    };
    (value("TcpExtListenOverflows"), value("TcpExtListenDrops"))
}

/// A listener on loopback with a backlog of 1, never accepting.
fn listener(v6: bool) -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(loopback(v6)).unwrap();
    // SAFETY: listen() again on the bound socket only lowers its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 1) }, 0);
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// What one namespace did: its listener and the rise of its counters.
struct Overflows {
    listener: String,
    overflows: u64,
    drops: u64,
}

impl Overflows {
    /// Asserts the kernel refused every client the queue had no room for (two fit:
    /// backlog + 1), and counted each refusal as both an overflow and a drop.
    fn all_refused(&self, what: &str) {
        assert!(
            self.overflows >= (CLIENTS - 2) as u64,
            "{what}: ListenOverflows rose by {}",
            self.overflows
        );
        assert_eq!(
            self.drops, self.overflows,
            "{what}: every drop is an overflow here"
        );
    }
}

/// Handshakes completing on a full accept queue: every SYN is answered while the
/// queue is empty (the clients' ACKs are dropped on the way out), then the clients
/// send data, which completes their handshakes: two fit (backlog + 1), the others
/// overflow on every retransmission of their data.
fn overflow_on_final_ack(v6: bool) -> Overflows {
    let (l, addr) = listener(v6);
    let before = listen_counters();
    let hold_acks = DropRule::bare_acks(v6, "OUTPUT", addr.port());
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect_nowait(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(hold_acks);
    for c in &mut clients {
        let _ = c.write(b"x");
    }
    counted_since(before, addr, (l, clients))
}

/// SYNs arriving on a full accept queue: plain connects, each handshake done before
/// the next starts; two fit, the SYNs of the others are refused and retransmitted.
fn overflow_on_syn() -> Overflows {
    let (l, addr) = listener(false);
    let before = listen_counters();
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect_nowait(addr)).collect();
    counted_since(before, addr, (l, clients))
}

/// What the kernel counted since `before`, once the last retransmissions are in
/// (2.5 s); `held` (the listener and its clients) lives until then.
fn counted_since(before: (u64, u64), addr: SocketAddr, held: impl Sized) -> Overflows {
    std::thread::sleep(Duration::from_millis(2500));
    let after = listen_counters();
    drop(held);
    Overflows {
        listener: listener_label(addr),
        overflows: after.0 - before.0,
        drops: after.1 - before.1,
    }
}

/// The script's `listener` label of a listening address.
fn listener_label(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The exported count of one pod, listener and kind (0 when there is no such row).
fn exported(out: &str, ns: &NetnsThread, listener: &str, kind: &str) -> u64 {
    let parts = [
        format!("pod=netns:{},", ns.inode),
        format!("listener={listener},"),
        format!("kind={kind}}}"),
    ];
    out.lines()
        .filter(|l| !l.starts_with("type=") && parts.iter().all(|p| l.contains(p.as_str())))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// The variant the loader picks here: tp_btf on 6.18 (no kprobes), kprobe where the
/// kernel has them.
#[test]
fn refusals_match_the_namespace_listen_counters() {
    if !require_root("refusals_match_the_namespace_listen_counters") {
        return;
    }
    refusals_match(None);
}

/// The classic tracepoint, asked for as a user would (`-p variant=tracepoint`).
#[test]
fn refusals_match_the_namespace_listen_counters_classic_tracepoint() {
    if !require_root("refusals_match_the_namespace_listen_counters_classic_tracepoint") {
        return;
    }
    refusals_match(Some("tracepoint"));
}

fn refusals_match(variant: Option<&str>) {
    // Stopped once the namespaces' counters are read, however long that took.
    let run = start_script(
        "scripts/tcp_synq.rhai",
        "120s",
        &["emit_events=true"],
        variant,
    );
    let ns4 = NetnsThread::new().unwrap();
    let ns6 = NetnsThread::new().unwrap();
    let nssyn = NetnsThread::new().unwrap();
    let (ack4, ack6, syn) = std::thread::scope(|s| {
        let a = s.spawn(|| ns4.run(|| overflow_on_final_ack(false)));
        let b = s.spawn(|| ns6.run(|| overflow_on_final_ack(true)));
        let c = s.spawn(|| nssyn.run(overflow_on_syn));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let (out, err) = interrupt(run);
    let attached = err
        .lines()
        .find_map(|l| l.split("tcp_synq attached (variant ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("tcp_synq did not attach: {err}"))
        .to_string();
    if let Some(v) = variant {
        assert_eq!(attached, v, "{err}");
    }

    for (ns, family, o) in [(&ns4, "IPv4", &ack4), (&ns6, "IPv6", &ack6)] {
        let counted = exported(&out, ns, &o.listener, "ACCEPT_QUEUE");
        eprintln!(
            "{family} final ACKs ({attached}): ListenOverflows +{}, ListenDrops +{}, exported ACCEPT_QUEUE {counted}",
            o.overflows, o.drops
        );
        o.all_refused(family);
        assert_eq!(
            counted, o.overflows,
            "{family}: exported ACCEPT_QUEUE vs the namespace's ListenOverflows\n{out}"
        );
        for kind in ["SYN_ACCEPT_QUEUE", "SYN_QUEUE"] {
            assert_eq!(
                exported(&out, ns, &o.listener, kind),
                0,
                "{family}: {kind}\n{out}"
            );
        }
        // One event per refusal, naming the listener and its full queue.
        let events = events_of(&out, "TCPSYNQ_ACCEPT_QUEUE", ns.inode);
        assert_eq!(events.len() as u64, counted, "{out}");
        let port = o.listener.rsplit(':').next().unwrap();
        assert!(
            events.iter().all(|e| e.contains(&format!(" sport={port} "))
                && e.contains(" backlog=2 max_backlog=1 ")),
            "{events:#?}"
        );
    }

    let syn_accept = exported(&out, &nssyn, &syn.listener, "SYN_ACCEPT_QUEUE");
    let ack = exported(&out, &nssyn, &syn.listener, "ACCEPT_QUEUE");
    eprintln!(
        "SYNs ({attached}): ListenOverflows +{}, ListenDrops +{}, exported SYN_ACCEPT_QUEUE {syn_accept}, ACCEPT_QUEUE {ack}",
        syn.overflows, syn.drops
    );
    syn.all_refused("SYNs");
    if attached == "kprobe" {
        assert_eq!(syn_accept + ack, syn.overflows, "{out}");
    } else {
        // The tracepoint variants do not see refused SYNs (see the module comment).
        assert_eq!(syn_accept + ack, 0, "{out}");
    }
}
