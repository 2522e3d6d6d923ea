//! Object storage for blocks, through the `object_store` crate: the local filesystem, or (feature
//! `aws`) an S3-compatible bucket ([`Storage::s3`]). On the local backend every object is fsynced
//! with its directory, because WAL segments are deleted once their spans are in blocks.

use crate::StoreError;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::PathBuf;
use std::sync::Arc;

/// `storage.s3`: an S3-compatible bucket for blocks (AWS S3, MinIO, Ceph, moto…). Credentials come
/// from the standard AWS environment variables or the shared credentials file (`AWS_PROFILE`),
/// never from this file.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (e.g. `clew/prod`); blocks go under `{prefix}/tenants/...`.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers; AWS's regional endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers need.
    #[serde(default)]
    pub force_path_style: bool,
    /// Explicit credentials (tests, embedding); never read from the configuration file. When
    /// absent: the AWS environment variables, then the shared credentials file.
    #[serde(skip)]
    pub credentials: Option<S3Credentials>,
}

/// An access key pair (and session token) for [`S3Config::credentials`].
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where a block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Local disk (`{data_dir}/blocks`).
    Local,
    /// The S3-compatible bucket.
    Remote,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Remote => "remote",
        }
    }
}

/// `storage.tiering`: blocks are written to local disk, then moved to the bucket once older than
/// `after` (by their newest span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TieringConfig {
    pub after: std::time::Duration,
}

#[derive(Clone)]
pub struct Storage {
    pub os: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    tier: Tier,
    /// Local copies of small, hot objects (`meta.json`, `bloom.bin`) of a remote storage,
    /// byte for byte, so start-up and trace lookups need no GET for them.
    cache: Option<PathBuf>,
    /// Encryption at rest: blocks written here are sealed with a data key from this manager, and
    /// sealed blocks found here are opened with it (`sealed_block.rs`). `None`: plaintext.
    keys: Option<Arc<clew_encryption::KeyManager>>,
}

/// Objects of a block directory that a remote storage keeps a local copy of (`key.json`: the
/// wrapped data key, needed before `meta.json` and `bloom.bin` of a sealed block can be opened).
const CACHED_FILES: [&str; 3] = [
    crate::block::META_FILE,
    crate::block::BLOOM_FILE,
    crate::sealed_block::KEY_FILE,
];

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("tier", &self.tier)
            .field("os", &self.os.to_string())
            .finish()
    }
}

