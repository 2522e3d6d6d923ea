//! Service graph and span (RED) metrics, computed on the ingest path before sampling.
//!
//! * Span metrics: every span counts into `traces_spanmetrics_*` by service, name, kind, status.
//! * Service graph: CLIENT/PRODUCER spans are paired with their SERVER/CONSUMER children across
//!   batches in a bounded map keyed by (trace id, client span id), as Tempo's metrics-generator
//!   does: entries wait `wait` for their other half; expired client-only entries that name their
//!   peer become edges to a *virtual* node, other expired entries count as unpaired; entries that
//!   do not fit in the map count as dropped. Database CLIENT spans go to a virtual node at once.
//! * Weights: a span head-sampled with the W3C `tracestate` `ot=th:<hex>` threshold stands for
//!   `2^56 / (2^56 - th)` spans. Counters are float counters (`Counter<f64, AtomicU64>`), so
//!   weighted counts are exact; histograms keep float bucket weights and expose counts rounded to
//!   the nearest integer (cumulatively, so buckets stay monotonic).
//! * An in-memory per-minute edge table (24 h) serves `/api/doctor/service-graph`.

use crate::model::{
    self, is_error, virtual_peer, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER,
};
use clew_model::otlp::trace::{status::StatusCode, Span};
use clew_model::otlp::Message;
use clew_model::{attrs, FlatSpan, SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// At most this many span-metrics series; spans of new series beyond it are counted under the
/// span name [`OVERFLOW_SPAN_NAME`].
pub const MAX_SPANMETRICS_SERIES: usize = 10_000;
pub const OVERFLOW_SPAN_NAME: &str = "__overflow__";

/// Latency buckets (seconds), Tempo's span-metrics defaults.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
];

// ---------------------------------------------------------------------------------------------
// Adjusted count from the W3C tracestate `ot=th:` threshold.

/// The sampling threshold `th` (56-bit) of an OpenTelemetry tracestate, if present and valid.
pub fn parse_threshold(tracestate: &str) -> Option<u64> {
    let ot = tracestate.split(',').find_map(|member| {
        let (k, v) = member.trim().split_once('=')?;
        (k.trim() == "ot").then_some(v.trim())
    })?;
    let th = ot.split(';').find_map(|kv| kv.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{th:0<14}");
    u64::from_str_radix(&padded, 16).ok()
}

/// How many spans this span represents: `2^56 / (2^56 - th)`, 1 without a valid threshold.
pub fn adjusted_count(tracestate: &str) -> f64 {
    const MAX: f64 = (1u64 << 56) as f64;
    match parse_threshold(tracestate) {
        Some(th) if th < (1u64 << 56) => MAX / (MAX - th as f64),
        _ => 1.0,
    }
}

// ---------------------------------------------------------------------------------------------
// A histogram with float weights.

#[derive(Debug, Clone)]
pub struct WeightedHistogram {
    inner: Arc<Mutex<WeightedInner>>,
}

#[derive(Debug)]
struct WeightedInner {
    sum: f64,
    /// Non-cumulative weight per bucket of `LATENCY_BUCKETS` and a final +Inf bucket.
    buckets: Vec<f64>,
}

impl Default for WeightedHistogram {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(WeightedInner {
                sum: 0.0,
                buckets: vec![0.0; LATENCY_BUCKETS.len() + 1],
            })),
        }
    }
}

impl WeightedHistogram {
    pub fn observe(&self, value: f64, weight: f64) {
        let i = LATENCY_BUCKETS.partition_point(|&b| b < value);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.sum += value * weight;
        g.buckets[i] += weight;
    }

    /// (sum, rounded count, non-cumulative rounded bucket counts).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(g.buckets.len());
        let (mut cum, mut prev) = (0.0f64, 0u64);
        for (i, w) in g.buckets.iter().enumerate() {
            cum += w;
            let r = cum.round() as u64;
            let upper = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            out.push((upper, r.saturating_sub(prev)));
            prev = prev.max(r);
        }
        (g.sum, prev, out)
    }
}

impl TypedMetric for WeightedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for WeightedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics.

type FloatCounter = Counter<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    client: String,
    server: String,
    connection_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    service: String,
    span_name: String,
    span_kind: String,
    status_code: String,
}

#[derive(Clone, Default)]
struct Metrics {
    request: Family<EdgeLabels, FloatCounter>,
    request_failed: Family<EdgeLabels, FloatCounter>,
    server_seconds: Family<EdgeLabels, WeightedHistogram>,
    client_seconds: Family<EdgeLabels, WeightedHistogram>,
    unpaired: Counter,
    dropped: Counter,
    calls: Family<SpanLabels, FloatCounter>,
    latency: Family<SpanLabels, WeightedHistogram>,
    size: Family<SpanLabels, FloatCounter>,
}

