//! The file sink: JSON lines, rotated by size.
//!
//! Before a line would take the file past `max_size`, the file is rotated the way
//! logrotate numbers files: `events.jsonl.N` (the oldest) is deleted, every
//! `events.jsonl.i` becomes `.i+1`, `events.jsonl` becomes `.1`, and a new
//! `events.jsonl` is started. With `max_files: 2`:
//!
//! ```text
//! events.jsonl      newest
//! events.jsonl.1
//! events.jsonl.2    oldest; deleted at the next rotation
//! ```
//!
//! A file removed or moved away by someone else is noticed within a second and
//! recreated. The actual IO runs on tokio's blocking pool, one batch of lines per
//! trip; a failed write drops that batch (counted) and reopens the file next time.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{FileConfig, Inbox, LogLimiter, SinkCounters, SinkError};

/// Hand a batch to the blocking pool once it holds this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// How often the path is checked for having been removed or replaced.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) struct FileWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// `(dev, inode)` of the open file, to notice it was replaced.
    id: (u64, u64),
    last_check: Instant,
    check_every: Duration,
    buf: Vec<u8>,
    log: LogLimiter,
}

impl FileWriter {
    /// Opens (creating if needed) the file for appending.
    pub(super) fn open(config: &FileConfig) -> Result<Self, SinkError> {
        let mut w = FileWriter {
            path: config.path.clone(),
            max_size: config.max_size,
            max_files: config.max_files,
            file: None,
            size: 0,
            id: (0, 0),
            last_check: Instant::now(),
            check_every: CHECK_EVERY,
            buf: Vec::with_capacity(BATCH_BYTES + 4096),
            log: LogLimiter::new(),
        };
        w.reopen().map_err(|source| SinkError::OpenFile {
            file: config.path.clone(),
            source,
        })?;
        Ok(w)
    }

