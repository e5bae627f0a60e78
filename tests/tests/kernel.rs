//! Kernel tests (root): load the real objects into the running kernel, make real
//! resets and drops inside a private network namespace, and assert exact counts and
//! fields. Only records from the test's own namespace are considered, so other
//! traffic on the machine cannot disturb them.

use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};

use rhai::{Dynamic, Map};
use sonde::bpf;
use sonde::bpf::catalog::{Attach, Hook, ProgramSpec, Variant};
use sonde::btf::KernelBtf;
use sonde::script::ParamValue;
use sonde_tests::kernel::{counts, drain, int, load, ours, s};
use sonde_tests::{connect_refused, require_root, NetnsThread};

/// The runtime's test lock: kernel tests attach to shared tracepoints; run them one
/// at a time so their counts stay exact even when the runner is parallel.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The variants every scenario below runs under: the one the loader picks on this
/// kernel (6.18, its own BTF: the BTF-enabled raw tracepoints) and the classic
/// tracepoints, asked for with the `variant` param as a user would.
const VARIANTS: [(Option<&str>, &str); 2] = [(None, "tp_btf"), (Some("tracepoint"), "tracepoint")];

/// Loads `program` with `params`, asking for `variant` (None: the loader's choice),
/// and checks which variant attached.
fn load_as(
    program: &str,
    params: &[(&str, ParamValue)],
    (variant, expected): (Option<&str>, &str),
) -> (
    sonde::bpf::Loaded,
    std::sync::Arc<sonde::bpf::decode::DecodeEnv>,
) {
    let mut params = params.to_vec();
    if let Some(v) = variant {
        params.push(("variant", ParamValue::Str(v.into())));
    }
    let (loaded, env) = load(program, &params);
    assert_eq!(
        loaded.variant.name, expected,
        "{program}: variant asked {variant:?}"
    );
    eprintln!("{program}: variant {}", loaded.variant.name);
    (loaded, env)
}

fn closed_port(ns: &NetnsThread, v6: bool) -> u16 {
    ns.run(move || {
        let l = if v6 {
            TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap()
        } else {
            TcpListener::bind(("127.0.0.1", 0)).unwrap()
        };
        l.local_addr().unwrap().port()
    })
}

#[test]
fn tcp_reset_nosock_v4_and_v6_exact() {
    if !require_root("tcp_reset_nosock_v4_and_v6_exact") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in VARIANTS {
        tcp_reset_nosock(variant);
    }
}

/// 6.10+: tcp_send_reset fires for resets with no socket, in both variants.
fn tcp_reset_nosock(variant: (Option<&str>, &str)) {
    let (mut loaded, env) = load_as(
        "tcp_reset",
        &[("emit_events", ParamValue::Bool(true))],
        variant,
    );
    let ns = NetnsThread::new().unwrap();
    let p4 = closed_port(&ns, false);
    let p6 = closed_port(&ns, true);
    let v4: Vec<u16> = ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 3));
    let v6: Vec<u16> =
        ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 2));

    let events = ours(drain(&mut loaded, &env), ns.inode);
    let nosock: Vec<&Map> = events.iter().filter(|e| s(e, "kind") == "NOSOCK").collect();
    assert_eq!(
        nosock.len(),
        5,
        "one NOSOCK reset per refused connect: {events:#?}"
    );
    for (e, local) in nosock[..3].iter().zip(&v4) {
        // The reset goes from the closed port back to the client.
        assert_eq!(s(e, "saddr"), "127.0.0.1");
        assert_eq!(int(e, "sport"), p4 as i64);
        assert_eq!(s(e, "daddr"), "127.0.0.1");
        assert_eq!(int(e, "dport"), *local as i64);
        assert_eq!(int(e, "family"), libc::AF_INET as i64);
        assert_eq!(s(e, "state"), "CLOSE");
        let pod = e["pod"].clone().cast::<Map>();
        assert_eq!(pod["name"].to_string(), format!("netns:{}", ns.inode));
    }
    for (e, local) in nosock[3..].iter().zip(&v6) {
        assert_eq!(s(e, "saddr"), "::1");
        assert_eq!(int(e, "sport"), p6 as i64);
        assert_eq!(s(e, "daddr"), "::1");
        assert_eq!(int(e, "dport"), *local as i64);
        assert_eq!(int(e, "family"), libc::AF_INET6 as i64);
    }
    let c = counts(&loaded, ns.inode);
    let nosock_count: i64 = c
        .iter()
        .filter(|(k, _)| s(k, "kind") == "NOSOCK")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(nosock_count, 5, "kernel-side count: {c:?}");
}

