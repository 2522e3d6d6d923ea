//! The write-ahead log: numbered segment files of framed records in one directory.
//!
//! One dedicated thread owns the open segment. Appends queue on a channel; the thread takes
//! everything queued, writes it, fsyncs once (group commit), inserts the batches into the head and
//! only then acknowledges them. Because the same thread also seals the head when it rotates the
//! segment, "spans in segments below N" and "spans in sealed head generations" are always the same
//! set — the invariant that lets a flushed segment be deleted safely.
//!
//! ## Encryption at rest
//!
//! With a [`KeyManager`], every batch is sealed (record version 2, see [`record`]) in the
//! appending task — on all cores, off the WAL thread — under its tenant's current WAL data key
//! ([`KeyManager::wal_key`]). No key (a KMS outage) refuses the append retryably
//! ([`StoreError::KeyUnavailable`]); nothing is ever written in plaintext instead. The WAL thread
//! writes a key declaration (version 3: the wrapped key) before the first record of each key in
//! each segment, in the same write and fsync, so every segment replays on its own; each rotation
//! rolls the WAL keys, so each segment generation has its own data keys.
//!
//! Replay reads the key declarations first, unwraps them (async, through the key provider), then
//! replays. A record whose key is gone (a crypto-shredded tenant) is skipped and counted
//! ([`ReplayReport::unreadable_records`]), not truncated: other tenants' records follow it.

pub mod record;

use crate::head::{Head, HeadGen};
use crate::metrics::StoreMetrics;
use crate::StoreError;
use clew_encryption::{KeyError, KeyManager, WalKey, Zeroizing};
use clew_model::SpanBatch;
use futures::stream::{self, StreamExt};
use record::{KeyDecl, KeyId, Record, RecordError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The configuration key named in errors about encryption.
const CONFIG_KEY: &str = "storage.encryption";

/// Upper bound on bytes written per group commit; larger queues are split into several fsyncs.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

enum Command {
    Append {
        record: Vec<u8>,
        batch: SpanBatch,
        /// The key a sealed record was sealed under (declared in the segment before it).
        key: Option<Arc<WalKey>>,
        ack: oneshot::Sender<Result<(), StoreError>>,
    },
    Rotate {
        ack: oneshot::Sender<Result<Sealed, StoreError>>,
    },
}

/// What a rotation hands to the flusher: a sealed head generation and the segments holding it.
pub struct Sealed {
    pub generation: Arc<HeadGen>,
    /// Every segment with a lower number holds only spans of sealed generations.
    pub first_live_segment: u64,
}

pub struct Wal {
    dir: PathBuf,
    tx: mpsc::Sender<Command>,
    keys: Option<Arc<KeyManager>>,
}

/// What replay found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    pub spans: usize,
    /// Bytes cut off torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Key declarations read (encrypted WAL).
    pub key_records: usize,
    /// Sealed records skipped because their key is gone (crypto-shredded tenant) or they do not
    /// open; not counted in `records`/`spans`.
    pub unreadable_records: usize,
    /// Tenants with unreadable records, sorted.
    pub unreadable_tenants: Vec<String>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.wal"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What the pre-pass over the segments found.
#[derive(Default)]
struct KeyScan {
    /// Key declarations by key id (the first of each id).
    decls: HashMap<KeyId, KeyDecl>,
    /// Sealed records and key declarations seen.
    sealed_records: usize,
}

/// Reads a segment's key declarations (read-only; stops where the framing breaks, as replay will).
fn scan_segment(path: &Path, scan: &mut KeyScan) -> Result<(), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut offset = 0usize;
    while offset < data.len() {
        let Ok((body, used)) = record::frame(&data[offset..]) else {
            break;
        };
        match body[0] {
            record::VERSION_PLAIN => {}
            record::VERSION_SEALED => scan.sealed_records += 1,
            record::VERSION_KEY => {
                scan.sealed_records += 1;
                // A malformed declaration is left to replay, which truncates there.
                if let Ok(Record::Key(k)) = record::parse(body) {
                    scan.decls.entry(k.key_id).or_insert(k);
                }
            }
            v => return Err(unknown_version(path, offset, v)),
        }
        offset += used;
    }
    Ok(())
}

