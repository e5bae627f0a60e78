//! The `resets` benchmark: one reset workload, several tools, one table.
//!
//! For each rate, in this order (tools alternate so drift hits all alike):
//! sonde printing events (`scripts/tcp_reset.rhai`), bpftrace printing the same
//! fields, sonde counting with no output (`bench/scripts/count.rhai -q`). Before
//! them the workload alone at full speed (how fast it goes untraced); after them a
//! recording made with the counting script, replayed through both scripts with no
//! kernel (userspace cost alone).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::bpf_stats::{self, StatsSwitch};
use crate::report::{LiveRow, ReplayRow, Report, ToolKind};
use crate::tool::{metric_sum, Filter, Ready, SondeSummary, Tool};
use crate::workload::{Canary, Workload};
use crate::{for_arg, Options};

/// The printing script, as users run it.
const TCP_RESET_SCRIPT: &str = "scripts/tcp_reset.rhai";
/// The counting script: a metric per kind, no output.
const COUNT_SCRIPT: &str = "bench/scripts/count.rhai";
/// The counting script as a batch handler (`on_events`): replayed only.
const COUNT_BATCH_SCRIPT: &str = "bench/scripts/count_batch.rhai";
/// After the workload, time for the tools to drain what is still buffered.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest wait for a tool to attach (bpftrace compiles its program first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a tool to exit once interrupted.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Workload seconds of the untraced run and of the recording (enough for a rate).
const SHORT_RUN_SECONDS: u64 = 5;

