//! Jaeger api_v3 over HTTP/JSON, in the shapes of Jaeger v2's HTTP gateway: traces as OTLP JSON
//! wrapped in `{"result": ...}`, errors as `{"error": {"httpCode", "message"}}`. Parameter names are
//! accepted in both spellings Jaeger v2 accepts: camelCase (`query.serviceName`) and the older
//! snake_case (`query.service_name`).

use crate::common::{fetch_traces, ApiError, AppState, MAX_TRACES_PER_SEARCH};
use crate::jaeger_json::span_kind_name;
use crate::params::{self, ParamError, QueryParams};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clew_model::otlp_json::encode_resource_spans;
use clew_model::{group_into_resource_spans, FlatSpan};
use clew_store::SearchQuery;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;

/// Jaeger v2's default `query.search_depth`.
const DEFAULT_SEARCH_DEPTH: usize = 100;

const SERVICE_NAME: [&str; 2] = ["query.serviceName", "query.service_name"];
const OPERATION_NAME: [&str; 2] = ["query.operationName", "query.operation_name"];
const TIME_MIN: [&str; 2] = ["query.startTimeMin", "query.start_time_min"];
const TIME_MAX: [&str; 2] = ["query.startTimeMax", "query.start_time_max"];
const SEARCH_DEPTH: [&str; 3] = [
    "query.searchDepth",
    "query.search_depth",
    "query.num_traces",
];
const DURATION_MIN: [&str; 2] = ["query.durationMin", "query.duration_min"];
const DURATION_MAX: [&str; 2] = ["query.durationMax", "query.duration_max"];
const ATTRIBUTES: &str = "query.attributes";
const SPAN_KIND: [&str; 2] = ["spanKind", "span_kind"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v3/traces", get(find_traces))
        .route("/api/v3/traces/{trace_id}", get(get_trace))
        .route("/api/v3/services", get(services))
        .route("/api/v3/operations", get(operations))
}

/// An [`ApiError`] in the grpc-gateway error shape Jaeger v2 uses.
pub(crate) struct V3Error(ApiError);

impl From<ApiError> for V3Error {
    fn from(e: ApiError) -> Self {
        V3Error(e)
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.status();
        let body =
            json!({ "error": { "httpCode": status.as_u16(), "message": self.0.to_string() } });
        (status, Json(body)).into_response()
    }
}

fn malformed(name: &str, e: ParamError) -> ApiError {
    ApiError::BadRequest(format!("malformed parameter {name}: {e}"))
}

/// Traces as one OTLP `TracesData`, each trace's resources in turn (as Jaeger concatenates them).
/// An empty result is a 404, as in Jaeger v2.
fn traces_response(traces: Vec<Vec<FlatSpan>>) -> Result<Response, V3Error> {
    if traces.is_empty() {
        return Err(ApiError::NotFound("No traces found".into()).into());
    }
    let resource_spans: Vec<_> = traces
        .into_iter()
        .flat_map(group_into_resource_spans)
        .collect();
    Ok(Json(json!({ "result": encode_resource_spans(&resource_spans) })).into_response())
}

