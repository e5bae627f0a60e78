//! The CRI-backed resolver: a snapshot of the node's pods, refreshed in the
//! background, read per event.
//!
//! A refresh asks the runtime for its ready sandboxes (`PodSandboxStatus` only for
//! sandboxes not seen before: a sandbox keeps its namespace and addresses for life),
//! scans `/proc` and `/run/netns` for every network namespace, and names the ones
//! the runtime did not with the fallbacks. While the runtime is unreachable the last
//! answer is kept for the namespaces that still exist, so a containerd restart does
//! not relabel running pods; new namespaces get fallback names meanwhile.
//!
//! Each refresh tells its listeners ([`CriResolver::on_change`]) which pods went
//! away (the daemon removes their series) and what the pods are now.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::cri::{self, Client, CriError};
use super::{fallback, Container, Pod, PodResolver, Source};
use crate::metrics::{Counter, Gauge, Registry};

/// On-demand refreshes (a lookup missed) are at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(1);
/// A missed lookup is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Namespaces remembered as `netns:<inode>` between refreshes.
const MAX_UNKNOWN: usize = 4096;

/// Where the runtime is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriSocket {
    /// The first of [`cri::SOCKETS`] that exists, looked for at every refresh.
    Auto,
    /// No runtime: fallbacks only.
    None,
    Path(PathBuf),
}

/// How a [`CriResolver`] runs.
#[derive(Debug, Clone)]
pub struct ResolverOptions {
    pub socket: CriSocket,
    pub refresh: Duration,
    pub node: String,
    /// Where processes and named namespaces are (`/proc`, `/run/netns`).
    pub proc: PathBuf,
    pub run_netns: PathBuf,
}

impl ResolverOptions {
    pub fn new(socket: CriSocket, refresh: Duration, node: &str) -> Self {
        ResolverOptions {
            socket,
            refresh,
            node: node.to_string(),
            proc: "/proc".into(),
            run_netns: "/run/netns".into(),
        }
    }
}

/// What one refresh changed.
pub struct Change<'a> {
    /// Pods (by namespace and name) that no namespace has any more.
    pub gone: &'a [Arc<Pod>],
    /// Every pod now, one entry per network namespace (the host excluded).
    pub pods: &'a [Arc<Pod>],
}

