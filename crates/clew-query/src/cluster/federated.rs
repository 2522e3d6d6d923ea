//! One [`TraceReader`] over several: the querier's store (the bucket) and the ingesters.

use clew_model::{FlatSpan, Tenant, TraceId};
use clew_store::{
    AttrScope, DependencyLink, Operation, SearchQuery, StoreError, TagValue, TraceHit, TraceReader,
};
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

/// Answers from `local` (must answer) and `remotes` (best effort: one that fails is left out,
/// with a warning).
pub struct Federated {
    local: Arc<dyn TraceReader>,
    remotes: Vec<(String, Arc<dyn TraceReader>)>,
    metrics: super::QuerierMetrics,
}

impl Federated {
    /// `remotes`: (name for logs, reader).
    pub fn new(
        local: Arc<dyn TraceReader>,
        remotes: Vec<(String, Arc<dyn TraceReader>)>,
        metrics: super::QuerierMetrics,
    ) -> Self {
        Self {
            local,
            remotes,
            metrics,
        }
    }

    /// Runs `call` on every reader at once: the local answer (or its error), then the remote
    /// answers that came.
    async fn all<'a, T, F, Fut>(&'a self, call: F) -> Result<Vec<T>, StoreError>
    where
        F: Fn(&'a dyn TraceReader) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        let local = call(self.local.as_ref());
        let remotes = join_all(self.remotes.iter().map(|(_, r)| call(r.as_ref())));
        let (local, remotes) = futures::join!(local, remotes);
        let mut answers = vec![local?];
        for ((name, _), r) in self.remotes.iter().zip(remotes) {
            self.metrics.count(name, r.is_ok());
            match r {
                Ok(a) => answers.push(a),
                // The query is wrong everywhere: say so rather than answer without it.
                Err(e @ StoreError::InvalidQuery(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(ingester = %name, error = %e, "an ingester did not answer; its unflushed spans are left out of this answer");
                }
            }
        }
        Ok(answers)
    }
}

#[async_trait::async_trait]
impl TraceReader for Federated {
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        let answers = self.all(|r| r.trace(tenant, id)).await?;
        let mut seen = HashSet::new();
        let mut spans: Vec<FlatSpan> = answers
            .into_iter()
            .flatten()
            .filter(|s| seen.insert(clew_store::store::dedup_key(s)))
            .collect();
        spans.sort_by_key(|s| s.span.start_time_unix_nano);
        Ok(spans)
    }

    async fn search(&self, tenant: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        let answers = self.all(|r| r.search(tenant, q)).await?;
        // A trace split over several readers: its newest matching span counts.
        let mut newest: HashMap<TraceId, u64> = HashMap::new();
        for hit in answers.into_iter().flatten() {
            let t = newest.entry(hit.trace_id).or_default();
            *t = (*t).max(hit.start_unix_nano);
        }
        let mut hits: Vec<TraceHit> = newest
            .into_iter()
            .map(|(trace_id, start_unix_nano)| TraceHit {
                trace_id,
                start_unix_nano,
            })
            .collect();
        hits.sort_by(|a, b| {
            b.start_unix_nano
                .cmp(&a.start_unix_nano)
                .then(a.trace_id.0.cmp(&b.trace_id.0))
        });
        hits.truncate(q.effective_limit());
        Ok(hits)
    }

    /// The sum: a trace split between an ingester and the bucket counts twice (an estimate).
    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<u64, StoreError> {
        let answers = self
            .all(|r| r.estimate_trace_count(tenant, start, end))
            .await?;
        Ok(answers.into_iter().sum())
    }

    async fn services(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        let answers = self.all(|r| r.services(tenant)).await?;
        Ok(union(answers))
    }

    async fn operations(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError> {
        let answers = self.all(|r| r.operations(tenant, service)).await?;
        Ok(union(answers))
    }

    /// Edges summed per (parent, child). A call whose two sides are in different readers (a
    /// client span flushed, its server span still in a head) is not seen by either.
    async fn dependencies(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        let answers = self.all(|r| r.dependencies(tenant, start, end)).await?;
        let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
        for link in answers.into_iter().flatten() {
            *calls.entry((link.parent, link.child)).or_default() += link.call_count;
        }
        Ok(calls
            .into_iter()
            .map(|((parent, child), call_count)| DependencyLink {
                parent,
                child,
                call_count,
            })
            .collect())
    }

    async fn tag_names(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<String>, StoreError> {
        let answers = self.all(|r| r.tag_names(tenant, scope, range)).await?;
        Ok(union(answers))
    }

    async fn tag_values(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        key: &str,
        range: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<TagValue>, StoreError> {
        let answers = self
            .all(|r| r.tag_values(tenant, scope, key, range, limit))
            .await?;
        let mut values: Vec<TagValue> = Vec::new();
        for v in answers.into_iter().flatten() {
            if !values.contains(&v) {
                values.push(v);
            }
        }
        if limit > 0 {
            values.truncate(limit);
        }
        Ok(values)
    }
}

fn union<T: Ord>(answers: Vec<Vec<T>>) -> Vec<T> {
    answers
        .into_iter()
        .flatten()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .collect()
}
