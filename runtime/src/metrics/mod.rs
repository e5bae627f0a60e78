//! Metrics: the registry scripts and sources write into, exported as Prometheus text
//! (0.0.4 or OpenMetrics 1.0) and printed as a table at the end of a one-shot run.
//!
//! A family has a kind (counter, gauge, histogram), label names fixed at registration
//! and a *series budget*: past it, updates that would create a new series are
//! dropped and counted in `sonde_series_dropped_total{metric, reason="series_budget"}`,
//! so a label with unbounded values (a port, an address) cannot exhaust memory.
//! Every series carries the constant label `node`.
//!
//! ```
//! use sonde::metrics::Registry;
//!
//! let registry = Registry::new("node-1");
//! let resets = registry
//!     .counter("tcp_reset_segments_total", "TCP RST segments.", &["namespace", "pod"], 1000)
//!     .unwrap();
//! resets.inc(&["shop", "web-1"]).unwrap();
//! assert!(registry.render_prometheus().contains(
//!     r#"sonde_tcp_reset_segments_total{node="node-1",namespace="shop",pod="web-1"} 1"#));
//! ```
//!
//! Registering a name again with the same kind and labels returns the same family, so
//! series survive a script reload; anything else is an error naming both shapes.
//!
//! Scripts register through [`Registry::for_script`], which records the script as
//! the family's owner and applies two more [`Budgets`]: the families one script may
//! hold (past it, registering a new one is an error the script can catch, counted
//! in `sonde_metric_families_dropped_total{script}`), and the series of all scripts
//! together (past it, new series are dropped like past a family's own budget,
//! counted in `sonde_series_dropped_total{metric, reason="total_series"}`).
//!
//! ```
//! use sonde::metrics::{Budgets, Registry};
//!
//! let registry = Registry::new("node-1");
//! registry.set_budgets(Budgets { families_per_script: 1, total_series: 100 });
//! let mine = registry.for_script("mine");
//! mine.counter("a_total", "A.", &["pod"], 10).unwrap();
//! let err = mine.gauge("queue_bytes", "Queued.", &["pod"], 10).err().unwrap();
//! assert!(err.to_string().contains("limits.families_per_script"));
//! assert_eq!(registry.usage()["mine"].families_refused, 1);
//! ```
//! Names follow Prometheus conventions (checked at registration, so the export always
//! passes `promtool check metrics`): lowercase snake_case, the `sonde_` prefix added
//! when missing, counters end in `_total` and nothing else does, base units
//! (`_seconds`, `_bytes`), no abbreviated units (`_ms`).

mod budget;
mod family;
mod handles;
mod labels;
mod names;
mod proto;
mod render;
mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use budget::{Budgets, ScriptMetrics, ScriptUsage};
pub use family::{log2_slot, log2_slot_f64, MetricKind};
pub use handles::{BucketCounts, Counter, Gauge, Histogram, Number};
pub use labels::LabelValue;

use family::{Buckets, Family, Totals};
pub use names::{full_name, sanitize_name, table_name, TableName};
use names::{validate_labels, validate_name};
pub use proto::{native_layout, NativeLayout, PROTOBUF_CONTENT_TYPE};

