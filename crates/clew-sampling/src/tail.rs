//! Tail-based sampling with bounded state.
//!
//! * **Storage.** A buffered trace is its spans as encoded protobuf — the bytes of an
//!   `ExportTraceServiceRequest` holding only that trace's spans (with their resource and scope) —
//!   plus a few summary numbers. Policies run on the decoded trace once, at decision time.
//! * **Sharding.** Traces are hashed to one of [`NUM_PARTITIONS`] fixed virtual partitions; each
//!   shard (N = cores by default) owns the partitions `p ≡ shard (mod N)` and has its own lock,
//!   buffer, decision caches and timer task. There is no global lock or single decision loop.
//! * **When decided.** `decision_wait` after the first span; or `root_send_delay` after the root
//!   span arrived; or at once when the trace passes `max_spans_per_trace` / `max_bytes_per_trace`;
//!   or early — oldest first — when the shard's share of `max_buffered_bytes`/`num_traces` is used
//!   up; or on shutdown. Every early decision is counted by reason. Nothing is dropped undecided.
//! * **Late spans.** A decided trace's id stays in the kept cache (exact) or the dropped filter
//!   (Bloom); late spans follow the original decision. Late spans of kept traces are forwarded with
//!   the client's request (so that ack still means durable for them).
//! * **Durability.** With a [`SamplerLog`] attached ([`TailCore::attach_log`]), the groups a batch
//!   adds to the buffer are appended to the log under the shard lock and the caller acknowledges
//!   only once they are fsynced ([`TailSampler::consume_logged`]; the binary wires it through
//!   [`crate::durable`]); decisions are logged when final, and [`TailCore::restore`] rebuilds the
//!   buffer from a replayed log after a crash. [`Processor::process`] (synchronous) does not wait
//!   for the log: it is the in-memory mode for library use and benchmarks.
//! * **Handoff.** [`TailCore::export_partition`]/[`TailCore::import_partition`] move one
//!   partition's buffered traces and decision caches to another instance (scale-out, see
//!   ARCHITECTURE.md "Sampling and scale-out").

use crate::cache::{KeptCache, RotatingBloom, TraceKey};
use crate::policy::{self, Policy, PolicyConfig, TraceView};
use crate::sampler_log::{
    unix_ms, Decision, LogMetrics, Replayed, SamplerLog, SpansPayload, Ticket,
};
use clew_encryption::WalKey;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::trace::ResourceSpans;
use clew_model::otlp::Message;
use clew_model::{SinkError, SpanBatch, SpanSink, Tenant};
use clew_pipeline::{ProcessOutcome, Processor};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fixed number of virtual partitions (trace-id hash ranges); the unit of handoff between nodes.
pub const NUM_PARTITIONS: u16 = 256;

/// Attribute written on every kept span: the policy that decided.
pub const POLICY_ATTRIBUTE: &str = "sampling.policy";

/// `tail_sampling` processor config (OTel Collector shape plus Clew's bounds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    #[serde(deserialize_with = "de_duration")]
    pub decision_wait: Duration,
    /// After the root span arrives, decide this much later (0 disables early decisions).
    #[serde(deserialize_with = "de_duration")]
    pub root_send_delay: Duration,
    /// Most traces buffered at once; when reached the oldest are decided early.
    pub num_traces: usize,
    /// Most bytes (encoded spans) buffered at once; when reached the oldest are decided early.
    pub max_buffered_mib: usize,
    /// A trace with more spans than this is decided at once; later spans follow the decision.
    pub max_spans_per_trace: u32,
    pub max_bytes_per_trace_mib: usize,
    /// Shards (independent locks and timers); 0 = the number of cores.
    pub num_shards: usize,
    pub decision_cache: DecisionCacheConfig,
    pub policies: Vec<PolicyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    pub sampled_cache_size: usize,
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 1_000_000,
        }
    }
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(30),
            root_send_delay: Duration::from_secs(2),
            num_traces: 1_000_000,
            max_buffered_mib: 1024,
            max_spans_per_trace: 10_000,
            max_bytes_per_trace_mib: 16,
            num_shards: 0,
            decision_cache: DecisionCacheConfig::default(),
            policies: Vec::new(),
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"30s\", \"500ms\""
        ))
    })
}