    #[cfg(test)]
    pub(super) fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        self.size = meta.len();
        self.id = (meta.dev(), meta.ino());
        self.file = Some(file);
        self.last_check = Instant::now();
        Ok(())
    }

    /// `path.i`
    fn numbered(&self, i: u32) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }

    /// Writes `lines` (each without its newline), rotating as needed. Counts what
    /// was written and what was lost.
    pub(super) fn write_lines(&mut self, lines: &[String], counters: &SinkCounters) {
        self.check_replaced();
        let mut buf = std::mem::take(&mut self.buf);
        let mut in_buf = 0;
        for line in lines {
            let len = line.len() as u64 + 1;
            let pending = self.size + buf.len() as u64;
            if pending > 0 && pending + len > self.max_size {
                self.write_buf(&mut buf, &mut in_buf, counters);
                self.rotate(counters);
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            in_buf += 1;
        }
        self.write_buf(&mut buf, &mut in_buf, counters);
        self.buf = buf;
    }

    fn write_buf(&mut self, buf: &mut Vec<u8>, lines: &mut usize, counters: &SinkCounters) {
        if buf.is_empty() {
            return;
        }
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(buf),
            None => self
                .reopen()
                .and_then(|()| self.file.as_mut().map_or(Ok(()), |f| f.write_all(buf))),
        };
        match result {
            Ok(()) => {
                self.size += buf.len() as u64;
                counters.sent(*lines);
            }
            Err(error) => {
                // Unknown how much made it; reopen (and re-read the size) next time.
                self.file = None;
                counters.dropped(*lines);
                counters.error();
                if let Some(suppressed) = self.log.check() {
                    tracing::error!(
                        path = %self.path.display(),
                        %error,
                        events = *lines,
                        suppressed,
                        "cannot write events to the file; dropped"
                    );
                }
            }
        }
        buf.clear();
        *lines = 0;
    }

    fn rotate(&mut self, counters: &SinkCounters) {
        self.file = None;
        if let Err(error) = self.shift() {
            counters.error();
            if let Some(suppressed) = self.log.check() {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    suppressed,
                    "cannot rotate the event file; appending past max_size"
                );
            }
        }
        // If this fails, the next write tries again and counts the events it loses.
        let _ = self.reopen();
        tracing::debug!(path = %self.path.display(), "event file rotated");
    }

    fn shift(&self) -> io::Result<()> {
        if self.max_files == 0 {
            return ignore_missing(std::fs::remove_file(&self.path));
        }
        for i in (1..self.max_files).rev() {
            ignore_missing(std::fs::rename(self.numbered(i), self.numbered(i + 1)))?;
        }
        ignore_missing(std::fs::rename(&self.path, self.numbered(1)))
    }

    /// Reopens the path if the file was removed or replaced behind our back.
    fn check_replaced(&mut self) {
        if self.file.is_none() || self.last_check.elapsed() < self.check_every {
            return;
        }
        self.last_check = Instant::now();
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if replaced {
            tracing::info!(path = %self.path.display(), "event file was removed or replaced; reopening");
            self.file = None;
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub(super) async fn run(mut writer: FileWriter, mut inbox: Inbox, counters: SinkCounters) {
    let mut lines: Vec<String> = Vec::new();
    while let Some(first) = inbox.recv().await {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(ev) = next {
            let line = ev.json().to_string();
            bytes += line.len() + 1;
            lines.push(line);
            if bytes >= BATCH_BYTES {
                break;
            }
            next = inbox.try_recv();
        }
        let c = counters.clone();
        let trip = tokio::task::spawn_blocking(move || {
            writer.write_lines(&lines, &c);
            lines.clear();
            (writer, lines)
        })
        .await;
        match trip {
            Ok(back) => (writer, lines) = back,
            Err(error) => {
                tracing::error!(%error, "file sink failed; events are no longer written to the file");
                return;
            }
        }
    }
    tracing::debug!(path = %writer.path().display(), "file sink stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    fn config(dir: &Path, max_size: u64, max_files: u32) -> FileConfig {
        FileConfig {
            path: dir.join("events.jsonl"),
            max_size,
            max_files,
        }
    }

    fn read(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn keeps_at_most_max_files_and_drops_the_oldest() {
        let dir = crate::sinks::tests::temp_dir("file-keep");
        let registry = Registry::new("n");
        let counters = SinkCounters::register(&registry, "file").unwrap();
        let mut w = FileWriter::open(&config(&dir, 10, 2)).unwrap();
        // Each line is 10 bytes with its newline: one line per file.
        for i in 0..5 {
            w.write_lines(&[format!("line-{i:04}")], &counters);
        }
        assert_eq!(read(&dir.join("events.jsonl")), ["line-0004"]);
        assert_eq!(read(&dir.join("events.jsonl.1")), ["line-0003"]);
        assert_eq!(read(&dir.join("events.jsonl.2")), ["line-0002"]);
        assert!(!dir.join("events.jsonl.3").exists());
        assert_eq!(counters.sent.get(&["file"]), Some(5.0));

        // max_files 0: truncate in place.
        let mut w = FileWriter::open(&config(&dir, 10, 0)).unwrap();
        w.write_lines(&["line-0005".into(), "line-0006".into()], &counters);
        assert_eq!(read(&dir.join("events.jsonl")), ["line-0006"]);
        // A line longer than max_size gets a file of its own rather than being lost.
        w.write_lines(&["a-very-long-line".into()], &counters);
        assert_eq!(read(&dir.join("events.jsonl")), ["a-very-long-line"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recreates_a_file_removed_behind_its_back() {
        let dir = crate::sinks::tests::temp_dir("file-removed");
        let registry = Registry::new("n");
        let counters = SinkCounters::register(&registry, "file").unwrap();
        let mut w = FileWriter::open(&config(&dir, 1 << 20, 1))
            .unwrap()
            .check_every(Duration::ZERO);
        w.write_lines(&["one".into()], &counters);
        std::fs::remove_file(dir.join("events.jsonl")).unwrap();
        w.write_lines(&["two".into()], &counters);
        assert_eq!(read(&dir.join("events.jsonl")), ["two"]);
        // Moved away (as logrotate does): the new file starts empty.
        std::fs::rename(dir.join("events.jsonl"), dir.join("moved")).unwrap();
        w.write_lines(&["three".into()], &counters);
        assert_eq!(read(&dir.join("events.jsonl")), ["three"]);
        assert_eq!(read(&dir.join("moved")), ["two"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unopenable_path_fails_at_start_naming_the_key() {
        let err = FileWriter::open(&FileConfig {
            path: "/nonexistent-dir/sonde/events.jsonl".into(),
            ..FileConfig::default()
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("sinks.file.path: cannot open"),
            "{err}"
        );
    }
}
