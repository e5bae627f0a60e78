//! Script tests: the built-in scripts fed synthetic events and replayed recordings,
//! with the metrics and events they produce checked. No kernel, no privileges.
//!
//! Replay tests compare `sonde run <script> --replay scripts/tests/<probe>.sonderec`
//! with `scripts/tests/<probe>.expected`. After an intended change of output, refresh
//! the expected files with `SONDE_BLESS=1 cargo test -p sonde-tests --test scripts`
//! and review the diff.

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Map};
use sonde::bpf::maps::MapReadError;
use sonde::bpf::value::Value;
use sonde::event::{Event, EventSink};
use sonde::metrics::Registry;
use sonde::script::{Instance, Limits, MapReader, Script, ScriptContext};
use sonde_tests::{repo_root, sonde_bin};

#[derive(Default)]
struct Capture(Mutex<Vec<Event>>);

impl EventSink for Capture {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// A map reader serving fixed entries, changeable between ticks.
#[derive(Default)]
struct FakeMaps(Mutex<Vec<(String, rhai::Array)>>);

impl FakeMaps {
    fn set(&self, map: &str, entries: Vec<(Map, i64)>) {
        let arr = entries
            .into_iter()
            .map(|(k, v)| {
                let mut e = Map::new();
                e.insert("key".into(), Dynamic::from_map(k));
                e.insert("value".into(), Dynamic::from_int(v));
                Dynamic::from_map(e)
            })
            .collect();
        let mut maps = self.0.lock().unwrap();
        maps.retain(|(n, _)| n != map);
        maps.push((map.to_string(), arr));
    }

    /// Like `set`, with any value (a struct value decodes to a map).
    fn set_values(&self, map: &str, entries: Vec<(Map, Dynamic)>) {
        let arr = entries
            .into_iter()
            .map(|(k, v)| {
                let mut e = Map::new();
                e.insert("key".into(), Dynamic::from_map(k));
                e.insert("value".into(), v);
                Dynamic::from_map(e)
            })
            .collect();
        let mut maps = self.0.lock().unwrap();
        maps.retain(|(n, _)| n != map);
        maps.push((map.to_string(), arr));
    }
}

impl MapReader for FakeMaps {
    fn entries(&self, map: &str) -> Result<rhai::Array, MapReadError> {
        let maps = self.0.lock().unwrap();
        maps.iter()
            .find(|(n, _)| n == map)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| MapReadError::NoSuchMap {
                map: map.to_string(),
                known: maps.iter().map(|(n, _)| n.clone()).collect(),
            })
    }
}

/// Names network namespaces for records decoded in these tests: inode 4026532001
/// is `shop/web-1`, 7 `data/db-0`, 8 `kube-system/dns-0`; anything else is the host.
struct TestPods;

impl sonde::pods::PodResolver for TestPods {
    fn by_netns(&self, inode: u32) -> Arc<sonde::pods::Pod> {
        let (name, namespace) = match inode {
            4026532001 => ("web-1", "shop"),
            7 => ("db-0", "data"),
            8 => ("dns-0", "kube-system"),
            _ => ("", ""),
        };
        Arc::new(sonde::pods::Pod {
            name: name.into(),
            namespace: namespace.into(),
            node: "node-1".into(),
            ..Default::default()
        })
    }
}

struct Harness {
    /// The script's kernel program (its file name), whose `events` records
    /// [`Harness::record`] writes, and that program's types (`None`: a source script).
    program: String,
    types: Option<sonde::bpf::decode::ObjectTypes>,
    env: Arc<sonde::bpf::decode::DecodeEnv>,
    inst: Instance,
    events: Arc<Capture>,
    maps: Arc<FakeMaps>,
    registry: Arc<Registry>,
}

fn harness(script: &str, overrides: &[(&str, &str)]) -> Harness {
    let path = repo_root().join("scripts").join(script);
    let source = std::fs::read_to_string(&path).unwrap();
    let limits = Limits::default();
    let compiled = Script::compile(&path.display().to_string(), &source, &limits).unwrap();
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = compiled.manifest().resolve_params(&overrides).unwrap();
    let events = Arc::new(Capture::default());
    let maps = Arc::new(FakeMaps::default());
    let registry = Arc::new(Registry::new("node-1"));
    // The scripts' own logic: every family for every pod (what is detail is
    // checked by tests/tests/cardinality.rs).
    registry.set_pod_detail(sonde::metrics::PodDetail {
        all: true,
        ..Default::default()
    });
    let ctx = ScriptContext {
        name: script.trim_end_matches(".rhai").to_string(),
        node: "node-1".into(),
        maps: maps.clone(),
        events: events.clone(),
        registry: registry.clone(),
        print: Arc::new(|_: &str| {}),
        pods: Arc::new(sonde::pods::HostResolver::with_host_netns(1, "node-1")),
    };
    let inst = Instance::start(&compiled, &params, ctx, &limits).unwrap();
    Harness {
        program: script.trim_end_matches(".rhai").to_string(),
        types: sonde::bpf::catalog::find(script.trim_end_matches(".rhai"))
            .map(|spec| sonde::bpf::decode::ObjectTypes::parse(spec.object).unwrap()),
        env: Arc::new(sonde::bpf::decode::DecodeEnv::offline(Arc::new(TestPods))),
        inst,
        events,
        maps,
        registry,
    }
}

impl Harness {
    /// A synthetic event handed to the script as the kernel would send it: `fields`
    /// written into a record of the program's `events` ring through the object's
    /// BTF (a field the object lacks, or a value its type cannot hold, fails the
    /// test), then decoded and read by the script like a ring buffer record.
    fn record(&mut self, fields: &[(&str, Value)]) {
        let types = self.types.as_ref().expect("a script with a kernel program");
        let dec = types.record_decoder("events").unwrap();
        let bytes = dec
            .encode_fields(fields, &self.env)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program));
        self.inst.on_record(dec.record(&bytes, &self.env).unwrap());
    }

    /// A counter map of the program as the kernel would hold it: each entry's key
    /// fields written into the map's key type and its count into the value type
    /// through the object's BTF, then read back by the real map decoder, so what
    /// the script gets from `bpf::map(map)` is what a loaded program gives.
    fn counts(&self, map: &str, entries: &[(Vec<(&str, Value)>, u64)]) {
        let types = self.types.as_ref().expect("a script with a kernel program");
        let (key, value) = types.map_decoders(map).unwrap();
        let raw: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, n)| {
                let kb = key
                    .encode_fields(k, &self.env)
                    .unwrap_or_else(|e| panic!("{}.{map} key: {e}", self.program));
                let vb = value
                    .encode(&Value::Uint(*n), &self.env)
                    .unwrap_or_else(|e| panic!("{}.{map} value: {e}", self.program));
                (kb, vb)
            })
            .collect();
        let layout = sonde::bpf::maps::Layout {
            key_size: key.size(),
            value_size: value.size(),
            per_cpu: None,
        };
        let decoded =
            sonde::bpf::maps::decode_entries(&layout, Some(&key), Some(&value), &raw, &self.env)
                .unwrap();
        let mut maps = self.maps.0.lock().unwrap();
        maps.retain(|(n, _)| n != map);
        maps.push((
            map.to_string(),
            sonde::script::record::entries_array(decoded),
        ));
    }
}

