//! Reading a script file: regular files only, and never more than a cap.
//!
//! Whoever can write to a script directory must not be able to stall or exhaust the
//! agent with what they leave there. [`read_script_file`] looks at the path first
//! (through symlinks) and refuses anything but a regular file: a FIFO would block
//! the reader until someone writes to it, a device may never end. A file over the
//! cap is refused from its size alone. Only then is it opened (non-blocking, so a
//! FIFO swapped in meanwhile cannot block either), checked again on the open file,
//! and read, at most `cap + 1` bytes.
//!
//! ```
//! use sonde::script::{read_script_file, ScriptFileError};
//!
//! let dir = std::env::temp_dir().join(format!("sonde-doc-file-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("big.rhai");
//! std::fs::write(&path, vec![b'/'; 4096]).unwrap();
//! assert_eq!(read_script_file(&path, 8192).unwrap().len(), 4096);
//! let err = read_script_file(&path, 1024).unwrap_err();
//! assert!(matches!(err, ScriptFileError::TooLarge { size: 4096, max: 1024, .. }));
//! assert_eq!(err.reason(), "too_large");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Default cap on a script file's size (the daemon's `limits.max_script_bytes`).
pub const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Why a script file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ScriptFileError {
    #[error(
        "{}: refused: it is {kind}, not a regular file (only regular files, or symlinks to them, are read as scripts)",
        path.display()
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{}: refused: {size} bytes, over limits.max_script_bytes ({max} bytes); split the script or raise the limit",
        path.display()
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{}: refused: not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl ScriptFileError {
    /// A short snake_case reason, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ScriptFileError::NotRegular { .. } => "not_regular_file",
            ScriptFileError::TooLarge { .. } => "too_large",
            ScriptFileError::NotUtf8 { .. } => "not_utf8",
            ScriptFileError::Io { .. } => "unreadable",
        }
    }

    /// The file does not exist (any more): removed between listing and reading, or
    /// a dangling symlink.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ScriptFileError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a script file of at most `max` bytes; see the [module docs](self).
pub fn read_script_file(path: &Path, max: u64) -> Result<String, ScriptFileError> {
    let io = |error| ScriptFileError::Io {
        path: path.to_path_buf(),
        error,
    };
    // By path first: nothing is opened that is not a regular file of a fitting size.
    check(path, &std::fs::metadata(path).map_err(io)?, max)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    // Again on what was opened: the path may have been swapped in between.
    let meta = file.metadata().map_err(io)?;
    check(path, &meta, max)?;
    let mut buf = Vec::with_capacity(meta.len().min(max) as usize + 1);
    file.take(max + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > max {
        // It grew while being read.
        return Err(ScriptFileError::TooLarge {
            path: path.to_path_buf(),
            size: File::open(path)
                .and_then(|f| f.metadata())
                .map(|m| m.len())
                .unwrap_or(buf.len() as u64)
                .max(buf.len() as u64),
            max,
        });
    }
    String::from_utf8(buf).map_err(|e| ScriptFileError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

fn check(path: &Path, meta: &Metadata, max: u64) -> Result<(), ScriptFileError> {
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(ScriptFileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > max {
        return Err(ScriptFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sonde-file-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_over_the_cap_is_refused_by_its_size_without_reading_it() {
        let d = dir("cap");
        let path = d.join("big.rhai");
        // Sparse: 1 GiB by its size, nothing on disk; reading it whole would take
        // seconds and a GiB of memory.
        let f = File::create(&path).unwrap();
        f.set_len(1 << 30).unwrap();
        let t = Instant::now();
        let e = read_script_file(&path, MAX_SCRIPT_BYTES).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: refused: 1073741824 bytes, over limits.max_script_bytes (1048576 bytes); split the script or raise the limit",
                path.display()
            )
        );
        assert_eq!(e.reason(), "too_large");
        // At the cap exactly: read.
        f.set_len(1024).unwrap();
        assert_eq!(read_script_file(&path, 1024).unwrap().len(), 1024);
        f.set_len(1025).unwrap();
        assert!(matches!(
            read_script_file(&path, 1024),
            Err(ScriptFileError::TooLarge { size: 1025, .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_blocking() {
        let d = dir("kinds");
        let fifo = d.join("fifo.rhai");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = Instant::now();
        let e = read_script_file(&fifo, MAX_SCRIPT_BYTES).unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(100));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: refused: it is a FIFO, not a regular file (only regular files, or symlinks to them, are read as scripts)",
                fifo.display()
            )
        );
        assert_eq!(e.reason(), "not_regular_file");
        // A symlink to a device: followed, and refused.
        let zero = d.join("zero.rhai");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_script_file(&zero, MAX_SCRIPT_BYTES).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        std::fs::create_dir(d.join("dir.rhai")).unwrap();
        let e = read_script_file(&d.join("dir.rhai"), MAX_SCRIPT_BYTES).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        // A symlink to a regular file is read; a dangling one is "not found".
        std::fs::write(d.join("real"), "fn on_tick() {}").unwrap();
        std::os::unix::fs::symlink("real", d.join("link.rhai")).unwrap();
        assert_eq!(
            read_script_file(&d.join("link.rhai"), MAX_SCRIPT_BYTES).unwrap(),
            "fn on_tick() {}"
        );
        std::os::unix::fs::symlink("nowhere", d.join("dangling.rhai")).unwrap();
        assert!(read_script_file(&d.join("dangling.rhai"), MAX_SCRIPT_BYTES)
            .unwrap_err()
            .is_not_found());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_is_not_utf8_says_where() {
        let d = dir("utf8");
        let path = d.join("bin.rhai");
        std::fs::write(&path, b"// ok\n\xff\xfe").unwrap();
        let e = read_script_file(&path, MAX_SCRIPT_BYTES).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("refused: not UTF-8 text (invalid byte at offset 6)"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
