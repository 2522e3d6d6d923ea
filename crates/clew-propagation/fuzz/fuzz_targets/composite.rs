#![no_main]
mod common;

use clew_propagation::{
    B3Encoding, B3Propagator, BaggagePropagator, CompositePropagator, JaegerPropagator, Propagator,
    TraceContextPropagator,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Input: `name: value` lines, any header names.
    let s = String::from_utf8_lossy(data);
    let h = common::header_lines(&s);
    for p in [
        CompositePropagator::w3c(),
        CompositePropagator::default()
            .with(TraceContextPropagator::new())
            .with(B3Propagator::with_encoding(B3Encoding::SingleAndMulti))
            .with(JaegerPropagator::new())
            .with(BaggagePropagator::new()),
        CompositePropagator::default()
            .with(JaegerPropagator::new())
            .with(B3Propagator::new())
            .with(TraceContextPropagator::new()),
    ] {
        let cx = p.extract_new(&h);
        if let Some(sc) = &cx.span {
            assert!(sc.is_valid() && sc.is_remote);
        }
        common::round_trip_with(&p, &h, false);
    }
});
