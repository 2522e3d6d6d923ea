//! A full disk with the real `clew` binary, its data directory on a 48 MiB tmpfs (the test runs as
//! root, as on CI; without the mount it fails and says so).
//!
//! 1. `refuses_before_full_and_resumes_by_itself`: with the default-on watermarks (here 10 % to
//!    stop, 20 % to resume) ingest is refused retryably before the disk is full — OTLP/HTTP 503
//!    with `Retry-After`, OTLP/gRPC `UNAVAILABLE` with `RetryInfo` — the metrics show free bytes
//!    and refusals, every acknowledged span is queryable; deleting a filler file lets ingest
//!    resume without a restart; after a restart every acknowledged span is still there.
//! 2. `enospc_without_watermarks_loses_nothing`: watermarks off, so writes really hit ENOSPC: the
//!    failed WAL writes are refused retryably (503, never acknowledged), and after kill -9 and a
//!    restart (space back) the store opens — no corrupt WAL segment or block — and every
//!    acknowledged span is there.

use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::Span;
use clew_model::otlp::Message;
mod common;
use common::Server;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SPANS_PER_TRACE: u32 = 100;

/// A tmpfs mounted for the test, unmounted on drop (after the server, declared later, is gone).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a {size_mib} MiB tmpfs at {} (it runs as root on CI): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem until `leave_mib` MiB are free.
fn fill(mnt: &Path, leave_mib: u64) -> PathBuf {
    let filler = mnt.join("filler");
    let free = free_bytes(mnt);
    let size = free.saturating_sub(leave_mib << 20);
    // Written, not `set_len`: a sparse file takes no space.
    std::fs::write(&filler, vec![0xa5u8; size as usize]).unwrap();
    filler
}

fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

