//! The decoder run backwards: a value written into the bytes a kernel program would
//! have sent, through the same plan ([`Kind`]) the decoder reads them with.
//!
//! For tests of scripts: a synthetic event is written as real record bytes of the
//! program's object and then decoded like a ring buffer record, so every script
//! test also exercises the decoder, and a field the script expects but the object
//! lacks is an error instead of a silently accepted map key.
//!
//! ```
//! use sonde::bpf::decode::ObjectTypes;
//! use sonde::bpf::value::Value;
//! let obj = sonde::bpf::catalog::find("tcp_reset").unwrap().object;
//! let d = ObjectTypes::parse(obj).unwrap().record_decoder("events").unwrap();
//! let env = sonde::bpf::decode::DecodeEnv::offline(std::sync::Arc::new(
//!     sonde::pods::HostResolver::new("node-1"),
//! ));
//! let bytes = d
//!     .encode_fields(&[("sport", Value::Uint(443)), ("kind", Value::Str("NOSOCK".into()))], &env)
//!     .unwrap();
//! assert_eq!(bytes.len(), d.size());
//! ```

use std::net::IpAddr;

use super::{ethproto_name, l4proto_name, static_names, DecodeEnv, Decoder, Field, Kind};
use crate::bpf::value::Value;

/// Why a value cannot be written as a field of a kernel type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("{ty} has no field `{field}` (fields: {known})")]
    NoField {
        ty: String,
        field: String,
        known: String,
    },
    #[error("`{field}`: {why}")]
    Value { field: String, why: String },
    #[error("{ty} is not a struct: give it one value")]
    NotStruct { ty: String },
}

impl Decoder {
    /// The bytes of a value of this type whose top-level fields are `fields`
    /// (by name; the rest zero), as the kernel would have written it. Names are
    /// given as the decoder produces them: enum and kernel names as strings
    /// (`"NOSOCK"`, `"ESTABLISHED"`, `"NO_SOCKET"`, `"TCP"`), addresses as
    /// `Value::Ip` or their text, numbers as numbers. A `pod` key is not a field:
    /// it comes from the netns field through the resolver.
    pub fn encode_fields(
        &self,
        fields: &[(&str, Value)],
        env: &DecodeEnv,
    ) -> Result<Vec<u8>, EncodeError> {
        let Kind::Struct(plan) = &self.kind else {
            return Err(EncodeError::NotStruct {
                ty: self.type_name.clone(),
            });
        };
        let mut out = vec![0u8; self.size];
        for (name, value) in fields {
            let field = find(plan, name).ok_or_else(|| EncodeError::NoField {
                ty: self.type_name.clone(),
                field: name.to_string(),
                known: plan
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            write(&field.kind, value, &mut out[field.offset..], env).map_err(|why| {
                EncodeError::Value {
                    field: name.to_string(),
                    why,
                }
            })?;
        }
        Ok(out)
    }

    /// The bytes of one value of this type: a struct from a `Value::Struct`, a
    /// scalar from its value.
    pub fn encode(&self, value: &Value, env: &DecodeEnv) -> Result<Vec<u8>, EncodeError> {
        if let (Kind::Struct(_), Value::Struct(fields)) = (&self.kind, value) {
            let named: Vec<(&str, Value)> = fields
                .iter()
                .filter(|(_, v)| !matches!(v, Value::Pod(_)))
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect();
            return self.encode_fields(&named, env);
        }
        let mut out = vec![0u8; self.size];
        write(&self.kind, value, &mut out, env).map_err(|why| EncodeError::Value {
            field: self.type_name.clone(),
            why,
        })?;
        Ok(out)
    }
}

fn find<'a>(plan: &'a [Field], name: &str) -> Option<&'a Field> {
    plan.iter().find(|f| f.name.as_str() == name)
}

fn put_uint(out: &mut [u8], size: u8, v: u64) -> Result<(), String> {
    let size = size as usize;
    if size < 8 && v >> (size * 8) != 0 {
        return Err(format!("{v} does not fit in {size} bytes"));
    }
    let n = size.min(out.len());
    out[..n].copy_from_slice(&v.to_ne_bytes()[..n]);
    Ok(())
}

fn put_int(out: &mut [u8], size: u8, v: i64) -> Result<(), String> {
    let size = size as usize;
    let bits = size * 8;
    if bits < 64 && (v < -(1i64 << (bits - 1)) || v >= 1i64 << (bits - 1)) {
        return Err(format!("{v} does not fit in a signed {size}-byte field"));
    }
    let n = size.min(out.len());
    out[..n].copy_from_slice(&v.to_ne_bytes()[..n]);
    Ok(())
}

