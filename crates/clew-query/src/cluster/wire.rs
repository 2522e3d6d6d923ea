//! What crosses the wire between a querier and an ingester: one request per
//! [`TraceReader`](clew_store::TraceReader) method. JSON, versioned by the path
//! (`/api/internal/v1/`).

use clew_store::{AttrScope, SearchQuery};
use serde::{Deserialize, Serialize};

/// Content type of a trace answer: OTLP `TracesData` in protobuf.
pub const PROTOBUF: &str = "application/x-protobuf";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ReadRequest {
    /// Answered with OTLP `TracesData` (protobuf).
    Trace { trace_id: String },
    /// Answered with `Vec<Hit>`.
    Search { query: SearchQuery },
    /// Answered with a number.
    EstimateTraceCount { start: u64, end: u64 },
    /// Answered with `Vec<String>`.
    Services,
    /// Answered with `Vec<Operation>`.
    Operations { service: Option<String> },
    /// Answered with `Vec<DependencyLink>`.
    Dependencies { start: u64, end: u64 },
    /// Answered with `Vec<String>`.
    TagNames {
        scope: AttrScope,
        range: Option<(u64, u64)>,
    },
    /// Answered with `Vec<TagValue>`.
    TagValues {
        scope: AttrScope,
        key: String,
        range: Option<(u64, u64)>,
        limit: usize,
    },
}

/// A search hit: the trace id in lowercase hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hit {
    pub trace_id: String,
    pub start_unix_nano: u64,
}
