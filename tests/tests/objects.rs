//! Object tests: every committed kernel object parses, has the programs its variants
//! attach and the maps its script reads, publishes decodable records with the fields
//! the built-in script uses, and agrees with the C headers it was built from.

use std::collections::BTreeMap;
use std::process::Command;

use sonde::bpf::catalog::{self, Hook};
use sonde::bpf::decode::{KnobKind, ObjectTypes};
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
                }
            }
        }
        assert!(
            types.record_maps().contains(&"events".to_string()),
            "{}: no events ring buffer",
            spec.name
        );
        types.record_decoder("events").unwrap();
        let (key, value) = types
            .map_decoders("counts")
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert_eq!(value.size(), 8, "{}: counts values are u64", spec.name);
        assert!(
            key.size() >= 8,
            "{}: counts key has netns and more",
            spec.name
        );
        let knobs = types.knobs();
        for knob in ["emit_events", "stack", "sonde_wakeup_bytes"] {
            assert!(
                knobs.iter().any(|k| k.name == knob),
                "{}: knob {knob} missing: {knobs:?}",
                spec.name
            );
        }
        let stack = knobs.iter().find(|k| k.name == "stack").unwrap();
        assert_eq!(stack.kind, KnobKind::Bool);
    }
}

/// The fields each built-in script reads from its events and map keys exist in the
/// object's records, with the decoded kinds the script expects.
#[test]
fn records_carry_the_fields_scripts_read() {
    let env = sonde::bpf::decode::DecodeEnv::offline(std::sync::Arc::new(
        sonde::pods::HostResolver::with_host_netns(1, "n"),
    ));
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "tcp_reset",
            &[
                "netns", "pod", "kind", "saddr", "sport", "daddr", "dport", "state", "stack",
                "family",
            ],
            &["netns", "pod", "kind"],
        ),
        (
            "packet_loss",
            &[
                "netns", "pod", "reason", "protocol", "l4proto", "saddr", "sport", "daddr",
                "dport", "location", "stack",
            ],
            &["netns", "pod", "reason", "protocol"],
        ),
    ];
    for (program, event_fields, key_fields) in cases {
        let spec = catalog::find(program).unwrap();
        let types = ObjectTypes::parse(spec.object).unwrap();
        let rec = types.record_decoder("events").unwrap();
        let ev = rec.decode_map(&vec![0u8; rec.size()], &env).unwrap();
        for f in *event_fields {
            assert!(ev.contains_key(*f), "{program}: event lacks `{f}`: {ev:?}");
        }
        assert!(ev["saddr"].is_string(), "addresses decode to strings");
        assert!(ev["stack"].is_array(), "stack ids decode to frame arrays");
        let (key, _) = types.map_decoders("counts").unwrap();
        let k = key.decode_map(&vec![0u8; key.size()], &env).unwrap();
        for f in *key_fields {
            assert!(
                k.contains_key(*f),
                "{program}: counts key lacks `{f}`: {k:?}"
            );
        }
    }
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
    let cases: &[(&str, &[&str])] = &[
        ("tcp_reset", &["tcp_reset_event", "reset_key"]),
        ("packet_loss", &["packet_loss_event", "drop_key"]),
    ];
    for (program, structs) in cases {
        let c = dir.join(format!("{program}.c"));
        let mut src = format!("#include \"{program}.h\"\n");
        for s in *structs {
            src.push_str(&format!("struct {s} __layout_{s};\n"));
        }
        std::fs::write(&c, src).unwrap();
        let o = dir.join(format!("{program}.o"));
        let out = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", "-c"])
            .arg("-I")
            .arg(root.join("include"))
            .arg("-I")
            .arg(root.join("src"))
            .arg(&c)
            .arg("-o")
            .arg(&o)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "clang: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fresh = ObjectTypes::parse(&std::fs::read(&o).unwrap()).unwrap();
        let committed = ObjectTypes::parse(catalog::find(program).unwrap().object).unwrap();
        for s in *structs {
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
