//! The tenant gate: one tower layer in front of every listener, HTTP (axum) and gRPC (tonic) alike.
//!
//! For each request it
//! 1. lets through the listener's open paths (`/ready`, the UI's page routes and static assets);
//! 2. authenticates with the listener's [`Authenticator`];
//! 3. chooses the tenant: the tenant header if the identity may use the tenant it names (else 403 /
//!    `PERMISSION_DENIED`), otherwise the identity's first tenant (the default tenant when it may
//!    use any);
//! 4. **rewrites the tenant header** to exactly that tenant (duplicates removed) and inserts the
//!    [`Identity`] and the chosen [`Tenant`] into the request's extensions.
//!
//! Every handler downstream (receivers, Jaeger API, api_v3, doctor, UI JSON, SPM metrics) already
//! reads the tenant from that header, so with auth on the tenant always comes from the identity.
//!
//! Refusals speak the caller's protocol: gRPC requests (`content-type: application/grpc*`) get a
//! trailers-only response (HTTP 200, `grpc-status` 16 `UNAUTHENTICATED` or 7 `PERMISSION_DENIED`,
//! `grpc-message`); everything else gets 401 with `WWW-Authenticate: Bearer realm="clew"` (plus
//! `error="invalid_token"` when a credential was bad) or 403, with a JSON body `{"error": "..."}`.
//! Paths that need an identity allowed to use every tenant (`/metrics`, whose labels name tenants)
//! may also accept a dedicated scrape token.

use super::{AuthError, AuthRequest, Authenticator};
use crate::{Identity, TenantScope};
use bytes::Bytes;
use clew_model::Tenant;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The response body of a gated service: the inner service's, or the gate's own refusal.
pub type GateBody<B> = Either<B, Full<Bytes>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathRule {
    Exact(String),
    Prefix(String),
}

impl PathRule {
    /// `/ready` (exact) or `/static/*` (everything below `/static/`).
    fn parse(p: &str) -> Self {
        match p.strip_suffix('*') {
            Some(prefix) => PathRule::Prefix(prefix.to_string()),
            None => PathRule::Exact(p.to_string()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(p) => path == p,
            PathRule::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone)]
struct GateState {
    listener: String,
    auth: Option<Arc<dyn Authenticator>>,
    tenant_header: HeaderName,
    default_tenant: Tenant,
    open: Vec<PathRule>,
    any_tenant: Vec<PathRule>,
    any_tenant_token: Option<[u8; 32]>,
}

/// The layer; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct TenantGateLayer {
    state: Arc<GateState>,
}

/// A refusal, before it is turned into a response for the caller's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: AuthError,
    scheme: &'static str,
}

impl TenantGateLayer {
    /// A gate for the listener named `listener` (for logs). With `auth` `None` the gate lets every
    /// request through untouched (auth off: the tenant header alone chooses the tenant).
    pub fn new(
        listener: &str,
        auth: Option<Arc<dyn Authenticator>>,
        tenant_header: &str,
    ) -> Result<Self, String> {
        let tenant_header = HeaderName::from_bytes(tenant_header.as_bytes())
            .map_err(|_| format!("{tenant_header:?} is not a valid header name"))?;
        Ok(Self {
            state: Arc::new(GateState {
                listener: listener.to_string(),
                auth,
                tenant_header,
                default_tenant: Tenant::default(),
                open: Vec::new(),
                any_tenant: Vec::new(),
                any_tenant_token: None,
            }),
        })
    }

    /// A gate that lets every request through untouched (auth off).
    pub fn off() -> Self {
        Self::new("", None, "X-Scope-OrgID").expect("a valid header name")
    }

    /// Paths served without authentication: exact (`/ready`) or with a trailing `*`
    /// (`/static/*`). Only for paths that never carry tenant data.
    pub fn open_paths(mut self, paths: &[&str]) -> Self {
        Arc::make_mut(&mut self.state)
            .open
            .extend(paths.iter().map(|p| PathRule::parse(p)));
        self
    }