impl Storage {
    pub fn local(root: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.display().to_string(),
            source,
        })?;
        let os = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self {
            os: Arc::new(os),
            local_root: Some(root),
            tier: Tier::Local,
            cache: None,
            keys: None,
        })
    }

    /// Any other backend (S3-compatible and friends), configured by the caller.
    pub fn remote(os: Arc<dyn ObjectStore>) -> Self {
        Self {
            os,
            local_root: None,
            tier: Tier::Remote,
            cache: None,
            keys: None,
        }
    }

    /// Keeps verbatim local copies of every block's `meta.json` and `bloom.bin` under `root`
    /// (`{root}/{tenant}/{day}/{block}/`): written through on put, read before any GET, removed
    /// on delete.
    pub fn with_cache(mut self, root: PathBuf) -> Self {
        self.cache = Some(root);
        self
    }

    /// The cache file for an object, if this storage caches it: `tenants/{t}/{d}/{b}/{file}` →
    /// `{root}/{t}/{d}/{b}/{file}`.
    fn cache_file(&self, path: &Path) -> Option<PathBuf> {
        let root = self.cache.as_ref()?;
        let parts: Vec<_> = path.parts().collect();
        match parts.as_slice() {
            [t, tenant, day, block, file]
                if t.as_ref() == "tenants" && CACHED_FILES.contains(&file.as_ref()) =>
            {
                Some(
                    root.join(tenant.as_ref())
                        .join(day.as_ref())
                        .join(block.as_ref())
                        .join(file.as_ref()),
                )
            }
            _ => None,
        }
    }

    fn cache_put(&self, path: &Path, bytes: &[u8]) {
        let Some(file) = self.cache_file(path) else {
            return;
        };
        // Write-then-rename: a crash never leaves a truncated copy. A cache that cannot be written
        // only costs GETs later.
        let tmp = file.with_extension("tmp");
        let res = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &file));
        if let Err(e) = res {
            tracing::warn!(path = %file.display(), error = %e, "cannot write the block cache");
        }
    }

    fn cache_remove(&self, path: &Path) {
        let Some(file) = self.cache_file(path) else {
            return;
        };
        match std::fs::remove_file(&file) {
            Ok(()) => {
                // The block's cache directory goes with its last file (fails while not empty).
                if let Some(dir) = file.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %file.display(), error = %e, "cannot remove a block cache entry")
            }
        }
    }

    /// Removes cached blocks whose directory (`tenants/{t}/{d}/{b}`) is not in `keep`.
    pub fn prune_cache(&self, keep: &std::collections::HashSet<String>) {
        let Some(root) = &self.cache else {
            return;
        };
        let subdirs = |p: &std::path::Path| -> Vec<(String, PathBuf)> {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (tenant, tp) in subdirs(root) {
            for (day, dp) in subdirs(&tp) {
                for (block, bp) in subdirs(&dp) {
                    if !keep.contains(&format!("tenants/{tenant}/{day}/{block}")) {
                        if let Err(e) = std::fs::remove_dir_all(&bp) {
                            tracing::warn!(path = %bp.display(), error = %e, "cannot prune the block cache");
                        }
                    }
                }
                let _ = std::fs::remove_dir(&dp);
            }
            let _ = std::fs::remove_dir(&tp);
        }
    }

    /// Seals blocks written to this storage (and opens sealed ones) with data keys from `keys`;
    /// `None`: plaintext blocks only.
    pub fn with_keys(mut self, keys: Option<Arc<clew_encryption::KeyManager>>) -> Self {
        self.keys = keys;
        self
    }

    /// The key manager blocks here are sealed with, if encryption at rest is on.
    pub fn keys(&self) -> Option<&Arc<clew_encryption::KeyManager>> {
        self.keys.as_ref()
    }

    pub fn tier(&self) -> Tier {
        self.tier
    }

    pub async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), StoreError> {
        let bytes = Bytes::from(bytes);
        self.os.put(path, PutPayload::from(bytes.clone())).await?;
        self.cache_put(path, &bytes);
        if let Some(root) = &self.local_root {
            let file = root.join(path.as_ref());
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            let dir = file
                .parent()
                .map(|d| d.to_path_buf())
                .unwrap_or_else(|| root.clone());
            sync(&file)
                .and_then(|_| sync(&dir))
                .map_err(|source| StoreError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        if let Some(file) = self.cache_file(path) {
            if let Ok(bytes) = std::fs::read(&file) {
                return Ok(Bytes::from(bytes));
            }
        }
        let bytes = self.os.get(path).await?.bytes().await?;
        self.cache_put(path, &bytes);
        Ok(bytes)
    }

    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        self.cache_remove(path);
        match self.os.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object path (recursively) with its size.
    pub async fn list_all(&self) -> Result<Vec<(Path, u64)>, StoreError> {
        let items: Vec<_> = self.os.list(None).try_collect().await?;
        Ok(items.into_iter().map(|m| (m.location, m.size)).collect())
    }

    /// Copies one object from `src` to the same path here, returning its size. Large objects are
    /// streamed as a multipart upload (8 MiB parts), so a big block never sits in memory whole.
    pub async fn copy_from(&self, src: &Storage, path: &Path) -> Result<u64, StoreError> {
        const PART: usize = 8 * 1024 * 1024;
        let size = src.os.head(path).await?.size;
        if size <= 2 * PART as u64 || self.local_root.is_some() || self.cache_file(path).is_some() {
            self.put(path, src.get(path).await?.to_vec()).await?;
            return Ok(size);
        }
        let upload = self.os.put_multipart(path).await?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let mut stream = src.os.get(path).await?.into_stream();
        let copied = async {
            while let Some(chunk) = stream.try_next().await? {
                w.wait_for_capacity(4).await?;
                w.put(chunk);
            }
            Ok::<_, object_store::Error>(())
        }
        .await;
        match copied {
            Ok(()) => {
                w.finish().await?;
                Ok(size)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e.into())
            }
        }
    }

    /// Every object under `dir` (recursively).
    pub async fn list_dir(&self, dir: &Path) -> Result<Vec<Path>, StoreError> {
        let items: Vec<_> = self.os.list(Some(dir)).try_collect().await?;
        Ok(items.into_iter().map(|m| m.location).collect())
    }
}

