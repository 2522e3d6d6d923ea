//! TLS and mutual TLS with the real `clew` binary and certificates made by rcgen at test time:
//! OTLP/HTTP, Zipkin, remote sampling, the Tempo API and the query API/UI over HTTPS (reqwest trusting the test
//! CA), OTLP/gRPC over TLS (tonic's own TLS client), mutual TLS refusing a missing, foreign or
//! expired client certificate, certificate reload without dropping an open HTTP/2 connection, and
//! the `clew` client commands' `--ca-file`/`--cert-file`/`--key-file` flags.

use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

mod common;
use common::certs::{write, Ca, Leaf};
use common::{clew, ok, Server};

// ---------------------------------------------------------------------------------------------
// Certificates

/// Writes the server's files and a config with TLS on every listener (`client_ca` ⇒ mutual
/// TLS); returns the config path.
fn tls_config(dir: &Path, ca: &Ca, server: &Leaf, mtls: bool, reload: &str) -> PathBuf {
    write(dir, "server.pem", &server.cert);
    write(dir, "server-key.pem", &server.key);
    write(dir, "ca.pem", &ca.pem);
    let client_ca = if mtls { ", client_ca_file: ca.pem" } else { "" };
    let tls = format!(
        "{{cert_file: server.pem, key_file: server-key.pem{client_ca}, reload_interval: {reload}}}"
    );
    // Relative paths: resolved against the config file's folder. (The harness moves every
    // endpoint to a free port with its flags.)
    write(
        dir,
        "clew.yaml",
        &format!(
            "receivers:
  otlp:
    protocols:
      grpc:
        tls: {tls}
      http:
        tls: {tls}
  zipkin:
    endpoint: 127.0.0.1:9411
    tls: {tls}
query:
  tls: {tls}
tempo:
  tls: {tls}
extensions:
  jaeger_remote_sampling:
    http:
      endpoint: 127.0.0.1:5778
      tls: {tls}
"
        ),
    )
}

fn https(url: &str) -> String {
    url.replacen("http://", "https://", 1)
}

/// reqwest trusting only `ca`, presenting `client` when given.
fn http_client(ca: &str, client: Option<&Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(c) = client {
        b = b.identity(
            reqwest::Identity::from_pem(format!("{}{}", c.cert, c.key).as_bytes()).unwrap(),
        );
    }
    b.build().unwrap()
}

/// tonic's own TLS client (not Clew's), verifying the server as `localhost`.
async fn grpc_client(
    url: &str,
    ca: &str,
    client: Option<&Leaf>,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    let ch = Endpoint::from_shared(https(url))
        .unwrap()
        .tls_config(tls)?
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(TraceServiceClient::new(ch))
}

// ---------------------------------------------------------------------------------------------
// Spans

fn trace_id(n: u8) -> Vec<u8> {
    let mut t = vec![0x7c; 16];
    t[15] = n;
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn request(n: u8, service: &str) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id(n),
                    span_id: vec![n; 8],
                    name: "GET /secure".into(),
                    kind: 2,
                    start_time_unix_nano: now,
                    end_time_unix_nano: now + 1_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post_otlp(c: &reqwest::Client, http: &str, n: u8) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{}/v1/traces", https(http)))
        .header("content-type", "application/x-protobuf")
        .body(request(n, "tls-http").encode_to_vec())
        .send()
        .await
}

