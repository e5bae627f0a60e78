//! Kernel BTF: the type information CO-RE relocation needs.
//!
//! Every kernel program is relocated against the running kernel's BTF before it
//! loads. [`BtfSearch::locate`] finds it through a fallback chain ([`chain`]): an
//! explicit `--btf` file, `/sys/kernel/btf/vmlinux`, an explicit directory, the
//! tailored BTFs embedded in the binary ([`archive`]), an archive directory on disk,
//! the kernel's images in `/boot` and `/usr/lib/debug` ([`image`], decompressing a
//! `vmlinuz` with [`decompress`]), and a placeholder for DWARF to BTF. What was
//! chosen, and every step, is kept in the [`KernelBtf`] (or the error on a miss)
//! for `sonde btf`, the daemon's `/status` and `sonde_btf_info`.
//!
//! The same BTF also names things for people: the running kernel's
//! `enum skb_drop_reason` gives drop reason names, which differ between kernels.
//!
//! ```no_run
//! let btf = sonde::btf::KernelBtf::locate(None).unwrap();
//! println!("BTF from {} for {}, {} bytes in {:?}", btf.source(), btf.release(), btf.size(), btf.took());
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod archive;
pub mod chain;
pub mod decompress;
pub mod dwarf;
pub mod image;
pub mod input;
pub mod raw;
#[cfg(test)]
pub(crate) mod tests;
pub mod validate;

pub use chain::{Attempt, BtfSearch, Outcome, Step};

/// The kernel's own BTF, the chain's first stop when `--btf` names no file.
pub const SYSFS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF for {release} ({machine}, {}); tried:\n{}\n\
         provide one: --btf FILE or the `btf:` config key (raw BTF, an ELF with .BTF, or a vmlinuz), \
         an archive directory (--btf-archive DIR or `btf_archive:`, laid out \
         <ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]), or install the kernel's debug image \
         (Debian's linux-image-{release}-dbg, Ubuntu's linux-image-unsigned-{release}-dbgsym)",
        os.as_deref().unwrap_or("no os-release"),
        attempts.iter().map(|a| format!("  {a}")).collect::<Vec<_>>().join("\n")
    )]
    NotFound {
        release: String,
        machine: String,
        os: Option<String>,
        attempts: Vec<Attempt>,
    },
    #[error(
        "--btf / btf: {}: {reason}; give raw BTF, an ELF with a .BTF section or a kernel \
         image, or leave it out to search automatically (`sonde btf` shows where)",
        path.display()
    )]
    Explicit { path: PathBuf, reason: String },
}

impl BtfError {
    /// The steps tried before giving up (empty for a bad explicit file).
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            BtfError::NotFound { attempts, .. } => attempts,
            BtfError::Explicit { .. } => &[],
        }
    }

    /// The error as `/status` and `sonde btf --json` show it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.to_string(),
            "chain": self.attempts(),
        })
    }
}

/// Which step of the chain the BTF came from, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfSource {
    Sysfs(PathBuf),
    /// `--btf` / `btf:`: the file, or the file found in the directory it names.
    Explicit(PathBuf),
    /// A key of the embedded archive, `debian/12/x86_64/<release>.btf.xz`.
    Embedded(String),
    /// A file of an archive directory.
    Archive(PathBuf),
    /// A kernel image (`vmlinux`, `vmlinuz`).
    Image(PathBuf),
}

impl BtfSource {
    /// The `source` label of `sonde_btf_info`.
    pub fn kind(&self) -> &'static str {
        match self {
            BtfSource::Sysfs(_) => "sysfs",
            BtfSource::Explicit(_) => "explicit",
            BtfSource::Embedded(_) => "embedded",
            BtfSource::Archive(_) => "archive",
            BtfSource::Image(_) => "image",
        }
    }

    /// The file read, `None` for the embedded archive.
    pub fn path(&self) -> Option<&Path> {
        match self {
            BtfSource::Sysfs(p)
            | BtfSource::Explicit(p)
            | BtfSource::Archive(p)
            | BtfSource::Image(p) => Some(p),
            BtfSource::Embedded(_) => None,
        }
    }

    /// The path, or `embedded:<key>`.
    pub fn location(&self) -> String {
        match self {
            BtfSource::Embedded(key) => format!("embedded:{key}"),
            other => other
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for BtfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.location())
    }
}

