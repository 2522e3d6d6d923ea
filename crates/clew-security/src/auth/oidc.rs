//! `oidc`: JWTs (RS256, ES256, EdDSA; configurable) verified with `jsonwebtoken` on aws-lc-rs
//! against a JWKS from a file or an http(s) URL. Checks: signature, `iss`, `aud`, `exp` (and `nbf`)
//! with a small leeway. The tenants come from a claim (a string or an array; `*` = every tenant).
//!
//! Keys are cached: a file is re-read (when changed) and a URL re-fetched every
//! `jwks_refresh_interval`; a token whose `kid` is unknown triggers one early refresh (at most every
//! 30 s, so garbage tokens cannot make Clew hammer the provider). If a refresh fails the cached keys
//! stay in use; with no keys at all requests get 503 / `UNAVAILABLE`.

use super::config::OidcConfig;
use super::{AuthError, AuthRequest, Authenticator};
use crate::{Identity, TenantScope};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
/// An unknown `kid` refreshes the keys at most this often.
const MIN_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// With no keys cached, a failed fetch is retried after this long (requests meanwhile get 503).
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(2);

/// Parses `algorithms:`; symmetric (HS*) algorithms are refused: a JWKS holds public keys.
pub(crate) fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Ok(DEFAULT_ALGORITHMS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            let alg: Algorithm = n.trim().parse().map_err(|_| {
                format!("unknown algorithm {n:?} (fix: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)")
            })?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!(
                    "{n} is a shared-secret algorithm, not verifiable with a JWKS of public keys (fix: RS256, ES256 or EdDSA)"
                ));
            }
            Ok(alg)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Ed),
        _ => None,
    }
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

#[derive(Default, Clone)]
struct KeySet {
    keys: Arc<Vec<Key>>,
    loaded_at: Option<Instant>,
    /// SHA-256 of the document the keys came from (an unchanged file is not parsed again).
    digest: Option<Vec<u8>>,
}

/// JWKS JSON → usable verification keys (encryption keys, shared secrets and unknown key types
/// are skipped).
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("no `keys` array (fix: a JWKS document, {\"keys\": [...]})".into());
    };
    let mut out = Vec::new();
    for raw in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let fam = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Family::Rsa,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            family: fam,
            key,
        });
    }
    if out.is_empty() {
        return Err("no usable signature keys (RSA, EC or OKP public keys)".into());
    }
    Ok(out)
}

enum Source {
    File(PathBuf),
    Url(String, reqwest::Client),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url(u, _) => u.clone(),
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::File(p) => tokio::fs::read(p).await.map_err(|e| e.to_string()),
            Source::Url(u, client) => {
                let resp = client
                    .get(u)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status()));
                }
                resp.bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The `oidc` authenticator.