impl TailSamplingConfig {
    /// Validates and compiles the policies. Errors are `(key relative to the processor, message)`.
    pub fn compile(&self) -> Result<Vec<Policy>, policy::ConfigError> {
        if self.policies.is_empty() {
            return Err((
                "policies".into(),
                "no policies: every trace would be dropped (fix: add at least one, e.g. `- {name: all, type: always_sample}`)".into(),
            ));
        }
        if self.decision_wait.is_zero() {
            return Err((
                "decision_wait".into(),
                "must be above 0 (fix: e.g. 10s)".into(),
            ));
        }
        if self.num_traces == 0 || self.max_buffered_mib == 0 {
            return Err((
                "num_traces".into(),
                "num_traces and max_buffered_mib must be at least 1 (fix: e.g. 1000000 and 1024)"
                    .into(),
            ));
        }
        if self.max_spans_per_trace == 0 || self.max_bytes_per_trace_mib == 0 {
            return Err((
                "max_spans_per_trace".into(),
                "max_spans_per_trace and max_bytes_per_trace_mib must be at least 1 (fix: e.g. 10000 and 16)".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            if !names.insert(p.name.clone()) {
                return Err((
                    format!("policies[{i}].name"),
                    format!(
                        "policy name {:?} is used twice (fix: give each policy its own name)",
                        p.name
                    ),
                ));
            }
            out.push(Policy::compile(p, &format!("policies[{i}]"))?);
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    processor: String,
    policy: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessorLabel {
    processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    processor: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayDecisionLabels {
    processor: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    processor: String,
    reason: String,
}

/// Why a trace was decided when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DecisionWait,
    RootSpan,
    SpanLimit,
    ByteLimit,
    MemoryLimit,
    TraceLimit,
    Shutdown,
    Handoff,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::DecisionWait => "decision_wait",
            Reason::RootSpan => "root_span",
            Reason::SpanLimit => "span_limit",
            Reason::ByteLimit => "byte_limit",
            Reason::MemoryLimit => "memory_limit",
            Reason::TraceLimit => "trace_limit",
            Reason::Shutdown => "shutdown",
            Reason::Handoff => "handoff",
        }
    }
}

/// Metrics of one tail sampler (registered under `clew_sampling_*`).
#[derive(Clone, Default)]
pub struct TailMetrics {
    traces: Family<DecisionLabels, Counter>,
    decided_by: Family<ReasonLabels, Counter>,
    late_spans: Family<DecisionLabels, Counter>,
    pub buffered_traces: Gauge,
    pub buffered_bytes: Gauge,
    pub forward_failures: Counter,
    pub decode_errors: Counter,
    // The sampler log's (see [`crate::sampler_log::LogMetrics`]).
    log_bytes: Family<ProcessorLabel, Gauge>,
    log_segments: Family<ProcessorLabel, Gauge>,
    log_records: Family<RecordLabels, Counter>,
    log_fsyncs: Family<ProcessorLabel, Counter>,
    log_replayed_traces: Family<ProcessorLabel, Counter>,
    log_replayed_decided: Family<ReplayDecisionLabels, Counter>,
}

impl TailMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_sampling_traces",
            "Traces decided by the tail sampler, by deciding policy and decision",
            self.traces.clone(),
        );
        r.register(
            "clew_sampling_decisions_by_reason",
            "Tail decisions by what triggered them (decision_wait, root_span, span_limit, byte_limit, memory_limit, trace_limit, shutdown)",
            self.decided_by.clone(),
        );
        r.register(
            "clew_sampling_late_spans",
            "Spans arriving after their trace was decided, by the cached decision",
            self.late_spans.clone(),
        );
        r.register(
            "clew_sampling_buffered_traces",
            "Traces waiting for a tail decision",
            self.buffered_traces.clone(),
        );
        r.register(
            "clew_sampling_buffered_bytes",
            "Encoded span bytes waiting for a tail decision",
            self.buffered_bytes.clone(),
        );
        r.register(
            "clew_sampling_forward_failures",
            "Attempts to hand kept traces downstream that failed (retried)",
            self.forward_failures.clone(),
        );
        r.register(
            "clew_sampling_log_bytes",
            "Bytes of the tail sampler's log (durable buffer) on disk",
            self.log_bytes.clone(),
        );
        r.register(
            "clew_sampling_log_segments",
            "Segment files of the tail sampler's log on disk",
            self.log_segments.clone(),
        );
        r.register(
            "clew_sampling_log_records",
            "Records appended to the tail sampler's log and fsynced, by kind (spans, decided)",
            self.log_records.clone(),
        );
        r.register(
            "clew_sampling_log_fsyncs",
            "fdatasync calls of the tail sampler's log (one per group commit)",
            self.log_fsyncs.clone(),
        );
        r.register(
            "clew_sampling_log_replayed_traces",
            "Undecided traces rebuilt from the tail sampler's log at start-up (after a crash)",
            self.log_replayed_traces.clone(),
        );
        r.register(
            "clew_sampling_log_replayed_decided",
            "Traces rebuilt from the log at start-up that were decided since, by decision (kept, dropped, handed_off)",
            self.log_replayed_decided.clone(),
        );
    }

    /// The sampler log metrics of `processor` (handles into the registered families).
    pub fn log_metrics(&self, processor: &str) -> LogMetrics {
        let p = || ProcessorLabel {
            processor: processor.into(),
        };
        let kind = |k: &str| RecordLabels {
            processor: processor.into(),
            kind: k.into(),
        };
        let decided = |d: &str| ReplayDecisionLabels {
            processor: processor.into(),
            decision: d.into(),
        };
        // One statement each: `get_or_create` returns a read guard, and a second call on the same
        // family while a first guard lives (a temporary of the same statement) deadlocks.
        let bytes = self.log_bytes.get_or_create(&p()).clone();
        let segments = self.log_segments.get_or_create(&p()).clone();
        let spans_records = self.log_records.get_or_create(&kind("spans")).clone();
        let decided_records = self.log_records.get_or_create(&kind("decided")).clone();
        let fsyncs = self.log_fsyncs.get_or_create(&p()).clone();
        let replayed_traces = self.log_replayed_traces.get_or_create(&p()).clone();
        let replayed_kept = self
            .log_replayed_decided
            .get_or_create(&decided("kept"))
            .clone();
        let replayed_dropped = self
            .log_replayed_decided
            .get_or_create(&decided("dropped"))
            .clone();
        let replayed_handed_off = self
            .log_replayed_decided
            .get_or_create(&decided("handed_off"))
            .clone();
        LogMetrics {
            bytes,
            segments,
            spans_records,
            decided_records,
            fsyncs,
            replayed_traces,
            replayed_kept,
            replayed_dropped,
            replayed_handed_off,
        }
    }

    pub fn traces(&self, processor: &str, policy: &str, decision: &str) -> u64 {
        self.traces
            .get_or_create(&DecisionLabels {
                processor: processor.into(),
                policy: policy.into(),
                decision: decision.into(),
            })
            .get()
    }

    pub fn decided_by(&self, processor: &str, reason: Reason) -> u64 {
        self.decided_by
            .get_or_create(&ReasonLabels {
                processor: processor.into(),
                reason: reason.as_str().into(),
            })
            .get()
    }

    pub fn late_spans(&self, processor: &str, decision: &str) -> u64 {
        self.late_spans
            .get_or_create(&DecisionLabels {
                processor: processor.into(),
                policy: String::new(),
                decision: decision.into(),
            })
            .get()
    }
}

struct Buffered {
    seq: u64,
    tenant: Arc<Tenant>,
    /// `ExportTraceServiceRequest` encoding of this trace's spans so far.
    buf: Vec<u8>,
    spans: u32,
    start_ns: u64,
    end_ns: u64,
    first_ms: u64,
    root_seen: bool,
    status_mask: u8,
    /// `rv` from a tracestate, `u64::MAX` if none.
    rv: u64,
}

struct Shard {
    traces: HashMap<TraceKey, Buffered>,
    /// (first_ms, key, seq) in arrival order.
    arrival: VecDeque<(u64, TraceKey, u64)>,
    /// (due_ms, key, seq) for traces whose root span arrived.
    root_due: VecDeque<(u64, TraceKey, u64)>,
    bytes: usize,
    kept: KeptCache,
    dropped: HashMap<u16, RotatingBloom>,
    headers: Headers,
    seq: u64,
}

/// The sampler's state and decision logic, independent of tasks and clocks (time is passed in),
/// so tests and benchmarks drive it with simulated time.
pub struct TailCore {
    name: String,
    cfg: TailSamplingConfig,
    policies: Vec<Policy>,
    shards: Vec<Mutex<Shard>>,
    shard_bytes: usize,
    shard_traces: usize,
    dropped_per_partition: usize,
    pub metrics: TailMetrics,
    /// The durable log of buffered spans and decisions (see [`crate::sampler_log`]), if attached.
    log: Option<Arc<SamplerLog>>,
}

