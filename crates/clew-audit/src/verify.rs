//! Reading and verifying the chain: shared by [`verify`] (read-only) and `AuditLog::open`.

use crate::{actions, anchor_path, sha256_hex, AuditError, Record, GENESIS_HASH};
use serde::Deserialize;
use std::path::Path;

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the log; for records missing at the end, the line where the first
    /// missing record should be.
    pub line: usize,
    /// The `seq` found on that line (or, for records missing at the end, the first missing seq);
    /// `None` when the line cannot be parsed.
    pub seq: Option<u64>,
    /// What was expected and what was found.
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "line {} (seq {}): {}", self.line, seq, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records verified in order before the first break (all of them when intact).
    pub records: u64,
    /// `seq` of the last verified record (0 when none).
    pub last_seq: u64,
    /// `hash` of the last verified record ([`GENESIS_HASH`] when none).
    pub last_hash: String,
    /// The first break, `None` when the chain is intact.
    pub break_at: Option<ChainBreak>,
    /// Not breaks, but worth a look: a missing anchor (deletion at the end undetectable), records
    /// written after the anchor, an incomplete final line, breaks found earlier at start-up.
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.break_at.is_none()
    }
}

/// One line of the log for display: the record, or why it cannot be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadLine {
    pub line: usize,
    pub record: Result<Record, String>,
}

/// Verifies the log at `path` against itself and its anchor (`<path>.head`). Read-only.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    let head = anchor_path(path);
    let anchor = read_anchor(&head)?;
    let (complete, torn) = split_torn(&bytes);
    let mut warnings = Vec::new();
    if !torn.is_empty() {
        warnings.push(format!(
            "the final {} byte(s) are an incomplete line (no newline) and were ignored: a crash \
             while appending, or an append in progress; the server truncates it at start-up",
            torn.len()
        ));
    }
    let scan = scan(complete, anchor.seq());
    let mut break_at = scan.break_at.clone();
    if break_at.is_none() {
        break_at = check_anchor(&anchor, &scan, &head, &mut warnings);
    }
    warnings.extend(scan.notes.iter().cloned());
    Ok(VerifyReport {
        records: scan.records,
        last_seq: scan.last_seq,
        last_hash: scan.last_hash,
        break_at,
        warnings,
    })
}

/// Every line of the log (an incomplete final line is left out), parsed for display; no
/// verification.
pub fn read(path: &Path) -> Result<Vec<ReadLine>, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    let (complete, _) = split_torn(&bytes);
    Ok(lines(complete)
        .map(|(line, bytes)| ReadLine {
            line,
            record: serde_json::from_slice::<Record>(bytes).map_err(|e| e.to_string()),
        })
        .collect())
}

/// Splits off bytes after the last newline (an incomplete line).
pub(crate) fn split_torn(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => bytes.split_at(i + 1),
        None => (&bytes[..0], bytes),
    }
}

/// Complete lines (input ends with a newline or is empty), numbered from 1, without newlines.
pub(crate) fn lines(complete: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = complete.strip_suffix(b"\n").unwrap_or(complete);
    let mut split = body.split(|b| *b == b'\n');
    let empty = complete.is_empty();
    std::iter::from_fn(move || if empty { None } else { split.next() })
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Anchor {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug)]
pub(crate) enum AnchorState {
    Missing,
    Corrupt(String),
    Present(Anchor),
}

impl AnchorState {
    pub(crate) fn seq(&self) -> Option<u64> {
        match self {
            AnchorState::Present(a) => Some(a.seq),
            _ => None,
        }
    }
}

