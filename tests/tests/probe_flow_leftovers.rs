//! flow after `kill -9` (root, the real binary): what a killed sonde leaves in the
//! kernel never runs beside the next one, and nothing stays after a normal stop.
//!
//! `sonde run scripts/flow.rhai` is attached to the host end of a pod's veth (a private
//! namespace behind a veth pair; the host's own interfaces are not touched), killed with
//! SIGKILL, and started again, for both attach modes:
//! - `netlink`: a clsact qdisc and `cls_bpf` filters outlive the process (the test
//!   checks they are there, holding the dead process's owner slot so that no other
//!   sonde removes them while it looks); the next start removes them, attaches exactly
//!   one set, counts the traffic exactly, and a normal stop leaves nothing, qdisc
//!   included. Four restarts in a row, as in the report that found it.
//! - `tcx`: links die with the process; a killed netlink-mode sonde's filters are
//!   removed by a TCX start too.
//!
//! And what is not sonde's stays: the filters of a sonde still running, another
//! tool's filters (u32, classic BPF, an eBPF program named like sonde's at sonde's
//! own priority), and a clsact qdisc that existed before.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use sonde::bpf::tc::filters::{self, Handle};
use sonde_tests::require_root;
use sonde_tests::run::{start, stop_with, summary_row, Run};
use sonde_tests::veth::{no_sonde_left, text, Pod};

/// A filter as `tc filter show dev IFACE DIR` prints it.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    pref: u16,
    handle: u32,
    /// The program id (eBPF filters).
    id: Option<u32>,
    line: String,
}

impl Shown {
    /// The decoded handle when the filter is sonde's (its priority and handle).
    fn sonde(&self) -> Option<Handle> {
        (self.pref == filters::PRIORITY)
            .then(|| Handle::decode(self.handle))
            .flatten()
    }
}

/// The filters on `iface` in direction `dir` (not the per-priority lines).
fn shown(iface: &str, dir: &str) -> Vec<Shown> {
    let out = text("tc", &["filter", "show", "dev", iface, dir]);
    out.lines()
        .filter(|l| l.contains(" handle ") || l.contains(" fh "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1).copied())
            };
            let handle = after("handle")
                .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            Shown {
                pref: after("pref").and_then(|p| p.parse().ok()).unwrap_or(0),
                handle,
                id: after("id").and_then(|i| i.parse().ok()),
                line: l.to_string(),
            }
        })
        .collect()
}

/// sonde's filters on `iface`: (ingress, egress).
fn sonde_sets(iface: &str) -> (Vec<Shown>, Vec<Shown>) {
    let mine = |dir| {
        shown(iface, dir)
            .into_iter()
            .filter(|f| f.sonde().is_some())
            .collect()
    };
    (mine("ingress"), mine("egress"))
}

fn has_clsact(iface: &str) -> bool {
    text("tc", &["qdisc", "show", "dev", iface]).contains("clsact")
}

/// `sonde run scripts/flow.rhai` on `iface` in `mode`, once attached.
fn flow(iface: &str, mode: &str) -> Run {
    start(&[
        "run",
        "scripts/flow.rhai",
        "-p",
        &format!("interfaces={iface}"),
        "-p",
        &format!("tc_mode={mode}"),
        "-p",
        "peer=subnet",
    ])
}

fn kill9(mut run: Run) {
    run.child.kill().expect("SIGKILL sonde");
    run.child.wait().expect("reap sonde");
}

/// SIGTERM, then sonde's summary: (stdout, stderr).
fn stop(run: Run) -> (String, String) {
    stop_with(run, libc::SIGTERM)
}

/// The test's pod, named `name` with address byte `n`; `None` (the test skipped)
/// without root.
fn test_pod(test: &str, name: &str, n: u8) -> Option<Pod> {
    require_root(test).then(|| Pod::new(name, n))
}

/// Makes `pod`'s traffic, stops `run` (SIGTERM) and asserts it counted it.
fn traffic_counted(run: Run, pod: &Pod, n: u8) {
    traffic(pod);
    stop_counted(run, pod, n);
}

/// Stops `run` (SIGTERM) and asserts it counted `pod`'s traffic.
fn stop_counted(run: Run, pod: &Pod, n: u8) {
    let (out, err) = stop(run);
    assert_counted(pod, n, &out, &err);
}

