//! Whether a file may be trusted as code: sshd's `StrictModes` for scripts and config.
//!
//! The daemon runs scripts with its own privileges, so a script must be as hard to
//! change as the daemon's binary. [`check_trusted`] walks the path the way the
//! kernel does, component by component from `/`, following every symlink (the link's
//! target is walked the same way, to its own directories), and requires that the file
//! and every directory it passes through are
//!
//! - owned by root or by the daemon's own user, and
//! - not writable by group or others.
//!
//! The sticky bit does not make a directory trusted: in `/tmp` (mode 1777) anyone may
//! create the file or the symlink sonde would read next.
//!
//! One layout is accepted although its top directory is writable by all: a
//! Kubernetes ConfigMap or Secret volume. kubelet makes the volume's root 0777 (or
//! 1777 on tmpfs) and puts the files in a root-owned 0755 `..<timestamp>` directory
//! reached through the `..data` symlink; the visible names are symlinks into it. The
//! exception holds only for a root-owned *mount point* (made by a privileged
//! process, not by a user) holding a `..data` symlink to a `..`-prefixed directory;
//! everything inside it is still checked as usual.
//!
//! ```
//! use sonde::script::trust::{check_trusted, TrustPolicy};
//!
//! // /etc/passwd: root-owned, 0644, in root-owned 0755 directories.
//! let policy = TrustPolicy::for_this_process();
//! assert!(check_trusted(std::path::Path::new("/etc/passwd"), &policy).is_ok());
//! // /tmp is writable by everyone: a file there is refused, and the error says why.
//! let err = check_trusted(&std::env::temp_dir().join("x.rhai"), &policy).unwrap_err();
//! assert_eq!(err.reason(), "untrusted");
//! assert!(err.to_string().contains("is writable by group and others (mode 1777)"), "{err}");
//! ```

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed on one path before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Who may own trusted files.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// Owners besides root (uid 0): the daemon's effective uid when it is not root.
    pub owner: u32,
}

impl TrustPolicy {
    /// Root and this process's effective user.
    pub fn for_this_process() -> Self {
        // SAFETY: geteuid has no preconditions.
        TrustPolicy {
            owner: unsafe { libc::geteuid() },
        }
    }

    fn owner_ok(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner
    }
}

/// Why a path is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file or directory on the path is owned by someone else.
    #[error(
        "{}: refused: {role} {} is owned by uid {uid}, not by root{}; {}: `chown root {}` or move the script{}",
        path.display(), at.display(), owner_hint(*daemon), RULE, at.display(), MORE
    )]
    Owner {
        path: PathBuf,
        at: PathBuf,
        role: &'static str,
        uid: u32,
        daemon: u32,
    },
    /// A file or directory on the path is writable by group or others.
    #[error(
        "{}: refused: {role} {} is writable by {who} (mode {mode:04o}); {}: `chmod go-w {}` or move the script{}",
        path.display(), at.display(), RULE, at.display(), MORE
    )]
    Writable {
        path: PathBuf,
        at: PathBuf,
        role: &'static str,
        who: &'static str,
        mode: u32,
    },
    /// More than [`MAX_SYMLINKS`] symlinks, or a loop.
    #[error("{}: refused: more than {MAX_SYMLINKS} symlinks to follow", path.display())]
    Loop { path: PathBuf },
    /// Something on the path could not be looked at.
    #[error("{}: cannot check {}: {error}", path.display(), at.display())]
    Io {
        path: PathBuf,
        at: PathBuf,
        error: std::io::Error,
    },
}

/// The rule, in every refusal.
const RULE: &str = "scripts, every directory above them and the config must be changeable \
by root (or the daemon's user) only";
/// The end of every refusal: how to lower it.
const MORE: &str = "; scripts.strict_modes: false only warns (for development)";

fn owner_hint(daemon: u32) -> String {
    if daemon == 0 {
        String::new()
    } else {
        format!(" or the daemon's uid {daemon}")
    }
}

impl TrustError {
    /// The `reason` label of `sonde_script_files_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TrustError::Io { .. } => "unreadable",
            _ => "untrusted",
        }
    }

    /// The file does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, TrustError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Checks `path` and everything it goes through; returns the resolved path (no
