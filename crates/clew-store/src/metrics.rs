//! The store's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    /// `local` or `remote` (the bucket).
    pub tier: String,
}

/// Which file of a quarantined block was damaged (`quarantine::DamagedFile`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone)]
pub struct StoreMetrics(Arc<Inner>);

struct Inner {
    fsync_seconds: Histogram,
    wal_bytes_written: Counter,
    wal_group_size: Histogram,
    spans_appended: Family<TenantLabel, Counter>,
    head_spans: Gauge,
    blocks: Family<TenantLabel, Gauge>,
    block_bytes: Family<TenantLabel, Gauge>,
    block_spans: Family<TenantLabel, Gauge>,
    flushes: Counter,
    flush_failures: Counter,
    compactions: Counter,
    compaction_failures: Counter,
    compactions_deferred: Counter,
    compaction_running: Gauge,
    duplicates_removed: Counter,
    tier_blocks: Family<TierLabel, Gauge>,
    tier_bytes: Family<TierLabel, Gauge>,
    tiering_moves: Counter,
    tiering_bytes: Counter,
    tiering_failures: Counter,
    unreadable_blocks: Family<TenantLabel, Gauge>,
    quarantined_blocks: Family<ReasonLabel, Counter>,
    wal_damaged_records: Counter,
    wal_damaged_bytes: Counter,
    wal_quarantined_segments: Counter,
    /// Blocks a search read (scanned), and blocks it skipped after reading some (newest-first
    /// early termination) or on metadata alone (time range, services, attribute filter).
    search_blocks_read: Counter,
    search_blocks_skipped: Counter,
    retention: crate::retention::RetentionMetrics,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self(Arc::new(Inner {
            fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            wal_bytes_written: Counter::default(),
            wal_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            spans_appended: Family::default(),
            head_spans: Gauge::default(),
            blocks: Family::default(),
            block_bytes: Family::default(),
            block_spans: Family::default(),
            flushes: Counter::default(),
            flush_failures: Counter::default(),
            compactions: Counter::default(),
            compaction_failures: Counter::default(),
            compactions_deferred: Counter::default(),
            compaction_running: Gauge::default(),
            duplicates_removed: Counter::default(),
            tier_blocks: Family::default(),
            tier_bytes: Family::default(),
            tiering_moves: Counter::default(),
            tiering_bytes: Counter::default(),
            tiering_failures: Counter::default(),
            unreadable_blocks: Family::default(),
            quarantined_blocks: Family::default(),
            wal_damaged_records: Counter::default(),
            wal_damaged_bytes: Counter::default(),
            wal_quarantined_segments: Counter::default(),
            search_blocks_read: Counter::default(),
            search_blocks_skipped: Counter::default(),
            retention: Default::default(),
        }))
    }
}

impl StoreMetrics {
    pub fn register(&self, r: &mut Registry) {
        let m = &self.0;
        r.register(
            "clew_store_search_blocks_read",
            "Blocks scanned by searches",
            m.search_blocks_read.clone(),
        );
        r.register(
            "clew_store_search_blocks_skipped",
            "Blocks a search did not scan: ruled out by block metadata (time range, services, \
             attribute-value filter) or by enough newer hits already found",
            m.search_blocks_skipped.clone(),
        );
        r.register(
            "clew_wal_fsync_seconds",
            "Latency of WAL group-commit write+fsync",
            m.fsync_seconds.clone(),
        );
        r.register(
            "clew_wal_written_bytes",
            "Bytes written to the WAL",
            m.wal_bytes_written.clone(),
        );
        r.register(
            "clew_wal_group_commit_requests",
            "Export requests per WAL group commit",
            m.wal_group_size.clone(),
        );
        r.register(
            "clew_store_spans_appended",
            "Spans made durable in the WAL",
            m.spans_appended.clone(),
        );
        r.register(
            "clew_head_spans",
            "Spans held in the in-memory head",
            m.head_spans.clone(),
        );
        r.register("clew_store_blocks", "Blocks per tenant", m.blocks.clone());
        r.register(
            "clew_store_block_bytes",
            "Bytes in blocks per tenant",
            m.block_bytes.clone(),
        );
        r.register(
            "clew_store_block_spans",
            "Spans in blocks per tenant",
            m.block_spans.clone(),
        );
        r.register(
            "clew_store_flushes",
            "Head flushes into blocks",
            m.flushes.clone(),
        );
        r.register(
            "clew_store_flush_failures",
            "Head flushes that failed (retried)",
            m.flush_failures.clone(),
        );
        r.register(
            "clew_compaction_runs",
            "Compactions completed",
            m.compactions.clone(),
        );
        r.register(
            "clew_compaction_failures",
            "Compactions that failed",
            m.compaction_failures.clone(),
        );
        r.register(
            "clew_compaction_deferred",
            "Merges put off or abandoned between slices because memory was short under the \
             memory limiter's soft limit (retried next round)",
            m.compactions_deferred.clone(),
        );
        r.register(
            "clew_compaction_running",
            "Merges in progress (0 or 1): a merge builds its output in memory for minutes before \
             any file changes",
            m.compaction_running.clone(),
        );
        r.register(
            "clew_compaction_duplicate_spans_removed",
            "Duplicate spans dropped by compaction",
            m.duplicates_removed.clone(),
        );
        r.register(
            "clew_store_tier_blocks",
            "Blocks per tier (local disk, remote bucket)",
            m.tier_blocks.clone(),
        );
        r.register(
            "clew_store_tier_block_bytes",
            "Bytes of block data per tier (local disk, remote bucket)",
            m.tier_bytes.clone(),
        );
        r.register(
            "clew_store_tiering_moves",
            "Blocks moved from local disk to the bucket",
            m.tiering_moves.clone(),
        );
        r.register(
            "clew_store_tiering_moved_bytes",
            "Bytes copied from local disk to the bucket by tiering",
            m.tiering_bytes.clone(),
        );
        r.register(
            "clew_store_tiering_failures",
            "Block moves to the bucket that failed (retried on the next pass)",
            m.tiering_failures.clone(),
        );
        r.register(
            "clew_store_unreadable_blocks",
            "Encrypted blocks skipped at start-up because their key is gone (crypto-shredded or retired)",
            m.unreadable_blocks.clone(),
        );
        r.register(
            "clew_store_quarantined_blocks",
            "Damaged blocks moved to the quarantine directory, by damaged file (meta, bloom, data, key, other)",
            m.quarantined_blocks.clone(),
        );
        r.register(
            "clew_store_wal_damaged_records",
            "Damaged WAL regions skipped or cut off at replay (torn tails excluded)",
            m.wal_damaged_records.clone(),
        );
        r.register(
            "clew_store_wal_damaged_bytes",
            "Bytes of damaged WAL regions skipped or cut off at replay (torn tails excluded)",
            m.wal_damaged_bytes.clone(),
        );
        r.register(
            "clew_store_wal_quarantined_segments",
            "WAL segments copied to the quarantine directory because of a damaged record",
            m.wal_quarantined_segments.clone(),
        );
        m.retention.register(r);
    }