/// Asserts the one sonde set on `iface` is (ingress, egress) and returns it.
fn one_netlink_set(iface: &str) -> (Shown, Shown) {
    let (ingress, egress) = sonde_sets(iface);
    assert!(
        ingress.len() == 1 && egress.len() == 1,
        "one sonde filter per direction on {iface}: ingress {ingress:#?} egress {egress:#?}"
    );
    let net = text("bpftool", &["net", "show", "dev", iface]);
    assert!(
        net.contains(&format!("tc_ingress id {}", ingress[0].id.unwrap_or(0)))
            && net.contains(&format!("tc_egress id {}", egress[0].id.unwrap_or(0))),
        "bpftool net agrees: {net}"
    );
    (ingress[0].clone(), egress[0].clone())
}

/// Sends 5 datagrams of 200 bytes from the pod; after `stop`, the summary must
/// count exactly those.
fn traffic(pod: &Pod) {
    pod.udp(pod.v4, 5, 200);
}

fn assert_counted(pod: &Pod, n: u8, out: &str, err: &str) {
    let podname = format!("pod=netns:{}", pod.ns.inode);
    let peer = format!("peer=10.77.{n}.0/24");
    let row = [
        podname.as_str(),
        "direction=tx",
        "protocol=UDP",
        peer.as_str(),
    ];
    let (bytes, packets) = out
        .split_once("sonde_flow_packets_total")
        .unwrap_or_else(|| panic!("no packets family in:\n{out}\n{err}"));
    assert_eq!(summary_row(bytes, &row), 5 * (14 + 20 + 8 + 200), "{out}");
    assert_eq!(summary_row(packets, &row), 5, "{out}");
}

#[test]
fn flow_killed_netlink_restarts_with_one_set() {
    let n = 61;
    let Some(pod) = test_pod("flow_killed_netlink_restarts_with_one_set", "r", n) else {
        return;
    };
    let h = pod.host.as_str();
    let mut checked = 0;
    for round in 0..4 {
        let run = flow(h, "netlink");
        let (ingress, egress) = one_netlink_set(h);
        assert!(has_clsact(h));
        let slot = ingress.sonde().unwrap().slot;
        kill9(run);
        // The dead sonde's slot, held: no other sonde (a test running beside this
        // one) takes its filters for orphans while this one looks at them.
        let Some(hold) = filters::bind_slot(slot).expect("bind an owner slot") else {
            eprintln!("round {round}: slot {slot} was claimed by another sonde before the check (it removed the leftovers itself)");
            continue;
        };
        let (left_in, left_out) = sonde_sets(h);
        assert_eq!(
            (left_in, left_out),
            (vec![ingress], vec![egress]),
            "SIGKILL leaves the filters"
        );
        assert!(has_clsact(h), "SIGKILL leaves the clsact qdisc");
        let net = text("bpftool", &["net", "show", "dev", h]);
        assert!(
            net.contains("clsact/ingress tc_ingress"),
            "and their programs stay loaded: {net}"
        );
        drop(hold);
        checked += 1;
    }
    assert!(checked > 0, "no round could look at the leftovers");

    // The fifth start: one set, traffic counted once, nothing left after a stop.
    let run = flow(h, "netlink");
    one_netlink_set(h);
    traffic_counted(run, &pod, n);
    no_sonde_left(h);
}