/// symlinks left) when all of it is trusted. See the [module docs](self).
pub fn check_trusted(path: &Path, policy: &TrustPolicy) -> Result<PathBuf, TrustError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|error| TrustError::Io {
                path: path.to_path_buf(),
                at: PathBuf::from("."),
                error,
            })?
            .join(path)
    };
    let io = |at: &Path, error| TrustError::Io {
        path: path.to_path_buf(),
        at: at.to_path_buf(),
        error,
    };
    // Components still to walk, last first (so a symlink's target is pushed on top).
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, &absolute);
    let mut current = PathBuf::from("/");
    let root = std::fs::symlink_metadata(&current).map_err(|e| io(&current, e))?;
    check_one(path, &current, &root, "directory", policy, false)?;
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = std::fs::symlink_metadata(&next).map_err(|e| io(&next, e))?;
        if meta.file_type().is_symlink() {
            // The link itself can only be replaced by who can write `current`, which
            // was checked; its target is walked like any path.
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(TrustError::Loop {
                    path: path.to_path_buf(),
                });
            }
            let target = std::fs::read_link(&next).map_err(|e| io(&next, e))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            push_components(&mut todo, &target);
            continue;
        }
        let last = todo.is_empty();
        let role = if last && !meta.is_dir() {
            "file"
        } else {
            "directory"
        };
        check_one(path, &next, &meta, role, policy, meta.is_dir())?;
        current = next;
    }
    Ok(current)
}

/// Pushes the normal components of `p` in reverse, so the first is popped first.
fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    let parts: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

