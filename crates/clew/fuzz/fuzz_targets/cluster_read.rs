//! What a querier and an ingester exchange (`clew_query::cluster`): the read request an ingester
//! parses (`POST /api/internal/v1/read`, JSON) and the OTLP `TracesData` a querier decodes from
//! the answer. Errors are fine, panics are not; a request that parses serializes back to the same
//! request, and decoded spans survive regrouping.
#![no_main]

use clew_model::otlp::trace::TracesData;
use clew_model::otlp::Message;
use clew_query::cluster::wire::ReadRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ReadRequest>(data) {
        let json = serde_json::to_value(&request).expect("a parsed request serializes");
        let again: ReadRequest = serde_json::from_value(json.clone()).expect("and parses back");
        assert_eq!(serde_json::to_value(&again).unwrap(), json);
    }
    if let Ok(data) = TracesData::decode(data) {
        let spans = clew_model::flat::flatten(data.resource_spans);
        let count = spans.len();
        let regrouped = clew_model::group_into_resource_spans(spans);
        let n: usize = regrouped
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, count);
    }
});
