//! `mtls`: the verified client certificate's names → tenants. The TLS listener verifies the chain
//! against the configured CA and puts what it proved into the request as a [`PeerIdentity`]; this
//! authenticator only maps names to tenants, rule by rule, first match wins.

use super::config::{MtlsConfig, MtlsRule};
use super::{AuthError, AuthRequest, Authenticator};
use crate::{Identity, PeerIdentity, TenantScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    CommonName,
    Dns,
    Uri,
    Email,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::CommonName => "cn",
            NameKind::Dns => "dns",
            NameKind::Uri => "uri",
            NameKind::Email => "email",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `*.team-a.svc` → names ending in `.team-a.svc` (with something before).
    Suffix(String),
    /// `spiffe://corp/ns/team-a/*` → names starting with `spiffe://corp/ns/team-a/` (with
    /// something after).
    Prefix(String),
}

impl Pattern {
    fn parse(p: &str) -> Result<Self, String> {
        let p = p.trim();
        if p.is_empty() || p == "*" {
            return Err(format!("pattern {p:?} would match every certificate (fix: an exact name, `*.domain` or `prefix/*`)"));
        }
        let inner_star = |s: &str| s.contains('*');
        if let Some(rest) = p.strip_prefix('*') {
            if inner_star(rest) {
                return Err(format!(
                    "pattern {p:?}: `*` only at the start or the end (fix: e.g. *.team-a.svc)"
                ));
            }
            return Ok(Pattern::Suffix(rest.to_string()));
        }
        if let Some(rest) = p.strip_suffix('*') {
            if inner_star(rest) {
                return Err(format!("pattern {p:?}: `*` only at the start or the end (fix: e.g. spiffe://corp/ns/team-a/*)"));
            }
            return Ok(Pattern::Prefix(rest.to_string()));
        }
        if inner_star(p) {
            return Err(format!(
                "pattern {p:?}: `*` only at the start or the end (fix: e.g. *.team-a.svc)"
            ));
        }
        Ok(Pattern::Exact(p.to_string()))
    }

    fn matches(&self, name: &str, case_insensitive: bool) -> bool {
        let (name, pat) = if case_insensitive {
            (
                name.to_ascii_lowercase(),
                match self {
                    Pattern::Exact(s) | Pattern::Suffix(s) | Pattern::Prefix(s) => {
                        s.to_ascii_lowercase()
                    }
                },
            )
        } else {
            (
                name.to_string(),
                match self {
                    Pattern::Exact(s) | Pattern::Suffix(s) | Pattern::Prefix(s) => s.clone(),
                },
            )
        };
        match self {
            Pattern::Exact(_) => name == pat,
            Pattern::Suffix(_) => name.len() > pat.len() && name.ends_with(&pat),
            Pattern::Prefix(_) => name.len() > pat.len() && name.starts_with(&pat),
        }
    }
}

/// One compiled `mtls.rules` entry.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    kind: NameKind,
    pattern: Pattern,
    scope: TenantScope,
}

impl Rule {
    pub(crate) fn from_config(r: &MtlsRule) -> Result<Self, String> {
        let set: Vec<(NameKind, &String)> = [
            (NameKind::CommonName, r.common_name.as_ref()),
            (NameKind::Dns, r.dns.as_ref()),
            (NameKind::Uri, r.uri.as_ref()),
            (NameKind::Email, r.email.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let [(kind, pattern)] = set.as_slice() else {
            return Err(format!(
                "{} of common_name, dns, uri, email set (fix: exactly one per rule)",
                set.len()
            ));
        };
        Ok(Rule {
            kind: *kind,
            pattern: Pattern::parse(pattern)?,
            scope: r.tenants.0.clone(),
        })
    }

    /// The first certificate name this rule matches.
    fn matching_name<'a>(&self, peer: &'a PeerIdentity) -> Option<&'a str> {
        let names: Box<dyn Iterator<Item = &String>> = match self.kind {
            NameKind::CommonName => Box::new(peer.common_name.iter()),
            NameKind::Dns => Box::new(peer.dns_names.iter()),
            NameKind::Uri => Box::new(peer.uri_names.iter()),
            NameKind::Email => Box::new(peer.email_names.iter()),
        };
        let ci = matches!(self.kind, NameKind::Dns);
        names
            .map(String::as_str)
            .find(|n| self.pattern.matches(n, ci))
    }
}

/// The `mtls` authenticator.
pub struct Mtls {
    rules: Vec<Rule>,
}

