//! One-liner tables: `count()` and `hist()`, bpftrace's `@name[key] = count()` and
//! `@name[key] = hist(value)` for scripts.
//!
//! ```rhai
//! fn on_event(ev) {
//!     count("resets", ev.kind);                               // @resets[NOSOCK]: 12
//!     count("conns", #{ pod: ev.pod.name, port: ev.dport });  // @conns[pod=web-1, port=8080]: 3
//!     hist("rtt_us", ev.srtt_us);                             // exported as sonde_rtt_seconds
//! }
//! ```
//!
//! A table is a metric family created at its first use, named by
//! [`crate::metrics::table_name`] (`2xx` -> `sonde_2xx_total`, `lat_ms` ->
//! `sonde_lat_seconds`), printed under the script's name for it at the end of
//! `sonde run`. Its keys are fixed at its first use: none, one (label `key`), or
//! the names of a map's entries (labels in the map's order, which sorts them).
//!
//! A mistake that would otherwise fail on every event is reported once, as a
//! script error at the call (`file:line:column`): a table that cannot be exported
//! (its name is another table's), a call whose keys are not the table's, `count`
//! and `hist` on one table. From then on the table, or that call, is left out.

use std::sync::Arc;

use hashbrown::HashMap;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext, Position};
use rhai::{FLOAT, INT};

use super::api::runtime_error;
use super::engine::Host;
use crate::metrics::{Counter, Histogram};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Tables a script's instance remembers, failed ones included: beyond the family
/// budget (`limits.families_per_script`, 256 by default) only failed ones.
const MAX_REMEMBERED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Count,
    Hist,
}

impl Kind {
    fn call(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Hist => "hist",
        }
    }
}

enum Handle {
    Count(Counter),
    Hist(Histogram),
    /// Could not be registered: reported at the first use, left out since.
    Failed,
}

struct Table {
    kind: Kind,
    handle: Handle,
    /// Label names, fixed at the first use: none, `key`, or a map's key names.
    keys: Box<[String]>,
    /// Where the table was first used.
    first: Position,
    /// Calls whose mistake was reported: they are left out from then on.
    reported: Vec<Position>,
}

/// The tables of one script, by the name the script gives them.
#[derive(Default)]
pub(crate) struct Tables {
    tables: HashMap<ImmutableString, Table>,
    /// Calls reported for a key that is no key (an array): left out from then on.
    bad_keys: Vec<Position>,
}

/// The key of one call: none, one value, or named values (a map).
enum Key {
    None,
    One(Dynamic),
    Named(Map),
}

impl Key {
    fn of(key: Option<Dynamic>) -> Result<Key, String> {
        match key {
            None => Ok(Key::None),
            Some(k) if k.is_map() => Ok(Key::Named(k.cast::<Map>())),
            Some(k) if k.is_array() => {
                Err("a table's key is one value, or a map of named values: \
                 count(\"conns\", #{ pod: ev.pod.name, port: ev.dport })"
                    .into())
            }
            Some(k) => Ok(Key::One(k)),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Key::None => Vec::new(),
            Key::One(_) => vec!["key".to_string()],
            Key::Named(m) => m.keys().map(|k| k.to_string()).collect(),
        }
    }

    fn matches(&self, names: &[String]) -> bool {
        match self {
            Key::None => names.is_empty(),
            Key::One(_) => names.len() == 1 && names[0] == "key",
            Key::Named(m) => {
                m.len() == names.len() && m.keys().zip(names).all(|(a, b)| a.as_str() == b)
            }
        }
    }
}

/// How a table's keys read in an error: `no key`, `one key`, `keys (pod, port)`.
fn describe(names: &[String]) -> String {
    match names {
        [] => "no key".into(),
        [k] if k == "key" => "one key".into(),
        names => format!("keys ({})", names.join(", ")),
    }
}

