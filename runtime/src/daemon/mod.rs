//! The daemon: how sonde runs on every node. Started once, left alone, changed by
//! dropping files into a directory.
//!
//! ```text
//! sonde daemon                       # embedded default: built-in scripts, :9102, events on stdout
//! sonde daemon --config sonde.yaml   # packaging/config.yaml documents every key
//! sonde daemon --config sonde.yaml --check
//! sonde daemon --btf /var/lib/sonde/vmlinux.btf   # overrides the config's `btf:`
//! ```
//!
//! The pieces: [`config`] (YAML, validated with config paths in errors),
//! [`discover`] (which scripts should run), [`supervisor`] (validate-then-swap
//! reloads that keep attached programs and metric series when the kernel side is
//! unchanged), [`unit`](mod@unit) (one task per script), [`watch`] (inotify on the script
//! directories and the config), [`telemetry`] (self-metrics), the HTTP endpoints
//! ([`crate::http`]) and the event sinks ([`crate::sinks`]).
//!
//! Shutdown (SIGTERM, SIGINT): every script ends (`on_exit`), every program is
//! detached and unloaded (nothing is pinned, so nothing stays in the kernel), the
//! sinks are flushed, all within `shutdown_timeout`: what a sink could not deliver
//! by then (stdout blocked, Loki unreachable) is dropped, counted and logged, and
//! the process ends within `shutdown_timeout` + [`shutdown::EXIT_MARGIN`] whatever
//! is still stuck ([`shutdown`]).

pub mod builtin;
pub mod config;
pub mod discover;
pub mod serde_util;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod unit;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::DaemonArgs;
use crate::event::Event;
use crate::metrics::Registry;
use crate::pods::{CriResolver, PodResolver, PodsConfig, ResolverOptions};
use crate::script::Script;
use crate::sinks::Sinks;

use config::Config;
use supervisor::{Shared, Supervisor};

/// Changes closer together than this are applied as one reload.
const SETTLE: Duration = Duration::from_millis(150);

