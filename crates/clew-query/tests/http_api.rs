//! Drives the real router over a real loopback server with a real HTTP client, backed by an
//! in-memory `TraceReader` test double, and checks exact JSON shapes, status codes and tenancy.

use clew_model::attrs::kv_str;
use clew_model::otlp::common::InstrumentationScope;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{Span, Status};
use clew_model::{FlatSpan, Tenant, TraceId};
use clew_query::{router, QueryConfig};
use clew_store::{DependencyLink, Operation, SearchQuery, StoreError, TraceHit, TraceReader};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-memory reader: spans per tenant; search matches on service/operation only (the real
/// matching is the store's job) and records the queries it was given.
#[derive(Default)]
struct MemReader {
    spans: HashMap<String, Vec<FlatSpan>>,
    deps: Vec<DependencyLink>,
    fail: bool,
    queries: Mutex<Vec<(String, SearchQuery)>>,
    dep_ranges: Mutex<Vec<(u64, u64)>>,
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
    fn of(&self, tenant: &Tenant) -> &[FlatSpan] {
        self.spans
            .get(tenant.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[async_trait::async_trait]
impl TraceReader for MemReader {
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        self.check()?;
        Ok(self
            .of(tenant)
            .iter()
            .filter(|s| s.span.trace_id == id.0)
            .cloned()
            .collect())
    }

    async fn search(
        &self,
        tenant: &Tenant,
        query: &SearchQuery,
    ) -> Result<Vec<TraceHit>, StoreError> {
        self.check()?;
        if let Ok(mut q) = self.queries.lock() {
            q.push((tenant.to_string(), query.clone()));
        }
        let mut hits: Vec<TraceHit> = Vec::new();
        for s in self.of(tenant) {
            let svc_ok = query
                .service
                .as_deref()
                .is_none_or(|x| s.service_name() == x);
            let op_ok = query.operation.as_deref().is_none_or(|x| s.span.name == x);
            if !(svc_ok && op_ok) {
                continue;
            }
            let Ok(id) = TraceId::from_bytes(&s.span.trace_id) else {
                continue;
            };
            match hits.iter_mut().find(|h| h.trace_id == id) {
                Some(h) => h.start_unix_nano = h.start_unix_nano.max(s.span.start_time_unix_nano),
                None => hits.push(TraceHit {
                    trace_id: id,
                    start_unix_nano: s.span.start_time_unix_nano,
                }),
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.start_unix_nano));
        hits.truncate(query.effective_limit());
        Ok(hits)
    }

    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<u64, StoreError> {
        self.check()?;
        let mut ids: Vec<&[u8]> = self
            .of(tenant)
            .iter()
            .filter(|s| (start..=end).contains(&s.span.start_time_unix_nano))
            .map(|s| s.span.trace_id.as_slice())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids.len() as u64)
    }

    async fn services(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let mut s: Vec<String> = self
            .of(tenant)
            .iter()
            .map(|s| s.service_name().to_string())
            .collect();
        s.sort();
        s.dedup();
        Ok(s)
    }

    async fn operations(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError> {
        self.check()?;
        let mut ops: Vec<Operation> = self
            .of(tenant)
            .iter()
            .filter(|s| service.is_none_or(|x| s.service_name() == x))
            .map(|s| Operation {
                service: s.service_name().into(),
                name: s.span.name.clone(),
                span_kind: s.span.kind,
            })
            .collect();
        ops.sort();
        ops.dedup();
        Ok(ops)
    }

    async fn dependencies(
        &self,
        _tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        self.check()?;
        if let Ok(mut r) = self.dep_ranges.lock() {
            r.push((start, end));
        }
        Ok(self.deps.clone())
    }
}

const T0: u64 = 1_700_000_000_000_000_000;

fn span(
    svc: &str,
    name: &str,
    trace: u8,
    id: u8,
    parent: u8,
    start_ms: u64,
    kind: i32,
) -> FlatSpan {
    FlatSpan {
        resource: Arc::new(Resource {
            attributes: vec![kv_str("service.name", svc)],
            ..Default::default()
        }),
        resource_schema_url: Arc::from(""),
        scope: Arc::new(InstrumentationScope {
            name: "lib".into(),
            ..Default::default()
        }),
        scope_schema_url: Arc::from(""),
        span: Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: name.into(),
            kind,
            start_time_unix_nano: T0 + start_ms * 1_000_000,
            end_time_unix_nano: T0 + (start_ms + 10) * 1_000_000,
            ..Default::default()
        },
    }
}

fn fixture() -> MemReader {
    let mut failing = span("cart", "Cart.Get", 1, 2, 1, 5, 2);
    failing.span.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    let default_spans = vec![
        span("frontend", "GET /", 1, 1, 0, 0, 2),
        failing,
        span("frontend", "GET /", 2, 3, 0, 100, 2),
        span("frontend", "background", 2, 4, 3, 101, 0),
    ];
    let acme_spans = vec![span("acme-api", "POST /order", 3, 9, 0, 50, 2)];
    MemReader {
        spans: HashMap::from([
            (Tenant::default().to_string(), default_spans),
            ("acme".to_string(), acme_spans),
        ]),
        deps: vec![
            DependencyLink {
                parent: "frontend".into(),
                child: "cart".into(),
                call_count: 3,
            },
            DependencyLink {
                parent: "frontend".into(),
                child: "cart".into(),
                call_count: 2,
            },
            DependencyLink {
                parent: "cart".into(),
                child: "redis".into(),
                call_count: 1,
            },
        ],
        ..Default::default()
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    reader: Arc<MemReader>,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(reader: MemReader, cfg: QueryConfig) -> Server {
    let reader = Arc::new(reader);
    let app = router(reader.clone(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        reader,
        _task: task,
    }
}

impl Server {
    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.text().await.expect("body");
        assert!(
            ct.starts_with("application/json"),
            "{path}: content-type {ct:?}, body {body}"
        );
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, &[]).await
    }
}

fn envelope(data: Value, total: usize) -> Value {
    json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null})
}

fn error_envelope(code: u16, msg_contains: &str, body: &Value) {
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["total"], 0);
    assert_eq!(body["limit"], 0);
    assert_eq!(body["offset"], 0);
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["code"], code);
    let msg = errors[0]["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains(msg_contains),
        "{msg:?} should contain {msg_contains:?}"
    );
}

