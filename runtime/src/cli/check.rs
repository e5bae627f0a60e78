//! `sonde check`: compile and validate scripts without loading anything.
//!
//! Everything that can be known without the kernel is checked, so that a script
//! that checks clean does not fail on its first event: the syntax and handlers, the
//! `PROBE` manifest (its program among the built-in ones, param defaults against
//! the program's knobs), `--param` overrides, and the script's top level and
//! `init(params)` run once against a registry of its own and empty kernel maps, so
//! that a metric the registry refuses (`metrics::counter("lat_ms", ...)`: an
//! abbreviated unit) is reported with its line. Then `on_tick()` runs once, and the
//! event handler once with a record of the program's made of zeros, so that a field
//! the record lacks (`ev.sprot`) is reported with its line too.
//!
//! ```text
//! $ sonde check x.rhai
//! x.rhai:4:1: init failed: invalid metric name `sonde_lat_ms`: counter names end in `_total` (e.g. `sonde_lat_ms_total`)
//! $ sonde check y.rhai
//! y.rhai:9:17: on_event failed (given a record of zeros): ...
//! $ sonde check -e 'fn on_tick() { print("tick") }'
//! -e: ok (no kernel program)
//! ```

use std::process::ExitCode;

use crate::bpf::Program;
use crate::cli::CheckArgs;
use crate::script::{dry_run, Limits, Script, ScriptError, ScriptFileError};

/// Why a script does not check clean. Each prints as the line `sonde check` shows.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file cannot be read (missing, too large, not UTF-8, unsafe to trust).
    #[error(transparent)]
    Read(#[from] ScriptFileError),
    /// It does not compile, or its top level or `init` fails.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// A `--param` override does not fit the param's declaration.
    #[error("{located}")]
    Param {
        /// The error at the line that declares the param (`x.rhai:3:22: ...`).
        located: String,
        error: ScriptError,
    },
}

/// What a script that checks clean is: its program, params and description.
#[derive(Debug)]
pub struct Checked {
    pub program: Option<Program>,
    pub params: usize,
    /// The params that set a kernel knob of the program.
    pub knobs: Vec<String>,
    /// The first sentence of the script's description.
    pub summary: String,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.program {
            None => write!(f, "no kernel program")?,
            Some(program) => write!(
                f,
                "program {program}, {} params, knobs: {}",
                self.params,
                if self.knobs.is_empty() {
                    "none".to_string()
                } else {
                    self.knobs.join(", ")
                }
            )?,
        }
        if !self.summary.is_empty() {
            write!(f, "; {}", self.summary)?;
        }
        Ok(())
    }
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits::default();
    let mut failed = 0;
    let mut scripts: Vec<(String, Result<String, CheckError>)> = args
        .files
        .iter()
        .map(|path| {
            let label = path.display().to_string();
            let source = crate::script::read_script_file(path, crate::script::MAX_SCRIPT_BYTES)
                .map_err(CheckError::from);
            (label, source)
        })
        .collect();
    if let Some(code) = &args.expr {
        scripts.push(("-e".to_string(), Ok(code.clone())));
    }
    for (label, source) in scripts {
        let result = source.and_then(|source| check_source(&label, &source, &args.params, &limits));
        match result {
            Ok(summary) => println!("{label}: ok ({summary})"),
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
/// its params resolve and fit their knobs, and its top level and `init` run
/// against a registry of their own and empty maps.
pub fn check_source(
    label: &str,
    source: &str,
    overrides: &[(String, String)],
    limits: &Limits,
) -> Result<Checked, CheckError> {
    let script = Script::compile(label, source, limits)?;
    let manifest = script.manifest();
    let params = manifest
        .resolve_params(overrides)
        .map_err(|error| CheckError::Param {
            located: script.override_error(&error),
            error,
        })?;
    let name = std::path::Path::new(label)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "oneliner".into());
    dry_run(&script, &params, &name, limits)?;
    let knobs = match manifest.program {
        Some(program) => {
            let knobs = crate::bpf::knobs(program.spec());
            params
                .iter()
                .filter(|(name, _)| knobs.iter().any(|k| &k.name == name))
                .map(|(name, _)| name.clone())
                .collect()
        }
        None => Vec::new(),
    };
    Ok(Checked {
        program: manifest.program,
        params: params.len(),
        knobs,
        summary: summary(&manifest.description),
    })
}

/// The first sentence of a description's first paragraph: up to a `.`, `!` or `?`
/// followed by a space and a capital letter, where the `.` does not end an
/// abbreviation (`e.g.`, `i.e.`, `vs.`, an initial).
fn summary(description: &str) -> String {
    let para: Vec<&str> = description
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let para = para.join(" ");
    for (i, c) in para.char_indices() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let rest = &para[i + 1..];
        let next = rest.trim_start().chars().next();
        if !rest.starts_with(' ') || !next.is_some_and(char::is_uppercase) {
            continue;
        }
        if c == '.' && abbreviation(para[..i].rsplit(' ').next().unwrap_or("")) {
            continue;
        }
        return para[..=i].to_string();
    }
    para
}