#[test]
fn flow_killed_tcx_leaves_nothing() {
    if !sonde::bpf::kernel_at_least(6, 6) {
        sonde_tests::cannot_run("flow_killed_tcx_leaves_nothing", "TCX needs kernel 6.6+");
        return;
    }
    let n = 63;
    let Some(pod) = test_pod("flow_killed_tcx_leaves_nothing", "t", n) else {
        return;
    };
    let h = pod.host.as_str();
    // A netlink-mode sonde killed first: a TCX start removes its filters and qdisc.
    kill9(flow(h, "netlink"));
    for _ in 0..2 {
        let run = flow(h, "tcx");
        assert_eq!(
            sonde::bpf::tc::tcx_programs(h),
            ["tc_ingress", "tc_egress"],
            "one set of TCX links"
        );
        assert_eq!(
            sonde_sets(h),
            (vec![], vec![]),
            "no clsact filter of sonde beside them"
        );
        assert!(!has_clsact(h), "the killed sonde's qdisc is gone");
        kill9(run);
        // Links die with the process's descriptors: nothing is left to clean.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !sonde::bpf::tc::tcx_programs(h).is_empty() {
            assert!(
                Instant::now() < deadline,
                "TCX links left after SIGKILL: {:?}",
                sonde::bpf::tc::tcx_programs(h)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(sonde_sets(h), (vec![], vec![]));
    }
    let run = flow(h, "tcx");
    traffic_counted(run, &pod, n);
    no_sonde_left(h);
}

#[test]
fn flow_start_keeps_a_running_sondes_filters() {
    let n = 65;
    let Some(pod) = test_pod("flow_start_keeps_a_running_sondes_filters", "l", n) else {
        return;
    };
    let h = pod.host.as_str();
    let a = flow(h, "netlink");
    let (a_in, _) = one_netlink_set(h);
    let b = flow(h, "netlink");
    let (ingress, egress) = sonde_sets(h);
    assert!(
        ingress.len() == 2 && egress.len() == 2,
        "two running sondes, two sets: {ingress:#?} {egress:#?}"
    );
    let b_in = ingress.iter().find(|f| f.id != a_in.id).unwrap().clone();
    assert_ne!(b_in.sonde().unwrap().slot, a_in.sonde().unwrap().slot);

    kill9(a);
    let c = flow(h, "netlink");
    let (ingress, egress) = sonde_sets(h);
    assert!(
        ingress.len() == 2 && egress.len() == 2,
        "b's set and c's: {ingress:#?} {egress:#?}"
    );
    assert!(ingress.contains(&b_in), "b's filter kept: {ingress:#?}");
    assert!(
        ingress.iter().all(|f| f.id != a_in.id),
        "a's filter removed: {ingress:#?}"
    );

    // b stops: c's filters and the qdisc stay; c stops: the qdisc a created goes.
    traffic_counted(b, &pod, n);
    let (ingress, _) = sonde_sets(h);
    assert_eq!(ingress.len(), 1, "{ingress:#?}");
    assert!(has_clsact(h));
    stop_counted(c, &pod, n);
    no_sonde_left(h);
}

/// Loads a classifier named `name` that returns `TC_ACT_UNSPEC` (`r0 = -1; exit`):
/// another tool's program, not sonde's code.
fn foreign_program(name: &str) -> OwnedFd {
    let insns: [u64; 2] = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm -1
        0xb7 | ((-1i32 as u32 as u64) << 32),
        // BPF_JMP | BPF_EXIT
        0x95,
    ];
    let license = CString::new("GPL").unwrap();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_PROG_TYPE_SCHED_CLS
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..48 + name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: bpf(BPF_PROG_LOAD) with an attr whose pointers outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len() as libc::c_uint) };
    assert!(
        fd >= 0,
        "load the foreign program: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just returned by the kernel and is owned here.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Adds a direct-action `bpf` filter running `prog` on the ingress of `iface` at
/// `pref` with `handle`, its `TCA_BPF_NAME` being `name`: what a loader like aya
/// does (`tc` itself would name it `FILE:[section]`).
fn add_bpf_filter(iface: &str, pref: u16, handle: u32, prog: &OwnedFd, name: &str) {
    use netlink_packet_route::tc::{
        TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use sonde::netlink::{Socket, ACK, NLM_F_CREATE, NLM_F_EXCL};
    let c = CString::new(iface).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(ifindex, 0, "{iface}");
    let mut m = TcMessage::default();
    m.header.index = ifindex as i32;
    m.header.handle = TcHandle::from(handle);
    m.header.parent = TcHandle::from(filters::INGRESS);
    m.header.info = (u32::from(pref) << 16) | u32::from(0x0003u16.to_be()); // ETH_P_ALL
    m.attributes.push(TcAttribute::Kind("bpf".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    let mut sock = Socket::open(libc::NETLINK_ROUTE).unwrap();
    sock.request(
        RouteNetlinkMessage::NewTrafficFilter(m),
        ACK | NLM_F_EXCL | NLM_F_CREATE,
        |_, _| {},
    )
    .unwrap_or_else(|e| panic!("add a bpf filter on {iface}: {e}"));
}

fn tc_ok(args: &[&str]) {
    let out = std::process::Command::new("tc")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flow_cleanup_keeps_foreign_filters() {
    let n = 67;
    let Some(pod) = test_pod("flow_cleanup_keeps_foreign_filters", "f", n) else {
        return;
    };
    let h = pod.host.as_str();
    // Another tool's qdisc and filters, there before sonde. None of them match or
    // end classification: sonde still sees every packet.
    tc_ok(&["qdisc", "add", "dev", h, "clsact"]);
    tc_ok(&[
        "filter",
        "add",
        "dev",
        h,
        "ingress",
        "prio",
        "7",
        "u32",
        "match",
        "u32",
        "1",
        "0xffffffff",
        "at",
        "0",
    ]);
    tc_ok(&[
        "filter",
        "add",
        "dev",
        h,
        "egress",
        "prio",
        "9",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);
    // An eBPF program named like sonde's, at sonde's priority, held by no process
    // once added: neither the name nor the priority makes a filter sonde's.
    add_bpf_filter(
        h,
        filters::PRIORITY,
        1,
        &foreign_program("tc_ingress"),
        "tc_ingress",
    );
    let foreign = |dir| {
        shown(h, dir)
            .into_iter()
            .filter(|f| f.sonde().is_none())
            .collect::<Vec<_>>()
    };
    let (foreign_in, foreign_out) = (foreign("ingress"), foreign("egress"));
    assert!(
        foreign_in
            .iter()
            .any(|f| f.line.contains(" handle 0x1 tc_ingress direct-action")),
        "{foreign_in:#?}"
    );
    assert!(
        foreign_in.len() == 3 && foreign_out.len() == 1,
        "{foreign_in:#?} {foreign_out:#?}"
    );

    let foreign_kept = || {
        assert_eq!(
            foreign("ingress"),
            foreign_in,
            "foreign ingress filters kept"
        );
        assert_eq!(
            foreign("egress"),
            foreign_out,
            "foreign egress filters kept"
        );
    };
    kill9(flow(h, "netlink"));
    let run = flow(h, "netlink");
    one_netlink_set(h);
    foreign_kept();
    traffic_counted(run, &pod, n);

    assert_eq!(sonde_sets(h), (vec![], vec![]), "sonde's filters gone");
    foreign_kept();
    assert!(
        has_clsact(h),
        "the qdisc that was there before sonde is kept"
    );
    tc_ok(&["qdisc", "del", "dev", h, "clsact"]);
}

/// The leftovers of sonde builds from before the convention (kernel-chosen priority
/// and handle, as `kill -9` left them in the report): removed when they run sonde's
/// own code (same name and program tag) and no process holds them; kept while one
/// does.
#[test]
fn flow_removes_leftovers_of_older_builds() {
    use aya::programs::tc::{NlOptions, SchedClassifier, TcAttachOptions, TcAttachType};
    let n = 69;
    let Some(pod) = test_pod("flow_removes_leftovers_of_older_builds", "o", n) else {
        return;
    };
    let h = pod.host.as_str();
    let object = sonde::bpf::catalog::find("flow").unwrap().object;
    // Attached as the older builds did; `held` keeps its program, the others are
    // left to the kernel as a killed process leaves them.
    let old_style = |keep: bool| {
        let mut ebpf = aya::EbpfLoader::new()
            .load(object)
            .expect("load flow.bpf.o");
        let prog: &mut SchedClassifier =
            ebpf.program_mut("tc_ingress").unwrap().try_into().unwrap();
        prog.load().unwrap();
        let _ = aya::programs::tc::qdisc_add_clsact(h);
        let id = prog
            .attach_with_options(
                h,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .unwrap();
        std::mem::forget(prog.take_link(id).unwrap());
        keep.then_some(ebpf)
    };
    let held = old_style(true);
    let live = shown(h, "ingress")[0].id;
    for _ in 0..3 {
        old_style(false);
    }
    // (A sonde started by a test running beside this one may remove the orphans
    // before ours does: the same code.)
    let before = shown(h, "ingress");
    assert!(
        before.len() <= 4 && before.iter().any(|f| f.id == live),
        "{before:#?}"
    );

    let run = flow(h, "netlink");
    one_netlink_set(h);
    let others: Vec<Shown> = shown(h, "ingress")
        .into_iter()
        .filter(|f| f.sonde().is_none())
        .collect();
    assert_eq!(
        others.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![live],
        "the orphans removed, the held one kept: {others:#?}"
    );
    traffic_counted(run, &pod, n);
    assert_eq!(sonde_sets(h), (vec![], vec![]));
    assert_eq!(shown(h, "ingress").len(), 1);
    drop(held);
}

/// `sonde daemon` running the built-in flow in netlink mode on one interface, from a
/// temp config; SIGTERM on drop.
struct Daemon {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn config(dir: &std::path::Path, interfaces: &str) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(
            dir.join("sonde.yaml"),
            format!(
                "listen: 127.0.0.1:{port}\nnode_name: e2e-node\nshutdown_timeout: 3s\n\
                 scripts:\n  builtin: [flow]\n  directories: [{}]\n  params:\n    \
                 flow: {{ interfaces: \"{interfaces}\", tc_mode: netlink }}\n",
                dir.join("scripts").display()
            ),
        )
        .unwrap();
    }

    /// Starts it and waits until it has attached.
    fn start(dir: &std::path::Path, n: usize) -> Daemon {
        let log = dir.join(format!("stderr{n}.log"));
        let child = std::process::Command::new(sonde_tests::sonde_bin())
            .arg("daemon")
            .arg("--config")
            .arg(dir.join("sonde.yaml"))
            .env("SONDE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sonde daemon");
        let d = Daemon { child, log };
        d.wait_log("interface attached", 1);
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `what` has been logged `times` times.
    fn wait_log(&self, what: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches(what).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {what:?} x{times}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child that has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let st = self.child.wait().unwrap();
        assert!(st.success(), "daemon exit: {st}\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// The daemon: killed, started again (the leftovers go, one set), and reloaded with a
/// change that reloads the program, which swaps attachments inside one process (the
/// new filters beside the old ones only while swapping, same owner slot).
#[test]
fn flow_daemon_killed_and_reloaded_keeps_one_set() {
    let Some(pod) = test_pod("flow_daemon_killed_and_reloaded_keeps_one_set", "d", 71) else {
        return;
    };
    let h = pod.host.as_str();
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-e2e-tc-{}", std::process::id()));
    Daemon::config(&dir, h);

    let d = Daemon::start(&dir, 1);
    let (first, _) = one_netlink_set(h);
    d.kill9();
    // Looked at with the dead daemon's slot held (see the netlink test).
    if let Some(hold) = filters::bind_slot(first.sonde().unwrap().slot).unwrap() {
        assert_eq!(
            sonde_sets(h).0,
            vec![first.clone()],
            "SIGKILL leaves the filters"
        );
        drop(hold);
    }

    let d = Daemon::start(&dir, 2);
    let (second, _) = one_netlink_set(h);
    assert_ne!(second.id, first.id, "the new daemon's own filter");

    Daemon::config(&dir, &format!("{h},nomatch*"));
    d.signal(libc::SIGHUP);
    d.wait_log("interface attached", 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        let (ingress, egress) = sonde_sets(h);
        if ingress.len() == 1 && egress.len() == 1 && ingress[0].id != second.id {
            break ingress[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "one set after the reload: {ingress:#?} {egress:#?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (h2, h3) = (second.sonde().unwrap(), third.sonde().unwrap());
    assert_eq!(h3.slot, h2.slot, "same process, same owner slot");
    assert_ne!(h3.seq, h2.seq, "attached beside the old one while swapping");

    d.stop();
    no_sonde_left(h);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two sondes killed: the next start claims one of their owner slots (and removes its
/// filters when claiming it) and must find the other dead from its slot alone.
#[test]
fn flow_start_removes_every_dead_sondes_filters() {
    let n = 73;
    let Some(pod) = test_pod("flow_start_removes_every_dead_sondes_filters", "2", n) else {
        return;
    };
    let h = pod.host.as_str();
    let a = flow(h, "netlink");
    let b = flow(h, "netlink");
    assert_eq!(sonde_sets(h).0.len(), 2);
    kill9(a);
    kill9(b);
    let c = flow(h, "netlink");
    one_netlink_set(h);
    traffic_counted(c, &pod, n);
    no_sonde_left(h);
}
