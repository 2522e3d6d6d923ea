//! Error types and their mapping onto the wire: gRPC status codes, HTTP status codes and the
//! `google.rpc.Status` body (with a `google.rpc.RetryInfo` detail when the client should back off).

use crate::metrics::{Outcome, RejectReason};
use axum::http::StatusCode;
use clew_model::SinkError;
use std::time::Duration;
use thiserror::Error;

/// Errors returned by the receivers' setup and serve functions.
#[derive(Debug, Error)]
pub enum ReceiveError {
    /// The configuration cannot be used (e.g. the tenant header is not a valid header name).
    #[error("invalid receiver configuration: {0}")]
    Config(String),
    /// The gRPC server failed while serving.
    #[error("OTLP/gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Why one request was refused as a whole. Every receiver maps these the same way.
#[derive(Debug, Clone)]
pub(crate) enum Rejection {
    /// The tenant header is present but not a valid tenant.
    BadTenant(String),
    /// The body could not be decoded (bad protobuf/JSON, corrupt or truncated gzip).
    Malformed(String),
    /// The body, compressed or decompressed, is larger than the limit.
    TooLarge { limit: usize },
    /// Content type (or content encoding) not supported.
    UnsupportedMediaType(String),
    /// The sink refused the batch.
    Sink(SinkError),
    /// Over the tenant's ingestion rate (`clew_security::limits`): retryable after `retry_after`.
    /// `limit` says which limit, its value and the tenant.
    RateLimited {
        retry_after: Duration,
        limit: String,
    },
    /// The receiver's configuration is invalid (reported per request by the routers).
    Misconfigured(String),
}

/// Used when the sink reports an internal error: the client should retry, not hammer.
const INTERNAL_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Rejection {
    pub(crate) fn message(&self) -> String {
        match self {
            Rejection::BadTenant(m) => format!("invalid tenant: {m}"),
            Rejection::Malformed(m) => m.clone(),
            Rejection::TooLarge { limit } => {
                format!("request body exceeds the limit of {limit} bytes")
            }
            Rejection::UnsupportedMediaType(m) => m.clone(),
            Rejection::Sink(SinkError::Overloaded {
                retry_after,
                reason,
            }) => {
                format!(
                    "server overloaded, retry after {}s: {reason}",
                    retry_after_secs(*retry_after)
                )
            }
            Rejection::Sink(SinkError::ShuttingDown) => {
                "server is shutting down, retry later".to_string()
            }
            Rejection::Sink(SinkError::Invalid(m)) => format!("invalid data: {m}"),
            Rejection::Sink(SinkError::Internal(m)) => {
                format!("internal error, data not accepted, retry: {m}")
            }
            Rejection::Misconfigured(m) => format!("receiver misconfigured: {m}"),
            Rejection::RateLimited { limit, .. } => limit.clone(),
        }
    }

    /// Whether `Shared::ingest` has already counted and logged this refusal (it returns these).
    pub(crate) fn counted_by_ingest(&self) -> bool {
        matches!(self, Rejection::Sink(_) | Rejection::RateLimited { .. })
    }

    /// gRPC code: `Unavailable` for anything the client should retry (the data was not acked).
    pub(crate) fn grpc_code(&self) -> tonic::Code {
        match self {
            Rejection::BadTenant(_)
            | Rejection::Malformed(_)
            | Rejection::Sink(SinkError::Invalid(_)) => tonic::Code::InvalidArgument,
            Rejection::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            Rejection::TooLarge { .. } => tonic::Code::ResourceExhausted,
            // Retryable only with the `RetryInfo` that `to_grpc_status` adds (OTLP spec).
            Rejection::RateLimited { .. } => tonic::Code::ResourceExhausted,
            Rejection::Sink(_) => tonic::Code::Unavailable,
            Rejection::Misconfigured(_) => tonic::Code::Internal,
        }
    }

    /// HTTP status per the OTLP/HTTP spec: 400 for bad data, 413, 415, and 503 (retryable) when the
    /// sink cannot take the data now.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            Rejection::BadTenant(_)
            | Rejection::Malformed(_)
            | Rejection::Sink(SinkError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // Internal sink failures are 503, not 500: OTLP clients retry 503 but drop on 500, and
            // the data was not accepted.
            Rejection::Sink(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How long the client should wait before retrying, when it should.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::Sink(SinkError::Overloaded { retry_after, .. }) => Some(*retry_after),
            Rejection::Sink(SinkError::Internal(_)) => Some(INTERNAL_RETRY_AFTER),
            Rejection::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Rejection::BadTenant(_) => Outcome::InvalidTenant,
            Rejection::Malformed(_) | Rejection::Sink(SinkError::Invalid(_)) => {
                Outcome::InvalidPayload
            }
            Rejection::TooLarge { .. } => Outcome::TooLarge,
            Rejection::UnsupportedMediaType(_) => Outcome::UnsupportedMediaType,
            Rejection::Sink(SinkError::Overloaded { .. }) => Outcome::Overloaded,
            Rejection::RateLimited { .. } => Outcome::RateLimited,
            Rejection::Sink(SinkError::ShuttingDown) => Outcome::ShuttingDown,
            Rejection::Sink(SinkError::Internal(_)) | Rejection::Misconfigured(_) => {
                Outcome::Internal
            }
        }
    }

    /// The reason recorded for spans lost to this rejection (when their number is known).
    pub(crate) fn reject_reason(&self) -> RejectReason {
        match self {
            Rejection::BadTenant(_) => RejectReason::InvalidTenant,
            Rejection::Malformed(_) | Rejection::Sink(SinkError::Invalid(_)) => {
                RejectReason::InvalidPayload
            }
            Rejection::TooLarge { .. } => RejectReason::TooLarge,
            Rejection::UnsupportedMediaType(_) => RejectReason::UnsupportedMediaType,
            Rejection::Sink(SinkError::Overloaded { .. }) => RejectReason::Overloaded,
            Rejection::RateLimited { .. } => RejectReason::RateLimited,
            Rejection::Sink(SinkError::ShuttingDown) => RejectReason::ShuttingDown,
            Rejection::Sink(SinkError::Internal(_)) | Rejection::Misconfigured(_) => {
                RejectReason::Internal
            }
        }
    }

    pub(crate) fn to_grpc_status(&self) -> tonic::Status {
        let code = self.grpc_code();
        let message = self.message();
        match self.retry_after() {
            // The details of a gRPC status are an encoded `google.rpc.Status`; OTLP exporters read
            // `RetryInfo` from it to choose their backoff.
            Some(delay) => {
                let details = rpc::status(code as i32, &message, Some(delay));
                tonic::Status::with_details(
                    code,
                    message,
                    prost::Message::encode_to_vec(&details).into(),
                )
            }
            None => tonic::Status::new(code, message),
        }
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// Error bodies: the `google.rpc` messages (`clew_model::rpc`) built for OTLP answers.
pub(crate) mod rpc {
    use std::time::Duration;

    pub use clew_model::rpc::*;

    pub fn status(code: i32, message: &str, retry_after: Option<Duration>) -> Status {
        let details = retry_after
            .map(|d| Any {
                type_url: RETRY_INFO_TYPE_URL.to_string(),
                value: prost::Message::encode_to_vec(&RetryInfo {
                    retry_delay: Some(proto_duration(d)),
                }),
            })
            .into_iter()
            .collect();
        Status {
            code,
            message: message.to_string(),
            details,
        }
    }

    fn proto_duration(d: Duration) -> ProtoDuration {
        ProtoDuration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }

    /// The proto3 JSON form of a `google.rpc.Status` (for JSON requests).
    pub fn status_json(
        code: i32,
        message: &str,
        retry_after: Option<Duration>,
    ) -> serde_json::Value {
        let details: Vec<serde_json::Value> = retry_after
            .map(|d| {
                // proto3 JSON form of a Duration: decimal seconds with an "s" suffix.
                let delay = if d.subsec_nanos() == 0 {
                    format!("{}s", d.as_secs())
                } else {
                    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
                };
                serde_json::json!({ "@type": RETRY_INFO_TYPE_URL, "retryDelay": delay })
            })
            .into_iter()
            .collect();
        serde_json::json!({ "code": code, "message": message, "details": details })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn sink_errors_map_to_retryable_codes() {
        let overloaded = Rejection::Sink(SinkError::Overloaded {
            retry_after: Duration::from_millis(1500),
            reason: "queue full".into(),
        });
        assert_eq!(overloaded.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(overloaded.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overloaded.retry_after().map(retry_after_secs), Some(2));
        let st = overloaded.to_grpc_status();
        let details = rpc::Status::decode(st.details()).unwrap();
        assert_eq!(details.details[0].type_url, rpc::RETRY_INFO_TYPE_URL);
        let info = rpc::RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(rpc::ProtoDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );

        for (e, code) in [
            (SinkError::ShuttingDown, tonic::Code::Unavailable),
            (SinkError::Internal("disk".into()), tonic::Code::Unavailable),
            (
                SinkError::Invalid("bad".into()),
                tonic::Code::InvalidArgument,
            ),
        ] {
            assert_eq!(Rejection::Sink(e).grpc_code(), code);
        }
        assert_eq!(
            Rejection::Sink(SinkError::Internal("x".into())).http_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Rejection::Sink(SinkError::Invalid("x".into())).http_status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn rate_limited_is_429_and_resource_exhausted_with_retry_info() {
        let r = Rejection::RateLimited {
            retry_after: Duration::from_millis(2500),
            limit: "ingestion rate limit exceeded for tenant small".into(),
        };
        assert_eq!(r.http_status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.grpc_code(), tonic::Code::ResourceExhausted);
        assert_eq!(r.retry_after().map(retry_after_secs), Some(3));
        assert_eq!(r.outcome(), Outcome::RateLimited);
        assert_eq!(r.reject_reason(), RejectReason::RateLimited);
        assert!(r.counted_by_ingest());
        assert!(!Rejection::Malformed("x".into()).counted_by_ingest());
        let st = r.to_grpc_status();
        assert_eq!(
            st.message(),
            "ingestion rate limit exceeded for tenant small"
        );
        let details = rpc::Status::decode(st.details()).unwrap();
        assert_eq!(details.code, tonic::Code::ResourceExhausted as i32);
        let info = rpc::RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(rpc::ProtoDuration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_secs(Duration::from_millis(5001)), 6);
    }

    #[test]
    fn json_status_shape() {
        let v = rpc::status_json(14, "busy", Some(Duration::from_millis(250)));
        assert_eq!(v["code"], 14);
        assert_eq!(v["details"][0]["retryDelay"], "0.250000000s");
        assert_eq!(
            rpc::status_json(3, "x", None)["details"],
            serde_json::json!([])
        );
    }
}
