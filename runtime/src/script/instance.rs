//! Compiled scripts and their running instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, FuncArgs, Map, Position, Scope, AST};

use super::diagnostic::{fn_offset, message_of, position_of};
use super::engine::{self, Host, DEADLINE_TOKEN, MEMORY_TOKEN, STACK_TOKEN, STOP_TOKEN};
use super::manifest::{self, Manifest, ParamValue};
use super::{Limits, ScriptContext, ScriptError};

/// How often, at most, one kind of failure of one script is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A compiled script and its manifest. Cheap to share: an instance clones the AST
/// once at start.
#[derive(Clone)]
pub struct Script {
    file: String,
    ast: Arc<AST>,
    manifest: Manifest,
    /// Whether the source calls `emit` (only then does `on_event` remember `ev.pod`).
    uses_emit: bool,
    init_arity: Option<usize>,
    has: [bool; 4],
    /// Where each function is declared (`fn name`), by name: the line of an error
    /// that carries none of its own.
    fns: Arc<BTreeMap<String, (usize, usize)>>,
}

const ON_EVENT: usize = 0;
const ON_TICK: usize = 1;
const ON_EXIT: usize = 2;
const ON_EVENTS: usize = 3;
const HANDLERS: [(&str, usize, &str); 4] = [
    ("on_event", 1, "on_event(ev) takes one parameter: the event"),
    ("on_tick", 0, "on_tick() takes no parameters"),
    ("on_exit", 0, "on_exit() takes no parameters"),
    (
        "on_events",
        1,
        "on_events(evs) takes one parameter: the array of events",
    ),
];

/// The most records one `on_events` call is given.
pub const EVENTS_PER_CALL: usize = 64;

