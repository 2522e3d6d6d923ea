//! `bloom.bin` (`clew_store::bloom::Bloom::from_bytes`), read at start-up for every block and for
//! the attribute filters in `meta.json`: errors are fine, panics are not. A filter that loads
//! writes back the same bytes, and queries on it (ids and hashes taken from the input) do not
//! panic; folding it to a smaller power-of-two size keeps every positive positive.
#![no_main]

use clew_model::TraceId;
use clew_store::bloom::Bloom;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bloom) = Bloom::from_bytes(data) else {
        return;
    };
    assert_eq!(bloom.to_bytes(), data);
    let ratio = bloom.fill_ratio();
    assert!((0.0..=1.0).contains(&ratio), "fill ratio {ratio}");
    let mut folded = bloom.clone();
    folded.fold_to(64);
    assert!(folded.bits() <= bloom.bits());
    for chunk in data.chunks(16).take(64) {
        let mut id = [0u8; 16];
        id[..chunk.len()].copy_from_slice(chunk);
        let id = TraceId(id);
        let hash = u64::from_le_bytes(id.0[..8].try_into().unwrap_or([0; 8]));
        if bloom.may_contain(&id) {
            assert!(folded.may_contain(&id), "folding lost a positive");
        }
        if bloom.may_contain_hash(hash) {
            assert!(
                folded.may_contain_hash(hash),
                "folding lost a positive hash"
            );
        }
    }
    let _ = bloom.memory_bytes();
});