async fn get_trace(
    State(st): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, V3Error> {
    let tenant = st.tenant(&headers)?;
    let Path(id) =
        id.map_err(|e| ApiError::BadRequest(format!("malformed parameter trace_id: {e}")))?;
    let id = params::parse_trace_id(&id).map_err(|e| malformed("trace_id", e))?;
    let spans = st.reader.trace(&tenant, id).await.map_err(ApiError::from)?;
    traces_response(if spans.is_empty() {
        vec![]
    } else {
        vec![spans]
    })
}

/// Builds the store query from api_v3 `FindTraces` parameters.
pub(crate) fn parse_find(q: &QueryParams) -> Result<SearchQuery, ApiError> {
    let mut query = SearchQuery {
        service: q.get_any(&SERVICE_NAME).map(|(_, v)| v.to_string()),
        operation: q.get_any(&OPERATION_NAME).map(|(_, v)| v.to_string()),
        ..Default::default()
    };
    if let Some(attrs) = q.get(ATTRIBUTES) {
        query.attributes = params::parse_tags_json(attrs).map_err(|e| malformed(ATTRIBUTES, e))?;
    }
    let (Some((min_name, min)), Some((max_name, max))) =
        (q.get_any(&TIME_MIN), q.get_any(&TIME_MAX))
    else {
        return Err(ApiError::BadRequest(format!(
            "{} and {} are required",
            TIME_MIN[1], TIME_MAX[1]
        )));
    };
    let min = params::parse_rfc3339_nanos(min).map_err(|e| malformed(min_name, e))?;
    let max = params::parse_rfc3339_nanos(max).map_err(|e| malformed(max_name, e))?;
    if min >= max {
        return Err(ApiError::BadRequest(format!(
            "{min_name} must be before {max_name}"
        )));
    }
    query.start_unix_nano = Some(min);
    query.end_unix_nano = Some(max);
    query.limit = match q.get_any(&SEARCH_DEPTH) {
        Some((name, n)) => {
            let n = params::parse_u64(n).map_err(|e| malformed(name, e))?;
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(MAX_TRACES_PER_SEARCH)
        }
        None => DEFAULT_SEARCH_DEPTH,
    };
    let duration = |names: &[&'static str]| {
        q.get_any(names)
            .map(|(name, v)| params::parse_duration_nanos(v).map_err(|e| malformed(name, e)))
            .transpose()
    };
    query.min_duration_nanos = duration(&DURATION_MIN)?;
    query.max_duration_nanos = duration(&DURATION_MAX)?;
    Ok(query)
}

async fn find_traces(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, V3Error> {
    let tenant = st.tenant(&headers)?;
    let query = parse_find(&QueryParams::parse(raw.as_deref()))?;
    let hits = st
        .reader
        .search(&tenant, &query)
        .await
        .map_err(ApiError::from)?;
    let ids = hits
        .into_iter()
        .take(query.effective_limit())
        .map(|h| h.trace_id);
    let traces = fetch_traces(st.reader.as_ref(), &tenant, ids)
        .await
        .map_err(ApiError::from)?;
    traces_response(traces)
}

#[derive(Serialize)]
struct ServicesJson {
    services: Vec<String>,
}

async fn services(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ServicesJson>, V3Error> {
    let tenant = st.tenant(&headers)?;
    let services = st.reader.services(&tenant).await.map_err(ApiError::from)?;
    Ok(Json(ServicesJson { services }))
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct OperationJson {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: String,
}

#[derive(Serialize)]
struct OperationsJson {
    operations: Vec<OperationJson>,
}

async fn operations(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<OperationsJson>, V3Error> {
    let tenant = st.tenant(&headers)?;
    let q = QueryParams::parse(raw.as_deref());
    let service = q.get("service");
    let kind_filter = q.get_any(&SPAN_KIND).map(|(_, v)| v);
    let ops = st
        .reader
        .operations(&tenant, service)
        .await
        .map_err(ApiError::from)?;
    let operations = ops
        .into_iter()
        // Jaeger v2 reports an unspecified kind as "internal".
        .map(|o| OperationJson {
            name: o.name,
            span_kind: span_kind_name(o.span_kind)
                .unwrap_or("internal")
                .to_string(),
        })
        .filter(|o| kind_filter.is_none_or(|k| o.span_kind == k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Json(OperationsJson { operations }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(qs: &str) -> Result<SearchQuery, ApiError> {
        parse_find(&QueryParams::parse(Some(qs)))
    }

    fn bad(qs: &str) -> String {
        match parse(qs) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{qs}: expected bad request, got {other:?}"),
        }
    }

    const TIMES: &str =
        "query.start_time_min=2023-11-14T22:13:20Z&query.start_time_max=2023-11-14T22:13:21.5Z";

    #[test]
    fn find_params_both_spellings() {
        let snake = parse(&format!(
            "{TIMES}&query.service_name=cart&query.operation_name=get&query.duration_min=1ms&query.duration_max=1.5s\
             &query.search_depth=7&query.attributes=%7B%22k%22%3A%22v%22%7D"
        ))
        .expect("valid");
        assert_eq!(
            snake,
            SearchQuery {
                service: Some("cart".into()),
                operation: Some("get".into()),
                attributes: vec![("k".into(), "v".into())],
                min_duration_nanos: Some(1_000_000),
                max_duration_nanos: Some(1_500_000_000),
                start_unix_nano: Some(1_700_000_000_000_000_000),
                end_unix_nano: Some(1_700_000_001_500_000_000),
                limit: 7,
                conditions: vec![],
            }
        );
        let camel = parse(
            "query.startTimeMin=2023-11-14T22:13:20Z&query.startTimeMax=2023-11-14T22:13:21.5Z&query.serviceName=cart\
             &query.operationName=get&query.durationMin=1ms&query.durationMax=1.5s&query.searchDepth=7\
             &query.attributes=%7B%22k%22%3A%22v%22%7D",
        )
        .expect("valid");
        assert_eq!(camel, snake);
        assert_eq!(parse(TIMES).expect("defaults").limit, DEFAULT_SEARCH_DEPTH);
        assert_eq!(
            parse(&format!("{TIMES}&query.num_traces=3"))
                .expect("alias")
                .limit,
            3
        );
    }

    #[test]
    fn find_param_errors() {
        assert!(bad("").contains("are required"));
        assert!(bad("query.start_time_min=2023-11-14T22:13:20Z").contains("are required"));
        assert!(
            bad("query.start_time_min=yesterday&query.start_time_max=2023-11-14T22:13:20Z")
                .contains("malformed parameter query.start_time_min")
        );
        assert!(bad(
            "query.startTimeMin=2023-11-14T22:13:20Z&query.startTimeMax=2023-11-14T22:13:20Z"
        )
        .contains("must be before"));
        assert!(bad(&format!("{TIMES}&query.duration_min=1"))
            .contains("malformed parameter query.duration_min"));
        assert!(bad(&format!("{TIMES}&query.searchDepth=-1"))
            .contains("malformed parameter query.searchDepth"));
        assert!(bad(&format!("{TIMES}&query.attributes=%7B"))
            .contains("malformed parameter query.attributes"));
    }
}
