//! The `clew proxy` sidecar's YAML (`clew_proxy::config::ProxyConfig::parse`: YAML → serde with
//! key paths → validation). Errors are fine, panics are not; an accepted config names its
//! exporter.
#![no_main]

use clew_proxy::config::ProxyConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = ProxyConfig::parse(text, "fuzz.yaml") else {
        return;
    };
    let _ = cfg.exporter();
});
