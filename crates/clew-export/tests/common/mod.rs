//! A small real OTLP receiver (tonic gRPC + axum `/v1/traces`) on loopback ports, whose answers
//! a test can script, and which can be stopped and restarted on the same ports.
#![allow(dead_code)]

/// The one test-certificate helper of the real-binary suites.
#[path = "../../../clew/tests/common/certs.rs"]
pub mod certs;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clew_export::rpc;
use clew_model::otlp::collector::trace_service_server::{TraceService, TraceServiceServer};
use clew_model::otlp::collector::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use clew_model::otlp::common::{any_value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant};
use clew_security::tls::{Alpn, Listener, ServerTls, TlsServerSettings};
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// How the receiver answers the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Ok,
    /// gRPC UNAVAILABLE (with `RetryInfo` when `Some`) / HTTP 503 (with `Retry-After` seconds).
    Unavailable(Option<Duration>),
    /// gRPC RESOURCE_EXHAUSTED (+ RetryInfo) / HTTP 429 (+ Retry-After).
    Exhausted(Option<Duration>),
    /// gRPC UNAVAILABLE (no RetryInfo) / HTTP 503 with `Retry-After` as an HTTP-date.
    UnavailableUntil(std::time::SystemTime),
    /// gRPC RESOURCE_EXHAUSTED (no RetryInfo) / HTTP 429 with `Retry-After` as an HTTP-date.
    ExhaustedUntil(std::time::SystemTime),
    /// gRPC INVALID_ARGUMENT / HTTP 400.
    Invalid,
    /// Accepted, with partial success naming `n` rejected spans.
    Partial(i64),
    /// gRPC OUT_OF_RANGE "message length too large" (what tonic says) / HTTP 413.
    TooLarge,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    pub request: ExportTraceServiceRequest,
    pub answer: Answer,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn span_names(&self) -> Vec<String> {
        span_names(&self.request)
    }
}

pub fn span_names(req: &ExportTraceServiceRequest) -> Vec<String> {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[derive(Default)]
pub struct State {
    /// Scripted answers, used first to last; `Ok` once empty.
    pub script: Mutex<VecDeque<Answer>>,
    /// Every request, answered or not (unless `count_only`).
    pub requests: Mutex<Vec<Received>>,
    /// Spans accepted so far.
    pub accepted_spans: std::sync::atomic::AtomicUsize,
    /// Only count (benchmarks): keep no requests.
    pub count_only: std::sync::atomic::AtomicBool,
}

impl State {
    fn answer(&self, headers: Vec<(String, String)>, request: ExportTraceServiceRequest) -> Answer {
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Ok);
        if matches!(answer, Answer::Ok | Answer::Partial(_)) {
            self.accepted_spans.fetch_add(
                span_names(&request).len(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if self.count_only.load(std::sync::atomic::Ordering::Relaxed) {
            return answer;
        }
        self.requests.lock().unwrap().push(Received {
            at: Instant::now(),
            headers,
            request,
            answer: answer.clone(),
        });
        answer
    }

    /// Span names of accepted requests, in arrival order.
    pub fn accepted_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| matches!(r.answer, Answer::Ok | Answer::Partial(_)))
            .flat_map(|r| r.span_names())
            .collect()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let answer = self.0.answer(headers, request.into_inner());
        let with_retry = |code: tonic::Code, d: Option<Duration>| match d {
            None => tonic::Status::new(code, "scripted failure"),
            Some(d) => {
                let details = rpc::Status {
                    code: code as i32,
                    message: "scripted failure".into(),
                    details: vec![rpc::Any {
                        type_url: rpc::RETRY_INFO_TYPE_URL.into(),
                        value: rpc::RetryInfo {
                            retry_delay: Some(rpc::ProtoDuration {
                                seconds: d.as_secs() as i64,
                                nanos: d.subsec_nanos() as i32,
                            }),
                        }
                        .encode_to_vec(),
                    }],
                };
                tonic::Status::with_details(
                    code,
                    "scripted failure",
                    details.encode_to_vec().into(),
                )
            }
        };
        match answer {
            Answer::Ok => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Answer::Partial(n) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: n,
                    error_message: "some spans were rejected".into(),
                }),
            })),
            Answer::Unavailable(d) => Err(with_retry(tonic::Code::Unavailable, d)),
            Answer::Exhausted(d) => Err(with_retry(tonic::Code::ResourceExhausted, d)),
            Answer::UnavailableUntil(_) => Err(with_retry(tonic::Code::Unavailable, None)),
            Answer::ExhaustedUntil(_) => Err(with_retry(tonic::Code::ResourceExhausted, None)),
            Answer::Invalid => Err(tonic::Status::invalid_argument("scripted: bad data")),
            Answer::TooLarge => Err(tonic::Status::out_of_range(
                "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
            )),
        }
    }
}

