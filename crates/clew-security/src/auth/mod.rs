//! Authentication and the tenant gate.
//!
//! One trait, [`Authenticator`], turns what a request proves (a bearer token, a verified client
//! certificate, a JWT, a trusted proxy's header) into an [`Identity`]: a subject and the
//! [`TenantScope`] it may use. Four implementations, one per `auth:` key of a listener:
//!
//! | `auth:` key | type | proves |
//! |---|---|---|
//! | `bearer_tokens` | [`BearerTokens`] | `Authorization: Bearer <token>`, looked up by SHA-256 in a reloaded file |
//! | `mtls` | [`Mtls`] | the client certificate's CN / SAN ([`PeerIdentity`]), mapped to tenants by rules |
//! | `oidc` | [`Oidc`] | a JWT (RS256/ES256/EdDSA) verified against a JWKS (file or URL), issuer, audience, expiry |
//! | `proxy_header` | [`ProxyHeader`] | a user header set by a reverse proxy, trusted only from `trusted_proxies` |
//!
//! The [`TenantGateLayer`] is the one tower layer in front of every listener (axum and tonic
//! alike): it authenticates, chooses the tenant among those the identity may use, rewrites the
//! tenant header to that tenant and inserts the [`Identity`] into the request's extensions. Every
//! handler downstream reads the tenant from that header, so isolation is one mechanism rather than
//! a check per handler.

mod config;
mod gate;
mod mtls;
mod oidc;
mod proxy;
pub mod testkit;
mod tokens;

pub use config::{
    AuthConfig, AuthConfigError, BearerTokensConfig, MtlsConfig, MtlsRule, OidcConfig,
    ProxyHeaderConfig, TenantList,
};
pub use gate::{GateBody, TenantGate, TenantGateLayer};
pub use mtls::Mtls;
pub use oidc::Oidc;
pub use proxy::ProxyHeader;
pub use tokens::{
    generate_token, hash_token, parse_sha256_hex, token_file_line, BearerTokens, TokenFileError,
};

use crate::{Identity, PeerIdentity};
use http::HeaderMap;
use std::net::SocketAddr;

/// What one request offers for authentication.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub headers: &'a HeaderMap,
    /// What the TLS handshake proved (inserted by the TLS listener); `None` on plaintext listeners.
    pub peer: Option<&'a PeerIdentity>,
    /// The socket address of the peer (the TLS listener's [`PeerIdentity`], else the connection
    /// info of axum or tonic).
    pub remote_addr: Option<SocketAddr>,
}

impl<'a> AuthRequest<'a> {
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            peer: None,
            remote_addr: None,
        }
    }

    /// The bearer token of the `Authorization` header (gRPC: the `authorization` metadata):
    /// `Ok(None)` when there is no such header; an error when it is there but not a bearer token.
    pub fn bearer_token(&self) -> Result<Option<&'a str>, AuthError> {
        let mut values = self.headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::Invalid(
                "Authorization header given more than once".into(),
            ));
        }
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("Authorization header is not visible ASCII".into()))?;
        let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid(format!(
                "Authorization scheme {scheme:?} is not supported (fix: send `Authorization: Bearer <token>`)"
            )));
        }
        let token = rest.trim();
        if token.is_empty() {
            return Err(AuthError::Invalid("empty bearer token".into()));
        }
        Ok(Some(token))
    }
}

/// Why a request was refused. The gate maps each to a status per protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials: HTTP 401 with a `WWW-Authenticate` challenge, gRPC `UNAUTHENTICATED`.
    #[error("{0}")]
    Missing(String),
    /// Credentials that are not valid (unknown or revoked token, bad signature, wrong issuer or
    /// audience, not from a trusted proxy): HTTP 401 with `error="invalid_token"`, gRPC
    /// `UNAUTHENTICATED`.
    #[error("{0}")]
    Invalid(String),
    /// A JWT past its expiry (plus leeway): as [`AuthError::Invalid`].
    #[error("token expired")]
    Expired,
    /// Authenticated, but not allowed (no tenant for this identity, a tenant it may not use, an
    /// administrative path for a tenant-scoped identity): HTTP 403, gRPC `PERMISSION_DENIED`.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (a tenant header that is not a tenant name, or two different
    /// ones): HTTP 400, gRPC `INVALID_ARGUMENT`.
    #[error("{0}")]
    BadRequest(String),
    /// Credentials cannot be checked right now (the JWKS could not be fetched): HTTP 503, gRPC
    /// `UNAVAILABLE`.
    #[error("{0}")]
    Unavailable(String),
}

/// Turns what a request proves into an [`Identity`]. One trait for this kind of component; each
/// `auth:` method of a listener is one implementation.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The config key of the method (`bearer_tokens`, `mtls`, `oidc`, `proxy_header`), for logs.
    fn kind(&self) -> &'static str;

    /// The `WWW-Authenticate` scheme of a 401 (`Bearer` unless the method has its own).
    fn challenge_scheme(&self) -> &'static str {
        "Bearer"
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_token_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(AuthRequest::new(&h).bearer_token(), Ok(None));
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(AuthRequest::new(&h).bearer_token(), Ok(Some("abc")));
        h.insert("authorization", HeaderValue::from_static("bearer   abc  "));
        assert_eq!(AuthRequest::new(&h).bearer_token(), Ok(Some("abc")));
        h.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert!(matches!(
            AuthRequest::new(&h).bearer_token(),
            Err(AuthError::Invalid(_))
        ));
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert!(AuthRequest::new(&h).bearer_token().is_err());
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        h.append("authorization", HeaderValue::from_static("Bearer b"));
        assert!(AuthRequest::new(&h).bearer_token().is_err());
    }
}
