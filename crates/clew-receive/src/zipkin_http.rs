//! Zipkin v2: `POST /api/v2/spans` with a JSON array of spans (gzip or identity), converted to OTLP
//! by `clew_model::zipkin`. Answers `202 Accepted` like Zipkin; errors are plain text.

use crate::decode;
use crate::errors::{retry_after_secs, Rejection};
use crate::ingest::Shared;
use crate::metrics::Protocol;
use crate::{ReceiverConfig, ReceiverMetrics};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clew_model::{zipkin, SpanSink, ValidationReport};
use std::sync::Arc;

/// The Zipkin v2 span route, `POST /api/v2/spans`. Other paths answer 404, other methods 405.
///
/// Spans with invalid ids are dropped one by one and the rest accepted (`202`); if every span of a
/// non-empty payload was dropped the answer is `400` naming the first problem, since Zipkin has no
/// partial-success reply and the client should learn that nothing was kept.
pub fn zipkin_router(
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
) -> Router {
    let shared = Arc::new(Shared::new(sink, &cfg, metrics, Protocol::Zipkin));
    Router::new()
        .route("/api/v2/spans", post(spans))
        .with_state(shared)
}

async fn spans(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    match handle(&shared, &headers, &parts.extensions, body).await {
        Ok(report) if report.accepted == 0 && report.rejected_spans > 0 => {
            let msg = report
                .first_error
                .unwrap_or_else(|| "all spans rejected".into());
            text(
                StatusCode::BAD_REQUEST,
                format!("all {} spans rejected; first: {msg}", report.rejected_spans),
            )
        }
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(rejection) => {
            if !rejection.counted_by_ingest() {
                shared.refused(&rejection);
            }
            let mut response = text(rejection.http_status(), rejection.message());
            if let Some(delay) = rejection.retry_after() {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(delay)),
                );
            }
            response
        }
    }
}

struct Handled {
    accepted: u64,
    rejected_spans: u64,
    first_error: Option<String>,
}

async fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    body: Body,
) -> Result<Handled, Rejection> {
    decode::zipkin_media_type(headers)?;
    let tenant = shared.resolver()?.resolve_http(headers)?;
    let bytes = decode::read_decoded(headers, body, shared.max_bytes).await?;
    let size = bytes.len();
    let converted = zipkin::decode_json(&bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let received = converted.received_spans;
    let report: ValidationReport = shared
        .ingest_sized(
            tenant,
            shared.metadata.of_http_request(headers, extensions),
            converted.resource_spans,
            converted.report,
            Some(received),
            Some(size),
        )
        .await?;
    Ok(Handled {
        accepted: received.saturating_sub(report.rejected_spans),
        rejected_spans: report.rejected_spans,
        first_error: report.first_error,
    })
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}