impl Metrics {
    fn register(&self, r: &mut Registry) {
        // prometheus-client appends `_total` to counters itself.
        r.register(
            "traces_service_graph_request",
            "Requests between two nodes of the service graph (weighted by adjusted count)",
            self.request.clone(),
        );
        r.register(
            "traces_service_graph_request_failed",
            "Failed requests between two nodes of the service graph (weighted by adjusted count)",
            self.request_failed.clone(),
        );
        r.register(
            "traces_service_graph_request_server_seconds",
            "Server-side latency of requests between two nodes",
            self.server_seconds.clone(),
        );
        r.register(
            "traces_service_graph_request_client_seconds",
            "Client-side latency of requests between two nodes",
            self.client_seconds.clone(),
        );
        r.register(
            "traces_service_graph_unpaired_spans",
            "Client or server spans whose other half never arrived within the wait time",
            self.unpaired.clone(),
        );
        r.register(
            "traces_service_graph_dropped_spans",
            "Spans not paired because the pairing map was full",
            self.dropped.clone(),
        );
        r.register(
            "traces_spanmetrics_calls",
            "Spans by service, name, kind and status (weighted by adjusted count)",
            self.calls.clone(),
        );
        r.register(
            "traces_spanmetrics_latency",
            "Span duration in seconds",
            self.latency.clone(),
        );
        r.register(
            "traces_spanmetrics_size",
            "Encoded span size in bytes",
            self.size.clone(),
        );
    }
}

