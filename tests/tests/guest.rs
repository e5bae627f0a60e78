//! Guest kernels: every built-in program on Debian's 6.1 (bookworm) and 5.10 (bullseye)
//! cloud kernels booted under qemu's software emulation, and on this machine's kernel.
//!
//! Each guest gets a small initramfs (busybox, the `sonde` binary, the
//! `sonde-guest-trigger` binary, the scripts, `tests/guest/driver` and
//! `tests/guest/programs`, the modules in `tests/guest/modules`; built by
//! `tests/guest/mkinitramfs`). The driver runs `sonde probes --json`, `sonde btf` and,
//! per BTF condition (as is, hidden, hidden with the kernel image in /boot, nothing),
//! each program `tests/guest/programs` lists for it; once the program attached, its
//! trigger makes the condition happen. It prints sonde's raw output on the second
//! serial port. This file parses that, decides per case what happened (error,
//! attached, counted, fired, with which variant), compares it with
//! `tests/guest/expect`, prints the tables and writes them to
//! `target/guest/report.md`. On this kernel the same driver runs directly (as root, in
//! its own mount namespace). [`guest_dwarf`] is the opt-in DWARF-to-BTF case.
//!
//! ```text
//! tests/guest/run                          # all kernels, tables on stdout
//! SONDE_GUEST_ONLY=bookworm,host tests/guest/run
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::{cannot_run, repo_root, sonde_bin};

/// What proves a program fired: a summary row carrying every one of `parts` (labels
/// `k=v` and metric names `sonde_...`; none: any row), from the trigger's network
/// namespace unless `node`.
#[derive(Debug, Clone, PartialEq)]
struct FiredBy {
    node: bool,
    parts: Vec<String>,
}

impl FiredBy {
    fn parse(s: &str) -> Result<Self, String> {
        let (node, rest) = match s.strip_prefix("node:") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let parts: Vec<String> = if rest == "*" {
            Vec::new()
        } else {
            rest.split(',').map(str::to_string).collect()
        };
        if let Some(bad) = parts
            .iter()
            .find(|p| !p.starts_with("sonde_") && !p.contains('='))
        {
            return Err(format!(
                "`{bad}` is neither a label (k=v) nor a metric (sonde_...)"
            ));
        }
        Ok(FiredBy { node, parts })
    }

    fn matches(&self, row: &SummaryRow) -> bool {
        self.parts.iter().all(|p| {
            if p.starts_with("sonde_") {
                row.metric == *p
            } else {
                row.labels.split(',').any(|kv| kv == p)
            }
        })
    }
}

/// What a line of `tests/guest/programs` runs, from the form of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `<program>` or `<program>/<label>`: `sonde run` of a script with a kernel
    /// program; the trigger runs once sonde says the program attached.
    Probe,
    /// `source:<name>`: `sonde run` of a script with no kernel program (procfs,
    /// netlink); nothing attaches, the trigger runs first and the script reads what it
    /// left at its final tick.
    Source,
    /// `daemon` or `daemon/<label>` (script `-`): `sonde daemon` with its embedded
    /// default config (every built-in script), its `/metrics` scraped.
    Daemon,
}

impl Kind {
    fn of(name: &str) -> Self {
        if name.starts_with("source:") {
            Kind::Source
        } else if name == "daemon" || name.starts_with("daemon/") {
            Kind::Daemon
        } else {
            Kind::Probe
        }
    }
}

/// A line of `tests/guest/programs`: a program the driver runs, how, and what proves
/// it fired.
#[derive(Debug, Clone)]
struct Program {
    name: String,
    kind: Kind,
    /// The script under scripts/ (`-` for the daemon).
    script: String,
    trigger: String,
    fired: FiredBy,
    /// BTF conditions it runs under.
    conditions: Vec<String>,
    duration: String,
    params: Vec<String>,
}

/// The triggers `sonde-guest-trigger` knows.
const TRIGGERS: &[&str] = &[
    "refused",
    "retrans",
    "states",
    "slow-read",
    "udp-flood",
    "traffic",
    "lo-traffic",
    "block",
    "virtio-cmd",
    "listen-overflow",
];

fn parse_programs(text: &str) -> Result<Vec<Program>, String> {
    let mut out: Vec<Program> = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("tests/guest/programs:{}: {why}: `{l}`", n + 1);
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 7 {
            return Err(bad(
                "want 7 fields: program script trigger fired btf for params",
            ));
        }
        if !TRIGGERS.contains(&f[2]) {
            return Err(bad(&format!("trigger is one of {}", TRIGGERS.join(", "))));
        }
        let fired = FiredBy::parse(f[3]).map_err(|e| bad(&e))?;
        let conditions: Vec<String> = f[4]
            .split(',')
            .flat_map(|c| match c {
                "all" => CONDITIONS.to_vec(),
                c => vec![c],
            })
            .map(str::to_string)
            .collect();
        if conditions
            .iter()
            .any(|c| !CONDITIONS.contains(&c.as_str()) && c != DWARF)
        {
            return Err(bad(
                "btf is a comma list of all, sysfs, none, image, bare, dwarf",
            ));
        }
        if !f[5].ends_with('s') || f[5].trim_end_matches(['m', 's']).parse::<u32>().is_err() {
            return Err(bad("for is a duration like 2s"));
        }
        let params: Vec<String> = if f[6] == "-" {
            Vec::new()
        } else {
            f[6].split(',').map(str::to_string).collect()
        };
        if params.iter().any(|p| !p.contains('=')) {
            return Err(bad("params are k=v,k=v or -"));
        }
        if out.iter().any(|p| p.name == f[0]) {
            return Err(bad("program listed twice"));
        }
        let kind = Kind::of(f[0]);
        if (kind == Kind::Daemon) != (f[1] == "-") {
            return Err(bad(
                "script is `-` for the daemon (its embedded config) and a file otherwise",
            ));
        }
        if kind == Kind::Daemon && f[5].ends_with("ms") {
            return Err(bad("the daemon's for is whole seconds, like 15s"));
        }
        out.push(Program {
            name: f[0].into(),
            kind,
            script: f[1].into(),
            trigger: f[2].into(),
            fired,
            conditions,
            duration: f[5].into(),
            params,
        });
    }
    Ok(out)
}

fn programs() -> Vec<Program> {
    parse_programs(&std::fs::read_to_string(guest_dir().join("programs")).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// BTF conditions, in the driver's order.
const CONDITIONS: &[&str] = &["sysfs", "none", "image", "bare"];

/// The opt-in DWARF case's only condition (see [`guest_dwarf`]).
const DWARF: &str = "dwarf";

/// From qemu's start to the guest's power-off; a debug build of sonde under TCG takes
/// a few minutes with every program, a release build about a minute.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// The trigger program the driver runs (tests/src/bin/sonde-guest-trigger.rs).
fn trigger_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sonde-guest-trigger"))
}

fn guest_dir() -> PathBuf {
    repo_root().join("tests/guest")
}

fn out_dir() -> PathBuf {
    repo_root().join("target/guest")
}

fn kernel_cache() -> PathBuf {
    std::env::var_os("SONDE_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/guest-kernels"))
}

/// A line of `tests/guest/kernels`.
#[derive(Debug, Clone)]
struct Kernel {
    label: String,
    /// `ID:VERSION_ID` for the guest's /etc/os-release.
    os: String,
}

