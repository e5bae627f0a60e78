//! Loading kernel programs: embedded objects → aya → attached hooks, maps and events.
//!
//! [`load`] takes a program from the [`catalog`], sets its `const volatile` knobs from
//! the script's params of the same name, relocates it against the kernel's BTF and
//! attaches the first variant whose hooks exist on this kernel, recording why the
//! others were skipped. The result, [`Loaded`], owns the attachments (dropping it
//! detaches everything) and hands out the ring buffers ([`EventSource`]) and a
//! [`maps::MapTable`] that scripts read.
//!
//! ```no_run
//! use sonde::{bpf, btf::KernelBtf};
//! let btf = KernelBtf::locate(None)?;
//! let spec = bpf::catalog::find("tcp_reset").unwrap();
//! let loaded = bpf::load(spec, &[], &btf)?;
//! println!("variant {}", loaded.variant.name);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod catalog;
pub mod decode;
pub mod error;
pub mod features;
pub mod ksyms;
pub mod live;
pub mod maps;
pub mod reference;
pub mod tc;
pub mod value;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use aya::programs::{BtfTracePoint, KProbe, RawTracePoint, SchedClassifier, TracePoint};
use aya::{Ebpf, EbpfLoader};

use crate::bpf::catalog::{Hook, ProgramSpec, Variant};
use crate::bpf::decode::{Decoder, Knob, KnobKind, ObjectTypes};
use crate::bpf::maps::MapTable;
use crate::btf::KernelBtf;
use crate::script::ParamValue;

pub use error::{KnobError, LoadError, LoadFailure, SkipReason, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("unknown kernel program `{name}`; built-in programs: {known}")]
    UnknownProgram { name: String, known: String },
    #[error("program `{program}`: no variant can run on this kernel: {}", skipped.iter().map(|s| format!("{}: {}", s.variant, s.reason)).collect::<Vec<_>>().join("; "))]
    NoVariant {
        program: String,
        skipped: Vec<Skipped>,
    },
    #[error("program `{program}`: knob `{knob}`: {reason}")]
    Knob {
        program: String,
        knob: String,
        reason: KnobError,
    },
    #[error("program `{program}`: {source}")]
    Decode {
        program: String,
        source: decode::DecodeError,
    },
    #[error(
        "program `{program}`: loading it against the kernel BTF from {btf} failed inside \
         the loader ({message}); the BTF is probably damaged: `sonde btf` checks it"
    )]
    Panicked {
        program: String,
        btf: String,
        message: String,
    },
    #[error("program `{program}`: cannot poll ring buffer `{map}`: {source}")]
    Poll {
        program: String,
        map: String,
        source: std::io::Error,
    },
}

/// A built-in program, looked up once by name: holding one means the program exists,
/// so nothing past the lookup (a script's manifest, the loader, the daemon) has an
/// "unknown program" case to handle.
///
/// ```
/// let p = sonde::bpf::Program::find("tcp_reset").unwrap();
/// assert_eq!(p.name(), "tcp_reset");
/// assert!(sonde::bpf::Program::find("tcp_rest").is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Program(&'static ProgramSpec);

impl Program {
    pub fn find(name: &str) -> Result<Program, BpfError> {
        catalog::find(name)
            .map(Program)
            .ok_or_else(|| BpfError::UnknownProgram {
                name: name.into(),
                known: catalog::names().join(", "),
            })
    }

    pub fn spec(self) -> &'static ProgramSpec {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }
}

/// Two handles are the same program when they name the same one.
impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Program {}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A variant that was not used, and why.
#[derive(Debug)]
pub struct Skipped {
    pub variant: &'static str,
    pub reason: SkipReason,
}

/// A ring buffer of a loaded program with the decoder of its records.
pub struct EventSource {
    pub map: String,
    pub ring: RingBuf<MapData>,
    pub decoder: Decoder,
}

