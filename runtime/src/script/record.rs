//! Kernel records and map entries as scripts see them: the Rhai side of the typed
//! values [`crate::bpf`] decodes.
//!
//! `bpf/` yields [`Record`]s (decoded field by field) and map [`Entry`]s made of
//! [`Value`]s; this module registers `ev` for handlers and turns values into Rhai
//! ones, one rule per kind:
//!
//! | value | in a script |
//! |---|---|
//! | `Uint`, `Int` | int (an unsigned 64-bit value wraps, as it always did) |
//! | `Str` | string, shared with the decoder (an enum name is not copied) |
//! | `Ip` | `"10.0.0.1"`, `"fd00::1"` |
//! | `Stack` | array of `"sym+0xoff"` strings |
//! | `Struct`, `Pod` | map (`#{name, namespace, node}` for a pod) |
//! | `Bytes` | blob |
//!
//! ```
//! use sonde::bpf::value::Value;
//! use sonde::script::record::to_dynamic;
//! assert_eq!(to_dynamic(Value::Uint(443)).as_int(), Ok(443));
//! ```

use std::sync::atomic::AtomicUsize;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use crate::bpf::decode::{format_ip, Record};
use crate::bpf::maps::{Entry, MapTable};
use crate::bpf::value::{PodNames, Value};

use super::api::runtime_error;
use super::MapReader;

/// A decoded value as a Rhai value.
pub fn to_dynamic(v: Value) -> Dynamic {
    match v {
        Value::Unit => Dynamic::UNIT,
        Value::Uint(x) => Dynamic::from_int(x as i64),
        Value::Int(x) => Dynamic::from_int(x),
        Value::Bool(b) => Dynamic::from_bool(b),
        Value::Float(f) => Dynamic::from_float(f),
        Value::Str(s) => Dynamic::from(ImmutableString::from(s)),
        Value::Ip(a) => format_ip(&a).into(),
        Value::Bytes(b) => Dynamic::from_blob(b),
        Value::Array(a) => Dynamic::from_array(a.into_iter().map(to_dynamic).collect()),
        Value::Stack(frames) => Dynamic::from_array(
            frames
                .into_iter()
                .map(|f| Dynamic::from(ImmutableString::from(f)))
                .collect(),
        ),
        Value::Struct(fields) => Dynamic::from_map(struct_map(fields)),
        Value::Pod(p) => Dynamic::from_map(pod_map(&p)),
    }
}

fn struct_map(fields: Vec<(crate::label::Label, Value)>) -> Map {
    // Already sorted by name: BTreeMap's FromIterator checks that in one pass and
    // bulk-builds, cheaper than inserting field by field.
    fields
        .into_iter()
        .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
        .collect()
}

/// `#{name, namespace, node}`, the strings shared with the pod cache.
fn pod_map(p: &PodNames) -> Map {
    Map::from([
        (
            "name".into(),
            Dynamic::from(ImmutableString::from(p.name.clone())),
        ),
        (
            "namespace".into(),
            Dynamic::from(ImmutableString::from(p.namespace.clone())),
        ),
        (
            "node".into(),
            Dynamic::from(ImmutableString::from(p.node.clone())),
        ),
    ])
}

/// A decoded value as a map: a struct's fields, anything else as `#{value: ..}`.
pub fn value_map(v: Value) -> Map {
    match v {
        Value::Struct(fields) => struct_map(fields),
        other => Map::from([("value".into(), to_dynamic(other))]),
    }
}

/// Every field of a record, as a map (`ev.to_map()`).
pub fn record_map(r: &Record) -> Map {
    match r.to_value() {
        Value::Struct(fields) => struct_map(fields),
        _ => Map::new(),
    }
}

/// Map entries as `bpf::map` returns them: `#{key, value}` each.
pub fn entries_array(entries: Vec<Entry>) -> Array {
    entries
        .into_iter()
        .map(|e| {
            Dynamic::from_map(Map::from([
                ("key".into(), to_dynamic(e.key)),
                ("value".into(), to_dynamic(e.value)),
            ]))
        })
        .collect()
}

impl MapReader for MapTable {
    fn entries(&self, map: &str) -> Result<Array, crate::bpf::maps::MapReadError> {
        self.decoded(map).map(entries_array)
    }
}

