//! What production storage costs, measured from the outside like everything else here:
//!
//! * `encryption-cost`: encryption at rest (`storage.encryption`, local keyring) against the same
//!   server with plaintext storage — server CPU per ingested span (WAL records sealed per export,
//!   block files sealed at flush inside the measured window), then trace-by-id latency on two
//!   stores holding the same spans, one plaintext and one sealed.
//! * `tier-lookup`: trace-by-id latency with the blocks in an S3 bucket (moto on loopback,
//!   `storage.s3` without tiering: blocks go straight to the bucket) after a restart, so block
//!   metadata and bloom filters come from the local cache and Parquet footers are preloaded —
//!   against the same spans on local disk; counts the bucket requests per lookup from moto's log.

use crate::load::{self, LoadResult, LoadSpec, Protocol};
use crate::query::{trace_lookups, wait_ready, LookupStats};
use crate::servers::{self, block_count, files_named, Server};
use crate::workload::{splitmix64, Pool};
use crate::{fresh_dir, median, print_load, DriveArgs};
use anyhow::{bail, Context};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Seed of the measured lookups: the same ids, in the same order, on every store.
const LOOKUP_SEED: u64 = 0x9E37_79B9;

fn abs(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))
}

/// Ingests `spans` spans over OTLP/gRPC into a fresh `data_dir`, then SIGTERM (the head is
/// flushed into blocks). Every export must be acknowledged in full: then the store holds exactly
/// the requests with sequence numbers `0..result.requests`.
#[allow(clippy::too_many_arguments)]
async fn build_store(
    bin: &Path,
    data_dir: &Path,
    config: &Path,
    log: &Path,
    env: &[(&str, &str)],
    spans: u64,
    connections: usize,
    pool: Arc<Pool>,
    name: &str,
) -> anyhow::Result<LoadResult> {
    fresh_dir(data_dir)?;
    let server = servers::start_clew_env(bin, data_dir, Some(config), log, env)?;
    eprintln!(
        "{name}: ingesting {spans} spans over OTLP/gRPC into {}…",
        data_dir.display()
    );
    let r = load::run(
        LoadSpec {
            protocol: Protocol::Grpc,
            endpoint: server.grpc.clone(),
            connections,
            duration: Duration::from_secs(24 * 3600),
            warmup: Duration::ZERO,
            rate: 0,
            max_spans: spans,
            server_pid: Some(server.pid()),
            keep_ids: 0,
            tls_ca: None,
        },
        pool,
    )
    .await?;
    print_load(name, &r);
    server.stop()?;
    if r.requests_failed > 0 || r.spans_rejected > 0 || r.spans_acked < spans {
        bail!(
            "{name}: {} failed exports, {} rejected spans, {} of {spans} acknowledged (see {})",
            r.requests_failed,
            r.spans_rejected,
            r.spans_acked,
            log.display()
        );
    }
    Ok(r)
}

/// Trace ids (hex) that every store built from the first `requests` sequence numbers holds: all
/// the traces of `sample` requests drawn at random from them.
fn common_ids(pool: &Pool, requests: u64, sample: usize) -> Vec<String> {
    let mut rng = 0x5EED_u64;
    let mut out = Vec::new();
    for _ in 0..sample {
        rng = splitmix64(rng);
        let (_, _, ids) = pool.render(rng % requests.max(1));
        out.extend(ids.map(hex::encode));
    }
    out
}

/// Waits for `/ready`, lets the background footer preload finish (5 s), warms up with 200
/// lookups (not measured), then measures `lookups` lookups. `between` runs after the start-up
/// (before the warm-up), after the warm-up and after the measured lookups.
async fn lookups_on(
    server: &Server,
    ids: &[String],
    lookups: usize,
    mut between: impl FnMut(),
) -> anyhow::Result<LookupStats> {
    let base = format!("http://{}", server.query.clone().unwrap_or_default());
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    wait_ready(&client, &base).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    between();
    let warm: Vec<String> = ids.iter().rev().take(200).cloned().collect();
    trace_lookups(&client, &base, &warm, warm.len(), 0, true).await?;
    between();
    let stats = trace_lookups(&client, &base, ids, lookups, LOOKUP_SEED, false).await?;
    between();
    Ok(stats)
}