/// A program loaded and attached. Dropping it detaches and unloads everything.
pub struct Loaded {
    pub spec: &'static ProgramSpec,
    pub variant: &'static Variant,
    pub skipped: Vec<Skipped>,
    /// Knob values as set, for `sonde probes` and `/status`.
    pub knobs: Vec<(String, String)>,
    pub maps: Arc<MapTable>,
    /// The attached programs, by name: descriptors for reading their run statistics.
    pub programs: Arc<[(String, OwnedFd)]>,
    sources: Vec<EventSource>,
    /// Traffic control attachments (declared before `_ebpf`: detached first).
    tc: Option<tc::TcAttacher>,
    _ebpf: Arc<Mutex<Ebpf>>,
}

impl Loaded {
    /// Takes the ring buffers (once).
    pub fn take_sources(&mut self) -> Vec<EventSource> {
        std::mem::take(&mut self.sources)
    }

    /// Interfaces a program with [`Hook::Tc`] hooks is attached to now.
    pub fn tc_interfaces(&self) -> Vec<String> {
        self.tc
            .as_ref()
            .map(tc::TcAttacher::interfaces)
            .unwrap_or_default()
    }

    /// Events the kernel could not queue (ring buffer full), from the `dropped` map.
    pub fn lost(&self) -> u64 {
        self.maps.sum_slot0("dropped")
    }
}

/// The kernel's statistics of each attached program (runs and run time only when
/// `kernel.bpf_stats_enabled` is 1, recursion misses always).
pub fn run_stats(programs: &[(String, OwnedFd)]) -> Vec<(&str, maps::ProgramRunStats)> {
    programs
        .iter()
        .filter_map(|(name, fd)| {
            let stats = maps::program_run_stats(fd.as_fd()).ok()?;
            Some((name.as_str(), stats))
        })
        .collect()
}

/// Whether the kernel is timing BPF programs (`kernel.bpf_stats_enabled`).
pub fn stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// Why each variant of a program can or cannot run here, without loading anything.
pub fn assess(
    spec: &ProgramSpec,
    btf: Option<&KernelBtf>,
) -> Vec<(&'static Variant, Result<(), Unavailable>)> {
    spec.variants
        .iter()
        .map(|v| (v, assess_variant(v, btf)))
        .collect()
}

fn assess_variant(v: &Variant, btf: Option<&KernelBtf>) -> Result<(), Unavailable> {
    // Every object is CO-RE: without the kernel's BTF nothing relocates.
    let Some(btf) = btf else {
        return Err(Unavailable::NoBtf);
    };
    for req in v.requires {
        features::check_require(req, btf)?;
    }
    if v.attach
        .iter()
        .any(|a| matches!(a.hook, Hook::BtfTracepoint { .. }))
        && !matches!(btf.source(), crate::btf::BtfSource::Sysfs(_))
    {
        return Err(Unavailable::NotKernelBtf {
            btf: btf.source().to_string(),
        });
    }
    for a in v.attach {
        features::check_hook(&a.hook)?;
    }
    Ok(())
}

/// Checks that a param value fits a knob, without loading anything.
pub fn check_knob(knob: &Knob, value: &ParamValue) -> Result<(), KnobError> {
    knob_bytes(knob, value).map(|_| ())
}

/// The knobs of a built-in program, read from its object once.
pub fn knobs(spec: &ProgramSpec) -> &'static [Knob] {
    static KNOBS: std::sync::OnceLock<Mutex<HashMap<&'static str, &'static [Knob]>>> =
        std::sync::OnceLock::new();
    let mut all = KNOBS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(spec.name).or_insert_with(|| {
        let knobs = ObjectTypes::parse(spec.object)
            .map(|t| t.knobs())
            .unwrap_or_default();
        // Once per built-in program: a bounded, deliberate leak.
        Box::leak(knobs.into_boxed_slice())
    })
}

