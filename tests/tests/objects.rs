//! Object tests: every committed kernel object parses, has the programs its variants
//! attach and the maps its script reads, publishes decodable records with the fields
//! the built-in script uses, and agrees with the C headers it was built from.

use std::collections::BTreeMap;
use std::process::Command;

use sonde::bpf::catalog::{self, Hook, TcDirection};
use sonde::bpf::decode::{KnobKind, ObjectTypes};
use sonde::script::record::value_map;
use sonde_tests::{cannot_run, repo_root};

/// Program (function symbol) name → ELF section name.
fn program_sections(data: &[u8]) -> BTreeMap<String, String> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    let file = object::File::parse(data).expect("ELF object");
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter_map(|s| {
            let section = file.section_by_index(s.section_index()?).ok()?;
            Some((s.name().ok()?.to_string(), section.name().ok()?.to_string()))
        })
        .collect()
}

/// Compiles `c` for BPF the way kernel-progs/Makefile does and parses its BTF.
fn clang_bpf(
    c: &std::path::Path,
    o: &std::path::Path,
    includes: &[std::path::PathBuf],
) -> ObjectTypes {
    let mut cmd = Command::new("clang");
    cmd.args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-c"]);
    for dir in includes {
        cmd.arg("-I").arg(dir);
    }
    let out = cmd.arg(c).arg("-o").arg(o).output().unwrap();
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ObjectTypes::parse(&std::fs::read(o).unwrap()).unwrap()
}

#[test]
fn every_object_has_its_programs_maps_and_records() {
    for spec in catalog::PROGRAMS {
        let types =
            ObjectTypes::parse(spec.object).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        let sections = program_sections(spec.object);
        for v in spec.variants {
            for a in v.attach {
                let sec = sections.get(a.program).unwrap_or_else(|| {
                    panic!(
                        "{}: variant {} attaches `{}`, not in the object ({sections:?})",
                        spec.name, v.name, a.program
                    )
                });
                match a.hook {
                    Hook::Tracepoint { category, name } => {
                        assert_eq!(
                            sec,
                            &format!("tracepoint/{category}/{name}"),
                            "{}",
                            a.program
                        )
                    }
                    Hook::Kprobe { function } => {
                        assert_eq!(sec, &format!("kprobe/{function}"), "{}", a.program)
                    }
                    Hook::Kretprobe { function } => {
                        assert_eq!(sec, &format!("kretprobe/{function}"), "{}", a.program)
                    }
                    Hook::RawTracepoint { name } => {
                        assert_eq!(sec, &format!("raw_tp/{name}"), "{}", a.program)
                    }
                    Hook::BtfTracepoint { name } => {
                        assert_eq!(sec, &format!("tp_btf/{name}"), "{}", a.program)
                    }
                    Hook::Tc { direction } => {
                        let side = match direction {
                            TcDirection::Ingress => "ingress",
                            TcDirection::Egress => "egress",
                        };
                        assert_eq!(sec, &format!("classifier/{side}"), "{}", a.program)
                    }
                }
            }
        }
        // No program of the object is left out of every variant.
        for program in sections.keys() {
            assert!(
                spec.variants
                    .iter()
                    .any(|v| v.attach.iter().any(|a| a.program == program.as_str())),
                "{}: program `{program}` is in no variant",
                spec.name
            );
        }
        // Every ring buffer decodes; every program reports something per event or
        // per threshold crossing through `events`.
        assert!(
            types.record_maps().contains(&"events".to_string()),
            "{}: no events ring buffer",
            spec.name
        );
        for map in types.record_maps() {
            types
                .record_decoder(&map)
                .unwrap_or_else(|e| panic!("{}: ring buffer {map}: {e}", spec.name));
        }
        // In-kernel counters, where a program keeps them, are u64 per key with the
        // network namespace in the key (pod labels come from it).
        if let Ok((key, value)) = types.map_decoders("counts") {
            assert_eq!(value.size(), 8, "{}: counts values are u64", spec.name);
            assert!(
                key.size() >= 8,
                "{}: counts key has netns and more",
                spec.name
            );
        }
        let knobs = types.knobs();
        assert!(
            knobs.iter().any(|k| k.name == "sonde_wakeup_bytes"),
            "{}: knob sonde_wakeup_bytes missing (sonde.h): {knobs:?}",
            spec.name
        );
        // Knobs that scripts set from bool params are bools in the kernel.
        for knob in ["emit_events", "stack"] {
            if let Some(k) = knobs.iter().find(|k| k.name == knob) {
                assert_eq!(k.kind, KnobKind::Bool, "{}: knob {knob}", spec.name);
            }
        }
    }
}

