use super::csource::{CDecl, CSources, SOURCES};
use super::*;
use crate::bpf::decode::FieldShape;

fn parsed(text: &str) -> CSources {
    let mut s = CSources::default();
    s.parse(text);
    s
}

#[test]
fn comments_give_unit_and_meaning() {
    let s = parsed(
        "/*\n * A block comment, closed alone on its line.\n */\n\
         typedef __u64 sonde_ktime;\t/* [ns, CLOCK_MONOTONIC] bpf_ktime_get_ns() */\n\
         \n\
         /* One event,\n * with two lines. */\n\
         struct ev {\n\
         \tsonde_ktime ts;\n\
         \t__u64 latency_ns;\t/* [ns] issued -> completed,\n\
         \t\t\t\t * both ends included */\n\
         \tchar comm[16];\n\
         \t__u32 pid;\t\t/* no unit said */\n\
         \tunsigned int flag : 3;\t/* [none] bits */\n\
         };\n\
         /* Starts. */\n\
         struct {\n\
         \t__uint(type, BPF_MAP_TYPE_HASH);\n\
         \t__type(key, __u64);\t/* [none] socket address */\n\
         \t__type(value, __u64);\t/* [ns] start */\n\
         } start SEC(\".maps\");\n",
    );
    assert_eq!(
        s.typedefs["sonde_ktime"],
        CDecl {
            ctype: "__u64".into(),
            unit: Some("ns, CLOCK_MONOTONIC".into()),
            about: "bpf_ktime_get_ns()".into(),
        }
    );
    assert_eq!(s.structs["ev"].about, "One event, with two lines.");
    let ev = &s.structs["ev"].fields;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ts", "latency_ns", "comm", "pid", "flag"]);
    assert_eq!(ev[0].1.ctype, "sonde_ktime");
    assert_eq!(ev[0].1.unit, None);
    assert_eq!(ev[1].1.unit.as_deref(), Some("ns"));
    assert_eq!(ev[1].1.about, "issued -> completed, both ends included");
    assert_eq!(ev[2].1.ctype, "char");
    assert_eq!(ev[3].1.unit, None);
    assert_eq!(ev[3].1.about, "no unit said");
    assert_eq!(ev[4].1.unit.as_deref(), Some("none"));
    let start = &s.maps["start"];
    assert_eq!(start.about, "Starts.");
    assert_eq!(start.key.as_ref().unwrap().about, "socket address");
    assert_eq!(start.value.as_ref().unwrap().unit.as_deref(), Some("ns"));
}

#[test]
fn a_field_takes_its_typedefs_unit_unless_it_has_its_own() {
    let s = parsed(
        "typedef __u64 sonde_ktime;\t/* [ns, CLOCK_MONOTONIC] since boot */\n\
         typedef sonde_ktime later;\n",
    );
    let shape = |ty: &str| FieldShape {
        name: "x".into(),
        ty: ty.into(),
        pod_key: None,
        children: Vec::new(),
    };
    let decl = |ctype: &str, unit: Option<&str>| CDecl {
        ctype: ctype.into(),
        unit: unit.map(str::to_string),
        about: String::new(),
    };
    let f = s.field("ts".into(), &shape("int (u64)"), &decl("later", None));
    assert_eq!(f.unit.as_deref(), Some("ns, CLOCK_MONOTONIC"));
    assert_eq!(f.about, "since boot");
    let f = s.field("t".into(), &shape("int (u64)"), &decl("later", Some("ms")));
    assert_eq!(f.unit.as_deref(), Some("ms"));
    let f = s.field("k".into(), &shape("enum: A | B"), &decl("enum k", None));
    assert_eq!(f.unit.as_deref(), Some("none"));
    let f = s.field("n".into(), &shape("int (u32)"), &decl("__u32", None));
    assert_eq!(f.unit, None, "a plain integer has no implicit unit");
}

#[test]
fn every_program_has_its_sources_embedded() {
    let stems: Vec<&str> = SOURCES.iter().map(|(s, _, _)| *s).collect();
    let mut programs = catalog::names();
    programs.sort_unstable();
    assert_eq!(
        stems, programs,
        "SOURCES and the catalog list different programs"
    );
}