fn otel_kind(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn otel_status(span: &Span) -> &'static str {
    match span.status.as_ref().map(|s| s.code) {
        Some(c) if c == StatusCode::Ok as i32 => "STATUS_CODE_OK",
        Some(c) if c == StatusCode::Error as i32 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

// ---------------------------------------------------------------------------------------------
// The edge table.

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EdgeKey {
    tenant: String,
    client: String,
    server: String,
    /// The server is an uninstrumented peer.
    server_virtual: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct EdgeStats {
    requests: f64,
    errors: f64,
}

const MINUTE_NANOS: u64 = 60_000_000_000;
const TABLE_MINUTES: u64 = 24 * 60;

/// Per-minute request/error counts of service-graph edges, per tenant, last 24 hours.
#[derive(Debug, Default)]
pub struct EdgeTable {
    minutes: Mutex<BTreeMap<u64, HashMap<EdgeKey, EdgeStats>>>,
    /// Unix nanos since which a live `ServiceGraph` feeds the table (0 = never).
    active_since: AtomicU64,
}

/// The service graph in the UI's contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GraphJson {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    pub id: String,
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    pub requests: u64,
    pub errors: u64,
}

/// Builds the graph JSON from edges `(client, server, server_is_virtual) -> (requests, errors)`.
/// A node is virtual only if it is never seen as an instrumented service.
fn build_graph(edges: BTreeMap<(String, String, bool), (f64, f64)>) -> GraphJson {
    let mut nodes: BTreeMap<String, bool> = BTreeMap::new();
    let mut merged: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for ((c, s, v), (r, e)) in edges {
        *nodes.entry(c.clone()).or_insert(false) = false;
        let n = nodes.entry(s.clone()).or_insert(v);
        *n = *n && v;
        let m = merged.entry((c, s)).or_default();
        m.0 += r;
        m.1 += e;
    }
    GraphJson {
        nodes: nodes
            .into_iter()
            .map(|(id, is_virtual)| GraphNode { id, is_virtual })
            .collect(),
        edges: merged
            .into_iter()
            .map(|((source, target), (r, e))| GraphEdge {
                source,
                target,
                requests: r.round() as u64,
                errors: e.round() as u64,
            })
            .collect(),
    }
}

impl EdgeTable {
    fn add(&self, minute_of_unix_nano: u64, key: EdgeKey, weight: f64, failed: bool) {
        let minute = minute_of_unix_nano / MINUTE_NANOS;
        let mut g = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((&newest, _)) = g.last_key_value() {
            if minute + TABLE_MINUTES < newest {
                return; // older than the table keeps
            }
        }
        let s = g.entry(minute).or_default().entry(key).or_default();
        s.requests += weight;
        if failed {
            s.errors += weight;
        }
        while let Some((&oldest, _)) = g.first_key_value() {
            let newest = g.last_key_value().map(|(k, _)| *k).unwrap_or(oldest);
            if oldest + TABLE_MINUTES < newest {
                g.pop_first();
            } else {
                break;
            }
        }
    }

    /// Whether the table saw every span of `[start, ...)` (a `ServiceGraph` fed it since before).
    pub fn covers(&self, start_unix_nano: u64) -> bool {
        let since = self.active_since.load(Ordering::Relaxed);
        since != 0 && start_unix_nano >= since.saturating_sub(MINUTE_NANOS)
    }

    /// The graph of `tenant` over minutes overlapping `[start, end]`.
    pub fn graph(&self, tenant: &str, start_unix_nano: u64, end_unix_nano: u64) -> GraphJson {
        let (lo, hi) = (start_unix_nano / MINUTE_NANOS, end_unix_nano / MINUTE_NANOS);
        let g = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let mut edges: BTreeMap<(String, String, bool), (f64, f64)> = BTreeMap::new();
        for (_, m) in g.range(lo..=hi) {
            for (k, s) in m.iter().filter(|(k, _)| k.tenant == tenant) {
                let e = edges
                    .entry((k.client.clone(), k.server.clone(), k.server_virtual))
                    .or_default();
                e.0 += s.requests;
                e.1 += s.errors;
            }
        }
        drop(g);
        build_graph(edges)
    }
}

/// The process-wide edge table shared by [`ServiceGraph::new`] and [`crate::router`] (their
/// constructors are fixed, so they meet here).
pub fn global_edge_table() -> Arc<EdgeTable> {
    static TABLE: OnceLock<Arc<EdgeTable>> = OnceLock::new();
    TABLE.get_or_init(|| Arc::new(EdgeTable::default())).clone()
}

/// The service graph computed from stored traces (used when the live table does not cover the
/// window, e.g. after a restart): an edge for each span whose parent is in another service, and a
/// virtual node for each CLIENT/PRODUCER span without a remote child that names its peer.
pub fn graph_from_traces(traces: &[Vec<FlatSpan>]) -> GraphJson {
    let mut edges: BTreeMap<(String, String, bool), (f64, f64)> = BTreeMap::new();
    for t in traces {
        let by_id: HashMap<[u8; 8], usize> = t
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((model::span_id(&s.span.span_id)?, i)))
            .collect();
        let mut has_remote_child = vec![false; t.len()];
        for s in t {
            let Some(p) = model::span_id(&s.span.parent_span_id).and_then(|p| by_id.get(&p)) else {
                continue;
            };
            let parent = &t[*p];
            if parent.service_name() == s.service_name() {
                continue;
            }
            has_remote_child[*p] = true;
            let w = adjusted_count(&s.span.trace_state);
            let e = edges
                .entry((
                    parent.service_name().to_string(),
                    s.service_name().to_string(),
                    false,
                ))
                .or_default();
            e.0 += w;
            if is_error(s) || (is_error(parent) && parent.span.kind == KIND_CLIENT) {
                e.1 += w;
            }
        }
        for (i, s) in t.iter().enumerate() {
            if has_remote_child[i] || !(s.span.kind == KIND_CLIENT || s.span.kind == KIND_PRODUCER)
            {
                continue;
            }
            if let Some((peer, _)) = virtual_peer(&s.span.attributes) {
                let w = adjusted_count(&s.span.trace_state);
                let e = edges
                    .entry((s.service_name().to_string(), peer, true))
                    .or_default();
                e.0 += w;
                if is_error(s) {
                    e.1 += w;
                }
            }
        }
    }
    build_graph(edges)
}

// ---------------------------------------------------------------------------------------------
// The processor.

/// Pairing settings (Tempo's defaults: wait 10 s, 10 000 items).
#[derive(Debug, Clone, Copy)]
pub struct ServiceGraphConfig {
    pub wait: Duration,
    pub max_items: usize,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            max_items: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Side {
    service: String,
    seconds: f64,
    failed: bool,
    weight: f64,
    start_unix_nano: u64,
    messaging: bool,
    virtual_peer: Option<(String, &'static str)>,
}

#[derive(Debug)]
struct Pending {
    tenant: String,
    client: Option<Side>,
    server: Option<Side>,
    deadline: Instant,
}

type PairKey = ([u8; 16], [u8; 8]);

#[derive(Default)]
struct PairState {
    map: HashMap<PairKey, Pending>,
    queue: VecDeque<(Instant, PairKey)>,
}

/// Service graph and span (RED) metrics, computed from every span that enters the pipeline.
/// Runs first in the pipeline, so it sees spans before sampling drops them; forwards everything.
pub struct ServiceGraph {
    cfg: ServiceGraphConfig,
    metrics: Metrics,
    table: Arc<EdgeTable>,
    pairs: Mutex<PairState>,
    /// Span-metrics series created so far.
    series: std::sync::atomic::AtomicUsize,
    /// Per-minute span metrics for the Monitor page (`/api/metrics/...`).
    span_table: Arc<crate::spanmetrics::SpanMetricsTable>,
}

enum Emit {
    Pair(String, Side, Side),
    Virtual(String, Side),
    Unpaired,
}

impl ServiceGraph {
    /// Registers the metrics in `registry` and feeds the process-wide edge table.
    pub fn new(registry: &mut Registry) -> Self {
        Self::with_config(registry, ServiceGraphConfig::default(), global_edge_table())
    }

    pub fn with_config(
        registry: &mut Registry,
        cfg: ServiceGraphConfig,
        table: Arc<EdgeTable>,
    ) -> Self {
        let metrics = Metrics::default();
        metrics.register(registry);
        let span_table = crate::spanmetrics::global_span_metrics_table();
        span_table.register(registry);
        let now = crate::now_unix_nanos();
        let _ = table
            .active_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        Self {
            cfg,
            metrics,
            table,
            pairs: Mutex::new(PairState::default()),
            series: Default::default(),
            span_table,
        }
    }

    /// The edge table this processor feeds.
    pub fn graph_handle(&self) -> Arc<EdgeTable> {
        self.table.clone()
    }

    fn span_metrics(&self, service: &str, span: &Span, weight: f64) {
        let mut labels = SpanLabels {
            service: service.to_string(),
            span_name: span.name.clone(),
            span_kind: otel_kind(span.kind).to_string(),
            status_code: otel_status(span).to_string(),
        };
        // Bounded cardinality: span names are sometimes unbounded (ids in names).
        if self.metrics.calls.get(&labels).is_none() {
            if self.series.load(Ordering::Relaxed) >= MAX_SPANMETRICS_SERIES {
                labels.span_name = OVERFLOW_SPAN_NAME.to_string();
            } else {
                self.series.fetch_add(1, Ordering::Relaxed);
            }
        }
        let secs = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e9;
        self.metrics.calls.get_or_create(&labels).inc_by(weight);
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(secs, weight);
        self.metrics
            .size
            .get_or_create(&labels)
            .inc_by(span.encoded_len() as f64 * weight);
    }

    fn emit(&self, e: Emit) {
        match e {
            Emit::Unpaired => {
                self.metrics.unpaired.inc();
            }
            Emit::Pair(tenant, c, s) => {
                let conn = if c.messaging || s.messaging {
                    "messaging_system"
                } else {
                    ""
                };
                let labels = EdgeLabels {
                    client: c.service.clone(),
                    server: s.service.clone(),
                    connection_type: conn.to_string(),
                };
                let failed = c.failed || s.failed;
                let w = c.weight.max(s.weight);
                self.metrics.request.get_or_create(&labels).inc_by(w);
                if failed {
                    self.metrics.request_failed.get_or_create(&labels).inc_by(w);
                }
                self.metrics
                    .client_seconds
                    .get_or_create(&labels)
                    .observe(c.seconds, w);
                self.metrics
                    .server_seconds
                    .get_or_create(&labels)
                    .observe(s.seconds, w);
                self.table.add(
                    c.start_unix_nano,
                    EdgeKey {
                        tenant,
                        client: c.service,
                        server: s.service,
                        server_virtual: false,
                    },
                    w,
                    failed,
                );
            }
            Emit::Virtual(tenant, c) => {
                let Some((peer, conn)) = c.virtual_peer.clone() else {
                    self.metrics.unpaired.inc();
                    return;
                };
                let labels = EdgeLabels {
                    client: c.service.clone(),
                    server: peer.clone(),
                    connection_type: conn.to_string(),
                };
                self.metrics.request.get_or_create(&labels).inc_by(c.weight);
                if c.failed {
                    self.metrics
                        .request_failed
                        .get_or_create(&labels)
                        .inc_by(c.weight);
                }
                self.metrics
                    .client_seconds
                    .get_or_create(&labels)
                    .observe(c.seconds, c.weight);
                self.table.add(
                    c.start_unix_nano,
                    EdgeKey {
                        tenant,
                        client: c.service,
                        server: peer,
                        server_virtual: true,
                    },
                    c.weight,
                    c.failed,
                );
            }
        }
    }

    /// Expires entries past their deadline (called on every batch).
    fn sweep(g: &mut PairState, now: Instant, out: &mut Vec<Emit>) {
        while let Some(&(deadline, key)) = g.queue.front() {
            if deadline > now {
                break;
            }
            g.queue.pop_front();
            let Some(p) = g.map.get(&key) else { continue };
            if p.deadline != deadline {
                continue;
            }
            let Some(p) = g.map.remove(&key) else {
                continue;
            };
            match (p.client, p.server) {
                (Some(c), None) if c.virtual_peer.is_some() => out.push(Emit::Virtual(p.tenant, c)),
                _ => out.push(Emit::Unpaired),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pair(
        &self,
        g: &mut PairState,
        tenant: &str,
        key: PairKey,
        is_client: bool,
        side: Side,
        now: Instant,
        out: &mut Vec<Emit>,
    ) {
        if let Some(p) = g.map.get_mut(&key) {
            if p.tenant == tenant {
                let slot = if is_client {
                    &mut p.client
                } else {
                    &mut p.server
                };
                if slot.is_none() {
                    *slot = Some(side);
                }
                if p.client.is_some() && p.server.is_some() {
                    if let Some(p) = g.map.remove(&key) {
                        if let (Some(c), Some(s)) = (p.client, p.server) {
                            out.push(Emit::Pair(p.tenant, c, s));
                        }
                    }
                }
                return;
            }
        }
        if g.map.len() >= self.cfg.max_items {
            self.metrics.dropped.inc();
            return;
        }
        let deadline = now + self.cfg.wait;
        let (client, server) = if is_client {
            (Some(side), None)
        } else {
            (None, Some(side))
        };
        g.map.insert(
            key,
            Pending {
                tenant: tenant.to_string(),
                client,
                server,
                deadline,
            },
        );
        g.queue.push_back((deadline, key));
    }

    /// Feeds a batch (what `process` does, without the pass-through). `now` drives expiry.
    pub fn observe(&self, batch: &SpanBatch, now: Instant) {
        let tenant = batch.tenant.as_str();
        self.span_table.record(batch, crate::now_unix_nanos());
        let mut out = Vec::new();
        // Pairing work is collected first and done under one lock per batch.
        let mut todo: Vec<(PairKey, bool, Side)> = Vec::new();
        for rs in &batch.resource_spans {
            let service = attrs::service_name(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let weight = adjusted_count(&span.trace_state);
                    self.span_metrics(service, span, weight);
                    let kind = span.kind;
                    if !(kind == KIND_CLIENT
                        || kind == KIND_PRODUCER
                        || kind == KIND_SERVER
                        || kind == KIND_CONSUMER)
                    {
                        continue;
                    }
                    let Some(tid) = model::trace_id(&span.trace_id) else {
                        continue;
                    };
                    let side = |virtual_peer| Side {
                        service: service.to_string(),
                        seconds: span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            as f64
                            / 1e9,
                        failed: span.status.as_ref().map(|s| s.code)
                            == Some(StatusCode::Error as i32),
                        weight,
                        start_unix_nano: span.start_time_unix_nano,
                        messaging: kind == KIND_PRODUCER || kind == KIND_CONSUMER,
                        virtual_peer,
                    };
                    if kind == KIND_CLIENT || kind == KIND_PRODUCER {
                        let Some(sid) = model::span_id(&span.span_id) else {
                            continue;
                        };
                        let a = &span.attributes;
                        let vp = virtual_peer(a);
                        let is_db = attrs::get_str(a, "db.system").is_some()
                            || attrs::get_str(a, "db.system.name").is_some();
                        if is_db && vp.is_some() {
                            out.push(Emit::Virtual(tenant.to_string(), side(vp)));
                        } else {
                            todo.push(((tid, sid), true, side(vp)));
                        }
                    } else {
                        // A root SERVER/CONSUMER span has no client to pair with.
                        let Some(pid) = model::span_id(&span.parent_span_id) else {
                            continue;
                        };
                        todo.push(((tid, pid), false, side(None)));
                    }
                }
            }
        }
        {
            let mut g = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
            Self::sweep(&mut g, now, &mut out);
            for (key, is_client, side) in todo {
                self.pair(&mut g, tenant, key, is_client, side, now, &mut out);
            }
        }
        for e in out {
            self.emit(e);
        }
    }
}

impl Processor for ServiceGraph {
    fn name(&self) -> &str {
        "service_graph"
    }
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        self.observe(&batch, Instant::now());
        Ok(ProcessOutcome::Forward(batch))
    }
}
