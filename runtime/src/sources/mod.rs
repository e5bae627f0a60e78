//! Sources: procfs and netlink readers, per network namespace, for scripts without a
//! kernel program.
//!
//! A pod is a network namespace. [`netns_list`] finds every namespace on the node by
//! scanning `/proc/*/ns/net` (one entry per distinct inode, read through its lowest
//! pid) plus the `ip netns` bind mounts in `/run/netns`, cached for
//! [`NETNS_TTL`] so that the scripts reading on the same tick share one scan. Each
//! reader then takes a [`Netns`]:
//!
//! - procfs files are read through `/proc/<pid>/net/...`, which shows the
//!   namespace of that process: no `setns` ([`procfs`]);
//! - netlink (`sock_diag`, rtnetlink qdiscs and links, ctnetlink stats) needs a
//!   socket created inside the namespace: a short-lived thread `setns`es into it,
//!   creates the socket and exits; the socket stays bound to that namespace and is
//!   cached until the namespace disappears ([`netlink`]).
//!
//! Reading happens when a script's `on_tick` asks, never per event. A namespace that
//! vanished mid-read is an error for that read only ([`SourceError::Gone`]); a source
//! the kernel does not have (no conntrack module, no IPVS) is
//! [`SourceError::Missing`].
//!
//! ```no_run
//! use sonde::sources::{netns_list, procfs};
//! for ns in netns_list().iter() {
//!     let dev = procfs::netdev(ns).unwrap();
//!     println!("{} {:?}", ns.inode, dev.first().map(|d| &d.name));
//! }
//! ```
//!
//! The script functions (`proc::*`, `netlink::*`) are in [`script`].

pub mod netlink;
pub mod procfs;
pub mod script;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one scan of the node's network namespaces is reused.
pub const NETNS_TTL: Duration = Duration::from_secs(1);

/// A failed read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The namespace (or the process it was read through) went away mid-read.
    #[error("network namespace {inode} is gone")]
    Gone { inode: u64 },
    /// The kernel does not provide this source (module not loaded, feature off).
    #[error("{what} is not available: {reason}")]
    Missing { what: &'static str, reason: String },
    /// Any other I/O failure.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The kernel's answer did not parse.
    #[error("{what}: unexpected format: {detail}")]
    Format { what: String, detail: String },
}

impl SourceError {
    /// The `reason` label of the error counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Gone { .. } => "gone",
            SourceError::Missing { .. } => "missing",
            SourceError::Io { .. } => "io",
            SourceError::Format { .. } => "format",
        }
    }
}

/// One network namespace of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Inode of the namespace (what `sonde_netns` carries in kernel records).
    pub inode: u64,
    /// The lowest pid inside it; 0 when only an `ip netns` bind mount holds it.
    pub pid: u32,
    /// Every pid inside it, ascending (for the per-pod `fd` and `io` sums).
    pub pids: Vec<u32>,
    /// `/run/netns/<name>` when the namespace is one made by `ip netns add`.
    pub bind_mount: Option<PathBuf>,
}

impl Netns {
    /// A file that opens the namespace (for `setns`).
    pub fn ns_path(&self) -> PathBuf {
        match (&self.bind_mount, self.pid) {
            (Some(p), _) => p.clone(),
            (None, pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// The inode of the namespace this process runs in.
    pub fn own_inode() -> u64 {
        std::fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino())
            .unwrap_or(0)
    }
}

thread_local! {
    /// Set on a thread while [`own_namespace_only`] runs.
    static OWN_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with `proc::netns()` listing only sonde's own namespace on this thread.
/// For dry runs (`sonde check`): they read real sources, but must not walk every pod
/// namespace of a busy node within one handler call's deadline.
pub fn own_namespace_only<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OWN_ONLY.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OWN_ONLY.with(|o| o.replace(true)));
    f()
}

/// The namespaces `proc::netns()` lists: the node's, or only sonde's own inside
/// [`own_namespace_only`].
pub fn script_netns_list() -> Arc<[Netns]> {
    if OWN_ONLY.with(|o| o.get()) {
        Arc::from(vec![crate::netlink::own_netns()])
    } else {
        netns_list()
    }
}

/// The last scan and when it was made.
static CACHE: Mutex<Option<(Instant, Arc<[Netns]>)>> = Mutex::new(None);

/// The node's network namespaces, sorted by inode, from a scan at most
/// [`NETNS_TTL`] old.
pub fn netns_list() -> Arc<[Netns]> {
    netns_list_within(NETNS_TTL)
}

/// The node's network namespaces from a scan at most `ttl` old.
pub fn netns_list_within(ttl: Duration) -> Arc<[Netns]> {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, list)) = c.as_ref() {
        if at.elapsed() < ttl {
            return list.clone();
        }
    }
    let list: Arc<[Netns]> = scan(
        std::path::Path::new("/proc"),
        std::path::Path::new("/run/netns"),
    )
    .into();
    *c = Some((Instant::now(), list.clone()));
    drop(c);
    netlink::forget_except(&list);
    list
}

/// The namespace with this inode, from the cached scan.
pub fn netns_by_inode(inode: u64) -> Option<Netns> {
    netns_list().iter().find(|n| n.inode == inode).cloned()
}

/// Scans `proc` for every process's network namespace, and `run_netns` for bind
/// mounts. Processes that vanish during the scan are skipped.
pub fn scan(proc: &std::path::Path, run_netns: &std::path::Path) -> Vec<Netns> {
    let mut by_inode: BTreeMap<u64, Netns> = BTreeMap::new();
    let mut path = proc.to_path_buf();
    if let Ok(dir) = std::fs::read_dir(proc) {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            path.push(name);
            path.push("ns/net");
            // readlink is cheaper than stat through the nsfs: "net:[4026531840]".
            let inode = std::fs::read_link(&path).ok().and_then(|l| {
                l.to_str()
                    .and_then(|s| s.strip_prefix("net:["))
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
            });
            path.pop();
            path.pop();
            path.pop();
            let Some(inode) = inode else { continue };
            let ns = by_inode.entry(inode).or_insert_with(|| Netns {
                inode,
                pid,
                pids: Vec::new(),
                bind_mount: None,
            });
            ns.pid = ns.pid.min(pid);
            ns.pids.push(pid);
        }
    }
    if let Ok(dir) = std::fs::read_dir(run_netns) {
        for e in dir.flatten() {
            let p = e.path();
            // A bind mount of an nsfs inode; an unmounted leftover file is not one.
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            if m.dev() == std::fs::metadata(run_netns).map(|d| d.dev()).unwrap_or(0) {
                continue;
            }
            let ns = by_inode.entry(m.ino()).or_insert_with(|| Netns {
                inode: m.ino(),
                pid: 0,
                pids: Vec::new(),
                bind_mount: None,
            });
            ns.bind_mount.get_or_insert(p);
        }
    }
    by_inode
        .into_values()
        .map(|mut n| {
            n.pids.sort_unstable();
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_this_process_namespace() {
        let list = scan(
            std::path::Path::new("/proc"),
            std::path::Path::new("/run/netns"),
        );
        let own = Netns::own_inode();
        let me = std::process::id();
        let ns = list
            .iter()
            .find(|n| n.inode == own)
            .expect("own netns listed");
        assert!(ns.pids.contains(&me));
        assert_eq!(ns.pid, ns.pids[0]);
        assert!(list.windows(2).all(|w| w[0].inode < w[1].inode));
    }
}
