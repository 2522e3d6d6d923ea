//! # clew-traceql — the TraceQL room
//!
//! TraceQL, the query language of Grafana Tempo, as Clew's own search language: a parser whose
//! errors point at the position and say what was expected, the evaluation of a query over a whole
//! trace, and [`search`] over any [`TraceReader`] with span predicates pushed down into the store's
//! [`SearchQuery`] conditions.
//!
//! Modules: [`mod@parse`] (lexer and recursive-descent parser, [`ParseError`] with line:column and
//! byte offset), [`ast`] (the tree and its canonical `Display`: `parse(&q.to_string()) == q`),
//! [`eval`] (the semantics over one trace's `&[FlatSpan]`), [`plan`] (the per-span conditions a
//! matching trace must satisfy, as store searches) and [`search`] (the loop tying them together).
//! `docs/traceql.md` is the user's reference for the supported subset.
//!
//! The language (parse, print, evaluate, plan) needs only `clew-model`; [`search`] over the store's
//! read API is the default feature `search` (off for the fuzz target, which then builds in
//! seconds instead of compiling the storage stack).
//!
//! May depend on: `clew-model`, `clew-store`'s read API. Must not depend on HTTP, receivers or
//! writing to the store: the query room (Tempo API, UI, CLI) calls it.

pub mod ast;
pub mod eval;
pub mod parse;
pub mod plan;

pub use ast::Query;
pub use eval::{Compiled, Spanset};
pub use parse::{parse, ParseError};

use clew_model::query::TagValue;
use clew_model::{FlatSpan, SpanId, TraceId};
#[cfg(feature = "search")]
use clew_store::StoreError;

#[cfg(feature = "search")]
mod search;
#[cfg(feature = "search")]
pub use search::search;

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

    #[cfg(feature = "search")]
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most traces one search fetches and evaluates. A query whose matches are rarer than the store's
/// pushed-down conditions can tell (or one the store cannot narrow at all, such as `{ }` over a
/// wide range with few matches) stops here and returns what it found so far.
pub const MAX_INSPECTED_TRACES: usize = 50_000;
/// Traces fetched from the store at the same time.
pub const FETCH_CONCURRENCY: usize = 8;
pub const DEFAULT_LIMIT: usize = 20;
pub const DEFAULT_SPANS_PER_SPANSET: usize = 3;
/// `rootServiceName` of a trace whose root span is not stored (yet), as Tempo says it.
pub const ROOT_SPAN_NOT_YET_RECEIVED: &str = "<root span not yet received>";

/// Parses and compiles a query; the error is the one the Tempo API returns with HTTP 400.
pub fn compile(query: &str) -> Result<Compiled, TraceqlError> {
    let q = parse(query).map_err(|e| TraceqlError::Parse(e.to_string()))?;
    Compiled::new(q).map_err(|e| TraceqlError::Parse(format!("invalid regular expression: {e}")))
}

/// Evaluates a query over one trace, for callers that already hold the spans.
pub fn matches(compiled: &Compiled, spans: &[FlatSpan]) -> bool {
    !compiled.evaluate(spans).is_empty()
}

fn span_id_of(bytes: &[u8]) -> SpanId {
    let mut id = [0u8; 8];
    let n = bytes.len().min(8);
    id[..n].copy_from_slice(&bytes[..n]);
    SpanId(id)
}

/// The Tempo-shaped summary of one matching trace.
pub fn trace_match(
    compiled: &Compiled,
    trace_id: TraceId,
    spans: &[FlatSpan],
    sets: &[Spanset],
    spans_per_spanset: usize,
) -> TraceMatch {
    let root = spans.iter().find(|s| s.span.parent_span_id.is_empty());
    let start = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.span.end_time_unix_nano)
        .max()
        .unwrap_or(start);
    let view = eval::TraceView::new(spans);
    let span_sets = sets
        .iter()
        .map(|set| {
            let mut ordered: Vec<usize> = set.spans.clone();
            ordered.sort_by_key(|&i| spans.get(i).map(|s| s.span.start_time_unix_nano));
            MatchedSpanSet {
                matched: set.spans.len(),
                attributes: set.attributes.clone(),
                spans: ordered
                    .into_iter()
                    .take(spans_per_spanset)
                    .filter_map(|i| {
                        let s = spans.get(i)?;
                        Some(MatchedSpan {
                            span_id: span_id_of(&s.span.span_id),
                            name: s.span.name.clone(),
                            start_unix_nano: s.span.start_time_unix_nano,
                            duration_nanos: s.duration_nanos(),
                            attributes: compiled.attributes_in(&view, i),
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    TraceMatch {
        trace_id,
        root_service_name: root
            .map(|r| r.service_name().to_string())
            .unwrap_or_else(|| ROOT_SPAN_NOT_YET_RECEIVED.to_string()),
        root_trace_name: root.map(|r| r.span.name.clone()).unwrap_or_default(),
        start_unix_nano: start,
        duration_ms: end.saturating_sub(start) / 1_000_000,
        span_sets,
    }
}