fn pod(name: &str, namespace: &str) -> Dynamic {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("namespace".into(), namespace.into());
    m.insert("node".into(), "node-1".into());
    Dynamic::from_map(m)
}

fn map(pairs: &[(&str, Dynamic)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), v.clone()))
        .collect()
}

fn metric_line(registry: &Registry, prefix: &str) -> Vec<String> {
    registry
        .render_prometheus()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn tcp_reset_events_read_like_kubeskoop() {
    let mut h = harness("tcp_reset.rhai", &[]);
    // Real record bytes: the decoder names the kind and state, formats the
    // addresses and names the pod from the netns field.
    h.record(&[
        ("netns", Value::Uint(4026532001)),
        ("kind", Value::Str("NOSOCK".into())),
        ("saddr", Value::Str("10.1.2.3".into())),
        ("sport", Value::Uint(443)),
        ("daddr", Value::Str("10.1.9.8".into())),
        ("dport", Value::Uint(33488)),
        ("state", Value::Str("CLOSE".into())),
        ("family", Value::Uint(2)),
        ("stack", Value::Int(-1)),
    ]);
    // Stack frames come from the kernel's stack map: this one is a decoded map.
    h.inst.on_event(map(&[
        ("netns", Dynamic::from_int(4026532001)),
        ("pod", pod("web-1", "shop")),
        ("kind", "ACTIVE".into()),
        ("saddr", "fd00::1".into()),
        ("sport", Dynamic::from_int(5000)),
        ("daddr", "fd00::2".into()),
        ("dport", Dynamic::from_int(80)),
        ("state", "CLOSE".into()),
        ("family", Dynamic::from_int(10)),
        (
            "stack",
            Dynamic::from_array(vec![
                "tcp_send_active_reset+0x1".into(),
                "tcp_disconnect+0x2".into(),
            ]),
        ),
    ]));
    let events = h.events.0.lock().unwrap();
    let lines: Vec<String> = events.iter().map(|e| e.to_text()).collect();
    assert_eq!(
        lines,
        vec![
            "type=TCPRESET_NOSOCK pod=web-1 namespace=shop protocol=TCP saddr=10.1.2.3 sport=443 daddr=10.1.9.8 dport=33488 state=CLOSE",
            "type=TCPRESET_ACTIVE pod=web-1 namespace=shop protocol=TCP saddr=fd00::1 sport=5000 daddr=fd00::2 dport=80 state=CLOSE stacktrace:tcp_send_active_reset+0x1 tcp_disconnect+0x2",
        ]
    );
    assert_eq!(events[0].labels.node, "node-1");
    assert!(h.inst.errors().is_empty(), "{:?}", h.inst.errors());
}

#[test]
fn tcp_reset_counter_follows_the_kernel_counts() {
    let mut h = harness("tcp_reset.rhai", &[]);
    let key = |kind: &str| {
        vec![
            ("netns", Value::Uint(4026532001)),
            ("kind", Value::Str(kind.into())),
        ]
    };
    h.counts("counts", &[(key("NOSOCK"), 3), (key("RECEIVE"), 1)]);
    h.inst.on_tick();
    h.counts("counts", &[(key("NOSOCK"), 5), (key("RECEIVE"), 1)]);
    h.inst.on_tick();
    let lines = metric_line(&h.registry, "sonde_tcp_reset_segments_total{");
    assert!(
        lines.iter().any(|l| l.contains("pod=\"web-1\"")
            && l.contains("kind=\"NOSOCK\"")
            && l.ends_with(" 5")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kind=\"RECEIVE\"") && l.ends_with(" 1")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.contains("node=\"node-1\"")),
        "{lines:?}"
    );
}

#[test]
fn packet_loss_counter_by_reason_and_protocol() {
    let mut h = harness("packet_loss.rhai", &[]);
    let key = |reason: &str, proto: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("", "")),
            ("reason", reason.into()),
            ("protocol", proto.into()),
        ])
    };
    h.maps.set(
        "counts",
        vec![
            (key("NO_SOCKET", "IPv4"), 12),
            (key("NETFILTER_DROP", "IPv6"), 2),
        ],
    );
    h.inst.on_tick();
    let lines = metric_line(&h.registry, "sonde_packet_loss_packets_total{");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("reason=\"NO_SOCKET\"")
        && l.contains("protocol=\"IPv4\"")
        && l.ends_with(" 12")));
    assert!(lines
        .iter()
        .any(|l| l.contains("reason=\"NETFILTER_DROP\"") && l.ends_with(" 2")));
    assert!(
        h.events.0.lock().unwrap().is_empty(),
        "no events unless emit_events"
    );
}

#[test]
fn packet_loss_event_fields() {
    let mut h = harness("packet_loss.rhai", &[("emit_events", "true")]);
    h.inst.on_event(map(&[
        ("netns", Dynamic::from_int(7)),
        ("pod", pod("db-0", "data")),
        ("reason", "NETFILTER_DROP".into()),
        ("protocol", "IPv4".into()),
        ("l4proto", "UDP".into()),
        ("family", Dynamic::from_int(2)),
        ("saddr", "10.0.0.1".into()),
        ("sport", Dynamic::from_int(53)),
        ("daddr", "10.0.0.2".into()),
        ("dport", Dynamic::from_int(5353)),
        ("location", "nf_hook_slow+0x9e".into()),
        ("stack", Dynamic::from_array(vec![])),
    ]));
    let events = h.events.0.lock().unwrap();
    assert_eq!(
        events[0].to_text(),
        "type=PACKETLOSS pod=db-0 namespace=data protocol=UDP saddr=10.0.0.1 sport=53 daddr=10.0.0.2 dport=5353 reason=NETFILTER_DROP location=nf_hook_slow+0x9e"
    );
}

