//! # clew-propagation — Clew's context propagation toolkit
//!
//! **Room:** this crate is the propagation room of the Clew workspace. It is a standalone library:
//! it depends on no other Clew crate and may be used by any Rust service, with or without the
//! OpenTelemetry SDK. It may touch only its own files (`crates/clew-propagation/**`).
//!
//! What it provides:
//!
//! * [`traceparent`] / [`tracestate`] / [`trace_context`] — W3C Trace Context **Level 2**, spec-exact
//!   (lowercase hex, zero ids, version `ff`, forward-compatible versions, the random flag `0x02`
//!   preserved, unknown flags zeroed, `tracestate` grammar, limits, truncation and mutation rules).
//! * [`baggage`] — W3C Baggage with properties, percent-encoding and limits.
//! * [`b3`] and [`jaeger`] — Zipkin B3 (single and multi header) and Jaeger `uber-trace-id`.
//! * [`composite`] — a composite propagator with a configurable order.
//! * [`policy`] — PII-safe baggage egress policy (allowlists, limits, validators, HMAC
//!   pseudonymization, stripping for untrusted destinations).
//! * [`kafka`] — Kafka record-header carriers and messaging span helpers.
//! * [`task`] — helpers that carry the current context across `tokio::spawn`, `spawn_blocking`,
//!   std threads and (feature `rayon`) rayon.
//! * [`otel`] (feature `otel`, default) — `opentelemetry::propagation::TextMapPropagator` for every
//!   propagator here.
//!
//! The lean API: a [`Context`] holds an optional remote [`SpanContext`] and a [`Baggage`];
//! a [`Propagator`] moves it in and out of any carrier implementing [`Extractor`] / [`Injector`]
//! (`http::HeaderMap`, `HashMap<String, String>`, header lists, Kafka headers).
//!
//! Parsers never panic and never trust input: every parse failure is a typed error (see
//! [`error`]) and an invalid header is treated as absent, as the specifications require.

pub mod b3;
pub mod baggage;
pub mod carrier;
pub mod composite;
pub mod context;
pub mod error;
pub mod ids;
pub mod jaeger;
pub mod kafka;
#[cfg(feature = "otel")]
pub mod otel;
pub mod policy;
pub mod propagator;
pub mod task;
pub mod trace_context;
pub mod traceparent;
pub mod tracestate;

pub use b3::{B3Encoding, B3Propagator};
pub use baggage::{Baggage, BaggageEntry, BaggagePropagator};
pub use carrier::{Extractor, HeaderList, Injector};
pub use composite::CompositePropagator;
pub use context::{Context, Sampling};
pub use error::{BaggageError, ParseError, TraceStateError, TraceparentError};
pub use ids::{SpanContext, SpanId, TraceFlags, TraceId};
pub use jaeger::JaegerPropagator;

pub use policy::BaggagePolicy;
pub use propagator::Propagator;
pub use trace_context::TraceContextPropagator;
pub use traceparent::Traceparent;
pub use tracestate::TraceState;
