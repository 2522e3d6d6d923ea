//! The tail sampler's log: what makes "ack ⇒ durable" hold with tail sampling on.
//!
//! Every group of spans the sampler buffers is appended here, and the client is acknowledged only
//! once the record is `fdatasync`ed; a trace's decision is appended when it is final (a dropped
//! trace at once; a kept one after the store — or the rest of the pipeline — accepted it, so its
//! spans are durable there). After a crash, [`SamplerLog::open`] replays the log and returns every
//! trace that has spans but no decision, with its age, for the sampler to rebuild its buffer.
//!
//! ## Files
//!
//! `<storage.path>/sampler/<pipeline>/<processor>/{n:016}.slog`: numbered segments of records in
//! the sealed-record codec shared with the store's WAL and the exporters' queue
//! ([`clew_encryption::sealed_record`], no clear bytes, compact envelope JSON): plaintext
//! (version 1) without encryption at rest, sealed (version 2) under the tenant's WAL data key with
//! it — preceded in each segment by a key declaration (version 3) — so no span byte is written in
//! clear where the config says encrypted. One thread owns the open segment and group-commits:
//! it writes everything queued, fsyncs once, then acknowledges every waiting request.
//!
//! ## Record payloads (format 1; the first byte is the kind)
//!
//! ```text
//! spans   = [1][unix_ms u64 LE][n_headers varint]{[len varint][resource+scope header]}
//!           [n_groups varint]{[trace_id 16][first_unix_ms u64 LE (0 = unix_ms)]
//!                             [root_due_unix_ms u64 LE (0 = none)]
//!                             [n_chunks varint]{[header index varint][len varint][spans]}}
//! decided = [2][unix_ms u64 LE][decision u8: 0 dropped, 1 kept, 2 handed off]
//!           [policy_len varint][policy][n varint]{[trace_id 16]}
//! ```
//!
//! A header is the sampler's interned resource+scope encoding and a chunk the trace's spans as
//! `ScopeSpans` field 2 (see `tail.rs`), so appending copies bytes and encodes nothing.
//!
//! ## Replay and deletion
//!
//! Records are read in order; a trace's spans are collected until a `decided` record for it
//! (spans after it start a new generation, as in the sampler). The last segment's torn tail is
//! cut; an unknown payload kind or record version is refused, never skipped. Start-up then writes
//! the undecided traces (with their original arrival and root times) and the decisions seen into a
//! fresh segment, fsyncs it, and deletes the replayed segments. While running, a segment is deleted
//! once every trace whose first spans it holds has a durable `decided` record.
//!
//! A kept trace whose `decided` record was lost in the crash (the crash hit between the store's
//! fsync and the log's) is forwarded again after restart; the store dedupes repeated spans at read
//! time and in compaction, so it is still returned once.

use crate::cache::TraceKey;
use crate::tail::{materialize, Group, LocalHeader};
use clew_encryption::sealed::record::RecordKey;
use clew_encryption::sealed_record::{self as codec, Body, EnvelopeJson, KeyId, Layout};
use clew_encryption::{KeyError, KeyManager, WalKey};
use clew_model::otlp::trace::ResourceSpans;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

const LAYOUT: Layout<0> = Layout::new(EnvelopeJson::Compact);
/// Payload kind of a spans record.
pub const KIND_SPANS: u8 = 1;
/// Payload kind of a decision record.
pub const KIND_DECIDED: u8 = 2;
/// Segment size after which the writer starts a new one.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Upper bound on bytes written per group commit.
const MAX_GROUP_BYTES: usize = 32 << 20;

/// A trace's final decision as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Dropped,
    /// Kept by this policy, and accepted downstream.
    Kept(Arc<str>),
    /// Exported to another instance (partition handoff): no longer this log's to replay.
    HandedOff,
}

impl Decision {
    /// The `decision` label of its metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Dropped => "dropped",
            Decision::Kept(_) => "kept",
            Decision::HandedOff => "handed_off",
        }
    }
}

/// What one sampler log did, for `/metrics` (registered, labelled by processor, in
/// [`crate::tail::TailMetrics`]; [`crate::tail::TailCore::attach_log`] binds them). Before they
/// are bound the log counts into detached ones, and binding carries those counts over, so what
/// start-up did (replay, the rewrite into a fresh segment) is not lost.
#[derive(Clone, Debug, Default)]
pub struct LogMetrics {
    /// Bytes of the log's segment files on disk.
    pub bytes: Gauge,
    /// Segment files on disk.
    pub segments: Gauge,
    /// Spans records appended (fsynced).
    pub spans_records: Counter,
    /// Decision records appended (fsynced).
    pub decided_records: Counter,
    /// `fdatasync` calls (one per group commit).
    pub fsyncs: Counter,
    /// Undecided traces rebuilt from the log at start-up.
    pub replayed_traces: Counter,
    /// Of those, the ones decided since, by their decision (durably logged).
    pub replayed_kept: Counter,
    pub replayed_dropped: Counter,
    pub replayed_handed_off: Counter,
}

