//! Encryption at rest for blocks.
//!
//! With `storage.encryption` (a [`KeyManager`] on the block's [`Storage`]), a block directory holds:
//!
//! * `key.json` — written FIRST: the block's data key wrapped by the tenant's key-encryption key
//!   ([`Envelope`] JSON; plaintext, it holds no span data but the tenant name). One provider call
//!   per block ([`KeyManager::new_file_key`]).
//! * `data.parquet`, `bloom.bin`, `meta.json` — each in clew-encryption's sealed-file format
//!   ([`sealed`]: AES-256-GCM in 64 KiB chunks, AAD = the object path inside the storage, e.g.
//!   `tenants/acme/2026-01-01/{block}/data.parquet`); `meta.json` still last.
//!
//! Parquet modular encryption was the first choice, but the `parquet` crate's `encryption`
//! feature pulls in `ring`, which this project forbids (aws-lc-rs only); the sealed-file format
//! keeps ranged reads instead: [`SealedFileReader`] maps every plaintext range Parquet asks for
//! (footer, column chunks) to the ciphertext chunks covering it and decrypts them. The sealed
//! header (32 bytes) of `data.parquet` is fetched once, together with the first range, and kept
//! with the block.
//!
//! `meta.size_bytes` stays the plaintext size of `data.parquet` (the object is
//! [`sealed::sealed_len`] of it); `meta.encryption_key_id` is `"{provider}:{kek_id}"` of the key
//! that wrapped the data key when the block was written (informational: `key.json` is
//! authoritative and changes on rotation, the sealed meta does not).
//!
//! Blocks without `key.json` are plaintext (written before encryption was turned on) and stay
//! readable. Unwrapped data keys are not kept with the block: every reader asks the
//! [`KeyManager`] (cached, with a TTL), so a destroyed key stops working for a running server too.

use crate::block::META_FILE;
use crate::storage::Storage;
use crate::{Store, StoreError};
use bytes::Bytes;
use clew_encryption::sealed::{self, SealedReader};
use clew_encryption::{Envelope, KeyError, KeyManager, SealError, Zeroizing};
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::RwLock;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The wrapped data key of a sealed block.
pub const KEY_FILE: &str = "key.json";

/// A sealed block's key state, shared by the copies of one block (tiering keeps it).
#[derive(Debug)]
pub struct BlockKey {
    /// The content of `key.json`; replaced by [`Store::rewrap_keys`].
    envelope: RwLock<Envelope>,
    /// The sealed header of `data.parquet` (not secret), once fetched.
    data_header: OnceLock<Bytes>,
}

impl BlockKey {
    pub fn new(envelope: Envelope) -> Arc<Self> {
        Arc::new(Self {
            envelope: RwLock::new(envelope),
            data_header: OnceLock::new(),
        })
    }

    pub fn envelope(&self) -> Envelope {
        self.envelope.read().clone()
    }

    /// Unwraps the data key (through the manager's cache).
    pub async fn data_key(
        &self,
        keys: &KeyManager,
        block: &str,
    ) -> Result<Arc<Zeroizing<[u8; 32]>>, StoreError> {
        let env = self.envelope();
        keys.open(&env)
            .await
            .map_err(|e| key_error(e, block, &env.tenant))
    }
}

/// A key error about one block as a store error: a retryable outage stays retryable, a gone key
/// names the block and tenant.
pub fn key_error(e: KeyError, block: &str, tenant: &str) -> StoreError {
    match e {
        KeyError::Unavailable { .. } => StoreError::KeyUnavailable(format!(
            "cannot reach the key provider for block {block} of tenant {tenant:?} (KMS unreachable?): {e}"
        )),
        KeyError::KeyGone { reason, .. } => StoreError::KeyGone {
            block: block.to_string(),
            tenant: tenant.to_string(),
            reason,
        },
        KeyError::Corrupt(detail) => StoreError::Corrupt {
            what: format!("{block}/{KEY_FILE}"),
            detail,
        },
        other => StoreError::Config {
            key: "storage.encryption".into(),
            message: format!("block {block} of tenant {tenant:?}: {other}"),
        },
    }
}

