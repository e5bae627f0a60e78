//! Record bytes → typed [`Value`]s, by field name, driven by the object's own BTF.
//!
//! No probe has a hand-written decoder. When a program is loaded, the struct its ring
//! buffer carries (published as `__sonde_record_<map>`, see `kernel-progs/include/sonde.h`)
//! and the key and value types of its maps are compiled once into a [`Decoder`]: a flat
//! plan of fields with offsets and kinds. Per event, the plan is walked over the bytes.
//!
//! Fields whose type is one of the well-known typedefs become readable values:
//!
//! | typedef | becomes |
//! |---|---|
//! | `sonde_netns` | the inode (int) and, beside it, `pod` ([`Value::Pod`]: name, namespace, node) |
//! | `sonde_ip` | [`Value::Ip`], read as `"10.0.0.1"` or `"fd00::1"` (IPv4 is stored v4-mapped) |
//! | `sonde_stack_id` | [`Value::Stack`]: `"sym+0xoff"` frames from the `stacks` map |
//! | `sonde_drop_reason` | the running kernel's name for it, `"NO_SOCKET"` |
//! | `sonde_tcp_state` | `"ESTABLISHED"`, `"CLOSE"`, … |
//! | `sonde_l4proto`, `sonde_ethproto` | `"TCP"`, `"IPv6"`, … |
//! | `sonde_ifindex` | interface name |
//! | `sonde_ksym` | `"sym+0xoff"` |
//!
//! Enums of the object decode to the enumerator name without the enum's own prefix
//! (`enum rst_kind { RST_KIND_NOSOCK }` → `"NOSOCK"`); `char` arrays to strings; nested
//! structs to [`Value::Struct`]; other arrays to arrays; unions to a struct of every
//! alternative. Nothing here knows the script engine: `script::record` turns values
//! into what scripts see.
//!
//! A record is read in place, from the ring's own bytes, through a [`RecordView`];
//! a [`Record`] owns its bytes (a copy of at most [`INLINE_RECORD`] bytes kept inline,
//! or a shared buffer) for a consumer that keeps it past the ring slot.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use btf_rs::{Btf, BtfType, Type};

mod encode;
pub use encode::EncodeError;

use crate::bpf::ksyms::Symbols;
use crate::bpf::value::{PodNames, Value};
use crate::event::coarse_ns;
use crate::label::Label;
use crate::pods::PodResolver;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("object has no .BTF section")]
    NoBtf,
    #[error("cannot parse object BTF: {0}")]
    Btf(String),
    #[error("no type `{0}` in the object's BTF")]
    MissingType(String),
    #[error("type nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("record is {got} bytes, type `{ty}` needs {want}")]
    ShortRecord { ty: String, want: usize, got: usize },
}

const MAX_DEPTH: usize = 16;

/// How one value is laid out and turned into a [`Value`].
#[derive(Debug, Clone)]
enum Kind {
    Uint(u8),
    Int(u8),
    Bool(u8),
    Float(u8),
    Pointer,
    Netns,
    Ip,
    StackId,
    Ifindex,
    DropReason(u8),
    TcpState(u8),
    L4Proto(u8),
    EthProto(u8),
    Ksym,
    Enum {
        size: u8,
        signed: bool,
        names: Arc<std::collections::BTreeMap<i64, Label>>,
    },
    CharArray(usize),
    Array {
        elem: Box<Kind>,
        len: usize,
        stride: usize,
    },
    Struct(Arc<[Field]>),
    Bitfield {
        bit_offset: u32,
        bits: u32,
        signed: bool,
    },
    Opaque,
}

#[derive(Debug, Clone)]
struct Field {
    name: Label,
    /// Extra key written beside a `sonde_netns` field: `pod` or `<name>_pod`.
    pod_key: Option<Label>,
    offset: usize,
    kind: Kind,
}

/// What decoding needs from the running system. Shared by every decoder of a run.
pub struct DecodeEnv {
    pub pods: Arc<dyn PodResolver>,
    /// `enum skb_drop_reason` of the kernel the records came from.
    pub drop_reasons: HashMap<u64, Label>,
    pub ksyms: Symbols,
    /// Reads a kernel stack by id; `None` when stacks cannot be read.
    pub stacks: Option<Box<dyn Fn(u32) -> Vec<u64> + Send + Sync>>,
    /// When recording: every stack read and symbol resolved while decoding, so a
    /// replay elsewhere prints the same frames. `None` otherwise (no cost).
    pub notes: Option<std::sync::Mutex<Vec<Note>>>,
    /// Pod maps already built, by netns inode: most events come from few pods.
    pub pod_cache: PodCache,
}

/// Pod names by netns inode, bounded; cleared when pods change ([`PodCache::clear`],
/// or the resolver's [`generation`](PodResolver::generation) moves).
#[derive(Default)]
pub struct PodCache(std::sync::Mutex<(u64, HashMap<u32, Arc<PodNames>>)>);

impl PodCache {
    const MAX: usize = 4096;

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1.clear();
    }
}

/// Something decoding looked up on the live system, kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Stack(u32, Vec<u64>),
    Symbol(u64, String),
}

impl DecodeEnv {
    /// An environment that resolves nothing beyond what the bytes say.
    pub fn offline(pods: Arc<dyn PodResolver>) -> Self {
        DecodeEnv {
            pods,
            drop_reasons: HashMap::new(),
            ksyms: Symbols::none(),
            stacks: None,
            notes: None,
            pod_cache: PodCache::default(),
        }
    }

    fn note(&self, n: Note) {
        if let Some(notes) = &self.notes {
            notes.lock().unwrap_or_else(|e| e.into_inner()).push(n);
        }
    }

    fn symbol(&self, addr: u64) -> Label {
        let s = self.ksyms.get().format(addr);
        if self.notes.is_some() {
            self.note(Note::Symbol(addr, s.clone()));
        }
        s.into()
    }

