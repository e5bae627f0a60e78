//! Tests of [`super::check`]: real BTFs pass, each kind of damage is named, and a
//! deterministic mutator over the running kernel's BTF shows that whatever passes
//! the check relocates every committed object without a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// Builds small BTFs by hand, a record at a time.
pub(crate) struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    n: u32,
}

impl Builder {
    pub(crate) fn new() -> Builder {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            n: 0,
        }
    }

    pub(crate) fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    /// One record: name, kind, vlen, kind_flag, size/type, then its extra words.
    pub(crate) fn record(
        &mut self,
        name: &str,
        kind: u32,
        vlen: u32,
        flag: bool,
        size_or_type: u32,
        extra: &[u32],
    ) -> u32 {
        let name = self.name(name);
        let info = (flag as u32) << 31 | kind << 24 | vlen;
        for w in [name, info, size_or_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.n += 1;
        self.n
    }

    pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
        self.record(name, INT, 0, false, size, &[size * 8])
    }

    /// A struct of `(name, type, bit offset)` members.
    pub(crate) fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let mut extra = Vec::new();
        for (n, t, off) in members {
            extra.extend_from_slice(&[self.name(n), *t, *off]);
        }
        self.record(name, STRUCT, members.len() as u32, false, size, &extra)
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// A small valid BTF: `struct node { int v; struct node *next; }`, a typedef, an
/// enum, a function.
fn good() -> Builder {
    let mut b = Builder::new();
    let int = b.int("int", 4); // 1
    let ptr = b.record("", PTR, 0, false, 3, &[]); // 2 -> 3
    b.strukt("node", 16, &[("v", int, 0), ("next", ptr, 64)]); // 3
    b.record("node_t", TYPEDEF, 0, false, 3, &[]); // 4
    let one = b.name("ONE");
    b.record("e", ENUM, 1, false, 4, &[one, 1]); // 5
    let x = b.name("x");
    b.record("", FUNC_PROTO, 1, false, int, &[x, 4]); // 6
    b.record("f", FUNC, 0, false, 6, &[]); // 7
    b
}

fn err(raw: &[u8]) -> String {
    check(raw).unwrap_err().to_string()
}

#[test]
fn a_small_valid_btf_passes_and_aya_reads_it() {
    let raw = good().build();
    assert_eq!(check(&raw).unwrap().types, 7);
    aya::Btf::parse(&raw, aya::Endianness::default()).unwrap();
}