/// bpftrace printing what `scripts/tcp_reset.rhai` prints, from the same two
/// tracepoints. On 6.10+ `tcp_send_reset`'s saddr/daddr are sockaddr storage:
/// family (u16), port (big endian), then the IPv4 address (the workload is IPv4).
/// The namespace is printed where sonde prints `pod=` for a namespace with no pod.
const BPFTRACE_PROGRAM: &str = r#"
BEGIN {
  @state[0] = "CLOSE"; @state[1] = "ESTABLISHED"; @state[2] = "SYN_SENT";
  @state[3] = "SYN_RECV"; @state[4] = "FIN_WAIT1"; @state[5] = "FIN_WAIT2";
  @state[6] = "TIME_WAIT"; @state[7] = "CLOSE"; @state[8] = "CLOSE_WAIT";
  @state[9] = "LAST_ACK"; @state[10] = "LISTEN"; @state[11] = "CLOSING";
  @state[12] = "NEW_SYN_RECV";
}
tracepoint:tcp:tcp_send_reset {
  if (args->skaddr == 0) {
    printf("type=TCPRESET_NOSOCK pod=netns:%u protocol=TCP saddr=%d.%d.%d.%d sport=%d daddr=%d.%d.%d.%d dport=%d state=%s\n",
      ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum,
      args->saddr[4], args->saddr[5], args->saddr[6], args->saddr[7], (args->saddr[2] << 8) | args->saddr[3],
      args->daddr[4], args->daddr[5], args->daddr[6], args->daddr[7], (args->daddr[2] << 8) | args->daddr[3],
      @state[args->state]);
  } else {
    printf("type=TCPRESET_%s pod=netns:%u protocol=TCP saddr=%d.%d.%d.%d sport=%d daddr=%d.%d.%d.%d dport=%d state=%s\n",
      args->skbaddr == 0 ? "ACTIVE" : "PROCESS",
      ((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum,
      args->saddr[4], args->saddr[5], args->saddr[6], args->saddr[7], (args->saddr[2] << 8) | args->saddr[3],
      args->daddr[4], args->daddr[5], args->daddr[6], args->daddr[7], (args->daddr[2] << 8) | args->daddr[3],
      @state[args->state]);
  }
}
tracepoint:tcp:tcp_receive_reset {
  $sk = (struct sock *)args->skaddr;
  printf("type=TCPRESET_RECEIVE pod=netns:%u protocol=TCP saddr=%d.%d.%d.%d sport=%d daddr=%d.%d.%d.%d dport=%d state=%s\n",
    $sk->__sk_common.skc_net.net->ns.inum,
    args->saddr[0], args->saddr[1], args->saddr[2], args->saddr[3], args->sport,
    args->daddr[0], args->daddr[1], args->daddr[2], args->daddr[3], args->dport,
    @state[$sk->__sk_common.skc_state]);
}
END { clear(@state); }
"#;

pub fn run(o: &Options) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF programs and network namespaces)");
    }
    // Before any build: the load is the machine's, not ours.
    let machine = machine();
    warn_if_busy();
    ensure_sonde(&o.root, &o.sonde)?;
    let stats = StatsSwitch::enable();
    if stats.is_none() {
        eprintln!(
            "sonde-bench: cannot enable kernel.bpf_stats_enabled; kernel cost column left empty"
        );
    }
    let bpftrace = o.bpftrace.clone().filter(|p| p.is_file());
    if bpftrace.is_none() {
        eprintln!(
            "sonde-bench: bpftrace not found; its rows are skipped (apt-get install bpftrace)"
        );
    }

    let started = Instant::now();
    let mut report = Report::new(o.seconds, o.threads);
    report.machine = machine;
    let mut failures = Vec::new();

    progress("workload alone, max rate");
    let alone =
        Workload::prepare(o.threads, None, Duration::from_secs(SHORT_RUN_SECONDS))?.run()?;
    report.live.push(LiveRow::baseline(&alone));

    for &rate in &o.rates {
        let kinds = [
            ToolKind::SondeText,
            ToolKind::Bpftrace,
            ToolKind::SondeCount,
        ];
        for kind in kinds {
            if kind == ToolKind::Bpftrace && bpftrace.is_none() {
                continue;
            }
            progress(&format!("{} at {}", kind.label(), rate_label(rate)));
            let live = Live {
                o,
                kind,
                rate,
                seconds: o.seconds,
                record: None,
                stats: stats.is_some(),
            };
            match live.measure(bpftrace.as_deref()) {
                Ok(row) => report.live.push(row),
                Err(e) => {
                    eprintln!(
                        "sonde-bench: {} at {}: {e:#}",
                        kind.label(),
                        rate_label(rate)
                    );
                    failures.push(format!("{} at {}", kind.label(), rate_label(rate)));
                }
            }
        }
    }

    let recording = std::env::temp_dir().join(format!("sonde-bench-{}.rec", std::process::id()));
    progress("recording for the replays");
    let recorded = Live {
        o,
        kind: ToolKind::SondeCount,
        rate: None,
        seconds: SHORT_RUN_SECONDS.min(o.seconds),
        record: Some(recording.clone()),
        stats: false,
    }
    .measure(None);
    match recorded {
        Ok(_) => {
            for (script, quiet) in [
                (COUNT_SCRIPT, true),
                (COUNT_BATCH_SCRIPT, true),
                (TCP_RESET_SCRIPT, false),
            ] {
                progress(&format!("replay through {script}"));
                match replay(o, script, quiet, &recording) {
                    Ok(row) => report.replay.push(row),
                    Err(e) => {
                        eprintln!("sonde-bench: replay through {script}: {e:#}");
                        failures.push(format!("replay through {script}"));
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("sonde-bench: recording: {e:#}");
            failures.push("recording".into());
        }
    }
    let _ = std::fs::remove_file(&recording);
    drop(stats);

    report.elapsed = started.elapsed();
    print!("{}", report.render());
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !failures.is_empty() {
        bail!("not measured: {}", failures.join(", "));
    }
    Ok(())
}

/// Two sonde binaries on the same recording and workload: this one (`o.sonde`) and
/// `o.baseline`, alternating `o.rounds` rounds per row, the fastest of each kept.
pub fn compare(o: &Options) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF programs and network namespaces)");
    }
    let baseline = o.baseline.clone().context("no --baseline")?;
    warn_if_busy();
    ensure_sonde(&o.root, &o.sonde)?;
    let base = Options {
        sonde: baseline.clone(),
        ..o.clone()
    };
    let recording = std::env::temp_dir().join(format!("sonde-bench-{}.rec", std::process::id()));
    progress("recording for the replays (this sonde, max rate)");
    Live {
        o,
        kind: ToolKind::SondeCount,
        rate: None,
        seconds: SHORT_RUN_SECONDS.min(o.seconds),
        record: Some(recording.clone()),
        stats: false,
    }
    .measure(None)?;
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    // Not count_batch.rhai: a baseline before `on_events` would not call it.
    for (script, quiet) in [(COUNT_SCRIPT, true), (TCP_RESET_SCRIPT, false)] {
        let (mut this, mut before) = (f64::MAX, f64::MAX);
        for round in 0..o.rounds {
            progress(&format!("replay through {script}, round {}", round + 1));
            before = before.min(replay(&base, script, quiet, &recording)?.cpu_us_per_record());
            this = this.min(replay(o, script, quiet, &recording)?.cpu_us_per_record());
        }
        let output = if quiet { "-q" } else { "text" };
        rows.push((format!("replay {script} ({output})"), before, this));
    }
    let _ = std::fs::remove_file(&recording);
    let rate = o.rates.first().copied().flatten();
    let (mut this, mut before) = (f64::MAX, f64::MAX);
    for round in 0..o.rounds {
        for (opts, best) in [(&base, &mut before), (o, &mut this)] {
            progress(&format!(
                "sonde count -q at {}, round {}, {}",
                rate_label(rate),
                round + 1,
                opts.sonde.display()
            ));
            let row = Live {
                o: opts,
                kind: ToolKind::SondeCount,
                rate,
                seconds: o.seconds,
                record: None,
                stats: false,
            }
            .measure(None)?;
            if let (Some(cpu), Some(n)) = (row.cpu_run, row.received) {
                *best = best.min(cpu.as_secs_f64() * 1e6 / n.max(1) as f64);
            }
        }
    }
    rows.push((
        format!("live count -q at {}", rate_label(rate)),
        before,
        this,
    ));
    println!(
        "\nthis: {}\nbaseline: {}\n{} rounds each, the fastest kept\n",
        o.sonde.display(),
        baseline.display(),
        o.rounds
    );
    println!("| row | baseline µs/ev | this µs/ev | this/baseline |");
    println!("|---|---:|---:|---:|");
    for (row, before, this) in &rows {
        println!("| {row} | {before:.3} | {this:.3} | {:.3} |", this / before);
    }
    Ok(())
}