/// Waits until the query API (over HTTPS) has the trace; returns its service name.
async fn wait_trace(c: &reqwest::Client, query: &str, n: u8) -> String {
    let url = format!("{}/api/traces/{}", https(query), hex(&trace_id(n)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&url).send().await.unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            let p = &v["data"][0]["processes"];
            if let Some(s) = p
                .as_object()
                .and_then(|m| m.values().next())
                .and_then(|p| p["serviceName"].as_str())
            {
                return s.to_string();
            }
        }
        assert!(Instant::now() < deadline, "trace {n} not found at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------

// Multi-threaded: `Server::terminate` blocks its thread while the server's graceful HTTP/2
// shutdown waits for the open gRPC connections to acknowledge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Clew test CA");
    let cfg = tls_config(dir.path(), &ca, &ca.server(), false, "30s");
    let s = Server::start_with(&dir.path().join("data"), Some(&cfg));
    let c = http_client(&ca.pem, None);

    // OTLP/HTTP.
    let r = post_otlp(&c, &s.http, 1).await.unwrap();
    assert_eq!(r.status(), 200);
    // OTLP/gRPC.
    let mut g = grpc_client(&s.grpc, &ca.pem, None).await.unwrap();
    g.export(request(2, "tls-grpc")).await.unwrap();
    // Zipkin.
    let zipkin = https(&s.zipkin);
    let zspan = serde_json::json!([{
        "traceId": hex(&trace_id(3)),
        "id": "0303030303030303",
        "name": "get /zipkin",
        "timestamp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64,
        "duration": 1000,
        "localEndpoint": {"serviceName": "tls-zipkin"}
    }]);
    let r = c
        .post(format!("{zipkin}/api/v2/spans"))
        .json(&zspan)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // All three queryable over HTTPS.
    assert_eq!(wait_trace(&c, &s.query, 1).await, "tls-http");
    assert_eq!(wait_trace(&c, &s.query, 2).await, "tls-grpc");
    assert_eq!(wait_trace(&c, &s.query, 3).await, "tls-zipkin");
    // Remote sampling.
    let r = c
        .get(format!("{}/sampling?service=tls-http", https(&s.sampling)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The Tempo API (Grafana's Tempo data source), over HTTPS: the trace as Tempo's protobuf.
    let r = c
        .get(format!(
            "{}/api/v2/traces/{}",
            https(&s.tempo),
            hex(&trace_id(1))
        ))
        .header("accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v2 = clew_query::tempo::proto::TraceByIdResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        v2.trace.unwrap().resource_spans[0].scope_spans[0].spans[0].span_id,
        vec![1u8; 8]
    );
    assert!(reqwest::Client::new()
        .get(format!("{}/api/echo", s.tempo))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());
    // The web UI, unchanged (relative URLs), over HTTPS.
    let r = c.get(format!("{}/", https(&s.query))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")));
    let html = r.text().await.unwrap();
    assert!(!html.contains("http://"), "the UI must use relative URLs");

    // Plain HTTP to a TLS port gets no answer; a client not trusting the CA refuses the server.
    assert!(reqwest::Client::new()
        .get(format!("{}/api/services", s.query))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());
    let other = Ca::new("Some other CA");
    let e = http_client(&other.pem, None)
        .get(format!("{}/api/services", https(&s.query)))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    let refused = match grpc_client(&s.grpc, &other.pem, None).await {
        Err(_) => true,
        Ok(mut g) => g.export(request(9, "x")).await.is_err(),
    };
    assert!(refused, "a gRPC client not trusting the CA got through");
    assert_eq!(s.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_missing_foreign_and_expired_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Clew test CA");
    let cfg = tls_config(dir.path(), &ca, &ca.server(), true, "30s");
    let s = Server::start_with(&dir.path().join("data"), Some(&cfg));

    let good = ca.leaf("checkout", &["checkout.shop.internal"], true, false);
    let foreign = Ca::new("Mallory CA").leaf("checkout", &["checkout.shop.internal"], true, false);
    let expired = ca.leaf("checkout", &["checkout.shop.internal"], true, true);

    for (what, client) in [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&foreign)),
        ("an expired certificate", Some(&expired)),
    ] {
        let c = http_client(&ca.pem, client);
        assert!(
            post_otlp(&c, &s.http, 10).await.is_err(),
            "OTLP/HTTP accepted {what}"
        );
        assert!(
            c.get(format!("{}/api/services", https(&s.query)))
                .send()
                .await
                .is_err(),
            "query API accepted {what}"
        );
        // TLS 1.3: the client finishes its handshake before the server checks the certificate,
        // so the refusal may come at connect or at the first request.
        let refused = match grpc_client(&s.grpc, &ca.pem, client).await {
            Err(_) => true,
            Ok(mut g) => g.export(request(10, "nope")).await.is_err(),
        };
        assert!(refused, "OTLP/gRPC accepted {what}");
    }

    // A good certificate: accepted on every port, and the spans are queryable.
    let c = http_client(&ca.pem, Some(&good));
    assert_eq!(post_otlp(&c, &s.http, 11).await.unwrap().status(), 200);
    let mut g = grpc_client(&s.grpc, &ca.pem, Some(&good)).await.unwrap();
    g.export(request(12, "mtls-grpc")).await.unwrap();
    assert_eq!(wait_trace(&c, &s.query, 11).await, "tls-http");
    assert_eq!(wait_trace(&c, &s.query, 12).await, "mtls-grpc");
    assert_eq!(
        c.get(format!("{}/sampling?service=x", https(&s.sampling)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Nothing refused was stored.
    let r = c
        .get(format!(
            "{}/api/traces/{}",
            https(&s.query),
            hex(&trace_id(10))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The client commands with their TLS flags.
    let files = |l: &Leaf, name: &str| {
        (
            write(dir.path(), &format!("{name}.pem"), &l.cert),
            write(dir.path(), &format!("{name}-key.pem"), &l.key),
        )
    };
    let (cert, key) = files(&good, "cli");
    let ca_file = dir.path().join("ca.pem");
    let flags = [
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--cert-file",
        cert.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ];
    let out = clew(
        &[
            &[
                "demo",
                "--endpoint",
                &https(&s.grpc),
                "--traces",
                "3",
                "--rate",
                "0",
            ][..],
            &flags,
        ]
        .concat(),
    );
    let text = ok(&out, "clew demo over mTLS");
    assert!(text.contains("3/3 traces sent"), "{text}");
    let q = https(&s.query);
    let out = clew(
        &[
            &["search", "--query", &q, "--service", "frontend"][..],
            &flags,
        ]
        .concat(),
    );
    let text = ok(&out, "clew search over mTLS");
    assert!(text.contains("frontend"), "{text}");
    let out = clew(&[&["trace", &hex(&trace_id(12)), "--query", &q][..], &flags].concat());
    assert!(ok(&out, "clew trace over mTLS").contains("GET /secure"));
    let out = clew(&[&["doctor", "--endpoint", &q][..], &flags].concat());
    ok(&out, "clew doctor over mTLS");
    // Without the client certificate, and with TLS flags on an http:// URL: clear errors.
    let out = clew(&[
        "search",
        "--query",
        &q,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let out = clew(&[
        "search",
        "--query",
        &s.query,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("https://"), "{err}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("First CA");
    let cfg = tls_config(dir.path(), &ca, &ca.server(), false, "200ms");
    let s = Server::start_with(&dir.path().join("data"), Some(&cfg));

    // An HTTP/2 connection (gRPC) made with the first certificate.
    let mut open = grpc_client(&s.grpc, &ca.pem, None).await.unwrap();
    open.export(request(20, "before")).await.unwrap();

    // Rotate to a certificate of a second CA, as cert-manager would: new files renamed over the
    // old ones.
    let ca2 = Ca::new("Second CA");
    let next = ca2.server();
    let tmp_key = write(dir.path(), "next-key.pem", &next.key);
    let tmp_cert = write(dir.path(), "next.pem", &next.cert);
    std::fs::rename(tmp_key, dir.path().join("server-key.pem")).unwrap();
    std::fs::rename(tmp_cert, dir.path().join("server.pem")).unwrap();

    // New connections get the new certificate (within a few reload intervals)…
    let c2 = http_client(&ca2.pem, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = c2.get(format!("{}/ready", https(&s.query))).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fresh = grpc_client(&s.grpc, &ca2.pem, None).await.unwrap();
    fresh.export(request(21, "after")).await.unwrap();
    // …a new connection trusting only the old CA is refused…
    let old = http_client(&ca.pem, None);
    assert!(old
        .get(format!("{}/ready", https(&s.query)))
        .send()
        .await
        .is_err());
    // …and the connection opened before the rotation still works (tonic would have to
    // reconnect otherwise, which the first CA can no longer verify).
    open.export(request(22, "still-open")).await.unwrap();
    assert_eq!(wait_trace(&c2, &s.query, 22).await, "still-open");
    let log = std::fs::read_to_string(dir.path().join("data.log")).unwrap();
    assert!(
        log.contains("TLS certificate files changed: reloaded"),
        "{log}"
    );
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn broken_tls_settings_stop_start_up_with_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let cfg = tls_config(dir.path(), &ca, &ca.server(), true, "30s");
    // The key of another certificate.
    write(dir.path(), "server-key.pem", &ca.server().key);
    let out = clew(&["config", "check", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("key `receivers.otlp.protocols.grpc.tls.key_file`")
            && err.contains("is not the private key")
            && err.contains("fix:"),
        "{err}"
    );
    let out = clew(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key_file"));
}