fn kernels(text: &str) -> Vec<Kernel> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "tests/guest/kernels: want 4 fields in `{l}`");
            Kernel {
                label: f[0].into(),
                os: f[3].into(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The driver's report.

/// One case as the driver saw it.
#[derive(Debug, Default, Clone)]
struct Case {
    btf: String,
    what: String,
    rc: Option<i32>,
    ms: u64,
    skipped: Option<String>,
    /// What the trigger printed (`rc`, `netns`: the namespace its traffic came from,
    /// what it observed); empty when it did not run.
    trigger: BTreeMap<String, String>,
    /// The trigger's stderr, when it said something.
    trigger_error: Option<String>,
    stdout: String,
    stderr: String,
}

#[derive(Debug, Default)]
struct Report {
    release: String,
    os: String,
    cases: Vec<Case>,
    /// The driver's own time, start to end.
    ms: u64,
}

impl Report {
    fn case(&self, btf: &str, what: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.btf == btf && c.what == what)
    }
}

/// `key=value` words; `skipped=` takes the rest of the line.
fn fields(s: &str) -> BTreeMap<String, String> {
    let (s, skipped) = match s.find("skipped=") {
        Some(i) => (&s[..i], Some(&s[i + "skipped=".len()..])),
        None => (s, None),
    };
    let mut m: BTreeMap<String, String> = s
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(v) = skipped {
        m.insert("skipped".into(), v.trim().to_string());
    }
    m
}

fn parse_report(text: &str) -> Result<Report, String> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Stdout,
        Stderr,
    }
    let mut report = Report::default();
    let mut began = false;
    let mut case: Option<Case> = None;
    let mut section = Section::None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("@@sonde-guest begin") {
            let f = fields(rest);
            report.release = f.get("kernel").cloned().unwrap_or_default();
            report.os = f.get("os").cloned().unwrap_or_default();
            began = true;
            continue;
        }
        if !began {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@@sonde-guest end") {
            if let Some(c) = case {
                return Err(format!("case {}/{} has no end", c.btf, c.what));
            }
            report.ms = fields(rest)
                .get("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(report);
        }
        if let Some(rest) = line.strip_prefix("@@case ") {
            let f = fields(rest);
            case = Some(Case {
                btf: f.get("btf").cloned().unwrap_or_default(),
                what: f.get("what").cloned().unwrap_or_default(),
                rc: f.get("rc").and_then(|v| v.parse().ok()),
                ms: f.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0),
                skipped: f.get("skipped").cloned(),
                ..Case::default()
            });
            section = Section::None;
            continue;
        }
        let Some(c) = case.as_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("@@trigger ") {
            c.trigger = fields(rest);
        } else if let Some(rest) = line.strip_prefix("@@trigger-error ") {
            c.trigger_error = Some(rest.trim().to_string());
        } else if line == "@@stdout" {
            section = Section::Stdout;
        } else if line == "@@stderr" {
            section = Section::Stderr;
        } else if line == "@@end" {
            report.cases.push(case.take().unwrap());
            section = Section::None;
        } else {
            let buf = match section {
                Section::Stdout => &mut c.stdout,
                Section::Stderr => &mut c.stderr,
                Section::None => continue,
            };
            buf.push_str(line);
            buf.push('\n');
        }
    }
    Err(if began {
        "the report stops before its end marker (the guest died or timed out)".into()
    } else {
        "no report (the driver never started)".into()
    })
}

// ---------------------------------------------------------------------------------
// Judging.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Fired,
    Counted,
    Attached,
    Error,
    Skipped,
}

impl Outcome {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fired" => Outcome::Fired,
            "counted" => Outcome::Counted,
            "attached" => Outcome::Attached,
            "error" => Outcome::Error,
            "skipped" => Outcome::Skipped,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Fired => "fired",
            Outcome::Counted => "counted",
            Outcome::Attached => "attached",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
}

/// A line of `tests/guest/expect`.
#[derive(Debug)]
struct Expect {
    kernel: String,
    btf: String,
    program: String,
    outcome: Outcome,
    variant: String,
}

fn expectations(text: &str, programs: &[Program]) -> Result<Vec<Expect>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bad = |why: &str| format!("tests/guest/expect:{n}: {why}: `{l}`");
            if f.len() != 5 {
                return Err(bad("want 5 fields: kernel btf program outcome variant"));
            }
            let outcome = Outcome::parse(f[3])
                .ok_or_else(|| bad("outcome is one of fired, counted, attached, error, skipped"))?;
            if f[1] != "*" && !CONDITIONS.contains(&f[1]) && f[1] != DWARF {
                return Err(bad("btf is one of sysfs, none, image, bare, dwarf or *"));
            }
            if f[2] != "*" && !programs.iter().any(|p| p.name == f[2]) {
                return Err(bad("unknown program (see tests/guest/programs)"));
            }
            Ok(Expect {
                kernel: f[0].into(),
                btf: f[1].into(),
                program: f[2].into(),
                outcome,
                variant: f[4].into(),
            })
        })
        .collect()
}

fn expected<'a>(ex: &'a [Expect], kernel: &str, btf: &str, program: &str) -> Option<&'a Expect> {
    let m = |p: &str, s: &str| p == "*" || p == s;
    ex.iter()
        .find(|e| m(&e.kernel, kernel) && m(&e.btf, btf) && m(&e.program, program))
}

/// One program under one BTF condition on one kernel.
#[derive(Debug)]
struct Row {
    kernel: String,
    btf: String,
    program: String,
    kind: Kind,
    variant: Option<String>,
    outcome: Outcome,
    /// The value of the summary rows that prove it fired (see [`FiredBy`]).
    fired: u64,
    note: String,
    verdict: Result<(), String>,
}

/// "sonde: tcp_reset attached (variant kprobe)" -> "kprobe".
fn attached_variant(stderr: &str, program: &str) -> Option<String> {
    let prefix = format!("sonde: {program} attached (variant ");
    stderr.lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::to_string)
    })
}

/// A series of the metrics summary sonde prints at the end of a run.
#[derive(Debug, Clone, PartialEq)]
struct SummaryRow {
    metric: String,
    /// `k=v,...` without `pod` and `namespace`.
    labels: String,
    /// The value; a histogram's count.
    value: f64,
}

impl SummaryRow {
    /// `segments_total{kind=NOSOCK} 3`: the metric without `sonde_<program>_`.
    fn show(&self, program: &str) -> String {
        let v = self.value;
        let v = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v}")
        } else {
            format!("{v:.3e}")
        };
        let m = self.metric.trim_start_matches("sonde_");
        let m = m
            .strip_prefix(program)
            .and_then(|r| r.strip_prefix('_'))
            .unwrap_or(m);
        match self.labels.as_str() {
            "" => format!("{m} {v}"),
            l => format!("{m}{{{l}}} {v}"),
        }
    }
}

/// The summary's series: counters and gauges (`sonde_x` then `  {labels}  value`,
/// `     value` for a series with no labels but pod and namespace, or `sonde_x  value`)
/// and histograms (`sonde_x{labels}  count N, sum S`), non-zero ones only. With
/// `netns`, only the series whose pod is that namespace (`pod=netns:<inode>`); the pod
/// and namespace labels are dropped.
fn summary_rows(stdout: &str, netns: Option<&str>) -> Vec<SummaryRow> {
    let mut metric = String::new();
    let mut out = Vec::new();
    for l in stdout.lines() {
        let (name, labels, value) = if let Some(t) = l.strip_prefix("  {") {
            let Some((labels, value)) = t.split_once('}') else {
                continue;
            };
            (metric.clone(), labels.to_string(), value.trim().to_string())
        } else if l.starts_with("  ") && !metric.is_empty() {
            // A series whose only labels (pod, namespace) are empty, or a histogram's
            // bucket line, which does not parse as a value.
            (metric.clone(), String::new(), l.trim().to_string())
        } else if l.starts_with("sonde_") {
            let (head, rest) = l.split_once("  ").unwrap_or((l, ""));
            let (name, labels) = match head.split_once('{') {
                Some((n, ls)) => (n.to_string(), ls.trim_end_matches('}').to_string()),
                None => (head.to_string(), String::new()),
            };
            metric = name.clone();
            let rest = rest.trim();
            let value = match rest.strip_prefix("count ") {
                Some(c) => c.split(',').next().unwrap_or("").to_string(),
                None => rest.to_string(),
            };
            (name, labels, value)
        } else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue; // a family header, `(no data)`, a bucket
        };
        let labels: Vec<(&str, &str)> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if let Some(row) = series_row(name, &labels, value, netns) {
            out.push(row);
        }
    }
    out
}