/// Prefix of every metric sonde exports.
pub const PREFIX: &str = "sonde_";
/// Self-metric: updates dropped because a family reached its series budget.
pub const SERIES_DROPPED: &str = "sonde_series_dropped_total";
/// Self-metric: script handler failures, by script and kind.
pub const SCRIPT_ERRORS: &str = "sonde_script_errors_total";
/// Self-metric: new families a script could not register (`limits.families_per_script`).
pub const FAMILIES_DROPPED: &str = "sonde_metric_families_dropped_total";
/// Default of [`Budgets::families_per_script`]. The built-in `tcpext` script with
/// `counters: "all"` holds about 150 families (one per kernel counter), `snmp`
/// about 70: room for them, and a bound on a script that makes families of data.
pub const DEFAULT_FAMILIES_PER_SCRIPT: usize = 256;
/// Default of [`Budgets::total_series`].
pub const DEFAULT_TOTAL_SERIES: usize = 200_000;
/// Highest slot of a log2 histogram (bucket bound `2^63`).
pub const LOG2_MAX_SLOT: u32 = 63;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metric name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("metric `{metric}`: invalid label name `{label}`: {reason}")]
    InvalidLabel {
        metric: String,
        label: String,
        reason: String,
    },
    #[error("metric `{metric}`: the help text is empty; say what is counted, in a sentence")]
    EmptyHelp { metric: String },
    #[error(
        "metric `{name}` is already registered as {existing}; cannot register it as {requested}"
    )]
    Conflict {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("metric `{metric}` has {want} label(s) ({expected}), got {got} value(s)")]
    LabelArity {
        metric: String,
        expected: String,
        want: usize,
        got: usize,
    },
    #[error("metric `{metric}`: {reason}")]
    InvalidValue { metric: String, reason: String },
    #[error("metric `{metric}`: invalid buckets: {reason}")]
    InvalidBuckets { metric: String, reason: String },
    #[error(
        "table \"{table}\" would be exported as `{metric}`, {}; rename the table",
        taken_by(.other.as_deref())
    )]
    TableConflict {
        table: String,
        metric: String,
        /// The other table of that name; `None`: a metric that is no table.
        other: Option<String>,
    },
    #[error(
        "metric `{metric}` not registered: script `{script}` already holds {budget} metric families \
         (limits.families_per_script); use a label instead of a new metric name per value"
    )]
    FamilyBudget {
        script: String,
        metric: String,
        budget: usize,
    },
}

/// What holds the name a table wanted ([`MetricsError::TableConflict`]).
fn taken_by(other: Option<&str>) -> String {
    match other {
        Some(other) => format!("as the table \"{other}\" is"),
        None => "the name of a metric registered with metrics::*".to_string(),
    }
}

/// What a summary filter sees of a family.
pub struct FamilyInfo<'a> {
    family: &'a Family,
}

impl FamilyInfo<'_> {
    pub fn name(&self) -> &str {
        &self.family.name
    }

    pub fn kind(&self) -> MetricKind {
        self.family.kind
    }

    /// Whether `script` registered (or re-registered) this family.
    pub fn is_owned_by(&self, script: &str) -> bool {
        self.family.is_owned_by(script)
    }
}

/// Pod labels written on every series that has a `pod` label (and `namespace`, when
/// the family has one): `{namespace="shop",pod="web-1"}` gains `app="web"`.
/// Set by the pod resolver ([`Registry::set_pod_labels`]); a family that has a
/// label of the same name keeps its own.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PodLabels {
    /// Label names, in the order they are written.
    pub names: Vec<String>,
    /// `(namespace, pod)` to one value per name (empty: not written).
    pub values: HashMap<(String, String), Vec<String>>,
}

/// All metric families of one process.
pub struct Registry {
    node: String,
    families: RwLock<BTreeMap<String, Arc<Family>>>,
    script_errors: Counter,
    families_dropped: Counter,
    pod_labels: RwLock<Option<Arc<PodLabels>>>,
    totals: Arc<Totals>,
    families_per_script: AtomicUsize,
    /// Scripts already told (in the log) that their family budget is reached.
    family_warned: Mutex<HashSet<String>>,
    /// The text formats write every this-many-th bucket of a log2 histogram
    /// ([`Registry::set_classic_log2_step`]).
    classic_log2_step: AtomicU32,
    /// Which pods get the detail families ([`Registry::set_pod_detail`]).
    pod_detail: RwLock<Arc<PodDetail>>,
}

/// Which pods' series of families marked detail are exported (`metrics.pod_detail`
/// and `metrics.detail_namespaces` of the daemon's config). A series is a pod's when
/// its family has a `pod` label and the value is not empty; every other series
/// (the host's, the node's) is always exported.
///
/// For a pod not selected, a detail counter or gauge is not exported at all, and a
/// detail log2 histogram is exported as a native histogram only (the protobuf
/// format: one series whatever its resolution), without its classic bucket series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDetail {
    /// Every pod gets every family.
    pub all: bool,
    /// Pods in these (Kubernetes) namespaces get every family, and every bucket of
    /// the log2 histograms in the text formats.
    pub namespaces: HashSet<String>,
}

