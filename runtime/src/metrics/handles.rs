//! Typed handles on a family: what scripts and sources update.
//!
//! Handles are cheap clones (one `Arc`); every update takes the label values in the
//! order the family declared its label names.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{Family, Value};
use super::labels::LabelValue;
use super::MetricsError;

/// A number a metric accepts.
pub trait Number: Copy {
    fn to_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
number!(f64, f32, u64, i64, u32, i32, usize);

/// Per-bucket or cumulative counts handed to [`Histogram::set_buckets`].
#[derive(Debug, Clone, Copy)]
pub enum BucketCounts<'a> {
    /// `counts[i]` values fell in bucket `i` (for log2 histograms: slot `i`, as kernel
    /// maps keep them). Entries past the last bucket are counted in `+Inf`; missing
    /// ones are zero.
    PerBucket(&'a [u64]),
    /// `counts[i]` values were `<=` bound `i` (Prometheus style, non-decreasing); a
    /// last extra entry, if present, is the total including `+Inf`.
    Cumulative(&'a [u64]),
}

macro_rules! common {
    () => {
        /// The family name, with its `sonde_` prefix.
        pub fn name(&self) -> &str {
            &self.0.name
        }

        /// Number of live series.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Updates dropped so far because the series budget was reached.
        pub fn dropped(&self) -> u64 {
            self.0.dropped.load(Ordering::Relaxed)
        }

        /// Removes one series (a pod is gone). Returns whether it existed.
        pub fn remove<V: LabelValue>(&self, values: &[V]) -> Result<bool, MetricsError> {
            self.0.remove(values)
        }

        /// Keeps only the series for which `keep(label values)` is true.
        pub fn retain(&self, keep: impl FnMut(&[Box<str>]) -> bool) {
            self.0.retain(keep)
        }

        /// Records that `script` uses this family (the end-of-run summary shows a
        /// script's own families).
        pub fn add_owner(&self, script: &str) {
            self.0.add_owner(script)
        }

        /// Marks the family as detail for pods ([`super::PodDetail`]): its pod
        /// series are exported only for the pods selected for detail.
        pub fn set_detail(&self, on: bool) {
            self.0.detail.store(on, Ordering::Relaxed)
        }
    };
}

fn finite(family: &Family, v: f64) -> Result<f64, MetricsError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(MetricsError::InvalidValue {
            metric: family.name.clone(),
            reason: format!("{v} is not a finite number"),
        })
    }
}

/// A monotonic counter.
#[derive(Clone)]
pub struct Counter(pub(crate) Arc<Family>);

impl Counter {
    common!();

    /// Adds one.
    #[inline]
    pub fn inc<V: LabelValue>(&self, values: &[V]) -> Result<(), MetricsError> {
        self.add(values, 1.0)
    }

    /// Adds `n` (which must not be negative).
    #[inline]
    pub fn add<V: LabelValue, N: Number>(&self, values: &[V], n: N) -> Result<(), MetricsError> {
        let n = finite(&self.0, n.to_f64())?;
        if n < 0.0 {
            return Err(MetricsError::InvalidValue {
                metric: self.0.name.clone(),
                reason: format!("a counter cannot decrease (add {n}); use a gauge"),
            });
        }
        self.0.update(values, |v| {
            if let Value::Scalar(x) = v {
                *x += n
            }
        })
    }

    /// Sets the total, for counts kept elsewhere (a kernel map). A value lower than the
    /// current one is a reset (the map was recreated) and is taken as is.
    #[inline]
    pub fn set_total<V: LabelValue, N: Number>(
        &self,
        values: &[V],
        total: N,
    ) -> Result<(), MetricsError> {
        let total = finite(&self.0, total.to_f64())?;
        if total < 0.0 {
            return Err(MetricsError::InvalidValue {
                metric: self.0.name.clone(),
                reason: format!("a counter total cannot be negative ({total})"),
            });
        }
        self.0.update(values, |v| *v = Value::Scalar(total))
    }

    /// Current value of a series, if it exists.
    pub fn get<V: LabelValue>(&self, values: &[V]) -> Option<f64> {
        scalar(&self.0, values)
    }
}

/// A value that goes up and down.
#[derive(Clone)]
pub struct Gauge(pub(crate) Arc<Family>);

impl Gauge {
    common!();

