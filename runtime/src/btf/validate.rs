//! Structural checks of raw BTF, before aya (or anything else) reads it.
//!
//! aya-obj trusts the BTF it relocates against: a name offset past the string
//! section is an out-of-bounds slice (a panic), a bitfield of a zero-sized int a
//! division by zero, an anonymous member whose type is its own struct an endless
//! recursion (a stack overflow: an abort that nothing can catch). A kernel BTF with
//! a few bytes changed therefore passed aya's parse and took the process down at
//! the first relocation. [`check`] walks the bytes once and refuses such a BTF with
//! where and what is wrong, before any of it is used:
//!
//! - the header: magic (little-endian), version 1, no flags, a header length that
//!   fits, type and string sections inside the data, aligned and not overlapping;
//!   a string section that starts and ends with NUL;
//! - every type record: a known kind, no reserved bits, the record and its members
//!   inside the type section, at most [`MAX_TYPES`] types (the kernel's limit);
//! - every name offset (types, members, enumerators, parameters) inside the string
//!   section;
//! - every type id a record refers to inside the types, void only where C allows it
//!   (never as a member, an array element or a variable);
//! - sizes that make sense: ints of 1, 2, 4, 8 or 16 bytes holding their bits, enums
//!   of 1, 2, 4 or 8, floats of 2 to 16; a bitfield member's type is an int or enum;
//!   a function's type is a function prototype;
//! - no cycle that a walk through the types would follow forever: a type may reach
//!   itself only through a pointer (`struct list_head { struct list_head *next; }`),
//!   never by containing itself, directly or through typedefs, qualifiers, arrays,
//!   members, prototypes or variables;
//! - sizes a relocation can compute: no type larger than [`MAX_TYPE_SIZE`] (an
//!   array's elements times their size included), and every member of a struct or
//!   union inside it (the kernel refuses "Member exceeds struct_size" too).
//!   aya-obj computes bit offsets and sizes in 32 bits: a `char[0x80000010]` member
//!   overflowed its multiplication by 8.
//!
//! This is what the kernel's own BTF verifier (`kernel/bpf/btf.c`) checks for the
//! same structure, without the semantic checks a relocation does not depend on.
//! The running kernel's BTF (about 150,000 types) is checked in about 10 ms.
//!
//! ```
//! use sonde::btf::validate;
//!
//! let raw = sonde::btf::extract_btf_section(sonde::bpf::catalog::PROGRAMS[0].object).unwrap();
//! let ok = validate::check(&raw).unwrap();
//! assert!(ok.types > 10);
//! let mut bad = raw.clone();
//! bad[0] = 0;
//! assert_eq!(validate::check(&bad).unwrap_err().to_string(), "header: not BTF (magic 0xeb00, expected 0xeb9f)");
//! ```

use std::fmt;

/// The most types one BTF may hold (`BTF_MAX_TYPE` in the kernel).
pub const MAX_TYPES: u32 = 0x000f_ffff;

/// The largest type (in bytes) a BTF may describe: its size in bits still fits 32
/// bits, which is how relocations compute it. No kernel type comes near (the largest
/// structs are a few hundred KiB).
pub const MAX_TYPE_SIZE: u64 = 1 << 29;

const HEADER_LEN: usize = 24;
const MAGIC: u16 = 0xeb9f;

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
/// `BTF_KIND_STRUCT`.
pub const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// Bits of `info` that may be set: vlen (0-15), kind (24-28), kind_flag (31).
const INFO_MASK: u32 = 0x9f00_ffff;

fn kind_name(kind: u32) -> &'static str {
    match kind {
        INT => "int",
        PTR => "ptr",
        ARRAY => "array",
        STRUCT => "struct",
        UNION => "union",
        ENUM => "enum",
        FWD => "fwd",
        TYPEDEF => "typedef",
        VOLATILE => "volatile",
        CONST => "const",
        RESTRICT => "restrict",
        FUNC => "func",
        FUNC_PROTO => "func_proto",
        VAR => "var",
        DATASEC => "datasec",
        FLOAT => "float",
        DECL_TAG => "decl_tag",
        TYPE_TAG => "type_tag",
        ENUM64 => "enum64",
        _ => "unknown",
    }
}

