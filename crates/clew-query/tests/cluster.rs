//! The querier ↔ ingester read path over real loopback HTTP: `read_router` over a real store (an
//! "ingester"), `RemoteReader` as its client, and `Federated` over a second store (the "bucket")
//! plus that remote; garbage requests get client errors, not 500s.

use clew_model::attrs::kv_str;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SpanBatch, SpanSink, Tenant, TraceId};
use clew_query::cluster::{read_router, Federated, QuerierMetrics, RemoteReader, READ_PATH};
use clew_store::{SearchQuery, Store, StoreConfig, StoreMetrics, TraceReader};
use std::sync::Arc;

fn tenant() -> Tenant {
    Tenant::new("acme").unwrap()
}

/// A trace of `spans` spans (ids 1..=spans) of service `svc`, starting now-ish.
fn batch(trace: u8, svc: &str, span_ids: std::ops::RangeInclusive<u8>) -> SpanBatch {
    // One start time for the whole test: the same span sent twice must be the same span.
    static T0: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let t0 = *T0.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            - 60_000_000_000
    });
    let spans = span_ids
        .map(|i| Span {
            trace_id: vec![trace; 16],
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op{i}"),
            kind: 2,
            start_time_unix_nano: t0 + i as u64 * 1000,
            end_time_unix_nano: t0 + 5_000_000,
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        tenant(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", svc)],
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

async fn store(dir: &std::path::Path) -> Store {
    let mut c = StoreConfig::new(dir);
    c.compaction.enabled = false;
    Store::open(c, StoreMetrics::default()).await.unwrap().0
}

/// Serves the read API over `reader` on a free loopback port; returns its base URL.
async fn serve(reader: Arc<dyn TraceReader>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = read_router(reader, "X-Scope-OrgID");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_remote_ingester_reads_like_its_store_and_federation_dedupes() {
    let (ingester_dir, bucket_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ingester = store(ingester_dir.path()).await;
    let bucket = store(bucket_dir.path()).await;
    // Trace 7 is split: spans 1-3 flushed to the bucket, 3-5 still on the ingester (span 3 in
    // both, as after an OTLP retry). Trace 8 is only on the ingester, trace 9 only in the bucket.
    bucket.consume(batch(7, "front", 1..=3)).await.unwrap();
    ingester.consume(batch(7, "front", 3..=5)).await.unwrap();
    ingester.consume(batch(8, "pay", 1..=2)).await.unwrap();
    bucket.consume(batch(9, "front", 1..=1)).await.unwrap();

    let url = serve(Arc::new(ingester.clone())).await;
    let remote = RemoteReader::new(&url, "X-Scope-OrgID", reqwest::Client::new());
    // The remote answers exactly as the store it serves.
    let t = tenant();
    assert_eq!(
        remote.trace(&t, TraceId([7; 16])).await.unwrap(),
        ingester.trace(&t, TraceId([7; 16])).await.unwrap()
    );
    let q = SearchQuery {
        service: Some("pay".into()),
        ..Default::default()
    };
    assert_eq!(
        remote.search(&t, &q).await.unwrap(),
        ingester.search(&t, &q).await.unwrap()
    );
    assert_eq!(remote.services(&t).await.unwrap(), ["front", "pay"]);
    assert_eq!(
        remote.operations(&t, Some("pay")).await.unwrap(),
        ingester.operations(&t, Some("pay")).await.unwrap()
    );
    // Another tenant sees nothing.
    let other = Tenant::new("other").unwrap();
    assert!(remote
        .trace(&other, TraceId([7; 16]))
        .await
        .unwrap()
        .is_empty());

    let metrics = QuerierMetrics::default();
    let fed = Federated::new(
        Arc::new(bucket.clone()),
        vec![(url.clone(), Arc::new(remote) as Arc<dyn TraceReader>)],
        metrics.clone(),
    );
    let spans = fed.trace(&t, TraceId([7; 16])).await.unwrap();
    let ids: Vec<u8> = spans.iter().map(|s| s.span.span_id[0]).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "every span once, in start order");
    let all = SearchQuery {
        limit: 10,
        ..Default::default()
    };
    let mut hits: Vec<u8> = fed
        .search(&t, &all)
        .await
        .unwrap()
        .iter()
        .map(|h| h.trace_id.0[0])
        .collect();
    hits.sort();
    assert_eq!(hits, [7, 8, 9]);
    let one = SearchQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(fed.search(&t, &one).await.unwrap().len(), 1);
    assert_eq!(fed.services(&t).await.unwrap(), ["front", "pay"]);

    // An ingester that is gone: the bucket still answers.
    let gone = RemoteReader::new(
        "http://127.0.0.1:9",
        "X-Scope-OrgID",
        reqwest::Client::new(),
    );
    let fed = Federated::new(
        Arc::new(bucket.clone()),
        vec![("gone".into(), Arc::new(gone) as Arc<dyn TraceReader>)],
        metrics,
    );
    assert_eq!(fed.trace(&t, TraceId([9; 16])).await.unwrap().len(), 1);
}

#[tokio::test]
async fn garbage_read_requests_are_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve(Arc::new(store(dir.path()).await)).await;
    let c = reqwest::Client::new();
    let post = |body: &'static str| {
        c.post(format!("{url}{READ_PATH}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "",
        "{",
        "garbage",
        r#"{"op":"trace"}"#,
        r#"{"op":"no_such_op"}"#,
        r#"{"op":"search","query":{"limit":"ten"}}"#,
        r#"{"op":"trace","trace_id":"zz"}"#,
        r#"{"op":"trace","trace_id":"00000000000000000000000000000000"}"#,
    ] {
        let status = post(body).await.unwrap().status();
        assert!(status.is_client_error(), "{body:?} → {status}");
    }
    let r = c
        .post(format!("{url}{READ_PATH}"))
        .header("X-Scope-OrgID", "not a tenant!")
        .json(&serde_json::json!({"op": "services"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
