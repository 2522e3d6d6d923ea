//! Durable tail sampling cost (`cargo bench -p clew-sampling --bench durable`): the same requests
//! through the in-memory path (`Processor::process`) and the durable path (`consume_logged`:
//! append to the sampler log, group-committed fsync, ack), from `CLIENTS` concurrent clients, in
//! one run. The log lives under `BENCH_DIR` (default: the system temp dir) — put it on the disk
//! the data dir would use. Decisions are out of the picture (decision_wait 1h).

use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SinkError, SpanBatch, SpanSink, Tenant};
use clew_pipeline::Processor;
use clew_sampling::sampler_log::{LogOptions, SamplerLog};
use clew_sampling::{TailCore, TailSampler, TailSamplingConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const TRACES_PER_BATCH: u64 = 100;
const SPANS_PER_TRACE: u64 = 4;

fn batch(seed: u64) -> SpanBatch {
    let mut spans = Vec::new();
    for t in 0..TRACES_PER_BATCH {
        let n = seed * TRACES_PER_BATCH + t;
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        tid[8..].copy_from_slice(&(n ^ 0xabcdef).to_be_bytes());
        for s in 0..SPANS_PER_TRACE {
            spans.push(Span {
                trace_id: tid.to_vec(),
                span_id: (n * 8 + s + 1).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    Vec::new()
                } else {
                    (n * 8 + 1).to_be_bytes().to_vec()
                },
                name: format!("GET /api/v1/items/{s}"),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_050_000_000,
                attributes: vec![KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("/api/v1/items/{id}".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    SpanBatch::new(
        Tenant::default(),
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("frontend".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    )
}

struct Null;
#[async_trait::async_trait]
impl SpanSink for Null {
    async fn consume(&self, _: SpanBatch) -> Result<(), SinkError> {
        Ok(())
    }
}

fn cfg() -> TailSamplingConfig {
    serde_yaml::from_str(
        "decision_wait: 1h\nroot_send_delay: 0s\nnum_traces: 100000000\nmax_buffered_mib: 100000\npolicies:\n  - {name: all, type: always_sample}\n",
    )
    .unwrap()
}

async fn run(durable: bool, clients: u64, per_client: u64) -> f64 {
    let dir = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("clew-bench-sampler-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut core = TailCore::new("tail_sampling", cfg()).unwrap();
    let log = if durable {
        let (log, _) = SamplerLog::open(&dir, None, LogOptions::default())
            .await
            .unwrap();
        core.attach_log(log.clone());
        Some(log)
    } else {
        None
    };
    let sampler = Arc::new(TailSampler::start(core, Arc::new(Null)));
    let batches: Vec<Vec<SpanBatch>> = (0..clients)
        .map(|c| {
            (0..per_client)
                .map(|i| batch(c * per_client + i + 1))
                .collect()
        })
        .collect();
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for bs in batches {
        let (s, done) = (sampler.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            for b in bs {
                if durable {
                    s.consume_logged(b, None).await.unwrap();
                } else {
                    s.process(b).unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let spans = (done.load(Ordering::Relaxed) * TRACES_PER_BATCH * SPANS_PER_TRACE) as f64;
    if let Some(log) = log {
        log.close().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    spans / secs
}

fn main() {
    let clients: u64 = std::env::var("CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let per_client: u64 = std::env::var("BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mem = run(false, clients, per_client).await;
        let dur = run(true, clients, per_client).await;
        println!(
            "tail sampling ingest, {clients} clients x {per_client} requests of {} spans:",
            TRACES_PER_BATCH * SPANS_PER_TRACE
        );
        println!("  in memory (process):        {mem:>12.0} spans/s");
        println!(
            "  durable (log + fsync, ack): {dur:>12.0} spans/s  ({:.0} % of in-memory)",
            100.0 * dur / mem
        );
    });
}
