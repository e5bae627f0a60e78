//! Script tests: the built-in scripts fed synthetic events and replayed recordings,
//! with the metrics and events they produce checked. No kernel, no privileges.
//!
//! Replay tests compare `sonde run <script> --replay scripts/tests/<probe>.sonderec`
//! with `scripts/tests/<probe>.expected`. After an intended change of output, refresh
//! the expected files with `SONDE_BLESS=1 cargo test -p sonde-tests --test scripts`
//! and review the diff.

use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Map};
use sonde::bpf::decode::{DecodeEnv, ObjectTypes};
use sonde::bpf::ksyms::{Ksyms, Symbols};
use sonde::bpf::maps::MapReadError;
use sonde::bpf::value::Value;
use sonde::event::{Event, EventSink};
use sonde::metrics::Registry;
use sonde::script::{Instance, Limits, MapReader, Script, ScriptContext};
use sonde_tests::{repo_root, sonde_ok};

#[derive(Default)]
struct Capture(Mutex<Vec<Event>>);

impl EventSink for Capture {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// A program's maps as the script reads them: decoded entries, set by the test
/// between ticks.
#[derive(Default)]
struct Maps(Mutex<Vec<(String, rhai::Array)>>);

impl MapReader for Maps {
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
        let (name, namespace) = match i64::from(inode) {
            WEB => ("web-1", "shop"),
            DB => ("db-0", "data"),
            DNS => ("dns-0", "kube-system"),
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

/// The network namespaces of [`TestPods`].
const WEB: i64 = 4026532001;
const DB: i64 = 7;
const DNS: i64 = 8;

/// The kernel functions these tests' stacks and drop locations name, laid out
/// 4 KiB apart from `SYMBOLS_AT`.
const SYMBOLS: &[&str] = &[
    "tcp_send_active_reset",
    "tcp_disconnect",
    "__tcp_retransmit_skb",
    "nf_hook_slow",
];
const SYMBOLS_AT: u64 = 0xffff_ffff_8100_0000;

/// The address of `"function+0xoff"` in the [`SYMBOLS`] table.
fn address(frame: &str) -> u64 {
    let (name, off) = frame.split_once("+0x").unwrap_or((frame, "0"));
    let i = SYMBOLS
        .iter()
        .position(|s| *s == name)
        .unwrap_or_else(|| panic!("{name} is not in SYMBOLS"));
    SYMBOLS_AT + 0x1000 * i as u64 + u64::from_str_radix(off, 16).unwrap()
}

/// The drop reasons of the kernel these tests' records come from.
const DROP_REASONS: &[(u64, &str)] = &[
    (2, "NOT_SPECIFIED"),
    (3, "NO_SOCKET"),
    (6, "NETFILTER_DROP"),
];

/// Fields of a record or a map key or value, by name: `f! { netns: WEB, kind:
/// "NOSOCK" }`. Numbers are written as numbers, names (enumerators, kernel names,
/// addresses, strings) as text; the encoder checks each against the field's type.
macro_rules! f {
    ($($k:ident : $v:expr),* $(,)?) => {
        vec![$((stringify!($k), Field::value($v))),*]
    };
}

/// What `f!` takes as a field's value.
trait Field {
    fn value(self) -> Value;
}

impl Field for i64 {
    fn value(self) -> Value {
        Value::Int(self)
    }
}

impl Field for &str {
    fn value(self) -> Value {
        Value::Str(self.into())
    }
}

impl Field for Value {
    fn value(self) -> Value {
        self
    }
}

type Fields = Vec<(&'static str, Value)>;

struct Harness {
    /// The script's kernel program (its file name), whose `events` records
    /// [`Harness::record`] writes, and that program's types.
    program: String,
    types: ObjectTypes,
    env: Arc<DecodeEnv>,
    /// The kernel stacks records refer to by id (the index).
    stacks: Arc<Mutex<Vec<Vec<u64>>>>,
    inst: Instance,
    events: Arc<Capture>,
    maps: Arc<Maps>,
    registry: Arc<Registry>,
}

/// The built-in `script` with its params set from `overrides`, connected to maps
/// and records of its kernel program written through the object's BTF.
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
    let maps = Arc::new(Maps::default());
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
    let program = script.trim_end_matches(".rhai").to_string();
    let spec = sonde::bpf::catalog::find(&program).expect("a script with a kernel program");
    let stacks = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let table = stacks.clone();
    let symbols: String = SYMBOLS
        .iter()
        .map(|name| format!("{:x} T {name}\n", address(name)))
        .collect();
    let mut env = DecodeEnv::offline(Arc::new(TestPods));
    env.ksyms = Symbols::Table(Arc::new(Ksyms::parse(&symbols)));
    env.drop_reasons = DROP_REASONS
        .iter()
        .map(|(n, name)| (*n, (*name).into()))
        .collect();
    env.stacks = Some(Box::new(move |id| {
        table
            .lock()
            .unwrap()
            .get(id as usize)
            .cloned()
            .unwrap_or_default()
    }));
    Harness {
        types: ObjectTypes::parse(spec.object).unwrap(),
        program,
        env: Arc::new(env),
        stacks,
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
    fn record(&mut self, fields: Fields) {
        let dec = self.types.record_decoder("events").unwrap();
        let bytes = dec
            .encode_fields(&fields, &self.env)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program));
        self.inst.on_record(dec.record(&bytes, &self.env).unwrap());
    }

    /// The id of a kernel stack of these frames (innermost first), for a record's
    /// stack field: decoding reads it back from this harness, as from the kernel's
    /// stack map.
    fn stack(&self, frames: &[&str]) -> Value {
        let mut stacks = self.stacks.lock().unwrap();
        stacks.push(frames.iter().map(|f| address(f)).collect());
        Value::Int(stacks.len() as i64 - 1)
    }

    /// A map of the program as the kernel would hold it: each entry's key and value
    /// written into the map's types through the object's BTF, then read back by the
    /// real map decoder, so what the script gets from `bpf::map(map)` (and
    /// `bpf::hist`) is what a loaded program gives. Replaces the map's entries.
    fn set(&self, map: &str, entries: Vec<(Fields, Value)>) {
        let (key, value) = self.types.map_decoders(map).unwrap();
        let raw: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| {
                let kb = key
                    .encode_fields(k, &self.env)
                    .unwrap_or_else(|e| panic!("{}.{map} key: {e}", self.program));
                let vb = value
                    .encode(v, &self.env)
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

    /// A map whose values are counts (`__u64`).
    fn counts(&self, map: &str, entries: Vec<(Fields, u64)>) {
        self.set(
            map,
            entries
                .into_iter()
                .map(|(k, n)| (k, Value::Uint(n)))
                .collect(),
        );
    }

    /// A map whose values are structs.
    fn structs(&self, map: &str, entries: Vec<(Fields, Fields)>) {
        self.set(
            map,
            entries
                .into_iter()
                .map(|(k, v)| {
                    let v = v.into_iter().map(|(n, x)| (n.into(), x)).collect();
                    (k, Value::Struct(v))
                })
                .collect(),
        );
    }

    /// The exported series of `metric` (its full name: `x_total`, `x_seconds_bucket`).
    fn series(&self, metric: &str) -> Vec<String> {
        let (labelled, bare) = (format!("{metric}{{"), format!("{metric} "));
        self.registry
            .render_prometheus()
            .lines()
            .filter(|l| l.starts_with(&labelled) || l.starts_with(&bare))
            .map(str::to_string)
            .collect()
    }

    /// Asserts, for each `(labels, value)`, that `metric` has a series with every one
    /// of the labels (`name=value`) and that value (`5`, `5e-6`; equal to 12
    /// significant digits, as scaled sums are not exact in binary).
    fn expect(&self, metric: &str, want: &[(&[&str], &str)]) {
        let lines = self.series(metric);
        for (labels, value) in want {
            let parts: Vec<String> = labels
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("name=value");
                    format!("{k}=\"{v}\"")
                })
                .collect();
            let found = lines.iter().any(|l| {
                let has =
                    |p: &String| l.contains(&format!("{{{p}")) || l.contains(&format!(",{p}"));
                parts.iter().all(has) && l.rsplit(' ').next().is_some_and(|v| same(v, value))
            });
            assert!(
                found,
                "no {metric} series with {labels:?} = {value}; exported:\n{}",
                lines.join("\n")
            );
        }
    }

    /// The events the script emitted, as text lines.
    fn events(&self) -> Vec<String> {
        self.events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.to_text())
            .collect()
    }

