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
//! fastest run of each side gives the added time per op, the paired differences its
//! spread. Three more runs with `kernel.bpf_stats_enabled` on count the programs'
//! runs per op (the hooks' hits, from the kernel itself) and their time inside the
//! programs (the run with the least time per program run is kept), so the
//! difference per op becomes a cost per hooked event.
//!
//! Beside each variant, an empty program ([`crate::empty_prog`]) on the same hooks
//! gives the floor: what the hooks cost before any program logic, so a program's
//! cost over the hook is its own. Classic tracepoints get a second floor on the raw
//! tracepoints of the same names. Counting programs are measured the same way
//! under a bpftrace script doing the same counting, and the ratios printed.

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
use crate::empty_prog::{Attach as EmptyAttach, EmptyProg};
use crate::kernel_ops::{Op, Runner, Sample};
use crate::report::{opt, table};
use crate::resets::{machine, progress, warn_if_busy};
use crate::tool::Tool;

/// A counting program's target: added cost per hooked event.
const TARGET_NS_PER_EVENT: f64 = 50.0;
/// A row whose fastest runs disagree by more than this share of an op (or
/// `RESOLVED_NS`) was measured through a burst of other work: it gets `rounds` more
/// rounds, at most `MORE_SETS` times, pooled with the first (the fastest runs of all).
const RESOLVED_SHARE: f64 = 0.02;
const RESOLVED_NS: f64 = 10.0;
const MORE_SETS: usize = 2;
/// Runs with the kernel's run statistics on, one attach; the one with the least
/// time per program run is kept (ev/op and prog ns/run).
const STATS_RUNS: usize = 3;
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
        // CLOSE -> LISTEN -> CLOSE (transitions counted only); CLOSE -> SYN_SENT ->
        // CLOSE (a failed connect too: its reason read from the socket).
        "tcp_state" => Plan::Ops(&[Op::ListenShutdown, Op::ConnectRefused]),
        "sock_pressure" => Plan::Ops(&[Op::UdpToFullSocket]),
        // NET_RX raised, entered, left once per frame.
        "softirq" => Plan::Ops(&[Op::OtherhostFrame]),
        "socket_latency" => Plan::Ops(&[Op::TcpPingPong]),
        "netif_txlat" => Plan::Ops(&[Op::UdpEcho]),
        // TCP only on tracepoints (no tracepoint sees a UDP datagram read): data in
        // and out, a reader waiting.
        "kernel_latency" => Plan::Ops(&[Op::TcpPingPong]),
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

/// Programs that only count (per key, in a map) where a hooked event happens: the
/// ones the 50 ns target is for. tcp_state also keeps a start time per socket for
/// connection lifetimes. The others time something (a timestamp stored at one hook,
/// read at another, a histogram updated): figures given, no target.
fn counting_program(program: &str) -> bool {
    matches!(
        program,
        "tcp_reset" | "packet_loss" | "tcp_retrans" | "sock_pressure" | "tcp_state"
    )
}

/// The empty programs measured beside a variant: on its own hooks (the floor its
/// cost is read against: what the hooks cost before any program logic) and, when
/// they are classic tracepoints, on the raw tracepoints of the same names (what
/// moving to raw tracepoints would save). None for kprobes or TC.
fn floors(variant: &Variant) -> Vec<Vec<EmptyAttach>> {
    let own: Option<Vec<EmptyAttach>> = variant
        .attach
        .iter()
        .map(|a| match a.hook {
            Hook::Tracepoint { category, name } => Some(EmptyAttach::Classic(category, name)),
            // A tp_btf program is dispatched as a raw tracepoint: the same floor.
            Hook::RawTracepoint { name } | Hook::BtfTracepoint { name } => {
                Some(EmptyAttach::Raw(name))
            }
            _ => None,
        })
        .collect();
    let Some(own) = own else { return Vec::new() };
    let mut all = vec![own.clone()];
    if own.iter().all(|a| matches!(a, EmptyAttach::Classic(..))) {
        all.push(
            own.iter()
                .map(|a| match *a {
                    EmptyAttach::Classic(_, name) => EmptyAttach::Raw(name),
                    raw => raw,
                })
                .collect(),
        );
    }
    all
}

