//! The writer: one process appends, each record fsynced, the anchor replaced after each append.

use crate::verify::{check_anchor, lines, read_anchor, scan, split_torn, AnchorState, ChainBreak};
use crate::{
    actions, anchor_path, format_time, seal, AuditError, Event, Record, Unhashed, GENESIS_HASH,
};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The append-only audit log. Thread-safe; meant for a single writing process.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    head: PathBuf,
    inner: Mutex<Inner>,
    report: OpenReport,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes known to be durable: where a failed append is rolled back to.
    len: u64,
    seq: u64,
    hash: String,
    poisoned: Option<String>,
}

/// What [`AuditLog::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Complete lines in the log after any truncation (before any record open appended).
    pub lines: usize,
    /// A torn final line (crash while appending) that was cut off.
    pub truncated: Option<TruncatedTail>,
    /// The chain was found broken (left as is; an `audit.chain_broken` record was appended).
    pub problem: Option<ChainBreak>,
    /// E.g. the anchor was missing, or records followed it.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Byte offset the log was truncated to.
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    pub reason: String,
    /// The start of the removed bytes (lossy UTF-8, at most 200 characters).
    pub preview: String,
}

impl AuditLog {
    /// Opens (creating it and its directories if needed) the log at `path`.
    ///
    /// A torn final line — no newline, or a final line that does not parse — is truncated (a
    /// crash while appending; that append was never acknowledged). Anything else wrong with the
    /// chain is left untouched so it stays visible to `clew audit verify`; open still succeeds,
    /// logs it at error level, reports it in [`AuditLog::open_report`] and appends an
    /// `audit.chain_broken` record describing it, then new records chain on from the last line.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let dir = parent_dir(&path);
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        if !existed {
            sync_dir(&dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| AuditError::io(&path, e))?;

        let truncated = torn_tail(&bytes);
        let cut = truncated
            .as_ref()
            .map_or(bytes.len(), |t| t.offset as usize);
        if let Some(t) = &truncated {
            tracing::warn!(
                path = %path.display(),
                offset = t.offset,
                bytes = t.bytes,
                preview = %t.preview,
                "audit log: {}; truncated it",
                t.reason
            );
            file.set_len(t.offset)
                .and_then(|()| file.sync_all())
                .map_err(|e| AuditError::io(&path, e))?;
        }

        let head = anchor_path(&path);
        let anchor = read_anchor(&head)?;
        let scanned = scan(&bytes[..cut], anchor.seq());
        let mut warnings = Vec::new();
        let problem = match &scanned.break_at {
            Some(b) => Some(b.clone()),
            None => check_anchor(&anchor, &scanned, &head, &mut warnings),
        };
        for w in &warnings {
            tracing::warn!(path = %path.display(), "audit log: {w}");
        }
        let (seq, hash) = scanned
            .physical_last
            .clone()
            .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
        let anchor_current =
            matches!(&anchor, AnchorState::Present(a) if a.seq == seq && a.hash == hash);

        let mut log = AuditLog {
            path: path.clone(),
            head,
            inner: Mutex::new(Inner {
                file,
                len: cut as u64,
                seq,
                hash,
                poisoned: None,
            }),
            report: OpenReport {
                lines: scanned.lines,
                truncated,
                problem: problem.clone(),
                warnings,
            },
        };
        match &problem {
            Some(b) => {
                let details = serde_json::json!({
                    "line": b.line,
                    "seq": b.seq,
                    "reason": b.reason,
                });
                tracing::error!(
                    path = %path.display(),
                    "audit log chain is BROKEN at {b}; left as is, continuing after the last record"
                );
                // Recorded once: a break that stays in the file is not re-recorded at each start.
                if !scanned.noted.contains(&details) {
                    log.append(Event::new(actions::CHAIN_BROKEN).with_details(details))?;
                } else if !anchor_current {
                    let inner = log.inner.get_mut();
                    write_anchor(&log.head, inner.seq, &inner.hash)?;
                }
            }
            None if !anchor_current => {
                let inner = log.inner.get_mut();
                write_anchor(&log.head, inner.seq, &inner.hash)?;
            }
            None => {}
        }
        Ok(log)
    }

    /// Appends one record and fsyncs it, then replaces the anchor. Returns the record written.
    pub fn append(&self, event: Event) -> Result<Record, AuditError> {
        let mut inner = self.inner.lock();
        if let Some(detail) = &inner.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
                detail: detail.clone(),
            });
        }
        let seq = inner.seq + 1;
        let time = format_time(SystemTime::now());
        let (mut line, hash) = seal(&Unhashed {
            seq,
            time: &time,
            actor: event.actor.as_deref(),
            action: &event.action,
            tenant: event.tenant.as_deref(),
            details: &event.details,
            prev: &inner.hash,
        })?;
        line.push('\n');
        let written = inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            let len = inner.len;
            if let Err(rollback) = inner.file.set_len(len).and_then(|()| inner.file.sync_all()) {
                inner.poisoned = Some(format!(
                    "append failed ({e}), then truncating failed ({rollback})"
                ));
            }
            return Err(AuditError::io(&self.path, e));
        }
        inner.len += line.len() as u64;
        let record = Record {
            seq,
            time,
            actor: event.actor,
            action: event.action,
            tenant: event.tenant,
            details: event.details,
            prev: std::mem::replace(&mut inner.hash, hash.clone()),
            hash,
        };
        inner.seq = seq;
        // The record is durable: a stale anchor only makes `verify` warn about records after it.
        if let Err(e) = write_anchor(&self.head, seq, &record.hash) {
            tracing::warn!(path = %self.head.display(), "audit log: cannot update the anchor: {e}");
        }
        Ok(record)
    }

    /// What open found (torn tail truncated, chain problems, warnings).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(seq, hash)` of the last record (`(0, GENESIS_HASH)` when empty).
    pub fn last(&self) -> (u64, String) {
        let inner = self.inner.lock();
        (inner.seq, inner.hash.clone())
    }
}

/// A torn final line: bytes after the last newline, or else a final line that does not parse.
fn torn_tail(bytes: &[u8]) -> Option<TruncatedTail> {
    let (complete, torn) = split_torn(bytes);
    let (offset, reason) = if !torn.is_empty() {
        (complete.len(), "incomplete final line (no newline)")
    } else {
        let (_, last) = lines(complete).last()?;
        if serde_json::from_slice::<Record>(last).is_ok() {
            return None;
        }
        (
            complete.len() - last.len() - 1,
            "unparsable final line (torn write)",
        )
    };
    let removed = &bytes[offset..];
    Some(TruncatedTail {
        offset: offset as u64,
        bytes: removed.len() as u64,
        reason: reason.to_string(),
        preview: String::from_utf8_lossy(removed).chars().take(200).collect(),
    })
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `<log>.head` atomically: temp file, fsync, rename, fsync the directory.
fn write_anchor(head: &Path, seq: u64, hash: &str) -> Result<(), AuditError> {
    let mut tmp = head.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = format!("{{\"seq\":{seq},\"hash\":\"{hash}\"}}\n");
    let mut f = File::create(&tmp).map_err(|e| AuditError::io(&tmp, e))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| AuditError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, head).map_err(|e| AuditError::io(head, e))?;
    sync_dir(&parent_dir(head))
}
