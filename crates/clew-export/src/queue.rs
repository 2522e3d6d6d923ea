//! The durable sending queue: numbered segment files of framed records in one directory, plus a
//! durable read cursor.
//!
//! * Segment `{n:016}.seg`: records `[len: u32 LE][crc32: u32 LE][body]` (CRC IEEE over the body
//!   as stored), body = `[version: u8][tenant_len: u16 LE][tenant]…` — the WAL's record format,
//!   framed, sealed and checked by the codec both share ([`clew_encryption::sealed_record`], here
//!   with the span count as the batch records' clear field and pretty envelope JSON):
//!   * version 1 — plaintext batch: `…[span_count: u32 LE][ExportTraceServiceRequest protobuf]`;
//!     written without `storage.encryption` (and by older Clew); always read.
//!   * version 2 — sealed batch: `…[span_count: u32 LE][key id: 16][sealed]`, `sealed` =
//!     [`clew_encryption::seal_record`]`(data key, AAD = the clear header before it, protobuf)`
//!     (AES-256-GCM), so a record moved to another tenant or key does not open.
//!   * version 3 — key declaration: `…[key id: 16][envelope JSON]`: the data key wrapped by the
//!     tenant's key-encryption key (no key material, no span data). The writer puts one before
//!     the first record of each key in each segment, so a segment is readable on its own.
//!
//!   Tenant name and span count stay in clear (they pick the key and size the report; not span
//!   data). Records are never rewritten; a segment is deleted once the cursor has passed it.
//! * `lock`: an exclusive advisory lock (`flock`) held while the queue is open, so a second Clew
//!   on the same data dir fails to start instead of interleaving appends and cursors.
//! * `cursor`: two 32-byte slots, `["CLQC"][seq: u64 LE][segment: u64 LE][offset: u64 LE][crc32 of
//!   the 28 bytes before: u32 LE]`, written alternately (slot `seq % 2`) and `fdatasync`ed: a torn
//!   write spoils one slot, the other still holds the previous position. The valid slot with the
//!   highest `seq` is the position of the first record not yet acknowledged downstream.
//!
//! Appends go through one writer thread that takes everything queued, writes it, `fdatasync`s once
//! (group commit) and only then makes the records visible to readers and acknowledges the
//! appenders. Readers lease consecutive records (of one tenant, up to a byte budget); the cursor
//! advances — durably — only when the lowest outstanding lease is acknowledged, so a crash resends
//! at most what was in flight (at-least-once).
//!
//! Opening scans every segment from the cursor on: a record whose framing is broken (torn write,
//! bit flip, garbage) is cut off with the rest of its segment, with a warning; a checksummed
//! record of an unknown version refuses to open (written by a newer Clew: never drop it silently).
//!
//! Encryption ([`Queue::open_with_keys`], with `storage.encryption`'s key manager): every new
//! batch is sealed in the appending task under its tenant's current queue data key (one per
//! tenant per segment, generated through the key provider; the writer rolls them when it starts
//! a segment). No key (a KMS outage) refuses the append with [`PushError::KeyUnavailable`]
//! (retryable) — never a plaintext write. [`Queue::open_with_keys`] reads the declarations,
//! unwraps them once, and then drains plaintext (older) and sealed records alike; records whose
//! key is gone (crypto-shredded tenant) are skipped and counted. Sealed records or declarations
//! found without keys configured fail [`Queue::open`] with [`QueueError::EncryptionRequired`].

use clew_encryption::dir_lock::{DirLock, DirLockError};
use clew_encryption::sealed::record::RecordKey;
use clew_encryption::sealed_record::{self as codec, EnvelopeJson, Layout};
use clew_encryption::{Envelope, KeyError, KeyManager};
use clew_model::Tenant;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::{oneshot, watch};

pub use clew_encryption::sealed_record::{
    frame, KeyId, RecordError, HEADER_LEN, KEY_ID_LEN, MAX_RECORD_BYTES, VERSION_KEY,
    VERSION_SEALED,
};
/// Body version of a plaintext batch record.
pub const VERSION: u8 = codec::VERSION_PLAIN;
/// The queue's record layout: the span count (`u32 LE`) in clear in batch records; declarations
/// in pretty JSON ([`Envelope::to_json`], as the queue always wrote).
const LAYOUT: Layout<4> = Layout::new(EnvelopeJson::Pretty);
const LOCK_FILE: &str = "lock";
/// The configuration key named in errors about encryption.
const CONFIG_KEY: &str = "storage.encryption";
/// Upper bound on bytes written per group commit.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
const CURSOR_FILE: &str = "cursor";
const CURSOR_MAGIC: &[u8; 4] = b"CLQC";
const CURSOR_SLOT: usize = 32;

