//! The `auth:` key of a listener, as written in `clew.yaml`:
//!
//! ```yaml
//! auth: {bearer_tokens: {file: tokens.yaml, reload_interval: 10s}}
//! auth: {mtls: {rules: [{dns: "*.team-a.svc", tenants: [team-a]}]}}
//! auth: {oidc: {issuer: https://idp.example, audience: clew, jwks_url: https://idp.example/jwks, tenant_claim: tenants}}
//! auth: {proxy_header: {header: X-Forwarded-User, tenants_header: X-Forwarded-Tenants, trusted_proxies: [127.0.0.1/32]}}
//! ```
//!
//! Exactly one method per listener. Errors carry the key below `auth` and say how to fix it; the
//! binary prefixes the file and the listener's key.

use super::{
    parse_sha256_hex, Authenticator, BearerTokens, Mtls, Oidc, ProxyHeader, TokenFileError,
};
use crate::TenantScope;
use clew_model::Tenant;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `auth:` key of one listener.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub bearer_tokens: Option<BearerTokensConfig>,
    pub mtls: Option<MtlsConfig>,
    pub oidc: Option<OidcConfig>,
    pub proxy_header: Option<ProxyHeaderConfig>,
    /// Query listener only: `/metrics` (which carries per-tenant labels) needs an identity that may
    /// use every tenant, or this bearer token (its SHA-256, hex), for a Prometheus scraper.
    pub metrics_token_sha256: Option<String>,
}

/// `auth.bearer_tokens`: a YAML file of `{name, sha256, tenants}` entries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BearerTokensConfig {
    /// The tokens file (relative paths are resolved against the config file's folder).
    pub file: PathBuf,
    /// How often the file is checked for changes (a removed line revokes a token).
    #[serde(default = "ten_seconds", deserialize_with = "de_duration")]
    pub reload_interval: Duration,
}

/// `auth.mtls`: client certificate names → tenants, first matching rule wins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    pub rules: Vec<MtlsRule>,
}

/// One rule: exactly one of `common_name`, `dns`, `uri`, `email`, as an exact name or a pattern
/// with `*` at the start (`*.team-a.svc`: any name ending in `.team-a.svc`) or at the end
/// (`spiffe://corp/ns/team-a/*`: any name starting with `spiffe://corp/ns/team-a/`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MtlsRule {
    pub common_name: Option<String>,
    pub dns: Option<String>,
    pub uri: Option<String>,
    pub email: Option<String>,
    pub tenants: TenantList,
}

/// `auth.oidc`: JWTs from an OpenID Connect provider.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of these).
    #[serde(deserialize_with = "de_one_or_many")]
    pub audience: Vec<String>,
    /// A JWKS file (reloaded when it changes).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (`https://` or `http://`), fetched and cached.
    pub jwks_url: Option<String>,
    /// TLS for fetching `jwks_url` (a private CA, a client certificate); the system's trust
    /// store when absent.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsClientSettings>,
    /// The claim naming the tenants (a string or an array of strings; `*` = every tenant). A
    /// dotted path (`org.tenants`) reaches into nested objects.
    pub tenant_claim: String,
    /// The claim naming the subject, for logs.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "five_seconds", deserialize_with = "de_duration")]
    pub leeway: Duration,
    /// How long fetched keys are used before the JWKS is fetched (or the file read) again; an
    /// unknown `kid` also refreshes, at most every 30 s.
    #[serde(default = "five_minutes", deserialize_with = "de_duration")]
    pub jwks_refresh_interval: Duration,
    /// Accepted signature algorithms (default RS256, ES256, EdDSA).
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// `auth.proxy_header`: a reverse proxy authenticated the user and says who it is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyHeaderConfig {
    /// The header with the user name (default `X-Forwarded-User`).
    #[serde(default = "default_user_header")]
    pub header: String,
    /// A header with the user's tenants, comma-separated (`*` = every tenant), if the proxy sets
    /// one.
    pub tenants_header: Option<String>,
    /// Tenants per user name, for proxies that send only the user.
    #[serde(default)]
    pub users: BTreeMap<String, TenantList>,
    /// Peer addresses (CIDRs, or single addresses) whose headers are trusted; everyone else is
    /// refused.
    pub trusted_proxies: Vec<String>,
}

