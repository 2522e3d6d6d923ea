//! `clew proxy` as a real process between real HTTP servers on loopback, exporting to a real
//! `clew serve`: a legacy app that knows nothing of tracing (it only passes `X-Request-ID` on)
//! behind the ingress, calling a downstream through an egress route. The stored trace must be
//! whole, headers translated both ways, broken context never forwarded, bad upstreams answered
//! with 502/504 and error spans, and the config checked with file, key and fix.

mod common;
use common::{free_port, Server, BIN};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `clew proxy`; killed on drop unless terminated.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Starts `clew proxy --config` and waits until every port in `ports` accepts.
    fn start(config: &Path, ports: &[u16]) -> Self {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["proxy", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut p = Proxy { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ports
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
            {
                return p;
            }
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("proxy exited during start-up ({st}): {}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not start: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the proxy must exit 0 after exporting what it holds.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "proxy exit {st}: {}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "proxy did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(router: Router) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(l, router).await.unwrap();
    });
    port
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

fn header(h: &HeaderMap, k: &str) -> Option<String> {
    h.get(k).map(|v| v.to_str().unwrap().to_string())
}

/// The downstream service: records the headers of every call.
async fn downstream(seen: Seen) -> u16 {
    serve(
        Router::new()
            .route(
                "/charge",
                get(|State(seen): State<Seen>, h: HeaderMap| async move {
                    seen.lock().unwrap().push(h);
                    "charged"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .with_state(seen),
    )
    .await
}

/// The legacy app: no tracing at all; it logs the request id and passes it on to the
/// downstream (through the sidecar's egress route), as many old services do.
async fn legacy_app(seen: Seen, egress: u16) -> u16 {
    let client = reqwest::Client::new();
    serve(
        Router::new()
            .route(
                "/orders/{id}",
                get(move |State(seen): State<Seen>, h: HeaderMap| {
                    let client = client.clone();
                    async move {
                        let rid = header(&h, "x-request-id").unwrap_or_default();
                        seen.lock().unwrap().push(h);
                        let r = client
                            .get(format!("http://127.0.0.1:{egress}/charge"))
                            .header("X-Request-ID", rid)
                            .send()
                            .await
                            .unwrap();
                        r.text().await.unwrap()
                    }
                }),
            )
            .route(
                "/echo",
                get(|State(seen): State<Seen>, h: HeaderMap| async move {
                    seen.lock().unwrap().push(h);
                    "ok"
                }),
            )
            .with_state(seen),
    )
    .await
}

/// Polls the Jaeger API until the trace has `n` spans.
async fn spans(server: &Server, trace_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/api/traces/{trace_id}", server.query)).await {
            if r.status().is_success() {
                let v: Value = r.json().await.unwrap();
                let s = v["data"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if s.len() >= n {
                    return s;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} did not reach {n} spans"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tag(span: &Value, key: &str) -> Option<Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| t["value"].clone())
}

fn parent(span: &Value) -> Option<String> {
    span["references"]
        .as_array()?
        .iter()
        .find(|r| r["refType"] == "CHILD_OF")
        .map(|r| r["spanID"].as_str().unwrap().to_string())
}

fn kind(span: &Value) -> String {
    tag(span, "span.kind")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_app_behind_the_sidecar_joins_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("clew"));
    let app_seen: Seen = Arc::default();
    let down_seen: Seen = Arc::default();
    let down = downstream(down_seen.clone()).await;
    let (ingress, egress) = (free_port(), free_port());
    let app = legacy_app(app_seen.clone(), egress).await;
    let cfg = write_config(
        dir.path(),
        "proxy.yaml",
        &format!(
            r#"
service: {{name: legacy-orders, resource: {{deployment.environment.name: test}}}}
ingress:
  endpoint: 127.0.0.1:{ingress}
  upstream: {{endpoint: "http://127.0.0.1:{app}"}}
  forward: {{format: b3}}
  routes: ["/orders/{{id}}", "/echo"]
egress:
  routes:
    - endpoint: 127.0.0.1:{egress}
      upstream: {{endpoint: "http://127.0.0.1:{down}"}}
  destinations:
    - hosts: ["127.0.0.1"]
      format: jaeger
      baggage: {{allow: [tenant]}}
exporters:
  otlp: {{endpoint: "{grpc}", tls: {{insecure: true}}}}
batch: {{timeout: 100ms}}
"#,
            grpc = server.grpc.trim_start_matches("http://")
        ),
    );
    let proxy = Proxy::start(&cfg, &[ingress, egress]);
    let client = reqwest::Client::new();

    // 1. A W3C client: SERVER span → CLIENT span, one trace; b3 to the app, Jaeger downstream.
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = client
        .get(format!("http://127.0.0.1:{ingress}/orders/42"))
        .header("traceparent", format!("00-{tid}-{client_span}-01"))
        .header("baggage", "tenant=acme,user.email=a%40example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "charged");
    let trace = spans(&server, tid, 2).await;
    let server_span = trace
        .iter()
        .find(|s| kind(s) == "server")
        .expect("SERVER span");
    let client_span_rec = trace
        .iter()
        .find(|s| kind(s) == "client")
        .expect("CLIENT span");
    assert_eq!(server_span["operationName"], "GET /orders/{id}");
    assert_eq!(parent(server_span).as_deref(), Some(client_span));
    let sid = server_span["spanID"].as_str().unwrap();
    assert_eq!(parent(client_span_rec).as_deref(), Some(sid));
    assert_eq!(tag(server_span, "http.route").unwrap(), "/orders/{id}");
    assert_eq!(tag(server_span, "http.response.status_code").unwrap(), 200);
    assert_eq!(tag(server_span, "url.path").unwrap(), "/orders/42");
    assert_eq!(
        tag(server_span, "clew.proxy.context.format").unwrap(),
        "tracecontext"
    );
    assert_eq!(tag(server_span, "http.response.body.size").unwrap(), 7);
    assert_eq!(tag(server_span, "client.address").unwrap(), "127.0.0.1");
    assert_eq!(
        tag(client_span_rec, "clew.proxy.correlation").unwrap(),
        "request_id"
    );
    assert_eq!(
        tag(client_span_rec, "clew.proxy.context.format").unwrap(),
        "jaeger"
    );
    assert_eq!(
        tag(client_span_rec, "http.response.status_code").unwrap(),
        200
    );
    // The app got B3 naming the SERVER span, no W3C header, the request id = trace id.
    let app_h = app_seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(header(&app_h, "b3").unwrap(), format!("{tid}-{sid}-1"));
    assert!(app_h.get("traceparent").is_none());
    assert_eq!(header(&app_h, "x-request-id").unwrap(), tid);
    // The downstream got Jaeger naming the CLIENT span, baggage filtered by the policy.
    let down_h = down_seen.lock().unwrap().last().cloned().unwrap();
    let cid = client_span_rec["spanID"].as_str().unwrap();
    assert_eq!(
        header(&down_h, "uber-trace-id").unwrap(),
        format!("{tid}:{cid}:0:1")
    );
    assert_eq!(header(&down_h, "uberctx-tenant").as_deref(), Some("acme"));
    assert!(
        down_h.get("uberctx-user.email").is_none(),
        "PII baggage left"
    );
    assert!(down_h.get("traceparent").is_none() && down_h.get("b3").is_none());

    // 2. Each incoming format is understood and continued.
    for (h, v, fmt) in [
        ("b3", format!("{tid}-{client_span}-1"), "b3"),
        (
            "uber-trace-id",
            format!("{tid}:{client_span}:0:1"),
            "jaeger",
        ),
    ] {
        let before = app_seen.lock().unwrap().len();
        let r = client
            .get(format!("http://127.0.0.1:{ingress}/echo"))
            .header(h, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let app_h = app_seen.lock().unwrap()[before].clone();
        let b3 = header(&app_h, "b3").unwrap();
        assert!(b3.starts_with(tid), "{fmt}: {b3}");
    }

    // 3. Malformed context: a new trace, the broken header never reaches the app.
    let before = app_seen.lock().unwrap().len();
    let r = client
        .get(format!("http://127.0.0.1:{ingress}/echo"))
        .header("traceparent", "00-zzzz-broken-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let app_h = app_seen.lock().unwrap()[before].clone();
    assert!(app_h.get("traceparent").is_none());
    let new_tid = header(&app_h, "x-request-id").unwrap();
    assert_eq!(new_tid.len(), 32);
    assert!(header(&app_h, "b3").unwrap().starts_with(&new_tid));
    let t = spans(&server, &new_tid, 1).await;
    assert_eq!(
        tag(&t[0], "clew.proxy.context.malformed").unwrap(),
        "tracecontext"
    );
    assert!(
        parent(&t[0]).is_none(),
        "a malformed parent must not be used"
    );

    // 4. No context, but an X-Correlation-ID: a stable trace id derived from it.
    let before = app_seen.lock().unwrap().len();
    client
        .get(format!("http://127.0.0.1:{ingress}/echo"))
        .header("X-Correlation-ID", "order-batch-7")
        .send()
        .await
        .unwrap();
    let app_h = app_seen.lock().unwrap()[before].clone();
    assert!(
        app_h.get("x-request-id").is_none(),
        "an incoming request id is kept, not added"
    );
    assert_eq!(header(&app_h, "x-correlation-id").unwrap(), "order-batch-7");
    proxy.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_upstreams_give_502_and_504_with_error_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("clew"));
    let down = downstream(Arc::default()).await;
    let dead = free_port();
    let (ingress, egress) = (free_port(), free_port());
    let cfg = write_config(
        dir.path(),
        "proxy.yaml",
        &format!(
            r#"
service: {{name: legacy-bad}}
ingress:
  endpoint: 127.0.0.1:{ingress}
  upstream: {{endpoint: "http://127.0.0.1:{dead}"}}
egress:
  routes:
    - endpoint: 127.0.0.1:{egress}
      upstream: {{endpoint: "http://127.0.0.1:{down}"}}
  timeouts: {{response_header: 300ms}}
exporters:
  otlp: {{endpoint: "{grpc}", tls: {{insecure: true}}}}
batch: {{timeout: 100ms}}
"#,
            grpc = server.grpc.trim_start_matches("http://")
        ),
    );
    let proxy = Proxy::start(&cfg, &[ingress, egress]);
    let client = reqwest::Client::new();
    let t502 = "11111111111111111111111111111111";
    let r = client
        .get(format!("http://127.0.0.1:{ingress}/x"))
        .header("traceparent", format!("00-{t502}-2222222222222222-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let t504 = "33333333333333333333333333333333";
    let started = Instant::now();
    let r = client
        .get(format!("http://127.0.0.1:{egress}/slow"))
        .header("traceparent", format!("00-{t504}-4444444444444444-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout not applied"
    );
    for (tid, code, kind_, err) in [
        (t502, 502, "server", "connect_error"),
        (t504, 504, "client", "timeout"),
    ] {
        let s = spans(&server, tid, 1).await;
        assert_eq!(kind(&s[0]), kind_);
        assert_eq!(tag(&s[0], "http.response.status_code").unwrap(), code);
        assert_eq!(tag(&s[0], "error.type").unwrap(), err);
        assert_eq!(
            tag(&s[0], "error").unwrap(),
            true,
            "span not marked as error: {}",
            s[0]
        );
    }
    proxy.terminate();
}

#[test]
fn check_config_names_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let base = "service: {name: a}\nexporters: {otlp: {endpoint: 127.0.0.1:4317, tls: {insecure: true}}}\n";
    let cases = [
        (
            "ingress: {endpoint: 127.0.0.1:8080, upstream: {endpoint: \"127.0.0.1:8081\"}}\n",
            "ingress.upstream.endpoint",
        ),
        (
            "ingress: {endpoint: 127.0.0.1:8080, upstream: {endpoint: \"http://127.0.0.1:8081\"}, tls: {cert_file: nope.pem, key_file: nope-key.pem}}\n",
            "ingress.tls.cert_file",
        ),
        (
            "ingress: {endpoint: 127.0.0.1:8080, upstream: {endpoint: \"http://127.0.0.1:8081\"}, extract: [w3c]}\n",
            "ingress.extract[0]",
        ),
        ("ingres: {}\n", "ingres"),
    ];
    for (i, (extra, key)) in cases.iter().enumerate() {
        let p = write_config(
            dir.path(),
            &format!("bad{i}.yaml"),
            &format!("{base}{extra}"),
        );
        let out = Command::new(BIN)
            .args(["proxy", "check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: accepted");
        assert!(err.contains(&format!("bad{i}.yaml")), "{err}");
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains("fix"), "{err}");
    }
    let good = write_config(
        dir.path(),
        "good.yaml",
        &format!("{base}ingress: {{endpoint: 127.0.0.1:8080, upstream: {{endpoint: \"http://127.0.0.1:8081\"}}}}\n"),
    );
    let out = Command::new(BIN)
        .args(["proxy", "--config"])
        .arg(&good)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

/// The sidecar example of docs/proxy.md is a config `clew proxy` accepts.
#[test]
fn docs_example_config_is_valid() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/proxy.md"))
            .unwrap();
    let start = doc
        .find("```yaml\n# proxy.yaml")
        .expect("docs/proxy.md has the `# proxy.yaml` example");
    let body = &doc[start + "```yaml\n".len()..];
    let yaml = &body[..body.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "proxy.yaml", yaml);
    let out = Command::new(BIN)
        .args(["proxy", "check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // examples/config/proxy.yaml is the same file (the issue's example: ingress on :8080 in front
    // of the app on :8081, spans to :4317), so the two cannot drift apart.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/proxy.yaml");
    assert_eq!(
        std::fs::read_to_string(&example).unwrap(),
        yaml,
        "examples/config/proxy.yaml differs from the docs/proxy.md example"
    );
    let out = Command::new(BIN)
        .args(["proxy", "check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
