//! The reference of what each kernel program gives a script: its records' fields
//! and its maps' keys and values, each with the form a script gets, its unit and
//! what it means.
//!
//! The fields and their decoded forms come from the embedded objects through the
//! decoder itself ([`Decoder::shape`]), so the reference cannot disagree with what
//! `ev` holds. BTF carries no comments: units and meanings come from the C sources
//! (embedded, see `reference/csource.rs`), where each field says them once, in a trailing comment whose
//! bracketed head is the unit:
//!
//! ```c
//! typedef __u64 sonde_ktime;  /* [ns, CLOCK_MONOTONIC] bpf_ktime_get_ns() */
//! struct tcp_connect_event {
//!     sonde_ktime ts;          /* unit and meaning of the typedef */
//!     __u64 elapsed_ns;        /* [ns] since the SYN was first sent */
//!     __s32 err;               /* [none] sk_err: the errno connect() reports */
//! };
//! ```
//!
//! A field without its own tag takes its typedef's (`sonde.h` tags every sonde
//! typedef); enums, `char` strings, `bool` and nested structs are `none`. A scalar
//! map key or value is tagged on its `__type(key, ...)` line. `sonde probes --fields`
//! prints the reference; `docs/probes-reference.md` is the same tables, checked
//! against the objects by a test (`SONDE_BLESS=1 cargo test -p sonde --lib
//! docs_match_the_objects` regenerates it).

use serde::Serialize;

use crate::bpf::catalog::{self, ProgramSpec};
use crate::bpf::decode::{DecodeError, Decoder, ObjectTypes};

mod csource;
mod markdown;

use csource::CSources;
pub use markdown::markdown;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("no kernel program `{name}`; programs: {known}")]
    UnknownProgram { name: String, known: String },
    #[error("program `{program}`: no C sources embedded for the reference")]
    NoSources { program: String },
    #[error("program `{program}`: {source}")]
    Decode {
        program: String,
        #[source]
        source: DecodeError,
    },
}

