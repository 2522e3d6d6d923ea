//! `clew-bench soak`: hours of steady load with compaction and retention on and a kill -9 on a
//! schedule, then every acknowledged trace still inside retention is read back (issue 18, point 6).
//! Not a CI test: `scripts/soak` runs it and BENCHMARKS.md records the result.
//!
//! Load: pre-encoded OTLP/HTTP requests of the benchmark workload ([`Pool`]), open loop at
//! `--rate` spans/s with up to `--connections` in flight (a request that cannot start because all
//! are busy counts as refused by the client). A request is *acknowledged* when the export returned
//! 200 — Clew answers only after the WAL fsync — and then its trace ids are recorded.
//!
//! Retention: Clew accepts no retention below 1h, so spans are stamped `--age-offset` behind the
//! wall clock (default 50 min): with `storage.retention: 1h` they expire 10 min after they were
//! sent, and retention deletes blocks during the run. At the end, a trace whose earliest span is
//! inside retention at the moment it is checked must be found with all its spans; older ones are
//! counted as expired by their age and not read.
//!
//! Every `--kill-every` the server gets SIGKILL and is started again on the same data dir
//! (refusals and connection errors meanwhile are expected and counted); once more at the end,
//! before the check, so the newest acknowledged spans are read back from the WAL too.

use crate::servers::{block_count, dir_bytes, open_fds, rss_bytes, start_clew, Server};
use crate::workload::{Pool, SPANS_PER_TRACE};
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// HTTP spans/s Clew acknowledges on this machine: the low end of BENCHMARKS.md's "acknowledged
/// spans/s (wall)" in the ingest section (80k–131k, results of 2026-11-22).
const MAX_RATE: u64 = 80_000;

#[derive(clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value = "target/release/clew")]
    pub clew_bin: PathBuf,
    #[arg(long, default_value = "60m", value_parser = crate::humantime_secs)]
    pub duration: Duration,
    /// What Clew sustains, spans/s (default: BENCHMARKS.md's ingest figure).
    #[arg(long, default_value_t = MAX_RATE)]
    pub max_rate: u64,
    /// Offered spans/s (default: half of `--max-rate`).
    #[arg(long)]
    pub rate: Option<u64>,
    /// SIGKILL and restart the server this often.
    #[arg(long, default_value = "5m", value_parser = crate::humantime_secs)]
    pub kill_every: Duration,
    /// How far span times lag the wall clock; with retention 1h, spans expire after
    /// 1h − this (default 10 min).
    #[arg(long, default_value = "50m", value_parser = crate::humantime_secs)]
    pub age_offset: Duration,
    /// Exports in flight at most.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Trace-by-id requests in flight during the final check.
    #[arg(long, default_value_t = 8)]
    pub verify_concurrency: usize,
    #[arg(long, default_value = "target/bench-data/soak")]
    pub work_dir: PathBuf,
    /// One row per 10 s: elapsed, offered/accepted/refused/errors spans/s, RSS, open fds, data
    /// dir bytes, WAL bytes, blocks, restarts.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

/// Clew's retention in the soak config (the least it accepts).
const RETENTION: Duration = Duration::from_secs(3600);
/// A trace this close to the retention cutoff when checked is not required (clock reads and the
/// check itself take time).
const CUTOFF_SLACK: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Spans counted in the current 10 s window and in total.
#[derive(Default)]
struct Counts {
    offered: AtomicU64,
    accepted: AtomicU64,
    /// 503/429 from the server, or not sent because every connection was busy.
    refused: AtomicU64,
    /// Connection errors (the server is down or restarting) and any other status.
    errors: AtomicU64,
}

impl Counts {
    fn take(&self) -> [u64; 4] {
        [
            self.offered.swap(0, Ordering::Relaxed),
            self.accepted.swap(0, Ordering::Relaxed),
            self.refused.swap(0, Ordering::Relaxed),
            self.errors.swap(0, Ordering::Relaxed),
        ]
    }
}