/// What is wrong with a BTF, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Corrupt {
    /// Byte offset of the problem in the BTF.
    pub offset: usize,
    /// The type the problem is in (`None`: the header or a section).
    pub type_id: Option<u32>,
    pub what: String,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.type_id {
            Some(id) => write!(f, "type [{id}] at byte {}: {}", self.offset, self.what),
            None if self.offset == 0 => write!(f, "header: {}", self.what),
            None => write!(f, "at byte {}: {}", self.offset, self.what),
        }
    }
}

/// What a BTF that passed holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Types, void not counted.
    pub types: u32,
    /// Bytes of the string section.
    pub strings: usize,
}

/// Checks the structure of raw BTF (see the module docs).
pub fn check(raw: &[u8]) -> Result<Checked, Corrupt> {
    let btf = Layout::read(raw)?;
    btf.check_types()?;
    btf.check_cycles()?;
    btf.check_sizes()?;
    Ok(Checked {
        types: btf.records.len() as u32,
        strings: btf.strings.len(),
    })
}

fn header(what: impl Into<String>) -> Corrupt {
    Corrupt {
        offset: 0,
        type_id: None,
        what: what.into(),
    }
}

/// Where one type record of a BTF is, for tools (and tests) that change bytes in
/// place: its id, the byte offset of its 12-byte header in the data, its kind and its
/// entry count.
#[derive(Debug, Clone, Copy)]
pub struct TypeRecord {
    pub id: u32,
    pub offset: usize,
    pub kind: u32,
    pub vlen: usize,
}

/// Every type record of `raw` in id order (the sections must be sound; the types
/// themselves are not checked), and the string section.
pub fn records(raw: &[u8]) -> Result<(Vec<TypeRecord>, &[u8]), Corrupt> {
    let l = Layout::read(raw)?;
    let records = (1..=l.count())
        .map(|id| {
            let (offset, _, kind, vlen) = l.record(id);
            TypeRecord {
                id,
                offset,
                kind,
                vlen,
            }
        })
        .collect();
    Ok((records, l.strings))
}

/// The sections of a BTF and where each type record starts.
struct Layout<'a> {
    raw: &'a [u8],
    strings: &'a [u8],
    /// Byte offset (in `raw`) of type `id`'s record at `records[id - 1]`.
    records: Vec<u32>,
}

