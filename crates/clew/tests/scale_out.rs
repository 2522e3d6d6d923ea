//! `clew serve --target ingester|querier` with TLS and authentication between them: an ingester
//! whose query listener (and so its read API) has TLS and bearer-token auth, and queriers that
//! call it with the right client settings, without a token, and in plain HTTP. Real binaries, a
//! real bucket (moto_server). The whole topology on Kafka is `tests/python/test_scale_out.py`.

mod common;
#[path = "../../clew-store/tests/common/moto.rs"]
mod moto;

use common::certs::{write, Ca};
use common::{clew, Server};
use std::path::Path;
use std::time::{Duration, Instant};

const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
    ("AWS_REGION", moto::REGION),
];

/// The example tokens file: `demo-ops-token` may use every tenant, `demo-team-a-token` only
/// `team-a`.
fn tokens_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/config/auth/tokens.yaml")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}

/// Spans of a trace through a querier's Jaeger API (0 when not found).
fn span_count(querier: &Server, id: &str) -> usize {
    let (status, body) =
        moto::http(port_of(&querier.query), "GET", &format!("/api/traces/{id}")).unwrap();
    match status {
        404 => 0,
        200 => body.matches("\"spanID\"").count(),
        other => panic!("querier answered {other}: {body}"),
    }
}

fn querier(dir: &Path, name: &str, storage: &str, cluster: &str) -> Server {
    let cfg = write(
        dir,
        &format!("{name}.yaml"),
        &format!("target: querier\n{storage}cluster:\n{cluster}"),
    );
    Server::start_with_env(&dir.join(name), Some(&cfg), &AWS_ENV)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_querier_reaches_a_tls_and_token_protected_ingester_only_with_its_credentials() {
    let moto = moto::Moto::start();
    moto.create_bucket("scale");
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Clew scale-out CA");
    let server = ca.server();
    write(dir.path(), "server.pem", &server.cert);
    write(dir.path(), "server-key.pem", &server.key);
    write(dir.path(), "ca.pem", &ca.pem);
    let storage = format!(
        "storage:\n  s3: {{bucket: scale, endpoint: {}, force_path_style: true}}\n",
        moto.endpoint
    );
    // No flush during the test: everything the queriers find comes from the ingester's head.
    let ingester_cfg = write(
        dir.path(),
        "ingester.yaml",
        &format!(
            "target: ingester\n{storage}  block: {{max_age: 1h}}\nquery:\n  tls: {{cert_file: server.pem, key_file: server-key.pem}}\n  auth: {{bearer_tokens: {{file: {}}}}}\n",
            tokens_file()
        ),
    );
    let ingester =
        Server::start_with_env(&dir.path().join("ingester"), Some(&ingester_cfg), &AWS_ENV);
    let ingester_url = format!("https://localhost:{}", port_of(&ingester.query));

    let demo = clew(&[
        "demo",
        "--endpoint",
        &ingester.grpc,
        "--traces",
        "5",
        "--rate",
        "0",
        "--seed",
        "11",
    ]);
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let id = String::from_utf8_lossy(&demo.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("example trace:")
                .map(|s| s.trim().to_string())
        })
        .expect("demo prints an example trace id");

    let trusted = querier(
        dir.path(),
        "trusted",
        &storage,
        &format!("  ingesters: [{ingester_url}]\n  ingester_client:\n    tls: {{ca_file: ca.pem}}\n    headers: {{authorization: \"Bearer demo-ops-token\"}}\n"),
    );
    let tokenless = querier(
        dir.path(),
        "tokenless",
        &storage,
        &format!(
            "  ingesters: [{ingester_url}]\n  ingester_client:\n    tls: {{ca_file: ca.pem}}\n"
        ),
    );
    let plaintext = querier(
        dir.path(),
        "plaintext",
        &storage,
        &format!(
            "  ingesters: [http://127.0.0.1:{}]\n  ingester_client:\n    headers: {{authorization: \"Bearer demo-ops-token\"}}\n",
            port_of(&ingester.query)
        ),
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let n = span_count(&trusted, &id);
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        found > 0,
        "the trusted querier never found the trace in the ingester's head"
    );
    assert!(
        moto.keys("scale", "tenants/").is_empty(),
        "nothing was flushed: the answer came from the ingester"
    );
    // Without the token the ingester refuses (401); in plain HTTP the TLS listener does not
    // answer. Either way the querier answers without it, and says why in its log.
    assert_eq!(span_count(&tokenless, &id), 0);
    assert_eq!(span_count(&plaintext, &id), 0);
    let log = |name: &str| {
        std::fs::read_to_string(dir.path().join(name).with_extension("log")).unwrap_or_default()
    };
    assert!(
        log("tokenless").contains("HTTP 401"),
        "{}",
        log("tokenless")
    );
    assert!(
        log("plaintext").contains("an ingester did not answer"),
        "{}",
        log("plaintext")
    );
    // And counts it, per ingester and outcome.
    let calls = |q: &Server, outcome: &str| -> f64 {
        let (_, text) = moto::http(port_of(&q.query), "GET", "/metrics").unwrap();
        let label = format!("outcome=\"{outcome}\"");
        text.lines()
            .filter(|l| l.starts_with("clew_querier_ingester_calls_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(calls(&trusted, "ok") >= 1.0 && calls(&trusted, "failed") == 0.0);
    assert!(calls(&tokenless, "failed") >= 1.0 && calls(&tokenless, "ok") == 0.0);
    // A token limited to one tenant is refused for another through the read API itself.
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let read = |token: &'static str, tenant: &'static str| {
        c.post(format!("{ingester_url}/api/internal/v1/read"))
            .bearer_auth(token)
            .header("X-Scope-OrgID", tenant)
            .json(&serde_json::json!({"op": "services"}))
            .send()
    };
    assert_eq!(
        read("demo-team-a-token", "team-b").await.unwrap().status(),
        403
    );
    let ok = read("demo-ops-token", "single-tenant").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(!ok.json::<Vec<String>>().await.unwrap().is_empty());

    for s in [trusted, tokenless, plaintext, ingester] {
        assert!(s.terminate().success());
    }
}
