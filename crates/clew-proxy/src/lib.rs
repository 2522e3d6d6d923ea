//! # clew-proxy — the tracing sidecar for services that cannot be instrumented
//!
//! **Room:** the sidecar room. `clew proxy --config FILE` runs it next to a legacy HTTP service
//! (an old runtime, a vendor binary, code nobody may change) and joins that service to the trace:
//!
//! * **Ingress** (reverse proxy in front of the app): reads W3C `traceparent`/`tracestate`/
//!   `baggage`, B3 single and multi, Jaeger `uber-trace-id` and `X-Request-ID`/`X-Correlation-ID`
//!   in a configured precedence; a malformed header starts a new trace and is never forwarded;
//!   starts a trace (head sampling) when none came; forwards the context the app understands
//!   (keep, translate, add `X-Request-ID`); records a SERVER span (HTTP semantic conventions).
//! * **Egress** (configured upstream routes and/or an HTTP forward proxy for the app's own
//!   calls): ties each outgoing request to the incoming one (its own context header, the
//!   request id it echoes, or the only request in flight), injects the context in the
//!   destination's format under `clew-propagation`'s baggage policy, records a CLIENT span.
//! * Spans are batched and exported over OTLP with `clew-export`'s exporter.
//!
//! A real proxy on hyper 1: HTTP/1.1 and HTTP/2 (both sides), keep-alive, streaming bodies
//! (never buffered), upgrades (WebSocket) passed through, TLS on both sides (`clew-security`,
//! rustls on aws-lc-rs), timeouts (502 on connect failure, 504 past `response_header`, spans
//! marked as errors), graceful shutdown.
//!
//! **May depend on:** `clew-propagation` (all header parsing), `clew-model` (OTLP types),
//! `clew-export` (the OTLP exporter), `clew-security` (TLS listeners and client configs), hyper.
//! **Must not:** depend on the store, receivers, query or the `clew` binary; it may touch only
//! `crates/clew-proxy/**`.

pub mod body;
pub mod config;
pub mod context;
pub mod correlate;
pub mod proxy;
pub mod route;
pub mod span;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use clew_export::{ExporterMetrics, OtlpExporter, Protocol};
use clew_security::tls::{Alpn, Listener, ServerTls, TlsError};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;

pub use config::{ConfigError, ProxyConfig};

use crate::config::Timeouts;
use crate::context::EgressPolicy;
use crate::correlate::InFlight;
use crate::proxy::{Handler, IngressRole, Peer, Role, Shared, Upstream};
use crate::route::Routes;
use crate::span::SpanExport;

/// Start-up and run-time errors, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(TlsError),
    #[error(
        "key `{key}`: cannot listen on {addr}: {source} (fix: free the port or choose another)"
    )]
    Bind {
        key: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("key `egress.baggage_hmac_key_file`: cannot read {path}: {source} (fix: point at a file holding the secret)")]
    HmacKey {
        path: String,
        source: std::io::Error,
    },
    #[error("key `exporters`: {0}")]
    Export(#[from] clew_export::ExportError),
}

/// One listener to open: its config key, address, TLS, role and timeouts.
type ListenerPlan = (String, SocketAddr, Option<Arc<ServerTls>>, Role, Timeouts);

/// Everything built from the config, before any port is opened.
struct Built {
    listeners: Vec<ListenerPlan>,
    egress: EgressPolicy,
}

