//! [`Store`]: the WAL, head, blocks and compactor wired together. It is a [`SpanSink`] (an append
//! returns once fsynced) and a [`TraceReader`].

use crate::api::{
    AttrScope, DependencyLink, Operation, SearchQuery, TagValue, TraceHit, TraceReader,
};
use crate::block::{self, Block, BlockMeta, BlockRef, META_FILE};
use crate::catalog::Catalog;
use crate::clock::{Clock, SystemClock};
use crate::compaction_plan::{plan_merge, PlanBlock};
use crate::head::Head;
use crate::holds::Holds;
use crate::matcher::Matcher;
use crate::memory_budget::{self, MemoryBudget};
use crate::metrics::StoreMetrics;
use crate::retention::{self, RetentionPolicy, RetentionReport, StoreEvents};
use crate::shared::{self as shared_bucket, SharedBucket, SharedRole};
use crate::storage::{Storage, Tier};
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
    /// Default retention; [`StoreConfig::retention_policy`] may override it per tenant.
    pub retention: Duration,
    /// Per-tenant retention (the overrides file); `None`: `retention` for every tenant.
    pub retention_policy: Option<Arc<dyn RetentionPolicy>>,
    /// Where "now" comes from: the system clock, or a manual one in tests.
    pub clock: Arc<dyn Clock>,
    /// Blocks in an S3-compatible bucket (all of them, or with `tiering` the older ones).
    pub s3: Option<crate::storage::S3Config>,
    pub tiering: Option<crate::storage::TieringConfig>,
    /// How long replaced blocks (compaction inputs, local copies of tiered blocks) stay readable
    /// before deletion: queries that snapshotted the block list may still read them.
    pub block_delete_delay: Duration,
    /// How often expired blocks are looked for.
    pub retention_interval: Duration,
    /// Where retention deletions and erasures are reported (the audit log).
    pub events: Option<Arc<dyn StoreEvents>>,
    /// Encryption at rest: every WAL record and block file is sealed with a data key from here.
    /// `None`: plaintext (the default).
    pub keys: Option<Arc<clew_encryption::KeyManager>>,
    /// Free-space watermarks of the data directory (`storage.disk`): appends are refused
    /// retryably before the disk is full. `None`: no check (writes fail only on a full disk).
    pub disk: Option<Arc<crate::disk_guard::DiskGuard>>,
    /// Other processes share the bucket (`clew serve --target ingester|querier|compactor`): what
    /// this one does with it ([`crate::shared`]). `None`: the bucket (if any) is this store's alone.
    pub shared: Option<SharedBucket>,
}

#[derive(Debug, Clone)]
pub struct CompactionConfig {
    pub enabled: bool,
    pub interval: Duration,
    /// Compact a tenant-day once it has at least this many blocks…
    pub min_blocks: usize,
    /// …merging neighbours in time up to this many spans into one. A limit-N search reads the
    /// newest block at least, so this bounds its cost: ~40–50 ns per span on 2 cores.
    pub max_block_spans: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            min_blocks: 4,
            max_block_spans: 2_000_000,
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
            // 100k: a slice peaks near 200 MiB (500k peaked near 1 GiB, see trim.rs).
            merge_slice_spans: 100_000,
            retention: crate::DEFAULT_RETENTION,
            retention_policy: None,
            clock: Arc::new(SystemClock),
            s3: None,
            tiering: None,
            block_delete_delay: Duration::from_secs(30),
            retention_interval: Duration::from_secs(60),
            events: None,
            keys: None,
            disk: None,
            shared: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: StoreConfig,
    pub(crate) wal: Wal,
    pub(crate) head: Arc<Head>,
    pub(crate) catalog: Arc<Catalog>,
    /// Where new blocks are written: the bucket without tiering, local disk otherwise.
    pub(crate) storage: Storage,
    /// Local disk (`data_dir/blocks`).
    pub(crate) local: Storage,
    /// The bucket, if configured.
    pub(crate) remote: Option<Storage>,
    pub(crate) blocks: RwLock<BTreeMap<Tenant, Vec<BlockRef>>>,
    /// Sealed generations whose blocks are not written yet, oldest first.
    pub(crate) pending: Mutex<Vec<Sealed>>,
    /// Serializes compactions.
    pub(crate) compaction: tokio::sync::Mutex<()>,
    /// Serializes flushes.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) metrics: StoreMetrics,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) holds: Holds,
    /// Traces being erased (journal in `erase/`): hidden from every read until they are gone.
    pub(crate) erasing: RwLock<HashMap<Tenant, HashSet<TraceId>>>,
    /// `<data_dir>/.lock`, held while the store lives: no second process on this data dir.
    pub(crate) _dir_lock: crate::dir_lock::DataDirLock,
    /// What a compaction merge may allocate (the memory limiter's headroom); `None`: no limit.
    pub(crate) memory_budget: RwLock<Option<Arc<dyn MemoryBudget>>>,
    /// An ingester sharing the bucket: when (store clock) it wrote each block it still serves.
    pub(crate) written_at: parking_lot::Mutex<HashMap<String, u64>>,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// How a merge ended.
enum MergeOutcome {
    Merged,
    /// Not done for lack of memory (see [`memory_budget`]); the inputs are untouched.
    Deferred,
}

/// What start-up found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub replay: ReplayReport,
    pub blocks: usize,
    pub removed_incomplete_blocks: usize,
    pub removed_compacted_blocks: usize,
    /// Blocks found in the bucket (included in `blocks`).
    pub remote_blocks: usize,
    /// Local blocks also complete in the bucket (tiering interrupted after the copy): the local
    /// copy was removed.
    pub removed_tiered_duplicates: usize,
    /// Sealed blocks whose data key could not be unwrapped because its key-encryption key is gone
    /// (a retired version, a crypto-shredded tenant): left out of the index, kept on disk.
    pub unreadable_blocks: usize,
    /// `unreadable_blocks` per tenant (also `clew_store_unreadable_blocks{tenant}`).
    pub unreadable_blocks_by_tenant: BTreeMap<String, usize>,
    /// Damaged blocks moved to `{data_dir}/quarantine/` (also
    /// `clew_store_quarantined_blocks_total{reason}`): left out of the index, files kept there.
    pub quarantined_blocks: Vec<crate::quarantine::QuarantinedBlock>,
}

fn sink_error(e: StoreError) -> SinkError {
    match e {
        StoreError::ShuttingDown => SinkError::ShuttingDown,
        StoreError::Overloaded(reason) => SinkError::Overloaded {
            retry_after: Duration::from_secs(1),
            reason,
        },
        // The disk filled under a WAL write after all (the watermarks were off or outrun): the
        // group was refused and its torn bytes cut off, so a retry is safe.
        StoreError::Io { path, source } if source.kind() == std::io::ErrorKind::StorageFull => {
            SinkError::Overloaded {
                retry_after: Duration::from_secs(5),
                reason: format!("no space left on the device of {path}"),
            }
        }
        // A KMS outage: retry later; nothing was written in plaintext instead.
        StoreError::KeyUnavailable(reason) => SinkError::Overloaded {
            retry_after: Duration::from_secs(5),
            reason,
        },
        other => SinkError::Internal(other.to_string()),
    }
}