    /// The pod of a network namespace, shared with the cache (no copy).
    pub fn pod(&self, inode: u32) -> Arc<PodNames> {
        let mut guard = self.pod_cache.0.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.pods.generation();
        if guard.0 != generation {
            guard.0 = generation;
            guard.1.clear();
        }
        let cache = &mut guard.1;
        if let Some(p) = cache.get(&inode) {
            return p.clone();
        }
        let pod = self.pods.by_netns(inode);
        let names = Arc::new(PodNames {
            name: pod.name.as_str().into(),
            namespace: pod.namespace.as_str().into(),
            node: pod.node.as_str().into(),
        });
        if cache.len() >= PodCache::MAX {
            cache.clear();
        }
        cache.insert(inode, names.clone());
        names
    }

    /// The `(namespace, name)` of the pod of a network namespace, as `ev.pod` has
    /// them, shared with the cached pod (no copy).
    pub fn pod_names(&self, inode: u32) -> (Label, Label) {
        let p = self.pod(inode);
        (p.namespace.clone(), p.name.clone())
    }
}

/// Costly lookups a decoder depends on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The kernel's drop reason names (a pass over the kernel BTF).
    pub drop_reasons: bool,
    /// Kernel symbols (reading /proc/kallsyms).
    pub symbols: bool,
}

impl std::ops::BitOr for Needs {
    type Output = Needs;
    fn bitor(self, o: Needs) -> Needs {
        Needs {
            drop_reasons: self.drop_reasons || o.drop_reasons,
            symbols: self.symbols || o.symbols,
        }
    }
}

/// A compiled decoding plan for one BTF type.
#[derive(Debug, Clone)]
pub struct Decoder {
    type_name: String,
    size: usize,
    kind: Kind,
}

impl Decoder {
    /// Bytes one value occupies.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Which costly lookups decoding this type needs, so a run loads only those.
    pub fn needs(&self) -> Needs {
        fn walk(k: &Kind, n: &mut Needs) {
            match k {
                Kind::DropReason(_) => n.drop_reasons = true,
                Kind::StackId | Kind::Ksym => n.symbols = true,
                Kind::Array { elem, .. } => walk(elem, n),
                Kind::Struct(fields) => fields.iter().for_each(|f| walk(&f.kind, n)),
                _ => {}
            }
        }
        let mut n = Needs::default();
        walk(&self.kind, &mut n);
        n
    }

    /// The `pod` keys a struct's netns fields add.
    pub fn pod_keys(&self) -> Vec<String> {
        match &self.kind {
            Kind::Struct(fields) => fields
                .iter()
                .filter_map(|f| f.pod_key.as_deref().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Top-level fields as `(name, offset, kind)`, for comparing layouts.
    pub fn layout(&self) -> Vec<(String, usize, String)> {
        match &self.kind {
            Kind::Struct(fields) => fields
                .iter()
                .map(|f| (f.name.to_string(), f.offset, format!("{:?}", f.kind)))
                .collect(),
            other => vec![(String::new(), 0, format!("{other:?}"))],
        }
    }

    /// What a script sees of this type, field by field (a scalar is one nameless
    /// field), with the decoded form of each: the reference `sonde probes --fields`
    /// prints, made from the same plan the decoder walks.
    pub fn shape(&self) -> Vec<FieldShape> {
        match &self.kind {
            Kind::Struct(fields) => shape_fields(fields),
            other => vec![FieldShape {
                name: String::new(),
                ty: describe(other),
                pod_key: None,
                children: Vec::new(),
            }],
        }
    }

    /// A record shorter than the type is an error (the caller counts it), longer is
    /// fine (ring buffer records are padded).
    fn check(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.len() < self.size {
            return Err(DecodeError::ShortRecord {
                ty: self.type_name.clone(),
                want: self.size,
                got: bytes.len(),
            });
        }
        Ok(())
    }

    /// The fields of a struct type, for the record forms.
    fn fields(&self) -> Result<&Arc<[Field]>, DecodeError> {
        match &self.kind {
            Kind::Struct(fields) => Ok(fields),
            _ => Err(DecodeError::MissingType(format!(
                "{} is not a struct",
                self.type_name
            ))),
        }
    }

    /// Decodes one value whole: structs become [`Value::Struct`].
    pub fn decode(&self, bytes: &[u8], env: &DecodeEnv) -> Result<Value, DecodeError> {
        self.check(bytes)?;
        Ok(decode_kind(&self.kind, bytes, env))
    }

    /// A record read in place, field by field as it is read: nothing is copied, so
    /// the view lives no longer than the bytes (a ring slot).
    pub fn view<'a>(
        &'a self,
        bytes: &'a [u8],
        env: &'a DecodeEnv,
    ) -> Result<RecordView<'a>, DecodeError> {
        self.check(bytes)?;
        Ok(RecordView {
            bytes: &bytes[..self.size],
            fields: self.fields()?,
            env,
        })
    }

    /// A record that owns its bytes, decoded lazily like a [`view`](Self::view):
    /// for a consumer that keeps it past the ring slot. Binds the type to `env`
    /// on each call: a reader of many records binds once ([`bind`](Self::bind)).
    pub fn record(&self, bytes: &[u8], env: &Arc<DecodeEnv>) -> Result<Record, DecodeError> {
        self.bind(env).record(bytes)
    }

    /// This type with the environment its records are read with, shared by every
    /// record made from it (one reference count per record, not two).
    pub fn bind(&self, env: &Arc<DecodeEnv>) -> RecordType {
        RecordType(Arc::new(Bound {
            decoder: self.clone(),
            env: env.clone(),
        }))
    }
}

/// A record type bound to its decoding environment: what owned [`Record`]s of one
/// ring (or of one source of a replay) are made from.
#[derive(Clone)]
pub struct RecordType(Arc<Bound>);

struct Bound {
    decoder: Decoder,
    env: Arc<DecodeEnv>,
}

impl RecordType {
    /// A record read in place: see [`Decoder::view`].
    pub fn view<'a>(&'a self, bytes: &'a [u8]) -> Result<RecordView<'a>, DecodeError> {
        self.0.decoder.view(bytes, &self.0.env)
    }

    /// A record that owns its bytes: up to [`INLINE_RECORD`] bytes are copied into
    /// the record itself (no allocation), longer ones into a buffer.
    pub fn record(&self, bytes: &[u8]) -> Result<Record, DecodeError> {
        let d = &self.0.decoder;
        d.check(bytes)?;
        d.fields()?;
        Ok(Record {
            bytes: RecordBytes::new(&bytes[..d.size]),
            ty: self.clone(),
        })
    }