    /// Paths that need an identity allowed to use every tenant (e.g. `/metrics`, whose labels
    /// name tenants), or the bearer token whose SHA-256 is `token_sha256`.
    pub fn any_tenant_paths(mut self, paths: &[&str], token_sha256: Option<[u8; 32]>) -> Self {
        let s = Arc::make_mut(&mut self.state);
        s.any_tenant
            .extend(paths.iter().map(|p| PathRule::parse(p)));
        s.any_tenant_token = token_sha256;
        self
    }

    /// The tenant of requests that name none, when the identity may use any (default
    /// `single-tenant`, the receivers' and the query API's default).
    pub fn default_tenant(mut self, tenant: Tenant) -> Self {
        Arc::make_mut(&mut self.state).default_tenant = tenant;
        self
    }

    /// Whether requests are authenticated at all.
    pub fn is_enabled(&self) -> bool {
        self.state.auth.is_some()
    }

    /// The gate's decision for one request: on success the request's tenant header has been
    /// rewritten and the identity inserted (`None`: auth off or an open path, left untouched).
    pub async fn admit(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Option<Identity>, Refusal> {
        self.state.admit(parts).await
    }
}

impl<S> Layer<S> for TenantGateLayer {
    type Service = TenantGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantGate {
            inner,
            state: self.state.clone(),
        }
    }
}

/// A service behind the gate.
#[derive(Clone)]
pub struct TenantGate<S> {
    inner: S,
    state: Arc<GateState>,
}

fn remote_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    crate::peer_identity(ext)
        .and_then(|p| p.remote_addr)
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
        .or_else(|| {
            ext.get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|c| c.remote_addr())
        })
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn bearer_hash(headers: &http::HeaderMap) -> Option<[u8; 32]> {
    AuthRequest::new(headers)
        .bearer_token()
        .ok()
        .flatten()
        .map(super::hash_token)
}

impl GateState {
    async fn admit(&self, parts: &mut http::request::Parts) -> Result<Option<Identity>, Refusal> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let path = parts.uri.path();
        if self.open.iter().any(|r| r.matches(path)) {
            return Ok(None);
        }
        let refuse = |error: AuthError| Refusal {
            error,
            scheme: auth.challenge_scheme(),
        };
        let any_only = self.any_tenant.iter().any(|r| r.matches(path));
        let scrape_token = any_only
            && self.any_tenant_token.is_some()
            && bearer_hash(&parts.headers) == self.any_tenant_token;
        let identity = if scrape_token {
            Identity {
                subject: "metrics-token".into(),
                tenants: TenantScope::Any,
            }
        } else {
            let req = AuthRequest {
                headers: &parts.headers,
                peer: crate::peer_identity(&parts.extensions),
                remote_addr: remote_addr(&parts.extensions),
            };
            auth.authenticate(&req).await.map_err(refuse)?
        };
        if any_only && identity.tenants != TenantScope::Any {
            return Err(refuse(AuthError::Forbidden(format!(
                "{} carries data of every tenant; {:?} may use only some",
                parts.uri.path(),
                identity.subject
            ))));
        }
        let tenant = self.choose(&parts.headers, &identity).map_err(refuse)?;
        let value = HeaderValue::from_str(tenant.as_str())
            .map_err(|_| refuse(AuthError::BadRequest("tenant is not a header value".into())))?;
        // `insert` replaces every value of the header: exactly one, the chosen tenant.
        parts.headers.insert(self.tenant_header.clone(), value);
        parts.extensions.insert(identity.clone());
        parts.extensions.insert(tenant);
        Ok(Some(identity))
    }

    fn choose(&self, headers: &http::HeaderMap, id: &Identity) -> Result<Tenant, AuthError> {
        let name = &self.tenant_header;
        let mut chosen: Option<Tenant> = None;
        for v in headers.get_all(name) {
            let text = v
                .to_str()
                .map_err(|_| AuthError::BadRequest(format!("{name} is not visible ASCII")))?
                .trim();
            let t = Tenant::new(text).map_err(|e| AuthError::BadRequest(format!("{name}: {e}")))?;
            if !id.tenants.allows(&t) {
                return Err(AuthError::Forbidden(format!(
                    "{:?} may not use tenant {t}",
                    id.subject
                )));
            }
            match &chosen {
                Some(c) if *c != t => {
                    return Err(AuthError::BadRequest(format!("{name} names two tenants")))
                }
                _ => chosen = Some(t),
            }
        }
        if let Some(t) = chosen {
            return Ok(t);
        }
        match &id.tenants {
            TenantScope::Any => Ok(self.default_tenant.clone()),
            TenantScope::Only(list) => list
                .first()
                .cloned()
                .ok_or_else(|| AuthError::Forbidden(format!("{:?} may use no tenant", id.subject))),
        }
    }
}