    /// Asserts the script raised no errors.
    fn no_errors(&self) {
        assert!(self.inst.errors().is_empty(), "{:?}", self.inst.errors());
    }
}

/// Two exported values are the same number (to 12 significant digits).
fn same(got: &str, want: &str) -> bool {
    match (got.parse::<f64>(), want.parse::<f64>()) {
        (Ok(g), Ok(w)) => g == w || (g - w).abs() <= 1e-12 * g.abs().max(w.abs()),
        _ => got == want,
    }
}

fn map(pairs: &[(&str, Dynamic)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), v.clone()))
        .collect()
}

#[test]
fn tcp_reset_events_read_like_kubeskoop() {
    let mut h = harness("tcp_reset.rhai", &[]);
    // The decoder names the kind and state, formats the addresses, names the pod
    // from the netns field and the frames of the stack from its id.
    h.record(f! {
        netns: WEB, kind: "NOSOCK", saddr: "10.1.2.3", sport: 443, daddr: "10.1.9.8",
        dport: 33488, state: "CLOSE", family: 2, stack: -1,
    });
    let stack = h.stack(&["tcp_send_active_reset+0x1", "tcp_disconnect+0x2"]);
    h.record(f! {
        netns: WEB, kind: "ACTIVE", saddr: "fd00::1", sport: 5000, daddr: "fd00::2",
        dport: 80, state: "CLOSE", family: 10, stack: stack,
    });
    assert_eq!(
        h.events(),
        vec![
            "type=TCPRESET_NOSOCK pod=web-1 namespace=shop protocol=TCP saddr=10.1.2.3 sport=443 daddr=10.1.9.8 dport=33488 state=CLOSE",
            "type=TCPRESET_ACTIVE pod=web-1 namespace=shop protocol=TCP saddr=fd00::1 sport=5000 daddr=fd00::2 dport=80 state=CLOSE stacktrace:tcp_send_active_reset+0x1 tcp_disconnect+0x2",
        ]
    );
    assert_eq!(h.events.0.lock().unwrap()[0].labels.node, "node-1");
    h.no_errors();
}