/// What ingesting a batch produced.
#[derive(Default)]
pub struct Ingested {
    /// Late spans of already-kept traces: forward with the request.
    pub forward_now: Vec<ResourceSpans>,
    /// Traces decided (and kept) during ingest (limits): hand downstream asynchronously.
    pub released: Vec<SpanBatch>,
    /// With a log attached: the buffered spans' records; acknowledge once every ticket is `Ok`.
    pub durable: Vec<Ticket>,
}

/// One partition's state, for handing it to another instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionState {
    pub partition: u16,
    pub buffered: Vec<BufferedTrace>,
    pub kept: Vec<(TraceKey, String)>,
    pub dropped: Option<RotatingBloom>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BufferedTrace {
    pub tenant: String,
    pub key: TraceKey,
    /// Milliseconds this trace had been buffered when exported.
    pub age_ms: u64,
    /// Milliseconds until its root-span decision is due, if the root arrived.
    pub root_due_in_ms: Option<u64>,
    pub spans: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub encoded: Vec<u8>,
}

impl PartitionState {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(b: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(b).map_err(|e| format!("bad partition state: {e}"))
    }
}

pub fn partition_of(key: &TraceKey) -> u16 {
    (key.hash64() % NUM_PARTITIONS as u64) as u16
}

/// Resource + scope of a group of spans, encoded once: `varint(len(rs_part)) rs_part ss_part`,
/// where `rs_part` is a `ResourceSpans` without scope spans and `ss_part` a `ScopeSpans` without
/// spans. Buffered traces refer to interned headers by id, so a resource shared by many traces
/// is stored once per shard, as in the original request.
pub(crate) struct LocalHeader {
    pub(crate) key: Vec<u8>,
}

impl LocalHeader {
    fn parts(key: &[u8]) -> Option<(&[u8], &[u8])> {
        let mut cur = key;
        let n = prost::encoding::decode_varint(&mut cur).ok()? as usize;
        (n <= cur.len()).then(|| cur.split_at(n))
    }
}

/// Per-shard interning of headers, reference counted by the buffered traces' frames.
#[derive(Default)]
struct Headers {
    ids: HashMap<Arc<[u8]>, u32>,
    entries: HashMap<u32, (Arc<[u8]>, u32)>,
    next: u32,
}

impl Headers {
    /// Returns the id and how many bytes were newly stored.
    fn intern(&mut self, key: &[u8]) -> (u32, usize) {
        if let Some(id) = self.ids.get(key) {
            if let Some(e) = self.entries.get_mut(id) {
                e.1 += 1;
            }
            return (*id, 0);
        }
        // Ids wrap after 2^32 new headers; skip ones still in use (long-lived resources).
        while self.entries.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let k: Arc<[u8]> = Arc::from(key);
        self.ids.insert(k.clone(), id);
        self.entries.insert(id, (k, 1));
        (id, key.len())
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        self.entries.get(&id).map(|e| &*e.0)
    }

    /// Drops one reference; returns the bytes freed.
    fn release(&mut self, id: u32) -> usize {
        let Some(e) = self.entries.get_mut(&id) else {
            return 0;
        };
        e.1 -= 1;
        if e.1 > 0 {
            return 0;
        }
        let (k, _) = self
            .entries
            .remove(&id)
            .unwrap_or_else(|| (Arc::from(&[][..]), 0));
        self.ids.remove(&*k);
        k.len()
    }
}

/// Iterates a buffered trace's frames: `varint(header id) varint(len) chunk`, where a chunk is
/// the trace's spans under that header, each encoded as field 2 of `ScopeSpans`.
fn frames(mut buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let id = prost::encoding::decode_varint(&mut buf).ok()? as u32;
        let n = prost::encoding::decode_varint(&mut buf).ok()? as usize;
        if n > buf.len() {
            buf = &[];
            return None;
        }
        let (chunk, rest) = buf.split_at(n);
        buf = rest;
        Some((id, chunk))
    })
}

fn decode_buffered(headers: &Headers, buf: &[u8]) -> Result<Vec<ResourceSpans>, String> {
    materialize(frames(buf).map(|(id, chunk)| (headers.get(id).unwrap_or(&[]), chunk)))
}

/// Rebuilds OTLP resource spans from (header key, chunk) pairs; consecutive chunks with the same
/// resource share one `ResourceSpans`.
pub(crate) fn materialize<'a>(
    parts: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Vec<ResourceSpans>, String> {
    use clew_model::otlp::trace::ScopeSpans;
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut last_rs: Option<&[u8]> = None;
    let mut scratch = Vec::new();
    for (key, chunk) in parts {
        let (rs_part, ss_part) = LocalHeader::parts(key).ok_or_else(|| "bad header".to_string())?;
        scratch.clear();
        scratch.extend_from_slice(ss_part);
        scratch.extend_from_slice(chunk);
        let ss = ScopeSpans::decode(scratch.as_slice()).map_err(|e| e.to_string())?;
        match (last_rs, out.last_mut()) {
            (Some(prev), Some(rs)) if prev == rs_part => rs.scope_spans.push(ss),
            _ => {
                let mut rs = ResourceSpans::decode(rs_part).map_err(|e| e.to_string())?;
                rs.scope_spans.push(ss);
                out.push(rs);
                last_rs = Some(rs_part);
            }
        }
    }
    Ok(out)
}

pub(crate) struct Group {
    pub(crate) trace_id: [u8; 16],
    /// (index into the batch's headers, spans encoded as `ScopeSpans` field 2).
    pub(crate) chunks: Vec<(usize, Vec<u8>)>,
    spans: u32,
    start_ns: u64,
    end_ns: u64,
    root: bool,
    status_mask: u8,
    rv: Option<u64>,
}