fn print_lookups(name: &str, s: &LookupStats) {
    println!(
        "{name:<10} trace by id: p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} lookups, {} incomplete)",
        s.p50_ms, s.p99_ms, s.max_ms, s.lookups, s.incomplete
    );
}

pub struct EncryptionCostArgs {
    pub clew_bin: PathBuf,
    pub rounds: usize,
    pub protocols: Vec<Protocol>,
    pub block_max_age: String,
    pub work_dir: PathBuf,
    pub drive: DriveArgs,
    pub lookup_spans: u64,
    pub lookups: usize,
    pub lookup_rounds: usize,
    pub build_connections: usize,
}

pub async fn encryption_cost(
    a: EncryptionCostArgs,
    pool: Arc<Pool>,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(&a.work_dir)?;
    let work = abs(&a.work_dir)?;
    // A fresh keyring: each tenant's key is created on first use.
    let keyring = work.join("keyring.yaml");
    if keyring.exists() {
        std::fs::remove_file(&keyring)?;
    }
    let st = Command::new(&a.clew_bin)
        .args(["keys", "init", "--keyring"])
        .arg(&keyring)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {} keys init", a.clew_bin.display()))?;
    if !st.success() {
        bail!("`clew keys init --keyring {}` failed", keyring.display());
    }
    let encryption = format!(
        "  encryption:\n    provider: local\n    local:\n      keyring: {}\n",
        keyring.display()
    );
    let write = |name: &str, body: String| -> anyhow::Result<PathBuf> {
        let p = work.join(name);
        std::fs::write(&p, body)?;
        Ok(p)
    };
    // Ingest: short block age, so flushes to (sealed) blocks fall inside the measured window.
    let ingest_plain = write(
        "ingest-plain.yaml",
        format!("storage:\n  block:\n    max_age: {}\n", a.block_max_age),
    )?;
    let ingest_sealed = write(
        "ingest-sealed.yaml",
        format!(
            "storage:\n  block:\n    max_age: {}\n{encryption}",
            a.block_max_age
        ),
    )?;

    let mut runs = Vec::new();
    let mut summary = Vec::new();
    for &protocol in &a.protocols {
        let (mut plain_rates, mut sealed_rates) = (Vec::new(), Vec::new());
        for round in 0..a.rounds {
            // Alternate which goes first so drift on a shared machine hits both alike.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for sealed in order {
                let name = if sealed { "sealed" } else { "plain" };
                let log = work.join(format!("clew-ingest-{name}.log"));
                let data = work.join("ingest-data");
                fresh_dir(&data)?;
                let config = if sealed {
                    &ingest_sealed
                } else {
                    &ingest_plain
                };
                let server = servers::start_clew(&a.clew_bin, &data, Some(config), &log)?;
                let endpoint = match protocol {
                    Protocol::Grpc => server.grpc.clone(),
                    Protocol::Http => server.http.clone(),
                };
                let spec = a.drive.spec(protocol, endpoint, Some(server.pid()));
                let r = load::run(spec, pool.clone()).await?;
                server.stop()?;
                print_load(name, &r);
                // After SIGTERM the head is in blocks too: every block, and how many are sealed.
                let blocks = block_count(&data.join("blocks"));
                let sealed_blocks = files_named(&data.join("blocks"), "key.json");
                println!("       blocks {blocks}, of which sealed (key.json) {sealed_blocks}");
                let per_cpu = r.spans_per_cpu_second.unwrap_or(0.0);
                if sealed {
                    sealed_rates.push(per_cpu);
                } else {
                    plain_rates.push(per_cpu);
                }
                runs.push(json!({"mode": name, "round": round, "blocks": blocks,
                    "sealed_blocks": sealed_blocks, "result": r}));
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (pm, sm) = (mean(&plain_rates), mean(&sealed_rates));
        let (p, s) = (median(plain_rates), median(sealed_rates));
        // CPU per span is 1 / (spans per CPU-second).
        let extra = if s > 0.0 { p / s - 1.0 } else { 0.0 };
        let extra_mean = if sm > 0.0 { pm / sm - 1.0 } else { 0.0 };
        println!(
            "==> {protocol:?}: plaintext {p:.0} vs encrypted {s:.0} spans per CPU-second (median of {}); encryption costs {:+.1} % CPU per span ({:+.1} % by means)",
            a.rounds,
            extra * 100.0,
            extra_mean * 100.0
        );
        summary.push(json!({
            "protocol": format!("{protocol:?}").to_lowercase(),
            "plaintext_spans_per_cpu_second": p,
            "encrypted_spans_per_cpu_second": s,
            "encryption_extra_cpu_per_span": extra,
            "encryption_extra_cpu_per_span_means": extra_mean,
        }));
    }

    let mut lookup = serde_json::Value::Null;
    if a.lookup_spans > 0 {
        // Same spans in both stores; default block settings, no compaction (the same block layout
        // in both), flushed by SIGTERM so every lookup reads blocks.
        let store_plain = write(
            "store-plain.yaml",
            "storage:\n  compaction:\n    enabled: false\n".to_string(),
        )?;
        let store_sealed = write(
            "store-sealed.yaml",
            format!("storage:\n  compaction:\n    enabled: false\n{encryption}"),
        )?;
        let (dir_plain, dir_sealed) = (work.join("store-plain"), work.join("store-sealed"));
        let mut builds = Vec::new();
        for (name, dir, cfg) in [
            ("plain", &dir_plain, &store_plain),
            ("sealed", &dir_sealed, &store_sealed),
        ] {
            let r = build_store(
                &a.clew_bin,
                dir,
                cfg,
                &work.join(format!("clew-build-{name}.log")),
                &[],
                a.lookup_spans,
                a.build_connections,
                pool.clone(),
                name,
            )
            .await?;
            let blocks = block_count(&dir.join("blocks"));
            let sealed_blocks = files_named(&dir.join("blocks"), "key.json");
            println!("       blocks {blocks}, of which sealed (key.json) {sealed_blocks}");
            builds.push((name, r, blocks, sealed_blocks));
        }
        let common = builds.iter().map(|b| b.1.requests).min().unwrap_or(0);
        let ids = common_ids(&pool, common, 200);
        let mut by_mode: BTreeMap<&str, Vec<LookupStats>> = BTreeMap::new();
        for round in 0..a.lookup_rounds {
            let order = if round % 2 == 0 {
                ["plain", "sealed"]
            } else {
                ["sealed", "plain"]
            };
            for name in order {
                let (dir, cfg) = if name == "sealed" {
                    (&dir_sealed, &store_sealed)
                } else {
                    (&dir_plain, &store_plain)
                };
                let server = servers::start_clew(
                    &a.clew_bin,
                    dir,
                    Some(cfg),
                    &work.join(format!("clew-query-{name}.log")),
                )?;
                let s = lookups_on(&server, &ids, a.lookups, || {}).await?;
                server.stop()?;
                print_lookups(name, &s);
                by_mode.entry(name).or_default().push(s);
            }
        }
        let med = |name: &str, f: fn(&LookupStats) -> f64| {
            median(
                by_mode
                    .get(name)
                    .map(|v| v.iter().map(f).collect())
                    .unwrap_or_default(),
            )
        };
        let (p50p, p99p) = (med("plain", |s| s.p50_ms), med("plain", |s| s.p99_ms));
        let (p50s, p99s) = (med("sealed", |s| s.p50_ms), med("sealed", |s| s.p99_ms));
        println!(
            "==> trace by id, {} spans: plaintext p50 {p50p:.2} / p99 {p99p:.2} ms, encrypted p50 {p50s:.2} / p99 {p99s:.2} ms (median of {} rounds); encrypted/plaintext p50 {:.2}×, p99 {:.2}×",
            a.lookup_spans,
            a.lookup_rounds,
            p50s / p50p.max(1e-9),
            p99s / p99p.max(1e-9)
        );
        lookup = json!({
            "spans": a.lookup_spans,
            "builds": builds.iter().map(|(n, r, b, s)| json!({"mode": n, "blocks": b, "sealed_blocks": s, "ingest": r})).collect::<Vec<_>>(),
            "rounds": by_mode,
            "plaintext": {"p50_ms": p50p, "p99_ms": p99p},
            "encrypted": {"p50_ms": p50s, "p99_ms": p99s},
        });
    }
    Ok(json!({"summary": summary, "runs": runs, "trace_by_id": lookup}))
}

/// moto_server on a free loopback port, logging every request; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Moto {
    fn start(bin: &Path, log: &Path) -> anyhow::Result<Self> {
        let port = servers::free_port()?;
        let logf = std::fs::File::create(log)?;
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {} (see --moto-bin)", bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        if let Err(e) = servers::wait_for_port(&addr, &mut child, "moto_server") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Moto {
            child,
            endpoint: format!("http://{addr}"),
            log: log.to_path_buf(),
        })
    }

    /// Requests moto has logged so far, by method, object kind and status
    /// (`GET data.parquet 206`, …).
    fn requests(&self) -> BTreeMap<String, u64> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            // 127.0.0.1 - - [date] "GET /bucket/prefix/tenants/t/day/block/data.parquet HTTP/1.1" 206 -
            let Some(req) = line.split('"').nth(1) else {
                continue;
            };
            let mut parts = req.split_whitespace();
            let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            // Colored lines (4xx) carry an escape sequence before the method.
            let method = method.rsplit('m').next().unwrap_or(method);
            // The status after the request: 206 = a ranged read.
            let status = line
                .split('"')
                .nth(2)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("?");
            let path = path.split('?').next().unwrap_or(path);
            let object = path.rsplit('/').next().unwrap_or("");
            let kind = match object {
                "data.parquet" | "meta.json" | "bloom.bin" | "key.json" => object,
                // `/bucket?list-type=2&prefix=…`
                _ if path.trim_matches('/').split('/').count() == 1 => "bucket (list)",
                _ => "other",
            };
            *out.entry(format!("{method} {kind} {status}")).or_insert(0) += 1;
        }
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

