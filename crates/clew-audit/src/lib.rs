//! # clew-audit — the audit room
//!
//! An append-only, hash-chained log of what changed Clew's data or configuration: each record
//! holds the hash of the previous one, so an edited, deleted, inserted or reordered record breaks
//! the chain where it happened.
//!
//! May depend on: serialization and hashing crates. Must not depend on any other Clew crate.
//!
//! ## File format
//!
//! `audit.log` holds one JSON object per line, fields always in this order:
//!
//! ```text
//! {"seq":1,"time":"2026-11-30T18:13:37.123Z","actor":"oidc:alice","action":"hold.add",
//!  "tenant":"team-a","details":{...},"prev":"000…000","hash":"<64 hex>"}
//! ```
//!
//! `seq` counts from 1 without gaps; `prev` is the previous record's `hash` (64 zeros for the
//! first); `hash` is the hex SHA-256 of the record serialized (compact JSON, same fields, same
//! order) *without* `hash` — which is exactly the line with its final `,"hash":"…"` member cut
//! off. The verifier hashes the bytes as they are on disk, so any change to a line (even
//! whitespace) is detected, and JSON number formatting or map ordering cannot cause false alarms.
//!
//! `audit.log.head` (the anchor) is replaced atomically after every append and holds
//! `{"seq":N,"hash":"…"}` of the last record, so deleting records at the *end* of the log — which
//! leaves a valid chain — is detected too.
//!
//! The chain proves integrity against accidental or casual edits; someone able to rewrite the
//! whole file *and* the anchor can forge a consistent history, so ship the anchor's hash (or the
//! log) to separate storage when that matters.

mod log;
mod verify;

pub use log::{AuditLog, OpenReport, TruncatedTail};
pub use verify::{read, verify, ChainBreak, ReadLine, VerifyReport};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Well-known `action` values.
pub mod actions {
    /// The configuration the server started with (details: a summary, never secrets).
    pub const CONFIG_LOADED: &str = "config.loaded";
    /// Retention deleted data (details: what, how much, why).
    pub const RETENTION_DELETE: &str = "retention.delete";
    /// An erasure request (right to be forgotten).
    pub const ERASE: &str = "erase";
    /// A legal hold was placed.
    pub const HOLD_ADD: &str = "hold.add";
    /// A legal hold was released.
    pub const HOLD_RELEASE: &str = "hold.release";
    /// Encryption keys were rotated.
    pub const KEYS_ROTATE: &str = "keys.rotate";
    /// An administrative API call.
    pub const ADMIN_REQUEST: &str = "admin.request";
    /// Written by [`crate::AuditLog::open`] when it found the chain broken at start-up, so the
    /// finding stays in the log even after new records are appended.
    pub const CHAIN_BROKEN: &str = "audit.chain_broken";
}

/// The `prev` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize an audit record: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(
        "the audit log {} is unusable: a failed append could not be rolled back ({detail}); \
         restart the server to recover (the torn line is then truncated)",
        path.display()
    )]
    Poisoned { path: PathBuf, detail: String },
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What happened, as given to [`AuditLog::append`]; the log adds `seq`, `time`, `prev` and `hash`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The authenticated identity (`token:ci`, `oidc:alice`); `None` for system actions and
    /// unauthenticated callers.
    pub actor: Option<String>,
    /// See [`actions`].
    pub action: String,
    pub tenant: Option<String>,
    pub details: serde_json::Value,
}

impl Event {
    /// An event with no actor, no tenant and `null` details.
    pub fn new(action: impl Into<String>) -> Self {
        Event {
            actor: None,
            action: action.into(),
            tenant: None,
            details: serde_json::Value::Null,
        }
    }

    pub fn with_actor(mut self, actor: Option<String>) -> Self {
        self.actor = actor;
        self
    }

    pub fn with_tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub actor: Option<String>,
    pub action: String,
    pub tenant: Option<String>,
    pub details: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

/// [`Record`] without `hash`: the bytes that are hashed. Same fields, same order.
#[derive(Serialize)]
pub(crate) struct Unhashed<'a> {
    pub seq: u64,
    pub time: &'a str,
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub tenant: Option<&'a str>,
    pub details: &'a serde_json::Value,
    pub prev: &'a str,
}

impl Record {
    fn unhashed(&self) -> Unhashed<'_> {
        Unhashed {
            seq: self.seq,
            time: &self.time,
            actor: self.actor.as_deref(),
            action: &self.action,
            tenant: self.tenant.as_deref(),
            details: &self.details,
            prev: &self.prev,
        }
    }

    /// The hash this record should carry, from its fields (re-serialized). The verifier hashes
    /// the on-disk bytes instead; for a record written by [`AuditLog`] both agree.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        Ok(sha256_hex(&serde_json::to_vec(&self.unhashed())?))
    }

    /// The record's line as the log writes it (without the newline), with `hash` recomputed.
    pub fn sealed_line(&self) -> Result<(String, String), AuditError> {
        seal(&self.unhashed())
    }
}

/// Serializes `unhashed`, hashes it and returns (line without newline, hash).
pub(crate) fn seal(unhashed: &Unhashed<'_>) -> Result<(String, String), AuditError> {
    let mut body = serde_json::to_string(unhashed)?;
    let hash = sha256_hex(body.as_bytes());
    // A struct always serializes to `{…}`: replace the closing brace with the hash member.
    body.pop();
    body.push_str(",\"hash\":\"");
    body.push_str(&hash);
    body.push_str("\"}");
    Ok((body, hash))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// `<file>.head`: the anchor next to the log.
pub fn anchor_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".head");
    PathBuf::from(s)
}

/// RFC 3339 UTC with milliseconds; times before 1970 (a broken clock) are written as the epoch.
pub(crate) fn format_time(t: SystemTime) -> String {
    let t = if t < UNIX_EPOCH { UNIX_EPOCH } else { t };
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_line_is_the_serialized_record() {
        let r = Record {
            seq: 1,
            time: format_time(SystemTime::now()),
            actor: None,
            action: "erase".into(),
            tenant: Some("team-a".into()),
            details: serde_json::json!({"z": 1, "a": [1.5, "x\ny"]}),
            prev: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let (line, hash) = r.sealed_line().unwrap();
        let full = Record { hash, ..r.clone() };
        assert_eq!(line, serde_json::to_string(&full).unwrap());
        assert_eq!(full.compute_hash().unwrap(), full.hash);
        assert!(line.contains("\"actor\":null"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn time_is_rfc3339_utc_millis() {
        let t = format_time(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123));
        assert_eq!(t, "2023-11-14T22:13:20.123Z");
        assert_eq!(
            format_time(UNIX_EPOCH - std::time::Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn anchor_path_appends_head() {
        assert_eq!(
            anchor_path(Path::new("/d/audit/audit.log")),
            PathBuf::from("/d/audit/audit.log.head")
        );
    }
}
