//! The consumer trait: every stage downstream of a receiver (pipeline, store, exporters) is a
//! [`SpanSink`]. A sink returns `Ok` only when it has taken responsibility for the batch; for the
//! store that means the batch is fsynced to the write-ahead log.

use crate::SpanBatch;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum SinkError {
    /// Temporary: the client should retry after the hint (gRPC Unavailable, HTTP 503/429).
    #[error("overloaded, retry after {retry_after:?}: {reason}")]
    Overloaded {
        retry_after: Duration,
        reason: String,
    },
    /// Shutting down; the client should retry elsewhere or later.
    #[error("shutting down")]
    ShuttingDown,
    /// Permanent problem with the data (gRPC InvalidArgument, HTTP 400).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// Server-side failure (disk full, I/O error). Retryable from the client's point of view.
    #[error("internal error: {0}")]
    Internal(String),
}

#[async_trait::async_trait]
pub trait SpanSink: Send + Sync + 'static {
    /// Consumes one batch. Returns once the batch is durable (store) or handed on (processors).
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError>;
}

#[async_trait::async_trait]
impl<T: SpanSink + ?Sized> SpanSink for std::sync::Arc<T> {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        (**self).consume(batch).await
    }
}
