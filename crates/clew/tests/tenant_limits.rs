//! Per-tenant limits with the real `clew` binary: a config with tight limits for tenant `small` and
//! none for `big`.
//!
//! 1. Over the span rate, OTLP/HTTP (protobuf and JSON) and Zipkin get 429 with `Retry-After` and
//!    OTLP/gRPC `RESOURCE_EXHAUSTED` with a `RetryInfo`; `big` is unaffected; after waiting
//!    `Retry-After` the retry passes.
//! 2. A long attribute value is stored cut (read back through the Jaeger API and api_v3), excess
//!    attributes are dropped and counted in `droppedAttributesCount`, and the metrics count both.
//! 3. `max_spans_per_trace`: the partial-success answer names the limit and the number rejected;
//!    only the allowed spans are stored.
//! 4. Live reload: raising the limit in the per-tenant file lets the same request through after the
//!    reload interval; a broken file keeps the old limits (and is counted); at start-up it is an
//!    error naming the file and the key.

use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
mod common;
use common::{clew, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo`, `google.protobuf.Duration`:
/// declared here so the test decodes what a client sees with nothing from the server's code.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<ProtoDuration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtoDuration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

const TENANT_HEADER: &str = "X-Scope-OrgID";

/// A trace id unique to this test run (the first byte names the test's part).
fn trace_id(part: u8, n: u32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[0] = part;
    t[1..5].copy_from_slice(&std::process::id().to_be_bytes());
    t[12..16].copy_from_slice(&n.to_be_bytes());
    t[5] = 0x7e;
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `n` spans of one trace (span ids `first..first+n`), each with `attrs`.
fn spans(trace: &[u8], first: u8, n: u8, attrs: &[KeyValue]) -> Vec<Span> {
    let now = now_ns();
    (first..first + n)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: attrs.to_vec(),
            ..Default::default()
        })
        .collect()
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "limits-test")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct HttpAnswer {
    status: u16,
    retry_after: Option<u64>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn response(&self) -> ExportTraceServiceResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        ExportTraceServiceResponse::decode(self.body.as_slice()).unwrap()
    }

    /// (rejected spans, error message) from OTLP partial success; (0, "") when unset.
    fn partial(&self) -> (i64, String) {
        self.response()
            .partial_success
            .map(|p| (p.rejected_spans, p.error_message))
            .unwrap_or_default()
    }
}

async fn post(server: &Server, tenant: &str, req: &ExportTraceServiceRequest) -> HttpAnswer {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .header(TENANT_HEADER, tenant)
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    HttpAnswer {
        status,
        retry_after,
        body: r.bytes().await.unwrap().to_vec(),
    }
}

async fn grpc(
    server: &Server,
    tenant: &str,
    req: ExportTraceServiceRequest,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut r = tonic::Request::new(req);
    r.metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    client.export(r).await.map(|r| r.into_inner())
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric line (labels exactly as written), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

async fn get_json(server: &Server, tenant: &str, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", server.query))
        .header(TENANT_HEADER, tenant)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The stored trace as api_v3 OTLP JSON spans (empty when not found).
async fn stored_spans(server: &Server, tenant: &str, trace: &[u8]) -> Vec<serde_json::Value> {
    let (status, body) = get_json(server, tenant, &format!("/api/v3/traces/{}", hex(trace))).await;
    if status != 200 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for rs in body["result"]["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

/// Writes the per-tenant file atomically (temporary file, then rename), as the docs recommend.
fn write_overrides(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    overrides: PathBuf,
}

/// Starts `clew serve` with `limits` pointing at a per-tenant file holding `overrides`.
fn start(overrides: &str, reload_interval: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let overrides_path = dir.path().join("overrides.yaml");
    write_overrides(&overrides_path, overrides);
    let config = dir.path().join("clew.yaml");
    std::fs::write(
        &config,
        format!(
            "limits:\n  defaults: {{}}\n  per_tenant_file: overrides.yaml\n  reload_interval: {reload_interval}\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), Some(&config));
    Setup {
        _dir: dir,
        server,
        overrides: overrides_path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_span_rate_http_gets_429_and_grpc_resource_exhausted_with_retry_info() {
    // 10 spans of burst, refilled at 2 spans/s: the bucket stays short for 5 s after it is emptied,
    // long enough for every step below even on a busy machine.
    let s = start(
        "overrides:\n  small: {ingestion_rate_spans: 2, ingestion_burst_spans: 10}\n  big: {}\n",
        "10s",
    );
    let server = &s.server;
    let req = |n: u32| request(spans(&trace_id(1, n), 1, 10, &[]));

    let first = post(server, "small", &req(1)).await;
    assert_eq!(
        first.partial(),
        (0, String::new()),
        "the burst admits 10 spans"
    );

    // OTLP/HTTP protobuf: 429, Retry-After in whole seconds, a google.rpc.Status body.
    let refused = post(server, "small", &req(2)).await;
    assert_eq!(
        refused.status,
        429,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let retry_after = refused.retry_after.expect("Retry-After header");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let st = rpc::Status::decode(refused.body.as_slice()).unwrap();
    assert_eq!(st.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        st.message
            .contains("ingestion rate limit exceeded for tenant small: ingestion_rate_spans is 2 spans/s with a burst of 10 spans"),
        "{}",
        st.message
    );
    assert_eq!(
        st.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );

    // OTLP/HTTP JSON: the same, with a JSON Status.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .header(TENANT_HEADER, "small")
        .body(clew_model::otlp_json::encode_resource_spans(&req(3).resource_spans).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 8);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );

    // OTLP/gRPC: RESOURCE_EXHAUSTED with a RetryInfo detail (retryable per the OTLP spec).
    let status = grpc(server, "small", req(4)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let details = rpc::Status::decode(status.details()).unwrap();
    let info = details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("RetryInfo detail");
    let delay = rpc::RetryInfo::decode(info.value.as_slice())
        .unwrap()
        .retry_delay
        .unwrap();
    let delay = Duration::new(delay.seconds as u64, delay.nanos as u32);
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(5),
        "{delay:?}"
    );

    // Zipkin: 429 with Retry-After as well.
    let zipkin_span = serde_json::json!([{
        "traceId": hex(&trace_id(1, 5)),
        "id": "00000000000000a1",
        "name": "zipkin-op",
        "timestamp": now_ns() / 1000,
        "duration": 1000,
        "localEndpoint": {"serviceName": "limits-test"}
    }]);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v2/spans", server.zipkin))
        .header("content-type", "application/json")
        .header(TENANT_HEADER, "small")
        .body(zipkin_span.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("ingestion_rate_spans"));

    // `big` has no limit: far more than `small`'s burst passes, over both protocols.
    for n in 0..5 {
        let ok = post(server, "big", &request(spans(&trace_id(2, n), 1, 100, &[]))).await;
        assert_eq!(ok.partial(), (0, String::new()));
    }
    let ok = grpc(server, "big", request(spans(&trace_id(2, 99), 1, 100, &[])))
        .await
        .unwrap();
    assert!(ok.partial_success.is_none());

    // After waiting Retry-After, the refused request passes.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let retried = post(server, "small", &req(2)).await;
    assert_eq!(retried.partial(), (0, String::new()));
    assert_eq!(
        stored_spans(server, "small", &trace_id(1, 2)).await.len(),
        10
    );
    assert!(stored_spans(server, "small", &trace_id(1, 4))
        .await
        .is_empty());

    let m = metrics(server).await;
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_refused_requests_total{tenant="small",reason="rate_spans"}"#
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_limited_spans_total{tenant="small",reason="rate_spans"}"#
        ),
        31.0
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_refused_requests_total{tenant="big",reason="rate_spans"}"#
        ),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_receiver_requests_total{protocol="otlp_grpc",outcome="rate_limited"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_receiver_spans_rejected_total{protocol="otlp_http",reason="rate_limited"}"#
        ),
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_attribute_values_are_stored_cut_and_counted() {
    let s = start(
        "overrides:\n  small: {max_attribute_value_length: 15, max_attributes_per_span: 3}\n",
        "10s",
    );
    let server = &s.server;
    // 20 × 'é' (2 bytes each): 15 bytes cut at a character boundary keep 7 of them.
    let long = "é".repeat(20);
    let attrs = [
        kv("long", &long),
        kv("a", "1"),
        kv("b", "2"),
        kv("c", "dropped"),
        kv("d", "dropped"),
    ];
    let trace = trace_id(3, 1);
    let r = post(server, "small", &request(spans(&trace, 1, 1, &attrs))).await;
    assert_eq!(
        r.partial(),
        (0, String::new()),
        "cutting is not a rejection"
    );
    let big_trace = trace_id(3, 2);
    post(server, "big", &request(spans(&big_trace, 1, 1, &attrs)))
        .await
        .partial();

    // Jaeger API: the tag holds the cut value.
    let (status, body) = get_json(server, "small", &format!("/api/traces/{}", hex(&trace))).await;
    assert_eq!(status, 200, "{body}");
    let tags = body["data"][0]["spans"][0]["tags"].as_array().unwrap();
    let tag = |k: &str| {
        tags.iter()
            .find(|t| t["key"] == k)
            .map(|t| t["value"].clone())
    };
    assert_eq!(
        tag("long"),
        Some(serde_json::json!("é".repeat(7))),
        "{tags:?}"
    );
    assert_eq!(tag("c"), None, "attributes past the limit are dropped");

    // api_v3 (OTLP JSON): three attributes kept, two counted as dropped.
    let stored = stored_spans(server, "small", &trace).await;
    assert_eq!(stored[0]["attributes"].as_array().unwrap().len(), 3);
    assert_eq!(stored[0]["droppedAttributesCount"], 2);
    // `big` is untouched.
    let stored = stored_spans(server, "big", &big_trace).await;
    assert_eq!(stored[0]["attributes"].as_array().unwrap().len(), 5);
    assert_eq!(
        stored[0]["attributes"][0]["value"]["stringValue"],
        serde_json::json!(long)
    );

    let m = metrics(server).await;
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_truncated_attributes_total{tenant="small",reason="value_length"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_truncated_attributes_total{tenant="small",reason="attributes_per_span"}"#
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spans_per_trace_rejects_the_rest_with_partial_success() {
    let s = start("overrides:\n  small: {max_spans_per_trace: 3}\n", "10s");
    let server = &s.server;
    let trace = trace_id(4, 1);
    let r = post(server, "small", &request(spans(&trace, 1, 5, &[]))).await;
    let (rejected, message) = r.partial();
    assert_eq!(rejected, 2);
    assert_eq!(
        message,
        "max_spans_per_trace (3) exceeded for tenant small: 2 spans dropped"
    );
    // The trace is full: later spans (here over gRPC) are rejected too.
    let resp = grpc(server, "small", request(spans(&trace, 10, 2, &[])))
        .await
        .unwrap();
    let p = resp.partial_success.expect("partial success");
    assert_eq!(p.rejected_spans, 2);
    assert!(p.error_message.contains("max_spans_per_trace (3)"), "{p:?}");

    let stored = stored_spans(server, "small", &trace).await;
    let mut names: Vec<&str> = stored.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["op-1", "op-2", "op-3"],
        "only the first three are stored"
    );

    // `big` has no per-trace limit.
    let big = trace_id(4, 2);
    assert_eq!(
        post(server, "big", &request(spans(&big, 1, 20, &[])))
            .await
            .partial(),
        (0, String::new())
    );
    assert_eq!(stored_spans(server, "big", &big).await.len(), 20);

    let m = metrics(server).await;
    assert_eq!(
        metric(
            &m,
            r#"clew_tenant_limited_spans_total{tenant="small",reason="max_spans_per_trace"}"#
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"clew_receiver_spans_rejected_total{protocol="otlp_http",reason="trace_limit"}"#
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_tenant_file_is_reloaded_and_a_broken_one_keeps_the_old_limits() {
    let s = start("overrides:\n  small: {max_spans_per_trace: 2}\n", "1s");
    let server = &s.server;
    let mut n = 0;
    let mut send4 = || {
        n += 1;
        request(spans(&trace_id(5, n), 1, 4, &[]))
    };
    assert_eq!(post(server, "small", &send4()).await.partial().0, 2);

    // Raise the limit: within a few reload intervals the same request passes.
    write_overrides(
        &s.overrides,
        "overrides:\n  small: {max_spans_per_trace: 10}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rejected = post(server, "small", &send4()).await.partial().0;
        if rejected == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the new limit never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken file: counted, and the limits stay as they were (10).
    write_overrides(
        &s.overrides,
        "overrides:\n  small: {max_spans_per_trace: lots}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let m = metrics(server).await;
        if metric(&m, "clew_tenant_limits_reload_failures_total") >= 1.0 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(metric(&m, "clew_tenant_limits_last_reload_successful"), 0.0);
    let trace = trace_id(5, 1000);
    let r = post(server, "small", &request(spans(&trace, 1, 12, &[]))).await;
    assert_eq!(
        r.partial(),
        (
            2,
            "max_spans_per_trace (10) exceeded for tenant small: 2 spans dropped".to_string()
        )
    );
    let log = std::fs::read_to_string(s._dir.path().join("data.log")).unwrap();
    assert!(
        log.contains("keeping the previous limits")
            && log.contains("overrides.small.max_spans_per_trace"),
        "{log}"
    );

    // At start-up the same broken file is an error naming the file and the key.
    let config = s._dir.path().join("clew.yaml");
    let out = clew(&["config", "check", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("clew.yaml: key `limits.per_tenant_file`")
            && msg.contains("overrides.yaml: key `overrides.small.max_spans_per_trace`")
            && msg.contains("fix:"),
        "{msg}"
    );
}

#[test]
fn example_config_checks() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/tenant-limits.yaml");
    let out = clew(&["config", "check", p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
