//! Every error a script can cause, as a person reads it: `file:line:column:` first
//! wherever the script has a line for it.

use super::*;

fn start(source: &str, limits: &Limits) -> Instance {
    let script = Script::compile("x.rhai", source, limits).unwrap();
    let params = script.manifest().resolve_params(&[]).unwrap();
    Instance::start(&script, &params, ScriptContext::detached("x"), limits).unwrap()
}

/// The last error of a handler run once, as `/status` and the log show it.
fn tick_error(source: &str, limits: &Limits) -> String {
    let mut inst = start(source, limits);
    inst.on_tick();
    inst.last_error().expect("the tick failed").0.clone()
}

use super::tests::compile_err;

#[test]
fn limit_errors_name_the_handler_line_and_the_limit() {
    let small = Limits {
        max_operations: 20_000,
        max_string_size: 1024,
        max_array_size: 100,
        max_map_size: 100,
        max_call_levels: 8,
        ..Limits::default()
    };
    for (source, want) in [
        (
            "// spin\nfn on_tick() {\n    loop { }\n}",
            "on_tick: x.rhai:2:1: stopped: more than 20000 operations in one call (limits.max_operations); does a loop never end?",
        ),
        (
            "\n\nfn on_tick() {\n    let s = \"xx\";\n    loop { s += s; }\n}",
            "on_tick: x.rhai:3:1: stopped: a string grew past 1024 bytes (limits.max_string_size)",
        ),
        (
            "fn on_exit() { }\n  fn  on_tick () {\n    let a = [];\n    loop { a.push(1); }\n}",
            "on_tick: x.rhai:2:3: stopped: an array grew past 100 items (limits.max_array_size)",
        ),
        (
            "fn on_tick() {\n    let m = #{};\n    for i in 0..1000 { let one = #{}; one[`k${i}`] = i; m += one; }\n}",
            "on_tick: x.rhai:1:1: stopped: a map grew past 100 entries (limits.max_map_size)",
        ),
        (
            "fn down(n) {\n    down(n + 1)\n}\nfn on_tick() {\n    down(0);\n}",
            "on_tick: x.rhai:4:1: stopped: calls nested deeper than 8 (limits.max_call_levels); recurse less deeply",
        ),
    ] {
        assert_eq!(tick_error(source, &small), want, "{source}");
    }
    // An error Rhai places keeps its own position.
    assert_eq!(
        tick_error("fn on_tick() {\n    let x = 1;\n    x.nope();\n}", &small),
        "on_tick: x.rhai:3:7: Function not found: nope (i64)"
    );
}

#[test]
fn errors_of_module_calls_point_at_the_call() {
    // Rhai leaves an error out of a namespaced native call without a position; the
    // call's own is set (api::at_call), not the handler's `fn` line.
    let limits = Limits::default();
    for (source, want) in [
        (
            "fn on_tick() {\n    let x = 1;\n    let m = bpf::map(\"nope\");\n}",
            "on_tick: x.rhai:3:18: bpf::map(\"nope\"): ",
        ),
        (
            "fn on_tick() {\n\n    net::in_cidr(\"10.0.0.1\", \"10.0.0.0/99\");\n}",
            "on_tick: x.rhai:3:10: ",
        ),
        (
            "fn on_tick() {\n  hist::bucket_bounds(99);\n}",
            "on_tick: x.rhai:2:9: hist::bucket_bounds: slot 99 is not in 0..=63",
        ),
    ] {
        let got = tick_error(source, &limits);
        assert!(
            got.starts_with(want),
            "{source}\n got: {got}\nwant: {want}..."
        );
    }
    let script = Script::compile(
        "x.rhai",
        "fn init() {\n    let x = 1;\n    this.c = metrics::counter(\"lat_ms\", \"Latency.\", []);\n}",
        &limits,
    )
    .unwrap();
    let e = Instance::start(&script, &[], ScriptContext::detached("x"), &limits)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("x.rhai:3:23: init failed: invalid metric name `sonde_lat_ms`"),
        "{e}"
    );
}

