//! End to end: `sonde probes --fields`, the reference of what each kernel program
//! gives a script, read from the real binary as a person or a tool reads it
//! (unprivileged: it only reads the embedded objects), and held against a real
//! record a script receives (root).

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};

use sonde_tests::run::{finish, start};
use sonde_tests::{connect_refused, repo_root, require_root, sonde_bin, sonde_ok, NetnsThread};

fn sonde(args: &[&str]) -> Output {
    Command::new(sonde_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run sonde")
}

/// The row of `field` in the record table: its words, after the name.
fn row<'a>(text: &'a str, field: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(field))
        .unwrap_or_else(|| panic!("no `{field}` row in:\n{text}"));
    line.split_whitespace().skip(1).collect()
}

#[test]
fn fields_of_tcp_reset_read_as_a_table_with_types_and_units() {
    let text = sonde_ok(&["probes", "--fields", "tcp_reset"]);
    assert!(text.starts_with("tcp_reset\n"), "{text}");
    let record = text
        .split("\n  map ")
        .next()
        .unwrap()
        .split("record `events` (struct tcp_reset_event)")
        .nth(1)
        .unwrap_or_else(|| panic!("no events record in:\n{text}"));
    let saddr = row(record, "saddr");
    assert_eq!(saddr[..2], ["ip", "address"], "{saddr:?}");
    assert!(saddr.contains(&"none"), "{saddr:?}");
    let ts = row(record, "ts").join(" ");
    assert!(ts.starts_with("int (u64) ns, CLOCK_MONOTONIC"), "{ts}");
    let kind = row(record, "kind").join(" ");
    assert!(
        kind.starts_with("enum: NOSOCK | ACTIVE | PROCESS | RECEIVE"),
        "{kind}"
    );
    assert!(row(record, "pod").join(" ").starts_with("pod (map"));
    assert!(!text.contains("(not documented)"), "{text}");
    // Its maps, with kinds, keys and values.
    assert!(
        text.contains("\n  map `counts`: LRU hash, 4096 entries\n"),
        "{text}"
    );
    assert!(text.contains("    key (struct reset_key)\n"), "{text}");
    assert!(text.contains("\n  map `events`: ring buffer, "), "{text}");
}

#[test]
fn fields_as_json_list_every_program_with_types_and_units() {
    let out = sonde_ok(&["probes", "--fields", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let programs = json["programs"].as_array().unwrap();
    let listed = sonde_ok(&["probes", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|p| p["program"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(programs),
        names(listed["programs"].as_array().unwrap()),
        "--fields with no name covers every program `sonde probes` lists"
    );
    let mut fields = 0;
    for p in programs {
        for r in p["records"].as_array().unwrap() {
            for f in r["fields"].as_array().unwrap() {
                for key in ["name", "type", "unit"] {
                    assert!(f[key].is_string(), "{} {}: {f}", p["program"], r["type"]);
                }
                fields += 1;
            }
        }
    }
    assert!(fields > 100, "only {fields} record fields");
    let tcp_reset = programs
        .iter()
        .find(|p| p["program"] == "tcp_reset")
        .unwrap();
    let record = &tcp_reset["records"][0];
    assert_eq!(record["map"], "events");
    assert_eq!(record["type"], "tcp_reset_event");
    let field = |n: &str| {
        record["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == n)
            .unwrap_or_else(|| panic!("no field {n}"))
            .clone()
    };
    assert!(field("saddr")["type"]
        .as_str()
        .unwrap()
        .starts_with("ip address"));
    assert_eq!(field("ts")["unit"], "ns, CLOCK_MONOTONIC");
    let counts = tcp_reset["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "counts")
        .unwrap();
    assert_eq!(counts["kind"], "LRU hash");
    assert_eq!(counts["value"]["fields"][0]["unit"], "count");
    let lifetime = programs
        .iter()
        .find(|p| p["program"] == "tcp_state")
        .unwrap()["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "lifetime_sum")
        .unwrap()
        .clone();
    assert_eq!(lifetime["value"]["fields"][0]["unit"], "ms");
}

#[test]
fn markdown_is_the_committed_reference() {
    let out = sonde_ok(&["probes", "--fields", "all", "--markdown"]);
    let doc = std::fs::read_to_string(repo_root().join("docs/probes-reference.md")).unwrap();
    assert!(
        out == doc,
        "docs/probes-reference.md is stale: sonde probes --fields all --markdown > \
         docs/probes-reference.md"
    );
}

#[test]
fn an_unknown_program_is_named_with_the_known_ones() {
    let out = sonde(&["probes", "--fields", "tcp_rest"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no kernel program `tcp_rest`"), "{err}");
    assert!(err.contains("tcp_reset"), "{err}");
}

/// What `type_of` says in a script for a value the reference describes as `ty`.
fn script_type(ty: &str) -> &'static str {
    if ty.starts_with("int") || ty.contains("(int)") {
        "i64"
    } else if ty.starts_with("array") || ty.starts_with("kernel stack") {
        "array"
    } else if ty == "map" || ty.starts_with("pod (map") {
        "map"
    } else if ty == "bool" {
        "bool"
    } else if ty.starts_with("float") {
        "f64"
    } else {
        "string"
    }
}

/// A reset a script really receives has exactly the fields the reference lists,
/// each of the type it says.
#[test]
fn a_real_record_has_the_fields_and_types_the_reference_lists() {
    if !require_root("a_real_record_has_the_fields_and_types_the_reference_lists") {
        return;
    }
    let reference = sonde_ok(&["probes", "--fields", "tcp_reset", "--json"]);
    let reference: serde_json::Value = serde_json::from_str(&reference).unwrap();
    let mut want: Vec<String> = reference["programs"][0]["records"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            format!("{name}:{}", script_type(f["type"].as_str().unwrap()))
        })
        .collect();
    want.sort();

    let script = r#"const PROBE = "tcp_reset";
fn on_event(ev) {
    let m = ev.to_map();
    let fields = [];
    for k in m.keys() { fields.push(k + ":" + type_of(m[k])); }
    print("FIELDS " + ev.pod.name + " " + fields.reduce(|acc, f| acc + " " + f, ""));
}"#;
    let run = start(&["run", "-e", script, "--for", "3s", "--quiet"]);
    let ns = NetnsThread::new().unwrap();
    let port = ns.run(|| {
        TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    ns.run(move || connect_refused(SocketAddr::from(([127, 0, 0, 1], port)), 1));
    let (out, err) = finish(run);
    let pod = format!("FIELDS netns:{} ", ns.inode);
    let line = out
        .lines()
        .find(|l| l.starts_with(&pod))
        .unwrap_or_else(|| panic!("no reset of the test's namespace:\n{out}\n{err}"));
    let mut got: Vec<String> = line[pod.len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(
        got, want,
        "a real record vs `sonde probes --fields tcp_reset`"
    );
}
