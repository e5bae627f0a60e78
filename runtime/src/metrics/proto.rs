//! The Prometheus protobuf exposition format, where log2 histograms become native
//! histograms: one series each instead of one per bucket.
//!
//! The body is a sequence of length-delimited `io.prometheus.client.MetricFamily`
//! messages ([`PROTOBUF_CONTENT_TYPE`]); the few message types are written here with
//! `prost` derives, field numbers from Prometheus' `metrics.proto`. Counters and
//! gauges are as in the text formats; histograms with explicit buckets are classic
//! histograms (cumulative buckets, `+Inf` implied by the count).
//!
//! # Log2 slots as native buckets
//!
//! A native histogram of schema `s` has buckets of index `k` covering
//! `(2^((k-1)/2^s), 2^(k/2^s)]` in the exported unit, and a zero bucket `[-t, t]`.
//! Slot `i` of a log2 histogram holds raw values in `(2^(i-1), 2^i]` (slot 0: at
//! most 1, zero included), exported as `(scale*2^(i-1), scale*2^i]`. So:
//!
//! - when `scale` is a power of two (1 for bytes or packets), schema 0 is exact:
//!   slot `i` is bucket `i + log2(scale)`;
//! - otherwise (1e-9 for nanoseconds to seconds: `2^i ns = 2^(i - 29.897) s`) no
//!   schema-0 bucket has the slot's bounds. Re-bucketing into the nearest
//!   power of two of seconds would move every bound by up to a factor of 2 (for
//!   1e-9, by 2^0.897 = 1.86 or 2^0.103 = 1.07), so "how many took at most 1ms"
//!   would be answered at the wrong place. Schema 3 (8 buckets per power of two)
//!   is used instead: slot `i` goes into the one schema-3 bucket whose upper bound
//!   is nearest `scale*2^i`, within a factor `2^(1/16)` (4.4%; for 1e-9, 2^0.022 =
//!   1.6%). The count at or below each slot bound stays exact. The seven other
//!   schema-3 buckets of each power of two stay empty, so `histogram_quantile`
//!   interpolates within the top eighth of the slot rather than over all of it:
//!   inside a slot it reads up to a factor 2^(7/8) high, where any estimate from
//!   log2 slots is uncertain by a factor 2 anyway.
//!
//! [`native_layout`] picks the schema: the lowest of 0..=3 that places the slot
//! bounds exactly, else 3. Slot 0 is the zero bucket, of width the (placed) bound
//! of slot 0; the slot past `max_slot` (`+Inf` in the text formats) becomes the
//! next bucket: native histograms have no `+Inf` bucket, so a value past
//! `scale*2^max_slot` reads as at most twice that.
//!
//! ```
//! use sonde::metrics::native_layout;
//!
//! let bytes = native_layout(1.0);
//! assert_eq!((bytes.schema, bytes.index(10)), (0, 10)); // (512, 1024]
//! let ns = native_layout(1e-9);
//! assert_eq!(ns.schema, 3);
//! // Slot 20 is (524us, 1.05ms]; its bucket's bound is 1.05ms within 1.6%.
//! let bound = 2f64.powf(ns.index(20) as f64 / 8.0);
//! assert!((bound / (1e-9 * (1u64 << 20) as f64) - 1.0).abs() < 0.016);
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{Family, MetricKind, Value};
use super::render::{dropped_samples, PodExtra, SERIES_DROPPED_HELP};
use super::{PodDetail, PodLabels, Scope, SERIES_DROPPED};

/// `Content-Type` of [`super::Registry::render_protobuf`].
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Where the slots of a log2 histogram of some `scale` go in a native histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NativeLayout {
    /// Native histogram schema: `2^schema` buckets per power of two.
    pub schema: i32,
    /// Index of the bucket whose upper bound is (nearest) `scale`, slot 0's bound.
    pub base: i32,
    /// Breadth of the zero bucket, where slot 0 goes: `2^(base / 2^schema)`.
    pub zero_threshold: f64,
}

impl NativeLayout {
    /// The native bucket index of log2 slot `slot` (`slot >= 1`).
    pub fn index(&self, slot: u32) -> i32 {
        self.base + ((slot as i32) << self.schema)
    }
}

