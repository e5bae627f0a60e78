//! Why a program variant did not run: known beforehand ([`Unavailable`]), or found
//! by loading it ([`LoadError`]), with aya's error and the verifier's log kept as data.
//!
//! Every reason reads as one line (`sonde probes`, `/status`, the logs); the
//! verifier's log, often hundreds of lines, is printed only when asked for:
//!
//! ```text
//! $ sonde probes --verbose PROGRAM
//!   - rejected           reads 1 KiB below its stack frame
//!                        failed: past_the_stack (tracepoint syscalls:sys_enter_getppid): the verifier rejected it: invalid read from stack R10 off=-1024 size=8 (Permission denied (os error 13))
//!                        verifier log (6 lines):
//!                          0: R1=ctx() R10=fp0
//!                          ; asm volatile("%0 = *(u64 *)(r10 - 1024)" : "=r"(r)); @ verifier_reject.bpf.c:26
//!                          0: (79) r1 = *(u64 *)(r10 -1024)
//!                          invalid read from stack R10 off=-1024 size=8
//!                          ...
//! ```

use std::fmt;

use aya::programs::ProgramError;

use crate::bpf::catalog::{Attach, Hook, TcDirection};

/// Why a variant cannot run on this kernel, known without loading it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no kernel BTF to relocate against (`sonde btf` shows what was tried)")]
    NoBtf,
    #[error("no struct {name} in kernel BTF ({why})")]
    MissingStruct {
        name: &'static str,
        why: &'static str,
    },
    #[error("no member {field} in kernel struct {name} ({why})")]
    MissingField {
        name: &'static str,
        field: &'static str,
        why: &'static str,
    },
    #[error("struct {name} present ({why})")]
    StructPresent {
        name: &'static str,
        why: &'static str,
    },
    #[error(
        "tp_btf programs need the kernel's own BTF (/sys/kernel/btf/vmlinux); \
         the BTF here is from {btf}"
    )]
    NotKernelBtf { btf: String },
    #[error("cannot read tracefs (/sys/kernel/tracing is readable by root only): grant CAP_DAC_READ_SEARCH")]
    TracefsUnreadable,
    #[error("tracefs is not mounted at /sys/kernel/tracing: mount it, or grant CAP_SYS_ADMIN so sonde mounts it")]
    TracefsNotMounted,
    #[error("tracefs is not mounted and could not be mounted at /sys/kernel/tracing")]
    TracefsMountFailed,
    #[error("tracepoint {category}:{name} does not exist in this kernel")]
    NoTracepoint {
        category: &'static str,
        name: &'static str,
    },
    #[error("tracepoint {name} does not exist in this kernel")]
    NoRawTracepoint { name: &'static str },
    #[error("needs CAP_NET_ADMIN: attaching traffic control programs")]
    NoNetAdmin,
    #[error("kernel has no kprobes (CONFIG_KPROBES off: no kprobe PMU, no kprobe_events)")]
    NoKprobes,
    #[error("kernel function {function} not found in /proc/kallsyms")]
    NoKernelFunction { function: &'static str },
}

/// A variant that loaded nothing or attached nothing, and where it stopped.
///
/// `program` and `variant` say which; the [`LoadFailure`] says the step, the hook and
/// aya's own error. `Display` is the one-line reason; [`LoadError::verifier_log`]
/// is the verifier's full log when the kernel refused a program.
#[derive(Debug, thiserror::Error)]
#[error("program `{program}` variant `{variant}`: {failure}")]
pub struct LoadError {
    pub program: &'static str,
    pub variant: &'static str,
    pub failure: LoadFailure,
}

/// The step of loading a variant that failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    /// The object as a whole: parsing it, relocating it against the kernel BTF,
    /// creating its maps.
    #[error("load object: {}", chain(error))]
    Object { error: Box<aya::EbpfError> },
    /// The variant names a program the object does not have.
    #[error("object has no program `{program}`")]
    NoProgram { program: &'static str },
    /// The object's program is not of the type its hook takes.
    #[error("{}: not a {} program: {}", attach.program, hook_kind(&attach.hook), chain(error))]
    WrongType {
        attach: Attach,
        error: Box<ProgramError>,
    },
    /// The kernel refused the program (`BPF_PROG_LOAD`): the verifier, mostly.
    #[error("{} ({}): {}", attach.program, attach.hook, refusal(error))]
    Load {
        attach: Attach,
        error: Box<ProgramError>,
    },
    /// The program loaded; attaching it to its hook failed.
    #[error("{} ({}): attach: {}", attach.program, attach.hook, chain(error))]
    Attach {
        attach: Attach,
        error: Box<ProgramError>,
    },
    /// A map of the object cannot be read as the runtime needs it.
    #[error("map `{map}`: {reason}")]
    Map { map: String, reason: MapSetup },
    /// The loader panicked (aya-obj relocating against a damaged BTF that got past
    /// [`crate::btf::validate`]); whatever it had loaded is dropped.
    #[error(
        "the loader panicked ({message}); the kernel BTF is probably damaged: `sonde btf` checks it"
    )]
    Panicked { message: String },
    /// Traffic control: the interfaces or the attach mode.
    #[error(transparent)]
    Tc(#[from] crate::bpf::tc::TcError),
}

