//! Prometheus counters for the receivers: spans received / accepted / rejected (with a reason) and
//! requests by outcome, all labelled by protocol.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::Arc;

/// The wire protocol a request came in on.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Protocol {
    OtlpGrpc,
    OtlpHttp,
    Zipkin,
    /// A message from a Kafka topic (`clew-kafka`'s receiver).
    Kafka,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OtlpGrpc => "otlp_grpc",
            Protocol::OtlpHttp => "otlp_http",
            Protocol::Zipkin => "zipkin",
            Protocol::Kafka => "kafka",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Every span accepted.
    Ok,
    /// Some or all spans rejected for invalid ids; the rest accepted.
    PartialSuccess,
    InvalidTenant,
    InvalidPayload,
    TooLarge,
    UnsupportedMediaType,
    Overloaded,
    /// Refused by the tenant's ingestion rate (429 / `ResourceExhausted`, retryable).
    RateLimited,
    ShuttingDown,
    Internal,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::PartialSuccess => "partial_success",
            Outcome::InvalidTenant => "invalid_tenant",
            Outcome::InvalidPayload => "invalid_payload",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::Overloaded => "overloaded",
            Outcome::RateLimited => "rate_limited",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::Internal => "internal",
        }
    }
}

/// Why spans were not accepted. Only counted when the number of spans is known, i.e. after the
/// payload was decoded (a payload refused before decoding counts as a request outcome only).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RejectReason {
    InvalidId,
    InvalidPayload,
    InvalidTenant,
    TooLarge,
    UnsupportedMediaType,
    Overloaded,
    /// The request was over the tenant's ingestion rate.
    RateLimited,
    /// The span was over its trace's `max_spans_per_trace` / `max_bytes_per_trace`.
    TraceLimit,
    ShuttingDown,
    Internal,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidId => "invalid_id",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::InvalidTenant => "invalid_tenant",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::Overloaded => "overloaded",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::TraceLimit => "trace_limit",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::Internal => "internal",
        }
    }
}

macro_rules! label_value {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}
label_value!(Protocol);
label_value!(Outcome);
label_value!(RejectReason);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    protocol: Protocol,
    reason: RejectReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: Protocol,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct Inner {
    received: Family<ProtocolLabels, Counter>,
    accepted: Family<ProtocolLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
}

/// The receivers' counters. Cheap to clone (one `Arc`); register once, share with every receiver.
///
/// Exposed as `clew_receiver_spans_received_total{protocol}`,
/// `clew_receiver_spans_accepted_total{protocol}`,
/// `clew_receiver_spans_rejected_total{protocol,reason}` and
/// `clew_receiver_requests_total{protocol,outcome}`.
#[derive(Debug, Clone, Default)]
pub struct ReceiverMetrics {
    inner: Arc<Inner>,
}

impl ReceiverMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the counters (names get the `_total` suffix from the counter type).
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        registry.register(
            "clew_receiver_spans_received",
            "Spans decoded from requests, before validation",
            i.received.clone(),
        );
        registry.register(
            "clew_receiver_spans_accepted",
            "Spans acknowledged to the client after the sink took them",
            i.accepted.clone(),
        );
        registry.register(
            "clew_receiver_spans_rejected",
            "Spans not accepted, by reason",
            i.rejected.clone(),
        );
        registry.register(
            "clew_receiver_requests",
            "Export requests, by outcome",
            i.requests.clone(),
        );
    }

    pub(crate) fn add_received(&self, protocol: Protocol, n: u64) {
        if n > 0 {
            self.inner
                .received
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(n);
        }
    }

    pub(crate) fn add_accepted(&self, protocol: Protocol, n: u64) {
        if n > 0 {
            self.inner
                .accepted
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(n);
        }
    }

    pub(crate) fn add_rejected(&self, protocol: Protocol, reason: RejectReason, n: u64) {
        if n > 0 {
            self.inner
                .rejected
                .get_or_create(&RejectLabels { protocol, reason })
                .inc_by(n);
        }
    }

    pub(crate) fn request(&self, protocol: Protocol, outcome: Outcome) {
        self.inner
            .requests
            .get_or_create(&RequestLabels { protocol, outcome })
            .inc();
    }

    /// Current value of `spans_received` (for tests and status pages).
    pub fn spans_received(&self, protocol: Protocol) -> u64 {
        self.inner
            .received
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    pub fn spans_accepted(&self, protocol: Protocol) -> u64 {
        self.inner
            .accepted
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    pub fn spans_rejected(&self, protocol: Protocol, reason: RejectReason) -> u64 {
        self.inner
            .rejected
            .get_or_create(&RejectLabels { protocol, reason })
            .get()
    }

    pub fn requests(&self, protocol: Protocol, outcome: Outcome) -> u64 {
        self.inner
            .requests
            .get_or_create(&RequestLabels { protocol, outcome })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = ReceiverMetrics::new();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.add_received(Protocol::OtlpGrpc, 3);
        m.add_accepted(Protocol::OtlpGrpc, 2);
        m.add_rejected(Protocol::OtlpGrpc, RejectReason::InvalidId, 1);
        m.request(Protocol::Zipkin, Outcome::TooLarge);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"clew_receiver_spans_received_total{protocol="otlp_grpc"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"clew_receiver_spans_accepted_total{protocol="otlp_grpc"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"clew_receiver_spans_rejected_total{protocol="otlp_grpc",reason="invalid_id"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"clew_receiver_requests_total{protocol="zipkin",outcome="too_large"} 1"#
            ),
            "{text}"
        );
        assert_eq!(
            m.clone().spans_received(Protocol::OtlpGrpc),
            3,
            "clones share counters"
        );
    }
}
