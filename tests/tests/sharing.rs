//! End to end: scripts on the same program with the same knobs share one loaded
//! program (one set of programs in the kernel, one ring buffer), each still gets
//! every record, and the program goes when its last script does; and the sources
//! are read at start, so the first scrape after `/readyz` has their series.
//!
//! What the daemon holds is read from `/proc/<pid>/fdinfo`: the distinct ids of
//! the BPF programs and ring buffers it has descriptors for.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sonde_tests::daemon::{sample, Daemon};
use sonde_tests::{connect_refused, require_root, NetnsThread};

/// A script on `tcp_reset` counting the resets it sees, one series per source port.
fn counting_script(name: &str, help: &str, params: &str) -> String {
    format!(
        r#"const PROBE = #{{ program: "tcp_reset", params: #{{ {params} }}, interval: "1s" }};
fn init(params) {{
    this.c = metrics::counter("share_{name}_resets_total", "{help}", ["pod", "kind", "sport"]);
}}
fn on_event(ev) {{ this.c.inc([ev.pod.name, ev.kind, ev.sport.to_string()]); }}
"#
    )
}

/// Distinct ids of the BPF objects of `kind` (`bpf-prog`, `bpf-map`) the process
/// holds, with the fdinfo line that has the id (`prog_id`, `map_id`); maps only of
/// `map_type` when given (27: ring buffer).
fn bpf_ids(pid: u32, kind: &str, id_key: &str, map_type: Option<u32>) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.to_string_lossy() != format!("anon_inode:{kind}") {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        if map_type.is_some_and(|t| field("map_type") != Some(t)) {
            continue;
        }
        if let Some(id) = field(id_key) {
            ids.insert(id);
        }
    }
    ids
}

fn programs(d: &Daemon) -> BTreeSet<u32> {
    bpf_ids(d.pid(), "bpf-prog", "prog_id", None)
}

const RINGBUF: u32 = 27;

fn rings(d: &Daemon) -> BTreeSet<u32> {
    bpf_ids(d.pid(), "bpf-map", "map_id", Some(RINGBUF))
}

/// Waits until each script in `scripts` counted the reset each port received (a
/// refused connect: a NOSOCK record for the sender, port 9, and a RECEIVE record for
/// the connecting socket).
fn wait_seen(d: &Daemon, scripts: &[&str], pod: &str, ports: &[u16]) {
    let seen = |m: &str, script: &str, port: &u16| {
        sample(
            m,
            &format!("sonde_share_{script}_resets_total"),
            &[
                ("pod", pod),
                ("kind", "RECEIVE"),
                ("sport", &port.to_string()),
            ],
        )
    };
    d.wait_for(
        &format!("{scripts:?} to see the resets from ports {ports:?}"),
        Duration::from_secs(5),
        || {
            let m = d.metrics();
            scripts
                .iter()
                .all(|s| ports.iter().all(|p| seen(&m, s, p) == Some(1.0)))
        },
    );
}

fn running(d: &Daemon, names: &[&str]) {
    d.wait_for(
        &format!("{names:?} to run"),
        Duration::from_secs(10),
        || names.iter().all(|n| d.unit(n)["state"] == "running"),
    );
}

#[test]
fn scripts_with_the_same_knobs_share_one_program_and_each_gets_every_record() {
    if !require_root("scripts_with_the_same_knobs_share_one_program_and_each_gets_every_record") {
        return;
    }
    let d = Daemon::start("share", &[], "");
    assert!(programs(&d).is_empty(), "no script, no program");
    let same = "emit_events: true";
    std::fs::write(d.script("one.rhai"), counting_script("one", "One.", same)).unwrap();
    running(&d, &["one"]);
    let one = programs(&d);
    let one_ring = rings(&d);
    assert!(!one.is_empty(), "tcp_reset loaded no program");
    assert_eq!(one_ring.len(), 1, "{one_ring:?}");

    for n in ["two", "three"] {
        std::fs::write(
            d.script(&format!("{n}.rhai")),
            counting_script(n, "Two or three.", same),
        )
        .unwrap();
    }
    running(&d, &["one", "two", "three"]);
    // Three scripts, the programs and the ring of one: the same ids, not reloaded.
    assert_eq!(programs(&d), one, "three scripts on the same knobs");
    assert_eq!(rings(&d), one_ring, "three scripts on the same knobs");

    let ns = NetnsThread::new().unwrap();
    let pod = format!("netns:{}", ns.inode);
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 3));
    wait_seen(&d, &["one", "two", "three"], &pod, &ports);

    // Other knobs: a program and a ring of its own, beside the shared one.
    std::fs::write(
        d.script("other.rhai"),
        counting_script("other", "Other.", "emit_events: true, stack: true"),
    )
    .unwrap();
    running(&d, &["other"]);
    let two = programs(&d);
    assert!(
        two.is_superset(&one),
        "the shared program stays: {two:?} {one:?}"
    );
    assert_eq!(two.len(), 2 * one.len(), "{two:?}");
    assert_eq!(rings(&d).len(), 2);
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 2));
    wait_seen(&d, &["one", "two", "three", "other"], &pod, &ports);

    // An edit that keeps the knobs reloads the script, not the program; a removed
    // script leaves the program to the others.
    let loaded = d.unit("two")["loaded_at"].clone();
    std::fs::write(
        d.script("two.rhai"),
        counting_script("two", "Two, edited.", same),
    )
    .unwrap();
    std::fs::remove_file(d.script("one.rhai")).unwrap();
    d.wait_for(
        "the edit of two and the removal of one",
        Duration::from_secs(5),
        || d.unit("one").is_null() && d.unit("two")["loaded_at"] != loaded,
    );
    assert_eq!(programs(&d), two, "an edit and a removal reload no program");
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 2));
    wait_seen(&d, &["two", "three", "other"], &pod, &ports);

    // Down to one script: it reads the ring itself from now on, and still gets
    // every record.
    std::fs::remove_file(d.script("three.rhai")).unwrap();
    d.wait_for("three to go", Duration::from_secs(5), || {
        d.unit("three").is_null()
    });
    assert_eq!(programs(&d), two, "the program stays for two");
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 2));
    wait_seen(&d, &["two", "other"], &pod, &ports);

    // The last script on it gone, the program is detached and unloaded.
    std::fs::remove_file(d.script("two.rhai")).unwrap();
    d.wait_for("two to go", Duration::from_secs(5), || {
        d.unit("two").is_null()
    });
    d.wait_for("the shared program to go", Duration::from_secs(5), || {
        programs(&d).is_disjoint(&one)
    });
    assert_eq!(programs(&d).len(), one.len(), "other's program stays");
    assert_eq!(rings(&d).len(), 1);
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 1));
    wait_seen(&d, &["other"], &pod, &ports);
}

