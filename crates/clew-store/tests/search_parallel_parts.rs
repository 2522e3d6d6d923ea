//! A large block is searched in parts (contiguous row-group ranges, one per core): the union of
//! the parts' answers, each cut to the `limit` newest, must be the whole block's answer, on the
//! column path and the row path alike; and the store's search over blocks cut in parts must equal
//! reading every block whole.

#[path = "common/search.rs"]
mod search;
use clew_model::otlp::common::any_value::Value;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::{
    AttrScope, CompareOp, SearchQuery, SpanCondition, SpanField, Store, StoreConfig, StoreMetrics,
    TagValue, TraceReader,
};
use search::{kv, merge, ordered, s, Rng, BASE, SECOND};
use std::collections::HashMap;
use std::time::Duration;

fn trace(r: &mut Rng, tenant: &Tenant, n: u64, start: u64) -> SpanBatch {
    let res = vec![
        kv("service.name", s(r.pick(&["cart", "pay", "auth"]))),
        kv("region", s(r.pick(&["eu", "us"]))),
    ];
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&r.next().to_be_bytes());
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    let spans = (0..1 + r.below(3))
        .map(|i| {
            let attributes = vec![
                kv("http.route", s(r.pick(&["/a", "/b", "/c"]))),
                kv("user.id", s(&format!("u{}", r.below(20)))),
                kv("attempt", Value::IntValue(r.below(5) as i64)),
            ];
            // Starts on a coarse grid: ties on the start are frequent, and ordered by trace id.
            let st = start + i * 3 * SECOND;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (n * 8 + i + 1).to_be_bytes().to_vec(),
                name: r.pick(&["GET /a", "db"]).into(),
                start_time_unix_nano: st,
                end_time_unix_nano: st + 1000 * (1 + r.below(100)),
                attributes,
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

fn queries(r: &mut Rng) -> Vec<SearchQuery> {
    let mut out = Vec::new();
    for _ in 0..60 {
        let limit = r.pick(&[1usize, 3, 20, 10_000]);
        let mut q = SearchQuery {
            limit,
            ..Default::default()
        };
        match r.below(6) {
            // Dedicated column (column path).
            0 => q.attributes = vec![("http.route".into(), r.pick(&["/a", "/b", "/c"]).into())],
            // Generic attribute (column path from the list's leaves).
            1 => q.attributes = vec![("user.id".into(), format!("u{}", r.below(20)))],
            // Resource attribute other than service.name (row path).
            2 => {
                q.conditions = vec![SpanCondition {
                    field: SpanField::Attribute {
                        scope: AttrScope::Resource,
                        key: "region".into(),
                    },
                    op: CompareOp::Eq,
                    value: TagValue::String(r.pick(&["eu", "us"]).into()),
                }]
            }
            3 => q.service = Some(r.pick(&["cart", "pay"]).into()),
            // A range on an int attribute and a time window.
            4 => {
                q.conditions = vec![SpanCondition {
                    field: SpanField::Attribute {
                        scope: AttrScope::Span,
                        key: "attempt".into(),
                    },
                    op: CompareOp::Ge,
                    value: TagValue::Int(r.below(5) as i64),
                }];
                q.start_unix_nano = Some(BASE + r.below(200) * SECOND);
            }
            // Jaeger pseudo tag: row path.
            _ => q.attributes = vec![("span.kind".into(), "unspecified".into())],
        }
        out.push(q);
    }
    out
}

#[tokio::test]
async fn parts_of_a_block_answer_like_the_whole_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.flush_max_age = Duration::from_secs(3600);
    cfg.compaction.enabled = false;
    cfg.retention = Duration::from_secs(100 * 365 * 86_400);
    // Tiny row groups: a block of a few hundred traces has ~100 of them, enough to be cut.
    cfg.rows_per_row_group = 4;
    let (store, _) = Store::open(cfg, StoreMetrics::default()).await.unwrap();
    let tenant = Tenant::new("t").unwrap();
    let mut r = Rng(5);
    let mut n = 0;
    // Three blocks: two with their own time window, one across both.
    for b in 0..3u64 {
        for _ in 0..150 {
            n += 1;
            let start = match b {
                2 => BASE + 10 * r.below(20) * SECOND,
                _ => BASE + (b * 100 + 10 * r.below(10)) * SECOND,
            };
            store
                .consume(trace(&mut r, &tenant, n, start))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    let blocks = store.blocks(&tenant);
    assert_eq!(blocks.len(), 3);
    let mut nonempty = 0;
    for q in queries(&mut r) {
        let m = clew_store::matcher::Matcher::new(&q).unwrap();
        let limit = q.effective_limit();
        let mut whole_store: HashMap<TraceId, u64> = HashMap::new();
        for b in &blocks {
            let groups = b.row_group_count().await.unwrap();
            assert!(groups >= 40, "only {groups} row groups");
            let whole = b.search_part(&m, None).await.unwrap();
            for k in [2usize, 3, 7] {
                let mut parts = HashMap::new();
                for i in 0..k {
                    let range: Vec<usize> = (i * groups / k..(i + 1) * groups / k).collect();
                    merge(&mut parts, b.search_part(&m, Some(range)).await.unwrap());
                }
                assert_eq!(
                    ordered(parts, limit),
                    ordered(whole.clone(), limit),
                    "{k} parts: {q:?}"
                );
            }
            merge(&mut whole_store, whole);
        }
        let want = ordered(whole_store, limit);
        nonempty += usize::from(!want.is_empty());
        assert_eq!(store.search(&tenant, &q).await.unwrap(), want, "{q:?}");
        assert_eq!(
            store.search_blocks(&tenant, &q, true).await.unwrap(),
            want,
            "exhaustive: {q:?}"
        );
    }
    assert!(nonempty > 40, "too few queries with answers: {nonempty}");
}