impl<'a> Layout<'a> {
    fn read(raw: &'a [u8]) -> Result<Layout<'a>, Corrupt> {
        if raw.len() < HEADER_LEN {
            return Err(header(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte BTF header",
                raw.len()
            )));
        }
        if u32::try_from(raw.len()).is_err() {
            return Err(header(format!(
                "{} bytes, more than BTF can address",
                raw.len()
            )));
        }
        let magic = u16::from_le_bytes([raw[0], raw[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(header("big-endian BTF is not supported"));
        }
        if magic != MAGIC {
            return Err(header(format!(
                "not BTF (magic {magic:#06x}, expected {MAGIC:#06x})"
            )));
        }
        if raw[2] != 1 {
            return Err(header(format!("version {}, only version 1 exists", raw[2])));
        }
        if raw[3] != 0 {
            return Err(header(format!("flags {:#x}, expected none", raw[3])));
        }
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let hdr_len = word(4) as usize;
        if hdr_len < HEADER_LEN || hdr_len > raw.len() {
            return Err(header(format!(
                "header length {hdr_len} (expected {HEADER_LEN} to {}, the size of the data)",
                raw.len()
            )));
        }
        if raw[HEADER_LEN..hdr_len].iter().any(|b| *b != 0) {
            return Err(header(format!(
                "header length {hdr_len}: the bytes past the {HEADER_LEN} this version knows are not zero"
            )));
        }
        let section = |name: &str, off: u32, len: u32| -> Result<(usize, usize), Corrupt> {
            // u32 + u32 + usize (<= u32::MAX) cannot overflow a u64.
            let start = hdr_len as u64 + u64::from(off);
            let end = start + u64::from(len);
            if end > raw.len() as u64 {
                return Err(header(format!(
                    "{name} section (offset {off}, {len} bytes) ends at byte {end}, past the end of the data ({} bytes)",
                    raw.len()
                )));
            }
            Ok((start as usize, end as usize))
        };
        let (types_start, types_end) = section("type", word(8), word(12))?;
        let (str_start, str_end) = section("string", word(16), word(20))?;
        if word(8) % 4 != 0 || word(12) % 4 != 0 {
            return Err(header(format!(
                "type section (offset {}, {} bytes) is not 4-byte aligned",
                word(8),
                word(12)
            )));
        }
        if types_start < str_end && str_start < types_end {
            return Err(header(format!(
                "type section (bytes {types_start}..{types_end}) and string section (bytes {str_start}..{str_end}) overlap"
            )));
        }
        let strings = &raw[str_start..str_end];
        if strings.first() != Some(&0) {
            return Err(header(
                "string section does not start with an empty string (a NUL byte)",
            ));
        }
        if strings.last() != Some(&0) {
            return Err(header("string section does not end with a NUL byte"));
        }

        let mut records = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let id = records.len() as u32 + 1;
            let bad = |what: String| Corrupt {
                offset: at,
                type_id: Some(id),
                what,
            };
            if id > MAX_TYPES {
                return Err(bad(format!("more than {MAX_TYPES} types")));
            }
            if types_end - at < 12 {
                return Err(bad(format!(
                    "record header needs 12 bytes, the type section has {} left",
                    types_end - at
                )));
            }
            let info = word(at + 4);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            if info & !INFO_MASK != 0 {
                return Err(bad(format!("reserved bits set in info {info:#010x}")));
            }
            let extra = match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
                ENUM | FUNC_PROTO => 8 * vlen,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                _ => return Err(bad(format!("unknown kind {kind}"))),
            };
            let size = 12 + extra;
            if types_end - at < size {
                return Err(bad(format!(
                    "{} with {vlen} entries needs {size} bytes, the type section has {} left",
                    kind_name(kind),
                    types_end - at
                )));
            }
            records.push(at as u32);
            at += size;
        }
        Ok(Layout {
            raw,
            strings,
            records,
        })
    }