/// Splits a batch into per-trace groups of encoded spans, with the batch's headers.
pub(crate) fn split_by_trace(batch: &SpanBatch) -> (Vec<LocalHeader>, Vec<Group>) {
    let mut headers = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<[u8; 16], usize> = HashMap::new();
    for rs in &batch.resource_spans {
        let mut rs_part = Vec::new();
        if let Some(r) = &rs.resource {
            prost::encoding::message::encode(1, r, &mut rs_part);
        }
        if !rs.schema_url.is_empty() {
            prost::encoding::string::encode(3, &rs.schema_url, &mut rs_part);
        }
        for ss in &rs.scope_spans {
            let mut key = Vec::new();
            prost::encoding::encode_varint(rs_part.len() as u64, &mut key);
            key.extend_from_slice(&rs_part);
            if let Some(sc) = &ss.scope {
                prost::encoding::message::encode(1, sc, &mut key);
            }
            if !ss.schema_url.is_empty() {
                prost::encoding::string::encode(3, &ss.schema_url, &mut key);
            }
            let hi = headers.len();
            headers.push(LocalHeader { key });
            for span in &ss.spans {
                let Ok(tid) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                    continue; // validated upstream; never panic on input
                };
                let gi = *index.entry(tid).or_insert_with(|| {
                    groups.push(Group {
                        trace_id: tid,
                        chunks: Vec::new(),
                        spans: 0,
                        start_ns: u64::MAX,
                        end_ns: 0,
                        root: false,
                        status_mask: 0,
                        rv: None,
                    });
                    groups.len() - 1
                });
                let g = &mut groups[gi];
                let code = span.status.as_ref().map_or(0, |s| s.code);
                if (0..8).contains(&code) {
                    g.status_mask |= 1 << code;
                }
                if g.rv.is_none() && span.trace_state.contains("rv:") {
                    g.rv = crate::consistent::parse_ot(&span.trace_state).rv;
                }
                if g.chunks.last().is_none_or(|c| c.0 != hi) {
                    g.chunks.push((hi, Vec::new()));
                }
                if let Some(c) = g.chunks.last_mut() {
                    prost::encoding::message::encode(2, span, &mut c.1);
                }
                g.spans += 1;
                g.start_ns = g.start_ns.min(span.start_time_unix_nano);
                g.end_ns = g.end_ns.max(span.end_time_unix_nano);
                g.root |= span.parent_span_id.is_empty();
            }
        }
    }
    (headers, groups)
}

fn add_policy_attribute(rs: &mut [ResourceSpans], policy: &str) {
    for r in rs {
        for ss in &mut r.scope_spans {
            for s in &mut ss.spans {
                s.attributes.retain(|kv| kv.key != POLICY_ATTRIBUTE);
                s.attributes.push(KeyValue {
                    key: POLICY_ATTRIBUTE.into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(policy.to_string())),
                    }),
                    ..Default::default()
                });
            }
        }
    }
}

/// Writes `th` = max(existing, `th`) into every span's tracestate (thresholds are only raised).
fn raise_threshold(rs: &mut [ResourceSpans], th: u64) {
    use crate::consistent::{parse_ot, write_threshold, MAX_THRESHOLD};
    if th == 0 || th >= MAX_THRESHOLD {
        return;
    }
    for r in rs {
        for ss in &mut r.scope_spans {
            for s in &mut ss.spans {
                let old = parse_ot(&s.trace_state).th.unwrap_or(0);
                if th > old {
                    s.trace_state = write_threshold(&s.trace_state, th);
                }
            }
        }
    }
}

/// Merges per-trace batches into one batch per tenant.
pub fn coalesce(batches: Vec<SpanBatch>) -> Vec<SpanBatch> {
    let mut by_tenant: Vec<SpanBatch> = Vec::new();
    for b in batches {
        match by_tenant.iter_mut().find(|x| x.tenant == b.tenant) {
            Some(x) => x.resource_spans.extend(b.resource_spans),
            None => by_tenant.push(b),
        }
    }
    by_tenant
}

impl TailCore {
    pub fn new(
        name: impl Into<String>,
        cfg: TailSamplingConfig,
    ) -> Result<Self, policy::ConfigError> {
        Self::with_metrics(name, cfg, TailMetrics::default())
    }

