//! Drives a target over OTLP/gRPC or OTLP/HTTP with pre-encoded requests and measures what it
//! acknowledged, how fast, and at what CPU cost to the server process.

use crate::proc_stat::ProcCpu;
use crate::workload::Pool;
use anyhow::Context;
use bytes::{Buf, BufMut, Bytes};
use clew_model::otlp::collector::ExportTraceServiceResponse;
use clew_model::otlp::Message as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub protocol: Protocol,
    /// `host:port` of the receiver.
    pub endpoint: String,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Spans per second over all connections; 0 = as fast as acks come back.
    pub rate: u64,
    /// Stop after this many spans have been acknowledged (0 = no limit).
    pub max_spans: u64,
    /// Server process whose CPU time is measured.
    pub server_pid: Option<u32>,
    /// Keep up to this many sent trace ids (reservoir) for the query benchmark.
    pub keep_ids: usize,
    /// TLS: trust this CA file (PEM) and connect over TLS (server name `localhost`).
    pub tls_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadResult {
    pub protocol: String,
    pub seconds: f64,
    pub requests: u64,
    pub spans_acked: u64,
    pub spans_rejected: u64,
    pub requests_failed: u64,
    pub raw_bytes_sent: u64,
    pub spans_per_sec: f64,
    pub server_cpu_seconds: Option<f64>,
    pub spans_per_cpu_second: Option<f64>,
    pub server_max_rss_mib: Option<f64>,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    #[serde(skip)]
    pub trace_ids: Vec<[u8; 16]>,
    #[serde(skip)]
    pub first_error: Option<String>,
}

/// Sends bytes as they are; decodes the response body later with prost.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}
impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}
impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

enum Client {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http(reqwest::Client, String),
}

/// Outcome of one export: spans rejected by partial success, or an error text.
type Sent = Result<u64, String>;

impl Client {
    async fn connect(spec: &LoadSpec) -> anyhow::Result<Self> {
        let ca = match &spec.tls_ca {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading the CA file {}", p.display()))?,
            ),
            None => None,
        };
        let scheme = if ca.is_some() { "https" } else { "http" };
        Ok(match spec.protocol {
            Protocol::Grpc => {
                let mut ep =
                    tonic::transport::Endpoint::new(format!("{scheme}://{}", spec.endpoint))?
                        .tcp_nodelay(true);
                if let Some(ca) = &ca {
                    // tonic's own TLS (rustls, aws-lc-rs), like any OTLP gRPC client.
                    ep = ep.tls_config(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                            .domain_name("localhost"),
                    )?;
                }
                let ch = ep
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {}", spec.endpoint))?;
                Client::Grpc(tonic::client::Grpc::new(ch).max_decoding_message_size(64 << 20))
            }
            Protocol::Http => {
                let mut b = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true);
                if let Some(ca) = &ca {
                    b = b.tls_certs_only([reqwest::Certificate::from_pem(ca)?]);
                }
                Client::Http(
                    b.build()?,
                    format!("{scheme}://{}/v1/traces", spec.endpoint),
                )
            }
        })
    }

    async fn export(&mut self, body: Vec<u8>) -> Sent {
        match self {
            Client::Grpc(g) => {
                g.ready().await.map_err(|e| e.to_string())?;
                let resp = g
                    .unary(
                        tonic::Request::new(Bytes::from(body)),
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                Ok(rejected(resp.get_ref()))
            }
            Client::Http(c, url) => {
                let resp = c
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                Ok(rejected(&body))
            }
        }
    }
}

fn rejected(body: &[u8]) -> u64 {
    ExportTraceServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map(|p| p.rejected_spans.max(0) as u64)
        .unwrap_or(0)
}

#[derive(Default)]
struct Shared {
    latencies_us: Vec<u32>,
    ids: Vec<[u8; 16]>,
    ids_seen: u64,
    first_error: Option<String>,
}

