//! The measurements of a `resets` run, the figures derived from them, the table, and
//! the verdict against the targets.
//!
//! ```no_run
//! let mut r = Report::new(10, 2);
//! r.live.push(row);
//! print!("{}", r.render());
//! ```

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::bpf_stats::Cost;
use crate::resets::rate_label;
use crate::workload::Outcome;

/// Below this many resets per second no event may be lost (the issue's target).
const LOSSLESS_BELOW: f64 = 100_000.0;
/// Counting handler target: CPU per event on replay.
const COUNT_TARGET_US: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    Baseline,
    SondeText,
    Bpftrace,
    SondeCount,
}

impl ToolKind {
    pub fn label(self) -> &'static str {
        match self {
            ToolKind::Baseline => "workload alone",
            ToolKind::SondeText => "sonde text",
            ToolKind::Bpftrace => "bpftrace printf",
            ToolKind::SondeCount => "sonde count -q",
        }
    }

    fn is_sonde(self) -> bool {
        matches!(self, ToolKind::SondeText | ToolKind::SondeCount)
    }
}

/// One traced (or untraced) run of the workload.
#[derive(Debug, Clone)]
pub struct LiveRow {
    pub tool: ToolKind,
    pub rate: Option<u64>,
    pub connects: u64,
    pub seconds: f64,
    /// Resets generated (two per refused connect).
    pub generated: u64,
    /// Events the tool delivered from the workload's namespaces.
    pub received: Option<u64>,
    /// Losses the tool itself reported.
    pub lost_counted: Option<u64>,
    /// sonde's in-kernel counter for the workload's namespaces (text run).
    pub kernel_counted: Option<u64>,
    /// Tool CPU from the workload's start to its exit.
    pub cpu_run: Option<Duration>,
    /// Tool CPU before the workload (load, compile, attach).
    pub cpu_startup: Option<Duration>,
    /// The tool's BPF programs, from the kernel's run statistics.
    pub kernel: Option<Cost>,
    /// Event lines from outside the workload (ignored).
    pub foreign: u64,
    pub note: Option<String>,
}

impl LiveRow {
    pub fn new(tool: ToolKind, rate: Option<u64>, o: &Outcome) -> LiveRow {
        LiveRow {
            tool,
            rate,
            connects: o.refused,
            seconds: o.elapsed.as_secs_f64(),
            generated: o.resets(),
            received: None,
            lost_counted: None,
            kernel_counted: None,
            cpu_run: None,
            cpu_startup: None,
            kernel: None,
            foreign: 0,
            note: None,
        }
    }

    pub fn baseline(o: &Outcome) -> LiveRow {
        LiveRow::new(ToolKind::Baseline, None, o)
    }

    pub fn connects_per_sec(&self) -> f64 {
        self.connects as f64 / self.seconds.max(1e-9)
    }

    pub fn generated_per_sec(&self) -> f64 {
        self.generated as f64 / self.seconds.max(1e-9)
    }

    pub fn missing(&self) -> Option<i64> {
        self.received.map(|r| self.generated as i64 - r as i64)
    }

    pub fn events_per_sec(&self) -> Option<f64> {
        self.received.map(|r| r as f64 / self.seconds.max(1e-9))
    }

    /// CPU seconds per million events received.
    pub fn cpu_per_million(&self) -> Option<f64> {
        let cpu = self.cpu_run?.as_secs_f64();
        let received = self.received.filter(|r| *r > 0)?;
        Some(cpu / received as f64 * 1e6)
    }

    fn to_json(&self) -> Value {
        json!({
            "tool": self.tool.label(),
            "rate_connects_per_sec": self.rate,
            "connects": self.connects,
            "seconds": self.seconds,
            "generated": self.generated,
            "received": self.received,
            "lost_counted": self.lost_counted,
            "missing": self.missing(),
            "kernel_counted": self.kernel_counted,
            "events_per_sec": self.events_per_sec(),
            "cpu_run_seconds": self.cpu_run.map(|d| d.as_secs_f64()),
            "cpu_startup_seconds": self.cpu_startup.map(|d| d.as_secs_f64()),
            "cpu_seconds_per_million_events": self.cpu_per_million(),
            "kernel_runs": self.kernel.map(|k| k.runs),
            "kernel_ns_per_run": self.kernel.and_then(|k| k.nanos_per_run()),
            "foreign_lines": self.foreign,
            "note": self.note,
        })
    }
}