/// How much of a series [`PodDetail`] lets out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Not a pod's series: everything.
    Host,
    /// A pod selected by namespace: everything, every log2 bucket.
    Listed,
    /// A pod selected by `all`: everything.
    All,
    /// A pod not selected: no detail families.
    Core,
}

impl PodDetail {
    /// The scope of one series of a family whose `pod` and `namespace` labels are
    /// at `pod_at` and `ns_at`.
    pub(crate) fn scope(
        &self,
        labels: &[Box<str>],
        pod_at: Option<usize>,
        ns_at: Option<usize>,
    ) -> Scope {
        match pod_at.and_then(|i| labels.get(i)) {
            Some(p) if !p.is_empty() => {
                let ns = ns_at.and_then(|i| labels.get(i)).map_or("", |n| &**n);
                if self.namespaces.contains(ns) {
                    Scope::Listed
                } else if self.all {
                    Scope::All
                } else {
                    Scope::Core
                }
            }
            _ => Scope::Host,
        }
    }
}

impl Registry {
    /// A registry whose every series carries `node="<node>"`.
    pub fn new(node: &str) -> Self {
        let budgets = Budgets::default();
        let totals = Arc::new(Totals::new(budgets.total_series));
        let errors = Arc::new(Family::new(
            SCRIPT_ERRORS.into(),
            "Script handler failures, by script and kind (operations, deadline, size, call_depth, type, runtime, ...).".into(),
            MetricKind::Counter,
            vec!["script".to_string(), "kind".to_string()].into(),
            None,
            usize::MAX,
            totals.clone(),
        ));
        let families_dropped = Arc::new(Family::new(
            FAMILIES_DROPPED.into(),
            "New metric families a script could not register: it already held limits.families_per_script of them (the script got an error).".into(),
            MetricKind::Counter,
            vec!["script".to_string()].into(),
            None,
            usize::MAX,
            totals.clone(),
        ));
        let mut families = BTreeMap::new();
        families.insert(SCRIPT_ERRORS.to_string(), errors.clone());
        families.insert(FAMILIES_DROPPED.to_string(), families_dropped.clone());
        Registry {
            node: node.to_string(),
            families: RwLock::new(families),
            script_errors: Counter(errors),
            families_dropped: Counter(families_dropped),
            pod_labels: RwLock::new(None),
            totals,
            families_per_script: AtomicUsize::new(budgets.families_per_script),
            family_warned: Mutex::new(HashSet::new()),
            classic_log2_step: AtomicU32::new(1),
            pod_detail: RwLock::new(Arc::default()),
        }
    }

    /// Replaces the pod labels added at export ([`PodLabels`]); `None`: none.
    pub fn set_pod_labels(&self, labels: Option<Arc<PodLabels>>) {
        *self.pod_labels.write().unwrap_or_else(|e| e.into_inner()) = labels;
    }

    /// A pod is gone: removes every series, in every family, whose `pod` label is
    /// `pod` and whose `namespace` label (when the family has one) is `namespace`.
    /// Returns how many series were removed.
    ///
    /// ```
    /// # let r = sonde::metrics::Registry::new("n");
    /// let c = r.counter("x_total", "X.", &["namespace", "pod"], 10).unwrap();
    /// c.inc(&["shop", "web-1"]).unwrap();
    /// c.inc(&["shop", "web-2"]).unwrap();
    /// assert_eq!(r.remove_pod_series("shop", "web-1"), 1);
    /// assert_eq!(c.len(), 1);
    /// ```
    pub fn remove_pod_series(&self, namespace: &str, pod: &str) -> usize {
        let mut removed = 0;
        for f in self.families() {
            let Some(pi) = f.label_names.iter().position(|l| l == "pod") else {
                continue;
            };
            let ni = f.label_names.iter().position(|l| l == "namespace");
            let before = f.len();
            f.retain(|v| !(&*v[pi] == pod && ni.is_none_or(|ni| &*v[ni] == namespace)));
            removed += before - f.len();
        }
        removed
    }

