//! Recordings: the raw records of a run, replayable through a script with no kernel.
//!
//! `sonde run x.rhai --record run.sonderec` saves every ring buffer record as the kernel
//! wrote it, plus a snapshot of the program's maps at every tick; `sonde run x.rhai
//! --replay run.sonderec` feeds them through the script again, as fast as it can.
//! This is how scripts are tested offline and how the userspace cost is benchmarked.
//!
//! The file is a header and a list of frames, all little-endian:
//!
//! ```text
//! "SONDEREC" u32:version u32:len <len bytes of JSON header>
//! frame: u8:tag u64:nanoseconds-since-start u16:index u32:len <len bytes>
//!   tag 1  ring buffer record; index = header.sources[index]
//!   tag 2  map snapshot;       index = header.maps[index]; bytes = u32:count (key value)*
//!   tag 3  tick (on_tick ran here)
//!   tag 4  symbol: u64:address then the formatted name, as the recording host printed it
//!   tag 5  stack: index = 0; bytes = u32:stack id then u64 frames
//!   tag 6  end: the writer finished (version 2; version 1 files have none)
//! ```
//!
//! Symbol and stack frames come before the record that needed them.
//!
//! The header keeps what decoding needs from the kernel that made the records (its
//! drop reason names), so a recording replays the same on any machine.
//!
//! # A recording cut short
//!
//! A recording whose writer was killed (`kill -9`, a crash, a full disk) holds every
//! frame written before: each frame goes to the file whole, and the writer hands
//! what it buffered to the kernel at least every [`FLUSH_EVERY`] (100 ms; `sonde run`
//! asks at every ring drain, at least every 100 ms): a `kill -9` loses at most the
//! last ~200 ms of frames (a power loss, what the page cache had not written yet).
//! The reader returns every complete frame, then [`RecordError::Truncated`] for a tail
//! cut mid-frame, a version 2 file without its end frame, or a tail of zero bytes
//! (what some file systems leave after a crash): `sonde run --replay` replays what
//! was complete and warns. A damaged frame with more after it is
//! [`RecordError::Corrupt`]: replay stops there with an error.
//!
//! Nothing in a recording is trusted: lengths are bounded ([`MAX_HEADER`],
//! [`MAX_FRAME`], map layouts) before anything is allocated from them, and a frame
//! that does not hold what its tag says is an error, never a panic.
//!
//! ```
//! use sonde::record::{Reader, RecordError};
//!
//! let path = std::env::temp_dir().join(format!("doc-{}.sonderec", std::process::id()));
//! std::fs::write(&path, b"SONDEREC\x02\0\0\0\xff\xff\xff\xff").unwrap();
//! let e = Reader::open(&path).err().unwrap();
//! assert!(matches!(e, RecordError::Header { .. }), "{e}");
//! # std::fs::remove_file(&path).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bpf::maps::Layout;

const MAGIC: &[u8; 8] = b"SONDEREC";
/// The version written: 2 ends with an end frame; 1 (read too) has none.
const VERSION: u32 = 2;
const OLDEST_VERSION: u32 = 1;

/// The largest JSON header read (a real one is a few KB).
pub const MAX_HEADER: u32 = 16 << 20;

/// The largest frame payload read. A ring record is at most a ring buffer (a few
/// MB); the largest snapshot is a map of 1M entries of a few hundred bytes.
pub const MAX_FRAME: u32 = 256 << 20;

/// How long the writer may keep frames in its buffer before handing them to the
/// kernel ([`Writer::flush_if_due`]).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bounds of a map layout in a header: the kernel's own limits, rounded up.
const MAX_KEY_SIZE: usize = 1 << 16;
const MAX_VALUE_SIZE: usize = 1 << 24;
const MAX_CPUS: usize = 1 << 13;

const FRAME_HEAD: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a sonde recording (bad magic)")]
    BadMagic { path: String },
    #[error("{path}: recording version {version}, this sonde reads versions {OLDEST_VERSION} to {VERSION}")]
    Version { path: String, version: u32 },
    #[error("{path}: bad header: {reason}")]
    Header { path: String, reason: String },
    /// The file ends before the recording does: every complete frame was read.
    #[error(
        "{path}: recording ends {how} at byte {offset} after {frames} complete frames: \
         the writer was killed or the file was cut"
    )]
    Truncated {
        path: String,
        /// Where the incomplete part starts.
        offset: u64,
        /// Complete frames before it.
        frames: u64,
        /// `mid-frame (...)`, `without its end frame`, `in zero bytes (...)`.
        how: String,
    },
    /// A frame that is not what its tag says, with more of the file after it.
    #[error("{path}: frame {frame} at byte {offset} is corrupt: {why}")]
    Corrupt {
        path: String,
        offset: u64,
        /// Its number, counted from 0 (the complete frames before it).
        frame: u64,
        why: String,
    },
}

