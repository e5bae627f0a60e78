//! `sonde btf`: which kernel BTF sonde would use here, and the whole fallback chain
//! that found it (or every place it looked, and how to provide one).
//!
//! ```text
//! $ sonde btf
//! kernel BTF  sysfs /sys/kernel/btf/vmlinux
//! kernel      6.18.0 (x86_64)
//! size        5.6 MB (5612345 bytes)
//! types       150123 (structure checked)
//! took        21.4 ms
//!
//! step         outcome location: why
//! explicit     skipped -: no --btf or `btf:` given
//! sysfs        found   /sys/kernel/btf/vmlinux: 5612345 bytes via raw BTF
//! ...
//! ```

use std::process::ExitCode;

use crate::btf::BtfSearch;
use crate::cli::BtfArgs;

pub fn btf(args: BtfArgs) -> anyhow::Result<ExitCode> {
    let search = BtfSearch::system()
        .explicit(args.btf.as_deref())
        .archive(args.btf_archive.as_deref());
    let result = search.locate();
    if args.json {
        let value = match &result {
            Ok(b) => b.to_json(),
            Err(e) => e.to_json(),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(if result.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match result {
        Ok(b) => {
            println!("kernel BTF  {}", b.source());
            match b.os() {
                Some(os) => println!("kernel      {} ({}, {os})", b.release(), b.machine()),
                None => println!("kernel      {} ({})", b.release(), b.machine()),
            }
            println!(
                "size        {:.1} MB ({} bytes)",
                b.size() as f64 / 1e6,
                b.size()
            );
            println!("types       {} (structure checked)", b.types());
            println!("took        {:.1} ms", b.took().as_secs_f64() * 1e3);
            println!();
            println!("{:<12} {:<7} location: why", "step", "outcome");
            for a in b.chain() {
                println!("{a}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("sonde: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
