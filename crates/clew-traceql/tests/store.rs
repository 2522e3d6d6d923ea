//! The same queries over a real `clew_store::Store` whose data is in the head only, in blocks
//! only, and mixed (including a trace split between a block and the head) give the same answers,
//! and those answers match evaluating each trace directly.

mod common;

use clew_model::flat::flatten;
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_store::{Store, StoreConfig, StoreMetrics};
use clew_traceql::{compile, search, SearchRequest};
use common::{resource_spans, spec, SpanSpec};
use std::time::Duration;

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    // Flushes are driven by the test.
    c.flush_max_age = Duration::from_secs(3600);
    c.compaction.enabled = false;
    // The fixtures' spans are from 2025: keep them whatever today's date.
    c.retention = Duration::from_secs(100 * 365 * 86_400);
    c
}

fn tenant() -> Tenant {
    Tenant::new("t").unwrap()
}

/// Six traces, each a variation of the common trace; trace `n` starts `n` seconds after BASE.
fn dataset() -> Vec<(u8, Vec<SpanSpec>)> {
    let keep = |ids: &[u8]| -> Vec<SpanSpec> {
        spec().into_iter().filter(|s| ids.contains(&s.id)).collect()
    };
    let mut no_error = spec();
    no_error[2].status = 1;
    no_error[2].message = "";
    let mut slow = spec();
    slow[3].duration_ms = 70;
    vec![
        (1, spec()),
        (2, no_error),
        (3, keep(&[1, 2, 6])),
        (4, keep(&[2, 3, 4, 5])),
        (5, slow),
        (6, keep(&[6])),
    ]
}

fn batch(trace: u8, specs: &[SpanSpec]) -> SpanBatch {
    SpanBatch::new(tenant(), resource_spans(specs, trace, trace as u64 * 1000))
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    HeadOnly,
    BlocksOnly,
    Mixed,
}

async fn open(layout: Layout, dir: &std::path::Path) -> Store {
    let (store, _) = Store::open(cfg(dir), StoreMetrics::default())
        .await
        .unwrap();
    let data = dataset();
    match layout {
        Layout::HeadOnly => {
            for (t, specs) in &data {
                store.consume(batch(*t, specs)).await.unwrap();
            }
            assert!(store.head_span_count() > 0);
        }
        Layout::BlocksOnly => {
            // Two blocks.
            for (i, (t, specs)) in data.iter().enumerate() {
                store.consume(batch(*t, specs)).await.unwrap();
                if i == 2 {
                    store.flush().await.unwrap();
                }
            }
            store.flush().await.unwrap();
            assert_eq!(store.head_span_count(), 0);
            assert_eq!(store.blocks(&tenant()).len(), 2);
        }
        Layout::Mixed => {
            // Traces 1–3 in a block; trace 5's first half in the block, its second half and
            // traces 4 and 6 in the head.
            for (t, specs) in &data[..3] {
                store.consume(batch(*t, specs)).await.unwrap();
            }
            let (t5, slow) = &data[4];
            store.consume(batch(*t5, &slow[..3])).await.unwrap();
            store.flush().await.unwrap();
            store.consume(batch(*t5, &slow[3..])).await.unwrap();
            store.consume(batch(data[3].0, &data[3].1)).await.unwrap();
            store.consume(batch(data[5].0, &data[5].1)).await.unwrap();
            assert!(store.head_span_count() > 0);
            assert_eq!(store.blocks(&tenant()).len(), 1);
        }
    }
    store
}

/// Queries with the trace numbers they match, newest first.
const CASES: &[(&str, &[u8])] = &[
    ("{ }", &[6, 5, 4, 3, 2, 1]),
    ("{ status = error }", &[5, 4, 1]),
    ("{ span.db.system = \"redis\" && duration > 50ms }", &[5]),
    ("{ resource.service.name = \"auth\" }", &[6, 5, 3, 2, 1]),
    ("{ rootServiceName = \"frontend\" }", &[5, 3, 2, 1]),
    ("{ rootName = nil }", &[6, 4]),
    ("{ name = \"cart.get\" } > { status = error }", &[5, 4, 1]),
    (
        "{ kind = server } >> { name =~ \"redis.*\" }",
        &[5, 4, 2, 1],
    ),
    (
        "{ name = \"redis GET\" } << { name = \"GET /\" }",
        &[5, 2, 1],
    ),
    (
        "{ name = \"redis GET\" } ~ { name = \"redis SET\" }",
        &[5, 4, 2, 1],
    ),
    ("{ name = \"GetCart\" } < { kind = client }", &[5, 4, 2, 1]),
    ("{ status = error } && { name = \"auth\" }", &[5, 1]),
    (
        "{ status = ok && name = \"GetCart\" } || { name = \"auth\" && rootName = nil }",
        &[6, 2],
    ),
    ("{ kind = client } | count() = 3", &[5, 4, 2, 1]),
    (
        "{ } | by(resource.service.name) | count() > 2",
        &[5, 4, 2, 1],
    ),
    ("{ } | max(duration) > 60ms", &[5, 3, 2, 1]),
    ("{ } | avg(duration) < 20ms", &[6, 4]),
    ("{ traceDuration < 50ms }", &[6, 4]),
    ("{ span.http.status_code = \"500\" }", &[]),
    (
        "{ span.http.status_code = 500 } !> { kind = client }",
        &[5, 4, 3, 2, 1],
    ),
];

