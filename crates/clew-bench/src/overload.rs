//! `clew-bench overload`: Clew at a multiple of its sustainable rate with a `memory_limiter`
//! (issue 18, point 4). Not a CI test: a measurement for BENCHMARKS.md.
//!
//! Starts `clew serve` with `memory_limiter` (`--limit-mib`, `--spike-limit-mib`), offers
//! `--multiple` × `--rate` spans/s over OTLP/HTTP (pre-encoded requests of the benchmark workload,
//! open loop: requests are sent when due, up to `--connections` in flight; a request that cannot
//! start because all are busy counts as offered and refused by the client), and prints one line per
//! second: offered and accepted spans/s, the server's resident memory (VmRSS from /proc) and the
//! share refused. Afterwards it stops the load and times how long until the next export is
//! accepted. Every refusal must be retryable (503); anything else is counted as an error.

use crate::servers::{rss_bytes, start_clew};
use crate::workload::Pool;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct OverloadArgs {
    #[arg(long, default_value = "target/release/clew")]
    pub clew_bin: PathBuf,
    /// What Clew sustains on this machine, spans/s (from `clew-bench load`).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Offered load = multiple × rate.
    #[arg(long, default_value_t = 10)]
    pub multiple: u64,
    #[arg(long, default_value = "60s", value_parser = crate::humantime_secs)]
    pub duration: Duration,
    #[arg(long, default_value_t = 512)]
    pub limit_mib: u64,
    #[arg(long, default_value_t = 128)]
    pub spike_limit_mib: u64,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    #[arg(long, default_value = "target/bench-data/overload")]
    pub work_dir: PathBuf,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Default)]
struct Second {
    offered: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(a: OverloadArgs) -> anyhow::Result<()> {
    crate::fresh_dir(&a.work_dir)?;
    let cfg = a.work_dir.join("clew.yaml");
    std::fs::write(
        &cfg,
        format!(
            "processors:\n  memory_limiter:\n    check_interval: 100ms\n    limit_mib: {}\n    spike_limit_mib: {}\nservice:\n  pipelines:\n    traces:\n      processors: [memory_limiter]\n",
            a.limit_mib, a.spike_limit_mib
        ),
    )?;
    let server = start_clew(
        &a.clew_bin,
        &a.work_dir.join("data"),
        Some(&cfg),
        &a.work_dir.join("clew.log"),
    )?;
    let pid = server.pid();
    let pool = Arc::new(Pool::generate(
        18,
        64,
        10,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    ));
    let spans_per_req = pool.requests[0].spans as u64;
    let offered_rate = a.rate * a.multiple;
    let reqs_per_sec = (offered_rate / spans_per_req).max(1);
    let secs = a.duration.as_secs().max(1) as usize;
    let seconds: Arc<Vec<Second>> = Arc::new((0..secs + 1).map(|_| Second::default()).collect());
    let url = format!("http://{}/v1/traces", server.http);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections)
        .build()?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(a.connections));
    let rss_per_sec: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    {
        let rss_per_sec = rss_per_sec.clone();
        tokio::spawn(async move {
            for _ in 0..secs {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(mut v) = rss_per_sec.lock() {
                    v.push(rss_bytes(pid));
                }
            }
        });
    }
    eprintln!(
        "offering {offered_rate} spans/s ({reqs_per_sec} requests/s of {spans_per_req} spans) for {secs} s; limit {} MiB, spike {} MiB",
        a.limit_mib, a.spike_limit_mib
    );
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / reqs_per_sec as f64);
    let mut seq = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < a.duration {
        let due = start + period.mul_f64(seq as f64);
        tokio::time::sleep_until(due.into()).await;
        let sec = (start.elapsed().as_secs() as usize).min(secs);
        seconds[sec]
            .offered
            .fetch_add(spans_per_req, Ordering::Relaxed);
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // Every connection busy: the client could not even send (an overloaded server).
            seconds[sec]
                .refused
                .fetch_add(spans_per_req, Ordering::Relaxed);
            seq += 1;
            continue;
        };
        let (body, _, _) = pool.render(seq);
        seq += 1;
        let (client, url, seconds) = (client.clone(), url.clone(), seconds.clone());
        tasks.spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await;
            let s = &seconds[sec];
            match r.map(|r| r.status().as_u16()) {
                Ok(200) => s.accepted.fetch_add(spans_per_req, Ordering::Relaxed),
                Ok(503) | Ok(429) => s.refused.fetch_add(spans_per_req, Ordering::Relaxed),
                _ => s.errors.fetch_add(spans_per_req, Ordering::Relaxed),
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    // Recovery: how long until an export is accepted once the load is gone.
    let stopped = Instant::now();
    let recovery = loop {
        let (body, _, _) = pool.render(seq);
        seq += 1;
        let st = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .context("export after the load")?
            .status();
        if st == 200 {
            break stopped.elapsed();
        }
        if stopped.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("still refused 60 s after the load stopped");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    let rss = rss_per_sec.lock().map(|v| v.clone()).unwrap_or_default();
    println!("| s | offered spans/s | accepted spans/s | RSS MiB | refused % | errors |");
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut peak = 0;
    for (i, s) in seconds.iter().take(secs).enumerate() {
        let (o, acc, r, e) = (
            s.offered.load(Ordering::Relaxed),
            s.accepted.load(Ordering::Relaxed),
            s.refused.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
        );
        let m = rss.get(i).copied().unwrap_or(0);
        peak = peak.max(m);
        let share = if o == 0 {
            0.0
        } else {
            r as f64 * 100.0 / o as f64
        };
        println!(
            "| {} | {o} | {acc} | {} | {share:.1} | {e} |",
            i + 1,
            m >> 20
        );
        rows.push(serde_json::json!({"second": i + 1, "offered": o, "accepted": acc, "refused": r, "errors": e, "rss_bytes": m}));
    }
    println!(
        "peak RSS {} MiB (hard limit {} MiB); server alive: {alive}; accepted again {:?} after the load stopped",
        peak >> 20,
        a.limit_mib,
        recovery
    );
    crate::write_json(
        &a.json,
        serde_json::json!({"offered_rate": offered_rate, "limit_mib": a.limit_mib, "spike_limit_mib": a.spike_limit_mib,
            "peak_rss_bytes": peak, "alive": alive, "recovery_seconds": recovery.as_secs_f64(), "seconds": rows}),
    )?;
    server.stop()?;
    Ok(())
}