    /// [`record`](Self::record) for bytes already in a shared buffer (a shared
    /// program's queue): a long record keeps the buffer instead of a copy of it.
    pub fn record_shared(&self, bytes: &Arc<[u8]>) -> Result<Record, DecodeError> {
        if bytes.len() <= INLINE_RECORD {
            return self.record(bytes);
        }
        let d = &self.0.decoder;
        d.check(bytes)?;
        d.fields()?;
        Ok(Record {
            bytes: RecordBytes::Shared(bytes.clone(), d.size),
            ty: self.clone(),
        })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.0.decoder
    }

    pub fn env(&self) -> &Arc<DecodeEnv> {
        &self.0.env
    }

    fn fields(&self) -> &[Field] {
        match &self.0.decoder.kind {
            Kind::Struct(fields) => fields,
            _ => &[],
        }
    }
}

/// One field of a decoded type as a script sees it: see [`Decoder::shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldShape {
    pub name: String,
    /// The decoded form: `ip address`, `int (u32)`, `enum: NOSOCK | ACTIVE`, ...
    pub ty: String,
    /// The key a `sonde_netns` field adds beside itself (`pod`).
    pub pod_key: Option<String>,
    /// The fields of a nested struct.
    pub children: Vec<FieldShape>,
}

fn shape_fields(fields: &[Field]) -> Vec<FieldShape> {
    fields
        .iter()
        .map(|f| FieldShape {
            name: f.name.to_string(),
            ty: describe(&f.kind),
            pod_key: f.pod_key.as_deref().map(str::to_string),
            children: match &f.kind {
                Kind::Struct(inner) => shape_fields(inner),
                _ => Vec::new(),
            },
        })
        .collect()
}

/// How a value of this kind reaches a script, in words.
fn describe(kind: &Kind) -> String {
    let bits = |s: &u8| s * 8;
    match kind {
        Kind::Uint(s) => format!("int (u{})", bits(s)),
        Kind::Int(s) => format!("int (s{})", bits(s)),
        Kind::Bool(_) => "bool".into(),
        Kind::Float(s) => format!("float (f{})", bits(s)),
        Kind::Pointer => "int (kernel address)".into(),
        Kind::Netns => "netns inode (int)".into(),
        Kind::Ip => "ip address (\"10.0.0.1\", \"fd00::1\")".into(),
        Kind::StackId => "kernel stack (array of \"sym+0xoff\")".into(),
        Kind::Ifindex => "interface name (string)".into(),
        Kind::DropReason(_) => "drop reason (string, the kernel's name)".into(),
        Kind::TcpState(_) => "tcp state (string: ESTABLISHED, CLOSE, ...)".into(),
        Kind::L4Proto(_) => "ip protocol (string: TCP, UDP, ...)".into(),
        Kind::EthProto(_) => "ethernet protocol (string: IPv4, IPv6, ...)".into(),
        Kind::Ksym => "kernel symbol (string \"sym+0xoff\")".into(),
        Kind::Enum { names, .. } => {
            let names: Vec<&str> = names.values().map(|n| n.as_str()).collect();
            format!("enum: {}", names.join(" | "))
        }
        Kind::CharArray(n) => format!("string (char[{n}])"),
        Kind::Array { elem, len, .. } => format!("array of {len} {}", describe(elem)),
        Kind::Struct(_) => "map".into(),
        Kind::Bitfield { bits, signed, .. } => {
            format!("int ({}{bits} bits)", if *signed { "signed " } else { "" })
        }
        Kind::Opaque => "() (not decoded)".into(),
    }
}

/// One record read in place: its fields are decoded only when read, from bytes
/// it borrows (a ring slot, a recording's frame).
///
/// `get("saddr")` decodes that field alone, so a reader of two fields of a
/// twenty-field record pays for two. [`to_value`](Self::to_value) decodes all.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    fields: &'a [Field],
    env: &'a DecodeEnv,
}

impl<'a> RecordView<'a> {
    /// The value of a field (or of a `pod` key beside a netns field).
    pub fn get(&self, name: &str) -> Option<Value> {
        if let Ok(i) = self.fields.binary_search_by(|f| f.name.as_str().cmp(name)) {
            let f = &self.fields[i];
            return Some(decode_kind(&f.kind, self.bytes.get(f.offset..)?, self.env));
        }
        let f = self
            .fields
            .iter()
            .find(|f| f.pod_key.as_deref() == Some(name))?;
        let inode = read_uint(self.bytes.get(f.offset..)?, 4) as u32;
        Some(Value::Pod(self.env.pod(inode)))
    }

    /// [`get`](Self::get) for a caller that asks for one name again and again:
    /// `hint` remembers where the field was last found (in whatever record type),
    /// so the usual lookup is one comparison instead of a binary search. A wrong
    /// hint costs that one comparison.
    #[inline]
    pub fn get_hinted(&self, name: &str, hint: &AtomicUsize) -> Option<Value> {
        let i = hint.load(Ordering::Relaxed);
        if let Some(f) = self.fields.get(i).filter(|f| f.name.as_str() == name) {
            return Some(decode_kind(&f.kind, self.bytes.get(f.offset..)?, self.env));
        }
        if let Ok(i) = self.fields.binary_search_by(|f| f.name.as_str().cmp(name)) {
            hint.store(i, Ordering::Relaxed);
        }
        self.get(name)
    }

    /// The network namespace inode behind `pod`, read without resolving the pod:
    /// the field named `netns`, else the first `sonde_netns` field.
    pub fn pod_inode(&self) -> Option<u32> {
        let f = self
            .fields
            .iter()
            .find(|f| f.pod_key.as_deref() == Some("pod"))?;
        Some(read_uint(self.bytes.get(f.offset..)?, 4) as u32)
    }

    /// Field names, sorted (with `pod` keys).
    pub fn keys(&self) -> Vec<&'a str> {
        let mut k: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        k.extend(self.fields.iter().filter_map(|f| f.pod_key.as_deref()));
        k.sort_unstable();
        k
    }

    /// Every field decoded, as a [`Value::Struct`].
    pub fn to_value(&self) -> Value {
        decode_fields(self.fields, self.bytes, self.env)
    }

    /// The bytes the record is read from.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl std::fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_value())
    }
}

