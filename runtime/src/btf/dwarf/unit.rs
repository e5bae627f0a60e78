//! One compilation unit's DIEs turned into BTF types, added to the [`Builder`].

use std::collections::HashMap;

use gimli::{constants as dw, AttributeValue, UnitOffset};

use super::encode::*;
use super::Reader;

type Die<'a> = gimli::DebuggingInformationEntry<Reader<'a>>;

/// Marks a type being converted, to break the (rare) cycles through anonymous types.
const IN_PROGRESS: u32 = u32::MAX;

/// One compilation unit being converted.
pub(super) struct UnitCx<'a, 'u> {
    pub dwarf: &'u gimli::Dwarf<Reader<'a>>,
    pub unit: &'u gimli::Unit<Reader<'a>>,
    /// DIE offset to BTF id, for this unit only.
    pub ids: HashMap<UnitOffset, u32>,
    /// Named structs and unions whose members are still to be filled in; kept off the
    /// stack so that chains of structs do not recurse.
    pub pending: Vec<(UnitOffset, u32)>,
    pub b: &'u mut Builder,
}

fn udata(die: &Die, at: dw::DwAt) -> Option<u64> {
    match die.attr_value(at)? {
        AttributeValue::Sdata(v) => Some(v as u64),
        v => v.udata_value(),
    }
}

fn flag(die: &Die, at: dw::DwAt) -> bool {
    matches!(die.attr_value(at), Some(AttributeValue::Flag(true)))
}

