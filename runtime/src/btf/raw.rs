//! Reading one named enum straight from raw BTF bytes, without parsing every type.
//!
//! The kernel's BTF holds about 150,000 types; building the full type graph to read
//! one enum costs tens of MB for a moment. BTF records have a fixed layout per kind
//! (`include/uapi/linux/btf.h`), so a single forward walk finds the enum and reads
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

/// Members of the first `enum name` (or `enum64`), as `(value, name)`; `None` when
/// the bytes are not BTF or have no such enum.
pub fn enum_members(raw: &[u8], name: &str) -> Option<Vec<(u64, String)>> {
    let u16_at = |at: usize| {
        raw.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        raw.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    // Only little-endian BTF (every target sonde runs on).
    if u16_at(0)? != MAGIC {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let types = hdr_len.checked_add(type_off)?;
    let types_end = types.checked_add(type_len)?;
    let strings = raw.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
    let string = |off: u32| -> Option<&str> {
        let s = strings.get(off as usize..)?;
        let end = s.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&s[..end]).ok()
    };

    let mut at = types;
    while at + 12 <= types_end {
        let name_off = u32_at(at)?;
        let info = u32_at(at + 4)?;
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
        if (kind == KIND_ENUM || kind == KIND_ENUM64) && string(name_off) == Some(name) {
            let signed = info & (1 << 31) != 0;
            let mut out = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let (m, value) = if kind == KIND_ENUM {
                    let m = members + 8 * i;
                    let v = u32_at(m + 4)?;
                    let v = if signed {
                        v as i32 as i64 as u64
                    } else {
                        v as u64
                    };
                    (m, v)
                } else {
                    let m = members + 12 * i;
                    (m, (u32_at(m + 8)? as u64) << 32 | u32_at(m + 4)? as u64)
                };
                out.push((value, string(u32_at(m)?)?.to_string()));
            }
            return Some(out);
        }
        at = members + extra;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same enum as btf_rs reads it from the running kernel's full type graph.
    #[test]
    fn reads_the_kernels_drop_reasons_like_a_full_parse() {
        let Ok(raw) = std::fs::read(crate::btf::SYSFS_VMLINUX) else {
            crate::testkit::skip(
                "reads_the_kernels_drop_reasons_like_a_full_parse",
                &format!("no {}", crate::btf::SYSFS_VMLINUX),
            );
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
}