pub struct TierLookupArgs {
    pub clew_bin: PathBuf,
    pub moto_bin: PathBuf,
    pub work_dir: PathBuf,
    pub spans: u64,
    pub lookups: usize,
    pub rounds: usize,
    pub connections: usize,
}

pub async fn tier_lookup(a: TierLookupArgs, pool: Arc<Pool>) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(&a.work_dir)?;
    let work = abs(&a.work_dir)?;
    let moto = Moto::start(&a.moto_bin, &work.join("moto.log"))?;
    let bucket = "clew-bench";
    let resp = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .context("creating the bucket")?;
    if !resp.status().is_success() {
        bail!(
            "creating bucket {bucket} at {}: {}",
            moto.endpoint,
            resp.status()
        );
    }
    let env: [(&str, &str); 4] = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let base_cfg = "storage:\n  compaction:\n    enabled: false\n";
    let local_cfg = work.join("local.yaml");
    std::fs::write(&local_cfg, base_cfg)?;
    let s3_cfg = work.join("s3.yaml");
    std::fs::write(
        &s3_cfg,
        format!(
            "{base_cfg}  s3:\n    bucket: {bucket}\n    prefix: bench\n    endpoint: {}\n    region: us-east-1\n    force_path_style: true\n",
            moto.endpoint
        ),
    )?;
    let (dir_local, dir_s3) = (work.join("store-local"), work.join("store-s3"));

    let mut builds = Vec::new();
    for (name, dir, cfg) in [
        ("local", &dir_local, &local_cfg),
        ("bucket", &dir_s3, &s3_cfg),
    ] {
        let before = moto.requests();
        let r = build_store(
            &a.clew_bin,
            dir,
            cfg,
            &work.join(format!("clew-build-{name}.log")),
            &env,
            a.spans,
            a.connections,
            pool.clone(),
            name,
        )
        .await?;
        let reqs = diff(&moto.requests(), &before);
        let local_blocks = block_count(&dir.join("blocks"));
        let cached = files_named(&dir.join("cache"), "meta.json");
        println!("       local blocks {local_blocks}, cached remote metas {cached}; bucket requests {reqs:?}");
        builds.push(json!({"store": name, "local_blocks": local_blocks,
            "cached_remote_meta": cached, "bucket_requests": reqs, "ingest": r}));
        if name == "bucket" && (local_blocks > 0 || cached == 0) {
            bail!("the bucket store did not write its blocks to the bucket (see the build log)");
        }
    }
    let common = [&builds[0], &builds[1]]
        .iter()
        .map(|b| b["ingest"]["requests"].as_u64().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let ids = common_ids(&pool, common, 200);

    let mut by_store: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    let mut stats: BTreeMap<&str, Vec<LookupStats>> = BTreeMap::new();
    for round in 0..a.rounds {
        let order = if round % 2 == 0 {
            ["local", "bucket"]
        } else {
            ["bucket", "local"]
        };
        for name in order {
            let (dir, cfg) = if name == "bucket" {
                (&dir_s3, &s3_cfg)
            } else {
                (&dir_local, &local_cfg)
            };
            // A restart: block metadata and bloom filters from the local cache, footers preloaded.
            let at_start = moto.requests();
            let server = servers::start_clew_env(
                &a.clew_bin,
                dir,
                Some(cfg),
                &work.join(format!("clew-query-{name}.log")),
                &env,
            )?;
            let mut marks = Vec::new();
            let s = lookups_on(&server, &ids, a.lookups, || marks.push(moto.requests())).await?;
            server.stop()?;
            let (startup, warmup, measured) = match marks.as_slice() {
                [m0, m1, m2] => (diff(m0, &at_start), diff(m1, m0), diff(m2, m1)),
                _ => bail!("internal: request marks"),
            };
            let gets: u64 = measured
                .iter()
                .filter(|(k, _)| k.starts_with("GET"))
                .map(|(_, v)| v)
                .sum();
            print_lookups(name, &s);
            println!(
                "           bucket requests: start-up (5 s) {startup:?}; 200 warm-up lookups {warmup:?}; measured {measured:?} = {:.2} GETs per lookup",
                gets as f64 / s.lookups.max(1) as f64
            );
            by_store.entry(name).or_default().push(json!({
                "round": round, "lookups": s, "bucket_requests_startup": startup,
                "bucket_requests_warmup": warmup,
                "bucket_requests_measured": measured,
                "gets_per_lookup": gets as f64 / s.lookups.max(1) as f64,
            }));
            stats.entry(name).or_default().push(s);
        }
    }
    drop(moto);
    let med = |name: &str, f: fn(&LookupStats) -> f64| {
        median(
            stats
                .get(name)
                .map(|v| v.iter().map(f).collect())
                .unwrap_or_default(),
        )
    };
    let (p50l, p99l) = (med("local", |s| s.p50_ms), med("local", |s| s.p99_ms));
    let (p50b, p99b) = (med("bucket", |s| s.p50_ms), med("bucket", |s| s.p99_ms));
    println!(
        "==> trace by id, {} spans: local disk p50 {p50l:.2} / p99 {p99l:.2} ms, bucket (moto) with warm local cache p50 {p50b:.2} / p99 {p99b:.2} ms (median of {} rounds); bucket/local p50 {:.2}×, p99 {:.2}×",
        a.spans,
        a.rounds,
        p50b / p50l.max(1e-9),
        p99b / p99l.max(1e-9)
    );
    Ok(json!({
        "spans": a.spans,
        "builds": builds,
        "rounds": by_store,
        "local": {"p50_ms": p50l, "p99_ms": p99l},
        "bucket": {"p50_ms": p50b, "p99_ms": p99b},
    }))
}
