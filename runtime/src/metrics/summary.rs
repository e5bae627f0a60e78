//! The end-of-run table: what `sonde run` prints when a script stops, the way
//! bpftrace prints its maps.
//!
//! Tables of `count()` and `hist()` come first, under the names the script gave
//! them, one line per key sorted by value (the largest last), like bpftrace's maps;
//! histogram values in the unit they were observed in:
//!
//! ```text
//! @conns[pod=web-2, port=443]:   3
//! @conns[pod=web-1, port=8080]: 12
//!
//! @lat_ms: count 4, sum 1290
//!   (64, 128]  1 |@@@@@@@@@@@@@@@@@                                   |
//!   (128, 256] 0 |                                                    |
//!   (256, 512] 3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
//! ```
//!
//! Then the other families, under their exported names:
//!
//! ```text
//! sonde_tcp_reset_segments_total
//!   {namespace=shop,pod=web-1,kind=NOSOCK}   12
//!   {namespace=shop,pod=web-2,kind=ACTIVE}    3
//!
//! sonde_read_latency_seconds{pod=web-1}  count 92, sum 0.000301
//!   (256, 512]         6 |@@@@@@                                              |
//!   (512, 1K]         52 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
//! ```

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{Buckets, Family, Value};
use super::render::number;

const BAR_WIDTH: usize = 52;
const MAX_ROWS: usize = 200;

pub(super) fn render(families: &[Arc<Family>]) -> String {
    let mut families: Vec<&Arc<Family>> = families.iter().collect();
    families.sort_by_key(|f| match f.table.get() {
        Some(t) => (false, &**t),
        None => (true, f.name.as_str()),
    });
    let mut out = String::new();
    for f in families {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut rows = f.snapshot();
        let dropped = f.dropped.load(Ordering::Relaxed);
        match (&f.buckets, f.table.get()) {
            (None, Some(table)) => table_counts(&mut out, f, table, &mut rows),
            (Some(b), Some(table)) => {
                for (labels, value) in rows.iter().take(MAX_ROWS) {
                    table_histogram(&mut out, f, table, b, labels, value);
                }
                if rows.is_empty() {
                    let _ = writeln!(out, "@{table}: (no data)");
                } else if rows.len() > MAX_ROWS {
                    let _ = writeln!(out, "  ... {} more keys", rows.len() - MAX_ROWS);
                }
            }
            (None, None) => scalars(&mut out, f, &mut rows),
            (Some(b), None) => {
                for (labels, value) in rows.iter().take(MAX_ROWS) {
                    histogram(&mut out, f, b, labels, value);
                }
                if rows.is_empty() {
                    let _ = writeln!(out, "{}  (no data)", f.name);
                } else if rows.len() > MAX_ROWS {
                    let _ = writeln!(out, "  ... {} more series", rows.len() - MAX_ROWS);
                }
            }
        }
        if dropped > 0 {
            let _ = writeln!(
                out,
                "  ({dropped} updates dropped: series budget of {} reached)",
                f.budget.load(Ordering::Relaxed)
            );
        }
    }
    out
}

/// `{k=v,...}` for people: empty values (the host's pod and namespace) are left
/// out, so a host row reads `{kind=NOSOCK}`.
fn label_set(f: &Family, labels: &[Box<str>]) -> String {
    let mut s = String::new();
    for (k, v) in f.label_names.iter().zip(labels.iter()) {
        if v.is_empty() {
            continue;
        }
        s.push(if s.is_empty() { '{' } else { ',' });
        let _ = write!(s, "{k}={v}");
    }
    if !s.is_empty() {
        s.push('}');
    }
    s
}

