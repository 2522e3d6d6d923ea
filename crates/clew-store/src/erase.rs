//! Erasure (GDPR "right to be forgotten"): removes whole traces of a tenant from the head, the WAL
//! and every block, on local disk and in the bucket.
//!
//! Crash safety comes from a journal and from the block swap compaction already uses:
//! 1. the request (tenant + the trace ids it resolved to) is written to `erase/{id}.json` and
//!    fsynced; from then on every read hides those traces (tombstones in memory);
//! 2. the head is flushed — the flush leaves the erased traces out of the blocks it writes — so the
//!    WAL segments that held them are deleted;
//! 3. every block that may hold one of the traces (bloom filter) is rewritten without them: the new
//!    block lists the old one in `compacted_from`, so after a crash at any point either the old or
//!    the new block is live (start-up deletes a replaced block), never both, never neither;
//! 4. the journal entry is removed. A journal entry found at start-up is run again from step 2:
//!    an erase can always be re-run.
//!
//! Traces under legal hold are not erased (they are reported); a tenant under hold refuses.

use crate::block::{self, BlockRef, BlockWriter};
use crate::schema::DecodeCache;
use crate::store::Store;
use crate::{SearchQuery, StoreError, TraceReader};
use clew_model::{FlatSpan, Tenant, TraceId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory of pending erasures, under the data dir.
pub const ERASE_DIR: &str = "erase";
/// Traces one query-based erase may resolve to.
pub const MAX_QUERY_TRACES: usize = 1_000_000;

/// What to erase.
#[derive(Debug, Clone)]
pub enum EraseTarget {
    Traces(Vec<TraceId>),
    /// Every trace with a span matching the query (attributes, service, operation…), any time.
    Query(SearchQuery),
}

/// What an erase did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EraseReport {
    pub id: String,
    /// Traces removed (found anywhere).
    pub traces: usize,
    /// Spans removed from blocks.
    pub block_spans: u64,
    /// Spans removed from the head (they never reached a block).
    pub head_spans: u64,
    pub blocks_rewritten: usize,
    pub blocks_deleted: usize,
    /// Trace ids (hex) left alone because of a legal hold.
    pub held: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error(
        "tenant {0} is under legal hold: nothing of it may be erased until the hold is released"
    )]
    TenantHeld(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    id: String,
    tenant: String,
    trace_ids: Vec<String>,
    actor: Option<String>,
    requested_unix_nano: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn remove_durably(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

impl Store {
    fn erase_dir(&self) -> PathBuf {
        self.inner.cfg.data_dir.join(ERASE_DIR)
    }

    /// Whether reads must hide this trace: an erase of it is in progress.
    pub(crate) fn is_erasing(&self, tenant: &Tenant, id: &TraceId) -> bool {
        let e = self.inner.erasing.read();
        !e.is_empty() && e.get(tenant).is_some_and(|s| s.contains(id))
    }

    /// Erases traces of `tenant`; see the module docs. `actor` is recorded in the journal and
    /// the audit event.
    pub async fn erase(
        &self,
        tenant: &Tenant,
        target: EraseTarget,
        actor: Option<&str>,
    ) -> Result<EraseReport, EraseError> {
        let holds = &self.inner.holds;
        if holds.is_tenant_held(tenant.as_str()) {
            return Err(EraseError::TenantHeld(tenant.to_string()));
        }
        let ids: Vec<TraceId> = match target {
            EraseTarget::Traces(ids) => ids,
            EraseTarget::Query(mut q) => {
                q.limit = MAX_QUERY_TRACES;
                self.search(tenant, &q)
                    .await?
                    .into_iter()
                    .map(|h| h.trace_id)
                    .collect()
            }
        };
        let mut report = EraseReport {
            id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        };
        let (held, ids): (Vec<TraceId>, Vec<TraceId>) = ids
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .partition(|id| holds.is_trace_held(tenant.as_str(), &id.0));
        report.held = held.iter().map(|id| hex::encode(id.0)).collect();
        report.held.sort();
        if ids.is_empty() {
            self.record_erase(tenant, &report, actor);
            return Ok(report);
        }
        let journal = Journal {
            id: report.id.clone(),
            tenant: tenant.to_string(),
            trace_ids: ids.iter().map(|id| hex::encode(id.0)).collect(),
            actor: actor.map(str::to_string),
            requested_unix_nano: self.inner.cfg.clock.now_unix_nano(),
        };
        let path = self.erase_dir().join(format!("{}.json", journal.id));
        let bytes =
            serde_json::to_vec_pretty(&journal).map_err(|e| StoreError::Internal(e.to_string()))?;
        write_durably(&path, &bytes)?;
        self.inner
            .erasing
            .write()
            .entry(tenant.clone())
            .or_default()
            .extend(ids.iter().copied());
        let result = self.run_erase(tenant, &ids, &mut report).await;
        if result.is_ok() {
            remove_durably(&path)?;
            self.forget_tombstones(tenant, &ids);
            self.record_erase(tenant, &report, actor);
        }
        result.map(|()| report).map_err(EraseError::from)
    }

    fn forget_tombstones(&self, tenant: &Tenant, ids: &[TraceId]) {
        let mut e = self.inner.erasing.write();
        if let Some(set) = e.get_mut(tenant) {
            for id in ids {
                set.remove(id);
            }
            if set.is_empty() {
                e.remove(tenant);
            }
        }
    }

    fn record_erase(&self, tenant: &Tenant, report: &EraseReport, actor: Option<&str>) {
        tracing::info!(tenant = %tenant, id = %report.id, traces = report.traces, block_spans = report.block_spans, head_spans = report.head_spans, rewritten = report.blocks_rewritten, "erase done");
        if let Some(events) = &self.inner.cfg.events {
            events.record(
                "erase",
                Some(tenant.as_str()),
                serde_json::json!({
                    "id": report.id,
                    "actor": actor,
                    "traces": report.traces,
                    "block_spans": report.block_spans,
                    "head_spans": report.head_spans,
                    "blocks_rewritten": report.blocks_rewritten,
                    "blocks_deleted": report.blocks_deleted,
                    "held": report.held,
                }),
            );
        }
    }

    /// Steps 2 and 3 (module docs). Idempotent: re-running after a crash finishes the job.
    async fn run_erase(
        &self,
        tenant: &Tenant,
        ids: &[TraceId],
        report: &mut EraseReport,
    ) -> Result<(), StoreError> {
        let wanted: HashSet<[u8; 16]> = ids.iter().map(|id| id.0).collect();
        let mut found: HashSet<[u8; 16]> = HashSet::new();
        // Head spans of the traces: counted now, left out of the blocks by the flush (the
        // tombstones are in place), and the WAL segments holding them are deleted by it.
        self.inner.head.for_each_span(tenant, |s| {
            if let Ok(id) = <[u8; 16]>::try_from(s.span.trace_id.as_slice()) {
                if wanted.contains(&id) {
                    report.head_spans += 1;
                    found.insert(id);
                }
            }
        });
        self.flush().await?;
        // No compaction or tiering move may swap blocks under us.
        let _c = self.inner.compaction.lock().await;
        let candidates: Vec<BlockRef> = self
            .blocks(tenant)
            .into_iter()
            .filter(|b| ids.iter().any(|id| b.may_contain(id)))
            .collect();
        for b in candidates {
            let mut spans: Vec<FlatSpan> = Vec::new();
            b.read_range(0, u64::MAX, &mut DecodeCache::default(), &mut spans)
                .await?;
            let before = spans.len();
            let keep: Vec<&FlatSpan> = spans
                .iter()
                .filter(|s| {
                    let id = <[u8; 16]>::try_from(s.span.trace_id.as_slice()).unwrap_or([0; 16]);
                    if wanted.contains(&id) {
                        found.insert(id);
                        false
                    } else {
                        true
                    }
                })
                .collect();
            let removed = before - keep.len();
            if removed == 0 {
                continue; // a bloom false positive
            }
            report.block_spans += removed as u64;
            let replacement = if keep.is_empty() {
                None
            } else {
                let mut sorted = keep;
                block::sort_for_block(&mut sorted);
                let mut w = BlockWriter::new(
                    tenant,
                    self.inner.cfg.rows_per_row_group,
                    sorted.len(),
                    block::COMPACTED_ZSTD_LEVEL,
                )?;
                w.push_sorted(&sorted)?;
                let nb = w.finish(b.storage(), vec![b.meta.block_id.clone()]).await?;
                nb.preload().await?;
                Some(Arc::new(nb))
            };
            if replacement.is_none() {
                // Nothing left: the block goes, meta first, so a crash leaves no half block.
                block::delete_block(b.storage(), &b.meta).await?;
            }
            {
                let mut blocks = self.inner.blocks.write();
                let list = blocks.entry(tenant.clone()).or_default();
                list.retain(|x| x.meta.block_id != b.meta.block_id);
                match &replacement {
                    Some(nb) => {
                        list.push(nb.clone());
                        report.blocks_rewritten += 1;
                    }
                    None => report.blocks_deleted += 1,
                }
            }
            if replacement.is_some() {
                // Readers may hold the old block; its files go a little later (start-up deletes
                // them if we crash first: the new block names it in `compacted_from`).
                self.delete_blocks_later(vec![b.clone()]);
            }
        }
        report.traces = found.len();
        self.refresh_block_metrics();
        Ok(())
    }

    /// Loads pending erasures at start-up: their traces are hidden at once, and the erase runs
    /// again in the background.
    pub(crate) fn resume_erasures(&self) -> Result<usize, StoreError> {
        let dir = self.erase_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut pending = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let j: Journal = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: path.display().to_string(),
                detail: e.to_string(),
            })?;
            let tenant = Tenant::new(&j.tenant).map_err(|e| StoreError::Corrupt {
                what: path.display().to_string(),
                detail: e.to_string(),
            })?;
            let ids: Vec<TraceId> = j
                .trace_ids
                .iter()
                .filter_map(|h| {
                    let mut out = [0u8; 16];
                    hex::decode_to_slice(h, &mut out).ok().map(|_| TraceId(out))
                })
                .collect();
            self.inner
                .erasing
                .write()
                .entry(tenant.clone())
                .or_default()
                .extend(ids.iter().copied());
            pending.push((path, j, tenant, ids));
        }
        let n = pending.len();
        for (path, j, tenant, ids) in pending {
            let store = self.clone();
            tokio::spawn(async move {
                let mut report = EraseReport {
                    id: j.id.clone(),
                    ..Default::default()
                };
                tracing::info!(tenant = %tenant, id = %j.id, traces = ids.len(), "resuming an interrupted erase");
                match store.run_erase(&tenant, &ids, &mut report).await {
                    Ok(()) => {
                        if let Err(e) = remove_durably(&path) {
                            tracing::error!(error = %e, "cannot remove a finished erase's journal");
                            return;
                        }
                        store.forget_tombstones(&tenant, &ids);
                        store.record_erase(&tenant, &report, j.actor.as_deref());
                    }
                    Err(e) => {
                        tracing::error!(tenant = %tenant, id = %j.id, error = %e, "resumed erase failed; its traces stay hidden and it runs again at the next start")
                    }
                }
            });
        }
        Ok(n)
    }
}
