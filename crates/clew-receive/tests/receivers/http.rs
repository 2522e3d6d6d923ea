//! OTLP/HTTP receiver against a real reqwest client.

use crate::common::*;
use clew_model::otlp::collector::ExportTraceServiceResponse;
use clew_model::otlp::Message;
use clew_model::SinkError;
use clew_receive::{otlp_http_router, Outcome, Protocol, ReceiverConfig, RejectReason};
use std::net::SocketAddr;
use std::sync::Arc;

/// google.rpc.Status, decoded independently of the crate's own copy.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

struct Server {
    addr: SocketAddr,
    sink: Arc<CollectingSink>,
    metrics: clew_receive::ReceiverMetrics,
    client: reqwest::Client,
}

impl Server {
    async fn start(cfg: ReceiverConfig) -> Self {
        let sink = Arc::new(CollectingSink::default());
        let metrics = metrics();
        let addr = serve_router(otlp_http_router(sink.clone(), cfg, metrics.clone())).await;
        Self {
            addr,
            sink,
            metrics,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    async fn post(
        &self,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url()).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        req.send().await.unwrap()
    }

    /// The server still answers a good request after whatever came before.
    async fn assert_alive(&self) {
        let before = self.sink.span_count();
        let r = self
            .post(Some(PB), None, good_request(1).encode_to_vec())
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(self.sink.span_count(), before + 1);
    }
}

async fn pb_status(r: reqwest::Response) -> RpcStatus {
    assert_eq!(r.headers()["content-type"], PB);
    RpcStatus::decode(r.bytes().await.unwrap()).unwrap()
}

async fn json_body(r: reqwest::Response) -> serde_json::Value {
    assert_eq!(r.headers()["content-type"], JSON);
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn protobuf_request_is_accepted() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(Some(PB), None, good_request(3).encode_to_vec())
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], PB);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success, None);
    let batches = s.sink.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].span_count(), 3);
    assert_eq!(batches[0].tenant, clew_model::Tenant::default());
    assert_eq!(s.metrics.spans_received(Protocol::OtlpHttp), 3);
    assert_eq!(s.metrics.spans_accepted(Protocol::OtlpHttp), 3);
    assert_eq!(s.metrics.requests(Protocol::OtlpHttp, Outcome::Ok), 1);
}

#[tokio::test]
async fn json_request_is_accepted() {
    let s = Server::start(ReceiverConfig::default()).await;
    let body =
        clew_model::otlp_json::encode_resource_spans(&good_request(2).resource_spans).to_string();
    let r = s
        .post(
            Some("application/json; charset=utf-8"),
            None,
            body.into_bytes(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_body(r).await, serde_json::json!({}));
    assert_eq!(s.sink.span_count(), 2);
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(
            Some(PB),
            Some("gzip"),
            gzip(&good_request(2).encode_to_vec()),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body =
        clew_model::otlp_json::encode_resource_spans(&good_request(1).resource_spans).to_string();
    let r = s
        .post(Some(JSON), Some("gzip"), gzip(body.as_bytes()))
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .post(Some(PB), Some("identity"), good_request(1).encode_to_vec())
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.sink.span_count(), 4);
}

#[tokio::test]
async fn invalid_ids_give_partial_success() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(Some(PB), None, mixed_request().encode_to_vec())
        .await;
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("zero-trace"),
        "{}",
        partial.error_message
    );
    assert_eq!(s.sink.span_count(), 2);
    assert_eq!(
        s.metrics
            .spans_rejected(Protocol::OtlpHttp, RejectReason::InvalidId),
        2
    );
    assert_eq!(
        s.metrics
            .requests(Protocol::OtlpHttp, Outcome::PartialSuccess),
        1
    );

    let body =
        clew_model::otlp_json::encode_resource_spans(&mixed_request().resource_spans).to_string();
    let r = s.post(Some(JSON), None, body.into_bytes()).await;
    assert_eq!(r.status(), 200);
    let v = json_body(r).await;
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "2");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("rejected"));
}

#[tokio::test]
async fn all_rejected_is_success_and_not_sent_to_sink() {
    let s = Server::start(ReceiverConfig::default()).await;
    let req = request(vec![
        span(vec![0; 16], vec![1; 8], "a"),
        span(vec![1; 3], vec![1; 8], "b"),
    ]);
    let r = s.post(Some(PB), None, req.encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 2);
    assert!(s.sink.batches().is_empty());
}

