//! Retention: how long each tenant's spans are kept, and which blocks have outlived it.
//!
//! Data goes away as whole blocks (a block holds one tenant's spans of one UTC day): a block is
//! deleted once its newest span is older than the tenant's retention. Until then, reads hide the
//! spans that already expired ([`Cutoff`]), so no query returns expired data between expiry and
//! deletion; the head and the WAL refuse and drop spans older than the retention.

use crate::metrics::TenantLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Tempo's `block_retention` default is 14 days; so is Clew's.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// Per-tenant retention, e.g. backed by the live-reloaded overrides file.
pub trait RetentionPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// The tenant's retention, or `None` for the store's default.
    fn retention(&self, tenant: &str) -> Option<Duration>;
}

/// Receives what the store did to data on its own (retention deletions, erasures): the server
/// writes these into the audit log. The store does not know the log.
pub trait StoreEvents: Send + Sync + std::fmt::Debug + 'static {
    fn record(&self, action: &str, tenant: Option<&str>, details: serde_json::Value);
}

/// Retention's counters, per tenant.
#[derive(Clone, Default)]
pub struct RetentionMetrics {
    deleted_blocks: Family<TenantLabel, Counter>,
    deleted_bytes: Family<TenantLabel, Counter>,
    deleted_spans: Family<TenantLabel, Counter>,
    refused_spans: Family<TenantLabel, Counter>,
}

impl std::fmt::Debug for RetentionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetentionMetrics")
    }
}

fn label(tenant: &str) -> TenantLabel {
    TenantLabel {
        tenant: tenant.to_string(),
    }
}

impl RetentionMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_retention_deleted_blocks",
            "Blocks deleted because their spans outlived the tenant's retention",
            self.deleted_blocks.clone(),
        );
        r.register(
            "clew_retention_deleted_bytes",
            "Bytes of blocks deleted by retention",
            self.deleted_bytes.clone(),
        );
        r.register(
            "clew_retention_deleted_spans",
            "Spans in blocks deleted by retention",
            self.deleted_spans.clone(),
        );
        r.register(
            "clew_retention_refused_spans",
            "Spans not stored because they were already older than the tenant's retention when they arrived",
            self.refused_spans.clone(),
        );
    }

    pub fn block_deleted(&self, tenant: &str, bytes: u64, spans: u64) {
        let l = label(tenant);
        self.deleted_blocks.get_or_create(&l).inc();
        self.deleted_bytes.get_or_create(&l).inc_by(bytes);
        self.deleted_spans.get_or_create(&l).inc_by(spans);
    }

    pub fn refused(&self, tenant: &str, spans: u64) {
        self.refused_spans
            .get_or_create(&label(tenant))
            .inc_by(spans);
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_blocks: usize,
    pub deleted_bytes: u64,
    pub deleted_spans: u64,
    /// Expired blocks kept because of a legal hold (on the tenant or on a trace they may hold).
    pub held_blocks: usize,
}

/// Removes spans that started before `cutoff` from a batch; returns how many were removed.
pub fn drop_expired(batch: &mut clew_model::SpanBatch, cutoff: u64) -> usize {
    let mut dropped = 0;
    for rs in &mut batch.resource_spans {
        for ss in &mut rs.scope_spans {
            let before = ss.spans.len();
            ss.spans.retain(|s| s.start_time_unix_nano >= cutoff);
            dropped += before - ss.spans.len();
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    batch.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
    use clew_model::{SpanBatch, Tenant};

    #[test]
    fn drop_expired_keeps_spans_at_or_after_the_cutoff() {
        let span = |t| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: t,
            ..Default::default()
        };
        let mut b = SpanBatch::new(
            Tenant::new("t").unwrap(),
            vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(5), span(10), span(11)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(1)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        );
        assert_eq!(drop_expired(&mut b, 10), 2);
        assert_eq!(b.span_count(), 2);
        assert_eq!(b.resource_spans.len(), 1, "an emptied resource is removed");
    }
}
