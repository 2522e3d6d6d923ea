//! Leases held in the bucket, so that when several processes share it (`--target compactor`, one
//! or more of them) each tenant-day is compacted, and each tenant's retention applied, by one
//! process at a time. No coordinator: a lease is an object `leases/{name}.json` written with a
//! conditional put — `If-None-Match: *` to create it, `If-Match: <etag>` to take over one that
//! expired or to give it back — so of two processes racing for it, the bucket lets exactly one
//! win.
//!
//! A lease expires `ttl` after it was taken; a holder that dies (kill -9) blocks its tenant-day
//! until then, never for good. A holder must finish its work well inside `ttl`: a merge that
//! outlived its lease could be repeated by another process (harmless — reads dedupe — but wasted).

use crate::clock::Clock;
use crate::StoreError;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Prefix of lease objects; the block loader only looks under `tenants/`.
pub const LEASES_PREFIX: &str = "leases";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct LeaseRecord {
    holder: String,
    /// Unix milliseconds after which anyone may take the lease.
    expires_unix_ms: u64,
}

/// Takes and gives back leases in one bucket, as `holder`.
#[derive(Clone)]
pub struct Leases {
    os: Arc<dyn ObjectStore>,
    holder: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

/// A lease this process holds; give it back with [`Leases::release`] when done (dropping it
/// keeps the lease until it expires).
#[derive(Debug)]
pub struct Lease {
    path: Path,
    version: UpdateVersion,
}

impl Leases {
    pub fn new(
        os: Arc<dyn ObjectStore>,
        holder: &str,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            os,
            holder: holder.to_string(),
            ttl,
            clock,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_unix_nano() / 1_000_000
    }

    fn path(name: &str) -> Path {
        Path::from(format!("{LEASES_PREFIX}/{name}.json"))
    }

    fn payload(&self, expires_unix_ms: u64) -> Result<PutPayload, StoreError> {
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires_unix_ms,
        };
        serde_json::to_vec(&record)
            .map(PutPayload::from)
            .map_err(|e| StoreError::Internal(format!("encoding a lease: {e}")))
    }

    /// Takes the lease `name` (a path below `leases/`, e.g. `compaction/acme/2026-12-02`) if no
    /// one else holds it: `None` when another holder's lease has not expired, or another process
    /// won the race for it.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let path = Self::path(name);
        let expires = self.now_ms() + self.ttl.as_millis() as u64;
        let created = self
            .os
            .put_opts(
                &path,
                self.payload(expires)?,
                PutOptions::from(PutMode::Create),
            )
            .await;
        match created {
            Ok(r) => {
                return Ok(Some(Lease {
                    path,
                    version: UpdateVersion {
                        e_tag: r.e_tag,
                        version: r.version,
                    },
                }))
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // It exists: take it over only if it expired (or is ours from before a restart).
        let current = match self.os.get(&path).await {
            Ok(r) => r,
            // Given back and deleted in between: the next round tries again.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = UpdateVersion {
            e_tag: current.meta.e_tag.clone(),
            version: current.meta.version.clone(),
        };
        let bytes = current.bytes().await?;
        // An unreadable record is treated as expired: better a repeated merge than a stuck day.
        if let Ok(record) = serde_json::from_slice::<LeaseRecord>(&bytes) {
            if record.holder != self.holder && record.expires_unix_ms > self.now_ms() {
                return Ok(None);
            }
        }
        match self
            .os
            .put_opts(
                &path,
                self.payload(expires)?,
                PutOptions::from(PutMode::Update(version)),
            )
            .await
        {
            Ok(r) => Ok(Some(Lease {
                path,
                version: UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                },
            })),
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease back (marks it expired, if no one took it over meanwhile), so another
    /// process need not wait for it to expire.
    pub async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        match self
            .os
            .put_opts(
                &lease.path,
                self.payload(0)?,
                PutOptions::from(PutMode::Update(lease.version)),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Expired and taken over: it is not ours to give back any more.
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
