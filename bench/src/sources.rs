//! `sources`: the cost of one scrape's worth of procfs and netlink reading, with N
//! pod network namespaces, beside node_exporter scraping the host only.
//!
//! Setup: N namespaces made with `ip netns add`, each with a veth pair to the host
//! (its end named eth0, addressed), loopback up, a process holding it (`sleep`),
//! and a TCP listener with two connections made from a thread that joined it.
//!
//! sonde: the eleven built-in source scripts (netdev, snmp, tcpext, sock, softnet,
//! tcpsummary, conntrack, qdisc, ipvs, fd, io) run in this process through the
//! library, as the daemon runs them; one round is a fresh namespace scan, every
//! script's `on_tick` (read every namespace, set every series) and the Prometheus
//! text rendering. The first round (netlink sockets opened in every namespace)
//! is reported apart.
//!
//! node_exporter: `prometheus-node-exporter` on a free port with the collectors that
//! read the same sources (netdev, netstat with every field, sockstat, softnet,
//! conntrack, tcpstat, qdisc, ipvs), one round = one `GET /metrics`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use sonde::metrics::Registry;
use sonde::script::{Instance, Limits, Script, ScriptContext};

pub const SCRIPTS: [&str; 11] = [
    "netdev",
    "snmp",
    "tcpext",
    "sock",
    "softnet",
    "tcpsummary",
    "conntrack",
    "qdisc",
    "ipvs",
    "fd",
    "io",
];

pub struct SourcesOptions {
    /// A run per count, smallest first: the scaling table has a row each.
    pub namespaces: Vec<usize>,
    pub rounds: usize,
    pub node_exporter: PathBuf,
    pub root: PathBuf,
}

impl SourcesOptions {
    pub fn parse(args: &[String], root: PathBuf) -> Result<Self> {
        let mut o = SourcesOptions {
            namespaces: vec![50],
            rounds: 30,
            node_exporter: PathBuf::from("prometheus-node-exporter"),
            root,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().context(format!("{a} needs a value"));
            match a.as_str() {
                "--namespaces" => {
                    o.namespaces = value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<std::result::Result<_, _>>()
                        .context("--namespaces: a count or a list (10,50,250)")?;
                    o.namespaces.sort_unstable();
                }
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--node-exporter" => o.node_exporter = PathBuf::from(value()?),
                other => bail!("unknown option `{other}`"),
            }
        }
        if o.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        Ok(o)
    }
}

fn sh(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{args:?}"))?;
    if !st.success() {
        bail!("{args:?} failed");
    }
    Ok(())
}

/// The benchmark's namespaces; removed on drop.
struct Pods {
    names: Vec<String>,
    holders: Vec<Child>,
    _sockets: Vec<std::net::TcpStream>,
    _listeners: Vec<std::net::TcpListener>,
}

