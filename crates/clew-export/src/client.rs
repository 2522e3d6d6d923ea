//! The wire: one OTLP export request (already-encoded protobuf) over gRPC or HTTP, and what the
//! answer means — sent (maybe partially), retry (maybe after a server-given delay), or drop.

use crate::config::{Compression, OtlpExporterConfig, Protocol};
use crate::ExportError;
use bytes::{Buf, BufMut, Bytes};
use clew_model::otlp::collector::ExportTraceServiceResponse;
use clew_model::otlp::Message;
use clew_model::Tenant;
use std::io::Write;
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted; `rejected` spans were refused by the receiver (OTLP partial success).
    Sent { rejected: u64, message: String },
    /// Retryable failure; `after` is the server's hint (`RetryInfo`, `Retry-After`).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Permanent failure: the batch will never be accepted.
    Permanent(String),
    /// The request is too large for the destination (HTTP 413, gRPC `OUT_OF_RANGE` "too
    /// large", `RESOURCE_EXHAUSTED` without `RetryInfo`): merged batches are resent one by one;
    /// a single batch is dropped like a permanent failure.
    TooLarge(String),
}

pub(crate) enum Client {
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
        tenant_key: Option<AsciiMetadataKey>,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
        tenant_header: Option<http::HeaderName>,
    },
}

/// The gRPC endpoint as a URL: `host:port` gets `https://` unless `tls.insecure`.
pub(crate) fn grpc_url(cfg: &OtlpExporterConfig) -> String {
    let e = cfg.endpoint.trim();
    if e.contains("://") {
        e.to_string()
    } else if cfg.tls.insecure {
        format!("http://{e}")
    } else {
        format!("https://{e}")
    }
}

/// The URL an `otlphttp` exporter posts to.
pub(crate) fn http_url(cfg: &OtlpExporterConfig) -> String {
    match &cfg.traces_endpoint {
        Some(u) => u.trim().to_string(),
        None => format!("{}/v1/traces", cfg.endpoint.trim().trim_end_matches('/')),
    }
}

