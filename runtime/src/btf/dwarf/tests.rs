//! Objects compiled at test time (clang and gcc, DWARF 4 and 5) converted here and by
//! `pahole -J`, then compared type by type.

use super::encode::*;
use super::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/btf/testdata/dwarf");

/// Raw BTF decoded just enough to describe types in words.
struct Parsed {
    /// Index = BTF id - 1: (kind, kind_flag, name, vlen, size_or_type, extra words).
    types: Vec<(u32, bool, String, usize, u32, Vec<u32>)>,
    strings: Vec<u8>,
}

impl Parsed {
    fn new(raw: &[u8]) -> Self {
        let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([raw[0], raw[1]]), BTF_MAGIC);
        let hdr = word(4) as usize;
        let (type_off, type_len) = (hdr + word(8) as usize, word(12) as usize);
        let (str_off, str_len) = (hdr + word(16) as usize, word(20) as usize);
        let strings = &raw[str_off..str_off + str_len];
        let name = |off: u32| string(strings, off);
        let mut types = Vec::new();
        let mut at = type_off;
        while at < type_off + type_len {
            let (name_off, info, size_or_type) = (word(at), word(at + 4), word(at + 8));
            let (kind, vlen) = (info >> 24 & 0x1f, (info & 0xffff) as usize);
            let words = match kind {
                KIND_INT => 1,
                KIND_ARRAY => 3,
                KIND_STRUCT | KIND_UNION | KIND_ENUM64 => 3 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen,
                14 => 1,        // VAR
                15 => 3 * vlen, // DATASEC
                17 => 1,        // DECL_TAG
                _ => 0,
            };
            let extra = (0..words).map(|i| word(at + 12 + 4 * i)).collect();
            types.push((
                kind,
                info >> 31 == 1,
                name(name_off),
                vlen,
                size_or_type,
                extra,
            ));
            at += 12 + 4 * words;
        }
        Parsed {
            types,
            strings: strings.to_vec(),
        }
    }

    fn get(&self, id: u32) -> &(u32, bool, String, usize, u32, Vec<u32>) {
        &self.types[id as usize - 1]
    }

    /// `int`, `ptr -> struct foo`, `array[24] of int` (nested arrays flattened, as
    /// pahole 1.24 writes them), `fn(ptr -> void, ...) -> int`.
    fn describe(&self, id: u32) -> String {
        if id == 0 {
            return "void".into();
        }
        let (kind, _, name, vlen, next, extra) = self.get(id);
        match *kind {
            KIND_INT | KIND_FLOAT => name.clone(),
            KIND_PTR => format!("ptr -> {}", self.describe(*next)),
            KIND_CONST => format!("const {}", self.describe(*next)),
            KIND_VOLATILE => format!("volatile {}", self.describe(*next)),
            KIND_RESTRICT => format!("restrict {}", self.describe(*next)),
            KIND_TYPEDEF => format!("typedef {name}"),
            KIND_FWD => format!("fwd {name}"),
            KIND_ARRAY => {
                let (mut n, mut elem) = (u64::from(extra[2]), extra[0]);
                while self.get(elem).0 == KIND_ARRAY {
                    n *= u64::from(self.get(elem).5[2]);
                    elem = self.get(elem).5[0];
                }
                format!("array[{n}] of {}", self.describe(elem))
            }
            KIND_FUNC_PROTO => {
                let params: Vec<_> = extra
                    .chunks(2)
                    .map(|p| {
                        if p[1] == 0 {
                            "...".into()
                        } else {
                            self.describe(p[1])
                        }
                    })
                    .collect();
                format!("fn({}) -> {}", params.join(", "), self.describe(*next))
            }
            KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 if !name.is_empty() => {
                format!("{} {name}", kind_name(*kind))
            }
            _ => format!(
                "{} {{ {} }} size {next} vlen {vlen}",
                kind_name(*kind),
                self.body(id).join("; ")
            ),
        }
    }

    /// Members (`name @bit_offset:bitfield_size type`) or enumerators (`NAME = value`).
    fn body(&self, id: u32) -> Vec<String> {
        let (kind, kind_flag, _, _, _, extra) = self.get(id);
        let name = |off: u32| string(&self.strings, off);
        match *kind {
            KIND_STRUCT | KIND_UNION => extra
                .chunks(3)
                .map(|m| {
                    let (offset, bits) = if *kind_flag {
                        (m[2] & 0xff_ffff, m[2] >> 24)
                    } else {
                        (m[2], 0)
                    };
                    format!("{} @{offset}:{bits} {}", name(m[0]), self.describe(m[1]))
                })
                .collect(),
            KIND_ENUM => extra
                .chunks(2)
                .map(|e| format!("{} = {}", name(e[0]), e[1]))
                .collect(),
            KIND_ENUM64 => extra
                .chunks(3)
                .map(|e| {
                    format!(
                        "{} = {}",
                        name(e[0]),
                        u64::from(e[1]) | u64::from(e[2]) << 32
                    )
                })
                .collect(),
            _ => vec![],
        }
    }

    /// Named structs, unions, enums, typedefs and functions, described fully.
    fn named(&self) -> BTreeMap<(u32, String), Vec<String>> {
        let mut out = BTreeMap::new();
        for (i, (kind, kind_flag, name, vlen, next, _)) in self.types.iter().enumerate() {
            let id = i as u32 + 1;
            let kind = if *kind == KIND_ENUM64 {
                KIND_ENUM
            } else {
                *kind
            };
            let entry = match kind {
                _ if name.is_empty() => continue,
                KIND_STRUCT | KIND_UNION | KIND_ENUM => {
                    let mut lines = vec![format!("size {next} vlen {vlen} kind_flag {kind_flag}")];
                    lines.extend(self.body(id));
                    lines
                }
                KIND_TYPEDEF => vec![self.describe(*next)],
                KIND_FUNC => vec![self.describe(*next)],
                _ => continue,
            };
            out.entry((kind, name.clone())).or_insert(entry);
        }
        out
    }
}

