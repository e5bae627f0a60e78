//! The `daemon` benchmark: `sonde daemon` as it runs on a node, measured from
//! outside: idle cost, scrape latency with 100 pods' worth of series (beside
//! prometheus-node-exporter on the same machine), and cost under 50k events/s.
//!
//! Everything the daemon will see (the pods' namespaces, the load's namespaces) is
//! set up before it starts, so its stdout can be counted by namespace from the
//! first line. Order: start sonde (and node_exporter), idle window for both, pods
//! connect and their series are awaited, scrapes of both, the load with stdout
//! events on, then (unless `--no-stdout-off`) a second daemon with the stdout sink
//! off under the same load.
//!
//! ```text
//! cargo run --release -p sonde-bench -- daemon [--idle-seconds 30] [--load-seconds 20]
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sonde_tests::daemon::{wait_ready, Options, Setup};

use crate::daemon_report::{DaemonReport, LoadRow, ResourceRow, ScrapeRow, SeriesInfo, StartupAll};
use crate::resets::{ensure_sonde, machine, progress, warn_if_busy};
use crate::scrape::{metric_sum, Client, Latencies, OPENMETRICS};
use crate::tool::{Ended, Filter, Ready, Tool};
use crate::workload::{Pods, Workload, RESETS_PER_CONNECT};

/// Refused connects each pod makes: enough for both reset kinds and a drop.
const CONNECTS_PER_POD: u64 = 3;
/// After readiness, before any window: the first reload's leftovers settle.
const SETTLE: Duration = Duration::from_secs(2);
/// After the load, time for the daemon to drain its ring buffers.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest wait for the pods' series (the scripts publish kernel counts every 5 s).
const SERIES_TIMEOUT: Duration = Duration::from_secs(15);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Scrapes before the measured ones (first-use allocations, connection set-up).
const WARMUP_SCRAPES: usize = 5;
/// Scrapes during the load: one a second after the first two seconds.
const LOAD_SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// Settings of a `daemon` run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub idle_seconds: u64,
    pub load_seconds: u64,
    /// Refused connects per second of the load (two reset events each).
    pub rate: u64,
    pub pods: usize,
    pub scrapes: usize,
    pub threads: usize,
    pub stdout_off_row: bool,
    pub sonde: PathBuf,
    pub node_exporter: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub root: PathBuf,
}

impl DaemonOptions {
    pub fn parse(args: &[String], root: PathBuf) -> anyhow::Result<DaemonOptions> {
        let mut o = DaemonOptions {
            idle_seconds: 30,
            load_seconds: 20,
            rate: 25_000,
            pods: 100,
            scrapes: 200,
            threads: crate::cpus(),
            stdout_off_row: true,
            sonde: root.join("target/release/sonde"),
            node_exporter: crate::which("prometheus-node-exporter")
                .or_else(|| crate::which("node_exporter")),
            json: None,
            root,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            let mut number = |what: &str| -> anyhow::Result<u64> {
                value()?
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{flag}: expected a positive number of {what}"))
            };
            match flag.as_str() {
                "--idle-seconds" => o.idle_seconds = number("seconds")?,
                "--load-seconds" => o.load_seconds = number("seconds")?,
                "--rate" => o.rate = number("connects per second")?,
                "--pods" => o.pods = number("pods")? as usize,
                "--scrapes" => o.scrapes = number("scrapes")? as usize,
                "--threads" => o.threads = number("threads")? as usize,
                "--no-stdout-off" => o.stdout_off_row = false,
                "--sonde" => o.sonde = PathBuf::from(value()?),
                "--node-exporter" => o.node_exporter = Some(PathBuf::from(value()?)),
                "--json" => o.json = Some(PathBuf::from(value()?)),
                other => bail!("unknown option `{other}`"),
            }
        }
        Ok(o)
    }
}

