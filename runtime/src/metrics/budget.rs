//! Budgets of what scripts register: families per script, series of all scripts
//! together, and what each script holds ([`Registry::usage`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::family::{self, Family};
use super::names::{table_name, TableName};
use super::{
    explicit_buckets, log2_buckets, Counter, Gauge, Histogram, MetricKind, MetricsError, Registry,
    DEFAULT_FAMILIES_PER_SCRIPT, DEFAULT_TOTAL_SERIES, LOG2_MAX_SLOT,
};

/// Budgets of what scripts register, for the whole registry. Sonde's own families
/// (registered without an owner) are exempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Families one script may hold (own or share); past it registering a new one
    /// is an error.
    pub families_per_script: usize,
    /// Series of all script-owned families together; past it new series are
    /// dropped and counted.
    pub total_series: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            families_per_script: DEFAULT_FAMILIES_PER_SCRIPT,
            total_series: DEFAULT_TOTAL_SERIES,
        }
    }
}

/// What one script holds in the registry ([`Registry::usage`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScriptUsage {
    /// Families it registered (a family shared with another script counts for both).
    pub families: usize,
    /// Series of those families.
    pub series: usize,
    /// Updates of those families dropped by their series budget.
    pub series_dropped: u64,
    /// Updates of those families dropped by the total budget (`limits.total_series`).
    pub series_dropped_total: u64,
    /// New families refused by `limits.families_per_script`.
    pub families_refused: u64,
}

impl Registry {
    /// Sets the budgets of what scripts register (the daemon's `limits`); applies
    /// to registrations and new series from now on, nothing is removed.
    pub fn set_budgets(&self, budgets: Budgets) {
        self.families_per_script
            .store(budgets.families_per_script, Ordering::Relaxed);
        self.totals
            .limit
            .store(budgets.total_series, Ordering::Relaxed);
    }

    /// The budgets in force.
    pub fn budgets(&self) -> Budgets {
        Budgets {
            families_per_script: self.families_per_script.load(Ordering::Relaxed),
            total_series: self.totals.limit.load(Ordering::Relaxed),
        }
    }

    /// Series of all script-owned families together (what `limits.total_series`
    /// bounds).
    pub fn script_series(&self) -> usize {
        self.totals.series.load(Ordering::Relaxed)
    }

    /// Registration on behalf of `script`: the family is recorded as the script's
    /// and the [`Budgets`] apply.
    pub fn for_script<'a>(&'a self, script: &'a str) -> ScriptMetrics<'a> {
        ScriptMetrics {
            registry: self,
            owner: Some(script),
        }
    }

    /// What each script holds, by script name.
    pub fn usage(&self) -> BTreeMap<String, ScriptUsage> {
        let mut out: BTreeMap<String, ScriptUsage> = BTreeMap::new();
        for f in self.families() {
            let owners = f.owners.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if owners.is_empty() {
                continue;
            }
            let series = f.len();
            let dropped = f.dropped.load(Ordering::Relaxed);
            let dropped_total = f.dropped_total.load(Ordering::Relaxed);
            for o in owners {
                let u = out.entry(o).or_default();
                u.families += 1;
                u.series += series;
                u.series_dropped += dropped;
                u.series_dropped_total += dropped_total;
            }
        }
        for (labels, value) in self.families_dropped.0.snapshot() {
            if let (Some(script), family::Value::Scalar(n)) = (labels.first(), value) {
                out.entry(script.to_string()).or_default().families_refused = n as u64;
            }
        }
        out
    }

    /// Ok when `script` may hold one more family; else counts and logs the refusal.
    pub(super) fn within_family_budget(
        &self,
        families: &BTreeMap<String, Arc<Family>>,
        script: &str,
        metric: &str,
    ) -> Result<(), MetricsError> {
        let budget = self.families_per_script.load(Ordering::Relaxed);
        let held = families.values().filter(|f| f.is_owned_by(script)).count();
        if held < budget {
            return Ok(());
        }
        let _ = self.families_dropped.inc(&[script]);
        let first = self
            .family_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(script.to_string());
        if first {
            tracing::warn!(script, metric, budget, "metric family budget reached (limits.families_per_script): new families of this script are refused");
        }
        Err(MetricsError::FamilyBudget {
            script: script.to_string(),
            metric: metric.to_string(),
            budget,
        })
    }
}

