//! What both APIs share: the router state, the error type their handlers return (each API renders
//! it in its own JSON shape), tenant resolution and fetching the traces behind search hits.

use crate::tenant::tenant_from_headers;
use axum::http::{HeaderMap, StatusCode};
use clew_model::{FlatSpan, Tenant, TraceId};
use clew_store::{StoreError, TraceReader};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// How many traces of a search result are fetched from the store at once.
const FETCH_CONCURRENCY: usize = 8;

/// Upper bound on traces per search, whatever the client asks for: each one is fetched whole.
pub const MAX_TRACES_PER_SEARCH: usize = 1500;

#[derive(Clone)]
pub(crate) struct AppState {
    pub reader: Arc<dyn TraceReader>,
    pub tenant_header: Arc<str>,
}

impl AppState {
    pub fn tenant(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        tenant_from_headers(headers, &self.tenant_header)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

#[derive(Debug, Error)]
pub enum ApiError {
    /// A bad request; the message names the offending parameter or header.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            // A query the store refuses as written (a bad regular expression) is the caller's.
            ApiError::Store(StoreError::InvalidQuery(_)) => StatusCode::BAD_REQUEST,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs server-side failures; client errors are the client's business.
    pub fn log(&self) {
        if let ApiError::Store(e) = self {
            if matches!(e, StoreError::InvalidQuery(_)) {
                return;
            }
            tracing::error!(error = %e, "query failed in the store");
        }
    }
}

pub(crate) fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Fetches whole traces for `ids`, keeping their order; ids whose trace has meanwhile vanished
/// (e.g. removed by retention between search and fetch) are skipped.
pub(crate) async fn fetch_traces(
    reader: &dyn TraceReader,
    tenant: &Tenant,
    ids: impl IntoIterator<Item = TraceId>,
) -> Result<Vec<Vec<FlatSpan>>, StoreError> {
    let traces: Vec<Vec<FlatSpan>> = futures::stream::iter(ids)
        .map(|id| reader.trace(tenant, id))
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(traces.into_iter().filter(|t| !t.is_empty()).collect())
}
