//! Immutable blocks: `tenants/{tenant}/{day}/{block_id}/` holding `data.parquet` (one row per span,
//! sorted by trace id), `bloom.bin` (trace-id bloom filter) and `meta.json`, written last: a block
//! directory without `meta.json` is an interrupted write and is removed at start-up. With
//! encryption at rest a `key.json` comes first and the three files are sealed (`sealed_block.rs`).

use crate::bloom::Bloom;
use crate::column_filter::{self, ColumnQuery};
use crate::file_reader::BlockFileReader;
use crate::matcher::{Matcher, SpanView, Val};
use crate::schema::{self, col, AttrList, Columns, DecodeCache, DedicatedType, DEDICATED};
use crate::sealed_block::{self, BlockKey, SealedFileReader};
use crate::storage::Storage;
use crate::{SearchQuery, StoreError};
use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use clew_model::{attrs, FlatSpan, Tenant, TraceId};
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowFilter};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use parquet::schema::types::SchemaDescriptor;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

pub const META_FILE: &str = "meta.json";
pub const DATA_FILE: &str = "data.parquet";
pub const BLOOM_FILE: &str = "bloom.bin";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OperationMeta {
    pub service: String,
    pub name: String,
    pub kind: i32,
}

/// The trace-id range of one row group, for jumping straight to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RowGroupMeta {
    pub first_trace_id: String,
    pub last_trace_id: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockMeta {
    pub format_version: u32,
    pub block_id: String,
    pub tenant: String,
    /// UTC day (YYYY-MM-DD) of the spans' start times: the time partition.
    pub day: String,
    pub min_start_unix_nano: u64,
    pub max_start_unix_nano: u64,
    pub span_count: u64,
    pub trace_count: u64,
    pub services: Vec<String>,
    pub operations: Vec<OperationMeta>,
    /// Size of `data.parquet` in bytes (of its plaintext, if the block is sealed: the object is
    /// `clew_encryption::sealed::sealed_len` of this).
    pub size_bytes: u64,
    pub row_groups: Vec<RowGroupMeta>,
    /// Encryption at rest: `"{provider}:{kek_id}"` of the key that wrapped the block's data key
    /// when it was written (informational; `key.json` is authoritative and changes on rotation).
    /// `None`: a plaintext block.
    pub encryption_key_id: Option<String>,
    /// Blocks this one replaces (compaction); they are deleted once this one is durable.
    #[serde(default)]
    pub compacted_from: Vec<String>,
    pub created_unix_nano: u64,
    /// Dedicated-column keys that some span of this block also carries elsewhere (a value of
    /// another type in the generic list, or a resource attribute), so a search on them must look
    /// beyond the column. `None` (blocks written before this field): unknown, assume all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_spills: Option<Vec<String>>,
    /// Attribute keys and low-cardinality values (`tags.rs`), for the tag endpoints. `None`:
    /// a block written before the catalog existed (its keys are not listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<crate::tags::TagCatalog>,
    /// Bloom filter of generic attribute values (`attr_filter.rs`), for skipping blocks on
    /// equality searches. `None`: a block written before it existed (never skipped by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr_filter: Option<crate::attr_filter::AttrFilterMeta>,
    /// Checksums of `data.parquet` and `bloom.bin` as stored (`fsck.rs`, start-up checks).
    /// `None`: a block written before they existed (checked by structure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<FileChecksums>,
}

/// CRC-32 (IEEE, as the WAL's records) of a block's files exactly as stored: the sealed bytes of
/// a sealed block, so a check needs no key and a tiered copy has the same sums.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChecksums {
    pub data_crc32: u32,
    pub bloom_crc32: u32,
    /// CRC-32 of `meta.json`'s own bytes (plaintext) with these 8 hex digits as `00000000`: a
    /// flipped byte in a service name or a count parses and would go unnoticed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_crc32: Option<String>,
}

/// The JSON text `meta_crc32` is found by (its value follows): unescaped quotes can only be
/// structure, never inside a string value, so attribute data cannot fake it.
const META_CRC_KEY: &[u8] = b"\"meta_crc32\": \"";

/// Serializes a block's meta with its own checksum filled in (see [`FileChecksums::meta_crc32`]).
fn meta_json_with_crc(meta: &mut BlockMeta) -> Result<Vec<u8>, StoreError> {
    if let Some(sums) = &mut meta.checksums {
        sums.meta_crc32 = Some("00000000".into());
    }
    let mut json = serde_json::to_vec_pretty(&*meta).map_err(|e| StoreError::Corrupt {
        what: "block meta".into(),
        detail: e.to_string(),
    })?;
    if let Some(at) = find_meta_crc(&json) {
        let crc = format!("{:08x}", crc32fast::hash(&json));
        json[at..at + 8].copy_from_slice(crc.as_bytes());
        if let Some(sums) = &mut meta.checksums {
            sums.meta_crc32 = Some(crc);
        }
    }
    Ok(json)
}

/// Where the 8 hex digits of `meta_crc32` start in a meta's JSON.
fn find_meta_crc(json: &[u8]) -> Option<usize> {
    let at = json
        .windows(META_CRC_KEY.len())
        .rposition(|w| w == META_CRC_KEY)?
        + META_CRC_KEY.len();
    (json.get(at + 8) == Some(&b'"')).then_some(at)
}

/// Checks `meta.json`'s own checksum, if it has one.
fn verify_meta_crc(meta: &BlockMeta, json: &[u8], what: &str) -> Result<(), StoreError> {
    let Some(want) = meta.checksums.as_ref().and_then(|c| c.meta_crc32.as_ref()) else {
        return Ok(());
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        what: what.to_string(),
        detail,
    };
    let at = find_meta_crc(json).ok_or_else(|| corrupt("meta_crc32 not found".into()))?;
    let mut zeroed = json.to_vec();
    zeroed[at..at + 8].copy_from_slice(b"00000000");
    let got = format!("{:08x}", crc32fast::hash(&zeroed));
    if &got != want {
        return Err(corrupt(format!(
            "checksum {got} differs from its meta_crc32 {want}"
        )));
    }
    Ok(())
}

impl BlockMeta {
    pub fn dir(&self) -> Path {
        block_dir(&self.tenant, &self.day, &self.block_id)
    }
}

pub fn block_dir(tenant: &str, day: &str, id: &str) -> Path {
    Path::from(format!("tenants/{tenant}/{day}/{id}"))
}

