//! # clew-sampling — the sampling room
//!
//! Pipeline processors that decide which traces are kept: consistent probability (head) sampling
//! per the OpenTelemetry tracestate spec, tail-based sampling with policies and bounded state, and
//! the Jaeger-compatible remote/adaptive sampling strategies served to SDKs.
//!
//! May depend on: `clew-model`, `clew-pipeline`, `clew-encryption` (the tail sampler's log is
//! sealed like the WAL). Must not depend on receivers or the store.

pub mod cache;
pub mod consistent;
pub mod durable;
pub mod dynamic;
pub mod policy;
pub mod remote;
pub mod sampler_log;
pub mod tail;

pub use consistent::{ProbabilisticSampler, ProbabilisticSamplerConfig};
pub use remote::{Adaptive, AdaptiveConfig, RootSpanCounter, StrategiesFile, StrategySource};
pub use tail::{PartitionState, TailCore, TailSampler, TailSamplingConfig, NUM_PARTITIONS};