pub fn run(o: &DaemonOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF programs and network namespaces)");
    }
    let machine = machine();
    warn_if_busy();
    ensure_sonde(&o.root, &o.sonde)?;
    let node_exporter = o.node_exporter.clone().filter(|p| p.is_file());
    if node_exporter.is_none() {
        eprintln!(
            "sonde-bench: *** prometheus-node-exporter NOT FOUND: the peer rows are SKIPPED \
             (apt-get install prometheus-node-exporter, or --node-exporter PATH) ***"
        );
    }
    let started = Instant::now();
    let mut report = DaemonReport::new(machine, o);

    progress("start-up with every built-in, 3 times; node_exporter's 3 times");
    report.startup_all = startup_all(o, node_exporter.as_deref())?;

    progress(&format!(
        "{} pod namespaces and {} load threads",
        o.pods, o.threads
    ));
    let pods = Pods::prepare(o.pods)?;
    let load_seconds = Duration::from_secs(o.load_seconds);
    let load = Workload::prepare(o.threads, Some(o.rate), load_seconds)?;
    let filter = Filter {
        ours: load.netns().iter().copied().collect(),
        canary: None,
    };

    progress("starting sonde daemon (stdout sink on, read through a pipe)");
    let sonde = Daemon::start(o, true, Some(filter))?;
    let peer = match &node_exporter {
        Some(path) => match Peer::start(path) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!(
                    "sonde-bench: *** node_exporter would not start, its rows are SKIPPED: {e:#} ***"
                );
                None
            }
        },
        None => None,
    };
    let ready = sonde.wait_ready()?;
    report.startup = Some((ready, sonde.tool.cpu()?));
    std::thread::sleep(SETTLE);

    progress(&format!("idle window, {} s", o.idle_seconds));
    let idle = idle(&sonde, peer.as_ref(), Duration::from_secs(o.idle_seconds));
    report.resources.extend(idle);

    progress(&format!(
        "{} pods connect; waiting for their series",
        o.pods
    ));
    pods.connect(CONNECTS_PER_POD)?;
    report.series = Some(wait_for_series(sonde.addr, pods.netns())?);

    progress(&format!("{} scrapes of each", o.scrapes));
    let mut c = Client::new(sonde.addr);
    for (format, accept) in [("prometheus", None), ("openmetrics", Some(OPENMETRICS))] {
        report.scrapes.push(scrapes(
            &mut c, "sonde", format, "100 pods", accept, o.scrapes,
        )?);
    }
    if let Some(p) = &peer {
        let mut pc = Client::new(p.addr);
        match scrapes(
            &mut pc,
            "node_exporter",
            "prometheus",
            "default collectors",
            None,
            o.scrapes,
        ) {
            Ok(row) => report.scrapes.push(row),
            Err(e) => eprintln!(
                "sonde-bench: *** node_exporter scrapes failed, its row is SKIPPED: {e:#} ***"
            ),
        }
    }
    drop(c);
    if let Some(p) = peer {
        let _ = p.tool.interrupt_and_wait(EXIT_TIMEOUT);
    }

    progress(&format!(
        "load: {} connects/s ({} resets/s) for {} s, stdout on",
        o.rate,
        o.rate * RESETS_PER_CONNECT,
        o.load_seconds
    ));
    let (mut row, scraped) = under_load(&sonde, load, o.rate, "stdout on")?;
    let ended = sonde.stop()?;
    row.stdout_lines = Some(ended.lines.events);
    report.loads.push(row);
    report.scrapes.extend(scraped);
    drop(pods);

    if o.stdout_off_row {
        progress("load again with the stdout sink off");
        let load = Workload::prepare(o.threads, Some(o.rate), load_seconds)?;
        let quiet = Daemon::start(o, false, None)?;
        quiet.wait_ready()?;
        std::thread::sleep(SETTLE);
        let (row, scraped) = under_load(&quiet, load, o.rate, "stdout off")?;
        quiet.stop()?;
        report.loads.push(row);
        report.scrapes.extend(scraped);
    }

    report.elapsed = started.elapsed();
    print!("{}", report.render());
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A running `sonde daemon` with a config of the benchmark's.
struct Daemon {
    tool: Tool,
    addr: SocketAddr,
    started: Instant,
    _dir: SetupDir,
}

impl Daemon {
    fn start(o: &DaemonOptions, stdout: bool, filter: Option<Filter>) -> anyhow::Result<Daemon> {
        Self::start_with(o, stdout, filter, &["tcp_reset", "packet_loss"])
    }

