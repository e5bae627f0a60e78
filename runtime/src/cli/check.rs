//! `sonde check`: compile and validate scripts without loading anything.

use std::process::ExitCode;

use crate::bpf::catalog;
use crate::bpf::decode::ObjectTypes;
use crate::cli::CheckArgs;
use crate::script::{Limits, Script};

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits::default();
    let mut failed = 0;
    for path in &args.files {
        match check_one(path, &args.params, &limits) {
            Ok(summary) => println!("{}: ok ({summary})", path.display()),
            Err(e) => {
                failed += 1;
                println!("{e}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Validates one script: it compiles, its manifest is sound, its program exists,
/// its params resolve, and every param that names a knob fits it.
pub fn check_one(
    path: &std::path::Path,
    overrides: &[(String, String)],
    limits: &Limits,
) -> Result<String, String> {
    let label = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| format!("{label}: cannot read: {e}"))?;
    let script = Script::compile(&label, &source, limits).map_err(|e| e.to_string())?;
    let manifest = script.manifest();
    let params = manifest
        .resolve_params(overrides)
        .map_err(|e| format!("{label}: {e}"))?;
    let what = first_sentence(&manifest.description);
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("; {what}")
    };
    let Some(program) = &manifest.program else {
        return Ok(format!("no kernel program{what}"));
    };
    // Script::compile refused any other (with the manifest's line).
    let spec = catalog::find(program)
        .ok_or_else(|| format!("{label}: unknown kernel program `{program}`"))?;
    let types = ObjectTypes::parse(spec.object).map_err(|e| format!("{label}: {e}"))?;
    let knobs = types.knobs();
    let mut as_knobs = Vec::new();
    for (name, value) in &params {
        if let Some(knob) = knobs.iter().find(|k| &k.name == name) {
            crate::bpf::check_knob(knob, value)
                .map_err(|e| format!("{label}: param `{name}` (kernel knob): {e}"))?;
            as_knobs.push(name.as_str());
        }
    }
    Ok(format!(
        "program {program}, {} params, knobs: {}{what}",
        params.len(),
        if as_knobs.is_empty() {
            "none".to_string()
        } else {
            as_knobs.join(", ")
        },
    ))
}

/// The first sentence of the first paragraph of a description.
fn first_sentence(description: &str) -> String {
    let para: Vec<&str> = description
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let para = para.join(" ");
    match para.find(". ") {
        Some(i) => para[..=i].to_string(),
        None => para,
    }
}
