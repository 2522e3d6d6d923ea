#![no_main]
mod common;

use clew_propagation::tracestate::{TraceState, LONG_MEMBER};
use clew_propagation::{HeaderList, TraceContextPropagator};
use libfuzzer_sys::fuzz_target;

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";

fuzz_target!(|data: &[u8]| {
    let (max, rest) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b) * 4, rest),
        None => (0, data),
    };
    let s = String::from_utf8_lossy(rest);
    let fields: Vec<&str> = s.split('\n').collect();
    if let Ok(ts) = TraceState::parse_fields(&fields) {
        let h = ts.header_value();
        let again = TraceState::parse(&h).expect("re-parse of an emitted tracestate");
        assert_eq!(again, ts);
        // Truncation keeps whole members, never exceeds the limit, and always re-parses.
        let t = ts.header_value_truncated(max);
        assert!(t.len() <= max, "{} > {max}", t.len());
        let tt = TraceState::parse(&t).expect("re-parse of a truncated tracestate");
        for (k, v) in tt.iter() {
            assert_eq!(ts.get(k), Some(v));
        }
        // Members of at most 128 characters are dropped only after every longer one.
        if tt.len() < ts.len() && tt.iter().any(|(k, v)| k.len() + v.len() + 1 > LONG_MEMBER) {
            assert!(ts
                .iter()
                .filter(|(k, _)| tt.get(k).is_none())
                .all(|(k, v)| k.len() + v.len() + 1 > LONG_MEMBER
                    || t.len() + k.len() + v.len() + 2 > max));
        }
    }
    let mut h = HeaderList::new().with("traceparent", TP);
    for f in &fields {
        h.append("tracestate", *f);
    }
    common::round_trip(&TraceContextPropagator::new(), &h);
});