    /// As [`TailCore::new`], recording into shared metrics (labelled by processor name), so that
    /// several tail samplers register one set of metric families.
    pub fn with_metrics(
        name: impl Into<String>,
        cfg: TailSamplingConfig,
        metrics: TailMetrics,
    ) -> Result<Self, policy::ConfigError> {
        let policies = cfg.compile()?;
        let n = if cfg.num_shards == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.num_shards
        }
        .clamp(1, NUM_PARTITIONS as usize);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    traces: HashMap::new(),
                    arrival: VecDeque::new(),
                    root_due: VecDeque::new(),
                    bytes: 0,
                    kept: KeptCache::new(cfg.decision_cache.sampled_cache_size.div_ceil(n)),
                    dropped: HashMap::new(),
                    headers: Headers::default(),
                    seq: 0,
                })
            })
            .collect();
        Ok(Self {
            name: name.into(),
            shard_bytes: (cfg.max_buffered_mib << 20).div_ceil(n),
            shard_traces: cfg.num_traces.div_ceil(n).max(1),
            dropped_per_partition: (cfg.decision_cache.non_sampled_cache_size
                / NUM_PARTITIONS as usize)
                .max(64),
            cfg,
            policies,
            shards,
            metrics,
            log: None,
        })
    }

    /// Attaches a sampler log: [`TailCore::ingest_logged`] then appends every group it buffers
    /// and decisions are logged, so buffered spans survive a crash.
    pub fn attach_log(&mut self, log: Arc<SamplerLog>) {
        log.bind_metrics(self.metrics.log_metrics(&self.name));
        self.log = Some(log);
    }

    pub fn log(&self) -> Option<&Arc<SamplerLog>> {
        self.log.as_ref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    fn shard_of(&self, key: &TraceKey) -> usize {
        partition_of(key) as usize % self.shards.len()
    }

    /// Buffers a batch (or routes late spans by the cached decision).
    pub fn ingest(&self, batch: &SpanBatch, now_ms: u64) -> Ingested {
        self.ingest_logged(batch, now_ms, None)
    }

    /// As [`TailCore::ingest`]; with a log attached, the groups buffered are also appended to it
    /// under the shard lock (sealed with `key` when encryption at rest is on), one record per
    /// shard, whose tickets are returned in [`Ingested::durable`].
    pub fn ingest_logged(
        &self,
        batch: &SpanBatch,
        now_ms: u64,
        data_key: Option<Arc<WalKey>>,
    ) -> Ingested {
        let unix = if self.log.is_some() { unix_ms() } else { 0 };
        let root_delay = self.cfg.root_send_delay.as_millis() as u64;
        let tenant = Arc::new(batch.tenant.clone());
        let (headers, groups) = split_by_trace(batch);
        let mut by_shard: Vec<Vec<(TraceKey, Group)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        for g in groups {
            let key = TraceKey::new(&g.trace_id, tenant.as_str());
            by_shard[self.shard_of(&key)].push((key, g));
        }
        let mut out = Ingested::default();
        for (si, groups) in by_shard.into_iter().enumerate() {
            if groups.is_empty() {
                continue;
            }
            let mut decided = Vec::new();
            let mut logged = self.log.as_ref().map(|_| SpansPayload::new());
            let mut sh = self.shards[si].lock();
            for (key, g) in groups {
                if let Some(policy) = sh.kept.get(&key).cloned() {
                    self.late(&mut out, &headers, &g, Some(&policy));
                    continue;
                }
                let h = key.hash64();
                if sh
                    .dropped
                    .get(&partition_of(&key))
                    .is_some_and(|b| b.contains(h))
                {
                    self.late(&mut out, &headers, &g, None);
                    continue;
                }
                if let Some(p) = &mut logged {
                    let due = if g.root && root_delay > 0 {
                        unix + root_delay
                    } else {
                        0
                    };
                    p.add(key, &g, 0, due);
                }
                if let Some(r) =
                    self.buffer_locked(&mut sh, key, &tenant, &headers, g, now_ms, None)
                {
                    decided.push((key, r));
                }
            }
            // Queued before any decision below, under the same lock: a trace's spans precede
            // its decision in the log.
            if let (Some(log), Some(p)) = (&self.log, logged) {
                if !p.is_empty() {
                    let (payload, keys) = p.finish(unix, &headers);
                    out.durable.push(log.append_spans(
                        tenant.as_str(),
                        keys,
                        payload,
                        data_key.clone(),
                    ));
                }
            }
            for (key, reason) in decided {
                self.decide_locked(&mut sh, key, now_ms, reason, &mut out.released);
            }
            self.enforce_bounds(&mut sh, now_ms, &mut out.released);
        }
        self.update_gauges();
        out
    }

    /// Adds a group of spans to its buffered trace (creating it). `first_ms` overrides the
    /// arrival time (imports). Returns a reason if the trace must be decided at once.
    #[allow(clippy::too_many_arguments)]
    fn buffer_locked(
        &self,
        sh: &mut Shard,
        key: TraceKey,
        tenant: &Arc<Tenant>,
        headers: &[LocalHeader],
        g: Group,
        now_ms: u64,
        first_ms: Option<u64>,
    ) -> Option<Reason> {
        sh.seq += 1;
        let seq = sh.seq;
        let first = first_ms.unwrap_or(now_ms);
        let sh = &mut *sh;
        let entry = sh.traces.entry(key).or_insert_with(|| {
            if first_ms.is_some() {
                let pos = sh.arrival.partition_point(|e| e.0 <= first);
                sh.arrival.insert(pos, (first, key, seq));
            } else {
                sh.arrival.push_back((first, key, seq));
            }
            Buffered {
                seq,
                tenant: tenant.clone(),
                buf: Vec::new(),
                spans: 0,
                start_ns: u64::MAX,
                end_ns: 0,
                first_ms: first,
                root_seen: false,
                status_mask: 0,
                rv: u64::MAX,
            }
        });
        entry.status_mask |= g.status_mask;
        if let (u64::MAX, Some(rv)) = (entry.rv, g.rv) {
            entry.rv = rv;
        }
        let mut frame = Vec::new();
        for (hi, chunk) in &g.chunks {
            let (id, stored) = sh.headers.intern(&headers[*hi].key);
            sh.bytes += stored;
            prost::encoding::encode_varint(id as u64, &mut frame);
            prost::encoding::encode_varint(chunk.len() as u64, &mut frame);
            frame.extend_from_slice(chunk);
        }
        sh.bytes += frame.len();
        if entry.buf.is_empty() {
            frame.shrink_to_fit();
            entry.buf = frame;
        } else {
            entry.buf.reserve_exact(frame.len());
            entry.buf.extend_from_slice(&frame);
        }
        entry.spans += g.spans;
        entry.start_ns = entry.start_ns.min(g.start_ns);
        entry.end_ns = entry.end_ns.max(g.end_ns);
        if g.root && !entry.root_seen {
            entry.root_seen = true;
            if !self.cfg.root_send_delay.is_zero() && first_ms.is_none() {
                let due = now_ms + self.cfg.root_send_delay.as_millis() as u64;
                sh.root_due.push_back((due, key, entry.seq));
            }
        }
        if entry.spans > self.cfg.max_spans_per_trace {
            Some(Reason::SpanLimit)
        } else if entry.buf.len() > self.cfg.max_bytes_per_trace_mib << 20 {
            Some(Reason::ByteLimit)
        } else {
            None
        }
    }

    /// Memory bound: decides the oldest traces early, never drops them undecided.
    fn enforce_bounds(&self, sh: &mut Shard, now_ms: u64, out: &mut Vec<SpanBatch>) {
        while sh.bytes > self.shard_bytes || sh.traces.len() > self.shard_traces {
            let reason = if sh.bytes > self.shard_bytes {
                Reason::MemoryLimit
            } else {
                Reason::TraceLimit
            };
            let Some((_, key, seq)) = sh.arrival.pop_front() else {
                break;
            };
            if sh.traces.get(&key).is_some_and(|b| b.seq == seq) {
                self.decide_locked(sh, key, now_ms, reason, out);
            }
        }
    }

    fn late(
        &self,
        out: &mut Ingested,
        headers: &[LocalHeader],
        g: &Group,
        kept: Option<&Arc<str>>,
    ) {
        let decision = if kept.is_some() { "kept" } else { "dropped" };
        self.metrics
            .late_spans
            .get_or_create(&DecisionLabels {
                processor: self.name.clone(),
                policy: String::new(),
                decision: decision.into(),
            })
            .inc_by(g.spans as u64);
        if let Some(policy) = kept {
            let parts = g
                .chunks
                .iter()
                .map(|(hi, c)| (headers[*hi].key.as_slice(), c.as_slice()));
            match materialize(parts) {
                Ok(mut rs) => {
                    add_policy_attribute(&mut rs, policy);
                    out.forward_now.extend(rs);
                }
                Err(_) => {
                    self.metrics.decode_errors.inc();
                }
            }
        }
    }

    /// Removes a buffered trace and rebuilds its spans, releasing its headers.
    fn take_trace(
        &self,
        sh: &mut Shard,
        key: &TraceKey,
    ) -> Option<(Buffered, Result<Vec<ResourceSpans>, String>)> {
        let b = sh.traces.remove(key)?;
        let rs = decode_buffered(&sh.headers, &b.buf);
        self.release(sh, &b);
        Some((b, rs))
    }

    /// Frees a removed trace's bytes and header references.
    fn release(&self, sh: &mut Shard, b: &Buffered) {
        sh.bytes -= b.buf.len();
        for (id, _) in frames(&b.buf) {
            sh.bytes -= sh.headers.release(id);
        }
    }

    /// Decides one buffered trace under its shard's lock; kept traces are pushed to `out`.
    fn decide_locked(
        &self,
        sh: &mut Shard,
        key: TraceKey,
        now_ms: u64,
        reason: Reason,
        out: &mut Vec<SpanBatch>,
    ) {
        let Some(b) = sh.traces.remove(&key) else {
            return;
        };
        self.metrics
            .decided_by
            .get_or_create(&ReasonLabels {
                processor: self.name.clone(),
                reason: reason.as_str().into(),
            })
            .inc();
        let headers = &sh.headers;
        let decode = || {
            decode_buffered(headers, &b.buf).unwrap_or_else(|e| {
                // Our own encoding; cannot happen short of a bug.
                tracing::error!(error = %e, "tail sampler could not decode a buffered trace");
                self.metrics.decode_errors.inc();
                Vec::new()
            })
        };
        let summary = policy::Summary {
            span_count: b.spans,
            bytes: b.buf.len() as u64,
            start_ns: if b.start_ns == u64::MAX {
                0
            } else {
                b.start_ns
            },
            end_ns: b.end_ns,
            status_mask: b.status_mask,
            rv: (b.rv != u64::MAX).then_some(b.rv),
        };
        let view = TraceView::new(b.tenant.as_str(), key.trace_id(), summary, now_ms, &decode);
        let decision = policy::decide(&self.policies, &view);
        let rs = decision.as_ref().map(|_| view.into_resource_spans());
        self.release(sh, &b);
        let (policy_label, decision_label) = match &decision {
            Some((p, _)) => (p.as_str(), "kept"),
            None => ("", "dropped"),
        };
        self.metrics
            .traces
            .get_or_create(&DecisionLabels {
                processor: self.name.clone(),
                policy: policy_label.into(),
                decision: decision_label.into(),
            })
            .inc();
        match decision.zip(rs) {
            Some(((p, th), mut rs)) => {
                add_policy_attribute(&mut rs, &p);
                if let Some(th) = th {
                    raise_threshold(&mut rs, th);
                }
                sh.kept.insert(key, Arc::from(p.as_str()));
                out.push(SpanBatch::new((*b.tenant).clone(), rs));
            }
            None => {
                if let Some(log) = &self.log {
                    log.append_decided(b.tenant.as_str(), &Decision::Dropped, &[key.trace_id()]);
                }
                let cap = self.dropped_per_partition;
                sh.dropped
                    .entry(partition_of(&key))
                    .or_insert_with(|| RotatingBloom::new(cap))
                    .insert(key.hash64());
            }
        }
    }

    /// Decides the shard's traces that are due; returns the kept ones.
    pub fn tick(&self, shard: usize, now_ms: u64) -> Vec<SpanBatch> {
        let mut out = Vec::new();
        let wait = self.cfg.decision_wait.as_millis() as u64;
        {
            let mut sh = self.shards[shard].lock();
            while let Some(&(due, key, seq)) = sh.root_due.front() {
                if due > now_ms {
                    break;
                }
                sh.root_due.pop_front();
                if sh.traces.get(&key).is_some_and(|b| b.seq == seq) {
                    self.decide_locked(&mut sh, key, now_ms, Reason::RootSpan, &mut out);
                }
            }
            while let Some(&(first, key, seq)) = sh.arrival.front() {
                if first + wait > now_ms {
                    break;
                }
                sh.arrival.pop_front();
                if sh.traces.get(&key).is_some_and(|b| b.seq == seq) {
                    self.decide_locked(&mut sh, key, now_ms, Reason::DecisionWait, &mut out);
                }
            }
        }
        if shard == 0 {
            for p in &self.policies {
                p.tick(now_ms);
            }
        }
        self.update_gauges();
        out
    }

    /// Decides every buffered trace now (shutdown); returns the kept ones.
    pub fn drain_all(&self, now_ms: u64) -> Vec<SpanBatch> {
        let mut out = Vec::new();
        for s in &self.shards {
            let mut sh = s.lock();
            let keys: Vec<(TraceKey, u64)> = sh.arrival.iter().map(|(_, k, s)| (*k, *s)).collect();
            for (key, seq) in keys {
                if sh.traces.get(&key).is_some_and(|b| b.seq == seq) {
                    self.decide_locked(&mut sh, key, now_ms, Reason::Shutdown, &mut out);
                }
            }
            sh.arrival.clear();
            sh.root_due.clear();
        }
        self.update_gauges();
        out
    }

    pub fn buffered_traces(&self) -> usize {
        self.shards.iter().map(|s| s.lock().traces.len()).sum()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// Bytes held by the decision caches' filters (for benchmarks).
    pub fn dropped_filter_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .dropped
                    .values()
                    .map(RotatingBloom::bytes)
                    .sum::<usize>()
            })
            .sum()
    }

    fn update_gauges(&self) {
        // Cheap enough at tick/ingest granularity; the numbers are per shard sums.
        let (mut t, mut b) = (0i64, 0i64);
        for s in &self.shards {
            if let Some(sh) = s.try_lock() {
                t += sh.traces.len() as i64;
                b += sh.bytes as i64;
            } else {
                return; // another thread is updating; its update will do
            }
        }
        self.metrics.buffered_traces.set(t);
        self.metrics.buffered_bytes.set(b);
    }

    /// Removes one partition's buffered traces and decision caches, to hand them to another node.
    /// Each trace is exported self-contained (an `ExportTraceServiceRequest` encoding).
    pub fn export_partition(&self, partition: u16, now_ms: u64) -> PartitionState {
        let si = partition as usize % self.shards.len();
        let mut sh = self.shards[si].lock();
        let keys: Vec<TraceKey> = sh
            .traces
            .keys()
            .filter(|k| partition_of(k) == partition)
            .copied()
            .collect();
        let mut roots: HashMap<TraceKey, u64> = HashMap::new();
        for (due, k, seq) in &sh.root_due {
            if sh.traces.get(k).is_some_and(|b| b.seq == *seq) {
                roots.insert(*k, *due);
            }
        }
        let mut buffered = Vec::new();
        for k in keys {
            if let Some((b, rs)) = self.take_trace(&mut sh, &k) {
                let rs = rs.unwrap_or_else(|e| {
                    tracing::error!(error = %e, "tail sampler could not decode a buffered trace");
                    self.metrics.decode_errors.inc();
                    Vec::new()
                });
                buffered.push(BufferedTrace {
                    tenant: b.tenant.as_str().to_string(),
                    key: k,
                    age_ms: now_ms.saturating_sub(b.first_ms),
                    root_due_in_ms: roots.get(&k).map(|d| d.saturating_sub(now_ms)),
                    spans: b.spans,
                    start_ns: b.start_ns,
                    end_ns: b.end_ns,
                    encoded: ExportTraceServiceRequest { resource_spans: rs }.encode_to_vec(),
                });
            }
        }
        let kept = sh.kept.extract(|k| partition_of(k) == partition);
        let dropped = sh.dropped.remove(&partition);
        if let Some(log) = &self.log {
            for t in &buffered {
                log.append_decided(&t.tenant, &Decision::HandedOff, &[t.key.trace_id()]);
            }
        }
        drop(sh);
        self.update_gauges();
        PartitionState {
            partition,
            buffered,
            kept,
            dropped,
        }
    }

    /// Takes over a partition exported by another instance: its traces keep their age (so they
    /// are decided when they would have been) and late spans follow the cached decisions. If the
    /// import pushes the shard over its bounds, the oldest traces are decided at once; the kept
    /// ones are returned for the caller to forward.
    pub fn import_partition(
        &self,
        state: PartitionState,
        now_ms: u64,
    ) -> Result<Vec<SpanBatch>, String> {
        let si = state.partition as usize % self.shards.len();
        let mut released = Vec::new();
        let mut sh = self.shards[si].lock();
        for t in state.buffered {
            if partition_of(&t.key) != state.partition {
                return Err(format!(
                    "trace {:032x} is not in partition {}",
                    t.key.id, state.partition
                ));
            }
            let tenant = Tenant::new(&t.tenant).map_err(|e| e.to_string())?;
            if TraceKey::new(&t.key.trace_id(), tenant.as_str()) != t.key {
                return Err("tenant does not match the trace key".into());
            }
            let req = ExportTraceServiceRequest::decode(t.encoded.as_slice())
                .map_err(|e| format!("trace {:032x}: {e}", t.key.id))?;
            let tenant = Arc::new(tenant);
            let batch = SpanBatch::new((*tenant).clone(), req.resource_spans);
            let (headers, groups) = split_by_trace(&batch);
            let first = now_ms.saturating_sub(t.age_ms);
            for g in groups {
                if g.trace_id != t.key.trace_id() {
                    return Err(format!(
                        "trace {:032x} holds spans of another trace",
                        t.key.id
                    ));
                }
                self.buffer_locked(&mut sh, t.key, &tenant, &headers, g, now_ms, Some(first));
            }
            let sh = &mut *sh;
            if let (Some(d), Some(b)) = (t.root_due_in_ms, sh.traces.get_mut(&t.key)) {
                b.root_seen = true;
                let due = now_ms + d;
                let pos = sh.root_due.partition_point(|e| e.0 <= due);
                sh.root_due.insert(pos, (due, t.key, b.seq));
            }
        }
        for (k, p) in state.kept {
            sh.kept.insert(k, Arc::from(p.as_str()));
        }
        if let Some(d) = state.dropped {
            sh.dropped.insert(state.partition, d);
        }
        self.enforce_bounds(&mut sh, now_ms, &mut released);
        drop(sh);
        self.update_gauges();
        Ok(released)
    }
}