impl Mtls {
    pub fn new(cfg: &MtlsConfig) -> Result<Self, String> {
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::from_config(r).map_err(|e| format!("rule {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// The identity of a verified certificate, or why it has none.
    pub fn identify(&self, peer: &PeerIdentity) -> Result<Identity, AuthError> {
        if !peer.has_certificate() {
            return Err(AuthError::Missing(
                "a client certificate is required (fix: connect over TLS with a certificate from the configured CA)".into(),
            ));
        }
        for r in &self.rules {
            if let Some(name) = r.matching_name(peer) {
                return Ok(Identity {
                    subject: format!("{}:{name}", r.kind.label()),
                    tenants: r.scope.clone(),
                });
            }
        }
        Err(AuthError::Forbidden(format!(
            "the client certificate ({}) matches no mtls rule",
            describe(peer)
        )))
    }
}

fn describe(peer: &PeerIdentity) -> String {
    let mut parts = Vec::new();
    if let Some(cn) = &peer.common_name {
        parts.push(format!("cn={cn}"));
    }
    for (label, names) in [
        ("dns", &peer.dns_names),
        ("uri", &peer.uri_names),
        ("email", &peer.email_names),
    ] {
        for n in names.iter().take(4) {
            parts.push(format!("{label}={n}"));
        }
    }
    parts.join(", ")
}

#[async_trait::async_trait]
impl Authenticator for Mtls {
    fn kind(&self) -> &'static str {
        "mtls"
    }

    fn challenge_scheme(&self) -> &'static str {
        "ClientCertificate"
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        match req.peer {
            Some(p) => self.identify(p),
            None => self.identify(&PeerIdentity::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::Tenant;
    use http::HeaderMap;

    fn mtls(yaml: &str) -> Mtls {
        let cfg: MtlsConfig = serde_yaml::from_str(yaml).unwrap();
        Mtls::new(&cfg).unwrap()
    }

    fn only(names: &[&str]) -> TenantScope {
        TenantScope::Only(names.iter().map(|n| Tenant::new(n).unwrap()).collect())
    }

    fn peer(cn: Option<&str>, dns: &[&str], uri: &[&str], email: &[&str]) -> PeerIdentity {
        PeerIdentity {
            remote_addr: None,
            common_name: cn.map(String::from),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            uri_names: uri.iter().map(|s| s.to_string()).collect(),
            email_names: email.iter().map(|s| s.to_string()).collect(),
        }
    }

    const RULES: &str = r#"
rules:
  - {common_name: ingest.team-a.internal, tenants: [team-a]}
  - {dns: "*.team-b.svc", tenants: [team-b, team-b-staging]}
  - {uri: "spiffe://corp/ns/team-c/*", tenants: team-c}
  - {email: ops@corp.example, tenants: "*"}
"#;

    #[tokio::test]
    async fn names_map_to_tenants() {
        let m = mtls(RULES);
        let id = m
            .identify(&peer(Some("ingest.team-a.internal"), &[], &[], &[]))
            .unwrap();
        assert_eq!(id.tenants, only(&["team-a"]));
        assert_eq!(id.subject, "cn:ingest.team-a.internal");
        let id = m
            .identify(&peer(Some("other"), &["API.Team-B.svc"], &[], &[]))
            .unwrap();
        assert_eq!(id.tenants, only(&["team-b", "team-b-staging"]));
        let id = m
            .identify(&peer(None, &[], &["spiffe://corp/ns/team-c/sa/x"], &[]))
            .unwrap();
        assert_eq!(id.tenants, only(&["team-c"]));
        let id = m
            .identify(&peer(None, &[], &[], &["ops@corp.example"]))
            .unwrap();
        assert_eq!(id.tenants, TenantScope::Any);
        // Through the trait, from the request's PeerIdentity.
        let h = HeaderMap::new();
        let p = peer(Some("ingest.team-a.internal"), &[], &[], &[]);
        let req = AuthRequest {
            headers: &h,
            peer: Some(&p),
            remote_addr: None,
        };
        assert_eq!(
            m.authenticate(&req).await.unwrap().tenants,
            only(&["team-a"])
        );
    }

    #[tokio::test]
    async fn no_certificate_and_unmatched_names_are_refused() {
        let m = mtls(RULES);
        let h = HeaderMap::new();
        assert!(matches!(
            m.authenticate(&AuthRequest::new(&h)).await,
            Err(AuthError::Missing(_))
        ));
        // Suffix patterns need a label before the suffix, and do not match look-alikes.
        for p in [
            peer(None, &["team-b.svc"], &[], &[]),
            peer(None, &["x.team-b.svc.evil.example"], &[], &[]),
            peer(None, &["xteam-b.svc"], &[], &[]),
            peer(Some("ingest.team-a.internal.evil"), &[], &[], &[]),
            peer(None, &[], &["spiffe://corp/ns/team-c/"], &[]),
            peer(None, &[], &["spiffe://corp/ns/team-cx/sa"], &[]),
            // The CN rule does not look at SANs.
            peer(None, &["ingest.team-a.internal"], &[], &[]),
            peer(None, &[], &[], &["OPS@corp.example"]),
        ] {
            assert!(
                matches!(m.identify(&p), Err(AuthError::Forbidden(_))),
                "{p:?}"
            );
        }
    }

    #[test]
    fn first_rule_wins_and_bad_patterns_are_refused() {
        let m = mtls(
            "rules:\n  - {dns: a.svc, tenants: [one]}\n  - {dns: \"*.svc\", tenants: [two]}\n",
        );
        assert_eq!(
            m.identify(&peer(None, &["a.svc"], &[], &[]))
                .unwrap()
                .tenants,
            only(&["one"])
        );
        assert_eq!(
            m.identify(&peer(None, &["b.svc"], &[], &[]))
                .unwrap()
                .tenants,
            only(&["two"])
        );
        for bad in ["*", "a*b", "*a*", ""] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
