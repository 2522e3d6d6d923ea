#![no_main]
mod common;

use clew_propagation::{HeaderList, TraceContextPropagator, Traceparent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(tp) = Traceparent::parse(&s) {
        let h = tp.to_header();
        assert_eq!(h.len(), 55, "{h}");
        let again = Traceparent::parse(&h).expect("re-parse of an emitted traceparent");
        assert_eq!(again.version, 0);
        assert_eq!(
            (again.trace_id, again.parent_id, again.flags),
            (tp.trace_id, tp.parent_id, tp.flags)
        );
    }
    // Several fields (split on newlines) are invalid unless exactly one.
    let fields: Vec<&str> = s.split('\n').collect();
    let _ = Traceparent::parse_fields(&fields);
    common::round_trip(
        &TraceContextPropagator::new(),
        &HeaderList::new().with("traceparent", s.as_ref()),
    );
});
