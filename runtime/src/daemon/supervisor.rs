//! The supervisor: makes the running scripts match the config and the script
//! directories, one validated change at a time.
//!
//! A reload compares what should run ([`discover::wanted`]) with what runs. For each
//! new or changed script it first builds the new version completely (compile,
//! params, kernel program when its kernel side changed, `init`); only when all of
//! that worked is the old version stopped and the new one started in its place. A
//! failure leaves the old version running, and is logged with file:line:column,
//! shown in `/status` and counted in `sonde_config_reloads_total{result="failure"}`.
//!
//! The kernel side of a script is its program and the knob values its params set
//! (plus the BTF used). When that is unchanged the new version takes over the
//! attached program and its maps: no detach, no lost count, and metric series live
//! on (the registry returns the same family to the new version). A removed script
//! is stopped (`on_exit` runs), its program detached and its series removed.
//!
//! Scripts whose kernel sides are the same (program, knob values, the params the
//! loader reads, BTF) share one loaded program ([`SharedLive`]): seven scripts on
//! `tcp_reset` with the same knobs are one program in the kernel, one ring buffer,
//! one submission per reset; each script reads every record through a queue of its
//! own. Its maps are shared too, which is harmless because scripts only read maps.
//! The program is detached when the last script on it stops; a script with other
//! knobs gets a program of its own.
//!
//! A reload counts as applied, and the daemon as ready (`/readyz`), once every script
//! it started has run its first `on_tick`, which the runner runs at once: the first
//! scrape after `/readyz` has the series of every source.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::bpf::catalog;
use crate::bpf::decode::ObjectTypes;
use crate::bpf::error::SkippedView;
use crate::bpf::live::{Live, SharedLive};
use crate::bpf::maps::MapTable;
use crate::btf::KernelBtf;
use crate::event::EventSink;
use crate::metrics::Registry;
use crate::pods::PodResolver;
use crate::script::{Instance, MapReader, NoMaps, ParamValue, Script, ScriptContext};
use crate::sinks::Sinks;

use super::config::{Config, LimitsConfig};
use super::discover::{self, Wanted};
use super::telemetry::{Telemetry, UnitView};
use super::unit::{Task, UnitStats};
use crate::script::runner::Settings;

/// What identifies a script's kernel side: same key, same attached program.
#[derive(Debug, Clone, PartialEq)]
struct KernelKey {
    program: String,
    knobs: Vec<(String, ParamValue)>,
    /// Config `btf` and `btf_archive`.
    btf: BtfConfig,
}

type BtfConfig = (Option<std::path::PathBuf>, Option<std::path::PathBuf>);

/// A program [`Supervisor::preload`] loads: its key, spec and the script's params.
type PreloadJob = (
    KernelKey,
    &'static catalog::ProgramSpec,
    Vec<(String, ParamValue)>,
);

fn btf_config(cfg: &Config) -> BtfConfig {
    (cfg.btf.clone(), cfg.btf_archive.clone())
}

/// The kernel side of a running script.
struct Probe {
    key: KernelKey,
    variant: String,
    skipped: Vec<SkippedView>,
    knobs: Vec<(String, String)>,
    maps: Arc<MapTable>,
    programs: Arc<[(String, OwnedFd)]>,
}

impl Probe {
    fn of(key: KernelKey, live: &Live) -> Probe {
        let l = &live.loaded;
        Probe {
            key,
            variant: l.variant.name.to_string(),
            skipped: l.skipped.iter().map(SkippedView::of).collect(),
            knobs: l.knobs.clone(),
            maps: l.maps.clone(),
            programs: l.programs.clone(),
        }
    }
}

/// One script the supervisor knows about: running, or failed with a reason.
struct Unit {
    wanted: Wanted,
    overrides: Vec<(String, String)>,
    limits: LimitsConfig,
    params: Vec<(String, ParamValue)>,
    program: Option<String>,
    probe: Option<Probe>,
    task: Option<Task>,
    stats: Arc<UnitStats>,
    last_error: Option<(String, SystemTime)>,
    /// Not running because its program cannot run on this kernel (a built-in).
    unavailable: bool,
    /// When its program loaded no variant: each variant and why, for `/status`.
    load_skipped: Vec<SkippedView>,
    loaded_at: Option<SystemTime>,
    /// Stopped by its runner (memory, errors, a panic), and when it is tried again.
    failure: Option<Failure>,
}

/// Why and when the runner stopped a script, and its retry schedule.
#[derive(Clone)]
struct Failure {
    reason: String,
    at: SystemTime,
    /// `None` once retried: the script runs again (the backoff is remembered).
    retry_at: Option<Instant>,
    /// The wait before the next retry; doubles with each failure up to [`MAX_BACKOFF`].
    backoff: Duration,
    started: Instant,
}

