use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Map};

use super::*;
use crate::event::{Event, EventSink};
use crate::metrics::Registry;

#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

struct FakeMaps;

impl MapReader for FakeMaps {
    fn entries(&self, map: &str) -> Result<Array, MapReadError> {
        let entry = |pod: &str, slot: i64, value: i64| {
            let mut key = Map::new();
            key.insert("pod".into(), pod.into());
            key.insert("slot".into(), Dynamic::from_int(slot));
            let mut e = Map::new();
            e.insert("key".into(), Dynamic::from_map(key));
            e.insert("value".into(), Dynamic::from_int(value));
            Dynamic::from_map(e)
        };
        match map {
            "hist" => Ok(vec![entry("a", 1, 5), entry("b", 3, 2), entry("a", 3, 1)]),
            _ => Err(MapReadError::NoSuchMap {
                map: map.to_string(),
                known: vec!["hist".into()],
            }),
        }
    }
}

struct Harness {
    registry: Arc<Registry>,
    sink: Arc<Sink>,
    printed: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            registry: Arc::new(Registry::new("n1")),
            sink: Arc::default(),
            printed: Arc::default(),
        }
    }

    fn ctx(&self, name: &str) -> ScriptContext {
        let printed = self.printed.clone();
        ScriptContext {
            name: name.into(),
            node: "n1".into(),
            maps: Arc::new(FakeMaps),
            events: self.sink.clone(),
            registry: self.registry.clone(),
            print: Arc::new(move |s: &str| printed.lock().unwrap().push(s.to_string())),
            pods: Arc::new(crate::pods::HostResolver::with_host_netns(1, "n1")),
        }
    }

    fn start_with(&self, name: &str, source: &str, limits: &Limits) -> Instance {
        let script = Script::compile(&format!("{name}.rhai"), source, limits).unwrap();
        let params = script.manifest().resolve_params(&[]).unwrap();
        Instance::start(&script, &params, self.ctx(name), limits).unwrap()
    }

    fn start(&self, name: &str, source: &str) -> Instance {
        self.start_with(name, source, &Limits::default())
    }
}

fn event(ns: &str, pod: &str, kind: &str) -> Map {
    let mut p = Map::new();
    p.insert("namespace".into(), ns.into());
    p.insert("name".into(), pod.into());
    p.insert("node".into(), "n1".into());
    let mut ev = Map::new();
    ev.insert("pod".into(), Dynamic::from_map(p));
    ev.insert("kind".into(), kind.into());
    ev.insert("saddr".into(), "10.0.0.1".into());
    ev.insert("sport".into(), Dynamic::from_int(443));
    ev
}

fn eval<T: Clone + Send + Sync + 'static>(expr: &str) -> T {
    let engine = engine(&Limits::default(), &ScriptContext::detached("t"));
    engine
        .eval::<T>(expr)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

pub(super) fn compile_err(source: &str) -> String {
    Script::compile("x.rhai", source, &Limits::default())
        .err()
        .expect("an error")
        .to_string()
}

// ---- compile errors and the manifest ----

#[test]
fn compile_errors_carry_file_line_and_column() {
    let e = compile_err("fn init() {\n    let x = 1;\n    let y = ;\n}\n");
    assert!(e.starts_with("x.rhai:3:13: "), "{e}");
    let e = compile_err("fn on_event() { }");
    assert_eq!(e, "x.rhai:1:1: on_event(ev) takes one parameter: the event");
    let e = compile_err("fn f() { eval(\"1\") }");
    assert!(e.starts_with("x.rhai:1:10: ") && e.contains("eval"), "{e}");
}

#[test]
fn manifest_map_is_read_in_declaration_order() {
    let src = r#"//! Resets, per pod.
//! Second line.

const PROBE = #{
    program: "tcp_reset",
    params: #{ threshold_ms: 10, stack: false, ratio: 0.5, iface: "eth0" },
    interval: "2s",
};
"#;
    let s = Script::compile("x.rhai", src, &Limits::default()).unwrap();
    let m = s.manifest();
    assert_eq!(m.program.map(|p| p.name()), Some("tcp_reset"));
    assert_eq!(m.interval, Duration::from_secs(2));
    assert_eq!(m.description, "Resets, per pod.\nSecond line.");
    assert_eq!(
        m.params,
        vec![
            ("threshold_ms".to_string(), ParamValue::Int(10)),
            ("stack".to_string(), ParamValue::Bool(false)),
            ("ratio".to_string(), ParamValue::Float(0.5)),
            ("iface".to_string(), ParamValue::Str("eth0".into())),
        ]
    );
}

