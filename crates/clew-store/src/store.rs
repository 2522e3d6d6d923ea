//! [`Store`]: the WAL, head, blocks and compactor wired together. It is a [`SpanSink`] (an append
//! returns once fsynced) and a [`TraceReader`].

use crate::api::{DependencyLink, Operation, SearchQuery, TraceHit, TraceReader};
use crate::block::{self, Block, BlockMeta, BlockRef, META_FILE};
use crate::catalog::Catalog;
use crate::head::Head;
use crate::metrics::StoreMetrics;
use crate::storage::Storage;
use crate::wal::{ReplayReport, Sealed, Wal};
use crate::StoreError;

use clew_model::{FlatSpan, SinkError, SpanBatch, SpanSink, Tenant, TraceId};
use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root of local state: `wal/` and, for the local backend, `blocks/`.
    pub data_dir: PathBuf,
    /// Flush the head into blocks once it holds this many spans…
    pub flush_max_spans: usize,
    /// …or once its oldest span is this old.
    pub flush_max_age: Duration,
    /// Rows per Parquet row group (a trace lookup reads one).
    pub rows_per_row_group: usize,
    /// Appends are refused (retryably) while the head holds more spans than this.
    pub max_head_spans: usize,
    pub compaction: CompactionConfig,
    /// Spans per slice of a streaming compaction merge: bounds its memory (a decoded span takes
    /// about 2 KiB).
    pub merge_slice_spans: u64,
}

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    pub enabled: bool,
    pub interval: Duration,
    /// Compact a tenant-day once it has at least this many blocks…
    pub min_blocks: usize,
    /// …merging blocks up to this many spans into one.
    pub max_block_spans: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            min_blocks: 4,
            max_block_spans: 5_000_000,
        }
    }
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            flush_max_spans: 500_000,
            flush_max_age: Duration::from_secs(30),
            rows_per_row_group: 8192,
            max_head_spans: 4_000_000,
            compaction: CompactionConfig::default(),
            merge_slice_spans: 500_000,
        }
    }
}

struct Inner {
    cfg: StoreConfig,
    wal: Wal,
    head: Arc<Head>,
    catalog: Arc<Catalog>,
    storage: Storage,
    blocks: RwLock<BTreeMap<Tenant, Vec<BlockRef>>>,
    /// Sealed generations whose blocks are not written yet, oldest first.
    pending: Mutex<Vec<Sealed>>,
    /// Serializes compactions.
    compaction: tokio::sync::Mutex<()>,
    /// Serializes flushes.
    maintenance: Mutex<()>,
    metrics: StoreMetrics,
    stop: watch::Sender<bool>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What start-up found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub replay: ReplayReport,
    pub blocks: usize,
    pub removed_incomplete_blocks: usize,
    pub removed_compacted_blocks: usize,
}

fn sink_error(e: StoreError) -> SinkError {
    match e {
        StoreError::ShuttingDown => SinkError::ShuttingDown,
        StoreError::Overloaded(reason) => SinkError::Overloaded {
            retry_after: Duration::from_secs(1),
            reason,
        },
        other => SinkError::Internal(other.to_string()),
    }
}

impl Store {
    /// Opens the store on the local filesystem (`data_dir/blocks`).
    pub async fn open(
        cfg: StoreConfig,
        metrics: StoreMetrics,
    ) -> Result<(Self, OpenReport), StoreError> {
        let storage = Storage::local(cfg.data_dir.join("blocks"))?;
        Self::open_with_storage(cfg, storage, metrics).await
    }

