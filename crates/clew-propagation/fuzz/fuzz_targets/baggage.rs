#![no_main]
mod common;

use clew_propagation::baggage::{parse_member, MAX_BYTES, MAX_MEMBERS};
use clew_propagation::{Baggage, BaggagePropagator, HeaderList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let fields: Vec<&str> = s.split('\n').collect();
    let b = Baggage::parse_fields(&fields);
    assert!(b.len() <= MAX_MEMBERS);
    let h = b.header_value();
    assert!(h.len() <= MAX_BYTES, "{}", h.len());
    let again = Baggage::parse(&h);
    assert_eq!(again, b, "header {h:?}");
    if let Ok(e) = parse_member(&s) {
        let enc = e.encode();
        assert_eq!(parse_member(&enc).as_ref(), Ok(&e), "member {enc:?}");
    }
    let mut hl = HeaderList::new();
    for f in &fields {
        hl.append("baggage", *f);
    }
    common::round_trip(&BaggagePropagator::new(), &hl);
});