    /// Log2 histograms in the text formats (classic histograms, one series per
    /// bucket) keep the bucket of every `step`-th power of two (slots `0, step,
    /// 2*step, ...` and the last slot) instead of every one; their counts are the
    /// same cumulative counts, at fewer bounds. 1 (the default): every bucket.
    /// The protobuf format is not affected: a native histogram is one series
    /// whatever its resolution.
    ///
    /// ```
    /// # let r = sonde::metrics::Registry::new("n");
    /// let h = r.log2_histogram("lat_seconds", "L.", &["pod"], 8, 1e-9, 10).unwrap();
    /// h.observe(&["a"], 3).unwrap(); // slot 2: (2ns, 4ns]
    /// r.set_classic_log2_step(4);
    /// let text = r.render_prometheus();
    /// assert!(text.contains(r#"sonde_lat_seconds_bucket{node="n",pod="a",le="1.6e-8"} 1"#));
    /// assert_eq!(text.matches("sonde_lat_seconds_bucket").count(), 4); // 1ns 16ns 256ns +Inf
    /// ```
    pub fn set_classic_log2_step(&self, step: u32) {
        self.classic_log2_step.store(step.max(1), Ordering::Relaxed);
    }

    /// Which pods get the series of families marked detail ([`PodDetail`]; the
    /// default: none, every pod gets the core set). Pods in `namespaces` also keep
    /// every bucket of their log2 histograms in the text formats, whatever
    /// [`Registry::set_classic_log2_step`] says.
    ///
    /// ```
    /// # use sonde::metrics::PodDetail;
    /// # let r = sonde::metrics::Registry::new("n");
    /// let h = r.log2_histogram("lat_seconds", "L.", &["namespace", "pod"], 8, 1e-9, 10).unwrap();
    /// let c = r.counter("x_total", "X.", &["namespace", "pod"], 10).unwrap();
    /// h.set_detail(true);
    /// c.set_detail(true);
    /// for (ns, pod) in [("shop", "a"), ("db", "b"), ("", "")] {
    ///     h.observe(&[ns, pod], 3).unwrap();
    ///     c.inc(&[ns, pod]).unwrap();
    /// }
    /// r.set_classic_log2_step(4);
    /// r.set_pod_detail(PodDetail { all: false, namespaces: ["shop".to_string()].into() });
    /// let text = r.render_prometheus();
    /// assert_eq!(text.matches(r#"namespace="shop",pod="a",le="#).count(), 10); // 0..=8, +Inf
    /// assert_eq!(text.matches(r#"namespace="",pod="",le="#).count(), 4); // the host: coarse
    /// assert!(!text.contains(r#"pod="b""#)); // db/b: core only
    /// r.set_pod_detail(PodDetail { all: true, ..PodDetail::default() });
    /// assert_eq!(r.render_prometheus().matches(r#"namespace="db",pod="b",le="#).count(), 4);
    /// ```
    pub fn set_pod_detail(&self, detail: PodDetail) {
        *self.pod_detail.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(detail);
    }

    fn pod_detail(&self) -> Arc<PodDetail> {
        self.pod_detail
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The step set by [`Registry::set_classic_log2_step`].
    pub fn classic_log2_step(&self) -> u32 {
        self.classic_log2_step.load(Ordering::Relaxed)
    }

    /// The node name added to every series.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `sonde_script_errors_total{script, kind}`, incremented by the script host.
    pub fn script_errors(&self) -> &Counter {
        &self.script_errors
    }

    /// Registers (or finds) a counter of sonde's own ([`ScriptMetrics::counter`]).
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Counter, MetricsError> {
        self.own().counter(name, help, label_names, budget)
    }

    /// Registers (or finds) a gauge of sonde's own ([`ScriptMetrics::gauge`]).
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        budget: usize,
    ) -> Result<Gauge, MetricsError> {
        self.own().gauge(name, help, label_names, budget)
    }