impl TailCore {
    /// Rebuilds the buffer and decision caches from a replayed log ([`SamplerLog::open`]): each
    /// trace keeps its age (so it is decided when it would have been: at once if overdue) and its
    /// root-span due time; decided traces are not rebuilt, and late spans follow their logged
    /// decisions. `now_ms` is the sampler's clock, `now_unix_ms` the wall clock. Returns kept
    /// traces released by the bounds, for the caller to forward.
    pub fn restore(
        &self,
        replayed: Replayed,
        now_ms: u64,
        now_unix_ms: u64,
    ) -> Result<Vec<SpanBatch>, String> {
        let mut states: HashMap<u16, PartitionState> = HashMap::new();
        for (tenant, id, d) in replayed.decisions {
            let key = TraceKey::new(&id, &tenant);
            let p = partition_of(&key);
            let st = states.entry(p).or_insert_with(|| PartitionState {
                partition: p,
                buffered: Vec::new(),
                kept: Vec::new(),
                dropped: None,
            });
            match d {
                Decision::Kept(policy) => st.kept.push((key, policy.to_string())),
                Decision::Dropped => st
                    .dropped
                    .get_or_insert_with(|| RotatingBloom::new(self.dropped_per_partition))
                    .insert(key.hash64()),
                Decision::HandedOff => {}
            }
        }
        for t in replayed.traces {
            let key = TraceKey::new(&t.trace_id, &t.tenant);
            let p = partition_of(&key);
            let st = states.entry(p).or_insert_with(|| PartitionState {
                partition: p,
                buffered: Vec::new(),
                kept: Vec::new(),
                dropped: None,
            });
            let spans = t
                .resource_spans
                .iter()
                .flat_map(|r| r.scope_spans.iter())
                .map(|s| s.spans.len() as u32)
                .sum();
            st.buffered.push(BufferedTrace {
                tenant: t.tenant,
                key,
                age_ms: now_unix_ms.saturating_sub(t.first_unix_ms),
                root_due_in_ms: t.root_due_unix_ms.map(|d| d.saturating_sub(now_unix_ms)),
                spans,
                start_ns: 0,
                end_ns: 0,
                encoded: ExportTraceServiceRequest {
                    resource_spans: t.resource_spans,
                }
                .encode_to_vec(),
            });
        }
        let mut released = Vec::new();
        let mut parts: Vec<PartitionState> = states.into_values().collect();
        parts.sort_by_key(|s| s.partition);
        for st in parts {
            released.extend(self.import_partition(st, now_ms)?);
        }
        Ok(released)
    }
}

