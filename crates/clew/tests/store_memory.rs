//! Issue 18 leftovers with the real `clew` binary: resident memory after the store's large
//! transient allocations (head flushes, compaction), and the tail sampler log's metrics on
//! `/metrics` across a kill -9.

use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
mod common;
use common::Server;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Traces `first..first + n` of two spans each (root + failing-or-not child) of one service;
/// `attrs` string attributes per span make the spans realistically heavy.
fn traces(first: u32, n: u32, error: impl Fn(u32) -> bool, attrs: usize) -> Vec<ResourceSpans> {
    let now = now_nanos();
    let spans = (first..first + n)
        .flat_map(|t| {
            let mut id = [0x7au8; 16];
            id[..4].copy_from_slice(&t.to_be_bytes());
            id[4..8].copy_from_slice(&t.wrapping_mul(2_654_435_761).to_be_bytes());
            let failing = error(t);
            [1u8, 2].map(move |s| Span {
                trace_id: id.to_vec(),
                span_id: vec![s; 8],
                parent_span_id: if s == 2 { vec![1; 8] } else { vec![] },
                name: if s == 1 { "GET /cart" } else { "SELECT cart" }.into(),
                kind: 2,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 5_000_000,
                attributes: (0..attrs)
                    .map(|i| KeyValue {
                        key: format!("attr.{i}"),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(format!("value-{t}-{i}-{s}"))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                status: (failing && s == 2).then(|| Status {
                    code: StatusCode::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            })
        })
        .collect();
    vec![ResourceSpans {
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
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

async fn send(client: &reqwest::Client, http: &str, rs: Vec<ResourceSpans>) {
    let body = ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec();
    let r = client
        .post(format!("{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

async fn scrape(query: &str) -> String {
    reqwest::get(format!("{query}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_hwm_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The store's trims and merges are logged at debug: shown in the log when a test fails.
const STORE_DEBUG_LOG: &[(&str, &str)] = &[("RUST_LOG", "info,clew_store=debug")];

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("clew.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

/// The soak's "RSS steps up after every restart" was compaction, not WAL replay: a restart
/// compacts at once every block written so far, the merge decodes its slices of spans into
/// objects, and glibc kept the freed pages for the rest of the process's life (600 MiB resident
/// of a 783 MiB peak, idle). The store now hands freed pages back after each merge (and flush).
/// Blocks are written with compaction off, then a restart with it on merges them: once merged,
/// the idle server must be far below its peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_falls_back_after_a_compaction_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = write_config(
        dir.path(),
        "storage:\n  block:\n    max_age: 1s\n  compaction:\n    enabled: false\n",
    );
    let server = Server::start_with_env(&data, Some(&cfg), STORE_DEBUG_LOG);
    let client = reqwest::Client::new();
    // Two flushed generations of 60,000 spans: two blocks.
    for round in 0..2u32 {
        for r in 0..30u32 {
            let first = round * 30_000 + r * 1_000;
            send(&client, &server.http, traces(first, 1_000, |_| false, 8)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = scrape(&server.query).await;
            if sample(&m, "clew_head_spans") == Some(0.0) {
                break;
            }
            assert!(Instant::now() < deadline, "head not flushed:\n{m}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(server);

    let cfg = write_config(
        dir.path(),
        "storage:\n  compaction:\n    enabled: true\n    interval: 1s\n    min_blocks: 2\n",
    );
    let server = Server::start_with_env(&data, Some(&cfg), STORE_DEBUG_LOG);
    let pid = server.pid();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = scrape(&server.query).await;
        if sample(&m, "clew_compaction_runs_total").unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no compaction:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The trim follows the counter's increment; give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, hwm) = rss_hwm_kib(pid);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("compacted") || l.contains("free heap"))
        .collect();
    assert!(
        hwm > 96 * 1024,
        "merging 120,000 spans should have cost memory (peak {hwm} KiB)\n{}",
        events.join("\n")
    );
    assert!(
        rss < hwm / 2,
        "resident memory stays near the merge's peak: peak {hwm} KiB, now {rss} KiB\n{}",
        events.join("\n")
    );
}

const TAIL: &str = "processors:
  tail_sampling/errors:
    decision_wait: 6s
    root_send_delay: 0s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
service:
  pipelines:
    traces:
      processors: [tail_sampling/errors]
";

const P: &str = "{processor=\"tail_sampling/errors\"";

/// Bytes and number of the sampler log's segment files under `dir`.
fn slog_files(dir: &Path) -> (u64, usize) {
    let mut out = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            let (b, n) = slog_files(&p);
            out = (out.0 + b, out.1 + n);
        } else if p.extension().is_some_and(|x| x == "slog") {
            out = (out.0 + e.metadata().map_or(0, |m| m.len()), out.1 + 1);
        }
    }
    out
}

/// The durable tail sampler's log on `/metrics`: records and fsyncs counted while ingesting,
/// bytes and segments matching the files on disk, and after kill -9 the traces rebuilt from the
/// log and their decisions (kept ones counted once the store accepted them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_log_metrics_across_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), TAIL);
    let data = dir.path().join("data");
    let server = Server::start_with(&data, Some(&cfg));
    let sent = Instant::now();
    let client = reqwest::Client::new();
    // Traces 0..5: even ones fail (kept), odd ones are dropped.
    send(&client, &server.http, traces(0, 5, |t| t % 2 == 0, 1)).await;
    let m = scrape(&server.query).await;
    let spans_records = sample(
        &m,
        &format!("clew_sampling_log_records_total{P},kind=\"spans\"}}"),
    );
    assert!(spans_records.is_some_and(|n| n >= 1.0), "{m}");
    let fsyncs = sample(&m, &format!("clew_sampling_log_fsyncs_total{P}}}"));
    // The start-up rewrite and at least one group commit.
    assert!(fsyncs.is_some_and(|n| n >= 2.0), "{m}");
    let (bytes, segments) = slog_files(&data.join("sampler"));
    assert!(bytes > 0);
    assert_eq!(
        sample(&m, &format!("clew_sampling_log_bytes{P}}}")),
        Some(bytes as f64),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("clew_sampling_log_segments{P}}}")),
        Some(segments as f64),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("clew_sampling_log_replayed_traces_total{P}}}")),
        Some(0.0),
        "{m}"
    );
    // kill -9 while the five traces are buffered (decision_wait 6 s).
    drop(server);
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "too slow to crash before the decision"
    );

    let server = Server::start_with(&data, Some(&cfg));
    let m = scrape(&server.query).await;
    assert_eq!(
        sample(&m, &format!("clew_sampling_log_replayed_traces_total{P}}}")),
        Some(5.0),
        "{m}"
    );
    let kept = format!("clew_sampling_log_replayed_decided_total{P},decision=\"kept\"}}");
    let dropped = format!("clew_sampling_log_replayed_decided_total{P},decision=\"dropped\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = scrape(&server.query).await;
        if sample(&m, &kept) == Some(3.0) && sample(&m, &dropped) == Some(2.0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "rebuilt traces not decided:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        sample(
            &m,
            &format!("clew_sampling_log_records_total{P},kind=\"decided\"}}")
        )
        .is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(server.terminate().success());
}
