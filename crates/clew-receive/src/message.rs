//! Receiving from a message broker (the Kafka receiver in `clew-kafka`): one message is one
//! request, decoded once in the encoding the topic carries, with its tenant and metadata read from
//! the message headers, then checked and delivered exactly as an OTLP request is (per-span
//! validation, the tenant's limits, the sink, the same metrics under their own protocol label).
//!
//! A broker has no way to answer a producer, so the outcome says what the consumer must do with
//! the message instead: commit it ([`MessageOutcome::Stored`]), skip it because it can never be
//! stored ([`MessageOutcome::Invalid`]: committed too, and counted), or read it again later
//! ([`MessageOutcome::Retry`]: nothing after it may be committed until it is stored).

use crate::errors::Rejection;
use crate::ingest::Shared;
use crate::metrics::{Protocol, ReceiverMetrics};
use crate::{ReceiveError, ReceiverConfig};
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::trace::ResourceSpans;
use clew_model::otlp::Message;
use clew_model::{zipkin, SinkError, SpanSink, Tenant, ValidationReport};
use std::sync::Arc;
use std::time::Duration;

/// The payload encodings of the OpenTelemetry Collector's Kafka receiver and exporter that carry
/// traces and that Clew reads (its names, as written in `encoding:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEncoding {
    /// `otlp_proto`: an `ExportTraceServiceRequest` protobuf (the Collector's default).
    OtlpProto,
    /// `otlp_json`: an `ExportTraceServiceRequest` in the OTLP/JSON mapping.
    OtlpJson,
    /// `zipkin_json`: a JSON list of Zipkin v2 spans.
    ZipkinJson,
}

impl MessageEncoding {
    pub const NAMES: &'static [&'static str] = &["otlp_proto", "otlp_json", "zipkin_json"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "otlp_proto" => Some(Self::OtlpProto),
            "otlp_json" => Some(Self::OtlpJson),
            "zipkin_json" => Some(Self::ZipkinJson),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OtlpProto => "otlp_proto",
            Self::OtlpJson => "otlp_json",
            Self::ZipkinJson => "zipkin_json",
        }
    }
}

/// What the consumer must do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    /// Its valid spans are durable downstream (for the store: fsynced); `rejected` spans had
    /// invalid ids or broke a per-trace limit. Commit it.
    Stored { accepted: u64, rejected: u64 },
    /// It can never be stored as it is (undecodable, a bad tenant header, too large): skip and
    /// commit it. Counted in `clew_receiver_spans_rejected_total` / requests by outcome.
    Invalid(String),
    /// Temporarily refused (overloaded, over the tenant's rate, shutting down): read it again
    /// after `after`; commit nothing behind it meanwhile.
    Retry { after: Duration, reason: String },
}

/// Checks and delivers broker messages into a sink. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct MessageReceiver {
    shared: Arc<Shared>,
}

/// Used when a temporary refusal gives no delay of its own (shutting down).
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

impl MessageReceiver {
    /// `cfg` as for the network receivers: the tenant header is looked up among the message
    /// headers (case-insensitively), `max_message_bytes` caps a message, `metadata_keys` /
    /// `include_metadata` pick the headers kept as the batch's metadata.
    pub fn new(
        sink: Arc<dyn SpanSink>,
        cfg: &ReceiverConfig,
        metrics: ReceiverMetrics,
        protocol: Protocol,
    ) -> Result<Self, ReceiveError> {
        cfg.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(sink, cfg, metrics, protocol)),
        })
    }

    /// Decodes one message and delivers it. `enrich` runs on the decoded spans before
    /// validation (the Kafka receiver's `header_extraction` adds resource attributes there).
    pub async fn ingest(
        &self,
        encoding: MessageEncoding,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        enrich: &(dyn Fn(&mut Vec<ResourceSpans>) + Send + Sync),
    ) -> MessageOutcome {
        match self.try_ingest(encoding, payload, headers, enrich).await {
            Ok((accepted, rejected)) => MessageOutcome::Stored { accepted, rejected },
            Err(rejection) => outcome_of(rejection),
        }
    }

    async fn try_ingest(
        &self,
        encoding: MessageEncoding,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        enrich: &(dyn Fn(&mut Vec<ResourceSpans>) + Send + Sync),
    ) -> Result<(u64, u64), Rejection> {
        let shared = &self.shared;
        let refuse = |r: Rejection| {
            shared.refused(&r);
            r
        };
        let resolver = shared.resolver().map_err(refuse)?;
        let tenant = tenant_of(resolver, headers).map_err(refuse)?;
        if payload.len() > shared.max_bytes {
            return Err(refuse(Rejection::TooLarge {
                limit: shared.max_bytes,
            }));
        }
        let (mut resource_spans, earlier, received) = decode(encoding, payload).map_err(refuse)?;
        enrich(&mut resource_spans);
        let lowered: Vec<(String, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        let metadata = shared
            .metadata
            .collect(lowered.iter().map(|(k, v)| (k.as_str(), *v)));
        let report = shared
            .ingest_sized(
                tenant,
                metadata,
                resource_spans,
                earlier,
                received,
                Some(payload.len()),
            )
            .await?;
        let total = received.unwrap_or(0);
        Ok((
            total.saturating_sub(report.rejected_spans),
            report.rejected_spans,
        ))
    }
}

