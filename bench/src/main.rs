//! sonde-bench: sonde side by side with bpftrace on the same workload.
//!
//! ```text
//! cargo run --release -p sonde-bench -- resets [--seconds 10] [--rates 20000,50000,max]
//! ```
//!
//! ```text
//! cargo run --release -p sonde-bench -- daemon [--idle-seconds 30] [--load-seconds 20]
//! ```
//!
//! ```text
//! cargo run --release -p sonde-bench -- kernel [--programs a,b] [--iters N] [--rounds N]
//! ```
//!
//! `resets`: network namespaces connecting to a closed loopback port (two resets per
//! connect), traced by `sonde run scripts/tcp_reset.rhai`, by a bpftrace program
//! printing the same fields, and by a counting sonde script with no output; then the
//! counting and printing scripts replayed from a recording, with no kernel.
//!
//! `daemon`: `sonde daemon` with the built-in scripts, idle, scraped with 100 pods'
//! worth of series (beside prometheus-node-exporter), and under 50k reset events/s.
//! `kernel`: each built-in program's cost in the kernel per hooked event (a tight
//! loop of the hooked operation, attached against detached), beside an empty
//! program on the same hooks and bpftrace counting the same way where a
//! counterpart exists.
//! `sources`: one scrape's worth of procfs/netlink reading by the eleven source
//! scripts with 50 pod network namespaces (or a list of counts: a scaling table),
//! beside node_exporter on the host only.
//! `exposition`: the render time of a scrape at 1k, 10k and 100k series, beside
//! the Prometheus Python client holding the same series.
//! See bench/README.md for what each row measures.

mod bpf_stats;
mod daemon;
mod daemon_report;
mod empty_prog;
mod exposition;
mod kernel;
mod kernel_ops;
mod report;
mod resets;
mod scrape;
mod sources;
mod tool;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: sonde-bench resets [options]
       sonde-bench daemon [daemon options]
       sonde-bench kernel [kernel options]
       sonde-bench workload [--seconds N] [--rates R] [--threads N]
       sonde-bench sources [--namespaces N[,N...]] [--rounds N] [--node-exporter PATH]
       sonde-bench exposition [--series N[,N...]] [--rounds N] [--python PATH]
       sonde-bench compare --baseline OTHER_SONDE [--rounds N] [--seconds N] [--rates R]

Generates TCP resets in network namespaces and measures, for the same workload,
sonde printing events, bpftrace printing the same fields, sonde counting them, and
sonde replaying a recording (no kernel). Needs root.

`compare` measures two sonde binaries (this one, and --baseline: e.g. a build of the
commit before a change) on the same recording and workload, alternating rounds and
keeping each one's fastest: CPU per record of the counting and text replays, and of
`sonde count -q` live at the first rate; prints the ratio (this / baseline).

`workload` runs the reset generator alone (first rate only) and prints what it
did, to trace it with any other tool.

options:
  --seconds N        workload duration of each measured run (default 10)
  --rates LIST       connects per second, comma-separated; `max` = unlimited
                     (default 20000,50000,max); each connect is 2 resets
  --threads N        generator threads (default: number of CPUs)
  --sonde PATH       sonde binary (default: target/release/sonde, built if missing)
  --bpftrace PATH    bpftrace binary (default: bpftrace on PATH; rows skipped if absent)
  --json FILE        also write every measurement as JSON

`daemon` measures `sonde daemon` (tcp_reset and packet_loss built in, events on
stdout): idle CPU and RSS beside prometheus-node-exporter, /metrics latency with
100 pods' series (and node_exporter's), CPU, RSS and losses under 50k events/s.

daemon options:
  --idle-seconds N   idle window (default 30)
  --load-seconds N   duration of each load run (default 20)
  --rate N           connects per second of the load, 2 events each (default 25000)
  --pods N           network namespaces with series (default 100)
  --scrapes N        measured scrapes per target and format (default 200)
  --threads N        load generator threads (default: number of CPUs)
  --no-stdout-off    skip the second load run with the stdout sink off
  --node-exporter PATH  peer (default: prometheus-node-exporter on PATH)
  --sonde PATH, --json FILE  as above

`kernel` measures each built-in program's cost in the kernel per hooked event:
a tight loop of an operation that fires its hooks, with nothing attached and with
the program attached (sonde's loader, the built-in script's knob defaults), an
empty program on the same hooks (the floor), and the same under a bpftrace script
counting the same way where one exists.