fn seal_error(what: &Path, e: SealError) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        detail: format!("sealed file: {e}"),
    }
}

/// The informational key id recorded in `meta.encryption_key_id`.
pub fn key_id(envelope: &Envelope) -> String {
    format!("{}:{}", envelope.provider.as_str(), envelope.kek_id)
}

/// Seals one block file; the AAD is its path, so a file moved to another block does not open.
pub fn seal_file(key: &[u8; 32], path: &Path, plain: &[u8]) -> Vec<u8> {
    sealed::seal(key, path.as_ref().as_bytes(), plain)
}

/// Opens a whole sealed block file.
pub fn open_file(key: &[u8; 32], path: &Path, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    sealed::open(key, path.as_ref().as_bytes(), bytes).map_err(|e| seal_error(path, e))
}

/// Writes `key.json` (replacing it: atomic on local disk, a single PUT in a bucket).
pub async fn write_envelope(
    storage: &Storage,
    dir: &Path,
    envelope: &Envelope,
) -> Result<(), StoreError> {
    storage
        .put(&dir.clone().join(KEY_FILE), envelope.to_json())
        .await
}

/// Reads `key.json` of a block directory; `Ok(None)` if there is none (a plaintext block).
pub async fn read_envelope(storage: &Storage, dir: &Path) -> Result<Option<Envelope>, StoreError> {
    let path = dir.clone().join(KEY_FILE);
    match storage.get(&path).await {
        Ok(bytes) => Envelope::from_json(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: path.to_string(),
                detail: e.to_string(),
            }),
        Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`Block::load`] needs to open a sealed block: its key state and the unwrapped data key.
pub(crate) struct Opened {
    pub key: Arc<BlockKey>,
    pub data_key: Arc<Zeroizing<[u8; 32]>>,
}

/// Reads and unwraps the key of a block directory. `has_key_file`: whether `key.json` was listed
/// (`None`: look). `Ok(None)`: a plaintext block.
pub(crate) async fn open_block_key(
    storage: &Storage,
    dir: &Path,
    has_key_file: Option<bool>,
) -> Result<Option<Opened>, StoreError> {
    if has_key_file == Some(false) {
        return Ok(None);
    }
    let Some(envelope) = read_envelope(storage, dir).await? else {
        return Ok(None);
    };
    let Some(keys) = storage.keys() else {
        return Err(StoreError::Config {
            key: "storage.encryption".into(),
            message: format!(
                "encrypted blocks found ({dir} has {KEY_FILE}, tenant {:?}); configure \
                 storage.encryption with the key provider that wrote them",
                envelope.tenant
            ),
        });
    };
    let block = dir.filename().unwrap_or(dir.as_ref()).to_string();
    let key = BlockKey::new(envelope);
    let data_key = key.data_key(keys, &block).await?;
    Ok(Some(Opened { key, data_key }))
}

/// Reads one small block file (`meta.json`, `bloom.bin`), opening it if the block is sealed.
pub(crate) async fn read_small(
    storage: &Storage,
    path: &Path,
    data_key: Option<&[u8; 32]>,
) -> Result<Vec<u8>, StoreError> {
    let bytes = storage.get(path).await?;
    match data_key {
        Some(k) => open_file(k, path, &bytes),
        None => Ok(bytes.to_vec()),
    }
}

fn parquet_error(e: impl std::error::Error + Send + Sync + 'static) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// Parquet's `AsyncFileReader` over a sealed `data.parquet`: plaintext ranges in, ranged GETs of
/// the covering ciphertext chunks out, decrypted and trimmed. Offsets and the file size Parquet
/// sees are plaintext ones, so the footer read and row-group reads work unchanged.
pub struct SealedFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    plain_len: u64,
    data_key: Arc<Zeroizing<[u8; 32]>>,
    key: Arc<BlockKey>,
    opener: Option<SealedReader>,
}