    pub async fn open_with_storage(
        cfg: StoreConfig,
        storage: Storage,
        metrics: StoreMetrics,
    ) -> Result<(Self, OpenReport), StoreError> {
        let mut report = OpenReport::default();
        let catalog = Arc::new(Catalog::default());
        let blocks = load_blocks(&storage, &mut report).await?;
        let mut by_tenant: BTreeMap<Tenant, Vec<BlockRef>> = BTreeMap::new();
        for b in blocks {
            let Ok(tenant) = Tenant::new(&b.meta.tenant) else {
                tracing::warn!(block = %b.meta.block_id, tenant = %b.meta.tenant, "skipping block with invalid tenant");
                continue;
            };
            catalog.add(
                &tenant,
                b.meta
                    .operations
                    .iter()
                    .map(|o| (o.service.as_str(), o.name.as_str(), o.kind)),
            );
            by_tenant.entry(tenant).or_default().push(Arc::new(b));
        }
        report.blocks = by_tenant.values().map(Vec::len).sum();

        let head = Arc::new(Head::new(catalog.clone()));
        let (wal, replay) = Wal::open(&cfg.data_dir.join("wal"), head.clone(), metrics.clone())?;
        report.replay = replay;
        let (stop, _) = watch::channel(false);
        let store = Store {
            inner: Arc::new(Inner {
                cfg,
                wal,
                head,
                catalog,
                storage,
                blocks: RwLock::new(by_tenant),
                pending: Mutex::new(Vec::new()),
                maintenance: Mutex::new(()),
                compaction: tokio::sync::Mutex::new(()),
                metrics,
                stop,
            }),
        };
        store.refresh_block_metrics();
        store.spawn_background();
        // Parquet footers are read lazily on a block's first query; read them now, in the
        // background, so the first lookups after a restart do not pay for it.
        let warm = store.clone();
        tokio::spawn(async move {
            let all: Vec<BlockRef> = warm
                .inner
                .blocks
                .read()
                .values()
                .flatten()
                .cloned()
                .collect();
            for b in all {
                if let Err(e) = b.preload(&warm.inner.storage).await {
                    tracing::warn!(block = %b.meta.block_id, error = %e, "cannot read block footer");
                }
            }
        });
        Ok((store, report))
    }

