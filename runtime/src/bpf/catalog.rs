//! The built-in kernel library: every program, its embedded object, its variants.
//!
//! A variant is one way of hooking the kernel: a list of (program, hook) pairs and
//! the kernel facts it needs. The loader takes the first variant whose hooks exist
//! here and records why the earlier ones were skipped, so `sonde probes` can say it.
//!
//! The table is not written here: the build (`runtime/build/catalog.rs`) reads it
//! from every object in `kernel-progs/obj/<arch>/`, each declaring its summary,
//! variants, requirements and forced knobs in its C source with the `SONDE_*`
//! macros of `kernel-progs/include/sonde.h`, and each program's hook being its
//! `SEC()` name. Adding a program is adding `kernel-progs/src/<name>.bpf.c` and
//! `<name>.h` and building its object (`kernel-progs/README.md`):
//!
//! ```c
//! SONDE_PROGRAM("drops per netns and reason");
//! SONDE_VARIANT("tp_btf", "tpb_kfree_skb", "BTF raw tracepoint kfree_skb");
//! SONDE_VARIANT("tracepoint", "tp_kfree_skb", "skb:kfree_skb");
//! ```
//!
//! gives `find("packet_loss")` two variants, `tp_btf` preferred.

/// A kernel fact a variant depends on.
#[derive(Debug, Clone, Copy)]
pub enum Require {
    /// The running kernel's BTF has this struct (a tracepoint record layout that
    /// arrived with a behaviour change, for example).
    KernelStruct(&'static str, &'static str),
    /// The running kernel's BTF lacks this struct.
    NoKernelStruct(&'static str, &'static str),
    /// The running kernel's struct (first) has this member (second): a tracepoint
    /// argument that arrived later than the tracepoint, for example.
    KernelField(&'static str, &'static str, &'static str),
}

/// Where one program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A raw tracepoint (`raw_tp/<name>`): the tracepoint's arguments as they are,
    /// without the perf record the classic tracepoint fills; cheaper per event.
    RawTracepoint {
        name: &'static str,
    },
    /// A BTF-enabled raw tracepoint (`tp_btf/<name>`): as a raw tracepoint, with
    /// arguments the verifier knows the kernel types of, so the program reads their
    /// fields with plain loads instead of a probe-read helper call each. Needs the
    /// kernel's own BTF (`/sys/kernel/btf/vmlinux`): the kernel checks the program
    /// against it, so BTF from elsewhere (the embedded archive, an image) cannot stand
    /// in.
    BtfTracepoint {
        name: &'static str,
    },
    Kprobe {
        function: &'static str,
    },
    /// A kretprobe: runs when `function` returns.
    Kretprobe {
        function: &'static str,
    },
    /// Traffic control (clsact) on every interface matching the script's
    /// `interfaces` param, attached as interfaces appear: see [`crate::bpf::tc`].
    Tc {
        direction: TcDirection,
    },
}

/// The side of an interface a [`Hook::Tc`] program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDirection {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy)]
pub struct Attach {
    /// Program (function) name in the object.
    pub program: &'static str,
    pub hook: Hook,
}

#[derive(Debug)]
pub struct Variant {
    pub name: &'static str,
    /// What this variant covers, for `sonde probes`.
    pub summary: &'static str,
    pub attach: &'static [Attach],
    pub requires: &'static [Require],
    /// Knobs this variant forces, whatever the script asks.
    pub knobs: &'static [(&'static str, bool)],
}

#[derive(Debug)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub object: &'static [u8],
    /// In order of preference.
    pub variants: &'static [Variant],
}

include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// Looks a program up by name.
pub fn find(name: &str) -> Option<&'static ProgramSpec> {
    PROGRAMS.iter().find(|p| p.name == name)
}

/// Names of all programs, for error messages.
pub fn names() -> Vec<&'static str> {
    PROGRAMS.iter().map(|p| p.name).collect()
}

/// Every field name (and `pod` key) of every record the built-in programs send,
/// computed once.
pub fn record_field_names() -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = std::collections::BTreeSet::new();
        for spec in PROGRAMS {
            let Ok(types) = crate::bpf::decode::ObjectTypes::parse(spec.object) else {
                continue;
            };
            for map in types.record_maps() {
                if let Ok(d) = types.record_decoder(&map) {
                    names.extend(d.layout().into_iter().map(|(n, _, _)| n));
                    names.extend(d.pod_keys());
                }
            }
        }
        names.into_iter().collect()
    })
}
