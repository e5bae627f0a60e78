//! The reference of what each kernel program gives a script: its records' fields
//! and its maps' keys and values, each with the form a script gets, its unit and
//! what it means.
//!
//! The fields and their decoded forms come from the embedded objects through the
//! decoder itself ([`Decoder::shape`]), so the reference cannot disagree with what
//! `ev` holds. BTF carries no comments: units and meanings come from the C sources
//! (embedded below), where each field says them once, in a trailing comment whose
//! bracketed head is the unit:
//!
//! ```c
//! typedef __u64 sonde_ktime;  /* [ns, CLOCK_MONOTONIC] bpf_ktime_get_ns() */
//! struct tcp_connect_event {
//!     sonde_ktime ts;          /* unit and meaning of the typedef */
//!     __u64 elapsed_ns;        /* [ns] since the SYN was first sent */
//!     __u32 pid;               /* [none] the current task's tgid */
//! };
//! ```
//!
//! A field without its own tag takes its typedef's (`sonde.h` tags every sonde
//! typedef); enums, `char` strings, `bool` and nested structs are `none`. A scalar
//! map key or value is tagged on its `__type(key, ...)` line. `sonde probes --fields`
//! prints the reference; `docs/probes-reference.md` is the same tables, checked
//! against the objects by a test.

use std::collections::HashMap;

use serde::Serialize;

use crate::bpf::catalog::{self, ProgramSpec};
use crate::bpf::decode::{DecodeError, Decoder, FieldShape, ObjectTypes};

/// The shared header every program includes.
const SONDE_H: &str = include_str!("../../../kernel-progs/include/sonde.h");

macro_rules! src {
    ($stem:literal) => {
        (
            $stem,
            include_str!(concat!("../../../kernel-progs/src/", $stem, ".h")),
            include_str!(concat!("../../../kernel-progs/src/", $stem, ".bpf.c")),
        )
    };
}

/// Each program's header and source, by stem.
const SOURCES: &[(&str, &str, &str)] = &[
    src!("bio_latency"),
    src!("flow"),
    src!("kernel_latency"),
    src!("netif_txlat"),
    src!("packet_loss"),
    src!("sock_pressure"),
    src!("socket_latency"),
    src!("softirq"),
    src!("tcp_reset"),
    src!("tcp_retrans"),
    src!("tcp_state"),
    src!("virtcmd_latency"),
];

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

/// What the C sources say about one declaration: its C type and trailing comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CDecl {
    ctype: String,
    unit: Option<String>,
    about: String,
}

/// The structs, typedefs and map declarations of a program's C sources.
#[derive(Debug, Default)]
struct CSources {
    structs: HashMap<String, CStruct>,
    typedefs: HashMap<String, CDecl>,
    maps: HashMap<String, CMap>,
    enums: HashMap<String, CEnum>,
}

/// An enum: the comment above it and each enumerator's comment.
#[derive(Debug, Default)]
struct CEnum {
    about: String,
    values: Vec<(String, String)>,
}

/// A struct: the comment above it and its fields.
#[derive(Debug, Default)]
struct CStruct {
    about: String,
    fields: Vec<(String, CDecl)>,
}

/// A map definition: the comment above it and its `__type(key, ...)`,
/// `__type(value, ...)` lines.
#[derive(Debug, Default)]
struct CMap {
    about: String,
    key: Option<CDecl>,
    value: Option<CDecl>,
}

impl CSources {
    fn of(program: &str) -> Option<CSources> {
        let (_, h, c) = SOURCES.iter().find(|(stem, _, _)| *stem == program)?;
        let mut s = CSources::default();
        for text in [SONDE_H, h, c] {
            s.parse(text);
        }
        Some(s)
    }

