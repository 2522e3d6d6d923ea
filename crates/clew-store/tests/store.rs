//! Store behaviour on real files: durability, replay, blocks, compaction, tenancy.

use clew_model::attrs::{kv_int, kv_str};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::{SearchQuery, Store, StoreConfig, StoreMetrics, TraceReader};
use std::io::Write;
use std::time::Duration;

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    // Flushes and compactions are driven by the tests.
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.compaction.min_blocks = 2;
    // The fixtures' spans are from 2025: keep them whatever today's date.
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c
}

fn batch(tenant: &str, trace: u8, service: &str, spans: u8) -> SpanBatch {
    let now = 1_750_000_000_000_000_000u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op{i}"),
            kind: if i == 1 { 2 } else { 3 },
            start_time_unix_nano: now + i as u64 * 1000 + trace as u64 * 1_000_000,
            end_time_unix_nano: now + 5_000_000 + trace as u64 * 1_000_000,
            attributes: vec![
                kv_str("http.route", format!("/r{trace}")),
                kv_int("n", i as i64),
            ],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

fn t(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

#[tokio::test]
async fn read_your_writes_then_blocks_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    store.consume(batch("a", 7, "cart", 3)).await.unwrap();
    // Visible the moment the append returns.
    assert_eq!(
        store.trace(&t("a"), TraceId([7; 16])).await.unwrap().len(),
        3
    );
    assert_eq!(store.services(&t("a")).await.unwrap(), vec!["cart"]);

    store.flush().await.unwrap();
    assert_eq!(store.head_span_count(), 0);
    assert_eq!(store.blocks(&t("a")).len(), 1);
    let spans = store.trace(&t("a"), TraceId([7; 16])).await.unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].service_name(), "cart");
    let wal_files = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert_eq!(
        wal_files, 1,
        "flushed segments are deleted, one live segment remains"
    );
    store.shutdown().await.unwrap();
    drop(store);

    let (store, report) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!(report.blocks, 1);
    assert_eq!(
        store.trace(&t("a"), TraceId([7; 16])).await.unwrap().len(),
        3
    );
    assert_eq!(
        store.operations(&t("a"), Some("cart")).await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn wal_replay_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
            .await
            .unwrap();
        store.consume(batch("a", 1, "s", 2)).await.unwrap();
        store.consume(batch("a", 2, "s", 2)).await.unwrap();
        // No shutdown: the spans exist only in the WAL, as after kill -9.
    }
    let wal = dir.path().join("wal");
    let seg = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A torn record: a header promising more bytes than follow.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9])
        .unwrap();

    let (store, report) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!(report.replay.records, 2);
    assert_eq!(report.replay.spans, 4);
    assert_eq!(report.replay.truncated_bytes, 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(
        store.trace(&t("a"), TraceId([1; 16])).await.unwrap().len(),
        2
    );
    assert_eq!(
        store.trace(&t("a"), TraceId([2; 16])).await.unwrap().len(),
        2
    );
    // New appends after recovery are durable too.
    store.consume(batch("a", 3, "s", 1)).await.unwrap();
    drop(store);
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!(
        store.trace(&t("a"), TraceId([3; 16])).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn compaction_merges_blocks_and_removes_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    // The same batch twice, as an OTLP client retrying after a lost response would send it.
    for _ in 0..2 {
        store.consume(batch("a", 5, "s", 4)).await.unwrap();
        store.consume(batch("a", 6, "s", 4)).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.blocks(&t("a")).len(), 2);
    assert_eq!(
        store.trace(&t("a"), TraceId([5; 16])).await.unwrap().len(),
        4,
        "reads dedupe too"
    );
    assert_eq!(store.compact_once().await.unwrap(), 1);
    let blocks = store.blocks(&t("a"));
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].meta.span_count, 8);
    assert_eq!(blocks[0].meta.compacted_from.len(), 2);
    assert_eq!(
        store.trace(&t("a"), TraceId([6; 16])).await.unwrap().len(),
        4
    );
    // A restart before the delayed deletion removes the replaced blocks.
    drop(store);
    let (store, report) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    assert_eq!(report.removed_compacted_blocks, 2);
    assert_eq!(store.blocks(&t("a")).len(), 1);
}

#[tokio::test]
async fn compaction_never_writes_a_block_over_max_block_spans() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.compaction.max_block_spans = 10;
    let (store, _) = Store::open(c, StoreMetrics::default()).await.unwrap();
    // Blocks of 6, 7 and 3 spans, successive in time: neighbours merge, and 7 + 3 fits the
    // ceiling where 6 + 7 would not.
    for (trace, spans) in [(1u8, 6u8), (2, 7), (3, 3)] {
        store.consume(batch("a", trace, "s", spans)).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.compact_once().await.unwrap(), 1);
    let mut counts: Vec<u64> = store
        .blocks(&t("a"))
        .iter()
        .map(|b| b.meta.span_count)
        .collect();
    counts.sort();
    assert_eq!(counts, vec![6, 10]);
    // Together they would pass the ceiling (and the 10 is full): they stay apart.
    assert_eq!(store.compact_once().await.unwrap(), 0);
    assert!(store
        .blocks(&t("a"))
        .iter()
        .all(|b| b.meta.span_count <= 10));
}