/// A checksummed record of a version this build does not know: written by a newer Clew. Refuse to
/// start rather than truncate acknowledged data.
fn unknown_version(path: &Path, offset: usize, version: u8) -> StoreError {
    StoreError::Corrupt {
        what: format!("WAL segment {} at offset {offset}", path.display()),
        detail: format!(
            "record version {version} is unknown to this build (it reads versions {}..={}); \
             it was probably written by a newer Clew — run that version, or move the segment aside",
            record::VERSION_PLAIN,
            record::VERSION_KEY
        ),
    }
}

/// A WAL data key as replay knows it.
enum ReplayKey {
    Ready(Arc<Zeroizing<[u8; 32]>>),
    /// The key provider says the key is gone: the tenant was crypto-shredded.
    Gone(String),
}

/// Unwraps every declared key. Only a gone key is tolerated (its records are skipped): an
/// unreachable provider, denied access or a corrupt envelope fail start-up, so nothing acknowledged
/// is dropped by accident.
async fn unwrap_keys(
    keys: &KeyManager,
    decls: HashMap<KeyId, KeyDecl>,
) -> Result<HashMap<KeyId, ReplayKey>, StoreError> {
    let results: Vec<(KeyId, KeyDecl, Result<_, KeyError>)> = stream::iter(decls)
        .map(|(id, decl)| async move {
            let r = keys.open(&decl.envelope).await;
            (id, decl, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut out = HashMap::with_capacity(results.len());
    for (id, decl, r) in results {
        let tenant = decl.tenant.as_str();
        let state = match r {
            Ok(k) => ReplayKey::Ready(k),
            Err(e @ KeyError::KeyGone { .. }) => ReplayKey::Gone(e.to_string()),
            Err(e) if e.is_retryable() => {
                return Err(StoreError::KeyUnavailable(format!(
                    "cannot unwrap the WAL data key of tenant {tenant:?} at start-up: {e}; the \
                     WAL was not replayed and nothing was dropped: start again once the key \
                     provider is reachable"
                )))
            }
            Err(e) => {
                return Err(StoreError::Config {
                    key: CONFIG_KEY.into(),
                    message: format!(
                        "cannot unwrap the WAL data key of tenant {tenant:?} (key {}) at \
                         start-up: {e}",
                        hex::encode(id)
                    ),
                })
            }
        };
        out.insert(id, state);
    }
    Ok(out)
}

/// Unreadable records per tenant during replay: count and the first reason.
type Unreadable = BTreeMap<String, (usize, String)>;

fn note_unreadable(unreadable: &mut Unreadable, tenant: &str, reason: impl FnOnce() -> String) {
    unreadable
        .entry(tenant.to_string())
        .or_insert_with(|| (0, reason()))
        .0 += 1;
}

/// Replays one segment into `head`, truncating it at the first torn or corrupt record. Sealed
/// records whose key is gone or that do not open are skipped and counted, not truncated.
fn replay_segment(
    path: &Path,
    head: &Head,
    keys: &HashMap<KeyId, ReplayKey>,
    report: &mut ReplayReport,
    unreadable: &mut Unreadable,
) -> Result<(), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut offset = 0usize;
    while offset < data.len() {
        match record::decode(&data[offset..]) {
            Ok((rec, used)) => {
                let batch = match rec {
                    Record::Plain(batch) => Some(batch),
                    Record::Key(_) => {
                        report.key_records += 1;
                        None
                    }
                    Record::Sealed(s) => {
                        let tenant = s.tenant.as_str();
                        match keys.get(&s.key_id) {
                            Some(ReplayKey::Ready(k)) => match s.open(k) {
                                Ok(batch) => Some(batch),
                                Err(e) => {
                                    note_unreadable(unreadable, tenant, || {
                                        format!("record does not open: {e}")
                                    });
                                    None
                                }
                            },
                            Some(ReplayKey::Gone(reason)) => {
                                note_unreadable(unreadable, tenant, || reason.clone());
                                None
                            }
                            None => {
                                note_unreadable(unreadable, tenant, || {
                                    format!(
                                        "no declaration of key {} in the segment",
                                        hex::encode(s.key_id)
                                    )
                                });
                                None
                            }
                        }
                    }
                };
                if let Some(batch) = batch {
                    report.records += 1;
                    report.spans += batch.span_count();
                    head.insert(vec![batch]);
                }
                offset += used;
            }
            Err(RecordError::Version(v)) => return Err(unknown_version(path, offset, v)),
            Err(e) => {
                let cut = (data.len() - offset) as u64;
                tracing::warn!(segment = %path.display(), offset, bytes = cut, error = %e,
                    "WAL segment has a torn or corrupt tail; truncating to the last good record");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(offset as u64).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
                report.truncated_bytes += cut;
                break;
            }
        }
    }
    report.segments += 1;
    Ok(())
}

/// Maps a key failure on the append path: retryable (KMS outage) or a configuration problem.
fn append_key_error(tenant: &str, e: KeyError) -> StoreError {
    if e.is_retryable() {
        StoreError::KeyUnavailable(format!(
            "no WAL data key for tenant {tenant:?} (spans are never written unencrypted): {e}"
        ))
    } else {
        StoreError::Config {
            key: CONFIG_KEY.into(),
            message: format!("cannot get a WAL data key for tenant {tenant:?}: {e}"),
        }
    }
}

fn open_segment(dir: &Path, n: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, n);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // Make the new file's directory entry durable, or a crash could lose the whole segment.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(f)
}

impl Wal {
    /// Replays existing segments into `head`, then starts the writer on a fresh segment. With
    /// `keys`, new records are sealed, and sealed records found on disk are opened with the keys
    /// their segments declare (plaintext records of an older store replay as well); without,
    /// finding sealed records is an error naming `storage.encryption`.
    pub async fn open(
        dir: &Path,
        head: Arc<Head>,
        metrics: StoreMetrics,
        keys: Option<Arc<KeyManager>>,
    ) -> Result<(Self, ReplayReport), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segments = list_segments(dir)?;
        let mut scan = KeyScan::default();
        for &n in &segments {
            scan_segment(&segment_path(dir, n), &mut scan)?;
        }
        let replay_keys = match &keys {
            Some(km) => unwrap_keys(km, scan.decls).await?,
            None if scan.sealed_records > 0 => {
                return Err(StoreError::Config {
                    key: CONFIG_KEY.into(),
                    message: format!(
                        "this data dir holds encrypted WAL records ({} sealed records and key \
                         declarations in {}); configure storage.encryption with the key provider \
                         that wrote them",
                        scan.sealed_records,
                        dir.display()
                    ),
                });
            }
            None => HashMap::new(),
        };
        let mut report = ReplayReport::default();
        let mut unreadable = Unreadable::new();
        for &n in &segments {
            replay_segment(
                &segment_path(dir, n),
                &head,
                &replay_keys,
                &mut report,
                &mut unreadable,
            )?;
        }
        for (tenant, (count, reason)) in &unreadable {
            tracing::warn!(tenant = %tenant, records = count, reason = %reason,
                "WAL records of this tenant are unreadable and were skipped (crypto-shredded key?)");
            report.unreadable_records += count;
            report.unreadable_tenants.push(tenant.clone());
        }
        let next = segments.last().map(|n| n + 1).unwrap_or(1);
        let file = open_segment(dir, next)?;
        let (tx, rx) = mpsc::channel(4096);
        let thread_dir = dir.to_path_buf();
        let thread_keys = keys.clone();
        std::thread::Builder::new()
            .name("clew-wal".into())
            .spawn(move || writer_loop(thread_dir, next, file, rx, head, metrics, thread_keys))
            .map_err(io_err(dir))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                tx,
                keys,
            },
            report,
        ))
    }

    /// Appends a batch; resolves once it is fsynced and visible in the head. With encryption the
    /// record is sealed here, in the caller's task; without a key (KMS outage) the append fails
    /// with [`StoreError::KeyUnavailable`] and nothing is written.
    pub async fn append(&self, batch: SpanBatch) -> Result<(), StoreError> {
        let (record, key) = match &self.keys {
            None => (record::encode_plain(&batch), None),
            Some(keys) => {
                let key = keys
                    .wal_key(batch.tenant.as_str())
                    .await
                    .map_err(|e| append_key_error(batch.tenant.as_str(), e))?;
                (record::encode_sealed(&batch, &key.id, &key.key), Some(key))
            }
        };
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Append {
                record,
                batch,
                key,
                ack,
            })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Seals the current segment and head generation; starts a new segment.
    pub async fn rotate(&self) -> Result<Sealed, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Rotate { ack })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Deletes segments below `first_live` (their spans are in durable blocks now).
    pub fn delete_segments_below(&self, first_live: u64) -> Result<(), StoreError> {
        for n in list_segments(&self.dir)? {
            if n < first_live {
                let p = segment_path(&self.dir, n);
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// Bytes currently held in segment files.
    pub fn disk_bytes(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| fs::metadata(segment_path(&self.dir, n)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Adds `record` to the group buffer, preceded by its key's declaration when the key is not
/// declared in the current segment yet.
fn push_record(
    buf: &mut Vec<u8>,
    declared: &mut HashSet<KeyId>,
    key: Option<&WalKey>,
    record: Vec<u8>,
) {
    if let Some(k) = key {
        if declared.insert(k.id) {
            buf.extend_from_slice(&record::encode_key(&k.envelope.tenant, &k.id, &k.envelope));
        }
    }
    if buf.is_empty() {
        *buf = record;
    } else {
        buf.extend_from_slice(&record);
    }
}

fn writer_loop(
    dir: PathBuf,
    mut segment: u64,
    mut file: File,
    mut rx: mpsc::Receiver<Command>,
    head: Arc<Head>,
    metrics: StoreMetrics,
    keys: Option<Arc<KeyManager>>,
) {
    // Keys declared in the current segment (reset whenever the segment changes).
    let mut declared: HashSet<KeyId> = HashSet::new();
    let mut pending: Option<Command> = None;
    loop {
        let cmd = match pending.take() {
            Some(c) => c,
            None => match rx.blocking_recv() {
                Some(c) => c,
                None => return,
            },
        };
        match cmd {
            Command::Append {
                record,
                batch,
                key,
                ack,
            } => {
                let mut buf = Vec::new();
                push_record(&mut buf, &mut declared, key.as_deref(), record);
                let mut batches = vec![batch];
                let mut acks = vec![ack];
                // Group commit: take whatever else is already queued.
                while buf.len() < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Command::Append {
                            record,
                            batch,
                            key,
                            ack,
                        }) => {
                            push_record(&mut buf, &mut declared, key.as_deref(), record);
                            batches.push(batch);
                            acks.push(ack);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = Instant::now();
                let result = file.write_all(&buf).and_then(|_| file.sync_data());
                metrics.observe_fsync(started.elapsed(), buf.len(), acks.len());
                match result {
                    Ok(()) => {
                        head.insert(batches);
                        for a in acks {
                            let _ = a.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, segment, "WAL write failed; rejecting the group");
                        // A declaration may be in the torn part: declare again before next use.
                        declared.clear();
                        // A partial write may have left a torn record; start a new segment so the
                        // next records are not appended behind it (replay truncates the tail).
                        let msg = e.to_string();
                        for a in acks {
                            let _ = a.send(Err(StoreError::Io {
                                path: segment_path(&dir, segment).display().to_string(),
                                source: std::io::Error::other(msg.clone()),
                            }));
                        }
                        if let Ok(f) = open_segment(&dir, segment + 1) {
                            segment += 1;
                            file = f;
                        }
                    }
                }
            }
            Command::Rotate { ack } => {
                let result = open_segment(&dir, segment + 1).map(|f| {
                    file = f;
                    segment += 1;
                    declared.clear();
                    // New data keys for the new segment generation; records already sealed under
                    // the old keys are declared again in whichever segment they land in.
                    if let Some(k) = &keys {
                        k.roll_wal_keys();
                    }
                    Sealed {
                        generation: head.seal(),
                        first_live_segment: segment,
                    }
                });
                let _ = ack.send(result);
            }
        }
    }
}