/// The first wait before a script the runner stopped is tried again.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A script that ran this long since its last retry starts over at [`FIRST_BACKOFF`].
const BACKOFF_RESET: Duration = Duration::from_secs(600);

impl Unit {
    /// A script known but not running (it did not load, or its file was refused).
    fn not_running(wanted: Wanted, overrides: Vec<(String, String)>, limits: LimitsConfig) -> Unit {
        Unit {
            wanted,
            overrides,
            limits,
            params: Vec::new(),
            program: None,
            probe: None,
            task: None,
            stats: Default::default(),
            last_error: None,
            unavailable: false,
            load_skipped: Vec::new(),
            loaded_at: None,
            failure: None,
        }
    }

    fn view(&self) -> UnitView {
        // Load errors and the runner's stop (handler errors are read at each look).
        let last_error = [
            self.last_error.clone(),
            self.failure.as_ref().map(|f| (f.reason.clone(), f.at)),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|(_, at)| *at);
        UnitView {
            name: self.wanted.name.clone(),
            file: self.wanted.origin.label(&self.wanted.name),
            state: if self.task.is_some() {
                "running"
            } else if self.unavailable {
                "unavailable"
            } else {
                "failed"
            },
            program: self.program.clone(),
            variant: self.probe.as_ref().map(|p| p.variant.clone()),
            skipped: match &self.probe {
                Some(p) => p.skipped.clone(),
                None => self.load_skipped.clone(),
            },
            knobs: self
                .probe
                .as_ref()
                .map(|p| p.knobs.clone())
                .unwrap_or_default(),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            last_error: last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: last_error.as_ref().map(|(_, t)| *t),
            reason: match (&self.task, &self.failure) {
                (None, Some(f)) => Some(f.reason.clone()),
                _ => None,
            },
            retry_in: self
                .failure
                .as_ref()
                .filter(|_| self.task.is_none())
                .and_then(|f| f.retry_at)
                .map(|t| t.saturating_duration_since(Instant::now())),
            loaded_at: self.loaded_at,
            stats: self.stats.clone(),
            maps: self.probe.as_ref().map(|p| p.maps.clone()),
            programs: self.probe.as_ref().map(|p| p.programs.clone()),
        }
    }
}

/// A new version of a script, built and initialised, not yet running.
struct Prepared {
    inst: Instance,
    params: Vec<(String, ParamValue)>,
    program: Option<String>,
    /// A newly loaded program (None: no program, or the running one is reused).
    live: Option<(Live, Probe)>,
    reuse_kernel: bool,
    interval: std::time::Duration,
    /// The script's memory arena (its `init` ran in it), when memory is measured.
    arena: Option<crate::memory::Arena>,
    /// The same source as the version that runs or ran last.
    same_source: bool,
}

/// What the HTTP layer reads: the scripts as of the last reload.
pub struct Shared {
    pub units: RwLock<Vec<Arc<UnitView>>>,
    pub reload: RwLock<serde_json::Value>,
    pub ready: std::sync::atomic::AtomicBool,
    pub telemetry: Telemetry,
}

pub struct Supervisor {
    pub cfg: Config,
    config_file: String,
    node: String,
    registry: Arc<Registry>,
    sinks: Arc<Sinks>,
    pods: Arc<dyn PodResolver>,
    /// The kernel BTF, read when a program is loaded and dropped after each reload:
    /// parsed, it takes tens of MB that an idle daemon has no use for.
    btf: std::sync::Mutex<Option<Result<Arc<KernelBtf>, Arc<crate::btf::BtfError>>>>,
    /// Where the BTF came from (or why there is none), for `/status`.
    btf_status: std::sync::Mutex<serde_json::Value>,
    units: BTreeMap<String, Unit>,
    pub shared: Arc<Shared>,
    /// Scripts their runner stopped, with the reason: the daemon's loop hands them
    /// to [`Supervisor::fail`].
    failures: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    failed: Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>,
    /// `--btf` / `--btf-archive` of `sonde daemon`: they win over the config file's
    /// `btf` / `btf_archive`, on every reload too.
    cli_btf: BtfConfig,
    /// The programs loaded, by kernel side, while a script reads them.
    programs: std::sync::Mutex<Vec<(KernelKey, Weak<SharedLive>)>>,
    /// Programs [`Supervisor::preload`] loaded for the scripts of this reload, taken
    /// by their first script in [`Supervisor::prepare`]; what is left is dropped
    /// (detached) at the end of the reload.
    preloaded: std::sync::Mutex<Vec<(KernelKey, Arc<SharedLive>)>>,
}