/// A series as a [`SummaryRow`] when it is non-zero and, with `netns`, from that
/// namespace (`pod=netns:<inode>`). The node and namespace labels are dropped, and the
/// pod too with `netns` (without, it tells the namespaces of a node-level row apart).
fn series_row(
    metric: String,
    labels: &[(&str, &str)],
    value: f64,
    netns: Option<&str>,
) -> Option<SummaryRow> {
    if value == 0.0 {
        return None;
    }
    if let Some(n) = netns {
        let pod = format!("netns:{n}");
        if !labels.iter().any(|(k, v)| *k == "pod" && *v == pod) {
            return None;
        }
    }
    let kept: Vec<String> = labels
        .iter()
        .filter(|(k, v)| match *k {
            "node" | "namespace" => false,
            "pod" => netns.is_none() && !v.is_empty(),
            _ => true,
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Some(SummaryRow {
        metric,
        labels: kept.join(","),
        value,
    })
}

/// A sample of a Prometheus text exposition (a `/metrics` scrape).
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Every sample of a scrape, zeros included; a histogram is its `_count` under the
/// family's name (buckets and sums left out).
fn scrape_samples(text: &str) -> Vec<Sample> {
    let mut histograms: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            if let Some(name) = t.strip_suffix(" histogram") {
                histograms.push(name);
            }
            continue;
        }
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        let (head, value) = match l.rfind('}') {
            Some(i) => (&l[..=i], l[i + 1..].trim()),
            None => l.split_once(' ').unwrap_or((l, "")),
        };
        let Ok(value) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, ls)) => (n, prom_labels(ls.trim_end_matches('}'))),
            None => (head.trim(), Vec::new()),
        };
        let family = histograms.iter().find(|h| {
            name.strip_prefix(**h)
                .is_some_and(|r| matches!(r, "_bucket" | "_sum" | "_count"))
        });
        let name = match family {
            Some(h) if name.ends_with("_count") => h.to_string(),
            Some(_) => continue,
            None => name.to_string(),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// `a="x",b="y \"q\""` as pairs (escapes undone).
fn prom_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                c => value.push(c),
            }
        }
        out.push((key, value));
    }
}

/// A scrape's non-zero series as summary rows (see [`series_row`]).
fn scrape_rows(text: &str, netns: Option<&str>) -> Vec<SummaryRow> {
    scrape_samples(text)
        .into_iter()
        .filter_map(|s| {
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            series_row(s.name, &labels, s.value, netns)
        })
        .collect()
}

/// What sonde said when it failed: its first error line (`sonde: ...` that is not a
/// warning, or clap's `error: ...`), and how many lines followed it.
fn error_line(case: &Case) -> String {
    let lines: Vec<&str> = case
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let first = lines
        .iter()
        .position(|l| {
            (l.starts_with("sonde: ") && !l.starts_with("sonde: warning"))
                || l.starts_with("error:")
        })
        .or_else(|| lines.len().checked_sub(1));
    let mut line = match first {
        Some(i) => {
            let l = lines[i]
                .strip_prefix("sonde: ")
                .unwrap_or(lines[i])
                .to_string();
            match lines.len() - i - 1 {
                0 => l,
                n => format!("{l} (+{n} lines)"),
            }
        }
        None => "(no output)".to_string(),
    };
    if let Some(rc) = case.rc.filter(|rc| *rc != 0) {
        line = format!("exit {rc}: {line}");
    }
    line
}

/// The variant `sonde probes --json` chose per program, and every variant's verdict.
type Choices = BTreeMap<String, (Option<String>, Vec<(String, bool, Option<String>)>)>;

fn probes_choices(case: Option<&Case>) -> Choices {
    let mut out = Choices::new();
    let Some(case) = case.filter(|c| c.rc == Some(0)) else {
        return out;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&case.stdout) else {
        return out;
    };
    for p in v["programs"].as_array().into_iter().flatten() {
        let name = p["program"].as_str().unwrap_or("?").to_string();
        let chosen = p["variant"].as_str().map(str::to_string);
        let variants = p["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or("?").to_string(),
                    v["available"].as_bool().unwrap_or(false),
                    v["reason"].as_str().map(str::to_string),
                )
            })
            .collect();
        out.insert(name, (chosen, variants));
    }
    out
}

/// What `sonde btf` said about the chosen source, when the command exists.
fn btf_source(case: Option<&Case>) -> Option<String> {
    let case = case.filter(|c| c.skipped.is_none())?;
    if case.stderr.contains("unrecognized subcommand") {
        return None;
    }
    if case.rc != Some(0) {
        return Some(format!("`sonde btf`: {}", error_line(case)));
    }
    // "kernel BTF  embedded embedded:debian/12/...": the first line names the source.
    let first = case.stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let first = first.strip_prefix("kernel BTF").unwrap_or(first);
    Some(format!(
        "BTF: {}",
        first.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// `kernel BTF found source=... took_ms=...` (sonde's INFO log, ANSI colours removed)
/// as "BTF found in 12.3 s (source)".
fn btf_found_log(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .map(strip_ansi)
        .find(|l| l.contains("kernel BTF found"))?;
    let took: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("took_ms="))?
        .parse()
        .ok()?;
    let source = line
        .split("source=")
        .nth(1)
        .and_then(|r| r.split(" release=").next())
        .unwrap_or("?");
    Some(format!("BTF found in {:.1} s ({source})", took / 1e3))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether btfhub/archive/index.json has an entry for this kernel release.
fn archived(release: &str) -> bool {
    let index = repo_root().join("btfhub/archive/index.json");
    let index: serde_json::Value = std::fs::read_to_string(index)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    index["entries"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["release"] == release))
}

/// `sonde_script_up` of a scrape: the scripts up and the scripts down, by name.
fn scripts_up(scrape: &str) -> (Vec<String>, Vec<String>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for s in scrape_samples(scrape) {
        if s.name != "sonde_script_up" {
            continue;
        }
        if let Some((_, script)) = s.labels.into_iter().find(|(k, _)| k == "script") {
            if s.value == 1.0 {
                up.push(script);
            } else {
                down.push(script);
            }
        }
    }
    (up, down)
}

/// The message of the daemon's log line that says no kernel BTF was found
/// (`ERROR no kernel BTF: ...`, colours removed), without its fields.
fn daemon_btf_error(log: &str) -> Option<String> {
    let line = log
        .lines()
        .map(strip_ansi)
        .find(|l| l.contains("ERROR") && l.contains("no kernel BTF:"))?;
    let msg = &line[line.find("no kernel BTF:")?..];
    Some(
        msg.split(" error=")
            .next()
            .unwrap_or(msg)
            .trim()
            .to_string(),
    )
}

/// What a daemon case shows besides its metrics: why it failed (the driver's
/// `sonde-guest:` line), the scripts up and down, the BTF error it logged.
fn daemon_notes(c: &Case, failed: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if failed {
        let why = c
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("sonde-guest: "))
            .map(|l| l.trim_start_matches("sonde-guest: ").to_string())
            .unwrap_or_else(|| error_line(c));
        notes.push(match c.rc {
            Some(rc) if rc != 0 && !why.starts_with("exit") => format!("exit {rc}: {why}"),
            _ => why,
        });
    }
    let (up, down) = scripts_up(&c.stdout);
    if !up.is_empty() || !down.is_empty() {
        notes.push(format!("script_up: {} up, {} down", up.len(), down.len()));
    }
    if let Some(e) = daemon_btf_error(&c.stderr) {
        notes.push(format!("logged `{e}`"));
    }
    notes
}

/// The daemon with no kernel BTF: it logged the error, the scripts of the table's
/// probes are down and its source scripts up (`sonde_script_up`).
fn daemon_without_btf(c: &Case, programs: &[Program]) -> Result<(), String> {
    if daemon_btf_error(&c.stderr).is_none() {
        return Err("the daemon did not log `no kernel BTF: ...`".into());
    }
    let (up, down) = scripts_up(&c.stdout);
    let mut wrong = Vec::new();
    for p in programs {
        let stem = p.script.trim_end_matches(".rhai");
        let (want, list) = match p.kind {
            Kind::Probe => ("down", &down),
            Kind::Source => ("up", &up),
            Kind::Daemon => continue,
        };
        let w = format!("{stem} not {want}");
        if !list.iter().any(|s| s == stem) && !wrong.contains(&w) {
            wrong.push(w);
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "with no kernel BTF, sonde_script_up: {}",
            wrong.join(", ")
        ))
    }
}

/// The summary rows shown in a row's note: the matching ones first, at most this many.
const NOTE_ROWS: usize = 4;