pub struct Oidc {
    tenant_claim: String,
    subject_claim: String,
    validations: Vec<(Algorithm, Validation)>,
    refresh: Duration,
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    last_forced: Mutex<Option<Instant>>,
    last_failure: Mutex<Option<(Instant, String)>>,
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

impl Oidc {
    /// Builds the authenticator; a JWKS file is read now (errors name the key: `jwks_file`), a
    /// URL at the first request.
    pub fn new(cfg: &OidcConfig) -> Result<Self, (&'static str, String)> {
        let algorithms = parse_algorithms(&cfg.algorithms).map_err(|e| ("algorithms", e))?;
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.set_issuer(&[cfg.issuer.as_str()]);
                v.set_audience(&cfg.audience);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.leeway = cfg.leeway.as_secs();
                v.validate_nbf = true;
                (*alg, v)
            })
            .collect();
        let (source, keys) = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(path), None) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    (
                        "jwks_file",
                        format!(
                            "cannot read {}: {e} (fix: point it at your provider's JWKS document)",
                            path.display()
                        ),
                    )
                })?;
                let keys = parse_jwks(&bytes)
                    .map_err(|e| ("jwks_file", format!("{}: {e}", path.display())))?;
                (
                    Source::File(path.clone()),
                    KeySet {
                        keys: Arc::new(keys),
                        loaded_at: Some(Instant::now()),
                        digest: Some(sha256(&bytes)),
                    },
                )
            }
            (None, Some(url)) => {
                let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
                if let Some(tls) = &cfg.tls {
                    let config = crate::tls::reqwest_tls(url, tls, "oidc.tls")
                        .map_err(|e| ("tls", e.to_string()))?;
                    if let Some(config) = config {
                        builder = builder.tls_backend_preconfigured(config);
                    }
                }
                let client = builder
                    .build()
                    .map_err(|e| ("jwks_url", format!("cannot build an HTTP client: {e}")))?;
                (Source::Url(url.clone(), client), KeySet::default())
            }
            _ => {
                return Err((
                    "jwks_file",
                    "set exactly one of `jwks_file` and `jwks_url`".into(),
                ))
            }
        };
        Ok(Self {
            tenant_claim: cfg.tenant_claim.clone(),
            subject_claim: cfg.subject_claim.clone(),
            validations,
            refresh: cfg.jwks_refresh_interval,
            source,
            keys: RwLock::new(Arc::new(keys)),
            refreshing: tokio::sync::Mutex::new(()),
            last_forced: Mutex::new(None),
            last_failure: Mutex::new(None),
        })
    }

    /// The cached keys, refreshed when stale (or, with `force`, now, rate-limited).
    async fn keys(&self, force: bool) -> Result<Arc<KeySet>, AuthError> {
        let current = self.keys.read().clone();
        let stale = current
            .loaded_at
            .is_none_or(|t| t.elapsed() >= self.refresh);
        if !stale && !force {
            return Ok(current);
        }
        if !stale {
            let mut last = self.last_forced.lock();
            if last.is_some_and(|t| t.elapsed() < MIN_UNKNOWN_KID_REFRESH) {
                return Ok(current);
            }
            *last = Some(Instant::now());
        }
        if current.keys.is_empty() {
            // Nothing cached and the last fetch failed moments ago: do not queue up fetches.
            if let Some((at, e)) = &*self.last_failure.lock() {
                if at.elapsed() < FAILED_FETCH_BACKOFF {
                    return Err(AuthError::Unavailable(e.clone()));
                }
            }
        }
        let _one = self.refreshing.lock().await;
        let latest = self.keys.read().clone();
        if !Arc::ptr_eq(&latest, &current) {
            return Ok(latest); // another request refreshed meanwhile
        }
        let now = Some(Instant::now());
        let fetched = self.source.fetch().await.and_then(|bytes| {
            let digest = sha256(&bytes);
            if latest.digest.as_deref() == Some(digest.as_slice()) {
                Ok(None)
            } else {
                parse_jwks(&bytes).map(|k| Some((k, digest)))
            }
        });
        let next = match fetched {
            Ok(Some((keys, digest))) => {
                tracing::info!(jwks = %self.source.describe(), keys = keys.len(), "JWKS loaded");
                KeySet {
                    keys: Arc::new(keys),
                    loaded_at: now,
                    digest: Some(digest),
                }
            }
            Ok(None) => KeySet {
                loaded_at: now,
                ..(*latest).clone()
            },
            Err(e) if latest.keys.is_empty() => {
                let msg = format!("cannot load the JWKS from {}: {e}", self.source.describe());
                tracing::warn!("{msg}");
                *self.last_failure.lock() = Some((Instant::now(), msg.clone()));
                return Err(AuthError::Unavailable(msg));
            }
            Err(e) => {
                tracing::warn!(jwks = %self.source.describe(), error = %e, "JWKS not refreshed; the cached keys stay in use");
                KeySet {
                    loaded_at: now,
                    ..(*latest).clone()
                }
            }
        };
        let next = Arc::new(next);
        *self.keys.write() = next.clone();
        Ok(next)
    }

    fn candidates<'a>(keys: &'a KeySet, header: &jsonwebtoken::Header) -> Vec<&'a Key> {
        let fam = family(header.alg);
        keys.keys
            .iter()
            .filter(|k| Some(k.family) == fam)
            .filter(|k| k.alg.is_none_or(|a| a == header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => true,
                (None, _) => true,
            })
            .collect()
    }

    fn tenants(&self, claims: &Value) -> Result<TenantScope, AuthError> {
        let value = claims.get(&self.tenant_claim).or_else(|| {
            self.tenant_claim
                .split('.')
                .try_fold(claims, |v, part| v.get(part))
        });
        let names: Vec<String> = match value {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        AuthError::Forbidden(format!(
                            "claim `{}` holds a non-string",
                            self.tenant_claim
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(AuthError::Forbidden(format!(
                    "claim `{}` is not a string or an array of strings",
                    self.tenant_claim
                )))
            }
            None => {
                return Err(AuthError::Forbidden(format!(
                    "the token has no `{}` claim naming its tenants",
                    self.tenant_claim
                )))
            }
        };
        super::config::parse_tenants(&names)
            .map_err(|e| AuthError::Forbidden(format!("claim `{}`: {e}", self.tenant_claim)))
    }

    /// Verifies a JWT and returns its identity.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("the bearer token is not a JWT".into()))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::Invalid(format!(
                "signature algorithm {:?} is not accepted",
                header.alg
            )));
        };
        let mut keys = self.keys(false).await?;
        if Self::candidates(&keys, &header).is_empty() {
            keys = self.keys(true).await?;
        }
        let candidates = Self::candidates(&keys, &header);
        if candidates.is_empty() {
            return Err(AuthError::Invalid(match &header.kid {
                Some(kid) => format!("no key {kid:?} in the JWKS"),
                None => "no key in the JWKS for this token".into(),
            }));
        }
        for k in candidates {
            match jsonwebtoken::decode::<Value>(token, &k.key, validation) {
                Ok(data) => {
                    let tenants = self.tenants(&data.claims)?;
                    let subject = data
                        .claims
                        .get(&self.subject_claim)
                        .and_then(Value::as_str)
                        .unwrap_or("jwt")
                        .to_string();
                    return Ok(Identity { subject, tenants });
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidAlgorithm => continue,
                    ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                    ErrorKind::InvalidIssuer => {
                        return Err(AuthError::Invalid("wrong issuer".into()))
                    }
                    ErrorKind::InvalidAudience => {
                        return Err(AuthError::Invalid("wrong audience".into()))
                    }
                    ErrorKind::ImmatureSignature => {
                        return Err(AuthError::Invalid("token not valid yet (nbf)".into()))
                    }
                    ErrorKind::MissingRequiredClaim(c) => {
                        return Err(AuthError::Invalid(format!("the token has no `{c}` claim")))
                    }
                    _ => return Err(AuthError::Invalid(format!("invalid token: {e}"))),
                },
            }
        }
        Err(AuthError::Invalid("bad signature".into()))
    }
}