#[cfg(feature = "aws")]
mod s3 {
    use super::*;
    use object_store::aws::AmazonS3Builder;
    use object_store::prefix::PrefixStore;
    use object_store::{ClientOptions, RetryConfig};
    use std::time::Duration;

    fn config_error(key: &str, message: impl Into<String>) -> StoreError {
        StoreError::Config {
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `(access key, secret, session token)` of `profile` in an AWS shared credentials file (the
    /// one parser, shared with the KMS client).
    pub(super) fn parse_credentials_file(
        text: &str,
        profile: &str,
    ) -> Option<(String, String, Option<String>)> {
        clew_encryption::parse_credentials_file(text, profile).map(|c| {
            (
                c.access_key_id,
                c.secret_access_key.to_string(),
                c.session_token.map(|t| t.to_string()),
            )
        })
    }

    /// Credentials from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
    /// `~/.aws/credentials`, profile `AWS_PROFILE` or `default`), if it has them.
    fn shared_file_credentials() -> Result<Option<S3Credentials>, StoreError> {
        let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => PathBuf::from(p),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".aws").join("credentials"),
                None => return Ok(None),
            },
        };
        let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var_os("AWS_PROFILE").is_some() {
                    return Err(config_error(
                        "storage.s3",
                        format!("AWS_PROFILE={profile} is set but {} does not exist (fix: create it, set AWS_SHARED_CREDENTIALS_FILE, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)", path.display()),
                    ));
                }
                return Ok(None);
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        match parse_credentials_file(&text, &profile) {
            Some((access_key_id, secret_access_key, session_token)) => Ok(Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            })),
            None if std::env::var_os("AWS_PROFILE").is_some() => Err(config_error(
                "storage.s3",
                format!("profile {profile:?} (AWS_PROFILE) has no aws_access_key_id/aws_secret_access_key in {} (fix: add them, or choose another profile)", path.display()),
            )),
            None => Ok(None),
        }
    }

    fn builder(
        cfg: &S3Config,
        retry: RetryConfig,
        client: ClientOptions,
    ) -> Result<(AmazonS3Builder, &'static str), StoreError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_virtual_hosted_style_request(!cfg.force_path_style)
            .with_retry(retry)
            .with_client_options(client);
        let env_region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok();
        let region = cfg
            .region
            .clone()
            .or(env_region)
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        if let Some(ep) = &cfg.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"));
        }
        let (creds, source) = match &cfg.credentials {
            Some(c) => (Some(c.clone()), "explicit credentials"),
            // from_env has them
            None if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() => (None, "AWS_ACCESS_KEY_ID"),
            None => match shared_file_credentials()? {
                Some(c) => (Some(c), "the shared credentials file"),
                None => (None, "none found in AWS_ACCESS_KEY_ID or the shared credentials file; instance/container credentials were tried"),
            },
        };
        if let Some(c) = creds {
            b = b
                .with_access_key_id(c.access_key_id)
                .with_secret_access_key(c.secret_access_key);
            if let Some(t) = c.session_token {
                b = b.with_token(t);
            }
        }
        Ok((b, source))
    }

    fn build(cfg: &S3Config, b: AmazonS3Builder) -> Result<Arc<dyn ObjectStore>, StoreError> {
        // HTTP I/O runs on the runtime that opens the store, whichever runtime asks: a pooled
        // connection is driven by the runtime that opened it, and the compactor's own runtime
        // (`background.rs`) is busy for long stretches; queries must not wait on it.
        let b = match tokio::runtime::Handle::try_current() {
            Ok(io) => b.with_http_connector(object_store::client::SpawnedReqwestConnector::new(io)),
            Err(_) => b,
        };
        let s3 = b.build().map_err(|e| {
            config_error("storage.s3", format!("cannot configure the S3 client: {e}"))
        })?;
        let prefix = cfg.prefix.trim_matches('/');
        Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        })
    }

    enum Probe {
        NoBucket,
        Denied,
        Other,
    }

    /// What a failed listing means. List errors reach us as `Generic` with the S3 error inside
    /// (object_store does not expose the status there), so the S3 error codes are looked for in
    /// the message chain too.
    fn classify(e: &object_store::Error) -> Probe {
        match e {
            object_store::Error::NotFound { .. } => return Probe::NoBucket,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => return Probe::Denied,
            _ => {}
        }
        let mut text = e.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(c) = cur {
            text.push_str(&c.to_string());
            cur = c.source();
        }
        if text.contains("NoSuchBucket") || text.contains("404 Not Found") {
            Probe::NoBucket
        } else if [
            "403 Forbidden",
            "401 Unauthorized",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
        ]
        .iter()
        .any(|k| text.contains(k))
        {
            Probe::Denied
        } else {
            Probe::Other
        }
    }

    pub(super) async fn open(cfg: &S3Config) -> Result<Storage, StoreError> {
        if cfg.bucket.is_empty() {
            return Err(config_error(
                "storage.s3.bucket",
                "must not be empty (fix: the bucket's name)",
            ));
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3 (regional endpoint)".into());
        // The probe fails fast: one attempt, short timeouts.
        let probe_client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(15));
        let probe_retry = RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let (probe, source) = builder(cfg, probe_retry, probe_client)?;
        let probe = build(cfg, probe)?;
        let res =
            tokio::time::timeout(Duration::from_secs(20), probe.list_with_delimiter(None)).await;
        let bucket = &cfg.bucket;
        match res.map(|r| r.map_err(|e| (classify(&e), e))) {
            Ok(Ok(_)) => {}
            Ok(Err((Probe::NoBucket, _))) => {
                return Err(config_error(
                    "storage.s3.bucket",
                    format!("bucket {bucket} does not exist at {endpoint} (fix: create it, or correct the name)"),
                ))
            }
            Ok(Err((Probe::Denied, e))) => {
                return Err(config_error(
                    "storage.s3",
                    format!("credentials ({source}) rejected by {endpoint} for bucket {bucket} (fix: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE to a key allowed to list, read, write and delete in the bucket): {e}"),
                ))
            }
            Ok(Err((Probe::Other, e))) => {
                return Err(config_error(
                    "storage.s3.endpoint",
                    format!("cannot list bucket {bucket} at {endpoint} (fix: check the endpoint URL, that the server is reachable, and `region`/`force_path_style`; credentials: {source}): {e}"),
                ))
            }
            Err(_) => {
                return Err(config_error(
                    "storage.s3.endpoint",
                    format!("no answer from {endpoint} within 20 s (fix: check the endpoint URL and that the server is reachable)"),
                ))
            }
        }
        let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(10));
        let os = build(cfg, builder(cfg, RetryConfig::default(), client)?.0)?;
        Ok(Storage::remote(os))
    }
}

impl Storage {
    /// An S3-compatible bucket (feature `aws`). Checks at once that the bucket exists and the
    /// credentials are accepted, naming the configuration key and the fix when not.
    #[cfg(feature = "aws")]
    pub async fn s3(cfg: &S3Config) -> Result<Storage, StoreError> {
        s3::open(cfg).await
    }

    #[cfg(not(feature = "aws"))]
    pub async fn s3(_cfg: &S3Config) -> Result<Storage, StoreError> {
        Err(StoreError::Config {
            key: "storage.s3".into(),
            message: "this build has no S3 support (fix: build clew-store with feature `aws`)"
                .into(),
        })
    }
}

#[cfg(all(test, feature = "aws"))]
mod tests {
    #[test]
    fn credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[profile dev]\n# c\naws_access_key_id=C\naws_secret_access_key = D\naws_session_token = T\n[broken]\naws_access_key_id=E\n";
        let p = super::s3::parse_credentials_file;
        assert_eq!(p(text, "default"), Some(("A".into(), "B".into(), None)));
        assert_eq!(
            p(text, "dev"),
            Some(("C".into(), "D".into(), Some("T".into())))
        );
        assert_eq!(p(text, "broken"), None);
        assert_eq!(p(text, "missing"), None);
    }
}