/// The `tail_sampling` pipeline processor: a [`TailCore`] driven by one timer task per shard,
/// forwarding kept traces into the rest of the pipeline.
pub struct TailSampler {
    core: Arc<TailCore>,
    downstream: Arc<dyn SpanSink>,
    epoch: Instant,
    outboxes: Arc<Vec<Mutex<Vec<SpanBatch>>>>,
    notify: Arc<Vec<tokio::sync::Notify>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl TailSampler {
    /// Starts the shard tasks; must be called inside a Tokio runtime.
    pub fn start(core: TailCore, downstream: Arc<dyn SpanSink>) -> Self {
        let core = Arc::new(core);
        let n = core.num_shards();
        let outboxes: Arc<Vec<Mutex<Vec<SpanBatch>>>> =
            Arc::new((0..n).map(|_| Mutex::new(Vec::new())).collect());
        let notify: Arc<Vec<tokio::sync::Notify>> =
            Arc::new((0..n).map(|_| tokio::sync::Notify::new()).collect());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        // The sampler's clock starts well above 0, so traces restored from the log with an age up
        // to the longest wait keep it (`now - age` does not saturate at 0).
        let back = core.cfg.decision_wait + core.cfg.root_send_delay + Duration::from_secs(1);
        let now = Instant::now();
        let epoch = now.checked_sub(back).unwrap_or(now);
        // Timer resolution: a small fraction of the shortest wait, between 20 and 250 ms.
        let mut tick = core.cfg.decision_wait / 20;
        if !core.cfg.root_send_delay.is_zero() {
            tick = tick.min(core.cfg.root_send_delay / 4);
        }
        let tick = tick.clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut tasks = Vec::new();
        for i in 0..n {
            let (core, down, outboxes, notify) = (
                core.clone(),
                downstream.clone(),
                outboxes.clone(),
                notify.clone(),
            );
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(tick) => {}
                        _ = notify[i].notified() => {}
                        _ = stop_rx.wait_for(|s| *s) => return,
                    }
                    let now = epoch.elapsed().as_millis() as u64;
                    let mut batches = std::mem::take(&mut *outboxes[i].lock());
                    batches.extend(core.tick(i, now));
                    for b in coalesce(batches) {
                        forward(&core, &*down, b).await;
                    }
                }
            }));
        }
        Self {
            core,
            downstream,
            epoch,
            outboxes,
            notify,
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    pub fn core(&self) -> &Arc<TailCore> {
        &self.core
    }

    /// The sampler's clock (milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Rebuilds the buffer from a replayed log (see [`TailCore::restore`]); traces already overdue
    /// are decided by the shard tasks' next tick.
    pub fn restore(&self, replayed: Replayed) -> Result<usize, String> {
        let n = replayed.traces.len();
        let released = self.core.restore(replayed, self.now_ms(), unix_ms())?;
        self.queue_released(released);
        for w in self.notify.iter() {
            w.notify_one();
        }
        Ok(n)
    }

    fn queue_released(&self, released: Vec<SpanBatch>) {
        let n = self.outboxes.len();
        for (i, b) in released.into_iter().enumerate() {
            self.outboxes[i % n].lock().push(b);
            self.notify[i % n].notify_one();
        }
    }

    /// The durable path (a log attached): buffers the batch, waits until the buffered spans are
    /// fsynced in the sampler log, and returns the late spans of kept traces for the caller to
    /// hand on before acknowledging. `data_key` is the tenant's WAL data key when encryption at
    /// rest is on (without it nothing is written and the batch is refused, retryably).
    pub async fn consume_logged(
        &self,
        batch: SpanBatch,
        data_key: Option<Arc<WalKey>>,
    ) -> Result<Option<SpanBatch>, SinkError> {
        if *self.stop.borrow() {
            return Err(SinkError::ShuttingDown);
        }
        let ing = self.core.ingest_logged(&batch, self.now_ms(), data_key);
        self.queue_released(ing.released);
        for t in ing.durable {
            let r = t
                .await
                .unwrap_or_else(|_| Err(Arc::new(crate::sampler_log::LogError::Closed)));
            if let Err(e) = r {
                return Err(if e.is_retryable() {
                    SinkError::Overloaded {
                        retry_after: Duration::from_secs(1),
                        reason: e.to_string(),
                    }
                } else {
                    SinkError::Internal(e.to_string())
                });
            }
        }
        Ok((!ing.forward_now.is_empty()).then(|| SpanBatch::new(batch.tenant, ing.forward_now)))
    }
}

