//! The measurements of a `daemon` run, its tables, and the verdict against the
//! targets: scrape <= 10 ms with 100 pods, idle RSS <= 30 MiB, idle CPU <= 0.5% of
//! a core; cost under 50k events/s reported without a target.
//!
//! ```no_run
//! let mut r = DaemonReport::new(machine, &options);
//! r.resources.push(idle_row);
//! print!("{}", r.render());
//! ```

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{Counters, DaemonOptions, Mem};
use crate::report::{opt, table, verdicts_and_time};
use crate::scrape::Latencies;
use crate::workload::Outcome;

const SCRAPE_TARGET_MS: f64 = 10.0;
const IDLE_RSS_TARGET_MIB: f64 = 30.0;
const IDLE_CPU_TARGET_PCT: f64 = 0.5;

/// CPU and memory of one process over a window.
#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub label: String,
    pub wall: Duration,
    pub cpu: Option<Duration>,
    /// Largest VmRSS sampled in the window (kB).
    pub rss_max_kb: u64,
    /// VmRSS, VmHWM and threads at the window's end.
    pub end: Mem,
}

impl ResourceRow {
    pub fn cpu_pct(&self) -> Option<f64> {
        self.cpu
            .map(|c| c.as_secs_f64() / self.wall.as_secs_f64().max(1e-9) * 100.0)
    }

    fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "seconds": self.wall.as_secs_f64(),
            "cpu_seconds": self.cpu.map(|c| c.as_secs_f64()),
            "cpu_percent_of_a_core": self.cpu_pct(),
            "rss_kb": self.end.rss_kb,
            "rss_max_kb": self.rss_max_kb,
            "vmhwm_kb": self.end.hwm_kb,
            "threads": self.end.threads,
        })
    }
}

/// Scrapes of one target in one format.
#[derive(Debug, Clone)]
pub struct ScrapeRow {
    pub target: &'static str,
    pub format: &'static str,
    pub when: String,
    pub lat: Latencies,
    /// sonde's own `sonde_http_scrape_duration_seconds` over the same scrapes
    /// (refresh + render, no queueing or transfer), mean in milliseconds.
    pub server_mean_ms: Option<f64>,
}

impl ScrapeRow {
    fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "format": self.format,
            "when": self.when,
            "scrapes": self.lat.took.len(),
            "connections": self.lat.connects,
            "p50_ms": self.lat.percentile_ms(50.0),
            "p99_ms": self.lat.percentile_ms(99.0),
            "max_ms": self.lat.percentile_ms(100.0),
            "bytes": self.lat.bytes,
            "samples": self.lat.samples,
            "content_type": self.lat.content_type,
            "server_mean_ms": self.server_mean_ms,
        })
    }
}

/// The daemon under the reset load.
#[derive(Debug, Clone)]
pub struct LoadRow {
    pub label: String,
    /// Connects per second asked for.
    pub rate: u64,
    pub outcome: Outcome,
    /// Wall time of the load (CPU % is over it).
    pub wall: Duration,
    /// Daemon CPU during the load.
    pub cpu_load: Duration,
    /// Daemon CPU during the load and the drain after it.
    pub cpu_total: Duration,
    /// Self-metrics, after the drain minus before the load.
    pub delta: Counters,
    /// Event lines from the load's namespaces on the daemon's stdout.
    pub stdout_lines: Option<u64>,
    pub rss_max_kb: u64,
    pub end: Mem,
}

impl LoadRow {
    fn cpu_pct(&self) -> f64 {
        self.cpu_load.as_secs_f64() / self.wall.as_secs_f64().max(1e-9) * 100.0
    }

    fn per_record_us(&self, seconds: f64) -> Option<f64> {
        (self.delta.records > 0.0).then(|| seconds / self.delta.records * 1e6)
    }

    fn missing(&self) -> Option<i64> {
        self.stdout_lines
            .map(|l| self.outcome.resets() as i64 - l as i64)
    }