/// Whether `word` (what precedes a `.`) is an abbreviation rather than a sentence's
/// last word: `e.g`, `i.e`, `vs`, `cf`, `approx`, a single letter (an initial), or
/// anything with a dot inside (`U.S`).
fn abbreviation(word: &str) -> bool {
    let w = word
        .trim_start_matches(['(', '"', '`', '\''])
        .to_lowercase();
    if w.ends_with("..") {
        return false; // an ellipsis
    }
    matches!(
        w.as_str(),
        "vs" | "cf" | "approx" | "incl" | "resp" | "esp" | "no" | "fig"
    ) || w.contains('.')
        || (w.chars().count() == 1 && w.chars().all(char::is_alphabetic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_the_first_sentence_not_cut_at_an_abbreviation() {
        let cases = [
            (
                "Retransmits per pod, i.e. segments sent again. Reads tcp_retransmit_skb.",
                "Retransmits per pod, i.e. segments sent again.",
            ),
            (
                "Latency of slow paths, e.g. TCP connect or DNS. Thresholds in ms.",
                "Latency of slow paths, e.g. TCP connect or DNS.",
            ),
            (
                "Compares v4 vs. IPv6 resets. More below.",
                "Compares v4 vs. IPv6 resets.",
            ),
            ("Resets!\nWhy? Because.", "Resets!"),
            ("Version 1.5 counts drops", "Version 1.5 counts drops"),
            (
                "Sets the MAC, offloads... Each is slow.",
                "Sets the MAC, offloads...",
            ),
            (
                "One line per reset.\nThe second line.\n\nA second paragraph.",
                "One line per reset.",
            ),
            (
                "ends at the first. lowercase goes on",
                "ends at the first. lowercase goes on",
            ),
            ("", ""),
        ];
        for (description, want) in cases {
            assert_eq!(summary(description), want, "{description:?}");
        }
    }

    fn check(source: &str) -> Result<Checked, CheckError> {
        check_source("x.rhai", source, &[], &Limits::default())
    }

    /// What only running would show is found at its line: a field the program's
    /// record lacks (in `on_event` and in `on_events`), a map the tick reads wrongly.
    #[test]
    fn handlers_run_once_and_their_failures_name_the_line() {
        let field = "const PROBE = #{ program: \"tcp_reset\" };\n\
                     fn on_event(ev) {\n    let p = ev.sprot;\n}\n";
        let e = check(field).unwrap_err().to_string();
        assert!(
            e.starts_with("x.rhai:3:15: on_event failed (given a record of zeros): ")
                && e.contains("no field `sprot`"),
            "{e}"
        );
        let batch = "const PROBE = #{ program: \"tcp_reset\" };\n\
                     fn on_events(evs) { for ev in evs { ev.nope; } }\n";
        let e = check(batch).unwrap_err().to_string();
        assert!(
            e.starts_with("x.rhai:2:") && e.contains("on_events failed") && e.contains("`nope`"),
            "{e}"
        );
        let tick = "fn on_tick() {\n    for e in bpf::map(\"counts\") {}\n}\n";
        let e = check(tick).unwrap_err().to_string();
        assert!(
            e.starts_with("x.rhai:2:")
                && e.contains("on_tick failed")
                && e.contains("no kernel program"),
            "{e}"
        );
        // Reading what the record has, and a handler that throws only on real data.
        let fine = "const PROBE = #{ program: \"tcp_reset\" };\n\
                    fn on_event(ev) { if ev.sport > 0 { throw \"real traffic\"; } ev.pod.name; }\n";
        assert!(check(fine).is_ok());
    }

    /// The built-in scripts pass their own check: their handlers accept a record of
    /// zeros and a tick against empty maps and sonde's own namespace. (A deadline
    /// of its own: the source reads of a debug build on a loaded test machine are
    /// not what is checked here.)
    #[test]
    fn every_builtin_script_checks_clean() {
        let limits = Limits {
            call_deadline: std::time::Duration::from_secs(30),
            ..Limits::default()
        };
        for (name, source) in crate::daemon::builtin::SCRIPTS {
            let label = format!("scripts/{name}.rhai");
            if let Err(e) = check_source(&label, source, &[], &limits) {
                panic!("{e}");
            }
        }
    }
}
