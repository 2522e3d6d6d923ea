//! The Tempo router over a real loopback server with a real HTTP client, backed by an in-memory
//! `TraceReader`: what the end-to-end test (`crates/clew/tests/tempo_api.rs`, the real binary)
//! cannot provoke — store failures, a broken tenant header — plus the error body conventions
//! (plain text; 404 empty) and tenancy of every route.

use clew_model::attrs::kv_str;
use clew_model::otlp::common::InstrumentationScope;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::Span;
use clew_model::otlp::Message;
use clew_model::{FlatSpan, Tenant, TraceId};
use clew_query::tempo::proto;
use clew_query::{tempo_router, QueryConfig};
use clew_store::{
    AttrScope, DependencyLink, Operation, SearchQuery, StoreError, TagValue, TraceHit, TraceReader,
};
use std::collections::HashMap;
use std::sync::Arc;

const ID: [u8; 16] = [7; 16];

#[derive(Default)]
struct MemReader {
    spans: HashMap<String, Vec<FlatSpan>>,
    fail: bool,
}

impl MemReader {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Corrupt {
                what: "block 7".into(),
                detail: "bad checksum".into(),
            })
        } else {
            Ok(())
        }
    }
    fn of(&self, t: &Tenant) -> &[FlatSpan] {
        self.spans.get(t.as_str()).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[async_trait::async_trait]
impl TraceReader for MemReader {
    async fn trace(&self, t: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        self.check()?;
        Ok(self
            .of(t)
            .iter()
            .filter(|s| s.span.trace_id == id.0)
            .cloned()
            .collect())
    }
    async fn search(&self, _: &Tenant, _: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        self.check()?;
        Ok(Vec::new())
    }
    async fn estimate_trace_count(&self, _: &Tenant, _: u64, _: u64) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn services(&self, t: &Tenant) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let mut s: Vec<String> = self
            .of(t)
            .iter()
            .map(|s| s.service_name().to_string())
            .collect();
        s.sort();
        s.dedup();
        Ok(s)
    }
    async fn operations(
        &self,
        t: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError> {
        self.check()?;
        Ok(self
            .of(t)
            .iter()
            .filter(|s| service.is_none_or(|x| s.service_name() == x))
            .map(|s| Operation {
                service: s.service_name().to_string(),
                name: s.span.name.clone(),
                span_kind: s.span.kind,
            })
            .collect())
    }
    async fn dependencies(
        &self,
        _: &Tenant,
        _: u64,
        _: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        Ok(Vec::new())
    }
    async fn tag_names(
        &self,
        t: &Tenant,
        scope: AttrScope,
        _: Option<(u64, u64)>,
    ) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let mut out: Vec<String> = self
            .of(t)
            .iter()
            .flat_map(|s| match scope {
                AttrScope::Resource => s.resource.attributes.clone(),
                _ => s.span.attributes.clone(),
            })
            .map(|kv| kv.key)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    async fn tag_values(
        &self,
        t: &Tenant,
        _: AttrScope,
        key: &str,
        _: Option<(u64, u64)>,
        _: usize,
    ) -> Result<Vec<TagValue>, StoreError> {
        self.check()?;
        Ok(self
            .of(t)
            .iter()
            .flat_map(|s| s.span.attributes.iter())
            .filter(|kv| kv.key == key)
            .map(|kv| {
                TagValue::String(clew_model::attrs::to_text(
                    kv.value.as_ref().unwrap_or(&Default::default()),
                ))
            })
            .collect())
    }
}

fn span(service: &str, name: &str) -> FlatSpan {
    FlatSpan {
        resource: Arc::new(Resource {
            attributes: vec![kv_str("service.name", service)],
            ..Default::default()
        }),
        resource_schema_url: Arc::from(""),
        scope: Arc::new(InstrumentationScope::default()),
        scope_schema_url: Arc::from(""),
        span: Span {
            trace_id: ID.to_vec(),
            span_id: vec![1; 8],
            name: name.into(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![kv_str("marker", format!("{service}-marker"))],
            ..Default::default()
        },
    }
}

async fn serve(reader: MemReader) -> String {
    let app = tempo_router(Arc::new(reader), QueryConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn get(url: &str, tenant: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = tenant {
        req = req.header("x-scope-orgid", t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

const DATA_ROUTES: &[&str] = &[
    "/api/traces/07070707070707070707070707070707",
    "/api/v2/traces/07070707070707070707070707070707",
    "/api/search/tags",
    "/api/v2/search/tags",
    "/api/search/tag/marker/values",
    "/api/v2/search/tag/resource.service.name/values",
    "/api/v2/search/tag/name/values",
];

#[tokio::test]
async fn tenancy_on_every_route() {
    let mut r = MemReader::default();
    r.spans.insert("team-a".into(), vec![span("alpha", "a-op")]);
    r.spans.insert("team-b".into(), vec![span("bravo", "b-op")]);
    let base = serve(r).await;
    for path in DATA_ROUTES {
        let (st, _, body) = get(&format!("{base}{path}"), Some("team-a")).await;
        assert_eq!(st, 200, "{path}: {body}");
        assert!(
            !body.contains("bravo") && !body.contains("b-op"),
            "{path}: {body}"
        );
        let (st, _, body) = get(&format!("{base}{path}"), Some("team-b")).await;
        assert_eq!(st, 200, "{path}");
        assert!(
            !body.contains("alpha") && !body.contains("a-op"),
            "{path}: {body}"
        );
    }
    let (_, _, body) = get(
        &format!("{base}/api/v2/search/tag/name/values"),
        Some("team-a"),
    )
    .await;
    let v: proto::SearchTagValuesV2Response = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v.tag_values,
        [proto::TagValue {
            r#type: "string".into(),
            value: "a-op".into()
        }]
    );
    // Unknown for this tenant: 404, empty body. The default tenant has nothing.
    let (st, _, body) = get(&format!("{base}{}", DATA_ROUTES[1]), None).await;
    assert_eq!((st, body.as_str()), (404, ""));
    // A header present but unusable: 400 on every data route, never a fall-back tenant.
    for path in DATA_ROUTES.iter().chain(&["/api/search?q=%7B%7D"]) {
        let (st, ct, body) = get(&format!("{base}{path}"), Some("../etc")).await;
        assert_eq!(st, 400, "{path}");
        assert!(
            ct.starts_with("text/plain") && body.contains("tenant"),
            "{path}: {ct} {body}"
        );
    }
}

#[tokio::test]
async fn store_failures_are_500_with_a_plain_text_message() {
    let base = serve(MemReader {
        fail: true,
        ..Default::default()
    })
    .await;
    for path in DATA_ROUTES {
        let (st, ct, body) = get(&format!("{base}{path}"), None).await;
        assert_eq!(st, 500, "{path}: {body}");
        assert!(ct.starts_with("text/plain"), "{path}: {ct}");
        assert!(body.contains("bad checksum"), "{path}: {body}");
    }
    // Probes do not touch the store.
    for (path, want) in [("/api/echo", "echo"), ("/ready", "ready")] {
        let (st, _, body) = get(&format!("{base}{path}"), None).await;
        assert_eq!((st, body.as_str()), (200, want));
    }
}

#[tokio::test]
async fn protobuf_and_json_bodies() {
    let mut r = MemReader::default();
    r.spans.insert("t".into(), vec![span("svc", "op")]);
    let base = serve(r).await;
    let c = reqwest::Client::new();
    let res = c
        .get(format!("{base}/api/v2/traces/{}", hex::encode(ID)))
        .header("x-scope-orgid", "t")
        .header("accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/protobuf"
    );
    let v2 = proto::TraceByIdResponse::decode(res.bytes().await.unwrap()).unwrap();
    let trace = v2.trace.unwrap();
    assert_eq!(trace.resource_spans.len(), 1);
    assert_eq!(trace.resource_spans[0].scope_spans[0].spans[0].name, "op");
    // v1 JSON: `resourceSpans` in OTLP JSON (hex ids, 64-bit times as strings).
    let (st, ct, body) = get(&format!("{base}/api/traces/{}", hex::encode(ID)), Some("t")).await;
    assert_eq!(st, 200);
    assert!(ct.starts_with("application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], hex::encode(ID));
    assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
    // v2 JSON: wrapped in `trace`, with the status by name.
    let (_, _, body) = get(
        &format!("{base}/api/v2/traces/{}", hex::encode(ID)),
        Some("t"),
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "COMPLETE");
    assert!(json["trace"]["resourceSpans"].is_array());
    assert!(json["metrics"]["inspectedBytes"].is_string());
    // Buildinfo.
    let (_, _, body) = get(&format!("{base}/api/status/buildinfo"), None).await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["version"], clew_query::tempo::TEMPO_COMPATIBLE_VERSION);
    assert!(info["revision"].as_str().unwrap().starts_with("clew-"));
    // Bad parameters: 400, plain text naming them.
    for (path, needle) in [
        ("/api/traces/xyz", "trace id"),
        ("/api/v2/traces/abc?start=soon", "start"),
        ("/api/search?limit=many", "limit"),
        ("/api/search?tags=lonely", "tags"),
        ("/api/v2/search/tags?scope=galaxy", "scope"),
        ("/api/v2/search/tag/span./values", "attribute name"),
    ] {
        let (st, ct, body) = get(&format!("{base}{path}"), Some("t")).await;
        assert_eq!(st, 400, "{path}: {body}");
        assert!(
            ct.starts_with("text/plain") && body.contains(needle),
            "{path}: {body}"
        );
    }
}