impl Store {
    /// Opens the store: blocks on the local filesystem (`data_dir/blocks`) and, with `cfg.s3`, in
    /// the bucket (its `meta.json`/`bloom.bin` cached under `data_dir/cache/blocks`).
    pub async fn open(
        cfg: StoreConfig,
        metrics: StoreMetrics,
    ) -> Result<(Self, OpenReport), StoreError> {
        let local = Storage::local(cfg.data_dir.join("blocks"))?;
        let remote = match &cfg.s3 {
            Some(s3) => Some(
                Storage::s3(s3)
                    .await?
                    .with_cache(cfg.data_dir.join("cache").join("blocks")),
            ),
            None => None,
        };
        Self::open_with_storage(cfg, local, remote, metrics).await
    }

    /// Opens the store on the given storages: `local` for local blocks, `remote` (the bucket) for
    /// all new blocks, or with `cfg.tiering` for blocks older than `tiering.after`.
    pub async fn open_with_storage(
        cfg: StoreConfig,
        local: Storage,
        remote: Option<Storage>,
        metrics: StoreMetrics,
    ) -> Result<(Self, OpenReport), StoreError> {
        // Before anything reads or writes the data dir: another process may own it.
        let dir_lock = crate::dir_lock::lock_data_dir(&cfg.data_dir)?;
        let mut report = OpenReport::default();
        let catalog = Arc::new(Catalog::default());
        let holds = Holds::open(cfg.data_dir.join(HOLDS_FILE))?;
        // Encryption at rest: the storages seal new blocks and open sealed ones (sealed_block.rs).
        let local = local.with_keys(cfg.keys.clone());
        let remote = remote.map(|r| r.with_keys(cfg.keys.clone()));
        let storage = match (&remote, &cfg.tiering) {
            (Some(r), None) => r.clone(),
            _ => local.clone(),
        };
        // An ingester sharing the bucket never reads it: its index is what it writes.
        let reads_remote = cfg.shared.as_ref().is_none_or(|s| s.lists_blocks());
        let tiers: Vec<&Storage> = std::iter::once(&local)
            .chain(remote.as_ref().filter(|_| reads_remote))
            .collect();
        let quarantine = crate::quarantine::Quarantine::new(&cfg.data_dir);
        let blocks = load_blocks(&tiers, &quarantine, cfg.shared.is_some(), &mut report).await?;
        if let Some(r) = remote.as_ref().filter(|_| reads_remote) {
            let keep: HashSet<String> = blocks
                .iter()
                .filter(|b| b.tier() == Tier::Remote)
                .map(|b| b.meta.dir().to_string())
                .collect();
            report.remote_blocks = keep.len();
            r.prune_cache(&keep);
        }
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
        let (wal, replay) = Wal::open(
            &cfg.data_dir.join("wal"),
            head.clone(),
            metrics.clone(),
            cfg.keys.clone(),
        )
        .await?;
        report.replay = replay;
        let (stop, _) = watch::channel(false);
        let store = Store {
            inner: Arc::new(Inner {
                cfg,
                wal,
                head,
                catalog,
                storage,
                local,
                remote,
                blocks: RwLock::new(by_tenant),
                pending: Mutex::new(Vec::new()),
                maintenance: Mutex::new(()),
                compaction: tokio::sync::Mutex::new(()),
                metrics,
                stop,
                holds,
                erasing: RwLock::new(HashMap::new()),
                _dir_lock: dir_lock,
                memory_budget: RwLock::new(None),
                written_at: parking_lot::Mutex::new(HashMap::new()),
            }),
        };
        let resumed = store.resume_erasures()?;
        if resumed > 0 {
            tracing::warn!(
                erasures = resumed,
                "found interrupted erasures; their traces are hidden and the erase runs again"
            );
        }
        store.refresh_block_metrics();
        for (tenant, n) in &report.unreadable_blocks_by_tenant {
            store.inner.metrics.set_unreadable_blocks(tenant, *n);
        }
        for q in &report.quarantined_blocks {
            store.inner.metrics.quarantined_block(q.file.as_str());
        }
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
                if let Err(e) = b.preload().await {
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
                // Low on disk: flush at once. A block takes a fraction of the WAL bytes that held
                // its spans, and those WAL segments are deleted once the block is written.
                let low_disk = cfg.disk.as_ref().is_some_and(|d| d.low());
                let due = head.active_span_count() >= cfg.flush_max_spans
                    || (head.active_span_count() > 0
                        && (low_disk || head.active_age() >= cfg.flush_max_age));
                flusher.inner.metrics.set_head_spans(head.span_count());
                if due || !flusher.inner.pending.lock().await.is_empty() {
                    if let Err(e) = flusher.flush().await {
                        tracing::error!(error = %e, "flushing the head into blocks failed; will retry");
                    }
                }
                flusher.forget_old_own_blocks();
            }
        });
        if let Some(every) = self
            .shared()
            .filter(|s| s.lists_blocks())
            .map(|s| s.blocklist_poll)
        {
            let poller = self.clone();
            let mut stop = self.inner.stop.subscribe();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    if let Err(e) = poller.refresh_blocklist().await {
                        tracing::warn!(error = %e, "listing the shared bucket failed; will retry");
                    }
                }
            });
        }
        // Sharing the bucket, only compactors delete or merge blocks (under leases).
        let maintains = self
            .shared()
            .is_none_or(|s| s.role == SharedRole::Compactor);
        if self.inner.cfg.tiering.is_some() && self.inner.remote.is_some() {
            let tierer = self.clone();
            let mut stop = self.inner.stop.subscribe();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    tokio::select! {
                        res = tierer.tier_once() => if let Err(e) = res {
                            tracing::error!(error = %e, "moving blocks to the bucket failed; will retry");
                        },
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let retention = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            if !maintains {
                return;
            }
            // The first pass one interval after start-up, not at once: a start-up is busy enough.
            let every = retention.inner.cfg.retention_interval;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = retention.apply_retention().await {
                    tracing::error!(error = %e, "retention pass failed; will retry");
                }
            }
        });
        if self.inner.cfg.compaction.enabled && maintains {
            let compactor = self.clone();
            let mut stop = self.inner.stop.subscribe();
            // On a thread of its own at a lower priority: see `background.rs`.
            let started = crate::background::spawn_low_priority("clew-compactor", async move {
                let mut tick = tokio::time::interval(compactor.inner.cfg.compaction.interval);
                // A merge longer than the interval must not be followed by a burst of rounds.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start the compaction thread; compaction is off");
            }
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
        // The released generations' spans are freed; let the OS have their pages back.
        crate::trim::release_free_heap("flush");
        Ok(())
    }

    async fn write_generation(&self, sealed: &Sealed) -> Result<(), StoreError> {
        for (tenant, th) in &sealed.generation.tenants {
            let mut by_day: BTreeMap<String, Vec<&FlatSpan>> = BTreeMap::new();
            // Spans that expired while in the head are not written (they are invisible already).
            let cutoff = self.retention_cutoff(tenant);
            let erasing = self.inner.erasing.read().get(tenant).cloned();
            let erased = |s: &FlatSpan| {
                erasing.as_ref().is_some_and(|e| {
                    TraceId::from_bytes(&s.span.trace_id).is_ok_and(|id| e.contains(&id))
                })
            };
            for s in th
                .spans
                .iter()
                .filter(|s| s.span.start_time_unix_nano >= cutoff && !erased(s))
            {
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
                b.preload().await?;
                if self.is_shared_role(SharedRole::Ingester) {
                    let now = self.inner.cfg.clock.now_unix_nano();
                    self.inner
                        .written_at
                        .lock()
                        .insert(b.meta.block_id.clone(), now);
                }
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
    /// Returns the number of blocks written. Sharing the bucket, a merge is planned from a fresh
    /// listing and done only under the tenant-day's lease (`shared.rs`).
    pub async fn compact_once(&self) -> Result<usize, StoreError> {
        // Not the flush lock: a long merge must never stop the head from being flushed (the head
        // would fill and ingest would stall). Flushes only add blocks; the merge swaps its inputs
        // for its output in one step under the block-list lock.
        let _c = self.inner.compaction.lock().await;
        let leases = self.leases();
        if leases.is_some() {
            self.refresh_blocklist_locked().await?;
        }
        // Blocks merge only with blocks of the same tenant, day and tier; the output stays in
        // that tier.
        let groups: std::collections::BTreeSet<(Tenant, String, Tier)> = self
            .inner
            .blocks
            .read()
            .iter()
            .flat_map(|(t, list)| {
                list.iter()
                    .map(|b| (t.clone(), b.meta.day.clone(), b.tier()))
            })
            .collect();
        let mut written = 0;
        for (tenant, day, tier) in groups {
            if self.plan_group(&tenant, &day, tier).is_none() {
                continue;
            }
            let lease = match &leases {
                None => None,
                Some(l) => match l
                    .try_acquire(&shared_bucket::compaction_lease(&tenant, &day))
                    .await?
                {
                    // Another compactor may have merged this day since the listing: look again.
                    Some(lease) => {
                        self.refresh_blocklist_locked().await?;
                        Some(lease)
                    }
                    None => continue,
                },
            };
            let outcome = match self.plan_group(&tenant, &day, tier) {
                Some(chosen) => self.compact_chosen(&tenant, &chosen).await.map(Some),
                None => Ok(None),
            };
            if let (Some(l), Some(lease)) = (&leases, lease) {
                if let Err(e) = l.release(lease).await {
                    tracing::warn!(tenant = %tenant, day = %day, error = %e, "could not give back a compaction lease; it expires on its own");
                }
            }
            match outcome? {
                None => {}
                Some(MergeOutcome::Merged) => written += 1,
                // Memory or disk is short: later merges of this round would be too.
                Some(MergeOutcome::Deferred) => return Ok(written),
            }
        }
        Ok(written)
    }

    /// The blocks of one tenant-day and tier that a merge would take now, if any: neighbours in
    /// time, never past the ceiling (see `compaction_plan`). Full blocks stay in the group: they
    /// separate the blocks around them in time.
    fn plan_group(&self, tenant: &Tenant, day: &str, tier: Tier) -> Option<Vec<BlockRef>> {
        let cfg = &self.inner.cfg.compaction;
        let group = shared_bucket::group_of(&self.blocks(tenant), day, tier);
        let plan: Vec<PlanBlock> = group
            .iter()
            .map(|b| PlanBlock {
                min_start: b.meta.min_start_unix_nano,
                max_start: b.meta.max_start_unix_nano,
                spans: b.meta.span_count,
            })
            .collect();
        let picked = plan_merge(&plan, cfg.min_blocks, cfg.max_block_spans)?;
        Some(picked.iter().map(|&i| group[i].clone()).collect())
    }

    /// Merges the chosen blocks, unless their output might not fit on the disk (`Deferred`,
    /// nothing touched).
    async fn compact_chosen(
        &self,
        tenant: &Tenant,
        chosen: &[BlockRef],
    ) -> Result<MergeOutcome, StoreError> {
        // The output is written before the inputs go: it needs room of its own. Without it, skip
        // the round instead of failing half-way (the next round looks again).
        if let Some(disk) = self
            .inner
            .cfg
            .disk
            .as_ref()
            .filter(|_| chosen[0].tier() == Tier::Local)
        {
            let need: u64 = chosen.iter().map(|b| b.meta.size_bytes).sum();
            if !disk.has_room_for(need) {
                disk.compaction_skipped();
                tracing::warn!(tenant = %tenant, blocks = chosen.len(), need_bytes = need, free_bytes = disk.free_bytes(),
                    "compaction skipped this round: its output might not fit on the disk");
                return Ok(MergeOutcome::Deferred);
            }
        }
        self.merge_blocks(tenant, chosen).await
    }

    /// Merges blocks into one, streaming: the trace-id space is cut into slices of at most
    /// `merge_slice_spans` (fewer when a memory budget is short), and each slice is read from
    /// every input (only the row groups that overlap it), deduplicated, sorted and appended to
    /// the output. Memory stays bounded by one slice (plus the encoded output) whatever the size
    /// of the inputs.
    async fn merge_blocks(
        &self,
        tenant: &Tenant,
        chosen: &[BlockRef],
    ) -> Result<MergeOutcome, StoreError> {
        let _running = self.inner.metrics.compaction_running();
        let total: u64 = chosen.iter().map(|b| b.meta.span_count).sum();
        let budget = self.inner.memory_budget.read().clone();
        let configured = self.inner.cfg.merge_slice_spans;
        // The output is built in memory until it is written: what a slice may use is the room
        // less the output still to come (what is built so far is in the reading already).
        let pushed = std::sync::atomic::AtomicU64::new(0);
        let room = || {
            let to_come = total.saturating_sub(pushed.load(std::sync::atomic::Ordering::Relaxed));
            budget
                .as_ref()
                .and_then(|b| b.room_bytes())
                .map(|r| r.saturating_sub(memory_budget::output_bytes(to_come)))
        };
        let room_at_start = room();
        let Some(first_slice) = memory_budget::slice_spans(configured, room_at_start) else {
            self.inner.metrics.compaction_deferred();
            tracing::info!(tenant = %tenant, blocks = chosen.len(), spans = total, room_mib = room_at_start.unwrap_or(0) >> 20,
                "compaction deferred: too little memory under the memory limiter's soft limit");
            return Ok(MergeOutcome::Deferred);
        };
        let mut writer = block::BlockWriter::new(
            tenant,
            self.inner.cfg.rows_per_row_group,
            total as usize,
            block::COMPACTED_ZSTD_LEVEL,
        )?;
        let mut duplicates = 0u64;
        let mut cache = crate::schema::DecodeCache::default();
        // Slices are ranges of the trace-id space (ids are random, so spans spread evenly over
        // it), each as wide as the memory at hand allows: the room shrinks as the output grows.
        let mut lo = 0u64;
        for i in 0u64.. {
            let slice_spans = if i == 0 || budget.is_none() {
                first_slice
            } else {
                // The previous slice's objects are freed: hand their pages back so the next
                // reading sees what is really in use, then wait for room for a useful slice.
                crate::trim::release_free_heap("compaction slice");
                match self.wait_for_slice_room(configured, &room).await {
                    Some(spans) => spans,
                    None => {
                        self.inner.metrics.compaction_deferred();
                        tracing::warn!(tenant = %tenant, blocks = chosen.len(), slice = i, done_share = format!("{:.0} %", lo as f64 / u64::MAX as f64 * 100.0),
                            "compaction abandoned mid-merge: no memory for the next slice (the inputs stay; the next round starts over)");
                        crate::trim::release_free_heap("abandoned compaction");
                        return Ok(MergeOutcome::Deferred);
                    }
                }
            };
            let hi = memory_budget::slice_end(lo, slice_spans, total);
            let mut spans: Vec<FlatSpan> = Vec::new();
            for b in chosen {
                b.read_range(lo, hi, &mut cache, &mut spans).await?;
            }
            let before = spans.len();
            let mut seen = HashSet::new();
            let mut unique: Vec<&FlatSpan> =
                spans.iter().filter(|s| seen.insert(dedup_key(s))).collect();
            duplicates += (before - unique.len()) as u64;
            block::sort_for_block(&mut unique);
            writer.push_sorted(&unique)?;
            pushed.fetch_add(before as u64, std::sync::atomic::Ordering::Relaxed);
            // Decode caches key resources by content; drop them between slices to stay bounded.
            cache = crate::schema::DecodeCache::default();
            if hi == u64::MAX {
                break;
            }
            lo = hi + 1;
        }
        let ids: Vec<String> = chosen.iter().map(|b| b.meta.block_id.clone()).collect();
        // Inputs share a tier (compact_once groups by it): the output goes there too.
        let target = chosen
            .first()
            .map_or(&self.inner.storage, |b| b.storage())
            .clone();
        let merged = writer.finish(&target, ids.clone()).await?;
        merged.preload().await?;
        tracing::info!(tenant = %tenant, merged = ids.len(), spans = merged.meta.span_count, duplicates, "compacted blocks");
        // Swap the index in one step: readers see either the old blocks or the new one.
        {
            let mut blocks = self.inner.blocks.write();
            let list = blocks.entry(tenant.clone()).or_default();
            list.retain(|b| !ids.contains(&b.meta.block_id));
            list.push(Arc::new(merged));
        }
        self.inner.metrics.compacted(true, duplicates);
        crate::trim::release_free_heap("compaction");
        self.refresh_block_metrics();
        // Queries that snapshotted the old blocks may still be reading them: delete a bit later.
        // If we crash first, start-up removes them (the new block lists them in compacted_from).
        let old: Vec<(Storage, BlockMeta)> = chosen
            .iter()
            .map(|b| (b.storage().clone(), b.meta.clone()))
            .collect();
        let delay = self.inner.cfg.block_delete_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for (storage, m) in old {
                if let Err(e) = block::delete_block(&storage, &m).await {
                    tracing::warn!(block = %m.block_id, error = %e, "could not delete compacted block");
                }
            }
        });
        Ok(MergeOutcome::Merged)
    }

    /// Waits until the budget has room for a useful slice ([`memory_budget::slice_spans`]),
    /// re-reading it every 250 ms, and returns that slice's size; `None` after
    /// [`memory_budget::SLICE_WAIT_LIMIT`] or at shutdown.
    async fn wait_for_slice_room(
        &self,
        configured: u64,
        room: &impl Fn() -> Option<u64>,
    ) -> Option<u64> {
        let started = std::time::Instant::now();
        let mut stop = self.inner.stop.subscribe();
        loop {
            if let Some(spans) = memory_budget::slice_spans(configured, room()) {
                return Some(spans);
            }
            if *stop.borrow() || started.elapsed() >= memory_budget::SLICE_WAIT_LIMIT {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Gives compaction a memory budget (the server passes its `memory_limiter`'s headroom):
    /// merges size their slices to it and wait or defer when it is short. See [`memory_budget`].
    pub fn set_memory_budget(&self, budget: Arc<dyn MemoryBudget>) {
        *self.inner.memory_budget.write() = Some(budget);
    }

    pub(crate) fn refresh_block_metrics(&self) {
        let mut per_tier: BTreeMap<Tier, (usize, u64)> = BTreeMap::new();
        for (tenant, blocks) in self.inner.blocks.read().iter() {
            let bytes = blocks.iter().map(|b| b.meta.size_bytes).sum();
            let spans = blocks.iter().map(|b| b.meta.span_count).sum();
            self.inner
                .metrics
                .set_tenant_blocks(tenant.as_str(), blocks.len(), bytes, spans);
            for b in blocks {
                let e = per_tier.entry(b.tier()).or_default();
                e.0 += 1;
                e.1 += b.meta.size_bytes;
            }
        }
        let tiers: &[Tier] = if self.inner.remote.is_some() {
            &[Tier::Local, Tier::Remote]
        } else {
            &[Tier::Local]
        };
        for t in tiers {
            let (n, bytes) = per_tier.get(t).copied().unwrap_or_default();
            self.inner.metrics.set_tier_blocks(t.as_str(), n, bytes);
        }
    }

    /// One tiering pass: moves every local block whose newest span is older than
    /// `tiering.after` (by the store's clock) to the bucket. Per block: every file is copied,
    /// `meta.json` last (it makes the remote copy complete); the block list switches to the
    /// remote copy in one step; the local copy is deleted `block_delete_delay` later (queries may
    /// hold it). A crash at any point is resolved at start-up (see [`OpenReport`]). Returns the
    /// number of blocks moved. Without tiering, does nothing.
    pub async fn tier_once(&self) -> Result<usize, StoreError> {
        let (Some(tiering), Some(remote)) = (&self.inner.cfg.tiering, &self.inner.remote) else {
            return Ok(0);
        };
        // Under the compaction lock: a merge never takes a block that is being moved.
        let _c = self.inner.compaction.lock().await;
        let now = self.inner.cfg.clock.now_unix_nano();
        let after = u64::try_from(tiering.after.as_nanos()).unwrap_or(u64::MAX);
        let due: Vec<(Tenant, BlockRef)> = self
            .inner
            .blocks
            .read()
            .iter()
            .flat_map(|(t, bs)| bs.iter().map(move |b| (t.clone(), b.clone())))
            .filter(|(_, b)| {
                b.tier() == Tier::Local && b.meta.max_start_unix_nano.saturating_add(after) <= now
            })
            // Expired blocks are retention's to delete, not worth an upload.
            .filter(|(t, b)| b.meta.max_start_unix_nano >= self.retention_cutoff(t))
            .collect();
        let (mut moved, mut first_error) = (0, None);
        for (tenant, b) in due {
            // One block failing (say, a bad local file) does not hold back the others.
            match self.move_block(&tenant, &b, remote).await {
                Ok(()) => {
                    moved += 1;
                    self.inner.metrics.tiered(true, b.meta.size_bytes);
                }
                Err(e) => {
                    self.inner.metrics.tiered(false, 0);
                    tracing::warn!(tenant = %tenant, block = %b.meta.block_id, error = %e, "cannot move a block to the bucket; will retry");
                    first_error.get_or_insert(e);
                }
            }
        }
        if moved > 0 {
            self.refresh_block_metrics();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    async fn move_block(
        &self,
        tenant: &Tenant,
        b: &BlockRef,
        remote: &Storage,
    ) -> Result<(), StoreError> {
        let dir = b.meta.dir();
        let meta_path = dir.clone().join(META_FILE);
        // Every object of the directory (a future `key.json` too), meta.json last.
        let mut files = b.storage().list_dir(&dir).await?;
        files.retain(|p| p != &meta_path);
        files.push(meta_path);
        for f in &files {
            remote.copy_from(b.storage(), f).await?;
        }
        let moved = Arc::new(b.relocated(remote.clone()));
        let swapped = {
            let mut blocks = self.inner.blocks.write();
            let list = blocks.entry(tenant.clone()).or_default();
            match list.iter_mut().find(|x| x.meta.block_id == b.meta.block_id) {
                Some(slot) => {
                    *slot = moved;
                    true
                }
                None => false,
            }
        };
        if !swapped {
            // Dropped meanwhile (retention): the remote copy goes too.
            block::delete_block(remote, &b.meta).await?;
            return Ok(());
        }
        tracing::info!(tenant = %tenant, block = %b.meta.block_id, bytes = b.meta.size_bytes, "block moved to the bucket");
        let local = b.storage().clone();
        let meta = b.meta.clone();
        let delay = self.inner.cfg.block_delete_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = block::delete_block(&local, &meta).await {
                tracing::warn!(block = %meta.block_id, error = %e, "could not delete the local copy of a tiered block");
            }
        });
        Ok(())
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

    /// The tenant's retention: the overrides file's value, else `storage.retention`.
    pub fn retention_of(&self, tenant: &Tenant) -> Duration {
        let cfg = &self.inner.cfg;
        cfg.retention_policy
            .as_ref()
            .and_then(|p| p.retention(tenant.as_str()))
            .unwrap_or(cfg.retention)
    }

    /// Spans of `tenant` that started before this (Unix nanoseconds) have expired; 0 while the
    /// tenant is under legal hold.
    pub fn retention_cutoff(&self, tenant: &Tenant) -> u64 {
        if self.inner.holds.is_tenant_held(tenant.as_str()) {
            return 0;
        }
        self.expiry_cutoff(tenant)
    }

    /// The retention cutoff, holds aside.
    fn expiry_cutoff(&self, tenant: &Tenant) -> u64 {
        let retention = u64::try_from(self.retention_of(tenant).as_nanos()).unwrap_or(u64::MAX);
        self.inner
            .cfg
            .clock
            .now_unix_nano()
            .saturating_sub(retention)
    }

    /// The earliest span start a read of this trace may return: the retention cutoff, or 0 for
    /// a trace under legal hold.
    fn visible_from(&self, tenant: &Tenant, id: &TraceId) -> u64 {
        if self.inner.holds.is_trace_held(tenant.as_str(), &id.0) {
            0
        } else {
            self.retention_cutoff(tenant)
        }
    }

    /// Legal holds (per tenant and per trace): exempt from retention and erasure until released.
    pub fn holds(&self) -> &Holds {
        &self.inner.holds
    }

    /// `q` restricted to spans that have not expired.
    fn clamp_to_retention(&self, tenant: &Tenant, q: &SearchQuery) -> SearchQuery {
        let cutoff = self.retention_cutoff(tenant);
        let mut q = q.clone();
        q.start_unix_nano = Some(q.start_unix_nano.unwrap_or(0).max(cutoff));
        q
    }

    /// One retention pass: deletes every block whose newest span is older than its tenant's
    /// retention, unless a legal hold covers it. Blocks leave the index at once (queries stop
    /// seeing them) and their files are deleted `block_delete_delay` later, when readers are
    /// done; a crash in between only means the next pass deletes them.
    pub async fn apply_retention(&self) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        // Not while an erase or a tiering move swaps blocks.
        let _c = self.inner.compaction.lock().await;
        // Sharing the bucket, one compactor at a time expires a tenant's blocks (its lease).
        let leases = self.leases();
        let tenants: Vec<Tenant> = self.inner.blocks.read().keys().cloned().collect();
        for tenant in tenants {
            let cutoff = self.expiry_cutoff(&tenant);
            if self.blocks_older_than(&tenant, cutoff).is_empty() {
                continue;
            }
            let lease = match &leases {
                None => None,
                Some(l) => match l
                    .try_acquire(&shared_bucket::retention_lease(&tenant))
                    .await?
                {
                    Some(lease) => {
                        self.refresh_blocklist_locked().await?;
                        Some(lease)
                    }
                    None => continue,
                },
            };
            let expired = self.blocks_older_than(&tenant, cutoff);
            self.expire_blocks(&tenant, cutoff, expired, &mut report);
            if let (Some(l), Some(lease)) = (&leases, lease) {
                if let Err(e) = l.release(lease).await {
                    tracing::warn!(tenant = %tenant, error = %e, "could not give back a retention lease; it expires on its own");
                }
            }
        }
        if report.deleted_blocks > 0 {
            self.refresh_block_metrics();
        }
        Ok(report)
    }

    /// A tenant's blocks whose newest span started before `cutoff`.
    fn blocks_older_than(&self, tenant: &Tenant, cutoff: u64) -> Vec<BlockRef> {
        self.blocks(tenant)
            .into_iter()
            .filter(|b| b.meta.max_start_unix_nano < cutoff)
            .collect()
    }

    /// Takes a tenant's expired blocks out of the index (those under a legal hold stay) and
    /// deletes their files `block_delete_delay` later, reporting each deletion.
    fn expire_blocks(
        &self,
        tenant: &Tenant,
        cutoff: u64,
        expired: Vec<BlockRef>,
        report: &mut RetentionReport,
    ) {
        {
            if expired.is_empty() {
                return;
            }
            let (held, doomed): (Vec<BlockRef>, Vec<BlockRef>) = expired
                .into_iter()
                .partition(|b| self.block_is_held(tenant, b));
            report.held_blocks += held.len();
            if doomed.is_empty() {
                return;
            }
            let ids: HashSet<&str> = doomed.iter().map(|b| b.meta.block_id.as_str()).collect();
            if let Some(list) = self.inner.blocks.write().get_mut(tenant) {
                list.retain(|b| !ids.contains(b.meta.block_id.as_str()));
            }
            for b in &doomed {
                let m = &b.meta;
                report.deleted_blocks += 1;
                report.deleted_bytes += m.size_bytes;
                report.deleted_spans += m.span_count;
                self.inner.metrics.retention().block_deleted(
                    tenant.as_str(),
                    m.size_bytes,
                    m.span_count,
                );
                tracing::info!(tenant = %tenant, block = %m.block_id, day = %m.day, spans = m.span_count, bytes = m.size_bytes, "retention: block expired");
                if let Some(events) = &self.inner.cfg.events {
                    events.record(
                        "retention.delete",
                        Some(tenant.as_str()),
                        serde_json::json!({
                            "block": m.block_id,
                            "day": m.day,
                            "spans": m.span_count,
                            "bytes": m.size_bytes,
                            "newest_span_unix_nano": m.max_start_unix_nano,
                            "cutoff_unix_nano": cutoff,
                            "retention": humantime_secs(self.retention_of(tenant)),
                        }),
                    );
                }
            }
            self.delete_blocks_later(doomed);
        }
    }

    /// Whether a legal hold keeps this block past its retention: the tenant is held, or the block
    /// may hold a held trace (bloom filter, so a false positive keeps a block longer, never
    /// shorter).
    fn block_is_held(&self, tenant: &Tenant, block: &Block) -> bool {
        let holds = &self.inner.holds;
        if !holds.has_any_hold(tenant.as_str()) {
            return false;
        }
        holds.is_tenant_held(tenant.as_str())
            || holds
                .held_traces(tenant.as_str())
                .iter()
                .any(|id| block.may_contain(&TraceId(*id)))
    }

    /// Deletes blocks' files once readers that snapshotted them are done.
    pub(crate) fn delete_blocks_later(&self, blocks: Vec<BlockRef>) {
        let delay = self.inner.cfg.block_delete_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for b in blocks {
                if let Err(e) = block::delete_block(b.storage(), &b.meta).await {
                    tracing::warn!(block = %b.meta.block_id, error = %e, "could not delete a block's files; the next retention pass retries");
                }
            }
        });
    }

    pub fn head_span_count(&self) -> usize {
        self.inner.head.span_count()
    }

    /// Where new blocks are written (the bucket without tiering, local disk otherwise).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Local block storage (`data_dir/blocks`).
    pub fn local_storage(&self) -> &Storage {
        &self.inner.local
    }

    /// The bucket, if `s3` is configured.
    pub fn remote_storage(&self) -> Option<&Storage> {
        self.inner.remote.as_ref()
    }
}

/// What makes two stored spans the same span (an OTLP retry, a span kept by two nodes): reads
/// and merges keep one of each.
pub fn dedup_key(s: &FlatSpan) -> (Vec<u8>, Vec<u8>, u64, u64, i32, String) {
    (
        s.span.trace_id.clone(),
        s.span.span_id.clone(),
        s.span.start_time_unix_nano,
        s.span.end_time_unix_nano,
        s.span.kind,
        s.service_name().to_string(),
    )
}

/// Lists block directories of every tier: loads complete ones, removes interrupted writes, local
/// copies of blocks already in the bucket (interrupted tiering) and blocks already replaced by a
/// compaction.
/// Every complete block of the tiers. With a `shared` bucket, nothing in it is removed: an
/// unfinished block may be another process's write in progress, and blocks replaced by a
/// compaction are only hidden (a compactor deletes them, `shared.rs`).
async fn load_blocks(
    tiers: &[&Storage],
    quarantine: &crate::quarantine::Quarantine,
    shared: bool,
    report: &mut OpenReport,
) -> Result<Vec<Block>, StoreError> {
    let mut blocks = Vec::new();
    for storage in tiers {
        let shared = shared && storage.tier() == Tier::Remote;
        blocks.extend(load_tier(storage, quarantine, shared, report).await?);
    }
    // Complete in both tiers: tiering stopped after the copy and before deleting the local one.
    let remote: HashSet<String> = blocks
        .iter()
        .filter(|b| b.tier() == Tier::Remote)
        .map(|b| b.meta.block_id.clone())
        .collect();
    let mut unique = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.tier() == Tier::Local && remote.contains(&b.meta.block_id) {
            tracing::info!(block = %b.meta.block_id, "removing the local copy of a block already in the bucket (interrupted tiering)");
            block::delete_block(b.storage(), &b.meta).await?;
            report.removed_tiered_duplicates += 1;
        } else {
            unique.push(b);
        }
    }
    let replaced: HashSet<String> = unique
        .iter()
        .flat_map(|b| b.meta.compacted_from.iter().cloned())
        .collect();
    let mut kept = Vec::new();
    for b in unique {
        if replaced.contains(&b.meta.block_id) {
            if !(shared && b.tier() == Tier::Remote) {
                block::delete_block(b.storage(), &b.meta).await?;
            }
            report.removed_compacted_blocks += 1;
        } else {
            kept.push(b);
        }
    }
    Ok(kept)
}

/// One tier's complete blocks; directories without `meta.json` (an interrupted write or copy) are
/// removed; damaged blocks (`Block::load_listed`'s checks, then `Block::check_quick`: sizes and
/// the Parquet footer, local tier only — the bucket's footers are read lazily, and a damaged one
/// is quarantined when a query finds it) are moved to the quarantine.
async fn load_tier(
    storage: &Storage,
    quarantine: &crate::quarantine::Quarantine,
    shared: bool,
    report: &mut OpenReport,
) -> Result<Vec<Block>, StoreError> {
    let objects = storage.list_all().await?;
    let mut dirs: HashMap<String, Vec<object_store::path::Path>> = HashMap::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for (path, size) in objects {
        let s = path.as_ref();
        if let Some((dir, _file)) = s.rsplit_once('/') {
            dirs.entry(dir.to_string()).or_default().push(path.clone());
            sizes.insert(s.to_string(), size);
        }
    }
    let mut complete = Vec::new();
    for (dir, files) in &dirs {
        if !dir.starts_with("tenants/") {
            continue;
        }
        let (has_meta, has_key) = crate::sealed_block::listed_files(files);
        if !has_meta && shared {
            continue;
        }
        if !has_meta {
            tracing::warn!(block = %dir, tier = storage.tier().as_str(), "removing an incomplete block (interrupted write)");
            for f in files {
                storage.delete(f).await?;
            }
            report.removed_incomplete_blocks += 1;
            continue;
        }
        complete.push((object_store::path::Path::from(dir.as_str()), has_key));
    }
    // Bucket round trips add up: load several at once (cached metas and blooms need none).
    let local = storage.tier() == Tier::Local;
    let sizes = &sizes;
    let loaded: Vec<(object_store::path::Path, Result<Block, StoreError>)> = stream::iter(complete)
        .map(|(dir, has_key)| async move {
            let mut r = Block::load_listed(storage, &dir, Some(has_key)).await;
            if let (true, Ok(b)) = (local, &r) {
                let data = dir.clone().join(block::DATA_FILE);
                let checked = match sizes.get(data.as_ref()) {
                    Some(&size) => b.check_quick(Some(size)).await,
                    None => Err(StoreError::Corrupt {
                        what: data.to_string(),
                        detail: "missing".into(),
                    }),
                };
                if let Err(e) = checked {
                    r = Err(e);
                }
            }
            (dir, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut blocks = Vec::with_capacity(loaded.len());
    for (dir, r) in loaded {
        match r {
            Ok(b) => blocks.push(b),
            // Crypto-shredded or retired key: report, keep the files, carry on.
            Err(StoreError::KeyGone {
                block,
                tenant,
                reason,
            }) => {
                tracing::warn!(block = %block, dir = %dir, tenant = %tenant, tier = storage.tier().as_str(), reason = %reason, "skipping an unreadable block: its encryption key is gone (files kept)");
                report.unreadable_blocks += 1;
                *report
                    .unreadable_blocks_by_tenant
                    .entry(tenant)
                    .or_default() += 1;
            }
            // A shared bucket is not this process's to tidy: leave a damaged block where it is,
            // and one deleted since the listing (a compactor's delayed delete) is just gone.
            Err(e) if shared && (block::is_damage(&e) || shared_bucket::is_not_found(&e)) => {
                tracing::warn!(dir = %dir, error = %e, "skipping a block of the shared bucket");
            }
            // Damage (not an I/O error): move the block aside, keep serving the rest.
            Err(e) if block::is_damage(&e) => {
                tracing::warn!(dir = %dir, tier = storage.tier().as_str(), error = %e, "block is damaged; moving it to quarantine");
                report
                    .quarantined_blocks
                    .push(quarantine.block(storage, &dir, &e).await?);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(blocks)
}

#[async_trait::async_trait]
impl SpanSink for Store {
    async fn consume(&self, mut batch: SpanBatch) -> Result<(), SinkError> {
        // Spans already past the tenant's retention never enter the WAL or the head.
        let cutoff = self.retention_cutoff(&batch.tenant);
        let expired = retention::drop_expired(&mut batch, cutoff);
        if expired > 0 {
            self.inner
                .metrics
                .retention()
                .refused(batch.tenant.as_str(), expired as u64);
        }
        let n = batch.span_count();
        if n == 0 {
            return Ok(());
        }
        // Before the disk is full, not when a write fails: refused spans cost nothing to retry.
        if let Some(disk) = &self.inner.cfg.disk {
            disk.admit(n as u64)
                .map_err(|reason| SinkError::Overloaded {
                    retry_after: Duration::from_secs(1),
                    reason,
                })?;
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

/// A block's tag catalog if the block may hold spans started in `range` (block granularity: its
/// whole catalog counts once its time span overlaps).
fn block_tags_in(b: &Block, range: Option<(u64, u64)>) -> Option<&crate::tags::TagCatalog> {
    if range
        .is_some_and(|(lo, hi)| b.meta.max_start_unix_nano < lo || b.meta.min_start_unix_nano > hi)
    {
        return None;
    }
    b.meta.tags.as_ref()
}

impl Store {
    /// [`TraceReader::search`], which reads blocks newest first and stops once the rest cannot
    /// change the answer; `exhaustive` reads every block the metadata does not rule out (the
    /// reference the early stop is tested against).
    #[doc(hidden)]
    pub async fn search_blocks(
        &self,
        tenant: &Tenant,
        q: &SearchQuery,
        exhaustive: bool,
    ) -> Result<Vec<TraceHit>, StoreError> {
        let q = &self.clamp_to_retention(tenant, q);
        // Compiled once (regexes) for the head and every block; a bad regex fails here.
        let m = Arc::new(Matcher::new(q)?);
        let mut hits: HashMap<TraceId, u64> = self
            .inner
            .head
            .search_matcher(tenant, &m)
            .into_iter()
            .map(|h| (h.trace_id, h.start_unix_nano))
            .collect();
        let all = self.blocks(tenant);
        let total = all.len();
        let mut blocks: Vec<BlockRef> = all.into_iter().filter(|b| b.may_match(q)).collect();
        // Newest first: a search wants the `limit` newest traces, and a block can only add hits
        // no newer than its newest span start.
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.max_start_unix_nano));
        let limit = q.effective_limit();
        // Tasks as many at a time as there are cores (futures polled by one task would share a
        // thread), blocks started in that order. A large block is cut into one part per core
        // (`search_parts`), so the newest block alone keeps every core busy and the early stop
        // is checked again before the next block. Before starting a block or a part, stop if it
        // and the rest cannot change the answer (`answer_is_settled`); tasks started finish.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut read = 0;
        let mut rest = blocks.into_iter().peekable();
        let mut queued: std::collections::VecDeque<(BlockRef, Option<Vec<usize>>)> =
            Default::default();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < parallel {
                if queued.is_empty() {
                    let Some(next) = rest.peek() else { break };
                    if !exhaustive
                        && answer_is_settled(&hits, limit, next.meta.max_start_unix_nano, |id| {
                            self.is_erasing(tenant, id)
                        })
                    {
                        rest = Vec::new().into_iter().peekable();
                        break;
                    }
                    let Some(b) = rest.next() else { break };
                    read += 1;
                    // A footer that cannot be read: one part, whose search reports (or skips)
                    // the block as it always did.
                    let groups = b.row_group_count().await.unwrap_or(0);
                    for part in search_parts(groups, parallel) {
                        queued.push_back((b.clone(), part));
                    }
                }
                let Some((b, part)) = queued.pop_front() else {
                    break;
                };
                // The same stop for the parts of a block not yet started: they hold nothing newer
                // than the block's newest start (the parts already read answered for theirs).
                if !exhaustive
                    && answer_is_settled(&hits, limit, b.meta.max_start_unix_nano, |id| {
                        self.is_erasing(tenant, id)
                    })
                {
                    queued.clear();
                    rest = Vec::new().into_iter().peekable();
                    break;
                }
                let m = m.clone();
                let store = self.clone();
                running.push(tokio::spawn(async move {
                    let r = b.search_part(&m, part).await;
                    store.skip_unreadable(&b, r)
                }));
            }
            let Some(done) = running.next().await else {
                break;
            };
            let found =
                done.map_err(|e| StoreError::Internal(format!("block search task failed: {e}")))??;
            for (id, t) in found {
                let e = hits.entry(id).or_insert(0);
                *e = (*e).max(t);
            }
        }
        self.inner
            .metrics
            .searched_blocks(read as u64, (total - read) as u64);
        let mut out: Vec<TraceHit> = hits
            .into_iter()
            .filter(|(id, _)| !self.is_erasing(tenant, id))
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
}

/// A block is cut for parallel search only into parts of at least this many row groups (≈130k
/// spans at the default 8,192 rows per group): a smaller part costs more in per-read set-up than
/// a second core saves.
const MIN_PART_ROW_GROUPS: usize = 16;

/// How a block of `row_groups` row groups is searched on `parallel` cores: `[None]` (the whole
/// block in one task) or contiguous row-group ranges, one per core, covering every row group once.
fn search_parts(row_groups: usize, parallel: usize) -> Vec<Option<Vec<usize>>> {
    let k = parallel.min(row_groups / MIN_PART_ROW_GROUPS).max(1);
    if k == 1 {
        return vec![None];
    }
    (0..k)
        .map(|i| Some((i * row_groups / k..(i + 1) * row_groups / k).collect()))
        .collect()
}

/// Whether the `limit` newest hits found so far are final: at least `limit` visible traces, the
/// `limit`-th newest strictly newer than `newest_unread` (the newest span start of any block not
/// yet read). A block not read can then neither add a trace that ranks among them (its hits start
/// no later than `newest_unread`; strictly, since equal starts are ordered by trace id) nor raise
/// a trace's latest start past them. Blocks return at most their own `limit` newest traces, and
/// the ones read return the same as in a full search, so the answer is the full search's.
fn answer_is_settled(
    hits: &HashMap<TraceId, u64>,
    limit: usize,
    newest_unread: u64,
    erasing: impl Fn(&TraceId) -> bool,
) -> bool {
    // The limit-th newest is newer than the bound iff at least `limit` hits are.
    hits.iter()
        .filter(|(id, &t)| t > newest_unread && !erasing(id))
        .take(limit)
        .count()
        >= limit
}

#[async_trait::async_trait]
impl TraceReader for Store {
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        if self.is_erasing(tenant, &id) {
            return Ok(Vec::new());
        }
        let mut spans = self.inner.head.trace(tenant, &id);
        let blocks = self.blocks(tenant);
        // Owned futures: borrowed ones trip the compiler's Send inference inside async_trait.
        let reads = blocks.into_iter().map(|b| {
            let store = self.clone();
            async move { store.skip_unreadable(&b, b.read_trace(&id).await) }
        });
        let from_blocks: Vec<Vec<FlatSpan>> = stream::iter(reads)
            .buffer_unordered(4)
            .try_collect()
            .await?;
        spans.extend(from_blocks.into_iter().flatten());
        let mut seen = HashSet::new();
        // Expired spans stay invisible between expiry and their block's deletion.
        let cutoff = self.visible_from(tenant, &id);
        spans.retain(|s| s.span.start_time_unix_nano >= cutoff && seen.insert(dedup_key(s)));
        spans.sort_by_key(|s| s.span.start_time_unix_nano);
        Ok(spans)
    }

    async fn search(&self, tenant: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        self.search_blocks(tenant, q, false).await
    }

    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<u64, StoreError> {
        let start = start.max(self.retention_cutoff(tenant));
        let q = SearchQuery {
            start_unix_nano: Some(start),
            end_unix_nano: Some(end),
            ..Default::default()
        };
        let mut total = self.inner.head.search(tenant, &q)?.len() as u64;
        for b in self.blocks(tenant) {
            total += prorated_traces(&b.meta, start, end);
        }
        Ok(total)
    }

    async fn tag_names(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut names = std::collections::BTreeSet::new();
        for c in self.inner.head.tag_catalogs(tenant, range) {
            c.names_into(scope, &mut names);
        }
        for b in self.blocks(tenant) {
            if let Some(tags) = block_tags_in(&b, range) {
                tags.names_into(scope, &mut names);
            }
        }
        Ok(names.into_iter().collect())
    }

    async fn tag_values(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        key: &str,
        range: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<TagValue>, StoreError> {
        let mut values = std::collections::BTreeSet::new();
        for c in self.inner.head.tag_catalogs(tenant, range) {
            c.values_into(scope, key, &mut values);
        }
        for b in self.blocks(tenant) {
            if let Some(tags) = block_tags_in(&b, range) {
                tags.values_into(scope, key, &mut values);
            }
        }
        Ok(crate::tags::to_tag_values(values, limit))
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
        let start = start.max(self.retention_cutoff(tenant));
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
            b.scan(None, Some(&cols), |batch| {
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

/// A block whose data key is gone (a crypto-shredded tenant, a retired key version) answers as
/// empty, with a warning, instead of failing the whole query: the rest of the tenant's data stays
/// readable. (Start-up leaves such blocks out of the index; this covers keys destroyed while the
/// server runs.)
fn skip_unreadable<T: Default>(b: &Block, r: Result<T, StoreError>) -> Result<T, StoreError> {
    match r {
        Err(StoreError::KeyGone { .. }) => {
            tracing::warn!(block = %b.meta.block_id, tenant = %b.meta.tenant, "block skipped: its data key is gone");
            Ok(T::default())
        }
        other => other,
    }
}

/// Blocks being checked after a damaged read (by block id), so concurrent queries that hit the
/// same damage start one check, not one each.
static SUSPECTS: parking_lot::Mutex<Option<HashSet<String>>> = parking_lot::Mutex::new(None);

impl Store {
    /// [`skip_unreadable`], and a read that shows damage (a decoding error, not I/O) skips the
    /// block too — one damaged block does not fail every query that touches it — and has it
    /// checked in the background ([`Block::check_full`]) and quarantined if the check confirms
    /// the damage (removed from the block list, `clew_store_quarantined_blocks_total`).
    fn skip_unreadable<T: Default>(
        &self,
        b: &BlockRef,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match skip_unreadable(b, r) {
            Err(e) if self.shared().is_some() && shared_bucket::is_not_found(&e) => {
                self.forget_deleted_block(b);
                Ok(T::default())
            }
            Err(e) => {
                let e = block::as_damage(&b.meta.dir().join(block::DATA_FILE), e);
                if !block::is_damage(&e) {
                    return Err(e);
                }
                tracing::error!(block = %b.meta.block_id, tenant = %b.meta.tenant, error = %e, "block read shows damage; skipped, checking it");
                self.suspect_block(b.clone());
                Ok(T::default())
            }
            ok => ok,
        }
    }

    fn suspect_block(&self, b: BlockRef) {
        let id = b.meta.block_id.clone();
        if !SUSPECTS
            .lock()
            .get_or_insert_with(HashSet::new)
            .insert(id.clone())
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.quarantine_if_damaged(&b).await {
                tracing::warn!(block = %b.meta.block_id, error = %e, "could not check or quarantine a suspect block");
            }
            SUSPECTS.lock().get_or_insert_with(HashSet::new).remove(&id);
        });
    }

    /// Checks a block fully; if damaged, takes it out of the block list and moves it to the
    /// quarantine. Returns whether it was quarantined.
    pub async fn quarantine_if_damaged(&self, b: &BlockRef) -> Result<bool, StoreError> {
        // Under the compaction lock: no merge or tiering move holds the block meanwhile.
        let _c = self.inner.compaction.lock().await;
        let listed = |x: &BlockRef| x.meta.block_id == b.meta.block_id && x.tier() == b.tier();
        // Gone meanwhile (quarantined by another check, compacted, expired): nothing to do.
        if !self.inner.blocks.read().values().flatten().any(listed) {
            return Ok(false);
        }
        let damage = match b.check_full(None).await {
            Ok(()) => return Ok(false),
            Err(e) if block::is_damage(&e) => e,
            Err(e) => return Err(e),
        };
        let still_listed = {
            let mut blocks = self.inner.blocks.write();
            let mut found = false;
            for list in blocks.values_mut() {
                let before = list.len();
                list.retain(|x| !listed(x));
                found |= list.len() != before;
            }
            found
        };
        if !still_listed {
            return Ok(false);
        }
        self.refresh_block_metrics();
        let q = crate::quarantine::Quarantine::new(&self.inner.cfg.data_dir)
            .block(b.storage(), &b.meta.dir(), &damage)
            .await?;
        self.inner.metrics.quarantined_block(q.file.as_str());
        Ok(true)
    }
}

/// Legal holds, in the data dir (`holds.rs`).
pub const HOLDS_FILE: &str = "holds.json";

/// A duration in whole seconds as humantime text ("14days"), for audit records.
fn humantime_secs(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod search_parts_tests {
    use super::{search_parts, MIN_PART_ROW_GROUPS};

    #[test]
    fn parts_cover_every_row_group_once() {
        assert_eq!(search_parts(0, 2), vec![None]);
        assert_eq!(search_parts(2 * MIN_PART_ROW_GROUPS - 1, 2), vec![None]);
        assert_eq!(search_parts(1000, 1), vec![None]);
        for (groups, parallel, want) in [(32, 2, 2), (446, 2, 2), (446, 8, 8), (40, 8, 2)] {
            let parts = search_parts(groups, parallel);
            assert_eq!(parts.len(), want, "{groups} groups on {parallel} cores");
            let all: Vec<usize> = parts.into_iter().flat_map(|p| p.unwrap()).collect();
            assert_eq!(all, (0..groups).collect::<Vec<_>>());
        }
    }
}