fn judge(
    label: &str,
    report: &Report,
    ex: &[Expect],
    programs: &[Program],
    conditions: &[&str],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for btf in conditions {
        let probes = probes_choices(report.case(btf, "probes"));
        let source = btf_source(report.case(btf, "btf"));
        for p in programs
            .iter()
            .filter(|p| p.conditions.iter().any(|c| c == btf))
        {
            let program = &p.name;
            let mut notes: Vec<String> = Vec::new();
            // Where the run's BTF came from and how long finding it took, when sonde
            // logged it (SONDE_LOG=sonde::btf=info: the DWARF case).
            if let Some(found) = report
                .case(btf, program)
                .and_then(|c| btf_found_log(&c.stderr))
            {
                notes.push(found);
            }
            let (outcome, variant, fired) = match report.case(btf, program) {
                None => {
                    notes.push("no such case in the driver's report".into());
                    (Outcome::Error, None, 0)
                }
                Some(c) if c.skipped.is_some() => {
                    notes.push(c.skipped.clone().unwrap_or_default());
                    (Outcome::Skipped, None, 0)
                }
                Some(c) => {
                    // `kernel_latency/kprobe`: a second row of one program (a variant asked for).
                    let loaded = program.split('/').next().unwrap_or(program);
                    let variant = match p.kind {
                        Kind::Probe => attached_variant(&c.stderr, loaded),
                        Kind::Source | Kind::Daemon => None,
                    };
                    let netns = c.trigger.get("netns").map(String::as_str);
                    let rows_in = |netns| match p.kind {
                        Kind::Daemon => scrape_rows(&c.stdout, netns),
                        Kind::Probe | Kind::Source => summary_rows(&c.stdout, netns),
                    };
                    // Scoped to the trigger's namespace; with no namespace (a
                    // trigger that failed or stayed in sonde's) nothing counts.
                    let mut rows = if p.fired.node {
                        rows_in(None)
                    } else if netns.is_some() {
                        rows_in(netns)
                    } else {
                        Vec::new()
                    };
                    rows.sort_by_key(|r| !p.fired.matches(r));
                    let fired: u64 = rows
                        .iter()
                        .filter(|r| p.fired.matches(r))
                        .map(|r| r.value.round() as u64)
                        .sum();
                    let failed = c.rc != Some(0) || (p.kind == Kind::Probe && variant.is_none());
                    if p.kind == Kind::Daemon {
                        notes.extend(daemon_notes(c, failed));
                    }
                    if failed {
                        if p.kind != Kind::Daemon {
                            notes.push(error_line(c));
                        }
                        if let Some((Some(v), _)) = probes.get(program) {
                            notes.push(format!("`sonde probes` said variant {v} runs"));
                        }
                        (Outcome::Error, variant, fired)
                    } else {
                        // A script handler that failed (sonde counts them at exit).
                        if let Some(l) = c
                            .stderr
                            .lines()
                            .find(|l| l.starts_with("sonde: script errors:"))
                        {
                            notes.push(l.trim_start_matches("sonde: ").to_string());
                        }
                        match c.trigger.get("rc").map(String::as_str) {
                            None => notes.push("the driver did not trigger (saw no attach)".into()),
                            Some("0") => {}
                            Some(rc) => notes.push(format!(
                                "trigger {} failed ({rc}): {}",
                                p.trigger,
                                c.trigger_error.as_deref().unwrap_or("")
                            )),
                        }
                        if rows.is_empty() {
                            notes.push(if p.fired.node {
                                "no non-zero summary rows".into()
                            } else {
                                "no summary rows from the trigger's namespace".into()
                            });
                        } else {
                            // A scrape is every series of every script: the daemon
                            // shows only the ones `fired` names.
                            let listed: Vec<&SummaryRow> = rows
                                .iter()
                                .filter(|r| p.kind != Kind::Daemon || p.fired.matches(r))
                                .collect();
                            let shown = p.name.strip_prefix("source:").unwrap_or(loaded);
                            let mut seen: Vec<String> = listed
                                .iter()
                                .take(NOTE_ROWS)
                                .map(|r| r.show(shown))
                                .collect();
                            if listed.is_empty() {
                                seen.push(format!("no series with {}", p.fired.parts.join(", ")));
                            } else if listed.len() > NOTE_ROWS {
                                seen.push(format!("(+{} rows)", listed.len() - NOTE_ROWS));
                            }
                            notes.push(seen.join(", "));
                        }
                        let o = if fired > 0 {
                            Outcome::Fired
                        } else if !rows.is_empty() {
                            Outcome::Counted
                        } else {
                            Outcome::Attached
                        };
                        (o, variant, fired)
                    }
                }
            };
            // `sonde btf` failing like the run itself says nothing new.
            if let Some(s) = source
                .as_ref()
                .filter(|s| !notes.iter().any(|n| s.ends_with(n)))
            {
                notes.push(s.clone());
            }
            // Debian replaces its kernel builds; a guest kernel newer than the
            // archive's entry cannot find embedded BTF, and must say so.
            let stale_archive = *btf == "none" && label != "host" && !archived(&report.release);
            if stale_archive {
                notes.push(format!(
                    "btfhub/archive has no entry for {0}: `apt-get download linux-image-{0}`, \
                     `btfhub/gen` the .deb, `btfhub/gen --remove` the entry it replaces, commit",
                    report.release
                ));
            }
            let mut verdict = match expected(ex, label, btf, program) {
                _ if stale_archive && outcome != Outcome::Error => {
                    Err("expected error (no archive entry for this kernel)".to_string())
                }
                _ if stale_archive => Ok(()),
                None => Err("no line in tests/guest/expect".to_string()),
                Some(e) if e.outcome != outcome => Err(format!("expected {}", e.outcome.name())),
                Some(e)
                    if matches!(
                        outcome,
                        Outcome::Fired | Outcome::Counted | Outcome::Attached
                    ) && e.variant != "*"
                        && variant.as_deref().unwrap_or("-") != e.variant =>
                {
                    Err(format!("expected variant {}", e.variant))
                }
                Some(_) => Ok(()),
            };
            // With no kernel BTF, the daemon must say so and still run every script
            // that needs none: the scripts of the table's probes down, its sources up.
            let no_btf = report.case(btf, "btf").is_some_and(|c| c.rc != Some(0));
            if let (Kind::Daemon, true, Ok(()), Some(c)) =
                (p.kind, no_btf, &verdict, report.case(btf, program))
            {
                if let Err(why) = daemon_without_btf(c, programs) {
                    verdict = Err(why);
                }
            }
            if let (Some(v), Some((Some(chosen), _))) = (&variant, probes.get(program)) {
                if v != chosen && verdict.is_ok() {
                    verdict = Err(format!(
                        "`sonde probes` chose {chosen}, `sonde run` attached {v}"
                    ));
                }
            }
            rows.push(Row {
                kernel: label.to_string(),
                btf: btf.to_string(),
                program: program.to_string(),
                kind: p.kind,
                variant,
                outcome,
                fired,
                note: notes.join("; "),
                verdict,
            });
        }
    }
    rows
}

// ---------------------------------------------------------------------------------
// Running.

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Waits for `child` at most `limit`; kills it after that.
fn wait_for(child: &mut Child, limit: Duration, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{what} failed: {st}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} still running after {limit:?}: killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How long each part of one kernel's run took.
#[derive(Debug, Default)]
struct Timing {
    build: Duration,
    wall: Duration,
}

struct KernelRun {
    label: String,
    result: Result<(Report, Timing), String>,
}

/// How a guest is booted: its memory, and files added to its initramfs
/// (`SRC:DEST`, see mkinitramfs), the directory its outputs go to, a time limit.
struct GuestSetup {
    memory: &'static str,
    extra: Vec<String>,
    dir_name: String,
    timeout: Duration,
    /// Environment for the guest's init (`SONDE_GUEST_DWARF=1`).
    append: String,
}

impl GuestSetup {
    fn normal(k: &Kernel) -> Self {
        GuestSetup {
            memory: "1G",
            extra: Vec::new(),
            dir_name: k.label.clone(),
            timeout: GUEST_TIMEOUT,
            append: String::new(),
        }
    }
}

fn run_guest(k: &Kernel, sonde: &Path) -> Result<(Report, Timing), String> {
    run_guest_with(k, sonde, &GuestSetup::normal(k))
}