#[tokio::test]
async fn empty_request_is_success() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s.post(Some(PB), None, Vec::new()).await;
    assert_eq!(r.status(), 200);
    assert!(s.sink.batches().is_empty());
}

#[tokio::test]
async fn garbage_protobuf_is_400_with_protobuf_status() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(Some(PB), None, b"\xff\xff\xff\xff garbage".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    let st = pb_status(r).await;
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert!(
        st.message.contains("invalid OTLP protobuf"),
        "{}",
        st.message
    );
    // Truncated valid message.
    let full = good_request(3).encode_to_vec();
    let r = s
        .post(Some(PB), None, full[..full.len() - 5].to_vec())
        .await;
    assert_eq!(r.status(), 400);
    s.assert_alive().await;
    assert_eq!(
        s.metrics
            .requests(Protocol::OtlpHttp, Outcome::InvalidPayload),
        2
    );
}

#[tokio::test]
async fn invalid_json_is_400_with_json_status_naming_the_place() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(Some(JSON), None, b"{\"resourceSpans\": [ nope".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    let v = json_body(r).await;
    assert_eq!(v["code"], 3);
    assert!(
        v["message"].as_str().unwrap().contains("line 1 column"),
        "{v}"
    );
    // Bad hex id in JSON is a malformed payload (the JSON mapping requires hex).
    let r = s
        .post(
            Some(JSON),
            None,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    s.assert_alive().await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let s = Server::start(ReceiverConfig::default()).await;
    for ct in [Some("text/plain"), Some("application/grpc"), None] {
        let r = s.post(ct, None, good_request(1).encode_to_vec()).await;
        assert_eq!(r.status(), 415, "{ct:?}");
        let v = json_body(r).await;
        assert!(
            v["message"].as_str().unwrap().contains("Content-Type"),
            "{v}"
        );
    }
    let r = s
        .post(Some(PB), Some("br"), good_request(1).encode_to_vec())
        .await;
    assert_eq!(r.status(), 415);
    assert!(pb_status(r).await.message.contains("Content-Encoding"));
    assert_eq!(s.sink.span_count(), 0);
    s.assert_alive().await;
    assert_eq!(
        s.metrics
            .requests(Protocol::OtlpHttp, Outcome::UnsupportedMediaType),
        4
    );
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = Server::start(small_cfg(2048)).await;
    // Raw body over the limit.
    let big = request(
        (0..200)
            .map(|i| span(vec![1; 16], vec![i as u8 + 1; 8], "x".repeat(20).as_str()))
            .collect(),
    );
    let raw = big.encode_to_vec();
    assert!(raw.len() > 2048);
    let r = s.post(Some(PB), None, raw.clone()).await;
    assert_eq!(r.status(), 413);
    assert!(pb_status(r).await.message.contains("2048"));
    // Compressed body under the limit that inflates past it.
    let compressed = gzip(&raw);
    assert!(compressed.len() < 2048, "{}", compressed.len());
    let r = s.post(Some(PB), Some("gzip"), compressed).await;
    assert_eq!(r.status(), 413);
    // A gzip bomb.
    let r = s
        .post(Some(PB), Some("gzip"), gzip(&vec![0u8; 8 * 1024 * 1024]))
        .await;
    assert_eq!(r.status(), 413);
    // Streamed without Content-Length (chunked), over a raw connection.
    let status = chunked_post(s.addr, 10, 1000).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    s.assert_alive().await;
    assert_eq!(s.metrics.requests(Protocol::OtlpHttp, Outcome::TooLarge), 4);
}

#[tokio::test]
async fn truncated_or_corrupt_gzip_is_400() {
    let s = Server::start(ReceiverConfig::default()).await;
    let full = gzip(&good_request(5).encode_to_vec());
    let r = s
        .post(Some(PB), Some("gzip"), full[..full.len() / 2].to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert!(pb_status(r).await.message.contains("truncated gzip"));
    let r = s
        .post(Some(JSON), Some("gzip"), b"plain text, not gzip".to_vec())
        .await;
    assert_eq!(r.status(), 400);
    assert!(json_body(r).await["message"]
        .as_str()
        .unwrap()
        .contains("gzip"));
    s.assert_alive().await;
}

#[tokio::test]
async fn tenant_header_is_used_and_validated() {
    let cfg = ReceiverConfig {
        tenant_header: "X-Tenant".into(),
        ..Default::default()
    };
    let s = Server::start(cfg).await;
    let r = s
        .client
        .post(s.url())
        .header("content-type", PB)
        .header("x-tenant", "acme")
        .body(good_request(1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.sink.batches()[0].tenant.as_str(), "acme");
    let r = s
        .client
        .post(s.url())
        .header("content-type", PB)
        .header("X-TENANT", "../etc")
        .body(good_request(1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let st = pb_status(r).await;
    assert!(
        st.message.contains("X-Tenant") && st.message.contains("invalid tenant"),
        "{}",
        st.message
    );
    assert_eq!(
        s.metrics
            .requests(Protocol::OtlpHttp, Outcome::InvalidTenant),
        1
    );
    s.assert_alive().await;
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    let metrics = metrics();
    let router = otlp_http_router(
        Arc::new(FailingSink(overloaded())),
        ReceiverConfig::default(),
        metrics.clone(),
    );
    let addr = serve_router(router).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/traces");
    let r = client
        .post(&url)
        .header("content-type", PB)
        .body(good_request(2).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let st = pb_status(r).await;
    assert_eq!(st.code, tonic::Code::Unavailable as i32);
    assert_eq!(
        st.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let body =
        clew_model::otlp_json::encode_resource_spans(&good_request(1).resource_spans).to_string();
    let r = client
        .post(&url)
        .header("content-type", JSON)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(json_body(r).await["details"][0]["retryDelay"], "7s");
    assert_eq!(
        metrics.spans_rejected(Protocol::OtlpHttp, RejectReason::Overloaded),
        3
    );
    assert_eq!(metrics.requests(Protocol::OtlpHttp, Outcome::Overloaded), 2);
}

#[tokio::test]
async fn other_sink_errors_map_to_status() {
    for (err, status, retry) in [
        (SinkError::ShuttingDown, 503, false),
        (SinkError::Internal("disk full".into()), 503, true),
        (SinkError::Invalid("nope".into()), 400, false),
    ] {
        let router = otlp_http_router(
            Arc::new(FailingSink(err.clone())),
            ReceiverConfig::default(),
            metrics(),
        );
        let addr = serve_router(router).await;
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", PB)
            .body(good_request(1).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{err:?}");
        assert_eq!(r.headers().contains_key("retry-after"), retry, "{err:?}");
    }
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .client
        .post(format!("http://{}/v1/metrics", s.addr))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s.client.get(s.url()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    s.assert_alive().await;
}

#[tokio::test]
async fn misconfigured_router_refuses_with_500() {
    let cfg = ReceiverConfig {
        tenant_header: "bad header".into(),
        ..Default::default()
    };
    assert!(cfg.validate().is_err());
    let addr = serve_router(otlp_http_router(
        Arc::new(CollectingSink::default()),
        cfg,
        metrics(),
    ))
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", PB)
        .body(good_request(1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
}

/// Sends `chunks` chunks of `size` zero bytes with `Transfer-Encoding: chunked` and returns the
/// status line.
async fn chunked_post(addr: SocketAddr, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {PB}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        // The server may answer and close before all chunks are written.
        if conn
            .write_all(format!("{size:x}\r\n").as_bytes())
            .await
            .is_err()
            || conn.write_all(&vec![0u8; size]).await.is_err()
            || conn.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn request_metadata_is_kept_only_when_configured_and_never_credentials() {
    let send = |s: &Server| {
        s.client
            .post(s.url())
            .header("content-type", PB)
            .header("x-client-id", "web-7")
            .header("authorization", "Bearer secret")
            .header("cookie", "session=abc")
            .body(good_request(1).encode_to_vec())
            .send()
    };
    let off = Server::start(ReceiverConfig::default()).await;
    assert_eq!(send(&off).await.unwrap().status(), 200);
    assert!(off.sink.batches()[0].metadata.is_empty());

    let on = Server::start(ReceiverConfig {
        include_metadata: true,
        ..Default::default()
    })
    .await;
    assert_eq!(send(&on).await.unwrap().status(), 200);
    let m = on.sink.batches()[0].metadata.clone();
    assert_eq!(m.get("X-Client-Id"), Some("web-7"));
    assert_eq!(m.get("content-type"), Some(PB));
    assert!(m.get("authorization").is_none() && m.get("cookie").is_none());

    let keys = Server::start(ReceiverConfig {
        metadata_keys: vec!["X-Client-Id".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(send(&keys).await.unwrap().status(), 200);
    let m = keys.sink.batches()[0].metadata.clone();
    assert_eq!(m.iter().collect::<Vec<_>>(), vec![("x-client-id", "web-7")]);
}