#[tokio::test]
async fn services_and_operations() {
    let s = serve(fixture(), QueryConfig::default()).await;
    assert_eq!(
        s.get("/api/services").await,
        (200, envelope(json!(["cart", "frontend"]), 2))
    );
    assert_eq!(
        s.get("/api/services/frontend/operations").await,
        (200, envelope(json!(["GET /", "background"]), 2))
    );
    assert_eq!(
        s.get("/api/services/nobody/operations").await,
        (200, envelope(json!([]), 0))
    );
    assert_eq!(
        s.get("/api/operations?service=frontend").await,
        (
            200,
            envelope(
                json!([{"name": "GET /", "spanKind": "server"}, {"name": "background", "spanKind": ""}]),
                2
            )
        )
    );
    assert_eq!(
        s.get("/api/operations?service=frontend&spanKind=server")
            .await,
        (
            200,
            envelope(json!([{"name": "GET /", "spanKind": "server"}]), 1)
        )
    );
    let (status, body) = s.get("/api/operations").await;
    assert_eq!(status, 400);
    error_envelope(400, "parameter 'service' is required", &body);
}

#[tokio::test]
async fn get_trace_jaeger_shape() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s.get(&format!("/api/traces/{}", "01".repeat(16))).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 1);
    assert_eq!(body["errors"], Value::Null);
    let trace = &body["data"][0];
    assert_eq!(trace["traceID"], "01".repeat(16));
    assert_eq!(trace["warnings"], Value::Null);
    assert_eq!(
        trace["processes"],
        json!({"p1": {"serviceName": "frontend", "tags": []}, "p2": {"serviceName": "cart", "tags": []}})
    );
    assert_eq!(
        trace["spans"][1],
        json!({
            "traceID": "01".repeat(16),
            "spanID": "0202020202020202",
            "operationName": "Cart.Get",
            "references": [{"refType": "CHILD_OF", "traceID": "01".repeat(16), "spanID": "0101010101010101"}],
            "startTime": T0 / 1000 + 5000,
            "duration": 10000,
            "tags": [
                {"key": "otel.scope.name", "type": "string", "value": "lib"},
                {"key": "span.kind", "type": "string", "value": "server"},
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "boom"},
            ],
            "logs": [],
            "processID": "p2",
            "warnings": null,
        })
    );
}