impl LogMetrics {
    fn replayed_decided(&self, label: &str) -> &Counter {
        match label {
            "kept" => &self.replayed_kept,
            "dropped" => &self.replayed_dropped,
            _ => &self.replayed_handed_off,
        }
    }

    /// Moves what `old` counted into `self` (counters add, gauges are overwritten).
    fn take_over(&self, old: &LogMetrics) {
        self.bytes.set(old.bytes.get());
        self.segments.set(old.segments.get());
        for (new, old) in [
            (&self.spans_records, &old.spans_records),
            (&self.decided_records, &old.decided_records),
            (&self.fsyncs, &old.fsyncs),
            (&self.replayed_traces, &old.replayed_traces),
            (&self.replayed_kept, &old.replayed_kept),
            (&self.replayed_dropped, &old.replayed_dropped),
            (&self.replayed_handed_off, &old.replayed_handed_off),
        ] {
            new.inc_by(old.get());
        }
    }
}

/// The log's metrics, shared by the handle and its writer thread; replaced on binding.
type SharedMetrics = Arc<parking_lot::Mutex<LogMetrics>>;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("sampler log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sampler log {path}: record at byte {offset}: {source}")]
    Record {
        path: String,
        offset: usize,
        #[source]
        source: codec::RecordError,
    },
    #[error("sampler log {path}: record at byte {offset}: {message}")]
    Format {
        path: String,
        offset: usize,
        message: String,
    },
    #[error("sampler log: no data key for tenant {tenant:?}: {source}")]
    Key {
        tenant: String,
        #[source]
        source: KeyError,
    },
    /// Encryption at rest is on but the caller had no data key: refused, never written in clear.
    #[error("sampler log: encryption at rest is on and no data key was given for tenant {0:?}")]
    NoKey(String),
    #[error("sampler log writer has stopped")]
    Closed,
}

