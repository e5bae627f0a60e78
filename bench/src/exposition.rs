//! `exposition`: what rendering a scrape costs as the series grow, sonde's registry
//! beside the Prometheus Python client holding the same series.
//!
//! Both sides hold `N` series in ten counter families labelled like a pod's
//! (`pod`, `namespace`, `reason`; sonde adds `node` itself) and render them, in
//! process, as a scrape would: sonde in the text format, OpenMetrics and protobuf;
//! the Python client (`python3-prometheus-client`, `generate_latest`) in the text
//! format. Each figure is the median of `--rounds` renders after one warm-up, timed
//! inside the process that renders, so neither side pays for HTTP.
//!
//! ```text
//! cargo run --release -p sonde-bench -- exposition [--series 1000,10000,100000] [--rounds 20]
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use sonde::metrics::Registry;

const FAMILIES: usize = 10;
const REASONS: [&str; 4] = ["NO_SOCKET", "TCP_CSUM", "NETFILTER_DROP", "OTHERHOST"];

pub struct ExpositionOptions {
    pub series: Vec<usize>,
    pub rounds: usize,
    pub python: String,
}

impl ExpositionOptions {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut o = ExpositionOptions {
            series: vec![1_000, 10_000, 100_000],
            rounds: 20,
            python: "/usr/bin/python3".into(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--series" => {
                    o.series = value()?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<std::result::Result<_, _>>()
                        .context("--series: a count or a list (1000,10000,100000)")?;
                }
                "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
                "--python" => o.python = value()?.clone(),
                other => bail!("unknown option `{other}`"),
            }
        }
        if o.rounds == 0 || o.series.contains(&0) {
            bail!("--rounds and every --series count must be at least 1");
        }
        Ok(o)
    }
}

/// The labels of series `i` of a family: 40 series a pod, 20 namespaces.
fn labels(i: usize) -> [String; 3] {
    let pod = i / REASONS.len();
    [
        format!("pod-{pod}"),
        format!("ns-{}", pod % 20),
        REASONS[i % REASONS.len()].to_string(),
    ]
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Median render times (text, OpenMetrics, protobuf) of `n` series, and the text size.
fn sonde(n: usize, rounds: usize) -> Result<([f64; 3], usize)> {
    let registry = Registry::new("bench-node");
    let per_family = n.div_ceil(FAMILIES);
    let mut made = 0;
    for f in 0..FAMILIES {
        let c = registry
            .counter(
                &format!("bench_family_{f}_total"),
                "a benchmark family",
                &["pod", "namespace", "reason"],
                per_family,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for i in 0..per_family.min(n - made) {
            c.add(&labels(i), (i % 1000) as u64 + 1)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        made += per_family.min(n - made);
    }
    let bytes = registry.render_prometheus().len();
    let _ = (registry.render_openmetrics(), registry.render_protobuf());
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(registry.render_prometheus());
        times[0].push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(registry.render_openmetrics());
        times[1].push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(registry.render_protobuf());
        times[2].push(t.elapsed());
    }
    let [a, b, c] = times;
    Ok(([median_ms(a), median_ms(b), median_ms(c)], bytes))
}

/// The same series in the Python client: its median `generate_latest` time and the
/// text size, as it prints them.
const PYTHON: &str = r#"
import sys, time
from prometheus_client import CollectorRegistry, Counter, generate_latest
n, rounds = int(sys.argv[1]), int(sys.argv[2])
reasons = ["NO_SOCKET", "TCP_CSUM", "NETFILTER_DROP", "OTHERHOST"]
reg = CollectorRegistry()
per = -(-n // 10)
made = 0
for f in range(10):
    c = Counter("bench_family_%d" % f, "a benchmark family", ["node", "pod", "namespace", "reason"], registry=reg)
    for i in range(min(per, n - made)):
        pod = i // 4
        c.labels("bench-node", "pod-%d" % pod, "ns-%d" % (pod % 20), reasons[i % 4]).inc(i % 1000 + 1)
    made += min(per, n - made)
size = len(generate_latest(reg))
times = []
for _ in range(rounds):
    t = time.perf_counter()
    generate_latest(reg)
    times.append(time.perf_counter() - t)
times.sort()
print(times[len(times) // 2] * 1e3, size)
"#;

fn python(o: &ExpositionOptions, n: usize) -> Result<(f64, usize)> {
    // runs: /usr/bin/python3
    let out = Command::new(&o.python)
        .args(["-c", PYTHON, &n.to_string(), &o.rounds.to_string()])
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", o.python))?;
    if !out.status.success() {
        bail!(
            "the Python client failed (apt-get install python3-prometheus-client): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let ms = words.next().and_then(|w| w.parse().ok());
    let size = words.next().and_then(|w| w.parse().ok());
    ms.zip(size)
        .context("unexpected output of the Python client")
}

pub fn run(o: &ExpositionOptions) -> Result<()> {
    println!();
    println!(
        "exposition: render time of one scrape by series count, median of {} renders in process",
        o.rounds
    );
    println!();
    println!("| series | sonde text ms | sonde OpenMetrics ms | sonde protobuf ms | text KiB | Python client text ms | sonde / Python |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &o.series {
        eprintln!("exposition: {n} series");
        let ([text, om, pb], bytes) = sonde(n, o.rounds)?;
        let peer = python(o, n);
        let (peer_ms, ratio) = match &peer {
            Ok((ms, _)) => (format!("{ms:.2}"), format!("{:.2}", text / ms)),
            Err(e) => {
                eprintln!("exposition: *** Python client row SKIPPED: {e:#} ***");
                ("-".into(), "-".into())
            }
        };
        println!(
            "| {n} | {text:.2} | {om:.2} | {pb:.2} | {} | {peer_ms} | {ratio} |",
            bytes / 1024
        );
    }
    Ok(())
}
