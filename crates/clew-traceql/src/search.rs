//! [`search`]: a TraceQL search over any [`TraceReader`].

use crate::{
    compile, plan, trace_match, SearchRequest, SearchResult, TraceqlError, DEFAULT_LIMIT,
    DEFAULT_SPANS_PER_SPANSET, FETCH_CONCURRENCY, MAX_INSPECTED_TRACES,
};
use clew_model::{Tenant, TraceId};
use clew_store::{SearchQuery, TraceHit, TraceReader};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};

/// Runs a TraceQL search over `reader`.
///
/// The query's plan ([`plan::plan`]) gives one store search per disjunct; their hits are merged
/// newest first and fetched, [`FETCH_CONCURRENCY`] at a time, then evaluated exactly. Candidates
/// come in growing batches (4× each round) until `limit` traces match, the store has no more, or
/// [`MAX_INSPECTED_TRACES`] traces were looked at. Results are ordered newest first by trace start.
pub async fn search(
    reader: &dyn TraceReader,
    tenant: &Tenant,
    req: &SearchRequest,
) -> Result<SearchResult, TraceqlError> {
    let compiled = compile(&req.query)?;
    let limit = if req.limit == 0 {
        DEFAULT_LIMIT
    } else {
        req.limit
    };
    let spss = if req.spans_per_spanset == 0 {
        DEFAULT_SPANS_PER_SPANSET
    } else {
        req.spans_per_spanset
    };
    let searches = plan::plan(&compiled.query);
    let mut result = SearchResult::default();
    let mut inspected: HashSet<TraceId> = HashSet::new();
    let mut batch = (limit.saturating_mul(2)).clamp(64, MAX_INSPECTED_TRACES);
    while !searches.is_empty() {
        let mut more_in_store = false;
        let mut newest: HashMap<TraceId, u64> = HashMap::new();
        for conditions in &searches {
            let q = SearchQuery {
                conditions: conditions.clone(),
                start_unix_nano: req.start_unix_nano,
                end_unix_nano: req.end_unix_nano,
                limit: batch,
                ..Default::default()
            };
            let hits = reader.search(tenant, &q).await?;
            more_in_store |= hits.len() >= batch;
            for h in hits {
                let e = newest.entry(h.trace_id).or_insert(h.start_unix_nano);
                *e = (*e).max(h.start_unix_nano);
            }
        }
        let mut candidates: Vec<TraceHit> = newest
            .into_iter()
            .filter(|(id, _)| !inspected.contains(id))
            .map(|(trace_id, start_unix_nano)| TraceHit {
                trace_id,
                start_unix_nano,
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.start_unix_nano
                .cmp(&a.start_unix_nano)
                .then(a.trace_id.0.cmp(&b.trace_id.0))
        });
        candidates.truncate(MAX_INSPECTED_TRACES.saturating_sub(inspected.len()));
        let mut fetched =
            futures::stream::iter(candidates.into_iter().map(|hit| async move {
                (hit.trace_id, reader.trace(tenant, hit.trace_id).await)
            }))
            .buffered(FETCH_CONCURRENCY);
        while let Some((trace_id, spans)) = fetched.next().await {
            let spans = spans?;
            inspected.insert(trace_id);
            result.inspected_spans += spans.len() as u64;
            let sets = compiled.evaluate(&spans);
            if !sets.is_empty() {
                result
                    .traces
                    .push(trace_match(&compiled, trace_id, &spans, &sets, spss));
                if result.traces.len() >= limit {
                    break;
                }
            }
        }
        drop(fetched);
        if result.traces.len() >= limit || !more_in_store || inspected.len() >= MAX_INSPECTED_TRACES
        {
            break;
        }
        batch = batch.saturating_mul(4).min(MAX_INSPECTED_TRACES);
    }
    result.inspected_traces = inspected.len() as u64;
    result.traces.sort_by(|a, b| {
        b.start_unix_nano
            .cmp(&a.start_unix_nano)
            .then(a.trace_id.0.cmp(&b.trace_id.0))
    });
    result.traces.truncate(limit);
    Ok(result)
}