#[test]
fn tcp_reset_counter_follows_the_kernel_counts() {
    let mut h = harness("tcp_reset.rhai", &[]);
    let key = |kind: &str| f! { netns: WEB, kind: kind };
    h.counts("counts", vec![(key("NOSOCK"), 3), (key("RECEIVE"), 1)]);
    h.inst.on_tick();
    h.counts("counts", vec![(key("NOSOCK"), 5), (key("RECEIVE"), 1)]);
    h.inst.on_tick();
    const M: &str = "sonde_tcp_reset_segments_total";
    h.expect(
        M,
        &[
            (&["pod=web-1", "kind=NOSOCK", "node=node-1"], "5"),
            (&["pod=web-1", "kind=RECEIVE", "node=node-1"], "1"),
        ],
    );
    assert_eq!(h.series(M).len(), 2);
}

#[test]
fn packet_loss_counter_by_reason_and_protocol() {
    let mut h = harness("packet_loss.rhai", &[]);
    let key = |reason: &str, protocol: &str| f! { netns: DB, reason: reason, protocol: protocol };
    h.counts(
        "counts",
        vec![
            (key("NO_SOCKET", "IPv4"), 12),
            (key("NETFILTER_DROP", "IPv6"), 2),
        ],
    );
    h.inst.on_tick();
    const M: &str = "sonde_packet_loss_packets_total";
    h.expect(
        M,
        &[
            (&["pod=db-0", "reason=NO_SOCKET", "protocol=IPv4"], "12"),
            (&["pod=db-0", "reason=NETFILTER_DROP", "protocol=IPv6"], "2"),
        ],
    );
    assert_eq!(h.series(M).len(), 2);
    assert!(h.events().is_empty(), "no events unless emit_events");
}

#[test]
fn packet_loss_event_fields() {
    let mut h = harness("packet_loss.rhai", &[("emit_events", "true")]);
    // The reason by the kernel's number, the location by its address.
    h.record(f! {
        netns: DB, reason: "NETFILTER_DROP", protocol: "IPv4", l4proto: "UDP",
        family: 2, saddr: "10.0.0.1", sport: 53, daddr: "10.0.0.2", dport: 5353,
        location: Value::Uint(address("nf_hook_slow+0x9e")), stack: -1,
    });
    assert_eq!(
        h.events(),
        vec!["type=PACKETLOSS pod=db-0 namespace=data protocol=UDP saddr=10.0.0.1 sport=53 daddr=10.0.0.2 dport=5353 reason=NETFILTER_DROP location=nf_hook_slow+0x9e"]
    );
    h.no_errors();
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
        maps: Arc::new(Maps::default()),
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
    let got = sonde_ok(&["run", script, "--replay", recording]);
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
    let spec = sonde::bpf::catalog::find("tcp_reset").unwrap();
    let types = ObjectTypes::parse(spec.object).unwrap();
    let dec = types.record_decoder("events").unwrap();
    let env = Arc::new(DecodeEnv::offline(Arc::new(
        sonde::pods::HostResolver::with_host_netns(1, "n"),
    )));
    let fields = f! { sport: 443, netns: WEB, stack: -1 };
    let bytes = dec.encode_fields(&fields, &env).unwrap();
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
        maps: Arc::new(Maps::default()),
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
    let key = |family: &str, state: &str| f! { netns: WEB, family: family, state: state };
    h.counts(
        "counts",
        vec![
            (key("IPv4", "ESTABLISHED"), 12),
            (key("IPv6", "NEW_SYN_RECV"), 2),
        ],
    );
    h.inst.on_tick();
    const M: &str = "sonde_tcp_retrans_segments_total";
    h.expect(
        M,
        &[
            (&["pod=web-1", "family=IPv4", "state=ESTABLISHED"], "12"),
            (&["pod=web-1", "family=IPv6", "state=NEW_SYN_RECV"], "2"),
        ],
    );
    assert_eq!(h.series(M).len(), 2);
    let stack = h.stack(&["__tcp_retransmit_skb+0x4ea"]);
    h.record(f! {
        netns: WEB, saddr: "fd00::1", sport: 443, daddr: "fd00::2", dport: 50000,
        state: "ESTABLISHED", segs: 3, family: 10, stack: stack,
    });
    assert_eq!(
        h.events(),
        vec!["type=TCPRETRANS pod=web-1 namespace=shop protocol=TCP saddr=fd00::1 sport=443 daddr=fd00::2 dport=50000 state=ESTABLISHED segs=3 stacktrace:__tcp_retransmit_skb+0x4ea"]
    );
    h.no_errors();
}