#[tokio::test]
async fn get_trace_errors() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s.get(&format!("/api/traces/{}", "7".repeat(32))).await;
    assert_eq!(status, 404);
    error_envelope(404, "trace not found", &body);
    for bad in ["xyz", &"a".repeat(33), "0"] {
        let (status, body) = s.get(&format!("/api/traces/{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        error_envelope(400, "'traceID'", &body);
    }
    // Short ids are left-padded: trace 0x0303..03 is not "303", but the lookup must not fail.
    let (status, _) = s.get("/api/traces/303").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn search_and_params_reach_the_store() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s
        .get("/api/traces?service=frontend&operation=GET%20%2F&tag=http.method:GET&tags=%7B%22a%22%3A%22b%22%7D&minDuration=1ms&maxDuration=1.5s&start=1000&end=2000&limit=1&lookback=custom")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    assert_eq!(
        body["data"][0]["traceID"],
        "02".repeat(16),
        "newest first, limit applied"
    );
    assert_eq!(
        body["data"][0]["spans"].as_array().map(Vec::len),
        Some(2),
        "whole trace fetched"
    );
    let recorded = s
        .reader
        .queries
        .lock()
        .map(|q| q.clone())
        .unwrap_or_default();
    assert_eq!(
        recorded,
        vec![(
            Tenant::default().to_string(),
            SearchQuery {
                service: Some("frontend".into()),
                operation: Some("GET /".into()),
                attributes: vec![
                    ("http.method".into(), "GET".into()),
                    ("a".into(), "b".into())
                ],
                min_duration_nanos: Some(1_000_000),
                max_duration_nanos: Some(1_500_000_000),
                start_unix_nano: Some(1_000_000),
                end_unix_nano: Some(2_000_000),
                limit: 1,
                conditions: vec![],
            }
        )]
    );
    let (status, body) = s.get("/api/traces?service=frontend").await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 2);
    assert_eq!(body["errors"], Value::Null);
    let (status, body) = s.get("/api/traces?service=nobody").await;
    assert_eq!((status, body), (200, envelope(json!([]), 0)));
}

#[tokio::test]
async fn search_bad_params() {
    let s = serve(fixture(), QueryConfig::default()).await;
    for (qs, needle) in [
        ("minDuration=soon", "'minDuration'"),
        ("maxDuration=1", "'maxDuration'"),
        ("start=abc", "'start'"),
        ("end=1.5", "'end'"),
        ("limit=-3", "'limit'"),
        ("tag=nocolon", "'tag'"),
        ("tags=notjson", "'tags'"),
        ("traceID=zz", "'traceID'"),
    ] {
        let (status, body) = s.get(&format!("/api/traces?service=x&{qs}")).await;
        assert_eq!(status, 400, "{qs}");
        error_envelope(400, needle, &body);
    }
    assert!(
        s.reader
            .queries
            .lock()
            .map(|q| q.is_empty())
            .unwrap_or(false),
        "no store call on bad params"
    );
}

#[tokio::test]
async fn multi_get_by_trace_id() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let missing = "9".repeat(32);
    let (status, body) = s
        .get(&format!(
            "/api/traces?traceID={}&traceID={missing}",
            "02".repeat(16)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 1);
    assert_eq!(body["data"][0]["traceID"], "02".repeat(16));
    assert_eq!(
        body["errors"],
        json!([{"code": 404, "msg": "trace not found", "traceID": missing}])
    );
}

#[tokio::test]
async fn dependencies() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s
        .get("/api/dependencies?endTs=1700000000000&lookback=3600000")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        envelope(
            json!([
                {"parent": "cart", "child": "redis", "callCount": 1},
                {"parent": "frontend", "child": "cart", "callCount": 5},
            ]),
            2
        )
    );
    let ranges = s
        .reader
        .dep_ranges
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    assert_eq!(ranges, vec![(T0 - 3_600_000_000_000, T0)]);
    let (status, body) = s
        .get("/api/dependencies?endTs=1700000000000&lookback=1h&service=redis")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"parent": "cart", "child": "redis", "callCount": 1}])
    );
    let (status, body) = s.get("/api/dependencies?endTs=yesterday").await;
    assert_eq!(status, 400);
    error_envelope(400, "'endTs'", &body);
    let (status, body) = s.get("/api/dependencies?lookback=forever").await;
    assert_eq!(status, 400);
    error_envelope(400, "'lookback'", &body);
}