impl Supervisor {
    pub fn new(
        cfg: Config,
        config_file: String,
        node: String,
        registry: Arc<Registry>,
        sinks: Arc<Sinks>,
        pods: Arc<dyn PodResolver>,
    ) -> Supervisor {
        let shared = Arc::new(Shared {
            units: RwLock::new(Vec::new()),
            reload: RwLock::new(serde_json::Value::Null),
            ready: Default::default(),
            telemetry: Telemetry::new(&registry),
        });
        let (failures, failed) = tokio::sync::mpsc::unbounded_channel();
        Supervisor {
            failures,
            failed: Some(failed),
            cfg,
            config_file,
            node,
            registry,
            sinks,
            pods,
            btf: Default::default(),
            btf_status: Default::default(),
            units: BTreeMap::new(),
            shared,
            cli_btf: (None, None),
            programs: Default::default(),
            preloaded: Default::default(),
        }
    }

    /// Makes `--btf` / `--btf-archive` win over the config's `btf` / `btf_archive`
    /// (now and on every reload).
    pub fn override_btf(
        &mut self,
        btf: Option<std::path::PathBuf>,
        archive: Option<std::path::PathBuf>,
    ) {
        self.cli_btf = (btf, archive);
        let mut cfg = self.cfg.clone();
        self.with_cli_btf(&mut cfg);
        self.cfg = cfg;
    }

    fn with_cli_btf(&self, cfg: &mut Config) {
        if let Some(b) = &self.cli_btf.0 {
            cfg.btf = Some(b.clone());
        }
        if let Some(a) = &self.cli_btf.1 {
            cfg.btf_archive = Some(a.clone());
        }
    }

    /// The scripts their runner stopped, `(name, reason)`, for the daemon's loop
    /// (taken once).
    pub fn take_failures(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<(String, String)> {
        self.failed.take().expect("take_failures is called once")
    }

    /// Takes down a script its runner stopped: its program is detached, its series
    /// removed, and it is tried again after a backoff (or at once on its next edit).
    pub async fn fail(&mut self, name: &str, reason: String) {
        let Some(u) = self.units.get_mut(name) else {
            return;
        };
        let Some(task) = u.task.take() else { return };
        // The thread has ended: this returns at once; the program detaches here.
        drop(task.stop(false).await);
        let backoff = match &u.failure {
            Some(f) if f.started.elapsed() < BACKOFF_RESET => (f.backoff * 2).min(MAX_BACKOFF),
            _ => FIRST_BACKOFF,
        };
        u.failure = Some(Failure {
            reason: reason.clone(),
            at: SystemTime::now(),
            retry_at: Some(Instant::now() + backoff),
            backoff,
            started: Instant::now(),
        });
        u.probe = None;
        let _ = self
            .shared
            .telemetry
            .failures
            .inc(&[name, failure_kind(&reason)]);
        self.shared.telemetry.forget_probe(name);
        let removed = self.registry.release(name);
        // What it still holds once its state and series are gone.
        if let (Some(a), Some(u)) = (crate::memory::arena_for(name), self.units.get(name)) {
            u.stats
                .memory
                .store(a.live_bytes(), std::sync::atomic::Ordering::Relaxed);
        }
        tracing::error!(script = %name, reason = %reason, retry_in = ?backoff, series_families_removed = removed.len(), "script stopped");
        self.publish_views();
    }

    /// When the next stopped script is due to be tried again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.units
            .values()
            .filter(|u| u.task.is_none())
            .filter_map(|u| u.failure.as_ref()?.retry_at)
            .min()
    }