#[test]
fn manifest_shorthand_and_absence() {
    let s = Script::compile(
        "x.rhai",
        "const PROBE = \"packet_loss\";",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(s.manifest().program.map(|p| p.name()), Some("packet_loss"));
    assert_eq!(s.manifest().interval, Duration::from_secs(10));
    let s = Script::compile("x.rhai", "fn on_tick() {}", &Limits::default()).unwrap();
    assert_eq!(s.manifest().program, None);
    assert!(s.manifest().params.is_empty());
}

#[test]
fn manifest_errors_point_at_the_probe_and_say_what_is_expected() {
    let e = compile_err(
        "// x\nconst PROBE = #{\n    program: \"tcp_reset\",\n    intervl: \"10s\",\n};\n",
    );
    assert_eq!(e, "x.rhai:4:5: PROBE: unknown key `intervl`; expected one of: program, params, interval, description");
    let e = compile_err("const PROBE = #{ program: \"tcp_reset\", interval: \"10 sec\" };");
    assert_eq!(
        e,
        "x.rhai:1:40: PROBE: interval: expected a duration like \"10s\" (units ns, us, ms, s, m, h), got \"10 sec\""
    );
    // An interval past a day overflowed the tick timer's clock (a panic).
    let e = compile_err("const PROBE = #{ interval: 9223372036854775807 };");
    assert!(
        e.starts_with("x.rhai:1:18: PROBE: interval: ") && e.ends_with("is too long; at most 24h"),
        "{e}"
    );
    let e = compile_err("const PROBE = #{ program: 42 };");
    assert_eq!(
        e,
        "x.rhai:1:18: PROBE: program: expected a string like \"tcp_reset\", got i64"
    );
    let e = compile_err("const PROBE = #{ params: #{ x: [1] } };");
    assert!(
        e.starts_with("x.rhai:1:29: PROBE: params.x: expected a bool, integer, float or string"),
        "{e}"
    );
    let e = compile_err("\n\nconst PROBE = 42;");
    assert!(
        e.starts_with("x.rhai:3:1: PROBE: expected a program name string"),
        "{e}"
    );
    let e = compile_err("let PROBE = \"x\";");
    assert!(e.contains("declare it with `const PROBE"), "{e}");
}

fn params_script() -> Script {
    let src = r#"const PROBE = #{ program: "tcp_reset", params: #{ threshold_ms: 10, stack: false, ratio: 0.5, name: "x" } };"#;
    Script::compile("x.rhai", src, &Limits::default()).unwrap()
}

fn resolve(overrides: &[(&str, &str)]) -> Result<Vec<(String, ParamValue)>, ScriptError> {
    let o: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    params_script().manifest().resolve_params(&o)
}

fn get(params: &[(String, ParamValue)], name: &str) -> ParamValue {
    params.iter().find(|(n, _)| n == name).unwrap().1.clone()
}

#[test]
fn params_resolve_to_the_type_of_their_default() {
    let p = resolve(&[
        ("stack", "1"),
        ("threshold_ms", "25"),
        ("ratio", "0.75"),
        ("name", "eth1"),
    ])
    .unwrap();
    assert_eq!(get(&p, "stack"), ParamValue::Bool(true));
    assert_eq!(get(&p, "threshold_ms"), ParamValue::Int(25));
    assert_eq!(get(&p, "ratio"), ParamValue::Float(0.75));
    assert_eq!(get(&p, "name"), ParamValue::Str("eth1".into()));
    assert_eq!(
        get(&resolve(&[("stack", "off")]).unwrap(), "stack"),
        ParamValue::Bool(false)
    );
    // Defaults stay when not overridden.
    assert_eq!(
        get(&resolve(&[]).unwrap(), "threshold_ms"),
        ParamValue::Int(10)
    );
}

#[test]
fn duration_params_convert_to_the_unit_in_their_name() {
    assert_eq!(
        get(&resolve(&[("threshold_ms", "1s")]).unwrap(), "threshold_ms"),
        ParamValue::Int(1000)
    );
    assert_eq!(
        get(
            &resolve(&[("threshold_ms", "250ms")]).unwrap(),
            "threshold_ms"
        ),
        ParamValue::Int(250)
    );
    let e = resolve(&[("threshold_ms", "1500us")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "param `threshold_ms`: expected an integer or a duration like \"10ms\" (the default is 10), got `1500us`"
    );
}

#[test]
fn param_errors_name_the_param_and_what_is_known() {
    assert_eq!(
        resolve(&[("stak", "true")]).unwrap_err().to_string(),
        "unknown param `stak` (did you mean `stack`?); known params: threshold_ms, stack, ratio, name"
    );
    assert_eq!(
        resolve(&[("stack", "maybe")]).unwrap_err().to_string(),
        "param `stack`: expected a bool (true/false/1/0) (the default is false), got `maybe`"
    );
    assert!(resolve(&[("ratio", "fast")])
        .unwrap_err()
        .to_string()
        .contains("expected a number"));
    let none = Script::compile("x.rhai", "", &Limits::default()).unwrap();
    let e = none
        .manifest()
        .resolve_params(&[("a".into(), "1".into())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("declares no params"), "{e}");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("s").is_err());
}

// ---- handlers, state, limits ----

#[test]
fn init_gets_params_and_state_lives_on_this() {
    let h = Harness::new();
    let src = r#"
        const PROBE = #{ params: #{ threshold_ms: 10, iface: "eth0" } };
        const LIMIT = 3;
        fn init(params) { this.t = params.threshold_ms; this.i = params.iface; this.n = 0; }
        fn on_event(ev) { this.n += 1; if this.n > LIMIT { print(`over ${this.t} on ${this.i}`); } }
    "#;
    let mut inst = h.start("s", src);
    for _ in 0..4 {
        inst.on_event(event("a", "b", "X"));
    }
    let state = inst.state().read_lock::<Map>().unwrap().clone();
    assert_eq!(state["n"].as_int().unwrap(), 4);
    assert_eq!(
        *h.printed.lock().unwrap(),
        vec!["over 10 on eth0".to_string()]
    );
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
}

#[test]
fn missing_handlers_are_fine() {
    let h = Harness::new();
    let mut inst = h.start("s", "fn on_tick() { }");
    assert!(!inst.has_on_event() && inst.has_on_tick() && !inst.has_on_exit() && !inst.has_init());
    inst.on_event(event("a", "b", "X"));
    inst.on_tick();
    inst.on_exit();
    assert!(inst.errors().is_empty());
}

fn error_total(r: &Registry, script: &str, kind: &str) -> f64 {
    r.script_errors().get(&[script, kind]).unwrap_or(0.0)
}

#[test]
fn an_endless_loop_is_stopped_and_counted() {
    let h = Harness::new();
    let limits = Limits {
        max_operations: 50_000,
        ..Limits::default()
    };
    let mut inst = h.start_with(
        "spin",
        "fn on_tick() { loop { } } fn on_exit() { this.ok = true; }",
        &limits,
    );
    inst.on_tick();
    inst.on_tick();
    assert_eq!(inst.errors().get("operations"), Some(&2));
    assert_eq!(error_total(&h.registry, "spin", "operations"), 2.0);
    inst.on_exit();
    assert_eq!(
        inst.errors().values().sum::<u64>(),
        2,
        "the next handler runs normally"
    );
}

#[test]
fn a_slow_bounded_loop_hits_the_deadline() {
    let h = Harness::new();
    let limits = Limits {
        max_operations: u64::MAX / 2,
        call_deadline: Duration::from_millis(5),
        ..Limits::default()
    };
    let mut inst = h.start_with(
        "slow",
        "fn on_tick() { let s = 0; for i in 0..50_000_000 { s += i; } }",
        &limits,
    );
    let t = Instant::now();
    inst.on_tick();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopped early: {:?}",
        t.elapsed()
    );
    assert_eq!(inst.errors().get("deadline"), Some(&1));
    assert_eq!(error_total(&h.registry, "slow", "deadline"), 1.0);
}

#[test]
fn a_huge_string_is_stopped() {
    let h = Harness::new();
    let mut inst = h.start(
        "big",
        "fn on_tick() { let s = \"xxxxxxxxxxxxxxxx\"; loop { s += s; } }",
    );
    inst.on_tick();
    assert_eq!(inst.errors().get("size"), Some(&1));
    // Rhai re-measures an array after each push: give the debug build time to get there.
    let limits = Limits {
        call_deadline: Duration::from_secs(30),
        ..Limits::default()
    };
    let mut inst = h.start_with(
        "arr",
        "fn on_tick() { let a = []; loop { a.push(1); } }",
        &limits,
    );
    inst.on_tick();
    assert_eq!(inst.errors().get("size"), Some(&1), "{:?}", inst.errors());
}

#[test]
fn deep_recursion_is_stopped() {
    let h = Harness::new();
    let mut inst = h.start(
        "deep",
        "fn down(n) { down(n + 1) } fn on_tick() { down(0); }",
    );
    inst.on_tick();
    assert_eq!(inst.errors().get("call_depth"), Some(&1));
}

#[test]
fn a_runtime_error_is_counted_and_the_next_call_works() {
    let h = Harness::new();
    let src = r#"
        fn init() { this.n = 0; }
        fn on_event(ev) {
            if ev.kind == "BAD" { throw "bad event"; }
            if ev.kind == "TYPE" { let x = ev.kind + [] - 1; }
            this.n += 1;
        }
    "#;
    let mut inst = h.start("flaky", src);
    inst.on_event(event("a", "b", "BAD"));
    inst.on_event(event("a", "b", "TYPE"));
    inst.on_event(event("a", "b", "OK"));
    assert_eq!(inst.errors().get("runtime"), Some(&1));
    assert_eq!(inst.errors().get("type"), Some(&1));
    assert_eq!(
        inst.state().read_lock::<Map>().unwrap()["n"]
            .as_int()
            .unwrap(),
        1
    );
    assert_eq!(error_total(&h.registry, "flaky", "runtime"), 1.0);
}

#[test]
fn init_failure_is_returned_with_a_position() {
    let h = Harness::new();
    let script = Script::compile(
        "bad.rhai",
        "fn init() {\n  throw \"no\";\n}",
        &Limits::default(),
    )
    .unwrap();
    let e = Instance::start(&script, &[], h.ctx("bad"), &Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "bad.rhai:2:3: init failed: no");
}

#[test]
fn the_sandbox_has_no_sleep_and_no_eval() {
    let h = Harness::new();
    let mut inst = h.start("zz", "fn on_tick() { sleep(5); }");
    let t = Instant::now();
    inst.on_tick();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(inst.errors().get("runtime"), Some(&1));
    assert!(compile_err("fn f() { eval(\"x\") }").contains("eval"));
    assert!(compile_err("import \"x\" as y;").contains("import"));
}

// ---- metrics from scripts ----

#[test]
fn metrics_handles_update_the_registry() {
    let h = Harness::new();
    let src = r#"
        fn init() {
            this.c = metrics::counter("resets_total", "Resets.", ["namespace", "pod", "kind"]);
            this.g = metrics::gauge("queue_bytes", "Queue.", ["pod"]);
            this.h = metrics::histogram("rtt_seconds", "RTT.", ["pod"], [0.001, 0.01, 1]);
            this.l = metrics::log2_histogram("lat_seconds", "Latency.", ["pod"], #{ scale: 1e-9, max_slot: 10 });
        }
        fn on_event(ev) {
            this.c.inc([ev.pod.namespace, ev.pod.name, ev.kind]);
            this.c.add([ev.pod.namespace, ev.pod.name, ev.kind], 2);
            this.g.set([ev.pod.name], 7);
            this.g.add([ev.pod.name], -2.5);
            this.h.observe([ev.pod.name], 0.005);
            this.l.observe([ev.pod.name], 1000);
        }
        fn on_tick() {
            this.c.set_total(["shop", "web", "KERNEL"], 40);
            this.l.set_buckets(["k"], [0, 1, 2], 5);
        }
    "#;
    let mut inst = h.start("m", src);
    inst.on_event(event("shop", "web", "NOSOCK"));
    inst.on_tick();
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
    let text = h.registry.render_prometheus();
    for line in [
        r#"sonde_resets_total{node="n1",namespace="shop",pod="web",kind="NOSOCK"} 3"#,
        r#"sonde_resets_total{node="n1",namespace="shop",pod="web",kind="KERNEL"} 40"#,
        r#"sonde_queue_bytes{node="n1",pod="web"} 4.5"#,
        r#"sonde_rtt_seconds_bucket{node="n1",pod="web",le="0.01"} 1"#,
        r#"sonde_lat_seconds_bucket{node="n1",pod="web",le="1.024e-6"} 1"#,
        r#"sonde_lat_seconds_bucket{node="n1",pod="k",le="4e-9"} 3"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[test]
fn label_arity_mismatch_becomes_a_runtime_error() {
    let h = Harness::new();
    let src = r#"
        fn init() { this.c = metrics::counter("resets_total", "Resets.", ["namespace", "pod"]); }
        fn on_event(ev) { this.c.inc([ev.pod.name]); }
    "#;
    let mut inst = h.start("arity", src);
    inst.on_event(event("a", "b", "X"));
    assert_eq!(inst.errors().get("runtime"), Some(&1));
    let bad = h.start(
        "names",
        "fn on_tick() { metrics::counter(\"x_total\", \"X.\", [1]); }",
    );
    let mut bad = bad;
    bad.on_tick();
    assert_eq!(bad.errors().get("runtime"), Some(&1));
}

#[test]
fn series_survive_a_reload() {
    let h = Harness::new();
    let src = r#"
        fn init() { this.c = metrics::counter("reloads_total", "R.", ["pod"]); }
        fn on_event(ev) { this.c.inc([ev.pod.name]); }
    "#;
    let mut first = h.start("r", src);
    first.on_event(event("a", "b", "X"));
    drop(first);
    let mut second = h.start("r", src);
    second.on_event(event("a", "b", "X"));
    let c = h
        .registry
        .counter("reloads_total", "R.", &["pod"], 10)
        .unwrap();
    assert_eq!(c.get(&["b"]), Some(2.0));
}

// ---- events ----

#[test]
fn emit_takes_labels_from_the_current_event() {
    let h = Harness::new();
    let src = r#"
        fn on_event(ev) {
            if ev.kind == "OTHER" {
                emit("MOVED", #{ pod: #{ namespace: "ns2", name: "p2" }, x: 1 });
            } else if ev.kind == "STR" {
                emit("STR", #{ pod: "ns3/p3" });
            } else {
                emit("TCPRESET_" + ev.kind, #{ saddr: ev.saddr, sport: ev.sport });
            }
        }
        fn on_tick() { emit("TICK"); }
    "#;
    let mut inst = h.start("tcp_reset", src);
    inst.on_event(event("shop", "web-1", "NOSOCK"));
    inst.on_event(event("shop", "web-1", "OTHER"));
    inst.on_event(event("shop", "web-1", "STR"));
    inst.on_tick();
    let evs = h.sink.0.lock().unwrap();
    assert_eq!(evs.len(), 4);
    assert_eq!(
        evs[0].to_text(),
        "type=TCPRESET_NOSOCK pod=web-1 namespace=shop saddr=10.0.0.1 sport=443"
    );
    assert_eq!(evs[0].script, "tcp_reset");
    assert_eq!(evs[0].labels.node, "n1");
    assert!(evs[0].timestamp_ns > 0);
    assert_eq!(
        (evs[1].labels.namespace.as_str(), evs[1].labels.pod.as_str()),
        ("ns2", "p2")
    );
    assert!(
        !evs[1].fields.contains_key("pod"),
        "pod is a label, not a field"
    );
    assert_eq!(
        (evs[2].labels.namespace.as_str(), evs[2].labels.pod.as_str()),
        ("ns3", "p3")
    );
    assert_eq!(evs[3].labels.pod, "", "no event in progress: no pod");
}

/// Names one pod for every namespace, and counts how often it is asked.
#[derive(Default)]
struct CountingPods(std::sync::atomic::AtomicU64);

impl crate::pods::PodResolver for CountingPods {
    fn by_netns(&self, inode: u32) -> Arc<crate::pods::Pod> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(crate::pods::Pod {
            name: format!("pod-{inode}"),
            namespace: "shop".into(),
            node: "n1".into(),
            ..Default::default()
        })
    }
}

/// A `tcp_reset` record as the kernel writes it, decoded lazily.
fn reset_record(
    env: &Arc<crate::bpf::decode::DecodeEnv>,
    netns: u32,
    kind: u32,
) -> crate::bpf::decode::Record {
    crate::bpf::decode::tcp_reset_record(
        env,
        &[
            ("netns", &netns.to_ne_bytes()),
            ("kind", &kind.to_ne_bytes()),
        ],
    )
}

#[test]
fn emit_names_the_pod_of_a_record_only_when_it_emits() {
    let h = Harness::new();
    let pods = Arc::new(CountingPods::default());
    let env = Arc::new(crate::bpf::decode::DecodeEnv::offline(pods.clone()));
    let src = r#"
        fn on_event(ev) {
            if ev.kind == "NOSOCK" { emit("TCPRESET_" + ev.kind, #{ sport: 1 }); }
            if ev.kind == "ACTIVE" { this.pod = ev.pod.name; }
        }
    "#;
    let mut inst = h.start("tcp_reset", src);
    inst.on_record(reset_record(&env, 4026531999, 3)); // RECEIVE: no emit
    assert_eq!(
        pods.0.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a handler that neither emits nor reads ev.pod resolves no pod"
    );
    inst.on_record(reset_record(&env, 4026532001, 0)); // NOSOCK: emits
    inst.on_record(reset_record(&env, 4026532001, 0));
    inst.on_record(reset_record(&env, 4026532002, 1)); // ACTIVE: reads ev.pod
    assert_eq!(
        inst.errors().values().sum::<u64>(),
        0,
        "{:?}",
        inst.errors()
    );
    let evs = h.sink.0.lock().unwrap();
    assert_eq!(evs.len(), 2);
    for e in evs.iter() {
        assert_eq!(
            e.to_text(),
            "type=TCPRESET_NOSOCK pod=pod-4026532001 namespace=shop sport=1"
        );
        assert_eq!(e.labels.node, "n1");
    }
    let state = inst.state().read_lock::<Map>().unwrap();
    assert_eq!(state["pod"].to_string(), "pod-4026532002");
    assert_eq!(
        pods.0.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "each namespace is named once, then cached"
    );
}

#[test]
fn on_events_gets_the_records_in_order_in_batches() {
    let h = Harness::new();
    let pods = Arc::new(CountingPods::default());
    let env = Arc::new(crate::bpf::decode::DecodeEnv::offline(pods.clone()));
    let src = r#"
        fn init() { this.calls = 0; this.kinds = []; }
        fn on_events(evs) {
            this.calls += 1;
            for ev in evs { this.kinds.push(ev.kind); }
            emit("BATCH", #{ pod: evs[0].pod, n: evs.len() });
        }
        fn on_event(ev) { throw "not called when on_events is there"; }
    "#;
    let mut inst = h.start("batch", src);
    assert!(inst.has_on_events());
    let kinds = ["NOSOCK", "ACTIVE", "PROCESS", "RECEIVE"];
    let mut records: Vec<_> = (0..EVENTS_PER_CALL + 6)
        .map(|i| reset_record(&env, 7, (i % 4) as u32))
        .collect();
    inst.on_records(&mut records);
    assert!(records.is_empty());
    assert_eq!(
        inst.errors().values().sum::<u64>(),
        0,
        "{:?}",
        inst.errors()
    );
    let state = inst.state().read_lock::<Map>().unwrap();
    assert_eq!(state["calls"].as_int().unwrap(), 2);
    let got: Vec<String> = state["kinds"]
        .read_lock::<Array>()
        .unwrap()
        .iter()
        .map(|k| k.to_string())
        .collect();
    let want: Vec<String> = (0..EVENTS_PER_CALL + 6)
        .map(|i| kinds[i % 4].to_string())
        .collect();
    assert_eq!(got, want);
    let evs = h.sink.0.lock().unwrap();
    let text: Vec<String> = evs.iter().map(|e| e.to_text()).collect();
    assert_eq!(
        text,
        [
            format!("type=BATCH pod=pod-7 namespace=shop n={EVENTS_PER_CALL}"),
            "type=BATCH pod=pod-7 namespace=shop n=6".to_string()
        ]
    );
}

#[test]
fn on_events_takes_one_parameter() {
    let err = Script::compile("b.rhai", "fn on_events() {}", &Limits::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("b.rhai:1:") && err.contains("on_events(evs) takes one parameter"),
        "{err}"
    );
}

// ---- maps, tables, log ----

#[test]
fn bpf_map_reads_entries_and_reports_errors() {
    let h = Harness::new();
    let src = r#"
        fn on_tick() { this.n = bpf::map("hist").len(); }
        fn on_exit() { bpf::map("nope"); }
    "#;
    let mut inst = h.start("maps", src);
    inst.on_tick();
    assert_eq!(
        inst.state().read_lock::<Map>().unwrap()["n"]
            .as_int()
            .unwrap(),
        3
    );
    inst.on_exit();
    assert_eq!(inst.errors().get("runtime"), Some(&1));
}

#[test]
fn count_and_hist_print_a_bpftrace_like_summary() {
    let h = Harness::new();
    let src = r#"
        fn on_event(ev) {
            count("kinds", ev.kind);
            count("events");
            hist("port_hist", ev.sport);
            hist("lat", ev.kind, ev.sport * 3);
        }
    "#;
    let mut inst = h.start("oneliner", src);
    for kind in ["A", "B", "A", "A"] {
        inst.on_event(event("ns", "p", kind));
    }
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
    let s = h.registry.summary("oneliner");
    println!("{s}");
    let expected = "\
@events: 4

@kinds[B]: 1
@kinds[A]: 3

@lat[A]: count 3, sum 3987
  (1K, 2K] 3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
@lat[B]: count 1, sum 1329
  (1K, 2K] 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|

@port_hist: count 4, sum 1772
  (256, 512] 4 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
";
    assert_eq!(s, expected);
}

#[test]
fn tables_named_with_digits_or_units_count_every_event() {
    let h = Harness::new();
    let src = r#"
        fn on_event(ev) {
            count("2xx", ev.kind);
            count("read_wait_ns");
            hist("lat_ms", ev.sport);
            hist("rtt_us", ev.kind, ev.sport);
        }
    "#;
    let mut inst = h.start("units", src);
    for kind in ["A", "B", "A"] {
        inst.on_event(event("ns", "p", kind));
    }
    assert!(inst.errors().is_empty(), "{:?}", inst.last_error());
    let text = h.registry.render_prometheus();
    for line in [
        r#"sonde_2xx_total{node="n1",key="A"} 2"#,
        r#"sonde_read_wait_total{node="n1"} 3"#,
        r#"sonde_lat_seconds_sum{node="n1"} 1.329"#,
        r#"sonde_lat_seconds_bucket{node="n1",le="0.512"} 3"#,
        r#"sonde_rtt_seconds_count{node="n1",key="A"} 2"#,
    ] {
        assert!(text.contains(line), "no `{line}` in\n{text}");
    }
    let s = h.registry.summary("units");
    assert!(s.starts_with("@2xx[B]: 1\n@2xx[A]: 2\n"), "{s}");
    assert!(s.contains("\n@lat_ms: count 3, sum 1329\n"), "{s}");
    assert!(s.contains("\n@read_wait_ns: 3\n"), "{s}");
    assert!(s.contains("\n@rtt_us[A]: count 2, sum 886\n"), "{s}");
}

#[test]
fn multi_key_tables_take_a_map_and_keep_their_keys() {
    let h = Harness::new();
    let src = r#"
        fn on_event(ev) {
            count("conns", #{ pod: ev.pod.name, port: ev.sport });
            hist("lat_ns", #{ kind: ev.kind, pod: ev.pod.name }, ev.sport);
            if ev.kind == "B" {
                count("conns", #{ pod: ev.pod.name });
            }
        }
    "#;
    let mut inst = h.start("keys", src);
    for (pod, kind) in [
        ("web-1", "A"),
        ("web-1", "B"),
        ("web-2", "A"),
        ("web-1", "B"),
    ] {
        inst.on_event(event("shop", pod, kind));
    }
    assert_eq!(
        inst.errors().get("runtime"),
        Some(&1),
        "the call with other keys is reported once"
    );
    let (e, _) = inst.last_error().unwrap();
    assert_eq!(
        e,
        "on_event: keys.rhai:6:17: count(\"conns\", ...): the table has keys (pod, port) \
         since its first use (line 3), this call gives keys (pod); a table's keys are the \
         same in every call"
    );
    let text = h.registry.render_prometheus();
    for line in [
        r#"sonde_conns_total{node="n1",pod="web-1",port="443"} 3"#,
        r#"sonde_conns_total{node="n1",pod="web-2",port="443"} 1"#,
        r#"sonde_lat_seconds_count{node="n1",kind="B",pod="web-1"} 2"#,
    ] {
        assert!(text.contains(line), "no `{line}` in\n{text}");
    }
    let s = h.registry.summary("keys");
    assert!(
        s.starts_with(
            "@conns[pod=web-2, port=443]: 1\n@conns[pod=web-1, port=443]: 3\n\n\
             @lat_ns[kind=A, pod=web-1]: count 1, sum 443\n"
        ),
        "{s}"
    );
}

#[test]
fn a_table_that_cannot_be_exported_is_reported_once() {
    let h = Harness::new();
    let src = r#"
        fn on_event(ev) {
            count("lat ms", ev.kind);
            count("lat_us", ev.kind);
        }
    "#;
    let mut inst = h.start("clash", src);
    for _ in 0..5 {
        inst.on_event(event("ns", "p", "A"));
    }
    assert_eq!(inst.errors().get("runtime"), Some(&1));
    let (e, _) = inst.last_error().unwrap();
    assert_eq!(
        e,
        "on_event: clash.rhai:4:13: count(\"lat_us\", ...): table \"lat_us\" would be \
         exported as `sonde_lat_total`, as the table \"lat ms\" is; rename the table; the \
         table is left out from now on"
    );
    assert!(h
        .registry
        .render_prometheus()
        .contains(r#"sonde_lat_total{node="n1",key="A"} 5"#));

    // Two more mistakes that would fail every time, each in a script of its own
    // (the last error is kept at most once a second).
    for (src, want) in [
        (
            "fn on_tick() { count(\"ports\", [1, 2]); }",
            "t.rhai:1:16: count(\"ports\", ...): a table's key is one value, or a map of \
             named values: count(\"conns\", #{ pod: ev.pod.name, port: ev.dport })",
        ),
        (
            "fn on_tick() { hist(\"x\", 1); count(\"x\"); }",
            "t.rhai:1:30: count(\"x\", ...): \"x\" is a table of hist() (line 1); give this \
             one another name",
        ),
        (
            "fn init() { this.n = 0; }\n\
             fn on_tick() { this.n += 1; count(\"x\", if this.n == 1 { #{ a: 1 } } else { #{ b: 1 } }); }",
            "t.rhai:2:29: count(\"x\", ...): the table has keys (a) since its first use \
             (line 2), this call gives keys (b); a table's keys are the same in every call",
        ),
    ] {
        let mut inst = h.start("t", src);
        for _ in 0..3 {
            inst.on_tick();
        }
        assert_eq!(inst.errors().get("runtime"), Some(&1), "{src}");
        assert_eq!(inst.last_error().unwrap().0, format!("on_tick: {want}"));
    }
}

#[test]
fn tables_named_from_data_past_the_family_budget_are_not_all_remembered() {
    let h = Harness::new();
    h.registry.set_budgets(crate::metrics::Budgets {
        families_per_script: 2,
        total_series: 1000,
    });
    let mut inst = h.start("names", "fn on_event(ev) { count(ev.kind); }");
    for _ in 0..2 {
        for i in 0..1100 {
            inst.on_event(event("ns", "p", &format!("t{i}")));
        }
    }
    // t0 and t1 are counted; t2..t1023 fail once and are remembered as failed;
    // t1024.. are not remembered, and fail every time.
    assert_eq!(inst.errors().get("runtime"), Some(&(1098 + 76)));
    let text = h.registry.render_prometheus();
    assert!(text.contains(r#"sonde_t1_total{node="n1"} 2"#), "{text}");
}

#[test]
fn log_accepts_known_levels_only() {
    let h = Harness::new();
    let mut inst = h.start(
        "logs",
        "fn on_tick() { log(\"info\", \"hello\"); } fn on_exit() { log(\"loud\", 1); }",
    );
    inst.on_tick();
    assert!(inst.errors().is_empty());
    inst.on_exit();
    assert_eq!(inst.errors().get("runtime"), Some(&1));
}

// ---- stdlib ----

#[test]
fn net_helpers() {
    assert!(eval::<bool>(r#"net::is_private("10.1.2.3")"#));
    assert!(eval::<bool>(r#"net::is_private("::ffff:192.168.1.1")"#));
    assert!(eval::<bool>(r#"net::is_private("fd00::1")"#));
    assert!(!eval::<bool>(r#"net::is_private("8.8.8.8")"#));
    assert!(!eval::<bool>(r#"net::is_private("nope")"#));
    assert!(eval::<bool>(r#"net::in_cidr("10.1.2.3", "10.0.0.0/8")"#));
    assert!(!eval::<bool>(r#"net::in_cidr("11.1.2.3", "10.0.0.0/8")"#));
    assert!(eval::<bool>(r#"net::in_cidr("fd00::1:2", "fd00::/64")"#));
    assert!(!eval::<bool>(r#"net::in_cidr("fd01::1", "fd00::/16")"#));
    assert!(!eval::<bool>(r#"net::in_cidr("10.0.0.1", "fd00::/8")"#));
    let engine = engine(&Limits::default(), &ScriptContext::detached("t"));
    assert!(engine
        .eval::<bool>(r#"net::in_cidr("10.0.0.1", "10.0.0.0")"#)
        .is_err());
    assert_eq!(eval::<String>(r#"net::family("10.0.0.1")"#), "ipv4");
    assert_eq!(eval::<String>(r#"net::family("fd00::1")"#), "ipv6");
    assert_eq!(eval::<String>(r#"net::family("x")"#), "");
    assert_eq!(eval::<String>(r#"net::family("::ffff:1.2.3.4")"#), "ipv4");
    assert_eq!(eval::<String>("net::port_name(443)"), "https");
    assert_eq!(eval::<String>("net::port_name(33333)"), "33333");
    assert_eq!(
        eval::<String>(r#"net::endpoint("1.2.3.4", 80)"#),
        "1.2.3.4:80"
    );
    assert_eq!(
        eval::<String>(r#"net::endpoint("fd00::1", 80)"#),
        "[fd00::1]:80"
    );
}

#[test]
fn fmt_helpers() {
    assert_eq!(eval::<String>("fmt::duration(850)"), "850ns");
    assert_eq!(eval::<String>("fmt::duration(12_500)"), "12.5us");
    assert_eq!(eval::<String>("fmt::duration(1_500_000)"), "1.5ms");
    assert_eq!(eval::<String>("fmt::duration(2_250_000_000)"), "2.3s");
    assert_eq!(eval::<String>("fmt::duration(90_000_000_000)"), "1m30s");
    assert_eq!(eval::<String>("fmt::duration(7_500_000_000_000)"), "2h5m");
    assert_eq!(eval::<String>("fmt::duration(90e9)"), "1m30s");
    assert_eq!(eval::<String>("fmt::duration(-2500)"), "-2.5us");
    assert_eq!(eval::<String>("fmt::bytes(512)"), "512 B");
    assert_eq!(eval::<String>("fmt::bytes(1536)"), "1.5 KiB");
    assert_eq!(eval::<String>("fmt::bytes(1_258_291)"), "1.2 MiB");
    assert_eq!(eval::<String>("fmt::bytes(1536.0)"), "1.5 KiB");
    assert_eq!(eval::<String>("fmt::rate(125, 10)"), "12.5/s");
    assert_eq!(eval::<String>("fmt::rate(34_000, 10)"), "3.4k/s");
    assert_eq!(eval::<String>("fmt::rate(1, 0)"), "-");
    assert_eq!(eval::<String>(r#"fmt::pad("ab", 5) + "|""#), "ab   |");
    assert_eq!(eval::<String>("fmt::pad(42, -5)"), "   42");
    assert_eq!(eval::<String>(r#"fmt::pad("toolong", 3)"#), "toolong");
}

#[test]
fn hist_helpers() {
    assert_eq!(eval::<i64>("hist::log2_bucket(0)"), 0);
    assert_eq!(eval::<i64>("hist::log2_bucket(1)"), 0);
    assert_eq!(eval::<i64>("hist::log2_bucket(5)"), 3);
    assert_eq!(eval::<i64>("hist::log2_bucket(1024)"), 10);
    assert_eq!(eval::<i64>("hist::log2_bucket(2.5)"), 2);
    assert_eq!(
        eval::<Array>("hist::bucket_bounds(3)")
            .iter()
            .map(|v| v.as_int().unwrap())
            .collect::<Vec<_>>(),
        [4, 8]
    );
    assert_eq!(
        eval::<Array>("hist::bucket_bounds(0)")
            .iter()
            .map(|v| v.as_int().unwrap())
            .collect::<Vec<_>>(),
        [0, 1]
    );
    // 10 values in slot 3 = (4, 8]: the median interpolates to 6.
    assert_eq!(eval::<f64>("hist::percentile([0, 0, 0, 10], 50)"), 6.0);
    assert_eq!(eval::<f64>("hist::percentile([5, 0, 0, 5], 100)"), 8.0);
    assert_eq!(eval::<f64>("hist::percentile([], 99)"), 0.0);
    let engine = engine(&Limits::default(), &ScriptContext::detached("t"));
    assert!(engine.eval::<f64>("hist::percentile([1], 101)").is_err());

    let h = Harness::new();
    let src = r#"
        fn on_tick() { this.out = hist::from_map(bpf::map("hist"), "pod", "slot"); }
    "#;
    let mut inst = h.start("fm", src);
    inst.on_tick();
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
    let out = inst.state().read_lock::<Map>().unwrap()["out"]
        .clone()
        .into_array()
        .unwrap();
    let row = |i: usize| {
        let m = out[i].read_lock::<Map>().unwrap().clone();
        let buckets: Vec<i64> = m["buckets"]
            .clone()
            .into_array()
            .unwrap()
            .iter()
            .map(|v| v.as_int().unwrap())
            .collect();
        (m["key"].to_string(), buckets)
    };
    assert_eq!(row(0), ("a".to_string(), vec![0, 5, 0, 1]));
    assert_eq!(row(1), ("b".to_string(), vec![0, 0, 0, 2]));
}

/// bpf::hist groups a log2 map natively, by the key without its slot, as
/// hist::from_map does; a key without the slot field is a runtime error.
#[test]
fn bpf_hist_groups_slots_by_the_rest_of_the_key() {
    let h = Harness::new();
    let src = r#"
        fn on_tick() {
            this.out = [];
            for g in bpf::hist("hist") { this.out.push([g.key.pod, g.buckets]); }
        }
        fn on_exit() { bpf::hist("hist", "bucket"); }
    "#;
    let mut inst = h.start("bh", src);
    inst.on_tick();
    assert!(inst.errors().is_empty(), "{:?}", inst.errors());
    let out = inst.state().read_lock::<Map>().unwrap()["out"].to_string();
    assert_eq!(out, "[[\"a\", [0, 5, 0, 1]], [\"b\", [0, 0, 0, 2]]]");
    inst.on_exit();
    assert_eq!(format!("{:?}", inst.errors()), "{\"runtime\": 1}");
}

/// Not a timed assertion: prints the cost of on_event with a counting handler.
/// `cargo test -p sonde --release --lib per_event_cost -- --ignored --nocapture`

#[test]
fn instances_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Instance>();
    send_sync::<Script>();
    send_sync::<Registry>();
    send_sync::<crate::metrics::Counter>();
}

#[test]
fn emit_detection_ignores_words_that_contain_it() {
    use super::instance::calls_emit;
    assert!(calls_emit("fn on_event(ev) { emit(\"X\", #{}); }"));
    assert!(calls_emit("emit (\"X\", #{})"));
    assert!(!calls_emit(
        "const PROBE = #{ params: #{ emit_events: true } };"
    ));
    assert!(!calls_emit("fn remit(x) {} remit(1);"));
}

/// A recursive handler as deep as the limits allow, on a thread of `stack` bytes:
/// returns the errors counted (the process is still here: no overflow).
fn recurse_on(
    stack: usize,
    body: &str,
    depth: i64,
) -> std::collections::BTreeMap<&'static str, u64> {
    let src =
        format!("fn f(n) {{ if n == 0 {{ 0 }} else {{ {body} }} }}\nfn on_tick() {{ f({depth}) }}");
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let limits = Limits {
                max_call_levels: stack::MAX_CALL_LEVELS,
                ..Limits::default()
            };
            let mut inst = Harness::new().start_with("deep", &src, &limits);
            inst.on_tick();
            inst.errors().clone()
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Recursion past `max_call_levels` is a `call_depth` error; within it, on the
/// script stack, a plain recursive function runs to the end.
#[test]
fn recursion_up_to_the_cap_fits_the_script_stack() {
    let plain = "1 + f(n - 1)";
    let under = stack::MAX_CALL_LEVELS as i64 - 8;
    assert!(recurse_on(stack::SCRIPT_STACK_SIZE, plain, under).is_empty());
    let over = recurse_on(stack::SCRIPT_STACK_SIZE, plain, 1000);
    assert_eq!(over.get("call_depth"), Some(&1), "{over:?}");
}

/// The heaviest levels a script can write (every level 27 expressions deep), on a
/// 2 MiB thread (a tokio worker's default): stopped by the stack guard with a
/// `call_depth` error instead of overflowing the stack (an abort).
#[test]
fn the_heaviest_recursion_stops_cleanly_on_a_small_stack() {
    let nested = format!("{}f(n - 1){}", "1 + (".repeat(27), ")".repeat(27));
    let errors = recurse_on(2 << 20, &nested, 1000);
    assert_eq!(errors.get("call_depth"), Some(&1), "{errors:?}");
    let errors = recurse_on(stack::SCRIPT_STACK_SIZE, &nested, 1000);
    assert_eq!(errors.get("call_depth"), Some(&1), "{errors:?}");
}
