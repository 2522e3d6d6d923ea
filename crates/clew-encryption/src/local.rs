//! The local keyring provider (`provider: local`).
//!
//! A YAML file with versioned 32-byte key-encryption keys per tenant:
//!
//! ```yaml
//! format: 1
//! id: 0b6a…            # random keyring id; envelopes carry it as `kek_id`
//! tenants:
//!   acme:
//!     next_version: 3  # versions are never reused, even after retire/destroy
//!     keys:
//!       - { version: 1, key: <base64 32 bytes>, created_unix: 1700000000 }
//!       - { version: 2, key: <base64 32 bytes>, created_unix: 1700100000 }
//! ```
//!
//! The current key of a tenant is its highest version. A tenant without keys gets one on first
//! [`KeyProvider::generate`]. Every change is made under an advisory lock (`<file>.lock`), on a
//! fresh read of the file, and written atomically (temp file, fsync, rename, fsync dir, mode 0600).
//! Readers re-read the file when its inode, length or mtime changed, so a running server sees a
//! `clew keys rotate` done by another process.
//!
//! Data keys are wrapped with AES-256-GCM under the tenant key (random 96-bit nonce,
//! AAD = `"clew keyring v1" | keyring id | tenant | version`); `wrapped` = nonce | ciphertext | tag.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::{b64, now_unix, unb64, ENVELOPE_FORMAT};
use crate::{DataKey, Envelope, KeyError, KeyProvider, ProviderKind};

