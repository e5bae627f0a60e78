//! The script host: sandboxed Rhai scripts that turn kernel records into metrics and
//! events.
//!
//! A script names its kernel program in a `PROBE` manifest and defines handlers;
//! state lives on `this`:
//!
//! ```rhai
//! //! Resets per pod.
//! const PROBE = #{ program: "tcp_reset", params: #{ stack: false }, interval: "10s" };
//!
//! fn init(params) {
//!     this.resets = metrics::counter("tcp_resets_total", "TCP RST segments.",
//!                                    ["namespace", "pod", "kind"]);
//! }
//! fn on_event(ev) { this.resets.inc([ev.pod.namespace, ev.pod.name, ev.kind]); }
//! ```
//!
//! The host side, in order:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sonde::script::*;
//! # fn ctx() -> ScriptContext { unimplemented!() }
//! let limits = Limits::default();
//! let script = Script::compile("x.rhai", "fn on_event(ev) { count(\"kinds\", ev.kind); }", &limits)?;
//! let params = script.manifest().resolve_params(&[])?;
//! let mut inst = Instance::start(&script, &params, ctx(), &limits)?;
//! inst.on_event(rhai::Map::new()); // errors are counted, never returned
//! inst.on_tick();
//! inst.on_exit();
//! # Ok::<(), ScriptError>(())
//! ```
//!
//! Every engine is built by [`engine`]: `Engine::new_raw()` plus an explicit package
//! set (no file, network or time access, no `eval`, no `sleep`), limits always on,
//! and a per-call deadline. A failing handler is classified, counted in
//! `sonde_script_errors_total{script,kind}` and logged rate-limited; the next call
//! runs as if nothing happened. The script-facing API is documented where it is
//! registered (`api.rs`, `stdlib.rs`) and in `stdlib/README.md`.

mod api;
mod diagnostic;
mod engine;
mod file;
mod instance;
mod manifest;
pub mod record;
pub mod runner;
pub mod stack;
mod stdlib;
mod tables;
pub mod trust;

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use crate::bpf::maps::MapReadError;
use crate::event::EventSink;
use crate::metrics::Registry;

pub use engine::engine;
pub use file::{read_script_file, ScriptFileError, MAX_SCRIPT_BYTES};
pub use instance::{ErrorKind, Instance, Script, EVENTS_PER_CALL};
pub use manifest::{parse_duration, Manifest, ParamValue};

/// Resource limits applied to every handler call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rhai operations per handler call (a loop iteration, a function call... each
    /// count one).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array.
    pub max_array_size: usize,
    /// Entries in one object map.
    pub max_map_size: usize,
    /// Nesting of expressions at compile time.
    pub max_expr_depth: usize,
    /// Wall-clock time for one handler call. Checked every 1024 operations, from
    /// the 1024th on (a handler shorter than that never reads the clock).
    pub call_deadline: Duration,
    /// Series per metric family a script registers.
    pub series_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_expr_depth: 64,
            call_deadline: Duration::from_millis(100),
            series_budget: 1000,
        }
    }
}

