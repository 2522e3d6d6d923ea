//! `clew serve`: wires receivers → pipeline → store → query APIs, and shuts down in that order so
//! everything acknowledged is flushed.

use crate::config::Config;
use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clew::target::Target;
use clew_model::Tenant;
use clew_receive::{ReceiverConfig, ReceiverMetrics};
use clew_security::auth::TenantGateLayer;
use clew_security::tls::{Alpn, Listener, ServerTls};
use clew_store::{Store, StoreMetrics, TraceReader};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Opens a listener: the one way `serve` binds a port, so every listener gets TLS (and mutual
/// TLS, certificate reload, the caller's `PeerIdentity` on each request) from its `tls:` block.
/// `key` is the listener's section in [`Config::listeners`] (e.g. `query`), which a new listener
/// must be added to.
async fn bind(cfg: &Config, key: &str, alpn: Alpn) -> anyhow::Result<Listener> {
    let l = cfg
        .listeners()
        .into_iter()
        .find(|l| l.key == key)
        .with_context(|| format!("`{key}` is not a listener of Config::listeners"))?;
    let addr = l.addr;
    let tls = match l.tls {
        Some(settings) => {
            let tls = ServerTls::new(settings.clone(), &format!("{key}.tls"), alpn)?;
            for w in tls.warnings() {
                tracing::warn!("{w}");
            }
            tls.spawn_reloader();
            tracing::info!(
                endpoint = %addr,
                client_certificates = if tls.requires_client_certificate() { "required" } else { "not requested" },
                reload_interval = %settings.reload_every().map(|d| humantime::format_duration(d).to_string()).unwrap_or_else(|| "off".into()),
                "TLS on for `{key}`"
            );
            Some(tls)
        }
        None => None,
    };
    Listener::bind(addr, tls).await.with_context(|| {
        format!(
            "cannot listen on {addr} (`{key}.endpoint`); fix: free the port or choose another in the config"
        )
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Safe defaults: listeners bind to loopback unless configured; say so when one is exposed
    // without TLS (or authentication).
    for w in cfg.listener_warnings() {
        tracing::warn!("{w}");
    }
    let mut registry = Registry::default();
    let store_metrics = StoreMetrics::default();
    store_metrics.register(&mut registry);
    let receiver_metrics = ReceiverMetrics::new();
    receiver_metrics.register(&mut registry);
    // Per-tenant limits: one limiter for every receiver; the per-tenant file is re-read when it
    // changes (a broken file keeps the previous limits).
    let limiter = cfg.limits.as_ref().map(|l| {
        let limiter = Arc::new(clew_security::limits::Limiter::new(l));
        limiter.register(&mut registry);
        limiter.spawn_reloader();
        limiter
    });

    // The data dir belongs to one process: lock it before anything in it is written (the audit
    // log below, then the store, which shares this lock). A second `clew serve` on the same
    // storage.path stops here, naming the holder's PID.
    let _data_dir_lock = clew_store::dir_lock::lock_data_dir(&cfg.storage.path)?;
    // The audit log: configuration, retention deletions, erasures, holds, key rotations.
    let audit_path = cfg.storage.path.join("audit").join("audit.log");
    let audit = Arc::new(
        clew_audit::AuditLog::open(&audit_path)
            .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?,
    );
    audit
        .append(
            clew_audit::Event::new(clew_audit::actions::CONFIG_LOADED)
                .with_actor(Some("system".into()))
                .with_details(cfg.audit_summary()),
        )
        .context("cannot write the audit log")?;
    let mut store_cfg = cfg.store_config();
    store_cfg.events = Some(Arc::new(crate::admin::AuditEvents(audit.clone())));
    let keys = match &cfg.storage.encryption {
        Some(e) => Some(open_keys(e, &mut registry).await?),
        None => None,
    };
    store_cfg.keys = keys.as_ref().map(|k| k.manager.clone());
    // Per-tenant retention comes from the same live-reloaded overrides file as the limits.
    store_cfg.retention_policy = limiter
        .as_ref()
        .map(|l| Arc::new(OverridesRetention(l.clone())) as Arc<dyn clew_store::RetentionPolicy>);
    // Free-space watermarks: refuse spans retryably before the data directory's disk is full.
    std::fs::create_dir_all(&store_cfg.data_dir)
        .with_context(|| format!("cannot create {}", store_cfg.data_dir.display()))?;
    let disk = Arc::new(clew_store::disk_guard::DiskGuard::new(
        cfg.storage.disk.clone(),
        &store_cfg.data_dir,
    ));
    disk.register(&mut registry);
    store_cfg.disk = Some(disk);
    let target = cfg.target;
    // A collector stores nothing; every other role opens the store (a querier's or compactor's
    // WAL stays empty: they only read and rewrite the shared bucket).
    let store = if target.stores() {
        let (store, report) = Store::open(store_cfg.clone(), store_metrics)
            .await
            .with_context(|| {
                format!("cannot open the store in {}", store_cfg.data_dir.display())
            })?;
        tracing::info!(
            data_dir = %store_cfg.data_dir.display(),
            blocks = report.blocks,
            replayed_spans = report.replay.spans,
            replayed_records = report.replay.records,
            truncated_bytes = report.replay.truncated_bytes,
            target = target.as_str(),
            "store opened"
        );
        Some(store)
    } else {
        None
    };

    // Remote sampling for SDKs (on by default, like Jaeger all-in-one; `service.extensions: []`
    // turns it off).
    // SDKs ask the process they export to: the single binary or a collector.
    let remote = cfg
        .remote_sampling()
        .filter(|_| matches!(target, Target::All | Target::Collector))
        .map(|rs| {
            let default_probability = rs.source.default_probability();
            let (source, adaptive) = match (&rs.source.adaptive, &rs.strategies) {
                (Some(a), _) => {
                    let a = Arc::new(clew_sampling::Adaptive::new(a.clone()));
                    (clew_sampling::StrategySource::Adaptive(a.clone()), Some(a))
                }
                (None, f) => (
                    clew_sampling::StrategySource::file_with_default(
                        f.clone().unwrap_or_default(),
                        default_probability,
                    ),
                    None,
                ),
            };
            (rs.http.endpoint, Arc::new(source), adaptive)
        });
    let adaptive = remote.as_ref().and_then(|r| r.2.clone());

    // The service graph sees every span first, before any sampling decision drops some.
    let pipelines = match target.ingests() {
        true => {
            let service_graph = clew_doctor::ServiceGraph::new(&mut registry);
            // A collector has no store; `target::check` refused a pipeline exporting to it.
            let sink: Arc<dyn clew_model::SpanSink> = match &store {
                Some(s) => Arc::new(s.clone()),
                None => Arc::new(NoStore),
            };
            let built = crate::pipelines::build(
                &cfg,
                Box::new(service_graph),
                sink,
                &mut registry,
                adaptive.clone(),
                keys.as_ref().map(|k| k.manager.clone()),
                store.as_ref().map(flush_on_memory_pressure),
            )
            .await?;
            if let (Some(store), false) = (&store, built.memory_headrooms.is_empty()) {
                store.set_memory_budget(Arc::new(LimiterBudget(built.memory_headrooms.clone())));
            }
            Some(built)
        }
        false => None,
    };
    let metadata_keys = cfg.metadata_keys();
    let rcfg = ReceiverConfig {
        tenant_header: cfg.tenancy.header.clone(),
        limiter,
        include_metadata: !metadata_keys.is_empty(),
        metadata_keys,
        ..ReceiverConfig::default()
    };
    rcfg.validate().context("invalid receiver settings")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let receiver_sink = |name: &str| {
        pipelines
            .as_ref()
            .and_then(|p| p.receivers.get(name).cloned())
    };
    let otlp_sink = receiver_sink("otlp");
    if let (Some(otlp), Some(sink)) = (&cfg.receivers.otlp, &otlp_sink) {
        if let Some(g) = &otlp.protocols.grpc {
            let listener = bind(&cfg, "receivers.otlp.protocols.grpc", Alpn::Grpc).await?;
            let c = ReceiverConfig {
                max_message_bytes: g.max_recv_msg_size_mib << 20,
                ..rcfg.clone()
            };
            let (sink, metrics, shutdown) = (sink.clone(), receiver_metrics.clone(), stopped());
            let gate = gate(&cfg, "receivers.otlp.protocols.grpc")?;
            tracing::info!(endpoint = %g.endpoint, "OTLP/gRPC receiver listening");
            servers.spawn(async move {
                clew_receive::serve_otlp_grpc_gated(
                    listener.into_incoming(),
                    sink,
                    c,
                    metrics,
                    gate,
                    shutdown,
                )
                .await
                .context("OTLP/gRPC receiver")
            });
        }
        if let Some(h) = &otlp.protocols.http {
            let listener = bind(&cfg, "receivers.otlp.protocols.http", Alpn::Http).await?;
            let c = ReceiverConfig {
                max_message_bytes: h.max_request_body_size_mib << 20,
                ..rcfg.clone()
            };
            let app = clew_receive::otlp_http_router(sink.clone(), c, receiver_metrics.clone());
            tracing::info!(endpoint = %h.endpoint, "OTLP/HTTP receiver listening");
            let shutdown = stopped();
            let gate = gate(&cfg, "receivers.otlp.protocols.http")?;
            servers.spawn(serve_http(
                listener,
                app,
                gate,
                shutdown,
                "OTLP/HTTP receiver",
            ));
        }
    }
    if let (Some(z), Some(sink)) = (&cfg.receivers.zipkin, receiver_sink("zipkin")) {
        let listener = bind(&cfg, "receivers.zipkin", Alpn::Http).await?;
        let app = clew_receive::zipkin_router(sink.clone(), rcfg.clone(), receiver_metrics.clone());
        tracing::info!(endpoint = %z.endpoint, "Zipkin receiver listening");
        let shutdown = stopped();
        let gate = gate(&cfg, "receivers.zipkin")?;
        servers.spawn(serve_http(listener, app, gate, shutdown, "Zipkin receiver"));
    }

    for (name, k) in cfg.kafka_receivers() {
        let (Some(sink), Some(p)) = (receiver_sink(name), pipelines.as_ref()) else {
            continue;
        };
        // A message is checked like an OTLP request; its tenant is its tenant header (the
        // broker is trusted: no gate), its metadata the record headers processors ask for.
        let mut metadata_keys = rcfg.metadata_keys.clone();
        metadata_keys.extend(k.metadata_keys.iter().cloned());
        let c = ReceiverConfig {
            tenant_header: k
                .tenant_header
                .clone()
                .unwrap_or_else(|| rcfg.tenant_header.clone()),
            max_message_bytes: k.max_message_bytes,
            include_metadata: !metadata_keys.is_empty(),
            metadata_keys,
            ..rcfg.clone()
        };
        let messages = clew_receive::MessageReceiver::new(
            sink.clone(),
            &c,
            receiver_metrics.clone(),
            clew_receive::Protocol::Kafka,
        )
        .with_context(|| format!("key `receivers.{name}`"))?;
        let receiver = clew_kafka::KafkaReceiver::start(name, k, messages, &p.kafka_metrics)?;
        let shutdown = stopped();
        servers.spawn(async move {
            shutdown.await;
            receiver.shutdown().await;
            Ok(())
        });
    }

    if let Some((endpoint, source, _)) = &remote {
        let listener = bind(&cfg, "extensions.jaeger_remote_sampling.http", Alpn::Http).await?;
        tracing::info!(endpoint = %endpoint, "Jaeger remote sampling listening (GET /sampling?service=S)");
        let shutdown = stopped();
        servers.spawn(serve_http(
            listener,
            sampling_router("/sampling", source.clone(), &cfg.tenancy.header),
            gate(&cfg, "extensions.jaeger_remote_sampling.http")?,
            shutdown,
            "remote sampling",
        ));
    }
    if let (Some((_, source, _)), Some(rs)) = (&remote, cfg.remote_sampling()) {
        if let (Some(every), Some(path)) = (rs.source.reload_interval, rs.strategies_path.clone()) {
            let source = source.clone();
            // Re-reads the strategies file; a broken file keeps the previous strategies.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let res = tokio::fs::read_to_string(&path)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|text| source.reload(&text));
                    if let Err(e) = res {
                        tracing::warn!(file = %path.display(), error = %e, "strategies file not reloaded; keeping the previous strategies");
                    }
                }
            });
        }
    }
    if let Some(a) = adaptive {
        // Recomputes per-operation probabilities; ends with the runtime.
        tokio::spawn(async move {
            let interval = a.interval();
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(interval).await;
                let now = tokio::time::Instant::now();
                a.recompute(now - last);
                last = now;
            }
        });
    }

    let listener = bind(&cfg, "query", Alpn::Http).await?;
    let qcfg = clew_query::QueryConfig {
        tenant_header: cfg.tenancy.header.clone(),
    };
    qcfg.validate()
        .map_err(|e| anyhow::anyhow!("tenancy.header: {e}"))?;
    let querier_metrics = clew_query::cluster::QuerierMetrics::default();
    if target == Target::Querier {
        querier_metrics.register(&mut registry);
    }
    let registry = Arc::new(registry);
    let app = match (&store, target.serves_queries()) {
        (Some(store), true) => {
            // A querier reads the shared bucket and asks the ingesters for what it lacks.
            let reader: Arc<dyn TraceReader> = match target {
                Target::Querier => {
                    Arc::new(federated_reader(&cfg, store, querier_metrics.clone())?)
                }
                _ => Arc::new(store.clone()),
            };
            // Tempo's HTTP API: on its own listener (Grafana's Tempo data source), and under
            // `/tempo` on the query port so the web UI and the CLI reach it without CORS.
            let tempo_listener = bind(&cfg, "tempo", Alpn::Http).await?;
            let tempo_app = clew_query::tempo_router(reader.clone(), qcfg.clone());
            tracing::info!(endpoint = %cfg.tempo.endpoint, "Tempo API listening (Grafana Tempo data source)");
            servers.spawn(serve_http(
                tempo_listener,
                tempo_app.clone(),
                gate(&cfg, "tempo")?,
                stopped(),
                "Tempo API",
            ));
            let app = clew_query::router(reader.clone(), qcfg)
                .nest("/tempo", tempo_app)
                .merge(clew_doctor::router(reader, &cfg.tenancy.header))
                .merge(clew_doctor::metrics_router(&cfg.tenancy.header))
                .merge(ops_router(registry))
                .merge(clew_ui::router());
            // Holds, erasure and key rotation change the store: the single binary's alone (a
            // querier only reads the shared bucket).
            let app = match target {
                Target::All => app.merge(crate::admin::router(crate::admin::AdminState {
                    store: store.clone(),
                    audit: audit.clone(),
                    keys: keys.clone(),
                    tenant_header: Arc::from(cfg.tenancy.header.as_str()),
                })),
                _ => app,
            };
            tracing::info!(endpoint = %cfg.query.endpoint, "query API listening (Jaeger API, api_v3, doctor API, Tempo API under /tempo, web UI, /metrics, /ready)");
            app
        }
        // An ingester answers queriers for the spans it has not flushed (and recent blocks).
        (Some(store), false) if target == Target::Ingester => {
            tracing::info!(endpoint = %cfg.query.endpoint, "ingester read API listening ({}, /metrics, /ready)", clew_query::cluster::READ_PATH);
            clew_query::cluster::read_router(Arc::new(store.clone()), &cfg.tenancy.header)
                .merge(ops_router(registry))
        }
        _ => {
            tracing::info!(endpoint = %cfg.query.endpoint, "operations endpoints listening (/metrics, /ready)");
            ops_router(registry)
        }
    };
    let app = match &remote {
        Some((_, source, _)) => app.merge(sampling_router(
            "/api/sampling",
            source.clone(),
            &cfg.tenancy.header,
        )),
        None => app,
    };
    let shutdown = stopped();
    let gate = gate(&cfg, "query")?;
    servers.spawn(serve_http(listener, app, gate, shutdown, "query API"));
    tracing::info!(default_tenant = %Tenant::default(), tenant_header = %cfg.tenancy.header, "clew is ready");

    let mut failure = None;
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("shutting down: finishing in-flight requests"),
        Some(res) = servers.join_next() => {
            failure = Some(match res {
                Ok(Ok(())) => anyhow::anyhow!("a listener stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a listener panicked: {e}"),
            });
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = servers.join_next().await {
        if let Ok(Err(e)) = res {
            tracing::warn!(error = %e, "listener ended with an error during shutdown");
        }
    }
    // Processors that hold spans (tail sampling) decide everything they buffer and hand it to the
    // store before the store's final flush.
    if let Some(pipelines) = &pipelines {
        tracing::info!("deciding buffered traces (tail sampling)");
        if let Err(e) = pipelines.shutdown().await {
            tracing::error!(error = %e, "a processor could not hand over everything it held");
        }
    }
    if let Some(store) = &store {
        tracing::info!("flushing the head into blocks");
        store.shutdown().await.context(
            "final flush failed; the WAL still holds the spans and will replay at start",
        )?;
    }
    tracing::info!("stopped cleanly");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The querier's reader: its store (the shared bucket) and every ingester in `cluster.ingesters`.
fn federated_reader(
    cfg: &Config,
    store: &Store,
    metrics: clew_query::cluster::QuerierMetrics,
) -> anyhow::Result<clew_query::cluster::Federated> {
    let mut remotes: Vec<(String, Arc<dyn TraceReader>)> = Vec::new();
    for (url, client) in cfg.cluster.ingester_clients()? {
        let remote = clew_query::cluster::RemoteReader::new(&url, &cfg.tenancy.header, client);
        remotes.push((url, Arc::new(remote)));
    }
    tracing::info!(
        ingesters = remotes.len(),
        "querier reads the shared bucket and the ingesters"
    );
    Ok(clew_query::cluster::Federated::new(
        Arc::new(store.clone()),
        remotes,
        metrics,
    ))
}

/// The store exporter of a process without a store (`--target collector`): never reached, as
/// `target::check` refuses a collector pipeline that exports to `clew_store`.
struct NoStore;

#[async_trait::async_trait]
impl clew_model::SpanSink for NoStore {
    async fn consume(&self, _batch: clew_model::SpanBatch) -> Result<(), clew_model::SinkError> {
        Err(clew_model::SinkError::Internal(
            "this process (--target collector) has no store".into(),
        ))
    }
}

/// Serves an axum app behind its listener's tenant gate until `shutdown` resolves; `what` names
/// the listener in errors. Every request carries the caller's `clew_security::PeerIdentity`
/// (`clew_security::peer_identity`).
async fn serve_http(
    listener: Listener,
    app: Router,
    gate: TenantGateLayer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    what: &'static str,
) -> anyhow::Result<()> {
    clew_security::tls::serve_router(listener, app.layer(gate), shutdown)
        .await
        .context(what)
}

/// What the query port serves without authentication: readiness and the web UI's pages and
/// static files (`clew_ui::router`), none of which carries tenant data, so that a browser can load
/// the app, which then asks for a token and sends it with every `/api/...` call.
const QUERY_OPEN_PATHS: &[&str] = &[
    "/ready",
    "/",
    "/search",
    "/trace/*",
    "/compare",
    "/graph",
    "/doctor",
    "/monitor",
    "/static/*",
];

/// The tenant gate of the listener whose config section is `key` — the one place where every
/// listener's service (HTTP and gRPC) is wrapped. With `auth:` the gate authenticates every
/// request and rewrites the tenant header to a tenant the identity may use; without it, requests
/// pass untouched. On the query port, `/metrics` (labels of every tenant) needs an identity for
/// every tenant or the `metrics_token_sha256` token.
fn gate(cfg: &Config, key: &str) -> anyhow::Result<TenantGateLayer> {
    let auth = cfg.listener_auth(key);
    let authenticator = auth
        .map(|a| a.build())
        .transpose()
        .map_err(|e| anyhow::anyhow!("key `{key}.auth.{}`: {}", e.key, e.message))?;
    if let Some(a) = &authenticator {
        tracing::info!(listener = key, method = a.kind(), "authentication on");
    }
    let gate = TenantGateLayer::new(key, authenticator, &cfg.tenancy.header)
        .map_err(|e| anyhow::anyhow!("key `tenancy.header`: {e}"))?;
    Ok(match key {
        "query" => gate
            .open_paths(QUERY_OPEN_PATHS)
            .any_tenant_paths(&["/metrics"], auth.and_then(|a| a.metrics_token_hash())),
        // Liveness and version probes carry no tenant data; Grafana's "Save & test" calls them.
        "tempo" => gate.open_paths(TEMPO_OPEN_PATHS),
        _ => gate,
    })
}

/// What the Tempo port serves without authentication.
const TEMPO_OPEN_PATHS: &[&str] = &["/ready", "/api/echo", "/api/status/buildinfo"];

/// Jaeger's remote sampling endpoint: `GET {path}?service=S` → the strategy JSON, for the
/// request's tenant (the tenant header, which the tenant gate has rewritten when auth is on).
fn sampling_router(
    path: &str,
    source: Arc<clew_sampling::StrategySource>,
    tenant_header: &str,
) -> Router {
    let tenant_header: Arc<str> = Arc::from(tenant_header);
    Router::new().route(
        path,
        get(
            move |headers: axum::http::HeaderMap,
                  axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let source = source.clone();
                let tenant = clew_doctor::tenant_from_headers(&headers, &tenant_header);
                async move {
                    let tenant = match tenant {
                        Ok(t) => t,
                        Err(e) => {
                            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
                        }
                    };
                    match q.get("service") {
                        Some(s) => {
                            axum::Json(source.strategy_for(tenant.as_str(), s)).into_response()
                        }
                        None => (
                            StatusCode::BAD_REQUEST,
                            "'service' parameter must be provided\n",
                        )
                            .into_response(),
                    }
                }
            },
        ),
    )
}