/// Every field a built-in program gives a script has a unit (or says `none`) and
/// is declared in the C sources under the name the object has.
#[test]
fn every_field_of_every_program_has_a_unit() {
    let mut missing = Vec::new();
    for p in programs("all").unwrap() {
        let mut check = |place: String, fields: &[FieldRef]| {
            for f in fields {
                if f.unit.is_none() {
                    missing.push(format!("{} {place}: `{}` ({})", p.program, f.name, f.ty));
                }
            }
        };
        for r in &p.records {
            check(format!("struct {}", r.ty), &r.fields);
        }
        for m in &p.maps {
            if let (Some(k), Some(v)) = (&m.key, &m.value) {
                check(format!("map {} key {}", m.name, k.ty), &k.fields);
                check(format!("map {} value {}", m.name, v.ty), &v.fields);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a unit: give each a trailing `/* [unit] meaning */` comment \
         (`[none]` when it has none) in kernel-progs:\n{}",
        missing.join("\n")
    );
}

#[test]
fn tcp_reset_reads_as_the_decoder_decodes() {
    let p = &programs("tcp_reset").unwrap()[0];
    let r = &p.records[0];
    assert_eq!(
        (r.map.as_str(), r.ty.as_str()),
        ("events", "tcp_reset_event")
    );
    assert!(
        r.about.contains("saddr/sport is the local end"),
        "{}",
        r.about
    );
    let f = |n: &str| r.fields.iter().find(|f| f.name == n).unwrap();
    assert!(f("saddr").ty.starts_with("ip address"), "{:?}", f("saddr"));
    assert_eq!(f("saddr").unit.as_deref(), Some("none"));
    assert!(f("ts").unit.as_deref().unwrap().contains("CLOCK_MONOTONIC"));
    assert_eq!(f("kind").ty, "enum: NOSOCK | ACTIVE | PROCESS | RECEIVE");
    // What each value means, from the enum's comments, by the decoded names.
    assert!(
        f("kind")
            .about
            .starts_with("NOSOCK: sent in reply to a segment that matched no socket; ACTIVE: "),
        "{}",
        f("kind").about
    );
    assert!(f("state").ty.starts_with("tcp state"));
    assert!(f("stack").ty.starts_with("kernel stack"));
    // The pod beside the netns, as `ev.pod`.
    let netns = r.fields.iter().position(|f| f.name == "netns").unwrap();
    assert_eq!(r.fields[netns + 1].name, "pod");
    // The same names a decoded record has.
    let types = ObjectTypes::parse(catalog::find("tcp_reset").unwrap().object).unwrap();
    let d = types.record_decoder("events").unwrap();
    let mut want: Vec<String> = d.layout().into_iter().map(|(n, _, _)| n).collect();
    want.extend(d.pod_keys());
    want.sort();
    let mut got: Vec<String> = r.fields.iter().map(|f| f.name.clone()).collect();
    got.sort();
    assert_eq!(got, want);

    let counts = p.maps.iter().find(|m| m.name == "counts").unwrap();
    assert_eq!(counts.kind, "LRU hash");
    assert_eq!(counts.max_entries, Some(4096));
    assert_eq!(counts.key.as_ref().unwrap().ty, "struct reset_key");
    let value = &counts.value.as_ref().unwrap().fields;
    assert_eq!(value.len(), 1);
    assert_eq!(value[0].name, "value");
    assert_eq!(value[0].unit.as_deref(), Some("count"));
    let events = p.maps.iter().find(|m| m.name == "events").unwrap();
    assert_eq!(events.kind, "ring buffer");
    assert_eq!(events.record.as_deref(), Some("tcp_reset_event"));
}

#[test]
fn unknown_program_names_the_known_ones() {
    let e = programs("tcp_rest").unwrap_err().to_string();
    assert!(e.contains("no kernel program `tcp_rest`"), "{e}");
    assert!(e.contains("tcp_reset"), "{e}");
}

/// docs/probes-reference.md is what the objects say. Regenerate it with
/// `SONDE_BLESS=1 cargo test -p sonde --lib reference` or
/// `sonde probes --fields all --markdown > docs/probes-reference.md`.
#[test]
fn docs_match_the_objects() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/probes-reference.md");
    let want = markdown(&programs("all").unwrap());
    if std::env::var_os("SONDE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "docs/probes-reference.md disagrees with the objects from line {}: regenerate it \
             with `SONDE_BLESS=1 cargo test -p sonde --lib docs_match_the_objects` \
             (or `sonde probes --fields all --markdown > docs/probes-reference.md`)\n\
             file:      {:?}\nobjects:   {:?}",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}
