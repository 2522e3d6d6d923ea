//! Zipkin v2 receiver against a real reqwest client.

use crate::common::*;
use clew_model::attrs;
use clew_receive::{
    zipkin_router, Outcome, Protocol, ReceiverConfig, ReceiverMetrics, RejectReason,
};
use std::net::SocketAddr;
use std::sync::Arc;

const SPANS: &str = r#"[
  {"traceId":"5b8efff798038103d269b633813fc60c","id":"eee19b7ec3c1b174","name":"get","kind":"SERVER",
   "timestamp":1544712660000000,"duration":2000,"localEndpoint":{"serviceName":"frontend"},
   "tags":{"http.method":"GET","error":"boom"}},
  {"traceId":"5b8efff798038103d269b633813fc60c","id":"eee19b7ec3c1b175","parentId":"eee19b7ec3c1b174",
   "name":"query","kind":"CLIENT","timestamp":1544712660000500,"duration":1000,
   "localEndpoint":{"serviceName":"frontend"},"remoteEndpoint":{"serviceName":"db"}},
  {"traceId":"d269b633813fc60c","id":"1","name":"cache","localEndpoint":{"serviceName":"cache"}}
]"#;

struct Server {
    addr: SocketAddr,
    sink: Arc<CollectingSink>,
    metrics: ReceiverMetrics,
    client: reqwest::Client,
}

impl Server {
    async fn start(cfg: ReceiverConfig) -> Self {
        let sink = Arc::new(CollectingSink::default());
        let metrics = ReceiverMetrics::new();
        let addr = serve_router(zipkin_router(sink.clone(), cfg, metrics.clone())).await;
        Self {
            addr,
            sink,
            metrics,
            client: reqwest::Client::new(),
        }
    }

    async fn post(
        &self,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("http://{}/api/v2/spans", self.addr))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        req.send().await.unwrap()
    }

    async fn assert_alive(&self) {
        let before = self.sink.span_count();
        let r = self
            .post(Some("application/json"), None, SPANS.as_bytes().to_vec())
            .await;
        assert_eq!(r.status(), 202);
        assert_eq!(self.sink.span_count(), before + 3);
    }
}

#[tokio::test]
async fn spans_are_converted_and_accepted() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(Some("application/json"), None, SPANS.as_bytes().to_vec())
        .await;
    assert_eq!(r.status(), 202);
    let batches = s.sink.batches();
    assert_eq!(batches.len(), 1);
    let rs = &batches[0].resource_spans;
    assert_eq!(rs.len(), 2, "grouped by local endpoint");
    assert_eq!(attrs::service_name(rs[0].resource.as_ref()), "frontend");
    assert_eq!(attrs::service_name(rs[1].resource.as_ref()), "cache");
    let spans = &rs[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].status.as_ref().unwrap().message, "boom");
    assert_eq!(
        attrs::get_str(&spans[1].attributes, "peer.service"),
        Some("db")
    );
    assert_eq!(s.metrics.spans_accepted(Protocol::Zipkin), 3);
    assert_eq!(s.metrics.requests(Protocol::Zipkin, Outcome::Ok), 1);
}

#[tokio::test]
async fn gzip_and_missing_content_type_are_accepted() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .post(
            Some("application/json"),
            Some("gzip"),
            gzip(SPANS.as_bytes()),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = s.post(None, None, SPANS.as_bytes().to_vec()).await;
    assert_eq!(r.status(), 202);
    let r = s.post(Some("application/json"), None, b"[]".to_vec()).await;
    assert_eq!(r.status(), 202);
    assert_eq!(s.sink.span_count(), 6);
}