const FILE_FORMAT: u32 = 1;
const WRAP_DOMAIN: &[u8] = b"clew keyring v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    id: String,
    #[serde(default)]
    tenants: BTreeMap<String, TenantKeys>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantKeys {
    next_version: u32,
    #[serde(default)]
    keys: Vec<KeyVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVersion {
    version: u32,
    key: String,
    created_unix: u64,
}

impl TenantKeys {
    fn current(&self) -> Option<&KeyVersion> {
        self.keys.iter().max_by_key(|k| k.version)
    }
    fn add_version(&mut self) -> u32 {
        let version = self.next_version.max(1);
        self.next_version = version + 1;
        let mut key = Zeroizing::new([0u8; 32]);
        fill_random(&mut key[..]);
        self.keys.push(KeyVersion {
            version,
            key: b64(&key[..]),
            created_unix: now_unix(),
        });
        version
    }
}

/// What [`Keyring::list`] reports per tenant (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyInfo {
    pub tenant: String,
    /// Readable versions, ascending.
    pub versions: Vec<u32>,
    /// The version new data is wrapped under (`None` after `destroy` until the next use).
    pub current: Option<u32>,
    /// The version the next rotation will create.
    pub next_version: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp_of(meta: &fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    Stamp {
        mtime: meta.modified().ok(),
        len: meta.len(),
        ino,
    }
}

struct Loaded {
    file: Arc<KeyringFile>,
    stamp: Stamp,
}

/// A local keyring file; also the `local` [`KeyProvider`].
pub struct Keyring {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn fill_random(buf: &mut [u8]) {
    aws_lc_rs::rand::fill(buf).expect("system random number generator failed");
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> KeyError {
    KeyError::Config(format!(
        "encryption.local.keyring: cannot {what} {}: {e} (check the path and permissions)",
        path.display()
    ))
}

fn gone(tenant: &str, kek_id: &str, version: Option<u32>, reason: impl Into<String>) -> KeyError {
    KeyError::KeyGone {
        tenant: tenant.to_string(),
        kek_id: kek_id.to_string(),
        kek_version: version,
        reason: reason.into(),
    }
}

impl Keyring {
    /// Create a new, empty keyring file (mode 0600). Fails if the file exists.
    pub fn create(path: impl AsRef<Path>) -> Result<Keyring, KeyError> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            return Err(KeyError::Config(format!(
                "encryption.local.keyring: {} already exists; refusing to overwrite a keyring",
                path.display()
            )));
        }
        let file = KeyringFile {
            format: FILE_FORMAT,
            id: uuid::Uuid::new_v4().simple().to_string(),
            tenants: BTreeMap::new(),
        };
        write_atomic(&path, &file)?;
        Keyring::open(path)
    }

    /// Open an existing keyring file.
    pub fn open(path: impl AsRef<Path>) -> Result<Keyring, KeyError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(KeyError::Config(format!(
                "encryption.local.keyring: {} does not exist; create it with `clew keys init` \
                 (Keyring::create) or point encryption.local.keyring at the existing file",
                path.display()
            )));
        }
        let (file, stamp) = read_file(&path)?;
        Ok(Keyring {
            path,
            loaded: Mutex::new(Loaded {
                file: Arc::new(file),
                stamp,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keyring id (the `kek_id` of its envelopes).
    pub fn id(&self) -> Result<String, KeyError> {
        Ok(self.snapshot()?.id.clone())
    }

    /// The current file content, re-read if the file changed on disk.
    fn snapshot(&self) -> Result<Arc<KeyringFile>, KeyError> {
        let meta = fs::metadata(&self.path).map_err(|e| io_err(&self.path, "stat", e))?;
        let stamp = stamp_of(&meta);
        let mut loaded = self.loaded.lock();
        if loaded.stamp != stamp {
            let (file, stamp) = read_file(&self.path)?;
            *loaded = Loaded {
                file: Arc::new(file),
                stamp,
            };
        }
        Ok(loaded.file.clone())
    }

    /// Apply a change under the lock file on a fresh read, then write atomically.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut KeyringFile) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let lock_path = {
            let mut p = self.path.clone().into_os_string();
            p.push(".lock");
            PathBuf::from(p)
        };
        let mut opts = fs::OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let lock = opts
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, "open lock file", e))?;
        lock.lock().map_err(|e| io_err(&lock_path, "lock", e))?;
        let (mut file, _) = read_file(&self.path)?;
        let out = f(&mut file)?;
        write_atomic(&self.path, &file)?;
        let meta = fs::metadata(&self.path).map_err(|e| io_err(&self.path, "stat", e))?;
        *self.loaded.lock() = Loaded {
            file: Arc::new(file),
            stamp: stamp_of(&meta),
        };
        drop(lock);
        Ok(out)
    }

    /// Add a new current version for `tenant` (created if absent), or for every tenant in the
    /// keyring when `tenant` is `None`. Old versions stay readable. Returns `(tenant, new version)`.
    pub fn rotate(&self, tenant: Option<&str>) -> Result<Vec<(String, u32)>, KeyError> {
        if let Some(t) = tenant {
            check_tenant(t)?;
        }
        self.mutate(|file| {
            let names: Vec<String> = match tenant {
                Some(t) => vec![t.to_string()],
                None => file.tenants.keys().cloned().collect(),
            };
            let mut out = Vec::new();
            for name in names {
                let v = file.tenants.entry(name.clone()).or_default().add_version();
                out.push((name, v));
            }
            Ok(out)
        })
    }

    /// Remove one version of a tenant's key. Data still wrapped under it becomes unreadable
    /// (rewrap first). The current version cannot be retired: rotate first.
    pub fn retire(&self, tenant: &str, version: u32) -> Result<(), KeyError> {
        self.mutate(|file| {
            let keys = file
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| KeyError::Config(format!("keyring has no tenant {tenant:?}")))?;
            if keys.current().map(|k| k.version) == Some(version) {
                return Err(KeyError::Config(format!(
                    "version {version} is the current key of tenant {tenant:?}; rotate first, \
                     rewrap (clew keys rotate), then retire it"
                )));
            }
            let before = keys.keys.len();
            keys.keys.retain(|k| k.version != version);
            if keys.keys.len() == before {
                return Err(KeyError::Config(format!(
                    "tenant {tenant:?} has no key version {version}"
                )));
            }
            Ok(())
        })
    }

    /// Crypto-shred a tenant: remove all its key versions (its existing data becomes unreadable
    /// for good). The version counter is kept, so new data gets a fresh, never-used version.
    /// Returns the number of versions removed.
    pub fn destroy(&self, tenant: &str) -> Result<usize, KeyError> {
        self.mutate(|file| {
            let keys = file
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| KeyError::Config(format!("keyring has no tenant {tenant:?}")))?;
            let n = keys.keys.len();
            keys.keys.clear();
            Ok(n)
        })
    }

    /// Tenants and their key versions (no key material).
    pub fn list(&self) -> Result<Vec<TenantKeyInfo>, KeyError> {
        let file = self.snapshot()?;
        Ok(file
            .tenants
            .iter()
            .map(|(tenant, keys)| {
                let mut versions: Vec<u32> = keys.keys.iter().map(|k| k.version).collect();
                versions.sort_unstable();
                TenantKeyInfo {
                    tenant: tenant.clone(),
                    current: versions.last().copied(),
                    versions,
                    next_version: keys.next_version.max(1),
                }
            })
            .collect())
    }

    fn wrap(
        &self,
        id: &str,
        tenant: &str,
        kv: &KeyVersion,
        data_key: &[u8; 32],
    ) -> Result<Envelope, KeyError> {
        let kek = decode_key(&self.path, tenant, kv)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &kek[..])
                .map_err(|_| KeyError::Corrupt("bad KEK".into()))?,
        );
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        let mut buf = Vec::with_capacity(12 + 32 + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(data_key);
        let aad = wrap_aad(id, tenant, kv.version);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf[12..],
            )
            .map_err(|_| KeyError::Corrupt("AES-GCM wrap failed".into()))?;
        buf.extend_from_slice(tag.as_ref());
        use zeroize::Zeroize;
        let env = Envelope {
            format: ENVELOPE_FORMAT,
            provider: ProviderKind::Local,
            tenant: tenant.to_string(),
            kek_id: id.to_string(),
            kek_version: Some(kv.version),
            wrapped: b64(&buf),
            created_unix: now_unix(),
        };
        buf.zeroize();
        Ok(env)
    }

    fn unwrap_with(
        &self,
        file: &KeyringFile,
        env: &Envelope,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        if env.provider != ProviderKind::Local {
            return Err(KeyError::Config(format!(
                "encryption.provider: envelope was written by provider {:?} but the configured provider is local",
                env.provider.as_str()
            )));
        }
        let version = env
            .kek_version
            .ok_or_else(|| KeyError::Corrupt("local envelope without kek_version".into()))?;
        if env.kek_id != file.id {
            return Err(gone(
                &env.tenant,
                &env.kek_id,
                Some(version),
                format!(
                    "envelope belongs to keyring {}, this keyring ({}) is {}",
                    env.kek_id,
                    self.path.display(),
                    file.id
                ),
            ));
        }
        let keys = file.tenants.get(&env.tenant).ok_or_else(|| {
            gone(
                &env.tenant,
                &env.kek_id,
                Some(version),
                "tenant has no keys in the keyring",
            )
        })?;
        let kv = keys
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or_else(|| {
                gone(
                    &env.tenant,
                    &env.kek_id,
                    Some(version),
                    "key version retired or destroyed",
                )
            })?;
        let kek = decode_key(&self.path, &env.tenant, kv)?;
        let wrapped = env.wrapped_bytes()?;
        if wrapped.len() != 12 + 32 + 16 {
            return Err(KeyError::Corrupt(format!(
                "wrapped key has {} bytes, expected 60",
                wrapped.len()
            )));
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&wrapped[..12]);
        let mut buf = Zeroizing::new(wrapped[12..].to_vec());
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &kek[..])
                .map_err(|_| KeyError::Corrupt("bad KEK".into()))?,
        );
        let aad = wrap_aad(&file.id, &env.tenant, version);
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf[..],
            )
            .map_err(|_| {
                KeyError::Corrupt(format!(
                    "wrapped key for tenant {:?} failed authentication",
                    env.tenant
                ))
            })?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(plain);
        Ok(out)
    }
}