/// A script that breaks on some events keeps running for the others; the errors
/// are counted by kind and exported.
#[test]
fn failing_handler_is_counted_and_the_next_call_works() {
    let limits = Limits::default();
    let src = r#"
        fn init(params) { this.n = 0; }
        fn on_event(ev) { if ev.bad { throw "boom"; } this.n += 1; count("ok", "x"); }
    "#;
    let script = Script::compile("inline.rhai", src, &limits).unwrap();
    let registry = Arc::new(Registry::new("n"));
    let ctx = ScriptContext {
        name: "inline".into(),
        node: "n".into(),
        maps: Arc::new(FakeMaps::default()),
        events: Arc::new(Capture::default()),
        registry: registry.clone(),
        print: Arc::new(|_: &str| {}),
        pods: Arc::new(sonde::pods::HostResolver::with_host_netns(1, "node-1")),
    };
    let mut inst = Instance::start(&script, &[], ctx, &limits).unwrap();
    for bad in [false, true, false, true, false] {
        inst.on_event(map(&[("bad", Dynamic::from_bool(bad))]));
    }
    assert_eq!(
        inst.errors().values().sum::<u64>(),
        2,
        "{:?}",
        inst.errors()
    );
    let text = registry.render_prometheus();
    assert!(
        text.contains("script=\"inline\",kind=\"runtime\"} 2"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sonde_ok_total") && l.ends_with(" 3")),
        "{text}"
    );
}

fn replay_golden(script: &str, recording: &str, expected: &str) {
    let root = repo_root();
    let out = std::process::Command::new(sonde_bin())
        .args(["run", script, "--replay", recording])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let path = root.join(expected);
    if std::env::var("SONDE_BLESS").is_ok() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "replay output differs from {expected} (SONDE_BLESS=1 to refresh)"
    );
}

#[test]
fn tcp_reset_replays_a_real_recording() {
    replay_golden(
        "scripts/tcp_reset.rhai",
        "scripts/tests/tcp_reset.sonderec",
        "scripts/tests/tcp_reset.expected",
    );
}

#[test]
fn packet_loss_replays_a_real_recording() {
    replay_golden(
        "scripts/packet_loss.rhai",
        "scripts/tests/packet_loss.sonderec",
        "scripts/tests/packet_loss.expected",
    );
}

/// `ev` is decoded on demand; it reads like a map: properties, indexing, `in`,
/// `keys()`, `to_map()`. Reading a field the record lacks is an error naming the
/// fields it has (a typo is caught, not read as `()`).
#[test]
fn lazy_records_read_like_maps() {
    use sonde::bpf::decode::{DecodeEnv, ObjectTypes};
    let spec = sonde::bpf::catalog::find("tcp_reset").unwrap();
    let types = ObjectTypes::parse(spec.object).unwrap();
    let dec = types.record_decoder("events").unwrap();
    let mut bytes = vec![0u8; dec.size()];
    let off = |name: &str| {
        dec.layout()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap()
            .1
    };
    bytes[off("sport")..off("sport") + 2].copy_from_slice(&443u16.to_ne_bytes());
    bytes[off("netns")..off("netns") + 4].copy_from_slice(&4026532001u32.to_ne_bytes());
    bytes[off("stack")..off("stack") + 4].copy_from_slice(&(-1i32).to_ne_bytes());
    let env = Arc::new(DecodeEnv::offline(Arc::new(
        sonde::pods::HostResolver::with_host_netns(1, "n"),
    )));
    let record = dec.record(&bytes, &env).unwrap();

    let limits = Limits::default();
    let src = r#"
        fn on_event(ev) {
            print(`sport=${ev.sport} idx=${ev["sport"]} pod=${ev.pod.name} kind=${ev.kind}`);
            print(`has_stack=${"stack" in ev} missing=${"no_such_field" in ev}`);
            print(`fields=${ev.to_map().len()} keys=${ev.keys().len()}`);
        }
    "#;
    let script = Script::compile("lazy.rhai", src, &limits).unwrap();
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = printed.clone();
    let ctx = ScriptContext {
        name: "lazy".into(),
        node: "n".into(),
        maps: Arc::new(FakeMaps::default()),
        events: Arc::new(Capture::default()),
        registry: Arc::new(Registry::new("n")),
        print: Arc::new(move |s: &str| p.lock().unwrap().push(s.to_string())),
        pods: Arc::new(sonde::pods::HostResolver::with_host_netns(1, "node-1")),
    };
    let mut inst = Instance::start(&script, &[], ctx, &limits).unwrap();
    inst.on_record(record.clone());
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
    let n = dec.layout().len() + 1; // fields + pod
    assert_eq!(
        *printed.lock().unwrap(),
        vec![
            "sport=443 idx=443 pod=netns:4026532001 kind=NOSOCK".to_string(),
            "has_stack=true missing=false".to_string(),
            format!("fields={n} keys={n}"),
        ]
    );
    let typo = Script::compile(
        "typo.rhai",
        "fn on_event(ev) { let p = ev.sprot; }",
        &limits,
    )
    .unwrap();
    let ctx = ScriptContext::detached("typo");
    let mut inst = Instance::start(&typo, &[], ctx, &limits).unwrap();
    inst.on_record(record);
    assert_eq!(
        inst.errors().get("runtime"),
        Some(&1),
        "a misspelt field is an error"
    );
}

#[test]
fn tcp_retrans_counts_by_family_and_state_and_events() {
    let mut h = harness("tcp_retrans.rhai", &[("emit_events", "true")]);
    let key = |family: &str, state: &str| {
        vec![
            ("netns", Value::Uint(4026532001)),
            ("family", Value::Str(family.into())),
            ("state", Value::Str(state.into())),
        ]
    };
    h.counts(
        "counts",
        &[
            (key("IPv4", "ESTABLISHED"), 12),
            (key("IPv6", "NEW_SYN_RECV"), 2),
        ],
    );
    h.inst.on_tick();
    let lines = metric_line(&h.registry, "sonde_tcp_retrans_segments_total{");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("family=\"IPv4\"")
        && l.contains("state=\"ESTABLISHED\"")
        && l.contains("pod=\"web-1\"")
        && l.ends_with(" 12")));
    assert!(lines
        .iter()
        .any(|l| l.contains("state=\"NEW_SYN_RECV\"") && l.ends_with(" 2")));
    h.inst.on_event(map(&[
        ("netns", Dynamic::from_int(7)),
        ("pod", pod("web-1", "shop")),
        ("saddr", "fd00::1".into()),
        ("sport", Dynamic::from_int(443)),
        ("daddr", "fd00::2".into()),
        ("dport", Dynamic::from_int(50000)),
        ("state", "ESTABLISHED".into()),
        ("segs", Dynamic::from_int(3)),
        ("family", Dynamic::from_int(10)),
        (
            "stack",
            Dynamic::from_array(vec!["__tcp_retransmit_skb+0x4ea".into()]),
        ),
    ]));
    let events = h.events.0.lock().unwrap();
    assert_eq!(
        events[0].to_text(),
        "type=TCPRETRANS pod=web-1 namespace=shop protocol=TCP saddr=fd00::1 sport=443 daddr=fd00::2 dport=50000 state=ESTABLISHED segs=3 stacktrace:__tcp_retransmit_skb+0x4ea"
    );
}