    /// Tries again the stopped scripts whose backoff has passed.
    pub async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .units
            .iter()
            .filter(|(_, u)| u.task.is_none())
            .filter(|(_, u)| {
                u.failure
                    .as_ref()
                    .and_then(|f| f.retry_at)
                    .is_some_and(|t| t <= now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(u) = self.units.get(&name) else {
                continue;
            };
            let (w, overrides) = (u.wanted.clone(), u.overrides.clone());
            tracing::info!(script = %name, "trying a stopped script again");
            if self.start(w, overrides).await.is_err() {
                // It did not even start: wait the next step of the backoff.
                if let Some(f) = self.units.get_mut(&name).and_then(|u| u.failure.as_mut()) {
                    f.backoff = (f.backoff * 2).min(MAX_BACKOFF);
                    f.retry_at = Some(Instant::now() + f.backoff);
                }
            }
        }
        self.publish_views();
    }

    /// Re-reads the config file (when there is one) and the script directories, and
    /// applies the difference. A config that does not parse is rejected whole.
    pub async fn reload(&mut self, config_path: Option<&std::path::Path>) {
        self.reload_with(config_path, Vec::new()).await;
    }

    /// [`Supervisor::reload`], with errors found by the caller (the web config)
    /// reported in the same reload.
    pub async fn reload_with(
        &mut self,
        config_path: Option<&std::path::Path>,
        mut errors: Vec<String>,
    ) {
        if let Some(path) = config_path {
            let loaded = Config::load_trusted(path).map(|mut c| {
                self.with_cli_btf(&mut c);
                c
            });
            match loaded {
                Ok(new) if new != self.cfg => {
                    if new.listen != self.cfg.listen
                        || new.node_name != self.cfg.node_name
                        || new.sinks != self.cfg.sinks
                    {
                        tracing::warn!(
                            file = %path.display(),
                            "listen, node_name and sinks changes take effect after a restart; the rest is applied now"
                        );
                    }
                    let keep = (
                        self.cfg.listen,
                        self.cfg.node_name.clone(),
                        self.cfg.sinks.clone(),
                    );
                    self.cfg = new;
                    (self.cfg.listen, self.cfg.node_name, self.cfg.sinks) = keep;
                    tracing::info!(file = %path.display(), "config reloaded");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "config rejected; the running config stays");
                    errors.push(e.to_string());
                }
            }
        }
        self.apply(errors).await;
    }

    /// Makes the running scripts match the current config and directories.
    pub async fn apply(&mut self, mut errors: Vec<String>) {
        self.registry.set_budgets(self.cfg.limits.budgets());
        self.registry
            .set_classic_log2_step(self.cfg.metrics.classic_log2_step);
        self.registry.set_pod_detail(self.cfg.metrics.pod_detail());
        let (wanted, unreadable) = discover::wanted(&self.cfg);
        let mut keep: Vec<String> = Vec::new();
        for u in &unreadable {
            tracing::error!(script = %u.name, error = %u.error, "script file refused; a running version stays");
            errors.push(u.error.clone());
            keep.push(u.name.clone());
        }
        let gone: Vec<String> = self
            .units
            .keys()
            .filter(|n| !wanted.contains_key(*n) && !keep.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await;
        }
        for name in self.cfg.scripts.params.keys() {
            if !wanted.contains_key(name) {
                tracing::warn!(config_path = %format!("scripts.params.{name}"), "params for a script that is not running");
            }
        }
        self.preload(&wanted).await;
        for (name, w) in wanted {
            let overrides = self.cfg.scripts.overrides(&name);
            if let Some(u) = self.units.get_mut(&name) {
                let unchanged = u.wanted.source == w.source
                    && u.wanted.origin == w.origin
                    && u.overrides == overrides
                    && u.limits == self.cfg.limits
                    && u.probe
                        .as_ref()
                        .is_none_or(|p| p.key.btf == btf_config(&self.cfg));
                if unchanged && u.task.is_some() {
                    // Back to the running version after a rejected edit: nothing to report.
                    u.last_error = None;
                    continue;
                }
                if unchanged && u.failure.as_ref().is_some_and(|f| f.retry_at.is_some()) {
                    continue; // stopped by its runner: tried again on its schedule
                }
            }
            match self.start(w, overrides).await {
                // A built-in probe this kernel cannot run is not a failed reload:
                // `/status` and `sonde probes` say why, the other scripts run.
                Err(e) if !e.unavailable => errors.push(e.message),
                _ => {}
            }
        }
        for u in unreadable {
            self.refused(u);
        }
        // Loaded for a script that then failed (its init, a param): detached here.
        self.preloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.first_ticks().await;
        self.btf.lock().unwrap_or_else(|e| e.into_inner()).take();
        release_free_memory();
        self.publish(&errors);
    }

