//! A script from an untrusted file, checked the way `sonde check` and a daemon reload
//! check it: `Script::compile` (Rhai parse, the `PROBE` manifest, handler
//! signatures), then the params resolved with overrides and each param that names a
//! kernel knob checked against it. Nothing runs.
//!
//! The input is the script, optionally followed by a NUL byte and override lines
//! `name=value` (what `--param` and the config's `scripts.params` give).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::script::{Limits, Script};

fuzz_target!(|data: &[u8]| {
    let (source, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let overrides: Vec<(String, String)> = String::from_utf8_lossy(rest)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let script = match Script::compile("fuzz.rhai", source, &Limits::default()) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let manifest = script.manifest();
    let params = match manifest.resolve_params(&overrides) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for (_, v) in &params {
        let _ = v.to_dynamic();
        let _ = v.to_string();
    }
    let Some(knobs) = manifest.program.map(|p| sonde::bpf::knobs(p.spec())) else {
        return;
    };
    for (name, value) in &params {
        if let Some(knob) = knobs.iter().find(|k| &k.name == name) {
            let _ = sonde::bpf::check_knob(knob, value);
        }
    }
});