fn run_guest_with(
    k: &Kernel,
    sonde: &Path,
    setup: &GuestSetup,
) -> Result<(Report, Timing), String> {
    let dir = out_dir().join(&setup.dir_name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kdir = kernel_cache().join(&k.label);
    let vmlinuz = std::fs::read_dir(&kdir)
        .map_err(|e| format!("{}: {e}", kdir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("no vmlinuz-* in {}", kdir.display()))?;

    let t = Instant::now();
    let initrd = dir.join("initrd.cpio");
    let st = Command::new(guest_dir().join("mkinitramfs"))
        .arg(&initrd)
        .arg(sonde)
        .arg(trigger_bin())
        .arg(&kdir)
        .arg(&k.os)
        .env("SONDE_GUEST_EXTRA", setup.extra.join(" "))
        .status()
        .map_err(|e| format!("mkinitramfs: {e}"))?;
    if !st.success() {
        return Err(format!("mkinitramfs failed: {st}"));
    }
    let build = t.elapsed();

    let console = dir.join("console.log");
    let results = dir.join("results.txt");
    let qemu_log = dir.join("qemu.log");
    for f in [&console, &results] {
        let _ = std::fs::remove_file(f);
    }
    let t = Instant::now();
    let log = std::fs::File::create(&qemu_log).map_err(|e| format!("qemu.log: {e}"))?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            setup.memory,
        ])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 quiet panic=-1 {}", setup.append).trim_end())
        .arg("-no-reboot")
        // A virtio-net device (no traffic leaves it): its control-queue commands are
        // what virtcmd_latency times.
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let waited = wait_for(&mut child, setup.timeout, "qemu");
    let wall = t.elapsed();
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let parsed = parse_report(&text);
    match (waited, parsed) {
        (Ok(()), Ok(report)) => Ok((report, Timing { build, wall })),
        (w, p) => Err(format!(
            "{}{}\n--- last console lines ({}):\n{}\n--- qemu: {}",
            w.err().map(|e| format!("{e}; ")).unwrap_or_default(),
            p.err().unwrap_or_else(|| "report complete".into()),
            console.display(),
            tail(&console, 15),
            tail(&qemu_log, 5),
        )),
    }
}

