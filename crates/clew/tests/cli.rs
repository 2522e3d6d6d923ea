//! The real `clew` binary end to end: serve on free loopback ports, `clew demo` traffic, `clew trace`,
//! `clew search`, `clew config check`, and SIGTERM flushing into blocks that survive a restart.

mod common;
use common::{clew, Server};
use std::path::Path;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn example_trace_id(demo_out: &str) -> String {
    demo_out
        .lines()
        .find_map(|l| l.trim().strip_prefix("example trace:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("demo printed no example trace id:\n{demo_out}"))
}

#[test]
fn serve_demo_trace_search_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);

    let demo = clew(&[
        "demo",
        "--endpoint",
        &server.grpc,
        "--traces",
        "30",
        "--rate",
        "0",
        "--seed",
        "7",
    ]);
    assert!(
        demo.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let out = stdout(&demo);
    let id = example_trace_id(&out);

    // The tree names the root and nests children under it.
    let trace = clew(&["trace", &id, "--query", &server.query]);
    assert!(
        trace.status.success(),
        "{}",
        String::from_utf8_lossy(&trace.stderr)
    );
    let tree = stdout(&trace);
    let first = tree.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("frontend "),
        "root line: {first:?}\n{tree}"
    );
    assert!(
        tree.lines().any(|l| l.starts_with("    ")),
        "children are indented:\n{tree}"
    );
    assert!(tree.contains("payment"), "{tree}");

    let search = clew(&[
        "search",
        "--service",
        "inventory",
        "--attr",
        "db.system=postgresql",
        "--query",
        &server.query,
    ]);
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    let table = stdout(&search);
    assert!(
        table.lines().count() >= 2,
        "header and at least one row:\n{table}"
    );
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("frontend: GET /checkout")),
        "{table}"
    );

    let nothing = clew(&[
        "search",
        "--service",
        "inventory",
        "--attr",
        "db.system=oracle",
        "--query",
        &server.query,
    ]);
    assert_eq!(stdout(&nothing).trim(), "no traces found");

    let missing = clew(&[
        "trace",
        "0123456789abcdef0123456789abcdef",
        "--query",
        &server.query,
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // SIGTERM flushes the head into Parquet blocks; after a restart the trace is read from them.
    assert!(server.terminate().success());
    let parquet_files = walk(&data.join("blocks"))
        .into_iter()
        .filter(|p| p.ends_with("data.parquet"))
        .count();
    assert!(parquet_files >= 1, "no block written on shutdown");
    let server = Server::start(&data);
    let again = stdout(&clew(&["trace", &id, "--query", &server.query]));
    assert_eq!(again, tree, "same tree after restart, now read from blocks");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn config_check_names_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, include_str!("../../../examples/config/clew.yaml")).unwrap();
    let ok = clew(&["config", "check", good.to_str().unwrap()]);
    assert!(ok.status.success());
    assert!(stdout(&ok).contains("OK"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "storage:\n  block:\n    max_age: forever\n").unwrap();
    let err = clew(&["config", "check", bad.to_str().unwrap()]);
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("bad.yaml") && msg.contains("storage.block.max_age") && msg.contains("fix:"),
        "{msg}"
    );

    // serve refuses to start with it, with the same message.
    let serve = clew(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!serve.status.success());
    assert!(String::from_utf8_lossy(&serve.stderr).contains("storage.block.max_age"));
}
