//! Map contents as bytes and as decoded [`Value`]s.
//!
//! Maps are read with plain `bpf(2)` calls sized from the map's own info, so one
//! reader serves every key and value type; [`MapTable`] decodes them with the
//! object's BTF and sums per-CPU values. Reads happen on tick or scrape, never per
//! event (stack lookups excepted: one lookup per stack).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use aya::maps::{Map, MapData};

use crate::bpf::decode::{DecodeEnv, Decoder};
use crate::bpf::value::Value;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf_map_call(cmd: libc::c_long, attr: &mut MapElemAttr) -> std::io::Result<()> {
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix for map element
    // commands; the pointers in it point at buffers sized from the map's info.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sizes of a map's keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub key_size: usize,
    pub value_size: usize,
    /// Per-CPU maps hold one value per possible CPU, each padded to 8 bytes.
    pub per_cpu: Option<usize>,
}

impl Layout {
    /// Splits a per-CPU value buffer into one slice per CPU.
    pub fn per_cpu_values<'a>(&self, value: &'a [u8]) -> Vec<&'a [u8]> {
        match self.per_cpu {
            Some(_) => {
                // A size of 0 (or one that overflows) only comes from a corrupt
                // recording's layout: nothing to split.
                let Some(stride) = self
                    .value_size
                    .checked_next_multiple_of(8)
                    .filter(|s| *s > 0)
                else {
                    return Vec::new();
                };
                value
                    .chunks(stride)
                    .map(|c| &c[..self.value_size.min(c.len())])
                    .collect()
            }
            None => vec![value],
        }
    }
}

/// One map, read as raw bytes.
pub struct RawMap {
    fd: OwnedFd,
    pub layout: Layout,
}

impl RawMap {
    pub fn from_map_data(data: &MapData, per_cpu: bool) -> std::io::Result<Self> {
        let info = data.info().map_err(std::io::Error::other)?;
        let fd = data.fd().as_fd().try_clone_to_owned()?;
        let per_cpu = if per_cpu {
            Some(aya::util::nr_cpus().map_err(|(_, e)| e)?)
        } else {
            None
        };
        Ok(RawMap {
            fd,
            layout: Layout {
                key_size: info.key_size() as usize,
                value_size: info.value_size() as usize,
                per_cpu,
            },
        })
    }

    fn value_buf_len(&self) -> usize {
        match self.layout.per_cpu {
            Some(n) => self.layout.value_size.next_multiple_of(8) * n,
            None => self.layout.value_size,
        }
    }

    /// Looks one key up; `None` when absent.
    pub fn lookup(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.value_buf_len()];
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf_map_call(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one key; absent keys are not an error.
    pub fn delete(&self, key: &[u8]) -> std::io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        match bpf_map_call(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Every (key, value) pair. Entries deleted while iterating are skipped.
    pub fn entries(&self) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut key: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; self.layout.key_size];
            let mut attr = MapElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                key: key.as_ref().map(|k| k.as_ptr() as u64).unwrap_or(0),
                value: next.as_mut_ptr() as u64,
                ..Default::default()
            };
            match bpf_map_call(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
            if let Some(v) = self.lookup(&next)? {
                out.push((next.clone(), v));
            }
            key = Some(next);
            if out.len() > 1_000_000 {
                break;
            }
        }
        Ok(out)
    }
}

struct TableEntry {
    raw: RawMap,
    key: Option<Decoder>,
    value: Option<Decoder>,
}

/// The maps of one loaded program, by name, readable from scripts.
pub struct MapTable {
    maps: HashMap<String, TableEntry>,
    env: Mutex<Option<Arc<DecodeEnv>>>,
    /// Stacks read (and deleted from the kernel's map) in the last
    /// [`STACK_CACHE_FOR`]: records submitted together often share one stack id,
    /// and only the first read finds it in the kernel.
    stacks: Mutex<HashMap<u32, CachedStack>>,
}

/// A stack read from the kernel: when, and its frames.
type CachedStack = (std::time::Instant, Arc<Vec<u64>>);

/// How long a stack read from the kernel answers later reads of its id.
const STACK_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

