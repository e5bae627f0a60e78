//! Kernel BTF: the type information CO-RE relocation needs.
//!
//! Every kernel program is relocated against the running kernel's BTF before it
//! loads. [`KernelBtf::locate`] is the seam where the fallback chain plugs in; today
//! it tries, in order, an explicit file (`--btf`) and `/sys/kernel/btf/vmlinux`, and on
//! a miss lists every path it tried.
//!
//! The same BTF also names things for people: the running kernel's
//! `enum skb_drop_reason` gives drop reason names, which differ between kernels.
//!
//! ```no_run
//! let btf = sonde::btf::KernelBtf::locate(None).unwrap();
//! println!("BTF from {}", btf.source().display());
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod raw;

/// Where the chain looks when nothing is given.
pub const SYSFS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF found; tried: {}. Give a BTF file with --btf FILE \
         (raw BTF or an ELF with a .BTF section)",
        tried.iter().map(|(p, why)| format!("{} ({why})", p.display())).collect::<Vec<_>>().join(", ")
    )]
    NotFound { tried: Vec<(PathBuf, String)> },
    #[error("cannot parse BTF from {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// The running kernel's BTF, parsed for aya (relocation) and for name lookups.
pub struct KernelBtf {
    aya: aya::Btf,
    raw: Vec<u8>,
    source: PathBuf,
    took: Duration,
}

impl KernelBtf {
    /// Finds and parses the kernel's BTF: `explicit` first when given, then sysfs.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, BtfError> {
        let start = Instant::now();
        let mut tried = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = explicit {
            candidates.push(p.to_path_buf());
        }
        candidates.push(PathBuf::from(SYSFS_VMLINUX));
        for path in candidates {
            match std::fs::read(&path) {
                Ok(raw) => {
                    let raw = extract_btf_section(&raw).unwrap_or(raw);
                    let aya = aya::Btf::parse(&raw, aya::Endianness::default()).map_err(|e| {
                        BtfError::Parse {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    tracing::debug!(path = %path.display(), "kernel BTF found");
                    return Ok(KernelBtf {
                        aya,
                        raw,
                        source: path,
                        took: start.elapsed(),
                    });
                }
                Err(e) => tried.push((path, e.to_string())),
            }
        }
        Err(BtfError::NotFound { tried })
    }

    pub fn aya(&self) -> &aya::Btf {
        &self.aya
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn size(&self) -> usize {
        self.raw.len()
    }

    pub fn took(&self) -> Duration {
        self.took
    }

    /// Whether the kernel knows a struct (or union) of this name.
    pub fn has_struct(&self, name: &str) -> bool {
        self.aya
            .id_by_type_name_kind(name, aya_obj::btf::BtfKind::Struct)
            .is_ok()
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
