//! # clew-traceql — the TraceQL room
//!
//! TraceQL, the query language of Grafana Tempo, as Clew's own search language: a parser whose
//! errors point at the position and say what was expected, the evaluation of a query over a whole
//! trace, and [`search`] over any [`TraceReader`] with span predicates pushed down into the store's
//! [`SearchQuery`] conditions.
//!
//! May depend on: `clew-model`, `clew-store`'s read API. Must not depend on HTTP, receivers or
//! writing to the store: the query room (Tempo API, UI, CLI) calls it.

use clew_model::{SpanId, Tenant, TraceId};
use clew_store::{StoreError, TagValue, TraceReader};

/// One TraceQL search, as the Tempo API's `/api/search` asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchRequest {
    /// The TraceQL query (`{}` matches every trace).
    pub query: String,
    /// Span start time range, inclusive, Unix nanoseconds.
    pub start_unix_nano: Option<u64>,
    pub end_unix_nano: Option<u64>,
    /// Maximum number of traces (Tempo's `limit`, default 20).
    pub limit: usize,
    /// Spans returned per spanset (Tempo's `spss`, default 3); `matched` still counts them all.
    pub spans_per_spanset: usize,
}

/// What a search found, newest traces first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchResult {
    pub traces: Vec<TraceMatch>,
    /// Traces and spans looked at (Tempo's `metrics.inspectedTraces` / `inspectedSpans`).
    pub inspected_traces: u64,
    pub inspected_spans: u64,
}

/// One matching trace, in the shape of Tempo's search response.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceMatch {
    pub trace_id: TraceId,
    /// `<root span not yet received>` when the trace has no root span, as Tempo says.
    pub root_service_name: String,
    pub root_trace_name: String,
    pub start_unix_nano: u64,
    pub duration_ms: u64,
    pub span_sets: Vec<MatchedSpanSet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpanSet {
    /// At most `spans_per_spanset` spans.
    pub spans: Vec<MatchedSpan>,
    /// How many spans the spanset has in all.
    pub matched: usize,
    /// Results of `by()` and aggregates (`count()` …), e.g. `("by(resource.service.name)", "cart")`.
    pub attributes: Vec<(String, TagValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpan {
    pub span_id: SpanId,
    pub name: String,
    pub start_unix_nano: u64,
    pub duration_nanos: u64,
    /// The attributes the query looked at or `select()`ed, e.g. `("span.http.method", "GET")`.
    pub attributes: Vec<(String, TagValue)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceqlError {
    /// The query does not parse: the message names the position and what was expected. HTTP 400.
    #[error("{0}")]
    Parse(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a TraceQL search over `reader`.
pub async fn search(
    _reader: &dyn TraceReader,
    _tenant: &Tenant,
    req: &SearchRequest,
) -> Result<SearchResult, TraceqlError> {
    // Placeholder until the parser lands: every query is refused as unparseable.
    Err(TraceqlError::Parse(format!(
        "TraceQL is not implemented yet (query {:?})",
        req.query
    )))
}