impl SealedFileReader {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        plain_len: u64,
        data_key: Arc<Zeroizing<[u8; 32]>>,
        key: Arc<BlockKey>,
    ) -> Self {
        Self {
            store,
            path,
            plain_len,
            data_key,
            key,
            opener: None,
        }
    }

    /// Fetches the ciphertext ranges (empty ones cost nothing), plus the header on first use.
    async fn fetch(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, ParquetError> {
        let header_known = self.key.data_header.get().is_some();
        let mut wanted: Vec<Range<u64>> = Vec::with_capacity(ranges.len() + 1);
        if !header_known {
            wanted.push(0..sealed::HEADER_LEN);
        }
        wanted.extend(ranges.iter().filter(|r| r.start < r.end).cloned());
        let mut got = match wanted.len() {
            0 => Vec::new(),
            1 => vec![self
                .store
                .get_range(&self.path, wanted[0].clone())
                .await
                .map_err(parquet_error)?],
            _ => self
                .store
                .get_ranges(&self.path, &wanted)
                .await
                .map_err(parquet_error)?,
        }
        .into_iter();
        if !header_known {
            let header = got
                .next()
                .ok_or_else(|| ParquetError::General("sealed header not fetched".into()))?;
            let _ = self.key.data_header.set(header);
        }
        Ok(ranges
            .iter()
            .map(|r| {
                if r.start < r.end {
                    got.next().unwrap_or_default()
                } else {
                    Bytes::new()
                }
            })
            .collect())
    }

    fn opener(&mut self) -> Result<&SealedReader, ParquetError> {
        if self.opener.is_none() {
            let header = self
                .key
                .data_header
                .get()
                .ok_or_else(|| ParquetError::General("sealed header not fetched".into()))?;
            let r = SealedReader::new(&self.data_key, self.path.as_ref().as_bytes(), header)
                .map_err(parquet_error)?;
            self.opener = Some(r);
        }
        self.opener
            .as_ref()
            .ok_or_else(|| ParquetError::General("sealed reader missing".into()))
    }

    async fn read(&mut self, plain: Vec<Range<u64>>) -> Result<Vec<Bytes>, ParquetError> {
        let cipher = plain
            .iter()
            .map(|r| sealed::ciphertext_range(r.clone(), self.plain_len))
            .collect::<Result<Vec<_>, _>>()
            .map_err(parquet_error)?;
        let fetched = self.fetch(&cipher).await?;
        let plain_len = self.plain_len;
        let opener = self.opener()?;
        plain
            .into_iter()
            .zip(fetched)
            .map(|(r, bytes)| {
                opener
                    .open_range(&bytes, r, plain_len)
                    .map(Bytes::from)
                    .map_err(parquet_error)
            })
            .collect()
    }
}

impl AsyncFileReader for SealedFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.read(vec![range])
                .await?
                .pop()
                .ok_or_else(|| ParquetError::General("no bytes read".into()))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.read(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.plain_len;
            // Footer and metadata through the same mapping; one 64 KiB suffix (one sealed chunk or
            // two) usually gets both, and the header comes with it.
            let md = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

/// What [`Store::rewrap_keys`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Blocks whose `key.json` now names the tenant's current key version.
    pub rewrapped: usize,
    /// Blocks already wrapped by the current version.
    pub already_current: usize,
    /// Plaintext blocks (written before encryption was on): nothing to re-wrap.
    pub plaintext: usize,
    /// Blocks that could not be re-wrapped (their key is gone, or the new `key.json` could not be
    /// written); they keep their old envelope.
    pub failed: usize,
    /// One line per failure: block id, tenant and the error.
    pub errors: Vec<String>,
}