type Listener = Box<dyn Fn(&Change<'_>) + Send + Sync>;

#[derive(Default)]
struct Snapshot {
    by_netns: HashMap<u32, Arc<Pod>>,
    by_ip: HashMap<IpAddr, Arc<Pod>>,
    /// /24 and /64 prefixes of pod addresses: a miss there may be a new pod.
    pod_nets: HashSet<(bool, u64)>,
    /// Namespaces looked up, refreshed for, and still found nowhere (gone, or held
    /// by a thread only): `netns:<inode>` without asking again.
    dead: HashMap<u32, Arc<Pod>>,
}

struct Wake {
    demand: bool,
    stop: bool,
}

struct SelfMetrics {
    namespaces: Gauge,
    cri_up: Gauge,
    misses: Counter,
    refreshes: Counter,
}

struct Inner {
    opts: ResolverOptions,
    host_netns: u32,
    host: Arc<Pod>,
    snap: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
    unknown: Mutex<HashMap<u32, Arc<Pod>>>,
    misses: AtomicU64,
    start: Instant,
    last_demand_ms: AtomicU64,
    last_log_ms: AtomicU64,
    logged_misses: AtomicU64,
    wake: Mutex<Wake>,
    cv: Condvar,
    listeners: Mutex<Vec<Listener>>,
    metrics: OnceLock<SelfMetrics>,
    cri_up: AtomicBool,
}

/// Pods from the container runtime, with fallbacks. See the [module](self).
pub struct CriResolver {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl CriResolver {
    /// Starts the background refresh and waits (up to 3 s) for the first one.
    pub fn start(opts: ResolverOptions) -> Arc<CriResolver> {
        let r = Self::new(opts, super::own_netns());
        r.run();
        r
    }

    /// A resolver not yet refreshing: add listeners and metrics, then [`run`](Self::run).
    pub fn new(opts: ResolverOptions, host_netns: u32) -> Arc<CriResolver> {
        let inner = Arc::new(Inner {
            host: Arc::new(Pod {
                node: opts.node.clone(),
                ..Pod::default()
            }),
            opts,
            host_netns,
            snap: RwLock::new(Arc::new(Snapshot::default())),
            generation: AtomicU64::new(1),
            unknown: Mutex::new(HashMap::new()),
            misses: AtomicU64::new(0),
            start: Instant::now(),
            last_demand_ms: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            logged_misses: AtomicU64::new(0),
            wake: Mutex::new(Wake {
                demand: false,
                stop: false,
            }),
            cv: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            metrics: OnceLock::new(),
            cri_up: AtomicBool::new(false),
        });
        Arc::new(CriResolver {
            inner,
            thread: Mutex::new(None),
        })
    }

    /// Starts the background refresh (once) and waits up to 3 s for the first one.
    pub fn run(&self) {
        let mut thread = lock(&self.thread);
        if thread.is_some() {
            return;
        }
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let worker = self.inner.clone();
        *thread = std::thread::Builder::new()
            .name("sonde-pods".into())
            .spawn(move || worker.run(first_tx))
            .ok();
        drop(thread);
        let _ = first_rx.recv_timeout(Duration::from_secs(3));
    }

    /// Called after every refresh, from the refresh thread.
    pub fn on_change(&self, f: impl Fn(&Change<'_>) + Send + Sync + 'static) {
        lock(&self.inner.listeners).push(Box::new(f));
    }

    /// Exports `sonde_pods_namespaces{source}`, `sonde_pods_cri_up`,
    /// `sonde_pods_lookup_misses_total` and `sonde_pods_refreshes_total{result}`.
    pub fn export(&self, registry: &Registry) {
        let m = (|| -> Result<SelfMetrics, crate::metrics::MetricsError> {
            Ok(SelfMetrics {
                namespaces: registry.gauge(
                    "pods_namespaces",
                    "Network namespaces of the node, by what named them (cri, cgroup, netns_name, unknown).",
                    &["source"],
                    16,
                )?,
                cri_up: registry.gauge(
                    "pods_cri_up",
                    "1 when the last request to the container runtime (CRI) succeeded.",
                    &[] as &[&str],
                    1,
                )?,
                misses: registry.counter(
                    "pods_lookup_misses_total",
                    "Lookups of a network namespace the last scan had not seen (labelled netns:<inode> until a refresh names it).",
                    &[] as &[&str],
                    1,
                )?,
                refreshes: registry.counter(
                    "pods_refreshes_total",
                    "Refreshes of the pod list, by result of the container runtime request (ok, error, none).",
                    &["result"],
                    4,
                )?,
            })
        })();
        match m {
            Ok(m) => {
                let _ = self.inner.metrics.set(m);
            }
            Err(e) => tracing::warn!(error = %e, "pod resolver metrics not exported"),
        }
    }

    /// Asks for a refresh now (still at most one per second).
    pub fn refresh_soon(&self) {
        self.inner.demand(true);
    }

    /// Whether the last request to the runtime succeeded.
    pub fn cri_up(&self) -> bool {
        self.inner.cri_up.load(Ordering::Relaxed)
    }

    /// Every pod known now (one per network namespace, the host excluded).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.inner.snapshot().by_netns.values().cloned().collect()
    }
}

impl Drop for CriResolver {
    fn drop(&mut self) {
        lock(&self.inner.wake).stop = true;
        self.inner.cv.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodResolver for CriResolver {
    fn by_netns(&self, inode: u32) -> Arc<Pod> {
        let i = &self.inner;
        if inode == i.host_netns || inode == 0 {
            return i.host.clone();
        }
        let snap = i.snapshot();
        if let Some(p) = snap.by_netns.get(&inode).or_else(|| snap.dead.get(&inode)) {
            return p.clone();
        }
        i.miss(inode)
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Pod>> {
        let snap = self.inner.snapshot();
        if let Some(p) = snap.by_ip.get(&ip) {
            return Some(p.clone());
        }
        if snap.pod_nets.contains(&prefix(ip)) {
            self.inner.demand(false);
        }
        None
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }
}

/// The /24 (v4) or /64 (v6) an address is in.
fn prefix(ip: IpAddr) -> (bool, u64) {
    match ip {
        IpAddr::V4(a) => (false, u64::from(u32::from(a) >> 8)),
        IpAddr::V6(a) => (true, (u128::from(a) >> 64) as u64),
    }
}

/// A ready sandbox's lasting facts, asked once per sandbox.
#[derive(Clone)]
struct SandboxFacts {
    inode: Option<u32>,
    ips: Vec<IpAddr>,
}

impl Inner {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// A namespace the last scan did not see: `netns:<inode>` for now, counted,
    /// logged at most once a minute, and a refresh asked for.
    fn miss(&self, inode: u32) -> Arc<Pod> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if (last == 0 || now - last >= LOG_EVERY.as_millis() as u64)
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let total = self.misses.load(Ordering::Relaxed);
            let since = total - self.logged_misses.swap(total, Ordering::Relaxed);
            tracing::info!(
                netns = inode,
                misses = since,
                "network namespace of no known pod (labelled netns:<inode>); refreshing"
            );
        }
        self.demand(false);
        let mut u = lock(&self.unknown);
        if let Some(p) = u.get(&inode) {
            return p.clone();
        }
        let p = Arc::new(Pod::unknown(inode, &self.opts.node));
        if u.len() < MAX_UNKNOWN {
            u.insert(inode, p.clone());
        }
        p
    }

    /// Wakes the refresh thread, at most once per [`MIN_GAP`] unless `force`.
    fn demand(&self, force: bool) {
        let now = self.now_ms();
        let last = self.last_demand_ms.load(Ordering::Relaxed);
        if !force && last != 0 && now - last < MIN_GAP.as_millis() as u64 {
            return;
        }
        if self
            .last_demand_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        lock(&self.wake).demand = true;
        self.cv.notify_all();
    }

    fn run(self: Arc<Self>, first: std::sync::mpsc::Sender<()>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "pod resolver cannot start: pods are labelled netns:<inode>");
                return;
            }
        };
        let mut facts: HashMap<String, SandboxFacts> = HashMap::new();
        let mut first = Some(first);
        let mut last_error: Option<String> = None;
        loop {
            let began = Instant::now();
            self.refresh(&rt, &mut facts, &mut last_error);
            if let Some(f) = first.take() {
                let _ = f.send(());
            }
            let mut w = lock(&self.wake);
            loop {
                if w.stop {
                    return;
                }
                let elapsed = began.elapsed();
                if elapsed >= self.opts.refresh || (w.demand && elapsed >= MIN_GAP) {
                    w.demand = false;
                    break;
                }
                let until = if w.demand { MIN_GAP } else { self.opts.refresh };
                w = self
                    .cv
                    .wait_timeout(w, until - elapsed)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    fn socket(&self) -> Option<PathBuf> {
        match &self.opts.socket {
            CriSocket::Auto => cri::find_socket(),
            CriSocket::None => None,
            CriSocket::Path(p) => Some(p.clone()),
        }
    }

    fn refresh(
        &self,
        rt: &tokio::runtime::Runtime,
        facts: &mut HashMap<String, SandboxFacts>,
        last_error: &mut Option<String>,
    ) {
        let socket = self.socket();
        let listed = socket.as_ref().map(|s| rt.block_on(self.fetch(s, facts)));
        let scan = crate::sources::scan(&self.opts.proc, &self.opts.run_netns);
        let live: HashSet<u64> = scan.iter().map(|n| n.inode).collect();
        let old = self.snapshot();

        let mut by_netns: HashMap<u32, Arc<Pod>> = HashMap::new();
        let result = match &listed {
            Some(Ok(pods)) => {
                for p in pods {
                    by_netns.insert(p.0, p.1.clone());
                }
                if last_error.take().is_some() {
                    tracing::info!(socket = %socket.as_ref().map(|s| s.display().to_string()).unwrap_or_default(), "container runtime reachable again");
                }
                self.cri_up.store(true, Ordering::Relaxed);
                "ok"
            }
            Some(Err(e)) => {
                // Keep what the runtime said last, for namespaces that still exist.
                for (inode, p) in &old.by_netns {
                    if p.source == Source::Cri && live.contains(&u64::from(*inode)) {
                        by_netns.insert(*inode, p.clone());
                    }
                }
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "container runtime unreachable: keeping the last pods, new namespaces get fallback names");
                }
                *last_error = Some(msg);
                self.cri_up.store(false, Ordering::Relaxed);
                "error"
            }
            None => {
                self.cri_up.store(false, Ordering::Relaxed);
                "none"
            }
        };
        for ns in &scan {
            let inode = ns.inode as u32;
            if inode == self.host_netns || by_netns.contains_key(&inode) {
                continue;
            }
            let pod = fallback::pod_of(ns, &self.opts.proc, &self.opts.node)
                .unwrap_or_else(|| Pod::unknown(inode, &self.opts.node));
            // Reuse the previous Arc when nothing changed (cheap comparisons later).
            let pod = match old.by_netns.get(&inode) {
                Some(p) if **p == pod => p.clone(),
                _ => Arc::new(pod),
            };
            by_netns.insert(inode, pod);
        }

        let mut by_ip = HashMap::new();
        let mut pod_nets = HashSet::new();
        for p in by_netns.values() {
            for ip in &p.ips {
                by_ip.insert(*ip, p.clone());
                pod_nets.insert(prefix(*ip));
            }
        }
        let now: HashSet<(&str, &str)> = by_netns
            .values()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        // Missed namespaces: named now (their netns:<inode> series go), or dead.
        let mut dead: HashMap<u32, Arc<Pod>> = old
            .dead
            .iter()
            .filter(|(i, _)| !by_netns.contains_key(i))
            .map(|(i, p)| (*i, p.clone()))
            .collect();
        let mut unknown = Vec::new();
        for (inode, p) in lock(&self.unknown).drain() {
            if by_netns.contains_key(&inode) {
                unknown.push(p);
            } else {
                dead.insert(inode, p);
            }
        }
        if dead.len() > MAX_UNKNOWN {
            dead.clear();
        }
        let mut seen = HashSet::new();
        let gone: Vec<Arc<Pod>> = old
            .by_netns
            .values()
            .chain(unknown.iter())
            .filter(|p| !now.contains(&(p.namespace.as_str(), p.name.as_str())))
            .filter(|p| seen.insert((p.namespace.clone(), p.name.clone())))
            .cloned()
            .collect();
        let changed = by_netns != old.by_netns || !unknown.is_empty();
        let snap = Arc::new(Snapshot {
            by_netns,
            by_ip,
            pod_nets,
            dead,
        });
        *self.snap.write().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        for p in &gone {
            tracing::debug!(namespace = %p.namespace, pod = %p.name, "pod gone");
        }
        if let Some(m) = self.metrics.get() {
            let mut counts: HashMap<&'static str, u64> = [
                Source::Cri,
                Source::Cgroup,
                Source::NamedNetns,
                Source::Unknown,
            ]
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
            for p in snap.by_netns.values() {
                *counts.entry(p.source.as_str()).or_default() += 1;
            }
            for (s, n) in counts {
                let _ = m.namespaces.set(&[s], n as f64);
            }
            let _ = m
                .cri_up
                .set(&[] as &[&str], if result == "ok" { 1.0 } else { 0.0 });
            let _ = m
                .misses
                .set_total(&[] as &[&str], self.misses.load(Ordering::Relaxed) as f64);
            let _ = m.refreshes.inc(&[result]);
        }
        let pods: Vec<Arc<Pod>> = snap.by_netns.values().cloned().collect();
        let change = Change {
            gone: &gone,
            pods: &pods,
        };
        for l in lock(&self.listeners).iter() {
            l(&change);
        }
    }

    /// The runtime's ready pods, by network namespace inode.
    async fn fetch(
        &self,
        socket: &Path,
        facts: &mut HashMap<String, SandboxFacts>,
    ) -> Result<Vec<(u32, Arc<Pod>)>, CriError> {
        let mut c = Client::connect(socket).await?;
        let sandboxes = c.list_pod_sandboxes().await?;
        let containers = c.list_containers().await?;
        let old = self.snapshot();
        let mut out = Vec::new();
        let mut ready = HashSet::new();
        for s in sandboxes {
            if s.state != cri::SANDBOX_READY {
                continue;
            }
            ready.insert(s.id.clone());
            let f = match facts.get(&s.id) {
                Some(f) => f.clone(),
                None => {
                    let st = match c.pod_sandbox_status(&s.id).await {
                        Ok(st) => st,
                        // Removed since the list: not a failure of the runtime.
                        Err(CriError::Status { code: 5, .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    let f = sandbox_facts(&st, &self.opts.proc);
                    if f.inode.is_some() {
                        facts.insert(s.id.clone(), f.clone());
                    }
                    f
                }
            };
            let Some(inode) = f.inode else { continue };
            if inode == self.host_netns {
                // Host-network pods share the host's namespace and addresses.
                continue;
            }
            let m = s.metadata.unwrap_or_default();
            let mut cs: Vec<Container> = containers
                .iter()
                .filter(|c| c.pod_sandbox_id == s.id)
                .map(|c| Container {
                    id: c.id.clone(),
                    name: c
                        .metadata
                        .as_ref()
                        .map(|m| m.name.clone())
                        .unwrap_or_default(),
                })
                .collect();
            cs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            let pod = Pod {
                name: m.name,
                namespace: m.namespace,
                node: self.opts.node.clone(),
                uid: m.uid,
                containers: cs,
                labels: s.labels.into_iter().collect(),
                ips: f.ips,
                source: Source::Cri,
            };
            let pod = match old.by_netns.get(&inode) {
                Some(p) if **p == pod => p.clone(),
                _ => Arc::new(pod),
            };
            out.push((inode, pod));
        }
        facts.retain(|id, _| ready.contains(id));
        Ok(out)
    }
}

fn sandbox_facts(st: &cri::PodSandboxStatusResponse, proc: &Path) -> SandboxFacts {
    let info = cri::sandbox_info(&st.info);
    let inode = info
        .pid
        .and_then(|pid| std::fs::metadata(proc.join(pid.to_string()).join("ns/net")).ok())
        .or_else(|| {
            info.netns_path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
        })
        .map(|m| m.ino() as u32);
    let mut ips = Vec::new();
    if let Some(n) = st.status.as_ref().and_then(|s| s.network.as_ref()) {
        for a in
            std::iter::once(n.ip.as_str()).chain(n.additional_ips.iter().map(|i| i.ip.as_str()))
        {
            if let Ok(ip) = a.parse::<IpAddr>() {
                ips.push(ip);
            }
        }
    }
    SandboxFacts { inode, ips }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_runtime_namespaces_get_fallback_names() {
        // No CRI; this process's namespace is the host, so every namespace here
        // that is not ours is named by a fallback or `netns:<inode>`.
        let r = CriResolver::start(ResolverOptions::new(
            CriSocket::None,
            Duration::from_secs(60),
            "n1",
        ));
        assert!(!r.cri_up());
        let own = super::super::own_netns();
        assert_eq!(r.by_netns(own).name, "");
        assert_eq!(r.by_netns(0).name, "");
        // A namespace no scan has seen: stable name, counted, same Arc every time.
        let a = r.by_netns(1);
        let b = r.by_netns(1);
        assert_eq!(a.name, "netns:1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(r.inner.misses.load(Ordering::Relaxed), 2);
        assert_eq!(r.by_ip("10.1.2.3".parse().unwrap()), None);
    }

    #[test]
    fn prefixes_group_pod_networks() {
        assert_eq!(
            prefix("10.88.0.5".parse().unwrap()),
            prefix("10.88.0.200".parse().unwrap())
        );
        assert_ne!(
            prefix("10.88.0.5".parse().unwrap()),
            prefix("10.88.1.5".parse().unwrap())
        );
        assert_eq!(
            prefix("fd00::1".parse().unwrap()),
            prefix("fd00::2".parse().unwrap())
        );
    }
}