/// tcp_state: each pod's lifetime histogram gets its own buckets and its own sum
/// (milliseconds in the kernel, seconds exported); failures and transitions follow
/// the kernel counts.
#[test]
fn tcp_state_lifetimes_per_pod_failures_and_transitions() {
    let mut h = harness("tcp_state.rhai", &[]);
    h.counts(
        "lifetime",
        vec![
            (f! { netns: WEB, slot: 9 }, 3),
            (f! { netns: DB, slot: 0 }, 2),
            (f! { netns: WEB, slot: 11 }, 1),
        ],
    );
    h.counts(
        "lifetime_sum",
        vec![(f! { netns: DB }, 1), (f! { netns: WEB }, 3000)],
    );
    let fail = |reason: &str, family: &str| f! { netns: WEB, reason: reason, family: family };
    h.counts(
        "failed",
        vec![(fail("REFUSED", "IPv4"), 5), (fail("TIMEOUT", "IPv6"), 1)],
    );
    h.counts(
        "counts",
        vec![(
            f! { netns: WEB, oldstate: "SYN_SENT", newstate: "ESTABLISHED" },
            4,
        )],
    );
    h.inst.on_tick();
    h.no_errors();

    const M: &str = "sonde_tcp_state_connection_lifetime_seconds";
    h.expect(&format!("{M}_count"), &[(&["pod=web-1"], "4")]);
    // 3000 ms, and db-0's 1 ms.
    h.expect(
        &format!("{M}_sum"),
        &[(&["pod=web-1"], "3"), (&["pod=db-0"], "0.001")],
    );
    h.expect(
        &format!("{M}_bucket"),
        &[
            (&["pod=web-1", "le=0.512"], "3"),
            (&["pod=web-1", "le=1.024"], "3"),
            (&["pod=web-1", "le=2.048"], "4"),
            (&["pod=db-0", "le=0.001"], "2"),
        ],
    );
    h.expect(
        "sonde_tcp_state_connect_failures_total",
        &[
            (&["reason=REFUSED", "family=IPv4"], "5"),
            (&["reason=TIMEOUT", "family=IPv6"], "1"),
        ],
    );
    h.expect(
        "sonde_tcp_state_transitions_total",
        &[(&["pod=web-1", "from=SYN_SENT", "to=ESTABLISHED"], "4")],
    );
}

#[test]
fn tcp_state_failed_connect_event() {
    let mut h = harness("tcp_state.rhai", &[("emit_events", "true")]);
    let ev = |elapsed: i64, reason: &str, err: i64| {
        f! {
            netns: WEB, saddr: "10.0.0.5", sport: 41000, daddr: "10.0.9.9", dport: 5432,
            reason: reason, err: err, elapsed_ns: elapsed, family: 2, stack: -1,
        }
    };
    h.record(ev(3_000_000_000, "TIMEOUT", 110));
    h.record(ev(0, "REFUSED", 111));
    assert_eq!(
        h.events(),
        vec![
            "type=TCPCONNECT_FAILED pod=web-1 namespace=shop protocol=TCP saddr=10.0.0.5 sport=41000 daddr=10.0.9.9 dport=5432 reason=TIMEOUT elapsed=3s err=110",
            "type=TCPCONNECT_FAILED pod=web-1 namespace=shop protocol=TCP saddr=10.0.0.5 sport=41000 daddr=10.0.9.9 dport=5432 reason=REFUSED err=111",
        ]
    );
}