    /// `builtin`: the `scripts.builtin` list, or empty for the embedded default
    /// (every built-in). The directory and config are the test kit's
    /// ([`sonde_tests::daemon::Setup`]), as the end-to-end tests start theirs.
    fn start_with(
        o: &DaemonOptions,
        stdout: bool,
        filter: Option<Filter>,
        builtin: &[&str],
    ) -> anyhow::Result<Daemon> {
        let extra = format!("sinks:\n  stdout:\n    enabled: {stdout}\n");
        let setup = Setup::new(
            &format!("bench-daemon-{}", DAEMONS.fetch_add(1, Ordering::Relaxed)),
            &Options {
                builtin,
                every_builtin: builtin.is_empty(),
                extra: &extra,
                ..Options::default()
            },
        );
        let mut cmd = setup.command(&o.sonde, &[], &[]);
        cmd.current_dir(&o.root).env_remove("SONDE_LOG");
        let started = Instant::now();
        let tool = Tool::spawn("sonde daemon", cmd, filter)?;
        Ok(Daemon {
            tool,
            addr: setup.addr,
            started,
            _dir: SetupDir(setup.dir),
        })
    }

    /// Waits until `/readyz` answers 200; returns the time since the start.
    fn wait_ready(&self) -> anyhow::Result<Duration> {
        self.tool
            .wait_ready(Ready::Stderr("daemon listening on"), READY_TIMEOUT)?;
        match wait_ready(&Default::default(), self.addr, READY_TIMEOUT) {
            Ok(_) => Ok(self.started.elapsed()),
            Err(t) => bail!("sonde daemon not ready after {t:?}"),
        }
    }

    fn stop(self) -> anyhow::Result<Ended> {
        let ended = self.tool.interrupt_and_wait(EXIT_TIMEOUT)?;
        if ended.status != 0 {
            bail!(
                "sonde daemon exited with status {}; its stderr:\n{}",
                ended.status,
                ended.stderr.trim_end()
            );
        }
        Ok(ended)
    }
}

/// The daemon with every built-in (the embedded default list): time from the start
/// to `/readyz` 200 and CPU by then, the median of 3 starts; node_exporter's time
/// from its start to its first `/metrics` 200, the median of 3.
fn startup_all(
    o: &DaemonOptions,
    node_exporter: Option<&Path>,
) -> anyhow::Result<Option<StartupAll>> {
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut ready, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let d = Daemon::start_with(o, false, None, &[])?;
        ready.push(d.wait_ready()?);
        cpu.push(d.tool.cpu()?);
        d.stop()?;
    }
    let mut peer = Vec::new();
    if let Some(path) = node_exporter {
        for _ in 0..3 {
            let addr = free_port()?;
            // runs: prometheus-node-exporter
            let mut cmd = Command::new(path);
            cmd.arg(format!("--web.listen-address={addr}"));
            let t0 = Instant::now();
            let tool = Tool::spawn("node_exporter", cmd, None)?;
            let mut c = Client::new(addr);
            loop {
                if c.get("/metrics", None).is_ok_and(|r| r.status == 200) {
                    break;
                }
                if t0.elapsed() > READY_TIMEOUT {
                    bail!("node_exporter not answering after {READY_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peer.push(t0.elapsed());
            let _ = tool.interrupt_and_wait(EXIT_TIMEOUT);
        }
    }
    Ok(Some(StartupAll {
        ready: median(ready),
        cpu: median(cpu),
        peer: (!peer.is_empty()).then(|| median(peer)),
    }))
}

/// prometheus-node-exporter on a free port, default collectors.
struct Peer {
    tool: Tool,
    addr: SocketAddr,
}

impl Peer {
    fn start(path: &Path) -> anyhow::Result<Peer> {
        let addr = free_port()?;
        let mut cmd = Command::new(path);
        cmd.arg(format!("--web.listen-address={addr}"));
        let tool = Tool::spawn("node_exporter", cmd, None)?;
        tool.wait_ready(Ready::Stderr("Listening on"), READY_TIMEOUT)?;
        let r = Client::new(addr).get("/metrics", None)?;
        if r.status != 200 {
            bail!("node_exporter /metrics answered {}", r.status);
        }
        Ok(Peer { tool, addr })
    }
}

/// How many daemons this run started: each gets a directory of its own.
static DAEMONS: AtomicUsize = AtomicUsize::new(0);

/// A daemon's directory, removed when the daemon is done with.
struct SetupDir(PathBuf);

impl Drop for SetupDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}

/// Memory and threads of a process, from `/proc/PID/status` (kB).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
}

