//! Metric and label names: the `sonde_` prefix, Prometheus conventions (the rules
//! `promtool check metrics` lints), and turning free text into a name.

use super::{MetricKind, MetricsError, PREFIX};

/// Adds the `sonde_` prefix unless the name has it.
pub fn full_name(name: &str) -> String {
    if name.starts_with(PREFIX) {
        name.to_string()
    } else {
        format!("{PREFIX}{name}")
    }
}

/// Turns any text into a valid metric name fragment: lowercase, `[a-z0-9_]`, no
/// leading digit, no repeated underscores (`"TCP Retrans/s"` -> `"tcp_retrans_s"`).
pub fn sanitize_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unnamed");
    } else if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "m_");
    }
    out
}

fn is_snake(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

const UNIT_ABBREVIATIONS: [&str; 14] = [
    "s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d",
];
const NON_BASE_UNITS: [(&str, &str); 15] = [
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("weeks", "seconds"),
    ("bits", "bytes"),
    ("kelvins", "kelvin"),
    ("fahrenheit", "celsius"),
    ("rankine", "celsius"),
    ("inches", "meters"),
    ("yards", "meters"),
    ("miles", "meters"),
    ("calories", "joules"),
    ("pounds", "grams"),
    ("ounces", "grams"),
    ("kibibytes", "bytes"),
];
const BASE_UNITS: [&str; 10] = [
    "amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds",
    "volts",
];
const UNIT_PREFIXES: [&str; 18] = [
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
    "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
];

pub(super) fn validate_name(name: &str, kind: MetricKind) -> Result<(), MetricsError> {
    let bad = |reason: String| {
        Err(MetricsError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.len() > 200 {
        return bad("longer than 200 characters".into());
    }
    if !is_snake(name) {
        return bad(
            "use lowercase snake_case: letters a-z, digits and `_`, not starting with a digit"
                .into(),
        );
    }
    if name.contains("__") || name.ends_with('_') {
        return bad("no double or trailing underscores".into());
    }
    let parts: Vec<&str> = name.split('_').collect();
    let is_total = name.ends_with("_total");
    match kind {
        MetricKind::Counter if !is_total => {
            return bad(format!(
                "counter names end in `_total` (e.g. `{name}_total`)"
            ));
        }
        MetricKind::Gauge | MetricKind::Histogram if is_total => {
            return bad(format!(
                "only counters end in `_total`; this is a {}",
                kind.as_str()
            ));
        }
        _ => {}
    }
    for suffix in ["_bucket", "_count", "_sum"] {
        if name.ends_with(suffix) {
            return bad(format!("`{suffix}` is reserved for histogram series"));
        }
    }
    for p in &parts {
        if UNIT_ABBREVIATIONS.contains(p) {
            return bad(format!(
                "abbreviated unit `{p}`: spell out a base unit (`seconds`, `bytes`)"
            ));
        }
        if let Some((_, base)) = NON_BASE_UNITS.iter().find(|(u, _)| u == p) {
            return bad(format!("use the base unit `{base}` instead of `{p}`"));
        }
        for prefix in UNIT_PREFIXES {
            if let Some(rest) = p.strip_prefix(prefix) {
                if BASE_UNITS.contains(&rest) || NON_BASE_UNITS.iter().any(|(u, _)| *u == rest) {
                    return bad(format!("use a base unit (`seconds`, `bytes`) instead of `{p}`; scale the value instead"));
                }
            }
        }
        for t in ["counter", "gauge", "histogram", "summary"] {
            if *p == t {
                return bad(format!("the type `{t}` does not belong in the name"));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_labels(metric: &str, labels: &[String]) -> Result<(), MetricsError> {
    let bad = |label: &str, reason: &str| {
        Err(MetricsError::InvalidLabel {
            metric: metric.to_string(),
            label: label.to_string(),
            reason: reason.to_string(),
        })
    };
    for (i, l) in labels.iter().enumerate() {
        if !is_snake(l) {
            return bad(
                l,
                "use lowercase snake_case: letters a-z, digits and `_`, not starting with a digit",
            );
        }
        if l.starts_with("__") {
            return bad(l, "names starting with `__` are reserved by Prometheus");
        }
        if l == "node" {
            return bad(l, "`node` is added to every series by sonde");
        }
        if l == "le" || l == "quantile" {
            return bad(l, "reserved for histogram and summary series");
        }
        if labels[..i].contains(l) {
            return bad(l, "declared twice");
        }
    }
    if labels.len() > 16 {
        return bad(&labels[16], "at most 16 labels per metric");
    }
    Ok(())
}