    /// Loads the kernel programs the scripts of this reload need and that are neither
    /// running nor loaded, in parallel (one worker per CPU) and off the async
    /// workers; [`Supervisor::prepare`] then takes them instead of loading one after
    /// the other. Loading is CPU work (BTF relocation, the verifier), so the workers
    /// are as many as the CPUs. A program that fails here is not kept: its script's
    /// own load tries again and reports the error as before.
    async fn preload(&mut self, wanted: &BTreeMap<String, Wanted>) {
        let limits = self.cfg.limits.to_limits();
        let mut jobs: Vec<PreloadJob> = Vec::new();
        for (name, w) in wanted {
            let overrides = self.cfg.scripts.overrides(name);
            let Ok(script) = Script::compile(&w.origin.label(name), &w.source, &limits) else {
                continue;
            };
            let Ok(params) = script.manifest().resolve_params(&overrides) else {
                continue;
            };
            let Some(program) = script.manifest().program else {
                continue;
            };
            let spec = program.spec();
            let key = KernelKey {
                program: spec.name.to_string(),
                knobs: knob_params(spec, &params),
                btf: btf_config(&self.cfg),
            };
            let running = self
                .units
                .get(name)
                .filter(|u| u.task.is_some())
                .and_then(|u| u.probe.as_ref())
                .is_some_and(|p| p.key == key);
            if running || self.loaded(&key).is_some() || jobs.iter().any(|(k, ..)| *k == key) {
                continue;
            }
            jobs.push((key, spec, params));
        }
        if jobs.len() < 2 {
            return; // nothing to overlap: the script's own load does it
        }
        let Ok(btf) = self.kernel_btf() else {
            return; // each script reports it
        };
        let pods = self.pods.clone();
        let n = jobs.len();
        let t0 = Instant::now();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(n);
        let loaded = tokio::task::spawn_blocking(move || {
            let queue = std::sync::Mutex::new(jobs);
            let done = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        let Some((key, spec, params)) = job else {
                            break;
                        };
                        let live = crate::panic::catch(|| {
                            Live::start(spec, &params, &btf, pods.clone(), false)
                        });
                        if let Ok(Ok(live)) = live {
                            if let Ok(shared) = live.into_shared() {
                                done.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push((key, shared));
                            }
                        }
                    });
                }
            });
            done.into_inner().unwrap_or_else(|e| e.into_inner())
        })
        .await
        .unwrap_or_default();
        tracing::info!(
            programs = n,
            loaded = loaded.len(),
            workers,
            took_ms = t0.elapsed().as_secs_f64() * 1e3,
            "kernel programs loaded in parallel"
        );
        *self.preloaded.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
    }

    /// Waits until every script started since the last look has run its first pass
    /// (its first `on_tick`), each at most its task's stop wait.
    async fn first_ticks(&mut self) {
        let t0 = Instant::now();
        let mut waiting = Vec::new();
        for (name, u) in &mut self.units {
            if let Some(t) = u.task.as_mut() {
                let limit = t.max_wait();
                if let Some(f) = t.started() {
                    waiting.push((name.clone(), tokio::time::Instant::now() + limit, f));
                }
            }
        }
        let n = waiting.len();
        for (name, until, f) in waiting {
            if tokio::time::timeout_at(until, f).await.is_err() {
                tracing::warn!(script = %name, "the script's first tick did not end in time; not waited for");
            }
        }
        if n > 0 {
            tracing::debug!(
                scripts = n,
                took_ms = t0.elapsed().as_millis() as u64,
                "first ticks done"
            );
        }
    }

    /// A script file that was refused (too large, not a regular file, unreadable):
    /// counted, and its unit says why in `/status`; a running version stays.
    fn refused(&mut self, u: discover::Unreadable) {
        let _ = self
            .shared
            .telemetry
            .files_refused
            .inc(&[u.name.as_str(), u.reason]);
        let wanted = Wanted {
            name: u.name.clone(),
            origin: discover::Origin::File(u.path.clone()),
            source: "".into(),
        };
        let limits = self.cfg.limits.clone();
        let unit = self
            .units
            .entry(u.name.clone())
            .or_insert_with(|| Unit::not_running(wanted, Vec::new(), limits));
        unit.last_error = Some((u.error, SystemTime::now()));
    }

    /// The kernel BTF, read on first use in a reload. Where it came from (the
    /// chain, or why there is none) goes to `/status` and `sonde_btf_info`.
    fn kernel_btf(&self) -> Result<Arc<KernelBtf>, Arc<crate::btf::BtfError>> {
        let mut cached = self.btf.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(btf) = cached.as_ref() {
            return btf.clone();
        }
        let (btf, status) = match locate_btf(&self.cfg) {
            Ok(b) => {
                self.shared
                    .telemetry
                    .set_btf(Some((b.source().kind(), b.release())));
                let status = b.to_json();
                (Ok(Arc::new(b)), status)
            }
            Err(e) => {
                self.shared.telemetry.set_btf(None);
                let status = e.to_json();
                (Err(Arc::new(e)), status)
            }
        };
        *self.btf_status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        cached.insert(btf).clone()
    }

    /// Builds and starts a script, replacing its running version if there is one.
    async fn start(&mut self, w: Wanted, overrides: Vec<(String, String)>) -> Result<(), Rejected> {
        let name = w.name.clone();
        let file = w.origin.label(&name);
        // A panic while building this script (a loader or engine bug that got past
        // validation) fails this script only; the others and the daemon go on.
        let prepared = crate::panic::catch(|| self.prepare(&w, &overrides)).unwrap_or_else(|p| {
            Err(Rejected::from(format!(
                "{file}: internal error while loading this script ({p}); the other scripts are not affected"
            )))
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let running = self.units.get(&name).is_some_and(|u| u.task.is_some());
                let builtin = w.origin == super::discover::Origin::Builtin;
                let e = Rejected {
                    unavailable: e.unavailable && builtin,
                    ..e
                };
                if running {
                    tracing::error!(script = %name, error = %e.message, "script rejected; the running version stays");
                } else if e.unavailable {
                    tracing::warn!(script = %name, reason = %e.message, "built-in probe cannot run on this kernel (`sonde probes` says why); the other scripts run");
                } else {
                    tracing::error!(script = %name, error = %e.message, "script failed to load");
                }
                let unit = self.units.entry(name.clone()).or_insert_with(|| {
                    Unit::not_running(w.clone(), overrides.clone(), self.cfg.limits.clone())
                });
                if !running {
                    // Nothing runs: remember this version so /status shows it.
                    unit.wanted = w;
                    unit.overrides = overrides;
                    unit.limits = self.cfg.limits.clone();
                }
                unit.last_error = Some((e.message.clone(), SystemTime::now()));
                unit.unavailable = e.unavailable && !running;
                if !running {
                    unit.load_skipped = e.skipped.clone();
                }
                return Err(e);
            }
        };

        let manifest_interval = prepared.interval;
        let old = self.units.remove(&name);
        // The backoff is remembered across a retry; an edit starts it over.
        let failure = old
            .as_ref()
            .and_then(|u| u.failure.clone())
            .filter(|_| prepared.same_source)
            .map(|f| Failure {
                retry_at: None,
                started: Instant::now(),
                ..f
            });
        let (stats, mut kept_live, kept_probe) = match old {
            Some(mut u) => {
                let stats = u.stats.clone();
                let task = u.task.take();
                match (task, prepared.reuse_kernel) {
                    (Some(t), true) => match t.stop(false).await {
                        Some((_, live)) => (stats, live, u.probe.take()),
                        None => (stats, None, None),
                    },
                    (Some(t), false) => {
                        // The old program detaches when its Live drops here.
                        drop(t.stop(false).await);
                        self.shared.telemetry.forget_probe(&name);
                        (stats, None, None)
                    }
                    (None, _) => (stats, None, None),
                }
            }
            None => (Arc::new(UnitStats::default()), None, None),
        };
        let (live, probe) = match prepared.live {
            Some((live, probe)) => (Some(live), Some(probe)),
            None if prepared.reuse_kernel => {
                if kept_live.is_none() {
                    let e = format!("{file}: the running version's task failed; restart the daemon to load this script");
                    tracing::error!(script = %name, error = %e, "script not started");
                    return Err(e.into());
                }
                (kept_live.take(), kept_probe)
            }
            None => (None, None),
        };
        let settings = Settings {
            interval: manifest_interval,
            max_backlog: self.cfg.limits.max_backlog,
            memory: prepared.arena.map(|a| (self.cfg.limits.memory, a)),
            tick_at_start: true,
        };
        let readers = live
            .as_ref()
            .and_then(|l| l.shared())
            .map_or(0, |s| s.subscribers());
        let tx = self.failures.clone();
        let failed_name = name.clone();
        let task = match Task::spawn(
            &name,
            prepared.inst,
            live,
            settings,
            stats.clone(),
            self.cfg.limits.call_deadline,
            Box::new(move |reason| {
                let _ = tx.send((failed_name, reason));
            }),
        ) {
            Ok(t) => t,
            Err(e) => {
                let e = format!("{file}: cannot start the script's thread: {e}");
                tracing::error!(script = %name, error = %e, "script not started");
                return Err(e.into());
            }
        };
        tracing::info!(script = %name, file = %file, program = prepared.program.as_deref().unwrap_or("-"), program_readers = readers, "script running");
        self.units.insert(
            name,
            Unit {
                wanted: w,
                overrides,
                limits: self.cfg.limits.clone(),
                params: prepared.params,
                program: prepared.program,
                probe,
                task: Some(task),
                stats,
                last_error: None,
                unavailable: false,
                load_skipped: Vec::new(),
                loaded_at: Some(SystemTime::now()),
                failure,
            },
        );
        Ok(())
    }

    /// Compile, resolve params, load the kernel side if it changed, run `init`.
    fn prepare(&self, w: &Wanted, overrides: &[(String, String)]) -> Result<Prepared, Rejected> {
        let file = w.origin.label(&w.name);
        let limits = self.cfg.limits.to_limits();
        let script = Script::compile(&file, &w.source, &limits).map_err(|e| e.to_string())?;
        let params = script
            .manifest()
            .resolve_params(overrides)
            .map_err(|e| format!("{file}: scripts.params.{}: {e}", w.name))?;
        let program = script.manifest().program;
        let running = self.units.get(&w.name).filter(|u| u.task.is_some());
        let mut live = None;
        let mut reuse_kernel = false;
        let maps: Arc<dyn MapReader> = match program {
            None => Arc::new(NoMaps),
            Some(program) => {
                let spec = program.spec();
                let key = KernelKey {
                    program: program.to_string(),
                    knobs: knob_params(spec, &params),
                    btf: btf_config(&self.cfg),
                };
                match running
                    .and_then(|u| u.probe.as_ref())
                    .filter(|p| p.key == key)
                {
                    // The running version hands its reader over: nothing is
                    // detached, no record is lost or read twice.
                    Some(p) => {
                        reuse_kernel = true;
                        p.maps.clone()
                    }
                    None => {
                        let l = match self.loaded(&key) {
                            Some(shared) => {
                                tracing::info!(script = %w.name, program = %program, readers = shared.subscribers(), "script shares a loaded program");
                                shared.subscribe()
                            }
                            None => {
                                let preloaded = {
                                    let mut p = self.preloaded.lock().unwrap_or_else(|e| e.into_inner());
                                    p.iter().position(|(k, _)| *k == key).map(|i| p.swap_remove(i).1)
                                };
                                let shared = match preloaded {
                                    Some(shared) => shared,
                                    None => {
                                        let btf = self.kernel_btf().map_err(|e| format!("{file}: {e}"))?;
                                        Live::start(spec, &params, &btf, self.pods.clone(), false)
                                            .map_err(|e| Rejected::load(&file, e))?
                                            .into_shared()
                                            .map_err(|e| format!("{file}: cannot start the program's reader: {e}"))?
                                    }
                                };
                                let l = shared.subscribe();
                                self.lock_programs().push((key.clone(), Arc::downgrade(&shared)));
                                l
                            }
                        }
                        .map_err(|e| format!("{file}: cannot read the program: {e}"))?;
                        let probe = Probe::of(key, &l);
                        let maps = probe.maps.clone();
                        live = Some((l, probe));
                        maps
                    }
                }
            }
        };
        let sinks: Arc<dyn EventSink> = self.sinks.clone();
        let script_name = w.name.clone();
        let ctx = ScriptContext {
            name: w.name.clone(),
            node: self.node.clone(),
            maps,
            events: sinks,
            registry: self.registry.clone(),
            print: Arc::new(move |s: &str| {
                tracing::info!(script = %script_name, "{s}");
            }),
            pods: self.pods.clone(),
        };
        let arena = crate::memory::arena_for(&w.name);
        let start = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Instance::start(&script, &params, ctx, &limits)
            }))
            .unwrap_or_else(|_| {
                Err(crate::script::ScriptError::Start {
                    file: file.clone(),
                    message: "init panicked".into(),
                })
            })
        };
        let inst = match &arena {
            Some(a) => a.scoped(start),
            None => start(),
        }
        .map_err(|e| e.to_string())?;
        let same_source = self
            .units
            .get(&w.name)
            .is_some_and(|u| u.wanted.source == w.source && u.overrides == overrides);
        Ok(Prepared {
            arena,
            same_source,
            inst,
            params,
            program: program.map(|p| p.name().to_string()),
            live,
            reuse_kernel,
            interval: script.manifest().interval,
        })
    }

    /// A program loaded for `key` that a script still reads.
    fn loaded(&self, key: &KernelKey) -> Option<Arc<SharedLive>> {
        let mut programs = self.lock_programs();
        programs.retain(|(_, p)| p.strong_count() > 0);
        programs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, p)| p.upgrade())
    }

    fn lock_programs(&self) -> std::sync::MutexGuard<'_, Vec<(KernelKey, Weak<SharedLive>)>> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn remove(&mut self, name: &str) {
        let Some(mut u) = self.units.remove(name) else {
            return;
        };
        let t0 = Instant::now();
        if let Some(t) = u.task.take() {
            // on_exit runs; the program detaches when its Live drops.
            let parts = t.stop(true).await;
            tracing::debug!(script = %name, took_ms = t0.elapsed().as_millis() as u64, "script thread stopped");
            drop(parts);
            tracing::debug!(script = %name, took_ms = t0.elapsed().as_millis() as u64, "program detached");
        }
        let removed = self.registry.release(name);
        self.shared.telemetry.forget(name);
        crate::memory::release(name);
        tracing::info!(script = %name, series_families_removed = removed.len(), "script removed");
    }

    /// Stops every script (`on_exit` runs) and detaches every program; `stopping`
    /// is told each script's name before it is waited for.
    pub async fn shutdown(&mut self, stopping: impl Fn(&str)) {
        // Every script is told first, so they end in parallel.
        for u in self.units.values() {
            if let Some(t) = &u.task {
                t.request_stop(true);
            }
        }
        let names: Vec<String> = self.units.keys().cloned().collect();
        for name in names {
            if let Some(mut u) = self.units.remove(&name) {
                if let Some(t) = u.task.take() {
                    stopping(&name);
                    drop(t.stop(true).await);
                }
            }
        }
        self.publish_views();
    }

    fn publish_views(&self) {
        let views: Vec<Arc<UnitView>> = self.units.values().map(|u| Arc::new(u.view())).collect();
        *self.shared.units.write().unwrap_or_else(|e| e.into_inner()) = views;
    }

    fn publish(&self, errors: &[String]) {
        self.publish_views();
        let t = &self.shared.telemetry;
        let ok = errors.is_empty();
        let _ = t.reloads.inc(&[if ok { "success" } else { "failure" }]);
        let _ = t.reload_ok.set(&[] as &[&str], ok as i64);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = t.reload_time.set(&[] as &[&str], now);
        *self
            .shared
            .reload
            .write()
            .unwrap_or_else(|e| e.into_inner()) = serde_json::json!({
            "at": now,
            "result": if ok { "success" } else { "failure" },
            "errors": errors,
            "config": self.config_file,
            "btf": *self.btf_status.lock().unwrap_or_else(|e| e.into_inner()),
        });
        self.shared
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The `kind` label of `sonde_script_failures_total` for a runner's reason.
fn failure_kind(reason: &str) -> &'static str {
    ["memory", "errors", "panic"]
        .into_iter()
        .find(|k| reason.starts_with(k))
        .unwrap_or("other")
}