#[tokio::test]
async fn store_failure_is_500() {
    let s = serve(
        MemReader {
            fail: true,
            ..fixture()
        },
        QueryConfig::default(),
    )
    .await;
    let (status, body) = s.get("/api/services").await;
    assert_eq!(status, 500);
    error_envelope(500, "bad checksum", &body);
    let (status, body) = s.get("/api/v3/services").await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["httpCode"], 500);
}

#[tokio::test]
async fn tenant_isolation_and_custom_header() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let acme = [("X-Scope-OrgID", "acme")];
    assert_eq!(
        s.get_with("/api/services", &acme).await,
        (200, envelope(json!(["acme-api"]), 1))
    );
    assert_eq!(
        s.get_with("/api/services", &[("x-scope-orgid", "nobody")])
            .await,
        (200, envelope(json!([]), 0))
    );
    // acme's trace is invisible to the default tenant, and the other way round.
    let acme_trace = format!("/api/traces/{}", "03".repeat(16));
    assert_eq!(s.get_with(&acme_trace, &acme).await.0, 200);
    assert_eq!(s.get(&acme_trace).await.0, 404);
    assert_eq!(
        s.get_with(&format!("/api/traces/{}", "01".repeat(16)), &acme)
            .await
            .0,
        404
    );
    let (status, body) = s.get_with("/api/v3/services", &acme).await;
    assert_eq!((status, body), (200, json!({"services": ["acme-api"]})));
    // Search queries carry the tenant.
    let _ = s.get_with("/api/traces?service=acme-api", &acme).await;
    let tenants: Vec<String> = s
        .reader
        .queries
        .lock()
        .map(|q| q.iter().map(|(t, _)| t.clone()).collect())
        .unwrap_or_default();
    assert_eq!(tenants, vec!["acme".to_string()]);

    let (status, body) = s
        .get_with("/api/services", &[("X-Scope-OrgID", "../etc")])
        .await;
    assert_eq!(status, 400);
    error_envelope(400, "X-Scope-OrgID", &body);
    let (status, body) = s
        .get_with("/api/v3/services", &[("X-Scope-OrgID", "a b")])
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["httpCode"], 400);

    let custom = serve(
        fixture(),
        QueryConfig {
            tenant_header: "X-Tenant".into(),
        },
    )
    .await;
    assert_eq!(
        custom
            .get_with("/api/services", &[("X-Tenant", "acme")])
            .await
            .1["data"],
        json!(["acme-api"])
    );
    // The default header means nothing once another one is configured.
    assert_eq!(
        custom.get_with("/api/services", &acme).await.1["data"],
        json!(["cart", "frontend"])
    );
}

