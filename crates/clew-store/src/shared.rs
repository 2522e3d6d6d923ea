//! A bucket shared by several processes (`clew serve --target ingester|querier|compactor`):
//! what each role does with the blocks in it, and what none of them may do any more.
//!
//! - **Ingesters** write blocks into the bucket and never read it: their index holds only the
//!   blocks they wrote in the last [`SharedBucket::recent_blocks_for`], so that, with their head,
//!   they answer for everything a querier may not have listed yet.
//! - **Queriers** list the bucket every [`SharedBucket::blocklist_poll`] ([`Store::refresh_blocklist`])
//!   and read what is there; they write nothing.
//! - **Compactors** list it too, and merge and expire blocks under leases ([`crate::lease`]), one
//!   tenant-day (compaction) or tenant (retention) at a time, so two compactors never do the
//!   same work.
//!
//! None of them removes what looks unfinished at start-up (another process may be writing it);
//! blocks that a compacted block replaces are hidden at once and deleted only by a compactor.

use crate::block::{Block, BlockRef};
use crate::lease::Leases;
use crate::storage::Tier;
use crate::store::Store;
use crate::StoreError;
use clew_model::Tenant;
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What this process is, among those sharing the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRole {
    Ingester,
    Querier,
    Compactor,
}

impl SharedRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedRole::Ingester => "ingester",
            SharedRole::Querier => "querier",
            SharedRole::Compactor => "compactor",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SharedBucket {
    pub role: SharedRole,
    /// This process's name in leases and logs (unique among the processes sharing the bucket).
    pub node: String,
    /// Queriers and compactors list the bucket this often (Tempo's `blocklist_poll`).
    pub blocklist_poll: Duration,
    /// An ingester keeps serving a block it wrote this long, so a querier that has not listed
    /// it yet still finds its spans (a few polls).
    pub recent_blocks_for: Duration,
    /// A lease lasts this long unless given back (a compactor killed mid-merge blocks its
    /// tenant-day no longer than this).
    pub lease_ttl: Duration,
}

impl SharedBucket {
    pub fn new(role: SharedRole, node: impl Into<String>) -> Self {
        Self {
            role,
            node: node.into(),
            blocklist_poll: Duration::from_secs(10),
            recent_blocks_for: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(600),
        }
    }

    /// Whether this process reads the bucket's blocks (at start-up and every poll).
    pub fn lists_blocks(&self) -> bool {
        self.role != SharedRole::Ingester
    }
}

/// What a [`Store::refresh_blocklist`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlocklistChanges {
    pub added: usize,
    /// Gone from the bucket, or replaced by a compacted block.
    pub removed: usize,
}

impl Store {
    pub(crate) fn shared(&self) -> Option<&SharedBucket> {
        self.inner.cfg.shared.as_ref()
    }

    pub(crate) fn is_shared_role(&self, role: SharedRole) -> bool {
        self.shared().is_some_and(|s| s.role == role)
    }

    /// Leases in the bucket, for a compactor sharing it.
    pub(crate) fn leases(&self) -> Option<Leases> {
        let shared = self.shared().filter(|s| s.role == SharedRole::Compactor)?;
        let remote = self.inner.remote.as_ref()?;
        Some(Leases::new(
            remote.os.clone(),
            &shared.node,
            shared.lease_ttl,
            self.inner.cfg.clock.clone(),
        ))
    }

    /// Lists the bucket and brings the block index up to date: blocks other processes wrote are
    /// added, blocks deleted or replaced by a compacted block are removed. A compactor also
    /// deletes replaced blocks (after `block_delete_delay`), which covers a compactor that died
    /// between writing a merge and deleting its inputs.
    pub async fn refresh_blocklist(&self) -> Result<BlocklistChanges, StoreError> {
        let _c = self.inner.compaction.lock().await;
        self.refresh_blocklist_locked().await
    }