fn ops_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/ready", get(|| async { "ready\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                }
            }),
        )
}

/// Retention per tenant from the overrides file (`retention:` under a tenant).
#[derive(Debug)]
struct OverridesRetention(Arc<clew_security::limits::Limiter>);

impl clew_store::RetentionPolicy for OverridesRetention {
    fn retention(&self, tenant: &str) -> Option<std::time::Duration> {
        self.0.retention_for(tenant)
    }
}

/// Encryption at rest as configured: the key manager the store uses, and the local keyring when
/// that is the provider (the admin API rotates it).
#[derive(Clone)]
pub struct Keys {
    pub manager: Arc<clew_encryption::KeyManager>,
    pub keyring: Option<Arc<clew_encryption::local::Keyring>>,
}

/// Opens the key provider and checks it can serve keys now — keyring readable and private, KMS
/// reachable with valid credentials and an enabled key — so a problem is a start-up error naming
/// the setting, not a failed flush later.
async fn open_keys(
    e: &clew_encryption::EncryptionConfig,
    registry: &mut Registry,
) -> anyhow::Result<Keys> {
    use clew_encryption::{KeyError, KeyProvider, ProviderKind};
    let (provider, keyring): (Arc<dyn KeyProvider>, _) = match (e.provider, &e.local) {
        (ProviderKind::Local, Some(l)) => {
            if !l.keyring.exists() {
                anyhow::bail!(
                    "key `storage.encryption.local.keyring`: {} does not exist (fix: create it with `clew keys init --keyring {}`, and keep it private and backed up: without it the data cannot be read)",
                    l.keyring.display(),
                    l.keyring.display()
                );
            }
            let k = Arc::new(
                clew_encryption::local::Keyring::open(&l.keyring).map_err(|err| {
                    anyhow::anyhow!("key `storage.encryption.local.keyring`: {err}")
                })?,
            );
            (k.clone() as Arc<dyn KeyProvider>, Some(k))
        }
        _ => (
            e.build()
                .map_err(|err| anyhow::anyhow!("{}", config_error(&err)))?,
            None,
        ),
    };
    let manager = Arc::new(clew_encryption::KeyManager::new(provider));
    if let Err(err) = manager.check().await {
        let key = match (&err, e.provider) {
            (KeyError::Unavailable { .. }, ProviderKind::AwsKms) => {
                "storage.encryption.aws_kms.endpoint"
            }
            (KeyError::AccessDenied { .. }, _) => "storage.encryption.aws_kms (credentials)",
            (KeyError::KeyGone { .. }, ProviderKind::AwsKms) => "storage.encryption.aws_kms.key_id",
            (_, ProviderKind::Local) => "storage.encryption.local.keyring",
            _ => "storage.encryption",
        };
        let fix = match &err {
            KeyError::Unavailable { .. } => "fix: check the endpoint and the network; Clew refuses to start rather than write plaintext",
            KeyError::AccessDenied { .. } => "fix: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE to credentials allowed kms:GenerateDataKey and kms:Decrypt on the key",
            KeyError::KeyGone { .. } => "fix: enable the key, or point key_id at an enabled key",
            _ => "fix: see docs/encryption-at-rest.md",
        };
        anyhow::bail!("key `{key}`: the key provider is not usable: {err} ({fix})");
    }
    manager.register(registry);
    tracing::info!(provider = ?e.provider, "encryption at rest on");
    Ok(Keys { manager, keyring })
}

