//! Fallbacks: naming a network namespace when the container runtime cannot.
//!
//! In order: the container a process inside it runs in (from `/proc/<pid>/cgroup`,
//! cgroup v1 or v2, the kubelet's cgroupfs and systemd layouts: pod `pod:<uid>` or
//! `container:<first 12 digits of the id>`), a named namespace (`ip netns add web`
//! makes `/run/netns/web`: pod `web`), else nothing (the resolver then says
//! `netns:<inode>`).
//!
//! ```
//! use sonde::pods::fallback::container_of_cgroup;
//! let c = container_of_cgroup(
//!     "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4789_8abc_def012345678.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n",
//! ).unwrap();
//! assert_eq!(c.pod_uid.as_deref(), Some("1f2e3d4c-5b6a-4789-8abc-def012345678"));
//! assert_eq!(&c.container_id[..12], "0123456789ab");
//! ```

use std::path::Path;

use crate::sources::Netns;

use super::{Pod, Source};

/// What a cgroup path says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    /// 64 hex digits.
    pub container_id: String,
    /// The pod's uid (dashes restored) when the path is a kubelet's.
    pub pod_uid: Option<String>,
}

/// Finds a container id (and pod uid) in the content of `/proc/<pid>/cgroup`.
/// Every line is looked at (cgroup v1 has one per hierarchy, v2 one `0::` line).
pub fn container_of_cgroup(text: &str) -> Option<CgroupContainer> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let mut container_id = None;
        let mut pod_uid = None;
        for part in path.split('/') {
            if let Some(uid) = pod_uid_of(part) {
                pod_uid = Some(uid);
            }
            if let Some(id) = container_id_of(part) {
                container_id = Some(id.to_string());
            }
        }
        if let Some(container_id) = container_id {
            return Some(CgroupContainer {
                container_id,
                pod_uid,
            });
        }
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let at = part.rfind("pod")?;
    let uid = &part[at + 3..];
    let ok = uid.len() == 36
        && uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_');
    ok.then(|| uid.replace('_', "-"))
}

/// A 64-hex-digit id, bare (cgroupfs) or inside `<runtime>-<id>.scope` (systemd:
/// `cri-containerd-`, `crio-`, `docker-`).
fn container_id_of(part: &str) -> Option<&str> {
    let part = part.strip_suffix(".scope").unwrap_or(part);
    let id = part.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The fallback pod of a namespace, or `None` when nothing names it.
pub fn pod_of(ns: &Netns, proc: &Path, node: &str) -> Option<Pod> {
    // A container's process says more than a bind mount's name (the runtimes name
    // theirs `cni-<uuid>`), so the cgroup comes first.
    for pid in ns.pids.iter().take(8) {
        let Ok(text) = std::fs::read_to_string(proc.join(pid.to_string()).join("cgroup")) else {
            continue;
        };
        if let Some(c) = container_of_cgroup(&text) {
            let name = match &c.pod_uid {
                Some(uid) => format!("pod:{uid}"),
                None => format!("container:{}", &c.container_id[..12]),
            };
            return Some(Pod {
                name,
                node: node.to_string(),
                uid: c.pod_uid.unwrap_or_default(),
                containers: vec![super::Container {
                    id: c.container_id,
                    name: String::new(),
                }],
                source: Source::Cgroup,
                ..Pod::default()
            });
        }
    }
    let name = ns
        .bind_mount
        .as_ref()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())?;
    Some(Pod {
        name: name.to_string(),
        node: node.to_string(),
        source: Source::NamedNetns,
        ..Pod::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn cgroupfs_v1_layout() {
        let text = format!(
            "12:pids:/kubepods/besteffort/pod1f2e3d4c-5b6a-4789-8abc-def012345678/{ID}\n\
             1:name=systemd:/kubepods/besteffort/pod1f2e3d4c-5b6a-4789-8abc-def012345678/{ID}\n"
        );
        let c = container_of_cgroup(&text).unwrap();
        assert_eq!(c.container_id, ID);
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("1f2e3d4c-5b6a-4789-8abc-def012345678")
        );
    }

    #[test]
    fn v2_without_kubelet() {
        let c = container_of_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")).unwrap();
        assert_eq!(c.container_id, ID);
        assert_eq!(c.pod_uid, None);
        let c = container_of_cgroup(&format!("0::/k8s.io/{ID}\n")).unwrap();
        assert_eq!(c.container_id, ID);
    }

    #[test]
    fn host_processes_have_no_container() {
        assert_eq!(
            container_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_of_cgroup("0::/\n"), None);
        assert_eq!(container_of_cgroup(""), None);
    }

    #[test]
    fn named_namespace_is_its_name() {
        let ns = Netns {
            inode: 7,
            pid: 0,
            pids: vec![],
            bind_mount: Some("/run/netns/web".into()),
        };
        let p = pod_of(&ns, Path::new("/nonexistent"), "n1").unwrap();
        assert_eq!(
            (p.name.as_str(), p.namespace.as_str(), p.source),
            ("web", "", Source::NamedNetns)
        );
    }
}