fn run_host(sonde: &Path) -> Result<(Report, Timing), String> {
    let dir = out_dir().join("host");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    let results = dir.join("results.txt");
    let driver_log = dir.join("driver.log");
    let t = Instant::now();
    let mut cmd = Command::new("busybox");
    cmd.arg("sh")
        .arg(guest_dir().join("driver"))
        .env("SONDE", sonde)
        .env("SCRIPTS", repo_root().join("scripts"))
        .env("TRIGGER", trigger_bin())
        .env("BB", "busybox")
        .env_remove("SONDE_GUEST_NS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&results).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(&driver_log).map_err(|e| e.to_string())?);
    if image.is_file() {
        cmd.env("IMAGE", &image);
    }
    let mut child = cmd.spawn().map_err(|e| format!("busybox sh driver: {e}"))?;
    let waited = wait_for(&mut child, GUEST_TIMEOUT, "the driver");
    let wall = t.elapsed();
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    match (waited, parse_report(&text)) {
        (Ok(()), Ok(report)) => Ok((
            report,
            Timing {
                build: Duration::ZERO,
                wall,
            },
        )),
        (w, p) => Err(format!(
            "{}{}\n--- {}:\n{}",
            w.err().map(|e| format!("{e}; ")).unwrap_or_default(),
            p.err().unwrap_or_else(|| "report complete".into()),
            driver_log.display(),
            tail(&driver_log, 15)
        )),
    }
}

// ---------------------------------------------------------------------------------
// Tables.

fn kernel_name(label: &str, report: &Report) -> String {
    format!("{} ({label})", report.release)
}

fn variants_table(runs: &[KernelRun]) -> String {
    let mut t = String::from(
        "| kernel | program | variant | runs here | why not |\n|---|---|---|---|---|\n",
    );
    for run in runs {
        let Ok((report, _)) = &run.result else {
            continue;
        };
        let choices = probes_choices(report.case("sysfs", "probes"));
        if choices.is_empty() {
            let _ = writeln!(
                t,
                "| {} | - | - | - | `sonde probes --json` failed |",
                kernel_name(&run.label, report)
            );
        }
        for (program, (chosen, variants)) in &choices {
            for (name, available, reason) in variants {
                let runs = match (available, chosen.as_deref() == Some(name.as_str())) {
                    (true, true) => "yes, chosen",
                    (true, false) => "yes",
                    (false, _) => "no",
                };
                let _ = writeln!(
                    t,
                    "| {} | {program} | {name} | {runs} | {} |",
                    kernel_name(&run.label, report),
                    reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    t
}

fn runs_table(runs: &[KernelRun], rows: &[Row]) -> String {
    let mut t = String::from(
        "| kernel | BTF | program | variant | loaded | fired | outcome | note |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let kernel = runs
            .iter()
            .find(|k| k.label == r.kernel)
            .and_then(|k| k.result.as_ref().ok())
            .map(|(rep, _)| kernel_name(&r.kernel, rep))
            .unwrap_or_else(|| r.kernel.clone());
        let outcome = match &r.verdict {
            Ok(()) => r.outcome.name().to_string(),
            Err(why) => format!("**{}: UNEXPECTED, {why}**", r.outcome.name()),
        };
        let ran = matches!(
            r.outcome,
            Outcome::Fired | Outcome::Counted | Outcome::Attached
        );
        // Sources and the daemon's rows load no kernel program of their own.
        let loaded = match (r.kind, r.outcome) {
            (Kind::Source | Kind::Daemon, _) | (_, Outcome::Skipped) => "-",
            _ if ran => "yes",
            _ => "no",
        };
        let _ = writeln!(
            t,
            "| {kernel} | {} | {} | {} | {loaded} | {} | {outcome} | {} |",
            r.btf,
            r.program,
            r.variant.as_deref().unwrap_or("-"),
            if ran { r.fired.to_string() } else { "-".into() },
            r.note.replace('|', "\\|"),
        );
    }
    t
}

fn programs_table(programs: &[Program]) -> String {
    let mut t = String::from(
        "| program | script | trigger | fired when a summary row has | BTF | for | params |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for p in programs {
        let fired = match (p.fired.node, p.fired.parts.is_empty()) {
            (true, true) => "any non-zero value (node-level)".to_string(),
            (true, false) => format!("`{}` (node-level)", p.fired.parts.join(", ")),
            (false, true) => "the trigger's netns".to_string(),
            (false, false) => format!("`{}`, the trigger's netns", p.fired.parts.join(", ")),
        };
        let all = CONDITIONS
            .iter()
            .all(|c| p.conditions.iter().any(|x| x == c));
        let btf = if all {
            std::iter::once("all")
                .chain(
                    p.conditions
                        .iter()
                        .map(String::as_str)
                        .filter(|c| !CONDITIONS.contains(c)),
                )
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            p.conditions.join(", ")
        };
        let params = if p.params.is_empty() {
            "-".to_string()
        } else {
            format!("`{}`", p.params.join(" "))
        };
        let _ = writeln!(
            t,
            "| {} | {} | `{}` | {fired} | {btf} | {} | {params} |",
            p.name, p.script, p.trigger, p.duration
        );
    }
    t
}

fn timing_table(runs: &[KernelRun]) -> String {
    let mut t = String::from(
        "| kernel | initramfs | wall (boot to power-off) | driver (inside) | slowest case |\n\
         |---|---|---|---|---|\n",
    );
    for run in runs {
        match &run.result {
            Ok((report, timing)) => {
                let slowest = report
                    .cases
                    .iter()
                    .max_by_key(|c| c.ms)
                    .map(|c| format!("{}/{} {:.1} s", c.btf, c.what, c.ms as f64 / 1000.0))
                    .unwrap_or_default();
                let _ = writeln!(
                    t,
                    "| {} | {:.1} s | {:.1} s | {:.1} s | {slowest} |",
                    kernel_name(&run.label, report),
                    timing.build.as_secs_f64(),
                    timing.wall.as_secs_f64(),
                    report.ms as f64 / 1000.0,
                );
            }
            Err(_) => {
                let _ = writeln!(t, "| {} | - | failed | - | - |", run.label);
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------

#[test]
fn guest_kernels() {
    let test = "guest_kernels";
    let started = Instant::now();
    let only: Option<Vec<String>> = std::env::var("SONDE_GUEST_ONLY")
        .ok()
        .map(|s| s.split(',').map(|l| l.trim().to_string()).collect());
    let wanted = |label: &str| only.as_ref().is_none_or(|o| o.iter().any(|l| l == label));
    let programs = programs();
    let ex = expectations(
        &std::fs::read_to_string(guest_dir().join("expect")).unwrap(),
        &programs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let all = kernels(&std::fs::read_to_string(guest_dir().join("kernels")).unwrap());
    let mut guests: Vec<Kernel> = all.into_iter().filter(|k| wanted(&k.label)).collect();

    let missing: Vec<&str> = [
        "qemu-system-x86_64",
        "busybox",
        "cpio",
        "objcopy",
        "apt-get",
        "dpkg-deb",
    ]
    .into_iter()
    .filter(|t| !on_path(t))
    .collect();
    if !guests.is_empty() && !missing.is_empty() {
        cannot_run(
            test,
            &format!(
                "guest kernels need {} (apt-get install qemu-system-x86 busybox-static cpio)",
                missing.join(", ")
            ),
        );
        guests.clear();
    }
    if !guests.is_empty() {
        let labels: Vec<&str> = guests.iter().map(|k| k.label.as_str()).collect();
        let st = Command::new(guest_dir().join("fetch-kernels"))
            .args(&labels)
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            cannot_run(
                test,
                &format!(
                    "tests/guest/fetch-kernels {} failed: {st:?}",
                    labels.join(" ")
                ),
            );
            guests.clear();
        }
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let host = wanted("host") && on_path("busybox");
    if wanted("host") && !host {
        cannot_run(
            test,
            "the host run needs busybox (apt-get install busybox-static)",
        );
    } else if host && !root {
        cannot_run(
            test,
            "the host run needs root (BPF, mount and network namespaces)",
        );
    }
    let host = host && root;
    if guests.is_empty() && !host {
        return;
    }
    let fetched = started.elapsed();

    let sonde = sonde_bin();
    let t = Instant::now();
    let mut runs: Vec<KernelRun> = std::thread::scope(|s| {
        let sonde = &sonde;
        let mut handles = Vec::new();
        if host {
            handles.push(("host".to_string(), s.spawn(move || run_host(sonde))));
        }
        for k in &guests {
            handles.push((k.label.clone(), s.spawn(move || run_guest(k, sonde))));
        }
        handles
            .into_iter()
            .map(|(label, h)| KernelRun {
                label,
                result: h.join().unwrap_or_else(|_| Err("panicked".into())),
            })
            .collect()
    });
    let ran = t.elapsed();
    runs.sort_by_key(|r| if r.label == "host" { 0 } else { 1 });

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for run in &runs {
        match &run.result {
            Ok((report, _)) => rows.extend(judge(&run.label, report, &ex, &programs, CONDITIONS)),
            Err(e) => failures.push(format!("{}: {e}", run.label)),
        }
    }
    for r in rows.iter().filter(|r| r.verdict.is_err()) {
        failures.push(format!(
            "{}/{}/{}: {} ({})",
            r.kernel,
            r.btf,
            r.program,
            r.verdict.as_ref().unwrap_err(),
            r.note
        ));
    }

    let mut md = String::new();
    let _ = writeln!(md, "### Programs (`tests/guest/programs`)\n");
    md.push_str(&programs_table(&programs));
    let _ = writeln!(
        md,
        "\n### Variants (`sonde probes --json`, BTF as the kernel has it)\n"
    );
    md.push_str(&variants_table(&runs));
    let _ = writeln!(
        md,
        "\n### Runs (`sonde run scripts/<script> --for <for> -p <params>`, `sonde daemon`)\n"
    );
    md.push_str(&runs_table(&runs, &rows));
    let _ = writeln!(md, "\n### Time\n");
    md.push_str(&timing_table(&runs));
    let _ = writeln!(
        md,
        "\nsonde: {}; kernels fetched or found in {:.1} s; all kernels run side by side in \
         {:.1} s; {:.1} s in all.",
        sonde.display(),
        fetched.as_secs_f64(),
        ran.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("\n{md}");
    let _ = std::fs::write(out_dir().join("report.md"), &md);
    assert!(
        failures.is_empty(),
        "guest kernels: {} unexpected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------
// The DWARF case (opt-in).

/// Debian's debug image of the 6.1 guest kernel (linux-image-<release>-dbg), stripped
/// of its .BTF, is the only BTF in the guest: sysfs hidden, the embedded archive off,
/// no vmlinuz; the image at /usr/lib/debug/boot/vmlinux-<release>. sonde converts its
/// DWARF to BTF (the chain's `dwarf` step) for `sonde btf` and again for each program
/// of tests/guest/programs whose `btf` lists `dwarf`, which must load and fire.
///
/// Opt-in (the package is ~280 MB; the test builds and uses a release sonde, as a
/// debug build converts ~10x slower):
///
/// ```text
/// SONDE_GUEST_DWARF=fetch cargo nextest run -p sonde-tests --test guest \
///     --run-ignored only guest_dwarf --no-capture
/// ```
///
/// `SONDE_GUEST_DWARF=fetch` downloads the -dbg package matching the cached kernel
/// (`tests/guest/fetch-kernels --dbg`); `=DIR` takes `<package>-dbg_<version>_amd64.deb`
/// from DIR. `SONDE_GUEST_DWARF_KERNEL` picks another kernel label (default bookworm).
#[test]
#[ignore = "opt-in: SONDE_GUEST_DWARF=fetch|DIR (see its doc)"]
fn guest_dwarf() {
    let test = "guest_dwarf";
    let Ok(how) = std::env::var("SONDE_GUEST_DWARF") else {
        cannot_run(
            test,
            "SONDE_GUEST_DWARF is not set: =fetch downloads the guest kernel's -dbg \
             package (~280 MB), =DIR takes it from DIR",
        );
        return;
    };
    let label =
        std::env::var("SONDE_GUEST_DWARF_KERNEL").unwrap_or_else(|_| "bookworm".to_string());
    let all = kernels(&std::fs::read_to_string(guest_dir().join("kernels")).unwrap());
    let k = all
        .iter()
        .find(|k| k.label == label)
        .unwrap_or_else(|| panic!("no kernel {label} in tests/guest/kernels"));
    let t = Instant::now();
    let mut fetch = Command::new(guest_dir().join("fetch-kernels"));
    fetch.arg("--dbg").arg(&label);
    if how != "fetch" {
        fetch.env("SONDE_GUEST_DEBS", &how);
    }
    let st = fetch.status();
    assert!(
        matches!(st, Ok(s) if s.success()),
        "tests/guest/fetch-kernels --dbg {label} failed: {st:?}"
    );
    let fetched = t.elapsed();
    let dbg_dir = kernel_cache().join(&label).join("dbg");
    let image = std::fs::read_dir(&dbg_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinux-"))
        })
        .unwrap_or_else(|| panic!("no vmlinux-* in {}", dbg_dir.display()));
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);

    let all_programs = programs();
    let ex = expectations(
        &std::fs::read_to_string(guest_dir().join("expect")).unwrap(),
        &all_programs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let programs: Vec<Program> = all_programs
        .into_iter()
        .filter(|p| p.conditions.iter().any(|c| c == DWARF))
        .collect();
    // A debug build converts ~10x slower (minutes per invocation under emulation).
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "sonde",
            "--bin",
            "sonde",
        ])
        .current_dir(repo_root())
        .status();
    assert!(
        matches!(st, Ok(s) if s.success()),
        "cargo build --release -p sonde failed: {st:?}"
    );
    let sonde = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("release/sonde");
    let setup = GuestSetup {
        memory: "2G",
        extra: vec![format!("{}:usr/lib/debug/boot/{name}", image.display())],
        dir_name: format!("{label}-dwarf"),
        timeout: Duration::from_secs(2400),
        append: "sonde_dwarf=1".into(),
    };
    let result = run_guest_with(k, &sonde, &setup);
    let (report, timing) = match result {
        Ok(r) => r,
        Err(e) => panic!("{label} (DWARF): {e}"),
    };
    let rows = judge(&label, &report, &ex, &programs, &[DWARF]);
    let run = KernelRun {
        label: label.clone(),
        result: Ok((report, timing)),
    };
    let Ok((report, timing)) = &run.result else {
        unreachable!()
    };
    let btf = report.case(DWARF, "btf");
    let btf_out = btf
        .map(|c| c.stdout.trim_end().to_string())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### DWARF to BTF in the guest ({}, {name}, {:.0} MB stripped; package {})\n",
        report.release,
        size as f64 / 1e6,
        std::fs::read_to_string(dbg_dir.join("package"))
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(md, "`sonde btf`:\n\n```text\n{btf_out}\n```\n");
    md.push_str(&runs_table(std::slice::from_ref(&run), &rows));
    let _ = writeln!(md);
    let _ = writeln!(md, "| case | time (whole invocation) |\n|---|---|");
    for c in &report.cases {
        let _ = writeln!(md, "| {} | {:.1} s |", c.what, c.ms as f64 / 1000.0);
    }
    let _ = writeln!(
        md,
        "\nsonde: {}; debug image fetched or found in {:.1} s; initramfs {:.1} s; guest \
         boot to power-off {:.1} s.",
        sonde.display(),
        fetched.as_secs_f64(),
        timing.build.as_secs_f64(),
        timing.wall.as_secs_f64()
    );
    println!("\n{md}");
    let _ = std::fs::write(out_dir().join(format!("{label}-dwarf/report.md")), &md);
    assert!(
        btf.is_some_and(|c| c.rc == Some(0)
            && c.stdout.contains("DWARF")
            && c.stdout.contains("/usr/lib/debug/boot/")),
        "`sonde btf` did not use the DWARF step:\n{btf_out}\n{}",
        btf.map(|c| c.stderr.as_str()).unwrap_or("")
    );
    let failures: Vec<String> = rows
        .iter()
        .filter(|r| r.verdict.is_err())
        .map(|r| format!("{}: {:?} ({})", r.program, r.verdict, r.note))
        .collect();
    assert!(
        !rows.is_empty(),
        "no program lists `dwarf` in tests/guest/programs"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------
// The harness's own parts, without qemu or root.

const SAMPLE: &str = "\
[    1.0] kernel noise before the report
@@sonde-guest begin kernel=6.1.0-56-cloud-amd64 os=debian:12\r
@@case btf=sysfs what=probes rc=0 ms=630
@@stdout
{\"kernel\": \"6.1.0-56-cloud-amd64\", \"programs\": [{\"program\": \"tcp_reset\",
 \"variant\": \"kprobe\", \"variants\": [
  {\"name\": \"tracepoint\", \"available\": false, \"reason\": \"kernel < 6.10\"},
  {\"name\": \"kprobe\", \"available\": true, \"reason\": null}]}]}
@@stderr
@@end
@@case btf=sysfs what=btf rc=2 ms=90
@@stdout
@@stderr
error: unrecognized subcommand 'btf'
@@end
@@case btf=sysfs what=tcp_reset rc=0 ms=3630
@@trigger rc=0 netns=4026532114 refused=3
@@stdout
type=TCPRESET_NOSOCK pod=netns:4026532114 protocol=TCP saddr=127.0.0.1 sport=9
sonde_tcp_reset_segments_total
  {pod=netns:4026532114,kind=NOSOCK}   3
  {pod=netns:4026532114,kind=RECEIVE}  3
  {kind=NOSOCK}  7
  {pod=netns:4026532114,kind=ACTIVE}   0
@@stderr
sonde: tcp_reset attached (variant kprobe)
sonde: 6 records (2/s), 6 events emitted, 0 lost in the kernel, 0 undecodable, in 3.26s
@@end
@@case btf=none what=tcp_reset rc=1 ms=420
@@stdout
@@stderr
sonde: warning: something
sonde: no kernel BTF found; tried: /sys/kernel/btf/vmlinux
@@end
@@case btf=image what=tcp_reset skipped=no kernel image for 6.18.44
@@end
@@case btf=sysfs what=softirq rc=0 ms=3000
@@trigger rc=0 netns=4026532200 tcp_bytes=4194304
@@stdout
sonde_softirq_run_seconds{vec=NET_RX}  count 12, sum 3.1e-4
  (1K, 2K]    12 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|

sonde_softirq_raised_total
  {vec=TIMER}   9
sonde_softirq_cpus  1
@@stderr
sonde: softirq attached (variant tracepoint)
@@end
@@case btf=sysfs what=tcp_retrans rc=0 ms=3000
@@trigger rc=1 netns=4026532201
@@trigger-error sonde-guest-trigger retrans: connect: refused
@@stdout
sonde_tcp_retrans_segments_total
  (no data)
@@stderr
sonde: tcp_retrans attached (variant raw_tracepoint)
@@end
@@case btf=bare what=btf rc=1 ms=300
@@stdout
@@stderr
sonde: no kernel BTF for 6.1.0; tried:
  sysfs        tried   /sys/kernel/btf/vmlinux: not found
@@end
@@case btf=bare what=source:netdev rc=0 ms=2400
@@trigger rc=0 tcp_bytes=4194304 udp_round_trips=200 port=40000
@@stdout
sonde_netdev_receive_bytes_total
  {device=lo}                          4300000
  {pod=netns:4026532246,device=lo}          300
  {device=eth0}                               0

sonde_tcpsummary_rx_queue_bytes
                          33
  {pod=netns:4026532246}   0
@@stderr
sonde: 0 records (0/s), 0 events emitted, 0 lost in the kernel, 0 undecodable, in 2.01s
@@end
@@case btf=bare what=daemon rc=0 ms=19000
@@trigger rc=0 tcp_bytes=4194304 udp_round_trips=200 port=40001
@@stdout
# HELP sonde_netdev_receive_bytes_total Bytes received.
# TYPE sonde_netdev_receive_bytes_total counter
sonde_netdev_receive_bytes_total{node=\"guest\",namespace=\"\",pod=\"\",device=\"lo\"} 1678
sonde_netdev_receive_bytes_total{node=\"guest\",namespace=\"\",pod=\"netns:4026531833\",device=\"lo\"} 4300000
sonde_netdev_receive_bytes_total{node=\"guest\",namespace=\"\",pod=\"netns:4026531833\",device=\"eth0\"} 0
# TYPE sonde_x_seconds histogram
sonde_x_seconds_bucket{node=\"guest\",le=\"+Inf\"} 5
sonde_x_seconds_sum{node=\"guest\"} 0.5
sonde_x_seconds_count{node=\"guest\"} 5
sonde_script_up{node=\"guest\",script=\"netdev\"} 1
sonde_script_up{node=\"guest\",script=\"tcp_reset\"} 0
@@stderr
sonde: daemon listening on http://0.0.0.0:9102 (config: embedded default)
\x1b[2m2026-11-21T20:18:10Z\x1b[0m \x1b[31mERROR\x1b[0m no kernel BTF: scripts with a kernel program cannot load; the others run \x1b[3merror\x1b[0m=no kernel BTF for 6.1.0; tried:
  sysfs        tried   /sys/kernel/btf/vmlinux: not found
@@end
@@sonde-guest end ms=10740
";

const SAMPLE_PROGRAMS: &str = "\
# program  script  trigger  fired  btf  for  params
tcp_reset    tcp_reset.rhai    refused  kind=NOSOCK  all  2s  -
packet_loss  packet_loss.rhai  refused  reason=NO_SOCKET  sysfs,none  2s  -
softirq      softirq.rhai      traffic  node:sonde_softirq_run_seconds,vec=NET_RX  sysfs  3s  threshold_ms=0
tcp_retrans  tcp_retrans.rhai  retrans  *  sysfs  3s  a=1,b=2
source:netdev  netdev.rhai  lo-traffic  node:sonde_netdev_receive_bytes_total,device=lo  bare  2s  -
daemon  -  lo-traffic  node:sonde_netdev_receive_bytes_total,device=lo  bare  15s  -
";

#[test]
fn programs_table_parses() {
    let p = parse_programs(SAMPLE_PROGRAMS).unwrap();
    assert_eq!(p.len(), 6);
    let kinds: Vec<Kind> = p.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Probe,
            Kind::Probe,
            Kind::Probe,
            Kind::Probe,
            Kind::Source,
            Kind::Daemon
        ]
    );
    assert_eq!(p[0].conditions, CONDITIONS);
    assert_eq!(p[1].conditions, ["sysfs", "none"]);
    assert_eq!(
        p[2].fired,
        FiredBy {
            node: true,
            parts: vec!["sonde_softirq_run_seconds".into(), "vec=NET_RX".into()]
        }
    );
    assert_eq!(p[2].params, ["threshold_ms=0"]);
    assert!(p[3].fired.parts.is_empty() && !p[3].fired.node);
    assert_eq!(p[3].params, ["a=1", "b=2"]);
    for bad in [
        "x x.rhai nosuchtrigger * all 2s -",
        "x x.rhai refused * sometimes 2s -",
        "x x.rhai refused kind * 2s -",
        "x x.rhai refused * all soon -",
        "x x.rhai refused * all 2s noequals",
        "x x.rhai refused * all 2s",
        "x x.rhai refused * all 2s -\nx x.rhai refused * all 2s -",
        "daemon x.rhai refused * bare 15s -",
        "source:x - refused * bare 2s -",
        "daemon - refused * bare 1500ms -",
    ] {
        assert!(parse_programs(bad).is_err(), "{bad}");
    }
    // The real table parses, and every script it names exists.
    for p in programs().iter().filter(|p| p.kind != Kind::Daemon) {
        assert!(
            repo_root().join("scripts").join(&p.script).is_file(),
            "tests/guest/programs: {} names scripts/{}, which does not exist",
            p.name,
            p.script
        );
    }
}

#[test]
fn driver_report_parses_and_is_judged() {
    let programs = parse_programs(SAMPLE_PROGRAMS).unwrap();
    let r = parse_report(SAMPLE).unwrap();
    assert_eq!(r.release, "6.1.0-56-cloud-amd64");
    assert_eq!(r.os, "debian:12");
    assert_eq!(r.ms, 10740);
    assert_eq!(r.cases.len(), 10);
    let run = r.case("sysfs", "tcp_reset").unwrap();
    assert_eq!(
        run.trigger.get("netns").map(String::as_str),
        Some("4026532114")
    );
    assert_eq!(run.trigger.get("refused").map(String::as_str), Some("3"));
    assert_eq!(
        attached_variant(&run.stderr, "tcp_reset").as_deref(),
        Some("kprobe")
    );
    let row = |labels: &str, value: f64| SummaryRow {
        metric: "sonde_tcp_reset_segments_total".into(),
        labels: labels.into(),
        value,
    };
    assert_eq!(
        summary_rows(&run.stdout, Some("4026532114")),
        vec![row("kind=NOSOCK", 3.0), row("kind=RECEIVE", 3.0)]
    );
    assert_eq!(summary_rows(&run.stdout, None).len(), 3);
    let soft = r.case("sysfs", "softirq").unwrap();
    assert_eq!(
        summary_rows(&soft.stdout, None),
        vec![
            SummaryRow {
                metric: "sonde_softirq_run_seconds".into(),
                labels: "vec=NET_RX".into(),
                value: 12.0
            },
            SummaryRow {
                metric: "sonde_softirq_raised_total".into(),
                labels: "vec=TIMER".into(),
                value: 9.0
            },
            SummaryRow {
                metric: "sonde_softirq_cpus".into(),
                labels: String::new(),
                value: 1.0
            },
        ]
    );
    assert_eq!(
        r.case("image", "tcp_reset").unwrap().skipped.as_deref(),
        Some("no kernel image for 6.18.44")
    );

    let ex = expectations(
        "* bare source:netdev fired -\n\
         * bare daemon fired -\n\
         bookworm sysfs tcp_reset fired kprobe\n\
         * none * error - # today\n\
         * image * skipped -\n\
         * * softirq fired tracepoint\n\
         * * * attached *\n",
        &programs,
    )
    .unwrap();
    let rows = judge("bookworm", &r, &ex, &programs, CONDITIONS);
    let row = |btf: &str, p: &str| {
        rows.iter()
            .find(|x| x.btf == btf && x.program == p)
            .unwrap_or_else(|| panic!("no row {btf}/{p}"))
    };
    let ok = row("sysfs", "tcp_reset");
    assert_eq!((ok.outcome, ok.fired), (Outcome::Fired, 3));
    assert!(ok.verdict.is_ok(), "{:?}", ok.verdict);
    let none = row("none", "tcp_reset");
    assert_eq!(none.outcome, Outcome::Error);
    assert!(
        none.note.contains("exit 1: no kernel BTF found"),
        "{}",
        none.note
    );
    assert!(none.verdict.is_ok());
    assert_eq!(row("image", "tcp_reset").outcome, Outcome::Skipped);
    // A case missing from the report is an error, and unexpected here.
    assert!(row("sysfs", "packet_loss").verdict.is_err());
    // Programs run only under their conditions: no rows elsewhere.
    assert!(!rows
        .iter()
        .any(|x| x.program == "packet_loss" && x.btf == "bare"));
    assert!(!rows
        .iter()
        .any(|x| x.program == "softirq" && x.btf != "sysfs"));
    // Node-level: the matching histogram counts, whatever its namespace.
    let soft = row("sysfs", "softirq");
    assert_eq!((soft.outcome, soft.fired), (Outcome::Fired, 12));
    assert!(soft.verdict.is_ok(), "{:?}", soft.verdict);
    assert!(
        soft.note
            .starts_with("run_seconds{vec=NET_RX} 12, raised_total{vec=TIMER} 9, cpus 1"),
        "{}",
        soft.note
    );
    // A trigger that failed says so, and nothing is counted.
    let re = row("sysfs", "tcp_retrans");
    assert_eq!(re.outcome, Outcome::Attached);
    assert!(
        re.note
            .contains("trigger retrans failed (1): sonde-guest-trigger retrans: connect"),
        "{}",
        re.note
    );

    // A source: no variant, nothing loaded, counted from every namespace (node:);
    // a series with no labels but its (empty) pod is a row too.
    let src = row("bare", "source:netdev");
    assert_eq!((src.outcome, src.fired), (Outcome::Fired, 4_300_300));
    assert_eq!((src.kind, src.variant.as_deref()), (Kind::Source, None));
    assert!(src.verdict.is_ok(), "{:?}", src.verdict);
    assert!(
        src.note.starts_with(
            "receive_bytes_total{device=lo} 4300000, \
             receive_bytes_total{pod=netns:4026532246,device=lo} 300, \
             tcpsummary_rx_queue_bytes 33; `sonde btf`: exit 1: no kernel BTF"
        ),
        "{}",
        src.note
    );
    // The daemon: judged on its scrape; with no BTF, on sonde_script_up too (the
    // sample's scrape lacks packet_loss, softirq and tcp_retrans).
    let d = row("bare", "daemon");
    assert_eq!((d.outcome, d.fired), (Outcome::Fired, 4_301_678));
    assert!(
        d.note.contains("script_up: 1 up, 1 down; logged `no kernel BTF: scripts with a kernel program cannot load; the others run`"),
        "{}",
        d.note
    );
    assert_eq!(
        d.verdict,
        Err(
            "with no kernel BTF, sonde_script_up: packet_loss not down, softirq not down, \
             tcp_retrans not down"
                .into()
        )
    );
    let daemon = r.case("bare", "daemon").unwrap();
    let just: Vec<Program> = programs
        .iter()
        .filter(|p| ["tcp_reset", "source:netdev"].contains(&p.name.as_str()))
        .cloned()
        .collect();
    assert_eq!(daemon_without_btf(daemon, &just), Ok(()));
    let mut quiet = daemon.clone();
    quiet.stderr = "sonde: daemon listening\n".into();
    assert!(daemon_without_btf(&quiet, &just).is_err());
    // A scrape's samples: labels unquoted, a histogram as its count.
    let samples = scrape_samples(&daemon.stdout);
    assert_eq!(samples.len(), 6);
    assert_eq!(
        samples[3],
        Sample {
            name: "sonde_x_seconds".into(),
            labels: vec![("node".into(), "guest".into())],
            value: 5.0
        }
    );
    assert_eq!(
        prom_labels(r#"a="x,y",b="q \"r\" \\ s""#),
        [
            ("a".to_string(), "x,y".to_string()),
            ("b".to_string(), r#"q "r" \ s"#.to_string())
        ]
    );
}

#[test]
fn expect_covers_every_kernel_condition_and_program() {
    let programs = programs();
    let ex = expectations(
        &std::fs::read_to_string(guest_dir().join("expect")).unwrap(),
        &programs,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let labels = kernels(&std::fs::read_to_string(guest_dir().join("kernels")).unwrap());
    for k in labels.iter().map(|k| k.label.as_str()).chain(["host"]) {
        for p in &programs {
            // The host never runs the DWARF case (no debug image of its kernel).
            for btf in p.conditions.iter().filter(|c| k != "host" || *c != DWARF) {
                assert!(
                    expected(&ex, k, btf, &p.name).is_some(),
                    "tests/guest/expect has no line for {k} {btf} {}",
                    p.name
                );
            }
        }
    }
    assert!(expectations("x sysfs tcp_reset maybe kprobe", &programs).is_err());
    assert!(expectations("x sysfs nope fired kprobe", &programs).is_err());
}
