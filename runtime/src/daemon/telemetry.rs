//! The daemon's metrics about itself: build, scripts, programs, reloads.
//!
//! Counters kept by the unit tasks (records, handler time) and by the kernel (ring
//! buffer losses, program runs and run time) are read at scrape time, never per
//! event.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::bpf::error::SkippedView;
use crate::bpf::maps::MapTable;
use crate::metrics::{Counter, Gauge, Registry, ScriptUsage};

use super::unit::UnitStats;

/// What `/status` and the scrape see of one script.
pub struct UnitView {
    pub name: String,
    /// The script's file, or `builtin:<name>.rhai`.
    pub file: String,
    /// `running`; `degraded` (running, but its handlers fail or it drops records);
    /// `failed` (did not load, or stopped by its runner: see `reason`); or
    /// `unavailable` (a built-in whose program this kernel cannot run: expected, not
    /// an error).
    pub state: &'static str,
    /// Why it is degraded, or why its runner stopped it.
    pub reason: Option<String>,
    /// When a script its runner stopped is tried again.
    pub retry_in: Option<std::time::Duration>,
    pub program: Option<String>,
    pub variant: Option<String>,
    /// Variants not used, with the reason.
    pub skipped: Vec<SkippedView>,
    pub knobs: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    pub loaded_at: Option<SystemTime>,
    pub stats: Arc<UnitStats>,
    pub maps: Option<Arc<MapTable>>,
    pub programs: Option<Arc<[(String, OwnedFd)]>>,
}

impl UnitView {
    /// The state now: a running script turns `degraded` while its runner says so.
    pub fn state(&self) -> &'static str {
        if self.state == "running" && self.stats.is_degraded() {
            "degraded"
        } else {
            self.state
        }
    }

    /// Why it is degraded (read now) or why it stopped.
    pub fn reason(&self) -> Option<String> {
        if self.state == "running" {
            self.stats.reason()
        } else {
            self.reason.clone()
        }
    }

    /// The last error: the view's (load errors, the runner's stop) or a handler
    /// error since, whichever is newer.
    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        let view = self.last_error.clone().zip(self.last_error_at);
        match (view, self.stats.last_error()) {
            (Some(v), Some(h)) if h.1 > v.1 => Some(h),
            (v, None) => v,
            (None, h) => h,
            (v, _) => v,
        }
    }

    /// The `/status` entry, with what the script holds in the registry. A running
    /// script past a budget (families refused, series dropped by the total budget)
    /// is `degraded`: it runs, and some of its data is lost.
    pub fn to_json_with(&self, held: Option<&ScriptUsage>) -> serde_json::Value {
        let mut v = self.to_json();
        let held = held.cloned().unwrap_or_default();
        if self.state == "running" {
            let mut why = Vec::new();
            if held.families_refused > 0 {
                why.push(format!(
                    "{} new metric families refused (limits.families_per_script)",
                    held.families_refused
                ));
            }
            if held.series_dropped_total > 0 {
                why.push(format!(
                    "{} updates dropped: all scripts' series reached limits.total_series",
                    held.series_dropped_total
                ));
            }
            if !why.is_empty() {
                v["state"] = "degraded".into();
                v["degraded"] = why.join("; ").into();
                if v["reason"].is_null() {
                    v["reason"] = why.join("; ").into();
                }
            }
        }
        v["metrics"] = serde_json::json!({
            "families": held.families,
            "series": held.series,
            "families_refused": held.families_refused,
            "series_dropped": held.series_dropped,
            "series_dropped_total_budget": held.series_dropped_total,
        });
        v
    }

    pub fn to_json(&self) -> serde_json::Value {
        let secs = |t: &Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
        };
        let last_error = self.last_error();
        let pairs = |v: &[(String, String)]| {
            v.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "name": self.name,
            "file": self.file,
            "state": self.state(),
            "program": self.program,
            "variant": self.variant,
            "programs": self.programs.as_ref().map(|p| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()).unwrap_or_default(),
            "skipped_variants": self.skipped.iter().map(SkippedView::to_json).collect::<Vec<_>>(),
            "knobs": pairs(&self.knobs),
            "params": pairs(&self.params),
            "reason": self.reason(),
            "retry_in_seconds": self.retry_in.map(|d| d.as_secs_f64()),
            "last_error": last_error.as_ref().map(|(e, _)| e.clone()),
            "last_error_at": secs(&last_error.as_ref().map(|(_, t)| *t)),
            "loaded_at": secs(&self.loaded_at),
            "records": self.stats.records.load(Ordering::Relaxed),
            "records_dropped": self.stats.dropped.load(Ordering::Relaxed),
            "memory_bytes": self.stats.memory.load(Ordering::Relaxed),
            "records_lost": self.maps.as_ref().map(|m| m.sum_slot0("dropped")).unwrap_or(0),
        })
    }
}

