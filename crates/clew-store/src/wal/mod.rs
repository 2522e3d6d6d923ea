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
use crate::quarantine::Quarantine;
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
    /// Damaged regions (a flipped byte, a malformed record) skipped in the middle of a segment or
    /// cut off as a tail that is not a torn write. The records after a skipped region replay.
    pub damaged_regions: usize,
    /// Bytes of those regions.
    pub damaged_bytes: u64,
    /// Copies of segments with damaged regions, taken before replay changed them
    /// (`{data_dir}/quarantine/wal/`).
    pub quarantined_segments: Vec<PathBuf>,
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
    clew_encryption::segment_files::list(dir, ".wal").map_err(io_err(dir))
}

/// What the pre-pass over the segments found.
#[derive(Default)]
struct KeyScan {
    /// Key declarations by key id (the first of each id).
    decls: HashMap<KeyId, KeyDecl>,
    /// Sealed records and key declarations seen.
    sealed_records: usize,
}

/// Reads a segment's key declarations (read-only; skips damaged regions, as replay will).
fn scan_segment(path: &Path, scan: &mut KeyScan) -> Result<(), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    for piece in record::walk(&data) {
        let record::Piece::Record { offset, len } = piece else {
            continue;
        };
        let body = &data[offset + record::HEADER_LEN..offset + len];
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

/// Replays one segment into `head`. A damaged region in the middle (a flipped byte: its record's
/// checksum fails) is skipped and replay resynchronises on the next record whose frame checks
/// (`record::walk`), so the acknowledged records after it are kept; the segment is first copied
/// to the quarantine, then rewritten without the damage. A damaged tail is cut off (a torn write
/// after a crash: nothing there was acknowledged; anything else is quarantined first). Sealed
/// records whose key is gone or that do not open are skipped and counted, not cut.
fn replay_segment(
    path: &Path,
    head: &Head,
    keys: &HashMap<KeyId, ReplayKey>,
    report: &mut ReplayReport,
    unreadable: &mut Unreadable,
    quarantine: &Quarantine,
) -> Result<(), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    // Byte ranges of the records to keep, and what is wrong elsewhere.
    let mut keep: Vec<(usize, usize)> = Vec::new();
    let mut damage: Vec<String> = Vec::new();
    let mut skipped_inside = false;
    let mut tail: Option<(usize, usize, bool)> = None;
    for piece in record::walk(&data) {
        let (offset, len) = match piece {
            record::Piece::Record { offset, len } => (offset, len),
            record::Piece::Damaged {
                offset,
                len,
                error,
                resynced,
            } => {
                if resynced {
                    damage.push(format!("{len} bytes at offset {offset} skipped: {error}"));
                    skipped_inside = true;
                    report.damaged_regions += 1;
                    report.damaged_bytes += len as u64;
                } else {
                    let torn = record::is_torn_tail(&data, offset, &error);
                    if !torn {
                        damage.push(format!("{len} bytes at offset {offset} cut off: {error}"));
                        report.damaged_regions += 1;
                        report.damaged_bytes += len as u64;
                    }
                    tail = Some((offset, len, torn));
                }
                continue;
            }
        };
        let rec = match record::parse(&data[offset + record::HEADER_LEN..offset + len]) {
            Ok(rec) => rec,
            Err(RecordError::Version(v)) => return Err(unknown_version(path, offset, v)),
            // The checksum matched but the content is not a record this build wrote (a bug,
            // not the disk): skip it like damage, keep the rest.
            Err(e) => {
                damage.push(format!("{len} bytes at offset {offset} skipped: {e}"));
                skipped_inside = true;
                report.damaged_regions += 1;
                report.damaged_bytes += len as u64;
                continue;
            }
        };
        keep.push((offset, len));
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
    }
    if !damage.is_empty() {
        let reason = damage.join("; ");
        tracing::error!(segment = %path.display(), damage = %reason,
            "WAL segment is damaged; the damaged bytes are skipped, the segment is copied to quarantine");
        report
            .quarantined_segments
            .push(quarantine.wal_segment(path, &reason)?);
    }
    if let Some((offset, len, torn)) = tail {
        if torn {
            tracing::warn!(segment = %path.display(), offset, bytes = len,
                "WAL segment has a torn tail; truncating to the last good record");
        }
        report.truncated_bytes += len as u64;
    }
    if skipped_inside {
        rewrite_segment(path, &data, &keep)?;
    } else if let Some((offset, _, _)) = tail {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(offset as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    report.segments += 1;
    Ok(())
}

/// Replaces a segment with only the given record ranges (a temp file, fsynced, renamed over it,
/// the directory fsynced), so the next start does not meet the same damage again.
pub(crate) fn rewrite_segment(
    path: &Path,
    data: &[u8],
    keep: &[(usize, usize)],
) -> Result<(), StoreError> {
    let tmp = path.with_extension("wal.repair");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    for &(offset, len) in keep {
        f.write_all(&data[offset..offset + len])
            .map_err(io_err(&tmp))?;
    }
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
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
        // The WAL lives in `{data_dir}/wal`: its quarantine is the data dir's.
        let quarantine = Quarantine::new(dir.parent().unwrap_or(dir));
        for &n in &segments {
            replay_segment(
                &segment_path(dir, n),
                &head,
                &replay_keys,
                &mut report,
                &mut unreadable,
                &quarantine,
            )?;
        }
        metrics.wal_damage(
            report.damaged_regions as u64,
            report.damaged_bytes,
            report.quarantined_segments.len() as u64,
        );
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

/// Leaves a segment whose tail holds a failed write that could not be cut off: opens the next
/// segment (replay truncates the torn tail of the old one; nothing in it was acknowledged).
/// Returns the new segment's length (0) or the error that keeps the WAL refusing appends.
fn heal_torn(
    dir: &Path,
    segment: &mut u64,
    file: &mut File,
    torn: &mut bool,
) -> std::io::Result<u64> {
    match open_segment(dir, *segment + 1) {
        Ok(f) => {
            *segment += 1;
            *file = f;
            *torn = false;
            Ok(0)
        }
        Err(StoreError::Io { source, .. }) => Err(source),
        Err(e) => Err(std::io::Error::other(e.to_string())),
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
    // The current segment ends in bytes of a failed write that could not be cut off.
    let mut torn = false;
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
                // Where this group starts: a failed write is cut back to here (below).
                let before = if torn {
                    // An earlier failure could neither cut its torn bytes off nor open a new
                    // segment: writing behind them would hide these records from replay.
                    heal_torn(&dir, &mut segment, &mut file, &mut torn)
                } else {
                    file.metadata().map(|m| m.len())
                };
                let result = before.and_then(|before| {
                    file.write_all(&buf)
                        .and_then(|_| file.sync_data())
                        .inspect_err(|_| {
                            // ENOSPC (or EIO) mid-group: nothing of it is acknowledged. Cut the
                            // segment back to its last complete record so it stays replayable and
                            // the next group appends behind good records; if that fails too,
                            // move to a new segment before the next write (`torn`).
                            let cut = file.set_len(before).and_then(|_| file.sync_data());
                            if let Err(c) = cut {
                                tracing::error!(error = %c, segment, "cannot cut a failed WAL write back; replay will truncate it");
                                torn = true;
                            }
                        })
                });
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
                        // The error kind is kept: a full disk (`StorageFull`) is retryable for
                        // the client, other I/O errors are internal.
                        let msg = e.to_string();
                        for a in acks {
                            let _ = a.send(Err(StoreError::Io {
                                path: segment_path(&dir, segment).display().to_string(),
                                source: std::io::Error::new(e.kind(), msg.clone()),
                            }));
                        }
                        if torn {
                            let _ = heal_torn(&dir, &mut segment, &mut file, &mut torn);
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