fn string(strings: &[u8], off: u32) -> String {
    let s = &strings[off as usize..];
    String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap()]).into_owned()
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM => "enum",
        KIND_ENUM64 => "enum64",
        KIND_TYPEDEF => "typedef",
        KIND_FUNC => "func",
        _ => "other",
    }
}

/// Whether `tool` runs; when it does not, says SKIPPED and fails under `CI=true`.
fn have(tool: &str, test: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    crate::testkit::skip(
        test,
        &format!("no {tool} (apt-get install clang gcc pahole)"),
    );
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sonde-dwarf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `pahole -J` on `object` (floats as FLOAT, like this converter), as raw BTF.
fn pahole(object: &Path) -> Vec<u8> {
    let copy = object.with_extension("pahole");
    std::fs::copy(object, &copy).unwrap();
    run(Command::new("pahole")
        .arg("--btf_gen_floats")
        .arg("-J")
        .arg(&copy));
    crate::btf::extract_btf_section(&std::fs::read(&copy).unwrap())
        .expect("pahole wrote no .BTF section")
}

/// Every named type pahole emits is here with the same kind, size, members and
/// member types; functions have the same prototypes.
fn assert_same_as_pahole(object: &Path) {
    let ours = dwarf_to_btf(&std::fs::read(object).unwrap()).unwrap();
    aya::Btf::parse(&ours, aya::Endianness::default()).expect("aya rejects the converted BTF");
    let theirs = Parsed::new(&pahole(object)).named();
    let ours = Parsed::new(&ours).named();
    assert!(
        theirs.len() > 20,
        "pahole found only {} named types",
        theirs.len()
    );
    let mut differences = Vec::new();
    for (key, want) in &theirs {
        match ours.get(key) {
            Some(got) if got == want => {}
            got => differences.push(format!(
                "{} {}:\n  pahole: {want:?}\n  ours:   {got:?}",
                kind_name(key.0),
                key.1
            )),
        }
    }
    assert!(
        differences.is_empty(),
        "{}: {}",
        object.display(),
        differences.join("\n")
    );
}

#[test]
fn converts_like_pahole_with_clang_and_gcc_dwarf_4_and_5() {
    let test = "converts_like_pahole_with_clang_and_gcc_dwarf_4_and_5";
    if !have("pahole", test) {
        return;
    }
    let dir = temp_dir("compilers");
    let mut compared = 0;
    for cc in ["clang", "gcc"] {
        if !have(cc, test) {
            continue;
        }
        for version in ["-gdwarf-4", "-gdwarf-5"] {
            let object = dir.join(format!("types-{cc}{version}.o"));
            // runs: gcc clang
            run(Command::new(cc)
                .args(["-g", version, "-O0", "-c", "-o"])
                .arg(&object)
                .arg(Path::new(TESTDATA).join("types.c")));
            assert_same_as_pahole(&object);
            compared += 1;
        }
    }
    assert!(compared > 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn keeps_each_named_type_once_across_units() {
    let test = "keeps_each_named_type_once_across_units";
    if !have("clang", test) || !have("pahole", test) {
        return;
    }
    let dir = temp_dir("units");
    let lib = dir.join("both.so");
    run(Command::new("clang")
        .args(["-g", "-O0", "-shared", "-fPIC", "-nostdlib", "-o"])
        .arg(&lib)
        .arg(Path::new(TESTDATA).join("types.c"))
        .arg(Path::new(TESTDATA).join("more.c")));
    assert_same_as_pahole(&lib);

    let raw = dwarf_to_btf(&std::fs::read(&lib).unwrap()).unwrap();
    assert!(
        dwarf_file_to_btf(&lib).unwrap() == raw,
        "reading section by section gives other BTF"
    );
    let ours = Parsed::new(&raw);
    for (kind, name) in [
        (KIND_STRUCT, "list_head"),
        (KIND_STRUCT, "flags"),
        (KIND_ENUM, "color"),
        (KIND_INT, "int"),
    ] {
        let copies = ours
            .types
            .iter()
            .filter(|t| t.0 == kind && t.2 == name)
            .count();
        assert_eq!(
            copies,
            1,
            "{} {name} is in the BTF {copies} times",
            kind_name(kind)
        );
    }
    let only_here = ours.named()[&(KIND_STRUCT, "only_here".to_string())].clone();
    assert!(only_here.contains(&"cmp @192:0 ptr -> fn(ptr -> const struct only_here, ptr -> const struct only_here) -> int".to_string()), "{only_here:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn says_what_is_missing() {
    assert!(matches!(
        dwarf_to_btf(b"not an elf"),
        Err(DwarfError::Elf(_))
    ));
    let test = "says_what_is_missing";
    if !have("clang", test) {
        return;
    }
    let dir = temp_dir("nodebug");
    let object = dir.join("plain.o");
    run(Command::new("clang")
        .args(["-O0", "-c", "-o"])
        .arg(&object)
        .arg(Path::new(TESTDATA).join("types.c")));
    let err = dwarf_to_btf(&std::fs::read(&object).unwrap()).unwrap_err();
    assert!(matches!(err, DwarfError::NoDebugInfo), "{err}");
    assert!(err.to_string().contains("-g"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