/// The trace ids of a forwarded kept batch, by the policy that kept them (the `sampling.policy`
/// attribute every kept span carries).
fn kept_ids(batch: &SpanBatch) -> Vec<(String, Vec<[u8; 16]>)> {
    let mut out: Vec<(String, Vec<[u8; 16]>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for rs in &batch.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let Ok(id) = <[u8; 16]>::try_from(s.trace_id.as_slice()) else {
                    continue;
                };
                if !seen.insert(id) {
                    continue;
                }
                let policy = s
                    .attributes
                    .iter()
                    .find(|kv| kv.key == POLICY_ATTRIBUTE)
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(p)) => Some(p.as_str()),
                        _ => None,
                    })
                    .unwrap_or("");
                match out.iter_mut().find(|(p, _)| p == policy) {
                    Some((_, ids)) => ids.push(id),
                    None => out.push((policy.to_string(), vec![id])),
                }
            }
        }
    }
    out
}

/// Hands a kept batch downstream, retrying while the store pushes back; failures are logged and
/// counted, never silent.
async fn forward(core: &TailCore, down: &dyn SpanSink, batch: SpanBatch) {
    let mut attempt = 0u32;
    loop {
        match down.consume(batch.clone()).await {
            Ok(()) => {
                // Accepted downstream (the store returns after its fsync): only now is the
                // decision final in the log, which lets the segments holding the trace go.
                if let Some(log) = core.log() {
                    for (policy, ids) in kept_ids(&batch) {
                        log.append_decided(
                            batch.tenant.as_str(),
                            &Decision::Kept(Arc::from(policy.as_str())),
                            &ids,
                        );
                    }
                }
                return;
            }
            Err(e) => {
                core.metrics.forward_failures.inc();
                attempt += 1;
                let wait = match &e {
                    SinkError::Overloaded { retry_after, .. } => *retry_after,
                    _ => Duration::from_millis(100 << attempt.min(6)),
                };
                if attempt > 50 || matches!(e, SinkError::Invalid(_)) {
                    tracing::error!(processor = core.name(), error = %e, spans = batch.span_count(),
                        "giving up forwarding kept spans");
                    return;
                }
                tracing::warn!(processor = core.name(), error = %e, "forwarding kept spans failed; retrying");
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl Processor for TailSampler {
    fn name(&self) -> &str {
        self.core.name()
    }

    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        if *self.stop.borrow() {
            return Err(SinkError::ShuttingDown);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let ing = self.core.ingest(&batch, now);
        // Released by limits: the owning shard tasks forward them.
        self.queue_released(ing.released);
        if ing.forward_now.is_empty() {
            Ok(ProcessOutcome::Consumed)
        } else {
            Ok(ProcessOutcome::Forward(SpanBatch::new(
                batch.tenant,
                ing.forward_now,
            )))
        }
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut batches: Vec<SpanBatch> = Vec::new();
        for o in self.outboxes.iter() {
            batches.extend(std::mem::take(&mut *o.lock()));
        }
        let before = self.core.buffered_traces();
        batches.extend(self.core.drain_all(now));
        tracing::info!(
            processor = self.core.name(),
            traces = before,
            "tail sampler decided every buffered trace on shutdown"
        );
        for b in coalesce(batches) {
            forward(&self.core, &*self.downstream, b).await;
        }
        if let Some(log) = self.core.log() {
            // Every decision is queued by now; after this the log holds only what a later start
            // must still see (nothing, unless a forward gave up).
            if let Err(e) = log.close().await {
                tracing::error!(processor = self.core.name(), error = %e, "sampler log did not flush on shutdown");
                return Err(SinkError::Internal(e.to_string()));
            }
        }
        Ok(())
    }
}
