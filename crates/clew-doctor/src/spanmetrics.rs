//! Span metrics over time for the Monitor page: a bounded per-minute table of calls, errors and a
//! latency histogram per tenant × service × operation (span name) × span kind, fed by the
//! [`crate::ServiceGraph`] processor from every span before sampling, and Jaeger's SPM HTTP API
//! (`/api/metrics/calls|errors|latencies|minstep`, the Jaeger UI's "Monitor" tab) over it.
//!
//! * Weights: like the Prometheus span metrics, a span counts for its adjusted count
//!   ([`crate::adjusted_count`], from the `ot=th:` tracestate threshold of head-sampled spans).
//! * Errors: spans with status `ERROR`.
//! * Latency: log-linear buckets, 8 per octave from 1 µs (bucket ratio 2^(1/8) ≈ 1.09; 256
//!   buckets up to ~58 min), stored sparsely per minute; a quantile is interpolated inside its
//!   bucket, so it is within one bucket (< 9.1 %, typically ~2 %) of the exact value.
//! * Time: a span counts in the minute its start time falls in. Minutes older than the retention
//!   (24 h) or more than [`FUTURE_MINUTES`] ahead of the wall clock are not recorded (counted as
//!   dropped, reason `out_of_window`).
//! * Bounds: at most `max_series_per_tenant` series per tenant (spans of further series are
//!   dropped and counted, reason `series_limit`) and at most `max_cells` (series, minute) cells in
//!   all; above that the oldest minutes are evicted first (counted in
//!   `clew_spanmetrics_table_evicted_cells_total`). A series without data in the kept minutes is
//!   forgotten, so it no longer counts against the limit.
//!
//! Query semantics (`calls`, `errors`, `latencies`): points at `endTs - k·step` (k ≥ 0) after
//! `endTs - lookback`, oldest first; the value at `t` aggregates the `ceil(ratePer / 1 min)`
//! minutes up to and including the minute of `t`: calls per second over those minutes, errors /
//! calls, or the latency quantile in milliseconds. With `step = ratePer` consecutive points tile
//! the window exactly. Error-rate and latency points are omitted where there were no calls.

use crate::graph::adjusted_count;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clew_model::otlp::trace::status::StatusCode as OtlpStatus;
use clew_model::{attrs, SpanBatch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

const MINUTE_NANOS: u64 = 60_000_000_000;
const MINUTE_MS: u64 = 60_000;

/// The table's resolution, as `/api/metrics/minstep` reports it (ms).
pub const MIN_STEP_MS: u64 = MINUTE_MS;
/// Spans starting this many minutes ahead of the wall clock are still recorded (clock skew).
pub const FUTURE_MINUTES: u64 = 5;
/// Most points one series of a query may have (as Prometheus' query_range limit).
pub const MAX_POINTS: u64 = 11_000;

/// Number of latency buckets (index fits a `u8`).
pub const LATENCY_BUCKET_COUNT: usize = 256;
const BUCKETS_PER_OCTAVE: f64 = 8.0;
/// Upper bound of bucket 0, in nanoseconds (1 µs).
const BUCKET_BASE_NANOS: f64 = 1_000.0;

/// Size limits of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanTableLimits {
    /// Minutes kept (24 h by default, like the service-graph edge table).
    pub retention_minutes: u64,
    /// Distinct (service, operation, kind) series per tenant.
    pub max_series_per_tenant: usize,
    /// (series, minute) cells over all tenants; the oldest minutes are evicted above it.
    pub max_cells: usize,
}

impl Default for SpanTableLimits {
    fn default() -> Self {
        Self {
            retention_minutes: 24 * 60,
            max_series_per_tenant: 5_000,
            max_cells: 1_000_000,
        }
    }
}

/// Bucket index of a duration in nanoseconds.
pub fn latency_bucket(nanos: f64) -> u8 {
    if nanos.is_nan() || nanos <= BUCKET_BASE_NANOS {
        return 0;
    }
    let i = ((nanos / BUCKET_BASE_NANOS).log2() * BUCKETS_PER_OCTAVE).ceil();
    i.clamp(1.0, (LATENCY_BUCKET_COUNT - 1) as f64) as u8
}

/// `(lower, upper)` nanoseconds of a bucket; the last bucket has no upper bound (`INFINITY`).
pub fn latency_bucket_bounds(i: u8) -> (f64, f64) {
    let at = |k: f64| BUCKET_BASE_NANOS * (k / BUCKETS_PER_OCTAVE).exp2();
    match i as usize {
        0 => (0.0, BUCKET_BASE_NANOS),
        n if n == LATENCY_BUCKET_COUNT - 1 => (at(n as f64 - 1.0), f64::INFINITY),
        n => (at(n as f64 - 1.0), at(n as f64)),
    }
}

/// The `q` quantile (0..=1) of a dense histogram, in nanoseconds; `None` when it is empty.
pub fn quantile_nanos(hist: &[f64], q: f64) -> Option<f64> {
    let total: f64 = hist.iter().map(|w| w.max(0.0)).sum();
    if total <= 1e-9 {
        return None;
    }
    let target = q.clamp(0.0, 1.0) * total;
    let mut cum = 0.0;
    let mut last = None;
    for (i, &w) in hist.iter().enumerate() {
        let w = w.max(0.0);
        if w <= 0.0 {
            continue;
        }
        last = Some(i);
        if cum + w >= target {
            let f = ((target - cum) / w).clamp(0.0, 1.0);
            return Some(interpolate(i as u8, f));
        }
        cum += w;
    }
    // Rounding: the target is past the last bucket's cumulative weight.
    last.map(|i| interpolate(i as u8, 1.0))
}

