//! The `kernel` benchmark: what each built-in program costs in the kernel per hooked
//! event, measured the way ebpf_exporter's benchmark does it: a tight loop of an
//! operation that fires the program's hooks, timed with nothing attached and with
//! the program attached, in ns per operation.
//!
//! ```text
//! cargo run --release -p sonde-bench -- kernel [--programs a,b] [--iters N] [--rounds N]
//! ```
//!
//! For every program of `sonde::bpf::catalog::PROGRAMS` (and each of its variants that
//! can run here): a thread in a private network namespace repeats the program's
//! operation ([`crate::kernel_ops`]); rounds alternate a run with nothing attached
//! and a run with the program loaded through sonde's own loader (`sonde::bpf::load`,
//! the knobs of its built-in script's defaults) and attached, in ABBA order; the
//! medians of the thread's CPU time per op and of the paired differences are
//! reported with their spread. One more run with `kernel.bpf_stats_enabled` on
//! counts the programs' runs per op (the hooks' hits, from the kernel itself) and
//! their time inside the programs, so the difference per op becomes a cost per
//! hooked event. Programs whose counterpart is simple enough (counting) are measured
//! the same way under a bpftrace script doing the same counting.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use sonde::bpf::catalog::{self, Hook, ProgramSpec, Variant};
use sonde::btf::KernelBtf;
use sonde::script::{Limits, ParamValue, Script};

use crate::bpf_stats::{self, Cost, StatsSwitch};
use crate::kernel_ops::{Op, Runner, Sample};
use crate::report::{opt, table};
use crate::resets::{machine, progress, warn_if_busy};
use crate::tool::Tool;

/// A counting program's target: added cost per hooked event.
const TARGET_NS_PER_EVENT: f64 = 50.0;
/// bpftrace gets this long to load, compile and attach.
const BPFTRACE_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const BPFTRACE_EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How each program's hooks are made to fire (the first operation is the cheapest;
/// the bpftrace counterpart runs on every one). A program missing here is reported
/// as "no workload", never skipped silently.
fn plan(program: &str) -> Option<Plan> {
    Some(match program {
        "packet_loss" => Plan::Ops(&[Op::OtherhostFrame]),
        // The SYN fires tcp_send_reset only, at a fifth of a connect's cost; the
        // refused connect fires both hooks.
        "tcp_reset" => Plan::Ops(&[Op::ClosedPortSyn, Op::ConnectRefused]),
        "tcp_retrans" => Plan::Ops(&[Op::SynAckRetransmit]),
        // CLOSE -> SYN_SENT -> CLOSE.
        "tcp_state" => Plan::Ops(&[Op::ConnectRefused]),
        "sock_pressure" => Plan::Ops(&[Op::UdpToFullSocket]),
        // NET_RX raised, entered, left once per frame.
        "softirq" => Plan::Ops(&[Op::OtherhostFrame]),
        "socket_latency" => Plan::Ops(&[Op::TcpPingPong]),
        "netif_txlat" => Plan::Ops(&[Op::UdpEcho]),
        "kernel_latency" => Plan::Ops(&[Op::UdpEcho]),
        "flow" => Plan::Unavailable(
            "TC on host interfaces by name: needs a veth pair from the host into the \
             operation's namespace, not set up by this bench",
        ),
        "virtcmd_latency" => Plan::Unavailable(
            "virtio-net control commands (ethtool/feature changes on a virtio NIC), kprobes only",
        ),
        "bio_latency" => Plan::Unavailable(
            "block requests: the completion runs outside the looping thread (IRQ or loop \
             worker), so its CPU time misses part of the cost",
        ),
        _ => return None,
    })
}

