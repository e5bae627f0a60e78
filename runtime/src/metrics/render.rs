//! Prometheus text exposition format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{Family, Value};
use super::{SCRIPT_ERRORS, SERIES_DROPPED};

pub(super) fn render(node: &str, families: &[Arc<Family>]) -> String {
    let mut out = String::with_capacity(4096);
    for f in families {
        header(
            &mut out,
            &f.name,
            &f.help.read().unwrap_or_else(|e| e.into_inner()),
            f.kind.as_str(),
        );
        for (labels, value) in f.snapshot() {
            let pairs = || {
                f.label_names
                    .iter()
                    .map(String::as_str)
                    .zip(labels.iter().map(|v| &**v))
            };
            match value {
                Value::Scalar(x) => sample(&mut out, &f.name, "", node, pairs(), None, x),
                Value::Hist { counts, sum } => {
                    let bounds = f.buckets.as_ref().map(|b| &*b.bounds).unwrap_or(&[]);
                    let mut cumulative = 0u64;
                    for (i, c) in counts.iter().enumerate() {
                        cumulative += c;
                        let le = match bounds.get(i) {
                            Some(b) => number(*b),
                            None => "+Inf".to_string(),
                        };
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
        SERIES_DROPPED,
        "Updates dropped because the metric reached its series budget (new label combinations past it are not recorded).",
        "counter",
    );
    for f in families.iter().filter(|f| f.name != SCRIPT_ERRORS) {
        let dropped = f.dropped.load(Ordering::Relaxed);
        sample(
            &mut out,
            SERIES_DROPPED,
            "",
            node,
            [("metric", f.name.as_str())].into_iter(),
            None,
            dropped as f64,
        );
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
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

/// A sample value as Prometheus parses it: integers without a fraction, others in
/// the shortest form that reads back exactly.
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
