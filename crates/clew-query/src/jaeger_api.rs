//! The Jaeger query HTTP API (`/api/...`) that the Jaeger UI and Grafana's Jaeger data source
//! speak: routes, parameter parsing, and the `{data, total, limit, offset, errors}` envelope.

use crate::common::{fetch_traces, now_unix_nanos, ApiError, AppState, MAX_TRACES_PER_SEARCH};
use crate::jaeger_json::{span_kind_name, to_jaeger_trace_with_warnings, Trace};
use crate::params::{self, ParamError, QueryParams};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clew_store::SearchQuery;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Dependencies default window, as in Jaeger.
const DEFAULT_DEPENDENCY_LOOKBACK_NANOS: u64 = 24 * 3600 * 1_000_000_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{id}", get(get_trace))
        .route("/api/ui/traces/{id}", get(get_ui_trace))
        .route("/api/dependencies", get(dependencies))
}

#[derive(Debug, Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<StructuredError>>,
}

#[derive(Debug, Serialize)]
struct StructuredError {
    code: u16,
    msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

fn ok<T: Serialize>(data: T, total: usize) -> Json<Envelope<T>> {
    Json(Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors: None,
    })
}

/// An [`ApiError`] rendered as Jaeger does: envelope with `data: null` and one error.
pub(crate) struct JaegerError(ApiError);

impl From<ApiError> for JaegerError {
    fn from(e: ApiError) -> Self {
        JaegerError(e)
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.status();
        let body: Envelope<Option<()>> = Envelope {
            data: None,
            total: 0,
            limit: 0,
            offset: 0,
            errors: Some(vec![StructuredError {
                code: status.as_u16(),
                msg: self.0.to_string(),
                trace_id: None,
            }]),
        };
        (status, Json(body)).into_response()
    }
}

type JResult<T> = Result<Json<Envelope<T>>, JaegerError>;

/// Jaeger's wording for a parameter that failed to parse.
fn bad_param(name: &str, e: ParamError) -> ApiError {
    ApiError::BadRequest(format!("unable to parse param '{name}': {e}"))
}

async fn services(State(st): State<AppState>, headers: HeaderMap) -> JResult<Vec<String>> {
    let tenant = st.tenant(&headers)?;
    let services = st.reader.services(&tenant).await.map_err(ApiError::from)?;
    let n = services.len();
    Ok(ok(services, n))
}

/// Legacy `/api/services/{service}/operations`: distinct names of every kind.
async fn service_operations(
    State(st): State<AppState>,
    headers: HeaderMap,
    service: Result<Path<String>, PathRejection>,
) -> JResult<Vec<String>> {
    let tenant = st.tenant(&headers)?;
    let Path(service) = service
        .map_err(|e| ApiError::BadRequest(format!("unable to parse param 'service': {e}")))?;
    let ops = st
        .reader
        .operations(&tenant, Some(&service))
        .await
        .map_err(ApiError::from)?;
    let names: Vec<String> = ops
        .into_iter()
        .map(|o| o.name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = names.len();
    Ok(ok(names, n))
}

#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct OperationJson {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: String,
}

