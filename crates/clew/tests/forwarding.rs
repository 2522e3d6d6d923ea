//! Two real Clew processes, front → back over OTLP (`examples/config/forward-otlp.yaml`): the back
//! is stopped for a while under load (`CLEW_OUTAGE_SECS`, default 60), the front keeps
//! acknowledging into its durable sending queue; then both restart (the front with `kill -9`) and
//! every span the front acknowledged arrives in the back, each once (reads dedupe a resend).

mod common;
use common::Server;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("CLEW_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    )
}

fn front_config(dir: &Path, back_grpc: &str) -> std::path::PathBuf {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/forward-otlp.yaml");
    let mut cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
    let endpoint = back_grpc.trim_start_matches("http://");
    cfg["exporters"]["otlp/back"]["endpoint"] = endpoint.into();
    // Retry quickly in a test.
    cfg["exporters"]["otlp/back"]["retry_on_failure"] =
        serde_yaml::from_str("{initial_interval: 200ms, max_interval: 1s}").unwrap();
    let path = dir.join("front.yaml");
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    path
}

fn batch(i: u32) -> (String, String) {
    let trace_id = format!(
        "{:032x}",
        0xf0f0_0000_0000_u64 as u128 * 1_000_000 + i as u128
    );
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "front-load"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": trace_id, "spanId": "0000000000000001", "name": "root", "kind": 2,
             "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 1000).to_string()},
            {"traceId": trace_id, "spanId": "0000000000000002", "parentSpanId": "0000000000000001",
             "name": "child", "kind": 3,
             "startTimeUnixNano": (start + 10).to_string(), "endTimeUnixNano": (start + 900).to_string()}
        ]}]
    }]})
    .to_string();
    (trace_id, body)
}

/// Sends batches to the front at a steady pace for `d`; returns the acknowledged trace ids.
async fn load(front: &Server, from: u32, d: Duration) -> (Vec<String>, u32) {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut i = from;
    let until = Instant::now() + d;
    while Instant::now() < until {
        let (id, body) = batch(i);
        i += 1;
        let r = client
            .post(format!("{}/v1/traces", front.http))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            acked.push(id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (acked, i)
}

async fn spans_in(back: &Server, id: &str) -> usize {
    let r = reqwest::get(format!("{}/api/traces/{id}", back.query))
        .await
        .unwrap();
    if r.status() != 200 {
        return 0;
    }
    let v: serde_json::Value = r.json().await.unwrap();
    v["data"][0]["spans"].as_array().map_or(0, |s| s.len())
}

#[tokio::test]
async fn acknowledged_spans_survive_a_back_outage_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let back_data = dir.path().join("back");
    let front_data = dir.path().join("front");
    let back = Server::start(&back_data);
    let config = front_config(dir.path(), &back.grpc);
    let front = Server::start_with(&front_data, Some(&config));

    let (mut acked, next) = load(&front, 0, Duration::from_secs(3)).await;
    assert!(!acked.is_empty());
    // The back goes away; the front keeps acknowledging into its queue.
    let back_grpc = back.grpc.clone();
    assert_eq!(back.terminate().code(), Some(0));
    let (during, next) = load(&front, next, outage()).await;
    assert!(
        during.len() as f64 > outage().as_secs_f64() * 5.0,
        "the front kept acknowledging during the outage: {}",
        during.len()
    );
    acked.extend(during);
    // Crash the front with spans queued, then bring both back: the back first, on its old ports
    // (the front's exporter points there).
    drop(front); // SIGKILL
    let back = Server::start_on(&back_data, &back_grpc);
    let front = Server::start_with(&front_data, Some(&config));
    let (after, _) = load(&front, next, Duration::from_secs(2)).await;
    acked.extend(after);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<&String> = acked.iter().collect();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged traces never arrived, e.g. {}",
            missing.len(),
            acked.len(),
            missing[0]
        );
        let mut still = Vec::new();
        for id in missing {
            if spans_in(&back, id).await < 2 {
                still.push(id);
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Exactly once as read: two spans each, no more.
    let sample: HashSet<&String> = acked.iter().step_by(7).collect();
    for id in sample {
        assert_eq!(spans_in(&back, id).await, 2, "{id}");
    }
    drop(front);
}

#[test]
fn a_second_clew_on_the_same_sending_queue_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared_queue = dir.path().join("shared-queue");
    let config = front_config(dir.path(), "127.0.0.1:1");
    let mut cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["exporters"]["otlp/back"]["sending_queue"]["storage"]["directory"] =
        shared_queue.to_str().unwrap().into();
    std::fs::write(&config, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let first = Server::start_with(&dir.path().join("one"), Some(&config));
    // Its own data dir (so only the queue is shared), its own ports.
    let port = |_| format!("127.0.0.1:{}", common::free_port());
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("two"))
        .args(["--otlp-grpc-endpoint", &port(0)])
        .args(["--otlp-http-endpoint", &port(1)])
        .args(["--zipkin-endpoint", &port(2)])
        .args(["--query-endpoint", &port(3)])
        .args(["--sampling-endpoint", &port(4)])
        .args(["--tempo-endpoint", &port(5)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exporters.otlp/back")
            && err.contains("locked by another process")
            && err.contains(shared_queue.to_str().unwrap()),
        "{err}"
    );
    // Once the first one stops, the directory is free.
    assert_eq!(first.terminate().code(), Some(0));
    let again = Server::start_with(&dir.path().join("two"), Some(&config));
    drop(again);
}
