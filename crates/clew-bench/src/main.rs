//! # clew-bench — the benchmark harness
//!
//! Not part of the data flow: a client of Clew's (and its peers') public protocols. It generates
//! realistic OTLP load (pre-encoded, so the generator is never the bottleneck), drives receivers over
//! OTLP/gRPC and OTLP/HTTP, reads the server's CPU time from /proc, and measures storage size and
//! query latency over HTTP. `scripts/bench` runs everything and BENCHMARKS.md records the results.
//!
//! May depend on: `clew-model` (OTLP types) and client crates. Must not link the server's crates:
//! it measures Clew from the outside, exactly as it measures rotel.

mod compaction_load;
mod kafka;
mod load;
mod overload;
mod proc_stat;
mod proxy;
mod query;
mod redaction_cost;
mod servers;
mod soak;
mod storage_cost;
mod workload;

use anyhow::Context;
use clap::{Parser, Subcommand};
use load::{LoadResult, LoadSpec, Protocol};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use workload::Pool;

#[derive(Parser)]
#[command(name = "clew-bench", about = "Clew's benchmark harness", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct PoolArgs {
    /// Distinct pre-encoded requests (each re-sent with fresh trace ids).
    #[arg(long, default_value_t = 64)]
    pool_requests: usize,
    /// Traces per request (10 spans each).
    #[arg(long, default_value_t = 50)]
    traces_per_request: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl PoolArgs {
    fn build(&self) -> Arc<Pool> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Start times in the recent past so a default "last hour" search finds them.
        let pool = Pool::generate(
            self.seed,
            self.pool_requests,
            self.traces_per_request,
            now.saturating_sub(120_000_000_000),
        );
        eprintln!(
            "workload: {} requests × {} spans, {:.0} bytes/span (OTLP protobuf)",
            pool.requests.len(),
            pool.requests[0].spans,
            pool.bytes_per_span()
        );
        Arc::new(pool)
    }
}

#[derive(clap::Args, Clone)]
struct DriveArgs {
    #[arg(long, default_value_t = 8)]
    connections: usize,
    #[arg(long, default_value = "20s", value_parser = humantime_secs)]
    duration: Duration,
    #[arg(long, default_value = "3s", value_parser = humantime_secs)]
    warmup: Duration,
    /// Spans per second over all connections; 0 = as fast as the server acknowledges.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

impl DriveArgs {
    /// A timed run (no span limit, no trace ids kept) against `endpoint`.
    fn spec(&self, protocol: Protocol, endpoint: String, server_pid: Option<u32>) -> LoadSpec {
        LoadSpec {
            protocol,
            endpoint,
            connections: self.connections,
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            max_spans: 0,
            server_pid,
            keep_ids: 0,
            tls_ca: None,
        }
    }
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mul) = if let Some(v) = t.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>()
        .map(|n| Duration::from_secs_f64(n * mul))
        .map_err(|_| format!("invalid duration {s:?} (e.g. 20s, 500ms, 2m)"))
}

