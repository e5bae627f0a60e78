//! End to end: a script's mistakes cost that script only. The real daemon (and
//! `sonde run`) with scripts that loop on every event under a real reset flood, and
//! scripts that grow their state without bound, beside a canary script; checked from
//! outside: endpoint latency, signals, reloads, memory, `/status`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde_tests::daemon::{http_get, sample, Daemon};
use sonde_tests::{connect_refused, require_root, sonde_bin, NetnsThread};

/// Ticks every 200 ms; its counter proves the daemon keeps running scripts.
const CANARY: &str = r#"
const PROBE = #{ interval: "200ms" };
fn init(params) { this.t = metrics::counter("canary_ticks_total", "Ticks of the canary.", []); }
fn on_tick() { this.t.inc([]); }
"#;

/// Loops on every reset until its operations limit stops the call.
const LOOPER: &str = r#"
const PROBE = #{ program: "tcp_reset" };
fn on_event(ev) {
    let n = 0;
    loop { n += 1; }
}
"#;

/// Resets as fast as one thread makes them, in a namespace of its own, until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start() -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let ns = NetnsThread::new().unwrap();
            while !s.load(Ordering::Relaxed) {
                ns.run(|| {
                    connect_refused("127.0.0.1:9".parse().unwrap(), 200);
                });
            }
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn canary_ticks(d: &Daemon) -> f64 {
    sample(&d.metrics(), "sonde_canary_ticks_total", &[]).unwrap_or(0.0)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn a_looping_script_under_a_reset_flood_costs_only_itself() {
    if !require_root("a_looping_script_under_a_reset_flood_costs_only_itself") {
        return;
    }
    let mut d = Daemon::start("isolation-loop", &[], "shutdown_timeout: 3s\n");
    std::fs::write(d.script("canary.rhai"), CANARY).unwrap();
    std::fs::write(d.script("looper.rhai"), LOOPER).unwrap();
    d.wait_for("both scripts running", Duration::from_secs(20), || {
        d.unit("looper")["state"] == "running" && d.unit("canary")["state"] == "running"
    });
    let flood = Flood::start();
    // The looper is behind at once: its handler calls fail and it drops records.
    d.wait_for("the looper to be degraded", Duration::from_secs(20), || {
        d.unit("looper")["state"] == "degraded"
    });

    // The endpoints keep their latency, and the canary keeps ticking.
    let before = canary_ticks(&d);
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let (status, _) = http_get(d.addr, "/metrics", &[]).unwrap();
        times.push(t.elapsed());
        assert_eq!(status, 200);
        let (status, _) = http_get(d.addr, "/status", &[]).unwrap();
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let p99 = percentile(times.clone(), 0.99);
    let after = canary_ticks(&d);
    eprintln!(
        "/metrics under the flood: {} scrapes, p50 {:?}, p99 {:?}; canary ticks {before} -> {after}",
        times.len(),
        percentile(times, 0.5),
        p99
    );
    assert!(p99 < Duration::from_millis(100), "/metrics p99 {p99:?}");
    assert!(
        after - before >= 20.0,
        "canary ticked {before} -> {after} in 8s"
    );

    let unit = d.unit("looper");
    let m = d.metrics();
    let dropped = sample(
        &m,
        "sonde_script_records_dropped_total",
        &[("script", "looper")],
    )
    .unwrap_or(0.0);
    // The operations limit or the deadline, whichever the build's speed hits first.
    let errors = sample(&m, "sonde_script_errors_total", &[("script", "looper")]).unwrap_or(0.0);
    eprintln!("looper: {unit}\n dropped {dropped}, handler errors {errors}");
    assert!(dropped > 0.0, "records dropped while behind: {dropped}");
    assert!(errors > 0.0);
    assert_eq!(
        sample(&m, "sonde_script_degraded", &[("script", "looper")]),
        Some(1.0)
    );
    let last_error = unit["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("looper.rhai") && last_error.contains("on_event"),
        "last_error names the handler, file and line: {last_error}"
    );
    assert!(unit["reason"].as_str().is_some(), "{unit}");

    // Deleting the script takes effect within a second.
    std::fs::remove_file(d.script("looper.rhai")).unwrap();
    let took = d.wait_for("the looper to go", Duration::from_secs(5), || {
        d.unit("looper").is_null()
    });
    eprintln!("the looper was removed {took:?} after its file");
    assert!(took < Duration::from_secs(1), "removal took {took:?}");

    // Back, under the flood, then SIGTERM: the daemon is gone within
    // shutdown_timeout + 1 s.
    std::fs::write(d.script("looper.rhai"), LOOPER).unwrap();
    d.wait_for("the looper to be back", Duration::from_secs(10), || {
        d.unit("looper")["state"] == "degraded"
    });
    let t = Instant::now();
    let st = d.stop();
    let took = t.elapsed();
    drop(flood);
    eprintln!("SIGTERM under the flood: exited {st} after {took:?}");
    assert!(st.success(), "{st}");
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?}");
}