/// A script that takes its whole call deadline on every record, on the same program
/// as one that keeps up: the slow one falls behind and drops, the other sees every
/// reset at once.
#[test]
fn a_slow_script_does_not_hold_up_the_others_on_its_program() {
    if !require_root("a_slow_script_does_not_hold_up_the_others_on_its_program") {
        return;
    }
    let d = Daemon::start(
        "share-slow",
        &[],
        "limits:\n  call_deadline: 1s\n  max_backlog: 2s\n",
    );
    let same = "emit_events: true";
    std::fs::write(
        d.script("slow.rhai"),
        format!(
            r#"const PROBE = #{{ program: "tcp_reset", params: #{{ {same} }} }};
fn on_event(ev) {{ loop {{ }} }}
"#
        ),
    )
    .unwrap();
    running(&d, &["slow"]);
    let one = programs(&d);
    std::fs::write(
        d.script("fast.rhai"),
        counting_script("fast", "Fast.", same),
    )
    .unwrap();
    running(&d, &["fast"]);
    assert_eq!(programs(&d), one, "slow and fast share the program");

    let ns = NetnsThread::new().unwrap();
    let pod = format!("netns:{}", ns.inode);
    let t = Instant::now();
    let ports = ns.run(|| connect_refused("127.0.0.1:9".parse().unwrap(), 5));
    // 10 records: the slow script needs 10 s for them, the fast one milliseconds.
    wait_seen(&d, &["fast"], &pod, &ports);
    let took = t.elapsed();
    let slow_records = d.unit("slow")["records"].as_u64().unwrap_or(0);
    assert!(
        took < Duration::from_secs(3),
        "the fast script saw the resets after {took:?}"
    );
    assert!(
        slow_records < 10,
        "the slow script read {slow_records} records in {took:?}: it was not slow"
    );
}

/// The source scripts read /proc at once: the first scrape after `/readyz` has
/// their series, long before their first interval (10 s) has passed.
#[test]
fn the_first_scrape_after_readyz_has_the_source_series() {
    if !require_root("the_first_scrape_after_readyz_has_the_source_series") {
        return;
    }
    let t0 = Instant::now();
    // A first tick registers every family: in a debug build on a busy machine with
    // many namespaces it can take longer than the default deadline of 100 ms.
    let d = Daemon::start(
        "firstscrape",
        &["netdev", "snmp", "sock", "softnet"],
        "limits:\n  call_deadline: 5s\n",
    );
    let m = d.metrics();
    let ready_after = t0.elapsed();
    // The scripts' interval: a scrape later than this could have found a tick.
    assert!(
        ready_after < Duration::from_secs(10),
        "/readyz took {ready_after:?}"
    );
    for (name, labels) in [
        ("sonde_netdev_receive_bytes_total", &[("device", "lo")][..]),
        ("sonde_snmp_tcp_active_opens_total", &[][..]),
        ("sonde_sock_sockets_used", &[][..]),
        ("sonde_softnet_processed_packets_total", &[("cpu", "0")][..]),
    ] {
        assert!(
            sample(&m, name, labels).is_some(),
            "{name}{labels:?} missing from the first scrape, {ready_after:?} after the start:\n{m}"
        );
    }
}
