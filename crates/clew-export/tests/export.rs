//! Exporters against a real OTLP receiver (tonic gRPC and axum HTTP on loopback ports).

mod common;

use clew_export::{
    Compression, DebugConfig, DebugExporter, ExporterMetrics, OtlpExporter, OtlpExporterConfig,
    Protocol, Verbosity,
};
use clew_model::{SinkError, SpanSink};
use clew_security::tls::TlsServerSettings;
use common::{batch, fast_retry, metric, Answer, Receiver};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn setup() -> (tempfile::TempDir, ExporterMetrics, Registry) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("clew_export=debug")
        .try_init();
    let metrics = ExporterMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    (tempfile::tempdir().unwrap(), metrics, registry)
}

fn config(r: &Receiver, protocol: Protocol) -> OtlpExporterConfig {
    let mut cfg = OtlpExporterConfig::new(match protocol {
        Protocol::Grpc => r.grpc_url(),
        Protocol::Http => r.http_url(),
    });
    fast_retry(&mut cfg);
    cfg
}

fn names(prefix: &str, batches: usize, per: usize) -> Vec<String> {
    (0..batches)
        .flat_map(|b| (0..per).map(move |i| format!("{prefix}{b}-{i}")))
        .collect()
}

async fn send(exp: &OtlpExporter, tenant: &str, prefix: &str, batches: usize, per: usize) {
    for b in 0..batches {
        exp.consume(batch(tenant, &format!("{prefix}{b}"), per))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn both_protocols_deliver_in_order_with_gzip_headers_and_tenant() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        for compression in [Compression::Gzip, Compression::None] {
            let (dir, metrics, registry) = setup();
            let r = Receiver::start().await;
            let mut cfg = config(&r, protocol);
            cfg.compression = compression;
            cfg.headers.insert("x-api-key".into(), "secret-1".into());
            let exp = OtlpExporter::start("otlp/t", protocol, &cfg, dir.path(), &metrics).unwrap();
            send(&exp, "acme", "b", 40, 5).await;
            let got = r.wait_accepted(200, WAIT).await;
            assert_eq!(got, names("b", 40, 5), "{protocol:?} {compression:?}");
            for req in r.state.requests() {
                assert_eq!(req.header("x-scope-orgid"), Some("acme"));
                assert_eq!(req.header("x-api-key"), Some("secret-1"));
                let enc = match protocol {
                    Protocol::Grpc => req.header("grpc-encoding"),
                    Protocol::Http => req.header("content-encoding"),
                };
                match compression {
                    Compression::Gzip => assert_eq!(enc, Some("gzip"), "{protocol:?}"),
                    Compression::None => assert_ne!(enc, Some("gzip"), "{protocol:?}"),
                }
            }
            // Wait for the acks to be recorded.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                metric(
                    &registry,
                    "clew_exporter_sent_spans_total{exporter=\"otlp/t\"}"
                ),
                200.0
            );
            assert_eq!(exp.queued_batches(), 0);
            assert_eq!(
                metric(
                    &registry,
                    "clew_exporter_queue_size_bytes{exporter=\"otlp/t\"}"
                ),
                0.0
            );
            exp.shutdown().await;
        }
    }
}

#[tokio::test]
async fn tenants_keep_their_own_header_and_batches_merge_per_tenant() {
    let (dir, metrics, _registry) = setup();
    let mut r = Receiver::start().await;
    r.stop().await; // queue up while down, so consecutive batches merge
    let cfg = config(&r, Protocol::Grpc);
    let exp = OtlpExporter::start("otlp/m", Protocol::Grpc, &cfg, dir.path(), &metrics).unwrap();
    send(&exp, "t1", "a", 5, 2).await;
    send(&exp, "t2", "b", 5, 2).await;
    send(&exp, "t1", "c", 1, 2).await;
    r.restart().await;
    let got = r.wait_accepted(22, WAIT).await;
    let mut want = names("a", 5, 2);
    want.extend(names("b", 5, 2));
    want.extend(names("c", 1, 2));
    assert_eq!(got, want);
    let reqs: Vec<_> = r
        .state
        .requests()
        .into_iter()
        .filter(|q| q.answer == Answer::Ok)
        .collect();
    for q in &reqs {
        let tenant = q.header("x-scope-orgid").unwrap();
        let first = &q.span_names()[0];
        assert_eq!(tenant, if first.starts_with('b') { "t2" } else { "t1" });
    }
    assert!(
        reqs.len() <= 4,
        "queued batches merge: {} requests",
        reqs.len()
    );
    exp.shutdown().await;
}