fn check_tenant(tenant: &str) -> Result<(), KeyError> {
    if tenant.is_empty() {
        return Err(KeyError::Config("tenant name must not be empty".into()));
    }
    Ok(())
}

fn wrap_aad(id: &str, tenant: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_DOMAIN.len() + id.len() + tenant.len() + 8);
    aad.extend_from_slice(WRAP_DOMAIN);
    aad.push(0);
    aad.extend_from_slice(id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&(tenant.len() as u64).to_be_bytes());
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn decode_key(path: &Path, tenant: &str, kv: &KeyVersion) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(unb64(&kv.key).unwrap_or_default());
    if bytes.len() != 32 {
        return Err(KeyError::Config(format!(
            "encryption.local.keyring: {}: key version {} of tenant {tenant:?} is not 32 bytes of base64; \
             restore the keyring from backup",
            path.display(),
            kv.version
        )));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn read_file(path: &Path) -> Result<(KeyringFile, Stamp), KeyError> {
    let f = fs::File::open(path).map_err(|e| io_err(path, "open", e))?;
    let meta = f.metadata().map_err(|e| io_err(path, "stat", e))?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| io_err(path, "read", e))?);
    let file: KeyringFile = serde_yaml::from_str(&text).map_err(|e| {
        KeyError::Config(format!(
            "encryption.local.keyring: {} is not a valid keyring file: {e}",
            path.display()
        ))
    })?;
    if file.format != FILE_FORMAT {
        return Err(KeyError::Config(format!(
            "encryption.local.keyring: {} has format {}, this build reads {FILE_FORMAT}",
            path.display(),
            file.format
        )));
    }
    for (tenant, keys) in &file.tenants {
        for kv in &keys.keys {
            if kv.version == 0 || kv.version >= keys.next_version {
                return Err(KeyError::Config(format!(
                    "encryption.local.keyring: {}: tenant {tenant:?} key version {} is not below next_version {}",
                    path.display(),
                    kv.version,
                    keys.next_version
                )));
            }
        }
    }
    Ok((file, stamp_of(&meta)))
}

