//! BTF archives: tailored BTFs laid out like btfhub-archive,
//! `<ID>/<VERSION_ID>/<arch>/<release>.btf.xz`, with `ID` and `VERSION_ID` from
//! `/etc/os-release`, `arch` from `uname -m` (btfhub's `arm64` for `aarch64`) and
//! `release` from `uname -r`.
//!
//! Two archives use the layout: the one embedded in the binary at build time
//! (`btfhub/archive/` in the repository, see `runtime/build.rs`) and a directory on
//! disk for kernels the binary does not know. A lookup tries the exact
//! distribution path first, then any entry for the same release and arch: inside a
//! container `/etc/os-release` describes the image, not the node, while `uname -r`
//! is the node's kernel.
//!
//! ```
//! use sonde::btf::archive::{candidates, OsRelease};
//!
//! let os = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\n");
//! let keys = candidates(Some(&os), &["x86_64"], "6.1.0-56-cloud-amd64");
//! assert_eq!(keys[0], "debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz");
//! ```

use std::path::{Path, PathBuf};

/// `(key, bytes)` of each BTF embedded at build time, key relative to the archive
/// root (`debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz`).
pub type Embedded = &'static [(&'static str, &'static [u8])];

mod generated {
    include!(concat!(env!("OUT_DIR"), "/btf_archive.rs"));
}

/// The BTFs this binary embeds (empty when it was built without `btfhub/archive`).
pub fn embedded() -> Embedded {
    generated::EMBEDDED
}

/// File names an archive entry may have, preferred first.
const EXTENSIONS: [&str; 2] = [".btf.xz", ".btf"];

/// What `/etc/os-release` says about the distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, `linux` when absent (os-release(5)).
    pub id: String,
    /// `VERSION_ID`; rolling distributions have none.
    pub version_id: Option<String>,
}

impl OsRelease {
    /// Parses os-release(5): `KEY=value` lines, values optionally quoted with `"`
    /// or `'`, backslash escapes inside double quotes, `#` comments.
    pub fn parse(text: &str) -> OsRelease {
        let mut id = None;
        let mut version_id = None;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = unquote(value.trim());
            match key.trim() {
                "ID" if !value.is_empty() => id = Some(value),
                "VERSION_ID" if !value.is_empty() => version_id = Some(value),
                _ => {}
            }
        }
        OsRelease {
            id: id.unwrap_or_else(|| "linux".into()),
            version_id,
        }
    }

    /// Reads `<root>/etc/os-release`, else `<root>/usr/lib/os-release`.
    pub fn read(root: &Path) -> Result<(OsRelease, PathBuf), NoOsRelease> {
        let mut tried = Vec::new();
        for rel in ["etc/os-release", "usr/lib/os-release"] {
            let path = root.join(rel);
            match super::input::read_small_text(&path) {
                Ok(text) => return Ok((OsRelease::parse(&text), path)),
                Err(e) => tried.push((path, e)),
            }
        }
        Err(NoOsRelease { tried })
    }
}

/// Neither os-release file could be read: each path and why.
#[derive(Debug, thiserror::Error)]
#[error("{}", tried.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect::<Vec<_>>().join("; "))]
pub struct NoOsRelease {
    pub tried: Vec<(PathBuf, std::io::Error)>,
}

impl std::fmt::Display for OsRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version_id {
            Some(v) => write!(f, "{} {v}", self.id),
            None => write!(f, "{} (no VERSION_ID)", self.id),
        }
    }
}

fn unquote(v: &str) -> String {
    if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
        return v[1..v.len() - 1].to_string();
    }
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        return out;
    }
    v.to_string()
}

/// The arch directory names for `uname -m`: btfhub uses `x86_64` and `arm64`.
pub fn arch_names(machine: &str) -> Vec<String> {
    let alias = match machine {
        "aarch64" => Some("arm64"),
        "arm64" => Some("aarch64"),
        "x86_64" => Some("amd64"),
        _ => None,
    };
    std::iter::once(machine)
        .chain(alias)
        .map(str::to_string)
        .collect()
}

