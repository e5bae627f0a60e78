//! Object tests: every committed kernel object parses, has the programs its variants
//! attach and the maps its script reads, publishes decodable records with the fields
//! the built-in script uses, and agrees with the C headers it was built from.

use std::collections::BTreeMap;
use std::process::Command;

use sonde::bpf::catalog::{self, Hook};
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
                    Hook::Tc { .. } => assert_eq!(sec, "classifier", "{}", a.program),
                }
            }
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
        (
            "virtcmd_latency",
            &[
                "netns",
                "pod",
                "latency_ns",
                "class",
                "cmd",
                "comm",
                "pid",
                "ok",
            ],
            &["netns", "pod", "class", "cmd", "slow"],
        ),
        // flow keeps no `counts` (its maps are `flows` and `peers`: tests/probe_flow.rs).
        (
            "flow",
            &[
                "netns", "pod", "saddr", "daddr", "sport", "dport", "dir", "ifindex", "bytes",
                "packets", "l4proto",
            ],
            &[],
        ),
        (
            "tcp_retrans",
            &[
                "netns", "pod", "saddr", "sport", "daddr", "dport", "state", "segs", "stack",
                "family",
            ],
            &["netns", "pod", "family", "state"],
        ),
        (
            "tcp_state",
            &[
                "netns",
                "pod",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "reason",
                "err",
                "elapsed_ns",
                "stack",
                "family",
            ],
            &["netns", "pod", "oldstate", "newstate"],
        ),
        // softirq is node-level: no `counts`, no pod (maps `hist` and `totals`).
        (
            "softirq",
            &["vec", "phase", "cpu", "latency_ns", "pid", "comm"],
            &[],
        ),
        (
            "bio_latency",
            &[
                "netns",
                "pod",
                "disk",
                "op",
                "bytes",
                "sector",
                "latency_ns",
                "error",
                "pid",
                "comm",
                "major",
                "minor",
            ],
            &["netns", "pod", "op", "slow", "disk"],
        ),
        (
            "socket_latency",
            &[
                "netns",
                "pod",
                "dir",
                "latency_ns",
                "l4proto",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "bytes",
                "pid",
                "comm",
            ],
            &["netns", "pod", "dir", "over"],
        ),
        (
            "sock_pressure",
            &[
                "netns",
                "pod",
                "kind",
                "l4proto",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "rmem_alloc",
                "rcvbuf",
                "wmem_queued",
                "sndbuf",
                "allocated",
            ],
            &["netns", "pod", "kind", "l4proto"],
        ),
        // netif_txlat and kernel_latency keep `hist` and `totals` (no `counts`).
        (
            "netif_txlat",
            &[
                "netns",
                "pod",
                "ifname",
                "stage",
                "latency_ns",
                "qdisc_ns",
                "len",
                "l4proto",
                "saddr",
                "sport",
                "daddr",
                "dport",
            ],
            &[],
        ),
        (
            "kernel_latency",
            &[
                "netns",
                "pod",
                "dir",
                "interval",
                "latency_ns",
                "mid_ns",
                "len",
                "l4proto",
                "saddr",
                "sport",
                "daddr",
                "dport",
            ],
            &[],
        ),
    ];
    for (program, event_fields, key_fields) in cases {
        let spec = catalog::find(program).unwrap();
        let types = ObjectTypes::parse(spec.object).unwrap();
        let rec = types.record_decoder("events").unwrap();
        let ev = value_map(rec.decode(&vec![0u8; rec.size()], &env).unwrap());
        for f in *event_fields {
            assert!(ev.contains_key(*f), "{program}: event lacks `{f}`: {ev:?}");
        }
        if ev.contains_key("saddr") {
            assert!(ev["saddr"].is_string(), "addresses decode to strings");
        }
        if ev.contains_key("stack") {
            assert!(ev["stack"].is_array(), "stack ids decode to frame arrays");
        }
        if key_fields.is_empty() {
            continue;
        }
        let (key, _) = types.map_decoders("counts").unwrap();
        let k = value_map(key.decode(&vec![0u8; key.size()], &env).unwrap());
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
        (
            "flow",
            &["flow_key", "flow_value", "peer_key", "flow_event"],
        ),
        (
            "virtcmd_latency",
            &["virtcmd_event", "virtcmd_key", "hist_key"],
        ),
        ("tcp_retrans", &["tcp_retrans_event", "retrans_key"]),
        (
            "tcp_state",
            &[
                "tcp_connect_event",
                "transition_key",
                "fail_key",
                "lifetime_key",
                "netns_key",
            ],
        ),
        (
            "softirq",
            &[
                "softirq_event",
                "softirq_hist_key",
                "softirq_key",
                "softirq_total",
            ],
        ),
        (
            "bio_latency",
            &[
                "bio_latency_event",
                "bio_hist_key",
                "bio_key",
                "bio_total",
                "bio_pod_key",
            ],
        ),
        (
            "socket_latency",
            &[
                "socket_latency_event",
                "sklat_hist_key",
                "sklat_key",
                "sklat_sum_key",
            ],
        ),
        ("sock_pressure", &["sock_pressure_event", "pressure_key"]),
        (
            "netif_txlat",
            &[
                "netif_txlat_event",
                "txlat_key",
                "txlat_hist_key",
                "txlat_total",
            ],
        ),
        (
            "kernel_latency",
            &["kernel_latency_event", "kl_key", "kl_hist_key", "kl_total"],
        ),
    ];
    for (program, structs) in cases {
        let c = dir.join(format!("{program}.c"));
        let mut src = format!("#include \"{program}.h\"\n");
        for s in *structs {
            src.push_str(&format!("struct {s} __layout_{s};\n"));
        }
        std::fs::write(&c, src).unwrap();
        let o = dir.join(format!("{program}.o"));
        let fresh = clang_bpf(&c, &o, &[root.join("include"), root.join("src")]);
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
