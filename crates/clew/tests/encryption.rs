//! Encryption at rest with the real `clew` binary: the example configs
//! (`examples/config/encryption-{local,kms}.yaml`) with real key providers — a local keyring, and
//! AWS KMS served by moto with signature checking on — and blocks in a real S3 bucket.
//!
//! 1. No plaintext: spans carrying a marker in their service name, span name and an attribute are
//!    written; every byte of the data dir and of every object in the bucket is scanned: no marker.
//!    The same load on a plaintext server does show the marker (so the scan can fail). Reads
//!    decrypt, also after a restart.
//! 2. `clew keys rotate` re-wraps every block's data key under a new version (audited); after
//!    `clew keys retire` of the old version everything still reads.
//! 3. KMS: wrong secret, unknown key, unreachable endpoint → start-up errors naming the key and the
//!    fix; KMS down at run time → ingest refused retryably (503), nothing written in plaintext.

mod common;
use clew_encryption::testkit::Moto;
use common::{clew, Server};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MARKER: &str = "MARKER-c0ffee";

fn example(name: &str) -> serde_yaml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/config")
        .join(name);
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_config(dir: &Path, mut cfg: serde_yaml::Value, extra_storage: &str) -> PathBuf {
    let storage = cfg.get_mut("storage").unwrap().as_mapping_mut().unwrap();
    let extra: serde_yaml::Mapping = serde_yaml::from_str(extra_storage).unwrap();
    for (k, v) in extra {
        storage.insert(k, v);
    }
    let path = dir.join("clew.yaml");
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    path
}

fn span_json(trace_id: &str, service: &str) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 2_000_000_000;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708",
            "name": format!("charge-{MARKER}"), "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string(),
            "attributes": [{"key": "card.holder", "value": {"stringValue": MARKER}}]
        }]}]
    }]})
    .to_string()
}

