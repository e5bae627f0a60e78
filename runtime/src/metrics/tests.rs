use super::*;

fn reg() -> Registry {
    Registry::new("n1")
}

#[test]
fn prefix_is_added_once() {
    let r = reg();
    assert_eq!(
        r.counter("a_total", "A.", &["x"], 10).unwrap().name(),
        "sonde_a_total"
    );
    assert_eq!(
        r.counter("sonde_bee_total", "B.", &["x"], 10)
            .unwrap()
            .name(),
        "sonde_bee_total"
    );
}

#[test]
fn same_shape_returns_the_same_family_and_keeps_series() {
    let r = reg();
    let a = r.counter("resets_total", "Resets.", &["pod"], 10).unwrap();
    a.inc(&["web"]).unwrap();
    let b = r
        .counter("resets_total", "Resets, reworded.", &["pod"], 10)
        .unwrap();
    b.inc(&["web"]).unwrap();
    assert_eq!(a.get(&["web"]), Some(2.0));
    assert!(r
        .render_prometheus()
        .contains("# HELP sonde_resets_total Resets, reworded."));
}

#[test]
fn different_shape_is_a_conflict_naming_both() {
    let r = reg();
    r.counter("resets_total", "Resets.", &["pod"], 10).unwrap();
    let e = r
        .counter("resets_total", "Resets.", &["pod", "kind"], 10)
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "metric `sonde_resets_total` is already registered as counter{pod}; cannot register it as counter{pod, kind}"
    );
    let e = r
        .gauge("sonde_x", "X.", &["pod"], 10)
        .and_then(|_| r.histogram("x", "X.", &["pod"], vec![1.0], 10));
    assert!(
        matches!(e, Err(MetricsError::Conflict { .. })),
        "{e:?}",
        e = e.err()
    );
}

#[test]
fn names_and_labels_are_checked_with_a_reason() {
    let r = reg();
    let err = |res: Result<Counter, MetricsError>| res.err().unwrap().to_string();
    assert_eq!(
        err(r.counter("resets", "R.", &["pod"], 10)),
        "invalid metric name `sonde_resets`: counter names end in `_total` (e.g. `sonde_resets_total`)"
    );
    assert!(err(r.counter("Resets_total", "R.", &["pod"], 10)).contains("snake_case"));
    assert!(err(r.counter("lat_ms_total", "R.", &["pod"], 10)).contains("abbreviated unit `ms`"));
    assert!(err(r.counter("lat_milliseconds_total", "R.", &["pod"], 10)).contains("base unit"));
    assert!(err(r.counter("a_total", "R.", &["Pod"], 10)).contains("invalid label name `Pod`"));
    assert!(err(r.counter("a_total", "R.", &["node"], 10)).contains("added to every series"));
    assert!(err(r.counter("a_total", "R.", &["pod", "pod"], 10)).contains("declared twice"));
    assert!(err(r.counter("a_total", "  ", &["pod"], 10)).contains("help text is empty"));
    assert!(r
        .gauge("queue_total", "Q.", &["pod"], 10)
        .err()
        .unwrap()
        .to_string()
        .contains("only counters"));
    assert!(r
        .histogram("h", "H.", &["pod"], vec![2.0, 1.0], 10)
        .err()
        .unwrap()
        .to_string()
        .contains("increase"));
    assert!(r
        .counter("sonde_script_errors_total", "E.", &["script"], 10)
        .is_err());
}

#[test]
fn label_arity_mismatch_is_an_error() {
    let r = reg();
    let c = r
        .counter("a_total", "A.", &["namespace", "pod"], 10)
        .unwrap();
    assert_eq!(
        c.inc(&["shop"]).unwrap_err().to_string(),
        "metric `sonde_a_total` has 2 label(s) (namespace, pod), got 1 value(s)"
    );
}