#[tokio::test]
async fn grpc_unavailable_and_exhausted_honour_retry_info() {
    let (dir, metrics, registry) = setup();
    let r = Receiver::start().await;
    r.script([
        Answer::Unavailable(Some(Duration::from_millis(400))),
        Answer::Exhausted(Some(Duration::from_millis(300))),
        Answer::Unavailable(None),
    ]);
    let cfg = config(&r, Protocol::Grpc);
    let exp = OtlpExporter::start("otlp/r", Protocol::Grpc, &cfg, dir.path(), &metrics).unwrap();
    send(&exp, "acme", "x", 3, 1).await;
    let got = r.wait_accepted(3, WAIT).await;
    assert_eq!(got, names("x", 3, 1), "order kept through retries");
    let reqs = r.state.requests();
    assert!(reqs.len() >= 4);
    let gap1 = reqs[1].at - reqs[0].at;
    let gap2 = reqs[2].at - reqs[1].at;
    assert!(
        gap1 >= Duration::from_millis(400),
        "RetryInfo honoured: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(300),
        "RetryInfo honoured: {gap2:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metric(
            &registry,
            "clew_exporter_send_retries_total{exporter=\"otlp/r\"}"
        ),
        3.0
    );
    exp.shutdown().await;
}

#[tokio::test]
async fn http_503_and_429_honour_retry_after() {
    let (dir, metrics, _registry) = setup();
    let r = Receiver::start().await;
    r.script([
        Answer::Unavailable(Some(Duration::from_secs(1))),
        Answer::Exhausted(None),
    ]);
    let cfg = config(&r, Protocol::Http);
    let exp = OtlpExporter::start("otlphttp", Protocol::Http, &cfg, dir.path(), &metrics).unwrap();
    send(&exp, "acme", "h", 2, 3).await;
    let got = r.wait_accepted(6, WAIT).await;
    assert_eq!(got, names("h", 2, 3));
    let reqs = r.state.requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After honoured: {gap:?}"
    );
    exp.shutdown().await;
}

#[tokio::test]
async fn http_503_and_429_honour_retry_after_as_http_date() {
    let (dir, metrics, _registry) = setup();
    let r = Receiver::start().await;
    // HTTP-dates have one-second resolution: 3 s ahead is at least 2 s once truncated.
    let until = std::time::SystemTime::now() + Duration::from_secs(3);
    r.script([
        Answer::UnavailableUntil(until),
        // A date already past means "retry now": the (20 ms) backoff applies.
        Answer::ExhaustedUntil(std::time::SystemTime::now() - Duration::from_secs(60)),
    ]);
    let cfg = config(&r, Protocol::Http);
    let exp = OtlpExporter::start("otlphttp", Protocol::Http, &cfg, dir.path(), &metrics).unwrap();
    send(&exp, "acme", "d", 1, 2).await;
    let got = r.wait_accepted(2, WAIT).await;
    assert_eq!(got, names("d", 1, 2));
    let reqs = r.state.requests();
    assert_eq!(reqs.len(), 3, "503, 429, then accepted");
    let first_wait = reqs[1].at - reqs[0].at;
    assert!(
        first_wait >= Duration::from_millis(1500),
        "the HTTP-date Retry-After was honoured: waited {first_wait:?}"
    );
    let second_wait = reqs[2].at - reqs[1].at;
    assert!(
        second_wait < Duration::from_millis(1500),
        "a past HTTP-date does not add a wait: {second_wait:?}"
    );
    exp.shutdown().await;
}

#[test]
fn retry_after_parses_seconds_and_all_http_date_forms() {
    use clew_export::parse_retry_after_at;
    // 1994-11-06T08:49:37Z, RFC 9110's example.
    let base = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
    let now = base - Duration::from_secs(30);
    for v in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(
            parse_retry_after_at(v, now),
            Some(Duration::from_secs(30)),
            "{v}"
        );
    }
    assert_eq!(
        parse_retry_after_at(" 7 ", now),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        parse_retry_after_at(
            "Sun, 06 Nov 1994 08:49:37 GMT",
            base + Duration::from_secs(5)
        ),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after_at("soon", now), None);
    assert_eq!(parse_retry_after_at("-3", now), None);
}