pub fn mem(pid: i32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// Both processes left alone for `window`: CPU over it, RSS sampled each second.
fn idle(sonde: &Daemon, peer: Option<&Peer>, window: Duration) -> Vec<ResourceRow> {
    let tools: Vec<(&str, &Tool)> = std::iter::once(("sonde daemon, idle", &sonde.tool))
        .chain(peer.map(|p| ("node_exporter, idle", &p.tool)))
        .collect();
    let cpu0: Vec<Option<Duration>> = tools.iter().map(|(_, t)| t.cpu().ok()).collect();
    let start = Instant::now();
    let mut max_rss = vec![0u64; tools.len()];
    while start.elapsed() < window {
        std::thread::sleep((window - start.elapsed()).min(Duration::from_secs(1)));
        for (i, (_, t)) in tools.iter().enumerate() {
            if let Some(m) = mem(t.pid()) {
                max_rss[i] = max_rss[i].max(m.rss_kb);
            }
        }
    }
    let wall = start.elapsed();
    tools
        .iter()
        .enumerate()
        .map(|(i, (label, t))| {
            let cpu = match (cpu0[i], t.cpu().ok()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            ResourceRow {
                label: label.to_string(),
                wall,
                cpu,
                rss_max_kb: max_rss[i],
                end: mem(t.pid()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Polls `/metrics` until every pod has both reset kinds in
/// `sonde_tcp_reset_segments_total`.
fn wait_for_series(addr: SocketAddr, netns: &[u64]) -> anyhow::Result<SeriesInfo> {
    let ours: HashSet<u64> = netns.iter().copied().collect();
    let start = Instant::now();
    let mut c = Client::new(addr);
    loop {
        let text = c.get("/metrics", None)?.text();
        let of = |metric: &str| {
            text.lines()
                .filter(|l| l.starts_with(metric))
                .filter(|l| pod_netns(l).is_some_and(|n| ours.contains(&n)))
                .count()
        };
        let info = SeriesInfo {
            pods: netns.len(),
            reset_series: of("sonde_tcp_reset_segments_total{"),
            loss_series: of("sonde_packet_loss_packets_total{"),
            samples: crate::scrape::samples(&text),
            wait: start.elapsed(),
        };
        if info.reset_series >= 2 * netns.len() || start.elapsed() > SERIES_TIMEOUT {
            return Ok(info);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `pod="netns:<inode>"` of a sample line.
fn pod_netns(line: &str) -> Option<u64> {
    let at = line.find("pod=\"netns:")? + "pod=\"netns:".len();
    let digits = line[at..].bytes().take_while(u8::is_ascii_digit).count();
    line[at..at + digits].parse().ok()
}

fn scrapes(
    c: &mut Client,
    target: &'static str,
    format: &'static str,
    when: &str,
    accept: Option<&str>,
    n: usize,
) -> anyhow::Result<ScrapeRow> {
    Latencies::measure(c, accept, WARMUP_SCRAPES)?;
    let before = ServerTime::read(c);
    let lat = Latencies::measure(c, accept, n)?;
    let server_mean_ms = match (before, ServerTime::read(c)) {
        (Some(b), Some(a)) => a.mean_ms_since(&b),
        _ => None,
    };
    Ok(ScrapeRow {
        target,
        format,
        when: when.to_string(),
        lat,
        server_mean_ms,
    })
}

/// sonde's own scrape-duration histogram (sum and count) at one instant; None
/// for a target without it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTime {
    sum: f64,
    count: f64,
}

impl ServerTime {
    fn read(c: &mut Client) -> Option<ServerTime> {
        let t = c.get("/metrics", None).ok()?.text();
        ServerTime::parse(&t)
    }

    fn parse(t: &str) -> Option<ServerTime> {
        Some(ServerTime {
            sum: metric_sum(t, "sonde_http_scrape_duration_seconds_sum", |_| true)?,
            count: metric_sum(t, "sonde_http_scrape_duration_seconds_count", |_| true)?,
        })
    }

    fn mean_ms_since(&self, before: &ServerTime) -> Option<f64> {
        let n = self.count - before.count;
        (n > 0.0).then(|| (self.sum - before.sum) / n * 1e3)
    }
}

/// The daemon's self-metrics that matter under load, at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub records: f64,
    pub lost: f64,
    pub undecodable: f64,
    pub dropped: f64,
    pub dropped_stdout: f64,
    pub sent_stdout: f64,
    pub handler_seconds: f64,
}

impl Counters {
    fn read(c: &mut Client) -> anyhow::Result<Counters> {
        let t = c.get("/metrics", None)?.text();
        let reset = |l: &str| l.contains("script=\"tcp_reset\"");
        let all = |_: &str| true;
        Ok(Counters {
            records: metric_sum(&t, "sonde_probe_records_total", reset).unwrap_or(0.0),
            lost: metric_sum(&t, "sonde_probe_records_lost_total", all).unwrap_or(0.0),
            undecodable: metric_sum(&t, "sonde_probe_records_undecodable_total", all)
                .unwrap_or(0.0),
            dropped: metric_sum(&t, "sonde_events_dropped_total", all).unwrap_or(0.0),
            dropped_stdout: metric_sum(&t, "sonde_events_dropped_total", |l| {
                l.contains("sink=\"stdout\"")
            })
            .unwrap_or(0.0),
            sent_stdout: metric_sum(&t, "sonde_events_sent_total", |l| {
                l.contains("sink=\"stdout\"")
            })
            .unwrap_or(0.0),
            handler_seconds: metric_sum(&t, "sonde_script_handler_seconds_total", reset)
                .unwrap_or(0.0),
        })
    }

    fn since(&self, before: &Counters) -> Counters {
        Counters {
            records: self.records - before.records,
            lost: self.lost - before.lost,
            undecodable: self.undecodable - before.undecodable,
            dropped: self.dropped - before.dropped,
            dropped_stdout: self.dropped_stdout - before.dropped_stdout,
            sent_stdout: self.sent_stdout - before.sent_stdout,
            handler_seconds: self.handler_seconds - before.handler_seconds,
        }
    }
}

/// Runs the load against a ready daemon: its CPU over the load, its RSS sampled
/// every 100 ms, its counters before and after (plus a drain), and a scrape a
/// second meanwhile.
fn under_load(
    d: &Daemon,
    load: Workload,
    rate: u64,
    label: &str,
) -> anyhow::Result<(LoadRow, Option<ScrapeRow>)> {
    let mut c = Client::new(d.addr);
    let before = Counters::read(&mut c)?;
    let pid = d.tool.pid();
    let stop = AtomicBool::new(false);
    let cpu0 = d.tool.cpu()?;
    let start = Instant::now();
    let (outcome, cpu_load, wall, max_rss, lat) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = mem(pid) {
                    max = m.rss_kb.max(max);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        });
        // Each response holds the scrape histogram as of before itself: the
        // first and the last bracket the scrapes in between, all under load.
        let scraper = s.spawn(|| -> anyhow::Result<(Latencies, Option<f64>)> {
            let mut c = Client::new(d.addr);
            let mut lat = Latencies::default();
            let (mut first, mut last) = (None, None);
            std::thread::sleep(2 * LOAD_SCRAPE_EVERY);
            while !stop.load(Ordering::Relaxed) {
                let r = c.get("/metrics", None)?;
                last = ServerTime::parse(&r.text());
                first = first.or(last);
                lat.add(&r);
                std::thread::sleep(LOAD_SCRAPE_EVERY);
            }
            let server = match (first, last) {
                (Some(f), Some(l)) => l.mean_ms_since(&f),
                _ => None,
            };
            Ok((lat, server))
        });
        let outcome = load.run();
        let cpu_load = d.tool.cpu();
        let wall = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let max_rss = sampler.join().unwrap_or(0);
        let lat = scraper
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("scraper panicked")));
        (outcome, cpu_load, wall, max_rss, lat)
    });
    let outcome = outcome?;
    let cpu_load = cpu_load?.saturating_sub(cpu0);
    std::thread::sleep(DRAIN);
    let cpu_total = d.tool.cpu()?.saturating_sub(cpu0);
    let delta = Counters::read(&mut c)?.since(&before);
    let end = mem(pid).unwrap_or_default();
    let scraped = match lat {
        Ok((lat, server_mean_ms)) if !lat.took.is_empty() => Some(ScrapeRow {
            target: "sonde",
            format: "prometheus",
            when: format!("under load, {label}"),
            lat,
            server_mean_ms,
        }),
        Ok(_) => None,
        Err(e) => {
            eprintln!("sonde-bench: scrapes during the load failed: {e:#}");
            None
        }
    };
    let row = LoadRow {
        label: label.to_string(),
        rate,
        outcome,
        wall,
        cpu_load,
        cpu_total,
        delta,
        stdout_lines: None,
        rss_max_kb: max_rss.max(end.rss_kb),
        end,
    };
    Ok((row, scraped))
}