/// tcp_state: each pod's lifetime histogram gets its own buckets and its own sum
/// (milliseconds in the kernel, seconds exported); failures and transitions follow
/// the kernel counts.
#[test]
fn tcp_state_lifetimes_per_pod_failures_and_transitions() {
    let mut h = harness("tcp_state.rhai", &[]);
    let slot = |netns: i64, p: Dynamic, slot: i64| {
        map(&[
            ("netns", Dynamic::from_int(netns)),
            ("pod", p),
            ("slot", Dynamic::from_int(slot)),
        ])
    };
    let ns = |netns: i64, p: Dynamic| map(&[("netns", Dynamic::from_int(netns)), ("pod", p)]);
    h.maps.set(
        "lifetime",
        vec![
            (slot(7, pod("web-1", "shop"), 9), 3),
            (slot(8, pod("db-0", "data"), 0), 2),
            (slot(7, pod("web-1", "shop"), 11), 1),
        ],
    );
    h.maps.set(
        "lifetime_sum",
        vec![
            (ns(8, pod("db-0", "data")), 1),
            (ns(7, pod("web-1", "shop")), 3000),
        ],
    );
    let fail = |reason: &str, family: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("reason", reason.into()),
            ("family", family.into()),
        ])
    };
    h.maps.set(
        "failed",
        vec![(fail("REFUSED", "IPv4"), 5), (fail("TIMEOUT", "IPv6"), 1)],
    );
    let tr = |from: &str, to: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("oldstate", from.into()),
            ("newstate", to.into()),
        ])
    };
    h.maps
        .set("counts", vec![(tr("SYN_SENT", "ESTABLISHED"), 4)]);
    h.inst.on_tick();
    assert!(h.inst.errors().is_empty(), "{:?}", h.inst.errors());

    let m = "sonde_tcp_state_connection_lifetime_seconds";
    let web = metric_line(&h.registry, m)
        .into_iter()
        .filter(|l| l.contains("pod=\"web-1\""))
        .collect::<Vec<_>>();
    let find = |lines: &[String], part: &str| -> String {
        lines
            .iter()
            .find(|l| l.contains(part))
            .unwrap_or_else(|| panic!("no {part} in {lines:#?}"))
            .clone()
    };
    assert!(find(&web, "_count{").ends_with(" 4"), "{web:#?}");
    assert!(find(&web, "_sum{").ends_with(" 3"), "3000 ms: {web:#?}");
    assert!(find(&web, "le=\"0.512\"").ends_with(" 3"), "{web:#?}");
    assert!(find(&web, "le=\"1.024\"").ends_with(" 3"), "{web:#?}");
    assert!(find(&web, "le=\"2.048\"").ends_with(" 4"), "{web:#?}");
    let db = metric_line(&h.registry, m)
        .into_iter()
        .filter(|l| l.contains("pod=\"db-0\""))
        .collect::<Vec<_>>();
    assert!(find(&db, "le=\"0.001\"").ends_with(" 2"), "{db:#?}");
    assert!(find(&db, "_sum{").ends_with(" 0.001"), "{db:#?}");

    let f = metric_line(&h.registry, "sonde_tcp_state_connect_failures_total{");
    assert!(f.iter().any(|l| l.contains("reason=\"REFUSED\"")
        && l.contains("family=\"IPv4\"")
        && l.ends_with(" 5")));
    assert!(f
        .iter()
        .any(|l| l.contains("reason=\"TIMEOUT\"") && l.ends_with(" 1")));
    let t = metric_line(&h.registry, "sonde_tcp_state_transitions_total{");
    assert!(
        t.iter().any(|l| l.contains("from=\"SYN_SENT\"")
            && l.contains("to=\"ESTABLISHED\"")
            && l.ends_with(" 4")),
        "{t:?}"
    );
}

#[test]
fn tcp_state_failed_connect_event() {
    let mut h = harness("tcp_state.rhai", &[("emit_events", "true")]);
    let ev = |elapsed: i64, reason: &str, err: i64| {
        vec![
            ("netns", Value::Int(4026532001)),
            ("saddr", Value::Str("10.0.0.5".into())),
            ("sport", Value::Int(41000)),
            ("daddr", Value::Str("10.0.9.9".into())),
            ("dport", Value::Int(5432)),
            ("reason", Value::Str(reason.into())),
            ("err", Value::Int(err)),
            ("elapsed_ns", Value::Int(elapsed)),
            ("family", Value::Int(2)),
            ("stack", Value::Int(-1)),
        ]
    };
    h.record(&ev(3_000_000_000, "TIMEOUT", 110));
    h.record(&ev(0, "REFUSED", 111));
    let events = h.events.0.lock().unwrap();
    let lines: Vec<String> = events.iter().map(|e| e.to_text()).collect();
    assert_eq!(
        lines,
        vec![
            "type=TCPCONNECT_FAILED pod=web-1 namespace=shop protocol=TCP saddr=10.0.0.5 sport=41000 daddr=10.0.9.9 dport=5432 reason=TIMEOUT elapsed=3s err=110",
            "type=TCPCONNECT_FAILED pod=web-1 namespace=shop protocol=TCP saddr=10.0.0.5 sport=41000 daddr=10.0.9.9 dport=5432 reason=REFUSED err=111",
        ]
    );
}

fn ints(pairs: &[(&str, i64)]) -> Dynamic {
    Dynamic::from_map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), Dynamic::from_int(*v)))
            .collect(),
    )
}