/// A place in the queue: a segment number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sending queue {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("sending queue {path} at offset {offset}: record version {version} is unknown to this build (it reads versions 1 to {VERSION_KEY}); it was probably written by a newer Clew — run that version, or move the queue directory aside")]
    UnknownVersion {
        path: String,
        offset: u64,
        version: u8,
    },
    /// Another process (or another open in this one) holds the queue directory.
    #[error("sending queue {path} is locked by another process{holder} (another Clew using the same data dir or sending_queue.storage.directory?); stop it, or give this one its own directory")]
    Locked {
        path: String,
        /// ` (PID n)` when the holder's PID is readable from the lock file, else empty.
        holder: String,
    },
    /// Sealed records on disk but no `storage.encryption` configured.
    #[error("sending queue {path} holds encrypted records ({records} sealed records and key declarations) but `{CONFIG_KEY}` is not configured; configure it with the key provider that wrote them (see docs/encryption-at-rest.md), or move the queue directory aside")]
    EncryptionRequired { path: String, records: usize },
    /// A declared queue data key cannot be unwrapped at start-up (provider unreachable, access
    /// denied, corrupt envelope). A key that is gone (crypto-shredded tenant) is not an error.
    #[error("sending queue {path}: cannot unwrap the data key of tenant {tenant:?} at start-up ({key}): {message}; nothing was dropped: start again once the key provider answers")]
    Key {
        path: String,
        tenant: String,
        key: &'static str,
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The queue is at `max_bytes` (or `queue_size` items): retry later.
    #[error("sending queue full: {0}")]
    Full(String),
    /// The record alone is larger than the whole queue: it can never be taken.
    #[error("batch of {len} bytes is larger than the sending queue ({max} bytes)")]
    TooLarge { len: u64, max: u64 },
    #[error("sending queue closed")]
    Closed,
    #[error("sending queue write failed: {0}")]
    Io(String),
    /// Encryption is on but no data key can be had now (KMS outage): retry later. Nothing was
    /// written (spans are never queued unencrypted).
    #[error("no sending-queue data key for tenant {tenant:?} (spans are never queued unencrypted): {message}")]
    KeyUnavailable { tenant: String, message: String },
    /// Encryption is on and the provider refuses for good (key gone, access denied, config).
    #[error("sending-queue data key for tenant {tenant:?} refused: {message}")]
    Key { tenant: String, message: String },
}

/// The span count as the clear field of a batch record (clamped: it only sizes reports).
fn spans_field(spans: u64) -> [u8; 4] {
    (spans.min(u32::MAX as u64) as u32).to_le_bytes()
}

/// Encodes one plaintext (version 1) record (header included).
pub fn encode_record(tenant: &Tenant, spans: u64, payload: &[u8]) -> Vec<u8> {
    LAYOUT.encode_plain(tenant.as_str(), &spans_field(spans), payload)
}

/// Encodes one sealed (version 2) record under `key`, named `key_id`.
pub fn encode_sealed(
    tenant: &Tenant,
    spans: u64,
    payload: &[u8],
    key_id: &KeyId,
    key: &RecordKey,
) -> Vec<u8> {
    LAYOUT.encode_sealed(tenant.as_str(), &spans_field(spans), key_id, key, payload)
}

/// Encodes a key declaration (version 3): the envelope of `key_id`, no key material.
pub fn encode_key(tenant: &str, key_id: &KeyId, envelope: &Envelope) -> Vec<u8> {
    LAYOUT.encode_key(tenant, key_id, envelope)
}

/// A checked record body, parsed.
#[derive(Debug)]
pub enum Body<'a> {
    /// Version 1.
    Plain {
        tenant: Tenant,
        spans: u64,
        payload: &'a [u8],
    },
    /// Version 2: open with the key named `key_id`.
    Sealed {
        tenant: Tenant,
        spans: u64,
        key_id: KeyId,
        body: codec::SealedBody<'a, 4>,
    },
    /// Version 3.
    Key {
        tenant: Tenant,
        key_id: KeyId,
        envelope: Envelope,
    },
}

/// A plaintext record body's parts: tenant, span count, protobuf (other versions are errors).
pub fn parse_body(body: &[u8]) -> Result<(Tenant, u64, &[u8]), RecordError> {
    match parse(body)? {
        Body::Plain {
            tenant,
            spans,
            payload,
        } => Ok((tenant, spans, payload)),
        Body::Sealed { .. } => Err(RecordError::Version(VERSION_SEALED)),
        Body::Key { .. } => Err(RecordError::Version(VERSION_KEY)),
    }
}

fn tenant(name: &str) -> Result<Tenant, RecordError> {
    Tenant::new(name).map_err(|e| RecordError::Malformed(e.to_string()))
}

/// Parses a checked body (from [`frame`]) of any known version.
pub fn parse(body: &[u8]) -> Result<Body<'_>, RecordError> {
    Ok(match LAYOUT.parse(body)? {
        codec::Body::Plain {
            tenant: t,
            clear,
            payload,
        } => Body::Plain {
            tenant: tenant(t)?,
            spans: u32::from_le_bytes(clear).into(),
            payload,
        },
        codec::Body::Sealed(s) => Body::Sealed {
            tenant: tenant(s.tenant)?,
            spans: u32::from_le_bytes(s.clear).into(),
            key_id: s.key_id,
            body: s,
        },
        codec::Body::Key(k) => Body::Key {
            tenant: tenant(k.tenant)?,
            key_id: k.key_id,
            envelope: k.envelope,
        },
    })
}

