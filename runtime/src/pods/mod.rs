//! Pods: who a network namespace, an address or a process belongs to.
//!
//! Kernel records carry a network namespace inode ([`sonde_netns`] in
//! `kernel-progs/include/sonde.h`). A [`PodResolver`] turns it into a [`Pod`]
//! (`namespace`, `name`, `node`, containers, pod labels), and a pod IP into the pod
//! that has it (the remote end of a tuple). Two resolvers:
//!
//! - [`HostResolver`] knows only the host: sonde's own network namespace is the host
//!   (empty pod and namespace, as Kubernetes metrics label host-network traffic),
//!   every other namespace gets the stable name `netns:<inode>`;
//! - [`CriResolver`] asks the container runtime over CRI ([`cri`]: containerd,
//!   CRI-O) on an interval and when an unknown namespace shows up, and names what
//!   the runtime does not know with the [`fallback`]s (cgroup container ids, `ip
//!   netns` names). The per-event lookup is a read of a map shared with the
//!   background refresh: no allocation, no I/O.
//!
//! ```
//! use sonde::pods::{HostResolver, PodResolver};
//! let r = HostResolver::with_host_netns(4026531840, "node-1");
//! assert_eq!(r.by_netns(4026531840).name, "");
//! assert_eq!(r.by_netns(4026532001).name, "netns:4026532001");
//! ```
//!
//! [`sonde_netns`]: crate::bpf::decode

pub mod cri;
pub mod fallback;
mod resolver;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use resolver::{Change, CriResolver, CriSocket, ResolverOptions};

/// What a network namespace maps to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Pod name; empty for the host.
    pub name: String,
    /// Kubernetes namespace; empty for the host and unknown namespaces.
    pub namespace: String,
    /// Node name.
    pub node: String,
    /// The pod's uid, when known.
    pub uid: String,
    /// The pod's containers (CRI), or the one container a cgroup path named.
    pub containers: Vec<Container>,
    /// The pod's labels (CRI sandbox labels).
    pub labels: BTreeMap<String, String>,
    /// The pod's addresses (CRI), v4 and v6.
    pub ips: Vec<IpAddr>,
    /// What named it.
    pub source: Source,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Empty when only the id is known (a cgroup path).
    pub name: String,
}

/// Where a [`Pod`] came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Source {
    /// The node's own network namespace.
    #[default]
    Host,
    /// The container runtime (CRI).
    Cri,
    /// A container id in the cgroup of a process inside the namespace.
    Cgroup,
    /// A name in `/run/netns`.
    NamedNetns,
    /// Nothing: `netns:<inode>`.
    Unknown,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Host => "host",
            Source::Cri => "cri",
            Source::Cgroup => "cgroup",
            Source::NamedNetns => "netns_name",
            Source::Unknown => "unknown",
        }
    }
}

impl Pod {
    /// The stable stand-in for a namespace nothing names.
    pub fn unknown(inode: u32, node: &str) -> Pod {
        Pod {
            name: format!("netns:{inode}"),
            node: node.to_string(),
            source: Source::Unknown,
            ..Pod::default()
        }
    }
}

/// Maps kernel identifiers to pods. Called on the per-event path: must be cheap and
/// must not block.
pub trait PodResolver: Send + Sync {
    fn by_netns(&self, inode: u32) -> Arc<Pod>;

    /// The pod on this node that has `ip`; `None` for any other address.
    fn by_ip(&self, _ip: IpAddr) -> Option<Arc<Pod>> {
        None
    }

    /// Changes whenever an answer may have changed: callers that cache answers
    /// drop their cache when it moves.
    fn generation(&self) -> u64 {
        0
    }
}

/// Knows the host network namespace only.
pub struct HostResolver {
    host_netns: u32,
    host: Arc<Pod>,
    node: String,
}

impl HostResolver {
    /// Uses sonde's own network namespace as the host's.
    pub fn new(node: &str) -> Self {
        Self::with_host_netns(own_netns(), node)
    }

    pub fn with_host_netns(host_netns: u32, node: &str) -> Self {
        HostResolver {
            host_netns,
            host: Arc::new(Pod {
                node: node.to_string(),
                ..Pod::default()
            }),
            node: node.to_string(),
        }
    }