    #[inline]
    pub fn set<V: LabelValue, N: Number>(&self, values: &[V], x: N) -> Result<(), MetricsError> {
        let x = finite(&self.0, x.to_f64())?;
        self.0.update(values, |v| *v = Value::Scalar(x))
    }

    /// Adds `n` (negative to subtract).
    #[inline]
    pub fn add<V: LabelValue, N: Number>(&self, values: &[V], n: N) -> Result<(), MetricsError> {
        let n = finite(&self.0, n.to_f64())?;
        self.0.update(values, |v| {
            if let Value::Scalar(x) = v {
                *x += n
            }
        })
    }

    pub fn get<V: LabelValue>(&self, values: &[V]) -> Option<f64> {
        scalar(&self.0, values)
    }
}

/// A histogram with fixed buckets (explicit or log2).
#[derive(Clone)]
pub struct Histogram(pub(crate) Arc<Family>);

impl Histogram {
    common!();

    /// Records one value, in raw units (multiplied by the histogram's scale).
    #[inline]
    pub fn observe<V: LabelValue, N: Number>(
        &self,
        values: &[V],
        raw: N,
    ) -> Result<(), MetricsError> {
        let raw = finite(&self.0, raw.to_f64())?;
        let Some(b) = &self.0.buckets else {
            return Ok(());
        };
        let idx = b.index(raw);
        let scaled = raw * b.scale;
        self.0.update(values, |v| {
            if let Value::Hist { counts, sum } = v {
                counts[idx] += 1;
                *sum += scaled;
            }
        })
    }

    /// Replaces a series with counts kept elsewhere (a kernel log2 map): per-bucket or
    /// cumulative counts, and the sum of the values in raw units. Like
    /// [`Counter::set_total`], lower counts than before are a reset and are accepted.
    pub fn set_buckets<V: LabelValue>(
        &self,
        values: &[V],
        counts: BucketCounts<'_>,
        raw_sum: f64,
    ) -> Result<(), MetricsError> {
        let Some(b) = &self.0.buckets else {
            return Ok(());
        };
        let raw_sum = finite(&self.0, raw_sum)?;
        let n = b.bounds.len() + 1;
        let mut per = vec![0u64; n];
        match counts {
            BucketCounts::PerBucket(c) => {
                for (i, x) in c.iter().enumerate() {
                    per[i.min(n - 1)] += x;
                }
            }
            BucketCounts::Cumulative(c) => {
                if c.len() > n {
                    return Err(MetricsError::InvalidValue {
                        metric: self.0.name.clone(),
                        reason: format!(
                            "{} cumulative counts for {} buckets (with +Inf)",
                            c.len(),
                            n
                        ),
                    });
                }
                let mut prev = 0u64;
                for (i, x) in c.iter().enumerate() {
                    if *x < prev {
                        return Err(MetricsError::InvalidValue {
                            metric: self.0.name.clone(),
                            reason: format!(
                                "cumulative counts decrease at bucket {i} ({x} < {prev})"
                            ),
                        });
                    }
                    per[i] = x - prev;
                    prev = *x;
                }
            }
        }
        let sum = raw_sum * b.scale;
        self.0.update(values, |v| {
            *v = Value::Hist {
                counts: per.into(),
                sum,
            }
        })
    }

    /// Per-bucket counts (the last one is `+Inf`) and sum of a series, if it exists.
    pub fn get<V: LabelValue>(&self, values: &[V]) -> Option<(Vec<u64>, f64)> {
        let hash_hit = self
            .0
            .snapshot()
            .into_iter()
            .find(|(l, _)| super::labels::values_eq(l, values));
        match hash_hit {
            Some((_, Value::Hist { counts, sum })) => Some((counts.into_vec(), sum)),
            _ => None,
        }
    }

    /// Upper bounds of the buckets, in exported units (`+Inf` not included).
    pub fn bounds(&self) -> &[f64] {
        self.0.buckets.as_ref().map(|b| &*b.bounds).unwrap_or(&[])
    }
}

fn scalar<V: LabelValue>(family: &Family, values: &[V]) -> Option<f64> {
    family
        .lock()
        .iter()
        .find(|s| super::labels::values_eq(&s.labels, values))
        .and_then(|s| match s.value {
            Value::Scalar(x) => Some(x),
            _ => None,
        })
}
