//! The daemon config from an untrusted file: `Config::parse` on any UTF-8 text, then
//! what the daemon reads from an accepted config (script limits, param overrides),
//! and a parse of the accepted config serialized again (`Config` is `Serialize`; the
//! output is only parsed, not compared: durations serialize in whole milliseconds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::daemon::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse("fuzz.yaml", text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = cfg.limits.to_limits();
    for script in cfg.scripts.params.keys() {
        let _ = cfg.scripts.overrides(script);
    }
    if let Ok(yaml) = serde_yaml::to_string(&cfg) {
        let _ = Config::parse("fuzz.yaml (serialized)", &yaml);
    }
});