impl LogError {
    /// True when trying again later may succeed (key provider down, disk trouble).
    pub fn is_retryable(&self) -> bool {
        match self {
            LogError::Key { source, .. } => source.is_retryable(),
            LogError::Io { .. } | LogError::Closed | LogError::NoKey(_) => true,
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.slog"))
}

/// Segment numbers in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    clew_encryption::segment_files::list(dir, ".slog").map_err(io_err(dir))
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------- payload encoding

/// Builds a spans payload from groups of one batch (headers are the batch's).
pub(crate) struct SpansPayload {
    /// Batch header index → payload header index.
    map: HashMap<usize, u64>,
    used: Vec<usize>,
    groups: Vec<u8>,
    n_groups: u64,
    pub(crate) keys: Vec<TraceKey>,
}

impl SpansPayload {
    pub(crate) fn new() -> Self {
        Self {
            map: HashMap::new(),
            used: Vec::new(),
            groups: Vec::new(),
            n_groups: 0,
            keys: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n_groups == 0
    }

    pub(crate) fn add(&mut self, key: TraceKey, g: &Group, first_unix_ms: u64, root_due: u64) {
        self.n_groups += 1;
        self.keys.push(key);
        let out = &mut self.groups;
        out.extend_from_slice(&g.trace_id);
        out.extend_from_slice(&first_unix_ms.to_le_bytes());
        out.extend_from_slice(&root_due.to_le_bytes());
        prost::encoding::encode_varint(g.chunks.len() as u64, out);
        for (hi, chunk) in &g.chunks {
            let next = self.used.len() as u64;
            let idx = *self.map.entry(*hi).or_insert_with(|| {
                self.used.push(*hi);
                next
            });
            prost::encoding::encode_varint(idx, out);
            prost::encoding::encode_varint(chunk.len() as u64, out);
            out.extend_from_slice(chunk);
        }
    }

    pub(crate) fn finish(self, unix_ms: u64, headers: &[LocalHeader]) -> (Vec<u8>, Vec<TraceKey>) {
        let hbytes: usize = self.used.iter().map(|h| headers[*h].key.len() + 5).sum();
        let mut out = Vec::with_capacity(1 + 8 + 10 + hbytes + 10 + self.groups.len());
        out.push(KIND_SPANS);
        out.extend_from_slice(&unix_ms.to_le_bytes());
        prost::encoding::encode_varint(self.used.len() as u64, &mut out);
        for h in &self.used {
            let k = &headers[*h].key;
            prost::encoding::encode_varint(k.len() as u64, &mut out);
            out.extend_from_slice(k);
        }
        prost::encoding::encode_varint(self.n_groups, &mut out);
        out.extend_from_slice(&self.groups);
        (out, self.keys)
    }
}

pub(crate) fn decided_payload(unix_ms: u64, decision: &Decision, ids: &[[u8; 16]]) -> Vec<u8> {
    let (code, policy) = match decision {
        Decision::Dropped => (0u8, ""),
        Decision::Kept(p) => (1, &**p),
        Decision::HandedOff => (2, ""),
    };
    let mut out = Vec::with_capacity(1 + 8 + 1 + 2 + policy.len() + 4 + ids.len() * 16);
    out.push(KIND_DECIDED);
    out.extend_from_slice(&unix_ms.to_le_bytes());
    out.push(code);
    prost::encoding::encode_varint(policy.len() as u64, &mut out);
    out.extend_from_slice(policy.as_bytes());
    prost::encoding::encode_varint(ids.len() as u64, &mut out);
    for id in ids {
        out.extend_from_slice(id);
    }
    out
}

/// One group of a spans record, decoded.
#[derive(Debug)]
pub struct LoggedGroup {
    pub trace_id: [u8; 16],
    pub first_unix_ms: u64,
    pub root_due_unix_ms: Option<u64>,
    pub resource_spans: Vec<ResourceSpans>,
}

/// A decoded record payload.
#[derive(Debug)]
pub enum Payload {
    Spans {
        unix_ms: u64,
        groups: Vec<LoggedGroup>,
    },
    Decided {
        unix_ms: u64,
        decision: Decision,
        trace_ids: Vec<[u8; 16]>,
    },
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("cut short: need {n} bytes, have {}", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn varint(&mut self) -> Result<u64, String> {
        prost::encoding::decode_varint(&mut self.0).map_err(|e| e.to_string())
    }
    fn len(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        if n > self.0.len() as u64 {
            return Err(format!("length {n} past the end"));
        }
        Ok(n as usize)
    }
    fn id(&mut self) -> Result<[u8; 16], String> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
}

/// Decodes a record payload (plaintext, after opening).
pub fn decode_payload(p: &[u8]) -> Result<Payload, String> {
    let mut c = Cursor(p);
    match c.u8()? {
        KIND_SPANS => {
            let unix_ms = c.u64()?;
            let nh = c.len()?;
            let mut headers = Vec::with_capacity(nh);
            for _ in 0..nh {
                let n = c.len()?;
                headers.push(c.take(n)?);
            }
            let ng = c.len()?;
            let mut groups = Vec::with_capacity(ng);
            for _ in 0..ng {
                let trace_id = c.id()?;
                let first = c.u64()?;
                let root = c.u64()?;
                let nc = c.len()?;
                let mut parts = Vec::with_capacity(nc);
                for _ in 0..nc {
                    let hi = c.varint()? as usize;
                    let h = *headers
                        .get(hi)
                        .ok_or_else(|| format!("header index {hi} of {nh}"))?;
                    let n = c.len()?;
                    parts.push((h, c.take(n)?));
                }
                groups.push(LoggedGroup {
                    trace_id,
                    first_unix_ms: if first == 0 { unix_ms } else { first },
                    root_due_unix_ms: (root != 0).then_some(root),
                    resource_spans: materialize(parts.into_iter())?,
                });
            }
            if !c.0.is_empty() {
                return Err(format!("{} bytes after the last group", c.0.len()));
            }
            Ok(Payload::Spans { unix_ms, groups })
        }
        KIND_DECIDED => {
            let unix_ms = c.u64()?;
            let code = c.u8()?;
            let pl = c.len()?;
            let policy = std::str::from_utf8(c.take(pl)?)
                .map_err(|e| format!("policy name: {e}"))?
                .to_string();
            let decision = match code {
                0 => Decision::Dropped,
                1 => Decision::Kept(Arc::from(policy.as_str())),
                2 => Decision::HandedOff,
                d => return Err(format!("unknown decision {d}")),
            };
            let n = c.len()?;
            let mut trace_ids = Vec::with_capacity(n.min(c.0.len() / 16));
            for _ in 0..n {
                trace_ids.push(c.id()?);
            }
            if !c.0.is_empty() {
                return Err(format!("{} bytes after the last trace id", c.0.len()));
            }
            Ok(Payload::Decided {
                unix_ms,
                decision,
                trace_ids,
            })
        }
        k => Err(format!(
            "unknown payload kind {k} (written by a newer build?)"
        )),
    }
}

/// A plaintext spans record of `resource_spans` (one tenant's), byte for byte as the log writes
/// it without encryption: for format tests and tools.
pub fn encode_plain_spans_record(
    tenant: &str,
    unix_ms: u64,
    resource_spans: &[ResourceSpans],
) -> Vec<u8> {
    let tenant_ok = clew_model::Tenant::new(tenant).unwrap_or_default();
    let batch = clew_model::SpanBatch::new(tenant_ok, resource_spans.to_vec());
    let (headers, groups) = crate::tail::split_by_trace(&batch);
    let mut p = SpansPayload::new();
    for g in &groups {
        p.add(TraceKey::new(&g.trace_id, tenant), g, 0, 0);
    }
    let (payload, _) = p.finish(unix_ms, &headers);
    LAYOUT.encode_plain(tenant, &[], &payload)
}

/// A plaintext decision record, as the log writes it without encryption.
pub fn encode_plain_decided_record(
    tenant: &str,
    unix_ms: u64,
    decision: &Decision,
    trace_ids: &[[u8; 16]],
) -> Vec<u8> {
    LAYOUT.encode_plain(tenant, &[], &decided_payload(unix_ms, decision, trace_ids))
}

// ---------------------------------------------------------------- replay

/// An undecided trace rebuilt from the log.
#[derive(Debug)]
pub struct ReplayedTrace {
    pub tenant: String,
    pub trace_id: [u8; 16],
    /// When its first span arrived (wall clock).
    pub first_unix_ms: u64,
    /// When its root-span decision is due, if its root arrived.
    pub root_due_unix_ms: Option<u64>,
    pub resource_spans: Vec<ResourceSpans>,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Undecided traces, oldest first.
    pub traces: Vec<ReplayedTrace>,
    /// Decisions found (tenant, trace id, decision), oldest first, for the decision caches.
    pub decisions: Vec<(String, [u8; 16], Decision)>,
    pub segments: usize,
    pub records: usize,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
    /// Sealed records whose key is gone (crypto-shredded tenant), skipped.
    pub unreadable_records: usize,
}

struct Pending {
    tenant: String,
    trace_id: [u8; 16],
    first: u64,
    root: Option<u64>,
    order: u64,
    rs: Vec<ResourceSpans>,
}

/// Reads a segment's records. Returns the records' (tenant, payload) in order and the offset where
/// the readable part ends (a framing error: a torn tail).
async fn read_segment(
    path: &Path,
    keys: Option<&KeyManager>,
    opened: &mut HashMap<KeyId, Option<RecordKey>>,
    replayed: &mut Replayed,
) -> Result<(Vec<(String, Payload)>, usize, usize), LogError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    let mut offset = 0usize;
    let rec_err = |offset, source| LogError::Record {
        path: path.display().to_string(),
        offset,
        source,
    };
    while offset < data.len() {
        let (body, used) = match codec::frame(&data[offset..]) {
            Ok(x) => x,
            Err(e) if e.is_framing() => break,
            Err(e) => return Err(rec_err(offset, e)),
        };
        let payload: Option<(String, Vec<u8>)> = match LAYOUT.parse(body) {
            Ok(Body::Plain {
                tenant, payload, ..
            }) => Some((tenant.to_string(), payload.to_vec())),
            Ok(Body::Key(decl)) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = opened.entry(decl.key_id) {
                    let Some(km) = keys else {
                        return Err(LogError::Format {
                            path: path.display().to_string(),
                            offset,
                            message: "the log is encrypted but `storage.encryption` is not configured (fix: configure the key provider it was written with)".into(),
                        });
                    };
                    let key = match km.open(&decl.envelope).await {
                        Ok(k) => Some(RecordKey::new(&k)),
                        Err(e) if e.is_retryable() => {
                            return Err(LogError::Key {
                                tenant: decl.tenant.to_string(),
                                source: e,
                            })
                        }
                        Err(e) => {
                            tracing::warn!(tenant = decl.tenant, error = %e, "sampler log: a data key is gone; its records are skipped");
                            None
                        }
                    };
                    slot.insert(key);
                }
                None
            }
            Ok(Body::Sealed(s)) => match opened.get(&s.key_id) {
                Some(Some(k)) => match s.open(k) {
                    Ok(p) => Some((s.tenant.to_string(), p)),
                    Err(_) => {
                        replayed.unreadable_records += 1;
                        None
                    }
                },
                _ => {
                    replayed.unreadable_records += 1;
                    None
                }
            },
            Err(e) => return Err(rec_err(offset, e)),
        };
        if let Some((tenant, p)) = payload {
            let p = decode_payload(&p).map_err(|message| LogError::Format {
                path: path.display().to_string(),
                offset,
                message,
            })?;
            out.push((tenant, p));
        }
        offset += used;
    }
    Ok((out, offset, data.len()))
}

/// Replays the log in `dir`; see the module docs.
pub async fn replay(dir: &Path, keys: Option<&KeyManager>) -> Result<Replayed, LogError> {
    let mut r = Replayed::default();
    let segs = list_segments(dir)?;
    r.segments = segs.len();
    let mut opened = HashMap::new();
    let mut pending: HashMap<TraceKey, Pending> = HashMap::new();
    let mut order = 0u64;
    for (i, n) in segs.iter().enumerate() {
        let path = segment_path(dir, *n);
        let (records, end, len) = read_segment(&path, keys, &mut opened, &mut r).await?;
        if end < len {
            // A torn tail is expected only at the end of the last segment; elsewhere it is damage,
            // and the rest of that segment cannot be framed either way.
            r.truncated_bytes += (len - end) as u64;
            if i + 1 < segs.len() {
                tracing::error!(segment = %path.display(), offset = end, "sampler log: a segment that is not the last one ends in a damaged record; the rest of it is skipped");
            }
        }
        for (tenant, p) in records {
            r.records += 1;
            match p {
                Payload::Spans { groups, .. } => {
                    for g in groups {
                        let key = TraceKey::new(&g.trace_id, &tenant);
                        order += 1;
                        let e = pending.entry(key).or_insert_with(|| Pending {
                            tenant: tenant.clone(),
                            trace_id: g.trace_id,
                            first: g.first_unix_ms,
                            root: None,
                            order,
                            rs: Vec::new(),
                        });
                        e.first = e.first.min(g.first_unix_ms);
                        e.root = match (e.root, g.root_due_unix_ms) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        e.rs.extend(g.resource_spans);
                    }
                }
                Payload::Decided {
                    decision,
                    trace_ids,
                    ..
                } => {
                    for id in trace_ids {
                        pending.remove(&TraceKey::new(&id, &tenant));
                        r.decisions.push((tenant.clone(), id, decision.clone()));
                    }
                }
            }
        }
    }
    let mut traces: Vec<Pending> = pending.into_values().collect();
    traces.sort_by_key(|p| (p.first, p.order));
    r.traces = traces
        .into_iter()
        .map(|p| ReplayedTrace {
            tenant: p.tenant,
            trace_id: p.trace_id,
            first_unix_ms: p.first,
            root_due_unix_ms: p.root,
            resource_spans: p.rs,
        })
        .collect();
    Ok(r)
}

// ---------------------------------------------------------------- writer

enum Cmd {
    Spans {
        tenant: String,
        keys: Vec<TraceKey>,
        payload: Vec<u8>,
        key: Option<Arc<WalKey>>,
        ack: Option<oneshot::Sender<Result<(), Arc<LogError>>>>,
    },
    Decided {
        tenant: String,
        keys: Vec<TraceKey>,
        payload: Vec<u8>,
        /// [`Decision::label`], for the replayed-trace metrics.
        decision: &'static str,
    },
    Sync {
        ack: oneshot::Sender<Result<(), Arc<LogError>>>,
    },
}

/// A ticket for an appended spans record: resolves once it is fsynced.
pub type Ticket = oneshot::Receiver<Result<(), Arc<LogError>>>;

/// Options of a sampler log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub segment_bytes: u64,
    /// Most decisions carried into the fresh segment at start-up (for the decision caches).
    pub carried_decisions: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            carried_decisions: 1_100_000,
        }
    }
}

