//! One metric family: its description and its series, behind one lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::labels::{self, LabelValue};
use super::MetricsError;

/// What a family counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Bucket layout of a histogram family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Buckets {
    /// Upper bounds (`le`), strictly increasing, in exported units; `+Inf` is implicit.
    pub bounds: Box<[f64]>,
    /// Raw values are multiplied by this before they are exported (1 unless the
    /// histogram converts units, e.g. 1e-9 for nanoseconds to seconds).
    pub scale: f64,
    /// `Some(max_slot)` for log2 histograms: bucket `i` has bound `scale * 2^i`.
    pub log2: Option<u32>,
}

impl Buckets {
    /// Index of the bucket a raw value falls into (`bounds.len()` is `+Inf`).
    #[inline]
    pub fn index(&self, raw: f64) -> usize {
        match self.log2 {
            Some(max) => (log2_slot_f64(raw) as usize).min(max as usize + 1),
            None => {
                let v = raw * self.scale;
                self.bounds.partition_point(|b| *b < v)
            }
        }
    }
}

/// Slot of a value in a log2 histogram: 0 for `v <= 1`, else `ceil(log2(v))`, so that
/// slot `i` holds the values in `(2^(i-1), 2^i]` and its upper bound is exactly `2^i`.
#[inline]
pub fn log2_slot(v: u64) -> u32 {
    if v <= 1 {
        0
    } else {
        64 - (v - 1).leading_zeros()
    }
}

/// [`log2_slot`] for floats (negative and NaN values land in slot 0).
#[inline]
pub fn log2_slot_f64(v: f64) -> u32 {
    if v.is_nan() || v <= 1.0 {
        0
    } else if v < 18446744073709551615.0 && v.fract() == 0.0 {
        log2_slot(v as u64)
    } else {
        v.log2().ceil().min(1024.0) as u32
    }
}

/// The value of one series.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(f64),
    Hist {
        /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
        counts: Box<[u64]>,
        /// Sum of observed values, in exported units.
        sum: f64,
    },
}

pub(crate) struct Series {
    pub labels: Box<[Box<str>]>,
    hash: u64,
    pub value: Value,
}

/// The series of every script-owned family of a registry, against
/// `limits.total_series`. Shared by the registry and its families.
#[derive(Debug)]
pub(crate) struct Totals {
    /// Series held by families that have an owner (a script).
    pub series: AtomicUsize,
    pub limit: AtomicUsize,
    /// When the total budget was last logged as reached (ms since `origin`, plus one).
    warned_at: AtomicU64,
    origin: std::time::Instant,
}

impl Totals {
    pub fn new(limit: usize) -> Self {
        Totals {
            series: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            warned_at: AtomicU64::new(0),
            origin: std::time::Instant::now(),
        }
    }

    /// Takes room for one more series; false when the total budget is reached.
    fn reserve(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.series
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .series
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
        }
    }

    /// True at most once a minute: whether to log that the budget is reached.
    fn should_warn(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.warned_at.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 60_000)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

pub(crate) struct Family {
    pub name: String,
    pub help: RwLock<String>,
    pub kind: MetricKind,
    pub label_names: Box<[String]>,
    pub buckets: Option<Buckets>,
    pub budget: AtomicUsize,
    /// Updates that would have created a series past the budget.
    pub dropped: AtomicU64,
    /// Updates that would have created a series past the registry's total budget.
    pub dropped_total: AtomicU64,
    warned: AtomicBool,
    /// Scripts that registered this family (for the end-of-run summary).
    pub owners: Mutex<Vec<String>>,
    /// The table of `count()` / `hist()` this family exports, as the script named
    /// it (`lat_ms` for `sonde_lat_seconds`): the summary prints it under that name.
    pub table: OnceLock<Box<str>>,
    /// Detail for pods: its pod series (its classic buckets, for a log2 histogram)
    /// are exported only for the pods [`super::PodDetail`] selects. Host series
    /// always are.
    pub detail: AtomicBool,
    /// Whether this family's series count in [`Totals`]: it has (had) an owner.
    /// Changed and read only with the series lock held.
    scripted: AtomicBool,
    totals: Arc<Totals>,
    hasher: DefaultHashBuilder,
    series: Mutex<HashTable<Series>>,
}