/// Where and how big the queue is.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub dir: PathBuf,
    /// Bytes of unacknowledged records (framing included) the queue holds at most.
    pub max_bytes: u64,
    /// Unacknowledged records the queue holds at most (`None`: only `max_bytes` bounds it).
    pub max_items: Option<u64>,
    /// A segment is closed and a new one opened once it is this large.
    pub segment_bytes: u64,
}

impl QueueOptions {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            max_items: None,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024),
        }
    }
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    /// Records not yet acknowledged downstream (they will be sent).
    pub pending_records: u64,
    pub pending_spans: u64,
    pub pending_bytes: u64,
    /// Bytes cut off corrupt or torn segment tails.
    pub truncated_bytes: u64,
    /// Key declarations read (encrypted queue).
    pub key_records: u64,
    /// Pending sealed records that cannot be opened (key gone: crypto-shredded tenant, or no
    /// declaration): they will be skipped, not sent.
    pub unreadable_records: u64,
}

/// A queue data key this process seals with: the tenant's current one.
struct SealKey {
    id: KeyId,
    key: Arc<RecordKey>,
    envelope: Envelope,
}

/// A key sealed records can be opened with.
#[derive(Clone)]
enum KnownKey {
    Ready(Arc<RecordKey>),
    /// The provider says the key is gone (crypto-shredded tenant): its records are skipped.
    Gone(String),
}

/// The queue's encryption state.
struct QueueKeys {
    manager: Arc<KeyManager>,
    /// Each tenant's current sealing key; cleared when the writer starts a segment, so each
    /// segment generation gets fresh data keys.
    current: Mutex<HashMap<String, Arc<SealKey>>>,
    /// Every key a live record may be sealed with, and the newest segment declaring it (keys
    /// only declared in deleted segments are forgotten).
    known: Mutex<HashMap<KeyId, (KnownKey, u64)>>,
}