#[derive(Subcommand)]
enum Cmd {
    /// `clew proxy` vs a direct connection vs Debian's nginx: added latency p50/p99 at a fixed
    /// rate with small bodies, and throughput per CPU-second (BENCHMARKS.md, issue 19).
    Proxy(proxy::ProxyArgs),
    /// 10× the sustainable rate against `memory_limiter` for 60 s: per second offered and
    /// accepted rate, RSS and refused share, then the time until ingest is accepted again
    /// (BENCHMARKS.md, issue 18).
    Overload(overload::OverloadArgs),
    /// Steady load (half the maximum rate) for an hour with compaction and retention on and a
    /// kill -9 every 5 min; records RSS, open files and disk every 10 s, then reads back every
    /// acknowledged trace still inside retention (BENCHMARKS.md, issue 18).
    Soak(soak::SoakArgs),
    /// A Clew collector → Kafka (Tansu on loopback) → 1 or N Clew ingesters: ingester spans per
    /// CPU-second and export-to-queryable latency p50/p99 (BENCHMARKS.md, issue 16).
    Kafka(kafka::KafkaArgs),
    /// Drive one running target.
    Load {
        #[arg(long, value_enum, default_value = "grpc")]
        protocol: Protocol,
        /// host:port of the OTLP receiver.
        #[arg(long)]
        endpoint: String,
        /// Server process id, to read its CPU time from /proc.
        #[arg(long)]
        pid: Option<u32>,
        /// Connect over TLS, trusting this CA certificate (PEM); the server's certificate must
        /// name `localhost`.
        #[arg(long, value_name = "FILE")]
        tls_ca_file: Option<PathBuf>,
        #[command(flatten)]
        drive: DriveArgs,
        #[command(flatten)]
        pool: PoolArgs,
    },
    /// What TLS costs Clew's ingest: alternating runs of the same load against Clew with
    /// plaintext OTLP listeners and with TLS on them (server certificate only); prints spans per
    /// CPU-second of each and the extra server CPU per span with TLS.
    TlsCost {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        /// Runs per mode and protocol (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, value_delimiter = ',', default_value = "grpc,http")]
        protocols: Vec<Protocol>,
        /// The server's certificate (must name `localhost`), its key, and the CA the load
        /// generator trusts (default: the example certificates).
        #[arg(long, default_value = "examples/config/certs/server.pem")]
        cert_file: PathBuf,
        #[arg(long, default_value = "examples/config/certs/server-key.pem")]
        key_file: PathBuf,
        #[arg(long, default_value = "examples/config/certs/ca.pem")]
        ca_file: PathBuf,
        #[arg(long, default_value = "target/bench-data")]
        work_dir: PathBuf,
        #[command(flatten)]
        drive: DriveArgs,
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// What encryption at rest costs: alternating runs of the same load against Clew with
    /// plaintext storage and with `storage.encryption` (local keyring; WAL records and block files
    /// sealed), spans per server CPU-second and the extra CPU per span; then trace-by-id latency
    /// on a plaintext and an encrypted store holding the same spans.
    EncryptionCost {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        /// Ingest runs per mode and protocol (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, value_delimiter = ',', default_value = "grpc,http")]
        protocols: Vec<Protocol>,
        /// `storage.block.max_age` during the ingest runs: short, so flushes to (sealed) blocks
        /// happen inside the measured window.
        #[arg(long, default_value = "2s")]
        block_max_age: String,
        #[arg(long, default_value = "target/bench-data/encryption")]
        work_dir: PathBuf,
        #[command(flatten)]
        drive: DriveArgs,
        #[command(flatten)]
        pool: PoolArgs,
        /// Spans in each of the two stores for the trace-by-id part (0 = skip it).
        #[arg(long, default_value_t = 1_500_000)]
        lookup_spans: u64,
        /// Measured trace-by-id requests per round and store.
        #[arg(long, default_value_t = 500)]
        lookups: usize,
        /// Trace-by-id rounds (a fresh server per round and store, alternating).
        #[arg(long, default_value_t = 2)]
        lookup_rounds: usize,
        /// Connections while building the two stores.
        #[arg(long, default_value_t = 4)]
        build_connections: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// What the full `redaction` rule set costs ingest: alternating runs of the same load
    /// against Clew without processors and with the rule set; spans per CPU-second of each.
    RedactionCost {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        /// Runs per mode and protocol (alternating).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, value_delimiter = ',', default_value = "grpc")]
        protocols: Vec<Protocol>,
        #[arg(long, default_value = "target/bench-data/redaction")]
        work_dir: PathBuf,
        #[command(flatten)]
        drive: DriveArgs,
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A merge beside ingest: a store of flushed blocks opened with compaction on while a
    /// fixed-rate gRPC load runs; export latency, acknowledged rate, server and compactor-thread
    /// CPU per binary, alternating (BENCHMARKS.md, issue 17).
    CompactionLoad {
        #[command(flatten)]
        args: compaction_load::CompactionLoadArgs,
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Trace by id from the bucket tier with a warm local cache: the same spans in a store whose
    /// blocks are in an S3 bucket (moto_server on loopback) and in one on local disk; both
    /// restarted (block metadata and bloom filters from the local cache, footers preloaded), then
    /// the same lookups on each; counts the bucket requests per lookup from moto's log.
    TierLookup {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        /// moto's S3 server (`pip install 'moto[server]'`).
        #[arg(long, env = "MOTO_BIN", default_value = ".venv/bin/moto_server")]
        moto_bin: PathBuf,
        #[arg(long, default_value = "target/bench-data/tier")]
        work_dir: PathBuf,
        /// Spans in each store.
        #[arg(long, default_value_t = 1_000_000)]
        spans: u64,
        /// Measured lookups per round and store.
        #[arg(long, default_value_t = 500)]
        lookups: usize,
        /// Rounds (a fresh server per round and store, alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Connections while building the stores.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Clew (durable, ack after fsync) and rotel (blackhole exporter) side by side: alternating runs
    /// of the same load; prints spans per CPU-second of each and the ratio.
    Compare {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        #[arg(long)]
        rotel_bin: PathBuf,
        /// Runs per target and protocol (alternating).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, value_delimiter = ',', default_value = "grpc,http")]
        protocols: Vec<Protocol>,
        /// Where clew keeps its data (a fresh subdirectory per run).
        #[arg(long, default_value = "target/bench-data")]
        work_dir: PathBuf,
        #[command(flatten)]
        drive: DriveArgs,
        #[command(flatten)]
        pool: PoolArgs,
        /// Write results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Ingest N spans into a fresh clew, flush and compact, and report bytes per span on disk next
    /// to raw OTLP and zstd-19 of it. Keeps the data dir and a sample of trace ids for `query`.
    Storage {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        #[arg(long, default_value_t = 2_000_000)]
        spans: u64,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[command(flatten)]
        pool: PoolArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Query latency over HTTP against a store made by `storage`: trace by id (no time range) and
    /// search by one attribute.
    Query {
        #[arg(long, default_value = "target/release/clew")]
        clew_bin: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// Trace-by-id requests.
        #[arg(long, default_value_t = 2000)]
        lookups: usize,
        /// Searches per query shape.
        #[arg(long, default_value_t = 20)]
        searches: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn print_load(name: &str, r: &LoadResult) {
    println!(
        "{name:<6} {:<5} {:>10.0} spans/s  {:>10} cpu-s  {:>10} spans/cpu-s  p50 {:>7.2} ms  p99 {:>7.2} ms  rss {:>6} MiB  rejected {}  failed {}",
        r.protocol,
        r.spans_per_sec,
        r.server_cpu_seconds.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
        r.spans_per_cpu_second.map(|c| format!("{c:.0}")).unwrap_or_else(|| "-".into()),
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.server_max_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
        r.spans_rejected,
        r.requests_failed,
    );
    if let Some(e) = &r.first_error {
        println!("       first error: {e}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_json(path: &Option<PathBuf>, value: serde_json::Value) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_vec_pretty(&value)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn fresh_dir(p: &Path) -> anyhow::Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Proxy(args) => proxy::run(args).await?,
        Cmd::Overload(args) => overload::run(args).await?,
        Cmd::Soak(args) => soak::run(args).await?,
        Cmd::Kafka(args) => kafka::run(args).await?,
        Cmd::Load {
            protocol,
            endpoint,
            pid,
            tls_ca_file,
            drive,
            pool,
        } => {
            let pool = pool.build();
            let mut spec = drive.spec(protocol, endpoint, pid);
            spec.tls_ca = tls_ca_file;
            let r = load::run(spec, pool).await?;
            print_load("target", &r);
            println!("{}", serde_json::to_string(&r)?);
        }
        Cmd::Compare {
            clew_bin,
            rotel_bin,
            rounds,
            protocols,
            work_dir,
            drive,
            pool,
            json,
        } => {
            let pool = pool.build();
            std::fs::create_dir_all(&work_dir)?;
            let mut all = Vec::new();
            let mut summary = Vec::new();
            for protocol in protocols {
                let (mut clew_rates, mut rotel_rates) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    // Alternate which goes first so drift on a shared machine hits both alike.
                    let order: [&str; 2] = if round % 2 == 0 {
                        ["clew", "rotel"]
                    } else {
                        ["rotel", "clew"]
                    };
                    for target in order {
                        let log = work_dir.join(format!("{target}.log"));
                        let data = work_dir.join("clew-data");
                        let server = if target == "clew" {
                            fresh_dir(&data)?;
                            servers::start_clew(&clew_bin, &data, None, &log)?
                        } else {
                            servers::start_rotel(&rotel_bin, &log)?
                        };
                        let endpoint = match protocol {
                            Protocol::Grpc => server.grpc.clone(),
                            Protocol::Http => server.http.clone(),
                        };
                        let spec = drive.spec(protocol, endpoint, Some(server.pid()));
                        let r = load::run(spec, pool.clone()).await?;
                        server.stop()?;
                        print_load(target, &r);
                        let per_cpu = r.spans_per_cpu_second.unwrap_or(0.0);
                        if target == "clew" {
                            clew_rates.push(per_cpu);
                        } else {
                            rotel_rates.push(per_cpu);
                        }
                        all.push(
                            serde_json::json!({"target": target, "round": round, "result": r}),
                        );
                    }
                }
                let (c, r) = (median(clew_rates), median(rotel_rates));
                let ratio = if r > 0.0 { c / r } else { 0.0 };
                println!(
                    "==> {protocol:?}: clew {c:.0} vs rotel {r:.0} spans per CPU-second (median of {rounds}); ratio clew/rotel = {ratio:.2}"
                );
                summary.push(serde_json::json!({
                    "protocol": format!("{protocol:?}").to_lowercase(),
                    "clew_spans_per_cpu_second": c,
                    "rotel_spans_per_cpu_second": r,
                    "ratio": ratio,
                }));
            }
            write_json(&json, serde_json::json!({"summary": summary, "runs": all}))?;
        }
        Cmd::TlsCost {
            clew_bin,
            rounds,
            protocols,
            cert_file,
            key_file,
            ca_file,
            work_dir,
            drive,
            pool,
            json,
        } => {
            let pool = pool.build();
            std::fs::create_dir_all(&work_dir)?;
            let abs =
                |p: &Path| std::fs::canonicalize(p).with_context(|| format!("{}", p.display()));
            let (cert, key, ca) = (abs(&cert_file)?, abs(&key_file)?, abs(&ca_file)?);
            let tls = format!(
                "{{cert_file: {}, key_file: {}}}",
                cert.display(),
                key.display()
            );
            let tls_config = work_dir.join("tls.yaml");
            std::fs::write(
                &tls_config,
                format!(
                    "receivers:\n  otlp:\n    protocols:\n      grpc: {{endpoint: 127.0.0.1:4317, tls: {tls}}}\n      http: {{endpoint: 127.0.0.1:4318, tls: {tls}}}\n"
                ),
            )?;
            let mut all = Vec::new();
            let mut summary = Vec::new();
            for protocol in protocols {
                let (mut plain_rates, mut tls_rates) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    // Alternate which goes first so drift on a shared machine hits both alike.
                    let order = if round % 2 == 0 {
                        [false, true]
                    } else {
                        [true, false]
                    };
                    for with_tls in order {
                        let name = if with_tls { "tls" } else { "plain" };
                        let log = work_dir.join(format!("clew-{name}.log"));
                        let data = work_dir.join("clew-data");
                        fresh_dir(&data)?;
                        let config = with_tls.then_some(tls_config.as_path());
                        let server = servers::start_clew(&clew_bin, &data, config, &log)?;
                        let endpoint = match protocol {
                            Protocol::Grpc => server.grpc.clone(),
                            Protocol::Http => server.http.clone(),
                        };
                        let mut spec = drive.spec(protocol, endpoint, Some(server.pid()));
                        spec.tls_ca = with_tls.then(|| ca.clone());
                        let r = load::run(spec, pool.clone()).await?;
                        server.stop()?;
                        print_load(name, &r);
                        let per_cpu = r.spans_per_cpu_second.unwrap_or(0.0);
                        if with_tls {
                            tls_rates.push(per_cpu);
                        } else {
                            plain_rates.push(per_cpu);
                        }
                        all.push(serde_json::json!({"mode": name, "round": round, "result": r}));
                    }
                }
                let (p, t) = (median(plain_rates), median(tls_rates));
                // CPU per span is 1 / (spans per CPU-second).
                let extra = if t > 0.0 { p / t - 1.0 } else { 0.0 };
                println!(
                    "==> {protocol:?}: plaintext {p:.0} vs TLS {t:.0} spans per CPU-second (median of {rounds}); TLS costs {:+.1} % CPU per span",
                    extra * 100.0
                );
                summary.push(serde_json::json!({
                    "protocol": format!("{protocol:?}").to_lowercase(),
                    "plaintext_spans_per_cpu_second": p,
                    "tls_spans_per_cpu_second": t,
                    "tls_extra_cpu_per_span": extra,
                }));
            }
            write_json(&json, serde_json::json!({"summary": summary, "runs": all}))?;
        }
        Cmd::EncryptionCost {
            clew_bin,
            rounds,
            protocols,
            block_max_age,
            work_dir,
            drive,
            pool,
            lookup_spans,
            lookups,
            lookup_rounds,
            build_connections,
            json,
        } => {
            let pool = pool.build();
            let args = storage_cost::EncryptionCostArgs {
                clew_bin,
                rounds,
                protocols,
                block_max_age,
                work_dir,
                drive,
                lookup_spans,
                lookups,
                lookup_rounds,
                build_connections,
            };
            let report = storage_cost::encryption_cost(args, pool).await?;
            write_json(&json, report)?;
        }
        Cmd::RedactionCost {
            clew_bin,
            rounds,
            protocols,
            work_dir,
            drive,
            pool,
            json,
        } => {
            let pool = pool.build();
            let args = redaction_cost::RedactionCostArgs {
                clew_bin,
                rounds,
                protocols,
                work_dir,
                drive,
            };
            let report = redaction_cost::redaction_cost(args, pool).await?;
            write_json(&json, report)?;
        }
        Cmd::CompactionLoad { args, pool, json } => {
            let report = compaction_load::compaction_load(args, pool.build()).await?;
            write_json(&json, report)?;
        }
        Cmd::TierLookup {
            clew_bin,
            moto_bin,
            work_dir,
            spans,
            lookups,
            rounds,
            connections,
            pool,
            json,
        } => {
            let pool = pool.build();
            let args = storage_cost::TierLookupArgs {
                clew_bin,
                moto_bin,
                work_dir,
                spans,
                lookups,
                rounds,
                connections,
            };
            let report = storage_cost::tier_lookup(args, pool).await?;
            write_json(&json, report)?;
        }
        Cmd::Storage {
            clew_bin,
            spans,
            data_dir,
            connections,
            pool,
            json,
        } => {
            let pool = pool.build();
            let report = query::storage_run(&clew_bin, &data_dir, spans, connections, pool).await?;
            write_json(&json, report)?;
        }
        Cmd::Query {
            clew_bin,
            data_dir,
            lookups,
            searches,
            json,
        } => {
            let report = query::query_run(&clew_bin, &data_dir, lookups, searches).await?;
            write_json(&json, report)?;
        }
    }
    Ok(())
}