/// Why a map of a loaded object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MapSetup {
    #[error("not a ring buffer: {}", chain(.0))]
    NotRingBuf(aya::maps::MapError),
    #[error("{0}")]
    Records(crate::bpf::decode::DecodeError),
}

impl LoadError {
    /// The hook of the program that failed, when one program did.
    pub fn hook(&self) -> Option<&Hook> {
        match &self.failure {
            LoadFailure::WrongType { attach, .. }
            | LoadFailure::Load { attach, .. }
            | LoadFailure::Attach { attach, .. } => Some(&attach.hook),
            _ => None,
        }
    }

    /// The object's program (function) that failed, when one did.
    pub fn function(&self) -> Option<&'static str> {
        match &self.failure {
            LoadFailure::WrongType { attach, .. }
            | LoadFailure::Load { attach, .. }
            | LoadFailure::Attach { attach, .. } => Some(attach.program),
            LoadFailure::NoProgram { program } => Some(program),
            _ => None,
        }
    }

    /// The step that failed, as `/status` names it.
    pub fn stage(&self) -> &'static str {
        match self.failure {
            LoadFailure::Object { .. }
            | LoadFailure::NoProgram { .. }
            | LoadFailure::Panicked { .. } => "object",
            LoadFailure::WrongType { .. } | LoadFailure::Load { .. } => "load",
            LoadFailure::Attach { .. } | LoadFailure::Tc(_) => "attach",
            LoadFailure::Map { .. } => "maps",
        }
    }

    /// The verifier's log, when the kernel refused a program and said why.
    pub fn verifier_log(&self) -> Option<String> {
        let LoadFailure::Load { error, .. } = &self.failure else {
            return None;
        };
        verifier_log(error).filter(|log| !log.trim().is_empty())
    }
}

/// The log of a rejected program load, as the kernel wrote it.
fn verifier_log(error: &ProgramError) -> Option<String> {
    match error {
        ProgramError::LoadError { verifier_log, .. } => Some(verifier_log.to_string()),
        _ => None,
    }
}

/// One line for a refused load: the verifier's own verdict (the last line of its
/// log that is not a statistic) and the syscall's error.
fn refusal(error: &ProgramError) -> String {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match verdict(&verifier_log.to_string()) {
            Some(line) => format!("the verifier rejected it: {line} ({io_error})"),
            None => format!("the kernel rejected it ({io_error}; no verifier log)"),
        },
        other => format!("load: {}", chain(other)),
    }
}

