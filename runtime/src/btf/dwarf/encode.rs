//! BTF encoding: the types and strings sections, with the dedup tables that keep
//! one copy of each type across compilation units.

use std::collections::HashMap;

use super::DwarfError;

/// The first two bytes of raw BTF (little-endian).
pub const BTF_MAGIC: u16 = 0xeb9f;
pub(super) const KIND_INT: u32 = 1;
pub(super) const KIND_PTR: u32 = 2;
pub(super) const KIND_ARRAY: u32 = 3;
pub(super) const KIND_STRUCT: u32 = 4;
pub(super) const KIND_UNION: u32 = 5;
pub(super) const KIND_ENUM: u32 = 6;
pub(super) const KIND_FWD: u32 = 7;
pub(super) const KIND_TYPEDEF: u32 = 8;
pub(super) const KIND_VOLATILE: u32 = 9;
pub(super) const KIND_CONST: u32 = 10;
pub(super) const KIND_RESTRICT: u32 = 11;
pub(super) const KIND_FUNC: u32 = 12;
pub(super) const KIND_FUNC_PROTO: u32 = 13;
pub(super) const KIND_FLOAT: u32 = 16;
pub(super) const KIND_ENUM64: u32 = 19;
pub(super) const INT_SIGNED: u32 = 1;
pub(super) const INT_BOOL: u32 = 4;

/// One BTF type: the common header and the words that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Type {
    pub name: u32,
    pub info: u32,
    pub size_or_type: u32,
    pub extra: Vec<u32>,
}

pub(super) fn info(kind: u32, kind_flag: bool, vlen: usize) -> u32 {
    (kind << 24) | (u32::from(kind_flag) << 31) | (vlen as u32 & 0xffff)
}

/// The BTF being built: types, strings and the dedup tables, across units.
pub(super) struct Builder {
    pub types: Vec<Type>,
    pub strings: Vec<u8>,
    pub string_ids: HashMap<Vec<u8>, u32>,
    /// Anonymous and unnamed-shape types, by their whole encoding.
    pub shapes: HashMap<Type, u32>,
    /// Named structs, unions, enums (kind, name, size), typedefs and functions (kind, name).
    pub named: HashMap<(u32, u32, u32), u32>,
    pub array_index: Option<u32>,
    pub little_endian: bool,
}

impl Builder {
    pub fn new(little_endian: bool) -> Self {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            string_ids: HashMap::new(),
            shapes: HashMap::new(),
            named: HashMap::new(),
            array_index: None,
            little_endian,
        }
    }

    pub fn string(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&off) = self.string_ids.get(s) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s);
        self.strings.push(0);
        self.string_ids.insert(s.to_vec(), off);
        off
    }

    pub fn push(&mut self, t: Type) -> u32 {
        self.types.push(t);
        self.types.len() as u32
    }

    /// The id of a type with exactly this encoding, added if new.
    pub fn shape(&mut self, t: Type) -> u32 {
        if let Some(&id) = self.shapes.get(&t) {
            return id;
        }
        let id = self.push(t.clone());
        self.shapes.insert(t, id);
        id
    }

    /// The 4-byte int pahole uses as every array's index type.
    pub fn array_index(&mut self) -> u32 {
        if let Some(id) = self.array_index {
            return id;
        }
        let name = self.string(b"__ARRAY_SIZE_TYPE__");
        let id = self.shape(Type {
            name,
            info: info(KIND_INT, false, 0),
            size_or_type: 4,
            extra: vec![32],
        });
        self.array_index = Some(id);
        id
    }

    pub fn finish(self) -> Result<Vec<u8>, DwarfError> {
        if self.types.len() >= 0x7fff_ffff || self.strings.len() >= u32::MAX as usize {
            return Err(DwarfError::TooLarge);
        }
        let words: usize = self.types.iter().map(|t| 3 + t.extra.len()).sum();
        let type_len = (words * 4) as u32;
        let mut out = Vec::with_capacity(24 + words * 4 + self.strings.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for word in [24, 0, type_len, type_len, self.strings.len() as u32] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for t in &self.types {
            for word in [t.name, t.info, t.size_or_type].iter().chain(&t.extra) {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.strings);
        Ok(out)
    }
}