enum Plan {
    Ops(&'static [Op]),
    /// No cheap deterministic operation: why.
    Unavailable(&'static str),
}

/// The bpftrace script doing the same counting as a program, keyed the same way,
/// and its number of probes.
fn bpftrace_script(program: &str, btf: &KernelBtf) -> Option<(String, usize)> {
    // The namespace of a packet as sonde.h's sonde_skb_netns reads it: the device's,
    // else the owning socket's.
    const SKB_NETNS: &str = "
  if ($skb != 0) {
    if ($skb->dev != 0) { $ns = $skb->dev->nd_net.net->ns.inum; }
    if ($ns == 0 && $skb->sk != 0) { $ns = $skb->sk->__sk_common.skc_net.net->ns.inum; }
  }";
    match program {
        "packet_loss" => {
            // Counted per (netns, reason, protocol); consumed skbs are not drops.
            let consumed = btf
                .enum_names("skb_drop_reason", "SKB_")
                .into_iter()
                .find(|(_, n)| n == "CONSUMED")
                .map_or_else(String::new, |(v, _)| format!(" /args->reason != {v}/"));
            let text = format!(
                "tracepoint:skb:kfree_skb{consumed} {{
  $skb = (struct sk_buff *)args->skbaddr;
  $ns = (uint32)0;{SKB_NETNS}
  if ($ns == 0 && args->rx_sk != 0) {{ $ns = ((struct sock *)args->rx_sk)->__sk_common.skc_net.net->ns.inum; }}
  @drops[$ns, args->reason, args->protocol] = count();
}}"
            );
            Some((text, 1))
        }
        "tcp_reset" => {
            // Counted per (netns, kind), kinds numbered as tcp_reset.h's rst_kind.
            let text = format!(
                "tracepoint:tcp:tcp_send_reset {{
  $sk = (struct sock *)args->skaddr;
  $skb = (struct sk_buff *)args->skbaddr;
  $ns = (uint32)0;
  if ($sk != 0) {{ $ns = $sk->__sk_common.skc_net.net->ns.inum; }}
  if ($ns == 0) {{{SKB_NETNS}
  }}
  $kind = 2;
  if ($skb == 0) {{ $kind = 1; }} else if ($sk == 0) {{ $kind = 0; }}
  @resets[$ns, $kind] = count();
}}
tracepoint:tcp:tcp_receive_reset /args->skaddr != 0/ {{
  $sk = (struct sock *)args->skaddr;
  @resets[$sk->__sk_common.skc_net.net->ns.inum, 3] = count();
}}"
            );
            Some((text, 2))
        }
        "tcp_retrans" => {
            // Counted per (netns, family, state); a SYN-ACK in NEW_SYN_RECV (12) under
            // its listener's namespace. (sonde adds tcp_gso_segs, bpftrace counts 1.)
            let text = "tracepoint:tcp:tcp_retransmit_skb /args->skaddr != 0/ {
  $sk = (struct sock *)args->skaddr;
  @retrans[$sk->__sk_common.skc_net.net->ns.inum, $sk->__sk_common.skc_family, $sk->__sk_common.skc_state] = count();
}
tracepoint:tcp:tcp_retransmit_synack /args->skaddr != 0 && args->req != 0/ {
  $sk = (struct sock *)args->skaddr;
  $req = (struct sock *)args->req;
  @retrans[$sk->__sk_common.skc_net.net->ns.inum, $req->__sk_common.skc_family, 12] = count();
}"
            .to_string();
            Some((text, 2))
        }
        _ => None,
    }
}

/// Settings of a `kernel` run.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub programs: Option<Vec<String>>,
    /// Ops per measured run; None: as many as fit in `run_ms`.
    pub iters: Option<u64>,
    pub run_ms: u64,
    pub rounds: usize,
    pub bpftrace: Option<PathBuf>,
    /// The bpftrace rows were turned off (not missing).
    pub no_bpftrace: bool,
    pub json: Option<PathBuf>,
}