    fn spawn_background(&self) {
        let flusher = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let head = &flusher.inner.head;
                let cfg = &flusher.inner.cfg;
                let due = head.active_span_count() >= cfg.flush_max_spans
                    || (head.active_span_count() > 0 && head.active_age() >= cfg.flush_max_age);
                flusher.inner.metrics.set_head_spans(head.span_count());
                if due || !flusher.inner.pending.lock().await.is_empty() {
                    if let Err(e) = flusher.flush().await {
                        tracing::error!(error = %e, "flushing the head into blocks failed; will retry");
                    }
                }
            }
        });
        if self.inner.cfg.compaction.enabled {
            let compactor = self.clone();
            let mut stop = self.inner.stop.subscribe();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(compactor.inner.cfg.compaction.interval);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    // Shutdown abandons a merge in flight (start-up cleans up its partial
                    // output); that is not a failure worth reporting.
                    tokio::select! {
                        res = compactor.compact_once() => if let Err(e) = res {
                            compactor.inner.metrics.compacted(false, 0);
                            tracing::error!(error = %e, "compaction failed; will retry");
                        },
                        _ = stop.changed() => return,
                    }
                }
            });
        }
    }

    /// Writes every span in the head into blocks and deletes the WAL segments they came from.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let _m = self.inner.maintenance.lock().await;
        let mut pending = self.inner.pending.lock().await;
        if self.inner.head.active_span_count() > 0 {
            pending.push(self.inner.wal.rotate().await?);
        }
        // Oldest first; stop at the first failure so WAL segments are only ever deleted below
        // generations that are all in blocks.
        while let Some(sealed) = pending.first() {
            let result = self.write_generation(sealed).await;
            self.inner.metrics.flushed(result.is_ok());
            result?;
            let sealed = pending.remove(0);
            self.inner.head.release(&sealed.generation);
            self.inner
                .wal
                .delete_segments_below(sealed.first_live_segment)?;
        }
        self.inner
            .metrics
            .set_head_spans(self.inner.head.span_count());
        self.refresh_block_metrics();
        Ok(())
    }

    async fn write_generation(&self, sealed: &Sealed) -> Result<(), StoreError> {
        for (tenant, th) in &sealed.generation.tenants {
            let mut by_day: BTreeMap<String, Vec<&FlatSpan>> = BTreeMap::new();
            for s in &th.spans {
                by_day
                    .entry(block::day_of(s.span.start_time_unix_nano))
                    .or_default()
                    .push(s);
            }
            for spans in by_day.values() {
                let b = block::write_block(
                    &self.inner.storage,
                    tenant,
                    spans,
                    self.inner.cfg.rows_per_row_group,
                    vec![],
                )
                .await?;
                tracing::debug!(tenant = %tenant, block = %b.meta.block_id, spans = b.meta.span_count, "block written");
                b.preload(&self.inner.storage).await?;
                self.inner
                    .blocks
                    .write()
                    .entry(tenant.clone())
                    .or_default()
                    .push(Arc::new(b));
            }
        }
        Ok(())
    }

    /// One compaction pass: per tenant-day, merges small blocks (deduplicating spans).
    /// Returns the number of blocks written.
    pub async fn compact_once(&self) -> Result<usize, StoreError> {
        // Not the flush lock: a long merge must never stop the head from being flushed (the head
        // would fill and ingest would stall). Flushes only add blocks; the merge swaps its inputs
        // for its output in one step under the block-list lock.
        let _c = self.inner.compaction.lock().await;
        let cfg = self.inner.cfg.compaction.clone();
        let snapshot: Vec<(Tenant, Vec<BlockRef>)> = self
            .inner
            .blocks
            .read()
            .iter()
            .map(|(t, b)| (t.clone(), b.clone()))
            .collect();
        let mut written = 0;
        for (tenant, blocks) in snapshot {
            let mut by_day: BTreeMap<&str, Vec<&BlockRef>> = BTreeMap::new();
            for b in &blocks {
                if b.meta.span_count < cfg.max_block_spans {
                    by_day.entry(b.meta.day.as_str()).or_default().push(b);
                }
            }
            for (_, mut group) in by_day {
                if group.len() < cfg.min_blocks.max(2) {
                    continue;
                }
                group.sort_by_key(|b| b.meta.span_count);
                let mut chosen = Vec::new();
                let mut total = 0;
                for b in group {
                    if total + b.meta.span_count > cfg.max_block_spans && chosen.len() >= 2 {
                        break;
                    }
                    total += b.meta.span_count;
                    chosen.push(b.clone());
                }
                if chosen.len() < 2 {
                    continue;
                }
                self.merge_blocks(&tenant, &chosen).await?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Merges blocks into one, streaming: the trace-id space is cut into slices of about
    /// `merge_slice_spans`, and each slice is read from every input (only the row groups
    /// that overlap it), deduplicated, sorted and appended to the output. Memory stays bounded by
    /// one slice whatever the size of the inputs.
    async fn merge_blocks(&self, tenant: &Tenant, chosen: &[BlockRef]) -> Result<(), StoreError> {
        let total: u64 = chosen.iter().map(|b| b.meta.span_count).sum();
        let slices = total
            .div_ceil(self.inner.cfg.merge_slice_spans.max(1))
            .max(1);
        let width = u64::MAX / slices;
        let mut writer = block::BlockWriter::new(
            tenant,
            self.inner.cfg.rows_per_row_group,
            total as usize,
            block::COMPACTED_ZSTD_LEVEL,
        )?;
        let mut duplicates = 0u64;
        let mut cache = crate::schema::DecodeCache::default();
        for i in 0..slices {
            let lo = i * width;
            let hi = if i + 1 == slices {
                u64::MAX
            } else {
                (i + 1) * width - 1
            };
            let mut spans: Vec<FlatSpan> = Vec::new();
            for b in chosen {
                b.read_range(&self.inner.storage, lo, hi, &mut cache, &mut spans)
                    .await?;
            }
            let before = spans.len();
            let mut seen = HashSet::new();
            let mut unique: Vec<&FlatSpan> =
                spans.iter().filter(|s| seen.insert(dedup_key(s))).collect();
            duplicates += (before - unique.len()) as u64;
            block::sort_for_block(&mut unique);
            writer.push_sorted(&unique)?;
            // Decode caches key resources by content; drop them between slices to stay bounded.
            cache = crate::schema::DecodeCache::default();
        }
        let ids: Vec<String> = chosen.iter().map(|b| b.meta.block_id.clone()).collect();
        let merged = writer.finish(&self.inner.storage, ids.clone()).await?;
        merged.preload(&self.inner.storage).await?;
        tracing::info!(tenant = %tenant, merged = ids.len(), spans = merged.meta.span_count, duplicates, "compacted blocks");
        // Swap the index in one step: readers see either the old blocks or the new one.
        {
            let mut blocks = self.inner.blocks.write();
            let list = blocks.entry(tenant.clone()).or_default();
            list.retain(|b| !ids.contains(&b.meta.block_id));
            list.push(Arc::new(merged));
        }
        self.inner.metrics.compacted(true, duplicates);
        self.refresh_block_metrics();
        // Queries that snapshotted the old blocks may still be reading them: delete a bit later.
        // If we crash first, start-up removes them (the new block lists them in compacted_from).
        let storage = self.inner.storage.clone();
        let old: Vec<BlockMeta> = chosen.iter().map(|b| b.meta.clone()).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            for m in old {
                if let Err(e) = block::delete_block(&storage, &m).await {
                    tracing::warn!(block = %m.block_id, error = %e, "could not delete compacted block");
                }
            }
        });
        Ok(())
    }

    fn refresh_block_metrics(&self) {
        for (tenant, blocks) in self.inner.blocks.read().iter() {
            let bytes = blocks.iter().map(|b| b.meta.size_bytes).sum();
            let spans = blocks.iter().map(|b| b.meta.span_count).sum();
            self.inner
                .metrics
                .set_tenant_blocks(tenant.as_str(), blocks.len(), bytes, spans);
        }
    }

    /// Stops background work and flushes the head into blocks.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let _ = self.inner.stop.send(true);
        self.flush().await
    }

    pub fn blocks(&self, tenant: &Tenant) -> Vec<BlockRef> {
        self.inner
            .blocks
            .read()
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }

    pub fn head_span_count(&self) -> usize {
        self.inner.head.span_count()
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }
}

