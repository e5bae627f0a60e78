//! DWARF to BTF: the types of a debug ELF (a `vmlinux` from a `-dbg` package, or any
//! object built with `-g`) turned into raw BTF, like `pahole -J` but only as far as
//! CO-RE relocation needs.
//!
//! Every compilation unit redefines the structs of the headers it includes; named
//! structs, unions and enums are kept once per (kind, name, size), typedefs and
//! functions once per name (the first one wins), and every other type (pointers,
//! arrays, qualifiers, prototypes, anonymous structs) once per exact shape. CO-RE
//! matches types by name, which is what this dedup keeps exact; pahole's full
//! structural dedup is not attempted. Units are read one at a time, so memory stays
//! near the size of the ELF plus the BTF produced.
//!
//! ```no_run
//! let elf = std::fs::read("/usr/lib/debug/boot/vmlinux-6.1.0-13-cloud-amd64").unwrap();
//! let btf = sonde::btf::dwarf::dwarf_to_btf(&elf).unwrap();
//! aya::Btf::parse(&btf, aya::Endianness::default()).unwrap();
//! ```

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSymbol};

mod encode;
#[cfg(test)]
mod tests;
mod unit;

use encode::Builder;
pub use encode::BTF_MAGIC;
use unit::UnitCx;

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// Why an ELF's DWARF could not be converted; the cause, when another library's,
/// is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("cannot read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a readable ELF file")]
    Elf(#[from] object::read::Error),
    #[error("the ELF has no DWARF (.debug_info is missing or empty); build it with -g")]
    NoDebugInfo,
    #[error(
        "section {section} is compressed, which is not supported; \
         decompress it with `objcopy --decompress-debug-sections`"
    )]
    Compressed { section: String },
    #[error("section {section} has {size} bytes, more than the {} GiB sonde reads", super::input::MAX_DWARF_SECTION >> 30)]
    SectionTooLarge { section: String, size: u64 },
    #[error("relocation at {section}+{offset:#x} not supported (kind {kind})")]
    Relocation {
        section: String,
        offset: u64,
        kind: String,
    },
    #[error("bad DWARF in the unit at .debug_info+{unit:#x}")]
    Dwarf {
        unit: usize,
        #[source]
        source: gimli::Error,
    },
    #[error("more BTF types or strings than BTF can index")]
    TooLarge,
}

/// Converts the DWARF of `elf` to raw BTF (little-endian, version 1).
pub fn dwarf_to_btf(elf: &[u8]) -> Result<Vec<u8>, DwarfError> {
    convert(elf)
}

/// [`dwarf_to_btf`] on a file, reading only its DWARF sections: for a debug
/// `vmlinux`, about a third of the file.
pub fn dwarf_file_to_btf(path: &std::path::Path) -> Result<Vec<u8>, DwarfError> {
    let read = |source| DwarfError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (file, size) = super::input::open_regular(path).map_err(read)?;
    if size > super::input::MAX_ELF {
        return Err(read(std::io::Error::other(format!(
            "{size} bytes, more than the {} GiB sonde opens",
            super::input::MAX_ELF >> 30
        ))));
    }
    convert(&object::ReadCache::new(file))
}

fn convert<'a, R: object::ReadRef<'a>>(elf: R) -> Result<Vec<u8>, DwarfError> {
    let file = object::File::parse(elf)?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    if file
        .section_by_name(".debug_info")
        .is_none_or(|s| s.size() == 0)
    {
        return Err(DwarfError::NoDebugInfo);
    }
    let sections = gimli::DwarfSections::load(|id| section(&file, id.name()))?;
    let dwarf = sections.borrow(|s| EndianSlice::new(s, endian));
    let mut out = Builder::new(file.is_little_endian());
    let mut headers = dwarf.units();
    loop {
        let header = headers
            .next()
            .map_err(|source| DwarfError::Dwarf { unit: 0, source })?;
        let Some(header) = header else { break };
        let at = header.offset().0;
        let err = |source| DwarfError::Dwarf { unit: at, source };
        let unit = dwarf.unit(header).map_err(err)?;
        let mut cx = UnitCx {
            dwarf: &dwarf,
            unit: &unit,
            ids: HashMap::new(),
            pending: Vec::new(),
            b: &mut out,
        };
        cx.convert().map_err(err)?;
    }
    out.finish()
}

/// A DWARF section's bytes, relocated when `file` is a relocatable object (`.o`).
fn section<'a, R: object::ReadRef<'a>>(
    file: &object::File<'a, R>,
    name: &str,
) -> Result<Cow<'a, [u8]>, DwarfError> {
    let Some(section) = file.section_by_name(name) else {
        return Ok(Cow::Borrowed(&[]));
    };
    if section.size() > super::input::MAX_DWARF_SECTION {
        return Err(DwarfError::SectionTooLarge {
            section: name.to_string(),
            size: section.size(),
        });
    }
    if section.compressed_file_range()?.format != object::CompressionFormat::None {
        return Err(DwarfError::Compressed {
            section: name.to_string(),
        });
    }
    let data = section.data()?;
    if file.kind() != object::ObjectKind::Relocatable || section.relocations().next().is_none() {
        return Ok(Cow::Borrowed(data));
    }
    let mut data = data.to_vec();
    for (offset, reloc) in section.relocations() {
        let bad = || DwarfError::Relocation {
            section: name.to_string(),
            offset,
            kind: format!("{:?}", reloc.kind()),
        };
        let base = match reloc.target() {
            object::RelocationTarget::Symbol(index) => file.symbol_by_index(index)?.address(),
            object::RelocationTarget::Absolute => 0,
            _ => return Err(bad()),
        };
        if reloc.kind() != object::RelocationKind::Absolute {
            return Err(bad());
        }
        let at = usize::try_from(offset).map_err(|_| bad())?;
        let width = usize::from(reloc.size() / 8);
        let Some(slot) = data.get_mut(at..at + width) else {
            return Err(bad());
        };
        let implicit = if reloc.has_implicit_addend() {
            let mut word = [0u8; 8];
            word[..width].copy_from_slice(slot);
            u64::from_le_bytes(word)
        } else {
            0
        };
        let value = base
            .wrapping_add(reloc.addend() as u64)
            .wrapping_add(implicit);
        let bytes = if file.is_little_endian() {
            value.to_le_bytes()
        } else {
            (value << (64 - 8 * width as u32)).to_be_bytes()
        };
        slot.copy_from_slice(&bytes[..width]);
    }
    Ok(Cow::Owned(data))
}