fn interpolate(i: u8, f: f64) -> f64 {
    let (lo, hi) = latency_bucket_bounds(i);
    if lo <= 0.0 {
        hi * f
    } else if hi.is_infinite() {
        lo
    } else {
        // Log-linear inside the bucket (buckets are geometric).
        lo * (hi / lo).powf(f)
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

/// One series: service, operation (span name) and OTLP span kind (0..=5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    service: String,
    operation: String,
    kind: u8,
}

/// Sparse histogram: (bucket, weight), sorted by bucket.
#[derive(Debug, Clone, Default)]
struct SparseHist(Vec<(u8, f32)>);

impl SparseHist {
    fn add(&mut self, bucket: u8, w: f32) {
        match self.0.binary_search_by_key(&bucket, |e| e.0) {
            Ok(i) => self.0[i].1 += w,
            Err(i) => self.0.insert(i, (bucket, w)),
        }
    }
    fn merge(&mut self, other: &SparseHist) {
        for &(b, w) in &other.0 {
            self.add(b, w);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Cell {
    calls: f64,
    errors: f64,
    hist: SparseHist,
}

impl Cell {
    fn merge(&mut self, o: &Cell) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.hist.merge(&o.hist);
    }
}

#[derive(Debug, Default)]
struct TenantData {
    minutes: BTreeMap<u64, HashMap<Arc<SeriesKey>, Cell>>,
    /// Every series with data in `minutes` → the newest minute it has data in.
    series: HashMap<Arc<SeriesKey>, u64>,
}

#[derive(Debug, Default)]
struct Inner {
    tenants: HashMap<String, TenantData>,
    cells: usize,
    /// The wall-clock minute of the last retention pass.
    pruned_at: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Per-minute span metrics per tenant × service × operation × span kind (see the module docs).
#[derive(Debug)]
pub struct SpanMetricsTable {
    limits: SpanTableLimits,
    inner: Mutex<Inner>,
    dropped: Family<ReasonLabel, FloatCounter>,
    evicted: Counter,
    cells_gauge: Gauge,
}

impl Default for SpanMetricsTable {
    fn default() -> Self {
        Self::new(SpanTableLimits::default())
    }
}

/// The process-wide table shared by [`crate::ServiceGraph::new`] and [`crate::metrics_router`].
pub fn global_span_metrics_table() -> Arc<SpanMetricsTable> {
    static TABLE: OnceLock<Arc<SpanMetricsTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| Arc::new(SpanMetricsTable::default()))
        .clone()
}

/// One span kind filter of a query: a set of OTLP kinds (bit `k` = kind `k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet(pub u8);

impl KindSet {
    pub const SERVER: KindSet = KindSet(1 << 2);
    pub const ALL: KindSet = KindSet(0b11_1111);
    fn has(self, kind: u8) -> bool {
        kind < 8 && self.0 & (1 << kind) != 0
    }
}

/// What a query asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    pub services: Vec<String>,
    pub group_by_operation: bool,
    pub kinds: KindSet,
    pub end_ms: u64,
    pub lookback_ms: u64,
    pub step_ms: u64,
    pub rate_per_ms: u64,
}

/// Which value a query computes per point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Calls per second.
    Calls,
    /// Errors / calls.
    Errors,
    /// The quantile (0..=1) of latency, in milliseconds.
    Latency(f64),
}

/// One series of a query result.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub service: String,
    /// `Some` when grouped by operation.
    pub operation: Option<String>,
    /// (timestamp ms, value), oldest first.
    pub points: Vec<(u64, f64)>,
}

const KIND_NAMES: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

