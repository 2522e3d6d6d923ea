//! `proxy_header`: a reverse proxy in front of Clew authenticated the user (SSO, OAuth2 proxy) and
//! names them in a header. The header is believed only when the connection comes from one of
//! `trusted_proxies`; a request from anywhere else is refused, with or without the header, so a
//! client that reaches Clew directly cannot claim to be someone.

use super::config::ProxyHeaderConfig;
use super::{AuthError, AuthRequest, Authenticator};
use crate::{Identity, TenantScope};
use http::HeaderName;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `10.0.0.0/8`, `::1/128`, or a single address (`127.0.0.1` = `/32`).
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{text:?} is not a CIDR or an IP address (fix: e.g. 10.0.0.0/8 or 127.0.0.1)"
    ))
}

/// The `proxy_header` authenticator.
pub struct ProxyHeader {
    header: HeaderName,
    tenants_header: Option<HeaderName>,
    users: BTreeMap<String, TenantScope>,
    trusted: Vec<IpNet>,
}

impl ProxyHeader {
    pub fn new(cfg: &ProxyHeaderConfig) -> Result<Self, String> {
        let header = HeaderName::from_bytes(cfg.header.as_bytes())
            .map_err(|_| format!("{:?} is not a header name", cfg.header))?;
        let tenants_header = cfg
            .tenants_header
            .as_ref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("{h:?} is not a header name"))
            })
            .transpose()?;
        let trusted = cfg
            .trusted_proxies
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            header,
            tenants_header,
            users: cfg
                .users
                .iter()
                .map(|(u, t)| (u.clone(), t.0.clone()))
                .collect(),
            trusted,
        })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    fn single<'a>(req: &AuthRequest<'a>, name: &HeaderName) -> Result<Option<&'a str>, AuthError> {
        let mut values = req.headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::Invalid(format!("{name} given more than once")));
        }
        let text = v
            .to_str()
            .map_err(|_| AuthError::Invalid(format!("{name} is not visible ASCII")))?
            .trim();
        Ok((!text.is_empty()).then_some(text))
    }
}

#[async_trait::async_trait]
impl Authenticator for ProxyHeader {
    fn kind(&self) -> &'static str {
        "proxy_header"
    }

    fn challenge_scheme(&self) -> &'static str {
        "Proxy"
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let Some(addr) = req.remote_addr else {
            return Err(AuthError::Invalid(
                "the peer address is unknown, so the proxy header cannot be trusted".into(),
            ));
        };
        if !self.is_trusted(addr.ip()) {
            return Err(AuthError::Invalid(format!(
                "{} is not a trusted proxy (fix: reach Clew through the proxy, or add it to trusted_proxies)",
                addr.ip()
            )));
        }
        let Some(user) = Self::single(req, &self.header)? else {
            return Err(AuthError::Missing(format!(
                "the proxy did not send {} (fix: sign in through the proxy)",
                self.header
            )));
        };
        let from_header = match &self.tenants_header {
            Some(h) => Self::single(req, h)?,
            None => None,
        };
        let tenants = match from_header {
            Some(list) => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                super::config::parse_tenants(&names).map_err(|e| {
                    AuthError::Forbidden(format!("the proxy's tenants for {user:?}: {e}"))
                })?
            }
            None => self
                .users
                .get(user)
                .cloned()
                .ok_or_else(|| AuthError::Forbidden(format!("user {user:?} has no tenants")))?,
        };
        Ok(Identity {
            subject: format!("proxy:{user}"),
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::Tenant;
    use http::{HeaderMap, HeaderValue};
    use std::net::SocketAddr;

    fn proxy(yaml: &str) -> ProxyHeader {
        let cfg: ProxyHeaderConfig = serde_yaml::from_str(yaml).unwrap();
        ProxyHeader::new(&cfg).unwrap()
    }

    async fn auth(
        p: &ProxyHeader,
        from: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Identity, AuthError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        let addr: SocketAddr = from.parse().unwrap();
        p.authenticate(&AuthRequest {
            headers: &h,
            peer: None,
            remote_addr: Some(addr),
        })
        .await
    }

    fn only(names: &[&str]) -> TenantScope {
        TenantScope::Only(names.iter().map(|n| Tenant::new(n).unwrap()).collect())
    }

    #[tokio::test]
    async fn trusted_only_from_the_proxy() {
        let p = proxy("{tenants_header: X-Forwarded-Tenants, users: {alice: [team-a]}, trusted_proxies: [127.0.0.1, \"10.1.0.0/16\"]}");
        let id = auth(&p, "127.0.0.1:5000", &[("x-forwarded-user", "alice")])
            .await
            .unwrap();
        assert_eq!(id.tenants, only(&["team-a"]));
        assert_eq!(id.subject, "proxy:alice");
        let id = auth(
            &p,
            "10.1.2.3:5000",
            &[
                ("x-forwarded-user", "bob"),
                ("x-forwarded-tenants", "team-b, team-c"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(id.tenants, only(&["team-b", "team-c"]));
        // IPv4-mapped IPv6 peers are compared as IPv4.
        assert!(auth(
            &p,
            "[::ffff:127.0.0.1]:5000",
            &[("x-forwarded-user", "alice")]
        )
        .await
        .is_ok());
        // Not from a trusted proxy: refused, whatever the headers say.
        assert!(matches!(
            auth(&p, "127.0.0.2:5000", &[("x-forwarded-user", "alice")]).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth(&p, "10.2.0.1:5000", &[("x-forwarded-user", "alice")]).await,
            Err(AuthError::Invalid(_))
        ));
        // From the proxy, without a user: 401; unknown user without a tenants header: 403.
        assert!(matches!(
            auth(&p, "127.0.0.1:5000", &[]).await,
            Err(AuthError::Missing(_))
        ));
        assert!(matches!(
            auth(&p, "127.0.0.1:5000", &[("x-forwarded-user", "mallory")]).await,
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            auth(
                &p,
                "127.0.0.1:5000",
                &[
                    ("x-forwarded-user", "bob"),
                    ("x-forwarded-tenants", "../etc")
                ]
            )
            .await,
            Err(AuthError::Forbidden(_))
        ));
        // Unknown peer address: refused.
        let h = HeaderMap::new();
        assert!(matches!(
            p.authenticate(&AuthRequest::new(&h)).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("::1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("proxy.local").is_err());
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    }
}
