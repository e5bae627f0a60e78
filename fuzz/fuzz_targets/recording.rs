//! A recording from an untrusted file, read and replayed the way `sonde run --replay`
//! does, without a script.
//!
//! The bytes are written to a file and opened with `record::Reader`; every frame is
//! read. When the header names a built-in program, its records are decoded with the
//! object's record decoders (every field read) and its map snapshots with the map
//! decoders and the header's layouts (`bpf::maps::decode_entries`, what a script's
//! `bpf::map(...)` reads during a replay), with the symbols and stacks the recording
//! carries.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rhai::Dynamic;
use sonde::bpf::decode::{Decoder, ObjectTypes};
use sonde::pods::HostResolver;
use sonde::record::{Frame, Reader};
use sonde::script::record::{entries_array, record_map, to_dynamic};
use sonde_fuzz::{object_types, scratch_file, touch};

/// Frames read from one input at most (each is at least 15 bytes, so an input of
/// libFuzzer's sizes never reaches it; it keeps a bug in the reader from looping).
const MAX_FRAMES: usize = 100_000;

fn scratch() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| scratch_file("recording", "sonderec"))
}

fn types(program: &str) -> Option<&'static ObjectTypes> {
    object_types()
        .iter()
        .find(|(name, _)| *name == program)
        .map(|(_, t)| t)
}

fn replay(reader: &mut Reader, frames: Vec<Frame>) {
    let header = reader.header.clone();
    let Some(types) = types(&header.program) else {
        return;
    };
    // A source the object has no record type for fails the replay as a whole.
    let Ok(decoders) = header
        .sources
        .iter()
        .map(|s| types.record_decoder(s))
        .collect::<Result<Vec<Decoder>, _>>()
    else {
        return;
    };
    let symbols: Vec<(u64, String)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Symbol { addr, name } => Some((*addr, name.clone())),
            _ => None,
        })
        .collect();
    let (env, stacks) = header.replay_env(
        Arc::new(HostResolver::with_host_netns(header.host_netns, "fuzz")),
        symbols,
    );
    let layouts: HashMap<u16, _> = header
        .maps
        .iter()
        .enumerate()
        .map(|(i, (name, layout))| {
            let (k, v) = types
                .map_decoders(name)
                .map(|(k, v)| (Some(k), Some(v)))
                .unwrap_or((None, None));
            (i as u16, (*layout, k, v))
        })
        .collect();
    for frame in frames {
        match frame {
            Frame::Record { source, bytes, .. } => {
                let Some(d) = decoders.get(source as usize) else {
                    continue;
                };
                if let Ok(ev) = d.record(&bytes, &env) {
                    for key in ev.keys() {
                        if let Some(v) = ev.get(key) {
                            touch(&to_dynamic(v));
                        }
                    }
                    touch(&Dynamic::from_map(record_map(&ev)));
                }
            }
            Frame::Snapshot { map, entries, .. } => {
                if let Some((layout, k, v)) = layouts.get(&map) {
                    if let Ok(a) = sonde::bpf::maps::decode_entries(
                        layout,
                        k.as_ref(),
                        v.as_ref(),
                        &entries,
                        &env,
                    ) {
                        touch(&Dynamic::from_array(entries_array(a)));
                    }
                }
            }
            Frame::Stack { id, frames } => {
                stacks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, frames);
            }
            Frame::Tick { .. } | Frame::Symbol { .. } => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let file = scratch();
    if std::fs::write(file, data).is_err() {
        return;
    }
    let opened = Reader::open(file);
    let _ = std::fs::remove_file(file);
    // The file stays readable through the open handle.
    let Ok(mut reader) = opened else {
        return;
    };
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = reader.next_frame() {
        frames.push(frame);
        if frames.len() >= MAX_FRAMES {
            break;
        }
    }
    replay(&mut reader, frames);
});