/// One record that owns its bytes, decoded field by field when read: what the
/// script host hands to handlers, which may keep it (`this.last = ev`).
#[derive(Clone)]
pub struct Record {
    bytes: RecordBytes,
    ty: RecordType,
}

/// Records up to this many bytes (`tcp_reset`'s is 64) are carried inside the
/// [`Record`] itself: copied once from the ring into the value, with no allocation
/// of their own.
pub const INLINE_RECORD: usize = 64;

#[derive(Clone)]
enum RecordBytes {
    Inline {
        len: u8,
        buf: [u8; INLINE_RECORD],
    },
    Heap(Box<[u8]>),
    /// A shared buffer and the record's length in it.
    Shared(Arc<[u8]>, usize),
}

impl RecordBytes {
    fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE_RECORD {
            let mut buf = [0u8; INLINE_RECORD];
            buf[..b.len()].copy_from_slice(b);
            RecordBytes::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            RecordBytes::Heap(b.into())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            RecordBytes::Inline { len, buf } => &buf[..*len as usize],
            RecordBytes::Heap(b) => b,
            RecordBytes::Shared(b, len) => &b[..(*len).min(b.len())],
        }
    }
}

impl Record {
    /// The record read in place from its own bytes.
    #[inline]
    pub fn view(&self) -> RecordView<'_> {
        RecordView {
            bytes: self.bytes.as_slice(),
            fields: self.ty.fields(),
            env: &self.ty.0.env,
        }
    }

    /// See [`RecordView::get`].
    pub fn get(&self, name: &str) -> Option<Value> {
        self.view().get(name)
    }

    /// See [`RecordView::get_hinted`].
    #[inline]
    pub fn get_hinted(&self, name: &str, hint: &AtomicUsize) -> Option<Value> {
        self.view().get_hinted(name, hint)
    }

    /// See [`RecordView::pod_inode`].
    pub fn pod_inode(&self) -> Option<u32> {
        self.view().pod_inode()
    }

    /// The environment the record is decoded with (its pod resolver and caches).
    pub fn env(&self) -> &Arc<DecodeEnv> {
        self.ty.env()
    }

    /// See [`RecordView::keys`].
    pub fn keys(&self) -> Vec<&str> {
        self.view().keys()
    }

    /// Every field decoded, as a [`Value::Struct`].
    pub fn to_value(&self) -> Value {
        self.view().to_value()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_value())
    }
}

/// The BTF of one kernel object, with what userspace needs to find in it.
pub struct ObjectTypes {
    btf: Btf,
}

/// A `const volatile` global of the object: a knob set from script params.
#[derive(Debug, Clone, PartialEq)]
pub struct Knob {
    pub name: String,
    pub size: usize,
    pub kind: KnobKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    Bool,
    Int { signed: bool },
    Other,
}

/// A map as the object declares it: its name and `__uint` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub attrs: Vec<(String, u64)>,
}

impl MapDef {
    /// An attribute's value: `type` (`BPF_MAP_TYPE_*`), `max_entries`, ...
    pub fn attr(&self, name: &str) -> Option<u64> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// Prefix of the marker globals that publish a ring buffer's record type.
pub const RECORD_MARKER: &str = "__sonde_record_";

impl ObjectTypes {
    /// Parses the `.BTF` section of an ELF object.
    pub fn parse(object: &[u8]) -> Result<Self, DecodeError> {
        let raw = crate::btf::extract_btf_section(object).ok_or(DecodeError::NoBtf)?;
        let btf = Btf::from_bytes(&raw).map_err(|e| DecodeError::Btf(e.to_string()))?;
        Ok(ObjectTypes { btf })
    }

    fn datasec_vars(&self, section: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let Ok(types) = self.btf.resolve_types_by_name(section) else {
            return out;
        };
        for t in types {
            if let Type::Datasec(ds) = t {
                for v in &ds.variables {
                    let Some(id) = v.get_type_id() else { continue };
                    if let Ok(Type::Var(var)) = self.btf.resolve_type_by_id(id) {
                        if let (Ok(name), Some(tid)) =
                            (self.btf.resolve_name(&var), var.get_type_id())
                        {
                            out.push((name, tid));
                        }
                    }
                }
            }
        }
        out
    }

    /// The knobs: every `.rodata` global except the record markers.
    pub fn knobs(&self) -> Vec<Knob> {
        self.datasec_vars(".rodata")
            .into_iter()
            .filter(|(name, _)| !name.starts_with(RECORD_MARKER))
            .map(|(name, tid)| {
                let (size, kind) = match self.strip(tid) {
                    Some(Type::Int(i)) if i.is_bool() => (i.size(), KnobKind::Bool),
                    Some(Type::Int(i)) => (
                        i.size(),
                        KnobKind::Int {
                            signed: i.is_signed(),
                        },
                    ),
                    Some(Type::Enum(e)) => (
                        e.size(),
                        KnobKind::Int {
                            signed: e.is_signed(),
                        },
                    ),
                    _ => (self.size_of(tid, 0).unwrap_or(0), KnobKind::Other),
                };
                Knob { name, size, kind }
            })
            .collect()
    }

    /// The record type a ring buffer map carries, from its `__sonde_record_<map>` marker.
    pub fn record_decoder(&self, map: &str) -> Result<Decoder, DecodeError> {
        let marker = format!("{RECORD_MARKER}{map}");
        let (_, tid) = self
            .datasec_vars(".rodata")
            .into_iter()
            .find(|(n, _)| *n == marker)
            .ok_or_else(|| DecodeError::MissingType(marker.clone()))?;
        // marker: `type *const volatile` → the pointee.
        let mut id = tid;
        for _ in 0..MAX_DEPTH {
            match self.btf.resolve_type_by_id(id) {
                Ok(Type::Ptr(p)) => return self.decoder(p.get_type_id().unwrap_or(0)),
                Ok(Type::Const(c)) => id = c.get_type_id().unwrap_or(0),
                Ok(Type::Volatile(v)) => id = v.get_type_id().unwrap_or(0),
                Ok(Type::Typedef(t)) => id = t.get_type_id().unwrap_or(0),
                _ => break,
            }
        }
        Err(DecodeError::MissingType(marker))
    }