/// An open sampler log (see the module docs).
pub struct SamplerLog {
    dir: PathBuf,
    tx: parking_lot::Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    encrypted: bool,
    metrics: SharedMetrics,
}

impl std::fmt::Debug for SamplerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplerLog")
            .field("dir", &self.dir)
            .field("encrypted", &self.encrypted)
            .finish_non_exhaustive()
    }
}

impl SamplerLog {
    /// Creates `dir` if needed, replays it, rewrites what is still needed into a fresh segment
    /// (fsynced) and deletes the replayed ones; returns the log, ready to append, and what replay
    /// found (for [`crate::TailSampler::restore`]).
    pub async fn open(
        dir: &Path,
        keys: Option<Arc<KeyManager>>,
        opts: LogOptions,
    ) -> Result<(Arc<Self>, Replayed), LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut replayed = replay(dir, keys.as_deref()).await?;
        let old = list_segments(dir)?;
        let next = old.last().map_or(1, |n| n + 1);
        // The data keys of every tenant seen, so the fresh segment (and later decisions of rebuilt
        // traces) can be sealed.
        let mut tenant_keys: HashMap<String, Arc<WalKey>> = HashMap::new();
        if let Some(km) = &keys {
            let tenants: HashSet<&str> = replayed
                .traces
                .iter()
                .map(|t| t.tenant.as_str())
                .chain(replayed.decisions.iter().map(|d| d.0.as_str()))
                .collect();
            for t in tenants {
                let k = km.wal_key(t).await.map_err(|source| LogError::Key {
                    tenant: t.to_string(),
                    source,
                })?;
                tenant_keys.insert(t.to_string(), k);
            }
        }
        let skip = replayed
            .decisions
            .len()
            .saturating_sub(opts.carried_decisions);
        replayed.decisions.drain(..skip);
        let metrics: SharedMetrics = Arc::default();
        let mut w = Writer::create(
            dir,
            next,
            opts.segment_bytes,
            keys.is_some(),
            metrics.clone(),
        )?;
        w.tenant_keys = tenant_keys;
        let mut rewritten = (0u64, 0u64);
        // Rewrite: the decisions first, then one spans record per undecided trace — in this
        // order a trace decided once and buffered again since (a new generation) stays undecided.
        let now = unix_ms();
        let mut buf = Vec::new();
        let mut by: BTreeMap<(String, u8, String), Vec<[u8; 16]>> = BTreeMap::new();
        for (tenant, id, d) in &replayed.decisions {
            let (c, p) = match d {
                Decision::Dropped => (0, String::new()),
                Decision::Kept(p) => (1, p.to_string()),
                Decision::HandedOff => continue,
            };
            by.entry((tenant.clone(), c, p)).or_default().push(*id);
        }
        for ((tenant, c, p), ids) in by {
            let d = if c == 1 {
                Decision::Kept(Arc::from(p.as_str()))
            } else {
                Decision::Dropped
            };
            let payload = decided_payload(now, &d, &ids);
            let key = w.tenant_keys.get(&tenant).cloned();
            w.encode(&tenant, &payload, key.as_ref(), &mut buf)?;
            rewritten.1 += 1;
        }
        for t in &replayed.traces {
            let batch = clew_model::SpanBatch::new(
                clew_model::Tenant::new(&t.tenant).map_err(|e| LogError::Format {
                    path: dir.display().to_string(),
                    offset: 0,
                    message: format!("tenant {:?}: {e}", t.tenant),
                })?,
                t.resource_spans.clone(),
            );
            let (headers, groups) = crate::tail::split_by_trace(&batch);
            let mut p = SpansPayload::new();
            for g in &groups {
                p.add(
                    TraceKey::new(&g.trace_id, &t.tenant),
                    g,
                    t.first_unix_ms,
                    t.root_due_unix_ms.unwrap_or(0),
                );
            }
            let (payload, tk) = p.finish(now, &headers);
            let key = w.tenant_keys.get(&t.tenant).cloned();
            w.encode(&t.tenant, &payload, key.as_ref(), &mut buf)?;
            w.note_spans(&tk);
            // Counted when durably decided again (`replayed_kept` and the like).
            w.replayed.extend(tk);
            rewritten.0 += 1;
        }
        w.write_sync(&buf)?;
        {
            let m = metrics.lock();
            m.replayed_traces.inc_by(replayed.traces.len() as u64);
            m.spans_records.inc_by(rewritten.0);
            m.decided_records.inc_by(rewritten.1);
        }
        for n in old {
            let p = segment_path(dir, n);
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        sync_dir(dir)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("clew-sampler-log".into())
            .spawn(move || w.run(rx))
            .map_err(io_err(dir))?;
        Ok((
            Arc::new(Self {
                dir: dir.to_path_buf(),
                tx: parking_lot::Mutex::new(Some(tx)),
                thread: parking_lot::Mutex::new(Some(thread)),
                encrypted: keys.is_some(),
                metrics,
            }),
            replayed,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// Records into `m` from now on, carrying over what was counted so far (see [`LogMetrics`]).
    pub fn bind_metrics(&self, m: LogMetrics) {
        let mut cur = self.metrics.lock();
        m.take_over(&cur);
        *cur = m;
    }

    /// The metrics the log currently records into.
    pub fn metrics(&self) -> LogMetrics {
        self.metrics.lock().clone()
    }

    fn send(&self, cmd: Cmd) -> Result<(), Cmd> {
        match &*self.tx.lock() {
            Some(tx) => tx.send(cmd).map_err(|e| e.0),
            None => Err(cmd),
        }
    }

    /// Queues a spans record; the ticket resolves once it is fsynced. Called under the shard lock,
    /// so a trace's spans precede its decision in the log.
    pub(crate) fn append_spans(
        &self,
        tenant: &str,
        keys: Vec<TraceKey>,
        payload: Vec<u8>,
        key: Option<Arc<WalKey>>,
    ) -> Ticket {
        let (ack, rx) = oneshot::channel();
        if self.encrypted && key.is_none() {
            let _ = ack.send(Err(Arc::new(LogError::NoKey(tenant.to_string()))));
            return rx;
        }
        let cmd = Cmd::Spans {
            tenant: tenant.to_string(),
            keys,
            payload,
            key,
            ack: Some(ack),
        };
        if let Err(Cmd::Spans { ack: Some(ack), .. }) = self.send(cmd) {
            let _ = ack.send(Err(Arc::new(LogError::Closed)));
        }
        rx
    }

    /// Queues a decision record (not waited for: it only lets segments go).
    pub(crate) fn append_decided(&self, tenant: &str, decision: &Decision, ids: &[[u8; 16]]) {
        if ids.is_empty() {
            return;
        }
        let keys = ids.iter().map(|id| TraceKey::new(id, tenant)).collect();
        let payload = decided_payload(unix_ms(), decision, ids);
        if self
            .send(Cmd::Decided {
                tenant: tenant.to_string(),
                keys,
                payload,
                decision: decision.label(),
            })
            .is_err()
        {
            tracing::warn!(dir = %self.dir.display(), "sampler log closed; a decision was not logged (the trace is decided again after a restart)");
        }
    }

    /// Waits until everything queued so far is fsynced.
    pub async fn sync(&self) -> Result<(), Arc<LogError>> {
        let (ack, rx) = oneshot::channel();
        if self.send(Cmd::Sync { ack }).is_err() {
            return Err(Arc::new(LogError::Closed));
        }
        rx.await.unwrap_or_else(|_| Err(Arc::new(LogError::Closed)))
    }

    /// Flushes and stops the writer thread (after the sampler decided everything).
    pub async fn close(&self) -> Result<(), Arc<LogError>> {
        let r = self.sync().await;
        self.tx.lock().take();
        let t = self.thread.lock().take();
        if let Some(t) = t {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        r
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

struct Writer {
    dir: PathBuf,
    seg: u64,
    file: File,
    size: u64,
    segment_bytes: u64,
    encrypted: bool,
    /// Keys declared in the open segment.
    declared: HashSet<KeyId>,
    /// Each tenant's latest data key (decision records are sealed with it).
    tenant_keys: HashMap<String, Arc<WalKey>>,
    /// Undecided traces → the segment holding their first spans.
    live: HashMap<TraceKey, u64>,
    /// Segment → how many undecided traces have their first spans there.
    by_seg: BTreeMap<u64, usize>,
    /// Lowest segment number still on disk.
    oldest: u64,
    /// Bytes of each segment on disk (for the metrics).
    seg_bytes: BTreeMap<u64, u64>,
    /// Traces rebuilt at start-up that have no durable decision yet.
    replayed: HashSet<TraceKey>,
    metrics: SharedMetrics,
}

impl Writer {
    fn create(
        dir: &Path,
        seg: u64,
        segment_bytes: u64,
        encrypted: bool,
        metrics: SharedMetrics,
    ) -> Result<Self, LogError> {
        let path = segment_path(dir, seg);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seg,
            file,
            size: 0,
            segment_bytes,
            encrypted,
            declared: HashSet::new(),
            tenant_keys: HashMap::new(),
            live: HashMap::new(),
            by_seg: BTreeMap::new(),
            oldest: seg,
            seg_bytes: BTreeMap::from([(seg, 0)]),
            replayed: HashSet::new(),
            metrics,
        })
    }

    /// Publishes the bytes and segments on disk.
    fn publish_disk(&self) {
        let m = self.metrics.lock();
        m.bytes.set(self.seg_bytes.values().sum::<u64>() as i64);
        m.segments.set(self.seg_bytes.len() as i64);
    }

    /// Appends one record (sealed when encrypted, after its key's declaration) to `buf`.
    fn encode(
        &mut self,
        tenant: &str,
        payload: &[u8],
        key: Option<&Arc<WalKey>>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        match (self.encrypted, key) {
            (false, _) => buf.extend_from_slice(&LAYOUT.encode_plain(tenant, &[], payload)),
            (true, Some(k)) => {
                if self.declared.insert(k.id) {
                    buf.extend_from_slice(&LAYOUT.encode_key(
                        &k.envelope.tenant,
                        &k.id,
                        &k.envelope,
                    ));
                }
                buf.extend_from_slice(&LAYOUT.encode_sealed(
                    tenant,
                    &[],
                    &k.id,
                    &RecordKey::new(&k.key),
                    payload,
                ));
            }
            (true, None) => return Err(LogError::NoKey(tenant.to_string())),
        }
        Ok(())
    }

    fn note_spans(&mut self, keys: &[TraceKey]) {
        for k in keys {
            if let std::collections::hash_map::Entry::Vacant(e) = self.live.entry(*k) {
                e.insert(self.seg);
                *self.by_seg.entry(self.seg).or_default() += 1;
            }
        }
    }

    fn note_decided(&mut self, keys: &[TraceKey]) {
        for k in keys {
            if let Some(s) = self.live.remove(k) {
                if let Some(c) = self.by_seg.get_mut(&s) {
                    *c -= 1;
                    if *c == 0 {
                        self.by_seg.remove(&s);
                    }
                }
            }
        }
    }

    /// Counts a durable group's records, and the decisions of traces rebuilt at start-up.
    /// `labels` runs along `decided`: (how many keys, their decision's label).
    fn count_appended(
        &mut self,
        records: (u64, u64),
        decided: &[TraceKey],
        labels: &[(usize, &'static str)],
    ) {
        let m = self.metrics.lock();
        m.spans_records.inc_by(records.0);
        m.decided_records.inc_by(records.1);
        if self.replayed.is_empty() {
            return;
        }
        let mut keys = decided.iter();
        for &(n, label) in labels {
            for k in keys.by_ref().take(n) {
                if self.replayed.remove(k) {
                    m.replayed_decided(label).inc();
                }
            }
        }
    }

    fn write_sync(&mut self, buf: &[u8]) -> Result<(), LogError> {
        let path = segment_path(&self.dir, self.seg);
        let result = self.file.write_all(buf).and_then(|_| self.file.sync_data());
        self.metrics.lock().fsyncs.inc();
        if let Err(e) = result {
            // Part of the group may be on disk: count what the file holds.
            if let Ok(m) = self.file.metadata() {
                self.seg_bytes.insert(self.seg, m.len());
                self.publish_disk();
            }
            return Err(io_err(&path)(e));
        }
        self.size += buf.len() as u64;
        *self.seg_bytes.entry(self.seg).or_default() += buf.len() as u64;
        self.publish_disk();
        Ok(())
    }

    /// Starts a new segment once the open one is full, and deletes segments no undecided trace
    /// needs (every decision in them is fsynced by now).
    fn maintain(&mut self) -> Result<(), LogError> {
        if self.size >= self.segment_bytes {
            let next = self.seg + 1;
            let path = segment_path(&self.dir, next);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            self.seg = next;
            self.size = 0;
            self.declared.clear();
            self.seg_bytes.insert(next, 0);
        }
        let keep_from = self
            .by_seg
            .keys()
            .next()
            .copied()
            .unwrap_or(self.seg)
            .min(self.seg);
        let mut removed = false;
        while self.oldest < keep_from {
            let p = segment_path(&self.dir, self.oldest);
            match fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
            self.seg_bytes.remove(&self.oldest);
            self.oldest += 1;
        }
        if removed {
            self.publish_disk();
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut cmds = vec![first];
            let mut bytes = 0usize;
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(c) => {
                        if let Cmd::Spans { payload, .. } = &c {
                            bytes += payload.len();
                        }
                        cmds.push(c)
                    }
                    Err(_) => break,
                }
            }
            buf.clear();
            let mut acks = Vec::new();
            let mut decided: Vec<TraceKey> = Vec::new();
            // Decided traces with their decision's label, and records by kind, for the metrics.
            let mut labels: Vec<(usize, &'static str)> = Vec::new();
            let mut records = (0u64, 0u64);
            for c in cmds {
                match c {
                    Cmd::Spans {
                        tenant,
                        keys,
                        payload,
                        key,
                        ack,
                    } => {
                        if let Some(k) = &key {
                            self.tenant_keys.insert(tenant.clone(), k.clone());
                        }
                        match self.encode(&tenant, &payload, key.as_ref(), &mut buf) {
                            Ok(()) => {
                                self.note_spans(&keys);
                                acks.extend(ack);
                                records.0 += 1;
                            }
                            Err(e) => {
                                if let Some(a) = ack {
                                    let _ = a.send(Err(Arc::new(e)));
                                }
                            }
                        }
                    }
                    Cmd::Decided {
                        tenant,
                        keys,
                        payload,
                        decision,
                    } => {
                        let key = self.tenant_keys.get(&tenant).cloned();
                        match self.encode(&tenant, &payload, key.as_ref(), &mut buf) {
                            Ok(()) => {
                                labels.push((keys.len(), decision));
                                decided.extend(keys);
                                records.1 += 1;
                            }
                            Err(e) => {
                                // Only when encrypted and the tenant's key was never seen here:
                                // the trace stays live and is decided again after a restart.
                                tracing::warn!(error = %e, "sampler log: a decision could not be sealed");
                            }
                        }
                    }
                    Cmd::Sync { ack } => acks.push(ack),
                }
            }
            let result = if buf.is_empty() {
                Ok(())
            } else {
                self.write_sync(&buf)
            };
            match result {
                Ok(()) => {
                    self.count_appended(records, &decided, &labels);
                    self.note_decided(&decided);
                    if let Err(e) = self.maintain() {
                        tracing::error!(error = %e, "sampler log: segment maintenance failed");
                    }
                    for a in acks {
                        let _ = a.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sampler log: write failed; the requests are refused (retryable)");
                    let e = Arc::new(e);
                    for a in acks {
                        let _ = a.send(Err(e.clone()));
                    }
                    // A failed fsync leaves the file's state unknown: continue in a new segment so
                    // later records do not follow a possibly torn one.
                    self.size = self.segment_bytes;
                    if let Err(e) = self.maintain() {
                        tracing::error!(error = %e, "sampler log: cannot start a new segment");
                    }
                }
            }
        }
    }
}
