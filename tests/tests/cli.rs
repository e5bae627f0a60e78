//! End to end: the real `sonde` binary, run the way a person runs it, checked from
//! its output. Traffic comes from a thread in a private network namespace, so the
//! events under test carry that namespace's `netns:<inode>` pod and nothing else
//! on the machine can be mistaken for them.

use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use sonde_tests::run::{finish, start, summary_row};
use sonde_tests::{connect_refused, repo_root, require_root, sonde_bin, NetnsThread};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn closed_ports(ns: &NetnsThread) -> (u16, u16) {
    ns.run(|| {
        let a = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (a, b)
    })
}

fn sonde(args: &[&str]) -> std::process::Output {
    Command::new(sonde_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run sonde")
}

#[test]
fn tcp_reset_script_prints_one_line_per_reset_v4_and_v6() {
    if !require_root("tcp_reset_script_prints_one_line_per_reset_v4_and_v6") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = start(&["run", "scripts/tcp_reset.rhai", "--for", "3s"]);
    let ns = NetnsThread::new().unwrap();
    let (p4, p6) = closed_ports(&ns);
    let l4 = ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 3));
    let l6 = ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 2));
    let (out, _) = finish(run);
    let pod = format!("pod=netns:{}", ns.inode);
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=TCPRESET_NOSOCK") && l.contains(&pod))
        .collect();
    let mut want: Vec<String> = l4
        .iter()
        .map(|l| format!("type=TCPRESET_NOSOCK {pod} protocol=TCP saddr=127.0.0.1 sport={p4} daddr=127.0.0.1 dport={l} state=CLOSE"))
        .collect();
    want.extend(l6.iter().map(|l| {
        format!("type=TCPRESET_NOSOCK {pod} protocol=TCP saddr=::1 sport={p6} daddr=::1 dport={l} state=CLOSE")
    }));
    assert_eq!(ours, want, "full output:\n{out}");
    // Each refused client also receives the reset.
    let received = out
        .lines()
        .filter(|l| l.starts_with("type=TCPRESET_RECEIVE") && l.contains(&pod))
        .count();
    assert_eq!(received, 5, "{out}");
    // The kernel-side counter, read at exit, agrees.
    for (kind, n) in [("NOSOCK", 5), ("RECEIVE", 5)] {
        let row = summary_row(
            &out,
            &[
                &format!("pod=netns:{}", ns.inode),
                &format!("kind={kind}}}"),
            ],
        );
        assert_eq!(row, n, "{out}");
    }
}

#[test]
fn tcp_reset_json_output_has_the_same_content() {
    if !require_root("tcp_reset_json_output_has_the_same_content") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = start(&[
        "run",
        "scripts/tcp_reset.rhai",
        "--for",
        "2s",
        "--output",
        "json",
    ]);
    let ns = NetnsThread::new().unwrap();
    let (p4, _) = closed_ports(&ns);
    let locals = ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 2));
    let (out, _) = finish(run);
    let pod = format!("netns:{}", ns.inode);
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each event line is JSON"))
        .filter(|v: &serde_json::Value| {
            v["labels"]["pod"] == pod.as_str() && v["type"] == "TCPRESET_NOSOCK"
        })
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    for (e, l) in events.iter().zip(&locals) {
        assert_eq!(e["type"], "TCPRESET_NOSOCK");
        assert_eq!(e["fields"]["saddr"], "127.0.0.1");
        assert_eq!(e["fields"]["sport"], p4);
        assert_eq!(e["fields"]["dport"], *l);
        assert_eq!(e["fields"]["state"], "CLOSE");
        assert!(e["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    }
}

#[test]
fn packet_loss_script_counts_drops_by_reason() {
    if !require_root("packet_loss_script_counts_drops_by_reason") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = start(&["run", "scripts/packet_loss.rhai", "--for", "2s"]);
    let ns = NetnsThread::new().unwrap();
    let (p4, p6) = closed_ports(&ns);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 6));
    ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 4));
    let (out, _) = finish(run);
    assert!(out.contains("sonde_packet_loss_packets_total"), "{out}");
    for (proto, n) in [("IPv4", 6), ("IPv6", 4)] {
        let row = summary_row(
            &out,
            &[
                &format!("pod=netns:{}", ns.inode),
                "reason=NO_SOCKET",
                &format!("protocol={proto}}}"),
            ],
        );
        assert_eq!(row, n, "{out}");
    }
}

