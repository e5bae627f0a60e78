//! Reading one named enum or struct straight from raw BTF bytes, without parsing
//! every type.
//!
//! The kernel's BTF holds about 150,000 types; building the full type graph to read
//! one enum costs tens of MB for a moment. BTF records have a fixed layout per kind
//! (`include/uapi/linux/btf.h`), so a single forward walk finds the type and reads
//! only its members and their names.

/// `struct btf_header`: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// BTF bytes, read in place.
struct Raw<'a> {
    raw: &'a [u8],
    strings: &'a [u8],
    types: usize,
    types_end: usize,
}

/// One type record: its kind, `info` word and where its members start.
struct TypeAt {
    kind: u32,
    info: u32,
    members: usize,
}

impl<'a> Raw<'a> {
    /// `None` when the bytes are not (little-endian) BTF.
    fn new(raw: &'a [u8]) -> Option<Self> {
        let mut r = Raw {
            raw,
            strings: &[],
            types: 0,
            types_end: 0,
        };
        if r.u16_at(0)? != MAGIC {
            return None;
        }
        let hdr_len = r.u32_at(4)? as usize;
        let (type_off, type_len) = (r.u32_at(8)? as usize, r.u32_at(12)? as usize);
        let (str_off, str_len) = (r.u32_at(16)? as usize, r.u32_at(20)? as usize);
        r.types = hdr_len.checked_add(type_off)?;
        r.types_end = r.types.checked_add(type_len)?;
        let strings = hdr_len.checked_add(str_off)?;
        r.strings = raw.get(strings..strings.checked_add(str_len)?)?;
        Some(r)
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        self.raw
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        self.raw
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&self, off: u32) -> Option<&'a str> {
        let s = self.strings.get(off as usize..)?;
        let end = s.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&s[..end]).ok()
    }

    /// The first type of one of `kinds` named `name`, in one forward walk.
    fn find(&self, kinds: &[u32], name: &str) -> Option<TypeAt> {
        let mut at = self.types;
        while at + 12 <= self.types_end {
            let name_off = self.u32_at(at)?;
            let info = self.u32_at(at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            let members = at + 12;
            if kinds.contains(&kind) && self.string(name_off) == Some(name) {
                return Some(TypeAt {
                    kind,
                    info,
                    members,
                });
            }
            at = members + extra;
        }
        None
    }
}

/// Members of the first `enum name` (or `enum64`), as `(value, name)`; `None` when
/// the bytes are not BTF or have no such enum.
pub fn enum_members(raw: &[u8], name: &str) -> Option<Vec<(u64, String)>> {
    let r = Raw::new(raw)?;
    let t = r.find(&[KIND_ENUM, KIND_ENUM64], name)?;
    let vlen = (t.info & 0xffff) as usize;
    let signed = t.info & (1 << 31) != 0;
    let mut out = Vec::with_capacity(vlen);
    for i in 0..vlen {
        let (m, value) = if t.kind == KIND_ENUM {
            let m = t.members + 8 * i;
            let v = r.u32_at(m + 4)?;
            let v = if signed {
                v as i32 as i64 as u64
            } else {
                v as u64
            };
            (m, v)
        } else {
            let m = t.members + 12 * i;
            (m, (r.u32_at(m + 8)? as u64) << 32 | r.u32_at(m + 4)? as u64)
        };
        out.push((value, r.string(r.u32_at(m)?)?.to_string()));
    }
    Some(out)
}

/// Names of the members of the first `struct name`; `None` when the bytes are not
/// BTF or have no such struct. Members of an anonymous struct or union member are
/// not looked into.
pub fn struct_members(raw: &[u8], name: &str) -> Option<Vec<String>> {
    let r = Raw::new(raw)?;
    let t = r.find(&[KIND_STRUCT], name)?;
    (0..(t.info & 0xffff) as usize)
        .map(|i| Some(r.string(r.u32_at(t.members + 12 * i)?)?.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF; `None` (the test skipped, loudly) without it.
    fn kernel_btf(test: &str) -> Option<Vec<u8>> {
        let raw = std::fs::read(crate::btf::SYSFS_VMLINUX).ok();
        if raw.is_none() {
            crate::testkit::skip(test, &format!("no {}", crate::btf::SYSFS_VMLINUX));
        }
        raw
    }

    /// The same enum as btf_rs reads it from the running kernel's full type graph.
    #[test]
    fn reads_the_kernels_drop_reasons_like_a_full_parse() {
        let Some(raw) = kernel_btf("reads_the_kernels_drop_reasons_like_a_full_parse") else {
            return;
        };
        let mut fast = enum_members(&raw, "skb_drop_reason").expect("enum skb_drop_reason");
        let btf = btf_rs::Btf::from_bytes(&raw).unwrap();
        let mut full: Vec<(u64, String)> = Vec::new();
        for t in btf.resolve_types_by_name("skb_drop_reason").unwrap() {
            if let btf_rs::Type::Enum(e) = t {
                for m in &e.members {
                    full.push((m.val() as u64, btf.resolve_name(m).unwrap()));
                }
            }
        }
        fast.sort();
        full.sort();
        assert!(fast.len() > 10, "{fast:?}");
        assert_eq!(fast, full);
        assert!(enum_members(&raw, "no_such_enum_anywhere").is_none());
        assert!(enum_members(b"not btf", "x").is_none());
    }

    /// A struct's member names, as btf_rs reads them from the full type graph.
    #[test]
    fn reads_struct_members_like_a_full_parse() {
        let Some(raw) = kernel_btf("reads_struct_members_like_a_full_parse") else {
            return;
        };
        let fast = struct_members(&raw, "sock_common").expect("struct sock_common");
        let btf = btf_rs::Btf::from_bytes(&raw).unwrap();
        let full: Vec<String> = btf
            .resolve_types_by_name("sock_common")
            .unwrap()
            .into_iter()
            .find_map(|t| match t {
                btf_rs::Type::Struct(s) => Some(
                    s.members
                        .iter()
                        .map(|m| btf.resolve_name(m).unwrap_or_default())
                        .collect(),
                ),
                _ => None,
            })
            .unwrap();
        assert_eq!(fast, full);
        assert!(fast.iter().any(|m| m == "skc_net"), "{fast:?}");
        assert!(struct_members(&raw, "no_such_struct_anywhere").is_none());
    }
}