fn describe_hooks(hooks: &[EmptyAttach]) -> String {
    hooks
        .iter()
        .map(|a| a.describe())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The same hooks, in any order.
fn same_hooks(a: &str, b: &str) -> bool {
    // A tp_btf program is dispatched as a raw tracepoint: its floor is the raw one.
    let set = |s: &str| {
        let mut v: Vec<String> = s
            .split(" + ")
            .map(|h| match h.strip_prefix("tp_btf ") {
                Some(name) => format!("raw_tp {name}"),
                None => h.to_string(),
            })
            .collect();
        v.sort();
        v
    };
    set(a) == set(b)
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
            run_ms: 150,
            rounds: 11,
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
    /// A program that does nothing on each of these hooks: what the hooks cost.
    Empty(Vec<EmptyAttach>),
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
    Empty(Vec<EmptyProg>),
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
            Tracer::Empty(hooks) => Ok(Attached::Empty(
                hooks
                    .iter()
                    .map(|at| EmptyProg::attach(*at))
                    .collect::<anyhow::Result<_>>()?,
            )),
            Tracer::Bpftrace {
                path,
                script,
                probes,
            } => {
                // runs: bpftrace
                let mut cmd = Command::new(path);
                cmd.arg("-e").arg(script);
                let tool = Tool::spawn("bpftrace", cmd, None)?;
                let deadline = Instant::now() + BPFTRACE_ATTACH_TIMEOUT;
                loop {
                    let ids = bpf_stats::tracepoint_ids_of(tool.pid());
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
                for (_, st) in sonde::bpf::run_stats(&loaded.programs) {
                    c.runs += st.runs;
                    c.nanos += st.run_ns;
                }
                c
            }
            Attached::Bpftrace { ids, .. } => bpf_stats::cost_of(ids),
            Attached::Empty(progs) => {
                bpf_stats::cost_of(&progs.iter().map(EmptyProg::id).collect())
            }
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
            Attached::Empty(progs) => {
                drop(progs);
                Ok(())
            }
            Attached::Bpftrace { tool, .. } => match tool.interrupt_and_wait(BPFTRACE_EXIT_TIMEOUT)
            {
                Ok(end) if end.status != 0 => {
                    bail!("bpftrace exited with {}: {}", end.status, end.stderr.trim())
                }
                Ok(_) => Ok(()),
                // Killed after the timeout: detached all the same, and the attached
                // run was measured before.
                Err(e) => {
                    progress(&format!("  warning: {e:#}"));
                    Ok(())
                }
            },
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
            Hook::BtfTracepoint { name } => format!("tp_btf {name}"),
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
    kind: Kind,
    tool: String,
    config: String,
    hooks: String,
    op: Option<Op>,
    /// A counting program sending no records: the target applies.
    counting: bool,
    result: Result<Measured, String>,
}

/// Who was attached in a row's "with" runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sonde,
    Bpftrace,
    /// The empty program on some hooks.
    Floor,
    /// Nothing measured: the result says why.
    Note,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sonde => "sonde",
            Kind::Bpftrace => "bpftrace",
            Kind::Floor => "empty program",
            Kind::Note => "-",
        }
    }
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

    /// How well the fastest runs agree: the third fastest minus the fastest, the
    /// larger of the two sides, ns/op. Δ is resolved to about this much.
    fn noise(&self) -> Option<f64> {
        let spread = |v: &[Sample]| {
            let mut t: Vec<f64> = v.iter().map(Sample::cpu_per_op).collect();
            t.sort_by(f64::total_cmp);
            Some(t.get(2.min(t.len().checked_sub(1)?))? - t.first()?)
        };
        Some(spread(&self.base)?.max(spread(&self.with)?))
    }

    fn noise_per_event(&self) -> Option<f64> {
        Some(self.noise()? / self.events_per_op().filter(|e| *e > 0.0)?)
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
    for set in 0.. {
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
        let limit = m
            .base_ns()
            .map_or(f64::INFINITY, |b| (b * RESOLVED_SHARE).max(RESOLVED_NS));
        if set == MORE_SETS || m.noise().is_none_or(|e| e <= limit) {
            break;
        }
        progress(&format!(
            "    fastest runs {:.0} ns/op apart: {rounds} more rounds",
            m.noise().unwrap_or(0.0)
        ));
    }
    if let Some(on) = StatsSwitch::enable() {
        let a = tracer.attach(runner)?;
        let mut fastest: Option<(Sample, Cost)> = None;
        for _ in 0..STATS_RUNS {
            let before = a.cost();
            let s = match runner.run(n) {
                Ok(s) => s,
                Err(e) => {
                    a.detach()?;
                    return Err(e);
                }
            };
            let after = a.cost();
            let cost = Cost {
                runs: after.runs.saturating_sub(before.runs),
                nanos: after.nanos.saturating_sub(before.nanos),
            };
            let per_run = |c: &Cost| c.nanos_per_run().unwrap_or(f64::INFINITY);
            if fastest
                .as_ref()
                .is_none_or(|(_, f)| per_run(&cost) < per_run(f))
            {
                fastest = Some((s, cost));
            }
        }
        a.detach()?;
        drop(on);
        m.stats = fastest;
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
    let row = |kind, tool: String, config: String, hooks: String, counting, result| Row {
        program: spec.name.into(),
        kind,
        tool,
        config,
        hooks,
        op: Some(op),
        counting,
        result,
    };

    let params = script_params(spec.name);
    let emits = params
        .iter()
        .any(|(k, v)| k == "emit_events" && *v == ParamValue::Bool(true));
    let counting = counting_program(spec.name);
    let mut floor_sets: Vec<Vec<EmptyAttach>> = Vec::new();
    for (variant, ok) in sonde::bpf::assess(spec, Some(btf)) {
        let hooks = hooks(variant);
        let tool = format!("sonde {}", variant.name);
        if let Err(why) = ok {
            let why = format!("not here: {why}");
            rows.push(row(Kind::Sonde, tool, "-".into(), hooks, false, Err(why)));
            continue;
        }
        for set in floors(variant) {
            if !floor_sets.contains(&set) {
                floor_sets.push(set);
            }
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
            let mut quiet = params.clone();
            for (k, v) in &mut quiet {
                if k == "emit_events" {
                    *v = ParamValue::Bool(false);
                }
            }
            configs.push(("emit_events=false".into(), quiet, true));
        }
        for (config, params, events_off) in configs {
            progress(&format!("  {tool} {config}: {n} ops x {} rounds", o.rounds));
            let tracer = Tracer::Sonde {
                spec: single,
                params,
                drain: !events_off,
            };
            let result = measure(&runner, n, o.rounds, &tracer).map_err(|e| format!("{e:#}"));
            rows.push(row(
                Kind::Sonde,
                tool.clone(),
                config,
                hooks.clone(),
                counting && events_off,
                result,
            ));
        }
    }
    if let Some((script, probes)) = bpftrace_script(spec.name, btf) {
        let hooks = script
            .lines()
            .filter(|l| l.starts_with("tracepoint:"))
            .map(|l| {
                let probe = l.split_whitespace().next().unwrap_or("");
                format!("tp {}", probe.trim_start_matches("tracepoint:"))
            })
            .collect::<Vec<_>>()
            .join(" + ");
        let result = match &o.bpftrace {
            None if o.no_bpftrace => None,
            None => Some(Err("bpftrace not installed".into())),
            Some(path) => {
                progress(&format!("  bpftrace: {n} ops x {} rounds", o.rounds));
                let tracer = Tracer::Bpftrace {
                    path: path.clone(),
                    script,
                    probes,
                };
                Some(measure(&runner, n, o.rounds, &tracer).map_err(|e| format!("{e:#}")))
            }
        };
        if let Some(result) = result {
            let tool = "bpftrace".to_string();
            rows.push(row(
                Kind::Bpftrace,
                tool,
                "count()".into(),
                hooks,
                true,
                result,
            ));
        }
    }
    for set in floor_sets {
        let hooks = describe_hooks(&set);
        progress(&format!(
            "  empty program on {hooks}: {n} ops x {} rounds",
            o.rounds
        ));
        let tool = if set.iter().all(|a| matches!(a, EmptyAttach::Raw(_))) {
            "empty prog, raw_tp"
        } else {
            "empty prog, tp"
        };
        let result =
            measure(&runner, n, o.rounds, &Tracer::Empty(set)).map_err(|e| format!("{e:#}"));
        let tool = tool.to_string();
        rows.push(row(
            Kind::Floor,
            tool,
            "r0 = 0".into(),
            hooks,
            false,
            result,
        ));
    }
    drop(runner);
    Ok(())
}

impl Row {
    fn note(program: &str, why: &str) -> Row {
        Row {
            program: program.into(),
            kind: Kind::Note,
            tool: "-".into(),
            config: "-".into(),
            hooks: "-".into(),
            op: None,
            counting: false,
            result: Err(why.into()),
        }
    }

    /// The bpftrace row of the same program on the same operation, if measured.
    fn peer<'a>(&self, rows: &'a [Row]) -> Option<&'a Measured> {
        rows.iter()
            .filter(|r| r.kind == Kind::Bpftrace && r.program == self.program && r.op == self.op)
            .find_map(|r| r.result.as_ref().ok())
    }

    /// The empty program on the same hooks, same operation, if measured.
    fn floor<'a>(&self, rows: &'a [Row]) -> Option<&'a Measured> {
        rows.iter()
            .filter(|r| {
                r.kind == Kind::Floor
                    && r.program == self.program
                    && r.op == self.op
                    && same_hooks(&r.hooks, &self.hooks)
            })
            .find_map(|r| r.result.as_ref().ok())
    }

    /// Added ns per event over the empty program's on the same hooks.
    fn over_hook(&self, rows: &[Row]) -> Option<f64> {
        let m = self.result.as_ref().ok()?;
        Some(m.delta_per_event()? - self.floor(rows)?.delta_per_event()?)
    }

    /// The noise of `over_hook`: this row's and the floor's, per event.
    fn over_hook_noise(&self, rows: &[Row]) -> Option<f64> {
        let m = self.result.as_ref().ok()?;
        Some(m.noise_per_event()? + self.floor(rows)?.noise_per_event()?)
    }

    /// ns per run inside the program over the empty program's (the statistics' own
    /// clock reads cancel out).
    fn prog_over_empty(&self, rows: &[Row]) -> Option<f64> {
        let m = self.result.as_ref().ok()?;
        Some(m.prog_ns_per_run()? - self.floor(rows)?.prog_ns_per_run()?)
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "program": self.program,
            "kind": self.kind.name(),
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
                v["noise_ns_per_op"] = json!(m.noise());
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

/// "1.23" when both are positive, else "-".
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn render(rows: &[Row], machine: &str, o: &KernelOptions, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nkernel-side cost per hooked event ({machine})");
    let _ = writeln!(
        s,
        "{} rounds of (nothing attached, attached) per row, ABBA order ({} more, at most twice, while ± > {:.0}% of base); the operation thread's CPU time per op, fastest run of each side; Δ = with - base; ± = 3rd fastest - fastest run (the larger side); over hook = Δ/ev - the empty program's Δ/ev on the same hooks",
        o.rounds,
        o.rounds,
        RESOLVED_SHARE * 100.0
    );
    let mut t = vec![vec![
        "program".to_string(),
        "tool / variant".into(),
        "config".into(),
        "operation".into(),
        "rounds".into(),
        "ev/op".into(),
        "base ns/op".into(),
        "with ns/op".into(),
        "Δ ns/op".into(),
        "±".into(),
        "pairs: median [min..max]".into(),
        "Δ ns/ev".into(),
        "over hook".into(),
        "prog ns/run".into(),
        "prog - empty".into(),
        "Δ/ev sonde/bpftrace".into(),
        "prog sonde/bpftrace".into(),
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
                let peer = (r.kind == Kind::Sonde).then(|| r.peer(rows)).flatten();
                let over = (r.kind != Kind::Floor).then(|| r.over_hook(rows)).flatten();
                let prog_over = (r.kind != Kind::Floor)
                    .then(|| r.prog_over_empty(rows))
                    .flatten();
                line.extend([
                    m.base.len().to_string(),
                    opt(m.events_per_op(), |v| format!("{v:.2}")),
                    opt(m.base_ns(), |v| format!("{v:.0}")),
                    opt(m.with_ns(), |v| format!("{v:.0}")),
                    opt(m.delta_ns(), |v| format!("{v:.0}")),
                    opt(m.noise(), |v| format!("{v:.0}")),
                    match (m.pair_median(), m.delta_range()) {
                        (Some(p), Some((a, b))) => format!("{p:.0} [{a:.0}..{b:.0}]"),
                        _ => "-".into(),
                    },
                    opt(m.delta_per_event(), |v| format!("{v:.0}")),
                    opt(over, |v| format!("{v:.0}")),
                    opt(m.prog_ns_per_run(), |v| format!("{v:.0}")),
                    opt(prog_over, |v| format!("{v:.0}")),
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
    let _ = writeln!(
        s,
        "\ntarget: a counting program (events off) adds <= {TARGET_NS_PER_EVENT:.0} ns per hooked event over the hook, and no more than bpftrace counting the same way:"
    );
    for r in rows.iter().filter(|r| r.kind == Kind::Sonde && r.counting) {
        if let Some(line) = verdict(r, rows, true) {
            let _ = writeln!(s, "{line}");
        }
    }
    let others: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.kind == Kind::Sonde
                && !counting_program(&r.program)
                && r.config != "defaults (events on, read)"
        })
        .filter_map(|r| verdict(r, rows, false))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(
            s,
            "not counting programs (timestamps and histograms), events off, no target:"
        );
        for line in others {
            let _ = writeln!(s, "{line}");
        }
    }
    let _ = writeln!(s, "\n(whole benchmark: {:.0} s)", elapsed.as_secs_f64());
    s
}

/// One row's figures against the target (`judge`) or for reference.
fn verdict(r: &Row, rows: &[Row], judge: bool) -> Option<String> {
    let m = r.result.as_ref().ok()?;
    let d = m.delta_per_event()?;
    let noise = m.noise_per_event().unwrap_or(0.0);
    let over = r.over_hook(rows);
    let over_noise = r.over_hook_noise(rows).unwrap_or(noise);
    let ns = |v: Option<f64>| opt(v, |v| format!("{v:.0}"));
    let mut line = format!(
        "  {} {} {} on {}: {d:.0} ±{noise:.0} ns per event in all, {} ±{over_noise:.0} over the hook; in the program {} ns, {} over the empty program",
        r.program,
        r.tool,
        r.config,
        r.op.map_or("-", Op::short),
        ns(over),
        ns(m.prog_ns_per_run()),
        ns(r.prog_over_empty(rows)),
    );
    if judge {
        let (v, e) = over.map_or((d, noise), |o| (o, over_noise));
        let _ = write!(
            line,
            ": {}",
            if (v - TARGET_NS_PER_EVENT).abs() <= e {
                "borderline (within the noise)"
            } else if v <= TARGET_NS_PER_EVENT {
                "met"
            } else {
                "MISSED"
            }
        );
        if let Some(p) = r.peer(rows) {
            if let Some(pd) = p.delta_per_event() {
                let pe = p.noise_per_event().unwrap_or(0.0);
                let _ = write!(
                    line,
                    "; bpftrace {pd:.0} ±{pe:.0} ns per event (in the program {}), sonde/bpftrace {}: {}",
                    ns(p.prog_ns_per_run()),
                    ratio(Some(d), Some(pd)),
                    if (d - pd).abs() <= noise + pe {
                        "the same within the noise"
                    } else if d < pd {
                        "less than bpftrace"
                    } else {
                        "MORE than bpftrace"
                    }
                );
            }
        }
    }
    Some(line)
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