impl RecordError {
    /// Whether this is the end of a recording cut short (every frame before it is
    /// complete and usable) rather than damage.
    pub fn is_truncated(&self) -> bool {
        matches!(self, RecordError::Truncated { .. })
    }
}

/// Stacks a replay has read from its recording, by id: filled as `Stack` frames come,
/// read by the decoding environment of [`Header::replay_env`].
pub type ReplayStacks = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, Vec<u64>>>>;

/// What a recording says about where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub program: String,
    pub variant: String,
    pub kernel: String,
    pub node: String,
    /// Inode of the recording host's network namespace (labelled as the host).
    pub host_netns: u32,
    /// Ring buffer map names; a record frame's index points here.
    pub sources: Vec<String>,
    /// Recorded maps and their layouts; a snapshot frame's index points here.
    pub maps: Vec<(String, Layout)>,
    /// The recording kernel's `enum skb_drop_reason` names.
    pub drop_reasons: BTreeMap<u64, String>,
    pub started_ns: u64,
}

impl Header {
    /// The decoding environment of a replay of this recording: pods through
    /// `pods`, drop reasons from the header, kernel symbols as the recording host
    /// printed them (`symbols`, from its `Symbol` frames), and stacks from the
    /// returned table, which the replay fills from its `Stack` frames.
    pub fn replay_env(
        &self,
        pods: std::sync::Arc<dyn crate::pods::PodResolver>,
        symbols: Vec<(u64, String)>,
    ) -> (std::sync::Arc<crate::bpf::decode::DecodeEnv>, ReplayStacks) {
        use crate::bpf::ksyms::{Ksyms, Symbols};
        let stacks = ReplayStacks::default();
        let read = stacks.clone();
        let env = crate::bpf::decode::DecodeEnv {
            pods,
            drop_reasons: self
                .drop_reasons
                .iter()
                .map(|(k, v)| (*k, v.as_str().into()))
                .collect(),
            ksyms: Symbols::Table(std::sync::Arc::new(Ksyms::from_exact(symbols))),
            stacks: Some(Box::new(move |id| {
                read.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .cloned()
                    .unwrap_or_default()
            })),
            notes: None,
            pod_cache: Default::default(),
        };
        (std::sync::Arc::new(env), stacks)
    }
}

/// One frame of a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Record {
        t_ns: u64,
        source: u16,
        bytes: Vec<u8>,
    },
    Snapshot {
        t_ns: u64,
        map: u16,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Tick {
        t_ns: u64,
    },
    Symbol {
        addr: u64,
        name: String,
    },
    Stack {
        id: u32,
        frames: Vec<u64>,
    },
}

const TAG_RECORD: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_TICK: u8 = 3;
const TAG_SYMBOL: u8 = 4;
const TAG_STACK: u8 = 5;
const TAG_END: u8 = 6;

/// Writes a recording.
pub struct Writer {
    out: BufWriter<File>,
    path: String,
    start: Instant,
    last_flush: Instant,
    /// One frame, assembled before it is written whole.
    frame: Vec<u8>,
}