#[tokio::test]
async fn invalid_ids_are_rejected_per_span() {
    let s = Server::start(ReceiverConfig::default()).await;
    let body = r#"[{"traceId":"1","id":"2","name":"ok"},{"traceId":"0","id":"3"},{"traceId":"1","id":"zz"}]"#;
    let r = s
        .post(Some("application/json"), None, body.as_bytes().to_vec())
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(s.sink.span_count(), 1);
    assert_eq!(s.metrics.spans_received(Protocol::Zipkin), 3);
    assert_eq!(
        s.metrics
            .spans_rejected(Protocol::Zipkin, RejectReason::InvalidId),
        2
    );
    assert_eq!(
        s.metrics
            .requests(Protocol::Zipkin, Outcome::PartialSuccess),
        1
    );
    // Every span invalid: the client is told.
    let r = s
        .post(
            Some("application/json"),
            None,
            br#"[{"traceId":"0","id":"3"}]"#.to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("all zeros"), "{text}");
    s.assert_alive().await;
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_place() {
    let s = Server::start(ReceiverConfig::default()).await;
    for body in [
        &b"[{\"traceId\": \"1\",\n \"timestamp\": \"soon\"}]"[..],
        b"{}",
        b"not json",
        &SPANS.as_bytes()[..100],
    ] {
        let r = s.post(Some("application/json"), None, body.to_vec()).await;
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains("line") && text.contains("column"), "{text}");
    }
    assert_eq!(
        s.metrics
            .requests(Protocol::Zipkin, Outcome::InvalidPayload),
        4
    );
    s.assert_alive().await;
}

#[tokio::test]
async fn truncated_gzip_is_400() {
    let s = Server::start(ReceiverConfig::default()).await;
    let full = gzip(SPANS.as_bytes());
    let r = s
        .post(
            Some("application/json"),
            Some("gzip"),
            full[..full.len() - 10].to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("gzip"));
    s.assert_alive().await;
}

#[tokio::test]
async fn limits_are_enforced_compressed_and_decompressed() {
    let s = Server::start(small_cfg(1024)).await;
    let many: Vec<String> = (1..50)
        .map(|i| format!(r#"{{"traceId":"1","id":"{i:x}","name":"span"}}"#))
        .collect();
    let big = format!("[{}]", many.join(","));
    assert!(big.len() > 1024);
    let r = s
        .post(Some("application/json"), None, big.clone().into_bytes())
        .await;
    assert_eq!(r.status(), 413);
    let compressed = gzip(big.as_bytes());
    assert!(compressed.len() < 1024);
    let r = s
        .post(Some("application/json"), Some("gzip"), compressed)
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(s.metrics.requests(Protocol::Zipkin, Outcome::TooLarge), 2);
    let r = s
        .post(
            Some("application/json"),
            None,
            br#"[{"traceId":"1","id":"2"}]"#.to_vec(),
        )
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn unsupported_content_type_is_415() {
    let s = Server::start(ReceiverConfig::default()).await;
    for ct in [
        "application/x-protobuf",
        "application/x-thrift",
        "text/plain",
    ] {
        let r = s.post(Some(ct), None, SPANS.as_bytes().to_vec()).await;
        assert_eq!(r.status(), 415, "{ct}");
    }
    s.assert_alive().await;
}

#[tokio::test]
async fn tenant_is_read_and_validated() {
    let s = Server::start(ReceiverConfig::default()).await;
    let url = format!("http://{}/api/v2/spans", s.addr);
    let r = s
        .client
        .post(&url)
        .header("X-Scope-OrgID", "blue")
        .body(SPANS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(s.sink.batches()[0].tenant.as_str(), "blue");
    let r = s
        .client
        .post(&url)
        .header("X-Scope-OrgID", "..")
        .body(SPANS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("X-Scope-OrgID"));
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    let metrics = ReceiverMetrics::new();
    let addr = serve_router(zipkin_router(
        Arc::new(FailingSink(overloaded())),
        ReceiverConfig::default(),
        metrics.clone(),
    ))
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v2/spans"))
        .body(SPANS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        metrics.spans_rejected(Protocol::Zipkin, RejectReason::Overloaded),
        3
    );
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405() {
    let s = Server::start(ReceiverConfig::default()).await;
    let r = s
        .client
        .post(format!("http://{}/api/v1/spans", s.addr))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .get(format!("http://{}/api/v2/spans", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn request_metadata_is_kept_when_configured() {
    let s = Server::start(ReceiverConfig {
        metadata_keys: vec!["x-client-id".into()],
        ..Default::default()
    })
    .await;
    let r = s
        .client
        .post(format!("http://{}/api/v2/spans", s.addr))
        .header("content-type", "application/json")
        .header("x-client-id", "zipkin-app")
        .body(SPANS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        s.sink.batches()[0].metadata.get("x-client-id"),
        Some("zipkin-app")
    );
}
