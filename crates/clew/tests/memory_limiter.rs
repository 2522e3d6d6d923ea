//! The `memory_limiter` processor with the real `clew` binary under overload.
//!
//! The limits are set relative to the idle server's resident memory (measured first, from
//! /proc/PID/status): soft limit = idle + 48 MiB, hard limit = idle + 168 MiB. Then 12 concurrent
//! clients send OTLP/HTTP and OTLP/gRPC exports as fast as they can for 10 s. Asserted: resident
//! memory (sampled every 20 ms) never reaches the hard limit, the server never dies, every refusal
//! is retryable (HTTP 503 + `Retry-After`, gRPC `UNAVAILABLE`), refusals happened (the limit was
//! really reached), every acknowledged trace is stored complete, and once the load stops every
//! refusal is justified (memory at or above the soft limit when it came) and the next export is
//! accepted within a few seconds of memory being back under the soft limit.

use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::Span;
use clew_model::otlp::Message;
mod common;
use common::Server;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SPANS: u32 = 200;

/// The pid of the `clew serve` whose `--data-dir` is `data`.
fn server_pid(data: &Path) -> u32 {
    let want = data.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.iter().any(|a| a == "serve") && args.contains(&want) {
            return pid;
        }
    }
    panic!("no clew serve process for {want}");
}

/// VmRSS of `pid` in bytes; `None` once the process is gone.
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn trace_id(client: u32, n: u32) -> Vec<u8> {
    let mut t = vec![0u8; 16];
    t[0..4].copy_from_slice(&std::process::id().to_be_bytes());
    t[4..8].copy_from_slice(&client.to_be_bytes());
    t[12..16].copy_from_slice(&n.to_be_bytes());
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn request(trace: &[u8]) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let payload = format!("{}-{}", hex(trace), "x".repeat(1000));
    let spans = (0..SPANS)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op-{}", i % 10),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(format!("{payload}{i}"))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    common::one_service_request("overload", spans)
}

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

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    refused: AtomicU64,
    acked: Mutex<Vec<Vec<u8>>>,
    wrong: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stays_under_the_hard_limit_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // Idle resident memory of this build on this machine.
    let idle_data = dir.path().join("idle");
    let idle = {
        let s = Server::start(&idle_data);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = rss(server_pid(&idle_data)).unwrap();
        drop(s);
        r
    };
    // Soft = idle + 48 MiB: headroom for what a server legitimately keeps after a load (block
    // index, caches, connection buffers), which at idle + 40 could keep it just over the limit.
    let limit_mib = (idle >> 20) + 168;
    let spike_mib = 120;
    let hard = limit_mib << 20;
    let cfg = dir.path().join("clew.yaml");
    std::fs::write(
        &cfg,
        format!(
            "processors:
  memory_limiter:
    check_interval: 50ms
    limit_mib: {limit_mib}
    spike_limit_mib: {spike_mib}
storage:
  block: {{max_spans: 20000, max_age: 2s}}
service:
  pipelines:
    traces:
      processors: [memory_limiter]
"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Arc::new(Server::start_with(&data, Some(&cfg)));
    let pid = server_pid(&data);

    // Resident memory, sampled until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match rss(pid) {
                    Some(r) => {
                        peak.fetch_max(r, Ordering::Relaxed);
                    }
                    None => return false,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            true
        })
    };

    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(10);
    let mut clients = Vec::new();
    for c in 0..12u32 {
        let (server, tally) = (server.clone(), tally.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut grpc = TraceServiceClient::connect(server.grpc.clone())
                .await
                .unwrap()
                .max_decoding_message_size(64 << 20);
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let t = trace_id(c, n);
                let req = request(&t);
                // Half the clients over gRPC, half over HTTP.
                let ok = if c % 2 == 0 {
                    match grpc.export(req).await {
                        Ok(_) => true,
                        Err(st) if st.code() == tonic::Code::Unavailable => false,
                        Err(st) => {
                            tally.wrong.lock().unwrap().push(format!("gRPC {st:?}"));
                            false
                        }
                    }
                } else {
                    let r = http
                        .post(format!("{}/v1/traces", server.http))
                        .header("content-type", "application/x-protobuf")
                        .body(req.encode_to_vec())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => true,
                        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                            false
                        }
                        Ok(r) => {
                            tally
                                .wrong
                                .lock()
                                .unwrap()
                                .push(format!("HTTP {}", r.status()));
                            false
                        }
                        Err(e) => {
                            tally.wrong.lock().unwrap().push(format!("HTTP error {e}"));
                            false
                        }
                    }
                };
                if ok {
                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                    tally.acked.lock().unwrap().push(t);
                } else {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    // A real client backs off; a short one keeps the pressure high.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(sampler.join().unwrap(), "the server died under load");
    assert!(alive(pid), "the server died under load");

    let (accepted, refused) = (
        tally.accepted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "idle {} MiB, soft {} MiB, hard {} MiB, peak {} MiB; accepted {accepted}, refused {refused}",
        idle >> 20,
        limit_mib - spike_mib,
        limit_mib,
        peak >> 20
    );
    assert!(
        tally.wrong.lock().unwrap().is_empty(),
        "every refusal is retryable: {:?}",
        tally.wrong.lock().unwrap()
    );
    assert!(
        refused > 0,
        "the load never reached the soft limit (peak {} MiB)",
        peak >> 20
    );
    assert!(accepted > 0);
    assert!(
        peak < hard,
        "resident memory {} MiB reached the hard limit {limit_mib} MiB",
        peak >> 20
    );
    let m = reqwest::get(format!("{}/metrics", server.query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines().any(
            |l| l.starts_with("clew_memory_limiter_refused_spans_total ") && !l.ends_with(" 0")
        ),
        "{m}"
    );

    // Load gone: accepted again as soon as memory is back under the soft limit.
    let soft = (limit_mib - spike_mib) << 20;
    let mut under_since: Option<Instant> = None;
    let started = Instant::now();
    let last = trace_id(99, 0);
    let mut grpc = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    loop {
        match grpc.export(request(&last)).await {
            Ok(_) => break,
            Err(st) => {
                assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
                // A refusal while memory is under the soft limit must not last: the limiter
                // checks every 100 ms.
                let now_rss = rss(pid).unwrap_or(0);
                if now_rss >= soft {
                    under_since = None;
                }
                let under = *under_since.get_or_insert_with(Instant::now);
                assert!(
                    now_rss >= soft || under.elapsed() < Duration::from_secs(2),
                    "still refusing {:?} after memory went under the soft limit (RSS {} MiB)",
                    under.elapsed(),
                    now_rss >> 20
                );
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "still refusing {:?} after the load stopped (RSS {} MiB, soft limit {} MiB)",
                    started.elapsed(),
                    now_rss >> 20,
                    soft >> 20
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "accepted again {:?} after the load stopped",
        started.elapsed()
    );

    // Everything acknowledged is stored, complete.
    let mut acked = tally.acked.lock().unwrap().clone();
    acked.push(last);
    for t in &acked {
        assert_eq!(
            stored(&server, t).await,
            SPANS as usize,
            "acknowledged trace {} is not complete",
            hex(t)
        );
    }
}