async fn http_handler(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let gzip = headers
        .get("content-encoding")
        .map(|v| v == "gzip")
        .unwrap_or(false);
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    } else {
        body.to_vec()
    };
    let req = ExportTraceServiceRequest::decode(raw.as_slice()).expect("valid protobuf");
    let hs = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut out = HeaderMap::new();
    out.insert("content-type", "application/x-protobuf".parse().unwrap());
    let retry = |out: &mut HeaderMap, d: Option<Duration>| {
        if let Some(d) = d {
            out.insert("retry-after", d.as_secs().to_string().parse().unwrap());
        }
    };
    match state.answer(hs, req) {
        Answer::Ok => (
            StatusCode::OK,
            out,
            ExportTraceServiceResponse::default().encode_to_vec(),
        ),
        Answer::Partial(n) => (
            StatusCode::OK,
            out,
            ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: n,
                    error_message: "some spans were rejected".into(),
                }),
            }
            .encode_to_vec(),
        ),
        Answer::Unavailable(d) => {
            retry(&mut out, d);
            (StatusCode::SERVICE_UNAVAILABLE, out, Vec::new())
        }
        Answer::Exhausted(d) => {
            retry(&mut out, d);
            (StatusCode::TOO_MANY_REQUESTS, out, Vec::new())
        }
        Answer::UnavailableUntil(at) => {
            out.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
            (StatusCode::SERVICE_UNAVAILABLE, out, Vec::new())
        }
        Answer::ExhaustedUntil(at) => {
            out.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
            (StatusCode::TOO_MANY_REQUESTS, out, Vec::new())
        }
        Answer::Invalid => (StatusCode::BAD_REQUEST, out, Vec::new()),
        Answer::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, out, Vec::new()),
    }
}

pub struct Receiver {
    pub state: Arc<State>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tls: Option<TlsServerSettings>,
    /// The servers run on their own runtime: dropping it kills listeners and open connections
    /// at once, like a crashed process.
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_with(tls: Option<TlsServerSettings>) -> Self {
        let g = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let h = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = Receiver {
            state: Arc::new(State::default()),
            grpc_addr: g.local_addr().unwrap(),
            http_addr: h.local_addr().unwrap(),
            tls,
            rt: None,
        };
        r.serve(g, h);
        r
    }

    fn serve(&mut self, g: std::net::TcpListener, h: std::net::TcpListener) {
        g.set_nonblocking(true).unwrap();
        h.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tls_settings = self.tls.clone();
        let state = self.state.clone();
        rt.spawn(async move {
            let tls = |alpn| {
                tls_settings
                    .clone()
                    .map(|s| ServerTls::new(s, "test", alpn).unwrap())
            };
            let gl =
                Listener::from_tcp(TcpListener::from_std(g).unwrap(), tls(Alpn::Grpc)).unwrap();
            let hl =
                Listener::from_tcp(TcpListener::from_std(h).unwrap(), tls(Alpn::Http)).unwrap();
            let svc = TraceServiceServer::new(Grpc(state.clone()))
                .max_decoding_message_size(64 << 20)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(gl.into_incoming())
                    .await;
            });
            let router = axum::Router::new()
                .route("/v1/traces", axum::routing::post(http_handler))
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
                .with_state(state);
            let _ = clew_security::tls::serve_router(hl, router, std::future::pending()).await;
        });
        self.rt = Some(rt);
    }

    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.grpc_addr)
    }

    pub fn http_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Stops serving (listeners and open connections are dropped, like a crash).
    pub async fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Serves again on the same ports, keeping what was received.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut tries = 0;
        let (g, h) = loop {
            match (
                std::net::TcpListener::bind(self.grpc_addr),
                std::net::TcpListener::bind(self.http_addr),
            ) {
                (Ok(g), Ok(h)) => break (g, h),
                _ if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (g, h) => panic!("cannot rebind: {:?} {:?}", g.err(), h.err()),
            }
        };
        self.serve(g, h);
    }

    /// Waits until `n` spans were accepted, counting only (panics after `within`).
    pub async fn wait_accepted_count(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let count = self
                .state
                .accepted_spans
                .load(std::sync::atomic::Ordering::Relaxed);
            if count >= n {
                return;
            }
            if Instant::now() > deadline {
                panic!("only {count} of {n} spans arrived within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` spans were accepted (panics after `within`).
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let names = self.state.accepted_names();
            if names.len() >= n {
                return names;
            }
            if Instant::now() > deadline {
                panic!(
                    "only {} of {n} spans arrived within {within:?}",
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A batch of `n` spans named `{prefix}-{i}` for `tenant`.
pub fn batch(tenant: &str, prefix: &str, n: usize) -> SpanBatch {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: {
                let mut id = [0u8; 8];
                id[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
                id.to_vec()
            },
            name: format!("{prefix}-{i}"),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_500_000,
            attributes: vec![KeyValue {
                key: "http.method".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("GET".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    SpanBatch::new(
        Tenant::new(tenant).unwrap(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

/// Fast retries for tests.
pub fn fast_retry(cfg: &mut clew_export::OtlpExporterConfig) {
    cfg.retry_on_failure.initial_interval = Duration::from_millis(20);
    cfg.retry_on_failure.max_interval = Duration::from_millis(100);
    cfg.retry_on_failure.randomization_factor = 0.0;
}

/// The value of a metric line in the text exposition.
pub fn metric(registry: &prometheus_client::registry::Registry, line_prefix: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
