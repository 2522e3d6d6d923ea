//! The Jaeger query API's parameters: `/api/traces?service=…&tags=…&minDuration=…&limit=…` as the
//! handler reads them (`clew_query::parse_jaeger_search` over the decoded query string), the
//! dependencies `lookback`, and each value parser on its own (Go durations, epochs, RFC 3339
//! times, trace ids, `tag=k:v`, `tags={json}`). Errors are fine, panics are not; a query that is
//! accepted respects the bounds the handler promises.
#![no_main]

use clew_query::params::{self, QueryParams};
use clew_query::{parse_jaeger_search, parse_lookback_millis_or_duration, MAX_TRACES_PER_SEARCH};
use libfuzzer_sys::fuzz_target;

/// A fixed "now" (2023-11-14T22:13:20Z), so `lookback` without `end` is deterministic.
const NOW: u64 = 1_700_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let q = QueryParams::parse(Some(text));
    if let Ok(s) = parse_jaeger_search(&q, NOW) {
        assert!(s.limit <= MAX_TRACES_PER_SEARCH);
        if let (Some(min), Some(max)) = (s.min_duration_nanos, s.max_duration_nanos) {
            assert!(min <= max);
        }
        if let (Some(start), Some(end)) = (s.start_unix_nano, s.end_unix_nano) {
            assert!(start <= end);
        }
    }
    // Each value parser on the raw text, as one parameter value.
    if let Ok(n) = params::parse_go_duration(text) {
        // A duration that fits in nanoseconds parses the same as plain nanoseconds.
        if let Ok(u) = params::parse_duration_nanos(text) {
            assert_eq!(i64::try_from(u).ok(), Some(n));
        }
    }
    let _ = params::parse_u64(text);
    let _ = params::parse_epoch_micros(text);
    let _ = params::parse_epoch_millis(text);
    if let Ok(id) = params::parse_trace_id(text) {
        assert_eq!(params::parse_trace_id(&id.to_hex()).ok(), Some(id));
    }
    let _ = params::parse_rfc3339_nanos(text);
    let _ = params::parse_tag(text);
    if let Ok(pairs) = params::parse_tags_json(text) {
        let mut merged = Vec::new();
        params::merge_attributes(&mut merged, pairs);
    }
    let _ = parse_lookback_millis_or_duration(text);
});