/// The layout for a log2 histogram of this `scale` (see the module docs): the
/// lowest schema of 0..=3 that places `scale` on a bucket bound exactly, else 3.
pub fn native_layout(scale: f64) -> NativeLayout {
    let l = scale.log2();
    let (schema, base) = (0..=3)
        .map(|s| (s, l * f64::from(1u32 << s)))
        .find(|(_, x)| (x - x.round()).abs() < 1e-9)
        .unwrap_or((3, l * 8.0));
    let base = base.round() as i32;
    NativeLayout {
        schema,
        base,
        zero_threshold: 2f64.powf(f64::from(base) / f64::from(1u32 << schema)),
    }
}

/// `io.prometheus.client.MetricFamily`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MetricFamily {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub help: String,
    /// `MetricType`: 0 counter, 1 gauge, 4 histogram.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

const COUNTER: i32 = 0;
const GAUGE: i32 = 1;
const HISTOGRAM: i32 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Scalar>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Scalar>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `Counter` and `Gauge`: both a `double value = 1`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Scalar {
    #[prost(double, tag = "1")]
    pub value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Histogram {
    #[prost(uint64, tag = "1")]
    pub sample_count: u64,
    #[prost(double, tag = "2")]
    pub sample_sum: f64,
    /// Classic buckets.
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, tag = "5")]
    pub schema: i32,
    #[prost(double, tag = "6")]
    pub zero_threshold: f64,
    #[prost(uint64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    /// Each bucket's count minus the previous one's (the first: minus zero).
    #[prost(sint64, repeated, tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Bucket {
    #[prost(uint64, tag = "1")]
    pub cumulative_count: u64,
    #[prost(double, tag = "2")]
    pub upper_bound: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BucketSpan {
    /// Gap to the previous span's end, or the first span's starting index.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

pub(super) fn render(
    node: &str,
    families: &[Arc<Family>],
    pod_labels: Option<&PodLabels>,
    detail: &PodDetail,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    for f in families {
        let pod = PodExtra::new(f, pod_labels);
        // A native histogram is one series whatever its resolution: detail only
        // holds back the other families' pod series.
        let native = f.buckets.as_ref().is_some_and(|b| b.log2.is_some());
        let held_back = f.detail.load(Ordering::Relaxed) && !native;
        let metric = f
            .snapshot()
            .into_iter()
            .filter(|(values, _)| !(held_back && pod.scope(detail, values) == Scope::Core))
            .map(|(values, value)| {
                let extra = pod.of(&values);
                let pairs = f
                    .label_names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(|v| &**v))
                    .chain(extra);
                let mut m = Metric {
                    label: labels(node, pairs),
                    ..Metric::default()
                };
                match value {
                    Value::Scalar(x) if f.kind == MetricKind::Gauge => {
                        m.gauge = Some(Scalar { value: x })
                    }
                    Value::Scalar(x) => m.counter = Some(Scalar { value: x }),
                    Value::Hist { counts, sum } => m.histogram = Some(histogram(f, &counts, sum)),
                }
                m
            })
            .collect();
        let family = MetricFamily {
            name: f.name.clone(),
            help: f.help.read().unwrap_or_else(|e| e.into_inner()).clone(),
            r#type: match f.kind {
                MetricKind::Counter => COUNTER,
                MetricKind::Gauge => GAUGE,
                MetricKind::Histogram => HISTOGRAM,
            },
            metric,
        };
        prost::Message::encode_length_delimited(&family, &mut out).expect("a Vec grows as needed");
    }
    let dropped = MetricFamily {
        name: SERIES_DROPPED.to_string(),
        help: SERIES_DROPPED_HELP.to_string(),
        r#type: COUNTER,
        metric: dropped_samples(families)
            .into_iter()
            .map(|(metric, reason, n)| Metric {
                label: labels(node, [("metric", metric), ("reason", reason)].into_iter()),
                counter: Some(Scalar { value: n as f64 }),
                ..Metric::default()
            })
            .collect(),
    };
    prost::Message::encode_length_delimited(&dropped, &mut out).expect("a Vec grows as needed");
    out
}