/// The fields each built-in script reads from its events (`ev.<field>`) and map
/// keys (`<entry>.key.<field>`) exist in the object's records: the event record, and
/// the key of one of the maps the script reads (`bpf::map("<map>")`), with the
/// decoded kinds the script expects. The fields are read from `scripts/<program>.rhai`.
#[test]
fn records_carry_the_fields_scripts_read() {
    let env = sonde::bpf::decode::DecodeEnv::offline(std::sync::Arc::new(
        sonde::pods::HostResolver::with_host_netns(1, "n"),
    ));
    for spec in catalog::PROGRAMS {
        let program = spec.name;
        let path = repo_root().join(format!("scripts/{program}.rhai"));
        let script = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{program}: its script {}: {e}", path.display()));
        let types = ObjectTypes::parse(spec.object).unwrap();
        let rec = types.record_decoder("events").unwrap();
        let ev = value_map(rec.decode(&vec![0u8; rec.size()], &env).unwrap());
        let event_fields = script_fields(&script, "ev.");
        assert!(
            !event_fields.is_empty(),
            "{program}: its script reads no event field"
        );
        for f in &event_fields {
            assert!(
                ev.contains_key(f.as_str()),
                "{program}: event lacks `{f}`: {ev:?}"
            );
        }
        if ev.contains_key("saddr") {
            assert!(ev["saddr"].is_string(), "addresses decode to strings");
        }
        if ev.contains_key("stack") {
            assert!(ev["stack"].is_array(), "stack ids decode to frame arrays");
        }
        let keys: Vec<rhai::Map> = script_maps(&script)
            .iter()
            .filter_map(|map| types.map_decoders(map).ok())
            .map(|(key, _)| value_map(key.decode(&vec![0u8; key.size()], &env).unwrap()))
            .collect();
        for f in script_fields(&script, ".key.") {
            assert!(
                keys.iter().any(|k| k.contains_key(f.as_str())),
                "{program}: no key of the maps its script reads has `{f}`: {keys:?}"
            );
        }
    }
}