/// `error_description` as an RFC 7230 quoted-string: printable ASCII, no quotes or backslashes.
fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

impl Refusal {
    /// HTTP status, gRPC code and the message.
    fn status(&self) -> (StatusCode, tonic::Code) {
        match self.error {
            AuthError::Missing(_) | AuthError::Invalid(_) | AuthError::Expired => {
                (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated)
            }
            AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            AuthError::BadRequest(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            AuthError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            }
        }
    }

    /// The response for the caller's protocol.
    pub fn into_response(self, grpc: bool) -> Response<Full<Bytes>> {
        let (status, code) = self.status();
        let message = self.error.to_string();
        if grpc {
            let encoded =
                percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let mut r = Response::new(Full::new(Bytes::new()));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert(
                "grpc-status",
                HeaderValue::from_str(&(code as i32).to_string()).expect("digits"),
            );
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                h.insert("grpc-message", v);
            }
            return r;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match &self.error {
                AuthError::Missing(_) => format!("{} realm=\"clew\"", self.scheme),
                other => format!(
                    "{} realm=\"clew\", error=\"invalid_token\", error_description=\"{}\"",
                    self.scheme,
                    quoted(&other.to_string())
                ),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                h.insert(WWW_AUTHENTICATE, v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TenantGate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<GateBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            if state.auth.is_none() {
                return inner.call(req).await.map(|r| r.map(Either::Left));
            }
            let (mut parts, body) = req.into_parts();
            match state.admit(&mut parts).await {
                Ok(_) => {
                    let req = Request::from_parts(parts, body);
                    inner.call(req).await.map(|r| r.map(Either::Left))
                }
                Err(refusal) => {
                    tracing::debug!(
                        listener = %state.listener,
                        path = %parts.uri.path(),
                        reason = %refusal.error,
                        "request refused by the tenant gate"
                    );
                    Ok(refusal
                        .into_response(is_grpc(&parts.headers))
                        .map(Either::Right))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_token, token_file_line, BearerTokens};
    use axum::body::Body;
    use axum::routing::get;
    use http::HeaderMap;
    use tower::ServiceExt;

    fn t(s: &str) -> Tenant {
        Tenant::new(s).unwrap()
    }

    /// A gate with three tokens: `a` (team-a, team-a2), `b` (team-b), `admin` (every tenant).
    fn gate(dir: &std::path::Path) -> TenantGateLayer {
        let path = dir.join("tokens.yaml");
        std::fs::write(
            &path,
            [
                token_file_line(
                    "a",
                    &hash_token("tok-a"),
                    &TenantScope::Only(vec![t("team-a"), t("team-a2")]),
                ),
                token_file_line(
                    "b",
                    &hash_token("tok-b"),
                    &TenantScope::Only(vec![t("team-b")]),
                ),
                token_file_line("admin", &hash_token("tok-admin"), &TenantScope::Any),
            ]
            .join("\n"),
        )
        .unwrap();
        let auth: Arc<dyn Authenticator> =
            Arc::new(BearerTokens::open(&path, std::time::Duration::from_secs(60)).unwrap());
        TenantGateLayer::new("test", Some(auth), "X-Scope-OrgID")
            .unwrap()
            .open_paths(&["/ready", "/static/*"])
            .any_tenant_paths(&["/metrics"], Some(hash_token("scrape")))
    }

    /// Echoes what a handler sees: every tenant header value and the identity's subject.
    fn app(layer: TenantGateLayer) -> axum::Router {
        let echo = |req: http::Request<Body>| async move {
            let tenants: Vec<String> = req
                .headers()
                .get_all("x-scope-orgid")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            let who = req
                .extensions()
                .get::<Identity>()
                .map(|i| i.subject.clone())
                .unwrap_or_default();
            format!("{}|{who}", tenants.join(","))
        };
        axum::Router::new()
            .route("/api/traces", get(echo))
            .route("/ready", get(echo))
            .route("/metrics", get(echo))
            .route("/static/{*p}", get(echo))
            .layer(layer)
    }

    async fn call(
        app: &axum::Router,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut b = http::Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, h, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn the_tenant_comes_from_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(gate(dir.path()));
        let bearer = |tok: &str| format!("Bearer {tok}");
        // No header: the identity's first tenant.
        let (s, _, body) = call(&app, "/api/traces", &[("authorization", &bearer("tok-a"))]).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "team-a|a"));
        // A header naming an allowed tenant: that one.
        let (s, _, body) = call(
            &app,
            "/api/traces",
            &[
                ("authorization", &bearer("tok-a")),
                ("X-Scope-OrgID", "team-a2"),
            ],
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "team-a2|a"));
        // Duplicates of the same tenant are collapsed into one header.
        let (s, _, body) = call(
            &app,
            "/api/traces",
            &[
                ("authorization", &bearer("tok-a")),
                ("x-scope-orgid", "team-a2"),
                ("x-scope-orgid", "team-a2"),
            ],
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "team-a2|a"));
        // Another tenant: 403, whatever else is sent.
        for h in [
            vec![("x-scope-orgid", "team-b")],
            vec![("x-scope-orgid", "team-a"), ("x-scope-orgid", "team-b")],
        ] {
            let mut hs = vec![("authorization", bearer("tok-a"))];
            hs.extend(h.iter().map(|(k, v)| (*k, v.to_string())));
            let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, h, body) = call(&app, "/api/traces", &hs).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
            assert!(h.get(WWW_AUTHENTICATE).is_none());
            assert_eq!(h.get(CONTENT_TYPE).unwrap(), "application/json");
            assert!(
                body.contains("\"error\"") && body.contains("team-b"),
                "{body}"
            );
        }
        // Two different allowed tenants: ambiguous, 400. A malformed tenant: 400.
        let (s, _, _) = call(
            &app,
            "/api/traces",
            &[
                ("authorization", &bearer("tok-a")),
                ("x-scope-orgid", "team-a"),
                ("x-scope-orgid", "team-a2"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _, _) = call(
            &app,
            "/api/traces",
            &[
                ("authorization", &bearer("tok-a")),
                ("x-scope-orgid", "../x"),
            ],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // An identity for every tenant: the header chooses; absent → the default tenant.
        let (s, _, body) = call(
            &app,
            "/api/traces",
            &[
                ("authorization", &bearer("tok-admin")),
                ("x-scope-orgid", "team-b"),
            ],
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "team-b|admin"));
        let (s, _, body) = call(
            &app,
            "/api/traces",
            &[("authorization", &bearer("tok-admin"))],
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "single-tenant|admin"));
    }