#[async_trait::async_trait]
impl Authenticator for Oidc {
    fn kind(&self) -> &'static str {
        "oidc"
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let Some(token) = req.bearer_token()? else {
            return Err(AuthError::Missing(
                "a bearer token (JWT) is required (fix: send `Authorization: Bearer <jwt>`)".into(),
            ));
        };
        self.verify(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testkit::{claims, jwks, now, SigningKey};
    use base64::Engine;
    use clew_model::Tenant;
    use serde_json::json;

    const ISS: &str = "https://idp.example";

    fn oidc(jwks_path: &std::path::Path, extra: &str) -> Oidc {
        let cfg: OidcConfig = serde_yaml::from_str(&format!(
            "{{issuer: \"{ISS}\", audience: clew, jwks_file: {}{}{extra}}}",
            jwks_path.display(),
            if extra.contains("tenant_claim") {
                ""
            } else {
                ", tenant_claim: tenants"
            }
        ))
        .unwrap();
        Oidc::new(&cfg).unwrap()
    }

    fn only(names: &[&str]) -> TenantScope {
        TenantScope::Only(names.iter().map(|n| Tenant::new(n).unwrap()).collect())
    }

    #[tokio::test]
    async fn every_algorithm_good_and_bad() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            SigningKey::rs256("r1"),
            SigningKey::es256("e1"),
            SigningKey::ed25519("d1"),
        ];
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&keys.iter().collect::<Vec<_>>()).to_string()).unwrap();
        let o = oidc(&path, "");
        let stranger = SigningKey::es256("e1"); // same kid, another key
        for k in &keys {
            let alg = k.alg();
            // Good.
            let id = o
                .verify(&k.sign(&claims(ISS, "clew", "alice", &["team-a", "team-b"], 600)))
                .await
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(id.subject, "alice");
            assert_eq!(id.tenants, only(&["team-a", "team-b"]));
            // Expired (beyond the 5 s leeway).
            assert_eq!(
                o.verify(&k.sign(&claims(ISS, "clew", "alice", &["team-a"], -60)))
                    .await,
                Err(AuthError::Expired),
                "{alg}"
            );
            // Within the leeway: accepted.
            assert!(o
                .verify(&k.sign(&claims(ISS, "clew", "alice", &["team-a"], -2)))
                .await
                .is_ok());
            // Wrong issuer, wrong audience.
            assert_eq!(
                o.verify(&k.sign(&claims(
                    "https://evil.example",
                    "clew",
                    "a",
                    &["team-a"],
                    600
                )))
                .await,
                Err(AuthError::Invalid("wrong issuer".into())),
                "{alg}"
            );
            assert_eq!(
                o.verify(&k.sign(&claims(ISS, "other-app", "a", &["team-a"], 600)))
                    .await,
                Err(AuthError::Invalid("wrong audience".into())),
                "{alg}"
            );
            // Tampered payload: bad signature.
            let t = k.sign(&claims(ISS, "clew", "alice", &["team-a"], 600));
            let parts: Vec<&str> = t.split('.').collect();
            let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(claims(ISS, "clew", "alice", &["team-b"], 600).to_string());
            let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
            assert!(
                matches!(o.verify(&forged).await, Err(AuthError::Invalid(_))),
                "{alg}"
            );
        }
        // A key that is not in the JWKS, under a known kid.
        assert!(matches!(
            o.verify(&stranger.sign(&claims(ISS, "clew", "a", &["team-a"], 600)))
                .await,
            Err(AuthError::Invalid(_))
        ));
        // Unknown kid.
        let t = keys[1].sign_with_header(
            &json!({"alg": "ES256", "kid": "nope"}),
            &claims(ISS, "clew", "a", &["team-a"], 600),
        );
        assert!(matches!(o.verify(&t).await, Err(AuthError::Invalid(m)) if m.contains("nope")));
        // alg "none" and HS256 are refused.
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(claims(ISS, "clew", "a", &["team-a"], 600).to_string())
        );
        assert!(matches!(o.verify(&none).await, Err(AuthError::Invalid(_))));
        let hs = format!(
            "{}.{}.c2ln",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"alg":"HS256","kid":"r1"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(claims(ISS, "clew", "a", &["team-a"], 600).to_string())
        );
        assert!(matches!(o.verify(&hs).await, Err(AuthError::Invalid(_))));
        assert!(matches!(
            o.verify("garbage").await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn tenant_claim_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::ed25519("k");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&k]).to_string()).unwrap();
        let base = |extra: serde_json::Value| {
            let mut c =
                json!({"iss": ISS, "aud": ["other", "clew"], "sub": "s", "exp": now() + 600});
            for (key, v) in extra.as_object().unwrap() {
                c[key] = v.clone();
            }
            c
        };
        let o = oidc(&path, "");
        let id = o
            .verify(&k.sign(&base(json!({"tenants": "team-a"}))))
            .await
            .unwrap();
        assert_eq!(id.tenants, only(&["team-a"]));
        let id = o
            .verify(&k.sign(&base(json!({"tenants": "*"}))))
            .await
            .unwrap();
        assert_eq!(id.tenants, TenantScope::Any);
        for bad in [
            json!({}),
            json!({"tenants": 3}),
            json!({"tenants": ["../x"]}),
            json!({"tenants": []}),
        ] {
            assert!(
                matches!(
                    o.verify(&k.sign(&base(bad.clone()))).await,
                    Err(AuthError::Forbidden(_))
                ),
                "{bad}"
            );
        }
        // Missing exp: refused.
        let c = json!({"iss": ISS, "aud": "clew", "tenants": ["a"]});
        assert!(
            matches!(o.verify(&k.sign(&c)).await, Err(AuthError::Invalid(m)) if m.contains("exp"))
        );
        // Nested claim by dotted path, and a subject claim of your own.
        let o = oidc(&path, ", tenant_claim: org.tenants, subject_claim: email");
        let id = o
            .verify(&k.sign(&base(
                json!({"org": {"tenants": ["team-c"]}, "email": "c@x"}),
            )))
            .await
            .unwrap();
        assert_eq!(id.tenants, only(&["team-c"]));
        assert_eq!(id.subject, "c@x");
        // Algorithms can be narrowed.
        let o = oidc(&path, ", algorithms: [RS256]");
        assert!(matches!(
            o.verify(&k.sign(&base(json!({"tenants": "a"})))).await,
            Err(AuthError::Invalid(m)) if m.contains("not accepted")
        ));
    }

    #[tokio::test]
    async fn key_rotation_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (SigningKey::es256("old"), SigningKey::es256("new"));
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&old]).to_string()).unwrap();
        let o = oidc(&path, ", jwks_refresh_interval: 1h");
        let c = claims(ISS, "clew", "a", &["t"], 600);
        assert!(o.verify(&old.sign(&c)).await.is_ok());
        // The provider rotates: an unknown kid refreshes the keys at once.
        std::fs::write(&path, jwks(&[&new]).to_string()).unwrap();
        assert!(o.verify(&new.sign(&c)).await.is_ok());
        assert!(o.verify(&old.sign(&c)).await.is_err());
    }

    #[tokio::test]
    async fn jwks_from_a_url_is_fetched_and_cached() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let k = SigningKey::rs256("r");
        let body = jwks(&[&k]).to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                h2.fetch_add(1, Ordering::SeqCst);
                let b = body.clone();
                async move { b }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg: OidcConfig = serde_yaml::from_str(&format!(
            "{{issuer: \"{ISS}\", audience: clew, jwks_url: \"http://{addr}/jwks\", tenant_claim: tenants}}"
        ))
        .unwrap();
        let o = Oidc::new(&cfg).unwrap();
        let c = claims(ISS, "clew", "a", &["t"], 600);
        for _ in 0..5 {
            assert!(o.verify(&k.sign(&c)).await.is_ok());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once, then cached");
        // An unreachable JWKS with nothing cached: 503.
        let cfg: OidcConfig = serde_yaml::from_str(&format!(
            "{{issuer: \"{ISS}\", audience: clew, jwks_url: \"http://127.0.0.1:9/jwks\", tenant_claim: tenants}}"
        ))
        .unwrap();
        let o = Oidc::new(&cfg).unwrap();
        assert!(matches!(
            o.verify(&k.sign(&c)).await,
            Err(AuthError::Unavailable(_))
        ));
    }

    #[test]
    fn jwks_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        for (text, want) in [
            ("{", "not JSON"),
            ("{}", "no `keys`"),
            (
                r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
                "no usable",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let cfg: OidcConfig = serde_yaml::from_str(&format!(
                "{{issuer: i, audience: a, jwks_file: {}, tenant_claim: t}}",
                path.display()
            ))
            .unwrap();
            let (key, e) = Oidc::new(&cfg).err().unwrap();
            assert_eq!(key, "jwks_file");
            assert!(e.contains(want), "{e}");
        }
    }
}
