//! Tenant resolution from a configurable header (HTTP) or metadata key (gRPC): absent → the default
//! tenant, present → must satisfy the tenant grammar, else the request is refused.

use crate::errors::{ReceiveError, Rejection};
use crate::ReceiverConfig;
use axum::http::{HeaderMap, HeaderName};
use clew_model::Tenant;

#[derive(Debug, Clone)]
pub(crate) struct TenantResolver {
    /// Lowercase, as HTTP/2 and gRPC metadata keys are; lookups are therefore case-insensitive.
    header: HeaderName,
    /// As configured, for messages.
    display: String,
    default: Tenant,
}

impl TenantResolver {
    pub(crate) fn new(cfg: &ReceiverConfig) -> Result<Self, ReceiveError> {
        if cfg.max_message_bytes == 0 {
            return Err(ReceiveError::Config(
                "max_message_bytes must be greater than 0".into(),
            ));
        }
        let header = HeaderName::from_bytes(cfg.tenant_header.as_bytes()).map_err(|_| {
            ReceiveError::Config(format!(
                "tenant header {:?} is not a valid header name",
                cfg.tenant_header
            ))
        })?;
        // gRPC reserves the `grpc-` prefix and treats `-bin` keys as binary; neither can carry a
        // tenant name.
        if header.as_str().starts_with("grpc-") || header.as_str().ends_with("-bin") {
            return Err(ReceiveError::Config(format!(
                "tenant header {:?} cannot be used as gRPC metadata (reserved prefix or -bin suffix)",
                cfg.tenant_header
            )));
        }
        Ok(Self {
            header,
            display: cfg.tenant_header.clone(),
            default: cfg.default_tenant.clone(),
        })
    }

    pub(crate) fn resolve_http(&self, headers: &HeaderMap) -> Result<Tenant, Rejection> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(first) = values.next() else {
            return Ok(self.default.clone());
        };
        if values.next().is_some() {
            return Err(Rejection::BadTenant(format!(
                "{} given more than once",
                self.display
            )));
        }
        let text = first
            .to_str()
            .map_err(|_| Rejection::BadTenant(format!("{} is not visible ASCII", self.display)))?;
        self.parse(text)
    }

    pub(crate) fn resolve_grpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Tenant, Rejection> {
        let mut values = metadata.get_all(self.header.as_str()).iter();
        let Some(first) = values.next() else {
            return Ok(self.default.clone());
        };
        if values.next().is_some() {
            return Err(Rejection::BadTenant(format!(
                "{} given more than once",
                self.display
            )));
        }
        let text = first
            .to_str()
            .map_err(|_| Rejection::BadTenant(format!("{} is not visible ASCII", self.display)))?;
        self.parse(text)
    }

    fn parse(&self, text: &str) -> Result<Tenant, Rejection> {
        Tenant::new(text).map_err(|e| Rejection::BadTenant(format!("{}: {e}", self.display)))
    }

    /// Whether a header named `name` (any case) is the tenant header: for transports whose
    /// headers are not an HTTP `HeaderMap` (Kafka record headers).
    pub(crate) fn matches(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(self.header.as_str())
    }

    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    pub(crate) fn default_tenant(&self) -> Tenant {
        self.default.clone()
    }

    pub(crate) fn parse_tenant(&self, text: &str) -> Result<Tenant, Rejection> {
        self.parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn resolver() -> TenantResolver {
        TenantResolver::new(&ReceiverConfig::default()).unwrap()
    }

    #[test]
    fn absent_is_default_and_lookup_ignores_case() {
        let r = resolver();
        assert_eq!(
            r.resolve_http(&HeaderMap::new()).unwrap(),
            Tenant::default()
        );
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("x-scope-orgid"),
            HeaderValue::from_static("acme"),
        );
        assert_eq!(r.resolve_http(&h).unwrap().as_str(), "acme");
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("x-scope-orgid", "acme".parse().unwrap());
        assert_eq!(r.resolve_grpc(&md).unwrap().as_str(), "acme");
        assert_eq!(
            r.resolve_grpc(&tonic::metadata::MetadataMap::new())
                .unwrap(),
            Tenant::default()
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let r = resolver();
        for bad in ["", "../x", "a b", "a/b"] {
            let mut h = HeaderMap::new();
            h.insert("x-scope-orgid", HeaderValue::from_str(bad).unwrap());
            let msg = r.resolve_http(&h).unwrap_err().message();
            assert!(msg.contains("X-Scope-OrgID"), "{msg}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-scope-orgid",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(r
            .resolve_http(&h)
            .unwrap_err()
            .message()
            .contains("visible ASCII"));
        let mut h = HeaderMap::new();
        h.append("x-scope-orgid", HeaderValue::from_static("a"));
        h.append("x-scope-orgid", HeaderValue::from_static("b"));
        assert!(r
            .resolve_http(&h)
            .unwrap_err()
            .message()
            .contains("more than once"));
    }

    #[test]
    fn config_is_checked() {
        for bad in ["", "bad header", "grpc-tenant", "tenant-bin"] {
            let cfg = ReceiverConfig {
                tenant_header: bad.into(),
                ..Default::default()
            };
            assert!(TenantResolver::new(&cfg).is_err(), "{bad:?}");
        }
        let cfg = ReceiverConfig {
            max_message_bytes: 0,
            ..Default::default()
        };
        assert!(TenantResolver::new(&cfg).is_err());
        let cfg = ReceiverConfig {
            tenant_header: "X-Tenant".into(),
            ..Default::default()
        };
        assert!(TenantResolver::new(&cfg).is_ok());
    }
}