#[tokio::test]
async fn permanent_errors_and_partial_success_are_dropped_and_counted() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let (dir, metrics, registry) = setup();
        let r = Receiver::start().await;
        // gRPC RESOURCE_EXHAUSTED without RetryInfo is permanent too (OTLP spec); HTTP 429 is not.
        let mut script = vec![Answer::Invalid, Answer::Partial(2)];
        if protocol == Protocol::Grpc {
            script.push(Answer::Exhausted(None));
        }
        let dropped = script.len() - 1;
        r.script(script);
        let mut cfg = config(&r, protocol);
        // One batch per request, so that each meets its scripted answer.
        cfg.sending_queue.max_request_bytes = 1;
        let exp = OtlpExporter::start("otlp/p", protocol, &cfg, dir.path(), &metrics).unwrap();
        send(&exp, "acme", "p", dropped + 2, 4).await;
        // Only the refused batches are missing; the partially accepted one arrived.
        tokio::time::timeout(WAIT, async {
            while exp.queued_batches() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        let got = r.state.accepted_names();
        let mut want = names("p", dropped + 2, 4);
        want.drain(..4); // the first batch: INVALID_ARGUMENT / 400
        if protocol == Protocol::Grpc {
            want.drain(4..8); // the third: RESOURCE_EXHAUSTED without RetryInfo
        }
        assert_eq!(got, want, "{protocol:?}");
        assert_eq!(
            r.state.requests().len(),
            dropped + 2,
            "no retries of permanent errors"
        );
        let failed = |reason: &str| {
            metric(
                &registry,
                &format!(
                    "clew_exporter_send_failed_spans_total{{exporter=\"otlp/p\",reason=\"{reason}\"}}"
                ),
            )
        };
        assert_eq!(failed("permanent"), 4.0 * dropped as f64, "{protocol:?}");
        assert_eq!(failed("partial"), 2.0);
        exp.shutdown().await;
    }
}

