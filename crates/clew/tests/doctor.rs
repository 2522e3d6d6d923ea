//! `clew doctor` end to end: `clew serve`, `clew demo` traffic (healthy by construction), then
//! `clew doctor --format json` must report nothing; the doctor HTTP API answers in its contract.

mod common;
use common::{clew, ok, Server};

#[test]
fn demo_traffic_is_healthy_according_to_the_doctor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let demo = clew(&[
        "demo",
        "--endpoint",
        &server.grpc,
        "--traces",
        "150",
        "--rate",
        "0",
        "--seed",
        "11",
    ]);
    ok(&demo, "demo");

    // The demo's spans end "now": judge them at once (no grace period).
    let out = clew(&[
        "doctor",
        "--since",
        "10m",
        "--grace",
        "0s",
        "--format",
        "json",
        "--endpoint",
        &server.query,
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "doctor")).unwrap();
    assert_eq!(report["traces_examined"], 150, "{report:#}");
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");

    // With the default grace period, the fresh traces are not judged yet.
    let out = clew(&["doctor", "--format", "json", "--endpoint", &server.query]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "doctor")).unwrap();
    assert_eq!(report["traces_examined"], 0, "{report:#}");

    // Text output.
    let out = clew(&["doctor", "--grace", "0s", "--endpoint", &server.query]);
    let text = ok(&out, "doctor text");
    assert!(text.contains("examined 150 of ~150 traces"), "{text}");
    assert!(text.contains("(100.0% coverage)"), "{text}");
    assert!(text.contains("no problems found"), "{text}");

    // Another tenant has no traces.
    let out = clew(&[
        "doctor",
        "--grace",
        "0s",
        "--format",
        "json",
        "--tenant",
        "nobody",
        "--endpoint",
        &server.query,
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok(&out, "doctor tenant")).unwrap();
    assert_eq!(report["traces_examined"], 0);

    // The service graph of the demo shop, fed live by the ingest-path processor.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let url = format!(
        "{}/api/doctor/service-graph?start={}&end={}",
        server.query,
        now - 600_000_000,
        now + 60_000_000
    );
    let body = http_get(&url);
    let graph: serde_json::Value = serde_json::from_str(&body).unwrap();
    let edges = graph["edges"].as_array().unwrap();
    let has = |s: &str, t: &str| {
        edges
            .iter()
            .any(|e| e["source"] == s && e["target"] == t && e["requests"].as_u64() > Some(0))
    };
    assert!(has("frontend", "checkout"), "{graph:#}");
    assert!(has("checkout", "inventory"), "{graph:#}");
    assert!(has("checkout", "email"), "{graph:#}");
    assert!(has("inventory", "postgresql"), "{graph:#}");
    let nodes = graph["nodes"].as_array().unwrap();
    assert!(nodes
        .iter()
        .any(|n| n["id"] == "postgresql" && n["virtual"] == true));
    assert!(nodes
        .iter()
        .any(|n| n["id"] == "frontend" && n["virtual"] == false));

    // RED metrics under Tempo's names.
    let metrics = http_get(&format!("{}/metrics", server.query));
    assert!(
        metrics
            .contains("traces_service_graph_request_total{client=\"frontend\",server=\"checkout\""),
        "{metrics}"
    );
    assert!(metrics.contains("traces_spanmetrics_calls_total{service=\"frontend\""));
}

/// A tiny blocking HTTP GET (no extra dev-dependency).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
