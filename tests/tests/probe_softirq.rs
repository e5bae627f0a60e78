//! softirq (root): TCP traffic over loopback in a private network namespace raises
//! NET_RX, with busy threads pinned on the same CPU so raised softirqs have to wait;
//! the exported histograms have NET_RX and TIMER samples, the kernel's totals agree
//! with its histograms, and a 1 µs threshold turns samples into events with the cpu
//! and the vector while the default 10 ms leaves (almost) none.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde_tests::kernel::{drain, entries, int, load, s, struct_entries};
use sonde_tests::run::{event_field as field, finish, start, summary_hist_count};
use sonde_tests::{require_root, NetnsThread};

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; pid 0 = this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Busy threads on CPU 0 while `f` runs there too: loopback traffic raises NET_RX on
/// CPU 0 and competes with them.
fn softirq_load(ns: &NetnsThread, dur: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin(0);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let round_trips = ns.run(move || {
        pin(0);
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let echo = std::thread::spawn(move || {
            pin(0);
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; 512];
        let end = Instant::now() + dur;
        let mut n = 0u64;
        while Instant::now() < end {
            c.write_all(&buf[..256]).unwrap();
            c.read_exact(&mut buf[..256]).unwrap();
            n += 1;
        }
        drop(c);
        echo.join().unwrap();
        n
    });
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert!(round_trips > 100, "only {round_trips} round trips");
}

#[test]
fn softirq_script_exports_histograms_and_events_with_cpu() {
    if !require_root("softirq_script_exports_histograms_and_events_with_cpu") {
        return;
    }
    let run = start(&[
        "run",
        "scripts/softirq.rhai",
        "--for",
        "3s",
        "-p",
        "slow_ns=1us",
    ]);
    let ns = NetnsThread::new().unwrap();
    softirq_load(&ns, Duration::from_millis(1500));
    let (out, _) = finish(run);

    for metric in ["sonde_softirq_delay_seconds", "sonde_softirq_run_seconds"] {
        for vector in ["NET_RX", "TIMER"] {
            assert!(
                summary_hist_count(&out, &format!("{metric}{{vector={vector}}}")).unwrap_or(0) > 0,
                "no {metric}{{vector={vector}}} samples:\n{out}"
            );
        }
    }
    // 1 µs: slow samples are counted and reported, with the cpu and the vector.
    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("type=SOFTIRQ_"))
        .collect();
    let net_rx: Vec<&&str> = events
        .iter()
        .filter(|l| field(l, "vector") == Some("NET_RX"))
        .collect();
    assert!(!net_rx.is_empty(), "no NET_RX events:\n{out}");
    for l in &events {
        let cpu: u32 = field(l, "cpu").unwrap().parse().unwrap();
        assert!(cpu < 1024, "{l}");
        let lat: u64 = field(l, "latency_ns").unwrap().parse().unwrap();
        assert!(lat > 1000, "an event under the 1 µs threshold: {l}");
        let ty = field(l, "type").unwrap();
        assert!(
            [
                "SOFTIRQ_SCHED_SLOW",
                "SOFTIRQ_EXCUTE_SLOW",
                "SOFTIRQ_SCHED_100MS",
                "SOFTIRQ_EXCUTE_100MS"
            ]
            .contains(&ty),
            "{l}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("sonde_softirq_slow_total")),
        "{out}"
    );
}

/// (count, sum_ns) per (vector, phase) from `totals`.
fn totals(loaded: &sonde::bpf::Loaded) -> BTreeMap<(String, String), (i64, i64)> {
    struct_entries(loaded, "totals")
        .into_iter()
        .map(|(k, v)| {
            (
                (s(&k, "vec"), s(&k, "phase")),
                (int(&v, "count"), int(&v, "sum_ns")),
            )
        })
        .collect()
}

#[test]
fn softirq_kernel_totals_agree_with_histograms() {
    if !require_root("softirq_kernel_totals_agree_with_histograms") {
        return;
    }
    let (mut loaded, env) = load("softirq", &[]);
    assert_eq!(loaded.variant.name, "raw_tracepoint");
    let ns = NetnsThread::new().unwrap();
    softirq_load(&ns, Duration::from_millis(1000));

    // Softirqs keep running while we read: totals before and after the histogram
    // bracket it (a sample updates its histogram slot first, then its totals).
    let before = totals(&loaded);
    let mut hist: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for (k, v) in entries(&loaded, "hist") {
        let slot = int(&k, "slot") as usize;
        let b = hist.entry((s(&k, "vec"), s(&k, "phase"))).or_default();
        if b.len() <= slot {
            b.resize(slot + 1, 0);
        }
        b[slot] += v.as_int().unwrap();
    }
    let after = totals(&loaded);

    for vector in ["NET_RX", "TIMER"] {
        for phase in ["DELAY", "RUN"] {
            let key = (vector.to_string(), phase.to_string());
            let b = hist
                .get(&key)
                .unwrap_or_else(|| panic!("no {key:?} histogram"));
            let n: i64 = b.iter().sum();
            assert!(n > 0, "{key:?}");
            let (c0, s0) = before[&key];
            let (c1, s1) = after[&key];
            assert!(
                c0 <= n && n <= c1 + 2,
                "{key:?}: totals {c0}..{c1}, histogram {n}"
            );
            // The sum lies within the bucket bounds: slot i holds (2^(i-1), 2^i].
            let lo: i64 = b
                .iter()
                .enumerate()
                .map(|(i, c)| if i == 0 { 0 } else { c << (i - 1) })
                .sum();
            let hi: i64 = b.iter().enumerate().map(|(i, c)| c << i).sum();
            assert!(
                s0 <= hi && lo <= s1,
                "{key:?}: sum {s0}..{s1} outside bucket bounds [{lo}, {hi}]"
            );
        }
    }
    // Default thresholds (10 ms): hardly any sample is an event.
    let samples: i64 = after.values().map(|(c, _)| c).sum();
    let events = drain(&mut loaded, &env);
    assert!(
        (events.len() as i64) * 100 <= samples,
        "{} events for {samples} samples at slow_ns = 10 ms",
        events.len()
    );
    for e in &events {
        assert!(int(e, "latency_ns") > 10_000_000, "{e:?}");
    }
}

/// The fallback variant (classic irq:softirq_* tracepoints) measures the same: loaded
/// on its own, it sees TIMER and NET_RX run times.
#[test]
fn softirq_classic_tracepoint_variant_measures_too() {
    if !require_root("softirq_classic_tracepoint_variant_measures_too") {
        return;
    }
    use sonde::bpf::catalog::{self, ProgramSpec};
    let full = catalog::find("softirq").unwrap();
    let classic = full
        .variants
        .iter()
        .position(|v| v.name == "tracepoint")
        .expect("a tracepoint variant");
    let spec: &'static ProgramSpec = Box::leak(Box::new(ProgramSpec {
        name: full.name,
        summary: full.summary,
        object: full.object,
        variants: &full.variants[classic..classic + 1],
    }));
    let btf = sonde::btf::KernelBtf::locate(None).expect("kernel BTF");
    let loaded = sonde::bpf::load(spec, &[], &btf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.variant.name, "tracepoint");
    let table = loaded.maps.clone();
    loaded.maps.set_env(Arc::new(sonde::bpf::decode::DecodeEnv {
        pods: Arc::new(sonde::pods::HostResolver::new("test-node")),
        drop_reasons: Default::default(),
        ksyms: sonde::bpf::ksyms::Symbols::Kernel,
        stacks: Some(Box::new(move |id| table.stack(id))),
        notes: None,
        pod_cache: Default::default(),
    }));
    let ns = NetnsThread::new().unwrap();
    softirq_load(&ns, Duration::from_millis(500));
    let t = totals(&loaded);
    for vector in ["NET_RX", "TIMER"] {
        let (count, sum) = t[&(vector.to_string(), "RUN".to_string())];
        assert!(count > 0 && sum > 0, "{vector}: {t:?}");
    }
}
