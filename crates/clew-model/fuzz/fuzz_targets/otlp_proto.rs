//! OTLP/protobuf `ExportTraceServiceRequest` bodies (gRPC and HTTP receivers, after
//! decompression): decode errors are fine, panics are not; whatever decodes survives
//! validation and flattening, and re-encodes to something that decodes and encodes to the same bytes.
#![no_main]

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ExportTraceServiceRequest::decode(data) else {
        return;
    };
    let bytes = req.encode_to_vec();
    let again =
        ExportTraceServiceRequest::decode(bytes.as_slice()).expect("re-encoded request decodes");
    // Compared as bytes: a NaN double attribute is not equal to itself.
    assert_eq!(again.encode_to_vec(), bytes);
    common::after_parse(req.resource_spans);
});