async fn operations(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> JResult<Vec<OperationJson>> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());
    let service = q
        .get("service")
        .ok_or_else(|| ApiError::BadRequest("parameter 'service' is required".into()))?;
    let kind_filter = q.get("spanKind");
    let ops = st
        .reader
        .operations(&tenant, Some(service))
        .await
        .map_err(ApiError::from)?;
    let data: Vec<OperationJson> = ops
        .into_iter()
        .map(|o| OperationJson {
            name: o.name,
            span_kind: span_kind_name(o.span_kind).unwrap_or("").to_string(),
        })
        .filter(|o| kind_filter.is_none_or(|k| o.span_kind == k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = data.len();
    Ok(ok(data, n))
}

/// Builds the store query from `/api/traces` parameters (`service`, `operation`, `tag`, `tags`,
/// `minDuration`, `maxDuration`, `start`, `end`, `lookback`, `limit`). `now` is the current time in
/// Unix nanoseconds, used when `end` is absent and `lookback` is given. A bad parameter is
/// [`ApiError::BadRequest`] naming it.
pub fn parse_search(q: &QueryParams, now: u64) -> Result<SearchQuery, ApiError> {
    let mut query = SearchQuery {
        service: q.get("service").map(str::to_string),
        operation: q.get("operation").map(str::to_string),
        ..Default::default()
    };
    for tag in q.all("tag") {
        let pair = params::parse_tag(tag)
            .map_err(|e| ApiError::BadRequest(format!("malformed 'tag' parameter: {e}")))?;
        params::merge_attributes(&mut query.attributes, vec![pair]);
    }
    for tags in q.all("tags") {
        let pairs = params::parse_tags_json(tags)
            .map_err(|e| ApiError::BadRequest(format!("malformed 'tags' parameter: {e}")))?;
        params::merge_attributes(&mut query.attributes, pairs);
    }
    let duration = |name: &str| {
        q.get(name)
            .map(|v| params::parse_duration_nanos(v).map_err(|e| bad_param(name, e)))
            .transpose()
    };
    query.min_duration_nanos = duration("minDuration")?;
    query.max_duration_nanos = duration("maxDuration")?;
    if let (Some(min), Some(max)) = (query.min_duration_nanos, query.max_duration_nanos) {
        if max < min {
            return Err(ApiError::BadRequest(
                "'maxDuration' should be greater than 'minDuration'".into(),
            ));
        }
    }
    let micros = |name: &str| {
        q.get(name)
            .map(|v| params::parse_epoch_micros(v).map_err(|e| bad_param(name, e)))
            .transpose()
    };
    query.end_unix_nano = micros("end")?;
    query.start_unix_nano = match micros("start")? {
        Some(start) => Some(start),
        // The UI sends `lookback` next to `start`/`end` (even `lookback=custom`); it only matters
        // when `start` is missing.
        None => match q.get("lookback") {
            Some(lb) => {
                let lookback =
                    params::parse_duration_nanos(lb).map_err(|e| bad_param("lookback", e))?;
                Some(query.end_unix_nano.unwrap_or(now).saturating_sub(lookback))
            }
            None => None,
        },
    };
    if let (Some(start), Some(end)) = (query.start_unix_nano, query.end_unix_nano) {
        if end < start {
            return Err(ApiError::BadRequest(
                "'end' should not be before 'start'".into(),
            ));
        }
    }
    if let Some(limit) = q.get("limit") {
        let limit = params::parse_u64(limit).map_err(|e| bad_param("limit", e))?;
        query.limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(MAX_TRACES_PER_SEARCH);
    }
    Ok(query)
}

async fn search(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> JResult<Vec<Trace>> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());

    let ids: Vec<&str> = q.all("traceID").collect();
    if !ids.is_empty() {
        // Multi-get: unknown ids are reported in `errors`, found traces in `data`, status 200.
        let parsed = ids
            .iter()
            .map(|id| params::parse_trace_id(id).map_err(|e| bad_param("traceID", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut data = Vec::new();
        let mut errors = Vec::new();
        for id in parsed {
            let spans = st.reader.trace(&tenant, id).await.map_err(ApiError::from)?;
            match to_jaeger_trace_with_warnings(&spans) {
                Some(trace) => data.push(trace),
                None => errors.push(StructuredError {
                    code: 404,
                    msg: "trace not found".into(),
                    trace_id: Some(id.to_hex()),
                }),
            }
        }
        let n = data.len();
        let errors = (!errors.is_empty()).then_some(errors);
        return Ok(Json(Envelope {
            data,
            total: n,
            limit: 0,
            offset: 0,
            errors,
        }));
    }

    let query = parse_search(&q, now_unix_nanos())?;
    let hits = st
        .reader
        .search(&tenant, &query)
        .await
        .map_err(ApiError::from)?;
    let hits = hits
        .into_iter()
        .take(query.effective_limit())
        .map(|h| h.trace_id);
    let traces = fetch_traces(st.reader.as_ref(), &tenant, hits)
        .await
        .map_err(ApiError::from)?;
    let data: Vec<Trace> = traces
        .iter()
        .filter_map(|spans| to_jaeger_trace_with_warnings(spans))
        .collect();
    let n = data.len();
    Ok(ok(data, n))
}

async fn get_trace(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> JResult<Vec<Trace>> {
    let tenant = st.tenant(&headers)?;
    let Path(id) =
        id.map_err(|e| ApiError::BadRequest(format!("unable to parse param 'traceID': {e}")))?;
    let id = params::parse_trace_id(&id).map_err(|e| bad_param("traceID", e))?;
    let spans = st.reader.trace(&tenant, id).await.map_err(ApiError::from)?;
    let trace = to_jaeger_trace_with_warnings(&spans)
        .ok_or_else(|| ApiError::NotFound("trace not found".into()))?;
    Ok(ok(vec![trace], 1))
}

/// The trace in the web UI's compact shape ([`crate::ui_json`]); errors as the Jaeger API's.
async fn get_ui_trace(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, JaegerError> {
    let tenant = st.tenant(&headers)?;
    let Path(id) =
        id.map_err(|e| ApiError::BadRequest(format!("unable to parse param 'traceID': {e}")))?;
    let id = params::parse_trace_id(&id).map_err(|e| bad_param("traceID", e))?;
    let spans = st.reader.trace(&tenant, id).await.map_err(ApiError::from)?;
    let trace = to_jaeger_trace_with_warnings(&spans)
        .ok_or_else(|| ApiError::NotFound("trace not found".into()))?;
    drop(spans);
    let body = crate::ui_json::to_ui_json(&trace);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct DependencyJson {
    parent: String,
    child: String,
    #[serde(rename = "callCount")]
    call_count: u64,
}

/// `lookback` of `/api/dependencies`, in nanoseconds: an integer of milliseconds in Jaeger; a Go
/// duration is accepted too since that is what people type.
pub fn parse_lookback_millis_or_duration(text: &str) -> Result<u64, ParamError> {
    match params::parse_u64(text) {
        Ok(ms) => ms
            .checked_mul(1_000_000)
            .ok_or(ParamError::Integer(text.chars().take(64).collect())),
        Err(_) => params::parse_duration_nanos(text),
    }
}

async fn dependencies(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> JResult<Vec<DependencyJson>> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());
    let end = match q.get("endTs") {
        Some(v) => params::parse_epoch_millis(v).map_err(|e| bad_param("endTs", e))?,
        None => now_unix_nanos(),
    };
    let lookback = match q.get("lookback") {
        Some(v) => parse_lookback_millis_or_duration(v).map_err(|e| bad_param("lookback", e))?,
        None => DEFAULT_DEPENDENCY_LOOKBACK_NANOS,
    };
    let service = q.get("service");
    let links = st
        .reader
        .dependencies(&tenant, end.saturating_sub(lookback), end)
        .await
        .map_err(ApiError::from)?;
    // Merge duplicate edges (the store may report one per block) and order them stably.
    let mut merged: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in links {
        if service.is_some_and(|s| l.parent != s && l.child != s) {
            continue;
        }
        let count = merged.entry((l.parent, l.child)).or_default();
        *count = count.saturating_add(l.call_count);
    }
    let data: Vec<DependencyJson> = merged
        .into_iter()
        .map(|((parent, child), call_count)| DependencyJson {
            parent,
            child,
            call_count,
        })
        .collect();
    let n = data.len();
    Ok(ok(data, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(qs: &str) -> Result<SearchQuery, ApiError> {
        parse_search(&QueryParams::parse(Some(qs)), 10_000_000_000_000)
    }

    fn bad(qs: &str) -> String {
        match parse(qs) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{qs}: expected bad request, got {other:?}"),
        }
    }

    #[test]
    fn search_params() {
        let q = parse(
            "service=cart&operation=GET%20%2F&tag=http.status_code:500&tags=%7B%22error%22%3A%22true%22%7D\
             &minDuration=1.5ms&maxDuration=1s&start=1000&end=2000&limit=5&lookback=custom",
        )
        .expect("valid");
        assert_eq!(
            q,
            SearchQuery {
                service: Some("cart".into()),
                operation: Some("GET /".into()),
                attributes: vec![
                    ("http.status_code".into(), "500".into()),
                    ("error".into(), "true".into())
                ],
                min_duration_nanos: Some(1_500_000),
                max_duration_nanos: Some(1_000_000_000),
                start_unix_nano: Some(1_000_000),
                end_unix_nano: Some(2_000_000),
                limit: 5,
                conditions: vec![],
            }
        );
        assert_eq!(parse("").expect("empty is fine"), SearchQuery::default());
        let lb = parse("lookback=1h").expect("lookback");
        assert_eq!(
            lb.start_unix_nano,
            Some(10_000_000_000_000 - 3_600_000_000_000)
        );
        assert_eq!(lb.end_unix_nano, None);
        let lb = parse("lookback=1s&end=5000000").expect("lookback with end");
        assert_eq!(lb.start_unix_nano, Some(4_000_000_000));
        assert_eq!(
            parse("limit=999999999999").expect("clamped").limit,
            MAX_TRACES_PER_SEARCH
        );
        assert_eq!(
            parse("limit=0").expect("zero = default").effective_limit(),
            20
        );
    }

    #[test]
    fn search_param_errors_name_the_parameter() {
        assert!(bad("minDuration=fast").contains("'minDuration'"));
        assert!(bad("maxDuration=-1s").contains("'maxDuration'"));
        assert!(bad("minDuration=2s&maxDuration=1s").contains("'maxDuration' should be greater"));
        assert!(bad("start=yesterday").contains("'start'"));
        assert!(bad("end=-5").contains("'end'"));
        assert!(bad("start=10&end=5").contains("'end'"));
        assert!(bad("limit=ten").contains("'limit'"));
        assert!(bad("lookback=custom").contains("'lookback'"));
        assert!(bad("tag=novalue").contains("'tag'"));
        assert!(bad("tags=%5B%5D").contains("'tags'"));
        assert!(bad("tags=%7Bbroken").contains("'tags'"));
    }

    #[test]
    fn dependency_lookback_forms() {
        assert_eq!(
            parse_lookback_millis_or_duration("86400000"),
            Ok(86_400_000_000_000)
        );
        assert_eq!(
            parse_lookback_millis_or_duration("1h"),
            Ok(3_600_000_000_000)
        );
        assert!(parse_lookback_millis_or_duration("soon").is_err());
        assert!(parse_lookback_millis_or_duration("99999999999999999").is_err());
    }
}
