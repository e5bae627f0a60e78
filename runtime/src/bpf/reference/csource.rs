//! The C sources of the kernel programs, embedded, and what their declarations
//! say: each field's C type and its trailing `/* [unit] meaning */` comment, the
//! comment above each struct, enum and map definition.

use std::collections::HashMap;

use super::FieldRef;
use crate::bpf::decode::{Decoder, FieldShape};

/// The shared header every program includes.
const SONDE_H: &str = include_str!("../../../../kernel-progs/include/sonde.h");

// Each program's header and source, by stem: `SOURCES: &[(stem, header, source)]`,
// generated from the objects in kernel-progs/obj/<arch>/ (runtime/build/catalog.rs).
include!(concat!(env!("OUT_DIR"), "/c_sources.rs"));

/// What the C sources say about one declaration: its C type and trailing comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CDecl {
    pub(super) ctype: String,
    pub(super) unit: Option<String>,
    pub(super) about: String,
}

/// The structs, typedefs and map declarations of a program's C sources.
#[derive(Debug, Default)]
pub(super) struct CSources {
    pub(super) structs: HashMap<String, CStruct>,
    pub(super) typedefs: HashMap<String, CDecl>,
    pub(super) maps: HashMap<String, CMap>,
    pub(super) enums: HashMap<String, CEnum>,
}

/// An enum: the comment above it and each enumerator's comment.
#[derive(Debug, Default)]
pub(super) struct CEnum {
    pub(super) about: String,
    pub(super) values: Vec<(String, String)>,
}

/// A struct: the comment above it and its fields.
#[derive(Debug, Default)]
pub(super) struct CStruct {
    pub(super) about: String,
    pub(super) fields: Vec<(String, CDecl)>,
}

/// A map definition: the comment above it and its `__type(key, ...)`,
/// `__type(value, ...)` lines.
#[derive(Debug, Default)]
pub(super) struct CMap {
    pub(super) about: String,
    pub(super) key: Option<CDecl>,
    pub(super) value: Option<CDecl>,
}

impl CSources {
    pub(super) fn of(program: &str) -> Option<CSources> {
        let (_, h, c) = SOURCES.iter().find(|(stem, _, _)| *stem == program)?;
        let mut s = CSources::default();
        for text in [SONDE_H, h, c] {
            s.parse(text);
        }
        Some(s)
    }

    /// Reads the declarations of C text, line by line (the sources follow the
    /// kernel style: one declaration per line, `struct x {` ... `};`).
    pub(super) fn parse(&mut self, text: &str) {
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
    pub(super) fn struct_about(&self, name: &str) -> String {
        self.structs
            .get(name)
            .map(|s| s.about.clone())
            .unwrap_or_default()
    }

    /// A decoded type's fields with their units and meanings. `scalar` names a
    /// map's key or value and its `__type` declaration, for a type that is not a
    /// struct.
    pub(super) fn fields(
        &self,
        d: &Decoder,
        scalar: Option<(&str, Option<&CDecl>)>,
    ) -> Vec<FieldRef> {
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

    pub(super) fn field(&self, name: String, shape: &FieldShape, decl: &CDecl) -> FieldRef {
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