fn dedup_key(s: &FlatSpan) -> (Vec<u8>, Vec<u8>, u64, u64, i32, String) {
    (
        s.span.trace_id.clone(),
        s.span.span_id.clone(),
        s.span.start_time_unix_nano,
        s.span.end_time_unix_nano,
        s.span.kind,
        s.service_name().to_string(),
    )
}

/// Lists block directories: loads complete ones, removes interrupted writes and blocks already
/// replaced by a compaction.
async fn load_blocks(storage: &Storage, report: &mut OpenReport) -> Result<Vec<Block>, StoreError> {
    let objects = storage.list_all().await?;
    let mut dirs: HashMap<String, Vec<object_store::path::Path>> = HashMap::new();
    for (path, _) in objects {
        let s = path.as_ref();
        if let Some((dir, _file)) = s.rsplit_once('/') {
            dirs.entry(dir.to_string()).or_default().push(path.clone());
        }
    }
    let mut blocks = Vec::new();
    for (dir, files) in &dirs {
        if !dir.starts_with("tenants/") {
            continue;
        }
        if !files.iter().any(|p| p.filename() == Some(META_FILE)) {
            tracing::warn!(block = %dir, "removing an incomplete block (interrupted write)");
            for f in files {
                storage.delete(f).await?;
            }
            report.removed_incomplete_blocks += 1;
            continue;
        }
        blocks.push(Block::load(storage, &object_store::path::Path::from(dir.as_str())).await?);
    }
    let replaced: HashSet<String> = blocks
        .iter()
        .flat_map(|b| b.meta.compacted_from.iter().cloned())
        .collect();
    let mut kept = Vec::new();
    for b in blocks {
        if replaced.contains(&b.meta.block_id) {
            block::delete_block(storage, &b.meta).await?;
            report.removed_compacted_blocks += 1;
        } else {
            kept.push(b);
        }
    }
    Ok(kept)
}

#[async_trait::async_trait]
impl SpanSink for Store {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        let n = batch.span_count();
        if n == 0 {
            return Ok(());
        }
        if self.inner.head.span_count() + n > self.inner.cfg.max_head_spans {
            return Err(SinkError::Overloaded {
                retry_after: Duration::from_secs(1),
                reason: "the in-memory head is full while blocks are being written".into(),
            });
        }
        let tenant = batch.tenant.clone();
        self.inner.wal.append(batch).await.map_err(sink_error)?;
        self.inner.metrics.spans_appended(tenant.as_str(), n as u64);
        Ok(())
    }
}

/// A block's traces that started in `[start, end]`, assuming starts spread evenly over the
/// block's time range (a trace straddling the range's edge may be counted in two blocks).
fn prorated_traces(meta: &BlockMeta, start: u64, end: u64) -> u64 {
    let (lo, hi) = (meta.min_start_unix_nano, meta.max_start_unix_nano);
    if hi < start || lo > end {
        return 0;
    }
    let (from, to) = (lo.max(start), hi.min(end));
    let span = hi - lo;
    if span == 0 {
        return meta.trace_count;
    }
    let share = (to - from) as f64 / span as f64;
    (meta.trace_count as f64 * share).round() as u64
}