impl Family {
    pub fn new(
        name: String,
        help: String,
        kind: MetricKind,
        label_names: Box<[String]>,
        buckets: Option<Buckets>,
        budget: usize,
        totals: Arc<Totals>,
    ) -> Self {
        Family {
            name,
            help: RwLock::new(help),
            kind,
            label_names,
            buckets,
            budget: AtomicUsize::new(budget),
            dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            owners: Mutex::new(Vec::new()),
            table: OnceLock::new(),
            detail: AtomicBool::new(false),
            scripted: AtomicBool::new(false),
            totals,
            hasher: DefaultHashBuilder::default(),
            series: Mutex::new(HashTable::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, HashTable<Series>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_arity(&self, got: usize) -> Result<(), MetricsError> {
        if got == self.label_names.len() {
            Ok(())
        } else {
            Err(MetricsError::LabelArity {
                metric: self.name.clone(),
                expected: self.label_names.join(", "),
                want: self.label_names.len(),
                got,
            })
        }
    }

    fn new_value(&self) -> Value {
        match &self.buckets {
            None => Value::Scalar(0.0),
            Some(b) => Value::Hist {
                counts: vec![0; b.bounds.len() + 1].into(),
                sum: 0.0,
            },
        }
    }

    /// Applies `f` to the series with these label values, creating it within the budget
    /// (and, for a script's family, within the registry's total budget). Past either
    /// the update is dropped and counted (not an error).
    #[inline]
    pub fn update<V: LabelValue>(
        &self,
        values: &[V],
        f: impl FnOnce(&mut Value),
    ) -> Result<(), MetricsError> {
        self.check_arity(values.len())?;
        let hash = labels::hash_values(&self.hasher, values);
        let mut table = self.lock();
        if let Some(s) = table.find_mut(hash, |s| {
            s.hash == hash && labels::values_eq(&s.labels, values)
        }) {
            f(&mut s.value);
            return Ok(());
        }
        let budget = self.budget.load(Ordering::Relaxed);
        if table.len() >= budget {
            drop(table);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(metric = %self.name, budget, "series budget reached: new series are dropped");
            }
            return Ok(());
        }
        if self.scripted.load(Ordering::Relaxed) && !self.totals.reserve() {
            drop(table);
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            if self.totals.should_warn() {
                tracing::warn!(
                    metric = %self.name,
                    total_series = self.totals.limit.load(Ordering::Relaxed),
                    "total series budget of the scripts reached (limits.total_series): new series are dropped"
                );
            }
            return Ok(());
        }
        let mut value = self.new_value();
        f(&mut value);
        table.insert_unique(
            hash,
            Series {
                labels: labels::to_owned(values),
                hash,
                value,
            },
            |s| s.hash,
        );
        Ok(())
    }

    pub fn remove<V: LabelValue>(&self, values: &[V]) -> Result<bool, MetricsError> {
        self.check_arity(values.len())?;
        let hash = labels::hash_values(&self.hasher, values);
        let mut table = self.lock();
        match table.find_entry(hash, |s| {
            s.hash == hash && labels::values_eq(&s.labels, values)
        }) {
            Ok(e) => {
                e.remove();
                if self.scripted.load(Ordering::Relaxed) {
                    self.totals.release(1);
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    pub fn retain(&self, mut keep: impl FnMut(&[Box<str>]) -> bool) {
        let mut table = self.lock();
        let before = table.len();
        table.retain(|s| keep(&s.labels));
        if self.scripted.load(Ordering::Relaxed) {
            self.totals.release(before - table.len());
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// A copy of every series, sorted by label values.
    pub fn snapshot(&self) -> Vec<(Box<[Box<str>]>, Value)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|s| (s.labels.clone(), s.value.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn is_owned_by(&self, script: &str) -> bool {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|o| o == script)
    }

    /// Records that `script` uses this family. From then on its series count
    /// against the registry's total budget (`limits.total_series`).
    pub fn add_owner(&self, script: &str) {
        {
            let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            if !owners.iter().any(|o| o == script) {
                owners.push(script.to_string());
            }
        }
        let table = self.lock();
        if !self.scripted.swap(true, Ordering::Relaxed) {
            // Series it had before count now (they were not refused, so this may go
            // past the limit: new series are then refused until some go away).
            self.totals.series.fetch_add(table.len(), Ordering::Relaxed);
        }
    }

    /// Whether the family's series count against the total budget.
    pub fn is_scripted(&self) -> bool {
        self.scripted.load(Ordering::Relaxed)
    }

    /// Removes an owner; true when other owners remain.
    pub fn remove_owner(&self, script: &str) -> bool {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.retain(|o| o != script);
        !owners.is_empty()
    }

    /// `counter{a, b}` / `histogram{a}[0.1, 1]`: how the family reads in conflict errors.
    pub fn describe(&self) -> String {
        describe(self.kind, &self.label_names, self.buckets.as_ref())
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        if *self.scripted.get_mut() {
            let n = self
                .series
                .get_mut()
                .map(|t| t.len())
                .unwrap_or_else(|e| e.into_inner().len());
            self.totals.release(n);
        }
    }
}

pub(crate) fn describe(kind: MetricKind, labels: &[String], buckets: Option<&Buckets>) -> String {
    let mut s = format!("{}{{{}}}", kind.as_str(), labels.join(", "));
    if let Some(b) = buckets {
        match b.log2 {
            Some(max) => s.push_str(&format!(" with log2 buckets 0..={max} (scale {})", b.scale)),
            None => s.push_str(&format!(" with buckets {:?}", b.bounds)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_slots_have_power_of_two_upper_bounds() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 2);
        assert_eq!(log2_slot(4), 2);
        assert_eq!(log2_slot(5), 3);
        assert_eq!(log2_slot(1024), 10);
        assert_eq!(log2_slot(1025), 11);
        assert_eq!(log2_slot(u64::MAX), 64);
        assert_eq!(log2_slot_f64(0.5), 0);
        assert_eq!(log2_slot_f64(4.0), 2);
        assert_eq!(log2_slot_f64(4.5), 3);
        assert_eq!(log2_slot_f64(f64::NAN), 0);
        assert_eq!(log2_slot_f64(-3.0), 0);
    }
}