/// softirq: histograms per vector and phase from the kernel's slots, sums and slow
/// counts from its totals; events named by phase and tier.
#[test]
fn softirq_histograms_counts_and_event_types() {
    let mut h = harness("softirq.rhai", &[("very_slow_ns", "100ms")]);
    let hk = |vec: &str, phase: &str, slot: i64| {
        map(&[
            ("vec", vec.into()),
            ("phase", phase.into()),
            ("slot", Dynamic::from_int(slot)),
        ])
    };
    h.maps.set(
        "hist",
        vec![
            (hk("NET_RX", "DELAY", 10), 3),
            (hk("NET_RX", "DELAY", 12), 1),
            (hk("NET_RX", "RUN", 11), 5),
        ],
    );
    let tk = |vec: &str, phase: &str| map(&[("vec", vec.into()), ("phase", phase.into())]);
    h.maps.set_values(
        "totals",
        vec![
            (
                tk("NET_RX", "DELAY"),
                ints(&[
                    ("count", 4),
                    ("sum_ns", 5000),
                    ("slow", 1),
                    ("very_slow", 0),
                ]),
            ),
            (
                tk("NET_RX", "RUN"),
                ints(&[
                    ("count", 5),
                    ("sum_ns", 7000),
                    ("slow", 2),
                    ("very_slow", 1),
                ]),
            ),
        ],
    );
    h.inst.on_tick();
    let delay = metric_line(&h.registry, "sonde_softirq_delay_seconds");
    assert!(
        delay
            .iter()
            .any(|l| l.starts_with("sonde_softirq_delay_seconds_count{")
                && l.contains("vector=\"NET_RX\"")
                && l.ends_with(" 4")),
        "{delay:?}"
    );
    assert!(
        delay
            .iter()
            .any(|l| l.starts_with("sonde_softirq_delay_seconds_sum{") && l.ends_with(" 5e-6")),
        "{delay:?}"
    );
    // Slot 10 holds (512 ns, 1024 ns]: 3 samples at or under 1.024 µs.
    assert!(
        delay
            .iter()
            .any(|l| l.contains("le=\"1.024e-6\"") && l.ends_with(" 3")),
        "{delay:?}"
    );
    let run = metric_line(&h.registry, "sonde_softirq_run_seconds_count{");
    assert!(run.iter().any(|l| l.ends_with(" 5")), "{run:?}");
    let slow = metric_line(&h.registry, "sonde_softirq_slow_total{");
    assert!(
        slow.iter().any(|l| l.contains("phase=\"delay\"")
            && l.contains("vector=\"NET_RX\"")
            && l.ends_with(" 1")),
        "{slow:?}"
    );
    assert!(
        slow.iter()
            .any(|l| l.contains("phase=\"run\"") && l.ends_with(" 2")),
        "{slow:?}"
    );
    let very = metric_line(&h.registry, "sonde_softirq_very_slow_total{");
    assert!(
        very.iter()
            .any(|l| l.contains("phase=\"run\"") && l.ends_with(" 1")),
        "{very:?}"
    );

    let ev = |phase: &str, ns: i64| {
        vec![
            ("vec", Value::Str("TIMER".into())),
            ("phase", Value::Str(phase.into())),
            ("latency_ns", Value::Int(ns)),
            ("cpu", Value::Int(1)),
            ("pid", Value::Int(15)),
            ("comm", Value::Str("ksoftirqd/1".into())),
        ]
    };
    h.record(&ev("DELAY", 20_000_000));
    h.record(&ev("RUN", 150_000_000));
    let events = h.events.0.lock().unwrap();
    let types: Vec<String> = events.iter().map(|e| e.to_text()).collect();
    assert!(
        types[0].starts_with("type=SOFTIRQ_SCHED_SLOW "),
        "{types:?}"
    );
    assert!(
        types[0].contains("vector=TIMER") && types[0].contains("cpu=1"),
        "{types:?}"
    );
    assert!(
        types[1].starts_with("type=SOFTIRQ_EXCUTE_100MS "),
        "{types:?}"
    );
}

/// bio_latency: per-disk histograms and totals, per-pod request counts split by
/// slow, events BIOLAT_SLOW / BIOLAT_100MS with the disk and its dev number.
#[test]
fn bio_latency_histograms_pods_and_events() {
    let mut h = harness("bio_latency.rhai", &[]);
    let hk = |disk: &str, op: &str, slot: i64| {
        map(&[
            ("disk", disk.into()),
            ("op", op.into()),
            ("slot", Dynamic::from_int(slot)),
        ])
    };
    h.maps.set(
        "hist",
        vec![(hk("sda", "READ", 17), 6), (hk("sda", "READ", 24), 1)],
    );
    h.maps.set_values(
        "totals",
        vec![(
            map(&[("disk", "sda".into()), ("op", "READ".into())]),
            ints(&[
                ("ios", 7),
                ("bytes", 28672),
                ("latency_ns", 20_000_000),
                ("slow", 1),
                ("very_slow", 0),
            ]),
        )],
    );
    let pk = |slow: i64| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("db-0", "data")),
            ("disk", "sda".into()),
            ("op", "READ".into()),
            ("slow", Dynamic::from_int(slow)),
        ])
    };
    h.maps.set("counts", vec![(pk(0), 6), (pk(1), 1)]);
    h.inst.on_tick();
    let count = metric_line(&h.registry, "sonde_bio_latency_seconds_count{");
    assert!(
        count
            .iter()
            .any(|l| l.contains("disk=\"sda\"") && l.contains("op=\"READ\"") && l.ends_with(" 7")),
        "{count:?}"
    );
    let bytes = metric_line(&h.registry, "sonde_bio_latency_bytes_total{");
    assert!(bytes.iter().any(|l| l.ends_with(" 28672")), "{bytes:?}");
    let reqs = metric_line(&h.registry, "sonde_bio_latency_requests_total{");
    assert!(
        reqs.iter().any(|l| l.contains("pod=\"db-0\"")
            && l.contains("slow=\"true\"")
            && l.ends_with(" 1")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|l| l.contains("slow=\"false\"") && l.ends_with(" 6")),
        "{reqs:?}"
    );

    let ev = |ns: i64| {
        vec![
            ("netns", Value::Int(7)),
            ("disk", Value::Str("sda".into())),
            ("op", Value::Str("WRITE".into())),
            ("major", Value::Int(8)),
            ("minor", Value::Int(0)),
            ("bytes", Value::Int(4096)),
            ("sector", Value::Int(2048)),
            ("latency_ns", Value::Int(ns)),
            ("error", Value::Int(0)),
            ("pid", Value::Int(42)),
            ("comm", Value::Str("postgres".into())),
        ]
    };
    h.record(&ev(12_000_000));
    h.record(&ev(250_000_000));
    let events = h.events.0.lock().unwrap();
    let text: Vec<String> = events.iter().map(|e| e.to_text()).collect();
    assert!(
        text[0].starts_with("type=BIOLAT_SLOW pod=db-0 namespace=data"),
        "{text:?}"
    );
    assert!(
        text[0].contains("disk=sda") && text[0].contains("dev=8:0"),
        "{text:?}"
    );
    assert!(
        text[0].contains("op=WRITE") && text[0].contains("bytes=4096"),
        "{text:?}"
    );
    assert!(text[1].starts_with("type=BIOLAT_100MS "), "{text:?}");
}