    /// Reads the declarations of C text, line by line (the sources follow the
    /// kernel style: one declaration per line, `struct x {` ... `};`).
    fn parse(&mut self, text: &str) {
        let mut lines = text.lines();
        let mut open: Option<Open> = None;
        let mut open_enum: Option<(String, CEnum)> = None;
        // A comment on lines of its own, until the next line of code.
        let mut above = String::new();
        while let Some(line) = lines.next() {
            let (code, comment) = split_comment(line, &mut lines);
            let code = code.trim();
            if let Some((name, e)) = open_enum.as_mut() {
                if code.starts_with('}') {
                    self.enums.insert(std::mem::take(name), std::mem::take(e));
                    open_enum = None;
                } else if let Some(value) = code.split(['=', ',']).next().map(str::trim) {
                    if !value.is_empty() {
                        e.values.push((value.to_string(), comment));
                    }
                }
                continue;
            }
            let Some(Open {
                name,
                body,
                map,
                depth,
            }) = open.as_mut()
            else {
                if code.is_empty() {
                    above = if line.trim().is_empty() {
                        String::new()
                    } else {
                        comment
                    };
                    continue;
                }
                if let Some(rest) = code.strip_prefix("typedef ") {
                    if let Some((ctype, name)) = declaration(rest) {
                        self.typedefs.insert(name, tagged(ctype, &comment));
                    }
                } else if let Some(name) =
                    code.strip_prefix("enum ").and_then(|r| r.strip_suffix('{'))
                {
                    let about = std::mem::take(&mut above);
                    open_enum = Some((
                        name.trim().to_string(),
                        CEnum {
                            about,
                            values: Vec::new(),
                        },
                    ));
                } else if let Some(rest) = code.strip_prefix("struct ") {
                    if let Some(head) = rest.strip_suffix('{') {
                        let head = head.trim();
                        let name = (!head.is_empty()).then(|| head.to_string());
                        let about = std::mem::take(&mut above);
                        open = Some(Open {
                            name,
                            body: CStruct {
                                about: about.clone(),
                                fields: Vec::new(),
                            },
                            map: CMap {
                                about,
                                ..CMap::default()
                            },
                            depth: 1,
                        });
                    }
                }
                above.clear();
                continue;
            };
            if code.starts_with('}') {
                *depth -= 1;
                if *depth > 0 {
                    continue;
                }
                match name.take() {
                    Some(n) => {
                        self.structs.insert(n, std::mem::take(body));
                    }
                    None => {
                        // `} counts SEC(".maps");`
                        let rest = code.trim_start_matches('}').trim();
                        if let Some((name, _)) = rest.split_once(" SEC(\".maps\")") {
                            self.maps
                                .insert(name.trim().to_string(), std::mem::take(map));
                        }
                    }
                }
                open = None;
            } else if code.ends_with('{') {
                // An anonymous struct or union inside: its members are the outer
                // struct's (the decoder flattens them too).
                *depth += 1;
            } else if let Some(rest) = code.strip_prefix("__type(") {
                if let Some((slot, ctype)) = rest.trim_end_matches(");").split_once(',') {
                    let d = Some(tagged(ctype.trim().to_string(), &comment));
                    match slot.trim() {
                        "key" => map.key = d,
                        "value" => map.value = d,
                        _ => {}
                    }
                }
            } else if code.ends_with(';') && !code.starts_with("__uint(") {
                if let Some((ctype, field)) = declaration(code) {
                    body.fields.push((field, tagged(ctype, &comment)));
                }
            }
        }
    }

    /// The comment above a struct, empty when none.
    fn struct_about(&self, name: &str) -> String {
        self.structs
            .get(name)
            .map(|s| s.about.clone())
            .unwrap_or_default()
    }

    /// A decoded type's fields with their units and meanings. `scalar` names a
    /// map's key or value and its `__type` declaration, for a type that is not a
    /// struct.
    fn fields(&self, d: &Decoder, scalar: Option<(&str, Option<&CDecl>)>) -> Vec<FieldRef> {
        let shape = d.shape();
        if let [one] = shape.as_slice() {
            if one.name.is_empty() {
                let (name, decl) = scalar.unwrap_or(("value", None));
                let decl = decl.cloned().unwrap_or_else(|| CDecl {
                    ctype: d.type_name().to_string(),
                    ..CDecl::default()
                });
                return vec![self.field(name.to_string(), one, &decl)];
            }
        }
        let mut out = Vec::new();
        self.struct_fields("", d.type_name(), &shape, &mut out);
        out
    }

