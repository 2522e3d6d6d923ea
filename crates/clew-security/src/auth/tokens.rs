//! `bearer_tokens`: `Authorization: Bearer <token>`, looked up by the token's SHA-256 in a YAML
//! file that is reloaded when it changes. Plaintext tokens are never stored: the file holds
//! hashes, and `clew token new` prints a fresh token once, with the line to add.
//!
//! ```yaml
//! # name, SHA-256 of the token (hex), tenants (a list, or "*" for every tenant)
//! - {name: team-a-ingest, sha256: 5e88…, tenants: [team-a]}
//! - {name: ops, sha256: 2c26…, tenants: "*"}
//! ```
//!
//! A `tokens:` key holding the same list is accepted too. Removing a line revokes the token at the
//! next reload (`reload_interval`, checked on the request path: at most one file read per
//! interval). A file that fails to parse keeps the previous tokens and logs why.

use super::config::TenantList;
use super::{AuthError, AuthRequest, Authenticator};
use crate::{Identity, TenantScope};
use aws_lc_rs::digest;
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a tokens file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    sha256: String,
    tenants: TenantList,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFile {
    List(Vec<RawEntry>),
    Map { tokens: Vec<RawEntry> },
}

struct Entry {
    name: String,
    scope: TenantScope,
}

#[derive(Default)]
struct Table {
    by_hash: HashMap<[u8; 32], Entry>,
    /// SHA-256 of the file's bytes: an unchanged file is not parsed again.
    digest: [u8; 32],
}

/// The `bearer_tokens` authenticator.
pub struct BearerTokens {
    path: PathBuf,
    interval: Duration,
    table: RwLock<Arc<Table>>,
    last_check: Mutex<Instant>,
}