/// Field names a script reads after `prefix` (`ev.saddr` → `saddr`), method calls
/// (`ev.to_map()`) excluded.
fn script_fields(script: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (at, _) in script.match_indices(prefix) {
        let before = script[..at].chars().next_back();
        if prefix.starts_with(char::is_alphabetic)
            && before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        {
            continue; // `prev.x`, not `ev.x`
        }
        let rest = &script[at + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !rest[name.len()..].starts_with('(') {
            out.insert(name);
        }
    }
    out
}

/// The maps a script reads with `bpf::map("<map>")`.
fn script_maps(script: &str) -> Vec<String> {
    script
        .match_indices("bpf::map(\"")
        .filter_map(|(at, m)| {
            let rest = &script[at + m.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// Compiles each program's header on its own with clang and compares every record
/// struct's size and field offsets with the committed object's BTF: a header edited
/// without rebuilding the object fails here.
#[test]
fn record_layouts_match_the_headers() {
    if Command::new("clang").arg("--version").output().is_err() {
        cannot_run(
            "record_layouts_match_the_headers",
            "clang is not installed (apt-get install clang)",
        );
        return;
    }
    let root = repo_root().join("kernel-progs");
    let dir = std::env::temp_dir().join(format!("sonde-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for spec in catalog::PROGRAMS {
        let program = spec.name;
        let header = root.join(format!("src/{program}.h"));
        let structs = header_structs(&std::fs::read_to_string(&header).unwrap());
        assert!(!structs.is_empty(), "{}: no struct", header.display());
        let c = dir.join(format!("{program}.c"));
        let mut src = format!("#include \"{program}.h\"\n");
        for s in &structs {
            src.push_str(&format!("struct {s} __layout_{s};\n"));
        }
        std::fs::write(&c, src).unwrap();
        let o = dir.join(format!("{program}.o"));
        let fresh = clang_bpf(&c, &o, &[root.join("include"), root.join("src")]);
        let committed = ObjectTypes::parse(spec.object).unwrap();
        for s in &structs {
            let a = fresh.decoder_by_name(s).unwrap();
            let b = committed
                .decoder_by_name(s)
                .unwrap_or_else(|e| panic!("{program}: {e}"));
            assert_eq!(
                a.size(),
                b.size(),
                "{program}: struct {s} size differs: rebuild with make -C kernel-progs"
            );
            assert_eq!(
                a.layout(),
                b.layout(),
                "{program}: struct {s} fields differ: rebuild with make -C kernel-progs"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The structs a header defines (`struct name {` at the start of a line).
fn header_structs(header: &str) -> Vec<String> {
    header
        .lines()
        .filter_map(|l| l.strip_prefix("struct ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect()
}

/// The decoder is general: nested structs, arrays, char arrays, unions, enums,
/// bitfields and the well-known typedefs, all read by name from BTF that clang made
/// from a struct written here.
#[test]
fn decoder_handles_every_btf_shape() {
    if Command::new("clang").arg("--version").output().is_err() {
        cannot_run(
            "decoder_handles_every_btf_shape",
            "clang is not installed (apt-get install clang)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("sonde-shapes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("shapes.c");
    std::fs::write(
        &c,
        r#"
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;
typedef int __s32; typedef unsigned long long __u64;
typedef __u8 sonde_ip[16]; typedef __u32 sonde_netns; typedef __u8 sonde_tcp_state;
typedef __u8 sonde_l4proto; typedef __u16 sonde_ethproto;
enum color { COLOR_RED = 1, COLOR_BLUE = 7 };
struct inner { __u16 a; __s32 b; };
struct shapes {
    struct inner in;            /* nested struct */
    __u32 arr[3];               /* array */
    char name[8];               /* char array -> string */
    union { __u32 u32v; __u8 bytes[4]; } un;   /* union: every alternative */
    enum color color;           /* enum -> name without the enum's prefix */
    __u32 low : 4, high : 12;   /* bitfields */
    sonde_ip addr;
    sonde_netns netns;
    sonde_tcp_state state;
    sonde_l4proto proto;
    sonde_ethproto eth;
    struct { __u32 anon_a; };  /* anonymous member: flattened */
};
struct shapes x;
"#,
    )
    .unwrap();
    let types = clang_bpf(&c, &dir.join("shapes.o"), &[]);
    let d = types.decoder_by_name("shapes").unwrap();
    let layout: BTreeMap<String, usize> =
        d.layout().into_iter().map(|(n, off, _)| (n, off)).collect();
    let mut b = vec![0u8; d.size()];
    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        b[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut b, layout["in"], &5u16.to_ne_bytes());
    put(&mut b, layout["in"] + 4, &(-3i32).to_ne_bytes());
    for (i, v) in [10u32, 20, 30].iter().enumerate() {
        put(&mut b, layout["arr"] + 4 * i, &v.to_ne_bytes());
    }
    put(&mut b, layout["name"], b"sonde\0\0\0");
    put(&mut b, layout["un"], &0x04030201u32.to_ne_bytes());
    put(&mut b, layout["color"], &7u32.to_ne_bytes());
    // low = 0xA (4 bits), high = 0x123 (12 bits), packed little-endian after `color`.
    let bits: u32 = 0xA | (0x123 << 4);
    put(&mut b, layout["color"] + 4, &bits.to_ne_bytes());
    let mut ip = [0u8; 16];
    ip[10] = 0xff;
    ip[11] = 0xff;
    ip[12..].copy_from_slice(&[192, 168, 1, 9]);
    put(&mut b, layout["addr"], &ip);
    put(&mut b, layout["netns"], &4026532001u32.to_ne_bytes());
    put(&mut b, layout["state"], &[1]);
    put(&mut b, layout["proto"], &[17]);
    put(&mut b, layout["eth"], &0x86ddu16.to_ne_bytes());
    put(&mut b, layout["anon_a"], &99u32.to_ne_bytes());

    let env = sonde::bpf::decode::DecodeEnv::offline(std::sync::Arc::new(
        sonde::pods::HostResolver::with_host_netns(1, "n"),
    ));
    let m = value_map(d.decode(&b, &env).unwrap());
    let get = |k: &str| {
        m.get(k)
            .unwrap_or_else(|| panic!("no {k} in {m:?}"))
            .clone()
    };
    let inner = get("in").cast::<rhai::Map>();
    assert_eq!(inner["a"].as_int().unwrap(), 5);
    assert_eq!(inner["b"].as_int().unwrap(), -3);
    let arr: Vec<i64> = get("arr")
        .cast::<rhai::Array>()
        .iter()
        .map(|v| v.as_int().unwrap())
        .collect();
    assert_eq!(arr, vec![10, 20, 30]);
    assert_eq!(get("name").to_string(), "sonde");
    let un = get("un").cast::<rhai::Map>();
    assert_eq!(un["u32v"].as_int().unwrap(), 0x04030201);
    assert_eq!(
        un["bytes"].clone().cast::<rhai::Array>()[0]
            .as_int()
            .unwrap(),
        1
    );
    assert_eq!(get("color").to_string(), "BLUE");
    assert_eq!(get("low").as_int().unwrap(), 0xA);
    assert_eq!(get("high").as_int().unwrap(), 0x123);
    assert_eq!(get("addr").to_string(), "192.168.1.9");
    assert_eq!(get("netns").as_int().unwrap(), 4026532001);
    assert_eq!(
        get("pod").cast::<rhai::Map>()["name"].to_string(),
        "netns:4026532001"
    );
    assert_eq!(get("state").to_string(), "ESTABLISHED");
    assert_eq!(get("proto").to_string(), "UDP");
    assert_eq!(get("eth").to_string(), "IPv6");
    assert_eq!(get("anon_a").as_int().unwrap(), 99);
    std::fs::remove_dir_all(&dir).ok();
}