/// The tenant named by the message's tenant header; absent → the default tenant. Kafka allows a
/// header more than once: two different values are refused, as for HTTP.
fn tenant_of(
    resolver: &crate::tenant::TenantResolver,
    headers: &[(&str, &[u8])],
) -> Result<Tenant, Rejection> {
    let mut found: Option<&[u8]> = None;
    for (name, value) in headers {
        if resolver.matches(name) {
            if found.is_some_and(|f| f != *value) {
                return Err(Rejection::BadTenant(format!(
                    "{} given more than once with different values",
                    resolver.display()
                )));
            }
            found = Some(value);
        }
    }
    match found {
        None => Ok(resolver.default_tenant()),
        Some(v) => {
            let text = std::str::from_utf8(v).map_err(|_| {
                Rejection::BadTenant(format!("{} is not UTF-8", resolver.display()))
            })?;
            resolver.parse_tenant(text)
        }
    }
}

/// Decoded spans, what conversion already rejected, and the span count of the payload.
fn decode(
    encoding: MessageEncoding,
    payload: &[u8],
) -> Result<(Vec<ResourceSpans>, ValidationReport, Option<u64>), Rejection> {
    let count = |rs: &[ResourceSpans]| -> u64 {
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    };
    match encoding {
        MessageEncoding::OtlpProto => {
            let req = ExportTraceServiceRequest::decode(payload)
                .map_err(|e| Rejection::Malformed(format!("invalid OTLP protobuf: {e}")))?;
            let n = count(&req.resource_spans);
            Ok((req.resource_spans, ValidationReport::default(), Some(n)))
        }
        MessageEncoding::OtlpJson => {
            let req = clew_model::otlp_json::decode_request(payload)
                .map_err(|e| Rejection::Malformed(e.to_string()))?;
            let n = count(&req.resource_spans);
            Ok((req.resource_spans, ValidationReport::default(), Some(n)))
        }
        MessageEncoding::ZipkinJson => {
            let c =
                zipkin::decode_json(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
            Ok((c.resource_spans, c.report, Some(c.received_spans)))
        }
    }
}

fn outcome_of(rejection: Rejection) -> MessageOutcome {
    match rejection {
        Rejection::Sink(SinkError::Overloaded { .. })
        | Rejection::Sink(SinkError::ShuttingDown)
        | Rejection::Sink(SinkError::Internal(_))
        | Rejection::RateLimited { .. }
        // Validated at construction; kept retryable so a message is never skipped for it.
        | Rejection::Misconfigured(_) => MessageOutcome::Retry {
            after: rejection.retry_after().unwrap_or(DEFAULT_RETRY),
            reason: rejection.message(),
        },
        Rejection::BadTenant(_)
        | Rejection::Malformed(_)
        | Rejection::TooLarge { .. }
        | Rejection::UnsupportedMediaType(_)
        | Rejection::Sink(SinkError::Invalid(_)) => MessageOutcome::Invalid(rejection.message()),
    }
}