/// A provider construction error as `storage.encryption...: message (fix: ...)`.
fn config_error(e: &clew_encryption::KeyError) -> String {
    match e {
        clew_encryption::KeyError::Config(m) => format!("storage.{m}"),
        other => format!("storage.encryption: {other}"),
    }
}

/// The store's compaction budget under `memory_limiter`s: the least room any of them leaves under
/// its soft limit.
struct LimiterBudget(Vec<clew_processors::MemoryHeadroom>);

impl clew_store::MemoryBudget for LimiterBudget {
    fn room_bytes(&self) -> Option<u64> {
        self.0.iter().filter_map(|h| h.room_bytes()).min()
    }
}

/// A `memory_limiter`'s pressure hook: most of an ingesting server's memory is the store's head,
/// freed only when it is written to blocks, so above the soft limit the head is flushed now
/// rather than at `storage.block.max_age`. One flush at a time; the limiter calls this at most
/// every couple of seconds.
fn flush_on_memory_pressure(store: &Store) -> clew_processors::PressureHook {
    let store = store.clone();
    let runtime = tokio::runtime::Handle::current();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    Arc::new(move || {
        if running.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (store, running) = (store.clone(), running.clone());
        runtime.spawn(async move {
            tracing::info!("memory above the limiter's soft limit: flushing the head to blocks");
            if let Err(e) = store.flush().await {
                tracing::warn!(error = %e, "flush under memory pressure failed; the regular flush will retry");
            }
            running.store(false, std::sync::atomic::Ordering::Release);
        });
    })
}