impl Script {
    /// Compiles a script and reads its manifest. `file` labels errors
    /// (`x.rhai:3:9: ...`).
    pub fn compile(file: &str, source: &str, limits: &Limits) -> Result<Script, ScriptError> {
        let engine = engine::engine(limits, &ScriptContext::detached(file));
        let mut ast = engine.compile(source).map_err(|e| {
            let (line, column) = position(e.position());
            ScriptError::Compile {
                file: file.to_string(),
                line,
                column,
                message: e.err_type().to_string(),
            }
        })?;
        ast.set_source(file);
        let manifest = manifest::parse(file, source, &ast)?;

        let mut has = [false; 4];
        let mut init_arity = None;
        let mut fns = BTreeMap::new();
        for f in ast.iter_functions() {
            let declared = fn_offset(source, f.name).map(|o| manifest::line_col(source, o));
            if let Some(at) = declared {
                fns.insert(f.name.to_string(), at);
            }
            let at = || declared.unwrap_or((1, 1));
            if f.name == "init" {
                if f.params.len() > 1 {
                    let (line, column) = at();
                    return Err(ScriptError::Compile {
                        file: file.to_string(),
                        line,
                        column,
                        message: "init(params) takes at most one parameter: the params map".into(),
                    });
                }
                init_arity = Some(f.params.len());
            }
            for (i, (name, arity, msg)) in HANDLERS.iter().enumerate() {
                if f.name == *name {
                    if f.params.len() != *arity {
                        let (line, column) = at();
                        return Err(ScriptError::Compile {
                            file: file.to_string(),
                            line,
                            column,
                            message: (*msg).to_string(),
                        });
                    }
                    has[i] = true;
                }
            }
        }
        Ok(Script {
            file: file.to_string(),
            ast: Arc::new(ast),
            manifest,
            uses_emit: calls_emit(source),
            init_arity,
            has,
            fns: Arc::new(fns),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// A `--param` override's error, at the line that declares the param when
    /// there is one: `x.rhai:3:22: param `stack`: expected a bool ...`.
    pub fn override_error(&self, e: &ScriptError) -> String {
        let at = match e {
            ScriptError::Param { name, .. } => self.manifest.param_position(name),
            _ => None,
        };
        match at {
            Some((line, column)) => format!("{}:{line}:{column}: {e}", self.file),
            None => format!("{}: {e}", self.file),
        }
    }

    /// The label given at compile time (usually the path).
    pub fn file(&self) -> &str {
        &self.file
    }
}

fn position(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(1), p.position().unwrap_or(1))
}

/// Why a handler call failed: the `kind` label of `sonde_script_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// More than `max_operations` in one call (an endless loop).
    Operations,
    /// The call ran past `call_deadline`.
    Deadline,
    /// A string, array or map grew past its limit.
    Size,
    /// Recursion past `max_call_levels`.
    CallDepth,
    /// The call kept more memory than its script's budget allows.
    Memory,
    /// A value of the wrong type, or a function called with arguments it does not take.
    Type,
    /// An index or property out of range.
    Index,
    /// Division by zero, overflow.
    Arithmetic,
    /// `throw`, a failing API call (label arity, bad map name), anything else.
    Runtime,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Operations => "operations",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Size => "size",
            ErrorKind::CallDepth => "call_depth",
            ErrorKind::Memory => "memory",
            ErrorKind::Type => "type",
            ErrorKind::Index => "index",
            ErrorKind::Arithmetic => "arithmetic",
            ErrorKind::Runtime => "runtime",
        }
    }

    /// Classifies an error by its innermost cause.
    pub fn of(err: &EvalAltResult) -> ErrorKind {
        use EvalAltResult as E;
        match err.unwrap_inner() {
            E::ErrorTooManyOperations(..) => ErrorKind::Operations,
            E::ErrorTerminated(token, ..) if token.to_string() == DEADLINE_TOKEN => {
                ErrorKind::Deadline
            }
            E::ErrorTerminated(token, ..) if token.to_string() == MEMORY_TOKEN => ErrorKind::Memory,
            E::ErrorDataTooLarge(..) => ErrorKind::Size,
            E::ErrorStackOverflow(..) => ErrorKind::CallDepth,
            E::ErrorTerminated(token, ..) if token.to_string() == STACK_TOKEN => {
                ErrorKind::CallDepth
            }
            E::ErrorMismatchDataType(..)
            | E::ErrorMismatchOutputType(..)
            | E::ErrorFunctionNotFound(..)
            | E::ErrorIndexingType(..)
            | E::ErrorFor(..)
            | E::ErrorUnboundThis(..) => ErrorKind::Type,
            E::ErrorArrayBounds(..)
            | E::ErrorStringBounds(..)
            | E::ErrorBitFieldBounds(..)
            | E::ErrorPropertyNotFound(..) => ErrorKind::Index,
            E::ErrorArithmetic(..) => ErrorKind::Arithmetic,
            _ => ErrorKind::Runtime,
        }
    }
}

struct LogState {
    last: Instant,
    suppressed: u64,
}

/// A running script: its engine, state (`this`) and top-level scope.
pub struct Instance {
    engine: Engine,
    ast: AST,
    scope: Scope<'static>,
    state: Dynamic,
    host: Arc<Host>,
    script: Script,
    errors: BTreeMap<&'static str, u64>,
    logged: BTreeMap<&'static str, LogState>,
    last_error: Option<(String, std::time::SystemTime)>,
    calls: u64,
    /// The decoding environment last handed to [`Host::set_record_env`].
    record_env: Option<Arc<crate::bpf::decode::DecodeEnv>>,
}

