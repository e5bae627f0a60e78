//! Watches the script directories and the config file with inotify.
//!
//! Directories are watched, not files: editors save by writing a new file and
//! renaming it over the old one, and a Kubernetes ConfigMap mount swaps its `..data`
//! symlink, so only the directory sees every change. A directory that does not
//! exist yet is waited for through its nearest existing parent. Events only say
//! "something changed": the supervisor then re-reads everything and applies the
//! difference, so a missed or coalesced event costs nothing.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use inotify::{Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;

/// What a watch is for, which decides which of its events matter.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    /// A script directory: `*.rhai` entries and ConfigMap `..` entries.
    Scripts,
    /// The directory of the config file: entries with its name, and `..` entries.
    Config(std::ffi::OsString),
    /// An existing parent of a missing directory: anything.
    Parent,
}

pub struct Watcher {
    fd: AsyncFd<Inotify>,
    watches: HashMap<WatchDescriptor, (PathBuf, Role)>,
}

impl Watcher {
    pub fn new() -> std::io::Result<Watcher> {
        let inotify = Inotify::init()?;
        // SAFETY: the Inotify owns its descriptor and lives inside the AsyncFd.
        let fd = unsafe { AsyncFd::register(inotify) }.map_err(|e| e.into_parts().1)?;
        Ok(Watcher {
            fd,
            watches: HashMap::new(),
        })
    }

    /// Sets the watches for these script directories and config file, removing
    /// the ones no longer needed. Failures are logged; the daemon still runs
    /// (SIGHUP reloads by hand).
    pub fn set(&mut self, dirs: &[PathBuf], config: Option<&Path>) {
        let mut want: Vec<(PathBuf, Role)> = Vec::new();
        for d in dirs {
            if d.is_dir() {
                want.push((d.clone(), Role::Scripts));
            } else if let Some(parent) = d.ancestors().skip(1).find(|p| p.is_dir()) {
                tracing::info!(directory = %d.display(), watching = %parent.display(), "script directory does not exist; waiting for it");
                want.push((parent.to_path_buf(), Role::Parent));
            }
        }
        if let Some(cfg) = config {
            let dir = cfg
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Some(name) = cfg.file_name() {
                want.push((dir.to_path_buf(), Role::Config(name.to_os_string())));
            }
        }
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::ATTRIB
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        let old = std::mem::take(&mut self.watches);
        let mut watches = self.fd.get_mut().watches();
        for (path, role) in want {
            match watches.add(&path, mask) {
                Ok(wd) => {
                    // One directory can have two roles (scripts beside the config).
                    let entry = self
                        .watches
                        .entry(wd)
                        .or_insert((path.clone(), role.clone()));
                    if entry.1 != role {
                        entry.1 = Role::Parent;
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot watch; changes there need SIGHUP to be seen")
                }
            }
        }
        for (wd, (path, _)) in old {
            if !self.watches.contains_key(&wd) {
                if let Err(e) = watches.remove(wd) {
                    tracing::debug!(path = %path.display(), error = %e, "watch already gone");
                }
            }
        }
    }

    /// Waits until something relevant changed.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let mut relevant = false;
            loop {
                match guard.get_inner_mut().read_events(&mut buf) {
                    Ok(events) => {
                        let mut any = false;
                        for ev in events {
                            any = true;
                            if let Some((_, role)) = self.watches.get(&ev.wd) {
                                relevant |= matters(role, ev.name);
                            }
                        }
                        if !any {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if relevant {
                return Ok(());
            }
        }
    }
}

fn matters(role: &Role, name: Option<&OsStr>) -> bool {
    let Some(name) = name else {
        // The directory itself was deleted or moved.
        return true;
    };
    let name = name.to_string_lossy();
    match role {
        Role::Parent => true,
        Role::Scripts => name.ends_with(".rhai") || name.starts_with(".."),
        Role::Config(file) => name == file.to_string_lossy() || name.starts_with(".."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn changed(w: &mut Watcher) -> bool {
        tokio::time::timeout(Duration::from_millis(300), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn sees_script_edits_and_ignores_other_files() {
        let dir = std::env::temp_dir().join(format!("sonde-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let cfg = dir.join("etc/sonde.yaml");
        let mut w = Watcher::new().unwrap();
        w.set(&[dir.join("scripts")], Some(&cfg));
        // Another file beside the config: nothing.
        std::fs::write(dir.join("etc/other.txt"), "x").unwrap();
        assert!(!changed(&mut w).await);
        // The config file: a change.
        std::fs::write(&cfg, "x").unwrap();
        assert!(changed(&mut w).await);
        // The missing script directory appears: a change, seen through its parent.
        std::fs::create_dir(dir.join("scripts")).unwrap();
        assert!(changed(&mut w).await);
        w.set(&[dir.join("scripts")], Some(&cfg));
        std::fs::write(dir.join("scripts/a.rhai"), "x").unwrap();
        assert!(changed(&mut w).await);
        std::fs::write(dir.join("scripts/a.rhai.swp"), "x").unwrap();
        assert!(!changed(&mut w).await);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
