//! # clew-store — the storage room
//!
//! Durable, tenant-partitioned trace storage: a write-ahead log with group commit (an append
//! returns only once fsynced), an in-memory head that answers queries for fresh spans, immutable
//! Parquet blocks written through `object_store` with a per-block trace-id bloom index, and a
//! compactor that merges small blocks and removes duplicate spans.
//!
//! May depend on: `clew-model`, storage and columnar crates. Must not depend on HTTP/gRPC, receivers
//! or the query room: the server wires the store up; the store knows nothing of protocols.

pub mod api;

pub use api::{
    AttrScope, CompareOp, DependencyLink, Operation, SearchQuery, SpanCondition, SpanField,
    TagValue, TraceHit, TraceReader,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use memory_budget::MemoryBudget;
pub use metrics::StoreMetrics;
pub use retention::{RetentionPolicy, DEFAULT_RETENTION};
pub use sealed_block::RewrapReport;
pub use shared::{BlocklistChanges, SharedBucket, SharedRole};
pub use store::{CompactionConfig, OpenReport, Store, StoreConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("corrupt data in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("the store is overloaded: {0}")]
    Overloaded(String),
    /// No data key for a WAL record (the key provider is unreachable): retryable; nothing was
    /// written, in plaintext or otherwise.
    #[error("encryption key unavailable: {0}")]
    KeyUnavailable(String),
    /// A block's data key cannot be unwrapped because its key-encryption key is gone (a retired
    /// version or a crypto-shredded tenant): the block is unreadable for good.
    #[error(
        "block {block} of tenant {tenant:?} is unreadable: its encryption key is gone ({reason})"
    )]
    KeyGone {
        block: String,
        tenant: String,
        reason: String,
    },
    /// The query itself is wrong (a bad regular expression): the caller's fault, HTTP 400.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A start-up problem with the configuration or what it points at (a bucket, credentials):
    /// names the key and the fix.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
}

pub mod attr_filter;
mod background;
pub mod block;
pub mod bloom;
pub mod catalog;
pub mod clock;
pub mod column_filter;
mod compaction_plan;
pub mod dir_lock;
pub mod disk_guard;
pub mod erase;
pub mod file_reader;
pub mod fsck;
pub mod head;
pub mod holds;
pub mod lease;
pub mod matcher;
pub mod memory_budget;
pub mod metrics;
pub mod quarantine;
pub mod retention;
pub mod schema;
pub mod sealed_block;
pub mod shared;
pub mod storage;
pub mod store;
pub mod tags;
mod trim;
pub mod wal;