impl Writer {
    pub fn create(path: &Path, header: &Header) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let io = |source| RecordError::Io {
            path: p.clone(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 16, File::create(path).map_err(io)?);
        let json = serde_json::to_vec(header).map_err(|e| RecordError::Header {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
        out.write_all(&(json.len() as u32).to_le_bytes())
            .map_err(io)?;
        out.write_all(&json).map_err(io)?;
        // The header reaches the file at once: a writer killed before its first
        // frame leaves a recording that says so.
        out.flush().map_err(io)?;
        Ok(Writer {
            out,
            path: p,
            start: Instant::now(),
            last_flush: Instant::now(),
            frame: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes one frame with a single write, so that the buffer is flushed between
    /// frames and the file ends on a frame boundary unless a write is cut.
    fn frame(&mut self, tag: u8, index: u16, payload: &[&[u8]]) -> Result<(), RecordError> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| {
                self.io(std::io::Error::other(format!(
                    "a frame of {len} bytes, more than the {MAX_FRAME} a recording holds"
                )))
            })?;
        let t = self.start.elapsed().as_nanos() as u64;
        self.frame.clear();
        self.frame.push(tag);
        self.frame.extend_from_slice(&t.to_le_bytes());
        self.frame.extend_from_slice(&index.to_le_bytes());
        self.frame.extend_from_slice(&len.to_le_bytes());
        for p in payload {
            self.frame.extend_from_slice(p);
        }
        let r = self.out.write_all(&self.frame);
        r.map_err(|e| self.io(e))
    }

    pub fn record(&mut self, source: u16, bytes: &[u8]) -> Result<(), RecordError> {
        self.frame(TAG_RECORD, source, &[bytes])
    }

    pub fn snapshot(
        &mut self,
        map: u16,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), RecordError> {
        let mut buf = Vec::with_capacity(
            4 + entries
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>(),
        );
        buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (k, v) in entries {
            buf.extend_from_slice(k);
            buf.extend_from_slice(v);
        }
        self.frame(TAG_SNAPSHOT, map, &[&buf])
    }

    pub fn tick(&mut self) -> Result<(), RecordError> {
        self.frame(TAG_TICK, 0, &[])
    }

    pub fn symbol(&mut self, addr: u64, name: &str) -> Result<(), RecordError> {
        self.frame(TAG_SYMBOL, 0, &[&addr.to_le_bytes(), name.as_bytes()])
    }

    pub fn stack(&mut self, id: u32, frames: &[u64]) -> Result<(), RecordError> {
        let bytes: Vec<u8> = frames.iter().flat_map(|f| f.to_le_bytes()).collect();
        self.frame(TAG_STACK, 0, &[&id.to_le_bytes(), &bytes])
    }

    /// Hands the buffered frames to the kernel when the last time was
    /// [`FLUSH_EVERY`] ago or more: call it often (at every drain); past that,
    /// a killed writer loses only what came after.
    pub fn flush_if_due(&mut self) -> Result<(), RecordError> {
        if self.last_flush.elapsed() < FLUSH_EVERY {
            return Ok(());
        }
        self.last_flush = Instant::now();
        let r = self.out.flush();
        r.map_err(|e| self.io(e))
    }

    /// Writes the end frame and flushes: the recording is complete.
    pub fn finish(mut self) -> Result<(), RecordError> {
        self.frame(TAG_END, 0, &[])?;
        let r = self.out.flush();
        r.map_err(|e| self.io(e))
    }
}

/// Reads a recording frame by frame.
pub struct Reader {
    input: BufReader<File>,
    path: String,
    pub header: Header,
    version: u32,
    /// Where the next frame starts.
    offset: u64,
    /// Complete frames read.
    frames: u64,
    /// Set once the end, a cut or damage was reached: nothing more is read.
    done: bool,
    /// The last frame's payload, reused from frame to frame by [`Reader::next_ref`].
    payload: Vec<u8>,
}

/// Frames up to this size are read straight into a buffer of their length; a
/// longer one grows its buffer with what the file really holds (a damaged length
/// allocates no more than that).
const SMALL_FRAME: usize = 64 << 10;

/// A frame as read: a record's bytes are in the reader's buffer.
enum Raw {
    Record { t_ns: u64, source: u16 },
    Frame(Frame),
}

/// A frame as [`Reader::next_ref`] returns it: a record lent from the reader's
/// buffer (valid until the next read), anything else owned.
#[derive(Debug, PartialEq)]
pub enum FrameRef<'a> {
    Record {
        t_ns: u64,
        source: u16,
        bytes: &'a [u8],
    },
    Other(Frame),
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let io = |source| RecordError::Io {
            path: p.clone(),
            source,
        };
        let header_err = |reason: String| RecordError::Header {
            path: p.clone(),
            reason,
        };
        let mut input = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| RecordError::BadMagic { path: p.clone() })?;
        if &magic != MAGIC {
            return Err(RecordError::BadMagic { path: p });
        }
        let mut word = [0u8; 4];
        if read_full(&mut input, &mut word).map_err(io)? < 4 {
            return Err(header_err("the file ends inside the header".into()));
        }
        let version = u32::from_le_bytes(word);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(RecordError::Version { path: p, version });
        }
        if read_full(&mut input, &mut word).map_err(io)? < 4 {
            return Err(header_err("the file ends inside the header".into()));
        }
        let len = u32::from_le_bytes(word);
        if len > MAX_HEADER {
            return Err(header_err(format!(
                "a header of {len} bytes, more than the {MAX_HEADER} a recording has"
            )));
        }
        let mut json = Vec::new();
        (&mut input)
            .take(u64::from(len))
            .read_to_end(&mut json)
            .map_err(io)?;
        if json.len() < len as usize {
            return Err(header_err(format!(
                "the file ends inside the header ({} of {len} bytes): nothing to replay",
                json.len()
            )));
        }
        let header: Header =
            serde_json::from_slice(&json).map_err(|e| header_err(e.to_string()))?;
        check_layouts(&header).map_err(header_err)?;
        Ok(Reader {
            input,
            path: p,
            header,
            version,
            offset: 16 + u64::from(len),
            frames: 0,
            done: false,
            payload: Vec::new(),
        })
    }

    /// Complete frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The next frame; `None` at the end of the recording. After an error, `None`.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordError> {
        Ok(match self.next_ref()? {
            Some(FrameRef::Record {
                t_ns,
                source,
                bytes,
            }) => Some(Frame::Record {
                t_ns,
                source,
                bytes: bytes.to_vec(),
            }),
            Some(FrameRef::Other(f)) => Some(f),
            None => None,
        })
    }

    /// [`next_frame`](Self::next_frame) with a record's bytes lent in place, from a
    /// buffer reused for every frame: replaying a record allocates nothing here.
    pub fn next_ref(&mut self) -> Result<Option<FrameRef<'_>>, RecordError> {
        if self.done {
            return Ok(None);
        }
        match self.read_frame() {
            Ok(Some(Raw::Record { t_ns, source })) => {
                self.frames += 1;
                Ok(Some(FrameRef::Record {
                    t_ns,
                    source,
                    bytes: &self.payload,
                }))
            }
            Ok(Some(Raw::Frame(f))) => {
                self.frames += 1;
                Ok(Some(FrameRef::Other(f)))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn truncated(&self, how: String) -> RecordError {
        RecordError::Truncated {
            path: self.path.clone(),
            offset: self.offset,
            frames: self.frames,
            how,
        }
    }

    /// A frame that is not what it should be: corrupt, unless the rest of the file
    /// is zero bytes from its start (a crash's tail), which is a truncation.
    fn damaged(&mut self, head: &[u8], why: String) -> RecordError {
        let mut zeros = head.iter().all(|b| *b == 0);
        let mut rest = head.len() as u64;
        let mut buf = [0u8; 1 << 14];
        while zeros {
            match self.input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    zeros = buf[..n].iter().all(|b| *b == 0);
                    rest += n as u64;
                }
            }
        }
        if zeros {
            return self.truncated(format!("in zero bytes ({rest} of them)"));
        }
        RecordError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            frame: self.frames,
            why,
        }
    }

    /// Reads one frame: a record's payload stays in `self.payload`.
    fn read_frame(&mut self) -> Result<Option<Raw>, RecordError> {
        let io = |path: &str, source| RecordError::Io {
            path: path.to_string(),
            source,
        };
        let mut head = [0u8; FRAME_HEAD];
        let n = read_full(&mut self.input, &mut head).map_err(|e| io(&self.path, e))?;
        if n == 0 {
            // The end of the file on a frame boundary: the end of a version 1 file;
            // in version 2 the writer stopped before its end frame.
            if self.version >= 2 {
                return Err(self.truncated("without its end frame".into()));
            }
            return Ok(None);
        }
        if n < FRAME_HEAD {
            return Err(self.truncated(format!(
                "mid-frame ({n} of the {FRAME_HEAD} bytes of a frame header)"
            )));
        }
        let tag = head[0];
        let t_ns = u64::from_le_bytes(head[1..9].try_into().unwrap_or_default());
        let index = u16::from_le_bytes([head[9], head[10]]);
        let len = u32::from_le_bytes(head[11..15].try_into().unwrap_or_default());
        if !(TAG_RECORD..=TAG_END).contains(&tag) {
            return Err(self.damaged(&head, format!("unknown tag {tag}")));
        }
        if len > MAX_FRAME {
            return Err(self.damaged(
                &head,
                format!("a frame of {len} bytes, more than the {MAX_FRAME} a recording holds"),
            ));
        }
        // Read what is there, never allocating the length up front (the buffer
        // grows with what was read, and is kept for the next frame).
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let read = if len as usize <= payload.capacity().max(SMALL_FRAME) {
            // A record's size, or what the buffer already holds: read in place.
            payload.resize(len as usize, 0);
            read_full(&mut self.input, &mut payload).map(|n| payload.truncate(n))
        } else {
            (&mut self.input)
                .take(u64::from(len))
                .read_to_end(&mut payload)
                .map(drop)
        };
        if let Err(e) = read {
            return Err(io(&self.path, e));
        }
        if payload.len() < len as usize {
            return Err(self.truncated(format!("mid-frame ({} of its {len} bytes)", payload.len())));
        }
        if tag == TAG_RECORD {
            self.payload = payload;
            self.offset += FRAME_HEAD as u64 + u64::from(len);
            return Ok(Some(Raw::Record {
                t_ns,
                source: index,
            }));
        }
        let frame = self.parse(tag, t_ns, index, payload);
        let frame = match frame {
            Ok(f) => f,
            // Its tag is known, so not zeros: damage.
            Err(why) => return Err(self.damaged(&head, why)),
        };
        self.offset += FRAME_HEAD as u64 + u64::from(len);
        Ok(frame.map(Raw::Frame))
    }

    /// What a complete frame holds, checked against its tag and the header; `None`
    /// for the end frame.
    fn parse(
        &self,
        tag: u8,
        t_ns: u64,
        index: u16,
        payload: Vec<u8>,
    ) -> Result<Option<Frame>, String> {
        let u32_at = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                b.get(at..at.checked_add(4)?)?.try_into().ok()?,
            ))
        };
        Ok(Some(match tag {
            TAG_RECORD => Frame::Record {
                t_ns,
                source: index,
                bytes: payload,
            },
            TAG_TICK => Frame::Tick { t_ns },
            TAG_END => return Ok(None),
            TAG_SYMBOL => {
                let addr = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or("a symbol frame shorter than its 8-byte address")?;
                Frame::Symbol {
                    addr,
                    name: String::from_utf8_lossy(&payload[8..]).into_owned(),
                }
            }
            TAG_STACK => {
                let id = u32_at(&payload, 0).ok_or("a stack frame shorter than its id")?;
                let frames = &payload[4..];
                if !frames.len().is_multiple_of(8) {
                    return Err(format!(
                        "a stack frame of {} bytes of addresses, not a multiple of 8",
                        frames.len()
                    ));
                }
                Frame::Stack {
                    id,
                    frames: frames
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                }
            }
            TAG_SNAPSHOT => {
                let (name, layout) = self.header.maps.get(index as usize).ok_or_else(|| {
                    format!(
                        "a snapshot of map {index}; the header has {}",
                        self.header.maps.len()
                    )
                })?;
                // check_layouts bounded these: no overflow.
                let value_len = match layout.per_cpu {
                    Some(n) => layout.value_size.next_multiple_of(8) * n,
                    None => layout.value_size,
                };
                let stride = layout.key_size + value_len;
                let count = u32_at(&payload, 0).ok_or("a snapshot shorter than its count")?;
                let want = (count as usize)
                    .checked_mul(stride)
                    .and_then(|n| n.checked_add(4));
                if want != Some(payload.len()) {
                    return Err(format!(
                        "a snapshot of `{name}` with {count} entries of {stride} bytes in {} bytes",
                        payload.len()
                    ));
                }
                let entries = payload[4..]
                    .chunks_exact(stride)
                    .map(|c| (c[..layout.key_size].to_vec(), c[layout.key_size..].to_vec()))
                    .collect();
                Frame::Snapshot {
                    t_ns,
                    map: index,
                    entries,
                }
            }
            other => return Err(format!("unknown tag {other}")),
        }))
    }
}

