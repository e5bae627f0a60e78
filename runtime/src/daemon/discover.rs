//! Which scripts should run: the enabled built-ins plus every `*.rhai` file in the
//! script directories, read fresh on each reload.
//!
//! A file's name without `.rhai` is the script's name. Hidden entries are skipped,
//! which also skips the `..data` / `..2024_...` directories of a Kubernetes ConfigMap
//! mount; the visible `x.rhai -> ..data/x.rhai` symlinks are read through, so an
//! atomic swap of the whole mount is seen as one change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::builtin;
use super::config::Config;

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

/// A script file that could not be read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
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
            let read = crate::btf::input::read_capped(&path, MAX_SCRIPT).and_then(|b| {
                String::from_utf8(b).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error())
                })
            });
            match read {
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
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => unreadable.push(Unreadable {
                    path,
                    error: e.to_string(),
                }),
            }
        }
    }
    (out, unreadable)
}

/// The largest script file read (built-in scripts are a few KB): a bigger one, like
/// a FIFO or a device named `*.rhai`, is rejected as unreadable, never waited on.
pub const MAX_SCRIPT: u64 = 4 << 20;

/// `*.rhai` files of a directory, sorted; none when it does not exist.
fn script_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai") && p.is_file())
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
    fn a_script_past_the_cap_is_unreadable_not_read() {
        let dir = std::env::temp_dir().join(format!("sonde-discover-big-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let big = std::fs::File::create(dir.join("big.rhai")).unwrap();
        big.set_len(MAX_SCRIPT + 1).unwrap();
        let mut cfg = Config::default();
        cfg.scripts.builtin.clear();
        cfg.scripts.directories = vec![dir.clone()];
        let (w, bad) = wanted(&cfg);
        assert!(w.is_empty());
        assert_eq!(bad.len(), 1);
        assert_eq!(
            bad[0].error,
            "4194305 bytes, more than the 4 MiB sonde reads"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