/// Encodes a param as the bytes of a knob.
fn knob_bytes(knob: &Knob, value: &ParamValue) -> Result<Vec<u8>, KnobError> {
    let int = match (knob.kind, value) {
        (KnobKind::Bool, ParamValue::Bool(b)) => *b as i64,
        (KnobKind::Int { .. }, ParamValue::Int(i)) => *i,
        (KnobKind::Int { .. }, ParamValue::Bool(b)) => *b as i64,
        (KnobKind::Bool, ParamValue::Int(i)) => (*i != 0) as i64,
        (KnobKind::Other, _) => return Err(KnobError::NotScalar),
        (KnobKind::Bool, other) => {
            return Err(KnobError::ExpectedBool {
                got: other.describe(),
            })
        }
        (KnobKind::Int { .. }, other) => {
            return Err(KnobError::ExpectedInt {
                got: other.describe(),
            })
        }
    };
    if let KnobKind::Int { signed } = knob.kind {
        let bits = (knob.size * 8) as u32;
        let fits = if bits >= 64 {
            signed || int >= 0
        } else if signed {
            let lim = 1i64 << (bits - 1);
            (-lim..lim).contains(&int)
        } else {
            int >= 0 && (int as u64) < (1u64 << bits)
        };
        if !fits {
            return Err(KnobError::TooWide {
                value: int,
                signed,
                bits,
            });
        }
    }
    Ok(int.to_ne_bytes()[..knob.size.min(8)].to_vec())
}

/// The script param that picks a variant by name instead of the first that works:
/// `sonde run kernel_latency.rhai -p variant=kprobe`. A script declares it
/// (`variant: "auto"`) to let its users choose; `auto` or empty is the default order.
pub const VARIANT_PARAM: &str = "variant";

/// The variant `params` ask for, checked against the program's variants.
fn wanted_variant(
    spec: &ProgramSpec,
    params: &[(String, ParamValue)],
) -> Result<Option<&'static str>, BpfError> {
    let Some((_, value)) = params.iter().find(|(n, _)| n == VARIANT_PARAM) else {
        return Ok(None);
    };
    check_variant(spec, value).map_err(|reason| BpfError::Knob {
        program: spec.name.into(),
        knob: VARIANT_PARAM.into(),
        reason,
    })
}

/// The variant a `variant` param names (`None`: `auto`), or why it names none.
pub fn check_variant(
    spec: &ProgramSpec,
    value: &ParamValue,
) -> Result<Option<&'static str>, KnobError> {
    let asked = match value {
        ParamValue::Str(s) => s.as_str(),
        other => {
            return Err(KnobError::VariantNotString {
                got: other.describe(),
            })
        }
    };
    if asked.is_empty() || asked == "auto" {
        return Ok(None);
    }
    match spec.variants.iter().find(|v| v.name == asked) {
        Some(v) => Ok(Some(v.name)),
        None => Err(KnobError::NoSuchVariant {
            asked: asked.to_string(),
            known: spec.variants.iter().map(|v| v.name).collect(),
        }),
    }
}

/// Loads `spec` with the knobs from `params`, attaching the first variant that works
/// (or the one the `variant` param names).
///
/// A panic in the loader (aya-obj relocating against a damaged BTF that got past
/// [`crate::btf::validate`]) is [`BpfError::Panicked`] for this program only:
/// whatever was loaded is dropped, and the caller goes on.
pub fn load(
    spec: &'static ProgramSpec,
    params: &[(String, ParamValue)],
    btf: &KernelBtf,
) -> Result<Loaded, BpfError> {
    crate::panic::catch(|| load_contained(spec, params, btf)).unwrap_or_else(|message| {
        tracing::error!(program = spec.name, btf = %btf.source(), %message, "the loader panicked; this program is not loaded");
        Err(BpfError::Panicked {
            program: spec.name.into(),
            btf: btf.source().to_string(),
            message,
        })
    })
}

fn load_contained(
    spec: &'static ProgramSpec,
    params: &[(String, ParamValue)],
    btf: &KernelBtf,
) -> Result<Loaded, BpfError> {
    let prepared = Prepared::new(spec, params)?;
    let wanted = wanted_variant(spec, params)?;
    let mut skipped = Vec::new();
    for variant in spec.variants {
        if wanted.is_some_and(|w| w != variant.name) {
            skipped.push(Skipped {
                variant: variant.name,
                reason: SkipReason::NotAsked,
            });
            continue;
        }
        match prepared.attempt(variant, params, btf) {
            Ok(mut loaded) => {
                tracing::info!(
                    program = spec.name,
                    variant = variant.name,
                    "program attached"
                );
                loaded.skipped = skipped;
                return Ok(loaded);
            }
            Err(reason) => {
                log_skipped(spec.name, variant.name, &reason);
                skipped.push(Skipped {
                    variant: variant.name,
                    reason,
                });
            }
        }
    }
    Err(BpfError::NoVariant {
        program: spec.name.into(),
        skipped,
    })
}