kernel options:
  --programs LIST    programs to measure, comma-separated (default: all built-in)
  --iters N          operations per measured run (default: what fits in --run-ms)
  --run-ms N         target duration of a measured run (default 150)
  --rounds N         (detached, attached) pairs per row (default 11)
  --bpftrace PATH    bpftrace binary (default: bpftrace on PATH; rows say so if absent)
  --no-bpftrace      skip the bpftrace rows
  --json FILE        also write every sample as JSON
";

/// Settings of a `resets` run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seconds: u64,
    pub rates: Vec<Option<u64>>,
    pub threads: usize,
    pub sonde: PathBuf,
    pub bpftrace: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// The workspace root: scripts are found, and sonde runs, there.
    pub root: PathBuf,
    /// `compare`: the other sonde binary (the one before a change).
    pub baseline: Option<PathBuf>,
    /// `compare`: alternating rounds per row (the fastest of each is kept).
    pub rounds: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("compare") => {
            let options = match parse_options(&args[1..]) {
                Ok(o) if o.baseline.is_some() => o,
                Ok(_) => {
                    eprintln!("sonde-bench: compare needs --baseline PATH\n\n{USAGE}");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            return match resets::compare(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("resets") => {}
        Some("daemon") => {
            let options = match workspace_root()
                .and_then(|root| daemon::DaemonOptions::parse(&args[1..], root))
            {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            return match daemon::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("kernel") => {
            return match kernel::KernelOptions::parse(&args[1..]).and_then(|o| kernel::run(&o)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("sources") => {
            return match workspace_root()
                .and_then(|root| sources::SourcesOptions::parse(&args[1..], root))
                .and_then(|o| sources::run(&o))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("exposition") => {
            return match exposition::ExpositionOptions::parse(&args[1..])
                .and_then(|o| exposition::run(&o))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("workload") => {
            return match parse_options(&args[1..]).and_then(|o| workload_alone(&o)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sonde-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("sonde-bench: unknown benchmark `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let options = match parse_options(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sonde-bench: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match resets::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: scripts are found, and sonde runs, there.
fn workspace_root() -> anyhow::Result<PathBuf> {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("bench crate has no parent directory")
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let root = workspace_root()?;
    let mut o = Options {
        seconds: 10,
        rates: vec![Some(20_000), Some(50_000), None],
        threads: cpus(),
        sonde: root.join("target/release/sonde"),
        bpftrace: which("bpftrace"),
        json: None,
        root,
        baseline: None,
        rounds: 5,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => {
                o.seconds = value()?
                    .parse()
                    .context("--seconds: expected a whole number of seconds")?;
                if o.seconds == 0 {
                    bail!("--seconds: must be at least 1");
                }
            }
            "--rates" => {
                o.rates = value()?
                    .split(',')
                    .map(|r| match r.trim() {
                        "max" => Ok(None),
                        n => n
                            .parse::<u64>()
                            .ok()
                            .filter(|n| *n > 0)
                            .map(Some)
                            .with_context(|| {
                                format!("--rates: `{n}` is neither a positive number nor `max`")
                            }),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--threads" => {
                o.threads = value()?.parse().context("--threads: expected a number")?;
                if o.threads == 0 {
                    bail!("--threads: must be at least 1");
                }
            }
            "--sonde" => o.sonde = PathBuf::from(value()?),
            "--bpftrace" => o.bpftrace = Some(PathBuf::from(value()?)),
            "--json" => o.json = Some(PathBuf::from(value()?)),
            "--baseline" => o.baseline = Some(PathBuf::from(value()?)),
            "--rounds" => {
                o.rounds = value()?.parse().context("--rounds: expected a number")?;
                if o.rounds == 0 {
                    bail!("--rounds: must be at least 1");
                }
            }
            other => bail!("unknown option `{other}`"),
        }
    }
    Ok(o)
}

fn workload_alone(o: &Options) -> anyhow::Result<()> {
    let rate = o.rates.first().copied().flatten();
    let w = workload::Workload::prepare(o.threads, rate, Duration::from_secs(o.seconds))?;
    let ns: Vec<String> = w.netns().iter().map(|n| format!("netns:{n}")).collect();
    eprintln!("sonde-bench: {} threads in {}", o.threads, ns.join(" "));
    let out = w.run()?;
    println!(
        "{} refused connects ({:.0}/s, {} resets), {} other failures, in {:.2}s",
        out.refused,
        out.refused as f64 / out.elapsed.as_secs_f64(),
        out.resets(),
        out.errors,
        out.elapsed.as_secs_f64()
    );
    Ok(())
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A duration as sonde's `--for` takes it.
pub fn for_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