/// Merges take neighbours in time (`compaction_plan`), so compacted blocks cover successive time
/// ranges and a limit-N search reads the newest block only; smallest-first merging made every
/// block span the whole day and a search read them all.
#[tokio::test]
async fn compaction_merges_neighbours_in_time_so_a_search_reads_the_newest_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.compaction.max_block_spans = 12;
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(c, metrics.clone()).await.unwrap();
    // Six flushes of one trace each, one millisecond apart, of 4 or 8 spans. Smallest first
    // would merge traces 1, 3 and 5 (4 + 4 + 4) into a block that spans almost everything.
    for (trace, spans) in [(1u8, 4u8), (2, 8), (3, 4), (4, 8), (5, 4), (6, 4)] {
        store.consume(batch("a", trace, "s", spans)).await.unwrap();
        store.flush().await.unwrap();
    }
    while store.compact_once().await.unwrap() > 0 {}
    let mut blocks = store.blocks(&t("a"));
    blocks.sort_by_key(|b| b.meta.min_start_unix_nano);
    let counts: Vec<u64> = blocks.iter().map(|b| b.meta.span_count).collect();
    assert_eq!(counts, vec![12, 12, 8], "traces 1-2, 3-4 and 5-6");
    for w in blocks.windows(2) {
        assert!(
            w[0].meta.max_start_unix_nano < w[1].meta.min_start_unix_nano,
            "blocks overlap in time: {:?} {:?}",
            w[0].meta,
            w[1].meta
        );
    }
    // The two newest traces are both in the newest block: the oldest block is never read (a
    // small newest block leaves a core free, which starts on the next newest).
    let q = SearchQuery {
        limit: 2,
        ..Default::default()
    };
    let before = metrics.search_blocks_read();
    let hits = store.search(&t("a"), &q).await.unwrap();
    let ids: Vec<TraceId> = hits.iter().map(|h| h.trace_id).collect();
    assert_eq!(ids, vec![TraceId([6; 16]), TraceId([5; 16])]);
    let read = metrics.search_blocks_read() - before;
    assert!(read < 3, "{read} blocks read");
}

#[tokio::test]
async fn streaming_merge_in_many_slices_keeps_every_trace_whole_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.merge_slice_spans = 5;
    let (store, _) = Store::open(c, StoreMetrics::default()).await.unwrap();
    // Trace ids spread over the whole id space, so every slice gets some.
    for round in 0..3u8 {
        for i in 0..20u8 {
            store
                .consume(batch(
                    "a",
                    i.wrapping_mul(13).wrapping_add(round * 80).wrapping_add(1),
                    "s",
                    3,
                ))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    // A retried batch: a duplicate to remove.
    store.consume(batch("a", 14, "s", 3)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.blocks(&t("a")).len(), 4);
    assert_eq!(store.compact_once().await.unwrap(), 1);
    let blocks = store.blocks(&t("a"));
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].meta.span_count, 180);
    assert_eq!(blocks[0].meta.trace_count, 60);
    let ranges: Vec<(String, String)> = blocks[0]
        .meta
        .row_groups
        .iter()
        .map(|rg| (rg.first_trace_id.clone(), rg.last_trace_id.clone()))
        .collect();
    for w in ranges.windows(2) {
        assert!(
            w[0].1 < w[1].0,
            "row groups in trace-id order, no trace split: {ranges:?}"
        );
    }
    for round in 0..3u8 {
        for i in 0..20u8 {
            let id = i.wrapping_mul(13).wrapping_add(round * 80).wrapping_add(1);
            assert_eq!(
                store.trace(&t("a"), TraceId([id; 16])).await.unwrap().len(),
                3
            );
        }
    }
}

/// A memory budget a test sets by hand: `room` bytes, except none at all for `short_for` from the
/// `short_from`-th question on.
struct TestBudget {
    room: std::sync::atomic::AtomicU64,
    short_from: u64,
    short_for: std::time::Duration,
    short_until: parking_lot::Mutex<Option<std::time::Instant>>,
    asked: std::sync::atomic::AtomicU64,
}

impl clew_store::MemoryBudget for TestBudget {
    fn room_bytes(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let n = self.asked.fetch_add(1, Ordering::Relaxed) + 1;
        let mut until = self.short_until.lock();
        if n == self.short_from {
            *until = Some(std::time::Instant::now() + self.short_for);
        }
        if until.is_some_and(|t| std::time::Instant::now() < t) {
            return Some(0);
        }
        Some(self.room.load(Ordering::Relaxed))
    }
}