impl Client {
    pub(crate) fn new(
        name: &str,
        protocol: Protocol,
        cfg: &OtlpExporterConfig,
    ) -> Result<Self, ExportError> {
        let prefix = format!("exporters.{name}");
        let bad = |key: &str, msg: String| ExportError::Config {
            key: format!("{prefix}.{key}"),
            message: msg,
        };
        let tls = cfg.tls.client_settings();
        match protocol {
            Protocol::Grpc => {
                let url = grpc_url(cfg);
                let (endpoint, connector) =
                    clew_security::tls::grpc_endpoint(&url, &tls, &format!("{prefix}.tls"))
                        .map_err(|e| ExportError::Tls(e.to_string()))?;
                let channel = endpoint
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout)
                    .tcp_nodelay(true)
                    .connect_with_connector_lazy(connector);
                let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(1 << 20);
                if cfg.compression == Compression::Gzip {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                grpc = grpc.accept_compressed(tonic::codec::CompressionEncoding::Gzip);
                let mut metadata = Vec::new();
                for (k, v) in &cfg.headers {
                    let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|e| {
                            bad(&format!("headers.{k}"), format!("not a header name: {e}"))
                        })?;
                    let value = AsciiMetadataValue::try_from(v.as_str()).map_err(|e| {
                        bad(&format!("headers.{k}"), format!("not a header value: {e}"))
                    })?;
                    metadata.push((key, value));
                }
                let tenant_key = if cfg.tenant_header.is_empty() {
                    None
                } else {
                    Some(
                        AsciiMetadataKey::from_bytes(
                            cfg.tenant_header.to_ascii_lowercase().as_bytes(),
                        )
                        .map_err(|e| bad("tenant_header", format!("not a header name: {e}")))?,
                    )
                };
                Ok(Client::Grpc {
                    grpc,
                    metadata,
                    tenant_key,
                    timeout: cfg.timeout,
                })
            }
            Protocol::Http => {
                let url = http_url(cfg);
                let parsed: http::Uri = url.parse().map_err(|_| {
                    bad(
                        "endpoint",
                        format!("{url:?} is not a URL (fix: e.g. http://127.0.0.1:4318)"),
                    )
                })?;
                if !matches!(parsed.scheme_str(), Some("http") | Some("https")) {
                    return Err(bad(
                        "endpoint",
                        format!("{url:?} does not start with http:// or https://"),
                    ));
                }
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let key = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                        bad(&format!("headers.{k}"), format!("not a header name: {e}"))
                    })?;
                    let value = http::HeaderValue::from_str(v).map_err(|e| {
                        bad(&format!("headers.{k}"), format!("not a header value: {e}"))
                    })?;
                    headers.insert(key, value);
                }
                let mut builder = reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout)
                    .default_headers(headers);
                if let Some(tls) =
                    clew_security::tls::reqwest_tls(&url, &tls, &format!("{prefix}.tls"))
                        .map_err(|e| ExportError::Tls(e.to_string()))?
                {
                    builder = builder.tls_backend_preconfigured(tls);
                }
                let client = builder
                    .build()
                    .map_err(|e| ExportError::Tls(format!("{prefix}: {e}")))?;
                let tenant_header = if cfg.tenant_header.is_empty() {
                    None
                } else {
                    Some(
                        http::HeaderName::from_bytes(cfg.tenant_header.as_bytes())
                            .map_err(|e| bad("tenant_header", format!("not a header name: {e}")))?,
                    )
                };
                Ok(Client::Http {
                    client,
                    url,
                    gzip: cfg.compression == Compression::Gzip,
                    tenant_header,
                })
            }
        }
    }

    /// Sends one request (`payload`: an encoded `ExportTraceServiceRequest`).
    pub(crate) async fn send(&self, tenant: &Tenant, payload: Bytes) -> SendOutcome {
        match self {
            Client::Grpc {
                grpc,
                metadata,
                tenant_key,
                timeout,
            } => {
                let mut grpc = grpc.clone();
                let attempt = async {
                    if let Err(e) = grpc.ready().await {
                        return SendOutcome::Retry {
                            after: None,
                            reason: format!("connection not ready: {e}"),
                        };
                    }
                    let mut req = tonic::Request::new(payload);
                    req.set_timeout(*timeout);
                    let md: &mut MetadataMap = req.metadata_mut();
                    for (k, v) in metadata {
                        md.insert(k.clone(), v.clone());
                    }
                    if let Some(k) = tenant_key {
                        if let Ok(v) = AsciiMetadataValue::try_from(tenant.as_str()) {
                            md.insert(k.clone(), v);
                        }
                    }
                    let path = http::uri::PathAndQuery::from_static(GRPC_PATH);
                    match grpc.unary(req, path, RawCodec).await {
                        Ok(resp) => partial(resp.into_inner()),
                        Err(status) => classify_grpc(&status),
                    }
                };
                // The channel's timeout covers the request; this also bounds `ready()`.
                match tokio::time::timeout(*timeout + Duration::from_secs(1), attempt).await {
                    Ok(o) => o,
                    Err(_) => SendOutcome::Retry {
                        after: None,
                        reason: format!("timed out after {timeout:?}"),
                    },
                }
            }
            Client::Http {
                client,
                url,
                gzip,
                tenant_header,
            } => {
                let mut req = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                let body = if *gzip {
                    match gzip_bytes(&payload) {
                        Ok(b) => {
                            req = req.header(http::header::CONTENT_ENCODING, "gzip");
                            b
                        }
                        Err(e) => return SendOutcome::Permanent(format!("gzip failed: {e}")),
                    }
                } else {
                    payload.to_vec()
                };
                if let Some(h) = tenant_header {
                    req = req.header(h.clone(), tenant.as_str());
                }
                let resp = match req.body(body).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return SendOutcome::Retry {
                            after: None,
                            reason: format!("request failed: {e}"),
                        }
                    }
                };
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let bytes = resp.bytes().await.unwrap_or_default();
                classify_http(status.as_u16(), retry_after, &bytes)
            }
        }
    }
}

fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

fn partial(resp: ExportTraceServiceResponse) -> SendOutcome {
    match resp.partial_success {
        Some(p) if p.rejected_spans > 0 || !p.error_message.is_empty() => SendOutcome::Sent {
            rejected: u64::try_from(p.rejected_spans).unwrap_or(0),
            message: p.error_message,
        },
        _ => SendOutcome::Sent {
            rejected: 0,
            message: String::new(),
        },
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate, or the
/// obsolete RFC 850 / asctime forms), turned into the time left until then. A date in the past
/// means "now" (zero), not "no hint".
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    parse_retry_after_at(v, std::time::SystemTime::now())
}

/// [`parse_retry_after`] relative to `now` (so a test can pin the clock).
pub fn parse_retry_after_at(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// OTLP/HTTP: 2xx sent (partial success in the body), 429/502/503/504 retryable, anything else
/// permanent.
pub fn classify_http(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendOutcome {
    match status {
        200..=299 => match ExportTraceServiceResponse::decode(body) {
            Ok(r) => partial(r),
            // A body we cannot read (JSON from a proxy…): the spans were accepted.
            Err(_) => SendOutcome::Sent {
                rejected: 0,
                message: String::new(),
            },
        },
        413 => SendOutcome::TooLarge(format!("HTTP 413{}", status_message(body))),
        429 | 502 | 503 | 504 => SendOutcome::Retry {
            after: retry_after,
            reason: format!("HTTP {status}{}", status_message(body)),
        },
        _ => SendOutcome::Permanent(format!("HTTP {status}{}", status_message(body))),
    }
}

/// The message of a `google.rpc.Status` body, when the body is one.
fn status_message(body: &[u8]) -> String {
    match rpc::Status::decode(body) {
        Ok(s) if !s.message.is_empty() => format!(": {}", s.message),
        _ => match std::str::from_utf8(body) {
            Ok(t) if !t.trim().is_empty() => {
                format!(": {}", t.trim().chars().take(200).collect::<String>())
            }
            _ => String::new(),
        },
    }
}

/// OTLP/gRPC: retryable codes per the OTLP spec (RESOURCE_EXHAUSTED only with a `RetryInfo`),
/// and any status tonic made from a transport error; the others are permanent.
pub fn classify_grpc(status: &tonic::Status) -> SendOutcome {
    use tonic::Code;
    let retry_info = retry_info(status.details());
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::OutOfRange if status.message().contains("too large") => SendOutcome::TooLarge(reason),
        Code::ResourceExhausted if retry_info.is_none() => SendOutcome::TooLarge(reason),
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => SendOutcome::Retry {
            after: retry_info,
            reason,
        },
        Code::ResourceExhausted if retry_info.is_some() => SendOutcome::Retry {
            after: retry_info,
            reason,
        },
        // Made on this side from a transport error (connection refused or reset, broken
        // HTTP/2 stream): the server never answered, so it is not its verdict on the data.
        _ if std::error::Error::source(status).is_some() => SendOutcome::Retry {
            after: None,
            reason: format!("{reason} (transport)"),
        },
        _ => SendOutcome::Permanent(reason),
    }
}

/// The `RetryInfo.retry_delay` in a status's details (an encoded `google.rpc.Status`).
pub fn retry_info(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = rpc::Status::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|d| d.type_url == rpc::RETRY_INFO_TYPE_URL)?;
    let info = rpc::RetryInfo::decode(any.value.as_slice()).ok()?;
    let d = info.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Some(Duration::new(secs, nanos.min(999_999_999)))
}

/// The `google.rpc` messages (shared with the receivers, in `clew-model`).
pub use clew_model::rpc;

/// A codec that sends already-encoded protobuf bytes and decodes the OTLP response: queued
/// batches go out without being decoded and re-encoded.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RespDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = RespDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RespDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RespDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("bad response: {e}")))
    }
}