#[test]
fn budget_drops_new_series_and_counts_them() {
    let r = reg();
    let c = r.counter("a_total", "A.", &["port"], 2).unwrap();
    for port in [1i64, 2, 3, 4, 1] {
        c.inc(&[port]).unwrap();
    }
    assert_eq!(c.len(), 2);
    assert_eq!(c.dropped(), 2);
    assert_eq!(c.get(&[1i64]), Some(2.0));
    assert!(r.render_prometheus().contains(
        r#"sonde_series_dropped_total{node="n1",metric="sonde_a_total",reason="series_budget"} 2"#
    ));
    // Room again after a series is removed.
    assert!(c.remove(&[2i64]).unwrap());
    c.inc(&[3i64]).unwrap();
    assert_eq!(c.get(&[3i64]), Some(1.0));
}

#[test]
fn set_total_is_monotonic_and_accepts_resets() {
    let r = reg();
    let c = r.counter("a_total", "A.", &["pod"], 10).unwrap();
    c.set_total(&["p"], 10u64).unwrap();
    c.set_total(&["p"], 15u64).unwrap();
    assert_eq!(c.get(&["p"]), Some(15.0));
    c.set_total(&["p"], 3u64).unwrap(); // the kernel map was recreated
    assert_eq!(c.get(&["p"]), Some(3.0));
    assert!(c.add(&["p"], -1.0).is_err());
    assert!(c.set_total(&["p"], f64::NAN).is_err());
}

#[test]
fn gauges_set_and_add() {
    let r = reg();
    let g = r.gauge("queue_bytes", "Q.", &["pod"], 10).unwrap();
    g.set(&["p"], 5).unwrap();
    g.add(&["p"], -2.5).unwrap();
    assert_eq!(g.get(&["p"]), Some(2.5));
}

#[test]
fn retain_drops_series_of_gone_pods() {
    let r = reg();
    let g = r.gauge("queue_bytes", "Q.", &["pod"], 10).unwrap();
    for p in ["a", "b", "c"] {
        g.set(&[p], 1).unwrap();
    }
    g.retain(|labels| &*labels[0] != "b");
    assert_eq!(g.len(), 2);
    assert_eq!(g.get(&["b"]), None);
}

