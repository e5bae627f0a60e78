//! Decoded values: what a field of a kernel record or a map key/value becomes, typed,
//! with no script engine behind it.
//!
//! The decoder ([`super::decode`]) turns bytes into a [`Value`]; whoever consumes
//! it decides the final form. The script host turns it into Rhai values
//! (`script::record`), a test reads it directly:
//!
//! ```
//! use sonde::bpf::value::Value;
//! let port = Value::Uint(443);
//! assert_eq!(port.as_int(), Some(443));
//! let mut addr = [0u8; 16];
//! addr[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
//! assert_eq!(Value::Ip(addr).to_string(), "10.0.0.1");
//! ```
//!
//! Strings are [`Label`]s: shared, so an enum name or a pod's name is handed out
//! by reference count, not copied per record. An IP address stays 16 bytes until
//! someone formats it.

use std::sync::Arc;

use crate::label::Label;

/// One decoded value.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// Nothing decodable (a type the decoder does not read).
    Unit,
    Uint(u64),
    Int(i64),
    Bool(bool),
    Float(f64),
    /// Enumerator names, kernel names (drop reasons, TCP states, protocols),
    /// interface names, symbols, `char` arrays.
    Str(Label),
    /// An IPv6 address, IPv4 stored v4-mapped (`sonde_ip`).
    Ip([u8; 16]),
    /// Raw bytes: a map key or value with no type to decode it by.
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    /// A kernel stack, innermost frame first, each `"sym+0xoff"`.
    Stack(Vec<Label>),
    /// A struct: fields sorted by name (a `sonde_netns` field adds its pod beside it).
    Struct(Vec<(Label, Value)>),
    /// Who a network namespace belongs to.
    Pod(Arc<PodNames>),
}

/// The names of the pod (or host) of a network namespace, as records carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNames {
    pub name: Label,
    pub namespace: Label,
    pub node: Label,
}

impl Value {
    /// The value as an integer, when it is one (unsigned values wrap as the
    /// scripts' 64-bit integers do).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Uint(v) => Some(*v as i64),
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The string of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// A field of a [`Value::Struct`].
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(fields) => fields
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .ok()
                .map(|i| &fields[i].1),
            _ => None,
        }
    }

    /// Adds `other` into `self`, for summing per-CPU values: numbers add, structs
    /// field by field, arrays element by element; anything else keeps `self`.
    pub fn accumulate(&mut self, other: &Value) {
        match (self, other) {
            (Value::Uint(a), Value::Uint(b)) => *a = a.wrapping_add(*b),
            (Value::Int(a), Value::Int(b)) => *a = a.wrapping_add(*b),
            (Value::Uint(a), Value::Int(b)) => *a = a.wrapping_add(*b as u64),
            (Value::Int(a), Value::Uint(b)) => *a = a.wrapping_add(*b as i64),
            (Value::Float(a), Value::Float(b)) => *a += b,
            (Value::Struct(a), Value::Struct(b)) => {
                for (name, bv) in b {
                    if let Ok(i) = a.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                        a[i].1.accumulate(bv);
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (av, bv) in a.iter_mut().zip(b) {
                    av.accumulate(bv);
                }
            }
            _ => {}
        }
    }
}

/// The scalar forms as a person reads them (IPs formatted, strings bare); nested
/// values in their debug form.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Unit => f.write_str("()"),
            Value::Uint(v) => write!(f, "{}", *v as i64),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Str(s) => f.write_str(s),
            Value::Ip(a) => f.write_str(&super::decode::format_ip(a)),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{:?}", s.as_str()),
            Value::Ip(a) => write!(f, "{:?}", super::decode::format_ip(a)),
            Value::Bytes(b) => write!(f, "{b:?}"),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Stack(frames) => f.debug_list().entries(frames).finish(),
            Value::Struct(fields) => f
                .debug_map()
                .entries(fields.iter().map(|(k, v)| (k.as_str(), v)))
                .finish(),
            Value::Pod(p) => f
                .debug_map()
                .entry(&"name", &p.name)
                .entry(&"namespace", &p.namespace)
                .entry(&"node", &p.node)
                .finish(),
            scalar => std::fmt::Display::fmt(scalar, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_add_up_field_by_field() {
        let s = |n: u64, label: &str| {
            Value::Struct(vec![
                ("bytes".into(), Value::Uint(n)),
                ("name".into(), Value::Str(label.into())),
                (
                    "slots".into(),
                    Value::Array(vec![Value::Int(1), Value::Int(n as i64)]),
                ),
            ])
        };
        let mut a = s(2, "a");
        a.accumulate(&s(3, "b"));
        assert_eq!(a.field("bytes"), Some(&Value::Uint(5)));
        assert_eq!(
            a.field("name").and_then(Value::as_str),
            Some("a"),
            "kept, not added"
        );
        assert_eq!(
            a.field("slots"),
            Some(&Value::Array(vec![Value::Int(2), Value::Int(5)]))
        );
        assert_eq!(a.field("nope"), None);
    }

    #[test]
    fn unsigned_values_read_as_the_scripts_integers() {
        assert_eq!(Value::Uint(u64::MAX).as_int(), Some(-1));
        assert_eq!(Value::Uint(u64::MAX).to_string(), "-1");
        assert_eq!(Value::Bool(true).as_int(), None);
    }
}