/// The running kernel's BTF, parsed for aya (relocation) and for name lookups.
pub struct KernelBtf {
    aya: aya::Btf,
    raw: Vec<u8>,
    /// Types, as counted by [`validate::check`] (every BTF used passed it).
    types: u32,
    source: BtfSource,
    release: String,
    machine: String,
    os: Option<String>,
    took: Duration,
    chain: Vec<Attempt>,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf")
            .field("source", &self.source)
            .field("release", &self.release)
            .field("bytes", &self.raw.len())
            .field("took", &self.took)
            .finish_non_exhaustive()
    }
}

impl KernelBtf {
    /// Runs the chain on this machine with `explicit` (`--btf`) and the default
    /// archive directory. [`BtfSearch`] sets the rest.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, BtfError> {
        BtfSearch::system().explicit(explicit).locate()
    }

    pub fn aya(&self) -> &aya::Btf {
        &self.aya
    }

    /// Where the BTF came from.
    pub fn source(&self) -> &BtfSource {
        &self.source
    }

    /// The kernel release it is for: the image's banner when it has one, else
    /// `uname -r` (the chain only takes files named for the running release).
    pub fn release(&self) -> &str {
        &self.release
    }

    /// `uname -m`.
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// `ID VERSION_ID` of os-release, when a step read it.
    pub fn os(&self) -> Option<&str> {
        self.os.as_deref()
    }

    /// Every step of the chain, the one used included.
    pub fn chain(&self) -> &[Attempt] {
        &self.chain
    }

    /// What `/status` (`last_reload.btf`) and `sonde btf --json` show.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": self.source.kind(),
            "location": self.source.location(),
            "release": self.release,
            "machine": self.machine,
            "os": self.os,
            "bytes": self.raw.len(),
            "types": self.types,
            "read_seconds": self.took.as_secs_f64(),
            "chain": self.chain,
        })
    }

    /// Bytes of raw BTF.
    pub fn size(&self) -> usize {
        self.raw.len()
    }

    /// Types in the BTF (void not counted); their structure was checked before use.
    pub fn types(&self) -> u32 {
        self.types
    }

    /// How long the whole chain took, parsing included.
    pub fn took(&self) -> Duration {
        self.took
    }

    /// A BTF taken as it is, without the chain or its structural check: for tests
    /// of what happens when a damaged BTF gets through.
    #[cfg(test)]
    pub(crate) fn unchecked(raw: Vec<u8>, path: &str) -> KernelBtf {
        KernelBtf {
            aya: aya::Btf::parse(&raw, aya::Endianness::default()).unwrap(),
            types: 0,
            raw,
            source: BtfSource::Explicit(path.into()),
            release: String::new(),
            machine: String::new(),
            os: None,
            took: Duration::ZERO,
            chain: Vec::new(),
        }
    }

    /// Whether the kernel knows a struct (or union) of this name.
    pub fn has_struct(&self, name: &str) -> bool {
        self.aya
            .id_by_type_name_kind(name, aya_obj::btf::BtfKind::Struct)
            .is_ok()
    }

    /// True when `struct name` exists and has a member called `field`.
    pub fn has_member(&self, name: &str, field: &str) -> bool {
        raw::struct_members(&self.raw, name).is_some_and(|m| m.iter().any(|m| m == field))
    }

    /// Enumerator values of `enum name` in the running kernel, as `value -> name`
    /// with `strip_prefix` removed (`SKB_DROP_REASON_NO_SOCKET` -> `NO_SOCKET`).
    /// Read from the raw bytes ([`raw::enum_members`]): no second parse of the types.
    pub fn enum_names(&self, name: &str, strip_prefix: &str) -> HashMap<u64, String> {
        raw::enum_members(&self.raw, name)
            .unwrap_or_default()
            .into_iter()
            .map(|(v, n)| {
                let n = n
                    .strip_prefix(strip_prefix)
                    .map(str::to_string)
                    .unwrap_or(n);
                (v, n)
            })
            .collect()
    }
}

/// Returns the `.BTF` section when `data` is an ELF file, `None` for raw BTF.
pub fn extract_btf_section(data: &[u8]) -> Option<Vec<u8>> {
    use object::{Object, ObjectSection};
    if !data.starts_with(b"\x7fELF") {
        return None;
    }
    let file = object::File::parse(data).ok()?;
    let section = file.section_by_name(".BTF")?;
    section.data().ok().map(|d| d.to_vec())
}
