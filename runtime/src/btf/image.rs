//! Getting BTF out of whatever file holds it: raw BTF, an ELF with a `.BTF`
//! section (a `vmlinux`, a debug `vmlinux`), a compressed file (`.btf.xz`), or a
//! compressed kernel image (`vmlinuz`).
//!
//! A `vmlinuz` is unwrapped by its header when it has one: an x86 bzImage (`HdrS`
//! at 0x202; the payload starts after the setup sectors, at `payload_offset`, and is
//! `payload_length` long) or an EFI zboot image (arm64, riscv: `zimg` at 4, payload
//! offset and size at 8 and 12). Otherwise the file is scanned for the magic of
//! gzip, xz, zstd and LZ4 legacy streams and each candidate is tried in turn. The
//! decompressed kernel is an ELF on x86 (`.BTF` taken as is); a raw image (arm64
//! `Image`) is scanned for the BTF header.
//!
//! The kernel's banner (`Linux version <release> ...`) in the decompressed image
//! says which kernel it is, so a mislabelled image is not used for another kernel.
//!
//! ```no_run
//! let image = std::fs::read("/boot/vmlinuz-6.1.0-56-cloud-amd64").unwrap();
//! let got = sonde::btf::image::extract(&image).unwrap();
//! println!("{} bytes of BTF via {}, kernel {:?}", got.btf.len(), got.via.join(" > "), got.kernel);
//! ```

use std::path::Path;

use super::decompress::{decompress, Compression, DecompressError};

/// Raw BTF starts with its magic (0xeb9f, little-endian) and version 1.
const BTF_MAGIC: [u8; 3] = [0x9f, 0xeb, 0x01];

/// BTF found in a file, and how.
#[derive(Debug)]
pub struct Extracted {
    pub btf: Vec<u8>,
    /// The steps taken, e.g. `["bzImage", "lz4 legacy", "ELF .BTF"]`.
    pub via: Vec<&'static str>,
    /// The release in the kernel's banner, when one was seen.
    pub kernel: Option<String>,
}

/// Whether `data` starts like raw BTF.
pub fn is_raw_btf(data: &[u8]) -> bool {
    data.starts_with(&BTF_MAGIC)
}

/// Why no BTF came out of a file or image.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("not a readable ELF: {0}")]
    NotElf(object::Error),
    #[error("ELF without a .BTF section (it has DWARF: the dwarf step converts it)")]
    DwarfOnly,
    #[error("ELF without a .BTF section")]
    NoBtfSection,
    #[error(".BTF section of {size} bytes, more than the {} MiB sonde reads", super::input::MAX_BTF >> 20)]
    BtfTooLarge { size: u64 },
    #[error("cannot read .BTF: {0}")]
    ReadSection(object::Error),
    #[error("nested too deep")]
    TooDeep,
    #[error("{0} payload is not gzip, xz, zstd or lz4")]
    UnknownPayload(&'static str),
    #[error("{format} payload: {error}")]
    Payload {
        format: &'static str,
        error: DecompressError,
    },
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    #[error("no BTF in the decompressed image")]
    NotInImage,
    #[error("no BTF found (last try: {} stream at {offset:#x}: {error})", kind.name())]
    NoneInStreams {
        kind: Compression,
        offset: usize,
        error: Box<ExtractError>,
    },
    #[error("not BTF, an ELF, a known compressed format or a kernel image")]
    Unknown,
}

/// Finds the BTF in `data`, whatever wraps it.
pub fn extract(data: &[u8]) -> Result<Extracted, ExtractError> {
    let mut via = Vec::new();
    let mut kernel = None;
    let btf = unwrap(data, &mut via, &mut kernel, 0)?;
    Ok(Extracted { btf, via, kernel })
}

/// Whether a file is an ELF with DWARF (`.debug_info`) and no `.BTF`: a debug
/// kernel image from before BTF, for the DWARF to BTF step.
pub fn has_dwarf_without_btf(path: &Path) -> bool {
    use object::Object;
    let Ok((file, size)) = super::input::open_regular(path) else {
        return false;
    };
    if size > super::input::MAX_ELF {
        return false;
    }
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return false;
    };
    elf.section_by_name(".debug_info").is_some() && elf.section_by_name(".BTF").is_none()
}

