//! Opening the files the BTF chain reads, so that no file can block or exhaust it.
//!
//! `--btf /dev/zero` would otherwise be read forever and a FIFO would block the
//! open; a file the size of a disk would be read into memory. Every file the chain
//! reads goes through [`open_regular`]: opened with `O_NONBLOCK` (opening a FIFO
//! does not wait for a writer), then checked with `fstat` to be a regular file before
//! a byte is read. Whole-file reads ([`read_capped`]) stop at a cap:
//!
//! | what | cap |
//! |---|---|
//! | a file read whole (raw BTF, `.btf.xz`, a `vmlinuz`) | [`MAX_WHOLE_FILE`], 256 MiB |
//! | BTF, however it was found (a section, decompressed, converted) | [`MAX_BTF`], 256 MiB |
//! | an ELF read by section (a `vmlinux`, a debug `vmlinux`) | [`MAX_ELF`], 4 GiB |
//! | one DWARF section of a debug `vmlinux` | [`MAX_DWARF_SECTION`], 2 GiB |
//! | `os-release` | [`MAX_SMALL`], 1 MiB |
//!
//! The running kernel's BTF is 5-6 MB, a `vmlinuz` 8-15 MB, a debug `vmlinux`
//! 0.5-1 GB with a `.debug_info` of 200-400 MB: each cap is ten times what a real
//! kernel needs or more.
//!
//! ```
//! use sonde::btf::input;
//!
//! let e = input::read_capped("/dev/zero".as_ref(), input::MAX_WHOLE_FILE).unwrap_err();
//! assert_eq!(e.to_string(), "not a regular file (a character device)");
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest file read whole: raw or compressed BTF, a compressed kernel image.
pub const MAX_WHOLE_FILE: u64 = 256 << 20;

/// The largest BTF accepted, wherever it came from.
pub const MAX_BTF: usize = 256 << 20;

/// The largest ELF file opened (read by section, never whole).
pub const MAX_ELF: u64 = 4 << 30;

/// The largest DWARF section read from a debug image.
pub const MAX_DWARF_SECTION: u64 = 2 << 30;

/// The largest small text file read (`/etc/os-release`).
pub const MAX_SMALL: u64 = 1 << 20;

/// Opens `path` for reading without blocking, and only when it is a regular file.
/// Returns the file and its size.
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads a regular file whole, refusing one larger than `cap` bytes (checked before
/// reading, and again while reading: sysfs files may report a size of 0 or change).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    read_open_capped(file, size, cap)
}

/// [`read_capped`] on a file already opened with [`open_regular`].
pub fn read_open_capped(file: File, size: u64, cap: u64) -> std::io::Result<Vec<u8>> {
    let too_large = |n: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{n} bytes, more than the {} sonde reads", human(cap)),
        )
    };
    if size > cap {
        return Err(too_large(size));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(size as usize)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))?;
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// A file's text, read with [`read_capped`] at [`MAX_SMALL`].
pub fn read_small_text(path: &Path) -> std::io::Result<String> {
    let bytes = read_capped(path, MAX_SMALL)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn devices_directories_and_fifos_are_refused_at_once() {
        let dir = crate::btf::tests::TempDir::new("input");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = Instant::now();
        let e = read_capped(&fifo, MAX_WHOLE_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let e = read_capped(Path::new("/dev/zero"), MAX_WHOLE_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let e = read_capped(dir.path(), MAX_WHOLE_FILE).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        let e = read_capped(&dir.path().join("missing"), MAX_WHOLE_FILE).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_past_the_cap_is_refused_before_it_is_read() {
        let dir = crate::btf::tests::TempDir::new("input-cap");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert_eq!(read_capped(&path, 4096).unwrap().len(), 4096);
        let e = read_capped(&path, 4095).unwrap_err();
        assert_eq!(
            e.to_string(),
            "4096 bytes, more than the 4095 bytes sonde reads"
        );
        // A sparse file claims its size without taking the disk: refused on the size.
        let sparse = dir.path().join("sparse");
        let f = File::create(&sparse).unwrap();
        f.set_len(MAX_WHOLE_FILE + 1).unwrap();
        let t = Instant::now();
        let e = read_capped(&sparse, MAX_WHOLE_FILE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "268435457 bytes, more than the 256 MiB sonde reads"
        );
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
    }
}