/// UTC calendar day of a Unix-nanosecond timestamp (civil-from-days, no time-zone crate needed).
pub fn day_of(unix_nano: u64) -> String {
    let days = (unix_nano / 1_000_000_000 / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn trace_id_of(s: &FlatSpan) -> [u8; 16] {
    s.span.trace_id.as_slice().try_into().unwrap_or([0; 16])
}

/// Consistency checks of a block's metadata that cost nothing (no data read): the directory and
/// the meta agree, the row groups add up, the bloom filter is sized for the traces it holds.
fn check_meta(meta: &BlockMeta, dir: &Path, bloom: &Bloom) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("{dir}/{META_FILE}"),
        detail,
    };
    if meta.dir() != *dir {
        return Err(corrupt(format!(
            "names block {} (tenant {:?}, day {}) but lives in {dir}",
            meta.block_id, meta.tenant, meta.day
        )));
    }
    let rows: u64 = meta.row_groups.iter().map(|rg| rg.rows).sum();
    if rows != meta.span_count {
        return Err(corrupt(format!(
            "row groups hold {rows} rows, span_count says {}",
            meta.span_count
        )));
    }
    if meta.trace_count > meta.span_count || meta.min_start_unix_nano > meta.max_start_unix_nano {
        return Err(corrupt(format!(
            "inconsistent counts or time range ({} traces, {} spans, start {}..{})",
            meta.trace_count, meta.span_count, meta.min_start_unix_nano, meta.max_start_unix_nano
        )));
    }
    if meta.span_count > 0 && day_of(meta.min_start_unix_nano) != meta.day {
        return Err(corrupt(format!(
            "first start {} is not on day {}",
            meta.min_start_unix_nano, meta.day
        )));
    }
    // The writer sizes the filter for at least every span it may get: a smaller one than the
    // trace count needs means the filter or the count changed.
    let needed = Bloom::bits_for(meta.trace_count);
    if bloom.bits() < needed {
        return Err(StoreError::Corrupt {
            what: format!("{dir}/{BLOOM_FILE}"),
            detail: format!(
                "filter of {} bits is too small for {} traces (needs {needed})",
                bloom.bits(),
                meta.trace_count
            ),
        });
    }
    Ok(())
}

/// Whether an error reading a block shows the block is damaged (as opposed to the storage being
/// unreachable): a decoding error is damage, and is returned as [`StoreError::Corrupt`] naming
/// `path`; an I/O or object-store error is returned unchanged.
pub fn as_damage(path: &Path, e: StoreError) -> StoreError {
    match e {
        // Readers wrap object-store errors (and, for sealed blocks, authentication failures) as
        // `External`: only the former are I/O.
        StoreError::Parquet(parquet::errors::ParquetError::External(inner))
            if inner.downcast_ref::<object_store::Error>().is_some()
                || inner.downcast_ref::<std::io::Error>().is_some() =>
        {
            StoreError::Parquet(parquet::errors::ParquetError::External(inner))
        }
        StoreError::Parquet(p) => StoreError::Corrupt {
            what: path.to_string(),
            detail: format!("parquet: {p}"),
        },
        StoreError::Arrow(a) => StoreError::Corrupt {
            what: path.to_string(),
            detail: format!("arrow: {a}"),
        },
        other => other,
    }
}

/// Whether an error is damage of stored data ([`as_damage`] first for Parquet errors).
pub fn is_damage(e: &StoreError) -> bool {
    matches!(e, StoreError::Corrupt { .. })
}

/// A loaded block: its metadata and bloom filter in memory, the Parquet footer once read.
pub struct Block {
    pub meta: BlockMeta,
    bloom: Bloom,
    /// `meta.attr_filter`, decoded once (`None` also for an unknown version or a bad filter).
    attr_filter: Option<crate::attr_filter::AttrFilter>,
    row_group_ranges: Vec<TraceIdRange>,
    reader_meta: tokio::sync::OnceCell<ArrowReaderMetadata>,
    /// The same footer with low-cardinality string columns typed as dictionaries, for the
    /// column search path (`column_filter::dictionary_schema`).
    dict_meta: tokio::sync::OnceCell<ArrowReaderMetadata>,
    /// Where the block's files are (local disk or the bucket): every read goes there.
    storage: Storage,
    /// `Some` for a sealed block (`key.json`): see `sealed_block.rs`.
    key: Option<Arc<BlockKey>>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("id", &self.meta.block_id)
            .field("spans", &self.meta.span_count)
            .field("tier", &self.storage.tier())
            .finish()
    }
}

/// Builds a row filter against a file's Parquet schema, given a column name → root index lookup.
pub type RowFilterFactory =
    Box<dyn FnOnce(&SchemaDescriptor, &dyn Fn(&str) -> Option<usize>) -> RowFilter + Send>;

/// First and last trace id of a row group.
type TraceIdRange = ([u8; 16], [u8; 16]);

fn parse_ranges(meta: &BlockMeta) -> Result<Vec<TraceIdRange>, StoreError> {
    meta.row_groups
        .iter()
        .map(|rg| {
            let p = |s: &str| {
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out)
                    .map(|_| out)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("block {} meta", meta.block_id),
                        detail: format!("row group trace id {s:?}: {e}"),
                    })
            };
            Ok((p(&rg.first_trace_id)?, p(&rg.last_trace_id)?))
        })
        .collect()
}

impl Block {
    pub fn from_parts(meta: BlockMeta, bloom: Bloom, storage: Storage) -> Result<Self, StoreError> {
        let row_group_ranges = parse_ranges(&meta)?;
        let attr_filter = meta
            .attr_filter
            .as_ref()
            .and_then(crate::attr_filter::AttrFilter::from_meta);
        Ok(Self {
            meta,
            bloom,
            attr_filter,
            row_group_ranges,
            reader_meta: tokio::sync::OnceCell::new(),
            dict_meta: tokio::sync::OnceCell::new(),
            storage,
            key: None,
        })
    }

    /// Marks the block as sealed with this key.
    pub(crate) fn with_key(mut self, key: Option<Arc<BlockKey>>) -> Self {
        self.key = key;
        self
    }

    /// The block's key (its `key.json`), if it is sealed.
    pub fn key(&self) -> Option<&Arc<BlockKey>> {
        self.key.as_ref()
    }