/// SHA-256 of a token, the form the tokens file stores.
pub fn hash_token(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// 64 hex digits → 32 bytes.
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| format!("{text:?} is not a SHA-256 in hex (64 hex digits)"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not a SHA-256 in hex (64 hex digits)"))
}

/// A new random token: `clew_` and 32 random bytes (base64url), from aws-lc-rs's system RNG.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator failed");
    format!(
        "clew_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The tokens-file line for a token: `- {name: "…", sha256: …, tenants: […]}`.
pub fn token_file_line(name: &str, sha256: &[u8; 32], scope: &TenantScope) -> String {
    let tenants = match scope {
        TenantScope::Any => "\"*\"".to_string(),
        TenantScope::Only(list) => format!(
            "[{}]",
            list.iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "- {{name: {}, sha256: {}, tenants: {tenants}}}",
        serde_json::to_string(name).unwrap_or_else(|_| "\"token\"".into()),
        hex::encode(sha256)
    )
}

fn parse_table(path: &Path, bytes: &[u8]) -> Result<Table, TokenFileError> {
    let perr = |message: String| TokenFileError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let digest = {
        let d = digest::digest(&digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    };
    let text = std::str::from_utf8(bytes).map_err(|_| perr("not UTF-8".into()))?;
    // Empty, or only comments: no tokens (every request refused), not an error.
    let only_comments = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    let entries = if only_comments {
        Vec::new()
    } else {
        match serde_yaml::from_str::<RawFile>(text) {
            Ok(RawFile::List(v)) | Ok(RawFile::Map { tokens: v }) => v,
            Err(_) => {
                // Parse again as a plain list for a precise message (line, field).
                let e = serde_yaml::from_str::<Vec<RawEntry>>(text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not a list of tokens".into());
                let hint = if e.contains("unknown field `token`") {
                    " (fix: store only the token's SHA-256: `clew token hash` prints it)"
                } else {
                    " (fix: one entry per line: `- {name: N, sha256: <64 hex digits>, tenants: [T]}`)"
                };
                return Err(perr(format!("{e}{hint}")));
            }
        }
    };
    let mut by_hash = HashMap::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        if e.name.trim().is_empty() {
            return Err(perr(format!(
                "token {i}: empty name (fix: name every token, e.g. after its owner)"
            )));
        }
        let hash = parse_sha256_hex(&e.sha256).map_err(|m| {
            perr(format!(
                "token {i} ({}): {m} (fix: `clew token hash` prints it)",
                e.name
            ))
        })?;
        if let Some(prev) = by_hash.insert(
            hash,
            Entry {
                name: e.name.clone(),
                scope: e.tenants.0,
            },
        ) {
            return Err(perr(format!(
                "tokens {:?} and {:?} have the same hash (fix: remove one)",
                prev.name, e.name
            )));
        }
    }
    Ok(Table { by_hash, digest })
}

fn read(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    std::fs::read(path).map_err(|e| TokenFileError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl BearerTokens {
    /// Reads the tokens file; it is checked again every `reload_interval`.
    pub fn open(path: &Path, reload_interval: Duration) -> Result<Self, TokenFileError> {
        let table = parse_table(path, &read(path)?)?;
        Ok(Self {
            path: path.to_path_buf(),
            interval: reload_interval,
            table: RwLock::new(Arc::new(table)),
            last_check: Mutex::new(Instant::now()),
        })
    }

    /// Reads the file now; returns whether the tokens changed. On error the previous tokens stay.
    pub fn reload(&self) -> Result<bool, TokenFileError> {
        let bytes = read(&self.path)?;
        let d = digest::digest(&digest::SHA256, &bytes);
        if d.as_ref() == self.table.read().digest {
            return Ok(false);
        }
        let table = parse_table(&self.path, &bytes)?;
        let n = table.by_hash.len();
        *self.table.write() = Arc::new(table);
        tracing::info!(file = %self.path.display(), tokens = n, "bearer tokens reloaded");
        Ok(true)
    }

    /// How many tokens are in force.
    pub fn len(&self) -> usize {
        self.table.read().by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_reload(&self) {
        // One request per interval re-reads the file; the others go on with the current table.
        let Some(mut last) = self.last_check.try_lock() else {
            return;
        };
        if last.elapsed() < self.interval {
            return;
        }
        *last = Instant::now();
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "bearer tokens not reloaded; the previous tokens stay in force");
        }
    }

    /// The identity of a token, if it is in the file.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        let hash = hash_token(token);
        let table = self.table.read().clone();
        table.by_hash.get(&hash).map(|e| Identity {
            subject: e.name.clone(),
            tenants: e.scope.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Authenticator for BearerTokens {
    fn kind(&self) -> &'static str {
        "bearer_tokens"
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let Some(token) = req.bearer_token()? else {
            return Err(AuthError::Missing(
                "a bearer token is required (fix: send `Authorization: Bearer <token>`)".into(),
            ));
        };
        self.maybe_reload();
        self.lookup(token)
            .ok_or_else(|| AuthError::Invalid("unknown or revoked token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::Tenant;
    use http::{HeaderMap, HeaderValue};

    fn req(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        h
    }

    fn t(s: &str) -> Tenant {
        Tenant::new(s).unwrap()
    }

    #[tokio::test]
    async fn good_bad_missing_and_tenant_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let (a, admin) = (generate_token(), generate_token());
        let path = dir.path().join("tokens.yaml");
        std::fs::write(
            &path,
            format!(
                "# comment\n{}\n{}\n",
                token_file_line(
                    "team-a",
                    &hash_token(&a),
                    &TenantScope::Only(vec![t("team-a"), t("team-a2")])
                ),
                token_file_line("ops", &hash_token(&admin), &TenantScope::Any)
            ),
        )
        .unwrap();
        let tokens = BearerTokens::open(&path, Duration::from_secs(3600)).unwrap();
        assert_eq!(tokens.len(), 2);
        let h = req(Some(&a));
        let id = tokens.authenticate(&AuthRequest::new(&h)).await.unwrap();
        assert_eq!(id.subject, "team-a");
        assert_eq!(
            id.tenants,
            TenantScope::Only(vec![t("team-a"), t("team-a2")])
        );
        let h = req(Some(&admin));
        let id = tokens.authenticate(&AuthRequest::new(&h)).await.unwrap();
        assert_eq!(id.tenants, TenantScope::Any);
        let h = req(Some("clew_not-a-token"));
        assert_eq!(
            tokens.authenticate(&AuthRequest::new(&h)).await,
            Err(AuthError::Invalid("unknown or revoked token".into()))
        );
        let h = req(None);
        assert!(matches!(
            tokens.authenticate(&AuthRequest::new(&h)).await,
            Err(AuthError::Missing(_))
        ));
        // The file holds no plaintext token.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&a) && !text.contains(&admin));
        assert!(a.starts_with("clew_") && a.len() > 40 && a != admin);
    }

    #[tokio::test]
    async fn revoked_after_reload_and_broken_file_keeps_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (generate_token(), generate_token());
        let path = dir.path().join("tokens.yaml");
        let line_a = token_file_line("a", &hash_token(&a), &TenantScope::Only(vec![t("a")]));
        let line_b = token_file_line("b", &hash_token(&b), &TenantScope::Only(vec![t("b")]));
        std::fs::write(&path, format!("{line_a}\n{line_b}\n")).unwrap();
        // Interval zero: every request checks the file.
        let tokens = BearerTokens::open(&path, Duration::ZERO).unwrap();
        let ha = req(Some(&a));
        assert!(tokens.authenticate(&AuthRequest::new(&ha)).await.is_ok());
        // Revoke a: remove its line.
        std::fs::write(&path, format!("{line_b}\n")).unwrap();
        assert!(matches!(
            tokens.authenticate(&AuthRequest::new(&ha)).await,
            Err(AuthError::Invalid(_))
        ));
        let hb = req(Some(&b));
        assert!(tokens.authenticate(&AuthRequest::new(&hb)).await.is_ok());
        // A broken file keeps the previous tokens.
        std::fs::write(&path, "- {name: b, sha256: nothex, tenants: [b]}\n").unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.authenticate(&AuthRequest::new(&hb)).await.is_ok());
        // Fixed file: reloaded; unchanged file: not parsed again.
        std::fs::write(&path, format!("# fixed\n{line_b}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(!tokens.reload().unwrap());
        // The `tokens:` form.
        std::fs::write(&path, format!("tokens:\n  {line_a}\n")).unwrap();
        assert!(tokens.reload().unwrap());
        assert!(tokens.authenticate(&AuthRequest::new(&ha)).await.is_ok());
    }

    #[test]
    fn file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let cases = [
            ("- {name: a, token: secret, tenants: [a]}\n", "store only"),
            ("- {name: a, sha256: abc, tenants: [a]}\n", "64 hex digits"),
            ("- {name: a, sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae, tenants: []}\n", "no tenants"),
            ("- {name: a, sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae, tenants: [a]}\n- {name: b, sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae, tenants: [b]}\n", "same hash"),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let e = BearerTokens::open(&path, Duration::ZERO)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(want) && e.contains("t.yaml"), "{text}: {e}");
        }
        for empty in ["", "# every token revoked\n\n"] {
            std::fs::write(&path, empty).unwrap();
            assert!(BearerTokens::open(&path, Duration::ZERO)
                .unwrap()
                .is_empty());
        }
        assert!(matches!(
            BearerTokens::open(&dir.path().join("missing.yaml"), Duration::ZERO),
            Err(TokenFileError::Io { .. })
        ));
    }

    #[test]
    fn hash_matches_sha256sum() {
        // echo -n foo | sha256sum
        assert_eq!(
            hex::encode(hash_token("foo")),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
        assert_eq!(
            parse_sha256_hex("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
                .unwrap(),
            hash_token("foo")
        );
    }
}