/// The line of a verifier log that says why: its last line other than the
/// statistics the kernel appends (`processed N insns ...`, `verification time`,
/// `stack depth`, `mark_read`).
pub fn verdict(log: &str) -> Option<&str> {
    const STATS: &[&str] = &[
        "processed ",
        "verification time ",
        "stack depth ",
        "mark_read ",
        "max_states_per_insn ",
    ];
    log.lines()
        .map(str::trim)
        .rev()
        .find(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
}

fn hook_kind(hook: &Hook) -> &'static str {
    match hook {
        Hook::Tracepoint { .. } => "tracepoint",
        Hook::RawTracepoint { .. } => "raw tracepoint",
        Hook::BtfTracepoint { .. } => "tp_btf",
        Hook::Kprobe { .. } | Hook::Kretprobe { .. } => "kprobe",
        Hook::Tc { .. } => "classifier",
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Tracepoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Hook::RawTracepoint { name } => write!(f, "raw_tp {name}"),
            Hook::BtfTracepoint { name } => write!(f, "tp_btf {name}"),
            Hook::Kprobe { function } => write!(f, "kprobe {function}"),
            Hook::Kretprobe { function } => write!(f, "kretprobe {function}"),
            Hook::Tc {
                direction: TcDirection::Ingress,
            } => f.write_str("tc ingress"),
            Hook::Tc {
                direction: TcDirection::Egress,
            } => f.write_str("tc egress"),
        }
    }
}

/// An error and its sources on one line, each source only when its text is not
/// already there (aya repeats its sources in its own messages).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    // A message of several lines (a verifier log inside) keeps its first.
    match s.split_once('\n') {
        Some((first, _)) => first.to_string(),
        None => s,
    }
}

/// Why a param's value does not fit the kernel side it sets: a `const volatile` knob,
/// or the `variant` param.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    #[error("knob type is not a bool or an integer")]
    NotScalar,
    /// `got` is the value as [`crate::script::ParamValue::describe`] says it.
    #[error("expected a bool (or 0/1), got {got}")]
    ExpectedBool { got: String },
    #[error("expected an integer, got {got}")]
    ExpectedInt { got: String },
    #[error("{value} does not fit {} {bits}-bit knob", if *signed { "a signed" } else { "an unsigned" })]
    TooWide { value: i64, signed: bool, bits: u32 },
    #[error("expected a variant name (a string), got {got}")]
    VariantNotString { got: String },
    #[error("no variant `{asked}`; variants: auto, {}", known.join(", "))]
    NoSuchVariant {
        asked: String,
        known: Vec<&'static str>,
    },
}

/// Why a variant was not the one used.
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    /// The `variant` param named another one.
    #[error("not the variant asked for (`{}`)", crate::bpf::VARIANT_PARAM)]
    NotAsked,
    /// Known not to run here without trying.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Tried, and loading or attaching it failed.
    #[error("{}", .0.failure)]
    Failed(Box<LoadError>),
}

impl SkipReason {
    /// The load error, when the variant was tried.
    pub fn load_error(&self) -> Option<&LoadError> {
        match self {
            SkipReason::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// What `/status` calls it: `not_asked`, `unavailable`, or the step that failed.
    pub fn stage(&self) -> &'static str {
        match self {
            SkipReason::NotAsked => "not_asked",
            SkipReason::Unavailable(_) => "unavailable",
            SkipReason::Failed(e) => e.stage(),
        }
    }
}

/// A variant not used, as `/status` shows it: the reason on one line, and where it
/// stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedView {
    pub variant: String,
    /// One line.
    pub reason: String,
    /// `not_asked`, `unavailable`, `object`, `load`, `attach` or `maps`.
    pub stage: &'static str,
    /// The hook of the object's program that failed (`tracepoint skb:kfree_skb`).
    pub hook: Option<String>,
    /// The object's program (function) that failed.
    pub function: Option<&'static str>,
    /// Whether the kernel's verifier said why (`sonde probes --verbose` prints it).
    pub verifier_log: bool,
}

impl SkippedView {
    pub fn of(skipped: &crate::bpf::Skipped) -> Self {
        let failed = skipped.reason.load_error();
        SkippedView {
            variant: skipped.variant.to_string(),
            reason: skipped.reason.to_string(),
            stage: skipped.reason.stage(),
            hook: failed.and_then(LoadError::hook).map(ToString::to_string),
            function: failed.and_then(LoadError::function),
            verifier_log: failed.is_some_and(|e| e.verifier_log().is_some()),
        }
    }

    /// The `/status` entry: `variant` and `reason` as before, then the rest.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "variant": self.variant,
            "reason": self.reason,
            "stage": self.stage,
            "hook": self.hook,
            "bpf_program": self.function,
            "verifier_log": self.verifier_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::VerifierLog;

