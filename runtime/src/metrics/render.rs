//! Text exposition: Prometheus 0.0.4 and OpenMetrics 1.0, from one walk over the
//! families.
//!
//! The two formats differ in a few places only, all decided here by [`Format`]:
//!
//! | | Prometheus 0.0.4 | OpenMetrics 1.0 |
//! |---|---|---|
//! | metadata | `# HELP` then `# TYPE` | `# TYPE` then `# HELP` |
//! | counter family name | `x_total` | `x` (samples keep `x_total`) |
//! | `"` in help text | as is | `\"` |
//! | `le` label | `0.1`, `1`, `+Inf` | canonical: `0.1`, `1.0`, `1e-09`, `+Inf` |
//! | end | nothing | `# EOF` |
//!
//! ```text
//! # TYPE sonde_tcp_reset_segments counter
//! # HELP sonde_tcp_reset_segments TCP RST segments.
//! sonde_tcp_reset_segments_total{node="n1",pod="web-1"} 3
//! # EOF
//! ```

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{Family, MetricKind, Value};
use super::{PodDetail, PodLabels, Scope, FAMILIES_DROPPED, SCRIPT_ERRORS, SERIES_DROPPED};

/// Which text exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `le` label value of a bucket (`None`: the `+Inf` bucket).
    fn le(self, bound: Option<f64>) -> String {
        match (bound, self) {
            (None, _) => "+Inf".to_string(),
            (Some(b), Format::Prometheus) => number(b),
            (Some(b), Format::OpenMetrics) => canonical_number(b),
        }
    }
}

/// The pod labels ([`PodLabels`]) one family's series get, beside their own.
pub(super) struct PodExtra<'a> {
    pod_labels: Option<&'a PodLabels>,
    pod_at: Option<usize>,
    ns_at: Option<usize>,
    /// (index in `PodLabels::names`, name) of the labels this family lacks.
    added: Vec<(usize, &'a str)>,
}