/// `tenants:` of a token, rule or user: a list of tenant names, or `"*"` for every tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantList(pub TenantScope);

impl<'de> Deserialize<'de> for TenantList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let names = match Raw::deserialize(d)? {
            Raw::One(s) if s == "*" => return Ok(TenantList(TenantScope::Any)),
            Raw::One(s) => vec![s],
            Raw::Many(v) => v,
        };
        parse_tenants(&names)
            .map(TenantList)
            .map_err(serde::de::Error::custom)
    }
}

/// Tenant names → a scope: `["*"]` is every tenant; otherwise every name must be a tenant.
pub(crate) fn parse_tenants(names: &[String]) -> Result<TenantScope, String> {
    if names.len() == 1 && names[0] == "*" {
        return Ok(TenantScope::Any);
    }
    if names.is_empty() {
        return Err("no tenants (fix: list at least one tenant, or \"*\" for every tenant)".into());
    }
    let mut out: Vec<Tenant> = Vec::with_capacity(names.len());
    for n in names {
        if n == "*" {
            return Err("\"*\" must stand alone (fix: `tenants: \"*\"` for every tenant, or a list of names)".into());
        }
        let t = Tenant::new(n.trim())
            .map_err(|e| format!("{e} (fix: a tenant name such as team-a)"))?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(TenantScope::Only(out))
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_user_header() -> String {
    "X-Forwarded-User".into()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"10s\", \"5m\""
        ))
    })
}

fn de_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