impl SpanMetricsTable {
    pub fn new(limits: SpanTableLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
            dropped: Family::default(),
            evicted: Counter::default(),
            cells_gauge: Gauge::default(),
        }
    }

    pub fn limits(&self) -> SpanTableLimits {
        self.limits
    }

    /// Registers the table's own health metrics (dropped spans, evicted cells, cells held).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clew_spanmetrics_table_dropped_spans",
            "Spans (weighted by adjusted count) not recorded in the Monitor's per-minute span-metrics table, by reason (series_limit, out_of_window)",
            self.dropped.clone(),
        );
        registry.register(
            "clew_spanmetrics_table_evicted_cells",
            "Per-minute span-metrics cells evicted before their retention because the table was full",
            self.evicted.clone(),
        );
        registry.register(
            "clew_spanmetrics_table_cells",
            "Per-minute span-metrics cells held (series x minute)",
            self.cells_gauge.clone(),
        );
    }

    /// Weighted spans dropped so far for `reason` (`series_limit` or `out_of_window`).
    pub fn dropped_spans(&self, reason: &'static str) -> f64 {
        self.dropped.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Cells evicted before their retention so far.
    pub fn evicted_cells(&self) -> u64 {
        self.evicted.get()
    }

    /// (series, minute) cells held.
    pub fn cells(&self) -> usize {
        self.lock().cells
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records every span of `batch` (aggregated per batch, one lock). `now_unix_nano` is the wall
    /// clock, which decides retention and what is too far in the future.
    pub fn record(&self, batch: &SpanBatch, now_unix_nano: u64) {
        let mut local: HashMap<(u64, &str, &str, u8), Cell> = HashMap::new();
        for rs in &batch.resource_spans {
            let service = attrs::service_name(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let w = adjusted_count(&span.trace_state);
                    let kind = u8::try_from(span.kind)
                        .ok()
                        .filter(|k| *k <= 5)
                        .unwrap_or(0);
                    let minute = span.start_time_unix_nano / MINUTE_NANOS;
                    let c = local
                        .entry((minute, service, span.name.as_str(), kind))
                        .or_default();
                    c.calls += w;
                    if span.status.as_ref().map(|s| s.code) == Some(OtlpStatus::Error as i32) {
                        c.errors += w;
                    }
                    let nanos = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano)
                        as f64;
                    c.hist.add(latency_bucket(nanos), w as f32);
                }
            }
        }
        if local.is_empty() {
            return;
        }
        // In key order, so which new series a full tenant refuses does not depend on hash order.
        let mut local: Vec<_> = local.into_iter().collect();
        local.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let now_minute = now_unix_nano / MINUTE_NANOS;
        let oldest = now_minute.saturating_sub(self.limits.retention_minutes.saturating_sub(1));
        let newest = now_minute + FUTURE_MINUTES;
        let (mut late, mut over) = (0.0, 0.0);
        let mut g = self.lock();
        self.prune(&mut g, now_minute);
        let inner = &mut *g;
        let tenant = inner
            .tenants
            .entry(batch.tenant.as_str().to_string())
            .or_default();
        for ((minute, service, operation, kind), cell) in local {
            if minute < oldest || minute > newest {
                late += cell.calls;
                continue;
            }
            let key = SeriesKey {
                service: service.to_string(),
                operation: operation.to_string(),
                kind,
            };
            let key = match tenant.series.get_key_value(&key) {
                Some((k, _)) => k.clone(),
                None if tenant.series.len() >= self.limits.max_series_per_tenant => {
                    over += cell.calls;
                    continue;
                }
                None => Arc::new(key),
            };
            let last = tenant.series.entry(key.clone()).or_insert(minute);
            *last = (*last).max(minute);
            let cells = tenant.minutes.entry(minute).or_default();
            match cells.get_mut(&key) {
                Some(c) => c.merge(&cell),
                None => {
                    cells.insert(key, cell);
                    inner.cells += 1;
                }
            }
        }
        self.evict(inner);
        self.cells_gauge.set(inner.cells as i64);
        drop(g);
        if late > 0.0 {
            self.dropped
                .get_or_create(&ReasonLabel {
                    reason: "out_of_window",
                })
                .inc_by(late);
        }
        if over > 0.0 {
            self.dropped
                .get_or_create(&ReasonLabel {
                    reason: "series_limit",
                })
                .inc_by(over);
        }
    }

    /// Drops minutes past the retention (once per wall-clock minute).
    fn prune(&self, g: &mut Inner, now_minute: u64) {
        if now_minute <= g.pruned_at {
            return;
        }
        g.pruned_at = now_minute;
        let oldest = now_minute.saturating_sub(self.limits.retention_minutes.saturating_sub(1));
        let mut removed = 0;
        g.tenants.retain(|_, t| {
            let keep = t.minutes.split_off(&oldest);
            removed += t.minutes.values().map(HashMap::len).sum::<usize>();
            t.minutes = keep;
            t.series.retain(|_, last| *last >= oldest);
            !t.minutes.is_empty()
        });
        g.cells -= removed;
    }

    /// Evicts the oldest minutes (over all tenants) while the table holds too many cells.
    fn evict(&self, g: &mut Inner) {
        while g.cells > self.limits.max_cells {
            let Some((name, _)) = g
                .tenants
                .iter()
                .filter_map(|(n, t)| Some((n, *t.minutes.first_key_value()?.0)))
                .min_by_key(|(_, m)| *m)
                .map(|(n, m)| (n.clone(), m))
            else {
                break;
            };
            let Some(t) = g.tenants.get_mut(&name) else {
                break;
            };
            let n = t.minutes.pop_first().map(|(_, m)| m.len()).unwrap_or(0);
            g.cells -= n;
            self.evicted.inc_by(n as u64);
            match t.minutes.first_key_value() {
                Some((&first, _)) => t.series.retain(|_, last| *last >= first),
                None => {
                    g.tenants.remove(&name);
                }
            }
        }
    }

    /// Services of `tenant` with data in minutes overlapping `[start_ms, end_ms]` → the span kinds
    /// seen (bit set).
    pub fn services(&self, tenant: &str, start_ms: u64, end_ms: u64) -> BTreeMap<String, KindSet> {
        let (lo, hi) = (start_ms / MINUTE_MS, end_ms / MINUTE_MS);
        let mut out: BTreeMap<String, KindSet> = BTreeMap::new();
        let g = self.lock();
        let Some(t) = g.tenants.get(tenant) else {
            return out;
        };
        for cells in t.minutes.range(lo..=hi).map(|(_, c)| c) {
            for k in cells.keys() {
                match out.get_mut(&k.service) {
                    Some(set) => set.0 |= 1 << k.kind,
                    None => {
                        out.insert(k.service.clone(), KindSet(1 << k.kind));
                    }
                }
            }
        }
        out
    }

    /// Runs a query (see the module docs for the semantics).
    pub fn query(&self, tenant: &str, q: &MetricsQuery, measure: Measure) -> Vec<MetricSeries> {
        let step = q.step_ms.max(MIN_STEP_MS);
        let start = q.end_ms.saturating_sub(q.lookback_ms);
        // Point times, oldest first.
        let mut times = Vec::new();
        let mut t = q.end_ms;
        while t > start && (times.len() as u64) < MAX_POINTS {
            times.push(t);
            if t < step {
                break;
            }
            t -= step;
        }
        times.reverse();
        let Some(&first_t) = times.first() else {
            return Vec::new();
        };
        let w = q.rate_per_ms.max(1).div_ceil(MINUTE_MS);
        let lo = (first_t / MINUTE_MS).saturating_sub(w - 1);
        let hi = q.end_ms / MINUTE_MS;
        let services: BTreeSet<&str> = q.services.iter().map(String::as_str).collect();

        // Copy the matching cells out, aggregated per group and minute.
        type Group = (String, Option<String>);
        let mut groups: BTreeMap<Group, Vec<(u64, Cell)>> = BTreeMap::new();
        {
            let g = self.lock();
            if let Some(td) = g.tenants.get(tenant) {
                for (&minute, cells) in td.minutes.range(lo..=hi) {
                    for (k, c) in cells {
                        if !services.contains(k.service.as_str()) || !q.kinds.has(k.kind) {
                            continue;
                        }
                        let key = (
                            k.service.clone(),
                            q.group_by_operation.then(|| k.operation.clone()),
                        );
                        let v = groups.entry(key).or_default();
                        match v.last_mut() {
                            Some((m, acc)) if *m == minute => {
                                acc.calls += c.calls;
                                acc.errors += c.errors;
                                if matches!(measure, Measure::Latency(_)) {
                                    acc.hist.merge(&c.hist);
                                }
                            }
                            _ => {
                                let mut cell = Cell {
                                    calls: c.calls,
                                    errors: c.errors,
                                    hist: SparseHist::default(),
                                };
                                if matches!(measure, Measure::Latency(_)) {
                                    cell.hist = c.hist.clone();
                                }
                                v.push((minute, cell));
                            }
                        }
                    }
                }
            }
        }

        let secs = (w * 60) as f64;
        let mut out = Vec::with_capacity(groups.len());
        for ((service, operation), minutes) in groups {
            // Sliding window over the minutes: [a, b] grows monotonically with the points.
            let (mut head, mut tail) = (0usize, 0usize);
            let (mut calls, mut errors) = (0.0f64, 0.0f64);
            let mut hist = vec![0.0f64; LATENCY_BUCKET_COUNT];
            let mut points = Vec::with_capacity(times.len());
            for &t in &times {
                let b = t / MINUTE_MS;
                let a = b.saturating_sub(w - 1);
                while head < minutes.len() && minutes[head].0 <= b {
                    let c = &minutes[head].1;
                    calls += c.calls;
                    errors += c.errors;
                    for &(i, x) in &c.hist.0 {
                        hist[i as usize] += f64::from(x);
                    }
                    head += 1;
                }
                while tail < head && minutes[tail].0 < a {
                    let c = &minutes[tail].1;
                    calls -= c.calls;
                    errors -= c.errors;
                    for &(i, x) in &c.hist.0 {
                        hist[i as usize] -= f64::from(x);
                    }
                    tail += 1;
                }
                if tail == head {
                    // Empty window: reset the running sums (no rounding residue).
                    calls = 0.0;
                    errors = 0.0;
                    hist.iter_mut().for_each(|x| *x = 0.0);
                }
                let has_calls = tail < head && calls > 1e-9;
                match measure {
                    Measure::Calls => points.push((t, calls.max(0.0) / secs)),
                    Measure::Errors if has_calls => {
                        points.push((t, (errors / calls).clamp(0.0, 1.0)))
                    }
                    Measure::Latency(qt) if has_calls => {
                        if let Some(ns) = quantile_nanos(&hist, qt) {
                            points.push((t, ns / 1e6));
                        }
                    }
                    _ => {}
                }
            }
            out.push(MetricSeries {
                service,
                operation,
                points,
            });
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: Jaeger's metrics API.

/// A parameter problem, rendered as Jaeger does (`unable to parse param 'x': ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: &'static str,
    pub msg: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unable to parse param '{}': {}", self.param, self.msg)
    }
}