/// One program's reference.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramRef {
    pub program: String,
    pub summary: String,
    /// Ring buffer records: what `on_event(ev)` receives.
    pub records: Vec<RecordRef>,
    /// Every map, ring buffers included.
    pub maps: Vec<MapRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordRef {
    /// The ring buffer that carries it.
    pub map: String,
    /// The C struct.
    #[serde(rename = "type")]
    pub ty: String,
    /// The comment above the struct.
    pub about: String,
    pub fields: Vec<FieldRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldRef {
    /// As a script writes it: `saddr`, `pod`; nested fields as `outer.inner`; a
    /// scalar map key or value as `key` / `value`.
    pub name: String,
    /// The decoded form.
    #[serde(rename = "type")]
    pub ty: String,
    /// `ns`, `bytes`, `ns, CLOCK_MONOTONIC`, ... or `none`; `None` only when the C
    /// sources say nothing (a test keeps the built-in programs from that).
    pub unit: Option<String>,
    pub about: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MapRef {
    pub name: String,
    /// `LRU per-CPU hash`, `ring buffer`, ...
    pub kind: String,
    pub max_entries: Option<u64>,
    /// Values summed over CPUs when a script reads them.
    pub per_cpu: bool,
    /// The comment above the map's definition.
    pub about: String,
    /// The record type of a ring buffer.
    pub record: Option<String>,
    pub key: Option<TypeRef>,
    pub value: Option<TypeRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeRef {
    #[serde(rename = "type")]
    pub ty: String,
    /// The comment above the struct.
    pub about: String,
    pub fields: Vec<FieldRef>,
}

/// The reference of one program, or of every program with `all`.
pub fn programs(name: &str) -> Result<Vec<ProgramRef>, ReferenceError> {
    if name == "all" {
        return catalog::PROGRAMS.iter().map(program).collect();
    }
    let spec = catalog::find(name).ok_or_else(|| ReferenceError::UnknownProgram {
        name: name.to_string(),
        known: format!("{}, all", catalog::names().join(", ")),
    })?;
    Ok(vec![program(spec)?])
}

/// The reference of one program, from its object and its C sources.
pub fn program(spec: &ProgramSpec) -> Result<ProgramRef, ReferenceError> {
    let decode = |source| ReferenceError::Decode {
        program: spec.name.to_string(),
        source,
    };
    let c = CSources::of(spec.name).ok_or_else(|| ReferenceError::NoSources {
        program: spec.name.to_string(),
    })?;
    let types = ObjectTypes::parse(spec.object).map_err(decode)?;
    let record_maps = types.record_maps();
    let mut records = Vec::new();
    let mut maps = Vec::new();
    for def in types.map_defs() {
        let map_type = def.attr("type").unwrap_or(0);
        let mut map = MapRef {
            name: def.name.clone(),
            kind: map_kind(map_type),
            max_entries: def.attr("max_entries"),
            per_cpu: matches!(map_type, 5 | 6 | 10),
            about: c
                .maps
                .get(&def.name)
                .map(|m| m.about.clone())
                .unwrap_or_default(),
            record: None,
            key: None,
            value: None,
        };
        if record_maps.contains(&def.name) {
            let d = types.record_decoder(&def.name).map_err(decode)?;
            map.record = Some(d.type_name().to_string());
            records.push(RecordRef {
                map: def.name.clone(),
                ty: d.type_name().to_string(),
                about: c.struct_about(d.type_name()),
                fields: c.fields(&d, None),
            });
        } else if let Ok((k, v)) = types.map_decoders(&def.name) {
            let slots = c.maps.get(&def.name);
            map.key = Some(TypeRef {
                ty: type_label(&k),
                about: c.struct_about(k.type_name()),
                fields: c.fields(&k, Some(("key", slots.and_then(|s| s.key.as_ref())))),
            });
            map.value = Some(TypeRef {
                ty: type_label(&v),
                about: c.struct_about(v.type_name()),
                fields: c.fields(&v, Some(("value", slots.and_then(|s| s.value.as_ref())))),
            });
        }
        maps.push(map);
    }
    Ok(ProgramRef {
        program: spec.name.to_string(),
        summary: spec.summary.to_string(),
        records,
        maps,
    })
}

impl MapRef {
    /// `LRU hash, 4096 entries`, `ring buffer, 262144 bytes`, ...
    pub fn summary(&self) -> String {
        let mut s = self.kind.clone();
        match (self.max_entries, self.record.is_some()) {
            (Some(n), true) => s.push_str(&format!(", {n} bytes")),
            (Some(1), false) => s.push_str(", 1 entry"),
            (Some(n), false) => s.push_str(&format!(", {n} entries")),
            (None, _) => {}
        }
        if self.per_cpu {
            s.push_str(", values summed over CPUs when read");
        }
        s
    }

    /// What a map without key and value types is for.
    pub fn undecoded(&self) -> &'static str {
        if self.kind == "stack trace" {
            "kernel stacks, read through the records' stack fields"
        } else {
            "no BTF key and value types: entries reach scripts as bytes"
        }
    }
}

/// `struct reset_key`, `__u64`: the C name of a decoded type.
fn type_label(d: &Decoder) -> String {
    match d.shape().as_slice() {
        [one] if one.name.is_empty() => d.type_name().to_string(),
        _ => format!("struct {}", d.type_name()),
    }
}

/// `BPF_MAP_TYPE_*` in words.
fn map_kind(t: u64) -> String {
    match t {
        1 => "hash".into(),
        2 => "array".into(),
        5 => "per-CPU hash".into(),
        6 => "per-CPU array".into(),
        7 => "stack trace".into(),
        9 => "LRU hash".into(),
        10 => "LRU per-CPU hash".into(),
        27 => "ring buffer".into(),
        n => format!("map type {n}"),
    }
}

#[cfg(test)]
mod tests;