/// The exact archive keys for this machine, preferred first (empty without an
/// os-release `VERSION_ID`).
pub fn candidates<S: AsRef<str>>(
    os: Option<&OsRelease>,
    arches: &[S],
    release: &str,
) -> Vec<String> {
    let Some((id, version)) = os.and_then(|o| Some((&o.id, o.version_id.as_ref()?))) else {
        return Vec::new();
    };
    arches
        .iter()
        .flat_map(|arch| {
            EXTENSIONS
                .iter()
                .map(move |ext| format!("{id}/{version}/{}/{release}{ext}", arch.as_ref()))
        })
        .collect()
}

/// How an entry was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// `<ID>/<VERSION_ID>/<arch>/<release>`.
    Exact,
    /// Same arch and release, another distribution directory.
    Release,
    /// `<dir>/<release>.btf[.xz]` directly in the directory.
    Flat,
}

impl Match {
    pub fn describe(self) -> &'static str {
        match self {
            Match::Exact => "matched by os-release, arch and release",
            Match::Release => {
                "matched by arch and release only (os-release names another distribution)"
            }
            Match::Flat => "matched by release",
        }
    }
}

/// The embedded entry for this machine.
pub fn find_embedded<S: AsRef<str>>(
    table: Embedded,
    os: Option<&OsRelease>,
    arches: &[S],
    release: &str,
) -> Option<(&'static str, &'static [u8], Match)> {
    for key in candidates(os, arches, release) {
        if let Some((k, bytes)) = table.iter().find(|(k, _)| *k == key) {
            return Some((k, bytes, Match::Exact));
        }
    }
    table.iter().find_map(|(key, bytes)| {
        let parts: Vec<&str> = key.split('/').collect();
        let [_, _, arch, file] = parts[..] else {
            return None;
        };
        let same = arches.iter().any(|a| a.as_ref() == arch)
            && EXTENSIONS
                .iter()
                .any(|ext| file.strip_suffix(ext) == Some(release));
        same.then_some((*key, *bytes, Match::Release))
    })
}

