//! Tail sampler benchmark (`cargo bench -p clew-sampling --bench tail`).
//!
//! Prints: ingest and decision throughput, memory per buffered span against its raw OTLP size
//! (bytes counted by a global allocator), and checks the targets:
//!   * 1,000,000 in-flight traces within 2 GiB;
//!   * zero traces decided early (evicted) at 10,000 new traces/s with a 30 s decision_wait
//!     (simulated time).
//!
//! `BENCH_TRACES=200000` scales the first part down for a quick run.

use clew_model::otlp::common::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use clew_model::otlp::Message;
use clew_model::{SpanBatch, Tenant};
use clew_sampling::tail::Reason;
use clew_sampling::{TailCore, TailSamplingConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = ALLOCATED.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        ALLOCATED.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let d = new as isize - l.size() as isize;
        let n = ALLOCATED.fetch_add(d, Ordering::Relaxed) + d;
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kvi(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const SPANS_PER_TRACE: usize = 4;
const TRACES_PER_BATCH: usize = 100;

/// One export request: `TRACES_PER_BATCH` traces of 4 spans from 2 services (a realistic HTTP
/// server span, a client span, a DB span, an internal span), ~5 % errors.
fn batch(rng: &mut Rng, start_ns: u64) -> SpanBatch {
    let res = |svc: &str| Resource {
        attributes: vec![
            kv("service.name", svc),
            kv("service.version", "1.4.2"),
            kv("host.name", "ip-10-0-3-17"),
            kv("telemetry.sdk.language", "go"),
        ],
        ..Default::default()
    };
    let mut front = Vec::new();
    let mut back = Vec::new();
    for _ in 0..TRACES_PER_BATCH {
        let tid = {
            let mut t = [0u8; 16];
            t[..8].copy_from_slice(&rng.next().to_be_bytes());
            t[8..].copy_from_slice(&rng.next().to_be_bytes());
            t.to_vec()
        };
        let err = rng.next() % 20 < 1; // 5 % errors
        let dur = 1_000_000 + rng.next() % 900_000_000;
        let sid = |r: &mut Rng| r.next().to_be_bytes().to_vec();
        let root = sid(rng);
        let client = sid(rng);
        let mk = |id: Vec<u8>,
                  parent: Vec<u8>,
                  name: &str,
                  kind: i32,
                  attrs: Vec<KeyValue>,
                  d: u64,
                  e: bool| Span {
            trace_id: tid.clone(),
            span_id: id,
            parent_span_id: parent,
            name: name.into(),
            kind,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: start_ns + d,
            attributes: attrs,
            status: e.then(|| Status {
                code: StatusCode::Error as i32,
                message: "upstream timeout".into(),
            }),
            ..Default::default()
        };
        front.push(mk(
            root.clone(),
            vec![],
            "GET /api/orders/{id}",
            2,
            vec![
                kv("http.request.method", "GET"),
                kv("http.route", "/api/orders/{id}"),
                kvi("http.response.status_code", if err { 500 } else { 200 }),
                kv("url.path", "/api/orders/91823"),
                kv("client.address", "10.0.7.3"),
            ],
            dur,
            err,
        ));
        front.push(mk(
            client.clone(),
            root.clone(),
            "GET inventory",
            3,
            vec![
                kv("http.request.method", "GET"),
                kv("server.address", "inventory"),
                kvi("http.response.status_code", 200),
            ],
            dur / 2,
            false,
        ));
        back.push(mk(
            sid(rng),
            client.clone(),
            "SELECT orders",
            3,
            vec![
                kv("db.system", "postgresql"),
                kv("db.query.text", "SELECT * FROM orders WHERE id = $1"),
                kv("db.namespace", "shop"),
            ],
            dur / 4,
            err,
        ));
        back.push(mk(
            sid(rng),
            client,
            "render",
            1,
            vec![kvi("items", 3)],
            dur / 8,
            false,
        ));
    }
    let scope = || InstrumentationScope {
        name: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".into(),
        version: "0.53.0".into(),
        ..Default::default()
    };
    SpanBatch::new(
        Tenant::default(),
        vec![
            ResourceSpans {
                resource: Some(res("frontend")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: front,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(res("inventory")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: back,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    )
}

fn otlp_size(b: &SpanBatch) -> usize {
    clew_model::otlp::collector::ExportTraceServiceRequest {
        resource_spans: b.resource_spans.clone(),
    }
    .encoded_len()
}

fn config(wait: &str, root_delay: &str, mib: usize, traces: usize) -> TailSamplingConfig {
    serde_yaml::from_str(&format!(
        "decision_wait: {wait}
root_send_delay: {root_delay}
max_buffered_mib: {mib}
num_traces: {traces}
policies:
  - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
  - {{name: slow, type: latency, latency: {{threshold_ms: 800}}}}
  - {{name: ten-percent, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
"
    ))
    .unwrap()
}

fn main() {
    let traces: usize = std::env::var("BENCH_TRACES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# clew-sampling tail benchmark ({cores} cores, {SPANS_PER_TRACE} spans/trace, {TRACES_PER_BATCH} traces/batch)");

    // Part 1: fill with `traces` in-flight traces, measure memory, then decide them all.
    let core = TailCore::new("bench", config("1h", "0s", 4096, traces * 11 / 10 + 1000)).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let base = allocated();
    let mut raw = 0usize;
    let mut ingest_time = 0.0;
    let mut i = 0;
    while i < traces {
        let b = batch(&mut rng, 1_700_000_000_000_000_000);
        raw += otlp_size(&b);
        let t = Instant::now();
        let out = core.ingest(&b, 0);
        ingest_time += t.elapsed().as_secs_f64();
        assert!(out.released.is_empty());
        i += TRACES_PER_BATCH;
    }
    let used = allocated() - base;
    let spans = traces * SPANS_PER_TRACE;
    println!("in-flight traces:             {}", core.buffered_traces());
    println!(
        "ingest:                       {:.0} spans/s ({:.0} traces/s, one thread)",
        spans as f64 / ingest_time,
        traces as f64 / ingest_time
    );
    println!(
        "raw OTLP size:                {:.1} MiB ({:.0} B/span)",
        raw as f64 / 1048576.0,
        raw as f64 / spans as f64
    );
    println!(
        "sampler memory:               {:.1} MiB ({:.0} B/span, {:.2}× raw OTLP)",
        used as f64 / 1048576.0,
        used as f64 / spans as f64,
        used as f64 / raw as f64
    );
    println!(
        "  of which encoded span bytes: {:.1} MiB",
        core.buffered_bytes() as f64 / 1048576.0
    );
    let scaled = used as f64 * 1_000_000.0 / traces as f64;
    println!(
        "target 1,000,000 in-flight traces within 2 GiB: {} ({:.2} GiB for 1M traces)",
        if scaled <= 2.0 * 1073741824.0 {
            "MET"
        } else {
            "NOT MET"
        },
        scaled / 1073741824.0
    );

    // Decide everything, all shards in parallel (one thread per shard), as the shard tasks do.
    let t = Instant::now();
    let kept: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..core.num_shards())
            .map(|i| {
                let core = &core;
                s.spawn(move || core.tick(i, 4_000_000).len())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let el = t.elapsed().as_secs_f64();
    println!(
        "decisions:                    {:.0} traces/s on {} shards ({} kept of {}, {:.1} %)",
        traces as f64 / el,
        core.num_shards(),
        kept,
        traces,
        kept as f64 * 100.0 / traces as f64
    );
    drop(core);

    // Part 2: 10,000 new traces/s for 120 simulated seconds with decision_wait 30 s, the memory
    // bound sized for 300k in-flight traces (+ 20 % headroom); early (forced) decisions must be 0.
    let rate = 10_000usize;
    let wait_s = 30;
    let secs = 120u64;
    let core = TailCore::new("sim", config("30s", "0s", 768, rate * wait_s * 6 / 5)).unwrap();
    let mut peak_traces = 0;
    let mut peak_bytes = 0;
    let base = allocated();
    let mut peak_mem = 0isize;
    let mut decided = 0usize;
    let t = Instant::now();
    for ms in (0..secs * 1000).step_by(10) {
        // 100 traces every 10 ms = 10,000/s.
        let b = batch(&mut rng, 1_700_000_000_000_000_000 + ms * 1_000_000);
        let out = core.ingest(&b, ms);
        decided += out.released.len();
        if ms % 100 == 0 {
            for s in 0..core.num_shards() {
                decided += core.tick(s, ms).len();
            }
            peak_traces = peak_traces.max(core.buffered_traces());
            peak_bytes = peak_bytes.max(core.buffered_bytes());
            peak_mem = peak_mem.max(allocated() - base);
        }
    }
    let el = t.elapsed().as_secs_f64();
    let forced = core.metrics.decided_by("sim", Reason::MemoryLimit)
        + core.metrics.decided_by("sim", Reason::TraceLimit)
        + core.metrics.decided_by("sim", Reason::SpanLimit)
        + core.metrics.decided_by("sim", Reason::ByteLimit);
    let on_time = core.metrics.decided_by("sim", Reason::DecisionWait);
    println!(
        "simulated {secs} s at {rate} traces/s (decision_wait {wait_s}s): {} decided on time, {} decided early by limits, peak {} in-flight traces, {:.1} MiB encoded, {:.1} MiB sampler memory; ran in {:.1} s wall ({:.1}× real time)",
        on_time,
        forced,
        peak_traces,
        peak_bytes as f64 / 1048576.0,
        peak_mem as f64 / 1048576.0,
        el,
        secs as f64 / el
    );
    let _ = decided;
    println!(
        "target zero traces evicted undecided at 10,000 new traces/s: {} ({} evicted early, 0 dropped undecided by construction)",
        if forced == 0 { "MET" } else { "NOT MET" },
        forced
    );
    println!(
        "peak heap during run:         {:.1} MiB",
        PEAK.load(Ordering::Relaxed) as f64 / 1048576.0
    );
}
