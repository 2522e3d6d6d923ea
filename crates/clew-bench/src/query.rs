//! Storage size and query latency: build a store of N spans through the real receiver, let it
//! flush and compact, then measure bytes per span and query latency over HTTP.

use crate::load::{self, LoadSpec, Protocol};
use crate::servers::{self, block_count, dir_bytes, files_named};
use crate::workload::Pool;
use anyhow::{bail, Context};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Blocks are compacted quickly here so the measurement does not wait for the default schedule;
/// block size limits are the defaults users get.
const STORAGE_CONFIG: &str = "storage:\n  compaction:\n    interval: 2s\n    min_blocks: 2\n";

fn ids_path(data_dir: &Path) -> PathBuf {
    let mut p = data_dir.as_os_str().to_owned();
    p.push(".trace-ids");
    PathBuf::from(p)
}

fn config_path(data_dir: &Path) -> PathBuf {
    let mut p = data_dir.as_os_str().to_owned();
    p.push(".clew.yaml");
    PathBuf::from(p)
}

/// Whether the server reports a merge in progress; `false` when it cannot tell (a binary from
/// before `clew_compaction_running`: only the files are watched then).
async fn compaction_running(client: &reqwest::Client, server: &servers::Server) -> bool {
    let Some(q) = &server.query else { return false };
    servers::metric(client, q, "clew_compaction_running")
        .await
        .is_some_and(|v| v > 0.0)
}

fn log_path(data_dir: &Path, what: &str) -> PathBuf {
    let mut p = data_dir.as_os_str().to_owned();
    p.push(format!(".{what}.log"));
    PathBuf::from(p)
}

pub async fn storage_run(
    clew_bin: &Path,
    data_dir: &Path,
    spans: u64,
    connections: usize,
    pool: Arc<Pool>,
) -> anyhow::Result<serde_json::Value> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir)?;
    }
    std::fs::create_dir_all(data_dir)?;
    let cfg = config_path(data_dir);
    std::fs::write(&cfg, STORAGE_CONFIG)?;
    // Each replay round moves the clock on by the pool's time span: place round 0 so that the
    // last round sent ends now, as a store that has received traffic up to now would.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pool = Arc::new(Pool::clone(&pool).ending_at(spans, now));
    eprintln!(
        "storage: span start times advance {:.2} s per {} spans, from {:.0} s ago",
        pool.round_nanos as f64 / 1e9,
        pool.spans_per_round(),
        now.saturating_sub(pool.first_start_nanos) as f64 / 1e9
    );

    let server = servers::start_clew(
        clew_bin,
        data_dir,
        Some(&cfg),
        &log_path(data_dir, "ingest"),
    )?;
    eprintln!("storage: ingesting {spans} spans over OTLP/gRPC ({connections} connections)…");
    let started = Instant::now();
    let progress = {
        let dir = data_dir.to_path_buf();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "  … {:.0} s, {} blocks, {:.1} MiB on disk",
                    started.elapsed().as_secs_f64(),
                    block_count(&dir),
                    dir_bytes(&dir) as f64 / 1048576.0
                );
            }
        })
    };
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
            keep_ids: 20_000,
            tls_ca: None,
        },
        pool.clone(),
    )
    .await?;
    crate::print_load("clew", &r);
    if r.spans_acked < spans {
        bail!("only {} of {spans} spans were acknowledged", r.spans_acked);
    }
    let mut f = std::fs::File::create(ids_path(data_dir))?;
    for id in &r.trace_ids {
        writeln!(f, "{}", hex::encode(id))?;
    }
    eprintln!("storage: stopping (final flush)…");
    server.stop()?;

    // Restart so the compactor merges what the flushes wrote, and wait until it settles.
    let server = servers::start_clew(
        clew_bin,
        data_dir,
        Some(&cfg),
        &log_path(data_dir, "compact"),
    )?;
    // Settled: no merge running (`clew_compaction_running`: a merge of millions of spans builds
    // its output in memory for minutes without changing a file), no block being written (a
    // `data.parquet` without its `meta.json`, which is written last) and the count unchanged for
    // 45 s. Bounded, so a stuck compactor cannot hang the run.
    let writing = |dir: &Path| files_named(dir, "data.parquet") > block_count(dir);
    let client = reqwest::Client::new();
    let mut last = (block_count(data_dir), Instant::now());
    let settle_started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = block_count(data_dir);
        if n != last.0 || writing(data_dir) || compaction_running(&client, &server).await {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(45) {
            break;
        }
        if settle_started.elapsed() > Duration::from_secs(3600) {
            eprintln!("storage: compaction still running after an hour; measuring as it is");
            break;
        }
    }
    server.stop()?;
    progress.abort();

    let blocks_dir = data_dir.join("blocks");
    let block_bytes = dir_bytes(&blocks_dir);
    let total_bytes = dir_bytes(data_dir);
    let raw_per_span = r.raw_bytes_sent as f64 / r.spans_acked as f64;

    // Reference floor: zstd -19 over a sample of the very requests that were sent.
    let mut sample = Vec::new();
    let mut sample_spans = 0usize;
    let mut seq = 0u64;
    while sample.len() < 8 << 20 {
        let (bytes, n, _) = pool.render(seq);
        sample.extend_from_slice(&bytes);
        sample_spans += n;
        seq += 1;
    }
    let z = zstd::bulk::compress(&sample, 19).context("zstd")?;
    let zstd_per_span = z.len() as f64 / sample_spans as f64;

    let per_span = block_bytes as f64 / r.spans_acked as f64;
    println!(
        "storage: {} spans → {} blocks, {:.1} MiB: {:.1} bytes/span on disk (raw OTLP {:.0} B/span, zstd-19 of raw {:.1} B/span; whole data dir {:.1} B/span)",
        r.spans_acked,
        block_count(data_dir),
        block_bytes as f64 / 1048576.0,
        per_span,
        raw_per_span,
        zstd_per_span,
        total_bytes as f64 / r.spans_acked as f64
    );
    Ok(json!({
        "spans": r.spans_acked,
        "blocks": block_count(data_dir),
        "block_bytes": block_bytes,
        "bytes_per_span": per_span,
        "raw_otlp_bytes_per_span": raw_per_span,
        "zstd19_bytes_per_span": zstd_per_span,
        "data_dir_bytes_per_span": total_bytes as f64 / r.spans_acked as f64,
        "ingest": r,
    }))
}

