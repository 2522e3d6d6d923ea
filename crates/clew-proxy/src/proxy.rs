//! The request path: one `Handler` per listener (ingress, an egress route, the forward proxy),
//! forwarding with hyper's client, streaming both bodies, passing upgrades through, and
//! recording one span per request.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clew_model::otlp::trace::span::SpanKind;
use clew_propagation::Context;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::body::{full, Counted, ProxyBody};
use crate::config::{Format, ForwardConfig, Timeouts, UpstreamProtocol, UpstreamUrl};
use crate::context::{self, EgressPolicy};
use crate::correlate::{Correlation, InFlight, Registration};
use crate::route::Routes;
use crate::span::{SpanQueue, SpanRecord};
use crate::ProxyError;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Counted<Incoming>>;

/// Builds the client for one upstream (or the forward proxy): connect timeout, idle pool
/// timeout, TLS from `clew-security` (aws-lc-rs), HTTP/1.1 or HTTP/2.
pub fn client(
    tls: &clew_security::tls::TlsClientSettings,
    key: &str,
    protocol: UpstreamProtocol,
    timeouts: &Timeouts,
) -> Result<HttpClient, ProxyError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeouts.connect));
    let cfg = clew_security::tls::client_config(tls, key, &[]).map_err(ProxyError::Tls)?;
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http();
    let https = match protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(protocol == UpstreamProtocol::Http2)
        .build(https))
}

/// A fixed upstream.
pub struct Upstream {
    pub url: UpstreamUrl,
    pub protocol: UpstreamProtocol,
    pub client: HttpClient,
}

/// State shared by every listener.
pub struct Shared {
    pub spans: SpanQueue,
    pub inflight: Arc<InFlight>,
    pub request_id_headers: Vec<HeaderName>,
    pub ratio: f64,
    pub egress: EgressPolicy,
    pub single_in_flight: bool,
}

pub struct IngressRole {
    pub upstream: Upstream,
    pub extract: Vec<Format>,
    pub forward: ForwardConfig,
    pub routes: Routes,
}

pub enum Role {
    Ingress(IngressRole),
    EgressRoute(Upstream),
    ForwardProxy(HttpClient),
}