    #[tokio::test]
    async fn refusals_and_open_paths() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(gate(dir.path()));
        // No credentials: 401 with a challenge and no error code.
        let (s, h, body) = call(&app, "/api/traces", &[("x-scope-orgid", "team-a")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(h.get(WWW_AUTHENTICATE).unwrap(), "Bearer realm=\"clew\"");
        assert!(body.starts_with("{\"error\":"), "{body}");
        // A bad token: 401 with error="invalid_token".
        let (s, h, _) = call(&app, "/api/traces", &[("authorization", "Bearer nope")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let c = h.get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
        assert!(
            c.starts_with("Bearer realm=\"clew\", error=\"invalid_token\""),
            "{c}"
        );
        let (s, _, _) = call(&app, "/api/traces", &[("authorization", "Basic eDp5")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // Open paths need nothing and are left untouched.
        let (s, _, body) = call(&app, "/ready", &[]).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "|"));
        let (s, _, _) = call(&app, "/static/js/main.js", &[]).await;
        assert_eq!(s, StatusCode::OK);
        // Unknown paths are not open.
        let (s, _, _) = call(&app, "/readyz", &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // /metrics: every tenant's data — an admin identity or the scrape token only.
        let (s, _, _) = call(&app, "/metrics", &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _, _) = call(&app, "/metrics", &[("authorization", "Bearer tok-a")]).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = call(&app, "/metrics", &[("authorization", "Bearer tok-admin")]).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, body) = call(&app, "/metrics", &[("authorization", "Bearer scrape")]).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, "single-tenant|metrics-token")
        );
        // The scrape token opens nothing else.
        let (s, _, _) = call(&app, "/api/traces", &[("authorization", "Bearer scrape")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn grpc_requests_get_grpc_errors() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(gate(dir.path()));
        let grpc = ("content-type", "application/grpc+proto");
        for (headers, code) in [
            (vec![grpc], "16"),
            (vec![grpc, ("authorization", "Bearer nope")], "16"),
            (
                vec![
                    grpc,
                    ("authorization", "Bearer tok-b"),
                    ("x-scope-orgid", "team-a"),
                ],
                "7",
            ),
        ] {
            let (s, h, body) = call(&app, "/api/traces", &headers).await;
            assert_eq!(s, StatusCode::OK, "gRPC errors are trailers-only responses");
            assert_eq!(h.get("grpc-status").unwrap(), code);
            assert_eq!(h.get(CONTENT_TYPE).unwrap(), "application/grpc");
            assert!(h.get("grpc-message").is_some());
            assert!(body.is_empty());
        }
    }

    #[tokio::test]
    async fn auth_off_passes_everything_untouched() {
        let app = app(TenantGateLayer::new("test", None, "X-Scope-OrgID").unwrap());
        let (s, _, body) = call(
            &app,
            "/api/traces",
            &[("x-scope-orgid", "a"), ("x-scope-orgid", "b")],
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "a,b|"));
    }

    #[tokio::test]
    async fn peer_identity_reaches_the_authenticator() {
        // mTLS: the TLS listener inserts a PeerIdentity; the gate hands it to the authenticator.
        let cfg: crate::auth::MtlsConfig =
            serde_yaml::from_str("rules: [{dns: \"*.team-a.svc\", tenants: [team-a]}]").unwrap();
        let auth: Arc<dyn Authenticator> = Arc::new(crate::auth::Mtls::new(&cfg).unwrap());
        let layer = TenantGateLayer::new("test", Some(auth), "X-Scope-OrgID").unwrap();
        let mut parts = http::Request::builder()
            .uri("/v1/traces")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let refusal = layer.admit(&mut parts).await.unwrap_err();
        assert!(matches!(refusal.error, AuthError::Missing(_)));
        parts.extensions.insert(crate::PeerIdentity {
            dns_names: vec!["ingest.team-a.svc".into()],
            ..Default::default()
        });
        let id = layer.admit(&mut parts).await.unwrap().unwrap();
        assert_eq!(id.tenants, TenantScope::Only(vec![t("team-a")]));
        assert_eq!(parts.headers.get("x-scope-orgid").unwrap(), "team-a");
        assert_eq!(parts.extensions.get::<Tenant>(), Some(&t("team-a")));
        parts
            .headers
            .insert("x-scope-orgid", HeaderValue::from_static("team-b"));
        let refusal = layer.admit(&mut parts).await.unwrap_err();
        let resp = refusal.into_response(false);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
}