/// Waits (up to 60 s) until the server answers `/ready` (block metadata loaded).
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latency of `lookups` trace-by-id requests (Jaeger API, no time range), one at a time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LookupStats {
    pub lookups: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Lookups that failed or did not return all of the trace's spans.
    pub incomplete: usize,
}

/// `lookups` requests of `GET /api/traces/{id}`: ids drawn at random from `ids` (splitmix64 from
/// `seed`), or in order when `in_order`; each timed from send to the last body byte.
pub async fn trace_lookups(
    client: &reqwest::Client,
    base: &str,
    ids: &[String],
    lookups: usize,
    seed: u64,
    in_order: bool,
) -> anyhow::Result<LookupStats> {
    if ids.is_empty() {
        bail!("no trace ids to look up");
    }
    let mut t = Vec::with_capacity(lookups);
    let mut rng = seed;
    let mut missing = 0usize;
    for i in 0..lookups {
        let id = if in_order {
            &ids[i % ids.len()]
        } else {
            rng = crate::workload::splitmix64(rng);
            &ids[(rng % ids.len() as u64) as usize]
        };
        let t0 = Instant::now();
        let resp = client.get(format!("{base}/api/traces/{id}")).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        t.push(t0.elapsed().as_secs_f64() * 1000.0);
        let spans = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["data"][0]["spans"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if !status.is_success() || spans != crate::workload::SPANS_PER_TRACE {
            missing += 1;
        }
    }
    let (p50_ms, p99_ms, max_ms) = Timings(t).summary();
    Ok(LookupStats {
        lookups,
        p50_ms,
        p99_ms,
        max_ms,
        incomplete: missing,
    })
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Timings(Vec<f64>);
impl Timings {
    fn summary(mut self) -> (f64, f64, f64) {
        self.0.sort_by(|a, b| a.total_cmp(b));
        (
            percentile(&self.0, 0.5),
            percentile(&self.0, 0.99),
            percentile(&self.0, 1.0),
        )
    }
}

pub async fn query_run(
    clew_bin: &Path,
    data_dir: &Path,
    lookups: usize,
    searches: usize,
) -> anyhow::Result<serde_json::Value> {
    let ids: Vec<String> = std::fs::read_to_string(ids_path(data_dir))
        .with_context(|| {
            format!(
                "reading {} (run `storage` first)",
                ids_path(data_dir).display()
            )
        })?
        .lines()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        bail!("no trace ids recorded");
    }
    // Compaction off: measure reads, not a merge running next to them.
    let cfg = config_path(data_dir);
    std::fs::write(&cfg, "storage:\n  compaction:\n    enabled: false\n")?;
    let server = servers::start_clew(clew_bin, data_dir, Some(&cfg), &log_path(data_dir, "query"))?;
    let base = format!("http://{}", server.query.clone().unwrap_or_default());
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    wait_ready(&client, &base).await;

    // Warm-up, not measured: connection set-up, and the server's background read of block
    // footers at start-up (a long-running server has them cached).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let warm: Vec<String> = ids.iter().take(200).cloned().collect();
    trace_lookups(&client, &base, &warm, warm.len(), 0, true).await?;
    let stats = trace_lookups(&client, &base, &ids, lookups, 0x9E37_79B9, false).await?;
    let (p50, p99, max, missing) = (stats.p50_ms, stats.p99_ms, stats.max_ms, stats.incomplete);
    println!(
        "query: trace by id (no time range): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms over {lookups} lookups; {missing} incomplete"
    );

    let shapes: [(&str, String); 4] = [
        (
            "one attribute, frequent (http.route=/payment/charge), limit 20",
            r#"/api/traces?tags=%7B%22http.route%22%3A%22%2Fpayment%2Fcharge%22%7D&limit=20&lookback=24h"#.to_string(),
        ),
        (
            "one attribute, rare (http.response.status_code=500), limit 20",
            r#"/api/traces?tags=%7B%22http.response.status_code%22%3A%22500%22%7D&limit=20&lookback=24h"#.to_string(),
        ),
        (
            "one attribute, very rare (client.address=10.4.3.7), limit 20",
            r#"/api/traces?tags=%7B%22client.address%22%3A%2210.4.3.7%22%7D&limit=20&lookback=24h"#.to_string(),
        ),
        // A value no span has (an address never seen): what a block's attribute-value filter
        // answers without reading the block.
        (
            "one attribute, absent (client.address=10.99.99.99), limit 20",
            r#"/api/traces?tags=%7B%22client.address%22%3A%2210.99.99.99%22%7D&limit=20&lookback=24h"#.to_string(),
        ),
    ];
    let mut search_results = Vec::new();
    for (what, path) in shapes {
        let mut t = Vec::new();
        let mut found = 0;
        for _ in 0..searches {
            let t0 = Instant::now();
            let resp = client.get(format!("{base}{path}")).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                bail!(
                    "search {path} → {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            found = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["data"].as_array().map(|a| a.len()))
                .unwrap_or(0);
        }
        let (p50, p99, max) = Timings(t).summary();
        println!("query: search {what}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({found} traces)");
        search_results.push(
            json!({"search": what, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "traces": found}),
        );
    }
    // Tempo-shaped reads (TraceQL search, tag autocomplete) on the Tempo listener (else under
    // `/tempo` on the query port): recorded with their HTTP status, so a server without the Tempo
    // API still measures the rest.
    let tempo_base = server
        .tempo
        .as_ref()
        .map(|t| format!("http://{t}"))
        .unwrap_or_else(|| format!("{base}/tempo"));
    let tempo_shapes: [(&str, String); 5] = [
        (
            "TraceQL, one dedicated attribute { span.http.route = \"/payment/charge\" }, limit 20",
            format!(
                "/api/search?q={}&limit=20",
                url_encode(r#"{ span.http.route = "/payment/charge" }"#)
            ),
        ),
        (
            "TraceQL, one generic attribute { span.client.address = \"10.4.3.7\" }, limit 20",
            format!(
                "/api/search?q={}&limit=20",
                url_encode(r#"{ span.client.address = "10.4.3.7" }"#)
            ),
        ),
        (
            "TraceQL, structural { resource.service.name = \"frontend\" } >> { span.db.system.name = \"postgresql\" }, limit 20",
            format!(
                "/api/search?q={}&limit=20",
                url_encode(
                    r#"{ resource.service.name = "frontend" } >> { span.db.system.name = "postgresql" }"#
                )
            ),
        ),
        (
            "tag names, all scopes (/api/v2/search/tags)",
            "/api/v2/search/tags".to_string(),
        ),
        (
            "tag values of span.http.route (/api/v2/search/tag/span.http.route/values)",
            "/api/v2/search/tag/span.http.route/values".to_string(),
        ),
    ];
    let mut tempo_results = Vec::new();
    for (what, path) in tempo_shapes {
        let mut t = Vec::new();
        let mut last_status = 0u16;
        for _ in 0..searches {
            let t0 = Instant::now();
            let resp = client.get(format!("{tempo_base}{path}")).send().await?;
            last_status = resp.status().as_u16();
            let _ = resp.bytes().await?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            if last_status != 200 {
                break;
            }
        }
        if last_status != 200 {
            println!("query: {what}: HTTP {last_status}, not measured");
            tempo_results.push(json!({"query": what, "status": last_status}));
            continue;
        }
        let (p50, p99, max) = Timings(t).summary();
        println!("query: {what}: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        tempo_results.push(
            json!({"query": what, "status": 200, "p50_ms": p50, "p99_ms": p99, "max_ms": max}),
        );
    }
    server.stop()?;
    Ok(json!({
        "trace_by_id": {"p50_ms": p50, "p99_ms": p99, "max_ms": max, "lookups": lookups, "incomplete": missing},
        "search": search_results,
        "tempo": tempo_results,
    }))
}
