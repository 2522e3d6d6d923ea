//! # clew-receive — the receiving room
//!
//! Listeners that turn wire payloads into [`clew_model::SpanBatch`]es and hand them to a
//! [`clew_model::SpanSink`]: OTLP/gRPC (:4317), OTLP/HTTP protobuf and JSON (:4318), Zipkin v2 JSON
//! (:9411). A client is acknowledged only when the sink returns `Ok` (for the store: fsynced).
//!
//! May depend on: `clew-model`, `clew-security` (per-tenant limits), network and codec crates.
//! Must not depend on the pipeline's processors, the store or the query room.
//!
//! ## Entry points
//!
//! - [`serve_otlp_grpc`]: runs `opentelemetry.proto.collector.trace.v1.TraceService/Export` on a
//!   listener until the shutdown future completes ([`serve_otlp_grpc_incoming`]: on any stream of
//!   accepted connections, e.g. TLS; [`otlp_grpc_service`] gives the bare service for callers that
//!   run their own tonic server).
//! - [`otlp_http_router`]: `POST /v1/traces` (protobuf or JSON, gzip or identity).
//! - [`zipkin_router`]: `POST /api/v2/spans` (Zipkin v2 JSON, gzip or identity), answered `202`.
//! - [`MessageReceiver`]: one message from a broker (`clew-kafka`'s Kafka receiver) in the
//!   Collector's encodings, with its tenant in a message header; the outcome says whether to
//!   commit it, skip it or read it again.
//!
//! All three take a [`ReceiverConfig`] (tenant header, size limit) and share one
//! [`ReceiverMetrics`], which the binary registers once in its Prometheus registry. Call
//! [`ReceiverConfig::validate`] at startup to fail fast on a bad configuration; the routers, which
//! cannot return an error, answer every request `500` if given one.
//!
//! Every request is checked in the same order: content type (415), tenant (400), body size and
//! decompression (413/400), decoding (400), then per-span id validation (partial success), then the
//! tenant's limits when [`ReceiverConfig::limiter`] is set (ingestion rate: 429 /
//! `ResourceExhausted` with a retry delay; attribute limits: cut, not rejected; per-trace limits:
//! partial success naming the limit), then the sink (503 / `Unavailable` when it is overloaded,
//! shutting down or failing).

mod decode;
mod errors;
mod grpc;
mod http;
mod ingest;
mod message;
pub mod metadata;
mod metrics;
mod tenant;
mod zipkin_http;

pub use errors::ReceiveError;
pub use grpc::{
    otlp_grpc_service, serve_otlp_grpc, serve_otlp_grpc_gated, serve_otlp_grpc_incoming,
    OtlpGrpcService,
};
pub use http::otlp_http_router;
pub use message::{MessageEncoding, MessageOutcome, MessageReceiver};
pub use metrics::{Outcome, Protocol, ReceiverMetrics, RejectReason};
pub use zipkin_http::zipkin_router;

use clew_model::Tenant;

/// The default tenant header, as used by Grafana's Loki/Mimir/Tempo (`X-Scope-OrgID`).
pub const DEFAULT_TENANT_HEADER: &str = "X-Scope-OrgID";
/// The default request size limit, compressed and decompressed: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Settings shared by all receivers.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Header (HTTP) or metadata key (gRPC) naming the tenant; matched case-insensitively. An absent
    /// header means [`ReceiverConfig::default_tenant`]; an invalid value is rejected.
    pub tenant_header: String,
    /// Largest accepted request: the body as sent (compressed) and the body after decompression
    /// (HTTP), the gRPC message before and after decompression.
    pub max_message_bytes: usize,
    /// The tenant of requests that carry no tenant header.
    pub default_tenant: Tenant,
    /// Per-tenant limits, one limiter shared by every receiver; `None`: no limits.
    pub limiter: Option<std::sync::Arc<clew_security::limits::Limiter>>,
    /// Keep the request's headers / gRPC metadata as the batch's `metadata` (the Collector's
    /// `include_metadata`); credentials are never kept (see [`metadata`]). Default `false`.
    pub include_metadata: bool,
    /// Keep only these headers / metadata keys (case-insensitive; implies `include_metadata`).
    /// Naming a credential-bearing header is a configuration error. Default empty.
    pub metadata_keys: Vec<String>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            tenant_header: DEFAULT_TENANT_HEADER.to_string(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            default_tenant: Tenant::default(),
            limiter: None,
            include_metadata: false,
            metadata_keys: Vec::new(),
        }
    }
}

impl ReceiverConfig {
    /// Checks the settings: the tenant header must be a valid HTTP header name (and so a valid gRPC
    /// metadata key), the size limit non-zero, and `metadata_keys` header names that carry no
    /// credentials.
    pub fn validate(&self) -> Result<(), ReceiveError> {
        tenant::TenantResolver::new(self)?;
        metadata::MetadataFilter::new(self).map(|_| ())
    }
}