/// Registration of metric families: on behalf of one script
/// ([`Registry::for_script`]: the family recorded as the script's, within
/// [`Budgets::families_per_script`]; a family the script already holds, after a
/// reload, is always found again), or of sonde itself (the [`Registry`] methods of
/// the same names, no owner).
pub struct ScriptMetrics<'a> {
    pub(super) registry: &'a Registry,
    pub(super) owner: Option<&'a str>,
}

impl ScriptMetrics<'_> {
    /// Registers (or finds) a counter. `name` must end in `_total`.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Counter, MetricsError> {
        self.registry
            .register_for(
                self.owner,
                name,
                help,
                MetricKind::Counter,
                label_names,
                None,
                budget,
            )
            .map(Counter)
    }

    /// Registers (or finds) a gauge.
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Gauge, MetricsError> {
        self.registry
            .register_for(
                self.owner,
                name,
                help,
                MetricKind::Gauge,
                label_names,
                None,
                budget,
            )
            .map(Gauge)
    }

    /// Registers (or finds) a histogram with explicit upper bounds (strictly
    /// increasing, finite; `+Inf` is implicit).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        buckets: Vec<f64>,
        budget: usize,
    ) -> Result<Histogram, MetricsError> {
        let b = explicit_buckets(name, buckets)?;
        self.registry
            .register_for(
                self.owner,
                name,
                help,
                MetricKind::Histogram,
                label_names,
                Some(b),
                budget,
            )
            .map(Histogram)
    }

    /// Registers (or finds) a log2 histogram, the layout of kernel log2 maps: slot `i`
    /// holds raw values in `(2^(i-1), 2^i]` (slot 0: `<= 1`), slots `0..=max_slot`,
    /// bucket bounds `scale * 2^i` in exported units (e.g. `scale = 1e-9` exports a
    /// nanosecond histogram in seconds).
    pub fn log2_histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        max_slot: u32,
        scale: f64,
        budget: usize,
    ) -> Result<Histogram, MetricsError> {
        let b = log2_buckets(name, max_slot, scale)?;
        self.registry
            .register_for(
                self.owner,
                name,
                help,
                MetricKind::Histogram,
                label_names,
                Some(b),
                budget,
            )
            .map(Histogram)
    }
}