fn build(cfg: &ProxyConfig) -> Result<Built, ProxyError> {
    let mut listeners = Vec::new();
    if let Some(i) = &cfg.ingress {
        let tls = match &i.tls {
            Some(t) => Some(
                ServerTls::new(t.clone(), "ingress.tls", Alpn::Http).map_err(ProxyError::Tls)?,
            ),
            None => None,
        };
        let url = config::UpstreamUrl::parse(&i.upstream.endpoint).map_err(|m| ConfigError {
            origin: "config".into(),
            key: "ingress.upstream.endpoint".into(),
            message: m,
        })?;
        let client = proxy::client(
            &i.upstream.tls,
            "ingress.upstream.tls",
            i.upstream.protocol,
            &i.timeouts,
        )?;
        let routes = Routes::parse(&i.routes).map_err(|m| ConfigError {
            origin: "config".into(),
            key: "ingress.routes".into(),
            message: m,
        })?;
        listeners.push((
            "ingress.endpoint".to_string(),
            i.endpoint,
            tls,
            Role::Ingress(IngressRole {
                upstream: Upstream {
                    url,
                    protocol: i.upstream.protocol,
                    client,
                },
                extract: i.extract.clone(),
                forward: i.forward.clone(),
                routes,
            }),
            i.timeouts.clone(),
        ));
    }
    let e = &cfg.egress;
    for (n, r) in e.routes.iter().enumerate() {
        let key = format!("egress.routes[{n}]");
        let url = config::UpstreamUrl::parse(&r.upstream.endpoint).map_err(|m| ConfigError {
            origin: "config".into(),
            key: format!("{key}.upstream.endpoint"),
            message: m,
        })?;
        let client = proxy::client(
            &r.upstream.tls,
            &format!("{key}.upstream.tls"),
            r.upstream.protocol,
            &e.timeouts,
        )?;
        listeners.push((
            format!("{key}.endpoint"),
            r.endpoint,
            None,
            Role::EgressRoute(Upstream {
                url,
                protocol: r.upstream.protocol,
                client,
            }),
            e.timeouts.clone(),
        ));
    }
    if let Some(f) = &e.forward_proxy {
        let client = proxy::client(
            &f.tls,
            "egress.forward_proxy.tls",
            config::UpstreamProtocol::Http1,
            &e.timeouts,
        )?;
        listeners.push((
            "egress.forward_proxy.endpoint".into(),
            f.endpoint,
            None,
            Role::ForwardProxy(client),
            e.timeouts.clone(),
        ));
    }
    let hmac = match &e.baggage_hmac_key_file {
        Some(p) => Some(std::fs::read(p).map_err(|source| ProxyError::HmacKey {
            path: p.display().to_string(),
            source,
        })?),
        None => None,
    };
    Ok(Built {
        listeners,
        egress: EgressPolicy::new(e, hmac),
    })
}

/// Checks what `run` would build (TLS files, upstream URLs, the HMAC key file) without opening
/// a port: `clew proxy check-config`.
pub fn check(cfg: &ProxyConfig) -> Result<(), ProxyError> {
    build(cfg).map(|_| ())
}

/// Runs the proxy until `shutdown` resolves, then stops accepting, lets requests in flight
/// finish (up to `shutdown_timeout`), and exports the spans still queued.
pub async fn run(cfg: ProxyConfig, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    let built = build(&cfg)?;
    let (kind, exp_cfg) = cfg.exporter();
    let protocol = Protocol::from_type(kind).unwrap_or(Protocol::Grpc);
    let data_dir = cfg
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let exporter =
        OtlpExporter::start(kind, protocol, exp_cfg, &data_dir, &ExporterMetrics::new())?;
    let export = SpanExport::start(exporter, &cfg.service, &cfg.batch);
    let shared = Arc::new(Shared {
        spans: export.queue.clone(),
        inflight: InFlight::new(),
        request_id_headers: cfg
            .request_id_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect(),
        ratio: cfg.sampling.ratio,
        egress: built.egress,
        single_in_flight: cfg.egress.single_in_flight,
    });
    // Bind every port before serving any: a config that cannot start fails whole.
    let mut bound = Vec::new();
    for (key, addr, tls, role, timeouts) in built.listeners {
        let is_tls = tls.is_some();
        if let Some(t) = &tls {
            t.spawn_reloader();
        }
        let l = Listener::bind(addr, tls)
            .await
            .map_err(|source| ProxyError::Bind {
                key: key.clone(),
                addr,
                source,
            })?;
        tracing::info!(listener = %key, address = %l.local_addr(), tls = is_tls, "clew proxy listening");
        let handler = Arc::new(Handler {
            role,
            shared: shared.clone(),
            tls: is_tls,
            timeouts: timeouts.clone(),
        });
        bound.push((l, handler, timeouts));
    }
    drop(shared);
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let mut tasks = Vec::new();
    for (l, h, t) in bound {
        tasks.push(tokio::spawn(accept_loop(
            l,
            h,
            t,
            stop_rx.clone(),
            graceful.clone(),
        )));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    if tokio::time::timeout(cfg.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after shutdown_timeout; closing their connections"
        );
    }
    let dropped = export.queue.dropped();
    export.shutdown(cfg.shutdown_timeout).await;
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "spans were dropped because the export queue was full"
        );
    }
    tracing::info!("clew proxy stopped");
    Ok(())
}

async fn accept_loop(
    mut listener: Listener,
    handler: Arc<Handler>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request_header)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        let stream = tokio::select! {
            s = listener.next() => s,
            _ = stop.changed() => return,
        };
        let peer = stream.peer().remote_addr.map(|a| Arc::new(Peer::new(a)));
        let h = handler.clone();
        let svc = service_fn(move |req| {
            let h = h.clone();
            let peer = peer.clone();
            async move { Ok::<_, std::convert::Infallible>(h.handle(peer.as_deref(), req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