/// One line per variant not used: DEBUG when this kernel is known to lack what it
/// needs, WARN when it was tried and failed; the verifier's log at DEBUG.
fn log_skipped(program: &str, variant: &str, reason: &SkipReason) {
    match reason {
        SkipReason::Failed(e) => {
            tracing::warn!(program, variant, stage = e.stage(), reason = %reason, "variant failed to load");
            if let Some(log) = e.verifier_log() {
                tracing::debug!(program, variant, verifier_log = %log, "the verifier's log");
            }
        }
        _ => tracing::debug!(program, variant, %reason, "variant skipped"),
    }
}

/// Tries every variant of `spec` on its own, with the knobs' defaults, and drops it
/// again: what `sonde probes --verbose` reports. A variant known not to run here is
/// not tried; one that loads and attaches is detached right away.
pub fn trial(spec: &'static ProgramSpec, btf: &KernelBtf) -> Result<Vec<Trial>, BpfError> {
    let prepared = Prepared::new(spec, &[])?;
    Ok(spec
        .variants
        .iter()
        .map(|variant| {
            let result = crate::panic::catch(|| prepared.attempt(variant, &[], btf))
                .unwrap_or_else(|message| {
                    Err(SkipReason::Failed(Box::new(LoadError {
                        program: spec.name,
                        variant: variant.name,
                        failure: LoadFailure::Panicked { message },
                    })))
                });
            (variant, result.map(drop))
        })
        .collect())
}