#[test]
fn histograms_observe_into_buckets() {
    let r = reg();
    let h = r
        .histogram("lat_seconds", "L.", &["pod"], vec![0.1, 1.0], 10)
        .unwrap();
    for v in [0.05, 0.1, 0.5, 3.0] {
        h.observe(&["p"], v).unwrap();
    }
    let (counts, sum) = h.get(&["p"]).unwrap();
    assert_eq!(counts, vec![2, 1, 1]);
    assert!((sum - 3.65).abs() < 1e-9);
    let text = r.render_prometheus();
    assert!(
        text.contains("sonde_lat_seconds_bucket{node=\"n1\",pod=\"p\",le=\"0.1\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("sonde_lat_seconds_bucket{node=\"n1\",pod=\"p\",le=\"1\"} 3\n"));
    assert!(text.contains("sonde_lat_seconds_bucket{node=\"n1\",pod=\"p\",le=\"+Inf\"} 4\n"));
    assert!(text.contains("sonde_lat_seconds_count{node=\"n1\",pod=\"p\"} 4\n"));
}

#[test]
fn log2_histograms_take_kernel_slots_and_scale() {
    let r = reg();
    let h = r
        .log2_histogram("lat_seconds", "L.", &["pod"], 4, 1e-9, 10)
        .unwrap();
    assert_eq!(h.bounds(), &[1e-9, 2e-9, 4e-9, 8e-9, 16e-9]);
    // Slots 0..=6 from a kernel map: slots past 4 count as +Inf.
    h.set_buckets(
        &["p"],
        BucketCounts::PerBucket(&[1, 0, 2, 0, 0, 3, 4]),
        1000.0,
    )
    .unwrap();
    let (counts, sum) = h.get(&["p"]).unwrap();
    assert_eq!(counts, vec![1, 0, 2, 0, 0, 7]);
    assert!((sum - 1e-6).abs() < 1e-15);
    // Observing raw nanoseconds: 3 ns falls in slot 2 (bound 4 ns).
    h.observe(&["q"], 3u64).unwrap();
    assert_eq!(h.get(&["q"]).unwrap().0, vec![0, 0, 1, 0, 0, 0]);
    // Cumulative counts, and a lower total is a reset.
    h.set_buckets(&["p"], BucketCounts::Cumulative(&[1, 1, 2]), 10.0)
        .unwrap();
    assert_eq!(h.get(&["p"]).unwrap().0, vec![1, 0, 1, 0, 0, 0]);
    assert!(h
        .set_buckets(&["p"], BucketCounts::Cumulative(&[2, 1]), 0.0)
        .is_err());
}

#[test]
fn render_escapes_and_adds_node() {
    let r = Registry::new("node \"a\"");
    let c = r
        .counter("a_total", "Line one\nback\\slash.", &["pod"], 10)
        .unwrap();
    c.inc(&["we\"b\\1\n"]).unwrap();
    let text = r.render_prometheus();
    assert!(text.contains(
        "# HELP sonde_a_total Line one\\nback\\\\slash.\n# TYPE sonde_a_total counter\n"
    ));
    assert!(
        text.contains(r#"sonde_a_total{node="node \"a\"",pod="we\"b\\1\n"} 1"#),
        "{text}"
    );
}

fn sample_registry() -> Registry {
    let r = reg();
    let c = r
        .counter(
            "tcp_reset_segments_total",
            "TCP RST segments.",
            &["namespace", "pod", "kind"],
            100,
        )
        .unwrap();
    c.inc(&["shop", "web-1", "NOSOCK"]).unwrap();
    c.add(&["shop", "web-\"2\"", "ACTIVE"], 41u64).unwrap();
    let g = r
        .gauge("queue_bytes", "Queued bytes.", &[] as &[&str], 100)
        .unwrap();
    g.set(&[] as &[&str], 0.25).unwrap();
    let h = r
        .log2_histogram("latency_seconds", "Latency.", &["pod"], 20, 1e-9, 100)
        .unwrap();
    for v in [100u64, 3000, 3000, 70000] {
        h.observe(&["web-1"], v).unwrap();
    }
    let hb = r
        .histogram(
            "size_bytes",
            "Sizes.",
            &["pod"],
            vec![64.0, 1500.0, 9000.0],
            1,
        )
        .unwrap();
    hb.observe(&["a"], 100.0).unwrap();
    hb.observe(&["b"], 100.0).unwrap(); // dropped: budget 1
    r.script_errors().inc(&["x", "deadline"]).unwrap();
    r
}

/// The export must satisfy Prometheus' own checker. Runs `promtool check metrics`
/// when it is installed (`apt-get install prometheus`); says so loudly when it is not
/// and fails under CI=true.
#[test]
fn render_passes_promtool() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let text = sample_registry().render_prometheus();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            crate::testkit::skip(
                "render_passes_promtool",
                &format!("promtool not runnable ({e}); apt-get install prometheus"),
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn summary_shows_a_scripts_families_sorted_with_bars() {
    let r = sample_registry();
    let c = r
        .counter(
            "tcp_reset_segments_total",
            "TCP RST segments.",
            &["namespace", "pod", "kind"],
            100,
        )
        .unwrap();
    c.add_owner("tcp_reset");
    let h = r
        .log2_histogram("latency_seconds", "Latency.", &["pod"], 20, 1e-9, 100)
        .unwrap();
    h.add_owner("tcp_reset");
    let s = r.summary("tcp_reset");
    println!("{s}");
    let expected = "\
sonde_latency_seconds{pod=web-1}  count 4, sum 7.61e-5
  (64, 128]   1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |
  (128, 256]  0 |                                                    |
  (256, 512]  0 |                                                    |
  (512, 1K]   0 |                                                    |
  (1K, 2K]    0 |                                                    |
  (2K, 4K]    2 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
  (4K, 8K]    0 |                                                    |
  (8K, 16K]   0 |                                                    |
  (16K, 32K]  0 |                                                    |
  (32K, 64K]  0 |                                                    |
  (64K, 128K] 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |

sonde_tcp_reset_segments_total
  {namespace=shop,pod=web-\"2\",kind=ACTIVE}  41
  {namespace=shop,pod=web-1,kind=NOSOCK}     1
";
    assert_eq!(s, expected);
    assert!(
        !s.contains("queue_bytes"),
        "other scripts' families are left out"
    );
    let all = r.summary_where(|f| f.name() == "sonde_size_bytes");
    assert!(
        all.contains("(1 updates dropped: series budget of 1 reached)"),
        "{all}"
    );
    assert!(all.contains("(64, 1500] 1 |"), "{all}");
}

#[test]
fn free_text_becomes_a_name() {
    assert_eq!(sanitize_name("TCP Retrans/sec"), "tcp_retrans_sec");
    assert_eq!(sanitize_name("--kinds--"), "kinds");
    assert_eq!(sanitize_name("5xx"), "n5xx");
    assert_eq!(sanitize_name(""), "unnamed");
}

#[test]
fn table_names_map_to_valid_names_in_base_units() {
    let name = |t: &str, k| {
        let n = table_name(t, k);
        (n.name, n.scale)
    };
    let count = |t: &str| name(t, MetricKind::Counter).0;
    let hist = |t: &str| name(t, MetricKind::Histogram);
    assert_eq!(count("2xx"), "sonde_2xx_total");
    assert_eq!(count("read_wait_ns"), "sonde_read_wait_total");
    assert_eq!(count("TCP kinds"), "sonde_tcp_kinds_total");
    assert_eq!(count("drops_total"), "sonde_drops_total");
    assert_eq!(count("sonde_resets"), "sonde_resets_total");
    assert_eq!(count("@"), "sonde_table_total");
    assert_eq!(hist("lat_ms"), ("sonde_lat_seconds".into(), 1e-3));
    assert_eq!(hist("rtt_us"), ("sonde_rtt_seconds".into(), 1e-6));
    assert_eq!(
        hist("read_wait_ns"),
        ("sonde_read_wait_seconds".into(), 1e-9)
    );
    assert_eq!(hist("idle_minutes"), ("sonde_idle_seconds".into(), 60.0));
    assert_eq!(hist("size_kb"), ("sonde_size_bytes".into(), 1024.0));
    assert_eq!(hist("size_bytes"), ("sonde_size_bytes".into(), 1.0));
    assert_eq!(hist("port_hist"), ("sonde_port_hist".into(), 1.0));
    assert_eq!(hist("req_count"), ("sonde_req".into(), 1.0));
    assert_eq!(
        hist("req_count_ms"),
        ("sonde_req_count_seconds".into(), 1e-3)
    );
    assert_eq!(hist("5xx_ms"), ("sonde_5xx_seconds".into(), 1e-3));
    assert_eq!(hist("ms"), ("sonde_table_seconds".into(), 1e-3));
    // Whatever the text, the name passes the checks `promtool` makes.
    let long = "x".repeat(300);
    let cut_at_count = format!("{} count {}", "x ".repeat(74), "y".repeat(10));
    for t in [
        "2xx",
        "5",
        "m",
        "s",
        "h_d_b",
        "ms",
        "",
        "@",
        "_",
        "lat m",
        "a_m_total",
        "x_total",
        "x_sum",
        "x_bucket_count",
        "counter",
        "p99_gauge",
        "kilobytes_total",
        "rx_kib_ms",
        "ÉTÉ",
        "min",
        "sonde",
        "sonde_sonde",
        &long,
        &cut_at_count,
    ] {
        for kind in [MetricKind::Counter, MetricKind::Histogram] {
            let n = table_name(t, kind).name;
            assert!(
                names::validate_name(&n, kind).is_ok(),
                "{t:?} as a {} -> {n}: {:?}",
                kind.as_str(),
                names::validate_name(&n, kind)
            );
        }
    }
}

#[test]
fn tables_that_export_the_same_name_are_a_conflict_naming_both() {
    let r = reg();
    let s = r.for_script("x");
    let a = s.count_table("lat ms", &["key"], 10).unwrap();
    assert_eq!(a.name(), "sonde_lat_total");
    let again = s.count_table("lat ms", &["key"], 10).unwrap();
    assert_eq!(again.name(), a.name(), "the same table finds its family");
    let e = s.count_table("lat_us", &["key"], 10).err().unwrap();
    assert_eq!(
        e.to_string(),
        "table \"lat_us\" would be exported as `sonde_lat_total`, as the table \"lat ms\" is; rename the table"
    );
    s.counter("resets_total", "Resets.", &["key"], 10).unwrap();
    let e = s.count_table("resets", &["key"], 10).err().unwrap();
    assert_eq!(
        e.to_string(),
        "table \"resets\" would be exported as `sonde_resets_total`, the name of a metric registered with metrics::*; rename the table"
    );
}

#[test]
fn summary_prints_tables_under_their_names_like_bpftrace() {
    let r = reg();
    let s = r.for_script("x");
    let conns = s.count_table("conns", &["pod", "port"], 10).unwrap();
    for (pod, port, n) in [("web-1", "8080", 12), ("web-2", "443", 3), ("", "22", 1)] {
        for _ in 0..n {
            conns.inc(&[pod, port]).unwrap();
        }
    }
    let kinds = s.count_table("2xx", &["key"], 10).unwrap();
    kinds.inc(&["GET"]).unwrap();
    let lat = s.hist_table("lat_ms", &[] as &[&str], 10).unwrap();
    for v in [100, 300, 400, 490] {
        lat.observe::<&str, _>(&[], v).unwrap();
    }
    let other = s
        .counter("other_total", "Other.", &[] as &[&str], 10)
        .unwrap();
    other.inc::<&str>(&[]).unwrap();
    let out = r.summary("x");
    println!("{out}");
    let expected = "\
@2xx[GET]: 1

@conns[pod=, port=22]:         1
@conns[pod=web-2, port=443]:   3
@conns[pod=web-1, port=8080]: 12

@lat_ms: count 4, sum 1290
  (64, 128]  1 |@@@@@@@@@@@@@@@@@                                   |
  (128, 256] 0 |                                                    |
  (256, 512] 3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|

sonde_other_total  1
";
    assert_eq!(out, expected);
    let text = r.render_prometheus();
    assert!(
        text.contains(r#"sonde_conns_total{node="n1",pod="web-1",port="8080"} 12"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sonde_2xx_total{node="n1",key="GET"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sonde_lat_seconds_bucket{node="n1",le="0.128"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"sonde_lat_seconds_sum{node="n1"} 1.29"#),
        "{text}"
    );
}

#[test]
fn openmetrics_exact_text_for_a_counter_a_gauge_and_a_histogram() {
    let r = reg();
    let c = r
        .counter(
            "tcp_reset_segments_total",
            "TCP RST segments, \"by pod\".",
            &["pod"],
            10,
        )
        .unwrap();
    c.add(&["web-\"1\""], 3u64).unwrap();
    let g = r
        .gauge("queue_bytes", "Queued bytes.", &[] as &[&str], 10)
        .unwrap();
    g.set(&[] as &[&str], 0.25).unwrap();
    let h = r
        .histogram(
            "latency_seconds",
            "Latency.",
            &["pod"],
            vec![0.001, 1.0, 1e6],
            10,
        )
        .unwrap();
    for v in [0.0005, 0.5, 0.5, 2e6] {
        h.observe(&["a"], v).unwrap();
    }
    let expected = "\
# TYPE sonde_latency_seconds histogram
# HELP sonde_latency_seconds Latency.
sonde_latency_seconds_bucket{node=\"n1\",pod=\"a\",le=\"0.001\"} 1
sonde_latency_seconds_bucket{node=\"n1\",pod=\"a\",le=\"1.0\"} 3
sonde_latency_seconds_bucket{node=\"n1\",pod=\"a\",le=\"1e+06\"} 3
sonde_latency_seconds_bucket{node=\"n1\",pod=\"a\",le=\"+Inf\"} 4
sonde_latency_seconds_sum{node=\"n1\",pod=\"a\"} 2000001.0005
sonde_latency_seconds_count{node=\"n1\",pod=\"a\"} 4
# TYPE sonde_metric_families_dropped counter
# HELP sonde_metric_families_dropped New metric families a script could not register: it already held limits.families_per_script of them (the script got an error).
# TYPE sonde_queue_bytes gauge
# HELP sonde_queue_bytes Queued bytes.
sonde_queue_bytes{node=\"n1\"} 0.25
# TYPE sonde_script_errors counter
# HELP sonde_script_errors Script handler failures, by script and kind (operations, deadline, size, call_depth, type, runtime, ...).
# TYPE sonde_tcp_reset_segments counter
# HELP sonde_tcp_reset_segments TCP RST segments, \\\"by pod\\\".
sonde_tcp_reset_segments_total{node=\"n1\",pod=\"web-\\\"1\\\"\"} 3
# TYPE sonde_series_dropped counter
# HELP sonde_series_dropped Updates dropped because they would have created a series past a budget: the metric's own (reason series_budget, limits.series_budget) or that of all scripts' series together (reason total_series, limits.total_series).
sonde_series_dropped_total{node=\"n1\",metric=\"sonde_latency_seconds\",reason=\"series_budget\"} 0
sonde_series_dropped_total{node=\"n1\",metric=\"sonde_queue_bytes\",reason=\"series_budget\"} 0
sonde_series_dropped_total{node=\"n1\",metric=\"sonde_tcp_reset_segments_total\",reason=\"series_budget\"} 0
# EOF
";
    assert_eq!(r.render_openmetrics(), expected);
    // The Prometheus form of the same registry keeps `_total` family names, the
    // HELP-before-TYPE order, plain `le` values, and has no `# EOF`.
    let prom = r.render_prometheus();
    assert!(prom.contains(
        "# HELP sonde_tcp_reset_segments_total TCP RST segments, \"by pod\".\n\
         # TYPE sonde_tcp_reset_segments_total counter\n"
    ));
    assert!(prom.contains("le=\"1\"} 3\n"), "{prom}");
    assert!(!prom.contains("# EOF"));
}

#[test]
fn openmetrics_bucket_bounds_are_canonical_numbers() {
    use super::render::canonical_number as c;
    // The examples of the OpenMetrics 1.0 spec, section "Canonical Numbers".
    for (v, s) in [
        (0.0, "0.0"),
        (0.001, "0.001"),
        (0.002, "0.002"),
        (0.01, "0.01"),
        (0.1, "0.1"),
        (0.9, "0.9"),
        (0.95, "0.95"),
        (0.99, "0.99"),
        (0.999, "0.999"),
        (1.0, "1.0"),
        (1.7, "1.7"),
        (10.0, "10.0"),
        (1e-10, "1e-10"),
        (1e-9, "1e-09"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (100000.0, "100000.0"),
        (1e6, "1e+06"),
        (1e10, "1e+10"),
        (f64::INFINITY, "+Inf"),
    ] {
        assert_eq!(c(v), s, "{v:e}");
    }
    // Log2 bounds as sonde exports them, and Go's %g past the spec's examples.
    assert_eq!(c(16e-9), "1.6e-08");
    assert_eq!(c(131072.0), "131072.0");
    assert_eq!(c(1048576.0), "1.048576e+06");
    assert_eq!(c(2.5e-5), "2.5e-05");
    assert_eq!(c(123.456), "123.456");
    assert_eq!(c(-2.0), "-2.0");
}

/// The OpenMetrics export must satisfy a real OpenMetrics parser: the Python
/// reference client's (`apt-get install python3-prometheus-client`), which checks
/// family names, suffixes, `le` values, bucket order, `_count` against `+Inf` and
/// the `# EOF`. Says so loudly when it is missing and fails under CI=true.
#[test]
fn render_openmetrics_passes_the_reference_parser() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const CHECK: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        fams = list(parse(sys.stdin.read()))\n\
        print(' '.join(f'{f.name}:{f.type}:{len(f.samples)}' for f in fams))\n";
    let text = sample_registry().render_openmetrics();
    // The first python3 that has the module (a pyenv shim may shadow the system one).
    let python = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        // runs: /usr/bin/python3
        Command::new(p)
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let Some(python) = python else {
        crate::testkit::skip(
            "render_openmetrics_passes_the_reference_parser",
            "no python3 with prometheus_client; apt-get install python3-prometheus-client",
        );
        return;
    };
    // runs: /usr/bin/python3
    let mut child = Command::new(python)
        .args(["-c", CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected the export:\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "sonde_latency_seconds:histogram:24 sonde_metric_families_dropped:counter:0 \
         sonde_queue_bytes:gauge:1 \
         sonde_script_errors:counter:1 sonde_size_bytes:histogram:6 \
         sonde_tcp_reset_segments:counter:2 sonde_series_dropped:counter:4",
        "{text}"
    );
}

#[test]
fn release_removes_families_no_other_script_owns() {
    let r = Registry::new("n");
    let only_a = r.counter("a_total", "A.", &["x"], 10).unwrap();
    only_a.add_owner("a");
    only_a.inc(&["1"]).unwrap();
    let shared = r.gauge("shared", "Shared.", &["x"], 10).unwrap();
    shared.add_owner("a");
    shared.add_owner("b");
    assert_eq!(r.release("a"), vec!["sonde_a_total".to_string()]);
    assert!(!r.render_prometheus().contains("sonde_a_total"));
    assert!(r.names().contains(&"sonde_shared".to_string()));
    assert_eq!(r.release("b"), vec!["sonde_shared".to_string()]);
}

#[test]
fn coarse_log2_buckets_in_text_keep_exact_cumulative_counts() {
    let r = Registry::new("n");
    let h = r
        .log2_histogram("lat_seconds", "L.", &["pod"], 10, 1e-9, 10)
        .unwrap();
    // Slots 0, 3, 4, 7, 10 and past 10.
    for raw in [1u64, 7, 9, 100, 1000, 5000] {
        h.observe(&["a"], raw).unwrap();
    }
    let le = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("sonde_lat_seconds_bucket"))
            .map(|l| {
                let (_, rest) = l.split_once("le=\"").unwrap();
                let (le, rest) = rest.split_once('"').unwrap();
                format!("{le}{}", rest.trim_start_matches('}'))
            })
            .collect()
    };
    let full = le(&r.render_prometheus());
    assert_eq!(full.len(), 12);
    r.set_classic_log2_step(4);
    assert_eq!(r.classic_log2_step(), 4);
    // Slots 0, 4, 8 and the last one, 10; then +Inf.
    assert_eq!(
        le(&r.render_prometheus()),
        ["1e-9 1", "1.6e-8 3", "2.56e-7 4", "1.024e-6 5", "+Inf 6"]
    );
    // Each kept bucket has the count the full form has at that bound.
    for kept in le(&r.render_prometheus()) {
        assert!(full.contains(&kept), "{kept} not in {full:?}");
    }
    assert!(r.render_openmetrics().contains(r#"le="1.6e-08"} 3"#));
    r.set_classic_log2_step(0);
    assert_eq!(le(&r.render_prometheus()), full);
}
