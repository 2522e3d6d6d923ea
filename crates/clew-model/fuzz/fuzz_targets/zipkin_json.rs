//! Zipkin v2 JSON bodies (`POST /api/v2/spans`): errors are fine, panics are not; conversion to
//! OTLP accounts for every span it received, and the accepted ones survive validation and
//! flattening.
#![no_main]

use clew_model::zipkin;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(converted) = zipkin::decode_json(data) else {
        return;
    };
    let accepted: usize = converted
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(
        accepted as u64 + converted.report.rejected_spans,
        converted.received_spans
    );
    common::after_parse(converted.resource_spans);
});