/// flow: kernel `peers` entries folded into bounded series: the peer pod when known,
/// else "external" (peer=pod) or the masked network (peer=subnet).
#[test]
fn flow_peer_labels_and_sums() {
    let key = |dir: &str, proto: &str, peer: &str, known: i64, peer_pod: Dynamic| {
        map(&[
            ("pod", pod("web-1", "shop")),
            ("dir", dir.into()),
            ("l4proto", proto.into()),
            ("peer", peer.into()),
            ("peer_known", Dynamic::from_int(known)),
            ("peer_netns_pod", peer_pod),
        ])
    };
    let entries = || {
        vec![
            (
                key("TX", "TCP", "93.184.216.0", 0, pod("", "")),
                ints(&[("bytes", 1000), ("packets", 10)]),
            ),
            (
                key("TX", "TCP", "2001:db8::", 0, pod("", "")),
                ints(&[("bytes", 500), ("packets", 5)]),
            ),
            (
                key("RX", "TCP", "::", 1, pod("db-0", "shop")),
                ints(&[("bytes", 70), ("packets", 1)]),
            ),
            (
                key("TX", "UDP", "::", 1, pod("", "")),
                ints(&[("bytes", 64), ("packets", 1)]),
            ),
        ]
    };
    let mut h = harness("flow.rhai", &[]);
    h.maps.set_values("peers", entries());
    h.inst.on_tick();
    let bytes = metric_line(&h.registry, "sonde_flow_bytes_total{");
    let has = |lines: &[String], labels: &str, v: &str| {
        lines
            .iter()
            .any(|l| l.contains(labels) && l.ends_with(&format!(" {v}")))
    };
    let pod_labels = "namespace=\"shop\",pod=\"web-1\"";
    assert!(
        has(
            &bytes,
            &format!("{pod_labels},direction=\"tx\",protocol=\"TCP\",peer=\"external\""),
            "1500"
        ),
        "both unknown peers fold into external: {bytes:?}"
    );
    assert!(
        has(
            &bytes,
            "direction=\"rx\",protocol=\"TCP\",peer=\"shop/db-0\"",
            "70"
        ),
        "{bytes:?}"
    );
    assert!(
        has(
            &bytes,
            "direction=\"tx\",protocol=\"UDP\",peer=\"host\"",
            "64"
        ),
        "{bytes:?}"
    );
    assert_eq!(bytes.len(), 3, "{bytes:?}");

    let mut h = harness("flow.rhai", &[("peer", "subnet"), ("peer_prefix4", "16")]);
    h.maps.set_values("peers", entries());
    h.inst.on_tick();
    let packets = metric_line(&h.registry, "sonde_flow_packets_total{");
    assert!(
        has(&packets, "peer=\"93.184.216.0/16\"", "10"),
        "{packets:?}"
    );
    assert!(has(&packets, "peer=\"2001:db8::/64\"", "5"), "{packets:?}");
    assert!(has(&packets, "peer=\"shop/db-0\"", "1"), "{packets:?}");
}

/// virtcmd_latency: histogram from the kernel's slots, all and slow commands by class
/// name, events for slow commands.
#[test]
fn virtcmd_latency_histogram_counts_and_events() {
    let mut h = harness("virtcmd_latency.rhai", &[("threshold_ns", "1ms")]);
    h.maps.set(
        "hist",
        vec![
            (map(&[("slot", Dynamic::from_int(20))]), 3),
            (map(&[("slot", Dynamic::from_int(24))]), 1),
        ],
    );
    let k = |class: i64, cmd: i64, slow: i64| {
        map(&[
            ("pod", pod("", "")),
            ("class", Dynamic::from_int(class)),
            ("cmd", Dynamic::from_int(cmd)),
            ("slow", Dynamic::from_int(slow)),
        ])
    };
    h.maps.set(
        "counts",
        vec![(k(0, 1, 0), 3), (k(0, 1, 1), 1), (k(4, 0, 0), 2)],
    );
    h.inst.on_tick();
    let count = metric_line(&h.registry, "sonde_virtcmd_latency_seconds_count");
    assert!(count.iter().any(|l| l.ends_with(" 4")), "{count:?}");
    let all = metric_line(&h.registry, "sonde_virtcmd_latency_commands_total{");
    assert!(
        all.iter()
            .any(|l| l.contains("class=\"RX\",command=\"1\"") && l.ends_with(" 4")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|l| l.contains("class=\"MQ\"") && l.ends_with(" 2")),
        "{all:?}"
    );
    let slow = metric_line(&h.registry, "sonde_virtcmd_latency_slow_commands_total{");
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert!(
        slow[0].contains("class=\"RX\"") && slow[0].ends_with(" 1"),
        "{slow:?}"
    );

    let ev = map(&[
        ("pod", pod("", "")),
        ("class", Dynamic::from_int(1)),
        ("cmd", Dynamic::from_int(1)),
        ("latency_ns", Dynamic::from_int(25_000_000)),
        ("comm", "ip".into()),
        ("pid", Dynamic::from_int(42)),
        ("ok", Dynamic::from_int(1)),
    ]);
    h.inst.on_event(ev);
    let events = h.events.0.lock().unwrap();
    assert_eq!(events.len(), 1);
    let text = events[0].to_text();
    assert!(
        text.starts_with("type=VIRTCMDLATENCY")
            && text.contains("class=MAC")
            && text.contains("latency=25000000"),
        "{text}"
    );
}

