//! `clew search -q '{ … }'` against the real binary: TraceQL through the Tempo API the query port
//! serves under `/tempo`, one line per trace, and a parse error's message with a non-zero exit.

mod common;
use common::{clew, Server};
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn traceql_search_from_the_cli() {
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
    assert!(demo.status.success(), "demo failed: {}", stderr(&demo));
    let example = stdout(&demo)
        .lines()
        .find_map(|l| l.trim().strip_prefix("example trace:"))
        .map(|s| s.trim().to_string())
        .expect("demo prints an example trace id");

    // A typed, structural query: inventory's database spans under the checkout root.
    let found = clew(&[
        "search",
        "-q",
        "{ rootName = \"GET /checkout\" } >> { resource.service.name = \"inventory\" && span.db.system = \"postgresql\" }",
        "--query",
        &server.query,
    ]);
    assert!(found.status.success(), "{}", stderr(&found));
    let table = stdout(&found);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(table.starts_with("TRACE ID"), "{table}");
    assert!(!rows.is_empty(), "at least one trace:\n{table}");
    for row in &rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0].len(), 32, "trace id first: {row}");
        assert_eq!(cols[1], "frontend", "root service: {row}");
        assert!(row.contains("GET /checkout"), "root name: {row}");
        let matched: u64 = cols.last().unwrap().parse().unwrap();
        assert!(matched >= 1, "{row}");
    }

    // Every trace, newest first: the demo's example trace is among them, and limit holds.
    let all = clew(&[
        "search",
        "-q",
        "{ }",
        "--limit",
        "100",
        "--query",
        &server.query,
    ]);
    assert!(all.status.success(), "{}", stderr(&all));
    let all = stdout(&all);
    assert!(all.contains(&example), "{example} in:\n{all}");
    let two = clew(&[
        "search",
        "-q",
        "{ }",
        "--limit",
        "2",
        "--query",
        &server.query,
    ]);
    assert_eq!(stdout(&two).lines().count(), 3, "header and two rows");

    let none = clew(&[
        "search",
        "--traceql",
        "{ span.db.system = \"oracle\" }",
        "--query",
        &server.query,
    ]);
    assert!(none.status.success(), "{}", stderr(&none));
    assert_eq!(stdout(&none).trim(), "no traces found");

    // A 400 prints Clew's parse message, position and expectation included, and fails.
    let bad = clew(&["search", "-q", "{ span.foo foo }", "--query", &server.query]);
    assert!(!bad.status.success());
    let msg = stderr(&bad);
    assert!(
        msg.contains("parse error at 1:12")
            && msg.contains("expected a comparison operator")
            && msg.contains("found \"foo\""),
        "{msg}"
    );

    server.terminate();
}
