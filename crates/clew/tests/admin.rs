//! The administrative side of storage with the real `clew` binary and bearer-token auth: legal
//! holds and erasure through the CLI (`clew hold`, `clew erase`), scoped to the caller's tenant,
//! recorded in the hash-chained audit log with who did it, and `clew audit verify` catching an
//! edited record.

mod common;
use common::{clew, Server};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const TENANT_HEADER: &str = "X-Scope-OrgID";
const TEAM_A: &str = "demo-team-a-token";
const TEAM_B: &str = "demo-team-b-token";

fn config(dir: &Path) -> std::path::PathBuf {
    let tokens =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/auth/tokens.yaml");
    let auth = format!("auth:\n      bearer_tokens: {{file: {}}}", tokens.display());
    let text = format!(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n        {}\n\
         query:\n  endpoint: 127.0.0.1:16686\n  {}\n",
        auth.replace("\n      ", "\n          "),
        auth.replace("\n      ", "\n    "),
    );
    let path = dir.join("clew.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn span_json(trace_id: &str, user: &str) -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        - 5_000_000_000;
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0102030405060708", "name": "checkout",
            "kind": 2, "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 1_000_000).to_string(),
            "attributes": [{"key": "user.id", "value": {"stringValue": user}}]
        }]}]
    }]})
    .to_string()
}

async fn send(server: &Server, token: &str, trace_id: &str, user: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(span_json(trace_id, user))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn status(server: &Server, token: &str, trace_id: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/traces/{trace_id}", server.query))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn cli(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", &server.query, "--token", token]);
    clew(&all)
}

fn stdout_ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn holds_and_erasure_through_the_cli_are_scoped_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&config(dir.path())));
    let (alice1, alice2, bob, other) = (
        "aa000000000000000000000000000001",
        "aa000000000000000000000000000002",
        "bb000000000000000000000000000001",
        "cc000000000000000000000000000001",
    );
    send(&server, TEAM_A, alice1, "alice").await;
    send(&server, TEAM_A, alice2, "alice").await;
    send(&server, TEAM_A, bob, "bob").await;
    send(&server, TEAM_B, other, "alice").await;

    let out = stdout_ok(&cli(
        &server,
        TEAM_A,
        &["hold", "add", "--trace-id", alice1, "--reason", "case 42"],
    ));
    assert!(out.contains("hold added"), "{out}");
    let out = stdout_ok(&cli(
        &server,
        TEAM_A,
        &["erase", "--query", "user.id=alice"],
    ));
    assert!(out.contains("erased 1 trace(s)"), "{out}");
    assert!(out.contains(alice1) && out.contains("legal hold"), "{out}");

    assert_eq!(status(&server, TEAM_A, alice2).await, 404, "erased");
    // Every read path: api_v3, the UI's trace form, the doctor, and searches.
    for path in [
        format!("/api/v3/traces/{alice2}"),
        format!("/api/ui/traces/{alice2}"),
        format!("/api/doctor/traces/{alice2}"),
    ] {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", server.query))
            .bearer_auth(TEAM_A)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let found = reqwest::Client::new()
        .get(format!(
            "{}/api/traces?service=shop&tags=%7B%22user.id%22%3A%22alice%22%7D&lookback=1h",
            server.query
        ))
        .bearer_auth(TEAM_A)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!found.contains(alice2) && found.contains(alice1), "{found}");
    assert_eq!(status(&server, TEAM_A, alice1).await, 200, "held");
    assert_eq!(status(&server, TEAM_A, bob).await, 200);
    assert_eq!(
        status(&server, TEAM_B, other).await,
        200,
        "another tenant's alice is untouched"
    );

    // Tenancy: team-b's token cannot act on team-a; no token is refused.
    let r = reqwest::Client::new()
        .post(format!("{}/api/admin/erase", server.query))
        .bearer_auth(TEAM_B)
        .header(TENANT_HEADER, "team-a")
        .json(&serde_json::json!({"trace_ids": [bob]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reqwest::Client::new()
        .post(format!("{}/api/admin/erase", server.query))
        .json(&serde_json::json!({"trace_ids": [bob]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(status(&server, TEAM_A, bob).await, 200);

    // A held tenant refuses erasure (409) until released.
    stdout_ok(&cli(&server, TEAM_A, &["hold", "add", "--reason", "audit"]));
    let o = cli(&server, TEAM_A, &["erase", "--trace-id", bob]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("legal hold"));
    let out = stdout_ok(&cli(&server, TEAM_A, &["hold", "list"]));
    assert!(
        out.contains("case 42") && out.contains("\"audit\""),
        "{out}"
    );
    stdout_ok(&cli(&server, TEAM_A, &["hold", "release"]));
    stdout_ok(&cli(&server, TEAM_A, &["erase", "--trace-id", bob]));
    assert_eq!(status(&server, TEAM_A, bob).await, 404);

    // The audit log: every change, with who did it; and the chain verifies.
    let log = data.join("audit/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "config.loaded",
            "hold.add",
            "erase",
            "hold.add",
            "hold.release",
            "erase"
        ],
        "{text}"
    );
    for r in &records[1..] {
        assert!(r["actor"].as_str().unwrap().contains("team-a"), "{r}");
        assert_eq!(r["tenant"], "team-a");
    }
    assert_eq!(records[2]["details"]["traces"], 1);
    assert!(records[0]["details"]["sha256"].as_str().unwrap().len() == 64);
    let data_arg = data.to_str().unwrap();
    let out = stdout_ok(&clew(&["audit", "verify", "--data-dir", data_arg]));
    assert!(out.starts_with("ok: 6 records"), "{out}");

    // Editing one record breaks the chain exactly there.
    drop(server);
    std::fs::write(&log, text.replacen("\"case 42\"", "\"case 43\"", 1)).unwrap();
    let o = clew(&["audit", "verify", "--data-dir", data_arg]);
    assert!(!o.status.success());
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(msg.contains("BROKEN at line 2"), "{msg}");
}