/// One acknowledged request: the earliest span start in it and its trace ids.
struct Acked {
    min_start: u64,
    ids: Vec<[u8; 16]>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The earliest time value in each pooled request (span starts come before ends and events).
fn min_times(pool: &Pool) -> Vec<u64> {
    pool.requests
        .iter()
        .map(|r| {
            r.time_offsets
                .iter()
                .filter_map(|&o| r.bytes.get(o..o + 8)?.try_into().ok())
                .map(u64::from_le_bytes)
                .min()
                .unwrap_or(0)
        })
        .collect()
}

fn config(dir: &Path) -> anyhow::Result<PathBuf> {
    write_config(dir, "clew.yaml", "1h")
}

/// The configuration of the final check: the same, with retention far out, so nothing that was
/// inside retention when the load stopped expires while the check reads it (a long check would
/// otherwise only race retention). What retention deleted during the run stays deleted.
fn check_config(dir: &Path) -> anyhow::Result<PathBuf> {
    write_config(dir, "clew-check.yaml", "720h")
}

fn write_config(dir: &Path, name: &str, retention: &str) -> anyhow::Result<PathBuf> {
    let cfg = dir.join(name);
    // Short block age and compaction interval so blocks are written and merged all the time;
    // retention checked every 30 s so expiry happens within the run.
    std::fs::write(
        &cfg,
        format!("storage:\n  retention: {retention}\n  retention_interval: 30s\n  block:\n    max_age: 10s\n  compaction:\n    enabled: true\n    interval: 30s\n"),
    )?;
    Ok(cfg)
}

fn start(a: &SoakArgs, cfg: &Path, n: u64) -> anyhow::Result<Server> {
    start_clew(
        &a.clew_bin,
        &a.work_dir.join("data"),
        Some(cfg),
        &a.work_dir.join(format!("clew-{n}.log")),
    )
}

/// SIGKILL, reap, and start again on the same data dir (blocking: run off the runtime).
fn kill_and_restart(
    mut server: Server,
    a: &SoakArgs,
    cfg: &Path,
    n: u64,
) -> anyhow::Result<Server> {
    server.child.kill().context("kill -9")?;
    server.child.wait()?;
    drop(server);
    start(a, cfg, n)
}

pub async fn run(a: SoakArgs) -> anyhow::Result<()> {
    let rate = a.rate.unwrap_or(a.max_rate / 2).max(1);
    anyhow::ensure!(
        a.age_offset < RETENTION,
        "--age-offset must be below the retention (1h), or every span expires on arrival"
    );
    crate::fresh_dir(&a.work_dir)?;
    let cfg = config(&a.work_dir)?;
    let data = a.work_dir.join("data");
    let pool = Arc::new(Pool::generate(18, 64, 50, now_nanos()));
    let mins = Arc::new(min_times(&pool));
    let spans_per_req = pool.requests[0].spans as u64;
    let reqs_per_sec = rate as f64 / spans_per_req as f64;
    let mut server = start(&a, &cfg, 0)?;
    let endpoint = Arc::new(RwLock::new(format!("http://{}/v1/traces", server.http)));
    let counts = Arc::new(Counts::default());
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut csv = match &a.csv {
        Some(p) => {
            let mut f = std::fs::File::create(p).with_context(|| format!("{}", p.display()))?;
            writeln!(f, "elapsed_s,offered_spans_per_s,accepted_spans_per_s,refused_spans_per_s,errors_spans_per_s,rss_bytes,open_fds,data_bytes,wal_bytes,blocks,restarts")?;
            Some(f)
        }
        None => None,
    };
    eprintln!(
        "soak: {rate} spans/s ({reqs_per_sec:.1} requests/s of {spans_per_req} spans) for {:?}, kill -9 every {:?}; spans {:?} old when sent, retention 1h; data in {}",
        a.duration, a.kill_every, a.age_offset, data.display()
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    let start_at = Instant::now();
    let sender = {
        let (pool, mins, endpoint, counts, acked, stop, client) = (
            pool.clone(),
            mins.clone(),
            endpoint.clone(),
            counts.clone(),
            acked.clone(),
            stop.clone(),
            client.clone(),
        );
        let (connections, age) = (a.connections, a.age_offset.as_nanos() as u64);
        tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(connections));
            let period = Duration::from_secs_f64(1.0 / reqs_per_sec);
            let mut tasks = tokio::task::JoinSet::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until((start_at + period.mul_f64(seq as f64)).into()).await;
                counts.offered.fetch_add(spans_per_req, Ordering::Relaxed);
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    counts.refused.fetch_add(spans_per_req, Ordering::Relaxed);
                    seq += 1;
                    continue;
                };
                let idx = (seq % pool.requests.len() as u64) as usize;
                let round = seq / pool.requests.len() as u64;
                let (mut body, _, ids) = pool.render(seq);
                let ids: Vec<[u8; 16]> = ids.collect();
                // Re-stamp: the request's earliest span starts `age` before now.
                let min_start = now_nanos().saturating_sub(age);
                let rendered = mins[idx].wrapping_add(round.wrapping_mul(pool.round_nanos));
                crate::workload::add_to_u64_le(
                    &mut body,
                    &pool.requests[idx].time_offsets,
                    min_start.wrapping_sub(rendered),
                );
                seq += 1;
                let url = endpoint.read().map(|u| u.clone()).unwrap_or_default();
                let (client, counts, acked) = (client.clone(), counts.clone(), acked.clone());
                tasks.spawn(async move {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            counts.accepted.fetch_add(spans_per_req, Ordering::Relaxed);
                            if let Ok(mut v) = acked.lock() {
                                v.push(Acked { min_start, ids });
                            }
                        }
                        Ok(503) | Ok(429) => {
                            counts.refused.fetch_add(spans_per_req, Ordering::Relaxed);
                        }
                        _ => {
                            counts.errors.fetch_add(spans_per_req, Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    let mut restarts = 0u64;
    let mut next_sample = start_at + SAMPLE_EVERY;
    let mut next_kill = start_at + a.kill_every;
    let end = start_at + a.duration;
    let cfg = Arc::new(cfg);
    let a = Arc::new(a);
    let mut peak_rss = 0u64;
    let mut peak_fds = 0usize;
    while Instant::now() < end {
        let wake = next_sample.min(next_kill).min(end);
        tokio::time::sleep_until(wake.into()).await;
        if Instant::now() >= next_kill && Instant::now() < end {
            next_kill += a.kill_every;
            restarts += 1;
            let (a2, cfg2) = (a.clone(), cfg.clone());
            let t = Instant::now();
            server =
                tokio::task::spawn_blocking(move || kill_and_restart(server, &a2, &cfg2, restarts))
                    .await??;
            if let Ok(mut u) = endpoint.write() {
                *u = format!("http://{}/v1/traces", server.http);
            }
            eprintln!(
                "t={:>5}s  kill -9 #{restarts}; serving again after {:.1} s",
                start_at.elapsed().as_secs(),
                t.elapsed().as_secs_f64()
            );
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let [o, acc, r, e] = counts.take();
            let secs = SAMPLE_EVERY.as_secs_f64();
            let pid = server.pid();
            let (rss, fds) = (rss_bytes(pid), open_fds(pid));
            peak_rss = peak_rss.max(rss);
            peak_fds = peak_fds.max(fds);
            let (bytes, wal, blocks) = (
                dir_bytes(&data),
                dir_bytes(&data.join("wal")),
                block_count(&data),
            );
            let t = start_at.elapsed().as_secs();
            println!(
                "t={t:>5}s  offered {:>7.0}  accepted {:>7.0}  refused {:>7.0}  errors {:>7.0} spans/s  rss {:>5} MiB  fds {fds:>4}  data {:>7.1} MiB  wal {:>6.1} MiB  blocks {blocks:>4}  restarts {restarts}",
                o as f64 / secs,
                acc as f64 / secs,
                r as f64 / secs,
                e as f64 / secs,
                rss >> 20,
                bytes as f64 / 1048576.0,
                wal as f64 / 1048576.0,
            );
            if let Some(f) = csv.as_mut() {
                writeln!(
                    f,
                    "{t},{:.0},{:.0},{:.0},{:.0},{rss},{fds},{bytes},{wal},{blocks},{restarts}",
                    o as f64 / secs,
                    acc as f64 / secs,
                    r as f64 / secs,
                    e as f64 / secs
                )?;
                f.flush()?;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    sender.await?;
    // Traces whose earliest span is older than this had expired by the end of the load.
    let cutoff = now_nanos()
        .saturating_sub(RETENTION.as_nanos() as u64)
        .saturating_add(CUTOFF_SLACK.as_nanos() as u64);
    // A last kill -9 so the newest acknowledged spans are read back from the WAL too; the
    // restart holds retention still for the check.
    restarts += 1;
    let (a2, cfg2) = (a.clone(), check_config(&a.work_dir)?);
    let server =
        tokio::task::spawn_blocking(move || kill_and_restart(server, &a2, &cfg2, restarts))
            .await??;
    let acked = std::mem::take(&mut *acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let report = verify(&server, acked, cutoff, a.verify_concurrency).await?;
    let disk = dir_bytes(&data);
    server.stop()?;
    println!(
        "acknowledged {} traces; checked {} inside retention: {} found complete, {} missing, {} incomplete, {} unreadable; {} older than retention (expired by age, not checked)",
        report.total, report.checked, report.found, report.missing.len(), report.incomplete.len(), report.unreadable, report.expired
    );
    println!(
        "restarts {restarts} (kill -9); peak RSS {} MiB; peak open fds {peak_fds}; data dir at the end {:.1} MiB",
        peak_rss >> 20,
        disk as f64 / 1048576.0
    );
    let bad = report.missing.len() + report.incomplete.len() + report.unreadable;
    if bad > 0 {
        let sample: Vec<String> = report
            .missing
            .iter()
            .chain(&report.incomplete)
            .take(10)
            .map(hex::encode)
            .collect();
        anyhow::bail!(
            "{bad} acknowledged traces inside retention not read back complete (e.g. {})",
            sample.join(", ")
        );
    }
    Ok(())
}

/// Traces inside retention not read back: not found, found with fewer spans than sent, or no
/// answer after three tries.
#[derive(Default)]
struct Failures {
    missing: Vec<[u8; 16]>,
    incomplete: Vec<[u8; 16]>,
    unreadable: usize,
}

struct Verified {
    total: usize,
    checked: u64,
    found: u64,
    expired: u64,
    unreadable: usize,
    missing: Vec<[u8; 16]>,
    incomplete: Vec<[u8; 16]>,
}

/// Reads every acknowledged trace that was inside retention when the load stopped (earliest span
/// at or after `cutoff`) by id (Jaeger API), `concurrency` at a time; a trace counts as found when
/// all of its spans come back.
async fn verify(
    server: &Server,
    acked: Vec<Acked>,
    cutoff: u64,
    concurrency: usize,
) -> anyhow::Result<Verified> {
    let query = server.query.clone().context("clew has a query endpoint")?;
    let traces: Arc<Vec<(u64, [u8; 16])>> = Arc::new(
        acked
            .iter()
            .flat_map(|r| r.ids.iter().map(move |id| (r.min_start, *id)))
            .collect(),
    );
    drop(acked);
    let total = traces.len();
    eprintln!("checking {total} acknowledged traces ({concurrency} at a time)");
    let next = Arc::new(AtomicUsize::new(0));
    let [checked, found, expired] = [(); 3].map(|_| Arc::new(AtomicU64::new(0)));
    let bad: Arc<Mutex<Failures>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (traces, next, client, query) =
            (traces.clone(), next.clone(), client.clone(), query.clone());
        let (checked, found, expired, bad) =
            (checked.clone(), found.clone(), expired.clone(), bad.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(min_start, id)) = traces.get(i) else {
                    break;
                };
                if i % 100_000 == 0 && i > 0 {
                    eprintln!("  {i} of {} checked", traces.len());
                }
                if min_start < cutoff {
                    expired.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                checked.fetch_add(1, Ordering::Relaxed);
                let url = format!("http://{query}/api/traces/{}", hex::encode(id));
                let mut outcome = None;
                for attempt in 0..3 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let Ok(resp) = client.get(&url).send().await else {
                        continue;
                    };
                    match resp.status().as_u16() {
                        404 => {
                            outcome = Some(0);
                            break;
                        }
                        200 => {
                            let Ok(v) = resp.json::<serde_json::Value>().await else {
                                continue;
                            };
                            let spans = v["data"][0]["spans"].as_array().map_or(0, |s| s.len());
                            outcome = Some(spans);
                            break;
                        }
                        _ => continue,
                    }
                }
                match outcome {
                    Some(n) if n == SPANS_PER_TRACE => {
                        found.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(0) => {
                        if let Ok(mut b) = bad.lock() {
                            b.missing.push(id);
                        }
                    }
                    Some(_) => {
                        if let Ok(mut b) = bad.lock() {
                            b.incomplete.push(id);
                        }
                    }
                    None => {
                        if let Ok(mut b) = bad.lock() {
                            b.unreadable += 1;
                        }
                    }
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r?;
    }
    let Failures {
        missing,
        incomplete,
        unreadable,
    } = std::mem::take(&mut *bad.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Verified {
        total,
        checked: checked.load(Ordering::Relaxed),
        found: found.load(Ordering::Relaxed),
        expired: expired.load(Ordering::Relaxed),
        unreadable,
        missing,
        incomplete,
    })
}