/// A variant and what came of loading it on its own.
pub type Trial = (&'static Variant, Result<(), SkipReason>);

/// A program's object types and the knob values its params set, ready for any of
/// its variants.
struct Prepared {
    spec: &'static ProgramSpec,
    types: ObjectTypes,
    /// The knobs the object declares.
    declared: Vec<Knob>,
    /// Knob name, its bytes, and the value as shown.
    knobs: Vec<(String, Vec<u8>, String)>,
}

impl Prepared {
    fn new(spec: &'static ProgramSpec, params: &[(String, ParamValue)]) -> Result<Self, BpfError> {
        let types = ObjectTypes::parse(spec.object).map_err(|source| BpfError::Decode {
            program: spec.name.into(),
            source,
        })?;
        let declared = types.knobs();
        let mut knobs = Vec::new();
        for (name, value) in params {
            if let Some(knob) = declared.iter().find(|k| &k.name == name) {
                let bytes = knob_bytes(knob, value).map_err(|reason| BpfError::Knob {
                    program: spec.name.into(),
                    knob: name.clone(),
                    reason,
                })?;
                knobs.push((name.clone(), bytes, value.to_string()));
            }
        }
        raise_memlock_once();
        Ok(Prepared {
            spec,
            types,
            declared,
            knobs,
        })
    }

    /// Loads and attaches `variant`, or says why it cannot be.
    fn attempt(
        &self,
        variant: &'static Variant,
        params: &[(String, ParamValue)],
        btf: &KernelBtf,
    ) -> Result<Loaded, SkipReason> {
        assess_variant(variant, Some(btf))?;
        let mut values = self.knobs.clone();
        for (k, v) in variant.knobs {
            values.retain(|(n, _, _)| n != k);
            if let Some(knob) = self.declared.iter().find(|kn| kn.name == *k) {
                let bytes = knob_bytes(knob, &ParamValue::Bool(*v)).unwrap_or_default();
                values.push((k.to_string(), bytes, v.to_string()));
            }
        }
        let (ebpf, maps, sources, programs, tc) =
            load_variant(self.spec, variant, &values, params, btf, &self.types).map_err(
                |failure| {
                    SkipReason::Failed(Box::new(LoadError {
                        program: self.spec.name,
                        variant: variant.name,
                        failure,
                    }))
                },
            )?;
        Ok(Loaded {
            spec: self.spec,
            variant,
            skipped: Vec::new(),
            knobs: values.into_iter().map(|(n, _, shown)| (n, shown)).collect(),
            maps: Arc::new(maps),
            programs: programs.into(),
            sources,
            tc,
            _ebpf: ebpf,
        })
    }
}

type LoadedParts = (
    Arc<Mutex<Ebpf>>,
    MapTable,
    Vec<EventSource>,
    Vec<(String, OwnedFd)>,
    Option<tc::TcAttacher>,
);

fn load_variant(
    spec: &ProgramSpec,
    variant: &Variant,
    knobs: &[(String, Vec<u8>, String)],
    params: &[(String, ParamValue)],
    btf: &KernelBtf,
    types: &ObjectTypes,
) -> Result<LoadedParts, LoadFailure> {
    let mut loader = EbpfLoader::new();
    loader.btf(Some(btf.aya()));
    for (name, bytes, _) in knobs {
        loader.override_global(name.as_str(), bytes.as_slice(), true);
    }
    let mut ebpf = loader
        .load(spec.object)
        .map_err(|error| LoadFailure::Object {
            error: Box::new(error),
        })?;
    let mut programs = Vec::with_capacity(variant.attach.len());
    let mut tc_programs = Vec::new();
    for &attach in variant.attach {
        let prog = ebpf
            .program_mut(attach.program)
            .ok_or(LoadFailure::NoProgram {
                program: attach.program,
            })?;
        let wrong_type = |error| LoadFailure::WrongType {
            attach,
            error: Box::new(error),
        };
        let load = |error| LoadFailure::Load {
            attach,
            error: Box::new(error),
        };
        let attach_failed = |error| LoadFailure::Attach {
            attach,
            error: Box::new(error),
        };
        match attach.hook {
            Hook::Tracepoint { category, name } => {
                let tp: &mut TracePoint = prog.try_into().map_err(wrong_type)?;
                tp.load().map_err(load)?;
                tp.attach(category, name).map_err(attach_failed)?;
            }
            Hook::RawTracepoint { name } => {
                let tp: &mut RawTracePoint = prog.try_into().map_err(wrong_type)?;
                tp.load().map_err(load)?;
                tp.attach(name).map_err(attach_failed)?;
            }
            Hook::BtfTracepoint { name } => {
                let tp: &mut BtfTracePoint = prog.try_into().map_err(wrong_type)?;
                tp.load(name, btf.aya()).map_err(load)?;
                tp.attach().map_err(attach_failed)?;
            }
            Hook::Tc { direction } => {
                // Loaded here, attached below to a set of interfaces that changes.
                let cls: &mut SchedClassifier = prog.try_into().map_err(wrong_type)?;
                cls.load().map_err(load)?;
                tc_programs.push((attach.program.to_string(), direction));
            }
            Hook::Kprobe { function } | Hook::Kretprobe { function } => {
                // aya tells kprobes from kretprobes by the section name.
                let kp: &mut KProbe = prog.try_into().map_err(wrong_type)?;
                kp.load().map_err(load)?;
                kp.attach(function, 0).map_err(attach_failed)?;
            }
        }
        if let Some(fd) = ebpf
            .program(attach.program)
            .and_then(|p| p.fd().ok())
            .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
        {
            programs.push((attach.program.to_string(), fd));
        }
    }

    let record_maps = types.record_maps();
    let mut table = MapTable::new();
    let mut sources = Vec::new();
    let names: Vec<String> = ebpf.maps().map(|(n, _)| n.to_string()).collect();
    for name in names {
        if name.starts_with('.') {
            continue;
        }
        let Some(map) = ebpf.take_map(&name) else {
            continue;
        };
        if record_maps.contains(&name) {
            let decoder = match types.record_decoder(&name) {
                Ok(d) => d,
                Err(e) => {
                    return Err(LoadFailure::Map {
                        map: name,
                        reason: error::MapSetup::Records(e),
                    })
                }
            };
            let ring = match RingBuf::try_from(map) {
                Ok(r) => r,
                Err(e) => {
                    return Err(LoadFailure::Map {
                        map: name,
                        reason: error::MapSetup::NotRingBuf(e),
                    })
                }
            };
            sources.push(EventSource {
                map: name,
                ring,
                decoder,
            });
            continue;
        }
        let (key, value) = match types.map_decoders(&name) {
            Ok((k, v)) => (Some(k), Some(v)),
            Err(_) => (None, None),
        };
        table.insert(&name, &map, key, value);
    }
    let ebpf = Arc::new(Mutex::new(ebpf));
    let tc = if tc_programs.is_empty() {
        None
    } else {
        Some(tc::TcAttacher::start(ebpf.clone(), tc_programs, params)?)
    };
    Ok((ebpf, table, sources, programs, tc))
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = features::kernel_release();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Raises RLIMIT_MEMLOCK once per process (the daemon does it before it drops
/// CAP_SYS_RESOURCE; the limit stays raised for later loads).
pub fn raise_memlock_once() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        if let Err(e) = raise_memlock() {
            // Kernels >= 5.11 account BPF memory to the cgroup, not to RLIMIT_MEMLOCK.
            if kernel_at_least(5, 11) {
                tracing::debug!(error = %e, "cannot raise RLIMIT_MEMLOCK; not needed on this kernel");
            } else {
                tracing::warn!(error = %e, "cannot raise RLIMIT_MEMLOCK; loading may fail on kernels < 5.11 (run as root or grant CAP_SYS_RESOURCE)");
            }
        }
    });
}

