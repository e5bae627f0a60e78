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

/// Turns any text into a metric name fragment: lowercase, `[a-z0-9_]`, no
/// leading digit, no repeated underscores (`"TCP Retrans/s"` -> `"tcp_retrans_s"`).
/// A leading digit gets an `n` glued in front (`"5xx"` -> `"n5xx"`): a word of its
/// own there (`m_5xx`) could read as a unit. The fragment is not checked against
/// the naming rules; [`table_name`] makes a name that always passes them.
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
        out.insert(0, 'n');
    }
    out
}

/// The exported name of a `count()` or `hist()` table, and the factor its values
/// are multiplied by on export ([`table_name`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TableName {
    /// The full name, `sonde_` prefix included; it always passes the naming rules.
    pub name: String,
    /// Raw values times `scale` are in the exported unit (`1e-3` for `lat_ms`).
    pub scale: f64,
}

/// Units a histogram table's name may end with: the word, the base unit it is
/// exported in, and the factor to it. `m`, `h`, `d`, `b` and `min` are left out:
/// too short to be sure they are units (meters or minutes, bits or bytes, a
/// minimum). `kb` is 1024 bytes, as in `/proc/meminfo`.
const TABLE_UNITS: &[(&str, &str, f64)] = &[
    ("ns", "seconds", 1e-9),
    ("nsec", "seconds", 1e-9),
    ("nsecs", "seconds", 1e-9),
    ("nanoseconds", "seconds", 1e-9),
    ("us", "seconds", 1e-6),
    ("usec", "seconds", 1e-6),
    ("usecs", "seconds", 1e-6),
    ("microseconds", "seconds", 1e-6),
    ("ms", "seconds", 1e-3),
    ("msec", "seconds", 1e-3),
    ("msecs", "seconds", 1e-3),
    ("milliseconds", "seconds", 1e-3),
    ("s", "seconds", 1.0),
    ("sec", "seconds", 1.0),
    ("secs", "seconds", 1.0),
    ("seconds", "seconds", 1.0),
    ("minutes", "seconds", 60.0),
    ("hours", "seconds", 3600.0),
    ("days", "seconds", 86400.0),
    ("bytes", "bytes", 1.0),
    ("kb", "bytes", 1024.0),
    ("kib", "bytes", 1024.0),
    ("kibibytes", "bytes", 1024.0),
    ("mb", "bytes", 1048576.0),
    ("mib", "bytes", 1048576.0),
    ("mebibytes", "bytes", 1048576.0),
    ("gb", "bytes", 1073741824.0),
    ("gib", "bytes", 1073741824.0),
    ("gibibytes", "bytes", 1073741824.0),
    ("bits", "bytes", 0.125),
];

/// Whether a word may not appear in a metric name ([`validate_name`]): an
/// abbreviated or non-base unit (`ms`, `minutes`, `kilobytes`), or a type.
fn is_forbidden_word(p: &str) -> bool {
    UNIT_ABBREVIATIONS.contains(&p)
        || NON_BASE_UNITS.iter().any(|(u, _)| *u == p)
        || UNIT_PREFIXES.iter().any(|prefix| {
            p.strip_prefix(prefix).is_some_and(|rest| {
                BASE_UNITS.contains(&rest) || NON_BASE_UNITS.iter().any(|(u, _)| *u == rest)
            })
        })
        || ["counter", "gauge", "histogram", "summary"].contains(&p)
}

/// The exported name of the table `table` of `count()` (a counter) or `hist()` (a
/// histogram), valid whatever the text: the words of the table's name, lowercase
/// and joined by `_`, with
///
/// - a unit at the end of a histogram's name turned into its base unit, the values
///   scaled on export: `lat_ms` -> `sonde_lat_seconds` (scale `1e-3`), `size_kb`
///   -> `sonde_size_bytes` (scale 1024);
/// - any other word the naming rules refuse dropped: an abbreviated or non-base
///   unit anywhere in a counter's name (a count counts events: `read_wait_ns` ->
///   `sonde_read_wait_total`) or before the end of a histogram's, a type
///   (`counter`), and the series suffixes (`bucket`, `count`, `sum`, `total`) at
///   the end of a histogram's name that has no unit;
/// - `_total` added to a counter's, `sonde_` before every name (once);
/// - a name that starts with a digit kept as it is: after `sonde_` it is valid
///   (`2xx` -> `sonde_2xx_total`).
///
/// A name with no word left is `table`. Two tables can map to the same name
/// (`lat_ms` and `lat_us`): the registry refuses the second
/// ([`super::MetricsError::TableConflict`]).
pub fn table_name(table: &str, kind: MetricKind) -> TableName {
    let lower = table.to_ascii_lowercase();
    let mut words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|w| !w.is_empty())
        .collect();
    if words.first() == Some(&"sonde") {
        words.remove(0);
    }
    let unit = match kind {
        MetricKind::Histogram => words
            .last()
            .and_then(|w| TABLE_UNITS.iter().find(|(u, ..)| u == w))
            .map(|&(_, base, scale)| (base, scale)),
        _ => None,
    };
    if unit.is_some() {
        words.pop();
    }
    words.retain(|w| !is_forbidden_word(w));
    // Room for the prefix and a suffix within the 200 characters allowed.
    let mut len = super::PREFIX.len();
    let fit = words
        .iter()
        .take_while(|w| {
            len += w.len() + 1;
            len <= 160
        })
        .count();
    words.truncate(fit);
    // What ends the name must not read as a series suffix: `_total` is added to a
    // counter's below, and a unit ends a histogram's when it has one.
    let suffixes: &[&str] = match (kind, unit) {
        (MetricKind::Counter, _) => &["total"],
        (_, None) => &["bucket", "count", "sum", "total"],
        (_, Some(_)) => &[],
    };
    while words.last().is_some_and(|w| suffixes.contains(w)) {
        words.pop();
    }
    let mut name = String::from(super::PREFIX);
    for w in &words {
        name.push_str(w);
        name.push('_');
    }
    if name.len() == super::PREFIX.len() {
        name.push_str("table_");
    }
    match (kind, unit) {
        (MetricKind::Counter, _) => name.push_str("total"),
        (_, Some((base, _))) => name.push_str(base),
        (_, None) => {
            name.pop();
        }
    }
    TableName {
        name,
        scale: unit.map_or(1.0, |(_, s)| s),
    }
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