    pub fn retention(&self) -> &crate::retention::RetentionMetrics {
        &self.0.retention
    }

    pub fn observe_fsync(&self, took: Duration, bytes: usize, requests: usize) {
        self.0.fsync_seconds.observe(took.as_secs_f64());
        self.0.wal_bytes_written.inc_by(bytes as u64);
        self.0.wal_group_size.observe(requests as f64);
    }

    pub fn spans_appended(&self, tenant: &str, n: u64) {
        self.0
            .spans_appended
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n);
    }

    pub fn set_head_spans(&self, n: usize) {
        self.0.head_spans.set(n as i64);
    }

    pub fn set_tenant_blocks(&self, tenant: &str, blocks: usize, bytes: u64, spans: u64) {
        let l = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.0.blocks.get_or_create(&l).set(blocks as i64);
        self.0.block_bytes.get_or_create(&l).set(bytes as i64);
        self.0.block_spans.get_or_create(&l).set(spans as i64);
    }

    /// Blocks of a tenant found unreadable at start-up (their encryption key is gone).
    pub fn set_unreadable_blocks(&self, tenant: &str, n: usize) {
        self.0
            .unreadable_blocks
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .set(n as i64);
    }

    /// A damaged block was quarantined; `reason` names the damaged file.
    pub fn quarantined_block(&self, reason: &str) {
        self.0
            .quarantined_blocks
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Quarantined blocks so far with this reason (tests, `/metrics` is the real reader).
    pub fn quarantined_blocks(&self, reason: &str) -> u64 {
        self.0
            .quarantined_blocks
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .get()
    }

    /// WAL damage found at replay: regions skipped or cut, their bytes, segments quarantined.
    pub fn wal_damage(&self, regions: u64, bytes: u64, segments: u64) {
        self.0.wal_damaged_records.inc_by(regions);
        self.0.wal_damaged_bytes.inc_by(bytes);
        self.0.wal_quarantined_segments.inc_by(segments);
    }

    pub fn set_tier_blocks(&self, tier: &str, blocks: usize, bytes: u64) {
        let l = TierLabel {
            tier: tier.to_string(),
        };
        self.0.tier_blocks.get_or_create(&l).set(blocks as i64);
        self.0.tier_bytes.get_or_create(&l).set(bytes as i64);
    }

    pub fn tiered(&self, ok: bool, bytes: u64) {
        if ok {
            self.0.tiering_moves.inc();
            self.0.tiering_bytes.inc_by(bytes);
        } else {
            self.0.tiering_failures.inc();
        }
    }

    pub fn searched_blocks(&self, read: u64, skipped: u64) {
        self.0.search_blocks_read.inc_by(read);
        self.0.search_blocks_skipped.inc_by(skipped);
    }

    /// Blocks scanned by searches so far (tests and diagnostics).
    pub fn search_blocks_read(&self) -> u64 {
        self.0.search_blocks_read.get()
    }

    pub fn search_blocks_skipped(&self) -> u64 {
        self.0.search_blocks_skipped.get()
    }

    pub fn flushed(&self, ok: bool) {
        if ok {
            self.0.flushes.inc()
        } else {
            self.0.flush_failures.inc()
        };
    }

    pub fn compacted(&self, ok: bool, duplicates: u64) {
        if ok {
            self.0.compactions.inc();
            self.0.duplicates_removed.inc_by(duplicates);
        } else {
            self.0.compaction_failures.inc();
        }
    }

    /// A merge put off (or abandoned between slices) for lack of memory under the limiter.
    pub fn compaction_deferred(&self) {
        self.0.compactions_deferred.inc();
    }

    /// Marks a merge as running until the returned guard is dropped.
    pub fn compaction_running(&self) -> CompactionRunning {
        self.0.compaction_running.inc();
        CompactionRunning(self.0.compaction_running.clone())
    }

    pub fn compactions_deferred(&self) -> u64 {
        self.0.compactions_deferred.get()
    }
}

/// Holds `clew_compaction_running` up while a merge runs (whatever way it ends).
pub struct CompactionRunning(Gauge);

impl Drop for CompactionRunning {
    fn drop(&mut self) {
        self.0.dec();
    }
}
