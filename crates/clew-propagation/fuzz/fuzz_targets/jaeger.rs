#![no_main]
mod common;

use clew_propagation::jaeger::parse_uber_trace_id;
use clew_propagation::{HeaderList, JaegerPropagator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: uber-trace-id; following lines: `key=value` uberctx-* baggage.
    let s = String::from_utf8_lossy(data);
    let mut lines = s.split('\n');
    let first = lines.next().unwrap_or_default();
    if let Ok(u) = parse_uber_trace_id(first) {
        assert!(u.trace_id.is_valid() && u.span_id.is_valid());
    }
    let mut h = HeaderList::new().with("uber-trace-id", first);
    for l in lines {
        if let Some((k, v)) = l.split_once('=') {
            h.append(format!("uberctx-{k}"), v);
        }
    }
    common::round_trip(&JaegerPropagator::new(), &h);
});
