//! Retention with the real `clew` binary: `storage.retention` for every tenant, `retention` per
//! tenant in the live-reloaded overrides file. Spans already past retention are refused; lowering a
//! tenant's retention hides its older traces at once and the next pass deletes their blocks (whole
//! directories, counted per tenant in `/metrics`). Bad values are start-up errors naming the key.

mod common;
use common::{clew, Server};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TENANT_HEADER: &str = "X-Scope-OrgID";

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One span, as OTLP JSON, that started `age` ago.
fn otlp_json(trace_id: &str, age: Duration) -> String {
    let start = now_nanos() - age.as_nanos() as u64;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ledger"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708", "name": "post",
            "kind": 2, "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string()
        }]}]
    }]})
    .to_string()
}

async fn send(server: &Server, tenant: &str, trace_id: &str, age: Duration) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .header(TENANT_HEADER, tenant)
        .body(otlp_json(trace_id, age))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn trace_status(server: &Server, tenant: &str, trace_id: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/traces/{trace_id}", server.query))
        .header(TENANT_HEADER, tenant)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metric(server: &Server, series: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn block_dirs(data: &Path, tenant: &str) -> usize {
    let Ok(days) = std::fs::read_dir(data.join("blocks/tenants").join(tenant)) else {
        return 0;
    };
    days.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|b| b.path().join("meta.json").exists())
        .count()
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_overrides(path: &Path, text: &str) {
    // Replace atomically, as ConfigMap updates do: a reload never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn retention_per_tenant_refuses_hides_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let overrides = dir.path().join("overrides.yaml");
    write_overrides(&overrides, "overrides:\n  short:\n    retention: 1h\n");
    // The example config as shipped, with a shorter retention, pass interval and flush age, and
    // its overrides file replaced by one the test edits.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/retention.yaml");
    let mut cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
    cfg["storage"]["retention"] = "3d".into();
    cfg["storage"]["retention_interval"] = "1s".into();
    cfg["storage"]["block"] = serde_yaml::from_str("{max_age: 1s}").unwrap();
    cfg["limits"]["per_tenant_file"] = overrides.display().to_string().into();
    cfg["limits"]["reload_interval"] = "1s".into();
    let config = dir.path().join("clew.yaml");
    std::fs::write(&config, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let server = Server::start_with(&data, Some(&config));
    let hour = Duration::from_secs(3600);
    let (old, fresh) = (
        "0af7651916cd43dd8448eb211c80319c",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    );

    // `short` keeps 1 h: a 2 h old span is refused (acknowledged, not stored), a fresh one kept.
    send(&server, "short", old, 2 * hour).await;
    send(&server, "short", fresh, Duration::from_secs(60)).await;
    // `long` has the default 3 days.
    send(&server, "long", old, 2 * hour).await;
    assert_eq!(trace_status(&server, "short", old).await, 404);
    assert_eq!(trace_status(&server, "short", fresh).await, 200);
    assert_eq!(trace_status(&server, "long", old).await, 200);
    assert_eq!(
        metric(
            &server,
            "clew_retention_refused_spans_total{tenant=\"short\"}"
        )
        .await,
        1.0
    );
    eventually("long's block on disk", || async {
        block_dirs(&data, "long") == 1
    })
    .await;

    // Now `long` keeps 1 h too: its 2 h old trace disappears from queries, then from disk.
    write_overrides(
        &overrides,
        "overrides:\n  short:\n    retention: 1h\n  long:\n    retention: 1h\n",
    );
    eventually("long's old trace hidden", || async {
        trace_status(&server, "long", old).await == 404
    })
    .await;
    // The pass takes the block out of the index at once; its files go 30 s later (queries that
    // snapshotted the block list may still be reading it).
    eventually("long's block deleted from the index", || async {
        metric(
            &server,
            "clew_retention_deleted_blocks_total{tenant=\"long\"}",
        )
        .await
            == 1.0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while block_dirs(&data, "long") != 0 {
        assert!(Instant::now() < deadline, "long's block files not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        metric(
            &server,
            "clew_retention_deleted_bytes_total{tenant=\"long\"}"
        )
        .await
            > 0.0
    );
    assert_eq!(
        trace_status(&server, "short", fresh).await,
        200,
        "untouched"
    );
}

#[test]
fn retention_values_are_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clew.yaml");
    std::fs::write(&config, "storage:\n  retention: 10m\n").unwrap();
    let out = clew(&["config", "check", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("storage.retention") && err.contains("fix:"),
        "{err}"
    );

    let overrides = dir.path().join("overrides.yaml");
    std::fs::write(&overrides, "overrides:\n  acme:\n    retention: 5m\n").unwrap();
    std::fs::write(
        &config,
        format!("limits:\n  per_tenant_file: {}\n", overrides.display()),
    )
    .unwrap();
    let out = clew(&["config", "check", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("overrides.acme.retention") && err.contains("fix:"),
        "{err}"
    );

    std::fs::write(&overrides, "overrides:\n  acme:\n    retention: soon\n").unwrap();
    let out = clew(&["config", "check", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("retention") && err.contains("not a duration"),
        "{err}"
    );
}
