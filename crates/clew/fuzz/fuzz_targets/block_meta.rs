//! `meta.json` of a block (`clew_store::block::BlockMeta`, serde JSON) and what loading a block does
//! with it before any data is read (`Block::from_parts`: row-group trace-id ranges, the attribute
//! bloom filter), as start-up does for every block on disk or in the bucket: errors are fine,
//! panics are not. Metadata that loads serializes back to JSON that loads to the same value, and
//! the block answers lookups and search pruning without panicking.
#![no_main]

use clew_model::TraceId;
use clew_store::block::{Block, BlockMeta};
use clew_store::bloom::Bloom;
use clew_store::storage::Storage;
use clew_store::SearchQuery;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A local storage for `from_parts` (nothing is read or written through it here).
fn storage() -> &'static Storage {
    static STORAGE: OnceLock<Storage> = OnceLock::new();
    STORAGE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("clew-fuzz-block-meta-{}", std::process::id()));
        Storage::local(dir).expect("a local storage in the temp dir")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = serde_json::from_slice::<BlockMeta>(data) else {
        return;
    };
    let json = serde_json::to_vec(&meta).expect("BlockMeta serializes");
    let again: BlockMeta = serde_json::from_slice(&json).expect("the JSON we write loads");
    assert_eq!(again, meta);
    let _ = meta.dir();
    let bloom = Bloom::with_capacity(meta.trace_count.min(1 << 16) as usize);
    let Ok(block) = Block::from_parts(meta, bloom, storage().clone()) else {
        return;
    };
    let _ = block.may_contain(&TraceId([1; 16]));
    let _ = block.memory_bytes();
    let m = &block.meta;
    let q = SearchQuery {
        service: m.services.first().cloned(),
        operation: m.operations.first().map(|o| o.name.clone()),
        attributes: vec![("http.method".into(), "GET".into())],
        start_unix_nano: Some(m.min_start_unix_nano),
        end_unix_nano: Some(m.max_start_unix_nano),
        ..Default::default()
    };
    let _ = block.may_match(&q);
});
