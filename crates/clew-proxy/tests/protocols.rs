//! The proxy as a real proxy, in process, between real hyper servers and clients on loopback:
//! HTTP/2 (h2c) on both sides, TLS on both sides, WebSocket upgrade passthrough, streaming
//! bodies (each chunk arrives before the next is even produced), and graceful shutdown. Spans
//! go over real OTLP/HTTP to a receiver in the test, which decodes them.

#[path = "../../clew/tests/common/certs.rs"]
mod certs;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::any_value;
use clew_model::otlp::trace::Span;
use clew_proxy::body::{full, ProxyBody};
use clew_proxy::ProxyConfig;
use clew_security::tls::{Alpn, Listener, ServerTls, TlsServerSettings};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

type Spans = Arc<Mutex<Vec<Span>>>;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `f` on a fresh loopback port (TLS when given), HTTP/1.1 + HTTP/2 + upgrades.
async fn serve<F, Fut>(tls: Option<Arc<ServerTls>>, f: F) -> u16
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut l = Listener::bind("127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    let port = l.local_addr().port();
    tokio::spawn(async move {
        loop {
            let s = l.next().await;
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |r| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(r).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

/// An OTLP/HTTP receiver collecting every span.
async fn receiver(spans: Spans) -> u16 {
    serve(None, move |r: Request<Incoming>| {
        let spans = spans.clone();
        async move {
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let req = ExportTraceServiceRequest::decode(body).unwrap();
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    spans.lock().unwrap().extend(ss.spans);
                }
            }
            let mut resp = Response::new(full(Vec::<u8>::new()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            resp
        }
    })
    .await
}

fn attr(s: &Span, key: &str) -> Option<any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
}

fn str_attr(s: &Span, key: &str) -> Option<String> {
    match attr(s, key)? {
        any_value::Value::StringValue(v) => Some(v),
        _ => None,
    }
}

async fn wait_span(spans: &Spans, pred: impl Fn(&Span) -> bool) -> Span {
    for _ in 0..200 {
        if let Some(s) = spans.lock().unwrap().iter().find(|s| pred(s)) {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("span not exported");
}

/// Starts the proxy in process; returns the stop trigger and its task.
fn start(yaml: &str) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let cfg = ProxyConfig::parse(yaml, "test.yaml").unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        clew_proxy::run(cfg, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, task)
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("port {port} never opened");
}

fn exporter(recv: u16) -> String {
    format!(
        "exporters: {{otlphttp: {{endpoint: \"http://127.0.0.1:{recv}\", compression: none}}}}\nbatch: {{timeout: 50ms}}\n"
    )
}

/// The upstream app: `/version` answers with the HTTP version it saw, `/stream` sends one
/// chunk, waits for `go`, then sends another; `/first` answers with the first chunk of the
/// request body; `/ws` upgrades and echoes bytes; `/slow` answers after 400 ms.
async fn app(tls: Option<Arc<ServerTls>>, go: Arc<Notify>) -> u16 {
    serve(tls, move |mut r: Request<Incoming>| {
        let go = go.clone();
        async move {
            match r.uri().path() {
                "/version" => full(format!(
                    "{:?} {}",
                    r.version(),
                    r.headers()
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                ))
                .map_into_response(),
                "/stream" => {
                    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
                    tokio::spawn(async move {
                        tx.send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                            .await
                            .unwrap();
                        go.notified().await;
                        tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
                            .await
                            .unwrap();
                    });
                    let s = tokio_stream_from(rx);
                    Response::new(
                        StreamBody::new(s)
                            .map_err(|e: Infallible| match e {})
                            .boxed_unsync(),
                    )
                }
                "/first" => {
                    let body = r.body_mut();
                    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                    full(first).map_into_response()
                }
                "/ws" => {
                    let up = hyper::upgrade::on(&mut r);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(up.await.unwrap());
                        let mut buf = [0u8; 64];
                        loop {
                            let n = io.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            io.write_all(&buf[..n]).await.unwrap();
                        }
                    });
                    let mut resp = Response::new(full(""));
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("upgrade", http::HeaderValue::from_static("websocket"));
                    resp.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("Upgrade"));
                    resp
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    full("slow done").map_into_response()
                }
                _ => full("ok").map_into_response(),
            }
        }
    })
    .await
}

trait IntoResp {
    fn map_into_response(self) -> Response<ProxyBody>;
}

impl IntoResp for ProxyBody {
    fn map_into_response(self) -> Response<ProxyBody> {
        Response::new(self)
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_streaming_websocket_and_graceful_shutdown() {
    let spans: Spans = Arc::default();
    let recv = receiver(spans.clone()).await;
    let go = Arc::new(Notify::new());
    let up = app(None, go.clone()).await;
    let (h1, h2) = (free_port(), free_port());
    // Two ingress-like listeners are not possible in one config, so HTTP/2 to the upstream is
    // an egress route (h2c), HTTP/1.1 the ingress.
    let yaml = format!(
        "service: {{name: proto}}\ningress: {{endpoint: 127.0.0.1:{h1}, upstream: {{endpoint: \"http://127.0.0.1:{up}\"}}}}\negress: {{routes: [{{endpoint: 127.0.0.1:{h2}, upstream: {{endpoint: \"http://127.0.0.1:{up}\", protocol: http2}}}}]}}\nshutdown_timeout: 5s\n{}",
        exporter(recv)
    );
    let (stop, task) = start(&yaml);
    wait_port(h1).await;
    wait_port(h2).await;

    // HTTP/2 client (prior knowledge) → ingress → HTTP/1.1 app; and → egress → HTTP/2 app.
    let h2c: Client<_, http_body_util::Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let r = h2c
        .get(format!("http://127.0.0.1:{h1}/version").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).to_string();
    assert!(text.starts_with("HTTP/1.1 00-"), "{text}");
    let tid = text.split('-').nth(1).unwrap().to_string();
    let s = wait_span(&spans, |s| hex(&s.trace_id) == tid).await;
    assert_eq!(
        str_attr(&s, "network.protocol.version").as_deref(),
        Some("2")
    );
    let r = h2c
        .get(format!("http://127.0.0.1:{h2}/version").parse().unwrap())
        .await
        .unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"HTTP/2.0 00-"), "{body:?}");

    // Streaming response: the first chunk arrives before the app produces the second.
    let h1c: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build_http();
    let r = h1c
        .request(
            Request::get(format!("http://127.0.0.1:{h1}/stream"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = r.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk held back: the proxy buffers")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    go.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    let s = wait_span(&spans, |s| {
        str_attr(s, "url.path").as_deref() == Some("/stream")
    })
    .await;
    assert_eq!(
        attr(&s, "http.response.body.size"),
        Some(any_value::Value::IntValue(12))
    );

    // Streaming request: the app answers with the first chunk while the client still holds
    // the rest.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, clew_proxy::body::BoxError>>(2);
    tx.send(Ok(Frame::data(Bytes::from_static(b"part1"))))
        .await
        .unwrap();
    let req = Request::post(format!("http://127.0.0.1:{h1}/first"))
        .body(StreamBody::new(tokio_stream_from(rx)).boxed_unsync())
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), h1c.request(req))
        .await
        .expect("request body held back: the proxy buffers")
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), r.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(got, "part1");
    drop(tx);

    // WebSocket upgrade passthrough (raw bytes both ways after 101).
    let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", h1))
        .await
        .unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    ws.write_all(b"\x81\x05hello").await.unwrap();
    let mut echo = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x81\x05hello");
    drop(ws);

    // Graceful shutdown: a request in flight when SIGTERM comes still completes, and its span
    // is exported before run() returns.
    let slow = tokio::spawn({
        let h1c = h1c.clone();
        async move {
            let r = h1c
                .request(
                    Request::get(format!("http://127.0.0.1:{h1}/slow"))
                        .body(full(""))
                        .unwrap(),
                )
                .await
                .unwrap();
            (
                r.status(),
                r.into_body().collect().await.unwrap().to_bytes(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow done"[..]));
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run() did not return after shutdown")
        .unwrap();
    assert!(spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| str_attr(s, "url.path").as_deref() == Some("/slow")));
    // No new connections after shutdown.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", h1))
        .await
        .is_err());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::Ca::new("proxy test CA");
    let leaf = ca.server();
    let ca_file = certs::write(dir.path(), "ca.pem", &ca.pem);
    let cert = certs::write(dir.path(), "server.pem", &leaf.cert);
    let key = certs::write(dir.path(), "server-key.pem", &leaf.key);
    let settings = TlsServerSettings {
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        ..Default::default()
    };
    let up_tls = ServerTls::new(settings, "upstream.tls", Alpn::Http).unwrap();
    let spans: Spans = Arc::default();
    let recv = receiver(spans.clone()).await;
    let up = app(Some(up_tls), Arc::new(Notify::new())).await;
    let port = free_port();
    let yaml = format!(
        "service: {{name: tls}}\ningress:\n  endpoint: 127.0.0.1:{port}\n  tls: {{cert_file: {}, key_file: {}}}\n  upstream: {{endpoint: \"https://localhost:{up}\", tls: {{ca_file: {}}}}}\n{}",
        cert.display(),
        key.display(),
        ca_file.display(),
        exporter(recv)
    );
    let (stop, task) = start(&yaml);
    wait_port(port).await;
    let client_cfg = clew_security::tls::client_config(
        &clew_security::tls::TlsClientSettings {
            ca_file: Some(ca_file.clone()),
            ..Default::default()
        },
        "client",
        &[],
    )
    .unwrap();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_cfg)
        .https_only()
        .enable_all_versions()
        .build();
    let c: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let r = c
        .get(format!("https://localhost:{port}/version").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN h2 on the ingress");
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"HTTP/1.1 00-"), "{body:?}");
    let s = wait_span(&spans, |s| {
        str_attr(s, "url.path").as_deref() == Some("/version")
    })
    .await;
    assert_eq!(str_attr(&s, "url.scheme").as_deref(), Some("https"));
    // A plaintext client on the TLS port gets no HTTP answer.
    let plain: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/version").parse().unwrap())
        .await
        .is_err());
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Raw HTTP/1.1 exchange (`Connection: close`): the whole answer as text.
async fn raw(port: u16, request: String) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_proxy_ties_calls_to_the_only_request_in_flight() {
    let spans: Spans = Arc::default();
    let recv = receiver(spans.clone()).await;
    // The leaf reports the traceparent it got.
    let leaf = serve(None, |r: Request<Incoming>| async move {
        let tp = r
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        full(tp).map_into_response()
    })
    .await;
    let (ingress, fwd) = (free_port(), free_port());
    // The app calls the leaf through the forward proxy, without any request id.
    let app_port = serve(None, move |_r: Request<Incoming>| async move {
        let answer = raw(
            fwd,
            format!("GET http://127.0.0.1:{leaf}/leaf HTTP/1.1\r\nHost: 127.0.0.1:{leaf}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        full(body).map_into_response()
    })
    .await;
    let yaml = format!(
        "service: {{name: fwd}}\ningress: {{endpoint: 127.0.0.1:{ingress}, upstream: {{endpoint: \"http://127.0.0.1:{app_port}\"}}, forward: {{format: none, request_id: false}}}}\negress: {{forward_proxy: {{endpoint: 127.0.0.1:{fwd}}}}}\n{}",
        exporter(recv)
    );
    let (stop, task) = start(&yaml);
    wait_port(ingress).await;
    wait_port(fwd).await;
    let tid = "5bf92f3577b34da6a3ce929d0e0e4736";
    let answer = raw(
        ingress,
        format!("GET /in HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{tid}-00f067aa0ba902b7-01\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let leaf_tp = answer.split("\r\n\r\n").nth(1).unwrap().to_string();
    assert!(leaf_tp.starts_with(&format!("00-{tid}-")), "{answer}");
    let server = wait_span(&spans, |s| hex(&s.trace_id) == tid && s.kind == 2).await;
    let client = wait_span(&spans, |s| hex(&s.trace_id) == tid && s.kind == 3).await;
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        str_attr(&client, "clew.proxy.correlation").as_deref(),
        Some("single_in_flight")
    );
    assert!(
        leaf_tp.contains(&hex(&client.span_id)),
        "leaf's parent is the CLIENT span"
    );
    assert_eq!(
        str_attr(&client, "url.full"),
        Some(format!("http://127.0.0.1:{leaf}/leaf"))
    );
    // CONNECT tunnels cannot carry context: refused, and said why.
    let c = raw(
        fwd,
        format!("CONNECT 127.0.0.1:{leaf} HTTP/1.1\r\nHost: 127.0.0.1:{leaf}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(c.starts_with("HTTP/1.1 405"), "{c}");
    // An origin-form request to the forward proxy is not a proxy request.
    let o = raw(
        fwd,
        "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(o.starts_with("HTTP/1.1 400"), "{o}");
    stop.send(()).unwrap();
    task.await.unwrap();
}