    fn resources(&self) -> ResourceRow {
        ResourceRow {
            label: format!("sonde daemon, load, {}", self.label),
            wall: self.wall,
            cpu: Some(self.cpu_load),
            rss_max_kb: self.rss_max_kb,
            end: self.end,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "rate_connects_per_sec": self.rate,
            "connects": self.outcome.refused,
            "seconds": self.outcome.elapsed.as_secs_f64(),
            "generated": self.outcome.resets(),
            "records": self.delta.records,
            "records_lost": self.delta.lost,
            "records_undecodable": self.delta.undecodable,
            "events_dropped": self.delta.dropped,
            "events_dropped_stdout": self.delta.dropped_stdout,
            "events_sent_stdout": self.delta.sent_stdout,
            "stdout_lines": self.stdout_lines,
            "missing": self.missing(),
            "cpu_load_seconds": self.cpu_load.as_secs_f64(),
            "cpu_total_seconds": self.cpu_total.as_secs_f64(),
            "cpu_percent_of_a_core": self.cpu_pct(),
            "cpu_us_per_record": self.per_record_us(self.cpu_total.as_secs_f64()),
            "handler_us_per_record": self.per_record_us(self.delta.handler_seconds),
            "rss_kb": self.end.rss_kb,
            "rss_max_kb": self.rss_max_kb,
            "vmhwm_kb": self.end.hwm_kb,
            "threads": self.end.threads,
        })
    }
}

/// The pods' series as they appeared on /metrics.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub pods: usize,
    pub reset_series: usize,
    pub loss_series: usize,
    /// Sample lines of the whole exposition at that moment.
    pub samples: usize,
    /// From the pods' connects to the series on /metrics.
    pub wait: Duration,
}

pub struct DaemonReport {
    pub machine: String,
    pub options: DaemonOptions,
    /// Time from start to /readyz 200, and the CPU spent by then.
    pub startup: Option<(Duration, Duration)>,
    pub startup_all: Option<StartupAll>,
    pub resources: Vec<ResourceRow>,
    pub series: Option<SeriesInfo>,
    pub scrapes: Vec<ScrapeRow>,
    pub loads: Vec<LoadRow>,
    pub elapsed: Duration,
}