fn scalars(out: &mut String, f: &Family, rows: &mut [(Box<[Box<str>]>, Value)]) {
    let value = |v: &Value| match v {
        Value::Scalar(x) => *x,
        Value::Hist { .. } => 0.0,
    };
    if f.label_names.is_empty() {
        match rows.first() {
            Some((_, v)) => writeln!(out, "{}  {}", f.name, number(value(v))),
            None => writeln!(out, "{}  (no data)", f.name),
        }
        .ok();
        return;
    }
    let _ = writeln!(out, "{}", f.name);
    if rows.is_empty() {
        out.push_str("  (no data)\n");
        return;
    }
    rows.sort_by(|a, b| {
        value(&b.1)
            .total_cmp(&value(&a.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    let shown = &rows[..rows.len().min(MAX_ROWS)];
    let keys: Vec<String> = shown.iter().map(|(l, _)| label_set(f, l)).collect();
    let values: Vec<String> = shown.iter().map(|(_, v)| number(value(v))).collect();
    let kw = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    let vw = values.iter().map(String::len).max().unwrap_or(0);
    for (k, v) in keys.iter().zip(&values) {
        let _ = writeln!(out, "  {k:<kw$}  {v:>vw$}");
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(out, "  ... {} more series", rows.len() - MAX_ROWS);
    }
}

/// A table's key as bpftrace prints it: `[NOSOCK]` for the one key of
/// `count(table, key)`, `[pod=web-1, port=8080]` for named keys, nothing for none.
fn table_key(f: &Family, labels: &[Box<str>]) -> String {
    match &*f.label_names {
        [] => String::new(),
        [k] if k == "key" => format!("[{}]", labels.first().map_or("", |v| v)),
        names => {
            let pairs: Vec<String> = names
                .iter()
                .zip(labels.iter())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("[{}]", pairs.join(", "))
        }
    }
}

/// A `count()` table: `@table[key]: value` lines, smallest value first, as
/// bpftrace prints a map (the largest stays in view at the end).
fn table_counts(out: &mut String, f: &Family, table: &str, rows: &mut [(Box<[Box<str>]>, Value)]) {
    let value = |v: &Value| match v {
        Value::Scalar(x) => *x,
        Value::Hist { .. } => 0.0,
    };
    if rows.is_empty() {
        let _ = writeln!(out, "@{table}: (no data)");
        return;
    }
    rows.sort_by(|a, b| {
        value(&a.1)
            .total_cmp(&value(&b.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    if hidden > 0 {
        let _ = writeln!(out, "... {hidden} more keys with smaller counts");
    }
    let shown = &rows[hidden..];
    let keys: Vec<String> = shown
        .iter()
        .map(|(l, _)| format!("@{table}{}:", table_key(f, l)))
        .collect();
    let values: Vec<String> = shown.iter().map(|(_, v)| number(value(v))).collect();
    let kw = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    let vw = values.iter().map(String::len).max().unwrap_or(0);
    for (k, v) in keys.iter().zip(&values) {
        let _ = writeln!(out, "{k:<kw$} {v:>vw$}");
    }
}

/// A `hist()` table: `@table[key]: count n, sum s` and its bars, the sum in the
/// unit the values were observed in (`lat_ms`: milliseconds), as the bounds are.
fn table_histogram(
    out: &mut String,
    f: &Family,
    table: &str,
    b: &Buckets,
    labels: &[Box<str>],
    value: &Value,
) {
    let Value::Hist { counts, sum } = value else {
        return;
    };
    let total: u64 = counts.iter().sum();
    let raw = sum / b.scale;
    // 0.301 s / 1e-3 is 300.99999999999994 ms: what was observed was 301.
    let raw = if (raw - raw.round()).abs() <= 1e-9 * raw.abs().max(1.0) {
        raw.round()
    } else {
        raw
    };
    let _ = writeln!(
        out,
        "@{table}{}: count {total}, sum {}",
        table_key(f, labels),
        number(raw)
    );
    bars(out, b, counts);
}

fn histogram(out: &mut String, f: &Family, b: &Buckets, labels: &[Box<str>], value: &Value) {
    let Value::Hist { counts, sum } = value else {
        return;
    };
    let total: u64 = counts.iter().sum();
    let _ = writeln!(
        out,
        "{}{}  count {total}, sum {}",
        f.name,
        label_set(f, labels),
        number(*sum)
    );
    bars(out, b, counts);
}

/// One line per bucket from the first to the last that holds anything.
fn bars(out: &mut String, b: &Buckets, counts: &[u64]) {
    let Some(first) = counts.iter().position(|c| *c > 0) else {
        return;
    };
    let last = counts.iter().rposition(|c| *c > 0).unwrap_or(first);
    let max = counts[first..=last]
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let ranges: Vec<String> = (first..=last).map(|i| range(b, i)).collect();
    let rw = ranges.iter().map(String::len).max().unwrap_or(0);
    let cw = counts[first..=last]
        .iter()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1);
    for (i, r) in (first..=last).zip(&ranges) {
        let c = counts[i];
        let filled = ((c as u128 * BAR_WIDTH as u128) / max as u128) as usize;
        let filled = if c > 0 { filled.max(1) } else { 0 };
        let _ = writeln!(
            out,
            "  {r:<rw$} {c:>cw$} |{}{}|",
            "@".repeat(filled),
            " ".repeat(BAR_WIDTH - filled)
        );
    }
}

/// The range bucket `i` covers: raw powers of two for log2 histograms (`(4K, 8K]`),
/// exported bounds otherwise (`(0.1, 0.5]`).
fn range(b: &Buckets, i: usize) -> String {
    match b.log2 {
        Some(max) => {
            let max = max as usize;
            if i == 0 {
                "[0, 1]".to_string()
            } else if i > max {
                format!("({}, ...)", power(max))
            } else {
                format!("({}, {}]", power(i - 1), power(i))
            }
        }
        None => {
            let lo = if i == 0 {
                "-Inf".to_string()
            } else {
                number(b.bounds[i - 1])
            };
            match b.bounds.get(i) {
                Some(hi) => format!("({lo}, {}]", number(*hi)),
                None => format!("({lo}, +Inf)"),
            }
        }
    }
}

/// `2^i` with binary suffixes, as bpftrace prints bucket bounds: 512, 1K, 2M, 4G.
fn power(i: usize) -> String {
    const SUFFIXES: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let unit = i / 10;
    format!("{}{}", 1u64 << (i - unit * 10), SUFFIXES[unit.min(6)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_read_like_bpftrace() {
        assert_eq!(power(0), "1");
        assert_eq!(power(9), "512");
        assert_eq!(power(10), "1K");
        assert_eq!(power(21), "2M");
        assert_eq!(power(63), "8E");
    }
}