    /// The storage holding this block's files.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn tier(&self) -> crate::storage::Tier {
        self.storage.tier()
    }

    /// The same block, read from another storage holding a byte-identical copy of its files
    /// (tiering): the Parquet footer already read is kept.
    pub fn relocated(&self, storage: Storage) -> Block {
        Block {
            meta: self.meta.clone(),
            bloom: self.bloom.clone(),
            attr_filter: self.attr_filter.clone(),
            row_group_ranges: self.row_group_ranges.clone(),
            reader_meta: self.reader_meta.clone(),
            dict_meta: self.dict_meta.clone(),
            storage,
            key: self.key.clone(),
        }
    }

    /// Loads a block's meta and bloom filter (through the storage's cache, if it has one),
    /// opening them with the block's data key if it has a `key.json`.
    pub async fn load(storage: &Storage, dir: &Path) -> Result<Self, StoreError> {
        Self::load_listed(storage, dir, None).await
    }

    /// [`Block::load`] knowing from a listing whether `key.json` exists (`None`: look).
    /// A sealed block whose key is gone is [`StoreError::KeyGone`]; a sealed block in a storage
    /// without keys is [`StoreError::Config`].
    pub async fn load_listed(
        storage: &Storage,
        dir: &Path,
        has_key_file: Option<bool>,
    ) -> Result<Self, StoreError> {
        let opened = sealed_block::open_block_key(storage, dir, has_key_file).await?;
        let data_key = opened.as_ref().map(|o| &**o.data_key);
        let meta_bytes =
            sealed_block::read_small(storage, &dir.clone().join(META_FILE), data_key).await?;
        let meta: BlockMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| StoreError::Corrupt {
                what: format!("{dir}/{META_FILE}"),
                detail: e.to_string(),
            })?;
        verify_meta_crc(&meta, &meta_bytes, &format!("{dir}/{META_FILE}"))?;
        let bloom_path = dir.clone().join(BLOOM_FILE);
        let stored = match storage.get(&bloom_path).await {
            Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) => {
                return Err(StoreError::Corrupt {
                    what: bloom_path.to_string(),
                    detail: "missing".into(),
                })
            }
            other => other?,
        };
        // bloom.bin is small: its checksum is verified on every load. A flipped bit in the filter
        // would otherwise go unnoticed and hide traces (a false negative) for good.
        if let Some(sums) = &meta.checksums {
            let got = crc32fast::hash(&stored);
            if got != sums.bloom_crc32 {
                return Err(StoreError::Corrupt {
                    what: bloom_path.to_string(),
                    detail: format!(
                        "checksum {got:08x} differs from {:08x} in {META_FILE}",
                        sums.bloom_crc32
                    ),
                });
            }
        }
        let bloom_bytes = match data_key {
            Some(k) => sealed_block::open_file(k, &bloom_path, &stored)?,
            None => stored.to_vec(),
        };
        let bloom = Bloom::from_bytes(&bloom_bytes).map_err(|e| StoreError::Corrupt {
            what: bloom_path.to_string(),
            detail: e.to_string(),
        })?;
        check_meta(&meta, dir, &bloom)?;
        Ok(Self::from_parts(meta, bloom, storage.clone())?.with_key(opened.map(|o| o.key)))
    }

    /// Whether this block may hold spans of the trace (bloom filter: no false negatives).
    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.bloom.may_contain(id)
    }

    pub fn memory_bytes(&self) -> usize {
        self.bloom.memory_bytes()
            + self.attr_filter.as_ref().map_or(0, |f| f.memory_bytes())
            + self.row_group_ranges.len() * 32
    }

    /// A reader of `data.parquet`: ranged GETs, decrypted on the fly if the block is sealed.
    async fn file_reader(&self) -> Result<Box<dyn AsyncFileReader>, StoreError> {
        let path = self.meta.dir().clone().join(DATA_FILE);
        let (os, size) = (self.storage.os.clone(), self.meta.size_bytes);
        let Some(key) = &self.key else {
            return Ok(Box::new(BlockFileReader::new(os, path, size)));
        };
        let keys = self.storage.keys().ok_or_else(|| StoreError::Config {
            key: "storage.encryption".into(),
            message: format!("block {} is encrypted", self.meta.block_id),
        })?;
        let data_key = key.data_key(keys, &self.meta.block_id).await?;
        Ok(Box::new(SealedFileReader::new(
            os,
            path,
            size,
            data_key,
            key.clone(),
        )))
    }

    async fn reader(&self) -> Result<(Box<dyn AsyncFileReader>, ArrowReaderMetadata), StoreError> {
        let md = self
            .reader_meta
            .get_or_try_init(|| async {
                let mut r = self.file_reader().await?;
                Ok::<_, StoreError>(
                    ArrowReaderMetadata::load_async(&mut r, ArrowReaderOptions::new()).await?,
                )
            })
            .await?
            .clone();
        Ok((self.file_reader().await?, md))
    }

    /// [`Block::reader`] with dictionary-typed string columns.
    async fn dict_reader(
        &self,
    ) -> Result<(Box<dyn AsyncFileReader>, ArrowReaderMetadata), StoreError> {
        let (r, md) = self.reader().await?;
        let dict = self
            .dict_meta
            .get_or_try_init(|| async {
                ArrowReaderMetadata::try_new(
                    md.metadata().clone(),
                    ArrowReaderOptions::new().with_schema(column_filter::dictionary_schema()),
                )
            })
            .await?
            .clone();
        Ok((r, dict))
    }

    /// Reads and caches the Parquet footer, which every read of this block needs.
    pub async fn preload(&self) -> Result<(), StoreError> {
        self.reader().await.map(|_| ())
    }

    /// Size `data.parquet` must have as stored (sealed blocks are longer than `size_bytes`).
    pub fn stored_data_size(&self) -> u64 {
        match self.key {
            Some(_) => clew_encryption::sealed::sealed_len(self.meta.size_bytes),
            None => self.meta.size_bytes,
        }
    }

    /// The start-up check (`quarantine.rs`): cheap, no data pages read. `data.parquet` has the
    /// size `meta.json` says (`listed_size` from a listing, else one HEAD-free ranged read of the
    /// footer decides), its Parquet footer reads, and the footer's row groups and rows are the
    /// meta's. Errors that show damage are [`StoreError::Corrupt`]; I/O errors pass through.
    pub async fn check_quick(&self, listed_size: Option<u64>) -> Result<(), StoreError> {
        let path = self.meta.dir().clone().join(DATA_FILE);
        let corrupt = |detail: String| StoreError::Corrupt {
            what: path.to_string(),
            detail,
        };
        if let Some(size) = listed_size {
            let want = self.stored_data_size();
            if size != want {
                return Err(corrupt(format!(
                    "{size} bytes, {META_FILE} says {want} (truncated or replaced)"
                )));
            }
        }
        let md = match self.reader().await {
            Ok((_, md)) => md,
            Err(e) => return Err(as_damage(&path, e)),
        };
        let pq = md.metadata();
        let groups = pq.num_row_groups();
        if groups != self.meta.row_groups.len() {
            return Err(corrupt(format!(
                "footer has {groups} row groups, {META_FILE} lists {}",
                self.meta.row_groups.len()
            )));
        }
        for (i, (rg, want)) in pq
            .row_groups()
            .iter()
            .zip(&self.meta.row_groups)
            .enumerate()
        {
            if rg.num_rows() as u64 != want.rows {
                return Err(corrupt(format!(
                    "row group {i} has {} rows in the footer, {} in {META_FILE}",
                    rg.num_rows(),
                    want.rows
                )));
            }
        }
        Ok(())
    }

    /// The full check (`clew fsck`): [`Block::check_quick`], the stored file's checksum if the
    /// meta carries one, then every row's trace id and start time: sorted by trace id, in its row
    /// group's recorded range, present in the bloom filter, inside the meta's time range, and the
    /// trace count. Reads the whole file.
    pub async fn check_full(&self, listed_size: Option<u64>) -> Result<(), StoreError> {
        self.check_quick(listed_size).await?;
        let path = self.meta.dir().clone().join(DATA_FILE);
        let corrupt = |detail: String| StoreError::Corrupt {
            what: path.to_string(),
            detail,
        };
        if let Some(sums) = &self.meta.checksums {
            let stored = self.storage.get(&path).await?;
            let got = crc32fast::hash(&stored);
            if got != sums.data_crc32 {
                return Err(corrupt(format!(
                    "checksum {got:08x} differs from {:08x} in {META_FILE}",
                    sums.data_crc32
                )));
            }
        }
        let (mut rows, mut traces) = (0u64, 0u64);
        let mut last: Option<[u8; 16]> = None;
        let mut problem: Option<String> = None;
        // Row group boundaries in rows, to check each id against its group's recorded range.
        let mut bounds = Vec::with_capacity(self.meta.row_groups.len());
        let mut end = 0u64;
        for rg in &self.meta.row_groups {
            end += rg.rows;
            bounds.push(end);
        }
        let (lo, hi) = (self.meta.min_start_unix_nano, self.meta.max_start_unix_nano);
        let scanned = self
            .scan(None, Some(&[col::TRACE_ID, col::START]), |batch| {
                let c = Columns::new(batch);
                let (ids, starts) = (c.fsb(col::TRACE_ID)?, c.i64(col::START)?);
                for r in 0..batch.num_rows() {
                    if problem.is_some() {
                        break;
                    }
                    let id: [u8; 16] = ids.value(r).try_into().unwrap_or([0; 16]);
                    let group = bounds.partition_point(|&b| b <= rows);
                    let start = starts.value(r) as u64;
                    if last.is_some_and(|l| l > id) {
                        problem = Some(format!("row {rows}: trace ids out of order"));
                    } else if self
                        .row_group_ranges
                        .get(group)
                        .is_none_or(|(a, b)| id < *a || id > *b)
                    {
                        problem = Some(format!(
                            "row {rows}: trace {} outside row group {group}'s recorded range",
                            hex::encode(id)
                        ));
                    } else if !self.bloom.may_contain(&TraceId(id)) {
                        problem = Some(format!(
                            "row {rows}: trace {} is missing from {BLOOM_FILE}",
                            hex::encode(id)
                        ));
                    } else if start < lo || start > hi {
                        problem = Some(format!(
                            "row {rows}: start {start} outside {META_FILE}'s range {lo}..={hi}"
                        ));
                    }
                    if last != Some(id) {
                        traces += 1;
                        last = Some(id);
                    }
                    rows += 1;
                }
                Ok(())
            })
            .await;
        if let Err(e) = scanned {
            return Err(as_damage(&path, e));
        }
        if let Some(p) = problem {
            return Err(corrupt(p));
        }
        if rows != self.meta.span_count || traces != self.meta.trace_count {
            return Err(corrupt(format!(
                "holds {rows} spans of {traces} traces, {META_FILE} says {} of {}",
                self.meta.span_count, self.meta.trace_count
            )));
        }
        Ok(())
    }

    /// Streams record batches of the given row groups (all if `None`), projected to `columns`
    /// (all if `None`).
    pub async fn scan(
        &self,
        row_groups: Option<Vec<usize>>,
        columns: Option<&[&str]>,
        f: impl FnMut(&RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_filtered(row_groups, columns, None, f).await
    }

    /// [`Block::scan`] with a row filter (built against the file's schema) evaluated inside the
    /// reader: only rows it keeps are materialized.
    pub async fn scan_filtered(
        &self,
        row_groups: Option<Vec<usize>>,
        columns: Option<&[&str]>,
        filter: Option<RowFilterFactory>,
        f: impl FnMut(&RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (reader, md) = self.reader().await?;
        Self::scan_with(reader, md, row_groups, columns, filter, f).await
    }

    async fn scan_with(
        reader: Box<dyn AsyncFileReader>,
        md: ArrowReaderMetadata,
        row_groups: Option<Vec<usize>>,
        columns: Option<&[&str]>,
        filter: Option<RowFilterFactory>,
        mut f: impl FnMut(&RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, md.clone())
            .with_batch_size(8192);
        if let Some(groups) = row_groups {
            builder = builder.with_row_groups(groups);
        }
        let schema = schema::schema();
        if let Some(cols) = columns {
            let roots: Vec<usize> = cols
                .iter()
                .filter_map(|c| schema.index_of(c).ok())
                .collect();
            builder = builder.with_projection(ProjectionMask::roots(md.parquet_schema(), roots));
        }
        if let Some(make) = filter {
            let root_of = |name: &str| schema.index_of(name).ok();
            builder = builder.with_row_filter(make(md.parquet_schema(), &root_of));
        }
        let mut stream = builder.build()?;
        while let Some(batch) = stream.try_next().await? {
            f(&batch)?;
        }
        Ok(())
    }

    /// All spans of one trace in this block.
    pub async fn read_trace(&self, id: &TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        if !self.bloom.may_contain(id) {
            return Ok(Vec::new());
        }
        let groups: Vec<usize> = self
            .row_group_ranges
            .iter()
            .enumerate()
            .filter(|(_, (lo, hi))| lo <= &id.0 && &id.0 <= hi)
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut cache = DecodeCache::default();
        // The trace id column is decoded first; every other column only for the trace's rows.
        let target = id.0;
        let filter: RowFilterFactory = Box::new(move |pschema, root_of| {
            let root = root_of(col::TRACE_ID).unwrap_or(0);
            column_filter::trace_id_filter(pschema, root, target)
        });
        self.scan_filtered(Some(groups), None, Some(filter), |batch| {
            let ids = Columns::new(batch).fsb(col::TRACE_ID)?;
            let rows: Vec<usize> = (0..ids.len()).filter(|&r| ids.value(r) == id.0).collect();
            out.extend(schema::rows_to_spans(batch, rows, &mut cache)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Spans whose trace id's first 8 bytes (big-endian) lie in `lo..=hi`, appended to `out`.
    /// Reads only the row groups whose trace-id range overlaps.
    pub async fn read_range(
        &self,
        lo: u64,
        hi: u64,
        cache: &mut DecodeCache,
        out: &mut Vec<FlatSpan>,
    ) -> Result<(), StoreError> {
        let prefix = |id: &[u8; 16]| u64::from_be_bytes(id[..8].try_into().unwrap_or([0; 8]));
        let groups: Vec<usize> = self
            .row_group_ranges
            .iter()
            .enumerate()
            .filter(|(_, (first, last))| prefix(first) <= hi && prefix(last) >= lo)
            .map(|(i, _)| i)
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let filter: RowFilterFactory = Box::new(move |pschema, root_of| {
            let root = root_of(col::TRACE_ID).unwrap_or(0);
            column_filter::trace_prefix_range_filter(pschema, root, lo, hi)
        });
        self.scan_filtered(Some(groups), None, Some(filter), |batch| {
            out.extend(schema::rows_to_spans(batch, 0..batch.num_rows(), cache)?);
            Ok(())
        })
        .await
    }

    /// Whether metadata alone rules this block out for `q`.
    pub fn may_match(&self, q: &SearchQuery) -> bool {
        if q.start_unix_nano
            .is_some_and(|t| self.meta.max_start_unix_nano < t)
            || q.end_unix_nano
                .is_some_and(|t| self.meta.min_start_unix_nano > t)
        {
            return false;
        }
        if let Some(s) = &q.service {
            if !self.meta.services.iter().any(|x| x == s) {
                return false;
            }
        }
        if let Some(op) = &q.operation {
            if !self
                .meta
                .operations
                .iter()
                .any(|o| &o.name == op && q.service.as_ref().is_none_or(|s| &o.service == s))
            {
                return false;
            }
        }
        // Typed equality on the service or span name: the meta lists every value of both.
        for c in &q.conditions {
            let (crate::CompareOp::Eq, crate::TagValue::String(want)) = (c.op, &c.value) else {
                continue;
            };
            let present = match c.field {
                crate::SpanField::ServiceName => self.meta.services.iter().any(|s| s == want),
                crate::SpanField::Name => self.meta.operations.iter().any(|o| &o.name == want),
                _ => true,
            };
            if !present {
                return false;
            }
        }
        // Attribute equalities: the block's value filter (no false negatives).
        if let Some(f) = &self.attr_filter {
            if !f.may_match(q) {
                return false;
            }
        }
        true
    }

    /// Matching traces in this block with their latest matching start time.
    pub async fn search(&self, q: &SearchQuery) -> Result<HashMap<TraceId, u64>, StoreError> {
        self.search_matcher(&Matcher::new(q)?).await
    }

    /// [`Block::search`] with the query already compiled (once for all blocks).
    pub async fn search_matcher(&self, m: &Matcher) -> Result<HashMap<TraceId, u64>, StoreError> {
        self.search_part(m, None).await
    }

    /// Row groups in `data.parquet` (from the footer, read once and kept).
    pub async fn row_group_count(&self) -> Result<usize, StoreError> {
        Ok(self.reader().await?.1.metadata().num_row_groups())
    }

    /// [`Block::search_matcher`] over some row groups only (all if `None`). Row groups never
    /// split a trace, so the parts of a block answer disjoint sets of traces: the union of the
    /// parts' answers, each cut to the `limit` newest, is the whole block's answer (the store
    /// reads the parts of a large block on several cores at once).
    pub async fn search_part(
        &self,
        m: &Matcher,
        row_groups: Option<Vec<usize>>,
    ) -> Result<HashMap<TraceId, u64>, StoreError> {
        // The block's own time range may make the start-time condition moot: then the
        // predicate does not need to decode the start column at all.
        let mut m = m.clone();
        let q = &mut m.query;
        if q.start_unix_nano
            .is_none_or(|t| t <= self.meta.min_start_unix_nano)
            && q.end_unix_nano
                .is_none_or(|t| t >= self.meta.max_start_unix_nano)
        {
            q.start_unix_nano = None;
            q.end_unix_nano = None;
        }
        let m = &m;
        if let Some(cq) = ColumnQuery::compile_for(m, self.meta.tags.as_ref()) {
            let spills = self.meta.dedicated_spills.as_ref();
            let exact = spills.is_some_and(|sp| {
                cq.dedicated_keys()
                    .iter()
                    .all(|k| !sp.iter().any(|s| s == k))
            });
            if exact {
                return self
                    .search_columns_in(cq, m.query.effective_limit(), row_groups)
                    .await;
            }
        }
        self.search_rows_in(m, row_groups).await
    }

    /// The column-predicate path: decode predicate columns, then trace id and start of matches,
    /// keeping only the `limit` newest traces. Rows come in trace-id order, so a trace's matches
    /// are adjacent: its latest start is complete when the id changes, and no map of every
    /// matching trace is needed.
    #[cfg(test)]
    pub(crate) async fn search_columns(
        &self,
        cq: ColumnQuery,
        limit: usize,
    ) -> Result<HashMap<TraceId, u64>, StoreError> {
        self.search_columns_in(cq, limit, None).await
    }

    async fn search_columns_in(
        &self,
        cq: ColumnQuery,
        limit: usize,
        row_groups: Option<Vec<usize>>,
    ) -> Result<HashMap<TraceId, u64>, StoreError> {
        let mut top = TopTraces::new(limit);
        if cq.never {
            return Ok(HashMap::new());
        }
        let filter: RowFilterFactory =
            Box::new(move |pschema, root_of| cq.row_filter(pschema, root_of));
        let mut current: Option<(TraceId, u64)> = None;
        let (reader, md) = self.dict_reader().await?;
        Self::scan_with(
            reader,
            md,
            row_groups,
            Some(&[col::TRACE_ID, col::START]),
            Some(filter),
            |batch| {
                let c = Columns::new(batch);
                let (ids, starts) = (c.fsb(col::TRACE_ID)?, c.i64(col::START)?);
                for row in 0..batch.num_rows() {
                    let Ok(id) = TraceId::from_bytes(ids.value(row)) else {
                        continue;
                    };
                    let start = starts.value(row) as u64;
                    match &mut current {
                        Some((cur, latest)) if *cur == id => *latest = (*latest).max(start),
                        _ => {
                            if let Some((done, latest)) = current.replace((id, start)) {
                                top.offer(done, latest);
                            }
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
        if let Some((id, latest)) = current {
            top.offer(id, latest);
        }
        Ok(top.into_map())
    }

    /// The row-by-row path, for conditions on the generic attribute list or pseudo tags.
    #[cfg(test)]
    pub(crate) async fn search_rows(
        &self,
        m: &Matcher,
    ) -> Result<HashMap<TraceId, u64>, StoreError> {
        self.search_rows_in(m, None).await
    }

    async fn search_rows_in(
        &self,
        m: &Matcher,
        row_groups: Option<Vec<usize>>,
    ) -> Result<HashMap<TraceId, u64>, StoreError> {
        let mut cols = vec![
            col::TRACE_ID,
            col::SERVICE_NAME,
            col::NAME,
            col::START,
            col::END,
            col::KIND,
            col::STATUS_CODE,
        ];
        let with_message = !m.conditions.is_empty();
        if with_message {
            cols.push(col::STATUS_MESSAGE);
        }
        let with_attrs = m.needs_attributes();
        if with_attrs {
            cols.extend([col::ATTRIBUTES, col::RESOURCE]);
            cols.extend(DEDICATED.iter().map(|(_, c, _)| *c));
        }
        let mut hits = HashMap::new();
        let mut cache = DecodeCache::default();
        self.scan(row_groups, Some(&cols), |batch| {
            let view = BatchView::new(batch, with_attrs, with_message)?;
            for row in 0..batch.num_rows() {
                let rv = RowView {
                    b: &view,
                    row,
                    cache: std::cell::RefCell::new(&mut cache),
                };
                if m.matches(&rv) {
                    if let Ok(id) = TraceId::from_bytes(view.trace_id.value(row)) {
                        let start = view.start.value(row) as u64;
                        let e = hits.entry(id).or_insert(0);
                        *e = (*e).max(start);
                    }
                }
            }
            Ok(())
        })
        .await?;
        Ok(hits)
    }
}

/// The `limit` newest traces offered (each trace offered once, with its latest start). Ties go to
/// the smaller trace id, as in the store's final ordering.
struct TopTraces {
    limit: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, std::cmp::Reverse<TraceId>)>>,
}

impl TopTraces {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            heap: std::collections::BinaryHeap::new(),
        }
    }
    fn offer(&mut self, id: TraceId, start: u64) {
        let key = (start, std::cmp::Reverse(id));
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse(key));
        } else if self.heap.peek().is_some_and(|m| key > m.0) {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(key));
        }
    }
    fn into_map(self) -> HashMap<TraceId, u64> {
        self.heap
            .into_iter()
            .map(|std::cmp::Reverse((start, std::cmp::Reverse(id)))| (id, start))
            .collect()
    }
}

struct BatchView<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    service: &'a StringArray,
    name: &'a StringArray,
    start: &'a Int64Array,
    end: &'a Int64Array,
    kind: &'a Int32Array,
    status: &'a Int32Array,
    status_message: Option<&'a StringArray>,
    attrs: Option<AttrList<'a>>,
    resource: Option<&'a BinaryArray>,
    dedicated_str: Vec<Option<&'a StringArray>>,
    dedicated_int: Vec<Option<&'a Int64Array>>,
}

impl<'a> BatchView<'a> {
    fn new(
        batch: &'a RecordBatch,
        with_attrs: bool,
        with_message: bool,
    ) -> Result<Self, StoreError> {
        let c = Columns::new(batch);
        let mut v = Self {
            trace_id: c.fsb(col::TRACE_ID)?,
            service: c.str(col::SERVICE_NAME)?,
            name: c.str(col::NAME)?,
            start: c.i64(col::START)?,
            end: c.i64(col::END)?,
            kind: c.i32(col::KIND)?,
            status: c.i32(col::STATUS_CODE)?,
            status_message: if with_message {
                Some(c.str(col::STATUS_MESSAGE)?)
            } else {
                None
            },
            attrs: None,
            resource: None,
            dedicated_str: Vec::new(),
            dedicated_int: Vec::new(),
        };
        if with_attrs {
            let list: &ListArray = c.list(col::ATTRIBUTES)?;
            v.attrs = Some(AttrList::new(list)?);
            v.resource = Some(c.bin(col::RESOURCE)?);
            for (_, name, ty) in DEDICATED {
                v.dedicated_str.push(if *ty == DedicatedType::Str {
                    Some(c.str(name)?)
                } else {
                    None
                });
                v.dedicated_int.push(if *ty == DedicatedType::Int {
                    Some(c.i64(name)?)
                } else {
                    None
                });
            }
        }
        Ok(v)
    }
}

struct RowView<'a, 'c> {
    b: &'a BatchView<'a>,
    row: usize,
    cache: std::cell::RefCell<&'c mut DecodeCache>,
}

impl SpanView for RowView<'_, '_> {
    fn service(&self) -> &str {
        self.b.service.value(self.row)
    }
    fn name(&self) -> &str {
        self.b.name.value(self.row)
    }
    fn start_unix_nano(&self) -> u64 {
        self.b.start.value(self.row) as u64
    }
    fn end_unix_nano(&self) -> u64 {
        self.b.end.value(self.row) as u64
    }
    fn kind(&self) -> i32 {
        self.b.kind.value(self.row)
    }
    fn status_code(&self) -> i32 {
        self.b.status.value(self.row)
    }
    fn attr_text(&self, key: &str) -> Option<String> {
        let row = self.row;
        if let Some(i) = schema::dedicated_index(key) {
            if let Some(a) = self.b.dedicated_str.get(i).copied().flatten() {
                if a.is_valid(row) {
                    return Some(a.value(row).to_string());
                }
            }
            if let Some(a) = self.b.dedicated_int.get(i).copied().flatten() {
                if a.is_valid(row) {
                    return Some(a.value(row).to_string());
                }
            }
        }
        if let Some(t) = self.b.attrs.as_ref().and_then(|a| a.text_of(row, key)) {
            return Some(t);
        }
        let res = self.b.resource?;
        let resource = self.cache.borrow_mut().resource(res.value(row));
        attrs::get(&resource.attributes, key).map(attrs::to_text)
    }
    fn status_message(&self) -> &str {
        self.b
            .status_message
            .map(|a| a.value(self.row))
            .unwrap_or("")
    }
    fn span_attr(&self, key: &str) -> Option<Val<'_>> {
        let row = self.row;
        if let Some(i) = schema::dedicated_index(key) {
            if let Some(a) = self.b.dedicated_str.get(i).copied().flatten() {
                if a.is_valid(row) {
                    return Some(Val::Str(std::borrow::Cow::Borrowed(a.value(row))));
                }
            }
            if let Some(a) = self.b.dedicated_int.get(i).copied().flatten() {
                if a.is_valid(row) {
                    return Some(Val::Int(a.value(row)));
                }
            }
        }
        self.b.attrs.as_ref().and_then(|a| a.typed_of(row, key))
    }
    fn resource_attr(&self, key: &str) -> Option<Val<'_>> {
        let res = self.b.resource?;
        let resource = self.cache.borrow_mut().resource(res.value(self.row));
        crate::head::typed(&resource.attributes, key).map(|v| match v {
            Val::Str(s) => Val::Str(std::borrow::Cow::Owned(s.into_owned())),
            Val::Int(i) => Val::Int(i),
            Val::Double(d) => Val::Double(d),
            Val::Bool(b) => Val::Bool(b),
            Val::Other => Val::Other,
        })
    }
}

/// zstd level of blocks flushed from the head: cheap, since most are merged again soon.
pub const FLUSH_ZSTD_LEVEL: i32 = 3;
/// zstd level of compacted blocks, which live for the retention period: worth more CPU.
pub const COMPACTED_ZSTD_LEVEL: i32 = 9;

/// Writes spans (of one tenant and day) as a new block: data, then bloom, then meta.
pub async fn write_block(
    storage: &Storage,
    tenant: &Tenant,
    spans: &[&FlatSpan],
    rows_per_group: usize,
    compacted_from: Vec<String>,
) -> Result<Block, StoreError> {
    let mut sorted: Vec<&FlatSpan> = spans.to_vec();
    sort_for_block(&mut sorted);
    let mut w = BlockWriter::new(tenant, rows_per_group, sorted.len(), FLUSH_ZSTD_LEVEL)?;
    w.push_sorted(&sorted)?;
    w.finish(storage, compacted_from).await
}

/// Block row order: by trace id, then start time.
pub fn sort_for_block(spans: &mut [&FlatSpan]) {
    spans.sort_by(|a, b| {
        a.span.trace_id.cmp(&b.span.trace_id).then(
            a.span
                .start_time_unix_nano
                .cmp(&b.span.start_time_unix_nano),
        )
    });
}

/// Builds one block from spans pushed in block order (trace id ascending), in as many pushes as the
/// caller likes, so a compaction can stream a merge instead of holding every span at once. Each
/// push must hold whole traces, with trace ids above those of earlier pushes.
pub struct BlockWriter {
    tenant: Tenant,
    rows_per_group: usize,
    writer: ArrowWriter<Vec<u8>>,
    bloom: Bloom,
    trace_count: u64,
    span_count: u64,
    last: Option<[u8; 16]>,
    min_start: u64,
    max_start: u64,
    services: BTreeSet<String>,
    operations: BTreeSet<OperationMeta>,
    /// Hashes of (service, operation, kind) already in `operations`: skips an allocation per span.
    operation_hashes: HashSet<u64>,
    spills: BTreeSet<&'static str>,
    resources_seen: HashSet<usize>,
    row_groups: Vec<RowGroupMeta>,
    tags: crate::tags::CatalogBuilder,
    attr_filter: crate::attr_filter::AttrFilterBuilder,
}

impl BlockWriter {
    /// `expected_spans` sizes the trace-id bloom filter.
    pub fn new(
        tenant: &Tenant,
        rows_per_group: usize,
        expected_spans: usize,
        zstd_level: i32,
    ) -> Result<Self, StoreError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
            .set_dictionary_enabled(true)
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]))
            .set_created_by(format!("clew {}", env!("CARGO_PKG_VERSION")))
            // Trace and span ids are random bytes: zstd saves nothing on span ids and 0.18 B/span
            // on trace ids (measured), while every search and trace lookup decodes the trace id
            // column; skipping the codec there saves a decompression context per page read.
            // (Parent ids repeat within a trace and do compress.)
            .set_column_compression(ColumnPath::from(col::TRACE_ID), Compression::UNCOMPRESSED)
            .set_column_compression(ColumnPath::from(col::SPAN_ID), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(ColumnPath::from(col::SPAN_ID), false)
            .build();
        Ok(Self {
            tenant: tenant.clone(),
            rows_per_group: rows_per_group.max(1),
            writer: ArrowWriter::try_new(Vec::new(), schema::schema(), Some(props))?,
            bloom: Bloom::with_capacity(expected_spans.max(1)),
            trace_count: 0,
            span_count: 0,
            last: None,
            min_start: u64::MAX,
            max_start: 0,
            services: BTreeSet::new(),
            operations: BTreeSet::new(),
            operation_hashes: HashSet::new(),
            spills: BTreeSet::new(),
            resources_seen: HashSet::new(),
            row_groups: Vec::new(),
            tags: crate::tags::CatalogBuilder::default(),
            attr_filter: Default::default(),
        })
    }

    pub fn span_count(&self) -> u64 {
        self.span_count
    }

    /// Appends spans already in block order (see [`sort_for_block`]).
    pub fn push_sorted(&mut self, sorted: &[&FlatSpan]) -> Result<(), StoreError> {
        use std::hash::{Hash, Hasher};
        // Resources are deduplicated by address, which is only meaningful while the spans are
        // alive: an earlier push's resource may be freed and its address reused by another.
        self.resources_seen.clear();
        self.tags.new_push();
        for s in sorted {
            let id = trace_id_of(s);
            if self.last != Some(id) {
                self.trace_count += 1;
                self.bloom.insert(&TraceId(id));
                self.last = Some(id);
            }
            let start = s.span.start_time_unix_nano;
            self.min_start = self.min_start.min(start);
            self.max_start = self.max_start.max(start);
            // Allocate only for new entries: this loop runs once per span.
            let service = s.service_name();
            if !self.services.contains(service) {
                self.services.insert(service.to_string());
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (service, s.span.name.as_str(), s.span.kind).hash(&mut h);
            if self.operation_hashes.insert(h.finish()) {
                self.operations.insert(OperationMeta {
                    service: service.to_string(),
                    name: s.span.name.clone(),
                    kind: s.span.kind,
                });
            }
            schema::span_dedicated_spills(&s.span, &mut self.spills);
            if self
                .resources_seen
                .insert(Arc::as_ptr(&s.resource) as usize)
            {
                schema::resource_dedicated_spills(&s.resource, &mut self.spills);
                self.attr_filter
                    .add_resource_attributes(&s.resource.attributes);
            }
            self.attr_filter.add_span_attributes(&s.span.attributes);
            self.tags.add_span_attributes(&s.span.attributes);
            self.tags.add_resource(&s.resource);
        }
        // Row groups are cut here, never by the writer (its caps are off), and never split a
        // trace, so a trace lookup reads one row group.
        let mut start = 0;
        while start < sorted.len() {
            let mut end = (start + self.rows_per_group).min(sorted.len());
            while end < sorted.len()
                && end > start
                && trace_id_of(sorted[end]) == trace_id_of(sorted[end - 1])
            {
                end += 1;
            }
            let chunk = &sorted[start..end];
            self.writer.write(&schema::to_record_batch(chunk)?)?;
            self.writer.flush()?;
            self.row_groups.push(RowGroupMeta {
                first_trace_id: hex::encode(trace_id_of(chunk[0])),
                last_trace_id: hex::encode(trace_id_of(chunk[chunk.len() - 1])),
                rows: chunk.len() as u64,
            });
            start = end;
        }
        self.span_count += sorted.len() as u64;
        Ok(())
    }

    /// Writes data, bloom, then meta (last: it makes the block visible).
    pub async fn finish(
        self,
        storage: &Storage,
        compacted_from: Vec<String>,
    ) -> Result<Block, StoreError> {
        let buf = self.writer.into_inner()?;
        let min_start = if self.span_count == 0 {
            0
        } else {
            self.min_start
        };
        let mut meta = BlockMeta {
            format_version: FORMAT_VERSION,
            block_id: uuid::Uuid::now_v7().to_string(),
            tenant: self.tenant.as_str().to_string(),
            day: day_of(min_start),
            min_start_unix_nano: min_start,
            max_start_unix_nano: self.max_start,
            span_count: self.span_count,
            trace_count: self.trace_count,
            services: self.services.into_iter().collect(),
            operations: self.operations.into_iter().collect(),
            size_bytes: buf.len() as u64,
            row_groups: self.row_groups,
            encryption_key_id: None,
            compacted_from,
            created_unix_nano: now_nanos(),
            dedicated_spills: Some(self.spills.into_iter().map(str::to_string).collect()),
            tags: Some(self.tags.finish()),
            attr_filter: Some(self.attr_filter.finish()),
            checksums: None,
        };
        let dir = meta.dir();
        // Encryption at rest: a fresh data key per block, its envelope (`key.json`) first. No key
        // (a provider outage) fails the write, retryably: never a plaintext block instead.
        let data_key = match storage.keys() {
            Some(keys) => {
                let dk = keys
                    .new_file_key(&meta.tenant)
                    .await
                    .map_err(|e| sealed_block::key_error(e, &meta.block_id, &meta.tenant))?;
                sealed_block::write_envelope(storage, &dir, &dk.envelope).await?;
                meta.encryption_key_id = Some(sealed_block::key_id(&dk.envelope));
                Some(dk)
            }
            None => None,
        };
        let seal = |path: &Path, plain: Vec<u8>| match &data_key {
            Some(dk) => sealed_block::seal_file(&dk.plaintext, path, &plain),
            None => plain,
        };
        let data_path = dir.clone().join(DATA_FILE);
        let data = seal(&data_path, buf);
        let data_crc32 = crc32fast::hash(&data);
        storage.put(&data_path, data).await?;
        let bloom_path = dir.clone().join(BLOOM_FILE);
        let bloom_bytes = seal(&bloom_path, self.bloom.to_bytes());
        meta.checksums = Some(FileChecksums {
            data_crc32,
            bloom_crc32: crc32fast::hash(&bloom_bytes),
            meta_crc32: None,
        });
        storage.put(&bloom_path, bloom_bytes).await?;
        let meta_json = meta_json_with_crc(&mut meta)?;
        let meta_path = dir.clone().join(META_FILE);
        storage.put(&meta_path, seal(&meta_path, meta_json)).await?;
        let key = data_key.map(|dk| BlockKey::new(dk.envelope));
        Ok(Block::from_parts(meta, self.bloom, storage.clone())?.with_key(key))
    }
}