/// Map layouts a recording may declare: within the kernel's limits, so sizes
/// computed from them cannot overflow, and no zero-sized value.
fn check_layouts(header: &Header) -> Result<(), String> {
    for (name, l) in &header.maps {
        let cpus_ok = l.per_cpu.is_none_or(|n| (1..=MAX_CPUS).contains(&n));
        if l.key_size > MAX_KEY_SIZE || !(1..=MAX_VALUE_SIZE).contains(&l.value_size) || !cpus_ok {
            return Err(format!(
                "map `{name}`: key of {} bytes, value of {} bytes, {:?} CPUs: outside what a \
                 BPF map can be (keys up to {MAX_KEY_SIZE} bytes, values 1 to {MAX_VALUE_SIZE}, \
                 1 to {MAX_CPUS} CPUs)",
                l.key_size, l.value_size, l.per_cpu
            ));
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(std::path::PathBuf);

    impl Tmp {
        fn new(tag: &str) -> Tmp {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            Tmp(std::env::temp_dir().join(format!(
                "sonde-rec-{tag}-{}-{}.sonderec",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )))
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn header() -> Header {
        Header {
            program: "tcp_reset".into(),
            variant: "tracepoint".into(),
            kernel: "6.18".into(),
            node: "n".into(),
            host_netns: 4026531840,
            sources: vec!["events".into()],
            maps: vec![(
                "counts".into(),
                Layout {
                    key_size: 4,
                    value_size: 8,
                    per_cpu: Some(2),
                },
            )],
            drop_reasons: BTreeMap::from([(3, "NO_SOCKET".into())]),
            started_ns: 7,
        }
    }

    /// A finished recording: a record, a snapshot, a tick, a symbol, a stack and
    /// 20 more records. Returns its bytes and where each frame starts.
    fn sample(tmp: &Tmp) -> (Vec<u8>, Vec<u64>) {
        let mut w = Writer::create(&tmp.0, &header()).unwrap();
        w.record(0, b"abc").unwrap();
        w.snapshot(0, &[(vec![1, 0, 0, 0], vec![2; 16])]).unwrap();
        w.tick().unwrap();
        w.symbol(0xffff_0001, "tcp_v4_rcv+0x91").unwrap();
        w.stack(7, &[1, 2]).unwrap();
        for i in 0..20u8 {
            w.record(0, &[i; 24]).unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&tmp.0).unwrap();
        let mut r = Reader::open(&tmp.0).unwrap();
        let mut starts = vec![r.offset];
        while r.next_frame().unwrap().is_some() {
            starts.push(r.offset);
        }
        (bytes, starts)
    }

    /// Every frame until the reader stops, and how it stopped.
    fn read_all(path: &Path) -> (Vec<Frame>, Result<(), RecordError>) {
        let mut r = match Reader::open(path) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut frames = Vec::new();
        loop {
            match r.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return (frames, Ok(())),
                Err(e) => {
                    assert_eq!(r.frames(), frames.len() as u64);
                    assert!(r.next_frame().unwrap().is_none(), "nothing after an error");
                    return (frames, Err(e));
                }
            }
        }
    }

    #[test]
    fn round_trip() {
        let tmp = Tmp::new("rt");
        sample(&tmp);
        let mut r = Reader::open(&tmp.0).unwrap();
        assert_eq!(r.header, header());
        assert!(
            matches!(r.next_frame().unwrap(), Some(Frame::Record { source: 0, bytes, .. }) if bytes == b"abc")
        );
        let entry = (vec![1, 0, 0, 0], vec![2; 16]);
        assert!(
            matches!(r.next_frame().unwrap(), Some(Frame::Snapshot { map: 0, entries, .. }) if entries == vec![entry.clone()])
        );
        assert!(matches!(r.next_frame().unwrap(), Some(Frame::Tick { .. })));
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Symbol {
                addr: 0xffff_0001,
                name: "tcp_v4_rcv+0x91".into()
            })
        );
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Stack {
                id: 7,
                frames: vec![1, 2]
            })
        );
        let (frames, end) = read_all(&tmp.0);
        assert_eq!(frames.len(), 25);
        end.unwrap();
    }

    /// Records are lent from one buffer, reused from record to record (no
    /// allocation per record); what comes between them is owned and unchanged.
    #[test]
    fn records_are_lent_in_place_from_one_buffer() {
        let tmp = Tmp::new("ref");
        sample(&tmp);
        let mut r = Reader::open(&tmp.0).unwrap();
        assert!(
            matches!(r.next_ref().unwrap(), Some(FrameRef::Record { source: 0, bytes, .. }) if bytes == b"abc")
        );
        assert!(matches!(
            r.next_ref().unwrap(),
            Some(FrameRef::Other(Frame::Snapshot { map: 0, .. }))
        ));
        for _ in 0..3 {
            assert!(matches!(r.next_ref().unwrap(), Some(FrameRef::Other(_))));
        }
        let mut at = None;
        for i in 0..20u8 {
            match r.next_ref().unwrap() {
                Some(FrameRef::Record { bytes, .. }) => {
                    assert_eq!(bytes, &[i; 24]);
                    let p = bytes.as_ptr();
                    assert_eq!(*at.get_or_insert(p), p, "the same buffer");
                }
                other => panic!("record {i}: {other:?}"),
            }
        }
        assert_eq!(r.next_ref().unwrap(), None);
        assert_eq!(r.frames(), 25);
    }

    #[test]
    fn rejects_other_files() {
        let tmp = Tmp::new("bad");
        std::fs::write(&tmp.0, b"not a recording").unwrap();
        assert!(matches!(
            Reader::open(&tmp.0),
            Err(RecordError::BadMagic { .. })
        ));
    }

    /// A recording cut at every byte: every frame complete before the cut is
    /// read, then the cut is reported where it is, never a panic or a wrong frame.
    #[test]
    fn a_cut_at_any_byte_keeps_every_complete_frame() {
        let tmp = Tmp::new("full");
        let (bytes, starts) = sample(&tmp);
        let (want, _) = read_all(&tmp.0);
        let cut = Tmp::new("cut");
        let header_end = starts[0] as usize;
        for at in 0..bytes.len() {
            std::fs::write(&cut.0, &bytes[..at]).unwrap();
            let (got, end) = read_all(&cut.0);
            if at < header_end {
                assert!(got.is_empty());
                assert!(
                    matches!(
                        end,
                        Err(RecordError::BadMagic { .. } | RecordError::Header { .. })
                    ),
                    "cut at {at}: {end:?}"
                );
                continue;
            }
            let complete = starts.iter().filter(|s| **s as usize <= at).count() - 1;
            assert_eq!(got[..], want[..complete], "cut at {at}");
            let Err(RecordError::Truncated {
                offset,
                frames,
                how,
                ..
            }) = end
            else {
                panic!("cut at {at}: {end:?}");
            };
            assert_eq!(frames, complete as u64, "cut at {at}");
            assert_eq!(offset, starts[complete], "cut at {at}");
            let on_boundary = starts.contains(&(at as u64));
            assert_eq!(
                how == "without its end frame",
                on_boundary,
                "cut at {at}: {how}"
            );
        }
    }

    #[test]
    fn the_message_says_where_and_why() {
        let tmp = Tmp::new("msg");
        let (bytes, starts) = sample(&tmp);
        let at = starts[15] as usize + 20;
        std::fs::write(&tmp.0, &bytes[..at]).unwrap();
        let (_, end) = read_all(&tmp.0);
        assert_eq!(
            end.unwrap_err().to_string(),
            format!(
                "{}: recording ends mid-frame (5 of its 24 bytes) at byte {} after 15 complete \
                 frames: the writer was killed or the file was cut",
                tmp.0.display(),
                starts[15]
            )
        );
    }

    /// What some file systems leave after a crash: the file's last blocks zeroed.
    #[test]
    fn a_tail_of_zeros_is_a_cut_not_damage() {
        let tmp = Tmp::new("zeros");
        let (bytes, starts) = sample(&tmp);
        let mut z = bytes[..starts[10] as usize].to_vec();
        z.extend_from_slice(&[0u8; 5000]);
        std::fs::write(&tmp.0, &z).unwrap();
        let (got, end) = read_all(&tmp.0);
        assert_eq!(got.len(), 10);
        let e = end.unwrap_err();
        assert!(e.is_truncated(), "{e}");
        assert!(
            e.to_string()
                .contains("ends in zero bytes (5000 of them) at byte"),
            "{e}"
        );
    }

    /// Damage with more of the file after it is an error naming the frame.
    #[test]
    fn a_damaged_frame_in_the_middle_is_an_error_after_what_came_before() {
        let tmp = Tmp::new("mid");
        let (bytes, starts) = sample(&tmp);
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (starts[15] as usize, vec![9], "unknown tag 9"),
            (starts[15] as usize, vec![0], "unknown tag 0"),
            (
                starts[15] as usize + 11,
                u32::MAX.to_le_bytes().to_vec(),
                "a frame of 4294967295 bytes, more than the 268435456 a recording holds",
            ),
            // The snapshot (frame 1): a count that overflows count * stride.
            (
                starts[1] as usize + FRAME_HEAD,
                u32::MAX.to_le_bytes().to_vec(),
                "a snapshot of `counts` with 4294967295 entries of 20 bytes in 24 bytes",
            ),
            // The snapshot of a map the header does not have.
            (
                starts[1] as usize + 9,
                vec![5, 0],
                "a snapshot of map 5; the header has 1",
            ),
            // The stack (frame 4) one byte short of an address: its length cut by 1.
            (
                starts[4] as usize + 11,
                19u32.to_le_bytes().to_vec(),
                "a stack frame of 15 bytes of addresses, not a multiple of 8",
            ),
        ];
        for (at, patch, why) in cases {
            let mut b = bytes.clone();
            b[at..at + patch.len()].copy_from_slice(&patch);
            std::fs::write(&tmp.0, &b).unwrap();
            let (got, end) = read_all(&tmp.0);
            let frame = starts.iter().rposition(|s| *s as usize <= at).unwrap();
            assert_eq!(got.len(), frame, "{why}");
            match end {
                Err(RecordError::Corrupt {
                    frame: f,
                    offset,
                    why: w,
                    ..
                }) => {
                    assert_eq!((f, offset), (frame as u64, starts[frame]), "{why}");
                    assert_eq!(w, why);
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_crafted_header_is_refused_without_allocating_its_lengths() {
        let tmp = Tmp::new("hdr");
        let t = Instant::now();
        let mut b = b"SONDEREC".to_vec();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&(MAX_HEADER - 1).to_le_bytes());
        b.extend_from_slice(b"{");
        std::fs::write(&tmp.0, &b).unwrap();
        let e = Reader::open(&tmp.0).err().unwrap().to_string();
        assert!(
            e.contains("the file ends inside the header (1 of 16777215 bytes)"),
            "{e}"
        );
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&tmp.0, &b).unwrap();
        let e = Reader::open(&tmp.0).err().unwrap().to_string();
        assert!(e.contains("a header of 4294967295 bytes"), "{e}");
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&tmp.0, &b).unwrap();
        let e = Reader::open(&tmp.0).err().unwrap().to_string();
        assert!(
            e.contains("recording version 9, this sonde reads versions 1 to 2"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        // Layouts that would overflow or divide by zero later.
        for (key, value, cpus) in [
            (4, 0, None),
            (4, usize::MAX, Some(2)),
            (4, 8, Some(usize::MAX)),
            (usize::MAX, 8, None),
        ] {
            let mut h = header();
            h.maps[0].1 = Layout {
                key_size: key,
                value_size: value,
                per_cpu: cpus,
            };
            let json = serde_json::to_vec(&h).unwrap();
            let mut b = b"SONDEREC".to_vec();
            b.extend_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(&(json.len() as u32).to_le_bytes());
            b.extend_from_slice(&json);
            std::fs::write(&tmp.0, &b).unwrap();
            let e = Reader::open(&tmp.0).err().unwrap().to_string();
            assert!(e.contains("map `counts`: key of"), "{e}");
        }
    }

    /// Files that crashed the `recording` fuzz target before lengths and layouts were
    /// bounded (`fuzz/artifacts/recording/`: a 4 GiB header and frame, layouts whose
    /// sizes overflow, a per-CPU value of 0 bytes). Each is an error now.
    #[test]
    fn fuzz_reproducers_are_errors() {
        let tmp = Tmp::new("repro");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/artifacts/recording");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, &tmp.0).unwrap();
            let (_, end) = read_all(&tmp.0);
            assert!(end.is_err(), "{}: read without an error", path.display());
            seen += 1;
        }
        assert!(seen >= 5, "{}: {seen} reproducers", dir.display());
    }

    /// Random damage anywhere: the reader ends with frames or an error, never a
    /// panic (the test would fail) or a frame past the damage.
    #[test]
    fn random_damage_never_panics() {
        let tmp = Tmp::new("fuzz");
        let (bytes, _) = sample(&tmp);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..500 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            let cut = b.len() - (next() % 64) as usize;
            std::fs::write(&tmp.0, &b[..cut]).unwrap();
            let _ = read_all(&tmp.0);
        }
    }

    /// Frames reach the file at the latest one [`FLUSH_EVERY`] later, with no
    /// `finish`: what a `kill -9` leaves.
    #[test]
    fn frames_reach_the_file_without_finish() {
        let tmp = Tmp::new("flush");
        let mut w = Writer::create(&tmp.0, &header()).unwrap();
        w.record(0, b"first").unwrap();
        std::thread::sleep(FLUSH_EVERY);
        w.flush_if_due().unwrap();
        w.record(0, b"buffered").unwrap();
        w.flush_if_due().unwrap(); // not due yet
        let (got, end) = read_all(&tmp.0);
        assert!(
            matches!(&got[..], [Frame::Record { bytes, .. }] if bytes == b"first"),
            "{got:?}"
        );
        let e = end.unwrap_err();
        assert!(e.to_string().contains("ends without its end frame"), "{e}");
        std::mem::forget(w); // as if killed: no flush on drop
    }

    /// Version 1 files (the committed test recordings) have no end frame.
    #[test]
    fn version_1_ends_at_its_last_frame() {
        let rec = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/tests/tcp_reset.sonderec"
        );
        let (frames, end) = read_all(Path::new(rec));
        end.unwrap();
        assert!(!frames.is_empty());
    }
}