/// A problem in an `auth:` key: `key` is the path below `auth` (`bearer_tokens.file`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct AuthConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> AuthConfigError {
    AuthConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl AuthConfig {
    /// The configured method's key.
    pub fn method(&self) -> Option<&'static str> {
        [
            self.bearer_tokens.is_some().then_some("bearer_tokens"),
            self.mtls.is_some().then_some("mtls"),
            self.oidc.is_some().then_some("oidc"),
            self.proxy_header.is_some().then_some("proxy_header"),
        ]
        .into_iter()
        .flatten()
        .next()
    }

    /// Checks everything that does not need the files (exactly one method, names, CIDRs, URLs).
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        let methods = [
            self.bearer_tokens.is_some(),
            self.mtls.is_some(),
            self.oidc.is_some(),
            self.proxy_header.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if methods != 1 {
            return Err(err(
                "",
                format!("{} authentication methods configured (fix: exactly one of bearer_tokens, mtls, oidc, proxy_header)", methods),
            ));
        }
        if let Some(h) = &self.metrics_token_sha256 {
            parse_sha256_hex(h).map_err(|e| {
                err(
                    "metrics_token_sha256",
                    format!("{e} (fix: the output of `clew token hash`)"),
                )
            })?;
        }
        if let Some(m) = &self.mtls {
            if m.rules.is_empty() {
                return Err(err("mtls.rules", "no rules: every certificate would be refused (fix: add e.g. `- {dns: \"*.team-a.svc\", tenants: [team-a]}`)"));
            }
            for (i, r) in m.rules.iter().enumerate() {
                super::mtls::Rule::from_config(r)
                    .map_err(|e| err(format!("mtls.rules[{i}]"), e))?;
            }
        }
        if let Some(o) = &self.oidc {
            match (&o.jwks_file, &o.jwks_url) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(err(
                        "oidc",
                        "set exactly one of `jwks_file` and `jwks_url` (fix: e.g. `jwks_url: https://idp.example/.well-known/jwks.json`)",
                    ))
                }
                (None, Some(u)) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                    return Err(err(
                        "oidc.jwks_url",
                        format!("{u:?} is not an http(s) URL (fix: e.g. https://idp.example/.well-known/jwks.json)"),
                    ))
                }
                _ => {}
            }
            if o.issuer.trim().is_empty() {
                return Err(err(
                    "oidc.issuer",
                    "empty (fix: the `iss` of your provider's tokens)",
                ));
            }
            if o.audience.is_empty() || o.audience.iter().any(|a| a.trim().is_empty()) {
                return Err(err(
                    "oidc.audience",
                    "empty (fix: the `aud` your provider puts in tokens for Clew)",
                ));
            }
            if o.tenant_claim.trim().is_empty() {
                return Err(err(
                    "oidc.tenant_claim",
                    "empty (fix: the claim naming the tenants, e.g. tenants)",
                ));
            }
            super::oidc::parse_algorithms(&o.algorithms).map_err(|e| err("oidc.algorithms", e))?;
        }
        if let Some(p) = &self.proxy_header {
            http::HeaderName::from_bytes(p.header.as_bytes()).map_err(|_| {
                err(
                    "proxy_header.header",
                    format!(
                        "{:?} is not a header name (fix: e.g. X-Forwarded-User)",
                        p.header
                    ),
                )
            })?;
            if let Some(t) = &p.tenants_header {
                http::HeaderName::from_bytes(t.as_bytes()).map_err(|_| {
                    err(
                        "proxy_header.tenants_header",
                        format!("{t:?} is not a header name (fix: e.g. X-Forwarded-Tenants)"),
                    )
                })?;
            }
            if p.tenants_header.is_none() && p.users.is_empty() {
                return Err(err("proxy_header", "neither `tenants_header` nor `users`: no user could use any tenant (fix: set one of them)"));
            }
            if p.trusted_proxies.is_empty() {
                return Err(err("proxy_header.trusted_proxies", "empty: no proxy would be trusted (fix: the proxy's address, e.g. [127.0.0.1/32])"));
            }
            for (i, c) in p.trusted_proxies.iter().enumerate() {
                super::proxy::parse_cidr(c)
                    .map_err(|e| err(format!("proxy_header.trusted_proxies[{i}]"), e))?;
            }
        }
        Ok(())
    }

    /// Resolves relative file paths against `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.bearer_tokens {
            fix(&mut t.file);
        }
        if let Some(o) = &mut self.oidc {
            if let Some(f) = &mut o.jwks_file {
                fix(f);
            }
            if let Some(t) = &mut o.tls {
                t.resolve_paths(base);
            }
        }
    }

    /// `/metrics`' own scrape token, if configured.
    pub fn metrics_token_hash(&self) -> Option<[u8; 32]> {
        self.metrics_token_sha256
            .as_deref()
            .and_then(|h| parse_sha256_hex(h).ok())
    }

    /// Validates and builds the authenticator, reading its files (a JWKS URL is fetched later, at
    /// the first request).
    pub fn build(&self) -> Result<Arc<dyn Authenticator>, AuthConfigError> {
        self.validate()?;
        if let Some(t) = &self.bearer_tokens {
            let a = BearerTokens::open(&t.file, t.reload_interval).map_err(|e| match e {
                TokenFileError::Io { .. } => err(
                    "bearer_tokens.file",
                    format!("{e} (fix: point it at a tokens file; `clew token new --tenant T` prints a line for it)"),
                ),
                TokenFileError::Parse { .. } => err("bearer_tokens.file", e.to_string()),
            })?;
            return Ok(Arc::new(a));
        }
        if let Some(m) = &self.mtls {
            let a = Mtls::new(m).map_err(|e| err("mtls.rules", e))?;
            return Ok(Arc::new(a));
        }
        if let Some(o) = &self.oidc {
            let a = Oidc::new(o).map_err(|(k, e)| err(format!("oidc.{k}"), e))?;
            return Ok(Arc::new(a));
        }
        if let Some(p) = &self.proxy_header {
            let a = ProxyHeader::new(p).map_err(|e| err("proxy_header", e))?;
            return Ok(Arc::new(a));
        }
        Err(err(
            "",
            "no authentication method (fix: one of bearer_tokens, mtls, oidc, proxy_header)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AuthConfig, String> {
        let c: AuthConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn methods_parse() {
        let c = parse("bearer_tokens: {file: t.yaml}").unwrap();
        assert_eq!(c.method(), Some("bearer_tokens"));
        assert_eq!(
            c.bearer_tokens.unwrap().reload_interval,
            Duration::from_secs(10)
        );
        let c = parse("oidc: {issuer: https://i, audience: [a, b], jwks_url: https://i/jwks, tenant_claim: tenants, leeway: 2s}").unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.audience, vec!["a", "b"]);
        assert_eq!(o.leeway, Duration::from_secs(2));
        let c = parse("mtls: {rules: [{dns: \"*.a.svc\", tenants: \"*\"}, {common_name: x, tenants: team-a}]}").unwrap();
        let m = c.mtls.unwrap();
        assert_eq!(m.rules[0].tenants, TenantList(TenantScope::Any));
        assert_eq!(
            m.rules[1].tenants,
            TenantList(TenantScope::Only(vec![Tenant::new("team-a").unwrap()]))
        );
        let c = parse(
            "proxy_header: {tenants_header: X-Tenants, trusted_proxies: [127.0.0.1/32, \"::1\"]}",
        )
        .unwrap();
        assert_eq!(c.proxy_header.unwrap().header, "X-Forwarded-User");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = parse("{}").unwrap_err();
        assert!(
            e.contains("0 authentication methods") && e.contains("fix:"),
            "{e}"
        );
        let e = parse("bearer_tokens: {file: a}\nmtls: {rules: []}").unwrap_err();
        assert!(e.contains("2 authentication methods"), "{e}");
        let e = parse("oidc: {issuer: i, audience: a, tenant_claim: t}").unwrap_err();
        assert!(e.contains("key `oidc`") && e.contains("jwks_file"), "{e}");
        let e = parse("oidc: {issuer: i, audience: a, tenant_claim: t, jwks_url: ftp://x}")
            .unwrap_err();
        assert!(e.contains("oidc.jwks_url"), "{e}");
        let e = parse(
            "oidc: {issuer: i, audience: a, tenant_claim: t, jwks_file: j, algorithms: [HS256]}",
        )
        .unwrap_err();
        assert!(e.contains("oidc.algorithms") && e.contains("fix:"), "{e}");
        let e =
            parse("proxy_header: {users: {a: [t]}, trusted_proxies: [10.0.0.0/33]}").unwrap_err();
        assert!(e.contains("proxy_header.trusted_proxies[0]"), "{e}");
        let e = parse("mtls: {rules: [{dns: a, uri: b, tenants: [t]}]}").unwrap_err();
        assert!(
            e.contains("mtls.rules[0]") && e.contains("exactly one"),
            "{e}"
        );
        let e = parse("mtls: {rules: [{dns: a, tenants: [\"../x\"]}]}").unwrap_err();
        assert!(e.contains("fix:"), "{e}");
        let e = parse("mtls: {rules: [{dns: a, tenants: [a, \"*\"]}]}").unwrap_err();
        assert!(e.contains("stand alone"), "{e}");
        let e = parse("bearer_tokens: {file: t, reload_interval: often}").unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse("bearer_tokens: {file: t}\nmetrics_token_sha256: xyz").unwrap_err();
        assert!(e.contains("metrics_token_sha256"), "{e}");
        let e = parse("bearer_tokens: {fil: t}").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let mut c = parse("bearer_tokens: {file: t.yaml}").unwrap();
        c.resolve_paths(Path::new("/etc/clew"));
        assert_eq!(
            c.bearer_tokens.unwrap().file,
            PathBuf::from("/etc/clew/t.yaml")
        );
        let e = parse("bearer_tokens: {file: /nonexistent/t.yaml}")
            .unwrap()
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("bearer_tokens.file")
                && e.contains("/nonexistent/t.yaml")
                && e.contains("fix:"),
            "{e}"
        );
    }
}