impl MapTable {
    pub(crate) fn new() -> Self {
        MapTable {
            maps: HashMap::new(),
            env: Mutex::new(None),
            stacks: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(
        &mut self,
        name: &str,
        map: &Map,
        key: Option<Decoder>,
        value: Option<Decoder>,
    ) {
        let (data, per_cpu) = match map {
            Map::HashMap(d) | Map::LruHashMap(d) | Map::Array(d) | Map::StackTraceMap(d) => {
                (d, false)
            }
            Map::PerCpuHashMap(d) | Map::PerCpuLruHashMap(d) | Map::PerCpuArray(d) => (d, true),
            _ => return,
        };
        match RawMap::from_map_data(data, per_cpu) {
            Ok(raw) => {
                self.maps
                    .insert(name.to_string(), TableEntry { raw, key, value });
            }
            Err(e) => tracing::warn!(map = name, error = %e, "map cannot be read"),
        }
    }

    /// What decoding this table's keys and values needs.
    pub fn needs(&self) -> crate::bpf::decode::Needs {
        self.maps
            .values()
            .flat_map(|e| e.key.iter().chain(e.value.iter()))
            .fold(Default::default(), |acc, d| acc | d.needs())
    }

    /// Sets the environment values are decoded with (pods, names).
    pub fn set_env(&self, env: Arc<DecodeEnv>) {
        *self.env.lock().unwrap_or_else(|e| e.into_inner()) = Some(env);
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.maps.keys().cloned().collect();
        v.sort();
        v
    }

    /// Raw entries of a map, per-CPU values unsummed, for recording.
    pub fn raw_entries(&self, name: &str) -> Option<std::io::Result<RawEntries>> {
        self.maps.get(name).map(|e| e.raw.entries())
    }

    /// The layout of a map.
    pub fn layout(&self, name: &str) -> Option<Layout> {
        self.maps.get(name).map(|e| e.raw.layout)
    }

    /// Sum over CPUs of a per-CPU array's slot 0 (the `dropped` convention).
    pub fn sum_slot0(&self, name: &str) -> u64 {
        let Some(e) = self.maps.get(name) else {
            return 0;
        };
        let Ok(Some(v)) = e.raw.lookup(&0u32.to_ne_bytes()) else {
            return 0;
        };
        e.raw
            .layout
            .per_cpu_values(&v)
            .iter()
            .map(|c| {
                let mut b = [0u8; 8];
                let n = c.len().min(8);
                b[..n].copy_from_slice(&c[..n]);
                u64::from_ne_bytes(b)
            })
            .sum()
    }

    /// Frames of a kernel stack in the `stacks` map. The id is freed once read, so
    /// the map never fills with stacks already reported.
    pub fn stack(&self, id: u32) -> Vec<u64> {
        let Some(e) = self.maps.get("stacks") else {
            return Vec::new();
        };
        let now = std::time::Instant::now();
        let mut cache = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (at, _)| now.duration_since(*at) < STACK_CACHE_FOR);
        if let Some((_, frames)) = cache.get(&id) {
            return frames.to_vec();
        }
        let key = id.to_ne_bytes();
        let found = e.raw.lookup(&key);
        // Deleted once read: the kernel's buckets are reused by new stacks.
        let _ = e.raw.delete(&key);
        let frames: Vec<u64> = match found {
            Ok(Some(v)) => v
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                .take_while(|ip| *ip != 0)
                .collect(),
            _ => Vec::new(),
        };
        if !frames.is_empty() {
            cache.insert(id, (now, Arc::new(frames.clone())));
        }
        frames
    }

    /// Decoded entries, per-CPU values summed.
    pub fn decoded(&self, name: &str) -> Result<Vec<Entry>, MapReadError> {
        let e = self.maps.get(name).ok_or_else(|| MapReadError::NoSuchMap {
            map: name.to_string(),
            known: self.names(),
        })?;
        let entries = e.raw.entries().map_err(|error| MapReadError::Read {
            map: name.to_string(),
            error,
        })?;
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let env = env.ok_or(MapReadError::NotReady)?;
        decode_entries(
            &e.raw.layout,
            e.key.as_ref(),
            e.value.as_ref(),
            &entries,
            &env,
        )
    }
}

/// Why a script's read of a map (`bpf::map(name)`) gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum MapReadError {
    #[error("no map `{map}`: this script has no kernel program")]
    NoProgram { map: String },
    #[error("no map `{map}` in this program; maps: {}", known.join(", "))]
    NoSuchMap { map: String, known: Vec<String> },
    #[error("no map `{map}` in this recording")]
    NotRecorded { map: String },
    #[error("reading map `{map}`: {error}")]
    Read { map: String, error: std::io::Error },
    #[error("maps are not ready yet")]
    NotReady,
    #[error(transparent)]
    Decode(#[from] crate::bpf::decode::DecodeError),
}

/// One map entry decoded: a key and its value (summed over CPUs for per-CPU maps).
/// Without a type to decode them by, both are [`Value::Bytes`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Value,
    pub value: Value,
}