    /// Registers (or finds) a histogram of sonde's own ([`ScriptMetrics::histogram`]).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        buckets: Vec<f64>,
        budget: usize,
    ) -> Result<Histogram, MetricsError> {
        self.own()
            .histogram(name, help, label_names, buckets, budget)
    }

    /// Registers (or finds) a log2 histogram of sonde's own
    /// ([`ScriptMetrics::log2_histogram`]).
    pub fn log2_histogram(
        &self,
        name: &str,
        help: &str,
        label_names: &[impl AsRef<str>],
        max_slot: u32,
        scale: f64,
        budget: usize,
    ) -> Result<Histogram, MetricsError> {
        self.own()
            .log2_histogram(name, help, label_names, max_slot, scale, budget)
    }

    /// Registration with no owner: sonde's own families.
    fn own(&self) -> ScriptMetrics<'_> {
        ScriptMetrics {
            registry: self,
            owner: None,
        }
    }

    /// Registers (or finds) a family; with an `owner`, records it as the owner's,
    /// within `families_per_script`.
    #[allow(clippy::too_many_arguments)]
    fn register_for(
        &self,
        owner: Option<&str>,
        name: &str,
        help: &str,
        kind: MetricKind,
        label_names: &[impl AsRef<str>],
        buckets: Option<Buckets>,
        budget: usize,
    ) -> Result<Arc<Family>, MetricsError> {
        let name = full_name(name);
        validate_name(&name, kind)?;
        let labels: Vec<String> = label_names.iter().map(|l| l.as_ref().to_string()).collect();
        validate_labels(&name, &labels)?;
        if help.trim().is_empty() {
            return Err(MetricsError::EmptyHelp { metric: name });
        }
        if name == SERIES_DROPPED || name == SCRIPT_ERRORS || name == FAMILIES_DROPPED {
            return Err(MetricsError::InvalidName {
                name,
                reason: "reserved for sonde's own metrics".into(),
            });
        }
        let mut families = self.families.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = families.get(&name) {
            let same = existing.kind == kind
                && *existing.label_names == *labels
                && existing.buckets == buckets;
            if !same {
                return Err(MetricsError::Conflict {
                    name,
                    existing: existing.describe(),
                    requested: family::describe(kind, &labels, buckets.as_ref()),
                });
            }
            let existing = existing.clone();
            if let Some(owner) = owner {
                // sonde's own families (never a script's) are not for scripts to
                // update, nor to take away with them when they go.
                if !existing.is_scripted() {
                    return Err(MetricsError::InvalidName {
                        name,
                        reason: "reserved for sonde's own metrics".into(),
                    });
                }
                if !existing.is_owned_by(owner) {
                    self.within_family_budget(&families, owner, &name)?;
                    existing.add_owner(owner);
                }
            }
            existing.budget.store(budget, Ordering::Relaxed);
            *existing.help.write().unwrap_or_else(|e| e.into_inner()) = help.to_string();
            return Ok(existing);
        }
        if let Some(owner) = owner {
            self.within_family_budget(&families, owner, &name)?;
        }
        let family = Arc::new(Family::new(
            name.clone(),
            help.to_string(),
            kind,
            labels.into(),
            buckets,
            budget,
            self.totals.clone(),
        ));
        if let Some(owner) = owner {
            family.add_owner(owner);
        }
        families.insert(name, family.clone());
        Ok(family)
    }

    /// Removes a family and its series (a script was removed for good).
    pub fn unregister(&self, name: &str) -> bool {
        let name = full_name(name);
        if name == SCRIPT_ERRORS || name == FAMILIES_DROPPED {
            return false;
        }
        self.families
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .is_some()
    }

    /// A script is gone: it no longer owns its families, and the families no other
    /// script owns are removed with their series. Returns the names removed.
    pub fn release(&self, script: &str) -> Vec<String> {
        let mut families = self.families.write().unwrap_or_else(|e| e.into_inner());
        let mut removed = Vec::new();
        families.retain(|name, f| {
            if !f.is_owned_by(script) {
                return true;
            }
            if f.remove_owner(script) {
                return true;
            }
            removed.push(name.clone());
            false
        });
        drop(families);
        self.families_dropped
            .retain(|l| l.first().is_none_or(|s| &**s != script));
        self.family_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(script);
        removed
    }

    /// Names of the registered families, sorted.
    pub fn names(&self) -> Vec<String> {
        self.families().iter().map(|f| f.name.clone()).collect()
    }

    fn families(&self) -> Vec<Arc<Family>> {
        self.families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Prometheus text exposition format 0.0.4
    /// (`text/plain; version=0.0.4; charset=utf-8`).
    pub fn render_prometheus(&self) -> String {
        self.render(render::Format::Prometheus)
    }

    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0;
    /// charset=utf-8`), what Prometheus asks for first: the same families and series
    /// as [`Registry::render_prometheus`], counter families named without `_total`,
    /// canonical `le` values, and the closing `# EOF`.
    pub fn render_openmetrics(&self) -> String {
        self.render(render::Format::OpenMetrics)
    }

    /// The Prometheus protobuf format, length-delimited `MetricFamily` messages
    /// ([`PROTOBUF_CONTENT_TYPE`]): what Prometheus asks for with
    /// `--enable-feature=native-histograms`. Log2 histograms are native histograms
    /// there: one series each, every slot kept, buckets placed in the exported
    /// unit as [`native_layout`] says. Everything else is as in the text formats.
    pub fn render_protobuf(&self) -> Vec<u8> {
        proto::render(
            &self.node,
            &self.families(),
            self.pod_labels().as_deref(),
            &self.pod_detail(),
        )
    }

    fn pod_labels(&self) -> Option<Arc<PodLabels>> {
        self.pod_labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn render(&self, format: render::Format) -> String {
        render::render(
            &self.node,
            &self.families(),
            format,
            self.pod_labels().as_deref(),
            render::Log2Text {
                step: self.classic_log2_step(),
                detail: &self.pod_detail(),
            },
        )
    }

    /// The human table printed at the end of a one-shot run: the families `script`
    /// registered, series by value, histograms as log2 bars.
    pub fn summary(&self, script: &str) -> String {
        self.summary_where(|f| f.is_owned_by(script))
    }

    /// [`Registry::summary`] for the families `filter` accepts.
    pub fn summary_where(&self, filter: impl Fn(&FamilyInfo<'_>) -> bool) -> String {
        let families: Vec<_> = self
            .families()
            .into_iter()
            .filter(|f| filter(&FamilyInfo { family: f }))
            .collect();
        summary::render(&families)
    }
}

/// Checks explicit bucket bounds: strictly increasing, finite, at most 256.
fn explicit_buckets(name: &str, buckets: Vec<f64>) -> Result<Buckets, MetricsError> {
    let full = full_name(name);
    if buckets.len() > 256 {
        return Err(MetricsError::InvalidBuckets {
            metric: full,
            reason: format!("{} buckets; at most 256", buckets.len()),
        });
    }
    for (i, b) in buckets.iter().enumerate() {
        if !b.is_finite() {
            return Err(MetricsError::InvalidBuckets {
                metric: full,
                reason: format!("bound {i} is {b}; bounds are finite (+Inf is implicit)"),
            });
        }
        if i > 0 && buckets[i - 1] >= *b {
            return Err(MetricsError::InvalidBuckets {
                metric: full,
                reason: format!(
                    "bounds must increase strictly ({} then {b})",
                    buckets[i - 1]
                ),
            });
        }
    }
    Ok(Buckets {
        bounds: buckets.into(),
        scale: 1.0,
        log2: None,
    })
}

/// The buckets of a log2 histogram: bounds `scale * 2^i`, slots `0..=max_slot`.
fn log2_buckets(name: &str, max_slot: u32, scale: f64) -> Result<Buckets, MetricsError> {
    let full = full_name(name);
    if max_slot > LOG2_MAX_SLOT {
        return Err(MetricsError::InvalidBuckets {
            metric: full,
            reason: format!("max slot {max_slot}; at most {LOG2_MAX_SLOT}"),
        });
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(MetricsError::InvalidBuckets {
            metric: full,
            reason: format!("scale {scale}; it must be a positive number"),
        });
    }
    let bounds: Vec<f64> = (0..=max_slot).map(|i| scale * (1u64 << i) as f64).collect();
    Ok(Buckets {
        bounds: bounds.into(),
        scale,
        log2: Some(max_slot),
    })
}

#[cfg(test)]
mod tests;
