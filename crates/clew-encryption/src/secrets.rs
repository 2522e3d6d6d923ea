//! [`SecretStore`]: named, versioned 32-byte secrets (e.g. the redaction processor's HMAC keys)
//! that exist on disk only wrapped by the key provider.
//!
//! Each version is a data key the provider generates (random, 32 bytes) for the reserved tenant
//! [`SECRETS_TENANT`]; only its [`Envelope`] is stored, as `{dir}/{name}/v{version:06}.json`
//! (`name` percent-encoded to a file name). The highest version is current; older versions stay
//! until deleted by hand, so data hashed under them can still be matched. Rotation
//! ([`SecretStore::rotate`]) adds a version; nothing is rewritten.
//!
//! With the local keyring the secrets are wrapped by the keyring's `clew:secrets` key (listed by
//! `clew keys list`; destroying it destroys every secret); with AWS KMS by the default `key_id`
//! (or `tenant_keys["clew:secrets"]`), with the encryption context `clew:tenant=clew:secrets`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::{Envelope, KeyError, KeyManager};

/// The tenant name secrets are wrapped for: `:` is not allowed in tenant names, so no real
/// tenant shares (or crypto-shreds) this key.
pub const SECRETS_TENANT: &str = "clew:secrets";

/// Why a secret could not be loaded, created or rotated.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {name:?}: the key provider refused: {source}")]
    Key {
        name: String,
        #[source]
        source: KeyError,
    },
    #[error("secret {name:?}: {path} is not a wrapped-secret envelope: {message}")]
    Corrupt {
        name: String,
        path: String,
        message: String,
    },
    #[error("secret name {0:?} must be 1-128 characters")]
    BadName(String),
}

impl SecretError {
    /// True when retrying later may work (the key provider is unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretError::Key { source, .. } if source.is_retryable())
    }
}