impl KernelOptions {
    pub fn parse(args: &[String]) -> anyhow::Result<KernelOptions> {
        let mut o = KernelOptions {
            programs: None,
            iters: None,
            run_ms: 300,
            rounds: 9,
            bpftrace: crate::which("bpftrace"),
            no_bpftrace: false,
            json: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--programs" => {
                    o.programs = Some(value()?.split(',').map(|s| s.trim().to_string()).collect())
                }
                "--iters" => {
                    let n: u64 = value()?.parse().context("--iters: expected a number")?;
                    if n == 0 {
                        bail!("--iters: must be at least 1");
                    }
                    o.iters = Some(n);
                }
                "--run-ms" => {
                    o.run_ms = value()?
                        .parse()
                        .context("--run-ms: expected milliseconds")?;
                    if o.run_ms == 0 {
                        bail!("--run-ms: must be at least 1");
                    }
                }
                "--rounds" => {
                    o.rounds = value()?.parse().context("--rounds: expected a number")?;
                    if o.rounds == 0 {
                        bail!("--rounds: must be at least 1");
                    }
                }
                "--bpftrace" => o.bpftrace = Some(PathBuf::from(value()?)),
                "--no-bpftrace" => {
                    o.bpftrace = None;
                    o.no_bpftrace = true;
                }
                "--json" => o.json = Some(PathBuf::from(value()?)),
                other => bail!("unknown option `{other}`"),
            }
        }
        if let Some(names) = &o.programs {
            for n in names {
                if catalog::find(n).is_none() {
                    bail!(
                        "--programs: no built-in program `{n}`; built-in: {}",
                        catalog::names().join(", ")
                    );
                }
            }
        }
        Ok(o)
    }
}

/// Who hooks the kernel during the "with" runs.
enum Tracer {
    Sonde {
        spec: &'static ProgramSpec,
        params: Vec<(String, ParamValue)>,
        /// Records are sent: read them as the daemon would, so the ring never fills.
        drain: bool,
    },
    Bpftrace {
        path: PathBuf,
        script: String,
        probes: usize,
    },
}

enum Attached {
    Sonde {
        loaded: sonde::bpf::Loaded,
        drainers: Vec<Drainer>,
    },
    Bpftrace {
        tool: Tool,
        ids: HashSet<u32>,
    },
}