/// A number given as `Uint` or non-negative `Int`.
fn unsigned(v: &Value) -> Result<u64, String> {
    match v {
        Value::Uint(n) => Ok(*n),
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        Value::Bool(b) => Ok(*b as u64),
        other => Err(format!("expected a number, got {other:?}")),
    }
}

/// A name or its number: the number given, or the one `lookup` finds for the name.
fn named(v: &Value, lookup: impl Fn(&str) -> Option<u64>) -> Result<u64, String> {
    match v {
        Value::Str(s) => lookup(s.as_str()).ok_or_else(|| format!("unknown name `{s}`")),
        other => unsigned(other),
    }
}

fn write(kind: &Kind, v: &Value, out: &mut [u8], env: &DecodeEnv) -> Result<(), String> {
    match kind {
        Kind::Uint(s) | Kind::Bool(s) => put_uint(out, *s, unsigned(v)?),
        Kind::Int(s) => match v {
            Value::Int(n) => put_int(out, *s, *n),
            other => put_int(out, *s, unsigned(other)? as i64),
        },
        Kind::Float(s) => {
            let f = match v {
                Value::Float(f) => *f,
                other => unsigned(other)? as f64,
            };
            if *s == 4 {
                out[..4].copy_from_slice(&(f as f32).to_ne_bytes());
            } else {
                out[..8].copy_from_slice(&f.to_ne_bytes());
            }
            Ok(())
        }
        Kind::Pointer | Kind::Ksym => put_uint(out, 8, unsigned(v)?),
        Kind::Netns | Kind::Ifindex => put_uint(out, 4, unsigned(v)?),
        Kind::Ip => {
            let bytes = match v {
                Value::Ip(a) => *a,
                Value::Str(s) => match s.as_str().parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => a.to_ipv6_mapped().octets(),
                    Ok(IpAddr::V6(a)) => a.octets(),
                    Err(e) => return Err(format!("`{s}`: {e}")),
                },
                other => return Err(format!("expected an address, got {other:?}")),
            };
            out[..16].copy_from_slice(&bytes);
            Ok(())
        }
        Kind::StackId => {
            let id = match v {
                Value::Int(n) => *n,
                Value::Uint(n) => *n as i64,
                // No frames to write: "no stack".
                Value::Stack(f) if f.is_empty() => -1,
                other => return Err(format!("a stack is written as its id, got {other:?}")),
            };
            put_int(out, 4, id)
        }
        Kind::DropReason(s) => {
            let n = named(v, |name| {
                env.drop_reasons
                    .iter()
                    .find(|(_, l)| l.as_str() == name)
                    .map(|(n, _)| *n)
                    .or_else(|| name.strip_prefix("REASON_")?.parse().ok())
            })?;
            put_uint(out, *s, n)
        }
        Kind::TcpState(s) => {
            let n = named(v, |name| {
                static_names()
                    .tcp_states
                    .iter()
                    .position(|l| l.as_str() == name)
                    .map(|i| i as u64)
            })?;
            put_uint(out, *s, n)
        }
        Kind::L4Proto(s) => {
            let n = named(v, |name| {
                (0..=255u64)
                    .find(|p| l4proto_name(*p) == Some(name))
                    .or_else(|| name.strip_prefix("PROTO_")?.parse().ok())
            })?;
            put_uint(out, *s, n)
        }
        Kind::EthProto(s) => {
            let n = named(v, |name| {
                [0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x8847, 0x0003]
                    .into_iter()
                    .find(|p| ethproto_name(*p) == Some(name))
                    .or_else(|| u64::from_str_radix(name.strip_prefix("0x")?, 16).ok())
            })?;
            put_uint(out, *s, n)
        }
        Kind::Enum {
            size,
            signed,
            names,
        } => {
            let n = match v {
                Value::Str(s) => names
                    .iter()
                    .find(|(_, l)| l.as_str() == s.as_str())
                    .map(|(n, _)| *n)
                    .ok_or_else(|| {
                        let known: Vec<&str> = names.values().map(|l| l.as_str()).collect();
                        format!("`{s}` is none of {}", known.join(", "))
                    })?,
                Value::Int(n) => *n,
                other => unsigned(other)? as i64,
            };
            if *signed {
                put_int(out, *size, n)
            } else {
                put_uint(out, *size, n as u64)
            }
        }
        Kind::CharArray(len) => {
            let Value::Str(s) = v else {
                return Err(format!("expected a string, got {v:?}"));
            };
            let b = s.as_str().as_bytes();
            if b.len() >= *len {
                return Err(format!("`{s}` does not fit in char[{len}] with its NUL"));
            }
            out[..b.len()].copy_from_slice(b);
            Ok(())
        }
        Kind::Array { elem, len, stride } => {
            let Value::Array(items) = v else {
                return Err(format!("expected an array, got {v:?}"));
            };
            if items.len() > *len {
                return Err(format!("{} elements for an array of {len}", items.len()));
            }
            for (i, item) in items.iter().enumerate() {
                write(elem, item, &mut out[i * stride..], env)
                    .map_err(|why| format!("[{i}]: {why}"))?;
            }
            Ok(())
        }
        Kind::Struct(plan) => {
            let Value::Struct(fields) = v else {
                return Err(format!("expected a struct, got {v:?}"));
            };
            for (name, value) in fields {
                if matches!(value, Value::Pod(_)) {
                    continue;
                }
                let f = find(plan, name.as_str()).ok_or_else(|| format!("no field `{name}`"))?;
                write(&f.kind, value, &mut out[f.offset..], env)
                    .map_err(|why| format!("{name}: {why}"))?;
            }
            Ok(())
        }
        Kind::Bitfield {
            bit_offset,
            bits,
            signed: _,
        } => {
            let raw = match v {
                Value::Int(n) => *n as u64,
                other => unsigned(other)?,
            };
            let mask = if *bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let n = out.len().min(8);
            let mut word = [0u8; 8];
            word[..n].copy_from_slice(&out[..n]);
            let mut w = u64::from_ne_bytes(word);
            w &= !(mask << bit_offset);
            w |= (raw & mask) << bit_offset;
            out[..n].copy_from_slice(&w.to_ne_bytes()[..n]);
            Ok(())
        }
        Kind::Opaque => match v {
            Value::Unit => Ok(()),
            other => Err(format!(
                "this field is not decoded, it takes no value ({other:?})"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bpf::decode::ObjectTypes;

    fn env() -> DecodeEnv {
        DecodeEnv::offline(Arc::new(crate::pods::HostResolver::new("node-1")))
    }

    /// The decoder of tcp_reset's records (addresses, ports, enums, a TCP state).
    fn tcp_reset_events() -> Decoder {
        let obj = crate::bpf::catalog::find("tcp_reset").unwrap().object;
        ObjectTypes::parse(obj)
            .unwrap()
            .record_decoder("events")
            .unwrap()
    }

    /// The fields written come back from the decoder.
    #[test]
    fn encoded_records_decode_to_what_was_written() {
        let d = tcp_reset_events();
        let env = env();
        let bytes = d
            .encode_fields(
                &[
                    ("saddr", Value::Str("10.0.0.1".into())),
                    ("daddr", Value::Str("fd00::2".into())),
                    ("sport", Value::Uint(443)),
                    ("dport", Value::Uint(50000)),
                    ("kind", Value::Str("NOSOCK".into())),
                    ("state", Value::Str("ESTABLISHED".into())),
                    ("netns", Value::Uint(4026531840)),
                ],
                &env,
            )
            .unwrap();
        let v = d.decode(&bytes, &env).unwrap();
        assert_eq!(v.field("saddr").unwrap().to_string(), "10.0.0.1");
        assert_eq!(v.field("daddr").unwrap().to_string(), "fd00::2");
        assert_eq!(v.field("sport").unwrap().as_int(), Some(443));
        assert_eq!(v.field("dport").unwrap().as_int(), Some(50000));
        assert_eq!(v.field("kind").unwrap().as_str(), Some("NOSOCK"));
        assert_eq!(v.field("state").unwrap().as_str(), Some("ESTABLISHED"));
        assert_eq!(v.field("netns").unwrap().as_int(), Some(4026531840));
    }

    #[test]
    fn wrong_names_and_values_are_errors() {
        let d = tcp_reset_events();
        let env = env();
        let e = d
            .encode_fields(&[("sprot", Value::Uint(1))], &env)
            .unwrap_err();
        assert!(matches!(e, EncodeError::NoField { .. }), "{e}");
        assert!(e.to_string().contains("sport"), "names the fields: {e}");
        let e = d
            .encode_fields(&[("kind", Value::Str("NOPE".into()))], &env)
            .unwrap_err();
        assert!(e.to_string().contains("NOSOCK"), "names the values: {e}");
        let e = d
            .encode_fields(&[("sport", Value::Uint(70000))], &env)
            .unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        let e = d
            .encode_fields(&[("saddr", Value::Str("10.0.0.300".into()))], &env)
            .unwrap_err();
        assert!(e.to_string().contains("saddr"), "{e}");
    }
}