/// softirq: histograms per vector and phase from the kernel's slots, sums and slow
/// counts from its totals; events named by phase and tier.
#[test]
fn softirq_histograms_counts_and_event_types() {
    let mut h = harness("softirq.rhai", &[("very_slow_ns", "100ms")]);
    let slot = |phase: &str, slot: i64| f! { vec: "NET_RX", phase: phase, slot: slot };
    h.counts(
        "hist",
        vec![
            (slot("DELAY", 10), 3),
            (slot("DELAY", 12), 1),
            (slot("RUN", 11), 5),
        ],
    );
    h.structs(
        "totals",
        vec![
            (
                f! { vec: "NET_RX", phase: "DELAY" },
                f! { count: 4, sum_ns: 5000, slow: 1, very_slow: 0 },
            ),
            (
                f! { vec: "NET_RX", phase: "RUN" },
                f! { count: 5, sum_ns: 7000, slow: 2, very_slow: 1 },
            ),
        ],
    );
    h.inst.on_tick();
    h.no_errors();
    const DELAY: &str = "sonde_softirq_delay_seconds";
    h.expect(&format!("{DELAY}_count"), &[(&["vector=NET_RX"], "4")]);
    h.expect(&format!("{DELAY}_sum"), &[(&["vector=NET_RX"], "5e-6")]);
    // Slot 10 holds (512 ns, 1024 ns]: 3 samples at or under 1.024 µs.
    h.expect(
        &format!("{DELAY}_bucket"),
        &[(&["vector=NET_RX", "le=1.024e-6"], "3")],
    );
    h.expect(
        "sonde_softirq_run_seconds_count",
        &[(&["vector=NET_RX"], "5")],
    );
    h.expect(
        "sonde_softirq_slow_total",
        &[
            (&["vector=NET_RX", "phase=delay"], "1"),
            (&["vector=NET_RX", "phase=run"], "2"),
        ],
    );
    h.expect(
        "sonde_softirq_very_slow_total",
        &[(&["vector=NET_RX", "phase=run"], "1")],
    );

    let ev = |phase: &str, ns: i64| {
        f! { vec: "TIMER", phase: phase, latency_ns: ns, cpu: 1, pid: 15, comm: "ksoftirqd/1" }
    };
    h.record(ev("DELAY", 20_000_000));
    h.record(ev("RUN", 150_000_000));
    assert_eq!(
        h.events(),
        vec![
            "type=SOFTIRQ_SCHED_SLOW comm=ksoftirqd/1 cpu=1 latency_ns=20000000 pid=15 vector=TIMER",
            "type=SOFTIRQ_EXCUTE_100MS comm=ksoftirqd/1 cpu=1 latency_ns=150000000 pid=15 vector=TIMER",
        ]
    );
}

/// bio_latency: per-disk histograms and totals, per-pod request counts split by
/// slow, events BIOLAT_SLOW / BIOLAT_100MS with the disk and its dev number.
#[test]
fn bio_latency_histograms_pods_and_events() {
    let mut h = harness("bio_latency.rhai", &[]);
    h.counts(
        "hist",
        vec![
            (f! { disk: "sda", op: "READ", slot: 17 }, 6),
            (f! { disk: "sda", op: "READ", slot: 24 }, 1),
        ],
    );
    h.structs(
        "totals",
        vec![(
            f! { disk: "sda", op: "READ" },
            f! { ios: 7, bytes: 28672, latency_ns: 20_000_000, slow: 1, very_slow: 0 },
        )],
    );
    let pods = |slow: i64| f! { netns: DB, disk: "sda", op: "READ", slow: slow };
    h.counts("counts", vec![(pods(0), 6), (pods(1), 1)]);
    h.inst.on_tick();
    h.no_errors();
    h.expect(
        "sonde_bio_latency_seconds_count",
        &[(&["disk=sda", "op=READ"], "7")],
    );
    h.expect("sonde_bio_latency_bytes_total", &[(&["disk=sda"], "28672")]);
    h.expect(
        "sonde_bio_latency_requests_total",
        &[
            (&["pod=db-0", "disk=sda", "slow=true"], "1"),
            (&["pod=db-0", "disk=sda", "slow=false"], "6"),
        ],
    );

    let ev = |ns: i64| {
        f! {
            netns: DB, disk: "sda", op: "WRITE", major: 8, minor: 0, bytes: 4096,
            sector: 2048, latency_ns: ns, error: 0, pid: 42, comm: "postgres",
        }
    };
    h.record(ev(12_000_000));
    h.record(ev(250_000_000));
    let text = h.events();
    assert!(
        text[0].starts_with("type=BIOLAT_SLOW pod=db-0 namespace=data"),
        "{text:?}"
    );
    for part in ["disk=sda", "dev=8:0", "op=WRITE", "bytes=4096"] {
        assert!(text[0].contains(part), "{part}: {text:?}");
    }
    assert!(text[1].starts_with("type=BIOLAT_100MS "), "{text:?}");
}