async fn send(server: &Server, tenant: &str, trace_id: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(span_json(trace_id, &format!("billing-{MARKER}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn trace_body(server: &Server, tenant: &str, trace_id: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/api/traces/{trace_id}", server.query))
        .header("X-Scope-OrgID", tenant)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Files under `dir` whose bytes contain `needle`.
fn files_with(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Every object of the bucket: (key, bytes).
async fn bucket_objects(moto: &Moto, bucket: &str) -> Vec<(String, Vec<u8>)> {
    let list = reqwest::get(format!(
        "{}/{bucket}?list-type=2&max-keys=1000",
        moto.endpoint()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let mut out = Vec::new();
    for part in list.split("<Key>").skip(1) {
        let key = part.split("</Key>").next().unwrap().to_string();
        let bytes = reqwest::get(format!("{}/{bucket}/{key}", moto.endpoint()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        out.push((key, bytes));
    }
    out
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

fn aws_env(moto: &Moto) -> Vec<(&'static str, String)> {
    let c = moto.credentials();
    vec![
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ]
}

fn start(data: &Path, config: &Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with_env(data, Some(config), &env)
}

#[tokio::test]
async fn nothing_readable_on_disk_or_in_the_bucket_and_keys_rotate() {
    let moto = Moto::start();
    moto.create_bucket("clew-enc").await;
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.yaml");
    let out = clew(&["keys", "init", "--keyring", keyring.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s3 = format!(
        "{{block: {{max_age: 1s}}, s3: {{bucket: clew-enc, prefix: p, endpoint: '{}', region: us-east-1, force_path_style: true}}}}",
        moto.endpoint()
    );
    // The example config as shipped (its keyring path is relative to the config file).
    let config = write_config(dir.path(), example("encryption-local.yaml"), &s3);
    let data = dir.path().join("data");
    let env = aws_env(&moto);
    let server = start(&data, &config, &env);
    let ids = [
        "7f3a0000000000000000000000000001",
        "7f3a0000000000000000000000000002",
    ];
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(send(&server, &format!("tenant-{i}"), id).await, 200);
    }
    // Readable through the API (decrypted), from the head and then from blocks in the bucket.
    let (status, body) = trace_body(&server, "tenant-0", ids[0]).await;
    assert_eq!(status, 200);
    assert!(body.contains(MARKER));
    eventually("blocks in the bucket", || async {
        bucket_objects(&moto, "clew-enc")
            .await
            .iter()
            .filter(|(k, _)| k.ends_with("meta.json"))
            .count()
            == 2
    })
    .await;
    assert!(trace_body(&server, "tenant-1", ids[1])
        .await
        .1
        .contains(MARKER));
    assert_eq!(server.terminate().code(), Some(0));

    // The scan: data dir (WAL, cache of remote meta/bloom, holds, audit) and every object.
    let hits = files_with(&data, MARKER.as_bytes());
    assert!(hits.is_empty(), "plaintext marker on disk: {hits:?}");
    let objects = bucket_objects(&moto, "clew-enc").await;
    assert!(
        objects.iter().any(|(k, _)| k.ends_with("key.json")),
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (key, bytes) in &objects {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "plaintext marker in s3://clew-enc/{key}"
        );
        assert!(!String::from_utf8_lossy(bytes).contains("billing"), "{key}");
    }

    // Restart: everything reads; rotate; retire the old versions; still reads.
    let server = start(&data, &config, &env);
    assert!(trace_body(&server, "tenant-0", ids[0])
        .await
        .1
        .contains(MARKER));
    let out = clew(&["keys", "rotate", "--all-tenants", "--url", &server.query]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("re-wrapped 2 block key(s)"), "{text}");
    assert!(text.contains("0 failed"), "{text}");
    for i in 0..2 {
        let out = clew(&[
            "keys",
            "retire",
            "--keyring",
            keyring.to_str().unwrap(),
            "--tenant",
            &format!("tenant-{i}"),
            "--version",
            "1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(server.terminate().code(), Some(0));
    let server = start(&data, &config, &env);
    for (i, id) in ids.iter().enumerate() {
        let (status, body) = trace_body(&server, &format!("tenant-{i}"), id).await;
        assert_eq!(status, 200, "after rotation and retirement");
        assert!(body.contains(MARKER));
    }
    drop(server);
    let audit = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    assert!(audit.contains("\"keys.rotate\""), "{audit}");
    let out = clew(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_scan_finds_the_marker_without_encryption() {
    // The control for the scan above: same load, no `storage.encryption`.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clew.yaml");
    std::fs::write(&config, "storage:\n  block:\n    max_age: 1s\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&config));
    assert_eq!(
        send(&server, "t", "7f3a0000000000000000000000000009").await,
        200
    );
    assert_eq!(server.terminate().code(), Some(0));
    let hits = files_with(&data, MARKER.as_bytes());
    assert!(hits.iter().any(|h| h.ends_with("data.parquet")), "{hits:?}");
    assert!(hits.iter().any(|h| h.ends_with("meta.json")), "{hits:?}");
}

#[tokio::test]
async fn kms_errors_at_start_up_and_at_run_time() {
    let (moto, good) = Moto::start_with_signature_checks().await;
    let key = moto.create_kms_key("clew").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = example("encryption-kms.yaml");
    let kms = cfg["storage"]["encryption"]["aws_kms"]
        .as_mapping_mut()
        .unwrap();
    kms.insert("endpoint".into(), moto.endpoint().into());
    kms.insert("region".into(), "us-east-1".into());
    kms.insert("key_id".into(), key.clone().into());
    kms.remove("tenant_keys");
    let config = write_config(dir.path(), cfg.clone(), "{block: {max_age: 1s}}");
    let env = vec![
        ("AWS_ACCESS_KEY_ID", good.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", good.secret_access_key.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];

    // Start-up errors name the setting and the fix.
    let serve_err = |config: &Path, env: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["serve", "--config", config.to_str().unwrap(), "--data-dir"])
            .arg(dir.path().join("bad-data"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut wrong = env.clone();
    wrong[1].1 = "not-the-secret".into();
    let err = serve_err(&config, &wrong);
    assert!(
        err.contains("storage.encryption.aws_kms") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    let mut unknown = cfg.clone();
    unknown["storage"]["encryption"]["aws_kms"]["key_id"] = "alias/nope".into();
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let err = serve_err(&write_config(&bad, unknown, "{}"), &env);
    assert!(err.contains("storage.encryption.aws_kms.key_id"), "{err}");
    let mut closed = cfg.clone();
    closed["storage"]["encryption"]["aws_kms"]["endpoint"] =
        format!("http://127.0.0.1:{}", clew_encryption::testkit::free_port()).into();
    let err = serve_err(&write_config(&bad, closed, "{}"), &env);
    assert!(err.contains("storage.encryption.aws_kms.endpoint"), "{err}");

    // Run time: works while KMS is up; once it is gone, a tenant with no current data key is
    // refused retryably, and nothing readable was written.
    let data = dir.path().join("data");
    let server = start(&data, &config, &env);
    assert_eq!(
        send(&server, "a", "7f3a00000000000000000000000000a1").await,
        200
    );
    assert!(trace_body(&server, "a", "7f3a00000000000000000000000000a1")
        .await
        .1
        .contains(MARKER));
    drop(moto);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .header("X-Scope-OrgID", "b")
        .body(span_json("7f3a00000000000000000000000000b1", "billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "retryable, not accepted in plaintext");
    assert!(r.headers().contains_key("retry-after"));
    drop(server);
    let hits = files_with(&data, MARKER.as_bytes());
    assert!(hits.is_empty(), "{hits:?}");
}

/// A span whose service name, span name and attribute carry `marker`; no tenant header (the
/// default tenant, as forwarded).
fn marked_span(trace_id: &str, marker: &str) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 2_000_000_000;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": format!("svc-{marker}")}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708",
            "name": format!("op-{marker}"), "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string(),
            "attributes": [{"key": "card.holder", "value": {"stringValue": marker}}]
        }]}]
    }]})
    .to_string()
}

async fn post_span(server: &Server, trace_id: &str, marker: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .body(marked_span(trace_id, marker))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The front of `examples/config/forward-otlp.yaml`, forwarding to `back_grpc`, with
/// `storage.encryption` from `encryption-local.yaml` when `keyring` is given.
fn forwarding_config(dir: &Path, back_grpc: &str, keyring: Option<&Path>) -> PathBuf {
    let mut cfg = example("forward-otlp.yaml");
    cfg["exporters"]["otlp/back"]["endpoint"] = back_grpc.trim_start_matches("http://").into();
    cfg["exporters"]["otlp/back"]["retry_on_failure"] =
        serde_yaml::from_str("{initial_interval: 200ms, max_interval: 1s}").unwrap();
    if let Some(keyring) = keyring {
        let mut enc = example("encryption-local.yaml");
        enc["storage"]["encryption"]["local"]["keyring"] = keyring.to_str().unwrap().into();
        cfg["storage"] = enc["storage"].clone();
        cfg["storage"].as_mapping_mut().unwrap().remove("path");
    }
    let name = if keyring.is_some() {
        "front-enc.yaml"
    } else {
        "front.yaml"
    };
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_exporter_queue_is_sealed_and_older_plaintext_queues_still_drain() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.yaml");
    let out = clew(&["keys", "init", "--keyring", keyring.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back_data = dir.path().join("back");
    let front_data = dir.path().join("front");
    let queue_dir = front_data.join("queue");
    // The back exists only to own a port; it is down while the front queues.
    let back = Server::start(&back_data);
    let back_grpc = back.grpc.clone();
    assert_eq!(back.terminate().code(), Some(0));

    // 1. Before encryption (the control, and the upgrade's old data): plaintext queue records.
    let old_marker = "MARKER-queue-old-5e1";
    let plain = forwarding_config(dir.path(), &back_grpc, None);
    let front = Server::start_with(&front_data, Some(&plain));
    let old_ids: Vec<String> = (0..3)
        .map(|i| format!("9e1a00000000000000000000000000{i:02x}"))
        .collect();
    for id in &old_ids {
        assert_eq!(post_span(&front, id, old_marker).await, 200);
    }
    assert_eq!(front.terminate().code(), Some(0));
    let hits = files_with(&queue_dir, old_marker.as_bytes());
    assert!(
        !hits.is_empty(),
        "the scan sees a plaintext queue: {hits:?}"
    );

    // 2. Encryption on, downstream still down: new spans are queued sealed.
    let new_marker = "MARKER-queue-new-5e2";
    let sealed = forwarding_config(dir.path(), &back_grpc, Some(&keyring));
    let front = Server::start_with(&front_data, Some(&sealed));
    let new_ids: Vec<String> = (0..20)
        .map(|i| format!("9e1b00000000000000000000000000{i:02x}"))
        .collect();
    for id in &new_ids {
        assert_eq!(post_span(&front, id, new_marker).await, 200);
    }
    assert_eq!(front.terminate().code(), Some(0));
    // The sealed records are there (each names its tenant in clear, like the WAL).
    let queue_files = files_with(&queue_dir, b"single-tenant");
    assert!(
        queue_files.iter().any(|f| f.ends_with(".seg")),
        "{queue_files:?}"
    );
    let hits = files_with(&queue_dir, new_marker.as_bytes());
    assert!(
        hits.is_empty(),
        "plaintext marker in the sending queue: {hits:?}"
    );
    // Nowhere else in the front's data dir either (WAL sealed too).
    let hits = files_with(&front_data, new_marker.as_bytes());
    assert!(
        hits.is_empty(),
        "plaintext marker in the data dir: {hits:?}"
    );

    // 3. Without storage.encryption the sealed queue is a clear start-up error (on a copy of
    // the queue alone: the store would refuse its sealed WAL and blocks first).
    let copy = dir.path().join("queue-only");
    for entry in std::fs::read_dir(&queue_dir).unwrap() {
        let sub = entry.unwrap().path();
        let to = copy.join("queue").join(sub.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&sub).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config", plain.to_str().unwrap(), "--data-dir"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.encryption") && err.contains("queue"),
        "{err}"
    );

    // 4. The back comes up on its old port: every span, old (plaintext) and new (sealed), arrives.
    let back = Server::start_on(&back_data, &back_grpc);
    let front = Server::start_with(&front_data, Some(&sealed));
    let all: Vec<&String> = old_ids.iter().chain(&new_ids).collect();
    let mut missing = all.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {} queued traces never arrived, e.g. {}",
            missing.len(),
            all.len(),
            missing[0]
        );
        let mut still = Vec::new();
        for id in missing {
            let (status, body) = trace_body(&back, "single-tenant", id).await;
            let marker = if old_ids.contains(id) {
                old_marker
            } else {
                new_marker
            };
            if status != 200 || !body.contains(marker) {
                still.push(id);
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    drop(front);
    drop(back);
}

/// The `hmac:<id>:<16 hex>` pseudonym in a trace body.
fn pseudonym_in(body: &str) -> Option<String> {
    let at = body.find("hmac:kp")?;
    let rest = &body[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Sends a span with `user.email: email` and returns the pseudonym stored for it.
async fn email_pseudonym(server: &Server, trace_id: &str, email: &str) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 1_000_000_000;
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "signup"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708", "name": "register", "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string(),
            "attributes": [{"key": "user.email", "value": {"stringValue": email}}]
        }]}]
    }]});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = reqwest::get(format!("{}/api/traces/{trace_id}", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains(email), "the e-mail was stored: {body}");
    pseudonym_in(&body).unwrap_or_else(|| panic!("no pseudonym in {body}"))
}

/// `storage` (from an encryption example) plus one `redaction/pii` processor hashing e-mails
/// with `hash_key_source: key_provider`.
fn redaction_config(dir: &Path, storage: serde_yaml::Value, name: &str) -> PathBuf {
    let mut cfg = serde_yaml::Mapping::new();
    cfg.insert("storage".into(), storage);
    cfg.insert(
        "processors".into(),
        serde_yaml::from_str(
            "{redaction/pii: {allow_all_keys: true, patterns: [email], action: hash, hash_key_source: key_provider}}",
        )
        .unwrap(),
    );
    cfg.insert(
        "service".into(),
        serde_yaml::from_str(
            "{pipelines: {traces: {processors: [redaction/pii], exporters: [clew_store]}}}",
        )
        .unwrap(),
    );
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn redaction_hmac_secret_from_the_key_provider_survives_restarts_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.yaml");
    let out = clew(&["keys", "init", "--keyring", keyring.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut storage = example("encryption-local.yaml")["storage"].clone();
    storage["encryption"]["local"]["keyring"] = keyring.to_str().unwrap().into();
    storage.as_mapping_mut().unwrap().remove("path");
    let config = redaction_config(dir.path(), storage, "redaction.yaml");
    let data = dir.path().join("data");
    let email = "ann.secret@example.com";

    let server = Server::start_with(&data, Some(&config));
    let first = email_pseudonym(&server, "5ec0000000000000000000000000000a", email).await;
    assert!(first.starts_with("hmac:kp1:"), "{first}");
    assert_eq!(server.terminate().code(), Some(0));

    // The secret on disk is only the wrapped envelope.
    let secret_dir = data.join("keys/secrets/redaction%2Fpii");
    let file = secret_dir.join("v000001.json");
    let raw = std::fs::read(&file).unwrap();
    let envelope = clew_encryption::Envelope::from_json(&raw).unwrap();
    assert_eq!(envelope.tenant, clew_encryption::secrets::SECRETS_TENANT);
    let ring = clew_encryption::local::Keyring::open(&keyring).unwrap();
    let km = clew_encryption::KeyManager::new(std::sync::Arc::new(ring));
    let secret = km.open(&envelope).await.unwrap();
    // It is the key in use: HMAC-SHA256(secret, e-mail), first 8 bytes, is the pseudonym.
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret[..]),
        email.as_bytes(),
    );
    assert_eq!(
        first,
        format!("hmac:kp1:{}", hex::encode(&tag.as_ref()[..8]))
    );
    let hits = files_with(&data, &secret[..]);
    assert!(hits.is_empty(), "raw secret bytes in {hits:?}");
    let hits = files_with(&data, hex::encode(&secret[..]).as_bytes());
    assert!(hits.is_empty(), "hex of the raw secret in {hits:?}");

    // A restart hashes the same input identically.
    let server = Server::start_with(&data, Some(&config));
    let again = email_pseudonym(&server, "5ec0000000000000000000000000000b", email).await;
    assert_eq!(again, first);
    assert_eq!(server.terminate().code(), Some(0));

    // Rotation adds kp2 (kp1 stays); after the next start new values hash differently.
    let out = clew(&[
        "keys",
        "rotate-secret",
        "redaction/pii",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("kp2 is current") && text.contains("kp1"),
        "{text}"
    );
    assert!(secret_dir.join("v000001.json").exists());
    assert!(secret_dir.join("v000002.json").exists());
    let server = Server::start_with(&data, Some(&config));
    let rotated = email_pseudonym(&server, "5ec0000000000000000000000000000c", email).await;
    assert!(rotated.starts_with("hmac:kp2:"), "{rotated}");
    assert_ne!(rotated[9..], first[9..]);
    drop(server);

    // Without storage.encryption the key source is a start-up error naming it and the fix.
    let plain_path = redaction_config(
        dir.path(),
        serde_yaml::from_str("{block: {max_age: 1s}}").unwrap(),
        "redaction-plain.yaml",
    );
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--config",
            plain_path.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processors.redaction/pii.hash_key_source")
            && err.contains("storage.encryption"),
        "{err}"
    );
}

#[tokio::test]
async fn redaction_hmac_secret_wrapped_by_kms_survives_a_restart() {
    let (moto, creds) = Moto::start_with_signature_checks().await;
    let key = moto.create_kms_key("clew").await;
    let dir = tempfile::tempdir().unwrap();
    let mut storage = example("encryption-kms.yaml")["storage"].clone();
    storage.as_mapping_mut().unwrap().remove("path");
    let kms = storage["encryption"]["aws_kms"].as_mapping_mut().unwrap();
    kms.insert("endpoint".into(), moto.endpoint().into());
    kms.insert("region".into(), "us-east-1".into());
    kms.insert("key_id".into(), key.into());
    kms.remove("tenant_keys");
    let config = redaction_config(dir.path(), storage, "redaction-kms.yaml");
    let env = vec![
        ("AWS_ACCESS_KEY_ID", creds.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let data = dir.path().join("data");
    let email = "kms.user@example.com";
    let server = start(&data, &config, &env);
    let first = email_pseudonym(&server, "5ec1000000000000000000000000000a", email).await;
    assert!(first.starts_with("hmac:kp1:"), "{first}");
    assert_eq!(server.terminate().code(), Some(0));
    let raw = std::fs::read(data.join("keys/secrets/redaction%2Fpii/v000001.json")).unwrap();
    let envelope = clew_encryption::Envelope::from_json(&raw).unwrap();
    assert_eq!(envelope.provider, clew_encryption::ProviderKind::AwsKms);
    assert_eq!(envelope.tenant, clew_encryption::secrets::SECRETS_TENANT);
    let server = start(&data, &config, &env);
    let again = email_pseudonym(&server, "5ec1000000000000000000000000000b", email).await;
    assert_eq!(
        again, first,
        "the KMS-wrapped secret is unwrapped again after a restart"
    );
    drop(server);
}