    /// Names of the ring buffers that publish a record type.
    pub fn record_maps(&self) -> Vec<String> {
        self.datasec_vars(".rodata")
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix(RECORD_MARKER).map(str::to_string))
            .collect()
    }

    /// The names of the BTF-defined maps (the `.maps` section).
    pub fn map_names(&self) -> Vec<String> {
        self.datasec_vars(".maps")
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// Key and value decoders of a BTF-defined map in `.maps`.
    pub fn map_decoders(&self, map: &str) -> Result<(Decoder, Decoder), DecodeError> {
        let missing = || DecodeError::MissingType(format!("map `{map}` key/value"));
        let (_, tid) = self
            .datasec_vars(".maps")
            .into_iter()
            .find(|(n, _)| n == map)
            .ok_or_else(missing)?;
        let Some(Type::Struct(def)) = self.strip(tid) else {
            return Err(missing());
        };
        let mut key = None;
        let mut value = None;
        for m in &def.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let Some(mid) = m.get_type_id() else { continue };
            if let Ok(Type::Ptr(p)) = self.btf.resolve_type_by_id(mid) {
                let pointee = p.get_type_id().unwrap_or(0);
                match name.as_str() {
                    "key" => key = Some(self.decoder(pointee)?),
                    "value" => value = Some(self.decoder(pointee)?),
                    _ => {}
                }
            }
        }
        Ok((key.ok_or_else(missing)?, value.ok_or_else(missing)?))
    }

    /// The BTF-defined maps of the object (`.maps`), with their `__uint` attributes
    /// (`type`, `max_entries`, ...), in the object's order.
    pub fn map_defs(&self) -> Vec<MapDef> {
        self.datasec_vars(".maps")
            .into_iter()
            .map(|(name, tid)| {
                let mut attrs = Vec::new();
                if let Some(Type::Struct(def)) = self.strip(tid) {
                    for m in &def.members {
                        let attr = self.btf.resolve_name(m).unwrap_or_default();
                        // `__uint(name, n)` is `int (*name)[n]`.
                        let Some(mid) = m.get_type_id() else { continue };
                        if let Ok(Type::Ptr(p)) = self.btf.resolve_type_by_id(mid) {
                            if let Ok(Type::Array(a)) =
                                self.btf.resolve_type_by_id(p.get_type_id().unwrap_or(0))
                            {
                                attrs.push((attr, a.len() as u64));
                            }
                        }
                    }
                }
                MapDef { name, attrs }
            })
            .collect()
    }

    /// Compiles the decoding plan of a type.
    pub fn decoder(&self, type_id: u32) -> Result<Decoder, DecodeError> {
        let type_name = self.type_name(type_id);
        let size = self.size_of(type_id, 0)?;
        let kind = self.kind(type_id, 0)?;
        Ok(Decoder {
            type_name,
            size,
            kind,
        })
    }

    /// Compiles the decoding plan of a named struct.
    pub fn decoder_by_name(&self, name: &str) -> Result<Decoder, DecodeError> {
        let ids = self.btf.resolve_ids_by_name(name).unwrap_or_default();
        for id in ids {
            if let Ok(Type::Struct(_)) = self.btf.resolve_type_by_id(id) {
                return self.decoder(id);
            }
        }
        Err(DecodeError::MissingType(name.to_string()))
    }

    fn type_name(&self, id: u32) -> String {
        match self.btf.resolve_type_by_id(id) {
            Ok(t) => match t.as_btf_type() {
                Some(bt) => self
                    .btf
                    .resolve_name(bt)
                    .unwrap_or_else(|_| t.name().to_string()),
                None => t.name().to_string(),
            },
            Err(_) => format!("#{id}"),
        }
    }

    /// Skips typedefs and qualifiers.
    fn strip(&self, mut id: u32) -> Option<Type> {
        for _ in 0..MAX_DEPTH {
            let t = self.btf.resolve_type_by_id(id).ok()?;
            match &t {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => id = t.as_btf_type()?.get_type_id()?,
                _ => return Some(t),
            }
        }
        None
    }