#[test]
fn tcp_reset_active_and_receive() {
    if !require_root("tcp_reset_active_and_receive") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in VARIANTS {
        tcp_reset_active_and_receive_as(variant);
    }
}

fn tcp_reset_active_and_receive_as(variant: (Option<&str>, &str)) {
    let (mut loaded, env) = load_as(
        "tcp_reset",
        &[("emit_events", ParamValue::Bool(true))],
        variant,
    );
    let ns = NetnsThread::new().unwrap();
    let (server_port, client_port) = ns.run(|| {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let server_port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
        let client_port = c.local_addr().unwrap().port();
        let (srv, _) = l.accept().unwrap();
        // SO_LINGER {on, 0}: close() aborts with a reset instead of a FIN.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt on an open socket with a correctly sized struct.
        let rc = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(srv);
        (server_port, client_port)
    });
    let events = ours(drain(&mut loaded, &env), ns.inode);
    let active: Vec<&Map> = events.iter().filter(|e| s(e, "kind") == "ACTIVE").collect();
    let receive: Vec<&Map> = events
        .iter()
        .filter(|e| s(e, "kind") == "RECEIVE")
        .collect();
    assert_eq!(active.len(), 1, "{events:#?}");
    assert_eq!(int(active[0], "sport"), client_port as i64);
    assert_eq!(int(active[0], "dport"), server_port as i64);
    // An abortive close moves the socket to CLOSE before the reset goes out.
    assert_eq!(s(active[0], "state"), "CLOSE");
    assert_eq!(receive.len(), 1, "{events:#?}");
    assert_eq!(
        int(receive[0], "sport"),
        server_port as i64,
        "the receiver's view: its own port first"
    );
    assert_eq!(int(receive[0], "dport"), client_port as i64);
}

#[test]
fn tcp_reset_events_off_still_counts() {
    if !require_root("tcp_reset_events_off_still_counts") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in VARIANTS {
        tcp_reset_events_off(variant);
    }
}

fn tcp_reset_events_off(variant: (Option<&str>, &str)) {
    let (mut loaded, env) = load_as(
        "tcp_reset",
        &[("emit_events", ParamValue::Bool(false))],
        variant,
    );
    let ns = NetnsThread::new().unwrap();
    let p = closed_port(&ns, false);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p)), 4));
    assert!(
        ours(drain(&mut loaded, &env), ns.inode).is_empty(),
        "emit_events=false sends nothing"
    );
    let c = counts(&loaded, ns.inode);
    assert_eq!(
        c.iter()
            .filter(|(k, _)| s(k, "kind") == "NOSOCK")
            .map(|(_, v)| v)
            .sum::<i64>(),
        4
    );
}

#[test]
fn packet_loss_counts_by_reason_in_kernel() {
    if !require_root("packet_loss_counts_by_reason_in_kernel") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in VARIANTS {
        packet_loss_counts(variant);
    }
}

fn packet_loss_counts(variant: (Option<&str>, &str)) {
    let (mut loaded, env) = load_as("packet_loss", &[], variant);
    let ns = NetnsThread::new().unwrap();
    let p4 = closed_port(&ns, false);
    let p6 = closed_port(&ns, true);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 7));
    ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 3));
    assert!(
        ours(drain(&mut loaded, &env), ns.inode).is_empty(),
        "events are off by default"
    );
    let c = counts(&loaded, ns.inode);
    let get = |proto: &str| -> i64 {
        c.iter()
            .filter(|(k, _)| s(k, "reason") == "NO_SOCKET" && s(k, "protocol") == proto)
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(get("IPv4"), 7, "{c:?}");
    assert_eq!(get("IPv6"), 3, "{c:?}");
}