fn labels<'a>(node: &'a str, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<LabelPair> {
    std::iter::once(("node", node))
        .chain(pairs)
        .map(|(name, value)| LabelPair {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// A histogram series: native for a log2 family, classic otherwise.
fn histogram(f: &Family, counts: &[u64], sum: f64) -> Histogram {
    let total: u64 = counts.iter().sum();
    let Some(b) = f.buckets.as_ref() else {
        return Histogram::default();
    };
    let mut h = Histogram {
        sample_count: total,
        sample_sum: sum,
        ..Histogram::default()
    };
    if b.log2.is_none() {
        let mut cumulative = 0;
        h.bucket = b
            .bounds
            .iter()
            .zip(counts)
            .map(|(bound, c)| {
                cumulative += c;
                Bucket {
                    cumulative_count: cumulative,
                    upper_bound: *bound,
                }
            })
            .collect();
        return h;
    }
    let layout = native_layout(b.scale);
    h.schema = layout.schema;
    h.zero_threshold = layout.zero_threshold;
    h.zero_count = counts.first().copied().unwrap_or(0);
    // Slots 1.. (the last one is the text formats' +Inf), populated ones only.
    let mut last: Option<(i32, u64)> = None;
    for (slot, &c) in counts.iter().enumerate().skip(1) {
        if c == 0 {
            continue;
        }
        let k = layout.index(slot as u32);
        match (last, h.positive_span.last_mut()) {
            (Some((prev, _)), Some(span)) if k == prev + 1 => span.length += 1,
            (prev, _) => h.positive_span.push(BucketSpan {
                offset: prev.map_or(k, |(p, _)| k - p - 1),
                length: 1,
            }),
        }
        let before = last.map_or(0, |(_, n)| n);
        h.positive_delta.push(c as i64 - before as i64);
        last = Some((k, c));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    fn decode(mut body: &[u8]) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        while !body.is_empty() {
            out.push(<MetricFamily as prost::Message>::decode_length_delimited(&mut body).unwrap());
        }
        out
    }

    fn family<'a>(fs: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
        fs.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn layouts_place_slot_bounds() {
        assert_eq!(
            native_layout(1.0),
            NativeLayout {
                schema: 0,
                base: 0,
                zero_threshold: 1.0
            }
        );
        // 1/1024: exact in schema 0, ten buckets down.
        assert_eq!(native_layout(1.0 / 1024.0).base, -10);
        // sqrt(2) is a schema-1 bound.
        assert_eq!(native_layout(2f64.sqrt()).schema, 1);
        // 1e-9 = 2^-29.897: schema 3, bucket -239 (2^-29.875), 1.6% high.
        let ns = native_layout(1e-9);
        assert_eq!((ns.schema, ns.base), (3, -239));
        assert!((ns.zero_threshold / 1e-9 - 1.0157).abs() < 1e-3);
        for slot in 1..=40 {
            let bound = 2f64.powf(f64::from(ns.index(slot)) / 8.0);
            let exact = 1e-9 * 2f64.powi(slot as i32);
            assert!((bound / exact - 1.0).abs() < 0.016, "slot {slot}");
        }
    }

    #[test]
    fn log2_histograms_are_native() {
        let r = Registry::new("n1");
        let h = r
            .log2_histogram("lat_seconds", "Latency.", &["pod"], 10, 1e-9, 10)
            .unwrap();
        // Slot 0 (zero bucket) twice, slot 3 once, slot 4 three times, slot 7
        // once, past slot 10 (+Inf in text) once.
        for raw in [0u64, 1, 7, 9, 12, 16, 100, 5000] {
            h.observe(&["a"], raw).unwrap();
        }
        let fs = decode(&r.render_protobuf());
        let f = family(&fs, "sonde_lat_seconds");
        assert_eq!((f.r#type, f.metric.len()), (HISTOGRAM, 1));
        let m = &f.metric[0];
        let names: Vec<_> = m.label.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(names, [("node", "n1"), ("pod", "a")]);
        let h = m.histogram.as_ref().unwrap();
        assert_eq!(h.sample_count, 8);
        assert!((h.sample_sum - 5145e-9).abs() < 1e-15);
        assert!(h.bucket.is_empty());
        assert_eq!((h.schema, h.zero_count), (3, 2));
        // Slots 3, 4, 7, 11 at schema 3: -239 + 8 * slot.
        let spans: Vec<_> = h
            .positive_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(spans, [(-215, 1), (7, 1), (23, 1), (31, 1)]);
        assert_eq!(h.positive_delta, [1, 2, -2, 0]);
    }

    #[test]
    fn power_of_two_scales_are_exact_and_consecutive_slots_share_a_span() {
        let r = Registry::new("n1");
        let h = r
            .log2_histogram("size_bytes", "Sizes.", &[] as &[&str], 20, 1.0, 10)
            .unwrap();
        h.set_buckets(
            &[] as &[&str],
            crate::metrics::BucketCounts::PerBucket(&[0, 0, 4, 5, 0, 1]),
            60.0,
        )
        .unwrap();
        let fs = decode(&r.render_protobuf());
        let h = family(&fs, "sonde_size_bytes").metric[0]
            .histogram
            .clone()
            .unwrap();
        assert_eq!((h.schema, h.zero_threshold, h.zero_count), (0, 1.0, 0));
        let spans: Vec<_> = h
            .positive_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(spans, [(2, 2), (1, 1)]);
        assert_eq!(h.positive_delta, [4, 1, -4]);
        assert_eq!((h.sample_count, h.sample_sum), (10, 60.0));
    }

    #[test]
    fn other_kinds_as_in_text() {
        let r = Registry::new("n1");
        r.counter("resets_total", "Resets.", &["pod"], 10)
            .unwrap()
            .add(&["a"], 3)
            .unwrap();
        r.gauge("queue_bytes", "Queued.", &["pod"], 10)
            .unwrap()
            .set(&["a"], -2.5)
            .unwrap();
        let h = r
            .histogram("rtt_seconds", "RTT.", &[] as &[&str], vec![0.1, 1.0], 10)
            .unwrap();
        for v in [0.05, 0.5, 0.7, 5.0] {
            h.observe(&[] as &[&str], v).unwrap();
        }
        let fs = decode(&r.render_protobuf());
        let c = family(&fs, "sonde_resets_total");
        assert_eq!((c.r#type, c.help.as_str()), (COUNTER, "Resets."));
        assert_eq!(c.metric[0].counter, Some(Scalar { value: 3.0 }));
        let g = family(&fs, "sonde_queue_bytes");
        assert_eq!(
            (g.r#type, g.metric[0].gauge.clone()),
            (GAUGE, Some(Scalar { value: -2.5 }))
        );
        let h = family(&fs, "sonde_rtt_seconds").metric[0]
            .histogram
            .clone()
            .unwrap();
        let buckets: Vec<_> = h
            .bucket
            .iter()
            .map(|b| (b.upper_bound, b.cumulative_count))
            .collect();
        assert_eq!(buckets, [(0.1, 1), (1.0, 3)]);
        assert_eq!(h.sample_count, 4);
        assert!(h.positive_span.is_empty() && h.zero_threshold == 0.0);
        // The self-metric is there, with a sample per family and reason.
        let d = family(&fs, SERIES_DROPPED);
        assert!(d.metric.iter().any(|m| m
            .label
            .iter()
            .any(|l| l.name == "metric" && l.value == "sonde_rtt_seconds")));
    }

    #[test]
    fn pod_labels_as_in_text() {
        let r = Registry::new("n1");
        r.counter("x_total", "X.", &["namespace", "pod"], 10)
            .unwrap()
            .inc(&["shop", "web-1"])
            .unwrap();
        r.set_pod_labels(Some(Arc::new(PodLabels {
            names: vec!["app".into()],
            values: [(("shop".into(), "web-1".into()), vec!["web".into()])].into(),
        })));
        let fs = decode(&r.render_protobuf());
        let labels: Vec<_> = family(&fs, "sonde_x_total").metric[0]
            .label
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        assert_eq!(
            labels,
            ["node=n1", "namespace=shop", "pod=web-1", "app=web"]
        );
    }
}
