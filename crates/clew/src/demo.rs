//! `clew demo`: sends realistic multi-service traffic to a running Clew over OTLP/gRPC, so a new user
//! sees real traces within a minute.
//!
//! The traffic models a small shop:
//!
//! ```text
//! frontend  SERVER GET /checkout
//! └─ frontend  CLIENT POST /api/checkout ──▶ checkout SERVER POST /api/checkout
//!    ├─ checkout CLIENT POST /api/inventory/reserve ──▶ inventory SERVER
//!    │    └─ inventory CLIENT  SELECT products / UPDATE inventory   (postgresql)
//!    ├─ checkout CLIENT POST /api/payment/charge ──▶ payment SERVER (sometimes ERROR + exception event)
//!    │    └─ payment CLIENT POST /v1/charges (external payment gateway)
//!    └─ checkout PRODUCER publish orders (kafka)
//!         └─ email CONSUMER process orders (child of and linked to the producer; runs after it)
//!              ├─ email INTERNAL render order-confirmation
//!              └─ email CLIENT smtp send
//! ```
//!
//! Every span carries OpenTelemetry semantic-convention attributes, every service a realistic resource.
//! Latencies are log-normal with occasional slow outliers; a few percent of traces fail (payment gateway
//! timeouts, database statement timeouts) with `exception` events. As real SDKs do, each service exports
//! its own spans: a trace becomes one `Export` request per service.
//!
//! The generator ([`Generator`]) is deterministic for a given `--seed` (apart from the wall-clock start
//! time) and is unit-tested on its own; [`run`] paces and sends what it generates.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::span::{Event, Link, SpanKind};
use clew_model::otlp::trace::status::StatusCode;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Arguments of `clew demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// OTLP/gRPC endpoint of a running Clew (`clew serve`).
    #[arg(long, default_value = "http://127.0.0.1:4317", value_name = "URL")]
    pub endpoint: String,

    /// Number of traces to send.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub traces: u64,

    /// Traces per second to send; 0 sends as fast as the server accepts.
    #[arg(long, default_value_t = 20.0, value_name = "TRACES_PER_SEC")]
    pub rate: f64,

    /// Tenant to send as (sets the `X-Scope-OrgID` header); the server's default tenant if absent.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Seed of the random generator, to make the generated traffic (ids, shapes, latencies,
    /// errors) reproducible. Random if absent; the seed used is printed.
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,

    /// Compress requests with gzip, as most OTLP exporters can.
    #[arg(long)]
    pub gzip: bool,

    /// Base URL of the Clew UI, used only to print links to the generated traces.
    #[arg(long, default_value = "http://127.0.0.1:16686", value_name = "URL")]
    pub ui_url: String,

    #[command(flatten)]
    pub tls: crate::tls_args::ClientTlsArgs,
}

/// Runs `clew demo`: generates `args.traces` traces and exports them at `args.rate` traces per second.
///
/// Fails if the endpoint cannot be reached or if any export request fails for good (after retries of
/// retryable errors).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!(
            "--rate must be a number of traces per second >= 0 (0 = unlimited), got {}",
            args.rate
        );
    }
    let tenant = match &args.tenant {
        Some(t) if t.is_empty() => bail!("--tenant must not be empty"),
        Some(t) => Some(
            tonic::metadata::MetadataValue::try_from(t.as_str())
                .with_context(|| format!("--tenant {t:?} is not a valid header value"))?,
        ),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(rand::random);

    let channel = args
        .tls
        .grpc_channel(
            &args.endpoint,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}: is `clew serve` running (OTLP/gRPC listener)?",
                args.endpoint
            )
        })?;
    let mut client = TraceServiceClient::new(channel);
    if args.gzip {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }

    println!(
        "clew demo: sending {} traces at {} to {} (seed {seed}{})",
        args.traces,
        if args.rate > 0.0 {
            format!("{} traces/s", args.rate)
        } else {
            "full speed".to_string()
        },
        args.endpoint,
        args.tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default(),
    );

    let stats = Arc::new(Stats::default());
    let inflight = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    let mut generator = Generator::new(seed);
    let mut interval = (args.rate > 0.0).then(|| {
        let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    });
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut example: Option<String> = None;
    let mut example_error: Option<String> = None;
    let mut generated = 0u64;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    while generated < args.traces {
        if let Some(iv) = interval.as_mut() {
            tokio::select! {
                _ = iv.tick() => {}
                _ = &mut ctrl_c => { interrupted = true; break; }
            }
        }
        let trace = generator.trace(unix_nanos_now());
        generated += 1;
        let id = hex::encode(trace.trace_id);
        if example.is_none() && !trace.error {
            example = Some(id.clone());
        }
        if example_error.is_none() && trace.error {
            example_error = Some(id);
        }
        stats
            .spans_generated
            .fetch_add(trace.span_count as u64, Ordering::Relaxed);
        if trace.error {
            stats.error_traces.fetch_add(1, Ordering::Relaxed);
        }
        let permit = tokio::select! {
            p = inflight.clone().acquire_owned() => p.context("semaphore closed")?,
            _ = &mut ctrl_c => { interrupted = true; break; }
        };
        let (task_client, task_tenant, task_stats) =
            (client.clone(), tenant.clone(), stats.clone());
        tasks.spawn(async move {
            send_trace(task_client, task_tenant, trace, &task_stats).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            println!(
                "  {generated}/{} traces generated, {} sent, {} spans accepted, {} failed requests",
                args.traces,
                stats.traces_sent.load(Ordering::Relaxed),
                stats.spans_accepted.load(Ordering::Relaxed),
                stats.requests_failed.load(Ordering::Relaxed),
            );
        }
    }
    if interrupted {
        println!("  interrupted: waiting for requests in flight");
    }
    while tasks.join_next().await.is_some() {}

    let elapsed = started.elapsed().as_secs_f64();
    let sent = stats.traces_sent.load(Ordering::Relaxed);
    let requests = stats.requests_sent.load(Ordering::Relaxed);
    let failed = stats.requests_failed.load(Ordering::Relaxed);
    let accepted = stats.spans_accepted.load(Ordering::Relaxed);
    let rejected = stats.spans_rejected.load(Ordering::Relaxed);
    println!(
        "done in {elapsed:.1}s: {sent}/{generated} traces sent ({} with errors), {accepted} spans \
         accepted, {rejected} rejected, in {requests} requests ({failed} failed)",
        stats.error_traces.load(Ordering::Relaxed),
    );
    let ui = args.ui_url.trim_end_matches('/');
    if let Some(id) = &example {
        println!("example trace:       {id}\n  {ui}/trace/{id}");
    }
    if let Some(id) = &example_error {
        println!("example error trace: {id}\n  {ui}/trace/{id}");
    }
    if let Some(msg) = stats.first_error.lock().expect("poisoned").as_deref() {
        println!("first error: {msg}");
    }
    if failed > 0 {
        bail!("{failed} of {requests} export requests failed");
    }
    if rejected > 0 {
        bail!("the server rejected {rejected} spans (see the first error above)");
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    spans_generated: AtomicU64,
    error_traces: AtomicU64,
    traces_sent: AtomicU64,
    requests_sent: AtomicU64,
    requests_failed: AtomicU64,
    spans_accepted: AtomicU64,
    spans_rejected: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, msg: String) {
        let mut first = self.first_error.lock().expect("poisoned");
        if first.is_none() {
            eprintln!("clew demo: {msg}");
            *first = Some(msg);
        }
    }
}

/// Sends one trace: one request per service, concurrently, as independent SDKs would.
async fn send_trace(
    client: TraceServiceClient<Channel>,
    tenant: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    trace: DemoTrace,
    stats: &Stats,
) {
    let sends = trace.requests.into_iter().map(|request| {
        let mut client = client.clone();
        let tenant = tenant.clone();
        async move {
            let spans: u64 = request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len() as u64)
                .sum();
            stats.requests_sent.fetch_add(1, Ordering::Relaxed);
            let mut backoff = Duration::from_millis(100);
            for attempt in 1..=4 {
                let mut req = tonic::Request::new(request.clone());
                if let Some(t) = &tenant {
                    req.metadata_mut().insert("x-scope-orgid", t.clone());
                }
                match client.export(req).await {
                    Ok(resp) => {
                        let rejected = resp
                            .into_inner()
                            .partial_success
                            .map(|p| {
                                if p.rejected_spans > 0 || !p.error_message.is_empty() {
                                    stats.error(format!(
                                        "partial success: {} spans rejected: {}",
                                        p.rejected_spans, p.error_message
                                    ));
                                }
                                p.rejected_spans.max(0) as u64
                            })
                            .unwrap_or(0);
                        stats.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
                        stats
                            .spans_accepted
                            .fetch_add(spans.saturating_sub(rejected), Ordering::Relaxed);
                        return true;
                    }
                    Err(status)
                        if attempt < 4
                            && matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::ResourceExhausted
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Aborted
                            ) =>
                    {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    Err(status) => {
                        stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                        stats.error(format!(
                            "export failed: {:?}: {}",
                            status.code(),
                            status.message()
                        ));
                        return false;
                    }
                }
            }
            unreachable!("the last attempt returns")
        }
    });
    let results = futures::future::join_all(sends).await;
    if results.iter().all(|ok| *ok) {
        stats.traces_sent.fetch_add(1, Ordering::Relaxed);
    }
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------------

/// The services of the demo shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Frontend,
    Checkout,
    Inventory,
    Payment,
    Email,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Frontend,
        Service::Checkout,
        Service::Inventory,
        Service::Payment,
        Service::Email,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Frontend => "frontend",
            Service::Checkout => "checkout",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Email => "email",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Service::Frontend => "2.14.1",
            Service::Checkout => "1.9.0",
            Service::Inventory => "3.2.4",
            Service::Payment => "0.18.2",
            Service::Email => "1.1.7",
        }
    }

    /// (telemetry.sdk.language, telemetry.sdk.version)
    fn sdk(self) -> (&'static str, &'static str) {
        match self {
            Service::Frontend => ("nodejs", "2.0.1"),
            Service::Checkout => ("go", "1.37.0"),
            Service::Inventory => ("java", "1.51.0"),
            Service::Payment => ("python", "1.34.1"),
            Service::Email => ("rust", "0.30.0"),
        }
    }

    /// Instrumentation scope (name, version) of this service's HTTP instrumentation.
    fn http_scope(self) -> (&'static str, &'static str) {
        match self {
            Service::Frontend => ("@opentelemetry/instrumentation-http", "0.202.0"),
            Service::Checkout => (
                "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                "0.62.0",
            ),
            Service::Inventory => ("io.opentelemetry.tomcat-10.0", "2.17.0-alpha"),
            Service::Payment => ("opentelemetry.instrumentation.flask", "0.55b1"),
            Service::Email => ("email-service", "1.1.7"),
        }
    }

    /// Port the service listens on (for `server.port` on the calls it receives).
    fn port(self) -> i64 {
        match self {
            Service::Frontend => 443,
            Service::Checkout => 8080,
            Service::Inventory => 8081,
            Service::Payment => 8082,
            Service::Email => 8083,
        }
    }
}

/// Instrumentation scopes other than each service's HTTP one.
const SCOPE_JDBC: (&str, &str) = ("io.opentelemetry.jdbc", "2.17.0-alpha");
const SCOPE_KAFKA_GO: (&str, &str) = ("github.com/IBM/sarama/otelsarama", "0.62.0");
const SCOPE_KAFKA_RUST: (&str, &str) = ("rdkafka-otel", "0.4.2");
const SCOPE_REQUESTS: (&str, &str) = ("opentelemetry.instrumentation.requests", "0.55b1");

/// Probability that the payment gateway times out (payment span ERROR with an exception event).
const P_PAYMENT_TIMEOUT: f64 = 0.025;
/// Probability that the inventory's UPDATE hits a statement timeout.
const P_DB_TIMEOUT: f64 = 0.01;
/// Probability that a database query is a slow outlier.
const P_SLOW_QUERY: f64 = 0.01;

const MS: f64 = 1_000_000.0;

/// One generated trace, ready to send.
#[derive(Debug, Clone)]
pub struct DemoTrace {
    pub trace_id: [u8; 16],
    /// One request per service that took part, each holding only that service's spans.
    pub requests: Vec<ExportTraceServiceRequest>,
    pub span_count: usize,
    /// Whether any span of the trace has status ERROR.
    pub error: bool,
}

/// Deterministic (given the seed) generator of demo traces.
pub struct Generator {
    rng: StdRng,
    /// (service.instance.id, host.name) of each service's instances.
    instances: BTreeMap<Service, Vec<(String, String)>>,
    order_seq: u64,
    kafka_offset: i64,
}

/// A span being generated, with the service (and instance) that emits it and its scope.
struct Emitted {
    service: Service,
    scope: (&'static str, &'static str),
    span: Span,
}

struct TraceBuilder<'g> {
    g: &'g mut Generator,
    trace_id: [u8; 16],
    spans: Vec<Emitted>,
    used_span_ids: HashSet<[u8; 8]>,
}

/// What a called service answers: when it finished and the HTTP status it returned.
struct Reply {
    end: u64,
    status: i64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut instances = BTreeMap::new();
        for svc in Service::ALL {
            let n = if svc == Service::Frontend { 3 } else { 2 };
            let list = (0..n)
                .map(|i| {
                    let id = uuid_v4(&mut rng);
                    let host = format!(
                        "{}-{:x}-{}",
                        svc.name(),
                        rng.random::<u32>() & 0xfffff,
                        ["a", "b", "c"][i]
                    );
                    (id, host)
                })
                .collect();
            instances.insert(svc, list);
        }
        Generator {
            rng,
            instances,
            order_seq: 100_000,
            kafka_offset: 0,
        }
    }

    /// Generates one trace whose last span ends at `end_unix_nanos`.
    pub fn trace(&mut self, end_unix_nanos: u64) -> DemoTrace {
        let trace_id = loop {
            let id: [u8; 16] = self.rng.random();
            if id != [0; 16] {
                break id;
            }
        };
        let instance_choice: BTreeMap<Service, usize> = Service::ALL
            .iter()
            .map(|&s| (s, self.rng.random_range(0..self.instances[&s].len())))
            .collect();

        // Generate on a relative clock, then shift so that the trace ends at `end_unix_nanos`.
        const BASE: u64 = 1 << 62;
        let mut b = TraceBuilder {
            g: self,
            trace_id,
            spans: Vec::new(),
            used_span_ids: HashSet::new(),
        };
        b.frontend(BASE);
        let spans = b.spans;
        let last_end = spans
            .iter()
            .map(|e| e.span.end_time_unix_nano)
            .max()
            .unwrap_or(BASE);
        let shift = last_end - BASE;
        let start = end_unix_nanos.saturating_sub(shift);

        let error = spans
            .iter()
            .any(|e| e.span.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32));
        let span_count = spans.len();

        // Group: service → scope → spans. (Each service runs as one instance per trace.)
        let mut by_service: BTreeMap<Service, BTreeMap<(&str, &str), Vec<Span>>> = BTreeMap::new();
        for mut e in spans {
            e.span.start_time_unix_nano = e.span.start_time_unix_nano - BASE + start;
            e.span.end_time_unix_nano = e.span.end_time_unix_nano - BASE + start;
            for ev in &mut e.span.events {
                ev.time_unix_nano = ev.time_unix_nano - BASE + start;
            }
            by_service
                .entry(e.service)
                .or_default()
                .entry(e.scope)
                .or_default()
                .push(e.span);
        }
        let requests = by_service
            .into_iter()
            .map(|(svc, scopes)| {
                let (instance_id, host) = &self.instances[&svc][instance_choice[&svc]];
                ExportTraceServiceRequest {
                    resource_spans: vec![ResourceSpans {
                        resource: Some(resource(svc, instance_id, host)),
                        scope_spans: scopes
                            .into_iter()
                            .map(|((name, version), spans)| ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: name.to_string(),
                                    version: version.to_string(),
                                    ..Default::default()
                                }),
                                spans,
                                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                            })
                            .collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }],
                }
            })
            .collect();
        DemoTrace {
            trace_id,
            requests,
            span_count,
            error,
        }
    }

    /// A log-normally distributed duration in nanoseconds with the given median (ms) and shape.
    fn lognormal(&mut self, median_ms: f64, sigma: f64) -> u64 {
        // Box–Muller: a standard normal from two uniforms.
        let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ms = median_ms * (sigma * z).exp();
        (ms.clamp(0.005, 60_000.0) * MS) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
}

fn resource(svc: Service, instance_id: &str, host: &str) -> Resource {
    let (lang, sdk_version) = svc.sdk();
    Resource {
        attributes: vec![
            kv("service.name", svc.name()),
            kv("service.namespace", "shop"),
            kv("service.version", svc.version()),
            kv("service.instance.id", instance_id),
            kv("host.name", host),
            kv("host.arch", "amd64"),
            kv("os.type", "linux"),
            kv("deployment.environment.name", "demo"),
            kv("telemetry.sdk.name", "opentelemetry"),
            kv("telemetry.sdk.language", lang),
            kv("telemetry.sdk.version", sdk_version),
        ],
        ..Default::default()
    }
}

impl TraceBuilder<'_> {
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.g.rng.random();
            if id != [0; 8] && self.used_span_ids.insert(id) {
                return id;
            }
        }
    }

    /// Starts a span. `remote_parent`: the parent lives in another process (W3C flags bits 8–9).
    fn open(
        &mut self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&Span>,
        remote_parent: bool,
        start: u64,
    ) -> Span {
        let span_id = self.span_id();
        // Trace flags: sampled; bit 8 "has is_remote", bit 9 "parent is remote".
        let flags = 0x01 | 0x100 | if remote_parent { 0x200 } else { 0 };
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.span_id.clone()).unwrap_or_default(),
            flags,
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start,
            ..Default::default()
        }
    }

    fn close(
        &mut self,
        service: Service,
        scope: (&'static str, &'static str),
        mut span: Span,
        end: u64,
    ) {
        debug_assert!(end >= span.start_time_unix_nano);
        span.end_time_unix_nano = end;
        self.spans.push(Emitted {
            service,
            scope,
            span,
        });
    }

    fn lognormal(&mut self, median_ms: f64, sigma: f64) -> u64 {
        self.g.lognormal(median_ms, sigma)
    }

    /// An HTTP call from `from` to `to`: a CLIENT span in the caller around the callee's work.
    fn http_call(
        &mut self,
        from: Service,
        parent: &Span,
        start: u64,
        to: Service,
        (method, route): (&str, &str),
        callee: fn(&mut Self, &Span, u64) -> Reply,
    ) -> Reply {
        let mut client = self.open(
            format!("{method} {route}"),
            SpanKind::Client,
            Some(parent),
            false,
            start,
        );
        let net_out = self.lognormal(0.35, 0.4);
        let reply = callee(self, &client, start + net_out);
        let end = reply.end + self.lognormal(0.25, 0.4);
        client.attributes = vec![
            kv("http.request.method", method),
            kv(
                "url.full",
                format!("http://{}:{}{route}", to.name(), to.port()),
            ),
            kv("url.template", route),
            kv("server.address", to.name()),
            kv("server.port", to.port()),
            kv("network.protocol.version", "1.1"),
            kv("http.response.status_code", reply.status),
        ];
        if reply.status >= 400 {
            client
                .attributes
                .push(kv("error.type", reply.status.to_string()));
            client.status = Some(error_status(""));
        }
        self.close(from, from.http_scope(), client, end);
        Reply {
            end,
            status: reply.status,
        }
    }

    /// The SERVER span of an HTTP request received by `svc`.
    fn http_server_attrs(svc: Service, method: &str, route: &str, status: i64) -> Vec<KeyValue> {
        vec![
            kv("http.request.method", method),
            kv("http.route", route),
            kv("url.path", route),
            kv(
                "url.scheme",
                if svc == Service::Frontend {
                    "https"
                } else {
                    "http"
                },
            ),
            kv(
                "server.address",
                if svc == Service::Frontend {
                    "shop.example.com"
                } else {
                    svc.name()
                },
            ),
            kv("server.port", svc.port()),
            kv("network.protocol.version", "1.1"),
            kv("http.response.status_code", status),
        ]
    }

    fn finish_server(
        &mut self,
        svc: Service,
        mut span: Span,
        route: &str,
        method: &str,
        status: i64,
        end: u64,
    ) {
        span.attributes
            .splice(0..0, Self::http_server_attrs(svc, method, route, status));
        if status >= 500 {
            span.attributes.push(kv("error.type", status.to_string()));
            if span.status.is_none() {
                span.status = Some(error_status(""));
            }
        }
        self.close(svc, svc.http_scope(), span, end);
    }

    fn frontend(&mut self, t0: u64) {
        let svc = Service::Frontend;
        let mut root = self.open("GET /checkout", SpanKind::Server, None, false, t0);
        let ip = format!("203.0.113.{}", self.g.rng.random_range(1..=254));
        let ua = [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
        ][self.g.rng.random_range(0..3)];
        root.attributes = vec![
            kv("client.address", ip),
            kv("user_agent.original", ua),
            kv("session.id", format!("{:016x}", self.g.rng.random::<u64>())),
        ];
        let t = t0 + self.lognormal(0.4, 0.5);
        let reply = self.http_call(
            svc,
            &root,
            t,
            Service::Checkout,
            ("POST", "/api/checkout"),
            Self::checkout,
        );
        // Render the confirmation page.
        let render_start = reply.end + self.lognormal(0.1, 0.3);
        let render = self.open(
            "render checkout",
            SpanKind::Internal,
            Some(&root),
            false,
            render_start,
        );
        let render_end = render_start + self.lognormal(1.5, 0.4);
        self.close(svc, svc.http_scope(), render, render_end);
        let status = if reply.status >= 500 { 502 } else { 200 };
        if status >= 500 {
            root.status = Some(error_status("checkout failed: upstream returned an error"));
        }
        let end = render_end + self.lognormal(0.3, 0.4);
        self.finish_server(svc, root, "/checkout", "GET", status, end);
    }

    fn checkout(&mut self, parent: &Span, t0: u64) -> Reply {
        let svc = Service::Checkout;
        let mut server = self.open(
            "POST /api/checkout",
            SpanKind::Server,
            Some(parent),
            true,
            t0,
        );
        self.g.order_seq += 1;
        let order_id = format!("ord-{}", self.g.order_seq);
        let items = self.g.rng.random_range(1..=5i64);
        server.attributes = vec![
            kv("app.order.id", order_id.clone()),
            kv("app.order.items", items),
        ];
        let mut t = t0 + self.lognormal(0.2, 0.4);

        let inv = self.http_call(
            svc,
            &server,
            t,
            Service::Inventory,
            ("POST", "/api/inventory/reserve"),
            Self::inventory,
        );
        t = inv.end + self.lognormal(0.1, 0.3);
        let mut status = 200;
        if inv.status >= 500 {
            status = 503;
            server.status = Some(error_status("inventory reservation failed"));
        } else {
            let pay = self.http_call(
                svc,
                &server,
                t,
                Service::Payment,
                ("POST", "/api/payment/charge"),
                Self::payment,
            );
            t = pay.end + self.lognormal(0.1, 0.3);
            if pay.status >= 500 {
                status = 502;
                server.status = Some(error_status("payment failed: payment service returned 504"));
            } else {
                t = self.publish_order(&server, t, &order_id);
            }
        }
        let end = t + self.lognormal(0.2, 0.4);
        self.finish_server(svc, server, "/api/checkout", "POST", status, end);
        Reply { end, status }
    }

    /// Kafka PRODUCER span in checkout, and the asynchronous CONSUMER side in email.
    fn publish_order(&mut self, parent: &Span, t0: u64, order_id: &str) -> u64 {
        let svc = Service::Checkout;
        let mut producer = self.open(
            "publish orders",
            SpanKind::Producer,
            Some(parent),
            false,
            t0,
        );
        let partition = self.g.rng.random_range(0..6i64);
        let end = t0 + self.lognormal(2.5, 0.6);
        producer.attributes = vec![
            kv("messaging.system", "kafka"),
            kv("messaging.destination.name", "orders"),
            kv("messaging.operation.type", "publish"),
            kv("messaging.operation.name", "send"),
            kv("messaging.kafka.message.key", order_id),
            kv("messaging.destination.partition.id", partition.to_string()),
            kv("server.address", "kafka"),
            kv("server.port", 9092i64),
        ];
        // The consumer runs later, after some queueing delay — possibly after the request finished.
        let consume_start = end + self.lognormal(25.0, 0.8);
        self.email(&producer, consume_start, partition, order_id);
        self.close(svc, SCOPE_KAFKA_GO, producer, end);
        end
    }

    fn email(&mut self, producer: &Span, t0: u64, partition: i64, order_id: &str) {
        let svc = Service::Email;
        let mut consumer = self.open(
            "process orders",
            SpanKind::Consumer,
            Some(producer),
            true,
            t0,
        );
        self.g.kafka_offset += 1;
        consumer.attributes = vec![
            kv("messaging.system", "kafka"),
            kv("messaging.destination.name", "orders"),
            kv("messaging.operation.type", "process"),
            kv("messaging.operation.name", "poll"),
            kv("messaging.consumer.group.name", "email"),
            kv("messaging.kafka.message.key", order_id),
            kv("messaging.kafka.offset", self.g.kafka_offset),
            kv("messaging.destination.partition.id", partition.to_string()),
            kv("server.address", "kafka"),
            kv("server.port", 9092i64),
        ];
        consumer.links = vec![Link {
            trace_id: producer.trace_id.clone(),
            span_id: producer.span_id.clone(),
            flags: 0x01 | 0x100 | 0x200,
            attributes: vec![kv("messaging.operation.type", "publish")],
            ..Default::default()
        }];
        let t = t0 + self.lognormal(0.3, 0.4);
        let render = self.open(
            "render order-confirmation",
            SpanKind::Internal,
            Some(&consumer),
            false,
            t,
        );
        let t = t + self.lognormal(3.0, 0.5);
        self.close(svc, svc.http_scope(), render, t);
        let mut smtp = self.open("smtp send", SpanKind::Client, Some(&consumer), false, t);
        smtp.attributes = vec![
            kv("server.address", "smtp.example.com"),
            kv("server.port", 587i64),
            kv("network.protocol.name", "smtp"),
            kv("app.email.template", "order-confirmation"),
        ];
        let t = t + self.lognormal(40.0, 0.6);
        self.close(svc, svc.http_scope(), smtp, t);
        let end = t + self.lognormal(0.2, 0.3);
        self.close(svc, SCOPE_KAFKA_RUST, consumer, end);
    }

    fn inventory(&mut self, parent: &Span, t0: u64) -> Reply {
        let svc = Service::Inventory;
        let server = self.open(
            "POST /api/inventory/reserve",
            SpanKind::Server,
            Some(parent),
            true,
            t0,
        );
        let mut t = t0 + self.lognormal(0.3, 0.4);
        let mut status = 200;
        let queries: [(&str, &str, &str); 2] = [
            (
                "SELECT",
                "products",
                "SELECT id, sku, price_cents, stock FROM products WHERE id = ANY($1)",
            ),
            (
                "UPDATE",
                "inventory",
                "UPDATE inventory SET reserved = reserved + $1 WHERE product_id = $2 AND stock - reserved >= $1",
            ),
        ];
        let updates = self.g.rng.random_range(1..=3);
        for (i, (op, table, sql)) in std::iter::once(queries[0])
            .chain(std::iter::repeat_n(queries[1], updates))
            .enumerate()
        {
            let mut span = self.open(
                format!("{op} {table}"),
                SpanKind::Client,
                Some(&server),
                false,
                t,
            );
            span.attributes = vec![
                kv("db.system", "postgresql"),
                kv("db.namespace", "shop"),
                kv("db.operation.name", op),
                kv("db.collection.name", table),
                kv("db.query.text", sql),
                kv("server.address", "postgres"),
                kv("server.port", 5432i64),
            ];
            let mut d = self.lognormal(if op == "SELECT" { 1.2 } else { 2.0 }, 0.5);
            if self.g.chance(P_SLOW_QUERY) {
                d *= self.g.rng.random_range(15..60);
            }
            let timeout = i == 1 && self.g.chance(P_DB_TIMEOUT);
            if timeout {
                d = 1000 * MS as u64 + self.lognormal(0.5, 0.3);
                let msg = "ERROR: canceling statement due to statement timeout";
                span.attributes
                    .push(kv("error.type", "org.postgresql.util.PSQLException"));
                span.attributes.push(kv("db.response.status_code", "57014"));
                span.status = Some(error_status(msg));
                span.events.push(exception_event(
                    t + d,
                    "org.postgresql.util.PSQLException",
                    msg,
                    "org.postgresql.util.PSQLException: ERROR: canceling statement due to statement timeout\n\
                     \tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2733)\n\
                     \tat org.postgresql.jdbc.PgPreparedStatement.executeUpdate(PgPreparedStatement.java:152)\n\
                     \tat shop.inventory.ReservationRepository.reserve(ReservationRepository.java:88)\n\
                     \tat shop.inventory.ReservationController.reserve(ReservationController.java:41)",
                ));
            }
            self.close(svc, SCOPE_JDBC, span, t + d);
            t += d + self.lognormal(0.1, 0.3);
            if timeout {
                status = 503;
                break;
            }
        }
        let end = t + self.lognormal(0.2, 0.3);
        let mut server = server;
        if status >= 500 {
            server.status = Some(error_status("could not reserve stock: database timeout"));
        }
        self.finish_server(svc, server, "/api/inventory/reserve", "POST", status, end);
        Reply { end, status }
    }

    fn payment(&mut self, parent: &Span, t0: u64) -> Reply {
        let svc = Service::Payment;
        let mut server = self.open(
            "POST /api/payment/charge",
            SpanKind::Server,
            Some(parent),
            true,
            t0,
        );
        let amount = self.g.rng.random_range(500..50_000i64) as f64 / 100.0;
        let currency = ["USD", "EUR", "GBP"][self.g.rng.random_range(0..3)];
        server.attributes = vec![
            kv("app.payment.amount", amount),
            kv("app.payment.currency", currency),
            kv(
                "app.payment.card_type",
                ["visa", "mastercard", "amex"][self.g.rng.random_range(0..3)],
            ),
        ];
        let t = t0 + self.lognormal(0.5, 0.4);
        let failed = self.g.chance(P_PAYMENT_TIMEOUT);
        let mut gw = self.open(
            "POST /v1/charges",
            SpanKind::Client,
            Some(&server),
            false,
            t,
        );
        let d = if failed {
            2000 * MS as u64 + self.lognormal(1.0, 0.3)
        } else {
            let mut d = self.lognormal(45.0, 0.5);
            if self.g.chance(0.01) {
                d *= self.g.rng.random_range(5..20);
            }
            d
        };
        gw.attributes = vec![
            kv("http.request.method", "POST"),
            kv("url.full", "https://psp.example.net/v1/charges"),
            kv("server.address", "psp.example.net"),
            kv("server.port", 443i64),
        ];
        let status = if failed {
            gw.attributes.push(kv("error.type", "timeout"));
            gw.status = Some(error_status("read timeout after 2000 ms"));
            let msg = "payment gateway did not respond within 2000 ms";
            server.status = Some(error_status(msg));
            server.events.push(exception_event(
                t + d,
                "payments.gateway.GatewayTimeoutError",
                msg,
                "Traceback (most recent call last):\n  \
                 File \"/app/payments/views.py\", line 57, in charge\n    \
                 result = gateway.charge(order.amount, order.currency, token)\n  \
                 File \"/app/payments/gateway.py\", line 112, in charge\n    \
                 resp = self.session.post(url, json=body, timeout=2.0)\n  \
                 File \"/usr/local/lib/python3.12/site-packages/requests/adapters.py\", line 713, in send\n    \
                 raise ReadTimeout(e, request=request)\n\
                 payments.gateway.GatewayTimeoutError: payment gateway did not respond within 2000 ms",
            ));
            504
        } else {
            gw.attributes.push(kv("http.response.status_code", 200i64));
            200
        };
        self.close(svc, SCOPE_REQUESTS, gw, t + d);
        let end = t + d + self.lognormal(0.4, 0.4);
        self.finish_server(svc, server, "/api/payment/charge", "POST", status, end);
        Reply { end, status }
    }
}

fn error_status(message: &str) -> Status {
    Status {
        code: StatusCode::Error as i32,
        message: message.to_string(),
    }
}

fn exception_event(time: u64, ty: &str, message: &str, stacktrace: &str) -> Event {
    Event {
        time_unix_nano: time,
        name: "exception".to_string(),
        attributes: vec![
            kv("exception.type", ty),
            kv("exception.message", message),
            kv("exception.stacktrace", stacktrace),
        ],
        dropped_attributes_count: 0,
    }
}

fn uuid_v4(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Values that become an OTLP `AnyValue`.
trait IntoAnyValue {
    fn into_value(self) -> Value;
}
impl IntoAnyValue for &str {
    fn into_value(self) -> Value {
        Value::StringValue(self.to_string())
    }
}
impl IntoAnyValue for String {
    fn into_value(self) -> Value {
        Value::StringValue(self)
    }
}
impl IntoAnyValue for i64 {
    fn into_value(self) -> Value {
        Value::IntValue(self)
    }
}
impl IntoAnyValue for f64 {
    fn into_value(self) -> Value {
        Value::DoubleValue(self)
    }
}
impl IntoAnyValue for bool {
    fn into_value(self) -> Value {
        Value::BoolValue(self)
    }
}
impl<T: IntoAnyValue> IntoAnyValue for Vec<T> {
    fn into_value(self) -> Value {
        Value::ArrayValue(ArrayValue {
            values: self
                .into_iter()
                .map(|v| AnyValue {
                    value: Some(v.into_value()),
                })
                .collect(),
        })
    }
}

fn kv(key: &str, value: impl IntoAnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(value.into_value()),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: u64 = 1_750_000_000_000_000_000;

    /// (service name, resource, span) of every span in a trace.
    fn spans(t: &DemoTrace) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for req in &t.requests {
            assert_eq!(req.resource_spans.len(), 1, "one resource per request");
            let rs = &req.resource_spans[0];
            let svc = str_attr(&rs.resource.as_ref().unwrap().attributes, "service.name")
                .expect("service.name")
                .to_string();
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().expect("scope");
                assert!(!scope.name.is_empty() && !scope.version.is_empty());
                for s in &ss.spans {
                    out.push((svc.clone(), s.clone()));
                }
            }
        }
        out
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        match attr(attrs, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn is_error(s: &Span) -> bool {
        s.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32)
    }

    fn many(seed: u64, n: usize) -> Vec<DemoTrace> {
        let mut g = Generator::new(seed);
        (0..n)
            .map(|i| g.trace(NOW + i as u64 * 50_000_000))
            .collect()
    }

    #[test]
    fn ids_are_valid_and_unique() {
        let mut trace_ids = HashSet::new();
        for t in many(1, 500) {
            assert_ne!(t.trace_id, [0; 16]);
            assert!(trace_ids.insert(t.trace_id), "duplicate trace id");
            let spans = spans(&t);
            assert_eq!(spans.len(), t.span_count);
            let mut ids = HashSet::new();
            for (_, s) in &spans {
                assert_eq!(s.trace_id, t.trace_id.to_vec());
                assert_eq!(s.span_id.len(), 8);
                assert_ne!(s.span_id, vec![0; 8]);
                assert!(ids.insert(s.span_id.clone()), "duplicate span id");
                assert!(s.parent_span_id.is_empty() || s.parent_span_id.len() == 8);
                assert_eq!(s.flags & 0xff, 1, "sampled");
                for l in &s.links {
                    assert_eq!(l.trace_id.len(), 16);
                    assert_eq!(l.span_id.len(), 8);
                }
            }
        }
    }

    #[test]
    fn parents_exist_and_there_is_one_root() {
        for t in many(2, 500) {
            let spans = spans(&t);
            let by_id: HashMap<_, _> = spans
                .iter()
                .map(|(svc, s)| (s.span_id.clone(), (svc, s)))
                .collect();
            let roots: Vec<_> = spans
                .iter()
                .filter(|(_, s)| s.parent_span_id.is_empty())
                .collect();
            assert_eq!(roots.len(), 1, "exactly one root");
            assert_eq!(roots[0].0, "frontend");
            assert_eq!(roots[0].1.name, "GET /checkout");
            assert_eq!(roots[0].1.kind, SpanKind::Server as i32);
            for (svc, s) in &spans {
                if s.parent_span_id.is_empty() {
                    continue;
                }
                let (psvc, p) = by_id
                    .get(&s.parent_span_id)
                    .unwrap_or_else(|| panic!("parent of {:?} missing", s.name));
                // Cross-service edges go CLIENT → SERVER or PRODUCER → CONSUMER, flagged remote.
                if *psvc != svc {
                    let pair = (p.kind, s.kind);
                    assert!(
                        pair == (SpanKind::Client as i32, SpanKind::Server as i32)
                            || pair == (SpanKind::Producer as i32, SpanKind::Consumer as i32),
                        "{psvc}:{} -> {svc}:{}",
                        p.name,
                        s.name
                    );
                    assert_eq!(s.flags & 0x300, 0x300, "remote parent flagged");
                } else {
                    assert_eq!(s.flags & 0x300, 0x100);
                }
            }
            // Links point at spans of the trace.
            for (_, s) in &spans {
                for l in &s.links {
                    assert!(by_id.contains_key(&l.span_id));
                }
            }
        }
    }

    #[test]
    fn children_lie_within_their_parents() {
        for t in many(3, 500) {
            let spans = spans(&t);
            let by_id: HashMap<_, _> = spans.iter().map(|(_, s)| (s.span_id.clone(), s)).collect();
            for (_, s) in &spans {
                assert!(
                    s.start_time_unix_nano < s.end_time_unix_nano,
                    "{} has no duration",
                    s.name
                );
                for e in &s.events {
                    assert!(
                        e.time_unix_nano >= s.start_time_unix_nano
                            && e.time_unix_nano <= s.end_time_unix_nano
                    );
                }
                let Some(p) = by_id.get(&s.parent_span_id) else {
                    continue;
                };
                assert!(s.start_time_unix_nano >= p.start_time_unix_nano);
                if s.kind == SpanKind::Consumer as i32 {
                    // Asynchronous: the consumer processes the message after it was published.
                    assert!(s.start_time_unix_nano >= p.end_time_unix_nano);
                } else {
                    assert!(
                        s.start_time_unix_nano > p.start_time_unix_nano
                            && s.end_time_unix_nano < p.end_time_unix_nano,
                        "{} not inside {}",
                        s.name,
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn trace_ends_at_requested_time() {
        let mut g = Generator::new(9);
        for i in 0..50 {
            let end = NOW + i * 1_000_000_000;
            let t = g.trace(end);
            let max = spans(&t)
                .iter()
                .map(|(_, s)| s.end_time_unix_nano)
                .max()
                .unwrap();
            assert_eq!(max, end);
        }
    }

    #[test]
    fn error_ratio_is_a_few_percent_with_exception_events() {
        let traces = many(4, 4000);
        let errors = traces.iter().filter(|t| t.error).count();
        let ratio = errors as f64 / traces.len() as f64;
        assert!((0.02..=0.05).contains(&ratio), "error ratio {ratio}");
        for t in traces.iter().filter(|t| t.error) {
            let spans = spans(t);
            assert!(spans.iter().any(|(_, s)| is_error(s)));
            // The failing service records the exception as an event.
            let ex = spans
                .iter()
                .flat_map(|(_, s)| &s.events)
                .find(|e| e.name == "exception")
                .expect("an exception event");
            for key in [
                "exception.type",
                "exception.message",
                "exception.stacktrace",
            ] {
                assert!(
                    str_attr(&ex.attributes, key).is_some_and(|v| !v.is_empty()),
                    "{key}"
                );
            }
            // The error surfaces at the root.
            let root = spans
                .iter()
                .find(|(_, s)| s.parent_span_id.is_empty())
                .unwrap();
            assert!(is_error(&root.1));
        }
        for t in traces.iter().filter(|t| !t.error) {
            assert!(spans(t)
                .iter()
                .all(|(_, s)| !is_error(s) && s.events.is_empty()));
        }
    }

    #[test]
    fn traffic_covers_the_shop_with_semantic_conventions() {
        let traces = many(5, 300);
        let ok = traces.iter().find(|t| !t.error).unwrap();
        let spans_ok = spans(ok);
        let services: HashSet<&str> = spans_ok.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            services,
            HashSet::from(["frontend", "checkout", "inventory", "payment", "email"])
        );
        // One request per service, carrying the full resource.
        assert_eq!(ok.requests.len(), 5);
        for req in &ok.requests {
            let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
            for key in [
                "service.name",
                "service.version",
                "service.instance.id",
                "host.name",
                "deployment.environment.name",
                "telemetry.sdk.name",
                "telemetry.sdk.language",
                "telemetry.sdk.version",
            ] {
                assert!(str_attr(attrs, key).is_some(), "resource lacks {key}");
            }
        }
        let find =
            |pred: &dyn Fn(&(String, Span)) -> bool| spans_ok.iter().find(|x| pred(x)).cloned();

        let (_, root) =
            find(&|(svc, s)| svc == "frontend" && s.kind == SpanKind::Server as i32).unwrap();
        assert_eq!(
            str_attr(&root.attributes, "http.request.method"),
            Some("GET")
        );
        assert_eq!(str_attr(&root.attributes, "http.route"), Some("/checkout"));
        assert_eq!(
            attr(&root.attributes, "http.response.status_code"),
            Some(&Value::IntValue(200))
        );
        assert!(attr(&root.attributes, "server.port").is_some());

        let (_, client) =
            find(&|(svc, s)| svc == "frontend" && s.kind == SpanKind::Client as i32).unwrap();
        assert_eq!(
            str_attr(&client.attributes, "url.full"),
            Some("http://checkout:8080/api/checkout")
        );
        assert_eq!(
            str_attr(&client.attributes, "server.address"),
            Some("checkout")
        );
        assert_eq!(
            attr(&client.attributes, "server.port"),
            Some(&Value::IntValue(8080))
        );

        let (_, db) =
            find(&|(svc, s)| svc == "inventory" && s.kind == SpanKind::Client as i32).unwrap();
        assert_eq!(str_attr(&db.attributes, "db.system"), Some("postgresql"));
        assert_eq!(str_attr(&db.attributes, "db.namespace"), Some("shop"));
        assert!(str_attr(&db.attributes, "db.query.text").is_some_and(|q| q.starts_with("SELECT")));
        assert_eq!(str_attr(&db.attributes, "server.address"), Some("postgres"));

        let (_, producer) =
            find(&|(svc, s)| svc == "checkout" && s.kind == SpanKind::Producer as i32).unwrap();
        assert_eq!(
            str_attr(&producer.attributes, "messaging.system"),
            Some("kafka")
        );
        assert_eq!(
            str_attr(&producer.attributes, "messaging.destination.name"),
            Some("orders")
        );
        assert_eq!(
            str_attr(&producer.attributes, "messaging.operation.type"),
            Some("publish")
        );

        let (_, consumer) =
            find(&|(svc, s)| svc == "email" && s.kind == SpanKind::Consumer as i32).unwrap();
        assert_eq!(consumer.parent_span_id, producer.span_id);
        assert_eq!(consumer.links.len(), 1);
        assert_eq!(consumer.links[0].span_id, producer.span_id);
        assert_eq!(
            str_attr(&consumer.attributes, "messaging.operation.type"),
            Some("process")
        );

        // Payment errors carry a 5xx and error.type.
        let failed_payment = traces
            .iter()
            .flat_map(spans)
            .find(|(svc, s)| svc == "payment" && s.kind == SpanKind::Server as i32 && is_error(s));
        let (_, p) = failed_payment.expect("some payment fails in 300 traces");
        assert_eq!(
            attr(&p.attributes, "http.response.status_code"),
            Some(&Value::IntValue(504))
        );
        assert!(!p.status.as_ref().unwrap().message.is_empty());
    }

    #[test]
    fn latency_varies_with_outliers() {
        let durations: Vec<u64> = many(6, 2000)
            .iter()
            .flat_map(spans)
            .filter(|(_, s)| s.name.starts_with("SELECT"))
            .map(|(_, s)| s.end_time_unix_nano - s.start_time_unix_nano)
            .collect();
        let mut sorted = durations.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2] as f64 / MS;
        let p999 = sorted[sorted.len() * 999 / 1000] as f64 / MS;
        assert!((0.8..2.0).contains(&median), "median {median} ms");
        assert!(
            p999 > 10.0 * median,
            "outliers: p99.9 {p999} ms vs median {median} ms"
        );
    }

    #[test]
    fn same_seed_same_traffic() {
        let a = many(42, 50);
        let b = many(42, 50);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.requests, y.requests);
        }
        let c = many(43, 1);
        assert_ne!(a[0].trace_id, c[0].trace_id);
    }

    #[test]
    fn args_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            demo: DemoArgs,
        }
        let cli = Cli::parse_from(["demo"]);
        assert_eq!(cli.demo.endpoint, "http://127.0.0.1:4317");
        assert_eq!(cli.demo.traces, 200);
        assert_eq!(cli.demo.rate, 20.0);
        assert!(cli.demo.tenant.is_none() && cli.demo.seed.is_none());
        let cli = Cli::parse_from([
            "demo", "--traces", "5", "--rate", "0", "--tenant", "acme", "--seed", "7",
        ]);
        assert_eq!(
            (cli.demo.traces, cli.demo.rate, cli.demo.seed),
            (5, 0.0, Some(7))
        );
        assert_eq!(cli.demo.tenant.as_deref(), Some("acme"));
    }
}
