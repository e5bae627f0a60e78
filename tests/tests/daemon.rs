//! End to end: the real `sonde daemon` with a temp config on a random port, checked
//! from outside with real clients (Prometheus, promtool, `sonde events`, bpftool)
//! and a small Loki receiver (the only fake: Loki itself does not run here).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::daemon::{
    free_port, http_get, prometheus, promtool_check, sample, temp_dir, Daemon,
};
use sonde_tests::loki::{LokiReceiver, Pushes};
use sonde_tests::{connect_refused, require_root, sonde_bin, NetnsThread};

/// `n` connects to a closed port in the namespace: `n` NOSOCK resets.
fn resets(ns: &NetnsThread, n: usize) {
    ns.run(move || {
        connect_refused("127.0.0.1:9".parse().unwrap(), n);
    });
}

#[test]
fn prometheus_scrapes_the_reset_counter_with_the_pod_label() {
    if !require_root("prometheus_scrapes_the_reset_counter_with_the_pod_label") {
        return;
    }
    let d = Daemon::start("prom", &["tcp_reset", "packet_loss"], "");
    let ns = NetnsThread::new().unwrap();
    let pod = format!("netns:{}", ns.inode);
    resets(&ns, 7);

    // The built-in script reads the kernel counts every 5 s.
    let mut m = String::new();
    d.wait_for(
        "the reset counter on /metrics",
        Duration::from_secs(10),
        || {
            m = d.metrics();
            sample(
                &m,
                "sonde_tcp_reset_segments_total",
                &[("pod", &pod), ("kind", "NOSOCK")],
            ) == Some(7.0)
        },
    );
    assert!(m.contains("node=\"e2e-node\""), "{m}");
    // Self-metrics: both scripts up, records counted, build info.
    for script in ["tcp_reset", "packet_loss"] {
        assert_eq!(
            sample(&m, "sonde_script_up", &[("script", script)]),
            Some(1.0),
            "{m}"
        );
    }
    assert!(
        sample(&m, "sonde_probe_records_total", &[("script", "tcp_reset")]).unwrap() >= 14.0,
        "7 NOSOCK and 7 RECEIVE records: {m}"
    );
    assert!(m.contains("sonde_build_info{"), "{m}");
    promtool_check(&m);
    let (code, om) = http_get(
        d.addr,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    // A real Prometheus server scrapes the daemon; its query API has the counter.
    let (mut prom, paddr) = prometheus(
        &d.dir,
        &format!(
            "  - job_name: sonde\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    );
    let pdir = d.dir.join("prometheus");
    let query = format!(
        "/api/v1/query?query=sonde_tcp_reset_segments_total%7Bpod%3D%22{}%22%2Ckind%3D%22NOSOCK%22%7D",
        pod.replace(':', "%3A")
    );
    let mut last = String::new();
    let found = (0..120).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        let Ok((200, body)) = http_get(paddr, &query, &[]) else {
            return false;
        };
        last = body;
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let r = &v["data"]["result"];
        r.as_array().is_some_and(|r| r.len() == 1)
            && r[0]["value"][1] == "7"
            && r[0]["metric"]["node"] == "e2e-node"
            && r[0]["metric"]["job"] == "sonde"
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        found,
        "Prometheus never returned the counter; last answer: {last}\n{}",
        std::fs::read_to_string(pdir.join("prometheus.log")).unwrap_or_default()
    );
}

/// A script that counts its ticks: easy to watch from outside.
const TICKER: &str = r#"//! ticker: counts its ticks.
const PROBE = #{ interval: "100ms" };
fn init(params) { this.ticks = metrics::counter("e2e_ticks_total", "Ticks of the e2e script.", ["version"]); }
fn on_tick() { this.ticks.inc(["one"]); }
"#;

#[test]
fn script_directory_is_hot_reloaded() {
    if !require_root("script_directory_is_hot_reloaded") {
        return;
    }
    let d = Daemon::start("reload", &[], "");
    let ticks = |m: &str| sample(m, "sonde_e2e_ticks_total", &[("version", "one")]);

    // Dropped in: producing within 2 s.
    std::fs::write(d.script("ticker.rhai"), TICKER).unwrap();
    let took = d.wait_for("a new script to produce", Duration::from_secs(2), || {
        ticks(&d.metrics()).is_some_and(|v| v >= 1.0)
    });
    eprintln!("new script producing after {took:?}");

    // Edited: the counter carries on from where it was.
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks(&d.metrics()).unwrap();
    std::fs::write(
        d.script("ticker.rhai"),
        TICKER.replace("e2e script.", "e2e script, edited."),
    )
    .unwrap();
    d.wait_for("the edited help text", Duration::from_secs(3), || {
        d.metrics().contains("e2e script, edited.")
    });
    let after = ticks(&d.metrics()).unwrap();
    assert!(
        after >= before,
        "counter went from {before} to {after} across an edit"
    );

    // A broken edit: rejected with file:line:col, counted, the old version keeps going.
    let failures =
        |m: &str| sample(m, "sonde_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0);
    let f0 = failures(&d.metrics());
    std::fs::write(d.script("ticker.rhai"), "fn on_tick( {\n").unwrap();
    d.wait_for(
        "the broken edit to be rejected",
        Duration::from_secs(3),
        || failures(&d.metrics()) > f0,
    );
    let unit = d.unit("ticker");
    assert_eq!(unit["state"], "running", "{unit}");
    let err = unit["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&format!("{}:1:", d.script("ticker.rhai").display())),
        "{err}"
    );
    let t0 = ticks(&d.metrics()).unwrap();
    d.wait_for(
        "the old version to keep ticking",
        Duration::from_secs(2),
        || ticks(&d.metrics()).unwrap() > t0 + 2.0,
    );
    assert!(d
        .stderr()
        .contains("script rejected; the running version stays"));

    // Deleted: its series disappear.
    std::fs::remove_file(d.script("ticker.rhai")).unwrap();
    d.wait_for("the series to disappear", Duration::from_secs(3), || {
        !d.metrics().contains("sonde_e2e_ticks_total")
    });
    assert!(d.unit("ticker").is_null());
}

#[test]
fn editing_a_script_keeps_its_program_and_kernel_counts() {
    if !require_root("editing_a_script_keeps_its_program_and_kernel_counts") {
        return;
    }
    let d = Daemon::start("keep", &[], "");
    let script = |help: &str, emit: bool| {
        format!(
            r#"const PROBE = #{{ program: "tcp_reset", params: #{{ emit_events: {emit} }}, interval: "100ms" }};
fn init(params) {{ this.c = metrics::counter("e2e_resets_total", "{help}", ["pod", "kind"]); }}
fn on_tick() {{ for e in bpf::map("counts") {{ this.c.set_total([e.key.pod.name, e.key.kind], e.value); }} }}
"#
        )
    };
    std::fs::write(d.script("resets.rhai"), script("Resets.", false)).unwrap();
    d.wait_for("the script to run", Duration::from_secs(5), || {
        d.unit("resets")["state"] == "running"
    });
    let ns = NetnsThread::new().unwrap();
    let pod = format!("netns:{}", ns.inode);
    let count = |m: &str| {
        sample(
            m,
            "sonde_e2e_resets_total",
            &[("pod", &pod), ("kind", "NOSOCK")],
        )
    };
    resets(&ns, 3);
    d.wait_for("3 resets", Duration::from_secs(3), || {
        count(&d.metrics()) == Some(3.0)
    });
    let first = d.unit("resets")["loaded_at"].clone();

    // Same kernel side: the attached program and its counts carry over.
    std::fs::write(d.script("resets.rhai"), script("Resets, edited.", false)).unwrap();
    d.wait_for("the edit", Duration::from_secs(3), || {
        d.unit("resets")["loaded_at"] != first
    });
    resets(&ns, 2);
    d.wait_for("3 + 2 resets", Duration::from_secs(3), || {
        count(&d.metrics()) == Some(5.0)
    });

    // A changed knob reloads the program with the new value.
    let second = d.unit("resets")["loaded_at"].clone();
    std::fs::write(d.script("resets.rhai"), script("Resets.", true)).unwrap();
    d.wait_for("the knob change", Duration::from_secs(3), || {
        d.unit("resets")["loaded_at"] != second
    });
    let knobs = d.unit("resets")["knobs"].clone();
    assert_eq!(knobs["emit_events"], "true", "{knobs}");
}

#[test]
fn loki_gets_events_and_catches_up_after_an_outage() {
    if !require_root("loki_gets_events_and_catches_up_after_an_outage") {
        return;
    }
    let port = free_port();
    let pushes = Pushes::default();
    let mut loki = LokiReceiver::start_on(port, pushes.clone());
    let d = Daemon::start(
        "loki",
        &["tcp_reset"],
        &format!(
            "sinks:\n  loki:\n    url: http://127.0.0.1:{port}\n    tenant: team-a\n    batch_wait: 200ms\n    min_backoff: 100ms\n    max_backoff: 500ms\n    labels: {{ job: sonde-e2e }}\n"
        ),
    );
    let ns = NetnsThread::new().unwrap();
    let pod = format!("netns:{}", ns.inode);
    let nosock = |loki: &LokiReceiver| {
        loki.lines()
            .into_iter()
            .filter(|(labels, ev)| {
                labels["type"] == "TCPRESET_NOSOCK" && ev["labels"]["pod"] == pod.as_str()
            })
            .count()
    };
    resets(&ns, 3);
    d.wait_for("3 events in Loki", Duration::from_secs(5), || {
        nosock(&loki) == 3
    });
    let (labels, ev) = loki
        .lines()
        .into_iter()
        .find(|(l, _)| l["type"] == "TCPRESET_NOSOCK")
        .unwrap();
    assert_eq!(labels["job"], "sonde-e2e", "{labels}");
    assert_eq!(labels["node"], "e2e-node", "{labels}");
    assert_eq!(ev["type"], "TCPRESET_NOSOCK", "{ev}");
    assert_eq!(ev["fields"]["sport"], 9, "{ev}");
    let first = pushes.lock().unwrap()[0].clone();
    assert_eq!(first.header("x-scope-orgid"), Some("team-a"), "{first:?}");
    assert_eq!(
        first.header("content-type"),
        Some("application/json"),
        "{first:?}"
    );

    // Loki goes away: the daemon keeps serving and printing; events wait.
    loki.stop();
    drop(loki);
    resets(&ns, 4);
    let t = Instant::now();
    for _ in 0..10 {
        d.metrics();
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "scrapes slowed down while Loki was down: {:?}",
        t.elapsed()
    );
    d.wait_for(
        "stdout to show the new resets",
        Duration::from_secs(3),
        || d.stdout().matches("type=TCPRESET_NOSOCK").count() >= 7,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sample(&d.metrics(), "sonde_sink_errors_total", &[("sink", "loki")]).unwrap_or(0.0) >= 1.0,
        "failed pushes are counted"
    );

    // Loki is back on the same port: the buffered events arrive.
    let loki = LokiReceiver::start_on(port, pushes.clone());
    d.wait_for(
        "the buffered events in Loki",
        Duration::from_secs(10),
        || nosock(&loki) == 7,
    );
    assert_eq!(
        sample(
            &d.metrics(),
            "sonde_events_dropped_total",
            &[("sink", "loki")]
        ),
        Some(0.0)
    );
}

#[test]
fn events_follow_shows_events_live() {
    if !require_root("events_follow_shows_events_live") {
        return;
    }
    let d = Daemon::start(
        "follow",
        &["tcp_reset"],
        "sinks:\n  stdout:\n    enabled: false\n",
    );
    let mut follow = Command::new(sonde_bin())
        .args(["events", "--follow", "--type", "TCPRESET_NOSOCK", "--addr"])
        .arg(d.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let ns = NetnsThread::new().unwrap();
    let pod = format!("pod=netns:{}", ns.inode);
    resets(&ns, 2);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines.len() < 2 && Instant::now() < deadline {
        // Resets elsewhere on the node (other namespaces) are followed too.
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            if l.contains(&pod) {
                lines.push(l);
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        // `2026-12-06T07:01:02.345Z type=TCPRESET_NOSOCK ...`
        let (time, event) = l.split_once(' ').unwrap_or_default();
        assert!(time.len() == 24 && time.ends_with('Z'), "{l}");
        assert!(
            event.starts_with("type=TCPRESET_NOSOCK ")
                && event.contains(&pod)
                && event.contains("sport=9"),
            "{l}"
        );
    }
    // The stdout sink was off: nothing there.
    assert!(!d.stdout().contains("TCPRESET"));
}

/// Ids of the BPF programs and links a process holds: `prog_id:` / `link_id:` lines
/// of its descriptors' fdinfo.
fn bpf_ids_of(pid: u32, key: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().ok()))?
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Ids of every BPF program or link loaded in the kernel, from bpftool.
fn bpf_ids(kind: &str) -> Vec<(u64, String)> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                p["name"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

#[test]
fn sigterm_leaves_no_program_loaded() {
    if !require_root("sigterm_leaves_no_program_loaded") {
        return;
    }
    let mut d = Daemon::start("sigterm", &["tcp_reset", "packet_loss"], "");
    let pid = d.pid();
    let progs = bpf_ids_of(pid, "prog_id:");
    let links = bpf_ids_of(pid, "link_id:");
    let names: Vec<String> = bpf_ids("prog")
        .into_iter()
        .filter(|(id, _)| progs.contains(id))
        .map(|(_, n)| n)
        .collect();
    // tp_btf programs where the kernel has its BTF (tpb_*), classic tracepoints else.
    let loaded = |hook: &str| {
        names
            .iter()
            .any(|n| n == &format!("tpb_{hook}") || n == &format!("tp_{hook}"))
    };
    assert!(loaded("send_reset"), "{names:?}");
    assert!(loaded("kfree_skb"), "{names:?}");
    let st = d.stop();
    assert!(st.success(), "exit status {st}\n{}", d.stderr());
    assert!(
        d.stderr().contains("sonde daemon stopped"),
        "{}",
        d.stderr()
    );
    // Every program and link sonde held is gone from the kernel. The kernel frees
    // a program after the last reference goes, past an RCU grace period (tp_btf
    // programs: an RCU tasks-trace one, which can take a moment): give it 5 s.
    let prog_left = || -> Vec<(u64, String)> {
        bpf_ids("prog")
            .into_iter()
            .filter(|(id, _)| progs.contains(id))
            .collect()
    };
    let since = std::time::Instant::now();
    let mut left = prog_left();
    while !left.is_empty() && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        left = prog_left();
    }
    assert!(left.is_empty(), "programs left 5 s after SIGTERM: {left:?}");
    let left: Vec<(u64, String)> = bpf_ids("link")
        .into_iter()
        .filter(|(id, _)| links.contains(id))
        .collect();
    assert!(left.is_empty(), "links left after SIGTERM: {left:?}");
}

#[test]
fn a_bad_config_is_refused_at_start_and_rejected_on_reload() {
    if !require_root("a_bad_config_is_refused_at_start_and_rejected_on_reload") {
        return;
    }
    let dir = temp_dir("badcfg");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: 127.0.0.1:0\nlimits:\n  call_deadline: soon\n",
    )
    .unwrap();
    let out = Command::new(sonde_bin())
        .args(["daemon", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: limits.call_deadline: ", bad.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // While running: a broken config is rejected and the scripts keep running.
    let d = Daemon::start("badreload", &["tcp_reset"], "");
    let cfg = d.dir.join("sonde.yaml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}frobnicate: true\n")).unwrap();
    d.wait_for("the config to be rejected", Duration::from_secs(3), || {
        sample(&d.metrics(), "sonde_config_last_reload_successful", &[]) == Some(0.0)
    });
    let errors = d.status()["last_reload"]["errors"].to_string();
    assert!(errors.contains("unknown field `frobnicate`"), "{errors}");
    assert!(errors.contains("sonde.yaml"), "{errors}");
    assert_eq!(
        sample(&d.metrics(), "sonde_script_up", &[("script", "tcp_reset")]),
        Some(1.0)
    );
    // The fixed file is accepted.
    std::fs::write(&cfg, &good).unwrap();
    d.wait_for(
        "the fixed config to be accepted",
        Duration::from_secs(3),
        || sample(&d.metrics(), "sonde_config_last_reload_successful", &[]) == Some(1.0),
    );
    // A param the script does not declare: that script's change is rejected, the
    // running version stays, and the message says where and what is known.
    std::fs::write(
        &cfg,
        format!("{good}  params:\n    tcp_reset: {{ stak: true }}\n"),
    )
    .unwrap();
    d.wait_for(
        "the bad param to be rejected",
        Duration::from_secs(3),
        || d.unit("tcp_reset")["last_error"].is_string(),
    );
    let unit = d.unit("tcp_reset");
    let err = unit["last_error"].as_str().unwrap();
    assert!(
        err.contains(
            "scripts.params.tcp_reset: unknown param `stak` (did you mean `stack`?); known params: emit_events, stack"
        ),
        "{err}"
    );
    assert_eq!(unit["state"], "running", "{unit}");
}

#[test]
fn a_configmap_style_swap_and_sighup_reload() {
    if !require_root("a_configmap_style_swap_and_sighup_reload") {
        return;
    }
    let d = Daemon::start("configmap", &[], "");
    let ticks = |m: &str, v: &str| sample(m, "sonde_e2e_ticks_total", &[("version", v)]);
    // The layout kubelet gives a mounted ConfigMap: timestamped directories, a
    // `..data` symlink to the current one, and visible symlinks through it.
    let root = d.dir.join("scripts");
    let version = |n: u32, label: &str| {
        let dir = root.join(format!("..2026_11_21_0{n}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("ticker.rhai"),
            TICKER.replace("[\"one\"]", &format!("[\"{label}\"]")),
        )
        .unwrap();
        dir.file_name().unwrap().to_owned()
    };
    let v1 = version(1, "one");
    std::os::unix::fs::symlink(&v1, root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ticker.rhai", root.join("ticker.rhai")).unwrap();
    d.wait_for("the mounted script", Duration::from_secs(2), || {
        ticks(&d.metrics(), "one").is_some()
    });
    // The swap: a new directory, `..data_tmp` pointing at it, renamed over `..data`.
    let v2 = version(2, "two");
    std::os::unix::fs::symlink(&v2, root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join(&v1)).unwrap();
    d.wait_for("the swapped script", Duration::from_secs(2), || {
        ticks(&d.metrics(), "two").is_some()
    });
    // The counter family lives on across versions: the old series is still there.
    assert!(ticks(&d.metrics(), "one").is_some());

    // SIGHUP reloads by hand (here: nothing changed, a successful reload).
    let ok = |m: &str| sample(m, "sonde_config_reloads_total", &[("result", "success")]).unwrap();
    let before = ok(&d.metrics());
    // SAFETY: kill on a child we own.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    d.wait_for("the SIGHUP reload", Duration::from_secs(2), || {
        ok(&d.metrics()) > before
    });
    assert!(d.stderr().contains("SIGHUP: reloading"));
}

#[test]
fn kernel_run_stats_are_exported_when_the_kernel_keeps_them() {
    if !require_root("kernel_run_stats_are_exported_when_the_kernel_keeps_them") {
        return;
    }
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let was = std::fs::read_to_string(STATS).unwrap();
    std::fs::write(STATS, "1").unwrap();
    let d = Daemon::start("runstats", &["tcp_reset"], "");
    let ns = NetnsThread::new().unwrap();
    resets(&ns, 5);
    // The tp_btf variant (tpb_*) where the kernel has its BTF, the tracepoint else.
    let runs = |m: &str| {
        ["tpb_send_reset", "tp_send_reset"]
            .iter()
            .filter_map(|p| {
                sample(
                    m,
                    "sonde_bpf_program_runs_total",
                    &[("script", "tcp_reset"), ("program", p)],
                )
            })
            .fold(0.0, f64::max)
    };
    let mut m = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_for("program runs", Duration::from_secs(3), || {
            m = d.metrics();
            runs(&m) >= 5.0
        });
    }));
    std::fs::write(STATS, was.trim()).unwrap();
    r.unwrap();
    let secs = ["tpb_send_reset", "tp_send_reset"]
        .iter()
        .find_map(|p| {
            sample(
                &m,
                "sonde_bpf_program_run_seconds_total",
                &[("script", "tcp_reset"), ("program", p)],
            )
        })
        .unwrap();
    assert!(secs > 0.0 && secs < 0.01, "{secs}");
    // Counted by the kernel with or without bpf_stats: the series is always there.
    let misses = ["tpb_send_reset", "tp_send_reset"].iter().find_map(|p| {
        sample(
            &m,
            "sonde_bpf_program_recursion_misses_total",
            &[("script", "tcp_reset"), ("program", p)],
        )
    });
    assert_eq!(misses, Some(0.0), "{m}");
}

/// A built-in probe whose program this kernel cannot run (virtcmd_latency needs
/// kprobes and virtio_net) is reported, not failed: the reload succeeds, the
/// other scripts run, `/status` keeps the reason and the log says it at WARN.
#[test]
fn a_builtin_the_kernel_cannot_run_is_reported_and_the_others_run() {
    if !require_root("a_builtin_the_kernel_cannot_run_is_reported_and_the_others_run") {
        return;
    }
    let probes = Command::new(sonde_bin())
        .args(["probes", "--json"])
        .output()
        .unwrap();
    let probes: serde_json::Value = serde_json::from_slice(&probes.stdout).unwrap();
    let runs = probes["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == "virtcmd_latency")
        .map(|p| p["runs"] == true)
        .unwrap();
    let d = Daemon::start("unavailable", &["tcp_reset", "virtcmd_latency"], "");
    let m = d.metrics();
    let up = |s: &str| sample(&m, "sonde_script_up", &[("script", s)]);
    assert_eq!(up("tcp_reset"), Some(1.0), "{m}");
    if runs {
        eprintln!("virtcmd_latency can run on this kernel: checking it runs");
        assert_eq!(up("virtcmd_latency"), Some(1.0), "{m}");
        return;
    }
    assert_eq!(up("virtcmd_latency"), Some(0.0), "{m}");
    let unavailable = |s: &str| sample(&m, "sonde_script_unavailable", &[("script", s)]);
    assert_eq!(unavailable("virtcmd_latency"), Some(1.0), "{m}");
    assert_eq!(unavailable("tcp_reset"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "sonde_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0),
        0.0,
        "{m}"
    );
    let unit = d.unit("virtcmd_latency");
    assert_eq!(unit["state"], "unavailable", "{unit}");
    let why = unit["last_error"].to_string();
    assert!(why.contains("no variant can run on this kernel"), "{unit}");
    assert!(!why.contains("\\n"), "one line: {unit}");
    // Each variant, why it did not load, and where it stopped.
    let skipped = unit["skipped_variants"]
        .as_array()
        .expect("skipped_variants");
    assert!(!skipped.is_empty(), "{unit}");
    for v in skipped {
        assert!(v["variant"].is_string(), "{v}");
        assert!(
            v["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty() && !r.contains('\n')),
            "{v}"
        );
        let stage = v["stage"].as_str().unwrap_or_default();
        assert!(
            [
                "not_asked",
                "unavailable",
                "object",
                "load",
                "attach",
                "maps"
            ]
            .contains(&stage),
            "{v}"
        );
        assert!(v["verifier_log"].is_boolean(), "{v}");
    }
    let log = d.stderr();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("cannot run on this kernel")
            && l.contains("virtcmd_latency")),
        "{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}

/// Counts `# TYPE` lines of families whose name starts with `prefix`.
fn families_named(metrics: &str, prefix: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("# TYPE {prefix}")))
        .count()
}

/// Fifty new metric families a tick, ten series each.
const FAMILIES: &str = r#"//! families: a new metric family every time, never the same.
const PROBE = #{ interval: "100ms" };
fn init(params) { this.n = 0; }
fn on_tick() {
    for j in 0..50 {
        this.n += 1;
        let c = metrics::counter("fam_" + this.n + "_total", "A family per name.", ["k"]);
        for i in 0..10 { c.inc([i]); }
    }
}
"#;

/// One family, 500 new series a tick.
const HOG: &str = r#"//! hog: new series without end.
const PROBE = #{ interval: "100ms" };
fn init(params) { this.n = 0; this.g = metrics::gauge("hog_series", "A series per number.", ["n"]); }
fn on_tick() { for i in 0..500 { this.n += 1; this.g.set([this.n], 1); } }
"#;

#[test]
fn scripts_past_their_family_and_series_budgets_are_held_and_the_others_keep_going() {
    if !require_root(
        "scripts_past_their_family_and_series_budgets_are_held_and_the_others_keep_going",
    ) {
        return;
    }
    let d = Daemon::start(
        "budgets",
        &[],
        "limits:\n  families_per_script: 16\n  total_series: 5000\n  series_budget: 100000\n",
    );
    let ticks = |m: &str| sample(m, "sonde_e2e_ticks_total", &[("version", "one")]);
    // The canary first: its one series exists before the others fill the budget.
    std::fs::write(d.script("ticker.rhai"), TICKER).unwrap();
    d.wait_for("the canary to tick", Duration::from_secs(3), || {
        ticks(&d.metrics()).is_some_and(|v| v >= 1.0)
    });
    std::fs::write(d.script("families.rhai"), FAMILIES).unwrap();
    std::fs::write(d.script("hog.rhai"), HOG).unwrap();
    let refused = |m: &str| {
        sample(
            m,
            "sonde_metric_families_dropped_total",
            &[("script", "families")],
        )
    };
    let total_dropped = |m: &str| {
        sample(
            m,
            "sonde_series_dropped_total",
            &[("metric", "sonde_hog_series"), ("reason", "total_series")],
        )
    };
    d.wait_for(
        "both budgets to be reached",
        Duration::from_secs(10),
        || {
            let m = d.metrics();
            refused(&m).is_some_and(|v| v > 0.0) && total_dropped(&m).is_some_and(|v| v > 0.0)
        },
    );
    // Unchecked, `families` would add 500 families (5,000 series) a second and
    // `hog` 5,000 series a second.
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let m = d.metrics();
    let scrape = t.elapsed();
    let t0 = ticks(&m).unwrap();
    let (r0, h0) = (refused(&m).unwrap(), total_dropped(&m).unwrap());
    let series = m.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "/metrics: {} bytes, {series} samples, {} fam_ families, scraped in {scrape:?}",
        m.len(),
        families_named(&m, "sonde_fam_")
    );
    assert_eq!(
        families_named(&m, "sonde_fam_"),
        16,
        "families past the budget"
    );
    assert!(
        sample(&m, "sonde_script_series", &[("script", "hog")]).unwrap() <= 5000.0,
        "{m}"
    );
    // 5000 script series and sonde's own: well under a megabyte.
    assert!(m.len() < 600_000, "/metrics is {} bytes", m.len());
    assert!(series < 6_500, "{series} samples");
    assert_eq!(
        sample(
            &m,
            "sonde_script_metric_families",
            &[("script", "families")]
        ),
        Some(16.0)
    );
    assert!(
        scrape < Duration::from_millis(500),
        "scrape took {scrape:?}"
    );

    // The canary keeps updating; the refusals keep being counted.
    std::thread::sleep(Duration::from_millis(1500));
    let m = d.metrics();
    assert!(ticks(&m).unwrap() >= t0 + 5.0, "the canary stalled");
    assert!(refused(&m).unwrap() > r0, "family refusals not counted");
    assert!(
        total_dropped(&m).unwrap() > h0,
        "dropped series not counted"
    );
    assert!(
        sample(
            &m,
            "sonde_script_errors_total",
            &[("script", "families"), ("kind", "runtime")]
        )
        .is_some_and(|v| v > 0.0),
        "the script did not see an error"
    );

    // /status says who holds what, and who is past a budget.
    let st = d.status();
    assert!(
        st["metrics"]["script_series"].as_u64().unwrap() <= 5000,
        "{st}"
    );
    let fam = d.unit("families");
    assert_eq!(fam["state"], "degraded", "{fam}");
    assert_eq!(fam["metrics"]["families"], 16, "{fam}");
    assert!(
        fam["metrics"]["families_refused"].as_u64().unwrap() > 0,
        "{fam}"
    );
    assert!(
        fam["degraded"]
            .as_str()
            .unwrap()
            .contains("limits.families_per_script"),
        "{fam}"
    );
    let hog = d.unit("hog");
    assert_eq!(hog["state"], "degraded", "{hog}");
    assert!(
        hog["metrics"]["series_dropped_total_budget"]
            .as_u64()
            .unwrap()
            > 0,
        "{hog}"
    );
    assert_eq!(d.unit("ticker")["state"], "running");
    let log = d.stderr();
    assert!(log.contains("metric family budget reached"), "{log}");
    assert!(
        log.contains("total series budget of the scripts reached"),
        "{log}"
    );

    // The hog goes away: its series free the total for the others.
    std::fs::remove_file(d.script("hog.rhai")).unwrap();
    d.wait_for(
        "the hog's series to be released",
        Duration::from_secs(3),
        || d.status()["metrics"]["script_series"].as_u64().unwrap() < 1000,
    );
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

#[test]
fn a_large_script_file_and_a_fifo_are_refused_and_the_rest_runs() {
    if !require_root("a_large_script_file_and_a_fifo_are_refused_and_the_rest_runs") {
        return;
    }
    // 2 MiB of a valid script: a comment and a tick.
    let big = |p: &std::path::Path| {
        let mut text = "//! big: valid, only too large.\n".to_string();
        while text.len() < 2 << 20 {
            text.push_str("// padding padding padding padding padding padding padding padding\n");
        }
        std::fs::write(p, text).unwrap();
    };
    let ticker = |p: &std::path::Path| std::fs::write(p, TICKER).unwrap();
    let t = Instant::now();
    let d = Daemon::start_with(
        "refuse",
        &[],
        "",
        &[
            ("big.rhai", &big),
            ("fifo.rhai", &mkfifo),
            ("ticker.rhai", &ticker),
        ],
        None,
    );
    eprintln!(
        "ready {:?} after start with a FIFO in the script directory",
        t.elapsed()
    );
    let size = std::fs::metadata(d.script("big.rhai")).unwrap().len();
    let big_unit = d.unit("big");
    assert_eq!(big_unit["state"], "failed", "{big_unit}");
    assert_eq!(
        big_unit["last_error"].as_str().unwrap(),
        format!(
            "{}: refused: {size} bytes, over limits.max_script_bytes (1048576 bytes); split the script or raise the limit",
            d.script("big.rhai").display()
        )
    );
    let fifo = d.unit("fifo");
    assert_eq!(fifo["state"], "failed", "{fifo}");
    assert!(
        fifo["last_error"].as_str().unwrap().contains(&format!(
            "{}: refused: it is a FIFO, not a regular file",
            d.script("fifo.rhai").display()
        )),
        "{fifo}"
    );
    let ticks = |m: &str| sample(m, "sonde_e2e_ticks_total", &[("version", "one")]);
    d.wait_for("the other script to tick", Duration::from_secs(3), || {
        ticks(&d.metrics()).is_some_and(|v| v >= 3.0)
    });
    let m = d.metrics();
    let refused = |m: &str, script: &str, reason: &str| {
        sample(
            m,
            "sonde_script_files_refused_total",
            &[("script", script), ("reason", reason)],
        )
    };
    assert!(
        refused(&m, "big", "too_large").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert!(
        refused(&m, "fifo", "not_regular_file").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "sonde_script_up", &[("script", "big")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "sonde_script_up", &[("script", "ticker")]),
        Some(1.0)
    );
    assert!(d.stderr().contains("script file refused"), "{}", d.stderr());
    let reloads = d.status()["last_reload"].clone();
    assert_eq!(reloads["result"], "failure", "{reloads}");

    // Cut down to size: it runs.
    std::fs::write(
        d.script("big.rhai"),
        TICKER.replace("e2e_ticks_total", "e2e_big_ticks_total"),
    )
    .unwrap();
    d.wait_for("the fixed script to run", Duration::from_secs(3), || {
        d.unit("big")["state"] == "running"
    });
    // Gone: so is its unit.
    std::fs::remove_file(d.script("fifo.rhai")).unwrap();
    d.wait_for("the FIFO's unit to go", Duration::from_secs(3), || {
        d.unit("fifo").is_null()
    });
}

/// Emits 200 events of ~300 bytes every 20 ms: 3 MB/s of text on stdout.
const EMITTER: &str = r#"//! emitter: an event flood.
const PROBE = #{ interval: "20ms" };
fn init(params) { this.pad = "x"; for i in 0..8 { this.pad += this.pad; } }
fn on_tick() { for i in 0..200 { emit("E2E_FLOOD", #{ i: i, pad: this.pad }); } }
"#;

#[test]
fn sigterm_ends_the_process_within_shutdown_timeout_while_stdout_is_blocked_and_loki_silent() {
    if !require_root(
        "sigterm_ends_the_process_within_shutdown_timeout_while_stdout_is_blocked_and_loki_silent",
    ) {
        return;
    }
    // A Loki that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let loki = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(64) {
            held.push(s);
        }
    });
    // stdout into a pipe whose reader never reads.
    let mut reader = Command::new("sleep")
        .arg("120")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe: Stdio = reader.stdin.take().unwrap().into();
    let emitter = |p: &std::path::Path| std::fs::write(p, EMITTER).unwrap();
    let timeout = Duration::from_secs(2);
    let mut d = Daemon::start_with(
        "stuck-stdout",
        &[],
        &format!(
            "shutdown_timeout: 2s\nsinks:\n  queue: 256\n  loki:\n    url: http://{loki}\n    timeout: 30s\n    batch_wait: 100ms\n"
        ),
        &[("emitter.rhai", &emitter)],
        Some(pipe),
    );
    let dropped = |sink: &str| {
        sample(
            &d.metrics(),
            "sonde_events_dropped_total",
            &[("sink", sink)],
        )
        .unwrap_or(0.0)
    };
    d.wait_for(
        "stdout to be full and events dropped",
        Duration::from_secs(10),
        || dropped("stdout") > 0.0,
    );
    let t = Instant::now();
    let st = d.stop();
    let took = t.elapsed();
    let _ = reader.kill();
    let _ = reader.wait();
    eprintln!("SIGTERM to exit: {took:?} (shutdown_timeout {timeout:?}), exit status {st}");
    let log = d.stderr();
    assert!(
        took < timeout + Duration::from_secs(1),
        "took {took:?} to exit\n{log}"
    );
    assert!(st.success(), "exit status {st}\n{log}");
    assert!(log.contains("sonde daemon stopped"), "{log}");
    assert!(
        log.contains("stdout did not take the events before the shutdown deadline"),
        "{log}"
    );
}