impl Tracer {
    /// Attaches; `runner` fires the hooks to check that bpftrace is attached.
    fn attach(&self, runner: &Runner) -> anyhow::Result<Attached> {
        match self {
            Tracer::Sonde {
                spec,
                params,
                drain,
            } => {
                let btf = kernel_btf()?;
                let mut loaded = sonde::bpf::load(spec, params, btf)?;
                let drainers = if *drain {
                    loaded.take_sources().into_iter().map(drainer).collect()
                } else {
                    Vec::new()
                };
                Ok(Attached::Sonde { loaded, drainers })
            }
            Tracer::Bpftrace {
                path,
                script,
                probes,
            } => {
                let before = bpf_stats::prog_ids();
                let mut cmd = Command::new(path);
                cmd.arg("-e").arg(script);
                let tool = Tool::spawn("bpftrace", cmd, None)?;
                let deadline = Instant::now() + BPFTRACE_ATTACH_TIMEOUT;
                loop {
                    let ids = bpf_stats::new_tracepoint_ids(&before);
                    // Loaded is not attached: fire the hooks (run statistics on for
                    // the moment) until one of its programs has run, then leave it
                    // time to attach the others.
                    if ids.len() >= *probes {
                        let on = if sonde::bpf::stats_enabled() {
                            None // the statistics run: already on, left as it is
                        } else {
                            StatsSwitch::enable()
                        };
                        let ran = runner.run(100).is_ok() && bpf_stats::cost_of(&ids).runs > 0;
                        drop(on);
                        if ran {
                            std::thread::sleep(Duration::from_millis(300));
                            return Ok(Attached::Bpftrace { tool, ids });
                        }
                    }
                    if Instant::now() >= deadline {
                        let why = tool
                            .interrupt_and_wait(BPFTRACE_EXIT_TIMEOUT)
                            .map(|e| e.stderr)
                            .unwrap_or_else(|e| format!("{e:#}"));
                        bail!("bpftrace did not load its programs: {}", why.trim());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Attached {
    /// Runs and nanoseconds of the attached programs so far.
    fn cost(&self) -> Cost {
        match self {
            Attached::Sonde { loaded, .. } => {
                let mut c = Cost::default();
                for (_, runs, ns) in sonde::bpf::run_stats(&loaded.programs) {
                    c.runs += runs;
                    c.nanos += ns;
                }
                c
            }
            Attached::Bpftrace { ids, .. } => bpf_stats::cost_of(ids),
        }
    }

    fn detach(self) -> anyhow::Result<()> {
        match self {
            Attached::Sonde { loaded, drainers } => {
                for d in drainers {
                    d.stop();
                }
                drop(loaded);
                Ok(())
            }
            Attached::Bpftrace { tool, .. } => {
                let end = tool.interrupt_and_wait(BPFTRACE_EXIT_TIMEOUT)?;
                if end.status != 0 {
                    bail!("bpftrace exited with {}: {}", end.status, end.stderr.trim());
                }
                Ok(())
            }
        }
    }
}

/// Reads a ring buffer as the daemon does: sleeps in poll(2) until the kernel wakes
/// it (or 100 ms, the daemon's drain timer), then consumes every record.
struct Drainer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Drainer {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn drainer(source: sonde::bpf::EventSource) -> Drainer {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut ring = source.ring;
    let handle = std::thread::spawn(move || {
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        while !flag.load(Ordering::Relaxed) {
            // SAFETY: poll on one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            while let Some(item) = ring.next() {
                drop(item);
            }
        }
    });
    Drainer { stop, handle }
}

/// The kernel's BTF, read once.
fn kernel_btf() -> anyhow::Result<&'static KernelBtf> {
    static BTF: std::sync::OnceLock<Result<KernelBtf, String>> = std::sync::OnceLock::new();
    BTF.get_or_init(|| KernelBtf::locate(None).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow!("kernel BTF: {e}"))
}

/// The knob defaults of a program's built-in script (as the daemon loads it).
fn script_params(program: &str) -> Vec<(String, ParamValue)> {
    sonde::daemon::builtin::find(program)
        .and_then(|src| Script::compile(program, src, &Limits::default()).ok())
        .map(|s| s.manifest().params.clone())
        .unwrap_or_default()
}

#[allow(unreachable_patterns)]
fn hooks(v: &Variant) -> String {
    v.attach
        .iter()
        .map(|a| match a.hook {
            Hook::Tracepoint { category, name } => format!("tp {category}:{name}"),
            Hook::RawTracepoint { name } => format!("raw_tp {name}"),
            Hook::Kprobe { function } => format!("kprobe {function}"),
            Hook::Kretprobe { function } => format!("kretprobe {function}"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// One measured configuration.
struct Row {
    program: String,
    tool: String,
    config: String,
    hooks: String,
    op: Option<Op>,
    counting: bool,
    result: Result<Measured, String>,
}

#[derive(Default)]
struct Measured {
    base: Vec<Sample>,
    with: Vec<Sample>,
    /// The run with run statistics on: the ops and the programs' cost over it.
    stats: Option<(Sample, Cost)>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn min(v: impl Iterator<Item = f64>) -> Option<f64> {
    v.reduce(f64::min)
}

impl Measured {
    /// The fastest run with nothing attached: on a shared machine interference only
    /// ever adds time, so the minimum is the least disturbed figure.
    fn base_ns(&self) -> Option<f64> {
        min(self.base.iter().map(Sample::cpu_per_op))
    }

    fn with_ns(&self) -> Option<f64> {
        min(self.with.iter().map(Sample::cpu_per_op))
    }

    /// Added cost per op: fastest attached run - fastest detached run.
    fn delta_ns(&self) -> Option<f64> {
        Some(self.with_ns()? - self.base_ns()?)
    }

    fn deltas(&self, f: fn(&Sample) -> f64) -> Vec<f64> {
        self.base
            .iter()
            .zip(&self.with)
            .map(|(b, w)| f(w) - f(b))
            .collect()
    }

    /// Median of the paired (attached - detached) differences per op, same round.
    fn pair_median(&self) -> Option<f64> {
        median(self.deltas(Sample::cpu_per_op))
    }

    fn delta_range(&self) -> Option<(f64, f64)> {
        let d = self.deltas(Sample::cpu_per_op);
        let lo = d.iter().copied().reduce(f64::min)?;
        let hi = d.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }

    fn wall_delta_ns(&self) -> Option<f64> {
        median(self.deltas(Sample::wall_per_op))
    }

    fn events_per_op(&self) -> Option<f64> {
        let (s, c) = self.stats.as_ref()?;
        Some(c.runs as f64 / s.ops.max(1) as f64)
    }

    fn delta_per_event(&self) -> Option<f64> {
        let e = self.events_per_op().filter(|e| *e > 0.0)?;
        Some(self.delta_ns()? / e)
    }

    fn prog_ns_per_run(&self) -> Option<f64> {
        self.stats.as_ref()?.1.nanos_per_run()
    }
}

fn measure(runner: &Runner, n: u64, rounds: usize, tracer: &Tracer) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    for r in 0..rounds {
        let with_first = r % 2 == 1;
        if !with_first {
            m.base.push(runner.run(n)?);
        }
        let a = tracer.attach(runner)?;
        let s = runner.run(n);
        a.detach()?;
        m.with.push(s?);
        if with_first {
            m.base.push(runner.run(n)?);
        }
    }
    if let Some(on) = StatsSwitch::enable() {
        let a = tracer.attach(runner)?;
        let before = a.cost();
        let s = runner.run(n);
        let after = a.cost();
        a.detach()?;
        drop(on);
        let cost = Cost {
            runs: after.runs.saturating_sub(before.runs),
            nanos: after.nanos.saturating_sub(before.nanos),
        };
        m.stats = Some((s?, cost));
    }
    Ok(m)
}

pub fn run(o: &KernelOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    warn_if_busy();
    let machine = machine();
    let btf = kernel_btf()?;
    if o.bpftrace.is_none() && !o.no_bpftrace {
        eprintln!(
            "sonde-bench: bpftrace NOT FOUND (apt-get install bpftrace): the bpftrace rows are skipped"
        );
    }
    let mut rows: Vec<Row> = Vec::new();
    let specs: Vec<&'static ProgramSpec> = catalog::PROGRAMS
        .iter()
        .filter(|p| {
            o.programs
                .as_ref()
                .is_none_or(|l| l.iter().any(|n| n == p.name))
        })
        .collect();
    for spec in specs {
        let ops = match plan(spec.name) {
            None => {
                rows.push(Row::note(spec.name, "no workload"));
                continue;
            }
            Some(Plan::Unavailable(why)) => {
                rows.push(Row::note(spec.name, why));
                continue;
            }
            Some(Plan::Ops(ops)) => ops,
        };
        for &op in ops {
            measure_op(spec, op, btf, o, &mut rows)?;
        }
    }
    let text = render(&rows, &machine, o, started.elapsed());
    print!("{text}");
    if let Some(path) = &o.json {
        let v = json!({
            "machine": machine,
            "rounds": o.rounds,
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn measure_op(
    spec: &'static ProgramSpec,
    op: Op,
    btf: &KernelBtf,
    o: &KernelOptions,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let runner = match Runner::start(op) {
        Ok(r) => r,
        Err(e) => {
            rows.push(Row::note(spec.name, &format!("workload failed: {e:#}")));
            return Ok(());
        }
    };
    progress(&format!(
        "{}: {} (netns:{})",
        spec.name,
        op.describe(),
        runner.netns()
    ));
    // Warm up, then size the runs.
    let probe = runner.run(2_000)?;
    let n = o.iters.unwrap_or_else(|| {
        let per_op = probe.wall_per_op().max(1.0);
        ((o.run_ms as f64 * 1e6 / per_op) as u64).clamp(1_000, 50_000_000)
    });
    runner.run(n / 4)?;

    let params = script_params(spec.name);
    let emits = params
        .iter()
        .any(|(k, v)| k == "emit_events" && *v == ParamValue::Bool(true));
    for (variant, ok) in sonde::bpf::assess(spec, Some(btf)) {
        let hooks = hooks(variant);
        if let Err(why) = ok {
            rows.push(Row {
                program: spec.name.into(),
                tool: format!("sonde {}", variant.name),
                config: "-".into(),
                hooks,
                op: Some(op),
                counting: false,
                result: Err(format!("not here: {why}")),
            });
            continue;
        }
        // One variant only, so the loader takes this one.
        let single: &'static ProgramSpec = Box::leak(Box::new(ProgramSpec {
            name: spec.name,
            summary: spec.summary,
            object: spec.object,
            variants: std::slice::from_ref(variant),
        }));
        let mut configs = vec![(
            if emits {
                "defaults (events on, read)".to_string()
            } else {
                "defaults".to_string()
            },
            params.clone(),
            !emits,
        )];
        if emits {
            let mut counting = params.clone();
            for (k, v) in &mut counting {
                if k == "emit_events" {
                    *v = ParamValue::Bool(false);
                }
            }
            configs.push(("emit_events=false".into(), counting, true));
        }
        for (config, params, counting) in configs {
            progress(&format!(
                "  sonde {} {config}: {n} ops x {} rounds",
                variant.name, o.rounds
            ));
            let tracer = Tracer::Sonde {
                spec: single,
                params,
                drain: !counting,
            };
            rows.push(Row {
                program: spec.name.into(),
                tool: format!("sonde {}", variant.name),
                config,
                hooks: hooks.clone(),
                op: Some(op),
                counting,
                result: measure(&runner, n, o.rounds, &tracer).map_err(|e| format!("{e:#}")),
            });
        }
    }
    if let Some((script, probes)) = bpftrace_script(spec.name, btf) {
        let tool = "bpftrace".to_string();
        match &o.bpftrace {
            None => rows.push(Row {
                program: spec.name.into(),
                tool,
                config: "count()".into(),
                hooks: "-".into(),
                op: Some(op),
                counting: true,
                result: Err("bpftrace not installed".into()),
            }),
            Some(path) => {
                progress(&format!("  bpftrace: {n} ops x {} rounds", o.rounds));
                let hooks = script
                    .lines()
                    .filter(|l| l.starts_with("tracepoint:"))
                    .map(|l| {
                        let probe = l.split_whitespace().next().unwrap_or("");
                        format!("tp {}", probe.trim_start_matches("tracepoint:"))
                    })
                    .collect::<Vec<_>>()
                    .join(" + ");
                let tracer = Tracer::Bpftrace {
                    path: path.clone(),
                    script,
                    probes,
                };
                rows.push(Row {
                    program: spec.name.into(),
                    tool,
                    config: "count()".into(),
                    hooks,
                    op: Some(op),
                    counting: true,
                    result: measure(&runner, n, o.rounds, &tracer).map_err(|e| format!("{e:#}")),
                });
            }
        }
    }
    drop(runner);
    Ok(())
}

impl Row {
    fn note(program: &str, why: &str) -> Row {
        Row {
            program: program.into(),
            tool: "-".into(),
            config: "-".into(),
            hooks: "-".into(),
            op: None,
            counting: false,
            result: Err(why.into()),
        }
    }

    /// The bpftrace row of the same program, if measured.
    fn peer<'a>(&self, rows: &'a [Row]) -> Option<&'a Measured> {
        rows.iter()
            .filter(|r| r.program == self.program && r.tool == "bpftrace")
            .find_map(|r| r.result.as_ref().ok())
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "program": self.program,
            "tool": self.tool,
            "config": self.config,
            "hooks": self.hooks,
            "operation": self.op.map(Op::describe),
            "counting": self.counting,
        });
        match &self.result {
            Err(e) => v["error"] = json!(e),
            Ok(m) => {
                let samples = |s: &[Sample]| {
                    s.iter()
                        .map(|s| json!({"ops": s.ops, "cpu_ns": s.cpu_ns, "wall_ns": s.wall_ns}))
                        .collect::<Vec<_>>()
                };
                v["base"] = json!(samples(&m.base));
                v["with"] = json!(samples(&m.with));
                v["base_ns_per_op"] = json!(m.base_ns());
                v["with_ns_per_op"] = json!(m.with_ns());
                v["delta_ns_per_op"] = json!(m.delta_ns());
                v["pair_median_delta_ns_per_op"] = json!(m.pair_median());
                v["wall_delta_ns_per_op"] = json!(m.wall_delta_ns());
                v["events_per_op"] = json!(m.events_per_op());
                v["delta_ns_per_event"] = json!(m.delta_per_event());
                v["prog_ns_per_run"] = json!(m.prog_ns_per_run());
                if let Some((s, c)) = &m.stats {
                    v["stats_run"] = json!({"ops": s.ops, "runs": c.runs, "run_time_ns": c.nanos});
                }
            }
        }
        v
    }
}

fn render(rows: &[Row], machine: &str, o: &KernelOptions, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nkernel-side cost per hooked event ({machine})");
    let _ = writeln!(
        s,
        "{} rounds of (nothing attached, attached) per row, ABBA order; the operation thread's CPU time per op, fastest run of each; Δ = with - base",
        o.rounds
    );
    let mut t = vec![vec![
        "program".to_string(),
        "tool / variant".into(),
        "config".into(),
        "operation".into(),
        "ev/op".into(),
        "base ns/op".into(),
        "with ns/op".into(),
        "Δ ns/op".into(),
        "pairs: median [min..max]".into(),
        "Δ ns/ev".into(),
        "prog ns/run".into(),
        "Δ/ev ÷ bpftrace".into(),
        "prog ÷ bpftrace".into(),
    ]];
    let mut notes = Vec::new();
    for r in rows {
        let mut line = vec![
            r.program.clone(),
            r.tool.clone(),
            r.config.clone(),
            r.op.map_or("-", Op::short).to_string(),
        ];
        match &r.result {
            Err(e) => {
                line.push(format!("({})", first_words(e)));
                let note = format!("{} {}: {e}", r.program, r.tool);
                if e.len() > 40 && !notes.contains(&note) {
                    notes.push(note);
                }
            }
            Ok(m) => {
                let peer = if r.tool == "bpftrace" {
                    None
                } else {
                    r.peer(rows)
                };
                let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                line.extend([
                    opt(m.events_per_op(), |v| format!("{v:.2}")),
                    opt(m.base_ns(), |v| format!("{v:.0}")),
                    opt(m.with_ns(), |v| format!("{v:.0}")),
                    opt(m.delta_ns(), |v| format!("{v:.0}")),
                    match (m.pair_median(), m.delta_range()) {
                        (Some(p), Some((a, b))) => format!("{p:.0} [{a:.0}..{b:.0}]"),
                        _ => "-".into(),
                    },
                    opt(m.delta_per_event(), |v| format!("{v:.0}")),
                    opt(m.prog_ns_per_run(), |v| format!("{v:.0}")),
                    ratio(
                        m.delta_per_event(),
                        peer.and_then(Measured::delta_per_event),
                    ),
                    ratio(
                        m.prog_ns_per_run(),
                        peer.and_then(Measured::prog_ns_per_run),
                    ),
                ]);
            }
        }
        t.push(line);
    }
    table(&mut s, &t);
    let mut seen = HashSet::new();
    for r in rows.iter().filter(|r| r.hooks != "-") {
        if seen.insert((r.program.clone(), r.tool.clone())) {
            let _ = writeln!(s, "  hooks of {} {}: {}", r.program, r.tool, r.hooks);
        }
    }
    let mut seen = HashSet::new();
    for op in rows.iter().filter_map(|r| r.op) {
        if seen.insert(op) {
            let _ = writeln!(s, "  operation {}: {}", op.short(), op.describe());
        }
    }
    for n in notes {
        let _ = writeln!(s, "  note: {n}");
    }
    let _ = writeln!(s, "\ntargets (counting programs: <= {TARGET_NS_PER_EVENT:.0} ns per event, no more than bpftrace):");
    for r in rows.iter().filter(|r| r.counting && r.tool != "bpftrace") {
        let Ok(m) = &r.result else { continue };
        let Some(d) = m.delta_per_event() else {
            continue;
        };
        let verdict = if d <= TARGET_NS_PER_EVENT {
            "met"
        } else {
            "MISSED"
        };
        let mut line = format!(
            "  {} {} {}: {d:.0} ns per event (in-program {} ns): {verdict}",
            r.program,
            r.tool,
            r.config,
            opt(m.prog_ns_per_run(), |v| format!("{v:.0}"))
        );
        if let Some(p) = r.peer(rows) {
            if let (Some(pd), Some(pp)) = (p.delta_per_event(), p.prog_ns_per_run()) {
                let cheaper = if d <= pd { "no more than" } else { "MORE than" };
                let _ = write!(
                    line,
                    "; bpftrace {pd:.0} ns per event (in-program {pp:.0} ns): {cheaper} bpftrace"
                );
            }
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "\n(whole benchmark: {:.0} s)", elapsed.as_secs_f64());
    s
}

fn first_words(e: &str) -> String {
    if e.len() <= 40 {
        e.to_string()
    } else {
        let mut cut = 37;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &e[..cut])
    }
}