/// One version of a secret.
pub struct Secret {
    pub version: u32,
    pub key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Secrets under one directory (Clew uses `{storage.path}/keys/secrets`).
pub struct SecretStore {
    dir: PathBuf,
    manager: Arc<KeyManager>,
}

/// `name` as one file-name component: `[A-Za-z0-9._-]` kept, every other byte `%XX` (so
/// `redaction/pii` and `redaction_pii` stay distinct).
fn encode_name(name: &str) -> Result<String, SecretError> {
    if name.is_empty() || name.len() > 128 {
        return Err(SecretError::BadName(name.to_string()));
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

fn version_of(file: &str) -> Option<u32> {
    file.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

impl SecretStore {
    pub fn new(dir: impl Into<PathBuf>, manager: Arc<KeyManager>) -> Self {
        Self {
            dir: dir.into(),
            manager,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn secret_dir(&self, name: &str) -> Result<PathBuf, SecretError> {
        Ok(self.dir.join(encode_name(name)?))
    }

    /// The secret's versions on disk, highest (current) first.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>, SecretError> {
        let dir = self.secret_dir(name)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SecretError::Io {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let mut out: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| version_of(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_unstable_by_key(|v| std::cmp::Reverse(*v));
        Ok(out)
    }

    /// Every version, current first, unwrapped; an empty list when the secret does not exist.
    pub async fn load(&self, name: &str) -> Result<Vec<Secret>, SecretError> {
        let dir = self.secret_dir(name)?;
        let mut out = Vec::new();
        for version in self.versions(name)? {
            let path = dir.join(format!("v{version:06}.json"));
            let raw = fs::read(&path).map_err(|source| SecretError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let envelope = Envelope::from_json(&raw).map_err(|e| SecretError::Corrupt {
                name: name.to_string(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            if envelope.tenant != SECRETS_TENANT {
                return Err(SecretError::Corrupt {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    message: format!("wrapped for tenant {:?}", envelope.tenant),
                });
            }
            let key = self
                .manager
                .open(&envelope)
                .await
                .map_err(|source| SecretError::Key {
                    name: name.to_string(),
                    source,
                })?;
            out.push(Secret {
                version,
                key: Zeroizing::new(**key),
            });
        }
        Ok(out)
    }

    /// Every version, current first; generates version 1 when there is none.
    pub async fn load_or_create(&self, name: &str) -> Result<Vec<Secret>, SecretError> {
        let existing = self.load(name).await?;
        if !existing.is_empty() {
            return Ok(existing);
        }
        self.rotate(name).await?;
        self.load(name).await
    }

    /// Adds a version (the new current one) and returns its number. Older versions stay.
    pub async fn rotate(&self, name: &str) -> Result<u32, SecretError> {
        let dir = self.secret_dir(name)?;
        let next = self.versions(name)?.first().copied().unwrap_or(0) + 1;
        let dk = self
            .manager
            .new_file_key(SECRETS_TENANT)
            .await
            .map_err(|source| SecretError::Key {
                name: name.to_string(),
                source,
            })?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SecretError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("v{next:06}.json"));
        let tmp = dir.join(format!(".v{next:06}.json.tmp"));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&dk.envelope.to_json())
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp))?;
        drop(f);
        // A hard link never replaces: a concurrent rotation to the same number fails instead of
        // silently dropping a version something may already have hashed with.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        linked.map_err(io(&path))?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::Keyring;

    fn store(dir: &Path) -> (SecretStore, Arc<Keyring>) {
        let ring = Arc::new(Keyring::create(dir.join("keyring.json")).unwrap());
        let km = Arc::new(KeyManager::new(ring.clone()));
        (SecretStore::new(dir.join("secrets"), km), ring)
    }

    #[tokio::test]
    async fn create_load_rotate_and_only_wrapped_bytes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (s, ring) = store(dir.path());
        assert!(s.load("redaction/pii").await.unwrap().is_empty());
        let v1 = s.load_or_create("redaction/pii").await.unwrap();
        assert_eq!(v1.len(), 1);
        assert_eq!(v1[0].version, 1);
        // Same secret on a fresh manager (a restart).
        let again = SecretStore::new(
            dir.path().join("secrets"),
            Arc::new(KeyManager::new(Arc::new(
                Keyring::open(ring.path()).unwrap(),
            ))),
        );
        let loaded = again.load_or_create("redaction/pii").await.unwrap();
        assert_eq!(*loaded[0].key, *v1[0].key);
        // Rotation: a new current version, the old one kept.
        assert_eq!(s.rotate("redaction/pii").await.unwrap(), 2);
        let both = s.load("redaction/pii").await.unwrap();
        assert_eq!(
            both.iter().map(|k| k.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(*both[1].key, *v1[0].key);
        assert_ne!(*both[0].key, *v1[0].key);
        // Names stay distinct on disk; no file holds a raw key.
        s.load_or_create("redaction_pii").await.unwrap();
        assert_eq!(s.versions("redaction_pii").unwrap(), vec![1]);
        let mut files = 0;
        for d in fs::read_dir(s.dir()).unwrap() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                let raw = fs::read(f.unwrap().path()).unwrap();
                files += 1;
                for k in &both {
                    assert!(!raw.windows(32).any(|w| w == &k.key[..]));
                }
                let env = Envelope::from_json(&raw).unwrap();
                assert_eq!(env.tenant, SECRETS_TENANT);
            }
        }
        assert_eq!(files, 3);
    }

    #[tokio::test]
    async fn destroyed_key_and_corrupt_files_are_errors_naming_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (s, ring) = store(dir.path());
        s.load_or_create("r").await.unwrap();
        fs::write(s.dir().join("r").join("v000002.json"), b"{oops").unwrap();
        let err = s.load("r").await.unwrap_err();
        assert!(matches!(err, SecretError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("\"r\""), "{err}");
        fs::remove_file(s.dir().join("r").join("v000002.json")).unwrap();
        ring.destroy(SECRETS_TENANT).unwrap();
        let fresh = SecretStore::new(
            s.dir(),
            Arc::new(KeyManager::new(Arc::new(
                Keyring::open(ring.path()).unwrap(),
            ))),
        );
        let err = fresh.load("r").await.unwrap_err();
        assert!(matches!(err, SecretError::Key { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(matches!(encode_name(""), Err(SecretError::BadName(_))));
        assert_eq!(encode_name("a/b.c").unwrap(), "a%2Fb.c");
        assert_eq!(encode_name("..").unwrap(), "%2E.");
    }
}