    pub fn host_netns(&self) -> u32 {
        self.host_netns
    }
}

impl PodResolver for HostResolver {
    fn by_netns(&self, inode: u32) -> Arc<Pod> {
        if inode == self.host_netns || inode == 0 {
            return self.host.clone();
        }
        Arc::new(Pod::unknown(inode, &self.node))
    }
}

/// The inode of sonde's own network namespace (0 when unreadable).
pub fn own_netns() -> u32 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

/// The daemon's `pods:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodsConfig {
    /// `auto` (the usual containerd and CRI-O sockets), `none` (fallbacks only) or
    /// the path of a CRI socket.
    pub cri_socket: String,
    /// How often the runtime is asked for its pods (besides on demand, when an
    /// unknown namespace shows up, at most once a second).
    #[serde(with = "crate::daemon::serde_util::duration")]
    pub refresh: Duration,
    /// Pod labels added to every series that has `namespace` and `pod` labels
    /// (e.g. `app`); names that are not valid label names are written with `_`.
    pub labels: Vec<String>,
    /// Distinct values per added label; past it the label is left empty and the
    /// update counted in `sonde_pods_label_values_dropped_total`.
    pub label_budget: usize,
}

impl Default for PodsConfig {
    fn default() -> Self {
        PodsConfig {
            cri_socket: "auto".into(),
            refresh: Duration::from_secs(10),
            labels: Vec::new(),
            label_budget: 100,
        }
    }
}

impl PodsConfig {
    /// A problem with the section, as (config path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let d = PodsConfig::default();
        crate::daemon::serde_util::check_duration(
            self.refresh,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            d.refresh,
            "how often the container runtime is asked for its pods",
        )
        .map_err(|m| ("pods.refresh".to_string(), m))?;
        crate::daemon::serde_util::check_range(
            self.label_budget,
            1..=10_000,
            d.label_budget,
            "distinct values per added pod label",
        )
        .map_err(|m| ("pods.label_budget".to_string(), m))?;
        for (i, l) in self.labels.iter().enumerate() {
            let name = label_name(l);
            if l.is_empty()
                || name.starts_with("__")
                || ["node", "namespace", "pod", "le"].contains(&name.as_str())
            {
                return Err((
                    format!("pods.labels[{i}]"),
                    format!("`{l}` cannot be a metric label (empty, reserved, or one sonde already writes)"),
                ));
            }
        }
        Ok(())
    }

    pub fn socket(&self) -> CriSocket {
        match self.cri_socket.as_str() {
            "auto" | "" => CriSocket::Auto,
            "none" => CriSocket::None,
            p => CriSocket::Path(p.into()),
        }
    }
}

/// The pod label table the registry adds to series ([`crate::metrics::PodLabels`]):
/// for each configured pod label (`app`, `app.kubernetes.io/name` exported as
/// `app_kubernetes_io_name`), the value of every pod, at most `budget` distinct values
/// per label (pods sorted by namespace and name get theirs first; past the budget
/// the label is left off). Returns the table and, per label, how many pods had a
/// value left off.
pub fn label_table(
    pods: &[Arc<Pod>],
    names: &[String],
    budget: usize,
) -> (crate::metrics::PodLabels, Vec<usize>) {
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().filter(|p| !p.name.is_empty()).collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut seen: Vec<std::collections::HashSet<&str>> = vec![Default::default(); names.len()];
    let mut over = vec![0usize; names.len()];
    let mut values = std::collections::HashMap::new();
    for p in sorted {
        let v: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match p.labels.get(n) {
                Some(v) if seen[i].contains(v.as_str()) || seen[i].len() < budget => {
                    seen[i].insert(v.as_str());
                    v.clone()
                }
                Some(_) => {
                    over[i] += 1;
                    String::new()
                }
                None => String::new(),
            })
            .collect();
        if v.iter().any(|v| !v.is_empty()) {
            values.insert((p.namespace.clone(), p.name.clone()), v);
        }
    }
    let names = names.iter().map(|n| label_name(n)).collect();
    (crate::metrics::PodLabels { names, values }, over)
}

/// A pod label key as a metric label name: `app.kubernetes.io/name` ->
/// `app_kubernetes_io_name`.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// The node name: `$NODE_NAME` (set by a DaemonSet) or the host name.
pub fn node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
