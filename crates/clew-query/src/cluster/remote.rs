//! The querier's client of an ingester's read API ([`super::read_router`]).

use super::wire::{Hit, ReadRequest, PROTOBUF};
use clew_model::{FlatSpan, Tenant, TraceId};
use clew_store::{
    AttrScope, DependencyLink, Operation, SearchQuery, StoreError, TagValue, TraceHit, TraceReader,
};
use prost::Message;
use serde::de::DeserializeOwned;

/// One ingester, reached at its query endpoint (`http://HOST:PORT`).
#[derive(Clone)]
pub struct RemoteReader {
    endpoint: String,
    url: String,
    client: reqwest::Client,
    tenant_header: String,
}

impl RemoteReader {
    /// `url` is the ingester's query endpoint (`http://HOST:PORT` or `https://…`); `client`
    /// carries its TLS settings, headers and a timeout, so a hung ingester delays a query by at
    /// most that much.
    pub fn new(url: &str, tenant_header: &str, client: reqwest::Client) -> Self {
        let base = url.trim_end_matches('/');
        Self {
            endpoint: base.to_string(),
            url: format!("{base}{}", super::READ_PATH),
            client,
            tenant_header: tenant_header.to_string(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn failed(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError::Internal(format!("ingester {}: {what}", self.endpoint))
    }

    async fn call(
        &self,
        tenant: &Tenant,
        request: &ReadRequest,
    ) -> Result<reqwest::Response, StoreError> {
        let response = self
            .client
            .post(&self.url)
            .header(self.tenant_header.as_str(), tenant.as_str())
            .json(request)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(if status == reqwest::StatusCode::BAD_REQUEST {
            StoreError::InvalidQuery(body)
        } else {
            self.failed(format_args!("HTTP {status}: {body}"))
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        tenant: &Tenant,
        request: ReadRequest,
    ) -> Result<T, StoreError> {
        self.call(tenant, &request)
            .await?
            .json()
            .await
            .map_err(|e| self.failed(format_args!("bad answer: {e}")))
    }
}

#[async_trait::async_trait]
impl TraceReader for RemoteReader {
    async fn trace(&self, tenant: &Tenant, id: TraceId) -> Result<Vec<FlatSpan>, StoreError> {
        let request = ReadRequest::Trace {
            trace_id: id.to_hex(),
        };
        let response = self.call(tenant, &request).await?;
        let is_protobuf = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == PROTOBUF.as_bytes());
        if !is_protobuf {
            return Err(self.failed("a trace answer that is not OTLP protobuf"));
        }
        let bytes = response.bytes().await.map_err(|e| self.failed(e))?;
        let data = clew_model::otlp::trace::TracesData::decode(bytes)
            .map_err(|e| self.failed(format_args!("bad OTLP: {e}")))?;
        Ok(clew_model::flat::flatten(data.resource_spans))
    }

    async fn search(&self, tenant: &Tenant, q: &SearchQuery) -> Result<Vec<TraceHit>, StoreError> {
        let hits: Vec<Hit> = self
            .json(tenant, ReadRequest::Search { query: q.clone() })
            .await?;
        hits.into_iter()
            .map(|h| {
                Ok(TraceHit {
                    trace_id: TraceId::from_hex(&h.trace_id)
                        .map_err(|e| self.failed(format_args!("bad trace id in a hit: {e}")))?,
                    start_unix_nano: h.start_unix_nano,
                })
            })
            .collect()
    }

    async fn estimate_trace_count(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<u64, StoreError> {
        self.json(tenant, ReadRequest::EstimateTraceCount { start, end })
            .await
    }

    async fn services(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        self.json(tenant, ReadRequest::Services).await
    }

    async fn operations(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
    ) -> Result<Vec<Operation>, StoreError> {
        let service = service.map(str::to_string);
        self.json(tenant, ReadRequest::Operations { service }).await
    }

    async fn dependencies(
        &self,
        tenant: &Tenant,
        start: u64,
        end: u64,
    ) -> Result<Vec<DependencyLink>, StoreError> {
        self.json(tenant, ReadRequest::Dependencies { start, end })
            .await
    }

    async fn tag_names(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<String>, StoreError> {
        self.json(tenant, ReadRequest::TagNames { scope, range })
            .await
    }

    async fn tag_values(
        &self,
        tenant: &Tenant,
        scope: AttrScope,
        key: &str,
        range: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<TagValue>, StoreError> {
        let key = key.to_string();
        self.json(
            tenant,
            ReadRequest::TagValues {
                scope,
                key,
                range,
                limit,
            },
        )
        .await
    }
}