    fn size_of(&self, id: u32, depth: usize) -> Result<usize, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        let t = self
            .btf
            .resolve_type_by_id(id)
            .map_err(|e| DecodeError::Btf(e.to_string()))?;
        Ok(match &t {
            Type::Int(i) => i.size(),
            Type::Float(f) => f.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => a.len() * self.size_of(a.get_type_id().unwrap_or(0), depth + 1)?,
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => self.size_of(
                t.as_btf_type().and_then(|b| b.get_type_id()).unwrap_or(0),
                depth + 1,
            )?,
            _ => 0,
        })
    }

    fn kind(&self, id: u32, depth: usize) -> Result<Kind, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        let t = self
            .btf
            .resolve_type_by_id(id)
            .map_err(|e| DecodeError::Btf(e.to_string()))?;
        let inner = |t: &Type| t.as_btf_type().and_then(|b| b.get_type_id()).unwrap_or(0);
        Ok(match &t {
            Type::Typedef(td) => {
                let name = self.btf.resolve_name(td).unwrap_or_default();
                let size = self.size_of(id, depth)? as u8;
                match name.as_str() {
                    "sonde_netns" => Kind::Netns,
                    "sonde_ip" => Kind::Ip,
                    "sonde_stack_id" => Kind::StackId,
                    "sonde_ifindex" => Kind::Ifindex,
                    "sonde_drop_reason" => Kind::DropReason(size),
                    "sonde_tcp_state" => Kind::TcpState(size),
                    "sonde_l4proto" => Kind::L4Proto(size),
                    "sonde_ethproto" => Kind::EthProto(size),
                    "sonde_ksym" => Kind::Ksym,
                    _ => self.kind(inner(&t), depth + 1)?,
                }
            }
            Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                self.kind(inner(&t), depth + 1)?
            }
            Type::Int(i) if i.is_bool() => Kind::Bool(i.size() as u8),
            Type::Int(i) if i.is_signed() => Kind::Int(i.size() as u8),
            Type::Int(i) => Kind::Uint(i.size() as u8),
            Type::Float(f) => Kind::Float(f.size() as u8),
            Type::Ptr(_) => Kind::Pointer,
            Type::Enum(e) => {
                let prefix = self.enum_prefix(e);
                let names = e
                    .members
                    .iter()
                    .filter_map(|m| {
                        let n = self.btf.resolve_name(m).ok()?;
                        let v = if e.is_signed() {
                            m.val() as i32 as i64
                        } else {
                            m.val() as i64
                        };
                        Some((v, n.strip_prefix(&prefix).unwrap_or(&n).into()))
                    })
                    .collect();
                Kind::Enum {
                    size: e.size() as u8,
                    signed: e.is_signed(),
                    names: Arc::new(names),
                }
            }
            Type::Enum64(e) => {
                let prefix = self
                    .btf
                    .resolve_name(e)
                    .map(|n| format!("{}_", n.to_uppercase()))
                    .unwrap_or_default();
                let names = e
                    .members
                    .iter()
                    .filter_map(|m| {
                        let n = self.btf.resolve_name(m).ok()?;
                        Some((m.val() as i64, n.strip_prefix(&prefix).unwrap_or(&n).into()))
                    })
                    .collect();
                Kind::Enum {
                    size: e.size() as u8,
                    signed: e.is_signed(),
                    names: Arc::new(names),
                }
            }
            Type::Array(a) => {
                let elem_id = a.get_type_id().unwrap_or(0);
                let stride = self.size_of(elem_id, depth + 1)?;
                let elem = self.kind(elem_id, depth + 1)?;
                let is_char = matches!(self.strip(elem_id), Some(Type::Int(i)) if i.is_char() || (i.size() == 1 && self.type_name(elem_id) == "char"));
                if is_char {
                    Kind::CharArray(a.len())
                } else {
                    Kind::Array {
                        elem: Box::new(elem),
                        len: a.len(),
                        stride,
                    }
                }
            }
            Type::Struct(s) | Type::Union(s) => {
                let mut fields = Vec::with_capacity(s.members.len());
                let mut pods = 0;
                for m in &s.members {
                    let name = self.btf.resolve_name(m).unwrap_or_default();
                    let mid = m.get_type_id().unwrap_or(0);
                    let bit_offset = m.bit_offset();
                    let mut kind = self.kind(mid, depth + 1)?;
                    if let Some(bits) = m.bitfield_size().filter(|b| *b > 0) {
                        let signed = matches!(self.strip(mid), Some(Type::Int(i)) if i.is_signed());
                        kind = Kind::Bitfield {
                            bit_offset: bit_offset % 8,
                            bits,
                            signed,
                        };
                    }
                    let pod_key = if matches!(kind, Kind::Netns) {
                        pods += 1;
                        Some(if name == "netns" || pods == 1 {
                            Label::from("pod")
                        } else {
                            Label::from(format!("{name}_pod"))
                        })
                    } else {
                        None
                    };
                    if name.is_empty() {
                        // Anonymous struct or union: its members are flattened in C,
                        // so they are here too.
                        if let Kind::Struct(inner) = kind {
                            for f in inner.iter() {
                                let mut f = f.clone();
                                f.offset += (bit_offset / 8) as usize;
                                fields.push(f);
                            }
                        }
                        continue;
                    }
                    fields.push(Field {
                        name: name.into(),
                        pod_key,
                        offset: (bit_offset / 8) as usize,
                        kind,
                    });
                }
                fields.sort_by(|a, b| a.name.cmp(&b.name));
                Kind::Struct(fields.into())
            }
            _ => Kind::Opaque,
        })
    }

    fn enum_prefix(&self, e: &btf_rs::Enum) -> String {
        self.btf
            .resolve_name(e)
            .map(|n| format!("{}_", n.to_uppercase()))
            .unwrap_or_default()
    }
}

fn read_uint(bytes: &[u8], size: u8) -> u64 {
    let mut buf = [0u8; 8];
    let n = (size as usize).min(8).min(bytes.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_ne_bytes(buf)
}

fn read_int(bytes: &[u8], size: u8) -> i64 {
    let v = read_uint(bytes, size);
    match size {
        1 => v as u8 as i8 as i64,
        2 => v as u16 as i16 as i64,
        4 => v as u32 as i32 as i64,
        _ => v as i64,
    }
}

/// Formats a 16-byte address; IPv4 is stored v4-mapped.
pub fn format_ip(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => format_ipv4(v4.octets()),
        None => v6.to_string(),
    }
}

/// Dotted quad without the formatting machinery (this runs per event).
fn format_ipv4(o: [u8; 4]) -> String {
    let mut out = String::with_capacity(15);
    for (i, b) in o.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let b = *b;
        if b >= 100 {
            out.push((b'0' + b / 100) as char);
        }
        if b >= 10 {
            out.push((b'0' + (b / 10) % 10) as char);
        }
        out.push((b'0' + b % 10) as char);
    }
    out
}

/// `sk_state` names by number (include/net/tcp_states.h); 0 is not a state.
pub const TCP_STATE_NAMES: [&str; 14] = [
    "UNKNOWN",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
];

/// The name of an `sk_state` value, `UNKNOWN` for one the table does not have.
pub fn tcp_state_name(v: u64) -> &'static str {
    TCP_STATE_NAMES
        .get(v as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

/// IP protocol numbers people meet in network probes.
pub fn l4proto_name(v: u64) -> Option<&'static str> {
    Some(match v {
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPIP",
        6 => "TCP",
        17 => "UDP",
        41 => "IPv6",
        47 => "GRE",
        50 => "ESP",
        58 => "ICMPv6",
        132 => "SCTP",
        136 => "UDPLite",
        255 => "RAW",
        _ => return None,
    })
}

/// Ethernet protocol numbers (host order).
pub fn ethproto_name(v: u64) -> Option<&'static str> {
    Some(match v {
        0x0800 => "IPv4",
        0x86DD => "IPv6",
        0x0806 => "ARP",
        0x8100 => "VLAN",
        0x88A8 => "QinQ",
        0x8847 => "MPLS",
        0x0003 => "ALL",
        _ => return None,
    })
}