/// Why a script did not start.
struct Rejected {
    message: String,
    /// Its program has no variant this kernel can run (no kprobes, a missing
    /// module): expected for some built-ins on some nodes, not an error to fix.
    unavailable: bool,
    /// Each variant of its program and why it did not load, when none did.
    skipped: Vec<SkippedView>,
}

impl Rejected {
    /// The program of the script at `file` did not load.
    fn load(file: &str, e: crate::bpf::BpfError) -> Rejected {
        let skipped = match &e {
            crate::bpf::BpfError::NoVariant { skipped, .. } => {
                skipped.iter().map(SkippedView::of).collect()
            }
            _ => Vec::new(),
        };
        Rejected {
            message: format!("{file}: {e}"),
            unavailable: !skipped.is_empty(),
            skipped,
        }
    }
}

impl From<String> for Rejected {
    fn from(message: String) -> Rejected {
        Rejected {
            message,
            unavailable: false,
            skipped: Vec::new(),
        }
    }
}

/// The params of a script that set knobs of its program, or that the loader reads
/// (the interfaces of TC hooks, the variant asked for).
fn knob_params(
    spec: &catalog::ProgramSpec,
    params: &[(String, ParamValue)],
) -> Vec<(String, ParamValue)> {
    let mut knobs: Vec<String> = ObjectTypes::parse(spec.object)
        .map(|t| t.knobs().into_iter().map(|k| k.name).collect())
        .unwrap_or_default();
    let has_tc = spec.variants.iter().any(|v| {
        v.attach
            .iter()
            .any(|a| matches!(a.hook, catalog::Hook::Tc { .. }))
    });
    if has_tc {
        knobs.extend(crate::bpf::tc::PARAMS.iter().map(|p| p.to_string()));
    }
    knobs.push(crate::bpf::VARIANT_PARAM.to_string());
    params
        .iter()
        .filter(|(n, _)| knobs.contains(n))
        .cloned()
        .collect()
}

/// Hands freed heap pages back to the kernel. Loading a program parses the kernel's
/// BTF (tens of MB, freed right after); the allocator would otherwise keep those
/// pages in the daemon's RSS for a long time (jemalloc: until its decay; glibc: for
/// the process's whole life).
fn release_free_memory() {
    if crate::memory::active() {
        crate::memory::purge();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn locate_btf(cfg: &Config) -> Result<KernelBtf, crate::btf::BtfError> {
    let search = crate::btf::BtfSearch::system()
        .explicit(cfg.btf.as_deref())
        .archive(cfg.btf_archive.as_deref());
    search.locate().inspect_err(|e| {
        tracing::error!(error = %e, "no kernel BTF: scripts with a kernel program cannot load; the others run");
    })
}