pub fn main(args: DaemonArgs) -> ExitCode {
    let (mut cfg, file) = match &args.config {
        Some(path) => match Config::load_trusted(path) {
            Ok(c) => (c, path.display().to_string()),
            Err(e) => {
                eprintln!("sonde: {e}");
                return ExitCode::from(2);
            }
        },
        None => (Config::embedded(), "embedded default".to_string()),
    };
    if let Some(b) = &args.btf {
        cfg.btf = Some(b.clone());
    }
    if let Some(a) = &args.btf_archive {
        cfg.btf_archive = Some(a.clone());
    }
    let web_config = args.web_config.clone().or_else(|| cfg.web_config.clone());
    let strict = cfg.scripts.strict_modes;
    let security = match web_config.as_deref().map(|p| load_web_config(p, strict)) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("sonde: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        if let Some(path) = &web_config {
            println!("web config {}: ok", path.display());
        }
        return check(&cfg, &file);
    }
    // A BTF file named by `--btf` or `btf:` that cannot be used is a configuration
    // error: said now, not as every probe failing to load. (On a reload the same
    // mistake is a rejected change, and the running programs stay.)
    if let Err(e) = explicit_btf(&cfg) {
        eprintln!("sonde: {e}");
        return ExitCode::from(2);
    }
    // Before any thread: capabilities are per thread, and threads inherit them.
    let privileges = match lower_privileges(&cfg) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("sonde: cannot drop privileges: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sonde")
        // Script handlers run on these threads (crate::script::stack).
        .thread_stack_size(crate::script::stack::SCRIPT_STACK_SIZE)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sonde: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cli_btf = (args.btf.clone(), args.btf_archive.clone());
    let watchdog = shutdown::Watchdog::new();
    let web = Web {
        path: web_config,
        cell: crate::http::web::SecurityCell::new(security),
    };
    let result = rt.block_on(run(
        cfg,
        file,
        args.config.clone(),
        cli_btf,
        &watchdog,
        privileges,
        web,
    ));
    // A blocking write that never returns (stdout into a pipe nobody reads) would
    // keep a plain drop of the runtime waiting forever: leave it behind.
    watchdog.step("stopping the runtime");
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    watchdog.disarm();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The one-time privileged steps (mounting tracefs when it is missing, raising
/// RLIMIT_MEMLOCK for kernels before 5.11), then down to what a running daemon needs
/// ([`crate::privileges`]). A seccomp filter the kernel cannot take is a warning.
fn lower_privileges(
    cfg: &Config,
) -> Result<crate::privileges::Report, crate::privileges::PrivilegeError> {
    use crate::privileges::Cap;
    let _ = crate::bpf::features::tracefs();
    crate::bpf::raise_memlock_once();
    // A port below 1024 is bound after the drop.
    let extra: Vec<Cap> = (cfg.listen.port() < 1024)
        .then_some(Cap::NET_BIND_SERVICE)
        .into_iter()
        .collect();
    let report = crate::privileges::drop_to_running(&extra)?;
    tracing::info!(
        uid = report.uid,
        effective = %report.effective.names().join(","),
        dropped = %report.dropped.names().join(","),
        missing = %report.missing.names().join(","),
        no_new_privs = report.no_new_privs,
        seccomp_denied = report.seccomp_denied.len(),
        "privileges lowered"
    );
    if report.missing.0 != 0 {
        tracing::warn!(
            missing = %report.missing.names().join(","),
            "capabilities sonde needs are missing; the probes and sources that need them will say so (see packaging/sonde.service)"
        );
    }
    Ok(report)
}

/// How long the runtime waits for its threads at the very end (blocking writes
/// still stuck after the sinks gave up are abandoned).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

/// The BTF search the config (and `--btf`) asks for.
fn btf_search(cfg: &Config) -> crate::btf::BtfSearch {
    crate::btf::BtfSearch::system()
        .explicit(cfg.btf.as_deref())
        .archive(cfg.btf_archive.as_deref())
}

/// Reads and checks the BTF file the config names, when it names one.
fn explicit_btf(cfg: &Config) -> Result<(), crate::btf::BtfError> {
    match &cfg.btf {
        Some(p) if !p.is_dir() => btf_search(cfg).locate().map(drop),
        _ => Ok(()),
    }
}

/// `--check`: the config, the kernel BTF it leads to (read and checked, as a load
/// would), and every script compile and their params resolve; nothing is loaded into
/// the kernel. Exit code 2 for a config mistake (a BTF file named by `btf:` or
/// `--btf` that cannot be used included), 1 for a script that does not compile.
fn check(cfg: &Config, file: &str) -> ExitCode {
    let (wanted, unreadable) = discover::wanted(cfg);
    let mut failed = unreadable.len();
    for u in &unreadable {
        eprintln!("{}", u.error);
    }
    println!("config {file}: ok (listen {})", cfg.listen);
    let btf_failed = match btf_search(cfg).locate() {
        Ok(b) => {
            println!(
                "btf {}: ok ({} bytes, {} types, kernel {})",
                b.source(),
                b.size(),
                b.types(),
                b.release()
            );
            false
        }
        Err(e @ crate::btf::BtfError::Explicit { .. }) => {
            eprintln!("{e}");
            true
        }
        Err(e) => {
            // The daemon runs without one: the scripts without a kernel program do.
            eprintln!("warning: scripts with a kernel program will not load: {e}");
            false
        }
    };
    let limits = cfg.limits.to_limits();
    for (name, w) in &wanted {
        let label = w.origin.label(name);
        let overrides = cfg.scripts.overrides(name);
        let result = Script::compile(&label, &w.source, &limits)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                let params = s
                    .manifest()
                    .resolve_params(&overrides)
                    .map_err(|e| format!("{label}: scripts.params.{name}: {e}"))?;
                crate::script::dry_run(&s, &params, name, &limits).map_err(|e| e.to_string())?;
                Ok((s.manifest().program, params))
            });
        match result {
            Ok((program, params)) => {
                let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{name}: ok ({label}; program {}; params {})",
                    program.map_or("none", |p| p.name()),
                    if params.is_empty() {
                        "none".into()
                    } else {
                        params.join(" ")
                    }
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    if btf_failed {
        ExitCode::from(2)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads a web configuration file, first checking who can change it like the config
/// file ([`crate::script::trust`]): it decides who may read the endpoints.
fn load_web_config(
    path: &std::path::Path,
    strict_modes: bool,
) -> Result<crate::http::web::WebSecurity, String> {
    let policy = crate::script::trust::TrustPolicy::for_this_process();
    match crate::script::trust::check_trusted(path, &policy) {
        Ok(_) => {}
        Err(e) if !strict_modes => {
            tracing::warn!(error = %e, "untrusted web config read anyway: scripts.strict_modes is false");
        }
        Err(e) => return Err(e.to_string()),
    }
    crate::http::web::WebSecurity::load(path).map_err(|e| e.to_string())
}

/// The web configuration in force and where it is read from on a reload.
struct Web {
    path: Option<PathBuf>,
    cell: crate::http::web::SecurityCell,
}

impl Web {
    /// Re-reads the file; one that cannot be used leaves the running one in force.
    fn reload(&self, strict_modes: bool) -> Option<String> {
        let path = self.path.as_deref()?;
        match load_web_config(path, strict_modes) {
            Ok(s) => {
                self.cell.set(Some(s));
                tracing::info!(file = %path.display(), "web config reloaded");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "web config rejected; the running one stays");
                Some(e.to_string())
            }
        }
    }
}

/// What the HTTP endpoints see of the daemon.
struct State {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    sinks: Arc<Sinks>,
    node: String,
    config: String,
    started: std::time::SystemTime,
    /// What was dropped at start ([`crate::privileges`]).
    privileges: Option<crate::privileges::Report>,
}

impl crate::http::DaemonState for State {
    fn status(&self) -> serde_json::Value {
        let units = self.shared.units.read().unwrap_or_else(|e| e.into_inner());
        let usage = self.registry.usage();
        let budgets = self.registry.budgets();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "node": self.node,
            "config": self.config,
            "started_at": self.started.duration_since(std::time::SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "kernel": crate::bpf::features::kernel_release(),
            "last_reload": *self.shared.reload.read().unwrap_or_else(|e| e.into_inner()),
            "privileges": self.privileges,
            "scripts": units.iter().map(|u| u.to_json_with(usage.get(&u.name))).collect::<Vec<_>>(),
            "metrics": {
                "script_series": self.registry.script_series(),
                "total_series": budgets.total_series,
                "families_per_script": budgets.families_per_script,
            },
        })
    }

    fn ready(&self) -> Result<(), String> {
        if self.shared.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("starting: scripts are being loaded".into())
        }
    }

    fn before_scrape(&self) {
        let units = self.shared.units.read().unwrap_or_else(|e| e.into_inner());
        self.shared.telemetry.scrape(&units, &self.registry.usage());
    }

    fn subscribe(
        &self,
    ) -> (
        Vec<Arc<Event>>,
        tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) {
        self.sinks.subscribe()
    }

    fn stream_lagged(&self, n: u64) {
        self.sinks.stream_dropped(n);
    }
}

async fn run(
    cfg: Config,
    file: String,
    config_path: Option<PathBuf>,
    cli_btf: (Option<PathBuf>, Option<PathBuf>),
    watchdog: &shutdown::Watchdog,
    privileges: Option<crate::privileges::Report>,
    web: Web,
) -> anyhow::Result<()> {
    let node = cfg.node();
    let registry = Arc::new(Registry::new(&node));
    let sinks = Arc::new(
        Sinks::start(&cfg.sinks, &node, &registry)
            .map_err(|e| anyhow::Error::new(e).context(file.clone()))?,
    );
    let listener = crate::http::bind(&cfg.listen.to_string())
        .await
        .with_context(|| format!("{file}: listen"))?;
    let local = listener.local_addr()?;
    let pods = start_pods(&cfg.pods, &node, &registry);
    let shutdown_timeout = cfg.shutdown_timeout;
    let mut sup = Supervisor::new(
        cfg,
        file.clone(),
        node.clone(),
        registry.clone(),
        sinks.clone(),
        pods,
    );
    sup.override_btf(cli_btf.0, cli_btf.1);
    let state = Arc::new(State {
        shared: sup.shared.clone(),
        registry: registry.clone(),
        sinks: sinks.clone(),
        node: node.clone(),
        config: file.clone(),
        started: std::time::SystemTime::now(),
        privileges,
    });
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = http_stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (routes, status_elsewhere) = match sup.cfg.status_listen {
        config::StatusListen::Listen => (crate::http::Routes::All, None),
        config::StatusListen::Off => (crate::http::Routes::Metrics, None),
        config::StatusListen::Addr(a) => (crate::http::Routes::Metrics, Some(a.to_string())),
    };
    let max_connections = sup.cfg.max_connections;
    let tls = web.cell.get().is_some_and(|s| s.tls.is_some());
    let mut http = vec![tokio::spawn(crate::http::serve_with(
        listener,
        crate::http::ServeOptions {
            routes,
            security: web.cell.clone(),
            max_connections,
            status_elsewhere,
        },
        registry.clone(),
        state.clone(),
        stopped(),
    ))];
    if let config::StatusListen::Addr(a) = sup.cfg.status_listen {
        let admin = crate::http::bind(&a.to_string())
            .await
            .with_context(|| format!("{file}: status_listen"))?;
        http.push(tokio::spawn(crate::http::serve_with(
            admin,
            crate::http::ServeOptions {
                routes: crate::http::Routes::Status,
                max_connections,
                ..Default::default()
            },
            registry.clone(),
            state,
            stopped(),
        )));
    }
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(listen = %local, node = %node, config = %file, tls, "sonde daemon started");
    eprintln!("sonde: daemon listening on {scheme}://{local} (config: {file})");

    let mut watcher = match watch::Watcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no inotify: changes are picked up on SIGHUP only");
            None
        }
    };
    let watch_targets = |sup: &Supervisor| sup.cfg.scripts.directories.clone();
    if let Some(w) = watcher.as_mut() {
        w.set(&watch_targets(&sup), config_path.as_deref());
    }
    sup.apply(Vec::new()).await;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut failures = sup.take_failures();
    loop {
        let retry = async {
            match sup.next_retry() {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match watcher.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let errors = web.reload(sup.cfg.scripts.strict_modes).into_iter().collect();
                sup.reload_with(config_path.as_deref(), errors).await;
            }
            Some((name, reason)) = failures.recv() => {
                sup.fail(&name, reason).await;
                continue;
            }
            _ = retry => {
                sup.retry_due().await;
                continue;
            }
            r = changed => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "inotify failed; changes are picked up on SIGHUP only");
                    watcher = None;
                    continue;
                }
                settle(watcher.as_mut()).await;
                tracing::debug!("change seen: reloading");
                let errors = web.reload(sup.cfg.scripts.strict_modes).into_iter().collect();
                sup.reload_with(config_path.as_deref(), errors).await;
            }
        }
        if let Some(w) = watcher.as_mut() {
            w.set(&watch_targets(&sup), config_path.as_deref());
        }
    }

    // Everything below shares one deadline; the watchdog ends the process if the
    // runtime cannot (a thread stuck where no deadline reaches).
    let started = tokio::time::Instant::now();
    let deadline = started + shutdown_timeout;
    watchdog.arm(shutdown_timeout + shutdown::EXIT_MARGIN);
    watchdog.step("stopping scripts");
    let step = watchdog.clone();
    let stopping = sup.shutdown(move |script| step.step(format!("stopping script {script}")));
    if tokio::time::timeout_at(deadline, stopping).await.is_err() {
        tracing::error!(?shutdown_timeout, "scripts did not all stop within shutdown_timeout; the rest are left running until exit");
    }
    watchdog.step("stopping the http server");
    let _ = stop_http.send(true);
    let http_deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(2));
    for server in http {
        match tokio::time::timeout_at(http_deadline, server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
            Err(_) => tracing::warn!("http server did not stop in time"),
            _ => {}
        }
    }
    watchdog.step("flushing event sinks");
    // The sinks get what is left, and a moment even when nothing is.
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(SINKS_AT_LEAST);
    sinks.shutdown(left).await;
    tracing::info!(elapsed = ?started.elapsed(), "sonde daemon stopped");
    Ok(())
}

