#![no_main]
mod common;

use clew_propagation::b3::parse_single;
use clew_propagation::{B3Encoding, B3Propagator, HeaderList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let parsed = parse_single(&s);
    let h = HeaderList::new().with("b3", s.as_ref());
    let p = B3Propagator::with_encoding(B3Encoding::Single);
    let cx = clew_propagation::Propagator::extract_new(&p, &h);
    if let Ok(b3) = parsed {
        assert_eq!(cx.sampling, b3.sampling);
        assert_eq!(cx.span.as_ref().map(|sc| (sc.trace_id, sc.span_id)), b3.ids);
    } else {
        assert!(cx.span.is_none() && cx.sampling.is_none());
    }
    common::round_trip(&p, &h);
    common::round_trip(&B3Propagator::with_encoding(B3Encoding::SingleAndMulti), &h);
});