/// Decodes raw entries: keys and values by BTF, per-CPU values summed.
pub fn decode_entries(
    layout: &Layout,
    key: Option<&Decoder>,
    value: Option<&Decoder>,
    entries: &[(Vec<u8>, Vec<u8>)],
    env: &DecodeEnv,
) -> Result<Vec<Entry>, MapReadError> {
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let key = match key {
            Some(d) => d.decode(k, env)?,
            None => Value::Bytes(k.clone()),
        };
        let mut sum: Option<Value> = None;
        for cpu in layout.per_cpu_values(v) {
            let one = match value {
                Some(d) => d.decode(cpu, env)?,
                None => Value::Bytes(cpu.to_vec()),
            };
            match &mut sum {
                Some(s) => s.accumulate(&one),
                None => sum = Some(one),
            }
        }
        out.push(Entry {
            key,
            value: sum.unwrap_or(Value::Unit),
        });
    }
    Ok(out)
}

/// A map's `(key, value)` pairs as raw bytes.
pub type RawEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// `BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offsets of `run_time_ns`, `run_cnt` (uapi, since 5.1) and `recursion_misses`
/// (since 5.12; zero before) in `struct bpf_prog_info`.
const PROG_INFO_RUN_TIME_NS: usize = 192;
const PROG_INFO_RUN_CNT: usize = 200;
const PROG_INFO_RECURSION_MISSES: usize = 208;
const PROG_INFO_LEN: usize = 216;

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// A loaded program's kernel-side statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgramRunStats {
    /// Runs; 0 unless `kernel.bpf_stats_enabled` is 1 (the kernel counts them only then).
    pub runs: u64,
    /// Total run time in ns; 0 unless `kernel.bpf_stats_enabled` is 1.
    pub run_ns: u64,
    /// Hook hits the kernel skipped because the program was already running on that
    /// CPU (an interrupt or NMI nested in it): events the program never saw. Always
    /// counted (kernel 5.12+).
    pub recursion_misses: u64,
}

/// A loaded program's kernel-side statistics (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn program_run_stats(fd: BorrowedFd<'_>) -> std::io::Result<ProgramRunStats> {
    let mut info = [0u8; PROG_INFO_LEN];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: PROG_INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points to a valid InfoAttr and info to a buffer of info_len bytes,
    // both live for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let word = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap_or([0; 8]));
    Ok(ProgramRunStats {
        runs: word(PROG_INFO_RUN_CNT),
        run_ns: word(PROG_INFO_RUN_TIME_NS),
        recursion_misses: word(PROG_INFO_RECURSION_MISSES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero or overflowing value size (only a damaged recording's layout has one;
    /// the reader refuses those too) splits into nothing instead of panicking.
    #[test]
    fn per_cpu_values_of_impossible_sizes_are_empty() {
        for value_size in [0, usize::MAX] {
            let l = Layout {
                key_size: 4,
                value_size,
                per_cpu: Some(2),
            };
            assert!(l.per_cpu_values(&[1, 2, 3]).is_empty(), "{value_size}");
        }
        let l = Layout {
            key_size: 4,
            value_size: 4,
            per_cpu: Some(2),
        };
        assert_eq!(
            l.per_cpu_values(&[1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8]),
            [&[1, 2, 3, 4][..], &[5, 6, 7, 8]]
        );
    }
}
