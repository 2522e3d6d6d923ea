//! # clew-doctor — the doctor room
//!
//! Finds what silently breaks traces: orphaned spans, context lost between or inside services,
//! clock skew; computes the critical path; and keeps the service graph and RED metrics, fed from
//! every span before any sampling decision.
//!
//! May depend on: `clew-model`, `clew-pipeline`'s `Processor` trait, `clew-store`'s read API
//! (`TraceReader`), `clew-query`'s tenant helper. Must not write to the store.

use clew_model::{SinkError, SpanBatch};
use clew_pipeline::{ProcessOutcome, Processor};
use clew_store::TraceReader;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// HTTP API for the UI under `/api/doctor/...`; tenant from `tenant_header`.
pub fn router(_reader: Arc<dyn TraceReader>, _tenant_header: &str) -> axum::Router {
    axum::Router::new()
}

/// Service graph and span (RED) metrics, computed from every span that enters the pipeline.
/// Runs first in the pipeline, so it sees spans before sampling drops them; forwards everything.
pub struct ServiceGraph {}

impl ServiceGraph {
    pub fn new(_registry: &mut Registry) -> Self {
        Self {}
    }
}

impl Processor for ServiceGraph {
    fn name(&self) -> &str {
        "service_graph"
    }
    fn process(&self, batch: SpanBatch) -> Result<ProcessOutcome, SinkError> {
        Ok(ProcessOutcome::Forward(batch))
    }
}
