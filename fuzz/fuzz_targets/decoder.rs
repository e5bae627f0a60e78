//! Record and map bytes through the decoders built from the committed objects' BTF.
//!
//! The first byte picks a decoder (`sonde_fuzz::decoder_plans`: a ring buffer record
//! type, `__sonde_record_<map>`, or a map's key or value type, of any built-in
//! program); the rest are the bytes, as the kernel or a recording hands them over.
//! Each is decoded every way sonde does: whole (`decode`, then as scripts see it,
//! `script::record::{to_dynamic, value_map}`), in place (`view`), lazily field by
//! field (`record`, `get` of every key, `record_map`), and map values as per-CPU
//! entries (`bpf::maps::decode_entries`). Every decoded value is read to the end.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rhai::Dynamic;
use sonde::bpf::decode::DecodeEnv;
use sonde::bpf::ksyms::{Ksyms, Symbols};
use sonde::bpf::maps::Layout;
use sonde::pods::HostResolver;
use sonde::script::record::{entries_array, record_map, to_dynamic, value_map};
use sonde_fuzz::{decoder_plans, touch};

/// Drop reason names, symbols and stacks, so every well-known typedef resolves.
fn env() -> &'static Arc<DecodeEnv> {
    static ENV: OnceLock<Arc<DecodeEnv>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env =
            DecodeEnv::offline(Arc::new(HostResolver::with_host_netns(4026531840, "fuzz")));
        env.drop_reasons = HashMap::from([(2, "NOT_SPECIFIED".into()), (3, "NO_SOCKET".into())]);
        env.ksyms = Symbols::Table(Arc::new(Ksyms::from_exact([
            (0xffff_ffff_8100_0000, "tcp_v4_rcv+0x91".to_string()),
            (0xffff_ffff_8100_1000, "ip_rcv".to_string()),
        ])));
        env.stacks = Some(Box::new(|id| {
            (0..u64::from(id % 5))
                .map(|i| 0xffff_ffff_8100_0000 + i * 0x800)
                .collect()
        }));
        Arc::new(env)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let plans = decoder_plans();
    let plan = &plans[pick as usize % plans.len()];
    let d = &plan.decoder;
    let env = env();
    let _ = d.needs();
    let _ = d.pod_keys();
    if let Ok(v) = d.decode(bytes, env) {
        touch(&to_dynamic(v.clone()));
        touch(&Dynamic::from_map(value_map(v)));
    }
    if let Ok(view) = d.view(bytes, env) {
        for key in view.keys() {
            if let Some(v) = view.get(key) {
                touch(&to_dynamic(v));
            }
        }
    }
    if let Ok(ev) = d.record(bytes, env) {
        for key in ev.keys() {
            if let Some(v) = ev.get(key) {
                touch(&to_dynamic(v));
            }
        }
        let _ = ev.get("no_such_field");
        touch(&Dynamic::from_map(record_map(&ev)));
    }
    if plan.map_value {
        // One entry of a per-CPU map on two CPUs: the value is the bytes split in two.
        let layout = Layout {
            key_size: 0,
            value_size: d.size(),
            per_cpu: Some(2),
        };
        let entries = vec![(Vec::new(), bytes.to_vec())];
        if let Ok(a) = sonde::bpf::maps::decode_entries(&layout, None, Some(d), &entries, env) {
            touch(&Dynamic::from_array(entries_array(a)));
        }
    }
});