impl ScriptMetrics<'_> {
    /// Registers (or finds) the counter of the table `table` of `count()`, named
    /// by [`table_name`] (`"2xx"` -> `sonde_2xx_total`).
    ///
    /// ```
    /// # let r = sonde::metrics::Registry::new("n");
    /// let c = r.for_script("x").count_table("2xx", &["key"], 100).unwrap();
    /// assert_eq!(c.name(), "sonde_2xx_total");
    /// ```
    pub fn count_table(
        &self,
        table: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Counter, MetricsError> {
        let TableName { name, .. } = table_name(table, MetricKind::Counter);
        let help = format!("Events counted by count(\"{table}\", ...).");
        self.table(table, &name, || {
            self.counter(&name, &help, label_names, budget).map(|c| c.0)
        })
        .map(Counter)
    }

    /// Registers (or finds) the log2 histogram of the table `table` of `hist()`,
    /// named by [`table_name`]: values are observed in the table's unit and
    /// exported in the base unit (`lat_ms` -> `sonde_lat_seconds`, bounds
    /// `1e-3 * 2^i`).
    ///
    /// ```
    /// # let r = sonde::metrics::Registry::new("n");
    /// let h = r.for_script("x").hist_table("lat_ms", &[] as &[&str], 100).unwrap();
    /// h.observe::<&str, _>(&[], 250).unwrap();
    /// assert_eq!(h.name(), "sonde_lat_seconds");
    /// assert!(r.render_prometheus().contains("sonde_lat_seconds_sum{node=\"n\"} 0.25"));
    /// ```
    pub fn hist_table(
        &self,
        table: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Histogram, MetricsError> {
        let TableName { name, scale } = table_name(table, MetricKind::Histogram);
        let help = if scale == 1.0 {
            format!("Values observed by hist(\"{table}\", ...).")
        } else {
            format!("Values observed by hist(\"{table}\", ...), converted to the base unit.")
        };
        self.table(table, &name, || {
            self.log2_histogram(&name, &help, label_names, LOG2_MAX_SLOT, scale, budget)
                .map(|h| h.0)
        })
        .map(Histogram)
    }

    /// Registers a table's family with `register`, unless its name is taken by a
    /// metric that is not that table: another table, or a metric registered with
    /// `metrics::*` (a table's family is marked as the table's when it is created).
    fn table(
        &self,
        table: &str,
        name: &str,
        register: impl FnOnce() -> Result<Arc<Family>, MetricsError>,
    ) -> Result<Arc<Family>, MetricsError> {
        let conflict = |other: Option<&str>| MetricsError::TableConflict {
            table: table.to_string(),
            metric: name.to_string(),
            other: other.map(str::to_string),
        };
        let existing = self
            .registry
            .families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|f| f.table.get().cloned());
        match existing {
            Some(Some(t)) if *t == *table => {}
            Some(other) => return Err(conflict(other.as_deref())),
            None => {}
        }
        let family = register()?;
        let owner = family.table.get_or_init(|| table.into());
        if **owner != *table {
            return Err(conflict(Some(owner)));
        }
        Ok(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(families_per_script: usize, total_series: usize) -> Registry {
        let r = Registry::new("n");
        r.set_budgets(Budgets {
            families_per_script,
            total_series,
        });
        r
    }

    #[test]
    fn a_script_past_its_family_budget_gets_an_error_and_it_is_counted() {
        let r = registry(3, 1000);
        let a = r.for_script("a");
        for i in 0..3 {
            a.counter(&format!("f{i}_total"), "F.", &["x"], 10).unwrap();
        }
        let e = a.gauge("f3", "F.", &["x"], 10).err().unwrap();
        assert_eq!(
            e.to_string(),
            "metric `sonde_f3` not registered: script `a` already holds 3 metric families \
             (limits.families_per_script); use a label instead of a new metric name per value"
        );
        assert!(matches!(e, MetricsError::FamilyBudget { budget: 3, .. }));
        // Refused: not registered at all.
        assert!(!r.names().contains(&"sonde_f3".to_string()));
        // What it holds is found again (a reload), every kind of registration.
        a.counter("f0_total", "F, reworded.", &["x"], 10).unwrap();
        let budget_err =
            |e: Option<MetricsError>| matches!(e, Some(MetricsError::FamilyBudget { .. }));
        assert!(budget_err(
            a.log2_histogram("lat_seconds", "H.", &["x"], 8, 1e-9, 10)
                .err()
        ));
        assert!(budget_err(
            a.histogram("size_bytes", "H.", &["x"], vec![1.0], 10).err()
        ));
        // Another script has its own budget, and sonde's own families have none
        // (nor can a script join one).
        r.for_script("b").gauge("g", "G.", &["x"], 10).unwrap();
        r.gauge("own", "Own.", &["x"], 10).unwrap();
        let e = r
            .for_script("b")
            .gauge("own", "Own.", &["x"], 10)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("reserved for sonde's own metrics"),
            "{e}"
        );
        let text = r.render_prometheus();
        assert!(
            text.contains(r#"sonde_metric_families_dropped_total{node="n",script="a"} 3"#),
            "{text}"
        );
        let usage = r.usage();
        assert_eq!(usage["a"].families, 3);
        assert_eq!(usage["a"].families_refused, 3);
        assert_eq!(usage["b"].families, 1);
        assert_eq!(usage["b"].families_refused, 0);
        assert!(!usage.contains_key("own"));
        // The name stays reserved.
        assert!(r
            .counter(crate::metrics::FAMILIES_DROPPED, "X.", &["script"], 1)
            .is_err());
        // Gone: its refusals go with it, and it starts afresh.
        r.release("a");
        assert!(!r.render_prometheus().contains(r#"script="a""#));
        r.for_script("a").gauge("f3", "F.", &["x"], 10).unwrap();
    }

    #[test]
    fn joining_another_scripts_family_counts_for_both() {
        let r = registry(1, 1000);
        r.for_script("a")
            .counter("shared_total", "S.", &["x"], 10)
            .unwrap();
        r.for_script("b")
            .counter("shared_total", "S.", &["x"], 10)
            .unwrap();
        assert!(r
            .for_script("b")
            .counter("more_total", "M.", &["x"], 10)
            .is_err());
        let usage = r.usage();
        assert_eq!((usage["a"].families, usage["b"].families), (1, 1));
    }

    #[test]
    fn past_the_total_series_budget_new_series_are_dropped_and_counted() {
        let r = registry(10, 5);
        let a = r
            .for_script("a")
            .counter("a_total", "A.", &["x"], 100)
            .unwrap();
        let b = r.for_script("b").gauge("bee", "B.", &["x"], 100).unwrap();
        for i in 0..4 {
            a.inc(&[i as i64]).unwrap();
        }
        b.set(&["0"], 1).unwrap();
        // Full: new series of any script are dropped, existing ones still update.
        b.set(&["1"], 1).unwrap();
        a.inc(&[99i64]).unwrap();
        a.inc(&[0i64]).unwrap();
        b.set(&["0"], 7).unwrap();
        assert_eq!((a.len(), b.len()), (4, 1));
        assert_eq!(a.get(&[0i64]), Some(2.0));
        assert_eq!(b.get(&["0"]), Some(7.0));
        assert_eq!(r.script_series(), 5);
        // sonde's own families are not held back.
        let own = r.gauge("own", "Own.", &["x"], 100).unwrap();
        for i in 0..10 {
            own.set(&[i as i64], 1).unwrap();
        }
        assert_eq!(own.len(), 10);
        let text = r.render_prometheus();
        assert!(
            text.contains(
                r#"sonde_series_dropped_total{node="n",metric="sonde_a_total",reason="total_series"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"sonde_series_dropped_total{node="n",metric="sonde_a_total",reason="series_budget"} 0"#
        ));
        assert!(text.contains(r#"metric="sonde_bee",reason="total_series"} 1"#));
        assert!(!text.contains(r#"metric="sonde_own",reason="total_series""#));
        let usage = r.usage();
        assert_eq!((usage["a"].series, usage["a"].series_dropped_total), (4, 1));
        // Room again when series go away: removed, retained out, a script released.
        assert!(a.remove(&[3i64]).unwrap());
        b.set(&["1"], 1).unwrap();
        assert_eq!(b.len(), 2);
        a.retain(|l| &*l[0] == "0");
        assert_eq!(r.script_series(), 3);
        r.release("b");
        drop(b);
        assert_eq!(r.script_series(), 1);
        // A higher budget applies at once.
        r.set_budgets(Budgets {
            families_per_script: 10,
            total_series: 1000,
        });
        for i in 0..50 {
            a.inc(&[i as i64]).unwrap();
        }
        assert_eq!(a.len(), 50);
    }

    #[test]
    fn a_family_adopted_by_a_script_brings_its_series_into_the_total() {
        let r = registry(10, 3);
        let c = r.counter("c_total", "C.", &["x"], 100).unwrap();
        for i in 0..5 {
            c.inc(&[i as i64]).unwrap();
        }
        assert_eq!(r.script_series(), 0);
        c.add_owner("s");
        assert_eq!(r.script_series(), 5);
        c.inc(&[9i64]).unwrap();
        assert_eq!(c.len(), 5);
        r.release("s");
        drop(c);
        assert_eq!(r.script_series(), 0);
    }
}