#[test]
fn packet_loss_events_with_tuple_and_stack() {
    if !require_root("packet_loss_events_with_tuple_and_stack") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in VARIANTS {
        packet_loss_events(variant);
    }
}

fn packet_loss_events(variant: (Option<&str>, &str)) {
    let (mut loaded, env) = load_as(
        "packet_loss",
        &[
            ("emit_events", ParamValue::Bool(true)),
            ("stack", ParamValue::Bool(true)),
        ],
        variant,
    );
    let ns = NetnsThread::new().unwrap();
    let p = closed_port(&ns, false);
    let locals = ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p)), 2));
    let events: Vec<Map> = ours(drain(&mut loaded, &env), ns.inode)
        .into_iter()
        .filter(|e| s(e, "reason") == "NO_SOCKET")
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    for (e, local) in events.iter().zip(&locals) {
        // The dropped packet is the client's SYN: its own direction.
        assert_eq!(s(e, "saddr"), "127.0.0.1");
        assert_eq!(int(e, "sport"), *local as i64);
        assert_eq!(int(e, "dport"), p as i64);
        assert_eq!(s(e, "l4proto"), "TCP");
        let stack: Vec<Dynamic> = e["stack"].clone().cast::<rhai::Array>();
        assert!(!stack.is_empty(), "stack requested: {e:?}");
        assert!(
            stack
                .iter()
                .any(|f| f.to_string().starts_with("tcp_v4_rcv")),
            "the drop happens under tcp_v4_rcv: {stack:?}"
        );
        assert!(s(e, "location").contains('+'), "location symbolized: {e:?}");
    }
}

/// A burst larger than the ring buffer: what does not fit is counted as lost in the
/// kernel, never silently missing: delivered + lost accounts for every drop.
#[test]
fn ring_buffer_overflow_is_counted() {
    if !require_root("ring_buffer_overflow_is_counted") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut loaded, env) = load("packet_loss", &[("emit_events", ParamValue::Bool(true))]);
    let ns = NetnsThread::new().unwrap();
    const N: usize = 30_000;
    ns.run(|| {
        // UDP to a closed port: each datagram is dropped with NO_SOCKET.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for _ in 0..N {
            let _ = s.send_to(b"x", closed);
        }
    });
    // Nothing was read during the burst: the 1 MiB ring holds ~13k records.
    let events = drain(&mut loaded, &env);
    let ours = events
        .iter()
        .filter(|e| {
            int(e, "netns") == ns.inode as i64
                && s(e, "l4proto") == "UDP"
                && s(e, "reason") == "NO_SOCKET"
        })
        .count();
    let lost = loaded.lost() as usize;
    let counted: i64 = counts(&loaded, ns.inode)
        .iter()
        .filter(|(k, _)| s(k, "reason") == "NO_SOCKET")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        counted as usize, N,
        "the kernel-side count is exact whatever the ring does"
    );
    assert!(
        ours < N,
        "the burst must overflow the ring for this test to mean anything"
    );
    assert!(lost > 0, "losses are counted");
    assert!(
        ours + lost >= N,
        "delivered {ours} + lost {lost} must cover all {N} drops"
    );
}

/// A test-only object (`tests/bpf/verifier_reject.bpf.c`): one program the verifier
/// rejects (a read past the stack) and one it accepts, on the same hook, as two
/// variants in that order.
static VERIFIER_REJECT_OBJ: &[u8] = aya::include_bytes_aligned!("../bpf/verifier_reject.bpf.o");

const GETPPID: Hook = Hook::Tracepoint {
    category: "syscalls",
    name: "sys_enter_getppid",
};