pub async fn run(spec: LoadSpec, pool: Arc<Pool>) -> anyhow::Result<LoadResult> {
    let seq = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let rejected_spans = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(spec.warmup.is_zero()));

    let start = Instant::now();
    let deadline = start + spec.warmup + spec.duration;
    let per_conn_interval = if spec.rate > 0 {
        let spans_per_req = pool.requests[0].spans as f64;
        Some(Duration::from_secs_f64(
            spans_per_req * spec.connections as f64 / spec.rate as f64,
        ))
    } else {
        None
    };

    let mut tasks = Vec::new();
    for c in 0..spec.connections {
        let mut client = Client::connect(&spec).await?;
        let (seq, acked, rejected_spans, failed, requests, raw_bytes, shared, measuring, pool) = (
            seq.clone(),
            acked.clone(),
            rejected_spans.clone(),
            failed.clone(),
            requests.clone(),
            raw_bytes.clone(),
            shared.clone(),
            measuring.clone(),
            pool.clone(),
        );
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng_state = 0x2545_F491_4F6C_DD1D_u64 ^ (c as u64) << 32;
            let mut next_send = Instant::now();
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if spec.max_spans > 0 && acked.load(Ordering::Relaxed) >= spec.max_spans {
                    break;
                }
                if let Some(iv) = per_conn_interval {
                    if next_send > now {
                        tokio::time::sleep_until(next_send.into()).await;
                    }
                    next_send += iv;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let (body, spans, ids) = pool.render(n);
                let len = body.len() as u64;
                let ids: Vec<[u8; 16]> = if spec.keep_ids > 0 {
                    ids.collect()
                } else {
                    Vec::new()
                };
                let t0 = Instant::now();
                let res = client.export(body).await;
                let lat = t0.elapsed();
                let counting = measuring.load(Ordering::Relaxed);
                match res {
                    Ok(rej) => {
                        if counting {
                            acked.fetch_add(spans as u64 - rej, Ordering::Relaxed);
                            rejected_spans.fetch_add(rej, Ordering::Relaxed);
                            requests.fetch_add(1, Ordering::Relaxed);
                            raw_bytes.fetch_add(len, Ordering::Relaxed);
                        }
                        let sh = &mut *shared.lock().expect("no panics while holding the lock");
                        if counting {
                            sh.latencies_us
                                .push(lat.as_micros().min(u32::MAX as u128) as u32);
                        }
                        // Reservoir sample of acknowledged trace ids (warm-up included: they are stored too).
                        for id in ids {
                            sh.ids_seen += 1;
                            if sh.ids.len() < spec.keep_ids {
                                sh.ids.push(id);
                            } else {
                                rng_state = crate::workload::splitmix64(rng_state);
                                let j = (rng_state % sh.ids_seen) as usize;
                                if j < spec.keep_ids {
                                    sh.ids[j] = id;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if counting {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        {
                            let sh = &mut *shared.lock().expect("no panics while holding the lock");
                            if sh.first_error.is_none() {
                                sh.first_error = Some(e);
                            }
                        }
                        // Back off a little: a refusing server should not be hammered in a loop.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    // Warm-up, then the measured window.
    tokio::time::sleep(spec.warmup).await;
    let cpu0 = spec.server_pid.map(ProcCpu::read).transpose()?;
    measuring.store(true, Ordering::Relaxed);
    let t_measure = Instant::now();
    for t in tasks {
        t.await.context("load task panicked")?;
    }
    let seconds = t_measure.elapsed().as_secs_f64();
    let cpu1 = spec.server_pid.map(ProcCpu::read).transpose()?;

    let mut sh = std::mem::take(&mut *shared.lock().expect("no panics while holding the lock"));
    sh.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if sh.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((sh.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        sh.latencies_us[i] as f64 / 1000.0
    };
    let spans_acked = acked.load(Ordering::Relaxed);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.cpu_seconds - a.cpu_seconds),
        _ => None,
    };
    Ok(LoadResult {
        protocol: format!("{:?}", spec.protocol).to_lowercase(),
        seconds,
        requests: requests.load(Ordering::Relaxed),
        spans_acked,
        spans_rejected: rejected_spans.load(Ordering::Relaxed),
        requests_failed: failed.load(Ordering::Relaxed),
        raw_bytes_sent: raw_bytes.load(Ordering::Relaxed),
        spans_per_sec: spans_acked as f64 / seconds,
        server_cpu_seconds: cpu,
        spans_per_cpu_second: cpu.filter(|c| *c > 0.0).map(|c| spans_acked as f64 / c),
        server_max_rss_mib: cpu1.map(|c| c.max_rss_kib as f64 / 1024.0),
        latency_p50_ms: pct(0.50),
        latency_p99_ms: pct(0.99),
        latency_max_ms: pct(1.0),
        trace_ids: sh.ids,
        first_error: sh.first_error,
    })
}
