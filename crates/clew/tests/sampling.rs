//! Sampling with the real `clew` binary: tail sampling configured in clew.yaml (kept traces
//! reach the store with `sampling.policy`, dropped ones don't), buffered traces decided and stored
//! on SIGTERM (restart keeps them), acknowledged buffered traces surviving kill -9 (the sampler
//! log, also sealed with encryption at rest), Jaeger remote sampling on its own port and on the query port,
//! and `clew config check` on the example configs and on broken sampling configs.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
mod common;
use common::{clew, free_port, Server};
use std::path::Path;
use std::time::{Duration, Instant};

fn trace_id(n: u8) -> Vec<u8> {
    let mut t = vec![0x5a; 16];
    t[15] = n;
    t[3] = n.wrapping_mul(31);
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A two-span trace: root + child, optionally failing.
fn trace(n: u8, error: bool) -> ResourceSpans {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let span = |id: u8, parent: Option<u8>, name: &str| Span {
        trace_id: trace_id(n),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 5_000_000,
        status: (error && parent.is_some()).then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("checkout".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span(1, None, "GET /cart"), span(2, Some(1), "SELECT cart")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn send(http: &str, rs: Vec<ResourceSpans>) {
    let body = ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec();
    let r = reqwest::Client::new()
        .post(format!("{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn get_trace(query: &str, n: u8) -> Option<String> {
    let r = reqwest::get(format!("{query}/api/traces/{}", hex(&trace_id(n))))
        .await
        .unwrap();
    let ok = r.status().is_success();
    let body = r.text().await.unwrap();
    (ok && body.contains("spanID")).then_some(body)
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("clew.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sampling_keeps_errors_and_serves_remote_strategies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("strategies.json"),
        include_str!("../../../examples/config/strategies.json"),
    )
    .unwrap();
    let sampling_port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "processors:
  tail_sampling/errors:
    decision_wait: 1s
    root_send_delay: 200ms
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
extensions:
  jaeger_remote_sampling:
    http: {{endpoint: 127.0.0.1:{sampling_port}}}
    source: {{file: strategies.json, reload_interval: 200ms}}
service:
  extensions: [jaeger_remote_sampling]
  pipelines:
    traces:
      processors: [tail_sampling/errors]
"
        ),
    );
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&cfg));

    // The error arrives in the child, sent after the root (a separate request).
    let mut root_only = trace(1, true);
    let child = root_only.scope_spans[0].spans.pop().unwrap();
    let mut child_only = trace(1, true);
    child_only.scope_spans[0].spans = vec![child];
    send(&server.http, vec![root_only, trace(2, false)]).await;
    send(&server.http, vec![child_only]).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        if let Some(b) = get_trace(&server.query, 1).await {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "kept trace never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(kept.contains("sampling.policy"), "{kept}");
    assert!(kept.contains("\"errors\""), "{kept}");
    assert_eq!(kept.matches("\"operationName\"").count(), 2, "{kept}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        get_trace(&server.query, 2).await.is_none(),
        "dropped trace stored"
    );

    // Remote sampling: own port and the query port.
    let j: serde_json::Value =
        reqwest::get(format!("{}/sampling?service=checkout", server.sampling))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(j["strategyType"], "PROBABILISTIC");
    assert_eq!(j["probabilisticSampling"]["samplingRate"], 0.5);
    assert_eq!(
        j["operationSampling"]["perOperationStrategies"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let j: serde_json::Value =
        reqwest::get(format!("{}/api/sampling?service=batch-jobs", server.query))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(j["strategyType"], "RATE_LIMITING");
    let r = reqwest::get(format!("{}/sampling", server.sampling))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let metrics = reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("clew_sampling_traces_total{processor=\"tail_sampling/errors\",policy=\"errors\",decision=\"kept\"} 1"),
        "{metrics}"
    );
    // The strategies file is reloaded; a broken file keeps the last good strategies.
    std::fs::write(
        dir.path().join("strategies.json"),
        r#"{"default_strategy": {"type": "probabilistic", "param": 0.25}}"#,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let j: serde_json::Value =
            reqwest::get(format!("{}/sampling?service=checkout", server.sampling))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        if j["probabilisticSampling"]["samplingRate"] == 0.25 {
            break;
        }
        assert!(Instant::now() < deadline, "strategies never reloaded: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(dir.path().join("strategies.json"), "{broken").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let j: serde_json::Value =
        reqwest::get(format!("{}/sampling?service=checkout", server.sampling))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(j["probabilisticSampling"]["samplingRate"], 0.25);

    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_decides_buffered_traces_and_they_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "processors:
  tail_sampling:
    decision_wait: 1h
    root_send_delay: 0s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
service:
  pipelines:
    traces:
      processors: [tail_sampling]
",
    );
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&cfg));
    send(
        &server.http,
        vec![trace(10, true), trace(11, false), trace(12, true)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        get_trace(&server.query, 10).await.is_none(),
        "still buffered"
    );
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("decided every buffered trace"), "{log}");

    let server = Server::start_with(&data, Some(&cfg));
    let kept = get_trace(&server.query, 10)
        .await
        .expect("kept on shutdown");
    assert!(kept.contains("sampling.policy"));
    assert!(get_trace(&server.query, 12).await.is_some());
    assert!(get_trace(&server.query, 11).await.is_none());
    assert!(server.terminate().success());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Issue 18 point 1: with tail sampling on, an ack still means durable. Traces acknowledged while
/// buffered survive kill -9: after restart the buffer is rebuilt from the sampler log, each trace
/// is decided when it would have been, kept ones are stored once and dropped ones never appear.
/// With `encrypted`, the sampler log is sealed: no span name in clear under the data dir.
async fn acked_buffered_traces_survive_kill9(encrypted: bool) {
    let dir = tempfile::tempdir().unwrap();
    let storage = if encrypted {
        let keyring = dir.path().join("keyring.yaml");
        let out = clew(&["keys", "init", "--keyring", keyring.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "storage:\n  encryption:\n    provider: local\n    local:\n      keyring: {}\n",
            keyring.display()
        )
    } else {
        String::new()
    };
    let cfg = write_config(
        dir.path(),
        &format!(
            "{storage}processors:
  tail_sampling/errors:
    decision_wait: 6s
    root_send_delay: 0s
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
service:
  pipelines:
    traces:
      processors: [tail_sampling/errors]
"
        ),
    );
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&cfg));
    let sent = Instant::now();
    // Two requests: kept (20, 22, 24) and dropped (21, 23) traces, acknowledged (send asserts 2xx).
    send(
        &server.http,
        vec![trace(20, true), trace(21, false), trace(22, true)],
    )
    .await;
    send(&server.http, vec![trace(23, false), trace(24, true)]).await;
    // Acknowledged, still buffered: only the sampler log holds them.
    assert!(
        get_trace(&server.query, 20).await.is_none(),
        "decided early"
    );
    let sampler_dir = data.join("sampler");
    assert!(
        files_under(&sampler_dir)
            .iter()
            .any(|p| std::fs::metadata(p).map_or(0, |m| m.len()) > 0),
        "no sampler log under {}",
        sampler_dir.display()
    );
    if encrypted {
        let leaks = files_containing(&data, b"SELECT cart");
        assert!(leaks.is_empty(), "span names in clear: {leaks:?}");
    }
    // kill -9: no shutdown code runs.
    drop(server);
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "too slow to crash before the decision"
    );

    let server = Server::start_with(&data, Some(&cfg));
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("rebuilt its buffer from its log"), "{log}");
    // Decided at their original time (6 s after arrival), not 6 s after the restart.
    let deadline = sent + Duration::from_secs(30);
    for n in [20u8, 22, 24] {
        let body = loop {
            if let Some(b) = get_trace(&server.query, n).await {
                break b;
            }
            assert!(
                Instant::now() < deadline,
                "kept trace {n} lost after kill -9"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Each span once (`spanID` also appears in references).
        assert_eq!(
            body.matches("\"operationName\"").count(),
            2,
            "trace {n}: {body}"
        );
        assert!(body.contains("sampling.policy"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in [21u8, 23] {
        assert!(
            get_trace(&server.query, n).await.is_none(),
            "dropped trace {n} stored"
        );
    }
    if encrypted {
        let leaks = files_containing(&data, b"SELECT cart");
        assert!(leaks.is_empty(), "span names in clear: {leaks:?}");
    }
    assert!(server.terminate().success());
    // After a clean stop every trace was decided: a restart rebuilds nothing and stores nothing twice.
    let server = Server::start_with(&data, Some(&cfg));
    let body = get_trace(&server.query, 22)
        .await
        .expect("kept trace stays");
    assert_eq!(body.matches("\"operationName\"").count(), 2, "{body}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_trace_with_tail_sampling() {
    acked_buffered_traces_survive_kill9(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_tail_sampling_and_encryption_at_rest_keeps_the_log_sealed() {
    acked_buffered_traces_survive_kill9(true).await;
}

#[test]
fn config_check_accepts_examples_and_names_sampling_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    for f in [
        "tail-errors-slow-10pct.yaml",
        "per-tenant-rates.yaml",
        "dynamic-by-service-route.yaml",
        "remote-sampling.yaml",
    ] {
        let p = root.join(f);
        let out = clew(&["config", "check", p.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("warning"),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "processors:\n  tail_sampling:\n    policies:\n      - {name: a, type: always_sample}\n      - {name: b, type: always_sample}\n      - {name: c, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 5}}\nservice:\n  pipelines:\n    traces:\n      processors: [tail_sampling]\n",
    )
    .unwrap();
    let out = clew(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(
            "bad.yaml: key `processors.tail_sampling.policies[2].latency.upper_threshold_ms`"
        ) && msg.contains("fix:"),
        "{msg}"
    );

    std::fs::write(&bad, "processors:\n  probabilistic_sampler: {}\n").unwrap();
    let out = clew(&["config", "check", bad.to_str().unwrap()]);
    assert!(out.status.success(), "unused processor is only a warning");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("warning") && msg.contains("processors.probabilistic_sampler"),
        "{msg}"
    );

    std::fs::write(
        &bad,
        "service:\n  pipelines:\n    traces:\n      processors: [tail_sampling/x]\n",
    )
    .unwrap();
    let out = clew(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("service.pipelines.traces.processors[0]"));
}