#[async_trait::async_trait]
impl TraceReader for Store {
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        let mut spans = self.inner.head.trace(tenant, &id);
        let blocks = self.blocks(tenant);
        // Owned futures: borrowed ones trip the compiler's Send inference inside async_trait.
        let reads = blocks.into_iter().map(|b| {
            let storage = self.inner.storage.clone();
            async move { b.read_trace(&storage, &id).await }
        });
        let from_blocks: Vec<Vec<FlatSpan>> = stream::iter(reads)
            .buffer_unordered(4)
            .try_collect()
            .await?;
        spans.extend(from_blocks.into_iter().flatten());
        let mut seen = HashSet::new();
        spans.retain(|s| seen.insert(dedup_key(s)));
        spans.sort_by_key(|s| s.span.start_time_unix_nano);
        Ok(spans)
    }

    async fn search(&self, tenant: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        let mut hits: HashMap<TraceId, u64> = self
            .inner
            .head
            .search(tenant, q)
            .into_iter()
            .map(|h| (h.trace_id, h.start_unix_nano))
            .collect();
        let blocks: Vec<BlockRef> = self
            .blocks(tenant)
            .into_iter()
            .filter(|b| b.may_match(q))
            .collect();
        // One task per block so scans decode on every core (futures polled by one task would
        // share a thread).
        let scans = blocks.into_iter().map(|b| {
            let storage = self.inner.storage.clone();
            let q = q.clone();
            async move {
                tokio::spawn(async move { b.search(&storage, &q).await })
                    .await
                    .map_err(|e| StoreError::Internal(format!("block search task failed: {e}")))?
            }
        });
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let found: Vec<HashMap<TraceId, u64>> = stream::iter(scans)
            .buffer_unordered(parallel)
            .try_collect()
            .await?;
        for m in found {
            for (id, t) in m {
                let e = hits.entry(id).or_insert(0);
                *e = (*e).max(t);
            }
        }
        let mut out: Vec<TraceHit> = hits
            .into_iter()
            .map(|(trace_id, start_unix_nano)| TraceHit {
                trace_id,
                start_unix_nano,
            })
            .collect();
        out.sort_by(|a, b| {
            b.start_unix_nano
                .cmp(&a.start_unix_nano)
                .then(a.trace_id.cmp(&b.trace_id))
        });
        out.truncate(q.effective_limit());
        Ok(out)
    }

    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<u64, StoreError> {
        let q = SearchQuery {
            start_unix_nano: Some(start),
            end_unix_nano: Some(end),
            ..Default::default()
        };
        let mut total = self.inner.head.search(tenant, &q).len() as u64;
        for b in self.blocks(tenant) {
            total += prorated_traces(&b.meta, start, end);
        }
        Ok(total)
    }

    async fn services(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        Ok(self.inner.catalog.services(tenant))
    }

    async fn operations(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError> {
        Ok(self.inner.catalog.operations(tenant, service))
    }

    async fn dependencies(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        // (trace, span) → service, and the parent of every span started in the window.
        let mut owner: HashMap<([u8; 16], [u8; 8]), String> = HashMap::new();
        let mut children: Vec<([u8; 16], [u8; 8], String)> = Vec::new();
        let mut note = |trace: &[u8], span: &[u8], parent: Option<&[u8]>, service: &str, t: u64| {
            let (Ok(trace), Ok(span)) = (<[u8; 16]>::try_from(trace), <[u8; 8]>::try_from(span))
            else {
                return;
            };
            owner.insert((trace, span), service.to_string());
            if t >= start && t <= end {
                if let Some(Ok(p)) = parent.map(<[u8; 8]>::try_from) {
                    children.push((trace, p, service.to_string()));
                }
            }
        };
        self.inner.head.for_each_span(tenant, |s| {
            let parent =
                (!s.span.parent_span_id.is_empty()).then_some(s.span.parent_span_id.as_slice());
            note(
                &s.span.trace_id,
                &s.span.span_id,
                parent,
                s.service_name(),
                s.span.start_time_unix_nano,
            );
        });
        let q = SearchQuery {
            start_unix_nano: Some(start),
            end_unix_nano: Some(end),
            ..Default::default()
        };
        for b in self.blocks(tenant).into_iter().filter(|b| b.may_match(&q)) {
            use crate::schema::{col, Columns};
            use arrow_array::Array;
            let cols = [
                col::TRACE_ID,
                col::SPAN_ID,
                col::PARENT_SPAN_ID,
                col::SERVICE_NAME,
                col::START,
            ];
            b.scan(&self.inner.storage, None, Some(&cols), |batch| {
                let c = Columns::new(batch);
                let (tr, sp, pa, sv, st) = (
                    c.fsb(col::TRACE_ID)?,
                    c.fsb(col::SPAN_ID)?,
                    c.fsb(col::PARENT_SPAN_ID)?,
                    c.str(col::SERVICE_NAME)?,
                    c.i64(col::START)?,
                );
                for r in 0..batch.num_rows() {
                    let parent = pa.is_valid(r).then(|| pa.value(r));
                    note(
                        tr.value(r),
                        sp.value(r),
                        parent,
                        sv.value(r),
                        st.value(r) as u64,
                    );
                }
                Ok(())
            })
            .await?;
        }
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (trace, parent, child_service) in children {
            if let Some(parent_service) = owner.get(&(trace, parent)) {
                if parent_service != &child_service {
                    *counts
                        .entry((parent_service.clone(), child_service))
                        .or_default() += 1;
                }
            }
        }
        Ok(counts
            .into_iter()
            .map(|((parent, child), call_count)| DependencyLink {
                parent,
                child,
                call_count,
            })
            .collect())
    }
}