/// One traced run: a tool, a rate, the workload, the measurements.
struct Live<'a> {
    o: &'a Options,
    kind: ToolKind,
    rate: Option<u64>,
    seconds: u64,
    record: Option<PathBuf>,
    stats: bool,
}

impl Live<'_> {
    fn measure(&self, bpftrace: Option<&Path>) -> anyhow::Result<LiveRow> {
        let duration = Duration::from_secs(self.seconds);
        let workload = Workload::prepare(self.o.threads, self.rate, duration)?;
        let ours: HashSet<u64> = workload.netns().iter().copied().collect();
        // Printing tools are ready when a canary event comes out; the counting script
        // prints nothing, and would count the canary, so it is trusted on its word.
        let canary = match self.kind {
            ToolKind::SondeText | ToolKind::Bpftrace => {
                Some(Canary::start(Duration::from_millis(5))?)
            }
            _ => None,
        };
        let filter = Filter {
            ours: ours.clone(),
            canary: canary.as_ref().map(Canary::netns),
        };
        let before = bpf_stats::prog_ids();
        // Guard only: the tool is interrupted once the workload has drained.
        let guard = duration + READY_TIMEOUT + DRAIN + Duration::from_secs(30);
        let (cmd, ready) = match self.kind {
            ToolKind::SondeText => (
                sonde(self.o, TCP_RESET_SCRIPT, &["--for", &for_arg(guard)]),
                Ready::Canary,
            ),
            ToolKind::SondeCount => {
                let mut args = vec!["-q".to_string(), "--for".into(), for_arg(guard)];
                if let Some(r) = &self.record {
                    args.extend(["--record".into(), r.display().to_string()]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                (
                    sonde(self.o, COUNT_SCRIPT, &args),
                    Ready::Stderr(" attached "),
                )
            }
            ToolKind::Bpftrace => {
                let path = bpftrace.context("no bpftrace")?;
                // runs: bpftrace
                let mut c = Command::new(path);
                c.arg("-e").arg(BPFTRACE_PROGRAM);
                (c, Ready::Canary)
            }
            ToolKind::Baseline => bail!("the untraced workload has no tool"),
        };
        let tool = Tool::spawn(self.kind.label(), cmd, Some(filter))?;
        tool.wait_ready(ready, READY_TIMEOUT)?;
        if matches!(ready, Ready::Stderr(_)) {
            // Attached; give the script a moment to start before records pile up.
            std::thread::sleep(Duration::from_millis(300));
        }
        drop(canary);
        let startup_cpu = tool.cpu()?;
        let outcome = workload.run()?;
        std::thread::sleep(DRAIN);
        let kernel = self.stats.then(|| bpf_stats::tracepoint_cost(&before));
        let ended = tool.interrupt_and_wait(EXIT_TIMEOUT)?;
        if ended.status != 0 {
            bail!(
                "{} exited with status {}; its stderr:\n{}",
                self.kind.label(),
                ended.status,
                ended.stderr.trim_end()
            );
        }

        let mut row = LiveRow::new(self.kind, self.rate, &outcome);
        row.cpu_startup = Some(startup_cpu);
        row.cpu_run = Some(ended.cpu.saturating_sub(startup_cpu));
        row.kernel = kernel;
        row.foreign = ended.lines.foreign;
        let in_ours = |labels: &str| {
            ours.iter()
                .any(|ns| labels.contains(&format!("pod=netns:{ns},")))
        };
        match self.kind {
            ToolKind::SondeText | ToolKind::SondeCount => {
                let summary = SondeSummary::parse(&ended.stderr).with_context(|| {
                    format!(
                        "no summary line in sonde's stderr:\n{}",
                        ended.stderr.trim_end()
                    )
                })?;
                // Lost in the kernel (ring full) and dropped by sonde (the script
                // behind): both counted, both missing from the output.
                row.lost_counted = Some(summary.lost + summary.behind);
                if summary.undecodable > 0 {
                    row.note = Some(format!("{} records undecodable", summary.undecodable));
                }
                if self.kind == ToolKind::SondeText {
                    row.received = Some(ended.lines.events);
                    row.kernel_counted = metric_sum(
                        &ended.lines.other,
                        "sonde_tcp_reset_segments_total",
                        in_ours,
                    );
                } else {
                    row.received =
                        metric_sum(&ended.lines.other, "sonde_bench_resets_total", |_| true);
                }
            }
            ToolKind::Bpftrace => {
                row.received = Some(ended.lines.events);
                row.lost_counted = Some(ended.lines.lost_reported);
            }
            ToolKind::Baseline => {}
        }
        if outcome.errors > 0 {
            row.note = Some(format!(
                "{} connects failed otherwise: {}",
                outcome.errors,
                outcome.first_error.as_deref().unwrap_or("?")
            ));
        }
        Ok(row)
    }
}

fn replay(o: &Options, script: &str, quiet: bool, recording: &Path) -> anyhow::Result<ReplayRow> {
    let rec = recording.display().to_string();
    let mut args = vec!["--replay", rec.as_str()];
    if quiet {
        args.push("-q");
    }
    let cmd = sonde(o, script, &args);
    let started = Instant::now();
    let tool = Tool::spawn(script, cmd, None)?;
    let ended = tool.wait(Duration::from_secs(600))?;
    let wall = started.elapsed();
    if ended.status != 0 {
        bail!(
            "sonde exited with status {}; its stderr:\n{}",
            ended.status,
            ended.stderr.trim_end()
        );
    }
    let summary = SondeSummary::parse(&ended.stderr).with_context(|| {
        format!(
            "no summary line in sonde's stderr:\n{}",
            ended.stderr.trim_end()
        )
    })?;
    Ok(ReplayRow {
        script: script.to_string(),
        output: if quiet {
            "none (-q)"
        } else {
            "text to /dev/null"
        },
        records: summary.records,
        sonde_seconds: summary.seconds,
        wall,
        cpu: ended.cpu,
    })
}

fn sonde(o: &Options, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(&o.sonde);
    c.current_dir(&o.root).arg("run").arg(script).args(args);
    // Warnings such as the RLIMIT_MEMLOCK one go to stderr, which is kept anyway.
    c
}

/// Builds sonde when running under cargo with the default binary path, so the
/// benchmark never measures a stale binary.
pub fn ensure_sonde(root: &Path, sonde: &Path) -> anyhow::Result<()> {
    let default = root.join("target/release/sonde");
    if sonde == default {
        if let Some(cargo) = std::env::var_os("CARGO") {
            progress("building sonde (cargo build --release -p sonde)");
            let status = Command::new(cargo)
                .current_dir(root)
                .args(["build", "--release", "--quiet", "-p", "sonde"])
                .status()
                .context("cannot run cargo")?;
            if !status.success() {
                bail!("cargo build --release -p sonde failed");
            }
        }
    }
    if !sonde.is_file() {
        bail!(
            "{}: no sonde binary; build it with `cargo build --release -p sonde` or pass --sonde",
            sonde.display()
        );
    }
    Ok(())
}

/// Kernel, CPUs and load, for the table's header.
pub fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = load_average().map_or_else(|| "?".into(), |l| format!("{l:.2}"));
    format!(
        "sonde {}, kernel {}, {cpus} CPUs, load average {load} at start",
        sonde_commit(),
        kernel.trim()
    )
}

/// The commit sonde was built from, `+` when the tree had local changes.
fn sonde_commit() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "(unknown commit)".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "runtime",
        "kernel-progs",
        "scripts",
    ])
    .is_some_and(|s| !s.is_empty());
    format!("{commit}{}", if dirty { "+" } else { "" })
}

/// Warns when the machine is busy before the benchmark starts: another build or
/// test on a 2-core machine skews every figure.
pub fn warn_if_busy() {
    if let Some(load) = load_average().filter(|l| *l > 0.5) {
        eprintln!(
            "sonde-bench: load average {load:.2} before starting: something else is running, figures will be noisy"
        );
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn rate_label(rate: Option<u64>) -> String {
    rate.map_or_else(|| "max".to_string(), |r| r.to_string())
}

pub fn progress(what: &str) {
    eprintln!("sonde-bench: {what}");
}
