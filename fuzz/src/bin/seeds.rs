//! Seed corpora from real recordings (not a fuzz target; built with them).
//!
//! ```text
//! seeds plans                         the decoder target's decoders, by first byte
//! seeds decoder REC... OUTDIR         record, key and value bytes of recordings, as
//!                                     decoder inputs (first byte picks the decoder)
//! seeds trim REC FRAMES OUT           a recording cut to its header, first frames,
//!                                     and every tick and map snapshot
//! ```
//!
//! `fuzz/make-seeds` runs these on a recording made with `sonde run --record`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sonde::record::{Frame, Reader, Writer};
use sonde_fuzz::decoder_plans;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["plans"] => {
            for (i, p) in decoder_plans().iter().enumerate() {
                println!("{i:3} {:5} {}", p.decoder.size(), p.label);
            }
            Ok(())
        }
        ["decoder", ref rest @ ..] if rest.len() >= 2 => {
            let (out, recs) = rest.split_last().unwrap();
            decoder(recs, Path::new(out))
        }
        ["trim", rec, frames, out] => match frames.parse() {
            Ok(n) => trim(Path::new(rec), n, Path::new(out)),
            Err(e) => Err(format!("FRAMES: {e}")),
        },
        _ => Err(
            "usage: seeds plans | seeds decoder REC... OUTDIR | seeds trim REC FRAMES OUT".into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("seeds: {e}");
        std::process::exit(1);
    }
}

fn plan_index(label: &str) -> Option<u8> {
    let i = decoder_plans().iter().position(|p| p.label == label)?;
    u8::try_from(i).ok()
}

/// Distinct record bytes and snapshot keys and values, each behind the byte of its
/// decoder, at most 8 of each kind; a zeroed value for every other decoder.
fn decoder(recs: &[&str], out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut seen = BTreeSet::new();
    let mut per_kind = std::collections::HashMap::<String, usize>::new();
    for rec in recs {
        let mut r = Reader::open(Path::new(rec)).map_err(|e| e.to_string())?;
        let program = r.header.program.clone();
        let sources = r.header.sources.clone();
        let maps: Vec<String> = r.header.maps.iter().map(|(n, _)| n.clone()).collect();
        while let Some(frame) = r.next_frame().map_err(|e| e.to_string())? {
            let mut inputs = Vec::new();
            match frame {
                Frame::Record { source, bytes, .. } => {
                    if let Some(s) = sources.get(source as usize) {
                        inputs.push((format!("{program} record {s}"), bytes));
                    }
                }
                Frame::Snapshot { map, entries, .. } => {
                    if let Some(m) = maps.get(map as usize) {
                        for (k, v) in entries {
                            inputs.push((format!("{program} key {m}"), k));
                            inputs.push((format!("{program} value {m}"), v));
                        }
                    }
                }
                _ => {}
            }
            for (label, bytes) in inputs {
                let Some(i) = plan_index(&label) else {
                    continue;
                };
                let n = per_kind.entry(label.clone()).or_default();
                let mut input = vec![i];
                input.extend_from_slice(&bytes);
                if *n >= 8 || !seen.insert(input.clone()) {
                    continue;
                }
                *n += 1;
                let name = format!("{}-{n}", label.replace(' ', "-"));
                let path: PathBuf = out.join(name);
                std::fs::write(&path, &input).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    // Decoders no recording had bytes for: one zeroed value each.
    for (i, p) in decoder_plans().iter().enumerate() {
        if per_kind.contains_key(&p.label) {
            continue;
        }
        let Ok(b) = u8::try_from(i) else { continue };
        let mut input = vec![b];
        input.resize(1 + p.decoder.size(), 0);
        let path = out.join(format!("{}-zero", p.label.replace(' ', "-")));
        std::fs::write(&path, &input).map_err(|e| format!("{}: {e}", path.display()))?;
        seen.insert(input);
    }
    println!("{} decoder seeds in {}", seen.len(), out.display());
    Ok(())
}

/// The header, the first `n` frames, and every later tick and snapshot of a recording.
fn trim(rec: &Path, n: usize, out: &Path) -> Result<(), String> {
    let mut r = Reader::open(rec).map_err(|e| e.to_string())?;
    let mut w = Writer::create(out, &r.header).map_err(|e| e.to_string())?;
    let mut kept = 0;
    while let Some(frame) = r.next_frame().map_err(|e| e.to_string())? {
        if kept >= n && !matches!(frame, Frame::Tick { .. } | Frame::Snapshot { .. }) {
            continue;
        }
        let done = match &frame {
            Frame::Record { source, bytes, .. } => w.record(*source, bytes),
            Frame::Snapshot { map, entries, .. } => w.snapshot(*map, entries),
            Frame::Tick { .. } => w.tick(),
            Frame::Symbol { addr, name } => w.symbol(*addr, name),
            Frame::Stack { id, frames } => w.stack(*id, frames),
        };
        done.map_err(|e| e.to_string())?;
        kept += 1;
    }
    w.finish().map_err(|e| e.to_string())?;
    println!("{kept} frames kept in {}", out.display());
    Ok(())
}