impl Instance {
    /// Starts a script: runs its top level once (its constants and variables stay
    /// visible to handlers), then `init(params)` with `this` bound to a fresh state map.
    /// A failure here is returned: the script does not run.
    pub fn start(
        script: &Script,
        params: &[(String, ParamValue)],
        ctx: ScriptContext,
        limits: &Limits,
    ) -> Result<Instance, ScriptError> {
        let host = Host::new(ctx, limits);
        let engine = engine::build(host.clone());
        let mut inst = Instance {
            engine,
            ast: (*script.ast).clone(),
            scope: Scope::new(),
            state: Dynamic::from_map(Map::new()),
            host,
            script: script.clone(),
            errors: BTreeMap::new(),
            logged: BTreeMap::new(),
            last_error: None,
            calls: 0,
            record_env: None,
        };
        let fail = |what: &str, e: &EvalAltResult| {
            let (at, message) = script.locate(what, e, limits);
            let message = format!("{what} failed: {message}");
            match at {
                (Some(line), Some(column)) => ScriptError::Init {
                    file: script.file.clone(),
                    line,
                    column,
                    message,
                },
                _ => ScriptError::Start {
                    file: script.file.clone(),
                    message,
                },
            }
        };
        inst.host.reset_deadline();
        if let Err(e) = inst.engine.run_ast_with_scope(&mut inst.scope, &inst.ast) {
            return Err(fail("top level", &e));
        }
        if let Some(arity) = script.init_arity {
            let params: Map = params
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.to_dynamic()))
                .collect();
            let r = if arity == 1 {
                inst.call_raw("init", (Dynamic::from_map(params),), Dynamic::UNIT)
            } else {
                inst.call_raw("init", (), Dynamic::UNIT)
            };
            if let Err(e) = r {
                let kind = ErrorKind::of(&e);
                inst.count(kind);
                return Err(fail("init", &e));
            }
        }
        Ok(inst)
    }

    pub fn has_init(&self) -> bool {
        self.script.init_arity.is_some()
    }

    pub fn has_on_event(&self) -> bool {
        self.script.has[ON_EVENT]
    }

    /// Whether the script handles records in batches (`on_events(evs)`): then
    /// [`on_records`](Self::on_records) is the way to hand them over.
    pub fn has_on_events(&self) -> bool {
        self.script.has[ON_EVENTS]
    }

    pub fn has_on_tick(&self) -> bool {
        self.script.has[ON_TICK]
    }

    pub fn has_on_exit(&self) -> bool {
        self.script.has[ON_EXIT]
    }

    /// The script's name (from its context).
    pub fn name(&self) -> &str {
        &self.host.ctx.name
    }

    /// Handler failures so far, by kind (`operations`, `deadline`, ...).
    pub fn errors(&self) -> &BTreeMap<&'static str, u64> {
        &self.errors
    }

    /// The state map (`this`), for tests and debugging.
    pub fn state(&self) -> &Dynamic {
        &self.state
    }

    /// Calls `on_event(ev)`. Failures are counted and logged, never returned.
    #[inline]
    pub fn on_event(&mut self, ev: Map) {
        if !self.script.has[ON_EVENT] {
            return;
        }
        // emit() takes the pod from the event being handled unless told otherwise.
        let pod = if self.script.uses_emit {
            ev.get("pod").cloned().unwrap_or(Dynamic::UNIT)
        } else {
            Dynamic::UNIT
        };
        self.call("on_event", (Dynamic::from_map(ev),), pod);
    }

    /// Calls `on_event(ev)` with a lazily decoded record: only the fields the
    /// handler reads are decoded.
    ///
    /// The record's pod is not looked up here: `emit` names it, from the netns inode
    /// the call carries, only when the handler emits (and `ev.pod` when read).
    #[inline]
    pub fn on_record(&mut self, ev: crate::bpf::decode::Record) {
        if !self.script.has[ON_EVENT] {
            return;
        }
        let pod = self.record_pod(&ev);
        self.call("on_event", (Dynamic::from(ev),), pod);
    }

    /// The tag of an `on_event` call for `emit`: the record's netns inode, with the
    /// record's environment to name it by.
    #[inline]
    fn record_pod(&mut self, ev: &crate::bpf::decode::Record) -> Dynamic {
        match ev.pod_inode() {
            Some(inode) if self.script.uses_emit => {
                if !self
                    .record_env
                    .as_ref()
                    .is_some_and(|e| Arc::ptr_eq(e, ev.env()))
                {
                    self.record_env = Some(ev.env().clone());
                    self.host.set_record_env(ev.env().clone());
                }
                Dynamic::from_int(i64::from(inode))
            }
            _ => Dynamic::UNIT,
        }
    }

    /// Calls `on_tick()` once, then the event handler once with `record` (when
    /// given), as `sonde check` does after `init`: the first failure, at its line.
    /// What only running shows is found before deployment: a misspelt field of the
    /// record, a map or metric used wrongly in the tick.
    pub fn dry_handlers(
        &mut self,
        record: Option<crate::bpf::decode::Record>,
    ) -> Result<(), ScriptError> {
        if self.script.has[ON_TICK] {
            let r = self.call_raw("on_tick", (), Dynamic::UNIT);
            self.handler_error("on_tick", r, "")?;
        }
        let Some(ev) = record else {
            return Ok(());
        };
        const ZEROS: &str = " (given a record of zeros)";
        if self.script.has[ON_EVENTS] {
            let batch = vec![Dynamic::from(ev)];
            let r = self.call_raw("on_events", (Dynamic::from_array(batch),), Dynamic::UNIT);
            self.handler_error("on_events", r, ZEROS)
        } else if self.script.has[ON_EVENT] {
            let pod = self.record_pod(&ev);
            let r = self.call_raw("on_event", (Dynamic::from(ev),), pod);
            self.handler_error("on_event", r, ZEROS)
        } else {
            Ok(())
        }
    }

    fn handler_error(
        &self,
        handler: &str,
        result: Result<(), Box<EvalAltResult>>,
        given: &str,
    ) -> Result<(), ScriptError> {
        let Err(e) = result else {
            return Ok(());
        };
        let ((line, column), message) = self.script.locate(handler, &e, &self.host.limits);
        let file = self.script.file.clone();
        let message = format!("{handler} failed{given}: {message}");
        Err(match line {
            Some(line) => ScriptError::Init {
                file,
                line,
                column: column.unwrap_or(1),
                message,
            },
            None => ScriptError::Start { file, message },
        })
    }

    /// Hands records over in order: one `on_events(evs)` call per
    /// [`EVENTS_PER_CALL`] records when the script defines it, else `on_event(ev)`
    /// per record. In `on_events`, the limits (operations, deadline) apply to the
    /// call, and `emit` takes the pod from `fields.pod` only.
    pub fn on_records(&mut self, evs: &mut Vec<crate::bpf::decode::Record>) {
        if !self.script.has[ON_EVENTS] {
            for ev in evs.drain(..) {
                self.on_record(ev);
            }
            return;
        }
        while !evs.is_empty() {
            let n = evs.len().min(EVENTS_PER_CALL);
            let batch: rhai::Array = evs.drain(..n).map(Dynamic::from).collect();
            self.call("on_events", (Dynamic::from_array(batch),), Dynamic::UNIT);
        }
    }

    /// Calls `on_tick()`.
    pub fn on_tick(&mut self) {
        if self.script.has[ON_TICK] {
            self.call("on_tick", (), Dynamic::UNIT);
        }
    }

    /// Calls `on_exit()`.
    pub fn on_exit(&mut self) {
        if self.script.has[ON_EXIT] {
            self.call("on_exit", (), Dynamic::UNIT);
        }
    }

    #[inline]
    fn call(&mut self, name: &'static str, args: impl FuncArgs, tag: Dynamic) {
        if let Err(e) = self.call_raw(name, args, tag) {
            if is_stop(&e) {
                return; // interrupted by its own stop: not the script's failure
            }
            self.failed(name, &e);
        }
    }

    /// The flag that interrupts this instance's handler call in progress (checked
    /// every 1024 operations) and makes later calls return at once, until cleared.
    pub fn canceller(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.host.cancel.clone()
    }

    /// Bytes the next handler calls may keep before they are stopped; `None`: no limit.
    pub fn set_headroom(&self, bytes: Option<i64>) {
        self.host.headroom.store(
            bytes.map_or(i64::MAX, |b| b.clamp(0, i64::MAX - 1)),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The last handler failure, `file:line:col: message`, and when it happened.
    pub fn last_error(&self) -> Option<&(String, std::time::SystemTime)> {
        self.last_error.as_ref()
    }

    /// Handler calls so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    #[inline]
    fn call_raw(
        &mut self,
        name: &str,
        args: impl FuncArgs,
        tag: Dynamic,
    ) -> Result<(), Box<EvalAltResult>> {
        self.calls += 1;
        self.host.reset_deadline();
        let options = CallFnOptions::new()
            .eval_ast(false)
            .rewind_scope(true)
            .bind_this_ptr(&mut self.state)
            .with_tag(tag);
        self.engine
            .call_fn_with_options::<Dynamic>(options, &mut self.scope, &self.ast, name, args)
            .map(|_| ())
    }

    fn count(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind.as_str()).or_default() += 1;
        let _ = self
            .host
            .ctx
            .registry
            .script_errors()
            .inc(&[self.host.ctx.name.as_str(), kind.as_str()]);
    }

    #[cold]
    fn failed(&mut self, handler: &str, e: &EvalAltResult) {
        let kind = ErrorKind::of(e);
        self.count(kind);
        // Kept for /status; formatted only when the log line below is not written
        // either, at most once a second.
        let now_sys = std::time::SystemTime::now();
        if self.last_error.as_ref().is_none_or(|(_, t)| {
            now_sys
                .duration_since(*t)
                .is_ok_and(|d| d >= Duration::from_secs(1))
        }) {
            self.last_error = Some((
                format!(
                    "{handler}: {}",
                    self.script.describe(handler, e, &self.host.limits)
                ),
                now_sys,
            ));
        }
        let now = Instant::now();
        let state = self.logged.entry(kind.as_str());
        let log = match state {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(LogState {
                    last: now,
                    suppressed: 0,
                });
                Some(0)
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let s = o.get_mut();
                if now.duration_since(s.last) >= LOG_EVERY {
                    let suppressed = s.suppressed;
                    *s = LogState {
                        last: now,
                        suppressed: 0,
                    };
                    Some(suppressed)
                } else {
                    s.suppressed += 1;
                    None
                }
            }
        };
        if let Some(suppressed) = log {
            tracing::warn!(
                script = %self.host.ctx.name,
                handler,
                kind = kind.as_str(),
                suppressed,
                error = %self.script.describe(handler, e, &self.host.limits),
                "script handler failed"
            );
        }
    }
}