#[test]
fn init_failures_start_with_their_position() {
    let script = Script::compile(
        "x.rhai",
        "fn init() {\n    let s = \"xx\";\n    loop { s += s; }\n}",
        &Limits::default(),
    )
    .unwrap();
    let e = Instance::start(
        &script,
        &[],
        ScriptContext::detached("x"),
        &Limits::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        e,
        "x.rhai:1:1: init failed: stopped: a string grew past 65536 bytes (limits.max_string_size)"
    );
}

#[test]
fn an_unknown_program_is_a_manifest_error_with_the_near_name() {
    let e = compile_err(
        "//! Resets.\nconst PROBE = #{\n    interval: \"5s\",\n    program: \"tcp_resets\",\n};\n",
    );
    assert!(
        e.starts_with("x.rhai:4:5: PROBE: program: unknown kernel program `tcp_resets` (did you mean `tcp_reset`?); built-in programs: "),
        "{e}"
    );
    let e = compile_err("const PROBE = \"no_such_probe\";");
    assert!(
        e.starts_with(
            "x.rhai:1:1: PROBE: unknown kernel program `no_such_probe`; built-in programs: "
        ),
        "{e}"
    );
    assert!(e.contains(" tcp_reset, "), "{e}");
}

#[test]
fn a_param_default_that_does_not_fit_its_kernel_knob_points_at_the_param() {
    let e = compile_err(
        "const PROBE = #{\n    program: \"kernel_latency\",\n    params: #{\n        threshold_ms: \"yes\",\n    },\n};\n",
    );
    assert_eq!(
        e,
        "x.rhai:4:9: PROBE: params.threshold_ms: expected an integer, got the string \"yes\" (it sets the kernel knob `threshold_ms` of kernel_latency)"
    );
    let e = compile_err("const PROBE = #{ program: \"tcp_reset\", params: #{ stack: 1.5 } };");
    assert!(
        e.starts_with(
            "x.rhai:1:51: PROBE: params.stack: expected a bool (or 0/1), got the number 1.5"
        ),
        "{e}"
    );
    let e = compile_err("const PROBE = #{ program: \"kernel_latency\", params: #{ variant: 2 } };");
    assert!(
        e.ends_with("params.variant: expected a variant name (a string), got the integer 2"),
        "{e}"
    );
}

#[test]
fn an_override_that_does_not_fit_its_kernel_knob_is_refused_before_loading() {
    let s = Script::compile(
        "x.rhai",
        "const PROBE = #{ program: \"flow\", params: #{ peer_prefix4: 24, variant: \"auto\" } };",
        &Limits::default(),
    )
    .unwrap();
    let resolve = |k: &str, v: &str| {
        s.manifest()
            .resolve_params(&[(k.into(), v.into())])
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(resolve("peer_prefix4", "16"), Ok(()));
    assert_eq!(
        resolve("peer_prefix4", "99999999999").unwrap_err(),
        "param `peer_prefix4`: 99999999999 does not fit an unsigned 32-bit knob (it sets the kernel knob `peer_prefix4` of flow)"
    );
    assert!(resolve("variant", "kprobes")
        .unwrap_err()
        .starts_with("param `variant`: no variant `kprobes`; variants: auto, "));
    assert_eq!(
        resolve("peer_prefx4", "16").unwrap_err(),
        "unknown param `peer_prefx4` (did you mean `peer_prefix4`?); known params: peer_prefix4, variant"
    );
}

#[test]
fn an_override_error_points_at_the_param_declaration() {
    let s = Script::compile(
        "x.rhai",
        "const PROBE = #{\n    program: \"tcp_reset\",\n    params: #{ emit_events: true, stack: false },\n};\n",
        &Limits::default(),
    )
    .unwrap();
    let e = s
        .manifest()
        .resolve_params(&[("stack".into(), "maybe".into())])
        .unwrap_err();
    assert_eq!(
        s.override_error(&e),
        "x.rhai:3:35: param `stack`: expected a bool (true/false/1/0) (the default is false), got `maybe`"
    );
    // An unknown param has no line of its own.
    let e = s
        .manifest()
        .resolve_params(&[("stak".into(), "1".into())])
        .unwrap_err();
    assert_eq!(
        s.override_error(&e),
        "x.rhai: unknown param `stak` (did you mean `stack`?); known params: emit_events, stack"
    );
}