static VERIFIER_REJECT: ProgramSpec = ProgramSpec {
    name: "verifier_reject",
    summary: "a program the verifier rejects, then one it accepts",
    object: VERIFIER_REJECT_OBJ,
    variants: &[
        Variant {
            name: "rejected",
            summary: "reads 1 KiB below its stack frame",
            attach: &[Attach {
                program: "past_the_stack",
                hook: GETPPID,
            }],
            requires: &[],
            knobs: &[],
        },
        Variant {
            name: "accepted",
            summary: "returns 0",
            attach: &[Attach {
                program: "accepted",
                hook: GETPPID,
            }],
            requires: &[],
            knobs: &[],
        },
    ],
};

/// What the kernel's verifier says of `past_the_stack`.
const VERDICT: &str = "invalid read from stack R10 off=-1024 size=8";

/// A verifier rejection through the loader every program goes through: the variant
/// is skipped with a one-line reason, the next one attaches, the error keeps the
/// program, variant, hook and the verifier's whole log, and `sonde probes --verbose`
/// prints that log.
#[test]
fn a_verifier_rejection_keeps_its_log_and_probes_verbose_prints_it() {
    if !require_root("a_verifier_rejection_keeps_its_log_and_probes_verbose_prints_it") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let btf = KernelBtf::locate(None).expect("kernel BTF");

    let loaded = bpf::load(&VERIFIER_REJECT, &[], &btf).expect("the accepted variant loads");
    assert_eq!(loaded.variant.name, "accepted");
    let [skipped] = &loaded.skipped[..] else {
        panic!("one variant skipped: {:?}", loaded.skipped);
    };
    assert_eq!(skipped.variant, "rejected");
    let e = skipped
        .reason
        .load_error()
        .expect("a load error, not a precondition");
    assert_eq!((e.program, e.variant), ("verifier_reject", "rejected"));
    assert_eq!(e.function(), Some("past_the_stack"));
    assert_eq!(
        e.hook().map(ToString::to_string).as_deref(),
        Some("tracepoint syscalls:sys_enter_getppid")
    );
    assert_eq!(e.stage(), "load", "{e}");
    let log = e.verifier_log().expect("the verifier's log is kept");
    assert!(log.contains(VERDICT), "{log}");
    assert!(
        log.lines().count() > 1,
        "the whole log, not its last line: {log}"
    );
    let reason = skipped.reason.to_string();
    assert!(!reason.contains('\n'), "one line: {reason}");
    assert!(
        reason.starts_with(&format!(
            "past_the_stack (tracepoint syscalls:sys_enter_getppid): the verifier rejected it: {VERDICT} ("
        )),
        "{reason}"
    );
    drop(loaded);

    // Asked for by name, it is the only one tried and the load fails with it.
    let only = [("variant".to_string(), ParamValue::Str("rejected".into()))];
    let err = bpf::load(&VERIFIER_REJECT, &only, &btf)
        .err()
        .expect("nothing loads");
    let text = err.to_string();
    assert!(
        text.starts_with("program `verifier_reject`: no variant can run on this kernel: rejected: past_the_stack"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");

    let trials = sonde::cli::probes::trials(&VERIFIER_REJECT, Some(&btf)).unwrap();
    let report = sonde::cli::probes::verbose_text(&VERIFIER_REJECT, &trials);
    let lines: Vec<&str> = report.lines().collect();
    let failed = lines
        .iter()
        .position(|l| l.trim_start().starts_with("failed: past_the_stack"))
        .unwrap_or_else(|| panic!("no failure line:\n{report}"));
    assert!(lines[failed].contains(VERDICT), "{report}");
    assert!(
        lines[failed + 1].trim_start().starts_with("verifier log ("),
        "the log follows its one-line reason:\n{report}"
    );
    // The log of this load (each load has its own timings).
    let log = trials[0]
        .1
        .as_ref()
        .err()
        .and_then(|r| r.load_error())
        .and_then(|e| e.verifier_log())
        .expect("the trial keeps the log too");
    for line in log.trim_end().lines() {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_end().ends_with(line.trim_end())),
            "log line {line:?} missing:\n{report}"
        );
    }
    assert!(
        report.contains("verifier_reject  [loads: variant accepted]"),
        "{report}"
    );
    assert!(
        report.contains("loaded and attached (detached again)"),
        "{report}"
    );
}
