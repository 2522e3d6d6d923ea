//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json` bodies, gzip or
//! identity. Responses follow the OTLP/HTTP spec: the `Content-Type` of the request, an
//! `ExportTraceServiceResponse` on success, a `google.rpc.Status` on failure, `Retry-After` on 503
//! and 429.

use crate::decode::{self, MediaType};
use crate::errors::{retry_after_secs, rpc, Rejection};
use crate::grpc::response;
use crate::ingest::Shared;
use crate::metrics::Protocol;
use crate::{ReceiverConfig, ReceiverMetrics};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::{SpanSink, ValidationReport};
use std::sync::Arc;

/// The OTLP/HTTP trace route, `POST /v1/traces`. Other paths answer 404, other methods 405.
pub fn otlp_http_router(
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
) -> Router {
    let shared = Arc::new(Shared::new(sink, &cfg, metrics, Protocol::OtlpHttp));
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(shared)
}

async fn export(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // Until the request's media type is known, errors are answered in JSON (readable by a person
    // with curl, which is who usually gets the content type wrong).
    let media = match decode::otlp_media_type(&headers) {
        Ok(m) => m,
        Err(rejection) => return refuse(&shared, MediaType::Json, rejection),
    };
    match handle(&shared, media, &headers, &parts.extensions, body).await {
        Ok(report) => success(media, &report),
        Err(rejection) => {
            // `ingest` has counted sink and rate refusals already.
            if !rejection.counted_by_ingest() {
                shared.refused(&rejection);
            }
            error_response(media, &rejection)
        }
    }
}

async fn handle(
    shared: &Shared,
    media: MediaType,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    body: Body,
) -> Result<ValidationReport, Rejection> {
    let tenant = shared.resolver()?.resolve_http(headers)?;
    let bytes = decode::read_decoded(headers, body, shared.max_bytes).await?;
    let size = bytes.len();
    let request = match media {
        MediaType::Protobuf => ExportTraceServiceRequest::decode(bytes)
            .map_err(|e| Rejection::Malformed(format!("invalid OTLP protobuf: {e}")))?,
        MediaType::Json => clew_model::otlp_json::decode_request(&bytes)
            .map_err(|e| Rejection::Malformed(e.to_string()))?,
    };
    shared
        .ingest_sized(
            tenant,
            shared.metadata.of_http_request(headers, extensions),
            request.resource_spans,
            ValidationReport::default(),
            None,
            Some(size),
        )
        .await
}

fn refuse(shared: &Shared, media: MediaType, rejection: Rejection) -> Response {
    shared.refused(&rejection);
    error_response(media, &rejection)
}

fn success(media: MediaType, report: &ValidationReport) -> Response {
    let body = match media {
        MediaType::Protobuf => response(report).encode_to_vec(),
        MediaType::Json => {
            // Written by hand so the form is the proto3 JSON mapping (int64 as a string, field
            // omitted when unset) whatever the serde support of the proto crate does.
            let json = match report.rejected_spans {
                0 => serde_json::json!({}),
                n => serde_json::json!({ "partialSuccess": {
                    "rejectedSpans": n.to_string(),
                    "errorMessage": report.first_error.clone().unwrap_or_default(),
                }}),
            };
            json.to_string().into_bytes()
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, media.content_type())],
        body,
    )
        .into_response()
}

fn error_response(media: MediaType, rejection: &Rejection) -> Response {
    let code = rejection.grpc_code() as i32;
    let message = rejection.message();
    let retry_after = rejection.retry_after();
    let body = match media {
        MediaType::Protobuf => rpc::status(code, &message, retry_after).encode_to_vec(),
        MediaType::Json => rpc::status_json(code, &message, retry_after)
            .to_string()
            .into_bytes(),
    };
    let mut response = (
        rejection.http_status(),
        [(header::CONTENT_TYPE, media.content_type())],
        body,
    )
        .into_response();
    if let Some(delay) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(delay)),
        );
    }
    response
}
