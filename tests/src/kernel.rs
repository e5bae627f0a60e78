//! Loading a built-in program straight into the running kernel (root), without a
//! script: for tests that assert exact kernel-side counts and record fields.

use std::sync::Arc;

use rhai::Map;
use sonde::bpf::decode::DecodeEnv;
use sonde::bpf::ksyms::Symbols;
use sonde::bpf::{self, catalog, Loaded};
use sonde::btf::KernelBtf;
use sonde::pods::HostResolver;
use sonde::script::record::{value_map, DecodedEntries};
use sonde::script::ParamValue;

/// Loads `program` with `params` as knobs; panics with sonde's error when it cannot.
pub fn load(program: &str, params: &[(&str, ParamValue)]) -> (Loaded, Arc<DecodeEnv>) {
    let btf = KernelBtf::locate(None).expect("kernel BTF");
    let spec = catalog::find(program).unwrap();
    let params: Vec<(String, ParamValue)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let loaded = bpf::load(spec, &params, &btf).unwrap_or_else(|e| panic!("load {program}: {e}"));
    let table = loaded.maps.clone();
    let env = Arc::new(DecodeEnv {
        pods: Arc::new(HostResolver::new("test-node")),
        drop_reasons: bpf::drop_reason_names(&btf),
        ksyms: Symbols::Kernel,
        stacks: Some(Box::new(move |id| table.stack(id))),
        notes: None,
        pod_cache: Default::default(),
    });
    loaded.maps.set_env(env.clone());
    (loaded, env)
}

/// Every record now in the program's ring buffers, decoded.
pub fn drain(loaded: &mut Loaded, env: &DecodeEnv) -> Vec<Map> {
    let mut out = Vec::new();
    for mut src in loaded.take_sources() {
        while let Some(item) = src.ring.next() {
            out.push(value_map(
                src.decoder.decode(&item, env).expect("decodable record"),
            ));
        }
    }
    out
}

/// Field `k` of a decoded record, as text.
pub fn s(m: &Map, k: &str) -> String {
    m.get(k)
        .unwrap_or_else(|| panic!("no field {k} in {m:?}"))
        .to_string()
}

/// Integer field `k` of a decoded record.
pub fn int(m: &Map, k: &str) -> i64 {
    m.get(k)
        .and_then(|v| v.as_int().ok())
        .unwrap_or_else(|| panic!("no int {k} in {m:?}"))
}

/// The records whose `netns` field is `inode` (the test's own namespace).
pub fn ours(events: Vec<Map>, inode: u32) -> Vec<Map> {
    events
        .into_iter()
        .filter(|e| int(e, "netns") == inode as i64)
        .collect()
}

/// Kernel-side counts for one netns: `(key map, value)` from map `counts`.
pub fn counts(loaded: &Loaded, inode: u32) -> Vec<(Map, i64)> {
    map_entries(loaded, "counts", inode)
}

/// Every `(key, value)` of a map whose keys are structs, as a script reads them.
pub fn entries(loaded: &Loaded, map: &str) -> Vec<(Map, rhai::Dynamic)> {
    loaded
        .maps
        .decoded_entries(map)
        .unwrap_or_else(|e| panic!("map {map}: {e}"))
        .into_iter()
        .map(|e| {
            let m = e.cast::<Map>();
            (m["key"].clone().cast::<Map>(), m["value"].clone())
        })
        .collect()
}

/// Every `(key, value)` of a map whose keys and values are structs.
pub fn struct_entries(loaded: &Loaded, map: &str) -> Vec<(Map, Map)> {
    entries(loaded, map)
        .into_iter()
        .map(|(k, v)| (k, v.cast::<Map>()))
        .collect()
}

/// Entries of a map of counts whose key has a `netns` field equal to `inode`.
pub fn map_entries(loaded: &Loaded, map: &str, inode: u32) -> Vec<(Map, i64)> {
    entries(loaded, map)
        .into_iter()
        .filter(|(k, _)| int(k, "netns") == inode as i64)
        .map(|(k, v)| (k, v.as_int().unwrap()))
        .collect()
}
