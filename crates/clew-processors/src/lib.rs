//! # clew-processors — the room where spans are cleaned and routed
//!
//! Pipeline processors in the OpenTelemetry Collector's shape, configured with its key names:
//! `redaction` (PII: key allow/blocklists, value patterns, mask / hash / drop / truncate, SQL
//! literals), `attributes` (insert, update, upsert, delete, hash, extract, from request metadata),
//! `baggage_policy` (attributes that came from baggage pass the same allowlist and pseudonymization
//! as `clew-propagation` applies at trust boundaries), `memory_limiter` (refuses data retryably above
//! a soft memory limit, as the Collector's does), and the `routing` connector (spans to
//! pipelines by tenant, resource, span or baggage attributes).
//!
//! May depend on: `clew-model`, `clew-pipeline`, `clew-propagation` (its baggage policy). Must not
//! depend on receivers, the store, exporters or any network code.

pub mod attributes;
pub mod baggage_policy;
pub mod condition;
pub mod memory_limiter;
pub mod redaction;
pub mod routing;

pub use attributes::{Attributes, AttributesConfig};
pub use baggage_policy::{BaggagePolicyConfig, BaggagePolicyMetrics, BaggagePolicyProcessor};
pub use condition::{Condition, ConditionConfig, ConfigError};
pub use memory_limiter::{
    MemoryHeadroom, MemoryLimiter, MemoryLimiterConfig, MemoryLimiterMetrics, PressureHook,
};
pub use routing::{Granularity, RoutingConfig, RoutingConnector, RoutingMetrics};
