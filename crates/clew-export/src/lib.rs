//! # clew-export — the room where spans leave Clew
//!
//! Exporters in the OpenTelemetry Collector's shape: `otlp` (gRPC) and `otlphttp` (HTTP protobuf),
//! with gzip, headers, TLS/mTLS and timeouts, retrying retryable errors with exponential backoff
//! and honouring `RetryInfo`/`Retry-After`, behind a durable sending queue on disk (an export Clew
//! acknowledged survives a downstream outage and a restart, and drains in order); and `debug`,
//! which logs spans. Every exporter is a `SpanSink`.
//!
//! May depend on: `clew-model`, `clew-security` (outgoing TLS), `clew-encryption` (sealing the
//! queue), gRPC/HTTP client crates. Must not depend on receivers, the store or the query room.
//!
//! ## Configuration (the Collector's keys; unknown keys are errors)
//!
//! ```yaml
//! exporters:
//!   otlp/back:                         # OTLP/gRPC  (type `otlp`; → Protocol::Grpc)
//!     endpoint: back.example.com:4317  # host:port (TLS unless tls.insecure), http://… or https://…
//!     compression: gzip                # gzip (default) | none
//!     headers: {authorization: "Bearer …"}   # sent with every request
//!     timeout: 10s                     # per attempt (default 10s)
//!     tenant_header: X-Scope-OrgID     # carries each batch's tenant (default X-Scope-OrgID; "" = none)
//!     tls:                             # configtls client keys (clew_security::tls::TlsClientSettings) + insecure
//!       insecure: false                # gRPC, host:port endpoint only: plaintext
//!       ca_file: ca.pem                # else the system's trust store
//!       cert_file: client.pem          # client certificate (mTLS)…
//!       key_file: client-key.pem       # …and its key
//!       insecure_skip_verify: false    # tests only
//!       server_name_override: clew     # gRPC only
//!       min_version: "1.2"
//!       max_version: "1.3"
//!     retry_on_failure:
//!       enabled: true
//!       initial_interval: 5s
//!       max_interval: 30s
//!       max_elapsed_time: 0s           # 0s (Clew's default) = retry forever; the queue is durable
//!       multiplier: 1.5
//!       randomization_factor: 0.5      # wait = interval × [1-f, 1+f], at least RetryInfo/Retry-After
//!     sending_queue:
//!       enabled: true                  # false: consume() sends once, synchronously (retryable → Overloaded)
//!       num_consumers: 1               # 1 keeps batch order; more send in parallel, order not kept
//!       queue_size: 100000             # optional bound in batches (default: bytes only)
//!       max_request_bytes: 4128768     # consecutive batches of a tenant merge into requests ≤ this (~3.94 MiB)
//!       storage:
//!         directory: /var/lib/clew/queue/otlp_back   # default {data_dir}/queue/{name, '/' → '_'}
//!         max_bytes: 1073741824        # default 1 GiB; full → consume() returns SinkError::Overloaded (retry after 5s)
//!   otlphttp/back:                     # OTLP/HTTP protobuf (type `otlphttp`; → Protocol::Http)
//!     endpoint: https://back.example.com:4318    # base URL: POSTs to {endpoint}/v1/traces
//!     traces_endpoint: https://…/v1/traces       # optional: the full URL instead
//!     # compression, headers, timeout, tenant_header, tls, retry_on_failure, sending_queue as above
//!   debug:
//!     verbosity: basic                 # basic (default: one line per batch) | normal (+ a line per span) | detailed (+ attributes, events, links)
//! ```
//!
//! ## Delivery semantics
//!
//! [`OtlpExporter::consume`](clew_model::SpanSink::consume) encodes the batch
//! (`ExportTraceServiceRequest` protobuf + tenant) into the [`queue`] and returns once it is
//! fsynced (group commit: one `fdatasync` for everything queued at once). Consumers lease queued
//! records in order (consecutive records of one tenant are merged into one request, up to
//! `max_request_bytes`: protobuf concatenation appends `resource_spans`), send, and acknowledge
//! only after the destination accepted (or permanently refused) them; the durable cursor moves
//! then. A crash or restart therefore resends at most the requests in flight: **at-least-once**
//! (a downstream Clew drops the duplicates at compaction; dedupe on read).
//!
//! Retryable: gRPC `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`,
//! `DATA_LOSS`, and `RESOURCE_EXHAUSTED` with a `RetryInfo`; HTTP 429, 502, 503, 504; connection
//! errors and timeouts. The wait is the jittered exponential backoff, at least the server's
//! `RetryInfo.retry_delay` / `Retry-After` (delta-seconds or an HTTP-date). Too large (HTTP 413, gRPC `OUT_OF_RANGE`
//! "too large", `RESOURCE_EXHAUSTED` without `RetryInfo`): a merged request is resent batch by
//! batch. Everything else is permanent: the batch is dropped, logged and counted
//! (`clew_exporter_send_failed_spans_total{reason="permanent"}`).
//! OTLP partial success is logged and its rejected spans counted (`reason="partial"`).
//! With one consumer, a retried batch holds back the ones behind it: order is kept.
//!
//! With `storage.encryption` ([`OtlpExporter::start_with_keys`]) every queued batch is sealed
//! (AES-256-GCM under a per-tenant, per-segment data key wrapped by the key provider; see
//! [`queue`]); a KMS outage makes `consume` return `Overloaded`, never write plaintext. The queue
//! directory is locked while open: a second process on it fails with [`queue::QueueError::Locked`].
//!
//! [`OtlpExporter::shutdown`] stops the consumers (an attempt in flight is abandoned and stays
//! queued) and closes the queue; what is queued stays on disk for the next start.
//!
//! ## Metrics ([`ExporterMetrics::register`])
//!
//! `clew_exporter_sent_spans_total{exporter}`, `clew_exporter_sent_requests_total{exporter}`,
//! `clew_exporter_send_failed_spans_total{exporter,reason}` (`permanent`, `partial`, `expired`),
//! `clew_exporter_enqueue_failed_spans_total{exporter}`, `clew_exporter_send_retries_total{exporter}`,
//! `clew_exporter_queue_size_bytes{exporter}`, `clew_exporter_queue_size_batches{exporter}`,
//! `clew_exporter_queue_capacity_bytes{exporter}`, `clew_exporter_debug_spans_total{exporter}`.

mod client;
pub mod config;
mod debug;
mod exporter;
pub mod metrics;
pub mod queue;

pub use client::{
    classify_grpc, classify_http, parse_retry_after, parse_retry_after_at, retry_info, rpc,
    SendOutcome,
};
pub use config::{
    Compression, DebugConfig, ExporterTls, OtlpExporterConfig, Protocol, QueueConfig, QueueStorage,
    RetryConfig, Verbosity,
};
pub use debug::DebugExporter;
pub use exporter::OtlpExporter;
pub use metrics::ExporterMetrics;

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A configuration value is unusable; `key` is its full path (`exporters.otlp/back.headers.x`).
    #[error("key `{key}`: {message}")]
    Config { key: String, message: String },
    /// The `tls` block is unusable (the message names the key and the fix).
    #[error("{0}")]
    Tls(String),
    /// The sending queue cannot be opened.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}
