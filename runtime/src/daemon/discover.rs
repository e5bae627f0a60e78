//! Which scripts should run: the enabled built-ins plus every `*.rhai` file in the
//! script directories, read fresh on each reload.
//!
//! A file's name without `.rhai` is the script's name. Hidden entries are skipped,
//! which also skips the `..data` / `..2024_...` directories of a Kubernetes ConfigMap
//! mount; the visible `x.rhai -> ..data/x.rhai` symlinks are read through, so an
//! atomic swap of the whole mount is seen as one change.
//!
//! Only regular files (and symlinks to them) of at most `limits.max_script_bytes`
//! are read ([`read_script_file`]): a FIFO, a device or a file over the cap is
//! [`Unreadable`], without blocking and without being read whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::builtin;
use super::config::Config;
use crate::script::read_script_file;

/// Where a script comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

impl Origin {
    /// How errors and `/status` name the script's file.
    pub fn label(&self, name: &str) -> String {
        match self {
            Origin::Builtin => format!("builtin:{name}.rhai"),
            Origin::File(p) => p.display().to_string(),
        }
    }
}

/// A script as found on disk or built in.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    pub origin: Origin,
    pub source: Arc<str>,
}

/// A script file that could not be read, or was refused.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The script name (the file stem).
    pub name: String,
    pub path: PathBuf,
    /// The whole message, path included.
    pub error: String,
    /// Why, for metric labels: `too_large`, `not_regular_file`, `not_utf8`,
    /// `unreadable`.
    pub reason: &'static str,
}

/// The scripts the config asks for, by name.
pub fn wanted(cfg: &Config) -> (BTreeMap<String, Wanted>, Vec<Unreadable>) {
    let mut out = BTreeMap::new();
    let mut unreadable = Vec::new();
    for name in &cfg.scripts.builtin {
        if let Some(source) = builtin::find(name) {
            out.insert(
                name.clone(),
                Wanted {
                    name: name.clone(),
                    origin: Origin::Builtin,
                    source: source.into(),
                },
            );
        }
    }
    for dir in &cfg.scripts.directories {
        for path in script_files(dir) {
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            if let Some(Wanted {
                origin: Origin::File(first),
                ..
            }) = out.get(&name)
            {
                tracing::warn!(script = %name, used = %first.display(), ignored = %path.display(), "two scripts with the same name; the first directory wins");
                continue;
            }
            match read_script_file(&path, cfg.limits.max_script_bytes) {
                Ok(text) => {
                    out.insert(
                        name.clone(),
                        Wanted {
                            name,
                            origin: Origin::File(path),
                            source: text.into(),
                        },
                    );
                }
                // Removed between listing and reading: the next event reloads again.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    // The file is meant to replace the built-in of its name.
                    if out.get(&name).is_some_and(|w| w.origin == Origin::Builtin) {
                        out.remove(&name);
                    }
                    unreadable.push(Unreadable {
                        name,
                        path,
                        error: e.to_string(),
                        reason: e.reason(),
                    })
                }
            }
        }
    }
    (out, unreadable)
}

/// `*.rhai` entries of a directory but directories (FIFOs and devices included,
/// to be refused by name), sorted; none when it does not exist.
fn script_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai") && !p.is_dir())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_add_and_replace_builtins() {
        let dir = std::env::temp_dir().join(format!("sonde-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::write(dir.join("..data/mine.rhai"), "fn on_tick() {}").unwrap();
        std::os::unix::fs::symlink("..data/mine.rhai", dir.join("mine.rhai")).unwrap();
        std::fs::write(dir.join("tcp_reset.rhai"), "// replaced").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a script").unwrap();
        std::fs::write(dir.join(".hidden.rhai"), "").unwrap();
        let mut cfg = Config::default();
        cfg.scripts.directories = vec![dir.clone(), dir.join("missing")];
        let (w, bad) = wanted(&cfg);
        assert!(bad.is_empty());
        let names: Vec<&str> = w.keys().map(String::as_str).collect();
        let mut expected = super::super::builtin::names();
        expected.push("mine");
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(&*w["mine"].source, "fn on_tick() {}");
        assert_eq!(
            w["tcp_reset"].origin,
            Origin::File(dir.join("tcp_reset.rhai"))
        );
        assert_eq!(w["packet_loss"].origin, Origin::Builtin);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_file_and_a_fifo_are_refused_and_the_rest_is_read() {
        let dir =
            std::env::temp_dir().join(format!("sonde-discover-refuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ok.rhai"), "fn on_tick() {}").unwrap();
        std::fs::File::create(dir.join("big.rhai"))
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        // Replaces a built-in: refused, the built-in does not take its place.
        std::fs::File::create(dir.join("tcp_reset.rhai"))
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("fifo.rhai").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::create_dir(dir.join("sub.rhai")).unwrap();
        let mut cfg = Config::default();
        cfg.scripts.directories = vec![dir.clone()];
        cfg.scripts.builtin = vec!["tcp_reset".into(), "packet_loss".into()];
        let (w, bad) = wanted(&cfg);
        let names: Vec<&str> = w.keys().map(String::as_str).collect();
        assert_eq!(names, ["ok", "packet_loss"]);
        let bad: Vec<(&str, &str)> = bad.iter().map(|u| (u.name.as_str(), u.reason)).collect();
        assert_eq!(
            bad,
            [
                ("big", "too_large"),
                ("fifo", "not_regular_file"),
                ("tcp_reset", "too_large")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