    fn struct_fields(&self, prefix: &str, ty: &str, shape: &[FieldShape], out: &mut Vec<FieldRef>) {
        let ty = ty.trim_start_matches("struct ").trim();
        let decls = self.structs.get(ty);
        for f in shape {
            let decl = decls
                .and_then(|d| d.fields.iter().find(|(n, _)| *n == f.name))
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            let name = format!("{prefix}{}", f.name);
            out.push(self.field(name.clone(), f, &decl));
            if let Some(pk) = &f.pod_key {
                out.push(FieldRef {
                    name: format!("{prefix}{pk}"),
                    ty: "pod (map: name, namespace, node)".into(),
                    unit: Some("none".into()),
                    about: format!("the pod whose network namespace is `{name}`"),
                });
            }
            if !f.children.is_empty() {
                self.struct_fields(&format!("{name}."), &decl.ctype, &f.children, out);
            }
        }
    }

    fn field(&self, name: String, shape: &FieldShape, decl: &CDecl) -> FieldRef {
        let typedef = self.typedef_chain(&decl.ctype);
        let unit = decl
            .unit
            .clone()
            .or_else(|| typedef.iter().find_map(|t| t.unit.clone()))
            .or_else(|| {
                let base = typedef.last().map_or(decl.ctype.as_str(), |t| &t.ctype);
                let implicit = base.starts_with("enum ")
                    || base.starts_with("struct ")
                    || base == "bool"
                    || shape.ty.starts_with("string (char[");
                implicit.then(|| "none".to_string())
            });
        let mut about = if decl.about.is_empty() {
            typedef
                .iter()
                .find(|t| !t.about.is_empty())
                .map(|t| t.about.clone())
                .unwrap_or_default()
        } else {
            decl.about.clone()
        };
        if let Some(meanings) = self.enum_meanings(&decl.ctype) {
            if !about.is_empty() {
                about.push_str(". ");
            }
            about.push_str(&meanings);
        }
        FieldRef {
            name,
            ty: shape.ty.clone(),
            unit,
            about,
        }
    }

    /// What an enum's values mean, named as the decoder names them
    /// (`NOSOCK: sent in reply to ...; ACTIVE: ...`), else the comment above it.
    fn enum_meanings(&self, ctype: &str) -> Option<String> {
        let name = ctype.strip_prefix("enum ")?.trim();
        let e = self.enums.get(name)?;
        let prefix = format!("{}_", name.to_uppercase());
        let meanings: Vec<String> = e
            .values
            .iter()
            .filter(|(_, about)| !about.is_empty())
            .map(|(v, about)| format!("{}: {about}", v.strip_prefix(&prefix).unwrap_or(v)))
            .collect();
        if meanings.is_empty() {
            (!e.about.is_empty()).then(|| e.about.clone())
        } else {
            Some(meanings.join("; "))
        }
    }

    /// The typedefs a C type goes through, outermost first.
    fn typedef_chain(&self, ctype: &str) -> Vec<&CDecl> {
        let mut out = Vec::new();
        let mut t = ctype;
        while let Some(d) = self.typedefs.get(t) {
            if out.len() > 8 {
                break;
            }
            out.push(d);
            t = &d.ctype;
        }
        out
    }
}

/// A struct being read: its name (`None` for an anonymous map definition), the
/// fields so far, and the depth of braces.
struct Open {
    name: Option<String>,
    body: CStruct,
    map: CMap,
    depth: usize,
}

