//! The one engine factory: sandbox, limits, deadline, print/debug routing, and the
//! script API.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LanguageCorePackage, LogicPackage,
    MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, Module, Shared};

use super::{api, stdlib, Limits, ScriptContext};
use crate::bpf::decode::DecodeEnv;
use crate::event::Label;

/// The token a handler stopped by its deadline terminates with.
pub(crate) const DEADLINE_TOKEN: &str = "deadline";
/// The token a handler stopped for allocating past its script's memory budget
/// terminates with.
pub(crate) const MEMORY_TOKEN: &str = "memory";
/// The token a handler interrupted because its script is being stopped terminates with.
pub(crate) const STOP_TOKEN: &str = "stop";

/// The token a handler stopped with too little stack left terminates with
/// ([`super::stack`]).
pub(crate) const STACK_TOKEN: &str = "stack";

/// The operation count between two clock reads.
const CLOCK_EVERY: u64 = 1024;

/// What the engine's native functions share with the [`super::Instance`] driving it.
pub(crate) struct Host {
    pub ctx: ScriptContext,
    pub limits: Limits,
    /// Deadline of the call in progress, in ns since [`epoch`]; 0 = not armed yet.
    pub deadline: AtomicU64,
    /// Set to interrupt the call in progress (the script is being stopped).
    pub cancel: Arc<AtomicBool>,
    /// Bytes the call in progress may still keep before it is stopped (the script's
    /// memory budget less what it held at the last measurement); `i64::MAX`: not
    /// measured.
    pub headroom: AtomicI64,
    /// [`crate::memory::thread_net`] when the call in progress started.
    pub call_net: AtomicI64,
    /// `count()` / `hist()` tables, by the name the script used.
    pub tables: Mutex<super::tables::Tables>,
    /// `ctx.node` and `ctx.name` as event labels, made once.
    pub node: Label,
    pub name: Label,
    /// How the records handled now are decoded: what `emit` names the pod of the
    /// record in progress with (the handler call's tag is its netns inode). Set by
    /// the instance when it changes, so not per record.
    record_env: Mutex<Option<Arc<DecodeEnv>>>,
}

impl Host {
    pub fn new(ctx: ScriptContext, limits: &Limits) -> Arc<Self> {
        Arc::new(Host {
            limits: limits.clone(),
            deadline: AtomicU64::new(0),
            cancel: Arc::new(AtomicBool::new(false)),
            headroom: AtomicI64::new(i64::MAX),
            call_net: AtomicI64::new(0),
            tables: Mutex::default(),
            node: ctx.node.as_str().into(),
            name: ctx.name.as_str().into(),
            ctx,
            record_env: Mutex::default(),
        })
    }

    pub fn record_env(&self) -> Option<Arc<DecodeEnv>> {
        self.record_env
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_record_env(&self, env: Arc<DecodeEnv>) {
        *self.record_env.lock().unwrap_or_else(|e| e.into_inner()) = Some(env);
    }

    /// Disarms the deadline: the next handler call arms it at its first clock check.
    #[inline]
    pub fn reset_deadline(&self) {
        self.deadline.store(0, Ordering::Relaxed);
        if self.headroom.load(Ordering::Relaxed) != i64::MAX {
            self.call_net
                .store(crate::memory::thread_net(), Ordering::Relaxed);
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The packages every script sees, built once: one combined module, so a function
/// lookup probes one table instead of ten.
fn packages() -> &'static Shared<Module> {
    static PACKAGES: OnceLock<Shared<Module>> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let mut m = Module::new();
        // Language core (type_of, tags, parse_json...); `sleep` is overridden below.
        m.combine_flatten((*LanguageCorePackage::new().as_shared_module()).clone());
        for pkg in [
            ArithmeticPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
        ] {
            m.combine_flatten((*pkg).clone());
        }
        m.build_index();
        m.into()
    })
}

/// A sandboxed engine for one script:
///
/// - `Engine::new_raw()` plus core, arithmetic, logic, string, array, map, math and
///   bit-field packages: no file, network, time or blocking calls (`sleep` is
///   replaced by an error), `eval` disabled, no `import`;
/// - [`Limits`] always set, a per-call deadline checked every 1024 operations, and
///   the stack left checked every 8 ([`super::stack`]);
/// - `print` goes to `ctx.print`, `debug` to the log at DEBUG;
/// - the script API (`api.rs`) and the stdlib namespaces (`net::`, `fmt::`,
///   `hist::`).
pub fn engine(limits: &Limits, ctx: &ScriptContext) -> Engine {
    build(Host::new(ctx.clone(), limits))
}

pub(crate) fn build(host: Arc<Host>) -> Engine {
    let limits = &host.limits;
    let mut engine = Engine::new_raw();
    engine.register_global_module(packages().clone());
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_modules(0);

    let deadline_host = host.clone();
    let budget = limits.call_deadline.as_nanos().min(u64::MAX as u128) as u64;
    engine.on_progress(move |ops| {
        if ops % super::stack::CHECK_EVERY == 0 && !super::stack::enough() {
            return Some(Dynamic::from(STACK_TOKEN));
        }
        if ops % CLOCK_EVERY != 0 {
            return None;
        }
        if deadline_host.cancel.load(Ordering::Relaxed) {
            return Some(Dynamic::from(STOP_TOKEN));
        }
        let headroom = deadline_host.headroom.load(Ordering::Relaxed);
        if headroom != i64::MAX
            && crate::memory::thread_net() - deadline_host.call_net.load(Ordering::Relaxed)
                > headroom
        {
            return Some(Dynamic::from(MEMORY_TOKEN));
        }
        let now = since_epoch_ns();
        let d = deadline_host.deadline.load(Ordering::Relaxed);
        if d == 0 {
            deadline_host
                .deadline
                .store(now.saturating_add(budget).max(1), Ordering::Relaxed);
            None
        } else if now > d {
            Some(Dynamic::from(DEADLINE_TOKEN))
        } else {
            None
        }
    });

    let print = host.ctx.print.clone();
    engine.on_print(move |s| print(s));
    let name = host.ctx.name.clone();
    engine.on_debug(move |s, source, pos| {
        tracing::debug!(script = %name, source = source.unwrap_or(""), position = %pos, "{s}");
    });

    api::register(&mut engine, &host);
    stdlib::register(&mut engine);
    engine
}