fn write_atomic(path: &Path, file: &KeyringFile) -> Result<(), KeyError> {
    let text = Zeroizing::new(
        serde_yaml::to_string(file)
            .map_err(|e| KeyError::Config(format!("serializing keyring: {e}")))?,
    );
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix);
    let tmp = dir.join(format!(".{name}.tmp.{}", hex::encode(suffix)));
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io_err(&tmp, "write", e))?;
        f.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| io_err(path, "rename onto", e))?;
        let d = fs::File::open(&dir).map_err(|e| io_err(&dir, "open directory", e))?;
        d.sync_all()
            .map_err(|e| io_err(&dir, "fsync directory", e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[async_trait::async_trait]
impl KeyProvider for Keyring {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, tenant: &str) -> Result<DataKey, KeyError> {
        check_tenant(tenant)?;
        let mut file = self.snapshot()?;
        let has_current = file.tenants.get(tenant).and_then(|k| k.current()).is_some();
        if !has_current {
            self.mutate(|f| {
                let keys = f.tenants.entry(tenant.to_string()).or_default();
                if keys.current().is_none() {
                    let v = keys.add_version();
                    tracing::info!(
                        tenant,
                        version = v,
                        "generated a new keyring key for tenant"
                    );
                }
                Ok(())
            })?;
            file = self.snapshot()?;
        }
        let kv = file
            .tenants
            .get(tenant)
            .and_then(|k| k.current())
            .ok_or_else(|| KeyError::Config(format!("keyring has no key for tenant {tenant:?}")))?;
        let mut plaintext = Zeroizing::new([0u8; 32]);
        fill_random(&mut plaintext[..]);
        let envelope = self.wrap(&file.id, tenant, kv, &plaintext)?;
        Ok(DataKey {
            plaintext,
            envelope,
        })
    }

    async fn unwrap(&self, envelope: &Envelope) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let file = self.snapshot()?;
        self.unwrap_with(&file, envelope)
    }

    async fn rewrap(&self, envelope: &Envelope) -> Result<Option<Envelope>, KeyError> {
        let file = self.snapshot()?;
        let key = self.unwrap_with(&file, envelope)?;
        let kv = file
            .tenants
            .get(&envelope.tenant)
            .and_then(|k| k.current())
            .ok_or_else(|| {
                gone(
                    &envelope.tenant,
                    &file.id,
                    None,
                    "tenant has no current key",
                )
            })?;
        if envelope.kek_version == Some(kv.version) {
            return Ok(None);
        }
        Ok(Some(self.wrap(&file.id, &envelope.tenant, kv, &key)?))
    }

    async fn check(&self) -> Result<(), KeyError> {
        let file = self.snapshot()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(&self.path).map_err(|e| io_err(&self.path, "stat", e))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Config(format!(
                    "encryption.local.keyring: {} has mode {mode:o}; it holds secret keys: chmod 600 it",
                    self.path.display()
                )));
            }
        }
        for (tenant, keys) in &file.tenants {
            for kv in &keys.keys {
                decode_key(&self.path, tenant, kv)?;
            }
        }
        Ok(())
    }
}
