//! `clew.yaml` (`clew::config::Config::parse`: YAML → serde with key paths → processor, pipeline
//! graph and listener validation), what `clew serve --config` and `clew config check` run on the
//! operator's file. Errors are fine (they are the product here: they name the key and the fix),
//! panics are not; a config that is accepted yields its store settings, listeners and audit
//! summary without panicking.
#![no_main]

use clew::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(text, "fuzz.yaml") else {
        return;
    };
    let _ = cfg.store_config();
    let _ = cfg.listeners();
    let _ = cfg.listener_warnings();
    let _ = cfg.endpoints();
    let _ = cfg.audit_summary();
    let _ = cfg.metadata_keys();
    let _ = cfg.remote_sampling();
});