impl QueueKeys {
    /// The tenant's current sealing key, generated (one provider call) on first use.
    async fn current(&self, tenant: &str) -> Result<Arc<SealKey>, PushError> {
        if let Some(k) = lock(&self.current).get(tenant) {
            return Ok(k.clone());
        }
        let dk = self.manager.new_file_key(tenant).await.map_err(|e| {
            if e.is_retryable() {
                PushError::KeyUnavailable {
                    tenant: tenant.to_string(),
                    message: e.to_string(),
                }
            } else {
                PushError::Key {
                    tenant: tenant.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        let id: KeyId = rand::random();
        let fresh = Arc::new(SealKey {
            id,
            key: Arc::new(RecordKey::new(&dk.plaintext)),
            envelope: dk.envelope,
        });
        // Not yet declared in any segment: u64::MAX keeps it until the writer declares it.
        lock(&self.known).insert(id, (KnownKey::Ready(fresh.key.clone()), u64::MAX));
        // If another task raced us, keep the first key so records of a segment share it.
        Ok(lock(&self.current)
            .entry(tenant.to_string())
            .or_insert(fresh)
            .clone())
    }
}

/// Consecutive records of one tenant handed to a consumer: their protobuf payloads concatenated
/// (protobuf merges concatenated messages: the repeated `resource_spans` are appended), so they
/// go out as one request.
#[derive(Debug)]
pub struct Lease {
    pub tenant: Tenant,
    pub spans: u64,
    pub records: u64,
    pub payload: Vec<u8>,
    /// Each record's byte range in `payload` and its span count, to resend them one by one
    /// when the merged request is too large for the destination.
    pub parts: Vec<(std::ops::Range<usize>, u64)>,
    pub start: Pos,
    pub end: Pos,
    bytes: u64,
}

struct State {
    /// Committed length of every live segment (the writer's included).
    segments: BTreeMap<u64, u64>,
    /// Next record to lease.
    read: Pos,
    /// Durable cursor: first record not acknowledged.
    acked: Pos,
    /// Outstanding leases: start → (end).
    in_flight: BTreeMap<Pos, Pos>,
    /// Committed, unacknowledged bytes and records.
    used_bytes: u64,
    used_items: u64,
    /// Accepted by `push`, not yet committed.
    reserved_bytes: u64,
    reserved_items: u64,
    cursor_seq: u64,
    cursor_file: File,
    /// Unreadable sealed records before this position were already taken out of `used_*`.
    skipped: Pos,
}

struct Shared {
    opts: QueueOptions,
    state: Mutex<State>,
    /// Serializes readers (the open read file).
    reader: Mutex<Option<(u64, File)>>,
    /// Bumped after every commit.
    committed: watch::Sender<u64>,
    keys: Option<QueueKeys>,
    /// Holds the directory's advisory lock until [`Queue::close`] (or the queue is dropped).
    dir_lock: Mutex<Option<DirLock>>,
}

type AppendAck = oneshot::Sender<Result<(), String>>;
/// A record, the key it is sealed with (to declare it in the segment first), and its ack.
type Append = (Vec<u8>, Option<Arc<SealKey>>, AppendAck);
type AppendTx = std_mpsc::Sender<Append>;

/// The durable queue. `push` returns once the record is fsynced.
pub struct Queue {
    shared: Arc<Shared>,
    tx: Mutex<Option<AppendTx>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.seg"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, QueueError> {
    clew_encryption::segment_files::list(dir, ".seg").map_err(io_err(dir))
}

fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn cursor_slot(seq: u64, pos: Pos) -> [u8; CURSOR_SLOT] {
    let mut b = [0u8; CURSOR_SLOT];
    b[..4].copy_from_slice(CURSOR_MAGIC);
    b[4..12].copy_from_slice(&seq.to_le_bytes());
    b[12..20].copy_from_slice(&pos.segment.to_le_bytes());
    b[20..28].copy_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

fn parse_cursor_slot(b: &[u8]) -> Option<(u64, Pos)> {
    if b.len() < CURSOR_SLOT || &b[..4] != CURSOR_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
    if crc32fast::hash(&b[..28]) != crc {
        return None;
    }
    let u = |r: std::ops::Range<usize>| b[r].try_into().ok().map(u64::from_le_bytes);
    Some((
        u(4..12)?,
        Pos {
            segment: u(12..20)?,
            offset: u(20..28)?,
        },
    ))
}

/// Reads the cursor file: the newest valid slot.
fn read_cursor(data: &[u8]) -> Option<(u64, Pos)> {
    let a = parse_cursor_slot(data.get(..CURSOR_SLOT)?);
    let b = data
        .get(CURSOR_SLOT..2 * CURSOR_SLOT)
        .and_then(parse_cursor_slot);
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Creates `dir` and takes its exclusive advisory lock (released when the file is closed, also
/// when the process dies) — the same lock as the store's data dir
/// ([`clew_encryption::dir_lock`]).
fn lock_dir(dir: &Path) -> Result<DirLock, QueueError> {
    DirLock::acquire(dir, LOCK_FILE).map_err(|e| match e {
        DirLockError::Locked { dir, pid } => QueueError::Locked {
            path: dir.display().to_string(),
            holder: pid.map(|p| format!(" (PID {p})")).unwrap_or_default(),
        },
        DirLockError::Io { path, source } => QueueError::Io {
            path: path.display().to_string(),
            source,
        },
    })
}

/// Key declarations found on disk: key id → (tenant, envelope, newest segment declaring it).
type Decls = HashMap<KeyId, (Tenant, Envelope, u64)>;

/// Reads the key declarations of every segment the cursor has not passed (read-only; stops
/// where the framing breaks, as opening will).
fn scan_keys(dir: &Path) -> Result<Decls, QueueError> {
    let cursor_segment = fs::read(dir.join(CURSOR_FILE))
        .ok()
        .and_then(|raw| read_cursor(&raw))
        .map(|(_, p)| p.segment)
        .unwrap_or(0);
    let mut decls = Decls::new();
    for n in list_segments(dir)? {
        if n < cursor_segment {
            continue;
        }
        let path = segment_path(dir, n);
        let data = fs::read(&path).map_err(io_err(&path))?;
        let mut offset = 0;
        while let Ok((body, used)) = frame(&data[offset..]) {
            if let Ok(Body::Key {
                tenant,
                key_id,
                envelope,
            }) = parse(body)
            {
                decls.insert(key_id, (tenant, envelope, n));
            }
            offset += used;
        }
    }
    Ok(decls)
}

impl Queue {
    /// Opens (or creates) the queue in `opts.dir` without encryption, recovering what is
    /// pending. Sealed records on disk fail it ([`QueueError::EncryptionRequired`]).
    pub fn open(opts: QueueOptions) -> Result<(Arc<Queue>, OpenReport), QueueError> {
        let lock_file = lock_dir(&opts.dir)?;
        Self::open_locked(opts, lock_file, None)
    }

    /// Opens the queue with `storage.encryption`'s key manager (or without, like [`Self::open`]):
    /// new records are sealed; the data keys declared on disk are unwrapped once, here. A key
    /// the provider calls gone (crypto-shredded tenant) only makes its records unreadable
    /// (skipped, counted in [`OpenReport::unreadable_records`]); any other key failure (provider
    /// unreachable, access denied) fails the open, so nothing is dropped for a passing outage.
    pub async fn open_with_keys(
        opts: QueueOptions,
        keys: Option<Arc<KeyManager>>,
    ) -> Result<(Arc<Queue>, OpenReport), QueueError> {
        let Some(manager) = keys else {
            return Self::open(opts);
        };
        let lock_file = lock_dir(&opts.dir)?;
        let dir = opts.dir.clone();
        let decls = tokio::task::spawn_blocking(move || scan_keys(&dir))
            .await
            .map_err(|e| QueueError::Io {
                path: opts.dir.display().to_string(),
                source: io::Error::other(e.to_string()),
            })??;
        let mut known = HashMap::new();
        for (id, (tenant, envelope, segment)) in decls {
            match manager.open(&envelope).await {
                Ok(k) => {
                    known.insert(id, (KnownKey::Ready(Arc::new(RecordKey::new(&k))), segment));
                }
                Err(e @ KeyError::KeyGone { .. }) => {
                    tracing::warn!(dir = %opts.dir.display(), tenant = tenant.as_str(), error = %e, "a sending-queue data key is gone (crypto-shredded tenant?): its queued batches cannot be sent and will be skipped");
                    known.insert(id, (KnownKey::Gone(e.to_string()), segment));
                }
                Err(e) => {
                    return Err(QueueError::Key {
                        path: opts.dir.display().to_string(),
                        tenant: tenant.as_str().to_string(),
                        key: CONFIG_KEY,
                        message: e.to_string(),
                    })
                }
            }
        }
        let keys = QueueKeys {
            manager,
            current: Mutex::new(HashMap::new()),
            known: Mutex::new(known),
        };
        Self::open_locked(opts, lock_file, Some(keys))
    }

    fn open_locked(
        opts: QueueOptions,
        lock_file: DirLock,
        keys: Option<QueueKeys>,
    ) -> Result<(Arc<Queue>, OpenReport), QueueError> {
        let dir = opts.dir.clone();
        let cursor_path = dir.join(CURSOR_FILE);
        let existed = cursor_path.exists();
        let mut cursor_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&cursor_path)
            .map_err(io_err(&cursor_path))?;
        if !existed {
            sync_dir(&dir)?;
        }
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut cursor_file, &mut raw).map_err(io_err(&cursor_path))?;
        let cursor = read_cursor(&raw);
        if cursor.is_none() && !raw.is_empty() {
            tracing::warn!(path = %cursor_path.display(), "sending queue cursor unreadable; resending the queue from its oldest segment (duplicates possible, nothing lost)");
        }
        let (cursor_seq, mut acked) = cursor.unwrap_or((0, Pos::default()));

        let mut report = OpenReport::default();
        let mut segments = BTreeMap::new();
        let mut used_bytes = 0u64;
        let mut used_items = 0u64;
        // Sealed records and declarations found while no keys are configured.
        let mut sealed_found = 0usize;
        let known = keys.as_ref().map(|k| lock(&k.known));
        for n in list_segments(&dir)? {
            let path = segment_path(&dir, n);
            if n < acked.segment {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let data = fs::read(&path).map_err(io_err(&path))?;
            let mut offset = 0usize;
            let mut cut = None;
            while offset < data.len() {
                match frame(&data[offset..]) {
                    Ok((body, used)) => {
                        let pending = n > acked.segment || offset as u64 >= acked.offset;
                        // Batch records count (span count); key declarations do not.
                        let spans = match parse(body) {
                            Ok(Body::Plain { spans, .. }) => spans,
                            Ok(Body::Sealed { spans, key_id, .. }) => {
                                match &known {
                                    None => sealed_found += 1,
                                    Some(known) => {
                                        let ready = matches!(
                                            known.get(&key_id),
                                            Some((KnownKey::Ready(_), _))
                                        );
                                        if pending && !ready {
                                            report.unreadable_records += 1;
                                        }
                                    }
                                }
                                spans
                            }
                            Ok(Body::Key { .. }) => {
                                match &known {
                                    None => sealed_found += 1,
                                    Some(_) => report.key_records += 1,
                                }
                                offset += used;
                                continue;
                            }
                            Err(RecordError::Version(v)) => {
                                return Err(QueueError::UnknownVersion {
                                    path: path.display().to_string(),
                                    offset: offset as u64,
                                    version: v,
                                })
                            }
                            Err(e) => {
                                cut = Some(e);
                                break;
                            }
                        };
                        if pending {
                            used_bytes += used as u64;
                            used_items += 1;
                            report.pending_spans += spans;
                        }
                        if n == acked.segment
                            && (offset as u64) < acked.offset
                            && (offset + used) as u64 > acked.offset
                        {
                            // The cursor points inside a record: it cannot have been written
                            // by this queue; resend that record rather than lose it.
                            tracing::warn!(path = %path.display(), cursor = acked.offset, "sending queue cursor is not on a record boundary; moving it back to {offset}");
                            acked.offset = offset as u64;
                            used_bytes += used as u64;
                            used_items += 1;
                        }
                        offset += used;
                    }
                    Err(e) => {
                        cut = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = cut {
                let lost = (data.len() - offset) as u64;
                tracing::warn!(path = %path.display(), offset, bytes = lost, error = %e, "sending queue segment has a corrupt or torn tail; truncating it");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(offset as u64).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                report.truncated_bytes += lost;
            }
            if n == acked.segment && acked.offset > offset as u64 {
                tracing::warn!(path = %path.display(), cursor = acked.offset, len = offset, "sending queue cursor is past the end of its segment; moving it to the end");
                acked.offset = offset as u64;
            }
            segments.insert(n, offset as u64);
        }
        drop(known);
        if sealed_found > 0 {
            return Err(QueueError::EncryptionRequired {
                path: dir.display().to_string(),
                records: sealed_found,
            });
        }
        report.segments = segments.len();
        report.pending_bytes = used_bytes;
        report.pending_records = used_items;
        // The cursor's segment is gone (or there is none yet): start at the oldest segment.
        if !segments.contains_key(&acked.segment) {
            acked = Pos {
                segment: segments.keys().next().copied().unwrap_or(1),
                offset: 0,
            };
        }
        // Always append to a fresh segment.
        let write_seg = segments
            .keys()
            .next_back()
            .map(|n| n + 1)
            .unwrap_or(acked.segment.max(1));
        let write_path = segment_path(&dir, write_seg);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&write_path)
            .map_err(io_err(&write_path))?;
        sync_dir(&dir)?;
        segments.insert(write_seg, 0);
        if !segments.contains_key(&acked.segment) {
            acked = Pos {
                segment: write_seg,
                offset: 0,
            };
        }

        let (committed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(State {
                segments,
                read: acked,
                acked,
                in_flight: BTreeMap::new(),
                used_bytes,
                used_items,
                reserved_bytes: 0,
                reserved_items: 0,
                cursor_seq,
                cursor_file,
                skipped: Pos::default(),
            }),
            reader: Mutex::new(None),
            committed,
            keys,
            dir_lock: Mutex::new(Some(lock_file)),
        });
        let (tx, rx) = std_mpsc::channel();
        let s2 = shared.clone();
        let writer = std::thread::Builder::new()
            .name("clew-export-queue".into())
            .spawn(move || writer_loop(s2, rx, file, write_seg))
            .map_err(io_err(&dir))?;
        Ok((
            Arc::new(Queue {
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            }),
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.opts.dir
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.shared.opts.max_bytes
    }

    /// Committed bytes not yet acknowledged downstream.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.shared.state).used_bytes
    }

    /// Committed records not yet acknowledged downstream.
    pub fn len(&self) -> u64 {
        lock(&self.shared.state).used_items
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one record; returns once it is on disk (fsynced).
    /// With encryption the record is sealed here, in the caller's task; no key means
    /// [`PushError::KeyUnavailable`] and nothing written.
    pub async fn push(&self, tenant: &Tenant, spans: u64, payload: &[u8]) -> Result<(), PushError> {
        let (record, key) = match &self.shared.keys {
            None => (encode_record(tenant, spans, payload), None),
            Some(keys) => {
                let k = keys.current(tenant.as_str()).await?;
                (
                    encode_sealed(tenant, spans, payload, &k.id, &k.key),
                    Some(k),
                )
            }
        };
        let len = record.len() as u64;
        let max = self.shared.opts.max_bytes;
        if len > max {
            return Err(PushError::TooLarge { len, max });
        }
        {
            let mut st = lock(&self.shared.state);
            let bytes = st.used_bytes + st.reserved_bytes;
            if bytes + len > max {
                return Err(PushError::Full(format!(
                    "{bytes} of {max} bytes used, batch needs {len}"
                )));
            }
            if let Some(max_items) = self.shared.opts.max_items {
                let items = st.used_items + st.reserved_items;
                if items >= max_items {
                    return Err(PushError::Full(format!(
                        "{items} of {max_items} batches queued"
                    )));
                }
            }
            st.reserved_bytes += len;
            st.reserved_items += 1;
        }
        let (ack, rx) = oneshot::channel();
        let sent = lock(&self.tx)
            .as_ref()
            .map(|tx| tx.send((record, key, ack)).is_ok())
            .unwrap_or(false);
        if !sent {
            let mut st = lock(&self.shared.state);
            st.reserved_bytes -= len;
            st.reserved_items -= 1;
            return Err(PushError::Closed);
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PushError::Io(e)),
            Err(_) => Err(PushError::Closed),
        }
    }

    /// Leases the next records (consecutive, one tenant, payloads up to `max_bytes` together —
    /// at least one record), or `None` when nothing is committed beyond what is leased.
    pub fn try_next(&self, max_bytes: usize) -> Option<Lease> {
        let shared = &self.shared;
        let mut reader = lock(&shared.reader);
        let (mut pos, segments) = {
            let st = lock(&shared.state);
            (st.read, st.segments.clone())
        };
        let mut lease: Option<Lease> = None;
        while let Some(&seg_len) = segments.get(&pos.segment) {
            if pos.offset >= seg_len {
                // Move to the next segment once this one is finished (a later one exists).
                match segments.range(pos.segment + 1..).next() {
                    Some((&next, _)) => {
                        pos = Pos {
                            segment: next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let file = match &*reader {
                Some((n, f)) if *n == pos.segment => f,
                _ => {
                    let path = segment_path(&shared.opts.dir, pos.segment);
                    match File::open(&path) {
                        Ok(f) => &reader.insert((pos.segment, f)).1,
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot open sending queue segment; skipping it");
                            pos.offset = seg_len;
                            continue;
                        }
                    }
                }
            };
            match read_record(file, pos.offset, seg_len, shared.keys.as_ref()) {
                Ok(Read::Declaration { used }) => {
                    pos.offset += used;
                }
                Ok(Read::Unreadable { used, reason }) => {
                    if lease.is_some() {
                        // Skip it on the next call, where it is counted once.
                        break;
                    }
                    let mut st = lock(&shared.state);
                    if pos >= st.skipped {
                        tracing::error!(segment = pos.segment, offset = pos.offset, reason = %reason, "sealed batch in the sending queue cannot be opened; skipping it (not sent)");
                        st.used_bytes = st.used_bytes.saturating_sub(used);
                        st.used_items = st.used_items.saturating_sub(1);
                    }
                    pos.offset += used;
                    st.skipped = st.skipped.max(pos);
                }
                Ok(Read::Batch {
                    tenant,
                    spans,
                    payload,
                    used,
                }) => {
                    if let Some(l) = &lease {
                        if l.tenant != tenant || l.payload.len() + payload.len() > max_bytes {
                            break;
                        }
                    }
                    let end = Pos {
                        segment: pos.segment,
                        offset: pos.offset + used,
                    };
                    match &mut lease {
                        None => {
                            lease = Some(Lease {
                                tenant,
                                spans,
                                records: 1,
                                parts: vec![(0..payload.len(), spans)],
                                payload,
                                start: pos,
                                end,
                                bytes: used,
                            })
                        }
                        Some(l) => {
                            l.spans += spans;
                            l.records += 1;
                            let at = l.payload.len();
                            l.parts.push((at..at + payload.len(), spans));
                            l.payload.extend_from_slice(&payload);
                            l.end = end;
                            l.bytes += used;
                        }
                    }
                    pos = end;
                }
                Err(e) => {
                    // Committed by this process and checked at open: only a disk problem gets
                    // here. Skip the rest of the segment rather than stall the queue.
                    tracing::error!(segment = pos.segment, offset = pos.offset, error = %e, "unreadable record in the sending queue; skipping the rest of its segment");
                    let mut st = lock(&shared.state);
                    let lost = seg_len - pos.offset;
                    st.used_bytes = st.used_bytes.saturating_sub(lost);
                    pos.offset = seg_len;
                    if lease.is_some() {
                        break;
                    }
                }
            }
        }
        let mut st = lock(&shared.state);
        match &lease {
            Some(l) => {
                st.read = l.end;
                st.in_flight.insert(l.start, l.end);
            }
            None => {
                if pos > st.read {
                    st.read = pos;
                }
            }
        }
        lease
    }

    /// Waits for the next lease; `None` once `stop` turns true.
    pub async fn next(
        self: &Arc<Self>,
        max_bytes: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Lease> {
        let mut committed = self.shared.committed.subscribe();
        loop {
            if *stop.borrow() {
                return None;
            }
            committed.borrow_and_update();
            let q = self.clone();
            let lease = tokio::task::spawn_blocking(move || q.try_next(max_bytes))
                .await
                .ok()
                .flatten();
            if lease.is_some() {
                return lease;
            }
            tokio::select! {
                r = committed.changed() => { if r.is_err() { return None; } }
                _ = stop.changed() => {}
            }
        }
    }

    /// Acknowledges a lease (sent, or dropped for good): advances the durable cursor when it was
    /// the oldest outstanding one, and deletes finished segments.
    pub fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        if st.in_flight.remove(&lease.start).is_none() {
            return Ok(());
        }
        st.used_bytes = st.used_bytes.saturating_sub(lease.bytes);
        st.used_items = st.used_items.saturating_sub(lease.records);
        let new_cursor = st.in_flight.keys().next().copied().unwrap_or(st.read);
        if new_cursor <= st.acked {
            return Ok(());
        }
        st.cursor_seq += 1;
        let seq = st.cursor_seq;
        let slot = cursor_slot(seq, new_cursor);
        let path = shared.opts.dir.join(CURSOR_FILE);
        st.cursor_file
            .write_all_at(&slot, (seq % 2) * CURSOR_SLOT as u64)
            .and_then(|_| st.cursor_file.sync_data())
            .map_err(io_err(&path))?;
        st.acked = new_cursor;
        let done: Vec<u64> = st
            .segments
            .range(..new_cursor.segment)
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            st.segments.remove(&n);
            let p = segment_path(&shared.opts.dir, n);
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot delete a sent sending-queue segment");
            }
        }
        if let Some(keys) = &shared.keys {
            // Keys declared only in deleted segments can no longer be needed.
            let oldest = new_cursor.segment;
            lock(&keys.known).retain(|_, (_, last)| *last >= oldest);
        }
        Ok(())
    }

    /// Forgets every outstanding lease (they will be leased again): for a consumer that stops
    /// without having sent its lease.
    pub fn release_all(&self) {
        let mut st = lock(&self.shared.state);
        if let Some(first) = st.in_flight.keys().next().copied() {
            st.read = first;
            st.in_flight.clear();
        }
        *lock(&self.shared.reader) = None;
    }

    /// Stops the writer thread (after committing what is queued) and releases the directory
    /// lock, so the queue can be opened again. Appends fail afterwards.
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        lock(&self.shared.dir_lock).take();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

/// A record as a reader sees it.
enum Read {
    Batch {
        tenant: Tenant,
        spans: u64,
        payload: Vec<u8>,
        used: u64,
    },
    /// A key declaration: nothing to send.
    Declaration { used: u64 },
    /// A sealed batch whose key is gone or that does not open.
    Unreadable { used: u64, reason: String },
}

/// Reads and checks the record at `offset` (opening it when sealed).
fn read_record(
    file: &File,
    offset: u64,
    seg_len: u64,
    keys: Option<&QueueKeys>,
) -> Result<Read, RecordError> {
    let avail = seg_len.saturating_sub(offset) as usize;
    let mut header = [0u8; HEADER_LEN];
    if avail < HEADER_LEN {
        return Err(RecordError::Truncated {
            need: HEADER_LEN,
            have: avail,
        });
    }
    file.read_exact_at(&mut header, offset)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    let len = codec::body_len(&header)?;
    if avail < HEADER_LEN + len {
        return Err(RecordError::Truncated {
            need: HEADER_LEN + len,
            have: avail,
        });
    }
    let mut buf = vec![0u8; HEADER_LEN + len];
    buf[..HEADER_LEN].copy_from_slice(&header);
    file.read_exact_at(&mut buf[HEADER_LEN..], offset + HEADER_LEN as u64)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    let (body, used) = frame(&buf)?;
    let used = used as u64;
    match parse(body)? {
        Body::Plain {
            tenant,
            spans,
            payload,
        } => Ok(Read::Batch {
            tenant,
            spans,
            payload: payload.to_vec(),
            used,
        }),
        Body::Key { .. } => Ok(Read::Declaration { used }),
        Body::Sealed {
            tenant,
            spans,
            key_id,
            body,
        } => {
            let known = keys.and_then(|k| lock(&k.known).get(&key_id).map(|(k, _)| k.clone()));
            let key = match known {
                Some(KnownKey::Ready(k)) => k,
                Some(KnownKey::Gone(reason)) => return Ok(Read::Unreadable { used, reason }),
                None => {
                    return Ok(Read::Unreadable {
                        used,
                        reason: format!(
                            "no key declared for sealed record (key {})",
                            hex::encode(key_id)
                        ),
                    })
                }
            };
            match body.open(&key) {
                Ok(payload) => Ok(Read::Batch {
                    tenant,
                    spans,
                    payload,
                    used,
                }),
                Err(e) => Ok(Read::Unreadable {
                    used,
                    reason: e.to_string(),
                }),
            }
        }
    }
}

fn writer_loop(shared: Arc<Shared>, rx: std_mpsc::Receiver<Append>, mut file: File, mut seg: u64) {
    let dir = shared.opts.dir.clone();
    let mut len = 0u64;
    // Keys declared in the current segment.
    let mut declared: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].0.len();
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += item.0.len();
                    group.push(item);
                }
                Err(_) => break,
            }
        }
        // Write, rotating between records; remember the committed lengths to publish.
        let mut updates: Vec<(u64, u64)> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(bytes);
        let start = (seg, len);
        let mut result: io::Result<()> = Ok(());
        // Keys declared by this group: (key, segment), published once committed.
        let mut new_decls: Vec<(Arc<SealKey>, u64)> = Vec::new();
        for (rec, key, _) in &group {
            if len > 0 && len + rec.len() as u64 > shared.opts.segment_bytes {
                result = file.write_all(&buf).and_then(|_| file.sync_data());
                buf.clear();
                if result.is_err() {
                    break;
                }
                updates.push((seg, len));
                seg += 1;
                len = 0;
                let path = segment_path(&dir, seg);
                result = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map(|f| file = f)
                    .and_then(|_| File::open(&dir).and_then(|d| d.sync_all()));
                if result.is_err() {
                    break;
                }
                // A new segment: new data keys, declared again before their first record.
                declared.clear();
                if let Some(keys) = &shared.keys {
                    lock(&keys.current).clear();
                }
            }
            if let Some(k) = key {
                if declared.insert(k.id) {
                    let decl = encode_key(&k.envelope.tenant, &k.id, &k.envelope);
                    buf.extend_from_slice(&decl);
                    len += decl.len() as u64;
                    new_decls.push((k.clone(), seg));
                }
            }
            buf.extend_from_slice(rec);
            len += rec.len() as u64;
        }
        if result.is_ok() {
            result = file.write_all(&buf).and_then(|_| file.sync_data());
        }
        let total: u64 = group.iter().map(|(r, _, _)| r.len() as u64).sum();
        let n = group.len() as u64;
        let mut st = lock(&shared.state);
        st.reserved_bytes -= total;
        st.reserved_items -= n;
        match result {
            Ok(()) => {
                updates.push((seg, len));
                for (s, l) in updates {
                    st.segments.insert(s, l);
                }
                st.used_bytes += total;
                st.used_items += n;
                drop(st);
                if let Some(keys) = &shared.keys {
                    let mut known = lock(&keys.known);
                    for (k, s) in new_decls {
                        let entry = known
                            .entry(k.id)
                            .or_insert((KnownKey::Ready(k.key.clone()), s));
                        entry.1 = if entry.1 == u64::MAX {
                            s
                        } else {
                            entry.1.max(s)
                        };
                    }
                }
                shared.committed.send_modify(|v| *v += 1);
                for (_, _, ack) in group {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                drop(st);
                tracing::error!(dir = %dir.display(), error = %e, "sending queue write failed");
                // Undo the partial write where possible: records already in earlier segments of
                // this group were fsynced but are not acknowledged; keep them (a duplicate at
                // worst) and cut the current segment back to its committed length.
                for (s, l) in updates {
                    lock(&shared.state).segments.insert(s, l);
                }
                if seg == start.0 {
                    let _ = file.set_len(start.1);
                    len = start.1;
                } else {
                    let _ = file.set_len(0);
                    len = 0;
                    lock(&shared.state).segments.insert(seg, 0);
                }
                // Declarations may have been cut with the rest: declare again.
                declared.clear();
                shared.committed.send_modify(|v| *v += 1);
                let msg = e.to_string();
                for (_, _, ack) in group {
                    let _ = ack.send(Err(msg.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
