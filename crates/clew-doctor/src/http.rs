//! `/api/doctor/...`: findings over a window, one trace's analysis, and the service graph.

use crate::analysis::{analyze_trace, TraceOptions};
use crate::findings::{analyze_window, WindowOptions};
use crate::graph::{global_edge_table, graph_from_traces, EdgeTable};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clew_model::{FlatSpan, Tenant, TraceId};
use clew_store::{SearchQuery, TraceReader};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Default and maximum number of traces a window analysis fetches.
pub const DEFAULT_TRACE_LIMIT: usize = 2_000;
pub const MAX_TRACE_LIMIT: usize = 20_000;

#[derive(Clone)]
struct DoctorState {
    reader: Arc<dyn TraceReader>,
    tenant_header: Arc<str>,
    table: Arc<EdgeTable>,
}

pub(crate) fn router_with_table(
    reader: Arc<dyn TraceReader>,
    tenant_header: &str,
    table: Arc<EdgeTable>,
) -> Router {
    Router::new()
        .route("/api/doctor/findings", get(findings))
        .route("/api/doctor/traces/{id}", get(trace))
        .route("/api/doctor/service-graph", get(service_graph))
        .with_state(DoctorState {
            reader,
            tenant_header: Arc::from(tenant_header),
            table,
        })
}

pub(crate) fn router(reader: Arc<dyn TraceReader>, tenant_header: &str) -> Router {
    router_with_table(reader, tenant_header, global_edge_table())
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(error = %self.1, "doctor API error");
        }
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The tenant of a request: absent header = default tenant; present but unusable = error (so a
/// misconfigured proxy cannot read another tenant's data by accident).
pub fn tenant_from_headers(headers: &HeaderMap, header: &str) -> Result<Tenant, String> {
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(Tenant::default());
    };
    if values.next().is_some() {
        return Err(format!("tenant header {header} was sent more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| format!("tenant header {header} is not valid UTF-8"))?;
    Tenant::new(text.trim()).map_err(|e| format!("invalid tenant header {header}: {e}"))
}

fn tenant(st: &DoctorState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    tenant_from_headers(headers, &st.tenant_header).map_err(bad)
}

fn parse_duration(name: &str, v: &str) -> Result<u64, ApiError> {
    let d = humantime::parse_duration(v.trim())
        .map_err(|e| bad(format!("unable to parse param '{name}': {e}")))?;
    u64::try_from(d.as_nanos()).map_err(|_| bad(format!("param '{name}' is too large")))
}

fn parse_micros(name: &str, v: &str) -> Result<u64, ApiError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .and_then(|m| m.checked_mul(1_000))
        .ok_or_else(|| {
            bad(format!(
                "unable to parse param '{name}': expected Unix microseconds"
            ))
        })
}

/// `[start, end]` in Unix nanos from `start`/`end` (micros) or `since` (duration back from end).
fn window(
    q: &HashMap<String, String>,
    now: u64,
    default_since: u64,
) -> Result<(u64, u64), ApiError> {
    let end = match q.get("end") {
        Some(v) => parse_micros("end", v)?,
        None => now,
    };
    let start = match (q.get("start"), q.get("since")) {
        (Some(v), _) => parse_micros("start", v)?,
        (None, Some(v)) => end.saturating_sub(parse_duration("since", v)?),
        (None, None) => end.saturating_sub(default_since),
    };
    if end < start {
        return Err(bad("'end' should not be before 'start'"));
    }
    Ok((start, end))
}

fn limit(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_TRACE_LIMIT),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(|l| {
                if l == 0 {
                    DEFAULT_TRACE_LIMIT
                } else {
                    l.min(MAX_TRACE_LIMIT)
                }
            })
            .map_err(|_| bad("unable to parse param 'limit': expected a number of traces")),
    }
}

/// How many traces one slice of a window analysis takes: large enough that a client trace and
/// the trace its lost context started (a few ms apart) usually land in the same slice.
const TRACES_PER_SLICE: usize = 40;
const MAX_SLICES: usize = 64;

/// Fetches up to `limit` traces spread over `[start, end]`. When the window holds more than that,
/// it is cut into equal slices and each contributes its newest traces (taking only the newest of
/// the whole window would, under steady load, examine the last seconds and nothing older); the
/// share that quiet slices leave unused goes to the busy ones in a second pass. Also returns the
/// estimated number of traces in the window.
pub async fn collect_window_traces(
    reader: &dyn TraceReader,
    tenant: &Tenant,
    start: u64,
    end: u64,
    limit: usize,
) -> Result<(Vec<Vec<FlatSpan>>, u64), clew_store::StoreError> {
    let in_window = reader.estimate_trace_count(tenant, start, end).await?;
    let hits = if in_window <= limit as u64 {
        search_range(reader, tenant, (start, end), limit).await?
    } else {
        spread_search(reader, tenant, start, end, limit).await?
    };
    let traces = futures::stream::iter(hits.into_iter().map(|id| reader.trace(tenant, id)))
        .buffered(4)
        .try_filter(|t| std::future::ready(!t.is_empty()))
        .try_collect()
        .await?;
    Ok((traces, in_window))
}