/// Scripts that grow what they hold on `this` in place, the ways the sandbox's size
/// limits alone do not stop (each call fails with a size error, the growth stays):
/// array push and append, string append, and a push on every event. `pad` is checked
/// before it grows. `true`: the script grows fast enough that it must be stopped
/// within the minute; the others (push of a 30 KB string per tick grows ~0.3 MB/s
/// here) must be stopped or stay under the budget.
const BOMBS: &[(&str, bool, &str)] = &[
    (
        "bomb_push",
        false,
        r#"
const PROBE = #{ interval: "20ms" };
fn init(params) { this.a = []; }
fn on_tick() { let s = "x"; s.pad(30000, "x"); this.a.push(s); }
"#,
    ),
    (
        "bomb_append",
        true,
        r#"
const PROBE = #{ interval: "20ms" };
fn init(params) { this.a = []; this.b = []; this.b.pad(9000, 12345); }
fn on_tick() { this.a.append(this.b); }
"#,
    ),
    (
        "bomb_string",
        true,
        r#"
const PROBE = #{ interval: "20ms" };
fn init(params) { this.s = ""; this.chunk = "y"; this.chunk.pad(30000, "y"); }
fn on_tick() { this.s.append(this.chunk); }
"#,
    ),
    (
        "bomb_pad",
        false,
        r#"
const PROBE = #{ interval: "20ms" };
fn init(params) { this.a = []; }
fn on_tick() { this.a.pad(this.a.len() + 9000, 12345); }
"#,
    ),
    (
        "bomb_event",
        true,
        r#"
const PROBE = #{ program: "tcp_reset" };
fn init(params) { this.seen = []; this.chunk = "z"; this.chunk.pad(30000, "z"); }
fn on_event(ev) { this.seen.push(this.chunk + ev.sport); }
"#,
    ),
];

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[test]
fn memory_bombs_are_stopped_and_the_canary_keeps_ticking() {
    if !require_root("memory_bombs_are_stopped_and_the_canary_keeps_ticking") {
        return;
    }
    let d = Daemon::start("isolation-memory", &[], "limits:\n  memory: 32MiB\n");
    std::fs::write(d.script("canary.rhai"), CANARY).unwrap();
    for (name, _, src) in BOMBS {
        std::fs::write(d.script(&format!("{name}.rhai")), src).unwrap();
    }
    let _flood = Flood::start();
    let start = Instant::now();
    let mut max_rss = 0;
    let mut last_ticks = canary_ticks(&d);
    let mut stalls = 0;
    while start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        max_rss = max_rss.max(rss_bytes(d.pid()));
        let ticks = canary_ticks(&d);
        if ticks <= last_ticks {
            stalls += 1;
        }
        last_ticks = ticks;
    }
    let m = d.metrics();
    let status = d.status();
    eprintln!(
        "max RSS over 60s: {} MiB; canary ticks {last_ticks}; canary stalls {stalls}",
        max_rss >> 20
    );
    let mut failures = Vec::new();
    for (name, must_stop, _) in BOMBS {
        let unit = d.unit(name);
        let stopped = sample(
            &m,
            "sonde_script_failures_total",
            &[("script", name), ("kind", "memory")],
        )
        .unwrap_or(0.0);
        eprintln!("{name}: stopped {stopped} times for memory; {unit}");
        let held = unit["memory_bytes"].as_u64().unwrap_or(0);
        if *must_stop && stopped < 1.0 {
            failures.push(format!("{name} was never stopped: {unit}"));
        }
        if !must_stop && stopped < 1.0 && held > 32 << 20 {
            failures.push(format!("{name} holds {held} bytes, not stopped: {unit}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(max_rss < 200 << 20, "RSS reached {} MiB", max_rss >> 20);
    assert!(
        last_ticks >= 250.0,
        "the canary ticked {last_ticks} times in 60s"
    );
    // Sampled every 500 ms: a sample without a new tick is a stall (two cores, a
    // flood and five bombs, so a few happen).
    assert!(
        stalls <= 12,
        "the canary stood still {stalls} times: {status}"
    );
    let failed = d.unit("bomb_push");
    if failed["state"] == "failed" {
        let reason = failed["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("memory:"), "{reason}");
        assert!(failed["retry_in_seconds"].as_f64().is_some(), "{failed}");
    }
}

#[test]
fn sonde_run_of_a_looping_script_ends_on_time() {
    if !require_root("sonde_run_of_a_looping_script_ends_on_time") {
        return;
    }
    let dir = sonde_tests::daemon::temp_dir("isolation-run");
    let script = dir.join("looper.rhai");
    std::fs::write(&script, LOOPER).unwrap();
    let _flood = Flood::start();

    // --for 3s ends after 3 s, not after the backlog.
    let t = Instant::now();
    let out = Command::new(sonde_bin())
        .arg("run")
        .arg(&script)
        .args(["--for", "3s", "-q"])
        .output()
        .unwrap();
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("sonde run --for 3s took {took:?}\n{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(6), "--for 3s took {took:?}");
    assert!(
        stderr.contains("dropped because the script was behind"),
        "{stderr}"
    );

    // Ctrl-C ends it within a second.
    let mut child = Command::new(sonde_bin())
        .arg("run")
        .arg(&script)
        .arg("-q")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    // SAFETY: kill on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    let took = t.elapsed();
    eprintln!("SIGINT: exited {st} after {took:?}");
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
