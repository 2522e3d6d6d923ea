//! OTLP/JSON bodies (the HTTP receiver with `Content-Type: application/json`): errors are fine,
//! panics are not; whatever decodes survives validation and flattening, and Clew's own JSON
//! encoding of it decodes again with the same number of spans.
#![no_main]

use clew_model::otlp_json;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = otlp_json::decode_request(data) else {
        return;
    };
    let spans = |rs: &[clew_model::otlp::trace::ResourceSpans]| -> usize {
        rs.iter()
            .flat_map(|r| r.scope_spans.iter())
            .map(|s| s.spans.len())
            .sum()
    };
    let bytes = otlp_json::encode_resource_spans(&req.resource_spans).to_string();
    if let Ok(again) = otlp_json::decode_request(bytes.as_bytes()) {
        assert_eq!(spans(&again.resource_spans), spans(&req.resource_spans));
    }
    common::after_parse(req.resource_spans);
});
