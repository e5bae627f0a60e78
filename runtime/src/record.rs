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
//! ```
//!
//! Symbol and stack frames come before the record that needed them.
//!
//! The header keeps what decoding needs from the kernel that made the records (its
//! drop reason names), so a recording replays the same on any machine.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::bpf::maps::Layout;

const MAGIC: &[u8; 8] = b"SONDEREC";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a sonde recording (bad magic)")]
    BadMagic { path: String },
    #[error("{path}: recording version {version}, this sonde reads version {VERSION}")]
    Version { path: String, version: u32 },
    #[error("{path}: bad header: {reason}")]
    Header { path: String, reason: String },
    #[error("{path}: truncated or corrupt frame at byte {offset}")]
    Corrupt { path: String, offset: u64 },
}

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

/// Writes a recording.
pub struct Writer {
    out: BufWriter<File>,
    path: String,
    start: std::time::Instant,
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
        Ok(Writer {
            out,
            path: p,
            start: std::time::Instant::now(),
        })
    }

    fn frame(&mut self, tag: u8, index: u16, payload: &[&[u8]]) -> Result<(), RecordError> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let t = self.start.elapsed().as_nanos() as u64;
        let io = |source| RecordError::Io {
            path: self.path.clone(),
            source,
        };
        let mut head = [0u8; 15];
        head[0] = tag;
        head[1..9].copy_from_slice(&t.to_le_bytes());
        head[9..11].copy_from_slice(&index.to_le_bytes());
        head[11..15].copy_from_slice(&(len as u32).to_le_bytes());
        self.out.write_all(&head).map_err(io)?;
        for p in payload {
            self.out.write_all(p).map_err(io)?;
        }
        Ok(())
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

    pub fn finish(mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|source| RecordError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads a recording frame by frame.
pub struct Reader {
    input: BufReader<File>,
    path: String,
    pub header: Header,
    offset: u64,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let io = |source| RecordError::Io {
            path: p.clone(),
            source,
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
        input.read_exact(&mut word).map_err(io)?;
        let version = u32::from_le_bytes(word);
        if version != VERSION {
            return Err(RecordError::Version { path: p, version });
        }
        input.read_exact(&mut word).map_err(io)?;
        let len = u32::from_le_bytes(word) as usize;
        let json = read_len(&mut input, len).map_err(io)?;
        let header: Header = serde_json::from_slice(&json).map_err(|e| RecordError::Header {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        Ok(Reader {
            input,
            path: p,
            header,
            offset: 16 + len as u64,
        })
    }

    /// The next frame; `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordError> {
        let corrupt = |offset| RecordError::Corrupt {
            path: self.path.clone(),
            offset,
        };
        let mut head = [0u8; 15];
        match self.input.read_exact(&mut head[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(source) => {
                return Err(RecordError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        self.input
            .read_exact(&mut head[1..])
            .map_err(|_| corrupt(self.offset))?;
        let t_ns = u64::from_le_bytes(head[1..9].try_into().unwrap_or_default());
        let index = u16::from_le_bytes([head[9], head[10]]);
        let len = u32::from_le_bytes(head[11..15].try_into().unwrap_or_default()) as usize;
        let payload = read_len(&mut self.input, len).map_err(|_| corrupt(self.offset))?;
        let at = self.offset;
        self.offset += 15 + len as u64;
        Ok(Some(match head[0] {
            TAG_RECORD => Frame::Record {
                t_ns,
                source: index,
                bytes: payload,
            },
            TAG_TICK => Frame::Tick { t_ns },
            TAG_SYMBOL if payload.len() >= 8 => Frame::Symbol {
                addr: u64::from_le_bytes(payload[..8].try_into().unwrap_or_default()),
                name: String::from_utf8_lossy(&payload[8..]).into_owned(),
            },
            TAG_STACK if payload.len() >= 4 && (payload.len() - 4).is_multiple_of(8) => {
                Frame::Stack {
                    id: u32::from_le_bytes(payload[..4].try_into().unwrap_or_default()),
                    frames: payload[4..]
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                }
            }
            TAG_SNAPSHOT => {
                let (_, layout) = self
                    .header
                    .maps
                    .get(index as usize)
                    .ok_or_else(|| corrupt(at))?;
                // The layout comes from the file: every size is checked, not trusted.
                let value_len = match layout.per_cpu {
                    Some(n) => layout
                        .value_size
                        .checked_next_multiple_of(8)
                        .and_then(|v| v.checked_mul(n)),
                    None => Some(layout.value_size),
                };
                let stride = value_len
                    .and_then(|v| v.checked_add(layout.key_size))
                    .ok_or_else(|| corrupt(at))?;
                let count = payload
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
                    .ok_or_else(|| corrupt(at))?;
                let want = count.checked_mul(stride).and_then(|n| n.checked_add(4));
                if want != Some(payload.len()) {
                    return Err(corrupt(at));
                }
                let entries = payload[4..]
                    .chunks_exact(stride.max(1))
                    .map(|c| (c[..layout.key_size].to_vec(), c[layout.key_size..].to_vec()))
                    .collect();
                Frame::Snapshot {
                    t_ns,
                    map: index,
                    entries,
                }
            }
            _ => return Err(corrupt(at)),
        }))
    }
}

/// Reads `len` bytes, allocating as they arrive: a corrupt length in a file costs no
/// more memory than the file holds. Fewer bytes than `len` is `UnexpectedEof`.
fn read_len(input: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len.min(1 << 16));
    input.take(len as u64).read_to_end(&mut out)?;
    if out.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("sonde-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.sonderec");
        let header = Header {
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
        };
        let mut w = Writer::create(&path, &header).unwrap();
        w.record(0, b"abc").unwrap();
        let entry = (vec![1, 0, 0, 0], vec![2; 16]);
        w.snapshot(0, std::slice::from_ref(&entry)).unwrap();
        w.tick().unwrap();
        w.symbol(0xffff_0001, "tcp_v4_rcv+0x91").unwrap();
        w.stack(7, &[1, 2]).unwrap();
        w.finish().unwrap();

        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.header, header);
        assert!(
            matches!(r.next_frame().unwrap(), Some(Frame::Record { source: 0, bytes, .. }) if bytes == b"abc")
        );
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
        assert!(r.next_frame().unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Files found by fuzzing (`fuzz/artifacts/recording/`, the `recording` target):
    /// lengths and layouts that claim more than the file holds or overflow. Each is an
    /// error or reads cleanly, and a replay of what was read decodes; none panics or
    /// allocates what the file claims.
    #[test]
    fn fuzz_reproducers_are_errors() {
        macro_rules! repro {
            ($name:literal) => {
                (
                    $name,
                    include_bytes!(concat!("../../fuzz/artifacts/recording/", $name)).as_slice(),
                )
            };
        }
        let cases = [
            repro!("oom-header-length"),
            repro!("oom-frame-length"),
            repro!("snapshot-layout-overflow"),
            repro!("snapshot-stride-overflow"),
            repro!("snapshot-per-cpu-zero-value"),
        ];
        let dir = std::env::temp_dir().join(format!("sonde-rec-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = crate::bpf::decode::DecodeEnv::offline(std::sync::Arc::new(
            crate::pods::HostResolver::with_host_netns(1, "n"),
        ));
        for (name, bytes) in cases {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            let mut frames = Vec::new();
            let read = Reader::open(&path).and_then(|mut r| {
                while let Some(f) = r.next_frame()? {
                    frames.push(f);
                }
                Ok(r.header)
            });
            match (name, &read) {
                ("oom-header-length", Err(RecordError::Io { .. })) => {}
                ("oom-frame-length", Err(RecordError::Corrupt { offset, .. })) => {
                    assert_eq!(*offset, bytes.len() as u64 - 15 - 3, "{name}")
                }
                (
                    "snapshot-layout-overflow" | "snapshot-stride-overflow",
                    Err(RecordError::Corrupt { .. }),
                ) => {}
                ("snapshot-per-cpu-zero-value", Ok(header)) => {
                    let Some(Frame::Snapshot { map, entries, .. }) = frames.first() else {
                        panic!("{name}: {frames:?}");
                    };
                    let (_, layout) = &header.maps[*map as usize];
                    let decoded =
                        crate::bpf::maps::decode_entries(layout, None, None, entries, &env)
                            .unwrap();
                    assert_eq!(decoded.len(), 1, "{name}");
                }
                _ => panic!("{name}: {read:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_length_past_the_end_allocates_nothing() {
        let mut short: &[u8] = b"abc";
        let e = read_len(&mut short, usize::MAX).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut exact: &[u8] = b"abcd";
        assert_eq!(read_len(&mut exact, 3).unwrap(), b"abc");
    }

    #[test]
    fn rejects_other_files() {
        let path = std::env::temp_dir().join(format!("sonde-bad-{}", std::process::id()));
        std::fs::write(&path, b"not a recording").unwrap();
        assert!(matches!(
            Reader::open(&path),
            Err(RecordError::BadMagic { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