pub(crate) fn read_anchor(head: &Path) -> Result<AnchorState, AuditError> {
    match std::fs::read(head) {
        Ok(bytes) => Ok(match serde_json::from_slice::<Anchor>(&bytes) {
            Ok(a) => AnchorState::Present(a),
            Err(e) => AnchorState::Corrupt(e.to_string()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AnchorState::Missing),
        Err(e) => Err(AuditError::io(head, e)),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub records: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// Line of the last verified record (0 when none).
    pub last_line: usize,
    pub break_at: Option<ChainBreak>,
    /// `(seq, hash)` of the last line that parses, chain or not: where appends continue.
    pub physical_last: Option<(u64, String)>,
    /// Complete lines seen.
    pub lines: usize,
    /// `audit.chain_broken` records found (breaks found at an earlier start-up).
    pub notes: Vec<String>,
    /// The `details` of those records.
    pub noted: Vec<serde_json::Value>,
    /// `(line, hash)` of the verified record whose seq is the anchor's.
    pub at_anchor: Option<(usize, String)>,
}

enum LineError {
    Unparsable(String),
    Malformed {
        seq: u64,
        hash: String,
        detail: String,
    },
}

const HASH_KEY: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Parses a line and hashes its bytes without the final `,"hash":"…"` member.
fn check_line(line: &[u8]) -> Result<(Record, String), LineError> {
    let record: Record =
        serde_json::from_slice(line).map_err(|e| LineError::Unparsable(e.to_string()))?;
    let well_formed = line.len() > HASH_SUFFIX_LEN && line.ends_with(b"\"}") && {
        let start = line.len() - HASH_SUFFIX_LEN;
        line[start..].starts_with(HASH_KEY)
            && &line[start + HASH_KEY.len()..line.len() - 2] == record.hash.as_bytes()
    };
    if !well_formed {
        return Err(LineError::Malformed {
            seq: record.seq,
            hash: record.hash.clone(),
            detail: format!(
                "expected the line to end with the hash member `,\"hash\":\"<64 hex digits>\"}}`, \
                 found a record whose hash is {:?} elsewhere or in another form (rewritten by \
                 another tool?)",
                record.hash
            ),
        });
    }
    let mut body = Vec::with_capacity(line.len() - HASH_SUFFIX_LEN + 1);
    body.extend_from_slice(&line[..line.len() - HASH_SUFFIX_LEN]);
    body.push(b'}');
    Ok((record, sha256_hex(&body)))
}

/// Walks complete lines, checking each record's own hash, `seq` continuity and `prev` linkage.
/// Stops checking at the first break but keeps parsing (for `physical_last` and `notes`).
pub(crate) fn scan(complete: &[u8], anchor_seq: Option<u64>) -> Scan {
    let mut s = Scan {
        records: 0,
        last_seq: 0,
        last_hash: GENESIS_HASH.to_string(),
        last_line: 0,
        break_at: None,
        physical_last: None,
        lines: 0,
        notes: Vec::new(),
        noted: Vec::new(),
        at_anchor: None,
    };
    for (line, bytes) in lines(complete) {
        s.lines = line;
        let (record, computed) = match check_line(bytes) {
            Ok(ok) => ok,
            Err(LineError::Unparsable(e)) => {
                s.break_at.get_or_insert_with(|| ChainBreak {
                    line,
                    seq: None,
                    reason: if bytes.is_empty() {
                        "expected an audit record, found an empty line".to_string()
                    } else {
                        format!("expected an audit record (one JSON object), found an unparsable line: {e}")
                    },
                });
                continue;
            }
            Err(LineError::Malformed { seq, hash, detail }) => {
                s.physical_last = Some((seq, hash));
                s.break_at.get_or_insert(ChainBreak {
                    line,
                    seq: Some(seq),
                    reason: detail,
                });
                continue;
            }
        };
        s.physical_last = Some((record.seq, record.hash.clone()));
        if record.action == actions::CHAIN_BROKEN {
            let what = record
                .details
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("(no reason recorded)");
            s.notes.push(format!(
                "line {line} (seq {}, {}): at start-up the server found the chain broken: {what}",
                record.seq, record.time
            ));
            s.noted.push(record.details.clone());
        }
        if s.break_at.is_some() {
            continue;
        }
        let expected_seq = s.last_seq + 1;
        let reason = if computed != record.hash {
            Some(format!(
                "record modified: it carries hash {} but its content hashes to {computed}",
                record.hash
            ))
        } else if record.seq > expected_seq {
            Some(format!(
                "expected seq {expected_seq}, found seq {}: record(s) {expected_seq}..{} deleted \
                 (or records reordered)",
                record.seq,
                record.seq - 1
            ))
        } else if record.seq < expected_seq {
            Some(format!(
                "expected seq {expected_seq}, found seq {}: a record inserted, duplicated or \
                 reordered",
                record.seq
            ))
        } else if record.prev != s.last_hash {
            Some(format!(
                "expected prev {} (the hash of {}), found prev {}: the previous record was \
                 replaced, or this one was inserted",
                s.last_hash,
                if s.last_line == 0 {
                    "nothing: this is the first record".to_string()
                } else {
                    format!("seq {} at line {}", s.last_seq, s.last_line)
                },
                record.prev
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            s.break_at = Some(ChainBreak {
                line,
                seq: Some(record.seq),
                reason,
            });
            continue;
        }
        s.records += 1;
        s.last_seq = record.seq;
        s.last_hash = record.hash;
        s.last_line = line;
        if anchor_seq == Some(record.seq) {
            s.at_anchor = Some((line, s.last_hash.clone()));
        }
    }
    s
}

/// Compares an intact chain with the anchor: records missing at the end, or a rewritten tail.
pub(crate) fn check_anchor(
    anchor: &AnchorState,
    scan: &Scan,
    head: &Path,
    warnings: &mut Vec<String>,
) -> Option<ChainBreak> {
    let anchor = match anchor {
        AnchorState::Missing => {
            if scan.records > 0 {
                warnings.push(format!(
                    "the anchor {} is missing: records deleted from the end of the log cannot be \
                     detected",
                    head.display()
                ));
            }
            return None;
        }
        AnchorState::Corrupt(e) => {
            return Some(ChainBreak {
                line: scan.lines + 1,
                seq: None,
                reason: format!(
                    "expected the anchor {} to hold {{\"seq\":N,\"hash\":\"…\"}}, found an \
                     unparsable file ({e}); it is replaced atomically, so a crash cannot cause this",
                    head.display()
                ),
            });
        }
        AnchorState::Present(a) => a,
    };
    if anchor.seq > scan.last_seq {
        return Some(ChainBreak {
            line: scan.lines + 1,
            seq: Some(scan.last_seq + 1),
            reason: format!(
                "expected the log to end at seq {} (hash {}) as the anchor {} records, found it \
                 ending at seq {}{}: record(s) {}..{} deleted from the end",
                anchor.seq,
                anchor.hash,
                head.display(),
                scan.last_seq,
                if scan.last_seq == 0 { " (empty)" } else { "" },
                scan.last_seq + 1,
                anchor.seq
            ),
        });
    }
    if anchor.seq == 0 {
        return None;
    }
    match &scan.at_anchor {
        Some((_, hash)) if *hash == anchor.hash => {}
        Some((line, hash)) => {
            return Some(ChainBreak {
                line: *line,
                seq: Some(anchor.seq),
                reason: format!(
                    "expected hash {} for seq {} as the anchor {} records, found {hash}: the log \
                     was rewritten from here on",
                    anchor.hash,
                    anchor.seq,
                    head.display()
                ),
            });
        }
        // The chain is intact and reaches anchor.seq, so at_anchor is always set.
        None => {}
    }
    if scan.last_seq > anchor.seq {
        warnings.push(format!(
            "{} record(s) after the anchor (seq {}): normal only if the server stopped between \
             writing a record and updating the anchor",
            scan.last_seq - anchor.seq,
            anchor.seq
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_torn_split() {
        assert_eq!(lines(b"").count(), 0);
        let v: Vec<_> = lines(b"a\n\nb\n").collect();
        assert_eq!(v, vec![(1, &b"a"[..]), (2, &b""[..]), (3, &b"b"[..])]);
        assert_eq!(split_torn(b"a\nbc"), (&b"a\n"[..], &b"bc"[..]));
        assert_eq!(split_torn(b"abc"), (&b""[..], &b"abc"[..]));
        assert_eq!(split_torn(b"a\n"), (&b"a\n"[..], &b""[..]));
    }
}
