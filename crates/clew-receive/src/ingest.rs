//! The part every receiver shares once a payload is decoded: per-span validation, the tenant's
//! limits, handing the batch to the sink, and counting what happened.

use crate::errors::Rejection;
use crate::metadata::MetadataFilter;
use crate::metrics::{Outcome, Protocol, ReceiverMetrics, RejectReason};
use crate::tenant::TenantResolver;
use crate::ReceiverConfig;
use clew_model::otlp::trace::ResourceSpans;
use clew_model::otlp::Message;
use clew_model::{RequestMetadata, SpanBatch, SpanSink, Tenant, ValidationReport};
use clew_security::limits::Limiter;
use std::sync::Arc;

/// What a receiver needs per request; shared by all requests of one receiver.
pub(crate) struct Shared {
    pub sink: Arc<dyn SpanSink>,
    /// `Err` when the configuration was invalid: every request is then refused with that message,
    /// because the routers cannot return an error at construction.
    pub tenants: Result<TenantResolver, String>,
    pub max_bytes: usize,
    pub metrics: ReceiverMetrics,
    pub protocol: Protocol,
    pub limiter: Option<Arc<Limiter>>,
    /// Which headers / metadata entries become the batch's metadata (off when misconfigured:
    /// `tenants` then refuses every request anyway).
    pub metadata: MetadataFilter,
}

impl Shared {
    pub(crate) fn new(
        sink: Arc<dyn SpanSink>,
        cfg: &ReceiverConfig,
        metrics: ReceiverMetrics,
        protocol: Protocol,
    ) -> Self {
        let metadata = MetadataFilter::new(cfg);
        let tenants = TenantResolver::new(cfg)
            .map_err(|e| e.to_string())
            .and_then(|t| metadata.as_ref().map(|_| t).map_err(|e| e.to_string()));
        if let Err(e) = &tenants {
            tracing::error!(
                protocol = protocol.as_str(),
                "receiver will refuse all requests: {e}"
            );
        }
        Self {
            sink,
            tenants,
            max_bytes: cfg.max_message_bytes.max(1),
            metrics,
            protocol,
            limiter: cfg.limiter.clone(),
            metadata: metadata.unwrap_or(MetadataFilter::Off),
        }
    }

    pub(crate) fn resolver(&self) -> Result<&TenantResolver, Rejection> {
        self.tenants
            .as_ref()
            .map_err(|e| Rejection::Misconfigured(e.clone()))
    }

    /// Records a request refused before its spans were counted.
    pub(crate) fn refused(&self, rejection: &Rejection) {
        self.metrics.request(self.protocol, rejection.outcome());
        log_rejection(self.protocol, rejection);
    }

    /// Validates and delivers decoded spans. `earlier` carries spans a converter already rejected
    /// (Zipkin), `received` the number of spans in the payload including those.
    ///
    /// Returns the report for OTLP partial success. A batch left empty by validation is not sent
    /// to the sink and is still a success (OTLP spec).
    pub(crate) async fn ingest(
        &self,
        tenant: Tenant,
        metadata: RequestMetadata,
        resource_spans: Vec<ResourceSpans>,
        earlier: ValidationReport,
        received: Option<u64>,
    ) -> Result<ValidationReport, Rejection> {
        self.ingest_sized(tenant, metadata, resource_spans, earlier, received, None)
            .await
    }

    /// [`Shared::ingest`] with the request's decoded size in bytes, for the tenant's bytes rate
    /// (without it, the encoded size of the spans is computed when a bytes rate applies).
    pub(crate) async fn ingest_sized(
        &self,
        tenant: Tenant,
        metadata: RequestMetadata,
        resource_spans: Vec<ResourceSpans>,
        earlier: ValidationReport,
        received: Option<u64>,
        request_bytes: Option<usize>,
    ) -> Result<ValidationReport, Rejection> {
        let mut batch = SpanBatch::new(tenant, resource_spans).with_metadata(metadata);
        let received = received.unwrap_or(batch.span_count() as u64 + earlier.rejected_spans);
        self.metrics.add_received(self.protocol, received);

        let mut report = batch.validate();
        report.rejected_spans += earlier.rejected_spans;
        report.first_error = earlier.first_error.or(report.first_error);
        self.metrics.add_rejected(
            self.protocol,
            RejectReason::InvalidId,
            report.rejected_spans,
        );
        if report.rejected_spans > 0 {
            tracing::debug!(
                protocol = self.protocol.as_str(),
                tenant = %batch.tenant,
                rejected = report.rejected_spans,
                "spans rejected: {}",
                report.first_error.as_deref().unwrap_or("")
            );
        }

        // Per-tenant limits, after validation: the rate refuses the whole request (retryably),
        // attribute limits cut values, per-trace limits drop spans (partial success).
        let mut reservation = None;
        let count = batch.span_count() as u64;
        if let (Some(limiter), true) = (&self.limiter, count > 0) {
            let size = || {
                request_bytes.map(|b| b as u64).unwrap_or_else(|| {
                    batch
                        .resource_spans
                        .iter()
                        .map(|rs| rs.encoded_len() as u64)
                        .sum()
                })
            };
            if let Err(limited) = limiter.check_rate(&batch.tenant, count, size) {
                let rejection = Rejection::RateLimited {
                    retry_after: limited.retry_after,
                    limit: limited.to_string(),
                };
                self.metrics
                    .add_rejected(self.protocol, RejectReason::RateLimited, count);
                self.refused(&rejection);
                return Err(rejection);
            }
            let applied = limiter.apply(&batch.tenant, &mut batch.resource_spans);
            if let Some(message) = applied.message {
                report.rejected_spans += applied.rejected_spans;
                report.first_error = Some(match report.first_error.take() {
                    Some(first) => format!("{first}; {message}"),
                    None => message,
                });
                self.metrics.add_rejected(
                    self.protocol,
                    RejectReason::TraceLimit,
                    applied.rejected_spans,
                );
            }
            reservation = Some(applied.reservation);
        }

        let count = batch.span_count() as u64;
        if count > 0 {
            if let Err(e) = self.sink.consume(batch).await {
                if let (Some(limiter), Some(r)) = (&self.limiter, reservation) {
                    limiter.release(r);
                }
                let rejection = Rejection::Sink(e);
                self.metrics
                    .add_rejected(self.protocol, rejection.reject_reason(), count);
                self.refused(&rejection);
                return Err(rejection);
            }
            self.metrics.add_accepted(self.protocol, count);
        }
        let outcome = if report.rejected_spans > 0 {
            Outcome::PartialSuccess
        } else {
            Outcome::Ok
        };
        self.metrics.request(self.protocol, outcome);
        Ok(report)
    }
}

fn log_rejection(protocol: Protocol, rejection: &Rejection) {
    match rejection {
        Rejection::Sink(clew_model::SinkError::Internal(_)) | Rejection::Misconfigured(_) => {
            tracing::warn!(
                protocol = protocol.as_str(),
                "request refused: {}",
                rejection.message()
            )
        }
        _ => tracing::debug!(
            protocol = protocol.as_str(),
            "request refused: {}",
            rejection.message()
        ),
    }
}
