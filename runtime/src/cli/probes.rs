//! `sonde probes`: what the kernel library holds and what can run on this kernel;
//! with `--fields`, what each program gives a script; with `--verbose PROGRAM`, what
//! the kernel says when each variant of PROGRAM is loaded for real (the verifier's
//! log when it rejects one).
//!
//! ```text
//! sonde probes --fields tcp_reset
//! sonde probes --fields --json          # every program
//! sonde probes --verbose packet_loss    # as root
//! ```

use std::process::ExitCode;

use crate::bpf::catalog::ProgramSpec;
use crate::bpf::reference::{self, FieldRef, ProgramRef};
use crate::bpf::{self, catalog, BpfError, SkipReason, Trial};
use crate::btf::KernelBtf;
use crate::cli::ProbesArgs;

pub fn probes(args: ProbesArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.fields {
        let programs = reference::programs(name)?;
        let text = if args.json {
            let json = serde_json::json!({ "programs": programs });
            serde_json::to_string_pretty(&json)? + "\n"
        } else if args.markdown {
            reference::markdown(&programs)
        } else {
            fields_text(&programs)
        };
        // Often piped into `less` or `head`: a reader that stops early is fine.
        use std::io::Write;
        match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
    let btf = match KernelBtf::locate(args.btf.as_deref()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("sonde: warning: {e}");
            None
        }
    };
    let kernel = crate::bpf::features::kernel_release();
    if let Some(name) = &args.verbose {
        return verbose(name, btf.as_ref(), &kernel, args.json);
    }
    let mut json = Vec::new();
    if !args.json {
        println!(
            "kernel {kernel}, BTF {}",
            btf.as_ref()
                .map(|b| b.source().to_string())
                .unwrap_or_else(|| "missing".into())
        );
    }
    for spec in catalog::PROGRAMS {
        let assessed = bpf::assess(spec, btf.as_ref());
        let chosen = assessed
            .iter()
            .find(|(_, r)| r.is_ok())
            .map(|(v, _)| v.name);
        if args.json {
            json.push(serde_json::json!({
                "program": spec.name,
                "summary": spec.summary,
                "runs": chosen.is_some(),
                "variant": chosen,
                "variants": assessed.iter().map(|(v, r)| serde_json::json!({
                    "name": v.name,
                    "summary": v.summary,
                    "available": r.is_ok(),
                    "reason": r.as_ref().err().map(ToString::to_string),
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!();
        match chosen {
            Some(v) => println!("{}  [runs: variant {v}]", spec.name),
            None => println!("{}  [cannot run here]", spec.name),
        }
        println!("  {}", spec.summary);
        for (v, r) in &assessed {
            let mark = match (r, Some(v.name) == chosen) {
                (Ok(()), true) => "*",
                (Ok(()), false) => "+",
                (Err(_), _) => "-",
            };
            println!("  {mark} {:<18} {}", v.name, v.summary);
            if let Err(why) = r {
                println!("    {:<18} not here: {why}", "");
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "kernel": kernel, "programs": json })
            )?
        );
    } else {
        println!("\n* chosen variant   + would also run   - cannot run here");
    }
    Ok(ExitCode::SUCCESS)
}

/// `sonde probes --verbose PROGRAM`.
fn verbose(
    name: &str,
    btf: Option<&KernelBtf>,
    kernel: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let spec = bpf::Program::find(name)?.spec();
    use crate::privileges::{has_effective, Cap};
    if !has_effective(Cap::SYS_ADMIN) && !has_effective(Cap::BPF) {
        eprintln!("sonde: warning: loading programs needs root (or CAP_BPF and CAP_PERFMON): the kernel will refuse every variant");
    }
    let trials = trials(spec, btf)?;
    if json {
        let value = serde_json::json!({
            "kernel": kernel,
            "program": spec.name,
            "summary": spec.summary,
            "variants": trials.iter().map(trial_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "kernel {kernel}, BTF {}\n",
            btf.map(|b| b.source().to_string())
                .unwrap_or_else(|| "missing".into())
        );
        print!("{}", verbose_text(spec, &trials));
    }
    Ok(ExitCode::SUCCESS)
}

/// Each variant of `spec` loaded and attached on its own, then detached; a variant
/// this kernel is known to lack (or all, without BTF) is not tried.
pub fn trials(spec: &'static ProgramSpec, btf: Option<&KernelBtf>) -> Result<Vec<Trial>, BpfError> {
    match btf {
        Some(btf) => bpf::trial(spec, btf),
        None => Ok(bpf::assess(spec, None)
            .into_iter()
            .map(|(v, r)| (v, r.map_err(SkipReason::from)))
            .collect()),
    }
}

/// The text of `sonde probes --verbose`: per variant, whether it loaded, the reason
/// on one line when it did not, and the verifier's log when the kernel rejected it.
pub fn verbose_text(spec: &ProgramSpec, trials: &[Trial]) -> String {
    let chosen = trials.iter().find(|(_, r)| r.is_ok()).map(|(v, _)| v.name);
    let mut out = match chosen {
        Some(v) => format!("{}  [loads: variant {v}]\n", spec.name),
        None => format!("{}  [no variant loads here]\n", spec.name),
    };
    out.push_str(&format!("  {}\n", spec.summary));
    for (v, r) in trials {
        let mark = match (r, Some(v.name) == chosen) {
            (Ok(()), true) => "*",
            (Ok(()), false) => "+",
            (Err(_), _) => "-",
        };
        out.push_str(&format!("  {mark} {:<18} {}\n", v.name, v.summary));
        let why = match r {
            Ok(()) => {
                out.push_str(&format!(
                    "    {:<18} loaded and attached (detached again)\n",
                    ""
                ));
                continue;
            }
            Err(why) => why,
        };
        let verdict = match why {
            SkipReason::Failed(_) => "failed",
            _ => "not here",
        };
        out.push_str(&format!("    {:<18} {verdict}: {why}\n", ""));
        if let Some(log) = why.load_error().and_then(bpf::LoadError::verifier_log) {
            let lines: Vec<&str> = log.trim_end().lines().collect();
            out.push_str(&format!(
                "    {:<18} verifier log ({} lines):\n",
                "",
                lines.len()
            ));
            for line in lines {
                out.push_str(&format!("    {:<18}   {line}\n", ""));
            }
        }
    }
    out.push_str("\n* chosen variant   + would also load   - does not load here\n");
    out
}

fn trial_json((v, r): &Trial) -> serde_json::Value {
    let failed = r.as_ref().err().and_then(SkipReason::load_error);
    serde_json::json!({
        "name": v.name,
        "summary": v.summary,
        "loaded": r.is_ok(),
        "reason": r.as_ref().err().map(ToString::to_string),
        "stage": r.as_ref().err().map(SkipReason::stage),
        "hook": failed.and_then(bpf::LoadError::hook).map(ToString::to_string),
        "bpf_program": failed.and_then(bpf::LoadError::function),
        "verifier_log": failed.and_then(bpf::LoadError::verifier_log),
    })
}

/// The reference for a terminal: one aligned table per record and map side.
fn fields_text(programs: &[ProgramRef]) -> String {
    let mut out = String::new();
    for (i, p) in programs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}\n  {}\n", p.program, p.summary));
        for r in &p.records {
            out.push_str(&format!(
                "\n  record `{}` (struct {}): ev.<field> in on_event(ev)\n",
                r.map, r.ty
            ));
            about(&mut out, "    ", &r.about);
            table(&mut out, &r.fields);
        }
        for m in &p.maps {
            out.push_str(&format!("\n  map `{}`: {}\n", m.name, m.summary()));
            about(&mut out, "    ", &m.about);
            if let Some(r) = &m.record {
                out.push_str(&format!("    carries struct {r} records\n"));
                continue;
            }
            match (&m.key, &m.value) {
                (Some(k), Some(v)) => {
                    out.push_str(&format!("    key ({})\n", k.ty));
                    about(&mut out, "      ", &k.about);
                    table(&mut out, &k.fields);
                    out.push_str(&format!("    value ({})\n", v.ty));
                    about(&mut out, "      ", &v.about);
                    table(&mut out, &v.fields);
                }
                _ => out.push_str(&format!("    {}\n", m.undecoded())),
            }
        }
    }
    out
}

/// A comment from the C sources, wrapped to the terminal's usual width.
fn about(out: &mut String, indent: &str, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 88 {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}{line}\n"));
    }
}

fn table(out: &mut String, fields: &[FieldRef]) {
    let unit = |f: &FieldRef| f.unit.clone().unwrap_or_else(|| "(not documented)".into());
    let w0 = fields.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let w1 = fields.iter().map(|f| f.ty.len()).max().unwrap_or(0);
    let w2 = fields.iter().map(|f| unit(f).len()).max().unwrap_or(0);
    for f in fields {
        let line = format!(
            "      {:<w0$}  {:<w1$}  {:<w2$}  {}",
            f.name,
            f.ty,
            unit(f),
            f.about
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::catalog::{Attach, Hook, Variant};
    use crate::bpf::{LoadError, LoadFailure, Unavailable};

    const GETPPID: Hook = Hook::Tracepoint {
        category: "syscalls",
        name: "sys_enter_getppid",
    };

    static SPEC: ProgramSpec = ProgramSpec {
        name: "demo",
        summary: "three variants",
        object: &[],
        variants: &[
            Variant {
                name: "rejected",
                summary: "the verifier says no",
                attach: &[Attach {
                    program: "bad",
                    hook: GETPPID,
                }],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "kprobe",
                summary: "no kprobes here",
                attach: &[],
                requires: &[],
                knobs: &[],
            },
            Variant {
                name: "good",
                summary: "loads",
                attach: &[],
                requires: &[],
                knobs: &[],
            },
        ],
    };

    #[test]
    fn verbose_prints_the_reason_on_one_line_and_the_log_under_it() {
        let log = "0: R1=ctx() R10=fp0\n0: (79) r1 = *(u64 *)(r10 -1024)\n\
                   invalid read from stack R10 off=-1024 size=8\nverification time 20 usec\n";
        let rejected = LoadError {
            program: "demo",
            variant: "rejected",
            failure: LoadFailure::Load {
                attach: SPEC.variants[0].attach[0],
                error: Box::new(aya::programs::ProgramError::LoadError {
                    io_error: std::io::Error::from_raw_os_error(libc::EACCES),
                    verifier_log: aya_obj::VerifierLog::new(log.into()),
                }),
            },
        };
        let trials: Vec<Trial> = vec![
            (
                &SPEC.variants[0],
                Err(SkipReason::Failed(Box::new(rejected))),
            ),
            (
                &SPEC.variants[1],
                Err(SkipReason::Unavailable(Unavailable::NoKprobes)),
            ),
            (&SPEC.variants[2], Ok(())),
        ];
        let pad = " ".repeat(23);
        let want = format!(
            "demo  [loads: variant good]\n  three variants\n\
             \x20 - rejected           the verifier says no\n\
             {pad}failed: bad (tracepoint syscalls:sys_enter_getppid): the verifier rejected it: \
             invalid read from stack R10 off=-1024 size=8 (Permission denied (os error 13))\n\
             {pad}verifier log (4 lines):\n\
             {pad}  0: R1=ctx() R10=fp0\n\
             {pad}  0: (79) r1 = *(u64 *)(r10 -1024)\n\
             {pad}  invalid read from stack R10 off=-1024 size=8\n\
             {pad}  verification time 20 usec\n\
             \x20 - kprobe             no kprobes here\n\
             {pad}not here: kernel has no kprobes (CONFIG_KPROBES off: no kprobe PMU, no kprobe_events)\n\
             \x20 * good               loads\n\
             {pad}loaded and attached (detached again)\n\
             \n* chosen variant   + would also load   - does not load here\n"
        );
        assert_eq!(verbose_text(&SPEC, &trials), want);
        let json = trial_json(&trials[0]);
        assert_eq!(json["stage"], "load");
        assert_eq!(json["hook"], "tracepoint syscalls:sys_enter_getppid");
        assert_eq!(json["bpf_program"], "bad");
        assert_eq!(json["verifier_log"], log);
        assert_eq!(trial_json(&trials[2])["loaded"], true);
    }
}
