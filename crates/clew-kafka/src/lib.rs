//! # clew-kafka — the room where spans cross a Kafka topic
//!
//! The Kafka exporter and receiver, compatible with the OpenTelemetry Collector's (its keys, its
//! default topic `otlp_spans`, its encodings `otlp_proto` and `otlp_json`, its
//! `partition_traces_by_id`), so Clew collectors, Clew ingesters and Collectors can share topics.
//! The client is librdkafka (bundled, through `rdkafka`).
//!
//! May depend on: `clew-model` (OTLP types, `SpanSink`), `clew-receive` (a received message is
//! checked and delivered like an OTLP request: [`clew_receive::MessageReceiver`]), rdkafka.
//! Must not depend on the store, processors, query or the binary's wiring.
//!
//! ## Configuration (the Collector's keys; unknown keys are errors)
//!
//! ```yaml
//! receivers:
//!   kafka:
//!     brokers: [127.0.0.1:9092]        # default localhost:9092
//!     topic: otlp_spans                # or traces: {topic: …, encoding: …} (wins)
//!     encoding: otlp_proto             # otlp_proto | otlp_json | zipkin_json
//!     group_id: clew                   # consumer group (default clew)
//!     client_id: clew
//!     initial_offset: latest           # latest | earliest: where a group with no commit starts
//!     session_timeout: 10s
//!     heartbeat_interval: 3s
//!     max_fetch_wait: 250ms            # how long the broker may hold a fetch (latency floor when quiet)
//!     header_extraction: {extract_headers: false, headers: []}   # → resource attrs kafka.header.NAME
//!     tenant_header: X-Scope-OrgID     # default: tenancy.header
//!     metadata_keys: []                # record headers kept as request metadata
//!     max_message_bytes: 16777216      # bigger messages are skipped and counted
//!     max_batch_messages: 500          # stored together (one WAL group commit), then committed
//!     protocol_version: 2.0.0          # accepted, not needed (librdkafka negotiates)
//! exporters:
//!   kafka:
//!     brokers: [127.0.0.1:9092]
//!     topic: otlp_spans                # or traces: {topic, encoding}
//!     encoding: otlp_proto             # otlp_proto | otlp_json
//!     partition_traces_by_id: false    # true: one message per trace, key = lowercase hex trace id
//!     timeout: 5s                      # the broker must acknowledge within it, else retryable
//!     tenant_header: X-Scope-OrgID     # record header with the batch's tenant ("" = none)
//!     include_metadata_keys: []        # request metadata → record headers
//!     producer:
//!       max_message_bytes: 1000000     # larger requests/traces are cut into several messages
//!       required_acks: -1              # -1 all replicas (default; idempotent producer) | 0 | 1
//!       compression: none              # none | gzip | snappy | lz4 | zstd
//!       flush_max_messages: 0
//! ```
//!
//! ## Delivery
//!
//! Exporter: `consume` returns once the broker acknowledged every message of the batch
//! ([`exporter`]). Receiver: offsets are committed only for messages whose spans are durable
//! ([`receiver`]). Both at-least-once; Clew drops duplicate spans on read and at compaction. The
//! broker is trusted like a network inside the cluster: a message's tenant is its tenant header.

pub mod client_log;
pub mod config;
pub mod encode;
pub mod exporter;
pub mod metrics;
pub mod receiver;

pub use config::{KafkaExporterConfig, KafkaReceiverConfig};
pub use exporter::KafkaExporter;
pub use metrics::KafkaMetrics;
pub use receiver::KafkaReceiver;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("key `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("{component}: the Kafka client could not be created: {message}")]
    Client { component: String, message: String },
}