#[tokio::test]
async fn compaction_waits_for_memory_under_the_limiter_and_defers_without_it() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.merge_slice_spans = 5;
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(c, metrics.clone()).await.unwrap();
    for round in 0..3u8 {
        for i in 0..10u8 {
            let id = i.wrapping_mul(23).wrapping_add(round * 90).wrapping_add(1);
            store.consume(batch("a", id, "s", 3)).await.unwrap();
        }
        store.flush().await.unwrap();
    }
    let budget = std::sync::Arc::new(TestBudget {
        // Not even one 5-span slice (2 × 5 × 2 KiB) fits.
        room: std::sync::atomic::AtomicU64::new(10_000),
        // The deferred round asks once, the next merge once to size its slices and then before
        // its second slice: that answer is "no room" for 600 ms.
        short_from: 3,
        short_for: std::time::Duration::from_millis(600),
        short_until: parking_lot::Mutex::new(None),
        asked: Default::default(),
    });
    store.set_memory_budget(budget.clone());

    assert_eq!(store.compact_once().await.unwrap(), 0, "deferred");
    assert_eq!(store.blocks(&t("a")).len(), 3, "inputs untouched");
    assert_eq!(metrics.compactions_deferred(), 1);

    // Room for slices, then none right after the first one for half a second: the merge waits
    // and completes.
    budget.room.store(1 << 20, Ordering::Relaxed);
    let started = std::time::Instant::now();
    assert_eq!(store.compact_once().await.unwrap(), 1);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "the merge waited for room: {:?}",
        started.elapsed()
    );
    assert_eq!(metrics.compactions_deferred(), 1);
    let blocks = store.blocks(&t("a"));
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].meta.span_count, 90);
    for round in 0..3u8 {
        for i in 0..10u8 {
            let id = i.wrapping_mul(23).wrapping_add(round * 90).wrapping_add(1);
            assert_eq!(
                store.trace(&t("a"), TraceId([id; 16])).await.unwrap().len(),
                3
            );
        }
    }
}

#[tokio::test]
async fn search_spans_head_and_blocks_and_respects_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    store.consume(batch("a", 1, "cart", 2)).await.unwrap();
    store.flush().await.unwrap();
    store.consume(batch("a", 2, "cart", 2)).await.unwrap();
    store.consume(batch("b", 3, "cart", 2)).await.unwrap();

    let q = SearchQuery {
        service: Some("cart".into()),
        ..Default::default()
    };
    let hits = store.search(&t("a"), &q).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.trace_id).collect::<Vec<_>>(),
        vec![TraceId([2; 16]), TraceId([1; 16])],
        "newest first"
    );
    assert_eq!(
        store.search(&t("b"), &q).await.unwrap().len(),
        1,
        "tenant b sees only its trace"
    );
    assert!(store
        .trace(&t("b"), TraceId([1; 16]))
        .await
        .unwrap()
        .is_empty());

    let q = SearchQuery {
        attributes: vec![
            ("http.route".into(), "/r1".into()),
            ("n".into(), "2".into()),
        ],
        ..Default::default()
    };
    assert_eq!(store.search(&t("a"), &q).await.unwrap().len(), 1);
    let q = SearchQuery {
        operation: Some("op2".into()),
        min_duration_nanos: Some(1),
        limit: 1,
        ..Default::default()
    };
    assert_eq!(store.search(&t("a"), &q).await.unwrap().len(), 1);
    let q = SearchQuery {
        min_duration_nanos: Some(10_000_000_000),
        ..Default::default()
    };
    assert!(store.search(&t("a"), &q).await.unwrap().is_empty());
}

#[tokio::test]
async fn dependencies_link_services() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(cfg(dir.path()), StoreMetrics::default())
        .await
        .unwrap();
    let mut b = batch("a", 1, "frontend", 1);
    let mut child = batch("a", 1, "backend", 2);
    child.resource_spans[0].scope_spans[0].spans.remove(0); // keep span 2, child of span 1
    b.resource_spans.extend(child.resource_spans);
    store.consume(b).await.unwrap();
    let deps = store.dependencies(&t("a"), 0, u64::MAX).await.unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(
        (
            deps[0].parent.as_str(),
            deps[0].child.as_str(),
            deps[0].call_count
        ),
        ("frontend", "backend", 1)
    );
    store.flush().await.unwrap();
    assert_eq!(
        store.dependencies(&t("a"), 0, u64::MAX).await.unwrap(),
        deps
    );
}

#[tokio::test]
async fn overload_is_a_retryable_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_head_spans = 5;
    let (store, _) = Store::open(c, StoreMetrics::default()).await.unwrap();
    store.consume(batch("a", 1, "s", 4)).await.unwrap();
    let err = store.consume(batch("a", 2, "s", 4)).await.unwrap_err();
    assert!(
        matches!(err, clew_model::SinkError::Overloaded { .. }),
        "{err:?}"
    );
    store.flush().await.unwrap();
    store.consume(batch("a", 2, "s", 4)).await.unwrap();
}