#[tokio::test]
async fn max_elapsed_time_drops_after_retrying() {
    let (dir, metrics, registry) = setup();
    let mut r = Receiver::start().await;
    let mut cfg = config(&r, Protocol::Http);
    r.stop().await;
    cfg.retry_on_failure.max_elapsed_time = Duration::from_millis(300);
    let exp = OtlpExporter::start("otlp/e", Protocol::Http, &cfg, dir.path(), &metrics).unwrap();
    send(&exp, "acme", "e", 1, 3).await;
    tokio::time::timeout(WAIT, async {
        while exp.queued_batches() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        metric(
            &registry,
            "clew_exporter_send_failed_spans_total{exporter=\"otlp/e\",reason=\"expired\"}"
        ),
        3.0
    );
    exp.shutdown().await;
}

#[tokio::test]
async fn full_queue_refuses_with_overloaded_and_counts() {
    let (dir, metrics, registry) = setup();
    let mut r = Receiver::start().await;
    let mut cfg = config(&r, Protocol::Grpc);
    r.stop().await;
    cfg.sending_queue.storage.max_bytes = 4096;
    let exp = OtlpExporter::start("otlp/f", Protocol::Grpc, &cfg, dir.path(), &metrics).unwrap();
    let mut accepted = 0;
    let err = loop {
        match exp.consume(batch("acme", &format!("f{accepted}"), 3)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000);
    };
    assert!(matches!(err, SinkError::Overloaded { .. }), "{err:?}");
    assert!(accepted > 3);
    assert_eq!(
        metric(
            &registry,
            "clew_exporter_enqueue_failed_spans_total{exporter=\"otlp/f\"}"
        ),
        3.0
    );
    assert!(
        metric(
            &registry,
            "clew_exporter_queue_size_bytes{exporter=\"otlp/f\"}"
        ) > 3000.0
    );
    assert_eq!(
        metric(
            &registry,
            "clew_exporter_queue_capacity_bytes{exporter=\"otlp/f\"}"
        ),
        4096.0
    );
    // Once the destination is back the queue drains and takes batches again.
    r.restart().await;
    r.wait_accepted(accepted * 3, WAIT).await;
    tokio::time::timeout(WAIT, async {
        while exp.consume(batch("acme", "late", 3)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    exp.shutdown().await;
}

#[tokio::test]
async fn restart_resends_pending_and_loses_nothing_acknowledged() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let (dir, metrics, _registry) = setup();
        let mut r = Receiver::start().await;
        let cfg = config(&r, protocol);
        let exp = OtlpExporter::start("otlp/d", protocol, &cfg, dir.path(), &metrics).unwrap();
        send(&exp, "acme", "a", 10, 2).await;
        r.wait_accepted(20, WAIT).await;
        // Outage: the destination goes away while batches keep being acknowledged by the queue.
        r.stop().await;
        send(&exp, "acme", "b", 30, 2).await;
        assert!(exp.queued_batches() > 0);
        // Clew restarts too.
        exp.shutdown().await;
        drop(exp);
        let exp = OtlpExporter::start("otlp/d", protocol, &cfg, dir.path(), &metrics).unwrap();
        assert_eq!(exp.queued_batches(), 30, "{protocol:?}");
        send(&exp, "acme", "c", 5, 2).await;
        r.restart().await;
        let mut want = names("a", 10, 2);
        want.extend(names("b", 30, 2));
        want.extend(names("c", 5, 2));
        let got = r.wait_accepted(want.len(), WAIT).await;
        // At-least-once: dedupe, then everything is there, in order.
        let mut seen = std::collections::HashSet::new();
        let deduped: Vec<_> = got.into_iter().filter(|n| seen.insert(n.clone())).collect();
        assert_eq!(deduped, want, "{protocol:?}");
        exp.shutdown().await;
    }
}

#[tokio::test]
async fn queue_directory_default_and_override() {
    let (dir, metrics, _registry) = setup();
    let r = Receiver::start().await;
    let cfg = config(&r, Protocol::Grpc);
    let exp = OtlpExporter::start("otlp/back", Protocol::Grpc, &cfg, dir.path(), &metrics).unwrap();
    assert!(dir.path().join("queue/otlp_back/cursor").exists());
    exp.shutdown().await;
    let mut cfg2 = cfg.clone();
    cfg2.sending_queue.storage.directory = Some(dir.path().join("elsewhere"));
    let exp =
        OtlpExporter::start("otlp/back", Protocol::Grpc, &cfg2, dir.path(), &metrics).unwrap();
    assert!(dir.path().join("elsewhere/cursor").exists());
    exp.shutdown().await;
}

#[tokio::test]
async fn without_queue_consume_sends_synchronously() {
    let (dir, metrics, _registry) = setup();
    let r = Receiver::start().await;
    let mut cfg = config(&r, Protocol::Http);
    cfg.sending_queue.enabled = false;
    let exp =
        OtlpExporter::start("otlphttp/s", Protocol::Http, &cfg, dir.path(), &metrics).unwrap();
    exp.consume(batch("acme", "s", 2)).await.unwrap();
    assert_eq!(r.state.accepted_names(), vec!["s-0", "s-1"]);
    r.script([
        Answer::Unavailable(Some(Duration::from_secs(7))),
        Answer::Invalid,
    ]);
    match exp.consume(batch("acme", "u", 1)).await {
        Err(SinkError::Overloaded { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(7))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        exp.consume(batch("acme", "i", 1)).await,
        Err(SinkError::Invalid(_))
    ));
    assert!(!dir.path().join("queue").exists());
    exp.shutdown().await;
}

#[tokio::test]
async fn tls_and_mutual_tls_for_both_protocols() {
    let (dir, metrics, _registry) = setup();
    let ca = common::certs::Ca::new("test CA");
    let server = ca.server();
    let client = ca.leaf("exporter", &["exporter"], true, false);
    let p = dir.path();
    let settings = TlsServerSettings {
        cert_file: Some(common::certs::write(p, "server.pem", &server.cert)),
        key_file: Some(common::certs::write(p, "server-key.pem", &server.key)),
        client_ca_file: Some(common::certs::write(p, "ca.pem", &ca.pem)),
        ..Default::default()
    };
    let r = Receiver::start_with(Some(settings)).await;
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let mut cfg = config(&r, protocol);
        cfg.tls.ca_file = Some(p.join("ca.pem"));
        cfg.tls.cert_file = Some(common::certs::write(p, "client.pem", &client.cert));
        cfg.tls.key_file = Some(common::certs::write(p, "client-key.pem", &client.key));
        let name = format!("otlp/tls-{protocol:?}");
        let exp = OtlpExporter::start(&name, protocol, &cfg, p, &metrics).unwrap();
        exp.consume(batch("acme", &format!("{protocol:?}"), 2))
            .await
            .unwrap();
        r.wait_accepted(if protocol == Protocol::Grpc { 2 } else { 4 }, WAIT)
            .await;
        exp.shutdown().await;
    }
    let got = r.state.accepted_names();
    assert_eq!(got, vec!["Grpc-0", "Grpc-1", "Http-0", "Http-1"]);

    // Without a client certificate the server refuses: the batch stays queued (retried).
    let mut cfg = config(&r, Protocol::Grpc);
    cfg.tls.ca_file = Some(p.join("ca.pem"));
    let exp = OtlpExporter::start("otlp/nocert", Protocol::Grpc, &cfg, p, &metrics).unwrap();
    exp.consume(batch("acme", "nocert", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exp.queued_batches(), 1);
    assert_eq!(r.state.accepted_names().len(), 4);
    exp.shutdown().await;

    // `host:port` without `insecure` means TLS; TLS settings with http:// are refused.
    let mut bad = config(&r, Protocol::Http);
    bad.endpoint = format!("http://{}", r.http_addr);
    bad.tls.ca_file = Some(p.join("ca.pem"));
    assert!(OtlpExporter::start("otlphttp/bad", Protocol::Http, &bad, p, &metrics).is_err());
}

#[tokio::test]
async fn grpc_host_port_endpoint_with_insecure() {
    let (dir, metrics, _registry) = setup();
    let r = Receiver::start().await;
    let mut cfg = config(&r, Protocol::Grpc);
    cfg.endpoint = r.grpc_addr.to_string();
    cfg.tls.insecure = true;
    let exp = OtlpExporter::start("otlp", Protocol::Grpc, &cfg, dir.path(), &metrics).unwrap();
    exp.consume(batch("acme", "i", 1)).await.unwrap();
    r.wait_accepted(1, WAIT).await;
    exp.shutdown().await;
}

#[tokio::test]
async fn config_keys_defaults_and_unknown_keys() {
    let yaml = r#"
endpoint: back:4317
compression: none
headers: {authorization: "Bearer x"}
timeout: 3s
tenant_header: X-Tenant
tls: {insecure: true}
retry_on_failure: {enabled: true, initial_interval: 1s, max_interval: 10s, max_elapsed_time: 60s}
sending_queue:
  num_consumers: 2
  queue_size: 500
  storage: {directory: /tmp/q, max_bytes: 1048576}
"#;
    let cfg: OtlpExporterConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(cfg.compression, Compression::None);
    assert_eq!(cfg.timeout, Duration::from_secs(3));
    assert_eq!(
        cfg.retry_on_failure.max_elapsed_time,
        Duration::from_secs(60)
    );
    assert_eq!(cfg.retry_on_failure.multiplier, 1.5);
    assert!(cfg.sending_queue.enabled);
    assert_eq!(cfg.sending_queue.num_consumers, 2);
    assert_eq!(cfg.sending_queue.storage.max_bytes, 1 << 20);

    let d: OtlpExporterConfig = serde_yaml::from_str("endpoint: http://x:4318").unwrap();
    assert_eq!(d.compression, Compression::Gzip);
    assert_eq!(d.timeout, Duration::from_secs(10));
    assert_eq!(d.tenant_header, "X-Scope-OrgID");
    assert_eq!(d.retry_on_failure.initial_interval, Duration::from_secs(5));
    assert_eq!(d.retry_on_failure.max_interval, Duration::from_secs(30));
    assert_eq!(d.retry_on_failure.max_elapsed_time, Duration::ZERO);
    assert_eq!(d.sending_queue.num_consumers, 1);
    assert_eq!(d.sending_queue.storage.max_bytes, 1 << 30);
    assert_eq!(
        d.queue_dir("otlp/back", std::path::Path::new("/data")),
        std::path::Path::new("/data/queue/otlp_back")
    );

    for bad in [
        "endpoint: x\nbogus: 1",
        "endpoint: x\ntls: {insecure: true, nope: 1}",
        "endpoint: x\nretry_on_failure: {initial_interval: soon}",
        "endpoint: x\nsending_queue: {storage: {size: 1}}",
        "endpoint: x\ncompression: zstd",
    ] {
        assert!(
            serde_yaml::from_str::<OtlpExporterConfig>(bad).is_err(),
            "{bad}"
        );
    }
    let dbg: DebugConfig = serde_yaml::from_str("verbosity: detailed").unwrap();
    assert_eq!(dbg.verbosity, Verbosity::Detailed);
    assert!(serde_yaml::from_str::<DebugConfig>("verbosity: loud").is_err());
}

#[tokio::test]
async fn debug_exporter_renders_by_verbosity() {
    let metrics = ExporterMetrics::new();
    let b = batch("acme", "d", 2);
    let basic = DebugExporter::new("debug", &DebugConfig::default(), &metrics);
    let lines = basic.render(&b);
    assert_eq!(lines, vec!["Traces: tenant=acme resource spans=1 spans=2"]);
    let normal = DebugExporter::new(
        "debug",
        &DebugConfig {
            verbosity: Verbosity::Normal,
        },
        &metrics,
    );
    let lines = normal.render(&b);
    assert_eq!(lines.len(), 3);
    assert!(lines[1].contains("Span d-0") && lines[1].contains("service=checkout"));
    assert!(!lines[1].contains("http.method"));
    let detailed = DebugExporter::new(
        "debug",
        &DebugConfig {
            verbosity: Verbosity::Detailed,
        },
        &metrics,
    );
    let lines = detailed.render(&b);
    assert!(lines.iter().any(|l| l.contains("http.method=\"GET\"")));
    let sink: Arc<dyn SpanSink> = Arc::new(detailed);
    sink.consume(b).await.unwrap();
}

/// The issue's scenario in one process: producers keep sending while the destination is down
/// for a while and the exporter itself is restarted mid-outage; every span the exporter
/// acknowledged arrives (exactly once after dedupe), each producer's batches in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_exporter_restart_under_load() {
    let (dir, metrics, _registry) = setup();
    let mut r = Receiver::start().await;
    let cfg = config(&r, Protocol::Grpc);
    let start = || OtlpExporter::start("otlp/load", Protocol::Grpc, &cfg, dir.path(), &metrics);
    let current = Arc::new(std::sync::Mutex::new(start().unwrap()));
    let mut producers = Vec::new();
    for p in 0..4 {
        let current = current.clone();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..120 {
                let b = batch("acme", &format!("p{p}-{i:03}"), 10);
                loop {
                    let exp = current.lock().unwrap().clone();
                    match exp.consume(b.clone()).await {
                        Ok(()) => break,
                        // Like a client: retry (the exporter is restarting or full).
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                acked.extend((0..10).map(|j| format!("p{p}-{i:03}-{j}")));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.stop().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Restart the exporter during the outage.
    let old = current.lock().unwrap().clone();
    old.shutdown().await;
    drop(old);
    let fresh = start().unwrap();
    *current.lock().unwrap() = fresh;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    r.restart().await;
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(p.await.unwrap());
    }
    r.wait_accepted(acked.len(), Duration::from_secs(60)).await;
    let got = r.state.accepted_names();
    let mut seen = std::collections::HashSet::new();
    let deduped: Vec<String> = got.into_iter().filter(|n| seen.insert(n.clone())).collect();
    assert_eq!(deduped.len(), acked.len(), "every acknowledged span, once");
    let acked_set: std::collections::HashSet<_> = acked.iter().cloned().collect();
    assert!(deduped.iter().all(|n| acked_set.contains(n)));
    for p in 0..4 {
        let mine: Vec<_> = deduped
            .iter()
            .filter(|n| n.starts_with(&format!("p{p}-")))
            .cloned()
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "producer {p}'s batches in order");
    }
    let exp = current.lock().unwrap().clone();
    exp.shutdown().await;
}

#[tokio::test]
async fn merged_request_too_large_is_resent_batch_by_batch() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let (dir, metrics, registry) = setup();
        let mut r = Receiver::start().await;
        let cfg = config(&r, protocol);
        r.stop().await;
        let exp = OtlpExporter::start("otlp/big", protocol, &cfg, dir.path(), &metrics).unwrap();
        send(&exp, "acme", "m", 3, 2).await;
        // Restart the exporter so that its first lease merges all three.
        exp.shutdown().await;
        drop(exp);
        let exp = OtlpExporter::start("otlp/big", protocol, &cfg, dir.path(), &metrics).unwrap();
        // The merged request is refused as too large, then one batch alone is too.
        r.script([Answer::TooLarge, Answer::Ok, Answer::TooLarge]);
        r.restart().await;
        tokio::time::timeout(WAIT, async {
            while exp.queued_batches() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        let reqs = r.state.requests();
        assert_eq!(reqs.len(), 4, "{protocol:?}: merged, then 3 alone");
        assert_eq!(reqs[0].span_names().len(), 6);
        assert_eq!(
            r.state.accepted_names(),
            vec!["m0-0", "m0-1", "m2-0", "m2-1"],
            "{protocol:?}"
        );
        assert_eq!(
            metric(
                &registry,
                "clew_exporter_send_failed_spans_total{exporter=\"otlp/big\",reason=\"permanent\"}"
            ),
            2.0
        );
        exp.shutdown().await;
    }
}