/// Reads the BTF of a file. An ELF is read section by section (a debug `vmlinux`
/// is 500 MB or more; only its headers and `.BTF` are read); anything else whole.
/// Only a regular file is read, within the caps of [`super::input`].
pub fn extract_file(path: &Path) -> Result<Extracted, std::io::Error> {
    use super::input;
    use std::io::{Read, Seek};
    let (mut file, size) = input::open_regular(path)?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head)?;
    if head[..n] == *b"\x7fELF" {
        if size > input::MAX_ELF {
            return Err(std::io::Error::other(format!(
                "an ELF of {size} bytes, more than the {} GiB sonde opens",
                input::MAX_ELF >> 30
            )));
        }
        let cache = object::ReadCache::new(file);
        let btf = elf_btf(&cache).map_err(std::io::Error::other)?;
        return Ok(Extracted {
            btf,
            via: vec!["ELF .BTF"],
            kernel: None,
        });
    }
    file.rewind()?;
    let data = input::read_open_capped(file, size, input::MAX_WHOLE_FILE)?;
    extract(&data).map_err(std::io::Error::other)
}

fn elf_btf<'a, R: object::ReadRef<'a>>(data: R) -> Result<Vec<u8>, ExtractError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).map_err(ExtractError::NotElf)?;
    let Some(section) = file.section_by_name(".BTF") else {
        let dwarf = file.section_by_name(".debug_info").is_some();
        return Err(if dwarf {
            ExtractError::DwarfOnly
        } else {
            ExtractError::NoBtfSection
        });
    };
    if section.size() > super::input::MAX_BTF as u64 {
        return Err(ExtractError::BtfTooLarge {
            size: section.size(),
        });
    }
    section
        .data()
        .map(<[u8]>::to_vec)
        .map_err(ExtractError::ReadSection)
}

fn unwrap(
    data: &[u8],
    via: &mut Vec<&'static str>,
    kernel: &mut Option<String>,
    depth: usize,
) -> Result<Vec<u8>, ExtractError> {
    if depth > 3 {
        return Err(ExtractError::TooDeep);
    }
    if is_raw_btf(data) {
        via.push("raw BTF");
        return Ok(data.to_vec());
    }
    if data.starts_with(b"\x7fELF") {
        if depth > 0 && kernel.is_none() {
            *kernel = banner_release(data);
        }
        via.push("ELF .BTF");
        return elf_btf(data);
    }
    if let Some(kind) = Compression::detect(data) {
        via.push(kind.name());
        let inner = decompress(kind, data)?;
        return unwrap(&inner, via, kernel, depth + 1);
    }
    if let Some((format, payload)) = kernel_payload(data) {
        via.push(format);
        let kind = Compression::detect(payload).ok_or(ExtractError::UnknownPayload(format))?;
        via.push(kind.name());
        let inner =
            decompress(kind, payload).map_err(|error| ExtractError::Payload { format, error })?;
        return unwrap(&inner, via, kernel, depth + 1);
    }
    if depth > 0 {
        // A decompressed raw image (arm64 `Image`): no sections, look for the header.
        *kernel = kernel.take().or_else(|| banner_release(data));
        via.push("BTF header scan");
        return scan_btf(data).ok_or(ExtractError::NotInImage);
    }
    // An image with an unknown header: try each compressed stream it contains.
    let mut last = None;
    for (offset, kind) in compressed_streams(data) {
        let mut tried_via = vec!["scan", kind.name()];
        let attempt = decompress(kind, &data[offset..])
            .map_err(ExtractError::from)
            .and_then(|inner| {
                let mut k = None;
                let btf = unwrap(&inner, &mut tried_via, &mut k, depth + 1)?;
                Ok((btf, k))
            });
        match attempt {
            Ok((btf, k)) => {
                via.extend(tried_via);
                *kernel = k;
                return Ok(btf);
            }
            Err(e) => last = Some((kind, offset, e)),
        }
    }
    if let Some(btf) = scan_btf(data) {
        via.push("BTF header scan");
        return Ok(btf);
    }
    Err(match last {
        Some((kind, offset, error)) => ExtractError::NoneInStreams {
            kind,
            offset,
            error: Box::new(error),
        },
        None => ExtractError::Unknown,
    })
}

/// The compressed payload of a bzImage or an EFI zboot image, with the format name.
fn kernel_payload(data: &[u8]) -> Option<(&'static str, &[u8])> {
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // x86 boot protocol (Documentation/arch/x86/boot.rst): payload fields from 2.08.
    if data.get(0x202..0x206) == Some(b"HdrS") && u16_at(0x206)? >= 0x0208 {
        let setup_sects = match data[0x1f1] {
            0 => 4,
            n => n as usize,
        };
        let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
        let len = u32_at(0x24c)?;
        return data.get(start..start + len).map(|p| ("bzImage", p));
    }
    // drivers/firmware/efi/libstub/zboot-header.S
    if data.starts_with(b"MZ") && data.get(4..8) == Some(b"zimg") {
        let (start, len) = (u32_at(8)?, u32_at(12)?);
        return data.get(start..start + len).map(|p| ("EFI zboot", p));
    }
    None
}