fn trace_id(part: u8, n: u32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[0] = part;
    t[1..5].copy_from_slice(&std::process::id().to_be_bytes());
    t[12..16].copy_from_slice(&n.to_be_bytes());
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One trace of `SPANS_PER_TRACE` spans with ~1 KiB of incompressible attribute each, so the
/// disk fills through the WAL and the blocks alike.
fn request(trace: &[u8], seed: u64) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = seed | 1;
    let mut noise = || {
        (0..1024)
            .map(|_| {
                // xorshift: cheap incompressible bytes.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect::<String>()
    };
    let spans = (0..SPANS_PER_TRACE)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op-{i}"),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: vec![KeyValue {
                key: "noise".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(noise())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    common::one_service_request("disk-full", spans)
}

/// (status, Retry-After) of an OTLP/HTTP export.
async fn post(server: &Server, req: &ExportTraceServiceRequest) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Spans of a trace as the Jaeger API returns them (0 when not found).
async fn stored(server: &Server, trace: &[u8]) -> usize {
    let r = reqwest::get(format!("{}/api/traces/{}", server.query, hex(trace)))
        .await
        .unwrap();
    if r.status() != 200 {
        return 0;
    }
    let v: serde_json::Value = r.json().await.unwrap();
    v["data"][0]["spans"].as_array().map_or(0, Vec::len)
}

async fn assert_all_stored(server: &Server, acked: &[Vec<u8>], when: &str) {
    for t in acked {
        assert_eq!(
            stored(server, t).await,
            SPANS_PER_TRACE as usize,
            "{when}: acknowledged trace {} is not complete",
            hex(t)
        );
    }
}

fn write_config(dir: &Path, disk: &str) -> PathBuf {
    let p = dir.join("clew.yaml");
    std::fs::write(
        &p,
        format!(
            "storage:
  block: {{max_spans: 2000, max_age: 1s}}
  max_head_spans: 200000
  compaction: {{interval: 2s, min_blocks: 3}}
  disk: {disk}
"
        ),
    )
    .unwrap();
    p
}

/// Sends traces of part `part` until one is refused; returns the acknowledged ones and the
/// refusal's (status, Retry-After).
async fn send_until_refused(
    server: &Server,
    part: u8,
    acked: &mut Vec<Vec<u8>>,
) -> (u16, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0.. {
        assert!(Instant::now() < deadline, "never refused within 120 s");
        let t = trace_id(part, n);
        let (status, retry) = post(server, &request(&t, u64::from(n) + 1)).await;
        if status == 200 {
            acked.push(t);
        } else {
            return (status, retry);
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_before_full_and_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, 48);
    let cfg = write_config(
        dir.path(),
        "{min_free_percent: 10, resume_free_percent: 20}",
    );
    // ~20 MiB left for Clew: the watermarks (4.8 / 9.6 MiB free) are reached in seconds.
    let filler = fill(&mnt, 20);
    let server = Server::start_with(&mnt, Some(&cfg));

    let mut acked = Vec::new();
    let (status, retry) = send_until_refused(&server, 1, &mut acked).await;
    assert_eq!(status, 503, "a full disk is a retryable refusal");
    assert!(
        retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)),
        "503 carries Retry-After"
    );
    assert!(acked.len() >= 3, "some traces fit before the watermark");
    let free = free_bytes(&mnt);
    assert!(
        free > 2 << 20,
        "refused before the disk is full ({free} bytes free)"
    );

    // OTLP/gRPC: UNAVAILABLE with RetryInfo.
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let st = client
        .export(request(&trace_id(2, 0), 7))
        .await
        .expect_err("refused over gRPC too");
    assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
    assert!(
        !st.details().is_empty(),
        "UNAVAILABLE carries google.rpc.Status details (RetryInfo): {st:?}"
    );

    let m = metrics(&server).await;
    assert!(
        metric(&m, "clew_storage_disk_refused_requests_total").is_some_and(|v| v >= 2.0),
        "{m}"
    );
    assert!(metric(&m, "clew_storage_disk_free_bytes").is_some_and(|v| v > 0.0));
    assert_eq!(metric(&m, "clew_storage_disk_refusing"), Some(1.0));

    // Everything acknowledged is queryable while the disk is full.
    assert_all_stored(&server, &acked, "while refusing").await;

    // Space comes back: ingest resumes by itself (next reading within a few hundred ms).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = trace_id(3, 0);
    loop {
        let (status, _) = post(&server, &request(&resumed, 99)).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "ingest did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked.push(resumed);
    assert_eq!(
        metric(&metrics(&server).await, "clew_storage_disk_refusing"),
        Some(0.0)
    );
    assert_all_stored(&server, &acked, "after resuming").await;

    // And after a restart.
    assert!(server.terminate().success());
    let server = Server::start_with(&mnt, Some(&cfg));
    assert_all_stored(&server, &acked, "after a restart").await;
    let log = std::fs::read_to_string(mnt.with_extension("log")).unwrap();
    assert!(!log.contains("compaction failed"), "{log}");
    assert!(
        log.contains("disk almost full") && !log.contains("WAL write failed"),
        "the watermark refused before any write failed: {log}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_without_watermarks_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, 48);
    let cfg = write_config(dir.path(), "{enabled: false}");
    let filler = fill(&mnt, 12);
    let server = Server::start_with(&mnt, Some(&cfg));

    let mut acked = Vec::new();
    let (status, _) = send_until_refused(&server, 4, &mut acked).await;
    assert_eq!(
        status, 503,
        "a WAL write that hit ENOSPC is refused retryably"
    );
    assert!(acked.len() >= 3, "some traces fit before the disk is full");
    // The failed write was cut back, so the WAL keeps taking what fits: more refusals, no crash.
    for n in 0..5u32 {
        let t = trace_id(5, n);
        let (status, _) = post(&server, &request(&t, 5)).await;
        assert!(status == 503 || status == 200, "status {status}");
        if status == 200 {
            acked.push(t);
        }
    }
    assert_all_stored(&server, &acked, "on a full disk").await;
    let log = std::fs::read_to_string(mnt.with_extension("log")).unwrap();
    assert!(
        log.contains("WAL write failed"),
        "the disk really filled under a WAL write: {log}"
    );

    // kill -9 on a full disk, space back, restart: the WAL replays, no block is half-visible.
    drop(server);
    std::fs::remove_file(&filler).unwrap();
    let server = Server::start_with(&mnt, Some(&cfg));
    assert_all_stored(&server, &acked, "after kill -9 and restart").await;
    let resumed = trace_id(6, 0);
    assert_eq!(post(&server, &request(&resumed, 3)).await.0, 200);
    assert_eq!(stored(&server, &resumed).await, SPANS_PER_TRACE as usize);
    drop(server);
}