    const TP: Attach = Attach {
        program: "tp_kfree_skb",
        hook: Hook::Tracepoint {
            category: "skb",
            name: "kfree_skb",
        },
    };

    fn refused(log: &str) -> LoadError {
        LoadError {
            program: "packet_loss",
            variant: "tracepoint",
            failure: LoadFailure::Load {
                attach: TP,
                error: Box::new(ProgramError::LoadError {
                    io_error: std::io::Error::from_raw_os_error(libc::EACCES),
                    verifier_log: VerifierLog::new(log.to_string()),
                }),
            },
        }
    }

    #[test]
    fn a_verifier_refusal_is_one_line_with_the_verdict_and_keeps_the_log() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n; return *(volatile long *)((char *)ctx + 4096) != 0;\n\
                   0: (79) r1 = *(u64 *)(r1 +4096)\ninvalid bpf_context access off=4096 size=8\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
        let e = refused(log);
        assert_eq!(
            e.to_string(),
            "program `packet_loss` variant `tracepoint`: tp_kfree_skb (tracepoint skb:kfree_skb): \
             the verifier rejected it: invalid bpf_context access off=4096 size=8 \
             (Permission denied (os error 13))"
        );
        assert!(!e.to_string().contains('\n'));
        assert_eq!(e.verifier_log().as_deref(), Some(log));
        assert_eq!(e.stage(), "load");
        assert_eq!(e.function(), Some("tp_kfree_skb"));
        assert!(matches!(
            e.hook(),
            Some(Hook::Tracepoint {
                name: "kfree_skb",
                ..
            })
        ));
        let skipped = SkipReason::Failed(Box::new(e));
        assert_eq!(
            skipped.to_string(),
            "tp_kfree_skb (tracepoint skb:kfree_skb): the verifier rejected it: \
             invalid bpf_context access off=4096 size=8 (Permission denied (os error 13))"
        );
    }

    #[test]
    fn a_refusal_without_a_log_says_so() {
        let e = refused("");
        assert_eq!(
            e.failure.to_string(),
            "tp_kfree_skb (tracepoint skb:kfree_skb): the kernel rejected it \
             (Permission denied (os error 13); no verifier log)"
        );
        assert_eq!(e.verifier_log(), None);
    }

    #[test]
    fn the_verdict_skips_the_statistics_the_kernel_appends() {
        let log = "R1 type=scalar expected=fp\nverification time 12 usec\nstack depth 0\n\
                   processed 4 insns (limit 1000000) max_states_per_insn 0\n\n";
        assert_eq!(verdict(log), Some("R1 type=scalar expected=fp"));
        assert_eq!(verdict("processed 1 insns\n"), None);
        assert_eq!(verdict(""), None);
    }

    #[test]
    fn an_attach_failure_names_the_hook_and_has_no_log() {
        let e = LoadError {
            program: "tcp_reset",
            variant: "tp_btf",
            failure: LoadFailure::Attach {
                attach: Attach {
                    program: "tpb_send_reset",
                    hook: Hook::BtfTracepoint {
                        name: "tcp_send_reset",
                    },
                },
                error: Box::new(ProgramError::AlreadyAttached),
            },
        };
        assert_eq!(
            e.failure.to_string(),
            "tpb_send_reset (tp_btf tcp_send_reset): attach: the program was already attached"
        );
        assert_eq!(e.stage(), "attach");
        assert_eq!(e.verifier_log(), None);
    }

    #[test]
    fn hooks_read_as_their_section_kinds() {
        let cases = [
            (
                Hook::Tracepoint {
                    category: "tcp",
                    name: "tcp_probe",
                },
                "tracepoint tcp:tcp_probe",
            ),
            (
                Hook::RawTracepoint { name: "kfree_skb" },
                "raw_tp kfree_skb",
            ),
            (Hook::Kretprobe { function: "f" }, "kretprobe f"),
            (
                Hook::Tc {
                    direction: TcDirection::Egress,
                },
                "tc egress",
            ),
        ];
        for (hook, want) in cases {
            assert_eq!(hook.to_string(), want);
        }
    }
}