/// socket_latency: kernel log2 slots grouped per (netns, direction) with their sums,
/// counts labelled with the thresholds from the params, events for slow reads.
#[test]
fn socket_latency_histograms_thresholds_and_events() {
    let mut h = harness("socket_latency.rhai", &[("slow_ns", "5ms")]);
    let hk = |netns: i64, p: Dynamic, dir: &str, slot: i64| {
        map(&[
            ("netns", Dynamic::from_int(netns)),
            ("pod", p),
            ("dir", dir.into()),
            ("slot", Dynamic::from_int(slot)),
        ])
    };
    let web = || pod("web-1", "shop");
    h.maps.set(
        "hist",
        vec![
            (hk(7, web(), "READ", 10), 5),
            (hk(7, web(), "READ", 28), 2),
            (hk(7, web(), "WRITE", 12), 3),
            (hk(8, pod("db-0", "data"), "READ", 9), 1),
        ],
    );
    let sk = |netns: i64, p: Dynamic, dir: &str| {
        map(&[
            ("netns", Dynamic::from_int(netns)),
            ("pod", p),
            ("dir", dir.into()),
        ])
    };
    h.maps.set(
        "sums",
        vec![
            (sk(7, web(), "READ"), 300_005_000),
            (sk(7, web(), "WRITE"), 12_000),
            (sk(8, pod("db-0", "data"), "READ"), 500),
        ],
    );
    let ck = |over: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", web()),
            ("dir", "READ".into()),
            ("over", over.into()),
        ])
    };
    h.maps
        .set("counts", vec![(ck("SLOW"), 2), (ck("THRESHOLD"), 2)]);
    h.inst.on_tick();

    let count = metric_line(&h.registry, "sonde_socket_latency_seconds_count{");
    let has = |lines: &[String], parts: &[&str], end: &str| {
        lines
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)) && l.ends_with(end))
    };
    assert!(
        has(&count, &["pod=\"web-1\"", "direction=\"read\""], " 7"),
        "{count:?}"
    );
    assert!(
        has(&count, &["pod=\"web-1\"", "direction=\"write\""], " 3"),
        "{count:?}"
    );
    assert!(
        has(&count, &["pod=\"db-0\"", "direction=\"read\""], " 1"),
        "{count:?}"
    );
    assert_eq!(count.len(), 3, "{count:?}");
    let sum = metric_line(&h.registry, "sonde_socket_latency_seconds_sum{");
    assert!(
        has(&sum, &["pod=\"web-1\"", "direction=\"read\""], " 0.300005"),
        "{sum:?}"
    );
    // Slot 10 is (512, 1024] ns: all 5 are under le=1.024e-6; slot 28 under 2^28 ns.
    let buckets = metric_line(&h.registry, "sonde_socket_latency_seconds_bucket{");
    assert!(
        has(
            &buckets,
            &["pod=\"web-1\"", "direction=\"read\"", "le=\"1.024e-6\""],
            " 5"
        ),
        "{buckets:?}"
    );
    assert!(
        has(
            &buckets,
            &["pod=\"web-1\"", "direction=\"read\"", "le=\"0.268435456\""],
            " 7"
        ),
        "{buckets:?}"
    );

    let slow = metric_line(&h.registry, "sonde_socket_latency_slow_total{");
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert!(
        has(&slow, &["threshold=\"5ms\"", "direction=\"read\""], " 2"),
        "{slow:?}"
    );
    assert!(has(&slow, &["threshold=\"100ms\""], " 2"), "{slow:?}");

    h.record(&[
        ("netns", Value::Int(4026532001)),
        ("dir", Value::Str("READ".into())),
        ("latency_ns", Value::Int(150_000_000)),
        ("l4proto", Value::Str("TCP".into())),
        ("family", Value::Int(10)),
        ("saddr", Value::Str("fd00::1".into())),
        ("sport", Value::Int(8080)),
        ("daddr", Value::Str("fd00::2".into())),
        ("dport", Value::Int(40000)),
        ("bytes", Value::Int(100)),
        ("pid", Value::Int(42)),
        ("comm", Value::Str("server".into())),
    ]);
    let events = h.events.0.lock().unwrap();
    let text = events[0].to_text();
    assert!(
        text.starts_with("type=SOCKETLATENCY pod=web-1 namespace=shop"),
        "{text}"
    );
    for part in [
        "direction=read",
        "latency=150ms",
        "protocol=TCP",
        "saddr=fd00::1",
        "sport=8080",
        "daddr=fd00::2",
        "dport=40000",
        "comm=server",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

/// sock_pressure: kernel counts per kind and protocol; events carry `allocated` only
/// for the protocol-limit kinds.
#[test]
fn sock_pressure_counts_and_events() {
    let mut h = harness("sock_pressure.rhai", &[("emit_events", "true")]);
    let key = |kind: &str, proto: &str| {
        vec![
            ("netns", Value::Uint(8)),
            ("kind", Value::Str(kind.into())),
            ("l4proto", Value::Str(proto.into())),
        ]
    };
    h.counts(
        "counts",
        &[
            (key("UDP_RCVBUF", "UDP"), 399),
            (key("SEND_BUF_LIMIT", "TCP"), 3),
        ],
    );
    h.inst.on_tick();
    let lines = metric_line(&h.registry, "sonde_sock_pressure_refusals_total{");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("kind=\"UDP_RCVBUF\"")
        && l.contains("protocol=\"UDP\"")
        && l.contains("pod=\"dns-0\"")
        && l.ends_with(" 399")));
    assert!(lines
        .iter()
        .any(|l| l.contains("kind=\"SEND_BUF_LIMIT\"") && l.ends_with(" 3")));

    // Real record bytes: kinds and protocols by name, `allocated` a signed field.
    let ev = |kind: &str, allocated: i64| {
        vec![
            ("netns", Value::Uint(8)),
            ("kind", Value::Str(kind.into())),
            ("l4proto", Value::Str("UDP".into())),
            ("family", Value::Uint(2)),
            ("saddr", Value::Str("10.0.0.10".into())),
            ("sport", Value::Uint(53)),
            ("daddr", Value::Str("0.0.0.0".into())),
            ("dport", Value::Uint(0)),
            ("rmem_alloc", Value::Uint(2304)),
            ("rcvbuf", Value::Uint(2304)),
            ("wmem_queued", Value::Uint(0)),
            ("sndbuf", Value::Uint(212992)),
            ("allocated", Value::Int(allocated)),
        ]
    };
    h.record(&ev("UDP_RCVBUF", -12));
    h.record(&ev("RECV_BUF_LIMIT", 90000));
    let events = h.events.0.lock().unwrap();
    let a = events[0].to_text();
    let b = events[1].to_text();
    assert!(
        a.starts_with("type=SOCKPRESSURE_UDP_RCVBUF pod=dns-0 namespace=kube-system"),
        "{a}"
    );
    assert!(a.contains("sport=53") && a.contains("rcvbuf=2304"), "{a}");
    assert!(!a.contains("allocated"), "{a}");
    assert!(b.starts_with("type=SOCKPRESSURE_RECV_BUF_LIMIT "), "{b}");
    assert!(b.contains("allocated=90000"), "{b}");
}

