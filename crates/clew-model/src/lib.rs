//! # clew-model — the vocabulary room
//!
//! The span model every other Clew crate speaks: the OTLP protobuf types (re-exported from
//! `opentelemetry-proto`), trace/span ids, tenants, the [`SpanBatch`] that flows from receivers through
//! the pipeline into the store, the [`SpanSink`] trait every downstream stage implements, and format
//! conversions (OTLP JSON, Zipkin v2 JSON).
//!
//! May depend on: protocol/serialization crates only. Must not depend on any other Clew crate, on
//! networking, or on storage.

pub mod attrs;
pub mod batch;
pub mod flat;
pub mod ids;
pub mod metadata;
pub mod otlp_json;
pub mod query;
pub mod rpc;
pub mod sink;
pub mod tenant;
pub mod zipkin;

pub use batch::{SpanBatch, ValidationReport};
pub use flat::{group_into_resource_spans, FlatSpan};
pub use ids::{SpanId, TraceId};
pub use metadata::RequestMetadata;
pub use sink::{SinkError, SpanSink};
pub use tenant::{Tenant, TenantError};

/// OTLP protobuf types, re-exported so that no other crate names `opentelemetry_proto` directly.
pub mod otlp {
    pub use opentelemetry_proto::tonic::collector::trace::v1 as collector;
    pub use opentelemetry_proto::tonic::common::v1 as common;
    pub use opentelemetry_proto::tonic::resource::v1 as resource;
    pub use opentelemetry_proto::tonic::trace::v1 as trace;
    pub use prost::Message;
}