/// flow: kernel `peers` entries folded into bounded series: the peer pod when known,
/// else "external" (peer=pod) or the masked network (peer=subnet).
#[test]
fn flow_peer_labels_and_sums() {
    let key = |dir: &str, proto: &str, peer: &str, peer_netns: i64| {
        let known = (peer_netns != 0) as i64;
        f! { netns: WEB, dir: dir, l4proto: proto, peer: peer, peer_known: known, peer_netns: peer_netns }
    };
    let bytes = |bytes: i64, packets: i64| f! { bytes: bytes, packets: packets };
    let entries = || {
        vec![
            (key("TX", "TCP", "93.184.216.0", 0), bytes(1000, 10)),
            (key("TX", "TCP", "2001:db8::", 0), bytes(500, 5)),
            (key("RX", "TCP", "::", DB), bytes(70, 1)),
            // A known peer that is no pod: the host.
            (key("TX", "UDP", "::", 1), bytes(64, 1)),
        ]
    };
    let mut h = harness("flow.rhai", &[]);
    h.structs("peers", entries());
    h.inst.on_tick();
    h.no_errors();
    const BYTES: &str = "sonde_flow_bytes_total";
    let web = ["namespace=shop", "pod=web-1"];
    h.expect(
        BYTES,
        &[
            // Both unknown peers fold into external.
            (
                &[
                    web[0],
                    web[1],
                    "direction=tx",
                    "protocol=TCP",
                    "peer=external",
                ],
                "1500",
            ),
            (
                &[
                    web[0],
                    web[1],
                    "direction=rx",
                    "protocol=TCP",
                    "peer=data/db-0",
                ],
                "70",
            ),
            (
                &[web[0], web[1], "direction=tx", "protocol=UDP", "peer=host"],
                "64",
            ),
        ],
    );
    assert_eq!(h.series(BYTES).len(), 3, "{:?}", h.series(BYTES));

    let mut h = harness("flow.rhai", &[("peer", "subnet"), ("peer_prefix4", "16")]);
    h.structs("peers", entries());
    h.inst.on_tick();
    h.expect(
        "sonde_flow_packets_total",
        &[
            (&["peer=93.184.216.0/16"], "10"),
            (&["peer=2001:db8::/64"], "5"),
            (&["peer=data/db-0"], "1"),
        ],
    );
}

/// virtcmd_latency: histogram from the kernel's slots, all and slow commands by class
/// name, events for slow commands.
#[test]
fn virtcmd_latency_histogram_counts_and_events() {
    let mut h = harness("virtcmd_latency.rhai", &[("threshold_ns", "1ms")]);
    h.counts("hist", vec![(f! { slot: 20 }, 3), (f! { slot: 24 }, 1)]);
    let key = |class: i64, cmd: i64, slow: i64| f! { class: class, cmd: cmd, slow: slow };
    h.counts(
        "counts",
        vec![(key(0, 1, 0), 3), (key(0, 1, 1), 1), (key(4, 0, 0), 2)],
    );
    h.inst.on_tick();
    h.no_errors();
    h.expect("sonde_virtcmd_latency_seconds_count", &[(&[], "4")]);
    h.expect(
        "sonde_virtcmd_latency_commands_total",
        &[(&["class=RX", "command=1"], "4"), (&["class=MQ"], "2")],
    );
    const SLOW: &str = "sonde_virtcmd_latency_slow_commands_total";
    h.expect(SLOW, &[(&["class=RX", "command=1"], "1")]);
    assert_eq!(h.series(SLOW).len(), 1, "{:?}", h.series(SLOW));

    h.record(f! { class: 1, cmd: 1, latency_ns: 25_000_000, comm: "ip", pid: 42, ok: 1 });
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert!(
        events[0].starts_with("type=VIRTCMDLATENCY")
            && events[0].contains("class=MAC")
            && events[0].contains("latency=25000000"),
        "{events:?}"
    );
}