/// netif_txlat: qdisc and driver histograms per interface from the kernel's slots and
/// totals (the interface named by the kernel), slow counts by stage; one event type
/// per stage, the tuple on the qdisc one.
#[test]
fn netif_txlat_histograms_per_interface_and_events() {
    let mut h = harness("netif_txlat.rhai", &[("threshold_ms", "50ms")]);
    let key = |stage: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("ifindex", Dynamic::from_int(2)),
            ("ifname", "eth0".into()),
            ("stage", stage.into()),
        ])
    };
    let slot = |stage: &str, slot: i64| {
        let mut k = key(stage);
        k.insert("slot".into(), Dynamic::from_int(slot));
        k
    };
    h.maps.set(
        "hist",
        vec![
            (slot("QDISC", 10), 1),
            (slot("QDISC", 27), 3),
            (slot("DRIVER", 12), 4),
        ],
    );
    h.maps.set_values(
        "totals",
        vec![
            (key("QDISC"), ints(&[("sum_ns", 400_000_000), ("slow", 3)])),
            (key("DRIVER"), ints(&[("sum_ns", 8_000), ("slow", 0)])),
        ],
    );
    h.inst.on_tick();
    let qdisc = metric_line(&h.registry, "sonde_netif_txlat_qdisc_seconds_");
    let labels = "interface=\"eth0\",namespace=\"shop\",pod=\"web-1\"";
    assert!(
        qdisc
            .iter()
            .any(|l| l.starts_with("sonde_netif_txlat_qdisc_seconds_count{")
                && l.contains("interface=\"eth0\"")
                && l.ends_with(" 4")),
        "{qdisc:?}"
    );
    assert!(
        qdisc
            .iter()
            .any(|l| l.starts_with("sonde_netif_txlat_qdisc_seconds_sum{") && l.ends_with(" 0.4")),
        "{qdisc:?}"
    );
    // Slot 27 holds (67 ms, 134 ms]: all four at or under 0.134 s, one under 1 µs.
    assert!(
        qdisc
            .iter()
            .any(|l| l.contains("le=\"1.024e-6\"") && l.ends_with(" 1")),
        "{qdisc:?}"
    );
    let driver = metric_line(&h.registry, "sonde_netif_txlat_driver_seconds_count{");
    assert!(driver.iter().any(|l| l.ends_with(" 4")), "{driver:?}");
    let slow = metric_line(&h.registry, "sonde_netif_txlat_slow_packets_total{");
    assert_eq!(slow.len(), 2, "{slow:?}");
    for (stage, n) in [("qdisc", 3), ("driver", 0)] {
        assert!(
            slow.iter()
                .any(|l| l.contains(&format!("stage=\"{stage}\""))
                    && l.contains("interface=\"eth0\"")
                    && l.contains("pod=\"web-1\"")
                    && l.ends_with(&format!(" {n}"))),
            "{slow:?} {labels}"
        );
    }

    let ev = |stage: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("ifindex", Dynamic::from_int(2)),
            ("ifname", "eth0".into()),
            ("stage", stage.into()),
            ("latency_ns", Dynamic::from_int(120_000_000)),
            (
                "qdisc_ns",
                Dynamic::from_int(if stage == "DRIVER" { 5_000 } else { 0 }),
            ),
            ("len", Dynamic::from_int(1042)),
            ("l4proto", "UDP".into()),
            ("saddr", "10.1.2.3".into()),
            ("sport", Dynamic::from_int(5353)),
            ("daddr", "10.1.9.8".into()),
            ("dport", Dynamic::from_int(53)),
            ("family", Dynamic::from_int(2)),
        ])
    };
    h.inst.on_event(ev("QDISC"));
    h.inst.on_event(ev("DRIVER"));
    let lines: Vec<String> = h
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.to_text())
        .collect();
    assert_eq!(
        lines,
        vec![
            "type=TXLAT_QDISC_SLOW pod=web-1 namespace=shop protocol=UDP saddr=10.1.2.3 sport=5353 daddr=10.1.9.8 dport=53 interface=eth0 latency_ns=120000000 len=1042",
            "type=TXLAT_NETDEV_SLOW pod=web-1 namespace=shop interface=eth0 latency_ns=120000000 len=1042 qdisc_ns=5000",
        ]
    );
    assert!(h.inst.errors().is_empty(), "{:?}", h.inst.errors());
}

/// kernel_latency: one histogram per pod, direction and interval from the kernel's
/// slots and totals; events by direction with the stage times their interval has.
#[test]
fn kernel_latency_histograms_and_stage_times() {
    let mut h = harness("kernel_latency.rhai", &[]);
    let key = |dir: &str, interval: &str| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("dir", dir.into()),
            ("interval", interval.into()),
        ])
    };
    let slot = |dir: &str, interval: &str, slot: i64| {
        let mut k = key(dir, interval);
        k.insert("slot".into(), Dynamic::from_int(slot));
        k
    };
    h.maps.set(
        "hist",
        vec![
            (slot("RX", "RECV_READ", 14), 6),
            (slot("RX", "RECV_READ", 25), 2),
            (slot("TX", "TCP_DEVQ", 11), 9),
        ],
    );
    h.maps.set_values(
        "totals",
        vec![
            (
                key("RX", "RECV_READ"),
                ints(&[("sum_ns", 60_000_000), ("slow", 2)]),
            ),
            (
                key("TX", "TCP_DEVQ"),
                ints(&[("sum_ns", 9_000), ("slow", 0)]),
            ),
        ],
    );
    h.inst.on_tick();
    let count = metric_line(&h.registry, "sonde_kernel_latency_seconds_count{");
    assert_eq!(count.len(), 2, "{count:?}");
    assert!(
        count.iter().any(|l| l.contains("direction=\"rx\"")
            && l.contains("interval=\"recv_read\"")
            && l.contains("pod=\"web-1\"")
            && l.ends_with(" 8")),
        "{count:?}"
    );
    assert!(
        count.iter().any(|l| l.contains("direction=\"tx\"")
            && l.contains("interval=\"tcp_devq\"")
            && l.ends_with(" 9")),
        "{count:?}"
    );
    let sum = metric_line(&h.registry, "sonde_kernel_latency_seconds_sum{");
    assert!(
        sum.iter()
            .any(|l| l.contains("direction=\"rx\"") && l.contains("} 0.06")),
        "{sum:?}"
    );
    let slow = metric_line(&h.registry, "sonde_kernel_latency_slow_packets_total{");
    assert!(
        slow.iter()
            .any(|l| l.contains("direction=\"rx\"") && l.ends_with(" 2")),
        "{slow:?}"
    );

    let ev = |dir: &str, interval: &str, mid: i64| {
        map(&[
            ("netns", Dynamic::from_int(7)),
            ("pod", pod("web-1", "shop")),
            ("dir", dir.into()),
            ("interval", interval.into()),
            ("latency_ns", Dynamic::from_int(30_000_000)),
            ("mid_ns", Dynamic::from_int(mid)),
            ("len", Dynamic::from_int(100)),
            ("l4proto", "TCP".into()),
            ("saddr", "fd00::1".into()),
            ("sport", Dynamic::from_int(40000)),
            ("daddr", "fd00::2".into()),
            ("dport", Dynamic::from_int(80)),
            ("family", Dynamic::from_int(10)),
        ])
    };
    h.inst.on_event(ev("RX", "RECV_READ", 1_000));
    h.inst.on_event(ev("RX", "IP_RCV", 4_000));
    h.inst.on_event(ev("TX", "IP_XMIT", 29_000_000));
    h.inst.on_event(ev("TX", "TCP_DEVQ", 0));
    let lines: Vec<String> = h
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.to_text())
        .collect();
    let tuple = "protocol=TCP saddr=fd00::1 sport=40000 daddr=fd00::2 dport=80";
    assert_eq!(
        lines,
        vec![
            format!("type=RXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=recv_read latency_ns=30000000 len=100 socket_ns=29999000 stack_ns=1000"),
            format!("type=RXKERNEL_SLOW pod=web-1 namespace=shop {tuple} input_ns=29996000 interval=ip_rcv latency_ns=30000000 len=100 prerouting_ns=4000"),
            format!("type=TXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=ip_xmit latency_ns=30000000 len=100 output_ns=29000000 postrouting_ns=1000000"),
            format!("type=TXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=tcp_devq latency_ns=30000000 len=100"),
        ]
    );
    assert!(h.inst.errors().is_empty(), "{:?}", h.inst.errors());
}
