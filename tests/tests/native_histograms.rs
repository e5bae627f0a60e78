//! End to end: log2 histograms as a real Prometheus reads them. With
//! `--enable-feature=native-histograms` it scrapes the protobuf format and stores
//! one native histogram per series, in seconds, whose count, sum and quantiles are
//! right; without it the text formats keep every `metrics.classic_log2_step`-th
//! bucket, or every one for the namespaces in `metrics.detail_namespaces`. The
//! series each form costs per pod namespace are counted and printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use sonde_tests::daemon::{http_get, prometheus_with, promtool_check, Daemon};
use sonde_tests::kubernetes::url_encode;
use sonde_tests::require_root;

/// Three namespaces of two pods, each with a log2 histogram in nanoseconds
/// (exported in seconds, slots 0..=40 like netif_txlat's), observed once at start.
/// `shop/web-1` gets 100 waits of 1.5us (slot 11: 1.024us..2.048us], 10 of 3ms
/// (slot 22: 2.1ms..4.2ms] and one of 0 (slot 0); every other pod one of 1.5us.
/// Beside it, a counter and a histogram with explicit buckets; and a counter and a
/// log2 histogram marked detail, for shop/web-1, db/web-1 and the host.
const SCRIPT: &str = r#"//! native: histograms observed once, at start.
const PROBE = #{ interval: "1s" };
fn init() {
    let lat = metrics::log2_histogram("e2e_wait_seconds", "Waits.", ["namespace", "pod"],
        #{ scale: 1e-9, max_slot: 40 });
    for ns in ["shop", "db", "infra"] {
        for pod in ["web-1", "web-2"] {
            lat.observe([ns, pod], 1500);
        }
    }
    for i in 0..99 { lat.observe(["shop", "web-1"], 1500); }
    for i in 0..10 { lat.observe(["shop", "web-1"], 3000000); }
    lat.observe(["shop", "web-1"], 0);
    metrics::counter("e2e_events_total", "Events.", ["pod"]).add(["web-1"], 7);
    let size = metrics::histogram("e2e_size_bytes", "Sizes.", ["pod"], [100, 1000]);
    size.observe(["web-1"], 500);
    size.observe(["web-1"], 50);
    let dl = metrics::log2_histogram("e2e_detail_wait_seconds", "Waits, detail.",
        ["namespace", "pod"], #{ scale: 1e-9, max_slot: 40, detail: true });
    let dc = metrics::counter("e2e_detail_total", "Detail.", ["namespace", "pod"], #{ detail: true });
    for p in [["shop", "web-1"], ["db", "web-1"], ["", ""]] {
        dl.observe(p, 1500);
        dc.inc(p);
    }
}
"#;

fn start(test: &str, extra: &str) -> Daemon {
    Daemon::start_with(
        test,
        &[],
        extra,
        &[("native.rhai", &|p| std::fs::write(p, SCRIPT).unwrap())],
        None,
    )
}

/// Text series of `sonde_e2e_wait_seconds` by namespace.
fn series_by_namespace(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("sonde_e2e_wait_seconds"))
    {
        let ns = l
            .split_once("namespace=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(ns, _)| ns.to_string())
            .unwrap_or_default();
        *out.entry(ns).or_default() += 1;
    }
    out
}

/// `namespace/pod` (or "" for the host) of every series of the detail families.
fn detail_pods(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("sonde_e2e_detail_"))
        .map(|l| {
            let label = |k: &str| {
                l.split_once(&format!("{k}=\""))
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default()
            };
            let (ns, pod) = (label("namespace"), label("pod"));
            if pod.is_empty() {
                String::new()
            } else {
                format!("{ns}/{pod}")
            }
        })
        .collect()
}

#[test]
fn text_keeps_every_classic_log2_step_th_bucket() {
    if !require_root("text_keeps_every_classic_log2_step_th_bucket") {
        return;
    }
    // The default: every fourth power of two.
    let coarse = start("native-coarse", "");
    let text = coarse.metrics();
    promtool_check(&text);
    let by_ns = series_by_namespace(&text);
    // Per pod: 12 buckets (slots 0, 4, ..., 40 and +Inf), _sum and _count.
    assert_eq!(
        by_ns,
        [("db", 28), ("infra", 28), ("shop", 28)]
            .map(|(n, c)| (n.to_string(), c))
            .into(),
        "{text}"
    );
    // The bucket of 4.1us (slot 12) holds web-1's 100 waits of at most 1.5us and
    // its zero; 268ms (slot 28) the 10 of 3ms as well.
    let bucket = |text: &str, le: &str| {
        sonde_tests::daemon::sample(
            text,
            "sonde_e2e_wait_seconds_bucket",
            &[("namespace", "shop"), ("pod", "web-1"), ("le", le)],
        )
    };
    assert_eq!(bucket(&text, "4.096e-6"), Some(101.0), "{text}");
    assert_eq!(bucket(&text, "0.268435456"), Some(111.0), "{text}");
    assert_eq!(
        bucket(&text, "2.048e-6"),
        None,
        "slot 11 is not kept: {text}"
    );
    // Detail families: the host's series only (pod_detail core, no namespace listed).
    assert_eq!(detail_pods(&text), ["".to_string()].into(), "{text}");
    drop(coarse);

    let full = start("native-full", "metrics:\n  classic_log2_step: 1\n");
    let text = full.metrics();
    promtool_check(&text);
    let full_ns = series_by_namespace(&text);
    // Per pod: 42 buckets (slots 0..=40 and +Inf), _sum and _count.
    assert_eq!(
        full_ns,
        [("db", 88), ("infra", 88), ("shop", 88)]
            .map(|(n, c)| (n.to_string(), c))
            .into(),
        "{text}"
    );
    assert_eq!(bucket(&text, "2.048e-6"), Some(101.0), "{text}");
    assert_eq!(bucket(&text, "4.096e-6"), Some(101.0), "{text}");
    drop(full);

    // Coarse for the node, every bucket for the namespace someone looks at.
    let detail = start("native-detail", "metrics:\n  detail_namespaces: [shop]\n");
    let text = detail.metrics();
    promtool_check(&text);
    let detail_ns = series_by_namespace(&text);
    assert_eq!(
        detail_ns,
        [("db", 28), ("infra", 28), ("shop", 88)]
            .map(|(n, c)| (n.to_string(), c))
            .into(),
        "{text}"
    );
    assert_eq!(bucket(&text, "2.048e-6"), Some(101.0), "{text}");
    // ... and the detail families for the listed namespace too.
    assert_eq!(
        detail_pods(&text),
        ["".to_string(), "shop/web-1".to_string()].into(),
        "{text}"
    );
    eprintln!(
        "series of sonde_e2e_wait_seconds per namespace (2 pods each): \
         classic_log2_step 1: {full_ns:?}; classic_log2_step 4: {by_ns:?}; \
         4 with detail_namespaces [shop]: {detail_ns:?}"
    );
}

/// The values of an instant query, by the label `by`: `None` while Prometheus has
/// nothing (or fails).
fn query(prom: SocketAddr, expr: &str, by: &str) -> Option<BTreeMap<String, f64>> {
    let (code, body) = http_get(
        prom,
        &format!("/api/v1/query?query={}", url_encode(expr)),
        &[],
    )
    .ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    result
        .iter()
        .map(|r| {
            let key = r["metric"][by].as_str().unwrap_or("").to_string();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

#[test]
fn prometheus_with_native_histograms_reads_log2_histograms_in_seconds() {
    if !require_root("prometheus_with_native_histograms_reads_log2_histograms_in_seconds") {
        return;
    }
    let d = start("native-prometheus", "");
    let (mut prom, paddr) = prometheus_with(
        &d.dir,
        &format!(
            "  - job_name: sonde\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
        &["--enable-feature=native-histograms"],
    );
    let log =
        || std::fs::read_to_string(d.dir.join("prometheus/prometheus.log")).unwrap_or_default();
    let web1 = r#"sonde_e2e_wait_seconds{namespace="shop",pod="web-1"}"#;
    let mut count = None;
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(250));
        count = query(paddr, &format!("histogram_count({web1})"), "pod");
        if count.is_some() {
            break;
        }
    }
    let one = |expr: &str| -> f64 {
        let r =
            query(paddr, expr, "pod").unwrap_or_else(|| panic!("no answer to {expr}\n{}", log()));
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r.into_values().next().unwrap()
    };
    let result = || {
        assert_eq!(
            count.as_ref().and_then(|c| c.get("web-1")).copied(),
            Some(111.0),
            "histogram_count never came: {count:?}\n{}",
            log()
        );
        let sum = one(&format!("histogram_sum({web1})"));
        assert!(
            (sum - (100.0 * 1.5e-6 + 10.0 * 3e-3)).abs() < 1e-9,
            "sum {sum}"
        );
        // The median is in slot 11 as Prometheus reads it in seconds: (1.024us,
        // 2.048us], the upper bound placed within 1.6%.
        let p50 = one(&format!("histogram_quantile(0.5, {web1})"));
        assert!(p50 > 1.024e-6 && p50 <= 2.048e-6 * 1.017, "p50 {p50}");
        // The 95th percentile is in slot 22: (2.1ms, 4.2ms].
        let p95 = one(&format!("histogram_quantile(0.95, {web1})"));
        assert!(p95 > 2.097152e-3 && p95 <= 4.194304e-3 * 1.017, "p95 {p95}");
        eprintln!("native shop/web-1: count 111, sum {sum}, p50 {p50}, p95 {p95}");
        // One series per pod's histogram, no _bucket series at all.
        let series = query(
            paddr,
            r#"count by (namespace) ({__name__=~"sonde_e2e_wait_seconds.*"})"#,
            "namespace",
        )
        .unwrap();
        eprintln!(
            "series of sonde_e2e_wait_seconds per namespace in Prometheus (native): {series:?}"
        );
        assert_eq!(
            series,
            [("db", 2.0), ("infra", 2.0), ("shop", 2.0)]
                .map(|(n, c)| (n.to_string(), c))
                .into()
        );
        // Aggregation across pods: the six pods' waits together.
        let all = one("histogram_count(sum(sonde_e2e_wait_seconds))");
        assert_eq!(all, 116.0);
        // The other kinds came through the protobuf format as well.
        assert_eq!(one("sonde_e2e_events_total"), 7.0);
        // A detail log2 histogram is a native histogram for every pod (one series);
        // a detail counter only for the host (no namespace listed for detail).
        assert_eq!(
            one(r#"histogram_count(sonde_e2e_detail_wait_seconds{namespace="db",pod="web-1"})"#),
            1.0
        );
        let detail_counts = query(paddr, "sonde_e2e_detail_total", "pod").unwrap();
        assert_eq!(
            detail_counts,
            [(String::new(), 1.0)].into(),
            "{detail_counts:?}"
        );
        // Classic buckets, `le` canonical as from OpenMetrics.
        assert_eq!(one(r#"sonde_e2e_size_bytes_bucket{le="100.0"}"#), 1.0);
        assert_eq!(one(r#"sonde_e2e_size_bytes_bucket{le="1000.0"}"#), 2.0);
        assert_eq!(one(r#"sonde_e2e_size_bytes_bucket{le="+Inf"}"#), 2.0);
        assert_eq!(one("sonde_e2e_size_bytes_count"), 2.0);
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(result));
    let _ = prom.kill();
    let _ = prom.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