/// How long an interface name (or its absence) is trusted: a renamed, moved or
/// deleted interface shows its new name (or `if<N>`) within this.
const IFNAME_TTL_NS: u64 = 1_000_000_000;

thread_local! {
    /// Interface names by index in sonde's own network namespace (the one of the
    /// interfaces TC programs attach to), from [`crate::netlink::names`], with when
    /// each expires. One per thread, so no lock on the per-event path.
    static IFNAMES: std::cell::RefCell<HashMap<u32, (Label, u64)>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The name of interface `index`, `if<N>` when there is none; looked up in the
/// namespace's cached link dump at most once per [`IFNAME_TTL_NS`] per index and
/// thread.
fn ifname(index: u32) -> Label {
    let now = coarse_ns();
    IFNAMES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((name, expires)) = cache.get(&index) {
            if now < *expires {
                return name.clone();
            }
        }
        let name = lookup_ifname(index);
        if cache.len() >= 4096 {
            cache.retain(|_, (_, expires)| now < *expires);
            if cache.len() >= 4096 {
                cache.clear();
            }
        }
        cache.insert(index, (name.clone(), now + IFNAME_TTL_NS));
        name
    })
}

fn lookup_ifname(index: u32) -> Label {
    match crate::netlink::names::own(index) {
        Some(name) => name.as_ref().into(),
        None => format!("if{index}").into(),
    }
}

/// Names the scripts see for kernel numbers that do not depend on the kernel, made
/// once and then shared (a reference count per record, no allocation).
struct StaticNames {
    tcp_states: Vec<Label>,
}

fn static_names() -> &'static StaticNames {
    static NAMES: std::sync::OnceLock<StaticNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| StaticNames {
        tcp_states: TCP_STATE_NAMES.iter().map(|n| Label::from(*n)).collect(),
    })
}

fn decode_kind(kind: &Kind, b: &[u8], env: &DecodeEnv) -> Value {
    match kind {
        Kind::Uint(s) => Value::Uint(read_uint(b, *s)),
        Kind::Int(s) => Value::Int(read_int(b, *s)),
        Kind::Bool(s) => Value::Bool(read_uint(b, *s) != 0),
        Kind::Float(4) => Value::Float(f32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64),
        Kind::Float(_) => Value::Float(f64::from_bits(read_uint(b, 8))),
        Kind::Pointer => Value::Uint(read_uint(b, 8)),
        Kind::Netns => Value::Uint(read_uint(b, 4)),
        Kind::Ip => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            Value::Ip(a)
        }
        Kind::StackId => {
            let id = read_int(b, 4);
            let frames = match (&env.stacks, id >= 0) {
                (Some(read), true) => {
                    let ips = read(id as u32);
                    let frames = ips.iter().map(|ip| env.symbol(*ip)).collect();
                    env.note(Note::Stack(id as u32, ips));
                    frames
                }
                _ => Vec::new(),
            };
            Value::Stack(frames)
        }
        Kind::Ifindex => Value::Str(ifname(read_uint(b, 4) as u32)),
        Kind::DropReason(s) => {
            let v = read_uint(b, *s);
            Value::Str(match env.drop_reasons.get(&v) {
                Some(n) => n.clone(),
                // Kernels before 5.17 have no `enum skb_drop_reason`: they never say.
                None if v == 0 && env.drop_reasons.is_empty() => "NOT_SPECIFIED".into(),
                None => format!("REASON_{v}").into(),
            })
        }
        Kind::TcpState(s) => {
            let v = read_uint(b, *s);
            let names = &static_names().tcp_states;
            Value::Str(names.get(v as usize).unwrap_or(&names[0]).clone())
        }
        Kind::L4Proto(s) => {
            let v = read_uint(b, *s);
            Value::Str(match l4proto_name(v) {
                Some(n) => n.into(),
                None => format!("PROTO_{v}").into(),
            })
        }
        Kind::EthProto(s) => {
            let v = read_uint(b, *s);
            Value::Str(match ethproto_name(v) {
                Some(n) => n.into(),
                None => format!("0x{v:04x}").into(),
            })
        }
        Kind::Ksym => Value::Str(env.symbol(read_uint(b, 8))),
        Kind::Enum {
            size,
            signed,
            names,
        } => {
            let v = if *signed {
                read_int(b, *size)
            } else {
                read_uint(b, *size) as i64
            };
            match names.get(&v) {
                Some(n) => Value::Str(n.clone()),
                None => Value::Int(v),
            }
        }
        Kind::CharArray(len) => {
            let s = &b[..(*len).min(b.len())];
            let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
            Value::Str(String::from_utf8_lossy(&s[..end]).as_ref().into())
        }
        Kind::Array { elem, len, stride } => {
            let mut out = Vec::with_capacity(*len);
            for i in 0..*len {
                let start = i * stride;
                if start >= b.len() {
                    break;
                }
                out.push(decode_kind(elem, &b[start..], env));
            }
            Value::Array(out)
        }
        Kind::Struct(fields) => decode_fields(fields, b, env),
        Kind::Bitfield {
            bit_offset,
            bits,
            signed,
        } => {
            let raw = read_uint(b, 8) >> bit_offset;
            let mask = if *bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let v = raw & mask;
            if *signed && *bits < 64 && (v >> (bits - 1)) & 1 == 1 {
                Value::Int((v | !mask) as i64)
            } else if *signed {
                Value::Int(v as i64)
            } else {
                Value::Uint(v)
            }
        }
        Kind::Opaque => Value::Unit,
    }
}

/// A struct's fields, sorted by name, each `sonde_netns` field with its pod beside it.
fn decode_fields(fields: &[Field], b: &[u8], env: &DecodeEnv) -> Value {
    let mut entries = Vec::with_capacity(fields.len() + 1);
    let mut pods = false;
    for f in fields.iter() {
        let Some(fb) = b.get(f.offset..) else {
            continue;
        };
        if let Some(pk) = &f.pod_key {
            pods = true;
            let inode = read_uint(fb, 4) as u32;
            entries.push((pk.clone(), Value::Pod(env.pod(inode))));
        }
        entries.push((f.name.clone(), decode_kind(&f.kind, fb, env)));
    }
    if pods {
        // The plan is sorted by field name; a pod key goes where its name sorts.
        entries.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
    }
    Value::Struct(entries)
}