impl Pods {
    fn create(n: usize) -> Result<Pods> {
        let mut p = Pods {
            names: Vec::new(),
            holders: Vec::new(),
            _sockets: Vec::new(),
            _listeners: Vec::new(),
        };
        for i in 0..n {
            let name = format!("sonde-bench-src-{i}");
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
            sh(&["ip", "netns", "add", &name])?;
            p.names.push(name.clone());
            let host = format!("sbsrc{i}");
            let _ = Command::new("ip")
                .args(["link", "del", &host])
                .stderr(Stdio::null())
                .status();
            sh(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ])?;
            sh(&["ip", "link", "set", &host, "up"])?;
            sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", &name, "link", "set", "eth0", "up"])?;
            let addr = format!("10.{}.{}.2/24", 200 + i / 250, i % 250);
            sh(&["ip", "-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            p.holders.push(
                Command::new("ip")
                    .args(["netns", "exec", &name, "sleep", "3600"])
                    .spawn()
                    .context("ip netns exec sleep")?,
            );
            let path = format!("/run/netns/{name}");
            let (l, socks) = std::thread::spawn(move || -> Result<_> {
                let f = std::fs::File::open(path)?;
                // SAFETY: a namespace fd; only this thread changes namespace.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                let mut socks = Vec::new();
                for _ in 0..2 {
                    socks.push(std::net::TcpStream::connect(l.local_addr()?)?);
                    socks.push(l.accept()?.0);
                }
                Ok((l, socks))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
            p._listeners.push(l);
            p._sockets.extend(socks);
        }
        Ok(p)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for h in &mut self.holders {
            let _ = h.kill();
            let _ = h.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(bin: &PathBuf) -> Result<NodeExporter> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(bin)
            .args([
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--collector.disable-defaults",
                "--collector.netdev",
                "--collector.netstat",
                "--collector.netstat.fields=.*",
                "--collector.sockstat",
                "--collector.softnet",
                "--collector.conntrack",
                "--collector.tcpstat",
                "--collector.qdisc",
                "--collector.ipvs",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let ne = NodeExporter { child, port };
        for _ in 0..100 {
            if ne.scrape().is_ok() {
                return Ok(ne);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("node_exporter did not answer on port {port}")
    }

    fn scrape(&self) -> Result<usize> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        if !body.starts_with(b"HTTP/1.0 200") && !body.starts_with(b"HTTP/1.1 200") {
            bail!(
                "node_exporter answered {}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
        Ok(body.len())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count()
}

/// CPU time this process has used (every thread, user and system: the kernel's
/// netlink and procfs work for the scripts included).
fn process_cpu() -> Duration {
    // SAFETY: clock_gettime writes the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User + system CPU of another process, from `/proc/PID/stat` (clock ticks).
fn other_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// One namespace count's measurements.
struct Row {
    made: usize,
    scanned: usize,
    wall_ms: f64,
    wall_max: f64,
    /// Process CPU per round (mean over the rounds).
    cpu_ms: f64,
    first_ms: f64,
    per_script: Vec<(f64, f64)>,
    series: usize,
    bytes: usize,
}

/// The eleven scripts over `n` fresh namespaces: a fresh registry and fresh
/// instances, the first round apart, then `o.rounds` measured rounds.
fn measure(o: &SourcesOptions, n: usize) -> Result<Row> {
    eprintln!("sources: creating {n} network namespaces");
    let t = Instant::now();
    let pods = Pods::create(n)?;
    eprintln!("sources: created in {:.1}s", t.elapsed().as_secs_f64());
    let scanned = sonde::sources::netns_list_within(Duration::ZERO).len();

    // sonde, in process, as the daemon runs the scripts.
    let registry = Arc::new(Registry::new("bench"));
    let limits = Limits {
        call_deadline: Duration::from_secs(5),
        ..Limits::default()
    };
    let node = "bench";
    let mut insts = Vec::new();
    for name in SCRIPTS {
        let path = o.root.join(format!("scripts/{name}.rhai"));
        let src = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let script = Script::compile(&path.display().to_string(), &src, &limits)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let params = script
            .manifest()
            .resolve_params(&[])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ctx = ScriptContext::detached(name);
        ctx.node = node.into();
        ctx.registry = registry.clone();
        ctx.pods = Arc::new(sonde::pods::HostResolver::new(node));
        insts.push(
            Instance::start(&script, &params, ctx, &limits).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    let round = |insts: &mut Vec<Instance>, per: &mut Vec<Vec<f64>>| -> (f64, usize, usize) {
        let t = Instant::now();
        sonde::sources::netns_list_within(Duration::ZERO);
        for (i, inst) in insts.iter_mut().enumerate() {
            let s = Instant::now();
            inst.on_tick();
            per[i].push(ms(s.elapsed()));
        }
        let text = registry.render_prometheus();
        (ms(t.elapsed()), text.len(), series(&text))
    };
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); SCRIPTS.len()];
    let (first_ms, _, _) = round(&mut insts, &mut per);
    for p in &mut per {
        p.clear();
    }
    let mut totals = Vec::new();
    let (mut bytes, mut nseries) = (0, 0);
    let cpu0 = process_cpu();
    for _ in 0..o.rounds {
        let (t, b, s) = round(&mut insts, &mut per);
        totals.push(t);
        bytes = b;
        nseries = s;
    }
    let cpu_ms = ms(process_cpu() - cpu0) / o.rounds as f64;
    for inst in &insts {
        if !inst.errors().is_empty() {
            eprintln!(
                "sources: script {} had errors: {:?}",
                inst.name(),
                inst.errors()
            );
        }
    }
    drop(pods);
    Ok(Row {
        made: n,
        scanned,
        wall_ms: median(&mut totals.clone()),
        wall_max: totals.iter().cloned().fold(0.0, f64::max),
        cpu_ms,
        first_ms,
        per_script: per
            .into_iter()
            .map(|mut v| {
                let max = v.iter().cloned().fold(0.0, f64::max);
                (median(&mut v), max)
            })
            .collect(),
        series: nseries,
        bytes,
    })
}

pub fn run(o: &SourcesOptions) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces)");
    }
    // node_exporter, host only, first: removing many namespaces leaves the kernel
    // busy tearing them down for a while, which a scrape right after would pay for.
    let ne = NodeExporter::start(&o.node_exporter);
    let mut ne_times = Vec::new();
    let (mut ne_bytes, mut ne_cpu_ms) = (0, None);
    if let Ok(ne) = &ne {
        ne.scrape()?; // warm-up
        let cpu0 = other_cpu(ne.child.id());
        for _ in 0..o.rounds {
            let t = Instant::now();
            ne_bytes = ne.scrape()?;
            ne_times.push(ms(t.elapsed()));
        }
        ne_cpu_ms = cpu0
            .zip(other_cpu(ne.child.id()))
            .map(|(a, b)| ms(b - a) / o.rounds as f64);
    }

    let mut rows = Vec::new();
    for &n in &o.namespaces {
        rows.push(measure(o, n)?);
    }

    for r in &rows {
        println!();
        println!(
            "procfs/netlink sources: {} namespaces made, {} on the node in all; {} rounds (median, max; CPU: mean per round)",
            r.made, r.scanned, o.rounds
        );
        println!();
        println!("| what | median ms | max ms | CPU ms | output |");
        println!("|---|---|---|---|---|");
        println!(
            "| sonde, 11 source scripts, {} namespaces (scan + on_tick + render) | {:.2} | {:.2} | {:.2} | {} series, {} KiB |",
            r.scanned,
            r.wall_ms,
            r.wall_max,
            r.cpu_ms,
            r.series,
            r.bytes / 1024
        );
        println!(
            "| sonde, first round (opens netlink sockets in each namespace) | {:.2} | | | |",
            r.first_ms
        );
        for (name, (med, max)) in SCRIPTS.iter().zip(&r.per_script) {
            println!("| &nbsp;&nbsp;{name}.rhai on_tick | {med:.2} | {max:.2} | | |");
        }
    }
    let ne_ms = (!ne_times.is_empty()).then(|| median(&mut ne_times.clone()));
    println!();
    println!("scaling (sonde: every source script over every namespace, one round; node_exporter: one scrape, host only):");
    println!();
    println!("| namespaces | wall ms | CPU ms | CPU ms / namespace | series | KiB | wall / node_exporter |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} | {} | {} |",
            r.scanned,
            r.wall_ms,
            r.cpu_ms,
            r.cpu_ms / r.scanned.max(1) as f64,
            r.series,
            r.bytes / 1024,
            ne_ms.map_or("-".into(), |ne| format!("{:.1}x", r.wall_ms / ne)),
        );
    }
    match (ne, ne_ms) {
        (Ok(_), Some(ne_ms)) => {
            let ne_max = ne_times.iter().cloned().fold(0.0, f64::max);
            println!(
                "| node_exporter, host only (netdev, netstat, sockstat, softnet, conntrack, tcpstat, qdisc, ipvs): {ne_ms:.1} ms median, {ne_max:.1} ms max, CPU {} ms a scrape, {} KiB | | | | | | |",
                ne_cpu_ms.map_or("?".into(), |c| format!("{c:.1}")),
                ne_bytes / 1024
            );
            println!();
            println!("target: <= 20 ms CPU per cycle with 50 pods");
        }
        (Err(e), _) => println!("\n!!!!! node_exporter rows skipped: {e:#} !!!!!"),
        _ => {}
    }
    Ok(())
}