pub struct Handler {
    pub role: Role,
    pub shared: Arc<Shared>,
    /// Whether the listener speaks TLS (`url.scheme`).
    pub tls: bool,
    pub timeouts: Timeouts,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's: never
/// forwarded, except the upgrade pair when an upgrade is being passed through.
fn remove_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names (standard names compare as
    // enum tags) instead of a dozen removals that each hash a name, on both sides of every
    // request.
    if !upgrade && !h.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    *n == header::CONNECTION
        || *n == header::UPGRADE
        || *n == header::TE
        || *n == header::TRAILER
        || *n == header::TRANSFER_ENCODING
        || *n == header::PROXY_AUTHORIZATION
        || *n == header::PROXY_AUTHENTICATE
        || n.as_str() == "keep-alive"
        || n.as_str() == "proxy-connection"
}

fn is_upgrade<T>(req: &Request<T>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// `http.request.method` per the semantic conventions: known methods as they are, others
/// `_OTHER` (an unbounded attribute would otherwise come from the client).
fn method_attr(m: &Method) -> &str {
    match *m {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS
        | Method::PATCH
        | Method::CONNECT
        | Method::TRACE => m.as_str(),
        _ => "_OTHER",
    }
}

/// The method as a span name: `_OTHER` is `HTTP` there (semantic conventions).
fn name_method(m: &Method) -> &str {
    match method_attr(m) {
        "_OTHER" => "HTTP",
        known => known,
    }
}

/// The calling side of one connection, formatted once per connection rather than per request.
pub struct Peer {
    pub ip: String,
    pub port: u16,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            ip: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

fn error_response(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Splits `host[:port]` for `server.address` / `server.port`.
fn host_port(authority: &str, default_port: u16) -> (String, i64) {
    // The usual `name:port` / `name` (letters, digits, `.`, `-`) without building an
    // `Authority` (which copies the text); anything else (IPv6, odd bytes) takes the parser.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse::<u16>().ok()),
        Some(_) => ("", None),
        None => (authority, Some(default_port)),
    };
    if let Some(port) = port {
        if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return (host.to_string(), i64::from(port));
        }
    }
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => (
            a.host().trim_matches(['[', ']']).to_string(),
            i64::from(a.port_u16().unwrap_or(default_port)),
        ),
        Err(_) => (authority.to_string(), i64::from(default_port)),
    }
}

impl Handler {
    pub async fn handle(
        self: Arc<Self>,
        peer: Option<&Peer>,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        match &self.role {
            Role::Ingress(ing) => self.ingress(ing, peer, req).await,
            Role::EgressRoute(up) => {
                let scheme = if up.url.https { "https" } else { "http" };
                self.egress(
                    &up.client,
                    scheme,
                    up.url.authority.clone(),
                    up.protocol,
                    req,
                )
                .await
            }
            Role::ForwardProxy(client) => {
                if req.method() == Method::CONNECT {
                    // A tunnel carries TLS end to end: no header can be added, so no context.
                    return error_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "clew proxy: CONNECT tunnels are not traced; send http:// URLs through the proxy, or configure egress.routes with an https:// upstream",
                    );
                }
                let (Some(scheme), Some(auth)) = (
                    req.uri().scheme_str().map(str::to_string),
                    req.uri().authority().cloned(),
                ) else {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "clew proxy: this is an HTTP forward proxy; the request target must be an absolute URL",
                    );
                };
                if scheme != "http" && scheme != "https" {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "clew proxy: only http:// and https:// targets",
                    );
                }
                self.egress(client, &scheme, auth, UpstreamProtocol::Http1, req)
                    .await
            }
        }
    }

    async fn ingress(
        &self,
        ing: &IngressRole,
        peer: Option<&Peer>,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let sh = &self.shared;
        let inc = context::extract(req.headers(), &ing.extract, &sh.request_id_headers);
        let sc = context::span_for(
            inc.parent.as_ref(),
            inc.request_id_trace,
            inc.sampling,
            sh.ratio,
        );
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route = ing.routes.route_for(&path);
        let name = match route {
            Some(r) => {
                let m = name_method(&method);
                let mut n = String::with_capacity(m.len() + 1 + r.len());
                n.push_str(m);
                n.push(' ');
                n.push_str(r);
                n
            }
            None => name_method(&method).to_string(),
        };
        let mut span = SpanRecord::start(&sc, inc.parent.as_ref(), SpanKind::Server, name);
        span.str("http.request.method", method_attr(&method));
        if method_attr(&method) == "_OTHER" {
            span.str("http.request.method_original", method.as_str());
        }
        span.str("url.path", &path);
        if let Some(q) = req.uri().query() {
            span.str("url.query", q);
        }
        span.str("url.scheme", if self.tls { "https" } else { "http" });
        if let Some(r) = route {
            span.str("http.route", r);
        }
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(a) = &authority {
            let (h, p) = host_port(a, if self.tls { 443 } else { 80 });
            span.str("server.address", h);
            span.int("server.port", p);
        }
        if let Some(p) = peer {
            span.str("client.address", p.ip.as_str());
            span.int("client.port", i64::from(p.port));
            span.str("network.peer.address", p.ip.as_str());
            span.int("network.peer.port", i64::from(p.port));
        }
        span.str("network.protocol.version", version_str(req.version()));
        if let Some(ua) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            span.str("user_agent.original", ua);
        }
        span.str(
            "clew.proxy.context.format",
            inc.format.map(Format::name).unwrap_or("none"),
        );
        if !inc.malformed.is_empty() {
            let m: Vec<&str> = inc.malformed.iter().map(|f| f.name()).collect();
            span.str("clew.proxy.context.malformed", m.join(","));
        }
        // For HTTP/2 clients the host is in the URI only; keep it for an HTTP/1 app.
        if !req.headers().contains_key(header::HOST) {
            if let Some(v) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let rid = context::forward_to_app(
            req.headers_mut(),
            &sc,
            &inc,
            &ing.forward,
            &sh.request_id_headers,
        );
        if let Some(r) = &rid {
            span.str("http.request.header.x-request-id", r.clone());
        }
        let registration = sh.inflight.register(
            rid,
            Context {
                span: Some(sc),
                baggage: inc.baggage,
                sampling: inc.sampling,
            },
        );
        let up = &ing.upstream;
        let scheme = if up.url.https { "https" } else { "http" };
        self.forward(
            &up.client,
            scheme,
            up.url.authority.clone(),
            up.protocol,
            req,
            span,
            Some(registration),
            true,
        )
        .await
    }

    async fn egress(
        &self,
        client: &HttpClient,
        scheme: &str,
        authority: http::uri::Authority,
        protocol: UpstreamProtocol,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let sh = &self.shared;
        // The app's own context header (a partly instrumented app) wins; else correlate.
        let own = context::extract(
            req.headers(),
            &[
                Format::Tracecontext,
                Format::B3,
                Format::B3multi,
                Format::Jaeger,
            ],
            &[],
        );
        let (parent_cx, how) = match own.parent {
            Some(p) => (
                Context {
                    span: Some(p),
                    baggage: own.baggage,
                    sampling: own.sampling,
                },
                Correlation::Header,
            ),
            None => {
                let rid = sh
                    .request_id_headers
                    .iter()
                    .find_map(|h| req.headers().get(h))
                    .and_then(|v| v.to_str().ok());
                let (cx, how) = sh.inflight.lookup(rid, sh.single_in_flight);
                (cx.map(|c| (*c).clone()).unwrap_or_default(), how)
            }
        };
        let sc = context::span_for(parent_cx.span.as_ref(), None, parent_cx.sampling, sh.ratio);
        let method = req.method().clone();
        let mut span = SpanRecord::start(
            &sc,
            parent_cx.span.as_ref(),
            SpanKind::Client,
            name_method(&method).to_string(),
        );
        span.str("http.request.method", method_attr(&method));
        let default_port = if scheme == "https" { 443 } else { 80 };
        span.str("server.address", authority.host().trim_matches(['[', ']']));
        span.int(
            "server.port",
            i64::from(authority.port_u16().unwrap_or(default_port)),
        );
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // url.full without the query: it may carry secrets the app never meant to log.
        let path_only = pq.split('?').next().unwrap_or("/");
        span.str("url.full", format!("{scheme}://{authority}{path_only}"));
        span.str("network.protocol.version", version_str(req.version()));
        span.str("clew.proxy.correlation", how.as_str());
        let out = Context {
            span: Some(sc),
            baggage: parent_cx.baggage,
            sampling: parent_cx.sampling,
        };
        let fmt = sh.egress.inject(req.headers_mut(), &out, authority.host());
        span.str("clew.proxy.context.format", fmt.name());
        self.forward(client, scheme, authority, protocol, req, span, None, false)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        client: &HttpClient,
        scheme: &str,
        authority: http::uri::Authority,
        protocol: UpstreamProtocol,
        mut req: Request<Incoming>,
        mut span: SpanRecord,
        registration: Option<Registration>,
        server_side: bool,
    ) -> Response<ProxyBody> {
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        remove_hop_by_hop(&mut parts.headers, upgrade);
        // The target's path and query are kept as they are (a cheap clone of shared bytes, not
        // a copy through a string and a re-parse).
        let mut target = std::mem::take(&mut parts.uri).into_parts();
        // Callers pass "http" or "https" only (upstream URLs are parsed as such; the forward
        // proxy refuses other schemes before it gets here).
        target.scheme = Some(if scheme == "https" {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        target.authority = Some(authority);
        if target.path_and_query.is_none() {
            target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = match Uri::from_parts(target) {
            Ok(u) => u,
            Err(e) => {
                span.str("error.type", "invalid_uri");
                span.error(e.to_string());
                span.end(&self.shared.spans);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "clew proxy: invalid request target",
                );
            }
        };
        parts.version = match protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        let req_bytes = Arc::new(AtomicU64::new(0));
        let req = Request::from_parts(parts, Counted::new(body, req_bytes.clone(), None));
        let wait = self.timeouts.response_header;
        let result = tokio::time::timeout(wait, client.request(req)).await;
        let spans = self.shared.spans.clone();
        let mut resp = match result {
            Err(_) => {
                span.str("error.type", "timeout");
                span.int("http.response.status_code", 504);
                span.error(format!(
                    "upstream sent no response headers within {}",
                    humantime::format_duration(wait)
                ));
                span.end(&spans);
                drop(registration);
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "clew proxy: the upstream did not answer in time",
                );
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "connect_error"
                } else {
                    "upstream_error"
                };
                let detail = error_chain(&e);
                span.str("error.type", kind);
                span.int("http.response.status_code", 502);
                span.error(detail.clone());
                span.end(&spans);
                drop(registration);
                tracing::debug!(error = %detail, "upstream request failed");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "clew proxy: the upstream could not be reached or failed",
                );
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        span.int("http.response.status_code", i64::from(status.as_u16()));
        // Server spans: only 5xx is an error (4xx is the client's); client spans: 4xx too.
        let failed = status.is_server_error() || (!server_side && status.is_client_error());
        if failed {
            span.str("error.type", status.as_u16().to_string());
            span.error("");
        }
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (Ok(a), Ok(b)) = tokio::join!(client_side, upstream_side) else {
                        tracing::debug!("upgrade failed on one side");
                        return;
                    };
                    let mut a = TokioIo::new(a);
                    let mut b = TokioIo::new(b);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
        }
        remove_hop_by_hop(resp.headers_mut(), switching);
        let (parts, body) = resp.into_parts();
        let on_end = move |n: u64, complete: bool| {
            span.int("http.response.body.size", n as i64);
            span.int(
                "http.request.body.size",
                req_bytes.load(std::sync::atomic::Ordering::Relaxed) as i64,
            );
            if !complete {
                span.str("clew.proxy.response.incomplete", "true");
            }
            drop(registration);
            span.end(&spans);
        };
        let body = Counted::new(body, Arc::new(AtomicU64::new(0)), Some(Box::new(on_end)));
        Response::from_parts(parts, body.boxed_unsync())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// How long a connection may take to shut down before it is closed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        h.insert(header::HOST, HeaderValue::from_static("x"));
        let before = h.clone();
        // None present: untouched (the fast path).
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["content-type", "host"]);
        // Any single one of them takes the full path.
        for n in [
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = before.clone();
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("v"));
            remove_hop_by_hop(&mut h, false);
            assert_eq!(h, before, "{n}");
        }
        // An upgrade keeps `upgrade` and says so in `connection`.
        let mut h = before.clone();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }

    /// What `host_port` did before its fast path: the `Authority` parser alone.
    fn host_port_parsed(authority: &str, default_port: u16) -> (String, i64) {
        match authority.parse::<http::uri::Authority>() {
            Ok(a) => (
                a.host().trim_matches(['[', ']']).to_string(),
                i64::from(a.port_u16().unwrap_or(default_port)),
            ),
            Err(_) => (authority.to_string(), i64::from(default_port)),
        }
    }

    #[test]
    fn host_port_fast_path_agrees_with_the_parser() {
        let cases: &[(&str, u16, (&str, i64))] = &[
            ("example.com", 80, ("example.com", 80)),
            ("example.com:8080", 80, ("example.com", 8080)),
            ("127.0.0.1:9", 443, ("127.0.0.1", 9)),
            ("[::1]:8443", 80, ("::1", 8443)),
            ("[::1]", 443, ("::1", 443)),
            ("my-app.internal:0", 80, ("my-app.internal", 0)),
        ];
        for (text, default, (host, port)) in cases {
            let got = host_port(text, *default);
            assert_eq!((got.0.as_str(), got.1), (*host, *port), "{text}");
        }
        // Odd inputs (not a port, out of range, odd bytes) give what the parser gives.
        for text in [
            "host:+1",
            "host:99999",
            "host:",
            ":80",
            "a b:1",
            "h_st:1",
            "x@y:1",
            "Host.COM:65535",
            "[::1]:x",
            "",
        ] {
            assert_eq!(host_port(text, 80), host_port_parsed(text, 80), "{text:?}");
        }
    }

    #[test]
    fn span_names_use_http_for_unknown_methods() {
        assert_eq!(name_method(&Method::POST), "POST");
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_attr(&odd), "_OTHER");
        assert_eq!(name_method(&odd), "HTTP");
    }
}