/// Splits a line into code and its trailing `/* ... */` comment, reading on while
/// the comment continues on the next lines.
fn split_comment<'a>(line: &'a str, rest: &mut impl Iterator<Item = &'a str>) -> (String, String) {
    let Some(start) = line.find("/*") else {
        return (
            line.split("//").next().unwrap_or("").to_string(),
            String::new(),
        );
    };
    let code = line[..start].to_string();
    let mut comment = String::new();
    let mut tail = &line[start + 2..];
    loop {
        if let Some(end) = tail.find("*/") {
            comment.push_str(&tail[..end]);
            break;
        }
        comment.push_str(tail);
        comment.push(' ');
        match rest.next() {
            Some(next) => {
                // ` * more text` continues; ` */` ends.
                let next = next.trim_start();
                tail = match next.strip_prefix('*') {
                    Some(t) if !t.starts_with('/') => t,
                    _ => next,
                };
            }
            None => break,
        }
    }
    (
        code,
        comment.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

/// `__u64 latency_ns;`, `char comm[16];`, `__u8 sonde_ip[16];` -> (C type, name).
fn declaration(code: &str) -> Option<(String, String)> {
    let code = code.trim().trim_end_matches(';');
    let code = code.split(':').next()?.trim(); // bitfield width
    let code = code.split('[').next()?.trim(); // array length
    let (ctype, name) = code.rsplit_once(|c: char| c.is_whitespace() || c == '*')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((ctype.trim().to_string(), name.to_string()))
}

/// A declaration with the unit and meaning its comment gives: `[unit] meaning`.
fn tagged(ctype: String, comment: &str) -> CDecl {
    let comment = comment.trim();
    let (unit, about) = match comment.strip_prefix('[').and_then(|c| c.split_once(']')) {
        Some((unit, about)) => (Some(unit.trim().to_string()), about.trim()),
        None => (None, comment),
    };
    CDecl {
        ctype,
        unit,
        about: about.to_string(),
    }
}

/// The reference as Markdown: `docs/probes-reference.md`.
pub fn markdown(programs: &[ProgramRef]) -> String {
    let mut out = String::from(MARKDOWN_HEAD);
    out.push('\n');
    for p in programs {
        out.push_str(&format!("- [{0}](#{0})\n", p.program));
    }
    for p in programs {
        out.push_str(&format!("\n## {}\n\n{}\n", p.program, p.summary));
        for r in &p.records {
            out.push_str(&format!(
                "\n### Record `{}` (`struct {}`): `on_event(ev)`\n\n",
                r.map, r.ty
            ));
            paragraph(&mut out, &r.about);
            markdown_table(&mut out, &r.fields);
        }
        for m in &p.maps {
            out.push_str(&format!("\n### Map `{}`: {}\n\n", m.name, m.summary()));
            paragraph(&mut out, &m.about);
            if let Some(r) = &m.record {
                out.push_str(&format!("Carries the `struct {r}` records above.\n"));
                continue;
            }
            match (&m.key, &m.value) {
                (Some(k), Some(v)) => {
                    out.push_str(&format!("Key `{}`{}\n\n", k.ty, colon(&k.about)));
                    markdown_table(&mut out, &k.fields);
                    out.push_str(&format!("\nValue `{}`{}\n\n", v.ty, colon(&v.about)));
                    markdown_table(&mut out, &v.fields);
                }
                _ => out.push_str(&format!("{}.\n", capitalized(m.undecoded()))),
            }
        }
    }
    out
}

const MARKDOWN_HEAD: &str = "\
# Kernel programs: what a script gets

Generated from the embedded objects and their C sources by
`sonde probes --fields all --markdown > docs/probes-reference.md`; a test fails
when this file and the objects disagree. Units are those of the C headers'
trailing `/* [unit] ... */` comments (see `runtime/src/bpf/reference.rs`).

A record's fields are read as `ev.<field>` in `on_event(ev)`; a map's entries
as `#{key, value}` (struct keys and values as maps of their fields).
";

/// `about` as a paragraph of its own, when there is one.
fn paragraph(out: &mut String, about: &str) {
    if !about.is_empty() {
        out.push_str(about);
        out.push_str("\n\n");
    }
}

/// `: about`, or `:` alone.
fn colon(about: &str) -> String {
    if about.is_empty() {
        ":".into()
    } else {
        format!(": {about}")
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn markdown_table(out: &mut String, fields: &[FieldRef]) {
    out.push_str("| field | type | unit | about |\n|---|---|---|---|\n");
    for f in fields {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            f.name,
            cell(&f.ty),
            cell(f.unit.as_deref().unwrap_or("(not documented)")),
            cell(&f.about)
        ));
    }
}

#[cfg(test)]
#[path = "reference_tests.rs"]
mod tests;
