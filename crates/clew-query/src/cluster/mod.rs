//! Reading across processes (`clew serve --target querier`): a querier answers from the shared
//! bucket and from every ingester's spans that are not in the bucket yet (its head, and blocks
//! it wrote since the querier last listed the bucket).
//!
//! - [`read_router`]: the ingester's side, `POST /api/internal/v1/read` on its query port: one
//!   [`TraceReader`](clew_store::TraceReader) call per request ([`wire::ReadRequest`]), the
//!   answer as JSON, or a trace as OTLP protobuf (`TracesData`).
//! - [`RemoteReader`]: the querier's client of that endpoint, itself a `TraceReader`.
//! - [`Federated`]: one `TraceReader` over the querier's own store (the bucket) and the remote
//!   readers, merging and deduplicating their answers. An ingester that does not answer is left
//!   out (logged, counted in `clew_querier_ingester_calls_total{outcome="failed"}`): a killed ingester's spans
//!   are back once it restarts and replays its WAL.

mod federated;
mod metrics;
mod read_api;
mod remote;
pub mod wire;

pub use federated::Federated;
pub use metrics::QuerierMetrics;
pub use read_api::{read_router, READ_PATH};
pub use remote::RemoteReader;