/// A loaded program's map entries as scripts get them, for Rust code that checks
/// what a script would see (tests):
///
/// ```no_run
/// # fn f(loaded: &sonde::bpf::Loaded) {
/// use sonde::script::record::DecodedEntries;
/// for e in loaded.maps.decoded_entries("counts").unwrap() {
///     let e = e.cast::<rhai::Map>();
///     println!("{} {}", e["key"], e["value"]);
/// }
/// # }
/// ```
pub trait DecodedEntries {
    fn decoded_entries(&self, map: &str) -> Result<Array, crate::bpf::maps::MapReadError>;
}

impl DecodedEntries for MapTable {
    fn decoded_entries(&self, map: &str) -> Result<Array, crate::bpf::maps::MapReadError> {
        self.decoded(map).map(entries_array)
    }
}

/// `ev`, a kernel record decoded on demand. Reads like a map:
///
/// ```rhai
/// fn on_event(ev) {
///     let who = ev.pod.name;          // a field, decoded when read
///     let port = ev["dport"];         // the same, by index
///     if "stack" in ev { print(ev.stack); }
///     let all = ev.to_map();          // every field, as a map
///     for k in ev.keys() { print(k); }
/// }
/// ```
pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Record>("Event");
    fn field(r: &Record, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        r.get(name).map(to_dynamic).ok_or_else(|| {
            runtime_error(format!(
                "the event has no field `{name}`; fields: {}",
                r.keys().join(", ")
            ))
        })
    }
    engine.register_indexer_get(|r: &mut Record, name: ImmutableString| field(r, &name));
    // Property getters for every field name of the built-in records: `ev.sport`
    // then resolves in one step instead of falling back to the indexer.
    // Each remembers where its field was last found, so reading it is one string
    // comparison instead of a binary search over the record's field names.
    for name in crate::bpf::catalog::record_field_names() {
        let key = name.clone();
        let hint = AtomicUsize::new(usize::MAX);
        engine.register_get(name.as_str(), move |r: &mut Record| {
            match r.get_hinted(&key, &hint) {
                Some(v) => Ok(to_dynamic(v)),
                None => field(r, &key),
            }
        });
    }
    engine.register_fn("to_map", |r: &mut Record| record_map(r));
    engine.register_fn("keys", |r: &mut Record| -> Array {
        r.keys()
            .into_iter()
            .map(|k| Dynamic::from(k.to_string()))
            .collect()
    });
    engine.register_fn("contains", |r: &mut Record, name: ImmutableString| {
        r.get(&name).is_some()
    });
    engine.register_fn("to_string", |r: &mut Record| format!("{:?}", record_map(r)));
    engine.register_fn("to_debug", |r: &mut Record| format!("{:?}", record_map(r)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_value_becomes_what_scripts_always_got() {
        assert_eq!(to_dynamic(Value::Uint(u64::MAX)).as_int(), Ok(-1));
        assert_eq!(to_dynamic(Value::Int(-3)).as_int(), Ok(-3));
        assert!(to_dynamic(Value::Unit).is_unit());
        let mut a = [0u8; 16];
        a[10..].copy_from_slice(&[0xff, 0xff, 10, 1, 2, 3]);
        assert_eq!(to_dynamic(Value::Ip(a)).into_string().unwrap(), "10.1.2.3");
        assert_eq!(
            to_dynamic(Value::Str("NOSOCK".into()))
                .into_string()
                .unwrap(),
            "NOSOCK"
        );
        let stack = to_dynamic(Value::Stack(vec!["f+0x1".into()]))
            .into_array()
            .unwrap();
        assert_eq!(stack[0].clone().into_string().unwrap(), "f+0x1");
        let s = to_dynamic(Value::Struct(vec![
            ("a".into(), Value::Bool(true)),
            ("b".into(), Value::Bytes(vec![1, 2])),
        ]))
        .cast::<Map>();
        assert!(s["a"].as_bool().unwrap());
        assert!(s["b"].is_blob());
        let pod = to_dynamic(Value::Pod(std::sync::Arc::new(PodNames {
            name: "web-1".into(),
            namespace: "shop".into(),
            node: "n1".into(),
        })))
        .cast::<Map>();
        assert_eq!(pod["namespace"].clone().into_string().unwrap(), "shop");
        assert_eq!(pod.len(), 3);
    }
}