fn perr(param: &'static str, msg: impl Into<String>) -> ParamError {
    ParamError {
        param,
        msg: msg.into(),
    }
}

const DEFAULT_LOOKBACK_MS: u64 = 3_600_000;
const DEFAULT_RATE_PER_MS: u64 = 600_000;
const MAX_RATE_PER_MS: u64 = 24 * 3_600_000;

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Go's `strconv.ParseBool`, as Jaeger parses `groupByOperation`.
fn parse_bool(param: &'static str, v: &str) -> Result<bool, ParamError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(perr(
            param,
            format!("strconv.ParseBool: parsing \"{v}\": invalid syntax"),
        )),
    }
}

fn parse_ms(param: &'static str, v: Option<&str>, default: u64) -> Result<u64, ParamError> {
    match v {
        None => Ok(default),
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            perr(
                param,
                format!("expected a non-negative integer of milliseconds, got \"{v}\""),
            )
        }),
    }
}

/// A span kind as the Jaeger UI sends it (`server`) or as the proto names it (`SPAN_KIND_SERVER`).
pub fn parse_span_kind(v: &str) -> Option<u8> {
    let l = v.trim().to_ascii_lowercase();
    let l = l.strip_prefix("span_kind_").unwrap_or(&l);
    KIND_NAMES.iter().position(|k| *k == l).map(|i| i as u8)
}

fn parse_kinds(pairs: &[(String, String)], default: KindSet) -> Result<KindSet, ParamError> {
    let mut set = 0u8;
    for (_, v) in pairs.iter().filter(|(k, _)| k == "spanKind") {
        let k = parse_span_kind(v).ok_or_else(|| {
            perr(
                "spanKind",
                format!("unsupported span kind: '{v}' (expected one of unspecified, internal, server, client, producer, consumer)"),
            )
        })?;
        set |= 1 << k;
    }
    Ok(if set == 0 { default } else { KindSet(set) })
}

/// Parses the query of `/api/metrics/{calls,errors,latencies}` (Jaeger's parameter names).
pub fn parse_metrics_query(
    pairs: &[(String, String)],
    now_ms: u64,
) -> Result<MetricsQuery, ParamError> {
    let services: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "service")
        .map(|(_, v)| v.clone())
        .collect();
    if services.is_empty() {
        return Err(perr("service", "please provide at least one service name"));
    }
    if services.iter().any(|s| s.trim().is_empty()) {
        return Err(perr("service", "empty service name"));
    }
    let group_by_operation = match first(pairs, "groupByOperation") {
        None => false,
        Some(v) => parse_bool("groupByOperation", v)?,
    };
    let kinds = parse_kinds(pairs, KindSet::SERVER)?;
    let end_ms = parse_ms("endTs", first(pairs, "endTs"), now_ms)?;
    let lookback_ms = parse_ms("lookback", first(pairs, "lookback"), DEFAULT_LOOKBACK_MS)?;
    if lookback_ms == 0 {
        return Err(perr("lookback", "must be positive"));
    }
    let step_ms = parse_ms("step", first(pairs, "step"), MIN_STEP_MS)?;
    if step_ms == 0 {
        return Err(perr("step", "must be positive"));
    }
    let step_ms = step_ms.max(MIN_STEP_MS);
    if lookback_ms.div_ceil(step_ms) > MAX_POINTS {
        return Err(perr(
            "step",
            format!("too small for the lookback: at most {MAX_POINTS} points per series"),
        ));
    }
    let rate_per_ms = parse_ms("ratePer", first(pairs, "ratePer"), DEFAULT_RATE_PER_MS)?;
    if rate_per_ms == 0 {
        return Err(perr("ratePer", "must be positive"));
    }
    if rate_per_ms > MAX_RATE_PER_MS {
        return Err(perr(
            "ratePer",
            format!("at most {MAX_RATE_PER_MS} ms (24 h, the table's retention)"),
        ));
    }
    Ok(MetricsQuery {
        services,
        group_by_operation,
        kinds,
        end_ms,
        lookback_ms,
        step_ms,
        rate_per_ms,
    })
}