impl<'a> UnitCx<'a, '_> {
    pub fn convert(&mut self) -> gimli::Result<()> {
        let unit = self.unit;
        let mut cursor = unit.entries();
        while let Some(die) = cursor.next_dfs()? {
            let off = die.offset();
            match die.tag() {
                dw::DW_TAG_subprogram => {
                    let die = die.clone();
                    self.function(&die)?;
                }
                tag if is_type(tag) => {
                    self.resolve(off)?;
                }
                _ => continue,
            }
            while let Some((off, id)) = self.pending.pop() {
                self.fill_composite(off, id)?;
            }
        }
        Ok(())
    }

    fn name(&mut self, die: &Die<'a>) -> gimli::Result<u32> {
        match die.attr_value(dw::DW_AT_name) {
            Some(v) => {
                let s = self.dwarf.attr_string(self.unit, v)?;
                Ok(self.b.string(s.slice()))
            }
            None => Ok(0),
        }
    }

    fn children(&self, off: UnitOffset) -> gimli::Result<Vec<Die<'a>>> {
        let mut tree = self.unit.entries_tree(Some(off))?;
        let mut children = tree.root()?.children();
        let mut out = Vec::new();
        while let Some(child) = children.next()? {
            out.push(child.entry().clone());
        }
        Ok(out)
    }

    /// The DIE `DW_AT_type` points at, when it is in this unit.
    fn type_ref(&self, die: &Die<'a>) -> Option<UnitOffset> {
        match die.attr_value(dw::DW_AT_type)? {
            AttributeValue::UnitRef(o) => Some(o),
            AttributeValue::DebugInfoRef(o) => o.to_unit_offset(&self.unit.header),
            _ => None,
        }
    }

    /// The BTF id of `DW_AT_type`, 0 (void) when absent or out of reach.
    fn type_of(&mut self, die: &Die<'a>) -> gimli::Result<u32> {
        match self.type_ref(die) {
            Some(off) => self.resolve(off),
            None => Ok(0),
        }
    }

    /// Byte size of a type, through typedefs and qualifiers.
    fn byte_size(&self, mut off: UnitOffset) -> gimli::Result<u64> {
        for _ in 0..32 {
            let die = self.unit.entry(off)?;
            if let Some(size) = udata(&die, dw::DW_AT_byte_size) {
                return Ok(size);
            }
            match self.type_ref(&die) {
                Some(next) => off = next,
                None => break,
            }
        }
        Ok(0)
    }

    fn resolve(&mut self, off: UnitOffset) -> gimli::Result<u32> {
        if let Some(&id) = self.ids.get(&off) {
            return Ok(if id == IN_PROGRESS { 0 } else { id });
        }
        let die = self.unit.entry(off)?;
        self.ids.insert(off, IN_PROGRESS);
        let id = self.convert_type(off, &die)?;
        self.ids.insert(off, id);
        Ok(id)
    }

    fn convert_type(&mut self, off: UnitOffset, die: &Die<'a>) -> gimli::Result<u32> {
        let tag = die.tag();
        let simple = |kind, name, target| Type {
            name,
            info: info(kind, false, 0),
            size_or_type: target,
            extra: vec![],
        };
        Ok(match tag {
            dw::DW_TAG_base_type => {
                let name = self.name(die)?;
                let size = udata(die, dw::DW_AT_byte_size).unwrap_or(0) as u32;
                let encoding = match die.attr_value(dw::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => e,
                    _ => dw::DW_ATE_unsigned,
                };
                let t = match encoding {
                    dw::DW_ATE_float => Type {
                        name,
                        info: info(KIND_FLOAT, false, 0),
                        size_or_type: size,
                        extra: vec![],
                    },
                    _ => {
                        let enc = match encoding {
                            dw::DW_ATE_signed | dw::DW_ATE_signed_char => INT_SIGNED,
                            dw::DW_ATE_boolean => INT_BOOL,
                            _ => 0,
                        };
                        let bits =
                            udata(die, dw::DW_AT_bit_size).unwrap_or(u64::from(size) * 8) as u32;
                        Type {
                            name,
                            info: info(KIND_INT, false, 0),
                            size_or_type: size,
                            extra: vec![(enc << 24) | (bits & 0xff)],
                        }
                    }
                };
                self.b.shape(t)
            }
            dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type => {
                let target = self.type_of(die)?;
                self.b.shape(simple(KIND_PTR, 0, target))
            }
            dw::DW_TAG_const_type | dw::DW_TAG_volatile_type | dw::DW_TAG_restrict_type => {
                let kind = match tag {
                    dw::DW_TAG_const_type => KIND_CONST,
                    dw::DW_TAG_volatile_type => KIND_VOLATILE,
                    _ => KIND_RESTRICT,
                };
                let target = self.type_of(die)?;
                self.b.shape(simple(kind, 0, target))
            }
            dw::DW_TAG_atomic_type | dw::DW_TAG_immutable_type => self.type_of(die)?,
            dw::DW_TAG_typedef => {
                let name = self.name(die)?;
                if name == 0 {
                    return self.type_of(die);
                }
                let key = (KIND_TYPEDEF, name, 0);
                if let Some(&id) = self.b.named.get(&key) {
                    return Ok(id);
                }
                let id = self.b.push(simple(KIND_TYPEDEF, name, 0));
                self.b.named.insert(key, id);
                self.ids.insert(off, id);
                let target = self.type_of(die)?;
                self.b.types[id as usize - 1].size_or_type = target;
                id
            }
            dw::DW_TAG_structure_type | dw::DW_TAG_class_type | dw::DW_TAG_union_type => {
                let union = tag == dw::DW_TAG_union_type;
                let kind = if union { KIND_UNION } else { KIND_STRUCT };
                let name = self.name(die)?;
                if flag(die, dw::DW_AT_declaration) {
                    return Ok(self.b.shape(Type {
                        name,
                        info: info(KIND_FWD, union, 0),
                        size_or_type: 0,
                        extra: vec![],
                    }));
                }
                let size = udata(die, dw::DW_AT_byte_size).unwrap_or(0) as u32;
                if name == 0 {
                    let (kind_flag, members) = self.members(off)?;
                    let t = Type {
                        name,
                        info: info(kind, kind_flag, members.len() / 3),
                        size_or_type: size,
                        extra: members,
                    };
                    return Ok(self.b.shape(t));
                }
                let key = (kind, name, size);
                if let Some(&id) = self.b.named.get(&key) {
                    return Ok(id);
                }
                let id = self.b.push(Type {
                    name,
                    info: info(kind, false, 0),
                    size_or_type: size,
                    extra: vec![],
                });
                self.b.named.insert(key, id);
                self.pending.push((off, id));
                id
            }
            dw::DW_TAG_enumeration_type => self.enumeration(off, die)?,
            dw::DW_TAG_array_type => {
                let elem = self.type_of(die)?;
                let mut dims = Vec::new();
                for sub in self.children(off)? {
                    if sub.tag() != dw::DW_TAG_subrange_type {
                        continue;
                    }
                    let count = match (
                        udata(&sub, dw::DW_AT_count),
                        udata(&sub, dw::DW_AT_upper_bound),
                    ) {
                        (Some(c), _) => c,
                        (None, Some(ub)) if ub < u64::from(u32::MAX) => {
                            ub + 1 - udata(&sub, dw::DW_AT_lower_bound).unwrap_or(0).min(ub + 1)
                        }
                        _ => 0,
                    };
                    dims.push(count.min(u64::from(u32::MAX)) as u32);
                }
                if dims.is_empty() {
                    dims.push(0);
                }
                let index = self.b.array_index();
                let mut id = elem;
                for n in dims.into_iter().rev() {
                    id = self.b.shape(Type {
                        name: 0,
                        info: info(KIND_ARRAY, false, 0),
                        size_or_type: 0,
                        extra: vec![id, index, n],
                    });
                }
                id
            }
            dw::DW_TAG_subroutine_type => {
                let (ret, params) = self.prototype(off, die)?;
                self.b.shape(Type {
                    name: 0,
                    info: info(KIND_FUNC_PROTO, false, params.len() / 2),
                    size_or_type: ret,
                    extra: params,
                })
            }
            // void (C++ `decltype(nullptr)` too), pointers to members, Pascal and Fortran types
            _ => 0,
        })
    }

    /// A struct's or union's members as BTF words, and whether it has bitfields.
    fn members(&mut self, off: UnitOffset) -> gimli::Result<(bool, Vec<u32>)> {
        let mut fields = Vec::new();
        for m in self.children(off)? {
            if m.tag() != dw::DW_TAG_member || flag(&m, dw::DW_AT_external) {
                continue;
            }
            let name = self.name(&m)?;
            let ty = self.type_of(&m)?;
            let location = match m.attr_value(dw::DW_AT_data_member_location) {
                Some(AttributeValue::Exprloc(e)) => plus_uconst(e.0.slice()),
                Some(v) => v.udata_value().unwrap_or(0),
                None => 0,
            };
            let bit_size = udata(&m, dw::DW_AT_bit_size).unwrap_or(0);
            let bit_offset = if let Some(bits) = udata(&m, dw::DW_AT_data_bit_offset) {
                bits
            } else if let (Some(dwarf2), true) = (udata(&m, dw::DW_AT_bit_offset), bit_size > 0) {
                let storage = match udata(&m, dw::DW_AT_byte_size) {
                    Some(s) => s,
                    None => self
                        .type_ref(&m)
                        .map(|t| self.byte_size(t))
                        .transpose()?
                        .unwrap_or(0),
                };
                if self.b.little_endian {
                    (location * 8 + storage * 8).wrapping_sub(dwarf2 + bit_size)
                } else {
                    location * 8 + dwarf2
                }
            } else {
                location * 8
            };
            fields.push((name, ty, bit_offset as u32, bit_size as u32));
        }
        let kind_flag = fields.iter().any(|f| f.3 != 0);
        let mut words = Vec::with_capacity(fields.len() * 3);
        for (name, ty, offset, bits) in fields {
            let offset = if kind_flag {
                (bits << 24) | (offset & 0xff_ffff)
            } else {
                offset
            };
            words.extend([name, ty, offset]);
        }
        Ok((kind_flag, words))
    }

    fn fill_composite(&mut self, off: UnitOffset, id: u32) -> gimli::Result<()> {
        let (kind_flag, members) = self.members(off)?;
        let t = &mut self.b.types[id as usize - 1];
        t.info = info(t.info >> 24 & 0x1f, kind_flag, members.len() / 3);
        t.extra = members;
        Ok(())
    }

    fn enumeration(&mut self, off: UnitOffset, die: &Die<'a>) -> gimli::Result<u32> {
        let name = self.name(die)?;
        let size = udata(die, dw::DW_AT_byte_size).unwrap_or(4) as u32;
        let kind = if size > 4 { KIND_ENUM64 } else { KIND_ENUM };
        let key = (kind, name, size);
        if name != 0 {
            if let Some(&id) = self.b.named.get(&key) {
                return Ok(id);
            }
        }
        let underlying_signed = match self.type_ref(die) {
            Some(t) => matches!(
                self.unit.entry(t)?.attr_value(dw::DW_AT_encoding),
                Some(AttributeValue::Encoding(
                    dw::DW_ATE_signed | dw::DW_ATE_signed_char
                ))
            ),
            None => false,
        };
        let mut values = Vec::new();
        for e in self.children(off)? {
            if e.tag() != dw::DW_TAG_enumerator {
                continue;
            }
            let ename = self.name(&e)?;
            let value = match e.attr_value(dw::DW_AT_const_value) {
                Some(AttributeValue::Sdata(v)) => v,
                Some(AttributeValue::Udata(v)) => v as i64,
                // a data form as wide as the enum holds a signed value as is; gcc writes
                // 128 in a signed 4-byte enum as data1 0x80, which is 128
                Some(AttributeValue::Data1(v)) if underlying_signed && size == 1 => {
                    i64::from(v as i8)
                }
                Some(AttributeValue::Data2(v)) if underlying_signed && size == 2 => {
                    i64::from(v as i16)
                }
                Some(AttributeValue::Data4(v)) if underlying_signed && size == 4 => {
                    i64::from(v as i32)
                }
                Some(v) => v.udata_value().unwrap_or(0) as i64,
                None => 0,
            };
            values.push((ename, value));
        }
        // as pahole 1.24 (through libbpf) decides: a 32-bit enum is signed when a value
        // is negative, a 64-bit one when its underlying type is
        let signed = match kind {
            KIND_ENUM64 if self.type_ref(die).is_some() => underlying_signed,
            _ => values.iter().any(|v| v.1 < 0),
        };
        let mut extra = Vec::new();
        for (ename, value) in &values {
            extra.push(*ename);
            extra.push(*value as u32);
            if kind == KIND_ENUM64 {
                extra.push((*value as u64 >> 32) as u32);
            }
        }
        let t = Type {
            name,
            info: info(kind, signed, values.len()),
            size_or_type: size,
            extra,
        };
        if name == 0 {
            return Ok(self.b.shape(t));
        }
        let id = self.b.push(t);
        self.b.named.insert(key, id);
        Ok(id)
    }

    /// Return type and parameter words (name, type) of a function or function type.
    fn prototype(&mut self, off: UnitOffset, die: &Die<'a>) -> gimli::Result<(u32, Vec<u32>)> {
        let ret = self.type_of(die)?;
        let mut params = Vec::new();
        for p in self.children(off)? {
            match p.tag() {
                dw::DW_TAG_formal_parameter => {
                    let name = self.name(&p)?;
                    let ty = self.type_of(&p)?;
                    params.extend([name, ty]);
                }
                dw::DW_TAG_unspecified_parameters => params.extend([0, 0]),
                _ => {}
            }
        }
        Ok((ret, params))
    }

    /// A function with code (not a declaration, not only inlined), as BTF_KIND_FUNC.
    /// An out-of-line copy of an inline function takes its name and prototype from
    /// its abstract origin.
    fn function(&mut self, concrete: &Die<'a>) -> gimli::Result<()> {
        if flag(concrete, dw::DW_AT_declaration) || concrete.attr(dw::DW_AT_low_pc).is_none() {
            return Ok(());
        }
        let origin = [dw::DW_AT_abstract_origin, dw::DW_AT_specification]
            .into_iter()
            .find_map(|at| match concrete.attr_value(at) {
                Some(AttributeValue::UnitRef(o)) => Some(o),
                _ => None,
            });
        let die = &match origin {
            Some(o) if concrete.attr(dw::DW_AT_name).is_none() => self.unit.entry(o)?,
            _ => concrete.clone(),
        };
        let name = self.name(die)?;
        if name == 0 || self.b.named.contains_key(&(KIND_FUNC, name, 0)) {
            return Ok(());
        }
        let (ret, params) = self.prototype(die.offset(), die)?;
        let proto = self.b.shape(Type {
            name: 0,
            info: info(KIND_FUNC_PROTO, false, params.len() / 2),
            size_or_type: ret,
            extra: params,
        });
        let linkage = usize::from(flag(die, dw::DW_AT_external));
        let id = self.b.push(Type {
            name,
            info: info(KIND_FUNC, false, linkage),
            size_or_type: proto,
            extra: vec![],
        });
        self.b.named.insert((KIND_FUNC, name, 0), id);
        Ok(())
    }
}

fn is_type(tag: dw::DwTag) -> bool {
    matches!(
        tag,
        dw::DW_TAG_base_type
            | dw::DW_TAG_pointer_type
            | dw::DW_TAG_reference_type
            | dw::DW_TAG_rvalue_reference_type
            | dw::DW_TAG_const_type
            | dw::DW_TAG_volatile_type
            | dw::DW_TAG_restrict_type
            | dw::DW_TAG_atomic_type
            | dw::DW_TAG_typedef
            | dw::DW_TAG_structure_type
            | dw::DW_TAG_class_type
            | dw::DW_TAG_union_type
            | dw::DW_TAG_enumeration_type
            | dw::DW_TAG_array_type
            | dw::DW_TAG_subroutine_type
    )
}

/// The offset of a DWARF 2 style `DW_OP_plus_uconst N` member location.
fn plus_uconst(expr: &[u8]) -> u64 {
    let Some((&0x23, mut rest)) = expr.split_first() else {
        return 0;
    };
    let mut value = 0u64;
    let mut shift = 0;
    while let Some((&byte, tail)) = rest.split_first() {
        value |= u64::from(byte & 0x7f) << shift.min(63);
        shift += 7;
        rest = tail;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}