/// The least the sinks get to flush at shutdown, when stopping the scripts took
/// the whole `shutdown_timeout`.
const SINKS_AT_LEAST: Duration = Duration::from_millis(100);

/// The pod resolver: CRI with fallbacks; a pod that goes away takes its series with
/// it, and the configured pod labels are kept up to date in the registry.
fn start_pods(cfg: &PodsConfig, node: &str, registry: &Arc<Registry>) -> Arc<dyn PodResolver> {
    let r = CriResolver::new(
        ResolverOptions::new(cfg.socket(), cfg.refresh, node),
        crate::pods::own_netns(),
    );
    r.export(registry);
    let over = (!cfg.labels.is_empty())
        .then(|| {
            registry
                .gauge(
                    "pods_labels_over_budget",
                    "Pods whose value of an added pod label (pods.labels) was left off: the label has pods.label_budget distinct values already.",
                    &["label"],
                    64,
                )
                .ok()
        })
        .flatten();
    let reg = registry.clone();
    let labels = cfg.labels.clone();
    let budget = cfg.label_budget;
    r.on_change(move |c| {
        for p in c.gone {
            let n = reg.remove_pod_series(&p.namespace, &p.name);
            tracing::info!(namespace = %p.namespace, pod = %p.name, series = n, "pod gone: its series removed");
        }
        if !labels.is_empty() {
            let (table, left_off) = crate::pods::label_table(c.pods, &labels, budget);
            if let Some(g) = &over {
                for (name, n) in table.names.iter().zip(&left_off) {
                    let _ = g.set(&[name.as_str()], *n as f64);
                }
            }
            reg.set_pod_labels(Some(Arc::new(table)));
        }
    });
    r.run();
    let cri = if r.cri_up() {
        "reachable"
    } else {
        "not reachable"
    };
    tracing::info!(cri_socket = %cfg.cri_socket, cri, pods = r.pods().len(), "pod resolver started");
    r
}

/// Waits until changes stop coming for [`SETTLE`] (an editor's save, a `cp -r`,
/// a ConfigMap swap are several events).
/// Never longer than a second, so a file rewritten constantly still reloads.
async fn settle(watcher: Option<&mut watch::Watcher>) {
    let Some(w) = watcher else { return };
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until
        && tokio::time::timeout(SETTLE, w.changed()).await.is_ok()
    {}
}