/// `quantile` of `/api/metrics/latencies`: required, 0..=1.
pub fn parse_quantile(pairs: &[(String, String)]) -> Result<f64, ParamError> {
    let v =
        first(pairs, "quantile").ok_or_else(|| perr("quantile", "required (0 to 1, e.g. 0.95)"))?;
    let q = v.trim().parse::<f64>().map_err(|_| {
        perr(
            "quantile",
            format!("expected a number from 0 to 1, got \"{v}\""),
        )
    })?;
    if !(0.0..=1.0).contains(&q) {
        return Err(perr("quantile", format!("must be from 0 to 1, got {q}")));
    }
    Ok(q)
}

#[derive(Clone)]
struct MetricsState {
    table: Arc<SpanMetricsTable>,
    tenant_header: Arc<str>,
}

/// An error in Jaeger's envelope: `{"data": null, ..., "errors": [{"code", "msg"}]}`.
struct JaegerError(StatusCode, String);

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": self.0.as_u16(), "msg": self.1}],
        });
        (self.0, Json(body)).into_response()
    }
}

impl From<ParamError> for JaegerError {
    fn from(e: ParamError) -> Self {
        JaegerError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

fn envelope(data: Value, total: usize) -> Json<Value> {
    Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
}

/// `/api/metrics/...` on `table`; tenant from `tenant_header`.
pub(crate) fn router(tenant_header: &str, table: Arc<SpanMetricsTable>) -> Router {
    Router::new()
        .route("/api/metrics/calls", get(calls))
        .route("/api/metrics/errors", get(errors))
        .route("/api/metrics/latencies", get(latencies))
        .route("/api/metrics/minstep", get(minstep))
        .route("/api/metrics/services", get(services))
        .with_state(MetricsState {
            table,
            tenant_header: Arc::from(tenant_header),
        })
}

type Pairs = Query<Vec<(String, String)>>;

fn now_ms() -> u64 {
    crate::now_unix_nanos() / 1_000_000
}

fn tenant(st: &MetricsState, headers: &HeaderMap) -> Result<clew_model::Tenant, JaegerError> {
    crate::http::tenant_from_headers(headers, &st.tenant_header)
        .map_err(|e| JaegerError(StatusCode::BAD_REQUEST, e))
}

fn family(measure: Measure, grouped: bool, series: Vec<MetricSeries>) -> Value {
    let (name, what) = match measure {
        Measure::Calls => ("call_rate", "calls/sec".to_string()),
        Measure::Errors => (
            "error_rate",
            "error rate, computed as a fraction of errors/sec over calls/sec".to_string(),
        ),
        Measure::Latency(q) => ("latencies", format!("{q}th quantile latency")),
    };
    let (prefix, by) = if grouped {
        ("service_operation_", "service & operation")
    } else {
        ("service_", "service")
    };
    let metrics: Vec<Value> = series
        .into_iter()
        .map(|s| {
            let mut labels = Vec::new();
            if let Some(op) = s.operation {
                labels.push(json!({"name": "operation", "value": op}));
            }
            labels.push(json!({"name": "service_name", "value": s.service}));
            let points: Vec<Value> = s
                .points
                .into_iter()
                .map(|(t, v)| {
                    let ts = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t);
                    json!({
                        "gaugeValue": {"doubleValue": v},
                        "timestamp": humantime::format_rfc3339_millis(ts).to_string(),
                    })
                })
                .collect();
            json!({"labels": labels, "metricPoints": points})
        })
        .collect();
    json!({
        "name": format!("{prefix}{name}"),
        "type": "GAUGE",
        "help": format!("{what}, grouped by {by}"),
        "metrics": metrics,
    })
}

async fn run(
    st: &MetricsState,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    measure: Measure,
) -> Result<Response, JaegerError> {
    let tenant = tenant(st, headers)?;
    let q = parse_metrics_query(pairs, now_ms())?;
    let series = st.table.query(tenant.as_str(), &q, measure);
    Ok(Json(family(measure, q.group_by_operation, series)).into_response())
}

async fn calls(
    State(st): State<MetricsState>,
    headers: HeaderMap,
    Query(p): Pairs,
) -> Result<Response, JaegerError> {
    run(&st, &headers, &p, Measure::Calls).await
}

async fn errors(
    State(st): State<MetricsState>,
    headers: HeaderMap,
    Query(p): Pairs,
) -> Result<Response, JaegerError> {
    run(&st, &headers, &p, Measure::Errors).await
}

async fn latencies(
    State(st): State<MetricsState>,
    headers: HeaderMap,
    Query(p): Pairs,
) -> Result<Response, JaegerError> {
    let q = parse_quantile(&p)?;
    run(&st, &headers, &p, Measure::Latency(q)).await
}

async fn minstep() -> Json<Value> {
    envelope(json!(MIN_STEP_MS), 0)
}

/// Services with series in the window (`endTs`, `lookback` as above; optional `spanKind`
/// filters), with the span kinds seen: `{"data": [{"name", "spanKinds": ["server", ...]}]}`.
async fn services(
    State(st): State<MetricsState>,
    headers: HeaderMap,
    Query(p): Pairs,
) -> Result<Response, JaegerError> {
    let tenant = tenant(&st, &headers)?;
    let end = parse_ms("endTs", first(&p, "endTs"), now_ms())?;
    let lookback = parse_ms("lookback", first(&p, "lookback"), DEFAULT_LOOKBACK_MS)?;
    let kinds = parse_kinds(&p, KindSet::ALL)?;
    let data: Vec<Value> = st
        .table
        .services(tenant.as_str(), end.saturating_sub(lookback), end)
        .into_iter()
        .filter(|(_, k)| k.0 & kinds.0 != 0)
        .map(|(name, k)| {
            let kinds: Vec<&str> = (0..6u8)
                .filter(|i| k.has(*i))
                .map(|i| KIND_NAMES[i as usize])
                .collect();
            json!({"name": name, "spanKinds": kinds})
        })
        .collect();
    let n = data.len();
    Ok(envelope(Value::Array(data), n).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use clew_model::otlp::common::{any_value, AnyValue, KeyValue};
    use clew_model::otlp::resource::Resource;
    use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status};
    use clew_model::Tenant;
    use tower::ServiceExt;

    /// A fixed "now": 2024-01-01T00:00:00Z plus 30 minutes, in ns.
    const NOW: u64 = 1_704_067_200_000_000_000 + 30 * MINUTE_NANOS;
    const MS: u64 = 1_000_000;

    fn span(name: &str, kind: i32, start: u64, dur_ns: u64, error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: name.into(),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur_ns,
            status: error.then(|| Status {
                code: OtlpStatus::Error as i32,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    fn batch(tenant: &str, service: &str, spans: Vec<Span>) -> SpanBatch {
        SpanBatch {
            tenant: Tenant::new(tenant).unwrap(),
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            metadata: Default::default(),
        }
    }

    /// Minute m (relative to NOW's minute), plus `sec` seconds.
    fn at(m: i64, sec: u64) -> u64 {
        let base = NOW / MINUTE_NANOS * MINUTE_NANOS;
        (base as i64 + m * MINUTE_NANOS as i64) as u64 + sec * 1_000_000_000
    }

    fn q(
        services: &[&str],
        grouped: bool,
        end: u64,
        lookback_min: u64,
        step_min: u64,
        rate_min: u64,
    ) -> MetricsQuery {
        MetricsQuery {
            services: services.iter().map(|s| s.to_string()).collect(),
            group_by_operation: grouped,
            kinds: KindSet::SERVER,
            end_ms: end / MS,
            lookback_ms: lookback_min * MINUTE_MS,
            step_ms: step_min * MINUTE_MS,
            rate_per_ms: rate_min * MINUTE_MS,
        }
    }

    /// Service A: GET /x 10 calls (2 errors) in minute -1, POST /y 5 calls in minute 0; a client
    /// span that the default (server) kind filter leaves out; service B in another tenant.
    fn fixture() -> SpanMetricsTable {
        let t = SpanMetricsTable::default();
        let mut spans: Vec<Span> = (0..10)
            .map(|i| span("GET /x", 2, at(-1, i), (i + 1) * 10 * MS, i < 2))
            .collect();
        spans.extend((0..5).map(|i| span("POST /y", 2, at(0, i), 5 * MS, false)));
        spans.push(span("GET downstream", 3, at(0, 1), MS, true));
        t.record(&batch("t1", "A", spans), NOW);
        t.record(
            &batch("t2", "A", vec![span("GET /x", 2, at(0, 0), MS, false)]),
            NOW,
        );
        t
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn calls_and_errors_per_minute_are_exact() {
        let t = fixture();
        let end = at(0, 59);
        let calls = t.query("t1", &q(&["A"], true, end, 2, 1, 1), Measure::Calls);
        assert_eq!(calls.len(), 2, "{calls:?}");
        let x = &calls[0];
        assert_eq!(x.operation.as_deref(), Some("GET /x"));
        assert_eq!(x.points.len(), 2);
        assert_eq!(x.points[0].0, (end - MINUTE_NANOS) / MS);
        assert_eq!(x.points[1].0, end / MS);
        assert!(close(x.points[0].1 * 60.0, 10.0), "{x:?}");
        assert!(close(x.points[1].1, 0.0));
        let y = &calls[1];
        assert_eq!(y.operation.as_deref(), Some("POST /y"));
        assert!(close(y.points[0].1, 0.0));
        assert!(close(y.points[1].1 * 60.0, 5.0));

        // Not grouped: one series for the service.
        let all = t.query("t1", &q(&["A"], false, end, 2, 1, 1), Measure::Calls);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].operation, None);
        assert!(close(all[0].points[0].1 * 60.0, 10.0));
        assert!(close(all[0].points[1].1 * 60.0, 5.0));

        // Error rate: only where there were calls.
        let errs = t.query("t1", &q(&["A"], true, end, 2, 1, 1), Measure::Errors);
        assert_eq!(errs[0].points, vec![((end - MINUTE_NANOS) / MS, 0.2)]);
        assert_eq!(errs[1].points, vec![(end / MS, 0.0)]);

        // One point over the whole window (step = ratePer = lookback).
        let one = t.query("t1", &q(&["A"], false, end, 10, 10, 10), Measure::Errors);
        assert_eq!(one[0].points.len(), 1);
        assert!(close(one[0].points[0].1, 2.0 / 15.0));
        let one = t.query("t1", &q(&["A"], false, end, 10, 10, 10), Measure::Calls);
        assert!(close(one[0].points[0].1 * 600.0, 15.0));

        // Client kind: only the client span (an error).
        let mut cq = q(&["A"], true, end, 2, 1, 1);
        cq.kinds = KindSet(1 << 3);
        let c = t.query("t1", &cq, Measure::Errors);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].operation.as_deref(), Some("GET downstream"));
        assert_eq!(c[0].points, vec![(end / MS, 1.0)]);

        // Tenants are separate; unknown services and tenants are empty.
        let other = t.query("t2", &q(&["A"], false, end, 2, 1, 1), Measure::Calls);
        assert!(close(other[0].points[1].1 * 60.0, 1.0));
        assert!(t
            .query("t1", &q(&["B"], false, end, 2, 1, 1), Measure::Calls)
            .is_empty());
        assert!(t
            .query("nobody", &q(&["A"], false, end, 2, 1, 1), Measure::Calls)
            .is_empty());

        let svcs = t.services("t1", (end - 10 * MINUTE_NANOS) / MS, end / MS);
        assert_eq!(svcs.len(), 1);
        assert_eq!(svcs["A"], KindSet((1 << 2) | (1 << 3)));
    }

    #[test]
    fn latency_quantiles_within_a_bucket() {
        let t = SpanMetricsTable::default();
        // 1..=1000 ms, one span each.
        let spans: Vec<Span> = (1..=1000u64)
            .map(|i| span("op", 2, at(0, i % 60), i * MS, false))
            .collect();
        t.record(&batch("t", "S", spans), NOW);
        let ratio = (1.0f64 / 8.0).exp2();
        for (qt, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let r = t.query(
                "t",
                &q(&["S"], false, at(0, 59), 1, 1, 1),
                Measure::Latency(qt),
            );
            let v = r[0].points[0].1;
            assert!(
                v / exact < ratio && exact / v < ratio,
                "p{qt}: {v} vs {exact}"
            );
            // Inside the data (buckets full), much closer than one bucket; at the edge of the
            // data (p99 here: its bucket is only partly filled) up to one bucket.
            if qt < 0.99 {
                assert!((v - exact).abs() / exact < 0.03, "p{qt}: {v} vs {exact}");
            }
        }
        // Bucket arithmetic.
        assert_eq!(latency_bucket(0.0), 0);
        assert_eq!(latency_bucket(1_000.0), 0);
        assert_eq!(latency_bucket(1_001.0), 1);
        assert_eq!(latency_bucket(2_000.0), 8);
        assert_eq!(latency_bucket(1e15), 255);
        for i in 1..255u8 {
            let (lo, hi) = latency_bucket_bounds(i);
            assert_eq!(latency_bucket((lo + hi) / 2.0), i);
        }
        assert_eq!(quantile_nanos(&[0.0; 4], 0.5), None);
    }

    #[test]
    fn head_sampled_spans_count_for_their_adjusted_count() {
        let t = SpanMetricsTable::default();
        let mut s1 = span("op", 2, at(0, 1), MS, true);
        s1.trace_state = "ot=th:8".into(); // kept at 50 % → stands for 2
        let s2 = span("op", 2, at(0, 2), MS, false);
        t.record(&batch("t", "S", vec![s1, s2]), NOW);
        let end = at(0, 59);
        let c = t.query("t", &q(&["S"], false, end, 1, 1, 1), Measure::Calls);
        assert!(close(c[0].points[0].1 * 60.0, 3.0));
        let e = t.query("t", &q(&["S"], false, end, 1, 1, 1), Measure::Errors);
        assert!(close(e[0].points[0].1, 2.0 / 3.0));
    }

    #[test]
    fn bounds_series_cells_and_retention() {
        let t = SpanMetricsTable::new(SpanTableLimits {
            retention_minutes: 60,
            max_series_per_tenant: 3,
            max_cells: 5,
        });
        let spans: Vec<Span> = (0..4)
            .map(|i| span(&format!("op{i}"), 2, at(0, i), MS, false))
            .collect();
        t.record(&batch("t", "S", spans), NOW);
        assert_eq!(t.dropped_spans("series_limit"), 1.0);
        assert_eq!(t.cells(), 3);
        // Another tenant has its own series budget.
        t.record(
            &batch("u", "S", vec![span("opX", 2, at(0, 1), MS, false)]),
            NOW,
        );
        assert_eq!(t.dropped_spans("series_limit"), 1.0);
        // Too old and too far in the future are dropped.
        t.record(
            &batch(
                "t",
                "S",
                vec![
                    span("op0", 2, at(-60, 0), MS, false),
                    span("op0", 2, at(6, 0), MS, false),
                    span("op0", 2, at(-59, 0), MS, false),
                ],
            ),
            NOW,
        );
        assert_eq!(t.dropped_spans("out_of_window"), 2.0);
        // 3 + 1 + 1 = 5 cells: at the limit. One more minute evicts the oldest (minute -59).
        assert_eq!(t.cells(), 5);
        t.record(
            &batch("t", "S", vec![span("op0", 2, at(1, 0), MS, false)]),
            NOW,
        );
        assert_eq!(t.cells(), 5);
        assert_eq!(t.evicted_cells(), 1);
        let r = t.query("t", &q(&["S"], true, at(1, 59), 61, 1, 1), Measure::Calls);
        let total: f64 = r.iter().flat_map(|s| &s.points).map(|p| p.1 * 60.0).sum();
        assert!(close(total, 4.0), "{r:?}");
        // Retention: an hour later everything recorded now is gone, and the series too.
        let later = NOW + 62 * MINUTE_NANOS;
        let fresh: Vec<Span> = (0..3)
            .map(|i| span(&format!("new{i}"), 2, later + i * 1_000_000_000, MS, false))
            .collect();
        t.record(&batch("t", "S", fresh), later);
        assert_eq!(
            t.dropped_spans("series_limit"),
            1.0,
            "old series were forgotten"
        );
        assert_eq!(t.cells(), 3);
        let svcs = t.services("u", 0, later / MS);
        assert!(svcs.is_empty(), "tenant u expired: {svcs:?}");
    }

    fn pairs(qs: &str) -> Vec<(String, String)> {
        qs.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn bad(qs: &str) -> ParamError {
        match parse_metrics_query(&pairs(qs), 1_000_000_000) {
            Err(e) => e,
            Ok(q) => panic!("{qs}: expected an error, got {q:?}"),
        }
    }

    #[test]
    fn parameters() {
        let q = parse_metrics_query(
            &pairs("service=a&service=b&groupByOperation=true&endTs=5000000&lookback=600000&step=60000&ratePer=120000&spanKind=server&spanKind=SPAN_KIND_CLIENT"),
            1,
        )
        .unwrap();
        assert_eq!(
            q,
            MetricsQuery {
                services: vec!["a".into(), "b".into()],
                group_by_operation: true,
                kinds: KindSet((1 << 2) | (1 << 3)),
                end_ms: 5_000_000,
                lookback_ms: 600_000,
                step_ms: 60_000,
                rate_per_ms: 120_000,
            }
        );
        let d = parse_metrics_query(&pairs("service=a"), 7_000_000).unwrap();
        assert_eq!(d.end_ms, 7_000_000);
        assert_eq!(d.lookback_ms, 3_600_000);
        assert_eq!(d.step_ms, 60_000);
        assert_eq!(d.rate_per_ms, 600_000);
        assert_eq!(d.kinds, KindSet::SERVER);
        assert!(!d.group_by_operation);
        // A step below the table's resolution is raised to it.
        assert_eq!(
            parse_metrics_query(&pairs("service=a&step=5000"), 1)
                .unwrap()
                .step_ms,
            60_000
        );

        assert_eq!(bad("").param, "service");
        assert_eq!(bad("service=").param, "service");
        assert_eq!(
            bad("service=a&groupByOperation=yes").param,
            "groupByOperation"
        );
        assert_eq!(bad("service=a&spanKind=sideways").param, "spanKind");
        assert_eq!(bad("service=a&endTs=now").param, "endTs");
        assert_eq!(bad("service=a&lookback=-1").param, "lookback");
        assert_eq!(bad("service=a&lookback=0").param, "lookback");
        assert_eq!(bad("service=a&step=0").param, "step");
        assert_eq!(
            bad("service=a&lookback=8640000000&step=60000").param,
            "step"
        );
        assert_eq!(bad("service=a&ratePer=1m").param, "ratePer");
        assert_eq!(bad("service=a&ratePer=90000000").param, "ratePer");
        assert!(bad("service=a&step=x")
            .to_string()
            .starts_with("unable to parse param 'step'"));
        assert_eq!(parse_quantile(&pairs("quantile=0.95")), Ok(0.95));
        assert_eq!(parse_quantile(&pairs("")).unwrap_err().param, "quantile");
        assert_eq!(
            parse_quantile(&pairs("quantile=1.5")).unwrap_err().param,
            "quantile"
        );
        assert_eq!(
            parse_quantile(&pairs("quantile=p95")).unwrap_err().param,
            "quantile"
        );
        assert_eq!(parse_span_kind("Consumer"), Some(5));
        assert_eq!(parse_span_kind("SPAN_KIND_UNSPECIFIED"), Some(0));
    }

    async fn get(app: &Router, uri: &str, tenant: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().uri(uri);
        if let Some(t) = tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn http_api_in_jaegers_shape() {
        let table = Arc::new(SpanMetricsTable::default());
        let now = crate::now_unix_nanos();
        let start = now / MINUTE_NANOS * MINUTE_NANOS;
        let spans: Vec<Span> = (0..10)
            .map(|i| span("GET /x", 2, start + i, 10 * MS, i < 2))
            .collect();
        table.record(&batch("acme", "A", spans), now);
        let app = router("X-Scope-OrgID", table);
        let end = now / MS;
        let base = format!("service=A&endTs={end}&lookback=60000&step=60000&ratePer=60000");

        let (st, v) = get(
            &app,
            &format!("/api/metrics/calls?{base}&groupByOperation=true"),
            Some("acme"),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "service_operation_call_rate");
        assert_eq!(v["type"], "GAUGE");
        assert_eq!(v["help"], "calls/sec, grouped by service & operation");
        let m = &v["metrics"][0];
        assert_eq!(
            m["labels"],
            json!([{"name": "operation", "value": "GET /x"}, {"name": "service_name", "value": "A"}])
        );
        let p = &m["metricPoints"][0];
        assert!(
            close(
                p["gaugeValue"]["doubleValue"].as_f64().unwrap() * 60.0,
                10.0
            ),
            "{v}"
        );
        let ts = p["timestamp"].as_str().unwrap();
        let parsed = humantime::parse_rfc3339(ts).unwrap();
        assert_eq!(
            parsed
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            end
        );

        let (_, v) = get(&app, &format!("/api/metrics/errors?{base}"), Some("acme")).await;
        assert_eq!(v["name"], "service_error_rate");
        assert_eq!(
            v["metrics"][0]["labels"],
            json!([{"name": "service_name", "value": "A"}])
        );
        assert!(close(
            v["metrics"][0]["metricPoints"][0]["gaugeValue"]["doubleValue"]
                .as_f64()
                .unwrap(),
            0.2
        ));

        let (_, v) = get(
            &app,
            &format!("/api/metrics/latencies?{base}&quantile=0.5"),
            Some("acme"),
        )
        .await;
        assert_eq!(v["name"], "service_latencies");
        assert_eq!(v["help"], "0.5th quantile latency, grouped by service");
        let ms = v["metrics"][0]["metricPoints"][0]["gaugeValue"]["doubleValue"]
            .as_f64()
            .unwrap();
        assert!((9.0..=11.0).contains(&ms), "{ms}");

        // Other tenant (default): nothing.
        let (st, v) = get(&app, &format!("/api/metrics/calls?{base}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["metrics"], json!([]));

        let (st, v) = get(&app, "/api/metrics/minstep", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["data"], 60_000);

        let (_, v) = get(
            &app,
            &format!("/api/metrics/services?endTs={end}&lookback=600000"),
            Some("acme"),
        )
        .await;
        assert_eq!(v["data"], json!([{"name": "A", "spanKinds": ["server"]}]));
        assert_eq!(v["total"], 1);

        // Errors: Jaeger's envelope, status 400, naming the parameter.
        for (uri, param) in [
            ("/api/metrics/calls?lookback=5".to_string(), "service"),
            (format!("/api/metrics/latencies?{base}"), "quantile"),
            (
                format!("/api/metrics/errors?{base}&spanKind=diagonal"),
                "spanKind",
            ),
            (
                format!("/api/metrics/calls?{base}&groupByOperation=maybe"),
                "groupByOperation",
            ),
        ] {
            let (st, v) = get(&app, &uri, Some("acme")).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(v["errors"][0]["code"], 400);
            let msg = v["errors"][0]["msg"].as_str().unwrap();
            assert!(msg.contains(&format!("'{param}'")), "{uri}: {msg}");
        }
        let (st, v) = get(&app, &format!("/api/metrics/calls?{base}"), Some("../x")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(v["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("X-Scope-OrgID"));
    }
}