fn must<T>(r: Result<T, crate::metrics::MetricsError>) -> T {
    r.unwrap_or_else(|e| panic!("self-metric definition is invalid: {e}"))
}

/// Handles of the self-metric families.
pub struct Telemetry {
    up: Gauge,
    unavailable: Gauge,
    probe_info: Gauge,
    records: Counter,
    undecodable: Counter,
    lost: Counter,
    handler: Counter,
    runs: Counter,
    run_seconds: Counter,
    recursion_misses: Counter,
    degraded: Gauge,
    memory: Gauge,
    dropped: Counter,
    pub failures: Counter,
    pub reloads: Counter,
    /// Script files refused at a reload, by script and reason.
    pub files_refused: Counter,
    pub reload_ok: Gauge,
    pub reload_time: Gauge,
    btf_info: Gauge,
    families: Gauge,
    series: Gauge,
}

impl Telemetry {
    pub fn new(registry: &Registry) -> Telemetry {
        // Self-metrics have no series budget: their label values are sonde's own.
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            must(registry.gauge(name, help, labels, usize::MAX))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            must(registry.counter(name, help, labels, usize::MAX))
        };
        let build = gauge(
            "build_info",
            "Always 1; the labels say which sonde is running.",
            &["version"],
        );
        let _ = build.set(&[env!("CARGO_PKG_VERSION")], 1);
        Telemetry {
            up: gauge("script_up", "1 when the script runs, 0 when it failed to load or is a built-in this kernel cannot run (sonde_script_unavailable; see /status for why).", &["script"]),
            unavailable: gauge("script_unavailable", "1 for a built-in script whose kernel program cannot run on this kernel (no variant: kprobes missing, a module not loaded): down by design, not a failure. Alert on sonde_script_up == 0 unless on(script) sonde_script_unavailable == 1.", &["script"]),
            probe_info: gauge("probe_info", "Always 1: the kernel program of each script and the variant chosen for this kernel.", &["script", "program", "variant"]),
            records: counter("probe_records_total", "Records read from a script's kernel program.", &["script", "program"]),
            undecodable: counter("probe_records_undecodable_total", "Records that could not be decoded (a mismatch between object and kernel).", &["script", "program"]),
            lost: counter("probe_records_lost_total", "Records the kernel could not queue because the ring buffer was full.", &["script", "program"]),
            handler: counter("script_handler_seconds_total", "Wall-clock time a script's task spent reading and decoding its records and running its handlers (on_event, on_tick, on_exit).", &["script"]),
            runs: counter("bpf_program_runs_total", "Runs of each attached kernel program, counted by the kernel when kernel.bpf_stats_enabled is 1.", &["script", "program"]),
            run_seconds: counter("bpf_program_run_seconds_total", "Time spent in each attached kernel program, measured by the kernel when kernel.bpf_stats_enabled is 1.", &["script", "program"]),
            recursion_misses: counter("bpf_program_recursion_misses_total", "Hook hits the kernel skipped because the program was already running on that CPU (nested in an interrupt): events the program never saw.", &["script", "program"]),
            degraded: gauge("script_degraded", "1 while a running script's handlers fail or it drops records because it is behind (/status says why).", &["script"]),
            memory: gauge("script_memory_bytes", "Memory a script holds (its state, metric series, decoded records and queued events), measured in its own allocator arena; past limits.memory the script is stopped.", &["script"]),
            dropped: counter("script_records_dropped_total", "Records read but not handled because the script was behind by more than limits.max_backlog.", &["script", "reason"]),
            failures: counter("script_failures_total", "Times sonde stopped a script, by why: memory (over limits.memory), errors (every handler call failed for 30s), panic. It is tried again after a backoff or on its next edit.", &["script", "kind"]),
            reloads: counter("config_reloads_total", "Reloads of the config and script directories, by result (success, failure: something was rejected and its running version kept).", &["result"]),
            files_refused: counter("script_files_refused_total", "Script files refused at a reload, by reason: too_large (over limits.max_script_bytes), not_regular_file (a FIFO, a device...), not_utf8, untrusted (writable by others than root or the daemon's user, see scripts.strict_modes), unreadable. /status says which file and why.", &["script", "reason"]),
            reload_ok: gauge("config_last_reload_successful", "1 when the last reload applied everything, 0 when something was rejected.", &[]),
            reload_time: gauge("config_last_reload_timestamp_seconds", "When the last reload ran, in seconds since the Unix epoch.", &[]),
            families: gauge("script_metric_families", "Metric families a script holds (a family shared by two scripts counts for both); at most limits.families_per_script.", &["script"]),
            series: gauge("script_series", "Series of the metric families a script holds; all scripts' together are bounded by limits.total_series.", &["script"]),
            btf_info: gauge("btf_info", "Always 1: where the kernel BTF came from (sysfs, explicit, embedded, archive, image) and the kernel release it is for; absent when none was found (see /status last_reload.btf).", &["source", "release"]),
        }
    }

    /// Says where the kernel BTF came from (`(source, release)`), or that there is
    /// none (`None`: the series goes away).
    pub fn set_btf(&self, found: Option<(&str, &str)>) {
        self.btf_info.retain(|_| false);
        if let Some((source, release)) = found {
            let _ = self.btf_info.set(&[source, release], 1);
        }
    }

    /// Brings the counters kept elsewhere up to date; called before each scrape
    /// with what each script holds in the registry.
    pub fn scrape(
        &self,
        units: &[Arc<UnitView>],
        usage: &std::collections::BTreeMap<String, ScriptUsage>,
    ) {
        let kernel_stats = crate::bpf::stats_enabled();
        for u in units {
            let name = u.name.as_str();
            let state = u.state();
            let up = matches!(state, "running" | "degraded");
            let _ = self.up.set(&[name], up as i64);
            let held = usage.get(name).cloned().unwrap_or_default();
            let over_budget = held.families_refused > 0 || held.series_dropped_total > 0;
            let degraded = state == "degraded" || (state == "running" && over_budget);
            let _ = self.degraded.set(&[name], degraded as i64);
            if crate::memory::active() {
                let _ = self
                    .memory
                    .set(&[name], u.stats.memory.load(Ordering::Relaxed) as f64);
            }
            let dropped = u.stats.dropped.load(Ordering::Relaxed);
            if dropped > 0 {
                let _ = self.dropped.set_total(&[name, "behind"], dropped);
            }
            let _ = self.families.set(&[name], held.families);
            let _ = self.series.set(&[name], held.series);
            let _ = self
                .unavailable
                .set(&[name], (state == "unavailable") as i64);
            let _ = self.handler.set_total(
                &[name],
                u.stats.handler_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            );
            let Some(program) = u.program.as_deref() else {
                continue;
            };
            let labels = [name, program];
            let _ = self
                .records
                .set_total(&labels, u.stats.records.load(Ordering::Relaxed));
            let _ = self
                .undecodable
                .set_total(&labels, u.stats.undecodable.load(Ordering::Relaxed));
            if let Some(maps) = &u.maps {
                let _ = self.lost.set_total(&labels, maps.sum_slot0("dropped"));
            }
            if let Some(variant) = u.variant.as_deref() {
                let _ = self.probe_info.set(&[name, program, variant], 1);
            }
            if let Some(programs) = &u.programs {
                for (prog, st) in crate::bpf::run_stats(programs) {
                    let labels = [name, prog];
                    let _ = self
                        .recursion_misses
                        .set_total(&labels, st.recursion_misses);
                    if kernel_stats {
                        let _ = self.runs.set_total(&labels, st.runs);
                        let _ = self.run_seconds.set_total(&labels, st.run_ns as f64 * 1e-9);
                    }
                }
            }
        }
    }

    /// Removes the `sonde_probe_info` series of a script whose program was reloaded.
    pub fn forget_probe(&self, script: &str) {
        self.probe_info
            .retain(|labels| labels.first().is_none_or(|l| &**l != script));
    }

    /// Removes every series of a script that is gone.
    pub fn forget(&self, script: &str) {
        let other = |labels: &[Box<str>]| labels.first().is_none_or(|l| &**l != script);
        self.up.retain(other);
        self.degraded.retain(other);
        self.memory.retain(other);
        self.dropped.retain(other);
        self.failures.retain(other);
        self.unavailable.retain(other);
        self.probe_info.retain(other);
        self.records.retain(other);
        self.undecodable.retain(other);
        self.lost.retain(other);
        self.handler.retain(other);
        self.runs.retain(other);
        self.run_seconds.retain(other);
        self.recursion_misses.retain(other);
        self.files_refused.retain(other);
        self.families.retain(other);
        self.series.retain(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_info_says_where_the_btf_came_from() {
        let registry = Registry::new("n");
        let t = Telemetry::new(&registry);
        t.set_btf(Some(("embedded", "6.1.0-56-cloud-amd64")));
        let text = registry.render_prometheus();
        assert!(
            text.contains(
                r#"sonde_btf_info{node="n",release="6.1.0-56-cloud-amd64",source="embedded"} 1"#
            ) || text.contains(
                r#"sonde_btf_info{node="n",source="embedded",release="6.1.0-56-cloud-amd64"} 1"#
            ),
            "{text}"
        );
        // A later reload found it elsewhere: one series, the new one.
        t.set_btf(Some(("sysfs", "6.1.0-56-cloud-amd64")));
        let text = registry.render_prometheus();
        assert_eq!(text.matches("sonde_btf_info{").count(), 1, "{text}");
        assert!(text.contains(r#"source="sysfs""#), "{text}");
        t.set_btf(None);
        assert!(!registry.render_prometheus().contains("sonde_btf_info{"));
    }
}