    fn word(&self, at: usize) -> u32 {
        let b = &self.raw[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn count(&self) -> u32 {
        self.records.len() as u32
    }

    /// Record offset, info, kind and vlen of type `id` (1-based, in range).
    fn record(&self, id: u32) -> (usize, u32, u32, usize) {
        let at = self.records[id as usize - 1] as usize;
        let info = self.word(at + 4);
        (at, info, (info >> 24) & 0x1f, (info & 0xffff) as usize)
    }

    fn kind(&self, id: u32) -> u32 {
        if id == 0 {
            0
        } else {
            self.record(id).2
        }
    }

    /// The name at `off`, for messages (lossy, shortened).
    fn name(&self, off: u32) -> String {
        let Some(s) = self.strings.get(off as usize..) else {
            return String::new();
        };
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len()).min(64);
        String::from_utf8_lossy(&s[..end]).into_owned()
    }

    /// `kind name` of a type, for messages.
    fn describe(&self, id: u32) -> String {
        if id == 0 {
            return "void".into();
        }
        let (at, _, kind, _) = self.record(id);
        let name = self.name(self.word(at));
        if name.is_empty() {
            format!("[{id}] {} (anonymous)", kind_name(kind))
        } else {
            format!("[{id}] {} {name}", kind_name(kind))
        }
    }

    fn check_types(&self) -> Result<(), Corrupt> {
        for id in 1..=self.count() {
            self.check_type(id)?;
        }
        Ok(())
    }

    fn check_type(&self, id: u32) -> Result<(), Corrupt> {
        let (at, info, kind, vlen) = self.record(id);
        let kind_flag = info >> 31 != 0;
        let kname = kind_name(kind);
        let bad = |offset: usize, what: String| Corrupt {
            offset,
            type_id: Some(id),
            what,
        };
        let name_ok = |offset: usize, what: &str| -> Result<(), Corrupt> {
            let off = self.word(offset);
            if off as usize >= self.strings.len() {
                return Err(bad(
                    offset,
                    format!(
                        "{what} name offset {off} is past the string section ({} bytes)",
                        self.strings.len()
                    ),
                ));
            }
            Ok(())
        };
        // A referenced type id: in range, and void only when `void_ok`.
        let type_ok = |offset: usize, what: &str, void_ok: bool| -> Result<u32, Corrupt> {
            let t = self.word(offset);
            if t > self.count() {
                return Err(bad(
                    offset,
                    format!(
                        "{kname}: {what} refers to type {t}, past the last type ({})",
                        self.count()
                    ),
                ));
            }
            if t == 0 && !void_ok {
                return Err(bad(offset, format!("{kname}: {what} is void")));
            }
            Ok(t)
        };
        let size = self.word(at + 8);
        name_ok(at, kname)?;
        let no_members = |what: &str| -> Result<(), Corrupt> {
            if vlen != 0 {
                return Err(bad(at + 4, format!("{what} with vlen {vlen}, expected 0")));
            }
            Ok(())
        };
        match kind {
            INT => {
                no_members("int")?;
                if !matches!(size, 1 | 2 | 4 | 8 | 16) {
                    return Err(bad(
                        at + 8,
                        format!("int of {size} bytes (expected 1, 2, 4, 8 or 16)"),
                    ));
                }
                let data = self.word(at + 12);
                let (bits, offset) = (data & 0xff, (data >> 16) & 0xff);
                if data & !0x0fff_00ff != 0 || bits > 128 || offset + bits > 128 {
                    return Err(bad(
                        at + 12,
                        format!("int encoding {data:#010x} is invalid"),
                    ));
                }
                if bits.div_ceil(8) > size {
                    return Err(bad(
                        at + 12,
                        format!("int of {size} bytes cannot hold {bits} bits"),
                    ));
                }
            }
            PTR | TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => {
                no_members(kname)?;
                type_ok(at + 8, "its type", true)?;
            }
            FUNC => {
                if vlen > 2 {
                    return Err(bad(
                        at + 4,
                        format!("func linkage {vlen} (expected 0 to 2)"),
                    ));
                }
                let t = type_ok(at + 8, "its type", false)?;
                if self.kind(t) != FUNC_PROTO {
                    return Err(bad(
                        at + 8,
                        format!("func: its type is {}, not a func_proto", self.describe(t)),
                    ));
                }
            }
            ARRAY => {
                no_members("array")?;
                type_ok(at + 12, "element type", false)?;
                type_ok(at + 16, "index type", false)?;
            }
            STRUCT | UNION => {
                for i in 0..vlen {
                    let m = at + 12 + 12 * i;
                    name_ok(m, &format!("member {i}"))?;
                    let t = type_ok(m + 4, &format!("member {i}"), false)?;
                    let bitfield = if kind_flag { self.word(m + 8) >> 24 } else { 0 };
                    if bitfield > 0 {
                        self.bitfield_type_ok(t).map_err(|why| {
                            bad(
                                m + 4,
                                format!(
                                    "{kname}: member {i} is a {bitfield}-bit bitfield of {why}"
                                ),
                            )
                        })?;
                    }
                }
            }
            ENUM | ENUM64 => {
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return Err(bad(
                        at + 8,
                        format!("{kname} of {size} bytes (expected 1, 2, 4 or 8)"),
                    ));
                }
                let stride = if kind == ENUM { 8 } else { 12 };
                for i in 0..vlen {
                    name_ok(at + 12 + stride * i, &format!("enumerator {i}"))?;
                }
            }
            FWD => no_members("fwd")?,
            FUNC_PROTO => {
                type_ok(at + 8, "return type", true)?;
                for i in 0..vlen {
                    let p = at + 12 + 8 * i;
                    name_ok(p, &format!("parameter {i}"))?;
                    // `...` is a last parameter of type void.
                    type_ok(p + 4, &format!("parameter {i}"), i + 1 == vlen)?;
                }
            }
            VAR => {
                no_members("var")?;
                type_ok(at + 8, "its type", false)?;
            }
            DATASEC => {
                for i in 0..vlen {
                    let v = at + 12 + 12 * i;
                    let t = type_ok(v, &format!("entry {i}"), false)?;
                    if !matches!(self.kind(t), VAR | FUNC) {
                        return Err(bad(
                            v,
                            format!(
                                "datasec: entry {i} is {}, not a var or func",
                                self.describe(t)
                            ),
                        ));
                    }
                }
            }
            FLOAT => {
                no_members("float")?;
                if !matches!(size, 2 | 4 | 8 | 12 | 16) {
                    return Err(bad(
                        at + 8,
                        format!("float of {size} bytes (expected 2, 4, 8, 12 or 16)"),
                    ));
                }
            }
            DECL_TAG => {
                no_members("decl_tag")?;
                type_ok(at + 8, "its type", false)?;
                let component = self.word(at + 12) as i32;
                if component < -1 {
                    return Err(bad(
                        at + 12,
                        format!("decl_tag component index {component}"),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The size in bytes of every type that has one (see [`MAX_TYPE_SIZE`]), then
    /// every struct and union member inside its struct. Runs after
    /// [`Layout::check_cycles`]: every chain of typedefs, qualifiers and arrays ends.
    fn check_sizes(&self) -> Result<(), Corrupt> {
        let n = self.count() as usize;
        // sizes[id]: None until resolved; void (id 0) has size 0.
        let mut sizes: Vec<Option<u64>> = vec![None; n + 1];
        sizes[0] = Some(0);
        let mut chain: Vec<u32> = Vec::new();
        for root in 1..=n as u32 {
            let mut t = root;
            // Walk down to a type whose size is known or given by its record.
            let base = loop {
                if let Some(s) = sizes[t as usize] {
                    break s;
                }
                let (at, _, kind, _) = self.record(t);
                match kind {
                    TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | VAR => {
                        chain.push(t);
                        t = self.word(at + 8);
                    }
                    ARRAY => {
                        chain.push(t);
                        t = self.word(at + 12);
                    }
                    _ => {
                        let s = self.own_size(t);
                        sizes[t as usize] = Some(s);
                        break s;
                    }
                }
            };
            let mut size = base;
            while let Some(id) = chain.pop() {
                let (at, _, kind, _) = self.record(id);
                if kind == ARRAY {
                    size = size.saturating_mul(u64::from(self.word(at + 20)));
                }
                sizes[id as usize] = Some(size);
            }
        }
        for id in 1..=n as u32 {
            let (at, info, kind, vlen) = self.record(id);
            let size = sizes[id as usize].unwrap_or(0);
            let bad = |offset: usize, what: String| Corrupt {
                offset,
                type_id: Some(id),
                what,
            };
            if kind != DATASEC && kind != VAR && size > MAX_TYPE_SIZE {
                return Err(bad(
                    at + 8,
                    format!(
                        "{} is {size} bytes, more than {MAX_TYPE_SIZE} (no kernel type is that large)",
                        self.describe(id)
                    ),
                ));
            }
            if !matches!(kind, STRUCT | UNION) {
                continue;
            }
            let kind_flag = info >> 31 != 0;
            for i in 0..vlen {
                let m = at + 12 + 12 * i;
                let t = self.word(m + 4);
                let offset = self.word(m + 8);
                let (bit_offset, bits) = if kind_flag {
                    (u64::from(offset & 0x00ff_ffff), u64::from(offset >> 24))
                } else {
                    (u64::from(offset), 0)
                };
                let end_bits = if bits > 0 {
                    bit_offset + bits
                } else {
                    (bit_offset / 8).saturating_add(sizes[t as usize].unwrap_or(0)) * 8
                };
                if end_bits > size * 8 {
                    return Err(bad(
                        m + 8,
                        format!(
                            "{}: member {i} ({}) ends at bit {end_bits}, past the {size} bytes of the {}",
                            self.describe(id),
                            self.describe(t),
                            kind_name(kind),
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The size a record gives its type itself (0 for kinds without one).
    fn own_size(&self, id: u32) -> u64 {
        let (at, _, kind, _) = self.record(id);
        match kind {
            INT | ENUM | ENUM64 | FLOAT | STRUCT | UNION | DATASEC => u64::from(self.word(at + 8)),
            PTR => 8,
            _ => 0,
        }
    }

    /// A bitfield's type, through typedefs and qualifiers, must be an int or an enum.
    fn bitfield_type_ok(&self, mut t: u32) -> Result<(), BadBitfield> {
        for _ in 0..32 {
            // A later type is checked later: its reference may be out of range yet.
            if t > self.count() {
                return Err(BadBitfield::PastLast {
                    id: t,
                    last: self.count(),
                });
            }
            match self.kind(t) {
                INT | ENUM | ENUM64 => return Ok(()),
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => {
                    t = self.word(self.record(t).0 + 8);
                }
                _ => return Err(BadBitfield::NotIntOrEnum(self.describe(t))),
            }
        }
        Err(BadBitfield::TooDeep)
    }

    /// The `i`th type `id` contains (or names as its own type): every reference but
    /// a pointer's, which is how C types refer to themselves. Void is skipped.
    fn edge(&self, id: u32, i: usize) -> Option<Option<u32>> {
        let (at, _, kind, vlen) = self.record(id);
        let t = match kind {
            TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | FUNC | VAR | DECL_TAG if i == 0 => {
                self.word(at + 8)
            }
            ARRAY if i < 2 => self.word(at + 12 + 4 * i),
            STRUCT | UNION | DATASEC if i < vlen => {
                let off = if kind == DATASEC { 0 } else { 4 };
                self.word(at + 12 + 12 * i + off)
            }
            FUNC_PROTO if i == 0 => self.word(at + 8),
            FUNC_PROTO if i <= vlen => self.word(at + 12 + 8 * (i - 1) + 4),
            _ => return None,
        };
        Some((t != 0).then_some(t))
    }

    /// No type contains itself (an iterative depth-first walk: no recursion here
    /// either).
    fn check_cycles(&self) -> Result<(), Corrupt> {
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let n = self.count() as usize;
        let mut state = vec![NEW; n + 1];
        let mut stack: Vec<(u32, usize)> = Vec::new();
        for root in 1..=n as u32 {
            if state[root as usize] != NEW {
                continue;
            }
            state[root as usize] = OPEN;
            stack.push((root, 0));
            while let Some((id, next)) = stack.last_mut() {
                let id = *id;
                match self.edge(id, *next) {
                    None => {
                        state[id as usize] = DONE;
                        stack.pop();
                    }
                    Some(target) => {
                        *next += 1;
                        let Some(t) = target else { continue };
                        match state[t as usize] {
                            NEW => {
                                state[t as usize] = OPEN;
                                stack.push((t, 0));
                            }
                            OPEN => {
                                let from = stack.iter().position(|(s, _)| *s == t).unwrap_or(0);
                                let path: Vec<String> = stack[from..]
                                    .iter()
                                    .take(8)
                                    .map(|(s, _)| self.describe(*s))
                                    .collect();
                                return Err(Corrupt {
                                    offset: self.records[t as usize - 1] as usize,
                                    type_id: Some(t),
                                    what: format!(
                                        "{} contains itself without a pointer ({}{} -> [{t}]): a walk through it never ends",
                                        self.describe(t),
                                        path.join(" -> "),
                                        if stack.len() - from > 8 { " -> ..." } else { "" },
                                    ),
                                });
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a bitfield member's type is instead of an int or an enum.
#[derive(Debug, thiserror::Error)]
enum BadBitfield {
    #[error("type {id}, past the last type ({last})")]
    PastLast { id: u32, last: u32 },
    /// The type as the checker describes it.
    #[error("{0}, not an int or enum")]
    NotIntOrEnum(String),
    #[error("a chain of more than 32 typedefs and qualifiers")]
    TooDeep,
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