impl Store {
    /// Key rotation (`clew keys rotate`): re-wraps the data key of every block in the index (both
    /// tiers) under its tenant's current key-encryption key version, replacing `key.json` (an
    /// atomic rename on local disk, a single PUT in the bucket). Data files are not touched, so
    /// this costs one provider call and one small write per block. Blocks that fail are counted
    /// and listed in the report and keep their old envelope (the old key version must stay until
    /// they are re-wrapped). Fails with [`StoreError::KeyUnavailable`] at the first retryable
    /// provider error (nothing more could succeed; run it again later), and with
    /// [`StoreError::Config`] when encryption is not configured.
    pub async fn rewrap_keys(&self) -> Result<RewrapReport, StoreError> {
        let Some(keys) = self.inner.cfg.keys.clone() else {
            return Err(StoreError::Config {
                key: "storage.encryption".into(),
                message: "key rotation needs encryption at rest configured".into(),
            });
        };
        // No compaction, tiering move or erase swaps blocks meanwhile.
        let _c = self.inner.compaction.lock().await;
        let blocks: Vec<_> = self
            .inner
            .blocks
            .read()
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut report = RewrapReport::default();
        for b in blocks {
            let Some(key) = b.key() else {
                report.plaintext += 1;
                continue;
            };
            let old = key.envelope();
            let id = &b.meta.block_id;
            let fail = |report: &mut RewrapReport, e: &dyn std::fmt::Display| {
                tracing::warn!(block = %id, tenant = %b.meta.tenant, error = %e, "cannot re-wrap a block's data key");
                report.failed += 1;
                report
                    .errors
                    .push(format!("block {id} (tenant {}): {e}", b.meta.tenant));
            };
            match keys.rewrap(&old).await {
                Ok(None) => report.already_current += 1,
                Ok(Some(new)) => match write_envelope(b.storage(), &b.meta.dir(), &new).await {
                    Ok(()) => {
                        *key.envelope.write() = new;
                        report.rewrapped += 1;
                    }
                    Err(e) => fail(&mut report, &e),
                },
                Err(e) if e.is_retryable() => {
                    return Err(key_error(e, id, &b.meta.tenant));
                }
                Err(e) => fail(&mut report, &e),
            }
        }
        tracing::info!(
            rewrapped = report.rewrapped,
            current = report.already_current,
            plaintext = report.plaintext,
            failed = report.failed,
            "re-wrapped block data keys"
        );
        Ok(report)
    }
}

/// Whether a listed block directory holds a `meta.json` and a `key.json`.
pub(crate) fn listed_files(files: &[Path]) -> (bool, bool) {
    (
        files.iter().any(|p| p.filename() == Some(META_FILE)),
        files.iter().any(|p| p.filename() == Some(KEY_FILE)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranged reads through the decrypting reader return exactly the plaintext ranges: empty,
    /// inside one chunk, across chunks, overlapping, the tail; the header is fetched once.
    #[tokio::test]
    async fn sealed_reader_ranges_match_the_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_path_buf()).unwrap();
        let plain: Vec<u8> = (0..200_003u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let key = Zeroizing::new([9u8; 32]);
        let path = Path::from("tenants/t/2026-01-01/b/data.parquet");
        storage
            .put(&path, seal_file(&key, &path, &plain))
            .await
            .unwrap();
        let env = Envelope {
            format: clew_encryption::ENVELOPE_FORMAT,
            provider: clew_encryption::ProviderKind::Local,
            tenant: "t".into(),
            kek_id: "k".into(),
            kek_version: Some(1),
            wrapped: String::new(),
            created_unix: 0,
        };
        let bk = BlockKey::new(env);
        let mut r = SealedFileReader::new(
            storage.os.clone(),
            path.clone(),
            plain.len() as u64,
            Arc::new(key),
            bk.clone(),
        );
        let n = plain.len() as u64;
        let ranges = vec![
            0..0,
            5..10,
            65_530..65_540,
            1000..140_000,
            1000..1001,
            n - 8..n,
            n..n,
        ];
        let got = r.get_byte_ranges(ranges.clone()).await.unwrap();
        assert!(bk.data_header.get().is_some());
        for (range, bytes) in ranges.iter().zip(got) {
            assert_eq!(&bytes[..], &plain[range.start as usize..range.end as usize]);
        }
        let one = r.get_bytes(131_072..131_073).await.unwrap();
        assert_eq!(&one[..], &plain[131_072..131_073]);
        assert!(r.get_bytes(n - 1..n + 1).await.is_err());
        // A file at another path (the AAD) does not open.
        let moved = Path::from("tenants/t/2026-01-01/c/data.parquet");
        storage
            .put(&moved, storage.get(&path).await.unwrap().to_vec())
            .await
            .unwrap();
        let mut wrong = SealedFileReader::new(
            storage.os.clone(),
            moved,
            n,
            Arc::new(Zeroizing::new([9u8; 32])),
            BlockKey::new(bk.envelope()),
        );
        assert!(wrong.get_bytes(0..10).await.is_err());
    }
}
