//! `attributes` `from_context: client.address` / `auth.subject` with the real binary: the
//! receivers keep the peer's IP and the authenticated identity's subject (bearer tokens from
//! `examples/config/auth-tokens.yaml`, never the token itself) and the processor writes them
//! into the spans, over OTLP/HTTP and OTLP/gRPC.

mod common;
use common::Server;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const TOKEN: &str = "demo-team-a-token";

fn span_json(trace_id: &str) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 1_000_000_000;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ctx"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708", "name": "op", "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string()
        }]}]
    }]})
    .to_string()
}

async fn trace(server: &Server, trace_id: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("{}/api/traces/{trace_id}", server.query))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The span's tags as `key → value` text.
fn tags(v: &serde_json::Value) -> Vec<(String, String)> {
    v["data"][0]["spans"][0]["tags"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|t| {
            let value = match &t["value"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (t["key"].as_str().unwrap_or("").to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn client_address_and_auth_subject_reach_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
    let example = std::fs::read_to_string(examples.join("auth-tokens.yaml")).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&example.replace(
        "file: auth/tokens.yaml",
        &format!("file: {}", examples.join("auth/tokens.yaml").display()),
    ))
    .unwrap();
    cfg["processors"] = serde_yaml::from_str(
        "{attributes/ctx: {actions: [
            {key: client.address, action: insert, from_context: client.address},
            {key: enduser.id, action: upsert, from_context: auth.subject}]}}",
    )
    .unwrap();
    cfg["service"]["pipelines"] = serde_yaml::from_str(
        "{traces: {receivers: [otlp], processors: [attributes/ctx], exporters: [clew_store]}}",
    )
    .unwrap();
    let config = dir.path().join("clew.yaml");
    std::fs::write(&config, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let server = Server::start_with(&dir.path().join("data"), Some(&config));

    // OTLP/HTTP.
    let id = "c0de0000000000000000000000000001";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(span_json(id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = tags(&trace(&server, id).await);
    assert!(
        t.contains(&("client.address".into(), "127.0.0.1".into())),
        "{t:?}"
    );
    assert!(t.contains(&("enduser.id".into(), "team-a".into())), "{t:?}");
    assert!(
        t.iter().all(|(_, v)| !v.contains(TOKEN)),
        "no credential is copied: {t:?}"
    );

    // OTLP/gRPC.
    use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
    use clew_model::otlp::collector::ExportTraceServiceRequest;
    let req: ExportTraceServiceRequest = clew_model::otlp_json::decode_request(
        span_json("c0de0000000000000000000000000002").as_bytes(),
    )
    .unwrap();
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(req);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.export(request).await.unwrap();
    let t = tags(&trace(&server, "c0de0000000000000000000000000002").await);
    assert!(
        t.contains(&("client.address".into(), "127.0.0.1".into())),
        "{t:?}"
    );
    assert!(t.contains(&("enduser.id".into(), "team-a".into())), "{t:?}");
    drop(server);
}
