//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on the generated tonic
//! server, with gzip and a message size cap (tonic refuses larger messages, compressed or
//! decompressed, with `OutOfRange` / `ResourceExhausted`).

use crate::errors::{ReceiveError, Rejection};
use crate::ingest::Shared;
use crate::metrics::Protocol;
use crate::{ReceiverConfig, ReceiverMetrics};
use axum::http;
use clew_model::otlp::collector::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use clew_model::{SpanSink, ValidationReport};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use std::future::Future;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// The `TraceService` implementation. Build it with [`otlp_grpc_service`].
pub struct OtlpGrpcService {
    shared: Shared,
}

/// The OTLP trace service, ready to add to a tonic server: gzip accepted (and used for responses
/// when the client accepts it), messages capped at `cfg.max_message_bytes`.
pub fn otlp_grpc_service(
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
) -> Result<TraceServiceServer<OtlpGrpcService>, ReceiveError> {
    cfg.validate()?;
    let max = cfg.max_message_bytes;
    let service = OtlpGrpcService {
        shared: Shared::new(sink, &cfg, metrics, Protocol::OtlpGrpc),
    };
    Ok(TraceServiceServer::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max))
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve_otlp_grpc(
    listener: tokio::net::TcpListener,
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError> {
    serve_otlp_grpc_incoming(TcpIncoming::from(listener), sink, cfg, metrics, shutdown).await
}

/// Serves OTLP/gRPC on a stream of accepted connections (e.g. a TLS listener's, whose
/// connections carry TLS and the caller's identity as tonic connect info, which tonic puts in
/// each request's extensions) until `shutdown` completes, then drains in-flight requests.
pub async fn serve_otlp_grpc_incoming<I, IO, IE>(
    incoming: I,
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let gate = clew_security::auth::TenantGateLayer::off();
    serve_otlp_grpc_gated(incoming, sink, cfg, metrics, gate, shutdown).await
}

/// As [`serve_otlp_grpc_incoming`], behind the tenant gate (`clew_security::auth`): it runs
/// before anything else, authenticates, and rewrites the tenant metadata to the tenant the
/// caller's identity may use; refusals are `UNAUTHENTICATED` / `PERMISSION_DENIED`.
pub async fn serve_otlp_grpc_gated<I, IO, IE>(
    incoming: I,
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: ReceiverMetrics,
    gate: clew_security::auth::TenantGateLayer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiveError>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = otlp_grpc_service(sink, cfg, metrics)?;
    tonic::transport::Server::builder()
        .layer(gate)
        .layer(tower::util::MapResponseLayer::new(
            too_large_is_not_retryable as fn(_) -> _,
        ))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// tonic answers a message over the size limit with `OUT_OF_RANGE`, which OTLP exporters retry
/// (the OTLP spec lists it as retryable); resending the same message cannot succeed, so the code is
/// rewritten to `RESOURCE_EXHAUSTED`, which exporters retry only when given a `RetryInfo`. Such
/// errors are raised before the service runs, so they are trailers-only responses with the status
/// in the headers; our own handler never returns `OUT_OF_RANGE`.
/// Corrects two of tonic's status codes to what the OTLP spec asks for, before any handler runs:
/// an oversized message (tonic: `OUT_OF_RANGE`, which exporters retry forever) becomes
/// `RESOURCE_EXHAUSTED`, and an undecodable message (tonic: `INTERNAL`, "failed to decode Protobuf
/// message") becomes `INVALID_ARGUMENT`, so the client does not retry garbage.
fn too_large_is_not_retryable(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let code = |c: tonic::Code| (c as i32).to_string();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec());
    let message_is_decode_error = response.headers().get("grpc-message").is_some_and(|m| {
        m.as_bytes().starts_with(b"failed%20to%20decode")
            || m.as_bytes().starts_with(b"failed to decode")
    });
    let replacement = match status {
        Some(s) if s == code(tonic::Code::OutOfRange).as_bytes() => {
            Some(code(tonic::Code::ResourceExhausted))
        }
        Some(s) if s == code(tonic::Code::Internal).as_bytes() && message_is_decode_error => {
            Some(code(tonic::Code::InvalidArgument))
        }
        _ => None,
    };
    if let Some(value) = replacement.and_then(|r| http::HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert("grpc-status", value);
    }
    response
}

#[async_trait::async_trait]
impl TraceService for OtlpGrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let shared = &self.shared;
        let tenant = match shared
            .resolver()
            .and_then(|r| r.resolve_grpc(request.metadata()))
        {
            Ok(t) => t,
            Err(rejection) => {
                shared.refused(&rejection);
                return Err(rejection.to_grpc_status());
            }
        };
        let metadata = shared.metadata.of_grpc_request(&request);
        let resource_spans = request.into_inner().resource_spans;
        let report = shared
            .ingest(
                tenant,
                metadata,
                resource_spans,
                ValidationReport::default(),
                None,
            )
            .await
            .map_err(|r: Rejection| r.to_grpc_status())?;
        Ok(tonic::Response::new(response(&report)))
    }
}

/// `partial_success` is set only when spans were rejected (the spec: leave it unset on full success).
pub(crate) fn response(report: &ValidationReport) -> ExportTraceServiceResponse {
    let partial_success = (report.rejected_spans > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(report.rejected_spans).unwrap_or(i64::MAX),
        error_message: report.first_error.clone().unwrap_or_default(),
    });
    ExportTraceServiceResponse { partial_success }
}