/// Start-up with every built-in, beside node_exporter's (medians).
pub struct StartupAll {
    pub ready: Duration,
    pub cpu: Duration,
    pub peer: Option<Duration>,
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

impl DaemonReport {
    pub fn new(machine: String, options: &DaemonOptions) -> DaemonReport {
        DaemonReport {
            machine,
            options: options.clone(),
            startup: None,
            startup_all: None,
            resources: Vec::new(),
            series: None,
            scrapes: Vec::new(),
            loads: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn row(&self, label: &str) -> Option<&ResourceRow> {
        self.resources.iter().find(|r| r.label == label)
    }

    fn peer_scrape(&self) -> Option<&ScrapeRow> {
        self.scrapes.iter().find(|s| s.target == "node_exporter")
    }

    pub fn render(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\ndaemon: {}; {} pods, {} scrapes per row on one kept-alive connection, load {} connects/s ({} reset events/s) for {} s on {} threads\n",
            self.machine,
            o.pods,
            o.scrapes,
            o.rate,
            o.rate * crate::workload::RESETS_PER_CONNECT,
            o.load_seconds,
            o.threads
        );

        let peer_rss = self.row("node_exporter, idle").map(|r| r.end.rss_kb);
        let mut rows = vec![strings(&[
            "process",
            "window",
            "CPU % core",
            "RSS MiB",
            "max RSS MiB",
            "VmHWM MiB",
            "threads",
            "RSS /node_exporter",
        ])];
        let load_rows: Vec<ResourceRow> = self.loads.iter().map(LoadRow::resources).collect();
        for r in self.resources.iter().chain(&load_rows) {
            let ratio = match peer_rss {
                Some(p) if r.label.starts_with("sonde") && p > 0 => {
                    Some(r.end.rss_kb as f64 / p as f64)
                }
                _ => None,
            };
            rows.push(vec![
                r.label.clone(),
                format!("{:.0} s", r.wall.as_secs_f64()),
                opt(r.cpu_pct(), |v| format!("{v:.2}")),
                format!("{:.1}", mib(r.end.rss_kb)),
                format!("{:.1}", mib(r.rss_max_kb)),
                format!("{:.1}", mib(r.end.hwm_kb)),
                r.end.threads.to_string(),
                opt(ratio, |v| format!("{v:.2}")),
            ]);
        }
        table(&mut s, &rows);
        if let Some((ready, cpu)) = self.startup {
            let _ = writeln!(
                s,
                "  sonde answered /readyz 200 {:.2} s after it was started, {:.2} s CPU by then",
                ready.as_secs_f64(),
                cpu.as_secs_f64()
            );
        }
        if let Some(a) = &self.startup_all {
            let _ = writeln!(
                s,
                "  every built-in: /readyz 200 after {:.0} ms, {:.0} ms CPU by then (median of 3){}",
                a.ready.as_secs_f64() * 1e3,
                a.cpu.as_secs_f64() * 1e3,
                match a.peer {
                    Some(p) => format!(
                        "; node_exporter's first /metrics 200 after {:.0} ms (ratio {:.2})",
                        p.as_secs_f64() * 1e3,
                        a.ready.as_secs_f64() / p.as_secs_f64().max(1e-9)
                    ),
                    None => String::new(),
                }
            );
        }

        if !self.loads.is_empty() {
            let _ = writeln!(s, "\nevents under load:\n");
            let mut rows = vec![strings(&[
                "daemon",
                "rate",
                "conn/s",
                "generated",
                "records",
                "lost",
                "dropped",
                "on stdout",
                "missing",
                "CPU % core",
                "CPU µs/record",
                "handler µs/record",
            ])];
            for r in &self.loads {
                rows.push(vec![
                    r.label.clone(),
                    r.rate.to_string(),
                    format!(
                        "{:.0}",
                        r.outcome.refused as f64 / r.outcome.elapsed.as_secs_f64().max(1e-9)
                    ),
                    r.outcome.resets().to_string(),
                    format!("{:.0}", r.delta.records),
                    format!("{:.0}", r.delta.lost),
                    format!("{:.0}", r.delta.dropped),
                    opt(r.stdout_lines, |v| v.to_string()),
                    opt(r.missing(), |v| v.to_string()),
                    format!("{:.1}", r.cpu_pct()),
                    opt(r.per_record_us(r.cpu_total.as_secs_f64()), |v| {
                        format!("{v:.2}")
                    }),
                    opt(r.per_record_us(r.delta.handler_seconds), |v| {
                        format!("{v:.2}")
                    }),
                ]);
            }
            table(&mut s, &rows);
            for r in &self.loads {
                if r.outcome.errors > 0 {
                    let _ = writeln!(
                        s,
                        "  note: {}: {} connects failed otherwise: {}",
                        r.label,
                        r.outcome.errors,
                        r.outcome.first_error.as_deref().unwrap_or("?")
                    );
                }
                if r.delta.undecodable > 0.0 {
                    let _ = writeln!(
                        s,
                        "  note: {}: {:.0} records undecodable",
                        r.label, r.delta.undecodable
                    );
                }
            }
        }

        if !self.scrapes.is_empty() {
            let _ = writeln!(
                s,
                "\nscrapes of /metrics (one kept-alive connection, uncompressed):\n"
            );
            let peer_p50 = self.peer_scrape().and_then(|p| p.lat.percentile_ms(50.0));
            let mut rows = vec![strings(&[
                "target, format (when)",
                "scrapes",
                "p50 ms",
                "p99 ms",
                "max ms",
                "bytes",
                "samples",
                "server ms",
                "p50 /node_exporter",
            ])];
            for r in &self.scrapes {
                let p50 = r.lat.percentile_ms(50.0);
                let ratio = match (r.target, p50, peer_p50) {
                    ("sonde", Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                rows.push(vec![
                    format!("{}, {} ({})", r.target, r.format, r.when),
                    r.lat.took.len().to_string(),
                    opt(p50, |v| format!("{v:.2}")),
                    opt(r.lat.percentile_ms(99.0), |v| format!("{v:.2}")),
                    opt(r.lat.percentile_ms(100.0), |v| format!("{v:.2}")),
                    r.lat.bytes.to_string(),
                    r.lat.samples.to_string(),
                    opt(r.server_mean_ms, |v| format!("{v:.2}")),
                    opt(ratio, |v| format!("{v:.2}")),
                ]);
            }
            table(&mut s, &rows);
            if self.peer_scrape().is_none() {
                let _ = writeln!(
                    s,
                    "  *** node_exporter NOT MEASURED (not installed or would not start) ***"
                );
            }
        }
        if let Some(i) = &self.series {
            let _ = writeln!(
                s,
                "  {} pods: {} tcp_reset and {} packet_loss series from their namespaces on /metrics {:.1} s after their connects{}; {} samples in all",
                i.pods,
                i.reset_series,
                i.loss_series,
                i.wait.as_secs_f64(),
                if i.reset_series < 2 * i.pods { " (INCOMPLETE: the wait timed out)" } else { "" },
                i.samples
            );
        }

        verdicts_and_time(&mut s, &self.verdicts(), self.elapsed);
        s
    }

    fn verdicts(&self) -> Vec<String> {
        let mut v = Vec::new();
        for r in self
            .scrapes
            .iter()
            .filter(|r| r.target == "sonde" && r.when == "100 pods")
        {
            if let Some(p99) = r.lat.percentile_ms(99.0) {
                v.push(format!(
                    "scrape <= {SCRAPE_TARGET_MS} ms with {} pods, {} (p99): {p99:.2} ms: {}",
                    self.options.pods,
                    r.format,
                    verdict(p99, SCRAPE_TARGET_MS)
                ));
            }
        }
        if let Some(r) = self.row("sonde daemon, idle") {
            let rss = mib(r.end.rss_kb);
            v.push(format!(
                "idle RSS <= {IDLE_RSS_TARGET_MIB} MiB: {rss:.1} MiB (VmHWM {:.1} MiB): {}",
                mib(r.end.hwm_kb),
                verdict(rss, IDLE_RSS_TARGET_MIB)
            ));
            if let Some(cpu) = r.cpu_pct() {
                v.push(format!(
                    "idle CPU <= {IDLE_CPU_TARGET_PCT}% of a core: {cpu:.2}%: {}",
                    verdict(cpu, IDLE_CPU_TARGET_PCT)
                ));
            }
        }
        for r in &self.loads {
            let mut line = format!(
                "under {:.0}k events/s, {} (no target): {:.1}% of a core, RSS up to {:.1} MiB, {:.0} records lost in the kernel, {:.0} events dropped by sinks ({:.0} by stdout)",
                r.outcome.resets() as f64 / r.outcome.elapsed.as_secs_f64().max(1e-9) / 1e3,
                r.label,
                r.cpu_pct(),
                mib(r.rss_max_kb),
                r.delta.lost,
                r.delta.dropped,
                r.delta.dropped_stdout,
            );
            if let Some(m) = r.missing() {
                let counted = r.delta.lost + r.delta.dropped_stdout;
                let _ = write!(
                    line,
                    ", {m} events missing from stdout: {}",
                    if m as f64 == counted {
                        "every loss counted"
                    } else {
                        "NOT every loss counted"
                    }
                );
            }
            v.push(line);
        }
        v
    }

    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "daemon",
            "machine": self.machine,
            "pods": self.options.pods,
            "scrapes": self.options.scrapes,
            "rate_connects_per_sec": self.options.rate,
            "load_seconds": self.options.load_seconds,
            "idle_seconds": self.options.idle_seconds,
            "threads": self.options.threads,
            "startup_seconds": self.startup.map(|(r, _)| r.as_secs_f64()),
            "startup_cpu_seconds": self.startup.map(|(_, c)| c.as_secs_f64()),
            "startup_all": self.startup_all.as_ref().map(|a| json!({
                "ready_seconds": a.ready.as_secs_f64(),
                "cpu_seconds": a.cpu.as_secs_f64(),
                "node_exporter_seconds": a.peer.map(|p| p.as_secs_f64()),
            })),
            "resources": self.resources.iter().map(ResourceRow::to_json).collect::<Vec<_>>(),
            "series": self.series.as_ref().map(|i| json!({
                "pods": i.pods,
                "reset_series": i.reset_series,
                "loss_series": i.loss_series,
                "samples": i.samples,
                "wait_seconds": i.wait.as_secs_f64(),
            })),
            "scrapes": self.scrapes.iter().map(ScrapeRow::to_json).collect::<Vec<_>>(),
            "loads": self.loads.iter().map(LoadRow::to_json).collect::<Vec<_>>(),
            "verdicts": self.verdicts(),
            "elapsed_seconds": self.elapsed.as_secs_f64(),
        })
    }
}

fn verdict(value: f64, target: f64) -> String {
    if value <= target {
        "met".into()
    } else {
        format!("MISSED ({:.1}x over)", value / target)
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