#[tokio::test]
async fn api_v3_trace_and_find() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s.get(&format!("/api/v3/traces/{}", "01".repeat(16))).await;
    assert_eq!(status, 200, "{body}");
    let rs = body["result"]["resourceSpans"]
        .as_array()
        .expect("resourceSpans");
    assert_eq!(rs.len(), 2, "one per service");
    assert_eq!(
        rs[0]["resource"]["attributes"][0],
        json!({"key": "service.name", "value": {"stringValue": "frontend"}})
    );
    let span = &rs[1]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "01".repeat(16));
    assert_eq!(span["spanId"], "02".repeat(8));
    assert_eq!(span["parentSpanId"], "01".repeat(8));
    assert_eq!(span["name"], "Cart.Get");
    assert_eq!(rs[1]["scopeSpans"][0]["scope"]["name"], "lib");

    let (status, body) = s.get(&format!("/api/v3/traces/{}", "7".repeat(32))).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": {"httpCode": 404, "message": "No traces found"}})
        )
    );
    let (status, body) = s.get("/api/v3/traces/not-hex").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed parameter trace_id"),
        "{body}"
    );

    let times =
        "query.start_time_min=2023-11-14T00:00:00Z&query.start_time_max=2023-11-15T00:00:00Z";
    let (status, body) = s
        .get(&format!(
            "/api/v3/traces?{times}&query.service_name=frontend&query.search_depth=5"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let trace_ids: Vec<&str> = body["result"]["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
        .filter_map(|sp| sp["traceId"].as_str())
        .collect();
    assert_eq!(trace_ids.len(), 4, "all spans of both traces");
    assert!(
        trace_ids.contains(&"01".repeat(16).as_str())
            && trace_ids.contains(&"02".repeat(16).as_str())
    );
    let recorded = s
        .reader
        .queries
        .lock()
        .map(|q| q.last().cloned())
        .unwrap_or_default();
    let (_, q) = recorded.expect("a search");
    assert_eq!(q.limit, 5);
    assert_eq!(q.start_unix_nano, Some(1_699_920_000_000_000_000));

    let (status, body) = s
        .get(&format!("/api/v3/traces?{times}&query.service_name=nobody"))
        .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": {"httpCode": 404, "message": "No traces found"}})
        )
    );
    let (status, body) = s.get("/api/v3/traces?query.service_name=frontend").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["httpCode"], 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("query.start_time_min"));
    let (status, body) = s
        .get(&format!("/api/v3/traces?{times}&query.duration_min=abc"))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("query.duration_min"));
}

#[tokio::test]
async fn api_v3_services_and_operations() {
    let s = serve(fixture(), QueryConfig::default()).await;
    assert_eq!(
        s.get("/api/v3/services").await,
        (200, json!({"services": ["cart", "frontend"]}))
    );
    assert_eq!(
        s.get("/api/v3/operations?service=frontend").await,
        (
            200,
            json!({"operations": [{"name": "GET /", "spanKind": "server"}, {"name": "background", "spanKind": "internal"}]})
        )
    );
    assert_eq!(
        s.get("/api/v3/operations?service=frontend&span_kind=internal")
            .await,
        (
            200,
            json!({"operations": [{"name": "background", "spanKind": "internal"}]})
        )
    );
    assert_eq!(
        s.get("/api/v3/operations?service=frontend&spanKind=client")
            .await,
        (200, json!({"operations": []}))
    );
}

#[tokio::test]
async fn ui_trace_compact_shape() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s.get(&format!("/api/ui/traces/{}", "01".repeat(16))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "v": 1,
            "traceID": "01".repeat(16),
            "base": T0 / 1000,
            "warnings": null,
            "processes": [[0, []], [1, []]],
            "spans": [
                ["0101010101010101", -1, 0, 2, 0, 10000, [3, 4, 5, 6]],
                ["0202020202020202", 0, 1, 7, 5000, 10000, [3, 4, 5, 6, 8, 9, -11, true, 11, 12]],
            ],
            "strings": [
                "frontend", "cart", "GET /", "otel.scope.name", "lib", "span.kind", "server",
                "Cart.Get", "otel.status_code", "ERROR", "error", "otel.status_description", "boom",
            ],
        })
    );
}

#[tokio::test]
async fn ui_trace_errors_and_tenancy() {
    let s = serve(fixture(), QueryConfig::default()).await;
    let (status, body) = s.get(&format!("/api/ui/traces/{}", "7".repeat(32))).await;
    assert_eq!(status, 404);
    error_envelope(404, "trace not found", &body);
    for bad in ["xyz", &"a".repeat(33)] {
        let (status, body) = s.get(&format!("/api/ui/traces/{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        error_envelope(400, "'traceID'", &body);
    }
    let acme = [("X-Scope-OrgID", "acme")];
    let acme_trace = format!("/api/ui/traces/{}", "03".repeat(16));
    let (status, body) = s.get_with(&acme_trace, &acme).await;
    assert_eq!(status, 200);
    assert_eq!(body["strings"][0], "acme-api");
    assert_eq!(s.get(&acme_trace).await.0, 404);
    assert_eq!(
        s.get_with(&format!("/api/ui/traces/{}", "01".repeat(16)), &acme)
            .await
            .0,
        404
    );
    let (status, body) = s
        .get_with(&acme_trace, &[("X-Scope-OrgID", "../etc")])
        .await;
    assert_eq!(status, 400);
    error_envelope(400, "X-Scope-OrgID", &body);
}