/// A `tcp_reset` record as the kernel writes it, with `fields` (name, native-endian
/// bytes) set and the rest zero: for tests of what reads records.
#[cfg(test)]
pub(crate) fn tcp_reset_record(env: &Arc<DecodeEnv>, fields: &[(&str, &[u8])]) -> Record {
    let types = ObjectTypes::parse(crate::bpf::catalog::find("tcp_reset").unwrap().object).unwrap();
    let d = types.record_decoder("events").unwrap();
    let layout = d.layout();
    let mut bytes = vec![0u8; d.size()];
    for (name, value) in fields {
        let at = layout.iter().find(|(n, _, _)| n == name).unwrap().1;
        bytes[at..][..value.len()].copy_from_slice(value);
    }
    d.record(&bytes, env).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_forms() {
        let mut v4 = [0u8; 16];
        v4[10] = 0xff;
        v4[11] = 0xff;
        v4[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(format_ip(&v4), "10.1.2.3");
        v4[12..].copy_from_slice(&[255, 0, 109, 7]);
        assert_eq!(format_ip(&v4), "255.0.109.7");
        let v6: [u8; 16] = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(format_ip(&v6), "fd00::1");
        assert_eq!(format_ip(&[0u8; 16]), "::");
        assert_eq!(format_ip(&Ipv6Addr::LOCALHOST.octets()), "::1");
    }

    #[test]
    fn names() {
        assert_eq!(tcp_state_name(1), "ESTABLISHED");
        assert_eq!(tcp_state_name(7), "CLOSE");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
        assert_eq!(l4proto_name(6), Some("TCP"));
        assert_eq!(ethproto_name(0x86dd), Some("IPv6"));
    }

    #[test]
    fn interface_names_are_cached_per_thread_until_they_expire() {
        // A thread of its own: the cache is per thread.
        std::thread::spawn(|| {
            assert_eq!(ifname(1).to_string(), "lo", "index 1 is the loopback");
            assert_eq!(ifname(999_999).to_string(), "if999999");
            // A name still fresh is served from the cache, without a lookup...
            let later = coarse_ns() + 60 * IFNAME_TTL_NS;
            IFNAMES.with(|c| c.borrow_mut().insert(1, ("cached".into(), later)));
            assert_eq!(ifname(1).to_string(), "cached");
            // ...and one past its time is looked up again.
            IFNAMES.with(|c| c.borrow_mut().insert(1, ("stale".into(), 0)));
            assert_eq!(ifname(1).to_string(), "lo");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn record_bytes_inline_and_on_the_heap_read_back_the_same() {
        let small: Vec<u8> = (0..INLINE_RECORD as u8).collect();
        let large: Vec<u8> = (0..200u8).collect();
        assert!(matches!(
            RecordBytes::new(&small),
            RecordBytes::Inline { .. }
        ));
        assert_eq!(RecordBytes::new(&small).as_slice(), &small[..]);
        assert!(matches!(RecordBytes::new(&large), RecordBytes::Heap(_)));
        assert_eq!(RecordBytes::new(&large).as_slice(), &large[..]);
        assert_eq!(RecordBytes::new(&[]).as_slice(), &[] as &[u8]);
        let shared: Arc<[u8]> = large.clone().into();
        assert_eq!(RecordBytes::Shared(shared, 100).as_slice(), &large[..100]);
    }

    /// A view reads the bytes it is given, in place; a record owns a copy; both
    /// read the same fields the same way, and a whole decode agrees with each field.
    #[test]
    fn a_view_in_place_and_an_owned_record_read_the_same() {
        let env = Arc::new(DecodeEnv::offline(Arc::new(
            crate::pods::HostResolver::new("n1"),
        )));
        let r = super::tcp_reset_record(&env, &[("sport", &443u16.to_ne_bytes())]);
        let types =
            ObjectTypes::parse(crate::bpf::catalog::find("tcp_reset").unwrap().object).unwrap();
        let d = types.record_decoder("events").unwrap();
        let bytes = r.view().bytes().to_vec();
        let v = d.view(&bytes, &env).unwrap();
        assert!(
            std::ptr::eq(v.bytes().as_ptr(), bytes.as_ptr()),
            "not copied"
        );
        assert_eq!(v.keys(), r.keys());
        let whole = v.to_value();
        for k in v.keys() {
            assert_eq!(v.get(k), r.get(k), "{k}");
            assert_eq!(whole.field(k), v.get(k).as_ref(), "{k}");
        }
        assert_eq!(v.get("sport"), Some(Value::Uint(443)));
        assert!(matches!(v.get("pod"), Some(Value::Pod(p)) if p.node == "n1"));
        assert!(d.view(&bytes[..bytes.len() - 1], &env).is_err(), "short");
        let shared: Arc<[u8]> = bytes.clone().into();
        assert_eq!(
            d.bind(&env).record_shared(&shared).unwrap().get("sport"),
            Some(Value::Uint(443))
        );
    }

    #[test]
    fn a_hinted_field_read_is_right_whatever_the_hint() {
        let env = Arc::new(DecodeEnv::offline(Arc::new(
            crate::pods::HostResolver::new("n1"),
        )));
        let r = super::tcp_reset_record(
            &env,
            &[
                ("sport", &443u16.to_ne_bytes()),
                ("dport", &8080u16.to_ne_bytes()),
            ],
        );
        let hint = AtomicUsize::new(usize::MAX);
        for _ in 0..2 {
            // A stale hint (another record type's index), then the remembered one.
            assert_eq!(r.get_hinted("sport", &hint).unwrap().as_int().unwrap(), 443);
        }
        // The hint now points at `sport`: another name still reads its own field.
        assert_eq!(
            r.get_hinted("dport", &hint).unwrap().as_int().unwrap(),
            8080
        );
        assert!(r.get_hinted("nope", &hint).is_none());
        let pod = r.get_hinted("pod", &hint).unwrap();
        assert!(
            matches!(pod, Value::Pod(_)),
            "a pod key, beside its netns field"
        );
    }
}