/// socket_latency: kernel log2 slots grouped per (netns, direction) with their sums,
/// counts labelled with the thresholds from the params, events for slow reads.
#[test]
fn socket_latency_histograms_thresholds_and_events() {
    let mut h = harness("socket_latency.rhai", &[("slow_ns", "5ms")]);
    let slot = |netns: i64, dir: &str, slot: i64| f! { netns: netns, dir: dir, slot: slot };
    h.counts(
        "hist",
        vec![
            (slot(WEB, "READ", 10), 5),
            (slot(WEB, "READ", 28), 2),
            (slot(WEB, "WRITE", 12), 3),
            (slot(DB, "READ", 9), 1),
        ],
    );
    h.counts(
        "sums",
        vec![
            (f! { netns: WEB, dir: "READ" }, 300_005_000),
            (f! { netns: WEB, dir: "WRITE" }, 12_000),
            (f! { netns: DB, dir: "READ" }, 500),
        ],
    );
    let over = |over: &str| f! { netns: WEB, dir: "READ", over: over };
    h.counts("counts", vec![(over("SLOW"), 2), (over("THRESHOLD"), 2)]);
    h.inst.on_tick();
    h.no_errors();

    const M: &str = "sonde_socket_latency_seconds";
    h.expect(
        &format!("{M}_count"),
        &[
            (&["pod=web-1", "direction=read"], "7"),
            (&["pod=web-1", "direction=write"], "3"),
            (&["pod=db-0", "direction=read"], "1"),
        ],
    );
    assert_eq!(h.series(&format!("{M}_count")).len(), 3);
    h.expect(
        &format!("{M}_sum"),
        &[(&["pod=web-1", "direction=read"], "0.300005")],
    );
    // Slot 10 is (512, 1024] ns: all 5 are under le=1.024e-6; slot 28 under 2^28 ns.
    h.expect(
        &format!("{M}_bucket"),
        &[
            (&["pod=web-1", "direction=read", "le=1.024e-6"], "5"),
            (&["pod=web-1", "direction=read", "le=0.268435456"], "7"),
        ],
    );
    const SLOW: &str = "sonde_socket_latency_slow_total";
    h.expect(
        SLOW,
        &[
            (&["threshold=5ms", "direction=read"], "2"),
            (&["threshold=100ms", "direction=read"], "2"),
        ],
    );
    assert_eq!(h.series(SLOW).len(), 2);

    h.record(f! {
        netns: WEB, dir: "READ", latency_ns: 150_000_000, l4proto: "TCP", family: 10,
        saddr: "fd00::1", sport: 8080, daddr: "fd00::2", dport: 40000, bytes: 100,
        pid: 42, comm: "server",
    });
    let text = &h.events()[0];
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
    let key = |kind: &str, proto: &str| f! { netns: DNS, kind: kind, l4proto: proto };
    h.counts(
        "counts",
        vec![
            (key("UDP_RCVBUF", "UDP"), 399),
            (key("SEND_BUF_LIMIT", "TCP"), 3),
        ],
    );
    h.inst.on_tick();
    const M: &str = "sonde_sock_pressure_refusals_total";
    h.expect(
        M,
        &[
            (&["pod=dns-0", "kind=UDP_RCVBUF", "protocol=UDP"], "399"),
            (&["pod=dns-0", "kind=SEND_BUF_LIMIT", "protocol=TCP"], "3"),
        ],
    );
    assert_eq!(h.series(M).len(), 2);

    // Kinds and protocols by name, `allocated` a signed field.
    let ev = |kind: &str, allocated: i64| {
        f! {
            netns: DNS, kind: kind, l4proto: "UDP", family: 2, saddr: "10.0.0.10", sport: 53,
            daddr: "0.0.0.0", dport: 0, rmem_alloc: 2304, rcvbuf: 2304, wmem_queued: 0,
            sndbuf: 212992, allocated: allocated,
        }
    };
    h.record(ev("UDP_RCVBUF", -12));
    h.record(ev("RECV_BUF_LIMIT", 90000));
    let events = h.events();
    let (a, b) = (&events[0], &events[1]);
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
    let key = |stage: &str| f! { netns: WEB, ifindex: 2, ifname: "eth0", stage: stage };
    let slot = |stage: &str, slot: i64| {
        let mut k = key(stage);
        k.push(("slot", Value::Int(slot)));
        k
    };
    h.counts(
        "hist",
        vec![
            (slot("QDISC", 10), 1),
            (slot("QDISC", 27), 3),
            (slot("DRIVER", 12), 4),
        ],
    );
    h.structs(
        "totals",
        vec![
            (key("QDISC"), f! { sum_ns: 400_000_000, slow: 3 }),
            (key("DRIVER"), f! { sum_ns: 8_000, slow: 0 }),
        ],
    );
    h.inst.on_tick();
    h.no_errors();
    let eth0 = ["interface=eth0", "namespace=shop", "pod=web-1"];
    const QDISC: &str = "sonde_netif_txlat_qdisc_seconds";
    h.expect(&format!("{QDISC}_count"), &[(&eth0, "4")]);
    h.expect(&format!("{QDISC}_sum"), &[(&eth0, "0.4")]);
    // Slot 27 holds (67 ms, 134 ms]: all four at or under 0.134 s, one under 1 µs.
    h.expect(
        &format!("{QDISC}_bucket"),
        &[
            (&[eth0[0], eth0[2], "le=1.024e-6"], "1"),
            (&[eth0[0], eth0[2], "le=0.134217728"], "4"),
        ],
    );
    h.expect("sonde_netif_txlat_driver_seconds_count", &[(&eth0, "4")]);
    const SLOW: &str = "sonde_netif_txlat_slow_packets_total";
    h.expect(
        SLOW,
        &[
            (&[eth0[0], eth0[2], "stage=qdisc"], "3"),
            (&[eth0[0], eth0[2], "stage=driver"], "0"),
        ],
    );
    assert_eq!(h.series(SLOW).len(), 2);

    let ev = |stage: &str, qdisc_ns: i64| {
        f! {
            netns: WEB, ifindex: 2, ifname: "eth0", stage: stage, latency_ns: 120_000_000,
            qdisc_ns: qdisc_ns, len: 1042, l4proto: "UDP", saddr: "10.1.2.3", sport: 5353,
            daddr: "10.1.9.8", dport: 53, family: 2,
        }
    };
    h.record(ev("QDISC", 0));
    h.record(ev("DRIVER", 5_000));
    assert_eq!(
        h.events(),
        vec![
            "type=TXLAT_QDISC_SLOW pod=web-1 namespace=shop protocol=UDP saddr=10.1.2.3 sport=5353 daddr=10.1.9.8 dport=53 interface=eth0 latency_ns=120000000 len=1042",
            "type=TXLAT_NETDEV_SLOW pod=web-1 namespace=shop interface=eth0 latency_ns=120000000 len=1042 qdisc_ns=5000",
        ]
    );
    h.no_errors();
}