#[test]
fn oneliner_counts_resets_by_destination_port() {
    if !require_root("oneliner_counts_resets_by_destination_port") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A client that is refused receives the reset; its dport is where it tried to go.
    let code = r#"const PROBE = "tcp_reset"; fn on_event(ev) { if ev.kind == "RECEIVE" { count("resets_by_dport", ev.dport) } }"#;
    let run = start(&["run", "-e", code, "--for", "2s"]);
    let ns = NetnsThread::new().unwrap();
    let (p4, p6) = closed_ports(&ns);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 3));
    ns.run(move || connect_refused(SocketAddr::from((Ipv6Addr::LOCALHOST, p6)), 2));
    let (out, _) = finish(run);
    let row = |p: u16| summary_row(&out, &[&format!("@resets_by_dport[{p}]:")]);
    assert_eq!(row(p4), 3, "{out}");
    assert_eq!(row(p6), 2, "{out}");
}

#[test]
fn record_then_replay_gives_the_same_events_without_a_kernel() {
    if !require_root("record_then_replay_gives_the_same_events_without_a_kernel") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rec = std::env::temp_dir().join(format!("sonde-cli-{}.sonderec", std::process::id()));
    let rec_s = rec.to_str().unwrap().to_string();
    let run = start(&[
        "run",
        "scripts/tcp_reset.rhai",
        "--for",
        "2s",
        "--record",
        &rec_s,
    ]);
    let ns = NetnsThread::new().unwrap();
    let (p4, _) = closed_ports(&ns);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 4));
    let (live, _) = finish(run);
    let replay = sonde(&["run", "scripts/tcp_reset.rhai", "--replay", &rec_s]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = String::from_utf8_lossy(&replay.stdout);
    let pod = format!("pod=netns:{}", ns.inode);
    let pick = |s: &str| {
        s.lines()
            .filter(|l| l.contains(&pod))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let live_lines = pick(&live);
    // 4 refused connects: a NOSOCK reset sent and a reset received for each.
    assert_eq!(
        live_lines.iter().filter(|l| l.starts_with("type=")).count(),
        8,
        "{live}"
    );
    assert_eq!(
        live_lines,
        pick(&replayed),
        "replay differs from the live run"
    );
    std::fs::remove_file(&rec).ok();
}

#[test]
fn check_reports_file_line_column_for_a_broken_script() {
    let dir = std::env::temp_dir().join(format!("sonde-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.rhai");
    std::fs::write(
        &bad,
        "const PROBE = \"tcp_reset\";\nfn on_event(ev) {\n    let x = ev.kind +;\n}\n",
    )
    .unwrap();
    let out = sonde(&["check", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    assert!(!out.status.success(), "a broken script fails the check");
    let want = format!("{}:3:", bad.display());
    assert!(text.contains(&want), "expected {want}<col>: in {text}");
    let col = text.split(&want).nth(1).unwrap().split(':').next().unwrap();
    assert!(col.parse::<u32>().is_ok(), "column after the line: {text}");

    let good = sonde(&[
        "check",
        "scripts/tcp_reset.rhai",
        "scripts/packet_loss.rhai",
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );

    let unknown = dir.join("unknown.rhai");
    std::fs::write(&unknown, "const PROBE = \"no_such_probe\";\n").unwrap();
    let out = sonde(&["check", unknown.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("packet_loss, sock_pressure"),
        "lists the known programs"
    );

    let bad_param = sonde(&["check", "scripts/tcp_reset.rhai", "--param", "stack=maybe"]);
    assert!(!bad_param.status.success());
    assert!(String::from_utf8_lossy(&bad_param.stdout).contains("stack"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn probes_lists_variants_and_why_they_cannot_run() {
    let out = sonde(&["probes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tcp_reset"), "{text}");
    assert!(text.contains("packet_loss"), "{text}");
    assert!(text.contains("kprobe"), "{text}");
    let json = sonde(&["probes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let tcp = v["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "tcp_reset")
        .unwrap();
    let variants = tcp["variants"].as_array().unwrap();
    let names: Vec<&str> = variants.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "tp_btf",
            "tracepoint",
            "kprobe",
            "tp_btf-legacy",
            "tracepoint-legacy"
        ],
        "in order of preference"
    );
    for var in variants {
        if var["available"] == false {
            assert!(
                var["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "every unavailable variant says why: {var}"
            );
        }
    }
}

/// A runaway handler (an endless loop, a string doubling forever) is stopped by the
/// sandbox limits, counted by kind, and the run goes on to the end.
#[test]
fn runaway_handlers_are_stopped_and_counted() {
    let code = r#"
        const PROBE = #{ interval: "100ms" };
        fn init(params) { this.ticks = 0; }
        fn on_tick() {
            this.ticks += 1;
            if this.ticks % 2 == 0 { loop { } }
            let s = "sonde"; loop { s += s; }
        }
        fn on_exit() { print(`survived ${this.ticks} ticks`); }
    "#;
    let started = Instant::now();
    let out = sonde(&["run", "-e", code, "--for", "1s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "limits stop each call quickly"
    );
    let ticks: u64 = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("survived ")?
                .strip_suffix(" ticks")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("on_exit did not run: {stdout}\n{stderr}"));
    assert!(ticks >= 5, "ticks kept coming after failures: {ticks}");
    let errors = stderr
        .lines()
        .find(|l| l.contains("script errors:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(errors.contains("operations="), "{errors}");
    assert!(errors.contains("size="), "{errors}");
}

/// Writes `files` into a fresh directory the daemon's strict modes accept.
fn script_dir(test: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = sonde_tests::trusted_tmp().join(format!("sonde-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TYPO: &str = "//! Resets.\nconst PROBE = #{\n    program: \"tcp_resets\",\n};\n";
const STRING_PARAM: &str = "const PROBE = #{\n    program: \"kernel_latency\",\n    params: #{\n        threshold_ms: \"yes\",\n    },\n};\n";
const DOUBLING: &str = "const PROBE = #{ interval: \"100ms\" };\n\nfn on_tick() {\n    let s = \"xx\";\n    loop { s += s; }\n}\n";
const ABBREVIATED: &str = "//! Connect latency, i.e. SYN to established. Per pod.\nconst PROBE = \"tcp_reset\";\n\nfn init(params) {\n    this.lat = metrics::counter(\"lat_ms\", \"Latency.\", [\"pod\"]);\n}\n";

/// A manifest mistake is reported at the line of its key, by `sonde run` (before
/// anything is loaded) and `sonde check` alike, with the near name or what was
/// expected; no Rust internals.
#[test]
fn run_and_check_name_the_manifest_line_of_a_mistake() {
    let dir = script_dir(
        "manifest",
        &[("typo.rhai", TYPO), ("string_param.rhai", STRING_PARAM)],
    );
    let typo = dir.join("typo.rhai");
    let string_param = dir.join("string_param.rhai");
    let want_typo = format!(
        "{}:3:5: PROBE: program: unknown kernel program `tcp_resets` (did you mean `tcp_reset`?); built-in programs: bio_latency, ",
        typo.display()
    );
    let want_param = format!(
        "{}:4:9: PROBE: params.threshold_ms: expected an integer, got the string \"yes\" (it sets the kernel knob `threshold_ms` of kernel_latency)",
        string_param.display()
    );
    for (path, want) in [(&typo, &want_typo), (&string_param, &want_param)] {
        let path = path.to_str().unwrap();
        let run = sonde(&["run", path, "--for", "1s"]);
        let (_, err) = text(&run);
        assert!(!run.status.success(), "{err}");
        assert!(err.starts_with(&format!("sonde: {want}")), "{err}");
        assert!(!err.contains("Str("), "{err}");
        let check = sonde(&["check", path]);
        let (out, _) = text(&check);
        assert!(!check.status.success(), "{out}");
        assert!(out.starts_with(want.as_str()), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A handler stopped by a sandbox limit is reported at the handler's line with
/// the limit's config key: in `sonde run`'s log, the daemon's log and `/status`.
#[test]
fn limit_errors_name_the_line_in_run_the_daemon_log_and_status() {
    let dir = script_dir("limits", &[("doubling.rhai", DOUBLING)]);
    let path = dir.join("doubling.rhai");
    let want = format!(
        "{}:3:1: stopped: a string grew past 65536 bytes (limits.max_string_size)",
        path.display()
    );
    let run = sonde(&["run", path.to_str().unwrap(), "--for", "500ms"]);
    let (_, err) = text(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("script handler failed") && l.contains(&format!("error={want}"))),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();

    let doubling = |p: &std::path::Path| std::fs::write(p, DOUBLING).unwrap();
    let typo = |p: &std::path::Path| std::fs::write(p, TYPO).unwrap();
    let d = sonde_tests::daemon::Daemon::start_with(
        "limits",
        &[],
        "",
        &[("doubling.rhai", &doubling), ("typo.rhai", &typo)],
        None,
    );
    let want = format!(
        "{}:3:1: stopped: a string grew past 65536 bytes (limits.max_string_size)",
        d.script("doubling.rhai").display()
    );
    d.wait_for("the handler to fail", Duration::from_secs(5), || {
        d.unit("doubling")["last_error"].is_string()
    });
    assert_eq!(
        d.unit("doubling")["last_error"].as_str().unwrap(),
        format!("on_tick: {want}")
    );
    assert!(
        d.stderr().contains(&format!("error={want}")),
        "{}",
        d.stderr()
    );
    let typo = d.unit("typo");
    assert_eq!(typo["state"], "failed", "{typo}");
    assert!(
        typo["last_error"].as_str().unwrap().starts_with(&format!(
            "{}:3:5: PROBE: program: unknown kernel program `tcp_resets` (did you mean `tcp_reset`?)",
            d.script("typo.rhai").display()
        )),
        "{typo}"
    );
}

/// `sonde check` runs `init` against a registry of its own: a metric name the
/// registry refuses fails the check at the line of the call, not at the first event.
/// It takes `-e` like `sonde run`, and keeps a summary's "i.e.".
#[test]
fn check_runs_init_takes_e_and_keeps_the_first_sentence_whole() {
    let dir = script_dir("init", &[("latency.rhai", ABBREVIATED)]);
    let path = dir.join("latency.rhai");
    let out = sonde(&["check", path.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        stdout.trim_end(),
        format!(
            "{}:5:25: init failed: invalid metric name `sonde_lat_ms`: counter names end in `_total` (e.g. `sonde_lat_ms_total`)",
            path.display()
        )
    );
    // The daemon's --check finds it the same way.
    let config = dir.join("sonde.yaml");
    std::fs::write(
        &config,
        format!(
            "scripts:\n  builtin: []\n  directories: [{}]\n  strict_modes: {}\n",
            dir.display(),
            sonde_tests::strict_modes_hold()
        ),
    )
    .unwrap();
    let out = sonde(&["daemon", "--check", "--config", config.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:5:25: init failed: invalid metric name `sonde_lat_ms`",
            path.display()
        )),
        "{stderr}"
    );
    let fixed = ABBREVIATED.replace("lat_ms", "connect_latency_total");
    let out = sonde(&["check", "-e", &fixed]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.trim_end(),
        "-e: ok (program tcp_reset, 0 params, knobs: none; Connect latency, i.e. SYN to established.)"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_and_check_without_a_script_mention_e() {
    for cmd in ["run", "check"] {
        let out = sonde(&[cmd]);
        let (_, err) = text(&out);
        assert!(!out.status.success());
        assert!(err.contains("|-e <CODE>>"), "{cmd}: {err}");
    }
}

/// An `ip netns` namespace is named as the daemon names it, not `netns:<inode>`.
#[test]
fn run_names_an_ip_netns_namespace_by_its_name() {
    if !require_root("run_names_an_ip_netns_namespace_by_its_name") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = NetnsThread::new().unwrap();
    let name = format!("sonde-cli-{}", std::process::id());
    // SAFETY: gettid has no preconditions.
    let tid = ns.run(|| unsafe { libc::gettid() });
    sonde_tests::ip(&["netns", "attach", &name, &tid.to_string()]);
    let run = start(&["run", "scripts/tcp_reset.rhai", "--for", "2s"]);
    let (p4, _) = closed_ports(&ns);
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], p4)), 2));
    let (out, _) = finish(run);
    sonde_tests::ip(&["netns", "delete", &name]);
    let pod = format!("pod={name} ");
    let named = out
        .lines()
        .filter(|l| l.starts_with("type=TCPRESET_NOSOCK") && l.contains(&pod))
        .count();
    assert_eq!(named, 2, "{out}");
    assert!(!out.contains(&format!("netns:{}", ns.inode)), "{out}");
}