/// Offsets of every gzip, xz, zstd and LZ4 legacy magic in `data`, in file order.
fn compressed_streams(data: &[u8]) -> Vec<(usize, Compression)> {
    let mut found: Vec<(usize, Compression)> = Compression::ALL
        .into_iter()
        .flat_map(|kind| {
            memchr::memmem::find_iter(data, kind.magic())
                .take(16)
                .map(move |at| (at, kind))
        })
        .collect();
    found.sort_by_key(|(at, _)| *at);
    found
}

/// A BTF blob inside raw bytes: the magic, version 1, a 24-byte header, and the
/// type and string sections inside the data.
fn scan_btf(data: &[u8]) -> Option<Vec<u8>> {
    const HEADER: [u8; 8] = [0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00];
    for at in memchr::memmem::find_iter(data, &HEADER) {
        let u32_at = |o: usize| {
            data.get(at + o..at + o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (u32_at(8), u32_at(12), u32_at(16), u32_at(20))
        else {
            continue;
        };
        let end = 24 + (type_off + type_len).max(str_off + str_len);
        if type_len > 0 && str_len > 0 && at + end <= data.len() {
            return Some(data[at..at + end].to_vec());
        }
    }
    None
}

/// The release in `Linux version <release> (...)`, the banner every kernel holds.
pub fn banner_release(data: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    memchr::memmem::find_iter(data, BANNER).find_map(|at| {
        let rest = &data[at + BANNER.len()..];
        let end = rest.iter().take(128).position(|b| *b == b' ')?;
        let release = std::str::from_utf8(&rest[..end]).ok()?;
        // `%s` in a format string (the banner's template) is not a release.
        (!release.is_empty() && !release.contains('%')).then(|| release.to_string())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::btf::decompress::tests::{gzip, lz4_legacy_frame, zstd};

    /// A real ELF with a `.BTF` section: a committed kernel object.
    pub(crate) fn elf_with_btf() -> &'static [u8] {
        crate::bpf::catalog::PROGRAMS[0].object
    }

    /// A decompressed "vmlinux": an ELF with `.BTF`, then the kernel banner.
    pub(crate) fn vmlinux(release: &str) -> Vec<u8> {
        let mut v = elf_with_btf().to_vec();
        v.extend_from_slice(b"\0Linux version %s (%s)\0");
        v.extend_from_slice(
            format!("Linux version {release} (debian-kernel@lists.debian.org) (gcc-12) #1 SMP\n\0")
                .as_bytes(),
        );
        v
    }

    /// An x86 bzImage around `payload`: setup sectors with the boot header, then the
    /// compressed kernel in the middle of the protected-mode part.
    pub(crate) fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3usize;
        let mut img = vec![0u8; (setup_sects + 1) * 512];
        img[0x1f1] = setup_sects as u8;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let payload_offset = 0x120u32;
        img[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0x90; 0x120]); // the decompressor's code
        img.extend_from_slice(payload);
        img.extend_from_slice(&[0xcc; 300]); // more code after the payload
        img
    }

    fn object_btf() -> Vec<u8> {
        crate::btf::extract_btf_section(elf_with_btf()).unwrap()
    }

    #[test]
    fn raw_btf_and_elf_are_taken_as_they_are() {
        let btf = object_btf();
        let got = extract(&btf).unwrap();
        assert_eq!((got.btf, got.via), (btf.clone(), vec!["raw BTF"]));
        let got = extract(elf_with_btf()).unwrap();
        assert_eq!((got.btf, got.via), (btf, vec!["ELF .BTF"]));
    }

    #[test]
    fn elf_on_disk_is_read_by_section() {
        let dir = crate::btf::tests::TempDir::new("elf");
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, elf_with_btf()).unwrap();
        assert_eq!(extract_file(&path).unwrap().btf, object_btf());
        std::fs::write(&path, b"\x7fELF garbage").unwrap();
        assert!(extract_file(&path).is_err());
    }

    #[test]
    fn bzimage_with_each_compression() {
        let vmlinux = vmlinux("6.1.0-56-cloud-amd64");
        let xz = std::process::Command::new("xz")
            .args(["--x86", "--lzma2", "-C", "crc32", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                std::io::Write::write_all(c.stdin.as_mut().unwrap(), &vmlinux)?;
                drop(c.stdin.take());
                c.wait_with_output()
            })
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout);
        let mut payloads = vec![
            ("gzip", gzip(&vmlinux)),
            ("zstd", zstd(&vmlinux)),
            ("lz4 legacy", lz4_legacy_frame(&vmlinux, 4096)),
        ];
        match xz {
            Some(x) => payloads.push(("xz", x)),
            // The xz decoder itself is tested on committed streams (decompress.rs).
            None => crate::testkit::skip(
                "the xz bzImage case",
                "no xz command (apt-get install xz-utils)",
            ),
        }
        for (name, payload) in payloads {
            let got = extract(&bzimage(&payload)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.via, vec!["bzImage", name, "ELF .BTF"]);
            assert_eq!(got.btf, object_btf(), "{name}");
            assert_eq!(got.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        }
    }

    #[test]
    fn unknown_header_is_scanned_for_streams() {
        let vmlinux = vmlinux("5.10.0-46-cloud-amd64");
        // Something that looks like gzip but is not, then the real LZ4 payload.
        let mut img = b"some loader\x1f\x8b\x08 not really gzip".to_vec();
        img.extend_from_slice(&lz4_legacy_frame(&vmlinux, 8192));
        img.extend_from_slice(&[0u8; 64]);
        let got = extract(&img).unwrap();
        assert_eq!(got.via, vec!["scan", "lz4 legacy", "ELF .BTF"]);
        assert_eq!(got.btf, object_btf());
        assert_eq!(got.kernel.as_deref(), Some("5.10.0-46-cloud-amd64"));
    }

    #[test]
    fn efi_zboot_and_raw_image() {
        // A raw (non-ELF) kernel image holding BTF between other bytes, as arm64's.
        let mut raw = vec![0x11u8; 1000];
        raw.extend_from_slice(&object_btf());
        raw.extend_from_slice(b"\0Linux version 6.1.0-arm64 (x)\0");
        let payload = gzip(&raw);
        let mut img = vec![0u8; 64];
        img[0..2].copy_from_slice(b"MZ");
        img[4..8].copy_from_slice(b"zimg");
        img[8..12].copy_from_slice(&64u32.to_le_bytes());
        img[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&payload);
        let got = extract(&img).unwrap();
        assert_eq!(got.via, vec!["EFI zboot", "gzip", "BTF header scan"]);
        assert_eq!(got.btf, object_btf());
        assert_eq!(got.kernel.as_deref(), Some("6.1.0-arm64"));
    }

    #[test]
    fn what_holds_no_btf_says_so() {
        let e = extract(b"just some text").unwrap_err();
        assert!(e.to_string().contains("not BTF, an ELF"), "{e}");
        let e = extract(&bzimage(b"not compressed")).unwrap_err();
        assert!(e.to_string().contains("bzImage payload is not gzip"), "{e}");
        let e = extract(&gzip(b"plain text inside")).unwrap_err();
        assert!(
            e.to_string().contains("no BTF in the decompressed image"),
            "{e}"
        );
    }

    #[test]
    fn banner() {
        assert_eq!(
            banner_release(b"..Linux version %s (%s)..Linux version 6.18.0 (gcc)").as_deref(),
            Some("6.18.0")
        );
        assert_eq!(banner_release(b"no banner"), None);
    }

    /// The real Debian images, when present: `cargo test -p sonde --lib real_debian
    /// -- --ignored --nocapture` (SONDE_KERNEL_IMAGES: a colon-separated list).
    #[test]
    #[ignore = "needs Debian kernel images on disk (SONDE_KERNEL_IMAGES)"]
    fn real_debian_images() {
        let list = std::env::var("SONDE_KERNEL_IMAGES").unwrap_or_else(|_| {
            "/tmp/kern/k61/boot/vmlinuz-6.1.0-56-cloud-amd64:/tmp/kern/k510/boot/vmlinuz-5.10.0-46-cloud-amd64".into()
        });
        for path in list.split(':') {
            let path = Path::new(path);
            let Ok(data) = std::fs::read(path) else {
                panic!("{}: missing", path.display());
            };
            let start = std::time::Instant::now();
            let got = extract(&data).unwrap();
            let took = start.elapsed();
            aya::Btf::parse(&got.btf, aya::Endianness::default()).unwrap();
            let release = path.file_name().unwrap().to_str().unwrap();
            let release = release.trim_start_matches("vmlinuz-");
            assert_eq!(got.kernel.as_deref(), Some(release));
            let out = std::env::temp_dir().join(format!("sonde-{release}.btf"));
            std::fs::write(&out, &got.btf).unwrap();
            println!("{}: written to {}", path.display(), out.display());
            println!(
                "{}: {} bytes of BTF via {} in {:.1} ms (kernel {release})",
                path.display(),
                got.btf.len(),
                got.via.join(" > "),
                took.as_secs_f64() * 1e3
            );
        }
    }
}
