//! `compaction-load`: what a merge running beside ingest does to it. One store of flushed,
//! uncompacted blocks is built once (compaction off, the load at full speed); then, per round and
//! binary, a copy of it is opened with compaction on (every 2 s, merges of up to 6M spans, so a
//! merge starts at once and runs through the window) while a fixed-rate OTLP/gRPC load runs.
//! Reported per run: acknowledged rate, export latency p50/p99/max, server CPU, the CPU of the
//! `clew-compactor` thread (binaries that have one) and when the first merge finished.
//! Binaries alternate within each round, so drift on a shared machine hits both alike.

use crate::fresh_dir;
use crate::load::{self, LoadSpec, Protocol};
use crate::proc_stat;
use crate::servers;
use crate::workload::Pool;
use anyhow::{bail, Context};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE_CONFIG: &str = "storage:\n  compaction:\n    enabled: false\n";
const RUN_CONFIG: &str =
    "storage:\n  compaction:\n    interval: 2s\n    min_blocks: 2\n    max_block_spans: 6000000\n";

#[derive(clap::Args)]
pub struct CompactionLoadArgs {
    /// One or more binaries to compare (repeat the flag).
    #[arg(long = "clew-bin", default_value = "target/release/clew")]
    pub clew_bins: Vec<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Offered spans per second during each run (0: as fast as acknowledgements come back).
    #[arg(long, default_value_t = 60_000)]
    pub rate: u64,
    #[arg(long, default_value = "60s", value_parser = crate::humantime_secs)]
    pub duration: Duration,
    /// How long the full-speed load that builds the uncompacted store runs.
    #[arg(long, default_value = "90s", value_parser = crate::humantime_secs)]
    pub base_duration: Duration,
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, default_value = "target/bench-data/compaction-load")]
    pub work_dir: PathBuf,
}

pub async fn compaction_load(
    a: CompactionLoadArgs,
    pool: Arc<Pool>,
) -> anyhow::Result<serde_json::Value> {
    if a.clew_bins.is_empty() {
        bail!("give at least one --clew-bin");
    }
    fresh_dir(&a.work_dir)?;
    let base = a.work_dir.join("base");
    let base_cfg = a.work_dir.join("base.yaml");
    let run_cfg = a.work_dir.join("run.yaml");
    std::fs::write(&base_cfg, BASE_CONFIG)?;
    std::fs::write(&run_cfg, RUN_CONFIG)?;

    eprintln!(
        "compaction-load: building the uncompacted store ({:?} at full speed)…",
        a.base_duration
    );
    let server = servers::start_clew(
        &a.clew_bins[0],
        &base,
        Some(&base_cfg),
        &a.work_dir.join("base.log"),
    )?;
    let r = load::run(spec(&server, &a, 0, a.base_duration), pool.clone()).await?;
    server.stop()?;
    let blocks = servers::block_count(&base);
    eprintln!(
        "compaction-load: {} spans in {blocks} blocks",
        r.spans_acked
    );
    if blocks < 2 {
        bail!("the base store has {blocks} block(s): nothing to merge");
    }

    let mut runs = Vec::new();
    for round in 1..=a.rounds {
        for (i, bin) in a.clew_bins.iter().enumerate() {
            let dir = a.work_dir.join("run");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            copy_dir(&base, &dir)?;
            let log = a.work_dir.join(format!("run-{round}-{i}.log"));
            let server = servers::start_clew(bin, &dir, Some(&run_cfg), &log)?;
            let pid = server.pid();
            let compactor0 = proc_stat::thread_cpu_seconds(pid, "clew-compactor");
            let merge_done = watch_first_merge(&server);
            let r = load::run(spec(&server, &a, a.rate, a.duration), pool.clone()).await?;
            let compactor = proc_stat::thread_cpu_seconds(pid, "clew-compactor")
                .zip(compactor0)
                .map(|(b, a)| b - a);
            let first_merge_s = merge_done.await.ok().flatten();
            server.stop()?;
            println!(
                "round {round} {}: {:.0} spans/s acked (offered {}), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, server {:.1} cpu-s, compactor thread {}, first merge done after {}, load avg {}",
                bin.display(),
                r.spans_per_sec,
                a.rate,
                r.latency_p50_ms,
                r.latency_p99_ms,
                r.latency_max_ms,
                r.server_cpu_seconds.unwrap_or(f64::NAN),
                compactor.map_or("-".into(), |c| format!("{c:.1} cpu-s")),
                first_merge_s.map_or("(not within the run)".into(), |s: f64| format!("{s:.1} s")),
                proc_stat::load_average(),
            );
            runs.push(json!({
                "round": round,
                "clew_bin": bin.display().to_string(),
                "load": r,
                "compactor_thread_cpu_seconds": compactor,
                "first_merge_done_seconds": first_merge_s,
            }));
        }
    }
    Ok(
        json!({"rate": a.rate, "duration_s": a.duration.as_secs_f64(), "base_spans": r.spans_acked, "base_blocks": blocks, "runs": runs}),
    )
}

fn spec(
    server: &servers::Server,
    a: &CompactionLoadArgs,
    rate: u64,
    duration: Duration,
) -> LoadSpec {
    LoadSpec {
        protocol: Protocol::Grpc,
        endpoint: server.grpc.clone(),
        connections: a.connections,
        duration,
        warmup: Duration::ZERO,
        rate,
        max_spans: 0,
        server_pid: Some(server.pid()),
        keep_ids: 0,
        tls_ca: None,
    }
}

/// Seconds from now until the server's `clew_compaction_runs_total` first moves (polled every
/// 250 ms for up to 10 minutes); `None` if it never does.
fn watch_first_merge(server: &servers::Server) -> tokio::task::JoinHandle<Option<f64>> {
    let query = server.query.clone();
    tokio::spawn(async move {
        let q = query?;
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(600) {
            if servers::metric(&client, &q, "clew_compaction_runs_total")
                .await
                .unwrap_or(0.0)
                > 0.0
            {
                return Some(t0.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("cp -a")?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}