    /// [`Store::refresh_blocklist`] with the compaction lock already held.
    pub(crate) async fn refresh_blocklist_locked(&self) -> Result<BlocklistChanges, StoreError> {
        let Some(remote) = self.inner.remote.clone() else {
            return Ok(BlocklistChanges::default());
        };
        let mut dirs: HashMap<String, Vec<object_store::path::Path>> = HashMap::new();
        for (path, _) in remote.list_all().await? {
            if let Some((dir, _)) = path.as_ref().rsplit_once('/') {
                if dir.starts_with("tenants/") {
                    dirs.entry(dir.to_string()).or_default().push(path.clone());
                }
            }
        }
        let complete: HashMap<String, bool> = dirs
            .iter()
            .filter_map(|(dir, files)| {
                let (has_meta, has_key) = crate::sealed_block::listed_files(files);
                has_meta.then(|| (dir.clone(), has_key))
            })
            .collect();
        let known: HashMap<String, BlockRef> = self
            .inner
            .blocks
            .read()
            .values()
            .flatten()
            .filter(|b| b.tier() == Tier::Remote)
            .map(|b| (b.meta.dir().to_string(), b.clone()))
            .collect();
        let unknown: Vec<(object_store::path::Path, bool)> = complete
            .iter()
            .filter(|(dir, _)| !known.contains_key(*dir))
            .map(|(dir, has_key)| (object_store::path::Path::from(dir.as_str()), *has_key))
            .collect();
        let loaded: Vec<_> = stream::iter(unknown)
            .map(|(dir, has_key)| {
                let remote = remote.clone();
                async move {
                    let r = Block::load_listed(&remote, &dir, Some(has_key)).await;
                    (dir, r)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut new_blocks = Vec::new();
        for (dir, r) in loaded {
            match r {
                Ok(b) => new_blocks.push(Arc::new(b)),
                // Deleted between the listing and the read (a compactor's delayed delete).
                Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) => {}
                Err(e) => {
                    tracing::warn!(block = %dir, error = %e, "skipping a block of the shared bucket that cannot be loaded; the next poll tries again");
                }
            }
        }
        let replaced: HashSet<String> = known
            .values()
            .filter(|b| complete.contains_key(&b.meta.dir().to_string()))
            .chain(new_blocks.iter())
            .flat_map(|b| b.meta.compacted_from.iter().cloned())
            .collect();
        let mut changes = BlocklistChanges::default();
        let mut doomed = Vec::new();
        {
            let mut index = self.inner.blocks.write();
            for list in index.values_mut() {
                list.retain(|b| {
                    if b.tier() != Tier::Remote {
                        return true;
                    }
                    let listed = complete.contains_key(&b.meta.dir().to_string());
                    let keep = listed && !replaced.contains(&b.meta.block_id);
                    if !keep {
                        changes.removed += 1;
                        if listed {
                            doomed.push(b.clone());
                        }
                    }
                    keep
                });
            }
            for b in new_blocks {
                if replaced.contains(&b.meta.block_id) {
                    doomed.push(b);
                    continue;
                }
                let Ok(tenant) = Tenant::new(&b.meta.tenant) else {
                    continue;
                };
                self.inner.catalog.add(
                    &tenant,
                    b.meta
                        .operations
                        .iter()
                        .map(|o| (o.service.as_str(), o.name.as_str(), o.kind)),
                );
                index.entry(tenant).or_default().push(b);
                changes.added += 1;
            }
        }
        remote.prune_cache(&complete.keys().cloned().collect());
        if self.is_shared_role(SharedRole::Compactor) && !doomed.is_empty() {
            self.delete_blocks_later(doomed);
        }
        if changes != BlocklistChanges::default() {
            tracing::debug!(
                added = changes.added,
                removed = changes.removed,
                "block list refreshed from the shared bucket"
            );
            self.refresh_block_metrics();
        }
        Ok(changes)
    }

    /// An ingester's index holds only the blocks it wrote recently: forget the others (their
    /// files stay: queriers read them from the bucket).
    pub(crate) fn forget_old_own_blocks(&self) {
        let Some(shared) = self.shared().filter(|s| s.role == SharedRole::Ingester) else {
            return;
        };
        let now = self.inner.cfg.clock.now_unix_nano();
        let keep_for = shared.recent_blocks_for.as_nanos() as u64;
        let mut forgot = 0;
        let mut written_at = self.inner.written_at.lock();
        for list in self.inner.blocks.write().values_mut() {
            list.retain(|b| {
                let keep = written_at
                    .get(&b.meta.block_id)
                    .is_some_and(|&t| now.saturating_sub(t) < keep_for);
                if !keep {
                    written_at.remove(&b.meta.block_id);
                    forgot += 1;
                }
                keep
            });
        }
        drop(written_at);
        if forgot > 0 {
            self.refresh_block_metrics();
        }
    }

    /// A block a querier listed was deleted since (a compactor's delayed delete after a merge it
    /// has not seen yet): drop it from the index; the next poll brings its replacement.
    pub(crate) fn forget_deleted_block(&self, b: &BlockRef) {
        tracing::info!(block = %b.meta.block_id, tenant = %b.meta.tenant, "block deleted from the shared bucket since the last poll; forgotten");
        if let Ok(tenant) = Tenant::new(&b.meta.tenant) {
            if let Some(list) = self.inner.blocks.write().get_mut(&tenant) {
                list.retain(|x| x.meta.block_id != b.meta.block_id);
            }
        }
    }
}

/// Whether an error is a block file that is not there (any more).
pub(crate) fn is_not_found(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::ObjectStore(object_store::Error::NotFound { .. })
    )
}

/// The name of the lease of one tenant-day's compaction.
pub(crate) fn compaction_lease(tenant: &Tenant, day: &str) -> String {
    format!("compaction/{}/{day}", tenant.as_str())
}

/// The name of the lease of one tenant's retention pass.
pub(crate) fn retention_lease(tenant: &Tenant) -> String {
    format!("retention/{}", tenant.as_str())
}

/// Blocks of one tenant-day and tier in the index (what a compactor plans a merge from).
pub(crate) fn group_of(blocks: &[BlockRef], day: &str, tier: Tier) -> Vec<BlockRef> {
    blocks
        .iter()
        .filter(|b| b.meta.day == day && b.tier() == tier)
        .cloned()
        .collect()
}
