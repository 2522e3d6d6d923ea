#![no_main]
mod common;

use clew_propagation::b3::{
    parse_multi, X_B3_FLAGS, X_B3_PARENT_SPAN_ID, X_B3_SAMPLED, X_B3_SPAN_ID, X_B3_TRACE_ID,
};
use clew_propagation::{B3Encoding, B3Propagator, HeaderList};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    X_B3_TRACE_ID,
    X_B3_SPAN_ID,
    X_B3_PARENT_SPAN_ID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
];

fuzz_target!(|data: &[u8]| {
    // Input: up to five newline-separated values for the five headers; an empty one is absent.
    let s = String::from_utf8_lossy(data);
    let mut h = HeaderList::new();
    for (name, v) in NAMES.iter().zip(s.split('\n')) {
        if !v.is_empty() {
            h.append(*name, v);
        }
    }
    let _ = parse_multi(&h);
    common::round_trip(&B3Propagator::with_encoding(B3Encoding::Multi), &h);
    common::round_trip(&B3Propagator::with_encoding(B3Encoding::Single), &h);
});