/// kernel_latency: one histogram per pod, direction and interval from the kernel's
/// slots and totals; events by direction with the stage times their interval has.
#[test]
fn kernel_latency_histograms_and_stage_times() {
    let mut h = harness("kernel_latency.rhai", &[]);
    let key = |dir: &str, interval: &str| f! { netns: WEB, dir: dir, interval: interval };
    let slot = |dir: &str, interval: &str, slot: i64| {
        let mut k = key(dir, interval);
        k.push(("slot", Value::Int(slot)));
        k
    };
    h.counts(
        "hist",
        vec![
            (slot("RX", "RECV_READ", 14), 6),
            (slot("RX", "RECV_READ", 25), 2),
            (slot("TX", "TCP_DEVQ", 11), 9),
        ],
    );
    h.structs(
        "totals",
        vec![
            (key("RX", "RECV_READ"), f! { sum_ns: 60_000_000, slow: 2 }),
            (key("TX", "TCP_DEVQ"), f! { sum_ns: 9_000, slow: 0 }),
        ],
    );
    h.inst.on_tick();
    h.no_errors();
    const M: &str = "sonde_kernel_latency_seconds";
    h.expect(
        &format!("{M}_count"),
        &[
            (&["pod=web-1", "direction=rx", "interval=recv_read"], "8"),
            (&["pod=web-1", "direction=tx", "interval=tcp_devq"], "9"),
        ],
    );
    assert_eq!(h.series(&format!("{M}_count")).len(), 2);
    h.expect(
        &format!("{M}_sum"),
        &[(&["direction=rx", "interval=recv_read"], "0.06")],
    );
    h.expect(
        "sonde_kernel_latency_slow_packets_total",
        &[(&["direction=rx", "interval=recv_read"], "2")],
    );

    let ev = |dir: &str, interval: &str, mid: i64| {
        f! {
            netns: WEB, dir: dir, interval: interval, latency_ns: 30_000_000, mid_ns: mid,
            len: 100, l4proto: "TCP", saddr: "fd00::1", sport: 40000, daddr: "fd00::2",
            dport: 80, family: 10,
        }
    };
    h.record(ev("RX", "RECV_READ", 1_000));
    h.record(ev("RX", "IP_RCV", 4_000));
    h.record(ev("TX", "IP_XMIT", 29_000_000));
    h.record(ev("TX", "TCP_DEVQ", 0));
    let tuple = "protocol=TCP saddr=fd00::1 sport=40000 daddr=fd00::2 dport=80";
    assert_eq!(
        h.events(),
        vec![
            format!("type=RXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=recv_read latency_ns=30000000 len=100 socket_ns=29999000 stack_ns=1000"),
            format!("type=RXKERNEL_SLOW pod=web-1 namespace=shop {tuple} input_ns=29996000 interval=ip_rcv latency_ns=30000000 len=100 prerouting_ns=4000"),
            format!("type=TXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=ip_xmit latency_ns=30000000 len=100 output_ns=29000000 postrouting_ns=1000000"),
            format!("type=TXKERNEL_SLOW pod=web-1 namespace=shop {tuple} interval=tcp_devq latency_ns=30000000 len=100"),
        ]
    );
    h.no_errors();
}