/// Whether `e` is the interruption of a call by its script's stop.
fn is_stop(e: &EvalAltResult) -> bool {
    matches!(e.unwrap_inner(), EvalAltResult::ErrorTerminated(t, _) if t.to_string() == STOP_TOKEN)
}

impl Script {
    /// `file:line:col: message` for an error of `handler` (or of `top level`): the
    /// one way a script's runtime errors are written, in `sonde run`, `sonde check`,
    /// the daemon's log and `/status`.
    pub(crate) fn describe(&self, handler: &str, e: &EvalAltResult, limits: &Limits) -> String {
        let (at, message) = self.locate(handler, e, limits);
        match at {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: {message}", self.file),
            (Some(l), None) => format!("{}:{l}: {message}", self.file),
            _ => format!("{}: {message}", self.file),
        }
    }

    /// Where an error of `handler` happened (line, column), and what it says.
    fn locate(
        &self,
        handler: &str,
        e: &EvalAltResult,
        limits: &Limits,
    ) -> ((Option<usize>, Option<usize>), String) {
        let at = position_of(e);
        let at = match (at.line(), at.position()) {
            (Some(l), c) => (Some(l), c),
            // Rhai passes the sandbox's limit errors out of a function with the
            // position of its call, and a handler's call has none: the handler's
            // own line is the nearest there is.
            _ => match self.fns.get(handler) {
                Some(&(l, c)) => (Some(l), Some(c)),
                None => (None, None),
            },
        };
        (at, message_of(e, limits))
    }
}

/// Whether the source calls `emit(...)` (a call, not a word like `emit_events`).
pub(crate) fn calls_emit(source: &str) -> bool {
    source.match_indices("emit").any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + 4..].trim_start().chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after == Some('(')
    })
}