#[tokio::test]
async fn same_answers_over_head_blocks_and_mixed() {
    // The oracle: evaluate each trace of the dataset directly.
    let traces: Vec<(u8, Vec<clew_model::FlatSpan>)> = dataset()
        .into_iter()
        .map(|(t, specs)| (t, flatten(resource_spans(&specs, t, t as u64 * 1000))))
        .collect();
    for (q, want) in CASES {
        let c = compile(q).unwrap();
        let mut direct: Vec<u8> = traces
            .iter()
            .filter(|(_, spans)| !c.evaluate(spans).is_empty())
            .map(|(t, _)| *t)
            .collect();
        direct.reverse();
        if std::env::var("PRINT_ORACLE").is_ok() && &direct != want {
            eprintln!("ORACLE {q} -> {direct:?}");
            continue;
        }
        assert_eq!(&direct, want, "oracle for {q}");
    }

    for layout in [Layout::HeadOnly, Layout::BlocksOnly, Layout::Mixed] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(layout, dir.path()).await;
        for (q, want) in CASES {
            let req = SearchRequest {
                query: q.to_string(),
                ..Default::default()
            };
            let res = search(&store, &tenant(), &req).await.unwrap();
            let got: Vec<u8> = res.traces.iter().map(|t| t.trace_id.0[0]).collect();
            assert_eq!(&got, want, "{q} over {layout:?}");
            assert!(res.inspected_traces >= got.len() as u64);
            for t in &res.traces {
                assert!(!t.span_sets.is_empty());
                assert!(t
                    .span_sets
                    .iter()
                    .all(|s| s.spans.len() <= 3 && s.matched >= s.spans.len()));
            }
        }

        // The whole trace 5 is seen even when split between a block and the head.
        let req = SearchRequest {
            query: "{ name = \"GET /\" } >> { span.db.system = \"redis\" && duration > 50ms }"
                .into(),
            limit: 5,
            spans_per_spanset: 1,
            ..Default::default()
        };
        let res = search(&store, &tenant(), &req).await.unwrap();
        assert_eq!(res.traces.len(), 1, "{layout:?}");
        let m = &res.traces[0];
        assert_eq!(m.trace_id, TraceId([5; 16]));
        assert_eq!(m.root_service_name, "frontend");
        assert_eq!(m.root_trace_name, "GET /");
        assert_eq!(m.start_unix_nano, common::BASE + 5000 * common::MS);
        assert_eq!(m.duration_ms, 100);
        assert_eq!(m.span_sets[0].matched, 1);
        assert_eq!(m.span_sets[0].spans[0].name, "redis GET");

        // limit and the time range.
        let req = SearchRequest {
            query: "{ }".into(),
            limit: 2,
            ..Default::default()
        };
        let got: Vec<u8> = search(&store, &tenant(), &req)
            .await
            .unwrap()
            .traces
            .iter()
            .map(|t| t.trace_id.0[0])
            .collect();
        assert_eq!(got, vec![6, 5], "{layout:?}");
        let req = SearchRequest {
            query: "{ status = error }".into(),
            start_unix_nano: Some(common::BASE + 3500 * common::MS),
            end_unix_nano: Some(common::BASE + 4500 * common::MS),
            ..Default::default()
        };
        let got: Vec<u8> = search(&store, &tenant(), &req)
            .await
            .unwrap()
            .traces
            .iter()
            .map(|t| t.trace_id.0[0])
            .collect();
        assert_eq!(got, vec![4], "{layout:?}");

        // Another tenant sees nothing; a bad query is a parse error.
        let other = Tenant::new("other").unwrap();
        let req = SearchRequest {
            query: "{ }".into(),
            ..Default::default()
        };
        assert!(search(&store, &other, &req)
            .await
            .unwrap()
            .traces
            .is_empty());
        let req = SearchRequest {
            query: "{ .a = }".into(),
            ..Default::default()
        };
        assert!(matches!(
            search(&store, &tenant(), &req).await,
            Err(clew_traceql::TraceqlError::Parse(m)) if m.starts_with("parse error at 1:8")
        ));
    }
}