/// ` (line 3)`, or nothing when the position is not known.
fn at_line(p: Position) -> String {
    p.line().map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl Table {
    /// The error of a call's mistake the first time that call makes it; `Ok` (the
    /// call is left out) every time after.
    fn once(&mut self, at: Position, msg: impl FnOnce() -> String) -> Res<()> {
        if self.reported.contains(&at) {
            return Ok(());
        }
        self.reported.push(at);
        Err(runtime_error(msg()))
    }
}

/// One `count()` or `hist()` call.
fn update(
    host: &Host,
    at: Position,
    kind: Kind,
    table: ImmutableString,
    key: Option<Dynamic>,
    value: f64,
) -> Res<()> {
    let call = kind.call();
    let mut tables = host.tables.lock().unwrap_or_else(|e| e.into_inner());
    let key = match Key::of(key) {
        Ok(k) => k,
        Err(msg) => {
            if tables.bad_keys.contains(&at) {
                return Ok(());
            }
            tables.bad_keys.push(at);
            return Err(runtime_error(format!("{call}(\"{table}\", ...): {msg}")));
        }
    };
    if !tables.tables.contains_key(&table) {
        let keys = key.names();
        let metrics = host.ctx.registry.for_script(&host.ctx.name);
        let budget = host.limits.series_budget;
        let registered = match kind {
            Kind::Count => metrics
                .count_table(&table, &keys, budget)
                .map(Handle::Count),
            Kind::Hist => metrics.hist_table(&table, &keys, budget).map(Handle::Hist),
        };
        let (handle, error) = match registered {
            Ok(h) => (h, None),
            // Names made of data (`count(ev.saddr)`) fail past the family budget:
            // past this many, they are not remembered, and fail every time.
            Err(e) if tables.tables.len() >= MAX_REMEMBERED => {
                return Err(runtime_error(format!("{call}(\"{table}\", ...): {e}")));
            }
            Err(e) => (Handle::Failed, Some(e)),
        };
        tables.tables.insert(
            table.clone(),
            Table {
                kind,
                handle,
                keys: keys.into(),
                first: at,
                reported: Vec::new(),
            },
        );
        if let Some(e) = error {
            return Err(runtime_error(format!(
                "{call}(\"{table}\", ...): {e}; the table is left out from now on"
            )));
        }
    }
    let Some(t) = tables.tables.get_mut(&table) else {
        return Ok(());
    };
    if matches!(t.handle, Handle::Failed) {
        return Ok(());
    }
    if t.kind != kind {
        let (other, line) = (t.kind.call(), at_line(t.first));
        return t.once(at, || {
            format!(
                "{call}(\"{table}\", ...): \"{table}\" is a table of {other}(){line}; \
                 give this one another name"
            )
        });
    }
    if !key.matches(&t.keys) {
        let (want, got, line) = (describe(&t.keys), describe(&key.names()), at_line(t.first));
        return t.once(at, || {
            format!(
                "{call}(\"{table}\", ...): the table has {want} since its first use{line}, \
                 this call gives {got}; a table's keys are the same in every call"
            )
        });
    }
    let done = match (&t.handle, &key) {
        (Handle::Failed, _) => return Ok(()),
        (Handle::Count(c), Key::None) => c.inc::<Dynamic>(&[]),
        (Handle::Count(c), Key::One(k)) => c.inc(std::slice::from_ref(k)),
        (Handle::Count(c), Key::Named(m)) => c.inc(&m.values().collect::<Vec<_>>()),
        (Handle::Hist(h), Key::None) => h.observe::<Dynamic, _>(&[], value),
        (Handle::Hist(h), Key::One(k)) => h.observe(std::slice::from_ref(k), value),
        (Handle::Hist(h), Key::Named(m)) => h.observe(&m.values().collect::<Vec<_>>(), value),
    };
    done.map_err(runtime_error)
}

pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    // count(table) / count(table, key) / count(table, #{name: value, ...})
    //
    // bpftrace's `@table[key] = count()`: adds one to the row of `key` in a counter
    // family named after the table (`sonde_<table>_total`, label `key`, or one
    // label per entry of a map key), printed by the summary at exit.
    //   fn on_event(ev) { count("resets_by_kind", ev.kind); }
    //   fn on_event(ev) { count("conns", #{ pod: ev.pod.name, port: ev.dport }); }
    let h = host.clone();
    engine.register_fn(
        "count",
        move |ctx: NativeCallContext, table: ImmutableString| {
            update(&h, ctx.call_position(), Kind::Count, table, None, 1.0)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "count",
        move |ctx: NativeCallContext, table: ImmutableString, key: Dynamic| {
            update(&h, ctx.call_position(), Kind::Count, table, Some(key), 1.0)
        },
    );

    // hist(table, value) / hist(table, key, value) / hist(table, #{name: value, ...}, value)
    //
    // bpftrace's `@table[key] = hist(value)`: a log2 histogram named after the
    // table, printed as bars by the summary at exit. A unit at the end of the
    // table's name is exported in the base unit: `lat_ms` -> `sonde_lat_seconds`.
    //   fn on_event(ev) { hist("latency_ns", ev.latency); }
    let h = host.clone();
    engine.register_fn(
        "hist",
        move |ctx: NativeCallContext, t: ImmutableString, v: INT| {
            update(&h, ctx.call_position(), Kind::Hist, t, None, v as f64)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "hist",
        move |ctx: NativeCallContext, t: ImmutableString, v: FLOAT| {
            update(&h, ctx.call_position(), Kind::Hist, t, None, v)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "hist",
        move |ctx: NativeCallContext, t: ImmutableString, k: Dynamic, v: INT| {
            update(&h, ctx.call_position(), Kind::Hist, t, Some(k), v as f64)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "hist",
        move |ctx: NativeCallContext, t: ImmutableString, k: Dynamic, v: FLOAT| {
            update(&h, ctx.call_position(), Kind::Hist, t, Some(k), v)
        },
    );
}