/// Deletes a block's files, meta first so a crash midway leaves no half-visible block.
/// Any other file of the block directory (`key.json` of a sealed block) goes too, last.
pub async fn delete_block(storage: &Storage, meta: &BlockMeta) -> Result<(), StoreError> {
    let dir = meta.dir();
    storage.delete(&dir.clone().join(META_FILE)).await?;
    storage.delete(&dir.clone().join(BLOOM_FILE)).await?;
    storage.delete(&dir.clone().join(DATA_FILE)).await?;
    for other in storage.list_dir(&dir).await? {
        storage.delete(&other).await?;
    }
    Ok(())
}

pub type BlockRef = Arc<Block>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::rich_span;

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_700_000_000_000_000_000), "2023-11-14");
        assert_eq!(day_of(951_782_400_000_000_000), "2000-02-29");
    }

    /// The column-predicate path answers exactly what the row matcher answers.
    #[tokio::test]
    async fn column_search_agrees_with_row_search() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_path_buf()).unwrap();
        let tenant = Tenant::new("t1").unwrap();
        let spans: Vec<FlatSpan> = (1..=60u8)
            .map(|t| {
                let mut s = schema::tests::rich_span(t, 1, None);
                s.span.attributes.retain(|kv| kv.key != "http.route");
                s.span.attributes.push(clew_model::attrs::kv_str(
                    "http.route",
                    if t % 3 == 0 { "/a" } else { "/b" },
                ));
                s.span.end_time_unix_nano = s.span.start_time_unix_nano + t as u64 * 1000;
                s
            })
            .collect();
        let refs: Vec<&FlatSpan> = spans.iter().collect();
        let block = write_block(&storage, &tenant, &refs, 16, vec![])
            .await
            .unwrap();
        assert_eq!(block.meta.dedicated_spills, Some(vec![]));
        let queries = [
            vec![("http.route", "/a")],
            vec![("http.route", "/b"), ("http.response.status_code", "200")],
            vec![("http.response.status_code", "0200")],
            vec![("http.request.method", "POST")],
        ];
        for attrs in queries {
            for min in [None, Some(30_000)] {
                let q = SearchQuery {
                    attributes: attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    min_duration_nanos: min,
                    service: Some("checkout".into()),
                    ..Default::default()
                };
                let m = Matcher::new(&q).unwrap();
                let cq = ColumnQuery::compile(&m).expect("compiles");
                let by_columns = block.search_columns(cq, 1000).await.unwrap();
                let by_rows = block.search_rows(&m).await.unwrap();
                assert_eq!(by_columns, by_rows, "{q:?}");
            }
        }
        let q = SearchQuery {
            attributes: vec![("http.route".into(), "/a".into())],
            ..Default::default()
        };
        assert_eq!(block.search(&q).await.unwrap().len(), 20);
        // A limit keeps the newest traces, ties to the smaller id, like the store's final order.
        for limit in [1, 5, 39, 40, 100] {
            let q = SearchQuery {
                attributes: vec![("http.route".into(), "/b".into())],
                limit,
                ..Default::default()
            };
            let got = block.search(&q).await.unwrap();
            let m = Matcher::new(&q).unwrap();
            let mut all: Vec<(TraceId, u64)> =
                block.search_rows(&m).await.unwrap().into_iter().collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(limit);
            assert_eq!(
                got,
                all.into_iter().collect::<HashMap<_, _>>(),
                "limit {limit}"
            );
        }
    }

    /// A block written before the tag catalog (no `tags` in its meta) answers generic attribute
    /// searches through the row path, the same as with the catalog through the leaf filter.
    #[tokio::test]
    async fn blocks_without_a_tag_catalog_still_answer() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_path_buf()).unwrap();
        let tenant = Tenant::new("t1").unwrap();
        let spans: Vec<FlatSpan> = (1..=40u8)
            .map(|t| {
                let mut s = rich_span(t, 1, None);
                s.span
                    .attributes
                    .push(attrs::kv_str("client.address", format!("10.0.0.{}", t % 4)));
                s
            })
            .collect();
        let refs: Vec<&FlatSpan> = spans.iter().collect();
        let block = write_block(&storage, &tenant, &refs, 8, vec![])
            .await
            .unwrap();
        let tags = block.meta.tags.clone().expect("new blocks have a catalog");
        assert_eq!(tags.span["client.address"].values.len(), 4);
        assert!(tags.resource.contains_key("host.name"));
        let json = serde_json::to_value(&block.meta).unwrap();
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("tags");
        let old_meta: BlockMeta = serde_json::from_value(old).unwrap();
        assert!(old_meta.tags.is_none());
        let old_block = Block::from_parts(old_meta, block.bloom.clone(), storage.clone()).unwrap();
        for q in [
            SearchQuery {
                attributes: vec![("client.address".into(), "10.0.0.1".into())],
                ..Default::default()
            },
            SearchQuery {
                conditions: vec![crate::SpanCondition {
                    field: crate::SpanField::Attribute {
                        scope: crate::AttrScope::Any,
                        key: "client.address".into(),
                    },
                    op: crate::CompareOp::Regex,
                    value: crate::TagValue::String("10\\.0\\.0\\.[12]".into()),
                }],
                ..Default::default()
            },
        ] {
            let m = Matcher::new(&q).unwrap();
            assert!(ColumnQuery::compile_for(&m, block.meta.tags.as_ref()).is_some());
            assert!(ColumnQuery::compile_for(&m, None).is_none());
            let new = block.search(&q).await.unwrap();
            let old = old_block.search(&q).await.unwrap();
            assert!(!new.is_empty());
            assert_eq!(new, old, "{q:?}");
            assert_eq!(new, block.search_rows(&m).await.unwrap());
        }
    }

    #[tokio::test]
    async fn write_then_read_trace_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().to_path_buf()).unwrap();
        let tenant = Tenant::new("t1").unwrap();
        let spans: Vec<FlatSpan> = (1..=50u8)
            .flat_map(|t| [rich_span(t, 1, None), rich_span(t, 2, Some(1))])
            .collect();
        let refs: Vec<&FlatSpan> = spans.iter().collect();
        let block = write_block(&storage, &tenant, &refs, 7, vec![])
            .await
            .unwrap();
        assert_eq!(block.meta.span_count, 100);
        assert_eq!(block.meta.trace_count, 50);
        assert!(block.meta.row_groups.len() > 5);
        assert!(
            block.meta.row_groups.iter().all(|rg| rg.rows % 2 == 0),
            "a trace never straddles row groups"
        );

        let loaded = Block::load(&storage, &block.meta.dir()).await.unwrap();
        let got = loaded.read_trace(&TraceId([17; 16])).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(loaded
            .read_trace(&TraceId([200; 16]))
            .await
            .unwrap()
            .is_empty());

        let q = SearchQuery {
            attributes: vec![("s".into(), "v".into()), ("host.name".into(), "h1".into())],
            ..Default::default()
        };
        assert_eq!(loaded.search(&q).await.unwrap().len(), 50);
        let q = SearchQuery {
            attributes: vec![("http.route".into(), "7".into())],
            service: Some("checkout".into()),
            ..Default::default()
        };
        assert_eq!(loaded.search(&q).await.unwrap().len(), 50);
        let q = SearchQuery {
            attributes: vec![("error".into(), "true".into())],
            ..Default::default()
        };
        assert_eq!(loaded.search(&q).await.unwrap().len(), 50);
        let q = SearchQuery {
            attributes: vec![("s".into(), "nope".into())],
            ..Default::default()
        };
        assert!(loaded.search(&q).await.unwrap().is_empty());
        let q = SearchQuery {
            service: Some("other".into()),
            ..Default::default()
        };
        assert!(!loaded.may_match(&q));
    }
}