/// The file for this machine in an archive directory, with every path looked at.
pub fn find_in_dir<S: AsRef<str>>(
    dir: &Path,
    os: Option<&OsRelease>,
    arches: &[S],
    release: &str,
) -> (Option<(PathBuf, Match)>, Vec<PathBuf>) {
    let mut looked = Vec::new();
    for key in candidates(os, arches, release) {
        let path = dir.join(&key);
        if path.is_file() {
            return (Some((path, Match::Exact)), looked);
        }
        looked.push(path);
    }
    for ext in EXTENSIONS {
        let path = dir.join(format!("{release}{ext}"));
        if path.is_file() {
            return (Some((path, Match::Flat)), looked);
        }
        looked.push(path);
    }
    // <dir>/*/*/<arch>/<release>.btf[.xz], in a stable order.
    for arch in arches {
        for ext in EXTENSIONS {
            for distro in sorted_dirs(dir) {
                for version in sorted_dirs(&distro) {
                    let path = version.join(arch.as_ref()).join(format!("{release}{ext}"));
                    if path.is_file() {
                        return (Some((path, Match::Release)), looked);
                    }
                }
            }
        }
    }
    let arches: Vec<&str> = arches.iter().map(AsRef::as_ref).collect();
    looked.push(dir.join(format!("*/*/{{{}}}/{release}.btf[.xz]", arches.join(","))));
    (None, looked)
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::tests::TempDir;

    #[test]
    fn os_release_parsing() {
        let os = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
        );
        assert_eq!(
            os,
            OsRelease {
                id: "debian".into(),
                version_id: Some("12".into())
            }
        );
        let os = OsRelease::parse("# comment\nID='ubuntu'\nVERSION_ID=\"22.\\\"04\"\n");
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.version_id.as_deref(), Some("22.\"04"));
        // Rolling release: no VERSION_ID; no ID at all means `linux`.
        let os = OsRelease::parse("ID=arch\nBUILD_ID=rolling\n");
        assert_eq!((os.id.as_str(), os.version_id), ("arch", None));
        assert_eq!(OsRelease::parse("").id, "linux");
    }

    #[test]
    fn os_release_falls_back_to_usr_lib() {
        let root = TempDir::new("osrel");
        assert!(OsRelease::read(root.path())
            .unwrap_err()
            .to_string()
            .contains("etc/os-release"));
        root.write("usr/lib/os-release", b"ID=fedora\nVERSION_ID=40\n");
        let (os, path) = OsRelease::read(root.path()).unwrap();
        assert_eq!(os.to_string(), "fedora 40");
        assert!(path.ends_with("usr/lib/os-release"));
    }

    #[test]
    fn arch_aliases() {
        assert_eq!(arch_names("aarch64"), ["aarch64", "arm64"]);
        assert_eq!(arch_names("x86_64"), ["x86_64", "amd64"]);
        assert_eq!(arch_names("riscv64"), ["riscv64"]);
    }

    #[test]
    fn embedded_lookup_exact_then_by_release() {
        let table: Embedded = &[
            ("debian/11/x86_64/5.10.0-46-cloud-amd64.btf.xz", b"d11"),
            ("debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz", b"d12"),
            ("debian/12/arm64/6.1.0-56-cloud-arm64.btf.xz", b"arm"),
        ];
        let d12 = OsRelease::parse("ID=debian\nVERSION_ID=12\n");
        let (key, bytes, how) =
            find_embedded(table, Some(&d12), &["x86_64"], "6.1.0-56-cloud-amd64").unwrap();
        assert_eq!((key, bytes, how), (table[1].0, &b"d12"[..], Match::Exact));
        // A container image's os-release (alpine) on a Debian 11 node.
        let alpine = OsRelease::parse("ID=alpine\nVERSION_ID=3.20.0\n");
        let (key, _, how) =
            find_embedded(table, Some(&alpine), &["x86_64"], "5.10.0-46-cloud-amd64").unwrap();
        assert_eq!((key, how), (table[0].0, Match::Release));
        assert!(
            find_embedded(table, None, &["aarch64", "arm64"], "6.1.0-56-cloud-arm64").is_some()
        );
        assert!(find_embedded(table, Some(&d12), &["arm64"], "6.1.0-56-cloud-amd64").is_none());
        assert!(find_embedded(table, Some(&d12), &["x86_64"], "6.1.0-99-cloud-amd64").is_none());
    }

    #[test]
    fn directory_lookup() {
        let dir = TempDir::new("archive");
        let d12 = OsRelease::parse("ID=debian\nVERSION_ID=12\n");
        let (found, looked) =
            find_in_dir(dir.path(), Some(&d12), &["x86_64"], "6.1.0-56-cloud-amd64");
        assert!(found.is_none());
        assert!(
            looked[0].ends_with("debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz"),
            "{looked:?}"
        );
        assert!(looked
            .iter()
            .any(|p| p.ends_with("6.1.0-56-cloud-amd64.btf")));

        dir.write("ubuntu/22.04/x86_64/6.1.0-56-cloud-amd64.btf", b"u");
        let (found, _) = find_in_dir(dir.path(), Some(&d12), &["x86_64"], "6.1.0-56-cloud-amd64");
        let (path, how) = found.unwrap();
        assert!(path.ends_with("ubuntu/22.04/x86_64/6.1.0-56-cloud-amd64.btf"));
        assert_eq!(how, Match::Release);

        dir.write("6.1.0-56-cloud-amd64.btf.xz", b"flat");
        let (found, _) = find_in_dir(dir.path(), Some(&d12), &["x86_64"], "6.1.0-56-cloud-amd64");
        assert_eq!(found.unwrap().1, Match::Flat);

        dir.write("debian/12/x86_64/6.1.0-56-cloud-amd64.btf", b"exact");
        let (found, _) = find_in_dir(dir.path(), Some(&d12), &["x86_64"], "6.1.0-56-cloud-amd64");
        let (path, how) = found.unwrap();
        assert!(path.ends_with("debian/12/x86_64/6.1.0-56-cloud-amd64.btf"));
        assert_eq!(how, Match::Exact);
    }
}