async fn search_range(
    reader: &dyn TraceReader,
    tenant: &Tenant,
    (lo, hi): (u64, u64),
    limit: usize,
) -> Result<Vec<TraceId>, clew_store::StoreError> {
    let q = SearchQuery {
        start_unix_nano: Some(lo),
        end_unix_nano: Some(hi),
        limit,
        ..Default::default()
    };
    Ok(reader
        .search(tenant, &q)
        .await?
        .into_iter()
        .map(|h| h.trace_id)
        .collect())
}

async fn spread_search(
    reader: &dyn TraceReader,
    tenant: &Tenant,
    start: u64,
    end: u64,
    limit: usize,
) -> Result<Vec<TraceId>, clew_store::StoreError> {
    let slices = (limit / TRACES_PER_SLICE).clamp(1, MAX_SLICES);
    let per_slice = limit.div_ceil(slices);
    let width = (end - start) / slices as u64;
    let ranges: Vec<(u64, u64)> = (0..slices as u64)
        .map(|i| {
            let lo = start + i * width;
            let hi = if i + 1 == slices as u64 {
                end
            } else {
                lo + width.saturating_sub(1)
            };
            (lo, hi)
        })
        .collect();
    // One slice at a time: each search already scans its blocks on every core.
    let mut found: Vec<Vec<TraceId>> = Vec::with_capacity(slices);
    for &r in &ranges {
        found.push(search_range(reader, tenant, r, per_slice).await?);
    }
    // Second pass: slices that filled their share get what the others left.
    let used: usize = found.iter().map(Vec::len).sum();
    let full: Vec<usize> = (0..slices)
        .filter(|&i| found[i].len() >= per_slice)
        .collect();
    if !full.is_empty() && used < limit {
        let more = per_slice + (limit - used) / full.len();
        for i in full {
            found[i] = search_range(reader, tenant, ranges[i], more).await?;
        }
    }
    let mut seen = std::collections::HashSet::new();
    Ok(found
        .into_iter()
        .flatten()
        .filter(|id| seen.insert(*id))
        .take(limit)
        .collect())
}

async fn findings(
    State(st): State<DoctorState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let now = crate::now_unix_nanos();
    let (start, end) = window(&q, now, 3_600_000_000_000)?;
    let limit = limit(&q)?;
    let mut opts = WindowOptions::new(now);
    if let Some(g) = q.get("grace") {
        opts.grace_nanos = parse_duration("grace", g)?;
    }
    if let Some(t) = q.get("skew_tolerance") {
        opts.trace.skew_tolerance_nanos = parse_duration("skew_tolerance", t)?;
    }
    // Traces that may still be receiving spans are not judged, so the window ends at the horizon.
    let end = end.min(opts.horizon());
    let start = start.min(end);
    opts.window = Some((start, end));
    let (traces, in_window) = collect_window_traces(st.reader.as_ref(), &tenant, start, end, limit)
        .await
        .map_err(internal)?;
    let mut report = analyze_window(&traces, &opts);
    report.set_traces_in_window(in_window);
    Ok(Json(report).into_response())
}

async fn trace(
    State(st): State<DoctorState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let id = TraceId::from_hex(id.trim())
        .map_err(|e| bad(format!("unable to parse param 'traceID': {e}")))?;
    let mut opts = TraceOptions::default();
    if let Some(t) = q.get("skew_tolerance") {
        opts.skew_tolerance_nanos = parse_duration("skew_tolerance", t)?;
    }
    let spans = st.reader.trace(&tenant, id).await.map_err(internal)?;
    if spans.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, "trace not found".into()));
    }
    Ok(Json(analyze_trace(&spans, &opts)).into_response())
}

async fn service_graph(
    State(st): State<DoctorState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let now = crate::now_unix_nanos();
    let (start, end) = window(&q, now, 3_600_000_000_000)?;
    let (graph, source) = if st.table.covers(start) {
        (st.table.graph(tenant.as_str(), start, end), "live")
    } else {
        let (traces, _) =
            collect_window_traces(st.reader.as_ref(), &tenant, start, end, limit(&q)?)
                .await
                .map_err(internal)?;
        (graph_from_traces(&traces), "traces")
    };
    Ok(([("x-clew-graph-source", source)], Json(graph)).into_response())
}
