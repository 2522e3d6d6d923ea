//! The write-ahead log: numbered segment files of framed records in one directory.
//!
//! One dedicated thread owns the open segment. Appends queue on a channel; the thread takes
//! everything queued, writes it, fsyncs once (group commit), inserts the batches into the head and
//! only then acknowledges them. Because the same thread also seals the head when it rotates the
//! segment, "spans in segments below N" and "spans in sealed head generations" are always the same
//! set — the invariant that lets a flushed segment be deleted safely.

pub mod record;

use crate::head::{Head, HeadGen};
use crate::metrics::StoreMetrics;
use crate::StoreError;
use clew_model::SpanBatch;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Upper bound on bytes written per group commit; larger queues are split into several fsyncs.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

enum Command {
    Append {
        record: Vec<u8>,
        batch: SpanBatch,
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
}

/// What replay found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    pub spans: usize,
    /// Bytes cut off torn or corrupt tails.
    pub truncated_bytes: u64,
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

/// Replays one segment into `head`, truncating it at the first bad record.
fn replay_segment(path: &Path, head: &Head, report: &mut ReplayReport) -> Result<(), StoreError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let mut offset = 0usize;
    while offset < data.len() {
        match record::decode(&data[offset..]) {
            Ok((batch, used)) => {
                report.records += 1;
                report.spans += batch.span_count();
                head.insert(vec![batch]);
                offset += used;
            }
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
    /// Replays existing segments into `head`, then starts the writer on a fresh segment.
    pub fn open(
        dir: &Path,
        head: Arc<Head>,
        metrics: StoreMetrics,
    ) -> Result<(Self, ReplayReport), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut report = ReplayReport::default();
        let segments = list_segments(dir)?;
        for &n in &segments {
            replay_segment(&segment_path(dir, n), &head, &mut report)?;
        }
        let next = segments.last().map(|n| n + 1).unwrap_or(1);
        let file = open_segment(dir, next)?;
        let (tx, rx) = mpsc::channel(4096);
        let thread_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("clew-wal".into())
            .spawn(move || writer_loop(thread_dir, next, file, rx, head, metrics))
            .map_err(io_err(dir))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                tx,
            },
            report,
        ))
    }

    /// Appends a batch; resolves once it is fsynced and visible in the head.
    pub async fn append(&self, batch: SpanBatch) -> Result<(), StoreError> {
        let record = record::encode(&batch);
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Command::Append { record, batch, ack })
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

fn writer_loop(
    dir: PathBuf,
    mut segment: u64,
    mut file: File,
    mut rx: mpsc::Receiver<Command>,
    head: Arc<Head>,
    metrics: StoreMetrics,
) {
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
            Command::Append { record, batch, ack } => {
                let mut group_bytes = record.len();
                let mut buf = record;
                let mut batches = vec![batch];
                let mut acks = vec![ack];
                // Group commit: take whatever else is already queued.
                while group_bytes < MAX_GROUP_BYTES {
                    match rx.try_recv() {
                        Ok(Command::Append { record, batch, ack }) => {
                            group_bytes += record.len();
                            buf.extend_from_slice(&record);
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