fn raise_memlock() -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The kernel's drop reason names, `SKB_DROP_REASON_` stripped.
pub fn drop_reason_names(btf: &KernelBtf) -> HashMap<u64, crate::label::Label> {
    btf.enum_names("skb_drop_reason", "SKB_DROP_REASON_")
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bpf/` yields typed records and values; the script engine's side of them
    /// lives in `script::record`. Nothing under `bpf/` names the engine's crate.
    #[test]
    fn the_record_layer_does_not_speak_rhai() {
        // Spelled in two parts so this test does not find itself.
        const PATH: &str = concat!("rhai", "::");
        const USE: &str = concat!("use ", "rhai");
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        if line.contains(PATH) || line.trim_start().starts_with(USE) {
                            out.push(format!("{}:{}: {line}", p.display(), i + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bpf"),
            &mut found,
        );
        assert!(found.is_empty(), "{found:#?}");
    }

    /// A damaged BTF that got past the check (here: not checked at all) makes
    /// aya-obj panic; `load` turns that into an error for this program.
    #[test]
    fn a_loader_panic_is_an_error_for_that_program() {
        let Ok(mut raw) = std::fs::read(crate::btf::SYSFS_VMLINUX) else {
            crate::testkit::skip(
                "a_loader_panic_is_an_error_for_that_program",
                "no /sys/kernel/btf/vmlinux",
            );
            return;
        };
        // Every struct name offset just past the string section: aya-obj slices its
        // strings with them when it looks a struct up by name.
        use crate::btf::validate::{records, STRUCT};
        let (types, strings) = records(&raw).unwrap();
        let past = (strings.len() as u32 + 100).to_le_bytes();
        for t in types.iter().filter(|t| t.kind == STRUCT) {
            raw[t.offset..t.offset + 4].copy_from_slice(&past);
        }
        assert!(crate::btf::validate::check(&raw).is_err());
        let btf = KernelBtf::unchecked(raw, "/tmp/damaged.btf");
        let spec = catalog::find("tcp_reset").unwrap();
        let e = load(spec, &[], &btf)
            .err()
            .expect("a damaged BTF loads nothing");
        assert!(matches!(e, BpfError::Panicked { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("program `tcp_reset`: loading it against the kernel BTF from explicit /tmp/damaged.btf failed inside the loader ("),
            "{msg}"
        );
        assert!(msg.contains("out of range"), "{msg}");
    }
}