/// A script's compile-time or start-up failure, for people: file:line:column where
/// there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScriptError {
    /// Syntax error, or a handler declared with the wrong parameters.
    #[error("{file}:{line}:{column}: {message}")]
    Compile {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The `PROBE` manifest is not what the host expects.
    #[error("{file}:{line}:{column}: PROBE: {message}")]
    Manifest {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A `--param`/config override does not fit the script's params.
    #[error("{message}")]
    Param { name: String, message: String },
    /// The top level or `init` failed when the script started.
    #[error("{file}: {message}")]
    Start { file: String, message: String },
    /// The same, where the failure has a line.
    #[error("{file}:{line}:{column}: {message}")]
    Init {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads a kernel map of the script's program, for `bpf::map(name)`.
///
/// Implemented by the loader. Entries are `#{key: .., value: ..}` maps with keys and
/// values decoded by field name; per-CPU values are already summed.
pub trait MapReader: Send + Sync {
    fn entries(&self, map: &str) -> Result<rhai::Array, MapReadError>;
}

/// A [`MapReader`] for scripts without a kernel program: every read fails.
pub struct NoMaps;

impl MapReader for NoMaps {
    fn entries(&self, map: &str) -> Result<rhai::Array, MapReadError> {
        Err(MapReadError::NoProgram {
            map: map.to_string(),
        })
    }
}

/// A program's maps as they are before its first event: there, and empty. What
/// [`dry_run`] connects a script to.
pub struct EmptyMaps(pub Vec<String>);

impl EmptyMaps {
    /// The maps of a built-in program (none for `None`).
    pub fn of(program: Option<crate::bpf::Program>) -> Self {
        let names = program
            .and_then(|p| crate::bpf::decode::ObjectTypes::parse(p.spec().object).ok())
            .map(|t| t.map_names())
            .unwrap_or_default();
        EmptyMaps(names)
    }
}

impl MapReader for EmptyMaps {
    fn entries(&self, map: &str) -> Result<rhai::Array, MapReadError> {
        let map = map.to_string();
        if self.0.contains(&map) {
            Ok(rhai::Array::new())
        } else if self.0.is_empty() {
            Err(MapReadError::NoProgram { map })
        } else {
            Err(MapReadError::NoSuchMap {
                map,
                known: self.0.clone(),
            })
        }
    }
}

/// Runs a script's top level and `init(params)` once, connected to nothing: a
/// registry of its own, its program's maps empty, events and prints discarded.
/// What fails there (a metric the registry refuses, a label list it cannot take, a
/// `throw`) fails before anything is loaded, with the script's position; that is
/// how `sonde check` and `sonde daemon --check` find what only running shows.
///
/// Then `on_tick()` runs once, and the event handler once with a record of the
/// program's made of zeros ([`Instance::dry_handlers`]): a field the record lacks,
/// or a map read wrongly, fails here at its line rather than on the first event.
/// Sources are read for real, in sonde's own network namespace only.
pub fn dry_run(
    script: &Script,
    params: &[(String, ParamValue)],
    name: &str,
    limits: &Limits,
) -> Result<(), ScriptError> {
    let mut ctx = ScriptContext::detached(name);
    let program = script.manifest().program;
    ctx.maps = Arc::new(EmptyMaps::of(program));
    crate::sources::own_namespace_only(|| {
        let mut instance = Instance::start(script, params, ctx, limits)?;
        instance.dry_handlers(program.and_then(zero_record))
    })
}

/// A record of the program's `events` ring with every byte zero (what the kernel
/// sends is never less well-formed), decoded with nothing resolved: the host's pod,
/// no symbols. `None` for a program without records.
fn zero_record(program: crate::bpf::Program) -> Option<crate::bpf::decode::Record> {
    use crate::bpf::decode::{DecodeEnv, ObjectTypes};
    let types = ObjectTypes::parse(program.spec().object).ok()?;
    let decoder = types.record_decoder("events").ok()?;
    let env = Arc::new(DecodeEnv::offline(Arc::new(
        crate::pods::HostResolver::with_host_netns(0, "node"),
    )));
    decoder.record(&vec![0u8; decoder.size()], &env).ok()
}

/// What a running script is connected to.
#[derive(Clone)]
pub struct ScriptContext {
    /// The script's name (its file stem): the `script` label of its errors and events.
    pub name: String,
    /// Node name, for event labels.
    pub node: String,
    pub maps: Arc<dyn MapReader>,
    pub events: Arc<dyn EventSink>,
    pub registry: Arc<Registry>,
    /// Where `print()` goes: stdout in `sonde run`, the log in the daemon.
    pub print: Arc<dyn Fn(&str) + Send + Sync>,
    /// Who a network namespace belongs to, for `proc::netns()`.
    pub pods: Arc<dyn crate::pods::PodResolver>,
}

impl ScriptContext {
    /// A context connected to nothing: maps fail, events and prints are discarded,
    /// metrics go to a private registry. For validation and tests.
    pub fn detached(name: &str) -> Self {
        struct Discard;
        impl EventSink for Discard {
            fn emit(&self, _: crate::event::Event) {}
        }
        ScriptContext {
            name: name.to_string(),
            node: String::new(),
            maps: Arc::new(NoMaps),
            events: Arc::new(Discard),
            registry: Arc::new(Registry::new("")),
            print: Arc::new(|_| {}),
            pods: Arc::new(crate::pods::HostResolver::new("")),
        }
    }
}