/// One replay of a recording through a script (no kernel).
#[derive(Debug, Clone)]
pub struct ReplayRow {
    pub script: String,
    pub output: &'static str,
    pub records: u64,
    /// sonde's own timing (from opening the recording to the end).
    pub sonde_seconds: f64,
    pub wall: Duration,
    /// Whole-process CPU, start-up included.
    pub cpu: Duration,
}

impl ReplayRow {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.sonde_seconds.max(1e-9)
    }

    pub fn cpu_us_per_record(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.records.max(1) as f64) * 1e6
    }

    fn to_json(&self) -> Value {
        json!({
            "script": self.script,
            "output": self.output,
            "records": self.records,
            "sonde_seconds": self.sonde_seconds,
            "wall_seconds": self.wall.as_secs_f64(),
            "cpu_seconds": self.cpu.as_secs_f64(),
            "records_per_sec": self.records_per_sec(),
            "cpu_us_per_record": self.cpu_us_per_record(),
        })
    }
}

pub struct Report {
    pub machine: String,
    pub seconds: u64,
    pub threads: usize,
    pub live: Vec<LiveRow>,
    pub replay: Vec<ReplayRow>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(seconds: u64, threads: usize) -> Report {
        Report {
            machine: String::new(),
            seconds,
            threads,
            live: Vec::new(),
            replay: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// sonde's CPU per event over bpftrace's, at the same rate.
    fn ratio(&self, row: &LiveRow) -> Option<f64> {
        if !row.tool.is_sonde() {
            return None;
        }
        let bt = self
            .live
            .iter()
            .find(|r| r.tool == ToolKind::Bpftrace && r.rate == row.rate)?;
        Some(row.cpu_per_million()? / bt.cpu_per_million()?)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nresets: {}; {} generator threads, {} s per run, 2 resets per refused connect (NOSOCK sent + RECEIVE)\n",
            self.machine, self.threads, self.seconds
        );
        let header = [
            "tool",
            "rate",
            "conn/s",
            "generated",
            "received",
            "lost",
            "missing",
            "events/s",
            "CPU s/M ev",
            "/bpftrace",
            "kern ns/ev",
            "start CPU",
        ];
        let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        for r in &self.live {
            rows.push(vec![
                r.tool.label().to_string(),
                rate_label(r.rate),
                format!("{:.0}", r.connects_per_sec()),
                r.generated.to_string(),
                opt(r.received, |v| v.to_string()),
                opt(r.lost_counted, |v| v.to_string()),
                opt(r.missing(), |v| v.to_string()),
                opt(r.events_per_sec(), |v| format!("{v:.0}")),
                opt(r.cpu_per_million(), |v| format!("{v:.2}")),
                opt(self.ratio(r), |v| format!("{v:.2}")),
                opt(r.kernel.and_then(|k| k.nanos_per_run()), |v| {
                    format!("{v:.0}")
                }),
                opt(r.cpu_startup, |v| format!("{:.2}s", v.as_secs_f64())),
            ]);
        }
        table(&mut s, &rows);

        let mut notes = Vec::new();
        for r in &self.live {
            if let Some(n) = &r.note {
                notes.push(format!("{} at {}: {n}", r.tool.label(), rate_label(r.rate)));
            }
            if r.foreign > 0 {
                notes.push(format!(
                    "{} at {}: {} event lines from outside the workload ignored",
                    r.tool.label(),
                    rate_label(r.rate),
                    r.foreign
                ));
            }
            if let Some(k) = r.kernel_counted {
                if k != r.generated {
                    notes.push(format!(
                        "{} at {}: sonde's kernel counter says {k} resets, the generator {}",
                        r.tool.label(),
                        rate_label(r.rate),
                        r.generated
                    ));
                }
            }
        }
        for n in &notes {
            let _ = writeln!(s, "  note: {n}");
        }

        if !self.replay.is_empty() {
            let _ = writeln!(
                s,
                "\nreplay (recording of `sonde count -q` at max rate, no kernel):\n"
            );
            let mut rows = vec![[
                "script",
                "output",
                "records",
                "records/s",
                "CPU µs/record",
                "wall",
            ]
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()];
            for r in &self.replay {
                rows.push(vec![
                    r.script.clone(),
                    r.output.to_string(),
                    r.records.to_string(),
                    format!("{:.0}", r.records_per_sec()),
                    format!("{:.2}", r.cpu_us_per_record()),
                    format!("{:.2}s", r.wall.as_secs_f64()),
                ]);
            }
            table(&mut s, &rows);
        }

        verdicts_and_time(&mut s, &self.verdicts(), self.elapsed);
        s
    }

    fn verdicts(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(c) = self.replay.iter().find(|r| r.output.starts_with("none")) {
            let us = c.cpu_us_per_record();
            v.push(format!(
                "counting handler <= {COUNT_TARGET_US} µs CPU/event on replay: {us:.2} µs, {:.0} events/s: {}",
                c.records_per_sec(),
                if us <= COUNT_TARGET_US { "met".to_string() } else { format!("MISSED ({:.1}x over)", us / COUNT_TARGET_US) }
            ));
        }
        for r in self.live.iter().filter(|r| r.tool == ToolKind::SondeText) {
            if let Some(x) = self.ratio(r) {
                v.push(format!(
                    "text output CPU/event <= bpftrace's, at {}: {x:.2}x bpftrace: {}",
                    rate_label(r.rate),
                    if x <= 1.0 {
                        "met".to_string()
                    } else {
                        format!("MISSED ({:.0}% more)", (x - 1.0) * 100.0)
                    }
                ));
            }
        }
        for r in self.live.iter().filter(|r| r.tool.is_sonde()) {
            let (Some(missing), Some(lost)) = (r.missing(), r.lost_counted) else {
                continue;
            };
            let offered = r.generated_per_sec();
            let at = format!(
                "{} at {} ({:.0} resets/s)",
                r.tool.label(),
                rate_label(r.rate),
                offered
            );
            if offered < LOSSLESS_BELOW {
                v.push(format!(
                    "no loss below 100k/s, {at}: {}",
                    if missing == 0 && lost == 0 {
                        "met".to_string()
                    } else {
                        format!("MISSED ({missing} missing, {lost} counted lost)")
                    }
                ));
            } else if missing > 0 || lost > 0 {
                v.push(format!(
                    "every loss counted, {at}: {}",
                    if missing as u64 == lost {
                        "met".to_string()
                    } else {
                        format!("MISSED ({missing} missing, {lost} counted lost)")
                    }
                ));
            } else {
                v.push(format!("no loss, {at}"));
            }
        }
        v
    }

    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "resets",
            "machine": self.machine,
            "seconds": self.seconds,
            "threads": self.threads,
            "live": self.live.iter().map(LiveRow::to_json).collect::<Vec<_>>(),
            "replay": self.replay.iter().map(ReplayRow::to_json).collect::<Vec<_>>(),
            "verdicts": self.verdicts(),
        })
    }
}

pub fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_string())
}

/// Left-aligned first column, the others right-aligned.
/// The end of a report: each target's verdict, then how long the run took.
pub fn verdicts_and_time(s: &mut String, verdicts: &[String], elapsed: std::time::Duration) {
    let _ = writeln!(s, "\ntargets:");
    for line in verdicts {
        let _ = writeln!(s, "  {line}");
    }
    let _ = writeln!(s, "\n(whole benchmark: {:.0} s)", elapsed.as_secs_f64());
}

pub fn table(s: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, v) in r.iter().enumerate() {
            let pad = widths[c].saturating_sub(v.chars().count());
            if c == 0 {
                line.push_str(v);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(v);
            }
        }
        let _ = writeln!(s, "  {}", line.trim_end());
    }
}