#[test]
fn header_damage_is_named() {
    let raw = good().build();
    assert_eq!(
        err(&raw[..10]),
        "header: 10 bytes, shorter than the 24-byte BTF header"
    );
    let mut bad = raw.clone();
    bad[2] = 2;
    assert_eq!(err(&bad), "header: version 2, only version 1 exists");
    let mut bad = raw.clone();
    bad[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    assert_eq!(err(&bad), "header: big-endian BTF is not supported");
    let mut bad = raw.clone();
    bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        err(&bad).starts_with("header: string section (offset "),
        "{}",
        err(&bad)
    );
    let mut bad = raw.clone();
    bad[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert!(
        err(&bad).starts_with("header: header length 1000"),
        "{}",
        err(&bad)
    );
    // The last string's NUL cut off.
    let short = &raw[..raw.len() - 1];
    let mut bad = short.to_vec();
    let str_len = u32::from_le_bytes(bad[20..24].try_into().unwrap()) - 1;
    bad[20..24].copy_from_slice(&str_len.to_le_bytes());
    assert_eq!(
        err(&bad),
        "header: string section does not end with a NUL byte"
    );
    // Types overlapping strings.
    let mut bad = raw.clone();
    bad[16..20].copy_from_slice(&4u32.to_le_bytes());
    bad[20..24].copy_from_slice(&4u32.to_le_bytes());
    assert!(err(&bad).contains("overlap"), "{}", err(&bad));
}

#[test]
fn record_damage_is_named_with_the_type_and_offset() {
    // A name past the strings: aya-obj slices its strings with it (a panic).
    let mut b = good();
    b.record("", INT, 0, false, 4, &[32]);
    let mut raw = b.build();
    // The name of type [1], right after the 24-byte header.
    raw[24..28].copy_from_slice(&5000u32.to_le_bytes());
    assert!(
        err(&raw)
            .starts_with("type [1] at byte 24: int name offset 5000 is past the string section ("),
        "{}",
        err(&raw)
    );

    let mut b = good();
    b.strukt("s", 4, &[("m", 99, 0)]);
    assert!(
        err(&b.build()).contains("struct: member 0 refers to type 99, past the last type (8)"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.strukt("s", 4, &[("m", 0, 0)]);
    assert!(
        err(&b.build()).ends_with("struct: member 0 is void"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.record("z", INT, 0, false, 0, &[0]);
    assert!(
        err(&b.build()).contains("int of 0 bytes"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.record("g", FUNC, 0, false, 1, &[]);
    assert!(
        err(&b.build()).contains("func: its type is [1] int int, not a func_proto"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.record("k", 25, 0, false, 0, &[]);
    assert!(
        err(&b.build()).contains("unknown kind 25"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.record("s", STRUCT, 3, false, 4, &[0, 1, 0]);
    assert!(
        err(&b.build())
            .contains("struct with 3 entries needs 48 bytes, the type section has 24 left"),
        "{}",
        err(&b.build())
    );

    let mut b = good();
    b.record("r", INT, 0x10000, false, 4, &[32]);
    let raw = b.build();
    // vlen is 16 bits: 0x10000 lands in the reserved bits.
    assert!(
        err(&raw).contains("reserved bits set in info"),
        "{}",
        err(&raw)
    );
}

#[test]
fn a_bitfield_must_be_an_int_or_enum() {
    // aya-obj divides by the size of a bitfield's type.
    let mut b = good();
    let inner = b.strukt("inner", 4, &[("v", 1, 0)]); // 8
    let x = b.name("x");
    // kind_flag set: the member's offset word is bitfield size << 24 | bit offset.
    b.record("outer", STRUCT, 1, true, 4, &[x, inner, 3 << 24]);
    let e = err(&b.build());
    assert!(
        e.contains("member 0 is a 3-bit bitfield of [8] struct inner, not an int or enum"),
        "{e}"
    );
    // Through a typedef checked after the struct, whose own type is out of range.
    let mut b = good();
    b.record("flags", STRUCT, 1, true, 4, &[0, 9, (1 << 24) | 3]); // 8
    b.record("bad_t", TYPEDEF, 0, false, 1000, &[]); // 9
    let e = err(&b.build());
    assert!(
        e.contains("bitfield of type 1000, past the last type (9)"),
        "{e}"
    );
    // Through a typedef to int: fine.
    let mut b = good();
    let td = b.record("u8_t", TYPEDEF, 0, false, 1, &[]);
    b.record("flags", STRUCT, 1, true, 4, &[0, td, (1 << 24) | 3]);
    check(&b.build()).unwrap();
}

#[test]
fn a_type_that_contains_itself_is_refused() {
    // struct a { struct { struct a x; }; }: aya-obj recurses through anonymous
    // members until the stack overflows.
    let mut b = good();
    // [8] struct a, member: [9]; [9] anonymous struct, member: [8].
    b.strukt("a", 4, &[("", 9, 0)]);
    b.strukt("", 4, &[("x", 8, 0)]);
    let e = err(&b.build());
    assert!(e.contains("[8] struct a contains itself without a pointer ([8] struct a -> [9] struct (anonymous) -> [8])"), "{e}");
    // typedef t t;
    let mut b = good();
    b.record("t", TYPEDEF, 0, false, 8, &[]);
    let e = err(&b.build());
    assert!(e.contains("[8] typedef t contains itself"), "{e}");
    // An array of itself.
    let mut b = good();
    b.record("", ARRAY, 0, false, 0, &[8, 1, 4]);
    assert!(err(&b.build()).contains("contains itself"));
    // Through a pointer is how C does it: fine (good() has struct node).
    check(&good().build()).unwrap();
}

#[test]
fn sizes_past_what_a_relocation_computes_and_members_outside_their_struct_are_refused() {
    // The fuzzer's find: `char[0x80000010]` as a member made aya-obj multiply its
    // byte size by 8 in 32 bits (an overflow panic in debug, a wrong offset else).
    let mut b = good();
    let char_ = b.int("char", 1); // 8
    b.record("", ARRAY, 0, false, 0, &[char_, 1, 0x8000_0010]); // 9
    b.strukt("big", 16, &[("buf", 9, 0)]); // 10
    let e = err(&b.build());
    assert!(
        e.contains("[9] array (anonymous) is 2147483664 bytes, more than 536870912"),
        "{e}"
    );
    // Two arrays that multiply past u64 saturate and are refused the same way.
    let mut b = good();
    b.record("", ARRAY, 0, false, 0, &[1, 1, u32::MAX]); // 8
    b.record("", ARRAY, 0, false, 0, &[8, 1, u32::MAX]); // 9
    assert!(err(&b.build()).contains("more than 536870912"));
    // A member that ends past its struct (the kernel's "Member exceeds struct_size").
    let mut b = good();
    b.strukt("short", 4, &[("a", 1, 0), ("b", 1, 32)]); // 8
    let e = err(&b.build());
    assert!(e.contains("[8] struct short: member 1 ([1] int int) ends at bit 64, past the 4 bytes of the struct"), "{e}");
    // A bitfield past the end, through the kind_flag encoding.
    let mut b = good();
    b.record("flags", STRUCT, 1, true, 4, &[0, 1, (3 << 24) | 30]); // 8
    assert!(err(&b.build()).contains("ends at bit 33, past the 4 bytes"));
    // A flexible array member at the very end is fine: it has no size.
    let mut b = good();
    b.record("", ARRAY, 0, false, 0, &[1, 1, 0]); // 8
    b.strukt("msg", 4, &[("len", 1, 0), ("data", 8, 32)]); // 9
    check(&b.build()).unwrap();
    // The fuzzer's reproducer itself.
    let repro = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/artifacts/btf/aya-field-relocation-mul-overflow"
    );
    let raw = std::fs::read(repro).unwrap();
    let e = check(&raw).unwrap_err().to_string();
    assert!(
        e.contains("more than 536870912") || e.contains("past the"),
        "{e}"
    );
}

#[test]
fn every_committed_object_and_embedded_btf_passes() {
    for p in crate::bpf::catalog::PROGRAMS {
        let raw = crate::btf::extract_btf_section(p.object).unwrap();
        check(&raw).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    for (key, bytes) in crate::btf::archive::embedded() {
        let got = crate::btf::image::extract(bytes).unwrap();
        check(&got.btf).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

fn kernel_btf(test: &str) -> Option<Vec<u8>> {
    match std::fs::read(crate::btf::SYSFS_VMLINUX) {
        Ok(raw) => Some(raw),
        Err(e) => {
            crate::testkit::skip(test, &format!("{}: {e}", crate::btf::SYSFS_VMLINUX));
            None
        }
    }
}

#[test]
fn the_running_kernels_btf_passes() {
    let Some(raw) = kernel_btf("the_running_kernels_btf_passes") else {
        return;
    };
    let t = std::time::Instant::now();
    let ok = check(&raw).unwrap();
    eprintln!(
        "{} types, {} bytes of strings, checked in {:?}",
        ok.types,
        ok.strings,
        t.elapsed()
    );
    assert!(ok.types > 10_000, "{ok:?}");
}

/// Relocates `object` against `target` the way the loader does (aya-obj, no
/// kernel involved). `Err` when it panicked.
fn relocate(object: &[u8], target: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(btf) = aya::Btf::parse(target, aya::Endianness::default()) else {
            return;
        };
        let mut obj = aya_obj::Object::parse(object).unwrap();
        let _ = obj.relocate_btf(&btf);
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Damages `raw` in its type section at a few places: bytes flipped, and words set
/// to values that land just past the strings or the types (what a flipped high
/// byte of a name offset or a type id looks like).
pub(crate) fn mutate(raw: &[u8], seed: u64) -> Vec<u8> {
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
    let (hdr, type_off, type_len, str_len) = (word(4), word(8), word(12), word(20));
    let types = hdr + type_off;
    let mut out = raw.to_vec();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for _ in 0..2 {
        let at = types + rng.below(type_len / 4) * 4;
        match rng.below(5) {
            0..=2 => out[at + rng.below(4)] ^= 1 << rng.below(8),
            3 => out[at..at + 4]
                .copy_from_slice(&((str_len + rng.below(1 << 16)) as u32).to_le_bytes()),
            _ => out[at..at + 4]
                .copy_from_slice(&((type_len / 16 + rng.below(1 << 16)) as u32).to_le_bytes()),
        }
    }
    out
}

/// The first struct record of a BTF (its offset), for targeted damage.
fn first_struct(raw: &[u8]) -> usize {
    let l = Layout::read(raw).unwrap();
    (1..=l.count())
        .map(|id| l.record(id))
        .find(|r| r.2 == STRUCT)
        .unwrap()
        .0
}

#[test]
fn a_name_offset_past_the_strings_panics_aya_and_is_refused_here() {
    let Some(raw) = kernel_btf("a_name_offset_past_the_strings_panics_aya_and_is_refused_here")
    else {
        return;
    };
    let str_len = u32::from_le_bytes(raw[20..24].try_into().unwrap());
    let mut bad = raw.clone();
    let at = first_struct(&raw);
    bad[at..at + 4].copy_from_slice(&(str_len + 100).to_le_bytes());
    // aya-obj 0.3 parses it, then panics in the relocation (strings sliced out of
    // bounds). If a later aya stops panicking, this line can go; the check stays.
    let tcp_reset = crate::bpf::catalog::find("tcp_reset").unwrap().object;
    assert!(
        relocate(tcp_reset, &bad).is_err(),
        "aya-obj no longer panics on this"
    );
    let e = check(&bad).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "name offset {} is past the string section",
            str_len + 100
        )),
        "{e}"
    );
    assert_eq!(e.offset, at);
}

/// Whatever the check lets through, aya relocates without a panic: many mutated
/// copies of the running kernel's BTF, every one either refused or relocated.
#[test]
fn mutated_kernel_btfs_are_refused_or_relocate_without_a_panic() {
    let Some(raw) = kernel_btf("mutated_kernel_btfs_are_refused_or_relocate_without_a_panic")
    else {
        return;
    };
    // SONDE_MUTATION_SEEDS=1000 for a longer run, relocating every object.
    let long: Option<u64> = std::env::var("SONDE_MUTATION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds = long.unwrap_or(30);
    let objects: Vec<&[u8]> = crate::bpf::catalog::PROGRAMS
        .iter()
        .filter(|p| long.is_some() || ["tcp_reset", "packet_loss"].contains(&p.name))
        .map(|p| p.object)
        .collect();
    let (mut refused, mut passed) = (0, 0);
    for seed in 0..seeds {
        let bad = mutate(&raw, seed);
        match check(&bad) {
            Err(_) => refused += 1,
            Ok(_) => {
                passed += 1;
                for o in &objects {
                    if let Err(p) = relocate(o, &bad) {
                        panic!("seed {seed}: passed the check, then aya panicked: {p}");
                    }
                }
            }
        }
    }
    eprintln!(
        "{seeds} mutated BTFs: {refused} refused, {passed} passed and relocated without a panic"
    );
    assert!(
        refused > seeds / 5 && passed > seeds / 5,
        "the mutator should make both ({refused} refused, {passed} passed)"
    );
}

/// The check itself never panics, whatever the bytes: a small BTF damaged at
/// random, many times (a panic fails the test).
#[test]
fn the_check_never_panics_on_random_damage() {
    let raw = {
        let mut b = good();
        let x = b.name("x");
        b.record("bits", STRUCT, 1, true, 4, &[x, 1, (3 << 24) | 1]);
        b.record("", ARRAY, 0, false, 0, &[1, 1, 4]);
        b.record("sec", DATASEC, 1, false, 4, &[7, 0, 4]);
        b.build()
    };
    check(&raw).unwrap();
    let mut rng = Rng(7);
    let (mut refused, mut n) = (0, 0);
    for _ in 0..20_000 {
        let mut bad = raw.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(bad.len());
            bad[at] = match rng.below(3) {
                0 => bad[at] ^ (1 << rng.below(8)),
                1 => rng.next() as u8,
                _ => 0xff,
            };
        }
        if rng.below(8) == 0 {
            bad.truncate(rng.below(bad.len()));
        }
        n += 1;
        if check(&bad).is_err() {
            refused += 1;
        }
    }
    assert!(refused > n / 2, "{refused} of {n}");
}
