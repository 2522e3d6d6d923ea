//! Block skipping in searches: newest-first reading with an early stop, and the per-block
//! attribute-value filter (`attr_filter.rs`). Both must give exactly the answer of reading every
//! block: random stores of many blocks over disjoint and overlapping time ranges, random queries,
//! compared with the unpruned per-block scans; and a rare value must cost one block read.

#[path = "common/search.rs"]
mod search;
use clew_model::otlp::common::{any_value::Value, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::{
    AttrScope, CompareOp, SearchQuery, SpanCondition, SpanField, Store, StoreConfig, StoreMetrics,
    TagValue, TraceHit, TraceReader,
};
use search::{kv, ordered, s, Rng, BASE, SECOND};
use std::collections::HashMap;
use std::time::Duration;

/// One trace of 1–3 spans starting at `start`. Values are drawn from pools large enough that a
/// block of a few dozen traces misses most of them (the filter has something to rule out).
fn trace(r: &mut Rng, tenant: &Tenant, n: u64, start: u64, extra: Vec<KeyValue>) -> SpanBatch {
    let mut res = vec![kv("service.name", s(r.pick(&["cart", "pay", "auth"])))];
    res.push(kv("host.name", s(&format!("node-{}", r.below(30)))));
    if r.chance(20) {
        // A dedicated key on the resource: a spill, searched beyond the column.
        res.push(kv("http.route", s("/res")));
    }
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&r.next().to_be_bytes());
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    let spans = (0..1 + r.below(3))
        .map(|i| {
            let mut a = Vec::new();
            if r.chance(70) {
                a.push(kv("user.id", s(&format!("u{}", r.below(300)))));
            }
            if r.chance(60) {
                a.push(kv("attempt", Value::IntValue(r.below(40) as i64)));
            }
            if r.chance(40) {
                a.push(kv("cached", Value::BoolValue(r.chance(50))));
            }
            if r.chance(30) {
                // Doubles with integral values: an int equality matches them numerically.
                // -0.0 and 2^53 equal the ints 0 and 2^53 + 1 numerically but not as text.
                a.push(kv(
                    "ratio",
                    Value::DoubleValue(r.pick(&[1.0, 2.0, 0.5, 30.0, -0.0, 9007199254740992.0])),
                ));
            }
            if r.chance(50) {
                let choices = [
                    s("5"),
                    Value::IntValue(5),
                    Value::IntValue(r.below(20) as i64),
                    Value::DoubleValue(5.0),
                    Value::BoolValue(true),
                    Value::BytesValue(vec![1, 2]),
                ];
                a.push(kv("mixed", r.pick(&choices)));
            }
            if r.chance(50) {
                a.push(kv("http.route", s(r.pick(&["/a", "/b", "/c"]))));
            }
            if r.chance(5) {
                a.push(kv("host.name", s("span-level")));
            }
            if i == 0 {
                a.extend(extra.iter().cloned());
            }
            let st = start + i * 1000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (n * 8 + i + 1).to_be_bytes().to_vec(),
                name: r.pick(&["GET /a", "POST /b", "db"]).into(),
                kind: 2,
                start_time_unix_nano: st,
                end_time_unix_nano: st + 5000,
                attributes: a,
                ..Default::default()
            }
        })
        .collect();
    SpanBatch::new(
        tenant.clone(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: res,
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

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c
}

/// A store of `blocks` flushed blocks: most cover their own 100 s window (disjoint, later blocks
/// newer), every third spans the whole range (overlapping all others).
async fn build(
    dir: &std::path::Path,
    tenant: &Tenant,
    seed: u64,
    blocks: u64,
    needle_block: Option<u64>,
) -> (Store, StoreMetrics) {
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(cfg(dir), metrics.clone()).await.unwrap();
    let mut r = Rng(seed);
    let mut n = 0;
    for b in 0..blocks {
        for t in 0..30 {
            n += 1;
            // Starts on a 10 s grid: many traces tie on their start (ordered by trace id), also
            // across blocks, which the early stop must respect.
            let start = if b % 3 == 2 {
                BASE + 10 * r.below(blocks * 10) * SECOND
            } else {
                BASE + (b * 100 + 10 * r.below(10)) * SECOND
            };
            let extra = if needle_block == Some(b) && t == 7 {
                vec![
                    kv("needle", s("found-me")),
                    kv("needle.n", Value::IntValue(424242)),
                    kv("needle.t", s("typed-me")),
                ]
            } else {
                Vec::new()
            };
            store
                .consume(trace(&mut r, tenant, n, start, extra))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    assert_eq!(store.blocks(tenant).len() as u64, blocks);
    assert_eq!(store.head_span_count(), 0);
    (store, metrics)
}

fn attr(scope: AttrScope, key: &str, value: TagValue) -> SpanCondition {
    SpanCondition {
        field: SpanField::Attribute {
            scope,
            key: key.into(),
        },
        op: CompareOp::Eq,
        value,
    }
}

fn random_query(r: &mut Rng, blocks: u64) -> SearchQuery {
    let mut q = SearchQuery {
        limit: r.pick(&[1, 2, 3, 5, 20, 10_000]),
        ..Default::default()
    };
    if r.chance(40) {
        let choices = [
            ("user.id", format!("u{}", r.below(300))),
            ("attempt", r.below(45).to_string()),
            ("cached", r.pick(&["true", "false"]).to_string()),
            ("ratio", r.pick(&["1", "0.5", "30", "3"]).to_string()),
            (
                "mixed",
                r.pick(&["5", "true", "AQI=", "7", "x"]).to_string(),
            ),
            ("host.name", format!("node-{}", r.below(35))),
            ("host.name", "span-level".to_string()),
            ("http.route", r.pick(&["/a", "/res", "/zz"]).to_string()),
            ("span.kind", "server".to_string()),
            ("error", "true".to_string()),
        ];
        let (k, v) = r.pick(&choices);
        q.attributes.push((k.to_string(), v));
    }
    for _ in 0..r.below(3) {
        let scope = r.pick(&[AttrScope::Span, AttrScope::Resource, AttrScope::Any]);
        let c = match r.below(8) {
            0 => attr(
                scope,
                "user.id",
                TagValue::String(format!("u{}", r.below(300))),
            ),
            1 => attr(scope, "attempt", TagValue::Int(r.below(45) as i64)),
            2 => attr(scope, "cached", TagValue::Bool(r.chance(50))),
            3 => attr(
                scope,
                "ratio",
                TagValue::Int(r.pick(&[0, 1, 2, 3, 30, 9007199254740993])),
            ),
            4 => attr(
                scope,
                "mixed",
                r.pick(&[
                    TagValue::Int(5),
                    TagValue::Double(5.0),
                    TagValue::String("5".into()),
                    TagValue::Bool(true),
                    TagValue::Int(11),
                ]),
            ),
            5 => attr(
                scope,
                "host.name",
                TagValue::String(format!("node-{}", r.below(35))),
            ),
            6 => attr(
                scope,
                "http.route",
                TagValue::String(r.pick(&["/a", "/res"]).into()),
            ),
            _ => SpanCondition {
                field: SpanField::Attribute {
                    scope,
                    key: "attempt".into(),
                },
                op: r.pick(&[CompareOp::Gt, CompareOp::Ne, CompareOp::Exists]),
                value: TagValue::Int(r.below(40) as i64),
            },
        };
        q.conditions.push(c);
    }
    if r.chance(20) {
        q.service = Some(r.pick(&["cart", "pay"]).into());
    }
    if r.chance(25) {
        let from = BASE + r.below(blocks * 100) * SECOND;
        q.start_unix_nano = Some(from);
        q.end_unix_nano = Some(from + r.below(300) * SECOND);
    }
    q
}

/// Every block scanned, no metadata consulted: the reference answer.
async fn unpruned(store: &Store, tenant: &Tenant, q: &SearchQuery) -> Vec<TraceHit> {
    let mut hits: HashMap<TraceId, u64> = HashMap::new();
    for b in store.blocks(tenant) {
        for (id, t) in b.search(q).await.unwrap() {
            let e = hits.entry(id).or_insert(0);
            *e = (*e).max(t);
        }
    }
    ordered(hits, q.effective_limit())
}

/// Random queries on a store of 12 blocks: the search (early stop and filter) equals reading every
/// block; a block the metadata rules out has no match when scanned anyway; and the early stop and
/// the filter both actually skip blocks (else this test would prove nothing).
#[tokio::test]
async fn pruned_searches_equal_reading_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = Tenant::new("t").unwrap();
    let blocks = 12;
    let (store, metrics) = build(dir.path(), &tenant, 11, blocks, None).await;
    let mut r = Rng(99);
    let (mut ruled_out, mut matched) = (0, 0);
    for i in 0..400 {
        let q = random_query(&mut r, blocks);
        let want = unpruned(&store, &tenant, &q).await;
        let got = store.search(&tenant, &q).await.unwrap();
        assert_eq!(got, want, "query {i}: {q:?}");
        let exhaustive = store.search_blocks(&tenant, &q, true).await.unwrap();
        assert_eq!(exhaustive, want, "query {i} (exhaustive): {q:?}");
        matched += usize::from(!want.is_empty());
        for b in store.blocks(&tenant) {
            if !b.may_match(&q) {
                ruled_out += 1;
                let found = b.search(&q).await.unwrap();
                assert!(
                    found.is_empty(),
                    "query {i}: block ruled out has {found:?}: {q:?}"
                );
            }
        }
    }
    assert!(matched > 100, "too few queries with answers: {matched}");
    assert!(
        ruled_out > 500,
        "the filter ruled out only {ruled_out} blocks"
    );
    assert!(
        metrics.search_blocks_skipped() > 0,
        "no search stopped early or skipped a block"
    );
}

/// A value present in one block of 12 is answered reading that block only (bar filter false
/// positives, counted), by Jaeger tag and by typed equality (string and int, any scope); the newest-first stop reads fewer blocks than the
/// store has for a frequent value with a small limit, with the same answer as reading them all.
#[tokio::test]
async fn rare_value_reads_one_block_and_early_stop_reads_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = Tenant::new("t").unwrap();
    let blocks = 12;
    let (store, metrics) = build(dir.path(), &tenant, 5, blocks, Some(4)).await;
    let needle_trace = {
        let q = SearchQuery {
            attributes: vec![("needle".into(), "found-me".into())],
            ..Default::default()
        };
        let want = unpruned(&store, &tenant, &q).await;
        assert_eq!(want.len(), 1);
        want
    };
    // The block holding it: the one whose unpruned scan finds it.
    let mut needle_block = String::new();
    for b in store.blocks(&tenant) {
        let q = SearchQuery {
            attributes: vec![("needle".into(), "found-me".into())],
            ..Default::default()
        };
        if !b.search(&q).await.unwrap().is_empty() {
            needle_block = b.meta.block_id.clone();
        }
    }
    let queries = [
        SearchQuery {
            attributes: vec![("needle".into(), "found-me".into())],
            ..Default::default()
        },
        SearchQuery {
            attributes: vec![("needle.n".into(), "424242".into())],
            ..Default::default()
        },
        SearchQuery {
            conditions: vec![attr(
                AttrScope::Span,
                "needle.t",
                TagValue::String("typed-me".into()),
            )],
            ..Default::default()
        },
        SearchQuery {
            conditions: vec![attr(AttrScope::Any, "needle.n", TagValue::Int(424242))],
            ..Default::default()
        },
    ];
    // The filter has ~1 % false positives (at most ~0.3 % at these sizes), so a block other than
    // the needle's may be admitted now and then; the blocks read are exactly those admitted.
    let mut false_positives = 0;
    for q in &queries {
        let admitted: Vec<String> = store
            .blocks(&tenant)
            .iter()
            .filter(|b| b.may_match(q))
            .map(|b| b.meta.block_id.clone())
            .collect();
        let before = metrics.search_blocks_read();
        let got = store.search(&tenant, q).await.unwrap();
        assert_eq!(got, needle_trace, "{q:?}");
        assert_eq!(metrics.search_blocks_read() - before, admitted.len() as u64);
        assert!(admitted.contains(&needle_block), "{q:?}");
        false_positives += admitted.len() - 1;
    }
    assert!(
        false_positives <= 1,
        "{false_positives} false positives in {} block checks",
        queries.len() * (blocks as usize - 1)
    );
    // The false-positive rate over many absent values: under 2 % of block checks.
    let mut admitted = 0;
    for i in 0..300 {
        let q = SearchQuery {
            attributes: vec![("user.id".into(), format!("absent-{i}"))],
            ..Default::default()
        };
        admitted += store
            .blocks(&tenant)
            .iter()
            .filter(|b| b.may_match(&q))
            .count();
    }
    assert!(
        admitted < 300 * blocks as usize / 50,
        "{admitted} of {} admitted",
        300 * blocks
    );
    // Absent values read nothing; a resource-scoped search for a span attribute neither.
    for q in [
        SearchQuery {
            attributes: vec![("needle".into(), "not-here".into())],
            ..Default::default()
        },
        SearchQuery {
            conditions: vec![attr(
                AttrScope::Resource,
                "needle",
                TagValue::String("found-me".into()),
            )],
            ..Default::default()
        },
    ] {
        let before = metrics.search_blocks_read();
        assert!(store.search(&tenant, &q).await.unwrap().is_empty());
        assert_eq!(metrics.search_blocks_read() - before, 0, "{q:?}");
    }
    // Early stop: every trace has a service; the newest 5 come from the newest blocks.
    let q = SearchQuery {
        limit: 5,
        ..Default::default()
    };
    let before = metrics.search_blocks_read();
    let got = store.search(&tenant, &q).await.unwrap();
    let read = metrics.search_blocks_read() - before;
    assert_eq!(got, unpruned(&store, &tenant, &q).await);
    assert_eq!(got.len(), 5);
    assert!(read < blocks, "read {read} of {blocks} blocks");
    let before = metrics.search_blocks_read();
    store.search_blocks(&tenant, &q, true).await.unwrap();
    assert_eq!(metrics.search_blocks_read() - before, blocks);
}

/// Blocks written before the filter existed (no `attr_filter` in `meta.json`) are never skipped by
/// it: strip the field from every block's meta, reopen, and search for a value that is there.
#[tokio::test]
async fn blocks_without_the_filter_are_still_searched() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = Tenant::new("t").unwrap();
    let (store, _) = build(dir.path(), &tenant, 3, 3, Some(1)).await;
    store.shutdown().await.unwrap();
    drop(store);
    let mut stripped = 0;
    for entry in walk(&dir.path().join("blocks")) {
        if entry.file_name().is_some_and(|n| n == "meta.json") {
            let mut meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
            assert!(meta["attr_filter"]["bloom"].is_string(), "{entry:?}");
            assert_eq!(meta["attr_filter"]["version"], 1);
            meta.as_object_mut().unwrap().remove("attr_filter");
            // An old block has no checksums either (and the edit would not match them).
            meta.as_object_mut().unwrap().remove("checksums");
            std::fs::write(&entry, serde_json::to_vec(&meta).unwrap()).unwrap();
            stripped += 1;
        }
    }
    assert_eq!(stripped, 3);
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(cfg(dir.path()), metrics.clone()).await.unwrap();
    let q = SearchQuery {
        attributes: vec![("needle".into(), "found-me".into())],
        ..Default::default()
    };
    assert_eq!(store.search(&tenant, &q).await.unwrap().len(), 1);
    // No filter: all three blocks are read (the needle's block is not the newest).
    assert_eq!(metrics.search_blocks_read(), 3);
    for b in store.blocks(&tenant) {
        assert!(b.meta.attr_filter.is_none());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Equal start times are ordered by trace id: a block whose newest start equals the limit-th
/// newest hit found so far may still hold a better hit (a smaller trace id at that start), so the
/// early stop must read it. As many blocks as run at once (one per core) with high trace ids at
/// start T, then a block with a low trace id at T.
#[tokio::test]
async fn ties_at_the_boundary_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = Tenant::new("t").unwrap();
    let metrics = StoreMetrics::default();
    let (store, _) = Store::open(cfg(dir.path()), metrics.clone()).await.unwrap();
    let wave = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let t = BASE + 1000 * SECOND;
    let mut r = Rng(1);
    let batch = |r: &mut Rng, high: u8, n: u64| {
        let mut b = trace(r, &tenant, n, t, Vec::new());
        for sp in b.resource_spans[0].scope_spans[0].spans.iter_mut() {
            sp.trace_id[0] = high;
            sp.start_time_unix_nano = t;
        }
        b
    };
    for n in 0..wave {
        store.consume(batch(&mut r, 0xf0, n)).await.unwrap();
        store.flush().await.unwrap();
    }
    store.consume(batch(&mut r, 0x01, 99)).await.unwrap();
    store.flush().await.unwrap();
    let q = SearchQuery {
        limit: 1,
        ..Default::default()
    };
    let got = store.search(&tenant, &q).await.unwrap();
    assert_eq!(got, unpruned(&store, &tenant, &q).await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].trace_id.0[0], 0x01, "{got:?}");
    assert_eq!(metrics.search_blocks_read(), wave + 1);
}
