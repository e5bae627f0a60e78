//! `sonde probes`: what the kernel library holds and what can run on this kernel.

use std::process::ExitCode;

use crate::bpf::{self, catalog};
use crate::btf::KernelBtf;
use crate::cli::ProbesArgs;

pub fn probes(args: ProbesArgs) -> anyhow::Result<ExitCode> {
    let btf = match KernelBtf::locate(args.btf.as_deref()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("sonde: warning: {e}");
            None
        }
    };
    let kernel = crate::bpf::features::kernel_release();
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
                    "reason": r.as_ref().err(),
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
