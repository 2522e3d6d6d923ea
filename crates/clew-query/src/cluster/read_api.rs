//! The ingester's side: its [`TraceReader`] over HTTP for queriers.

use super::wire::{Hit, ReadRequest, PROTOBUF};
use crate::tenant::tenant_from_headers;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clew_model::TraceId;
use clew_store::{StoreError, TraceReader};
use prost::Message;
use std::sync::Arc;

pub const READ_PATH: &str = "/api/internal/v1/read";

#[derive(Clone)]
struct ReadState {
    reader: Arc<dyn TraceReader>,
    tenant_header: Arc<str>,
}

/// `POST /api/internal/v1/read` over `reader`, the tenant from `tenant_header` (behind the
/// listener's tenant gate like every other query route).
pub fn read_router(reader: Arc<dyn TraceReader>, tenant_header: &str) -> Router {
    Router::new()
        .route(READ_PATH, post(read))
        .with_state(ReadState {
            reader,
            tenant_header: Arc::from(tenant_header),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn store_error(e: StoreError) -> Response {
    let status = match e {
        StoreError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn read(
    State(state): State<ReadState>,
    headers: HeaderMap,
    Json(request): Json<ReadRequest>,
) -> Response {
    let tenant = match tenant_from_headers(&headers, &state.tenant_header) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let r = &state.reader;
    let answer = match request {
        ReadRequest::Trace { trace_id } => {
            let id = match TraceId::from_hex(&trace_id) {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("trace_id: {e}")),
            };
            return match r.trace(&tenant, id).await {
                Ok(spans) => {
                    let data = clew_model::otlp::trace::TracesData {
                        resource_spans: clew_model::group_into_resource_spans(spans),
                    };
                    ([(header::CONTENT_TYPE, PROTOBUF)], data.encode_to_vec()).into_response()
                }
                Err(e) => store_error(e),
            };
        }
        ReadRequest::Search { query } => r.search(&tenant, &query).await.map(|hits| {
            let hits: Vec<Hit> = hits
                .into_iter()
                .map(|h| Hit {
                    trace_id: h.trace_id.to_hex(),
                    start_unix_nano: h.start_unix_nano,
                })
                .collect();
            Json(hits).into_response()
        }),
        ReadRequest::EstimateTraceCount { start, end } => r
            .estimate_trace_count(&tenant, start, end)
            .await
            .map(|n| Json(n).into_response()),
        ReadRequest::Services => r.services(&tenant).await.map(|v| Json(v).into_response()),
        ReadRequest::Operations { service } => r
            .operations(&tenant, service.as_deref())
            .await
            .map(|v| Json(v).into_response()),
        ReadRequest::Dependencies { start, end } => r
            .dependencies(&tenant, start, end)
            .await
            .map(|v| Json(v).into_response()),
        ReadRequest::TagNames { scope, range } => r
            .tag_names(&tenant, scope, range)
            .await
            .map(|v| Json(v).into_response()),
        ReadRequest::TagValues {
            scope,
            key,
            range,
            limit,
        } => r
            .tag_values(&tenant, scope, &key, range, limit)
            .await
            .map(|v| Json(v).into_response()),
    };
    answer.unwrap_or_else(store_error)
}
