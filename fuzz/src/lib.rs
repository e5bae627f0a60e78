//! What the fuzz targets share: reading decoded values to the end, the decoders of
//! the committed objects, and a scratch file per process for the targets whose entry
//! point reads a file.

use std::path::PathBuf;
use std::sync::OnceLock;

use rhai::Dynamic;
use sonde::bpf::catalog::PROGRAMS;
use sonde::bpf::decode::{Decoder, ObjectTypes};

/// Reads every part of a decoded value (maps, arrays, and each leaf as text), so a
/// lazy or malformed value shows up here rather than in a script.
pub fn touch(v: &Dynamic) -> usize {
    if let Some(m) = v.read_lock::<rhai::Map>() {
        return m.iter().map(|(k, v)| k.len() + touch(v)).sum();
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a.iter().map(touch).sum();
    }
    v.to_string().len()
}

/// A scratch file for `target`, one per process, in a directory shared by runs.
pub fn scratch_file(target: &str, ext: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sonde-fuzz-{target}"));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(format!("input-{}.{ext}", std::process::id()))
}

/// The object types of each built-in program, parsed once.
pub fn object_types() -> &'static [(&'static str, ObjectTypes)] {
    static TYPES: OnceLock<Vec<(&'static str, ObjectTypes)>> = OnceLock::new();
    TYPES.get_or_init(|| {
        PROGRAMS
            .iter()
            .map(|p| {
                let types = ObjectTypes::parse(p.object)
                    .unwrap_or_else(|e| panic!("committed object {}: {e}", p.name));
                (p.name, types)
            })
            .collect()
    })
}

/// One decoder of the `decoder` target.
pub struct Plan {
    /// `<program> record <map>`, `<program> key <map>` or `<program> value <map>`.
    pub label: String,
    pub decoder: Decoder,
    /// A map value: also read as per-CPU entries.
    pub map_value: bool,
}

/// Every record decoder, then every map key and value decoder, of every committed
/// object, in catalog order (maps by name). The `decoder` target's first input byte
/// indexes this list (modulo its length).
pub fn decoder_plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let mut out = Vec::new();
        for (spec, (name, types)) in PROGRAMS.iter().zip(object_types()) {
            for map in types.record_maps() {
                let decoder = types
                    .record_decoder(&map)
                    .unwrap_or_else(|e| panic!("{name} record {map}: {e}"));
                out.push(Plan {
                    label: format!("{name} record {map}"),
                    decoder,
                    map_value: false,
                });
            }
            let obj = aya_obj::Object::parse(spec.object).expect("committed object");
            let mut maps: Vec<&String> = obj.maps.keys().collect();
            maps.sort();
            for map in maps {
                if let Ok((k, v)) = types.map_decoders(map) {
                    out.push(Plan {
                        label: format!("{name} key {map}"),
                        decoder: k,
                        map_value: false,
                    });
                    out.push(Plan {
                        label: format!("{name} value {map}"),
                        decoder: v,
                        map_value: true,
                    });
                }
            }
        }
        assert!(!out.is_empty(), "no decoder in the committed objects");
        out
    })
}
