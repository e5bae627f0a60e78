//! End to end: bpftrace-style tables (`count()`, `hist()`) seen from outside. What
//! `sonde run` prints at the end of a run over real TCP resets, and what the daemon
//! exports for tables named the way bpftrace users name them (`2xx`, `lat_ms`).

use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use sonde_tests::daemon::{promtool_check, sample, Daemon};
use sonde_tests::run::{finish, start};
use sonde_tests::{connect_refused, require_root, NetnsThread};

/// A free port on 127.0.0.1 and one on ::1 in the namespace, closed again.
fn closed_ports(ns: &NetnsThread) -> (u16, u16) {
    ns.run(|| {
        let port = |a: SocketAddr| TcpListener::bind(a).unwrap().local_addr().unwrap().port();
        (
            port(SocketAddr::from(([127, 0, 0, 1], 0))),
            port(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))),
        )
    })
}

/// Lines with runs of spaces (the summary's alignment) collapsed to one.
fn squeeze(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn line_of(lines: &[String], want: &str, out: &str) -> usize {
    lines
        .iter()
        .position(|l| l == want)
        .unwrap_or_else(|| panic!("no line `{want}` in:\n{out}"))
}

#[test]
fn run_prints_tables_by_their_names_sorted_by_value() {
    if !require_root("run_prints_tables_by_their_names_sorted_by_value") {
        return;
    }
    let ns = NetnsThread::new().unwrap();
    let (p4, p6) = closed_ports(&ns);
    // Every refused connect is two resets in the namespace: NOSOCK, sent by the
    // closed port's side (`sport` is that port), and RECEIVE, by the client's.
    let script = format!(
        r#"const PROBE = #{{ program: "tcp_reset" }};
fn on_event(ev) {{
    if ev.pod.name != "netns:{inode}" {{ return; }}
    count("2xx", ev.kind);
    if ev.kind != "NOSOCK" {{ return; }}
    count("refused", #{{ port: ev.sport, family: net::family(ev.saddr) }});
    hist("port_ms", #{{ family: net::family(ev.saddr) }}, ev.sport);
    count("lat_ms");
    count("lat_us");
}}
"#,
        inode = ns.inode
    );
    let run = start(&["run", "-e", &script, "--for", "3s", "--quiet"]);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 3));
    ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 2));
    let (out, err) = finish(run);
    println!("{out}");
    let lines = squeeze(&out);
    // Each table under the name the script gave it, keys named by the map's keys
    // (in name order), smallest count first as bpftrace prints a map.
    line_of(&lines, "@2xx[NOSOCK]: 5", &out);
    line_of(&lines, "@2xx[RECEIVE]: 5", &out);
    line_of(&lines, "@lat_ms: 5", &out);
    let v6 = line_of(
        &lines,
        &format!("@refused[family=ipv6, port={p6}]: 2"),
        &out,
    );
    let v4 = line_of(
        &lines,
        &format!("@refused[family=ipv4, port={p4}]: 3"),
        &out,
    );
    assert_eq!(v4, v6 + 1, "sorted by value, the largest last:\n{out}");
    // A histogram in the unit its values were observed in: here, ports.
    let h4 = line_of(
        &lines,
        &format!("@port_ms[family=ipv4]: count 3, sum {}", 3 * p4 as u64),
        &out,
    );
    let bar = format!("3 |{}|", "@".repeat(52));
    assert!(lines[h4 + 1].ends_with(&bar), "{out}");
    line_of(
        &lines,
        &format!("@port_ms[family=ipv6]: count 2, sum {}", 2 * p6 as u64),
        &out,
    );
    // `lat_us` counts into the name `lat_ms` already exports (a count drops units):
    // one error, with the place, not one per event; the other tables carry on.
    assert!(!out.contains("@lat_us"), "{out}");
    assert!(err.contains("script errors: runtime=1 "), "{err}");
    assert_eq!(
        err.matches(r#"count("lat_us", ...): table "lat_us" would be exported as `sonde_lat_total`, as the table "lat_ms" is; rename the table"#)
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("-e:9:5: "), "the error names the call: {err}");
}

/// Tables named as bpftrace users name them, in a script that ticks every 100 ms,
/// twelve times (then its metrics hold still while they are read).
const TABLES: &str = r#"//! tables: one-liner tables, exported.
const PROBE = #{ interval: "100ms" };
fn init() { this.ticks = 0; }
fn on_tick() {
    if this.ticks == 12 { return; }
    this.ticks += 1;
    count("2xx", "GET");
    count("conns", #{ pod: "web-1", port: 8080 });
    hist("lat_ms", 250);
    hist("read_wait_ns", #{ op: "read" }, 1500);
    hist("rtt_us", 1);
    hist("rtt_ms", 1);
}
"#;

#[test]
fn daemon_exports_tables_under_valid_names_in_base_units() {
    if !require_root("daemon_exports_tables_under_valid_names_in_base_units") {
        return;
    }
    let d = Daemon::start_with(
        "tables",
        &[],
        "",
        &[("tables.rhai", &|p| std::fs::write(p, TABLES).unwrap())],
        None,
    );
    let ticks = |m: &str| sample(m, "sonde_2xx_total", &[("key", "GET")]).unwrap_or(0.0);
    d.wait_for("twelve ticks", Duration::from_secs(10), || {
        ticks(&d.metrics()) >= 12.0
    });
    std::thread::sleep(Duration::from_millis(300));
    let m = d.metrics();
    let n = 12.0;
    assert_eq!(ticks(&m), n);
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&m, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{m}"))
    };
    assert_eq!(
        get("sonde_conns_total", &[("pod", "web-1"), ("port", "8080")]),
        n
    );
    // Milliseconds observed, seconds exported: 250 ms is in the bucket of 256 ms,
    // not in that of 16 ms, the next one down at the default
    // metrics.classic_log2_step (4: every fourth power of two).
    assert_eq!(get("sonde_lat_seconds_count", &[]), n);
    assert_eq!(get("sonde_lat_seconds_bucket", &[("le", "0.256")]), n);
    assert_eq!(get("sonde_lat_seconds_bucket", &[("le", "0.016")]), 0.0);
    assert!(sample(&m, "sonde_lat_seconds_bucket", &[("le", "0.128")]).is_none());
    let sum = get("sonde_lat_seconds_sum", &[]);
    assert!((sum - 0.25 * n).abs() < 1e-9, "sum {sum} for {n} x 250 ms");
    let sum = get("sonde_read_wait_seconds_sum", &[("op", "read")]);
    assert!(
        (sum - 1.5e-6 * n).abs() < 1e-12,
        "sum {sum} for {n} x 1500 ns"
    );
    assert_eq!(get("sonde_rtt_seconds_count", &[]), n);
    // `rtt_ms` exports as `rtt_us` does: reported once, not at every tick.
    assert_eq!(
        get(
            "sonde_script_errors_total",
            &[("script", "tables"), ("kind", "runtime")]
        ),
        1.0
    );
    // Degraded (a handler failed in the last minute), and still producing.
    let unit = d.unit("tables");
    assert_eq!(unit["state"], "degraded", "{unit}");
    assert!(
        unit["last_error"].as_str().unwrap_or_default().contains(
            r#"hist("rtt_ms", ...): table "rtt_ms" would be exported as `sonde_rtt_seconds`, as the table "rtt_us" is"#
        ),
        "{unit}"
    );
    promtool_check(&m);
}