fn check_one(
    path: &Path,
    at: &Path,
    meta: &std::fs::Metadata,
    role: &'static str,
    policy: &TrustPolicy,
    is_dir: bool,
) -> Result<(), TrustError> {
    if !policy.owner_ok(meta.uid()) {
        return Err(TrustError::Owner {
            path: path.to_path_buf(),
            at: at.to_path_buf(),
            role,
            uid: meta.uid(),
            daemon: policy.owner,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        if is_dir && meta.uid() == 0 && is_kubelet_volume(at) {
            return Ok(());
        }
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "group",
            _ => "others",
        };
        return Err(TrustError::Writable {
            path: path.to_path_buf(),
            at: at.to_path_buf(),
            role,
            who,
            mode,
        });
    }
    Ok(())
}

/// A kubelet ConfigMap/Secret volume: a mount point holding `..data`, a symlink to a
/// `..`-prefixed directory (kubelet's atomic writer).
fn is_kubelet_volume(dir: &Path) -> bool {
    let data = dir.join("..data");
    let Ok(target) = std::fs::read_link(&data) else {
        return false;
    };
    let plain = target.components().count() == 1
        && target.as_os_str().as_bytes().starts_with(b"..")
        && target != Path::new("..");
    plain && is_mount_point(dir)
}

/// Whether `dir` is listed as a mount point in `/proc/self/mountinfo`.
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.as_os_str().as_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A root-owned 0755 directory outside /tmp, for the layouts under test.
    fn trusted_dir(test: &str) -> Option<PathBuf> {
        if !root() {
            crate::testkit::skip(test, "needs root (files owned by root, outside /tmp)");
            return None;
        }
        let base = PathBuf::from("/run/sonde-trust-tests");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = base.join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(d)
    }

    fn write(p: &Path, mode: u32) {
        std::fs::write(p, "fn on_tick() {}").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(p: &Path, uid: u32) {
        std::os::unix::fs::lchown(p, Some(uid), None).unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(r"/x\134"), b"/x\\");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
    }

    #[test]
    fn world_writable_sticky_tmp_is_refused() {
        let p = TrustPolicy { owner: 12345 };
        let e = check_trusted(Path::new("/tmp/nothing-here.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "/tmp/nothing-here.rhai: refused: directory /tmp is writable by group and others (mode 1777); scripts, every directory above them"
            ),
            "{e}"
        );
        assert_eq!(e.reason(), "untrusted");
    }

    #[test]
    fn file_and_directories_are_checked_through_symlinks() {
        let Some(d) = trusted_dir("walk") else { return };
        let p = TrustPolicy { owner: 4242 };
        write(&d.join("ok.rhai"), 0o644);
        assert_eq!(
            check_trusted(&d.join("ok.rhai"), &p).unwrap(),
            d.join("ok.rhai")
        );
        // The daemon's own user may own it.
        chown(&d.join("ok.rhai"), 4242);
        assert!(check_trusted(&d.join("ok.rhai"), &p).is_ok());
        // Anyone else may not.
        chown(&d.join("ok.rhai"), 65534);
        let e = check_trusted(&d.join("ok.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "refused: file {} is owned by uid 65534, not by root or the daemon's uid 4242",
                d.join("ok.rhai").display()
            )),
            "{e}"
        );
        chown(&d.join("ok.rhai"), 0);
        // Group-writable file.
        write(&d.join("gw.rhai"), 0o664);
        let e = check_trusted(&d.join("gw.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().contains("is writable by group (mode 0664)"),
            "{e}"
        );
        // A directory writable by others above a good file.
        std::fs::create_dir(d.join("open")).unwrap();
        std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
        write(&d.join("open/x.rhai"), 0o644);
        let e = check_trusted(&d.join("open/x.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "directory {} is writable by group and others (mode 0777)",
                d.join("open").display()
            )),
            "{e}"
        );
        // A symlink in a good directory to a file in the open one: the target's
        // directory is checked too.
        symlink(d.join("open/x.rhai"), d.join("via.rhai")).unwrap();
        let e = check_trusted(&d.join("via.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().contains("writable by group and others"),
            "{e}"
        );
        // A symlink to a good file resolves to it; relative links and `..` too.
        std::fs::create_dir(d.join("sub")).unwrap();
        symlink("../ok.rhai", d.join("sub/rel.rhai")).unwrap();
        assert_eq!(
            check_trusted(&d.join("sub/rel.rhai"), &p).unwrap(),
            d.join("ok.rhai")
        );
        // A symlink to a file of another user is refused (one to a root-owned file
        // such as /etc/shadow passes only from a directory only root can write).
        chown(&d.join("gw.rhai"), 65534);
        std::fs::set_permissions(d.join("gw.rhai"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        symlink(d.join("gw.rhai"), d.join("other.rhai")).unwrap();
        let e = check_trusted(&d.join("other.rhai"), &p).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        // A loop.
        symlink("loop2.rhai", d.join("loop1.rhai")).unwrap();
        symlink("loop1.rhai", d.join("loop2.rhai")).unwrap();
        assert!(matches!(
            check_trusted(&d.join("loop1.rhai"), &p),
            Err(TrustError::Loop { .. })
        ));
        // Missing: not found.
        assert!(check_trusted(&d.join("none.rhai"), &p)
            .unwrap_err()
            .is_not_found());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_kubelet_configmap_volume_passes_and_a_lookalike_does_not() {
        let Some(d) = trusted_dir("configmap") else {
            return;
        };
        let p = TrustPolicy { owner: 0 };
        // What kubelet makes: the volume root 0777 (a mount point), a 0755
        // timestamped directory with the files (defaultMode 0644), `..data` pointing
        // at it and one symlink per key.
        let layout = |vol: &Path| {
            std::fs::set_permissions(vol, std::fs::Permissions::from_mode(0o777)).unwrap();
            let ts = vol.join("..2026_01_01_00_00_00.123456789");
            std::fs::create_dir(&ts).unwrap();
            std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755)).unwrap();
            write(&ts.join("mine.rhai"), 0o644);
            symlink("..2026_01_01_00_00_00.123456789", vol.join("..data")).unwrap();
            symlink("..data/mine.rhai", vol.join("mine.rhai")).unwrap();
        };
        // Not a mount point: refused although it looks the part.
        let fake = d.join("fake");
        std::fs::create_dir(&fake).unwrap();
        layout(&fake);
        let e = check_trusted(&fake.join("mine.rhai"), &p).unwrap_err();
        assert!(
            e.to_string().contains("writable by group and others"),
            "{e}"
        );
        // A tmpfs mounted there, as kubelet's volumes are.
        let vol = d.join("vol");
        std::fs::create_dir(&vol).unwrap();
        let target = std::ffi::CString::new(vol.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings; data is null.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        layout(&vol);
        let r = check_trusted(&vol.join("mine.rhai"), &p);
        // A file inside the volume that others can write is still refused.
        write(&vol.join("..data/bad.rhai"), 0o666);
        symlink("..data/bad.rhai", vol.join("bad.rhai")).unwrap();
        let bad = check_trusted(&vol.join("bad.rhai"), &p);
        // SAFETY: unmounting what this test mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        assert_eq!(
            r.unwrap(),
            vol.join("..2026_01_01_00_00_00.123456789/mine.rhai")
        );
        assert!(bad.unwrap_err().to_string().contains("mode 0666"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
