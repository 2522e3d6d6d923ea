//! # clew-doctor — the doctor room
//!
//! Finds what silently breaks traces: orphaned spans, context lost between or inside services,
//! clock skew; computes the critical path; and keeps the service graph and RED metrics, fed from
//! every span before any sampling decision.
//!
//! May depend on: `clew-model`, `clew-pipeline`'s `Processor` trait, `clew-store`'s read API
//! (`TraceReader`). Must not write to the store.
//!
//! * [`analyze_trace`]: one trace → warnings by span, skew adjustments, critical path, self
//!   times, per-service contributions.
//! * [`analyze_window`]: many traces → aggregated [`Finding`]s.
//! * [`ServiceGraph`]: the ingest-path processor (service graph + span metrics).
//! * [`router`]: `/api/doctor/findings`, `/api/doctor/traces/{id}`, `/api/doctor/service-graph`.
//! * [`metrics_router`]: Jaeger's SPM API (`/api/metrics/...`, the Monitor page) over the
//!   per-minute [`SpanMetricsTable`] that [`ServiceGraph`] feeds.

mod analysis;
mod findings;
mod graph;
mod http;
mod model;
mod spanmetrics;

pub use analysis::{
    analyze_trace, CriticalPathSegment, OrphanSpan, ServiceContribution, SkewEvent, TraceAnalysis,
    TraceOptions,
};
pub use findings::{analyze_window, Finding, FindingKind, WindowOptions, WindowReport};
pub use graph::{
    adjusted_count, global_edge_table, graph_from_traces, parse_threshold, EdgeTable, GraphEdge,
    GraphJson, GraphNode, ServiceGraph, ServiceGraphConfig, WeightedHistogram, LATENCY_BUCKETS,
    MAX_SPANMETRICS_SERIES, OVERFLOW_SPAN_NAME,
};
pub use http::{collect_window_traces, tenant_from_headers, DEFAULT_TRACE_LIMIT, MAX_TRACE_LIMIT};
pub use model::kind_name;
pub use spanmetrics::{
    global_span_metrics_table, parse_metrics_query, KindSet, Measure, MetricSeries, MetricsQuery,
    SpanMetricsTable, SpanTableLimits,
};

use clew_store::TraceReader;
use std::sync::Arc;

/// HTTP API for the UI under `/api/doctor/...`; tenant from `tenant_header`. The service graph
/// is served from the process-wide edge table that [`ServiceGraph::new`] feeds, or computed from
/// stored traces when that table does not cover the requested window.
pub fn router(reader: Arc<dyn TraceReader>, tenant_header: &str) -> axum::Router {
    http::router(reader, tenant_header)
}

/// [`router`] with an explicit edge table (e.g. [`ServiceGraph::graph_handle`]).
pub fn router_with_graph(
    reader: Arc<dyn TraceReader>,
    tenant_header: &str,
    table: Arc<EdgeTable>,
) -> axum::Router {
    http::router_with_table(reader, tenant_header, table)
}

/// Jaeger's span-metrics (SPM) API: `/api/metrics/{calls,errors,latencies,minstep,services}`,
/// served from the process-wide [`SpanMetricsTable`] that [`ServiceGraph::new`] feeds.
pub fn metrics_router(tenant_header: &str) -> axum::Router {
    spanmetrics::router(tenant_header, global_span_metrics_table())
}

/// [`metrics_router`] with an explicit table.
pub fn metrics_router_with_table(
    tenant_header: &str,
    table: Arc<SpanMetricsTable>,
) -> axum::Router {
    spanmetrics::router(tenant_header, table)
}

pub(crate) fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
