//! Drain throughput of the durable sending queue: batches are queued (fsynced) while the
//! destination is down, then the destination comes up and the time until every span has been
//! accepted is measured. The destination is the tests' real OTLP receiver on loopback.
//!
//! `cargo bench -p clew-export --bench drain` (env `DRAIN_BATCHES`, `DRAIN_SPANS` to resize).

#[path = "../tests/common/mod.rs"]
mod common;

use clew_export::{Compression, ExporterMetrics, OtlpExporter, OtlpExporterConfig, Protocol};
use clew_model::SpanSink;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(protocol: Protocol, compression: Compression, batches: usize, spans: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = common::Receiver::start().await;
    r.state
        .count_only
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cfg = OtlpExporterConfig::new(match protocol {
        Protocol::Grpc => r.grpc_url(),
        Protocol::Http => r.http_url(),
    });
    cfg.compression = compression;
    common::fast_retry(&mut cfg);
    r.stop().await;
    let metrics = ExporterMetrics::new();
    let exp = OtlpExporter::start("otlp/bench", protocol, &cfg, dir.path(), &metrics).unwrap();
    let b = common::batch("acme", "s", spans);
    let t0 = Instant::now();
    // Enqueue from 8 concurrent producers (group commit).
    let per = batches / 8;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let exp = exp.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                exp.consume(b.clone()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let enqueue = t0.elapsed();
    let total = per * 8 * spans;
    let bytes = exp.queued_bytes();
    let t1 = Instant::now();
    r.restart().await;
    r.wait_accepted_count(total, Duration::from_secs(600)).await;
    let drain = t1.elapsed();
    println!(
        "{protocol:?}/{compression:?}: {batches} batches × {spans} spans ({:.1} MiB queued): enqueue {:.0} spans/s, drain {:.0} spans/s ({:.1} MiB/s)",
        bytes as f64 / 1048576.0,
        total as f64 / enqueue.as_secs_f64(),
        total as f64 / drain.as_secs_f64(),
        bytes as f64 / 1048576.0 / drain.as_secs_f64(),
    );
    exp.shutdown().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let batches = env("DRAIN_BATCHES", if quick { 16 } else { 4000 });
    let spans = env("DRAIN_SPANS", 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for protocol in [Protocol::Grpc, Protocol::Http] {
        for compression in [Compression::Gzip, Compression::None] {
            rt.block_on(run(protocol, compression, batches, spans));
        }
    }
}