impl<'a> PodExtra<'a> {
    pub fn new(f: &Family, pod_labels: Option<&'a PodLabels>) -> Self {
        let pod_at = f.label_names.iter().position(|l| l == "pod");
        let ns_at = f.label_names.iter().position(|l| l == "namespace");
        let added = match (pod_labels, pod_at) {
            (Some(p), Some(_)) => p
                .names
                .iter()
                .enumerate()
                .filter(|(_, n)| !f.label_names.contains(n))
                .map(|(i, n)| (i, n.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        PodExtra {
            pod_labels,
            pod_at,
            ns_at,
            added,
        }
    }

    /// How much of the series with these label values [`PodDetail`] lets out.
    pub fn scope(&self, detail: &PodDetail, labels: &[Box<str>]) -> Scope {
        detail.scope(labels, self.pod_at, self.ns_at)
    }

    /// The extra `(name, value)` pairs of the series with these label values.
    pub fn of(&self, labels: &[Box<str>]) -> Vec<(&'a str, &'a str)> {
        let values = match (self.pod_labels, self.pod_at, self.added.is_empty()) {
            (Some(p), Some(pi), false) => {
                let ns = self.ns_at.map(|i| &*labels[i]).unwrap_or("");
                p.values.get(&(ns.to_string(), labels[pi].to_string()))
            }
            _ => None,
        };
        match values {
            Some(v) => self
                .added
                .iter()
                .filter_map(|(i, n)| {
                    v.get(*i)
                        .filter(|v| !v.is_empty())
                        .map(|v| (*n, v.as_str()))
                })
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Whether the text formats write the bucket of log2 slot `slot` (of `0..=max_slot`)
/// when they keep every `step`-th power of two: the multiples of `step`, and the
/// last slot, so that what `+Inf` alone counts stays the same.
pub(super) fn keeps_slot(slot: usize, max_slot: u32, step: u32) -> bool {
    step <= 1 || slot.is_multiple_of(step as usize) || slot == max_slot as usize
}

/// Which buckets of log2 histograms the text formats write.
pub(super) struct Log2Text<'a> {
    /// Every `step`-th power of two ([`keeps_slot`]).
    pub step: u32,
    /// Which pods get detail families, and every bucket.
    pub detail: &'a PodDetail,
}

pub(super) fn render(
    node: &str,
    families: &[Arc<Family>],
    format: Format,
    pod_labels: Option<&PodLabels>,
    log2: Log2Text<'_>,
) -> String {
    let mut out = String::with_capacity(4096);
    for f in families {
        let pod = PodExtra::new(f, pod_labels);
        let detail = f.detail.load(Ordering::Relaxed);
        header(
            &mut out,
            format,
            &f.name,
            &f.help.read().unwrap_or_else(|e| e.into_inner()),
            f.kind,
        );
        for (labels, value) in f.snapshot() {
            let scope = pod.scope(log2.detail, &labels);
            if detail && scope == Scope::Core {
                continue;
            }
            let extra = pod.of(&labels);
            let pairs = || {
                f.label_names
                    .iter()
                    .map(String::as_str)
                    .zip(labels.iter().map(|v| &**v))
                    .chain(extra.iter().copied())
            };
            match value {
                Value::Scalar(x) => sample(&mut out, &f.name, "", node, pairs(), None, x),
                Value::Hist { counts, sum } => {
                    let bounds = f.buckets.as_ref().map(|b| &*b.bounds).unwrap_or(&[]);
                    let max_slot = f.buckets.as_ref().and_then(|b| b.log2);
                    let step = if scope == Scope::Listed { 1 } else { log2.step };
                    let mut cumulative = 0u64;
                    for (i, c) in counts.iter().enumerate() {
                        cumulative += c;
                        let kept = match (max_slot, bounds.get(i)) {
                            (Some(max), Some(_)) => keeps_slot(i, max, step),
                            _ => true,
                        };
                        if !kept {
                            continue;
                        }
                        let le = format.le(bounds.get(i).copied());
                        sample(
                            &mut out,
                            &f.name,
                            "_bucket",
                            node,
                            pairs(),
                            Some(&le),
                            cumulative as f64,
                        );
                    }
                    sample(&mut out, &f.name, "_sum", node, pairs(), None, sum);
                    sample(
                        &mut out,
                        &f.name,
                        "_count",
                        node,
                        pairs(),
                        None,
                        cumulative as f64,
                    );
                }
            }
        }
    }
    header(
        &mut out,
        format,
        SERIES_DROPPED,
        SERIES_DROPPED_HELP,
        MetricKind::Counter,
    );
    for (metric, reason, dropped) in dropped_samples(families) {
        sample(
            &mut out,
            SERIES_DROPPED,
            "",
            node,
            [("metric", metric), ("reason", reason)].into_iter(),
            None,
            dropped as f64,
        );
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

pub(super) const SERIES_DROPPED_HELP: &str = "Updates dropped because they would have created a series past a budget: the metric's own (reason series_budget, limits.series_budget) or that of all scripts' series together (reason total_series, limits.total_series).";

/// The samples of [`SERIES_DROPPED`]: `(metric, reason, updates dropped)`.
pub(super) fn dropped_samples(families: &[Arc<Family>]) -> Vec<(&str, &'static str, u64)> {
    let mut out = Vec::new();
    for f in families
        .iter()
        .filter(|f| f.name != SCRIPT_ERRORS && f.name != FAMILIES_DROPPED)
    {
        out.push((
            f.name.as_str(),
            "series_budget",
            f.dropped.load(Ordering::Relaxed),
        ));
        // Only scripts' families count against the total.
        if f.is_scripted() {
            out.push((
                f.name.as_str(),
                "total_series",
                f.dropped_total.load(Ordering::Relaxed),
            ));
        }
    }
    out
}

/// The metadata lines of a family. OpenMetrics names a counter family without its
/// `_total` (the samples keep it) and escapes `"` in the help text as well.
fn header(out: &mut String, format: Format, name: &str, help: &str, kind: MetricKind) {
    let help_line = |out: &mut String, family: &str| {
        out.push_str("# HELP ");
        out.push_str(family);
        out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '"' if format == Format::OpenMetrics => out.push_str("\\\""),
                c => out.push(c),
            }
        }
        out.push('\n');
    };
    let type_line = |out: &mut String, family: &str| {
        out.push_str("# TYPE ");
        out.push_str(family);
        out.push(' ');
        out.push_str(kind.as_str());
        out.push('\n');
    };
    match format {
        Format::Prometheus => {
            help_line(out, name);
            type_line(out, name);
        }
        Format::OpenMetrics => {
            let family = match kind {
                MetricKind::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            type_line(out, family);
            help_line(out, family);
        }
    }
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    node: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    out.push_str("{node=\"");
    escape_value(out, node);
    out.push('"');
    for (k, v) in labels {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape_value(out, v);
        out.push('"');
    }
    if let Some(le) = le {
        out.push_str(",le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(&number(value));
    out.push('\n');
}

fn escape_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as both formats want it: integers without a fraction, others in
/// the shortest form that reads back exactly (a point or an exponent), `NaN`, `+Inf`,
/// `-Inf`.
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let mut s = String::new();
        let _ = write!(s, "{}", v as i64);
        s
    } else {
        format!("{v:?}")
    }
}

/// A bucket bound as OpenMetrics' "canonical numbers" want it: Go's shortest `%g`
/// (exponent form when the exponent is below -4 or at least 6, two exponent digits
/// at least), with `.0` added when there is neither a point nor an exponent.
/// `0.001`, `1.0`, `100000.0`, `1e+06`, `1e-09`, `1.6e-08`.
pub(super) fn canonical_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    // `{:e}` gives the shortest digits that read back exactly: `-1.25e-7`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if v.is_sign_negative() {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        return out;
    }
    if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
        return out;
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        out.push_str(&digits);
        for _ in digits.len()..int_len {
            out.push('0');
        }
        out.push_str(".0");
    } else {
        out.push_str(&digits[..int_len]);
        out.push('.');
        out.push_str(&digits[int_len..]);
    }
    out
}
