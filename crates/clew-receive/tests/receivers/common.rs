//! Test fixtures: sinks that collect or refuse, servers on loopback, sample payloads.

use clew_model::attrs::kv_str;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::InstrumentationScope;
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SinkError, SpanBatch, SpanSink};
use clew_receive::{ReceiverConfig, ReceiverMetrics};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Keeps every batch it is given.
#[derive(Default)]
pub struct CollectingSink {
    pub batches: Mutex<Vec<SpanBatch>>,
}

impl CollectingSink {
    pub fn batches(&self) -> Vec<SpanBatch> {
        self.batches.lock().unwrap().clone()
    }
    pub fn span_count(&self) -> usize {
        self.batches().iter().map(|b| b.span_count()).sum()
    }
}

#[async_trait::async_trait]
impl SpanSink for CollectingSink {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        self.batches.lock().unwrap().push(batch);
        Ok(())
    }
}

/// Refuses every batch with the given error.
pub struct FailingSink(pub SinkError);

#[async_trait::async_trait]
impl SpanSink for FailingSink {
    async fn consume(&self, _batch: SpanBatch) -> Result<(), SinkError> {
        Err(self.0.clone())
    }
}

pub fn overloaded() -> SinkError {
    SinkError::Overloaded {
        retry_after: std::time::Duration::from_secs(7),
        reason: "queue full".into(),
    }
}

pub fn span(trace: Vec<u8>, id: Vec<u8>, name: &str) -> Span {
    Span {
        trace_id: trace,
        span_id: id,
        name: name.into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    }
}

pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn good_request(n: u8) -> ExportTraceServiceRequest {
    request(
        (1..=n)
            .map(|i| span(vec![1; 16], vec![i; 8], &format!("op{i}")))
            .collect(),
    )
}

/// Two good spans, one with an all-zero trace id, one with a 4-byte span id.
pub fn mixed_request() -> ExportTraceServiceRequest {
    request(vec![
        span(vec![1; 16], vec![1; 8], "good1"),
        span(vec![0; 16], vec![2; 8], "zero-trace"),
        span(vec![1; 16], vec![3; 4], "short-id"),
        span(vec![1; 16], vec![4; 8], "good2"),
    ])
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn small_cfg(max: usize) -> ReceiverConfig {
    ReceiverConfig {
        max_message_bytes: max,
        ..Default::default()
    }
}

/// Serves a router on an ephemeral loopback port for the rest of the test.
pub async fn serve_router(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

pub fn metrics() -> ReceiverMetrics {
    ReceiverMetrics::new()
}

pub fn sink_dyn<S: SpanSink>(s: Arc<S>) -> Arc<dyn SpanSink> {
    s
}
