//! # clew-query — the query room
//!
//! HTTP query APIs over a [`clew_store::TraceReader`]: the Jaeger query API (`/api/...`, Jaeger JSON)
//! and Jaeger api_v3 (`/api/v3/...`, OTLP JSON), plus `/api/ui/traces/{id}`, the compact trace shape
//! the web UI loads ([`ui_json`]); and Grafana Tempo's HTTP API ([`tempo`], [`tempo_router`]:
//! search through `clew-traceql`, trace by id as Tempo's protobuf, tag names and values). Tenant
//! from the configured header. Also the plain-text trace rendering the CLI prints.
//!
//! May depend on: `clew-model`, `clew-store`'s read API, `clew-traceql`, HTTP crates. Must not
//! write to the store or know about receivers.

mod api_v3;
pub mod cluster;
mod common;
mod jaeger_api;
pub mod jaeger_json;
pub mod params;
pub mod tempo;
pub mod tenant;
pub mod text;
pub mod ui_json;

pub use common::{ApiError, MAX_TRACES_PER_SEARCH};
// Public for the parameter fuzz target (crates/clew/fuzz): what `/api/traces` and
// `/api/dependencies` do with their query strings, without a server.
pub use jaeger_api::{parse_lookback_millis_or_duration, parse_search as parse_jaeger_search};
pub use tenant::DEFAULT_TENANT_HEADER;
pub use text::{format_duration_nanos, render_trace_tree};

use axum::http::HeaderName;
use clew_store::TraceReader;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// Request header naming the tenant; absent → the default tenant.
    pub tenant_header: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            tenant_header: DEFAULT_TENANT_HEADER.to_string(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("tenant header {0:?} is not a valid HTTP header name")]
    BadTenantHeader(String),
}

impl QueryConfig {
    /// Checks the configuration; the binary should call this at startup, because [`router`] cannot
    /// fail and an invalid header name would simply never match (every request → default tenant).
    pub fn validate(&self) -> Result<(), ConfigError> {
        HeaderName::from_bytes(self.tenant_header.as_bytes())
            .map(|_| ())
            .map_err(|_| ConfigError::BadTenantHeader(self.tenant_header.clone()))
    }
}

/// The query HTTP API: Jaeger `/api/...` and api_v3 `/api/v3/...`, every store call scoped to the
/// request's tenant.
pub fn router(reader: Arc<dyn TraceReader>, cfg: QueryConfig) -> axum::Router {
    if let Err(e) = cfg.validate() {
        tracing::error!(error = %e, "tenant header will never match; all requests use the default tenant");
    }
    let state = common::AppState {
        reader,
        tenant_header: Arc::from(cfg.tenant_header.as_str()),
    };
    jaeger_api::routes()
        .merge(api_v3::routes())
        .with_state(state)
}

/// Grafana Tempo's HTTP API ([`tempo`]): served on its own listener (`:3200`) and under `/tempo` on
/// the query port; every store call scoped to the request's tenant.
pub fn tempo_router(reader: Arc<dyn TraceReader>, cfg: QueryConfig) -> axum::Router {
    if let Err(e) = cfg.validate() {
        tracing::error!(error = %e, "tenant header will never match; all requests use the default tenant");
    }
    let state = common::AppState {
        reader,
        tenant_header: Arc::from(cfg.tenant_header.as_str()),
    };
    tempo::routes().with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert_eq!(QueryConfig::default().tenant_header, "X-Scope-OrgID");
        assert_eq!(QueryConfig::default().validate(), Ok(()));
        let bad = QueryConfig {
            tenant_header: "X Tenant".into(),
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::BadTenantHeader("X Tenant".into()))
        );
        assert!(QueryConfig {
            tenant_header: String::new()
        }
        .validate()
        .is_err());
    }
}
