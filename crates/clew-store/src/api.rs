//! The store's read interface, as the query room sees it.

use crate::StoreError;
use clew_model::{FlatSpan, Tenant, TraceId};
// The typed search vocabulary lives in the model so the TraceQL parser needs no storage crate.
pub use clew_model::query::{AttrScope, CompareOp, SpanCondition, SpanField, TagValue};

/// A search, in Jaeger's sense: traces having at least one span that matches every condition.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchQuery {
    /// `service.name` of the matching span's resource.
    pub service: Option<String>,
    /// Span name.
    pub operation: Option<String>,
    /// Equality on span or resource attributes, compared on the text form
    /// (`clew_model::attrs::to_text`). All must hold on the same span.
    pub attributes: Vec<(String, String)>,
    pub min_duration_nanos: Option<u64>,
    pub max_duration_nanos: Option<u64>,
    /// Span start time range, inclusive, in Unix nanoseconds.
    pub start_unix_nano: Option<u64>,
    pub end_unix_nano: Option<u64>,
    /// Maximum number of traces; 0 means the default (20).
    pub limit: usize,
    /// Typed conditions (TraceQL's spanset filters, pushed down): all must hold on the same span,
    /// together with the fields above. The store must never drop a span that satisfies them (no
    /// false negatives); callers that need exact trace-level answers (TraceQL) re-check the whole
    /// trace, so a store may evaluate a condition it cannot push down more loosely.
    pub conditions: Vec<SpanCondition>,
}

impl SearchQuery {
    pub const DEFAULT_LIMIT: usize = 20;
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT
        } else {
            self.limit
        }
    }
}

/// One matching trace: its id and the latest start time among its matching spans (results are
/// ordered newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHit {
    pub trace_id: TraceId,
    pub start_unix_nano: u64,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Operation {
    pub service: String,
    pub name: String,
    /// OTLP span kind number (0 unspecified … 5 consumer).
    pub span_kind: i32,
}

/// A call edge between two services: a span of `child` service whose parent span belongs to `parent`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

#[async_trait::async_trait]
pub trait TraceReader: Send + Sync + 'static {
    /// Every stored span of the trace, head and blocks, duplicates removed. Empty if unknown.
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError>;
    /// Trace ids whose spans match `query`, newest first, at most `query.effective_limit()`.
    async fn search(
        &self,
        tenant: &Tenant,
        query: &SearchQuery,
    ) -> Result<Vec<TraceHit>, StoreError>;
    /// About how many traces have a span that started in `[start, end]` (Unix nanoseconds): exact
    /// for the head, prorated by time for blocks that only partly overlap the range. Cheap (block
    /// metadata only), for reporting what share of a window an analysis looked at.
    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> Result<u64, StoreError>;
    /// Service names seen, sorted.
    async fn services(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError>;
    /// Operations seen, of one service or all, sorted.
    async fn operations(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError>;
    /// Service call edges among spans that started in the range (Unix nanoseconds).
    async fn dependencies(
        &self,
        tenant: &Tenant,
        start_unix_nano: u64,
        end_unix_nano: u64,
    ) -> Result<Vec<DependencyLink>, StoreError>;
    /// Attribute keys seen in `scope` (`Any` = span and resource), sorted, for spans in the
    /// optional time range (Unix nanoseconds). Tempo's tag-name endpoints and autocomplete.
    async fn tag_names(
        &self,
        _tenant: &Tenant,
        _scope: AttrScope,
        _range: Option<(u64, u64)>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Distinct values of one attribute key in `scope`, typed, at most `limit` (0 = no limit).
    async fn tag_values(
        &self,
        _tenant: &Tenant,
        _scope: AttrScope,
        _key: &str,
        _range: Option<(u64, u64)>,
        _limit: usize,
    ) -> Result<Vec<TagValue>, StoreError> {
        Ok(Vec::new())
    }
}
