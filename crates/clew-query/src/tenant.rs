//! Tenant resolution from the configured request header. An absent header means the default
//! tenant (single-tenant deployments send nothing); a header that is present but unusable is an
//! error rather than a silent fall-back, so that a misconfigured proxy cannot read another tenant's
//! data by accident.

use axum::http::HeaderMap;
use clew_model::{Tenant, TenantError};
use thiserror::Error;

pub const DEFAULT_TENANT_HEADER: &str = "X-Scope-OrgID";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TenantHeaderError {
    #[error("invalid tenant header {header}: {source}")]
    Invalid { header: String, source: TenantError },
    #[error("tenant header {header} is not valid UTF-8")]
    NotUtf8 { header: String },
    #[error("tenant header {header} was sent more than once")]
    Repeated { header: String },
}

/// Resolves the tenant of a request from `header` (matched case-insensitively).
pub fn tenant_from_headers(headers: &HeaderMap, header: &str) -> Result<Tenant, TenantHeaderError> {
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(Tenant::default());
    };
    if values.next().is_some() {
        return Err(TenantHeaderError::Repeated {
            header: header.to_string(),
        });
    }
    let text = value.to_str().map_err(|_| TenantHeaderError::NotUtf8 {
        header: header.to_string(),
    })?;
    Tenant::new(text.trim()).map_err(|source| TenantHeaderError::Invalid {
        header: header.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn absent_is_default_present_is_validated() {
        let mut h = HeaderMap::new();
        assert_eq!(
            tenant_from_headers(&h, DEFAULT_TENANT_HEADER),
            Ok(Tenant::default())
        );
        h.insert("x-scope-orgid", HeaderValue::from_static("acme"));
        assert_eq!(
            tenant_from_headers(&h, DEFAULT_TENANT_HEADER).map(|t| t.to_string()),
            Ok("acme".into())
        );
        assert_eq!(tenant_from_headers(&h, "X-Other"), Ok(Tenant::default()));

        h.insert("x-scope-orgid", HeaderValue::from_static("../etc"));
        assert!(matches!(
            tenant_from_headers(&h, DEFAULT_TENANT_HEADER),
            Err(TenantHeaderError::Invalid { .. })
        ));
        h.insert("x-scope-orgid", HeaderValue::from_static(""));
        assert!(matches!(
            tenant_from_headers(&h, DEFAULT_TENANT_HEADER),
            Err(TenantHeaderError::Invalid {
                source: TenantError::Empty,
                ..
            })
        ));
        h.insert(
            "x-scope-orgid",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap_or(HeaderValue::from_static("x")),
        );
        assert!(tenant_from_headers(&h, DEFAULT_TENANT_HEADER).is_err());
        h.insert("x-scope-orgid", HeaderValue::from_static("a"));
        h.append("x-scope-orgid", HeaderValue::from_static("b"));
        assert!(matches!(
            tenant_from_headers(&h, DEFAULT_TENANT_HEADER),
            Err(TenantHeaderError::Repeated { .. })
        ));
    }

    #[test]
    fn invalid_configured_header_name_never_matches() {
        let mut h = HeaderMap::new();
        h.insert("x-scope-orgid", HeaderValue::from_static("acme"));
        assert_eq!(
            tenant_from_headers(&h, "bad header\n"),
            Ok(Tenant::default())
        );
    }
}
