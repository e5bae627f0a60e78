//! Pods: who a network namespace belongs to.
//!
//! Kernel records carry a network namespace inode ([`sonde_netns`] in
//! `kernel-progs/include/sonde.h`). A [`PodResolver`] turns it into a [`Pod`]. The
//! resolver here knows only the host: sonde's own network namespace is the host (empty
//! pod and namespace, as Kubernetes metrics label host-network traffic), every other
//! namespace gets the stable name `netns:<inode>`. A CRI-backed resolver plugs in
//! behind the same trait.
//!
//! ```
//! use sonde::pods::{HostResolver, PodResolver};
//! let r = HostResolver::with_host_netns(4026531840, "node-1");
//! assert_eq!(r.by_netns(4026531840).name, "");
//! assert_eq!(r.by_netns(4026532001).name, "netns:4026532001");
//! ```
//!
//! [`sonde_netns`]: crate::bpf::decode

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

/// What a network namespace maps to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Pod name; empty for the host.
    pub name: String,
    /// Kubernetes namespace; empty for the host and unknown namespaces.
    pub namespace: String,
    /// Node name.
    pub node: String,
}

/// Maps kernel identifiers to pods. Called on the per-event path: must be cheap and
/// must not block.
pub trait PodResolver: Send + Sync {
    fn by_netns(&self, inode: u32) -> Arc<Pod>;
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
        let inode = std::fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino() as u32)
            .unwrap_or(0);
        Self::with_host_netns(inode, node)
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
        Arc::new(Pod {
            name: format!("netns:{inode}"),
            namespace: String::new(),
            node: self.node.clone(),
        })
    }
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
