//! Builds the pipeline graph (`graph.rs`) into running sinks.
//!
//! * Every network receiver feeds one *ingress*: the always-on service graph (RED metrics and
//!   edges, from every span before any sampling) and the adaptive sampling root-span counter,
//!   shared by all ingresses so each span is counted once, then the pipelines that list the
//!   receiver (several: each gets every batch).
//! * A pipeline is its processors in order, built back to front so a holding processor (tail
//!   sampling) forwards its kept traces through the processors after it, ending in its exporters
//!   (several: each gets every batch).
//! * Exporters: `clew_store` (the local store), `otlp`/`otlphttp` (through a durable queue),
//!   `kafka` (acknowledged by the broker), `debug`; a connector (`routing`) is the exporter of the pipelines feeding it and sends into the
//!   pipelines it routes to, which are built first.
//!
//! Shutdown runs upstream first, so what a pipeline releases (tail sampling) still flows through
//! everything after it; then the exporters stop (their queues stay on disk).

use crate::config::{Config, ProcessorConfig};
use crate::graph::{ConnectorConfig, ExporterConfig, PipelineConfig};
use clew_model::SpanSink;
use clew_pipeline::{FanOut, Pipeline, Processor, ProcessorFactory, Shared};
use clew_sampling::consistent::HeadMetrics;
use clew_sampling::sampler_log::{Replayed, SamplerLog};
use clew_sampling::tail::TailMetrics;
use clew_sampling::{Adaptive, ProbabilisticSampler, RootSpanCounter, TailCore};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

/// The running graph.
pub struct Built {
    /// The sink of each network receiver that some pipeline uses (`otlp`, `zipkin`).
    pub receivers: HashMap<String, Arc<dyn SpanSink>>,
    /// Upstream first.
    pipelines: Vec<(String, Arc<Pipeline>)>,
    ingresses: Vec<Arc<Pipeline>>,
    exporters: Vec<(String, Arc<clew_export::OtlpExporter>)>,
    kafka_exporters: Vec<Arc<clew_kafka::KafkaExporter>>,
    /// Shared with the Kafka receiver (registered once).
    pub kafka_metrics: clew_kafka::KafkaMetrics,
    /// The room each `memory_limiter` leaves under its soft limit (the store's compaction
    /// budget).
    pub memory_headrooms: Vec<clew_processors::MemoryHeadroom>,
}

impl Built {
    /// Releases what processors hold, upstream first, then stops the exporters.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        for p in &self.ingresses {
            if let Err(e) = p.shutdown().await {
                first.get_or_insert(anyhow::anyhow!("ingress: {e}"));
            }
        }
        for (name, p) in &self.pipelines {
            if let Err(e) = p.shutdown().await {
                tracing::error!(pipeline = %name, error = %e, "a processor could not hand over everything it held");
                first.get_or_insert(anyhow::anyhow!("pipeline {name}: {e}"));
            }
        }
        for (name, e) in &self.exporters {
            e.shutdown().await;
            tracing::info!(exporter = %name, "exporter stopped (its queue stays on disk)");
        }
        for e in &self.kafka_exporters {
            e.shutdown().await;
            tracing::info!(exporter = %e.name(), "exporter stopped");
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub async fn build(
    cfg: &Config,
    service_graph: Box<dyn Processor>,
    store: Arc<dyn SpanSink>,
    registry: &mut Registry,
    adaptive: Option<Arc<Adaptive>>,
    // `storage.encryption`'s key manager: seals the exporters' sending queues.
    keys: Option<Arc<clew_encryption::KeyManager>>,
    // What a `memory_limiter` runs above its soft limit (the server: flush the store's head).
    memory_pressure: Option<clew_processors::PressureHook>,
) -> anyhow::Result<Built> {
    let graph = &cfg.graph;
    let metrics = Metrics::default();

    // Exporters that some pipeline uses.
    let mut sinks: HashMap<String, Arc<dyn SpanSink>> = HashMap::new();
    let mut queued = Vec::new();
    let mut kafka_exporters = Vec::new();
    let kafka_metrics = clew_kafka::KafkaMetrics::default();
    let export_metrics = clew_export::ExporterMetrics::default();
    let mut any_export = false;
    for (name, e) in &graph.exporters {
        if !graph.pipelines.iter().any(|p| p.exporters.contains(name)) {
            continue;
        }
        let sink: Arc<dyn SpanSink> = match e {
            ExporterConfig::ClewStore => store.clone(),
            ExporterConfig::Otlp(c) | ExporterConfig::OtlpHttp(c) => {
                any_export = true;
                let protocol = match e {
                    ExporterConfig::Otlp(_) => clew_export::Protocol::Grpc,
                    _ => clew_export::Protocol::Http,
                };
                let exp = clew_export::OtlpExporter::start_with_keys(
                    name,
                    protocol,
                    c,
                    &cfg.storage.path,
                    &export_metrics,
                    keys.clone(),
                )
                .await
                .map_err(|err| anyhow::anyhow!("exporters.{name}: {err}"))?;
                tracing::info!(exporter = %name, "exporter started");
                queued.push((name.clone(), exp.clone()));
                exp
            }
            ExporterConfig::Debug(c) => {
                any_export = true;
                Arc::new(clew_export::DebugExporter::new(name, c, &export_metrics))
            }
            ExporterConfig::Kafka(c) => {
                let exp = Arc::new(clew_kafka::KafkaExporter::start(name, c, &kafka_metrics)?);
                tracing::info!(exporter = %name, brokers = %c.brokers.join(","), topic = c.topic(), "Kafka exporter started");
                kafka_exporters.push(exp.clone());
                exp
            }
        };
        sinks.insert(name.clone(), sink);
    }
    if any_export {
        export_metrics.register(registry);
    }
    if !kafka_exporters.is_empty() || !cfg.kafka_receivers().is_empty() {
        kafka_metrics.register(registry);
    }

    let hash_keys = provider_hash_keys(cfg, keys.as_ref()).await?;

    // Each tail sampler's log, replayed before anything is served (ack ⇒ durable with tail
    // sampling too: see clew_sampling::sampler_log).
    let mut tail_logs = open_tail_logs(cfg, keys.clone()).await?;
    let mut memory_headrooms = Vec::new();

    // Pipelines, downstream first, so a connector finds the pipelines it routes to.
    let mut built: HashMap<String, Arc<Pipeline>> = HashMap::new();
    let mut order = Vec::new();
    for p in &graph.pipelines {
        let mut outs = Vec::new();
        for e in &p.exporters {
            let sink = match sinks.get(e) {
                Some(s) => s.clone(),
                None => connector(e, graph, &built, &metrics)?,
            };
            outs.push(sink);
        }
        let pipeline = processors(
            p,
            FanOut::of(outs),
            &metrics,
            &hash_keys,
            &mut tail_logs,
            keys.as_ref(),
            &mut MemoryLimiterLinks {
                pressure: memory_pressure.as_ref(),
                headrooms: &mut memory_headrooms,
            },
        )?;
        built.insert(p.name.clone(), pipeline.clone());
        order.push((p.name.clone(), pipeline));
        tracing::info!(pipeline = %p.name, receivers = ?p.receivers, processors = ?p.processors.iter().map(|(n, _)| n).collect::<Vec<_>>(), exporters = ?p.exporters, "pipeline");
    }
    order.reverse();
    metrics.register(registry);

    // One ingress per network receiver; the first stages are shared.
    let service_graph: Arc<dyn Processor> = Arc::from(service_graph);
    let counter: Option<Arc<dyn Processor>> =
        adaptive.map(|a| Arc::new(RootSpanCounter::new(a)) as Arc<dyn Processor>);
    let mut receivers = HashMap::new();
    let mut ingresses = Vec::new();
    let named_kafka = cfg.receivers.kafka_named.keys().map(String::as_str);
    for r in crate::graph::NETWORK_RECEIVERS
        .iter()
        .copied()
        .chain(named_kafka)
    {
        let fed: Vec<Arc<dyn SpanSink>> = graph
            .pipelines_fed_by(r)
            .iter()
            .filter_map(|p| built.get(&p.name).map(|x| x.clone() as Arc<dyn SpanSink>))
            .collect();
        if fed.is_empty() {
            continue;
        }
        let mut first: Vec<Box<dyn Processor>> = vec![Box::new(Shared(service_graph.clone()))];
        if let Some(c) = &counter {
            first.push(Box::new(Shared(c.clone())));
        }
        let ingress = Arc::new(Pipeline::new(first, FanOut::of(fed)));
        ingresses.push(ingress.clone());
        receivers.insert(r.to_string(), ingress as Arc<dyn SpanSink>);
    }
    Ok(Built {
        receivers,
        pipelines: order,
        ingresses,
        exporters: queued,
        kafka_exporters,
        kafka_metrics,
        memory_headrooms,
    })
}

/// The sink of connector `name`: it sends into the pipelines it routes to (built already).
fn connector(
    name: &str,
    graph: &crate::graph::Graph,
    built: &HashMap<String, Arc<Pipeline>>,
    metrics: &Metrics,
) -> anyhow::Result<Arc<dyn SpanSink>> {
    let Some(c) = graph.connectors.get(name) else {
        anyhow::bail!("exporter `{name}` is not defined");
    };
    match c {
        ConnectorConfig::Routing(r) => {
            let targets: HashMap<String, Arc<dyn SpanSink>> = graph
                .pipelines_fed_by(name)
                .iter()
                .filter_map(|p| {
                    built
                        .get(&p.name)
                        .map(|x| (p.name.clone(), x.clone() as Arc<dyn SpanSink>))
                })
                .collect();
            let conn = clew_processors::routing::RoutingConnector::new(name, r.clone(), targets)
                .map_err(|e| anyhow::anyhow!("connectors.{name}.{}: {}", e.key, e.message))?
                .with_metrics(metrics.routing.clone());
            metrics.has_routing.set(true);
            Ok(Arc::new(conn))
        }
    }
}

#[derive(Default)]
struct Metrics {
    head: HeadMetrics,
    tail: TailMetrics,
    baggage: clew_processors::BaggagePolicyMetrics,
    routing: clew_processors::RoutingMetrics,
    redaction: clew_processors::redaction::RedactionMetrics,
    has_redaction: std::cell::Cell<bool>,
    memory: clew_processors::MemoryLimiterMetrics,
    has_memory: std::cell::Cell<bool>,
    has_head: std::cell::Cell<bool>,
    has_tail: std::cell::Cell<bool>,
    has_baggage: std::cell::Cell<bool>,
    has_routing: std::cell::Cell<bool>,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        if self.has_head.get() {
            self.head.register(registry);
        }
        if self.has_tail.get() {
            self.tail.register(registry);
        }
        if self.has_baggage.get() {
            self.baggage.register(registry);
        }
        if self.has_redaction.get() {
            self.redaction.register(registry);
        }
        if self.has_memory.get() {
            self.memory.register(registry);
        }
        if self.has_routing.get() {
            self.routing.register(registry);
        }
    }
}

/// One pipeline's processors in order, ending in `sink`.
/// The HMAC keys of every `redaction` processor with `hash_key_source: key_provider`, by
/// processor name (current version first): the processor's secret from
/// `{storage.path}/keys/secrets/`, unwrapped by `storage.encryption`'s key provider, generated
/// (version 1) on first start. Rotation (`clew keys rotate-secret`) applies at the next start.
async fn provider_hash_keys(
    cfg: &Config,
    keys: Option<&Arc<clew_encryption::KeyManager>>,
) -> anyhow::Result<HashMap<String, Vec<clew_processors::redaction::HashKey>>> {
    use clew_processors::redaction::HashKeyOrigin;
    let mut out = HashMap::new();
    for p in &cfg.graph.pipelines {
        for (name, pc) in &p.processors {
            let ProcessorConfig::Redaction(c) = pc else {
                continue;
            };
            if c.hash_key_source != HashKeyOrigin::KeyProvider || out.contains_key(name) {
                continue;
            }
            let key = format!("processors.{name}.hash_key_source");
            let Some(km) = keys else {
                anyhow::bail!("key `{key}`: `key_provider` needs `storage.encryption` (fix: configure it — see docs/encryption-at-rest.md — or use hash_key_file, hash_key_env or hash_keys)");
            };
            let store = clew_encryption::secrets::SecretStore::new(
                secrets_dir(&cfg.storage.path),
                km.clone(),
            );
            let secrets = store.load_or_create(name).await.map_err(|e| {
                let fix = if e.is_retryable() {
                    "fix: start again once the key provider answers"
                } else {
                    "fix: check storage.encryption; a secret whose key was destroyed is gone — move its directory aside to start a new one (old hashes will no longer match)"
                };
                anyhow::anyhow!(
                    "key `{key}`: cannot load the HMAC secret of {name:?} from {}: {e} ({fix})",
                    store.dir().display()
                )
            })?;
            let hash_keys = clew_processors::redaction::keys::provider_keys(
                secrets.iter().map(|s| (s.version, &s.key[..])),
            )
            .map_err(|e| anyhow::anyhow!("key `{key}`: {}", e.message))?;
            tracing::info!(processor = %name, versions = secrets.len(), current = %hash_keys.first().map(|k| k.id()).unwrap_or(""), "redaction HMAC keys from the key provider");
            out.insert(name.clone(), hash_keys);
        }
    }
    Ok(out)
}

/// Where wrapped secrets live: `{storage.path}/keys/secrets`.
pub fn secrets_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("keys").join("secrets")
}

/// A tail sampler's opened log and what its replay found, by (pipeline, processor).
type TailLogs = HashMap<(String, String), (Arc<SamplerLog>, Replayed)>;

/// Opens (replays, compacts) the log of every tail sampler: `{storage.path}/sampler/<pipeline>/
/// <processor>` — also without a `clew_store` exporter, as the exporters' queues live under
/// `storage.path` too. Fails start-up when the directory cannot be written, or when an encrypted
/// log's keys cannot be had.
async fn open_tail_logs(
    cfg: &Config,
    keys: Option<Arc<clew_encryption::KeyManager>>,
) -> anyhow::Result<TailLogs> {
    let mut out = HashMap::new();
    for p in &cfg.graph.pipelines {
        for (name, pc) in &p.processors {
            if !matches!(pc, ProcessorConfig::TailSampling(_)) {
                continue;
            }
            let dir = clew_sampling::durable::log_dir(&cfg.storage.path, &p.name, name);
            let (log, replayed) = SamplerLog::open(&dir, keys.clone(), Default::default())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("processors.{name} (pipeline {}): {e} (fix: `storage.path` must be a writable directory; with `storage.encryption`, its key provider must answer)", p.name)
                })?;
            if !replayed.traces.is_empty() || replayed.truncated_bytes > 0 {
                tracing::info!(processor = %name, pipeline = %p.name, undecided = replayed.traces.len(), records = replayed.records, truncated_bytes = replayed.truncated_bytes, "tail sampler log replayed");
            }
            out.insert((p.name.clone(), name.clone()), (log, replayed));
        }
    }
    Ok(out)
}

/// One step of a pipeline before it is assembled: a processor, or a tail sampler, where the
/// pipeline is split (see `clew_sampling::durable`).
enum Step {
    Processor(ProcessorFactory),
    // Boxed: a sampler core is large and there are few of them.
    Tail(Box<(TailCore, Replayed)>),
}

/// What every `memory_limiter` is tied to: the hook it calls under pressure (flush the head),
/// and where its headroom goes (the store's compaction budget).
struct MemoryLimiterLinks<'a> {
    pressure: Option<&'a clew_processors::PressureHook>,
    headrooms: &'a mut Vec<clew_processors::MemoryHeadroom>,
}

fn processors(
    p: &PipelineConfig,
    sink: Arc<dyn SpanSink>,
    metrics: &Metrics,
    hash_keys: &HashMap<String, Vec<clew_processors::redaction::HashKey>>,
    tail_logs: &mut TailLogs,
    keys: Option<&Arc<clew_encryption::KeyManager>>,
    limiters: &mut MemoryLimiterLinks<'_>,
) -> anyhow::Result<Arc<Pipeline>> {
    let mut steps: Vec<Step> = Vec::new();
    let mut factories: Vec<ProcessorFactory> = Vec::new();
    for (name, pc) in &p.processors {
        let name = name.clone();
        match pc {
            ProcessorConfig::ProbabilisticSampler(c) => {
                metrics.has_head.set(true);
                let p = ProbabilisticSampler::with_metrics(name, c.clone(), &metrics.head);
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::Attributes(c) => {
                let p = clew_processors::Attributes::new(name.clone(), (**c).clone())
                    .map_err(|e| anyhow::anyhow!("processors.{name}.{}: {}", e.key, e.message))?;
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::Redaction(c) => {
                metrics.has_redaction.set(true);
                let p = match hash_keys.get(&name) {
                    Some(keys) => clew_processors::redaction::Redaction::with_hash_keys(
                        name.clone(),
                        (**c).clone(),
                        &metrics.redaction,
                        keys.clone(),
                    ),
                    None => clew_processors::redaction::Redaction::new(
                        name.clone(),
                        (**c).clone(),
                        &metrics.redaction,
                    ),
                }
                .map_err(|e| anyhow::anyhow!("processors.{name}.{}: {}", e.key, e.message))?;
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::MemoryLimiter(c) => {
                metrics.has_memory.set(true);
                let mut p =
                    clew_processors::MemoryLimiter::new(name.clone(), c, metrics.memory.clone())
                        .map_err(|e| {
                            anyhow::anyhow!("processors.{name}.{}: {}", e.key, e.message)
                        })?;
                if let Some(hook) = limiters.pressure {
                    p = p.with_pressure_hook(hook.clone());
                }
                limiters.headrooms.push(p.headroom());
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::BaggagePolicy(c) => {
                metrics.has_baggage.set(true);
                let p = clew_processors::BaggagePolicyProcessor::new(name.clone(), (**c).clone())
                    .map_err(|e| anyhow::anyhow!("processors.{name}.{}: {}", e.key, e.message))?
                    .with_metrics(metrics.baggage.clone());
                factories.push(Box::new(move |_| Ok(Box::new(p) as Box<dyn Processor>)));
            }
            ProcessorConfig::TailSampling(c) => {
                metrics.has_tail.set(true);
                let core = TailCore::with_metrics(name.clone(), c.clone(), metrics.tail.clone())
                    .map_err(|(k, m)| anyhow::anyhow!("processors.{name}.{k}: {m}"))?;
                tracing::info!(processor = %name, shards = core.num_shards(), "tail sampling on");
                let mut core = core;
                let Some((log, replayed)) = tail_logs.remove(&(p.name.clone(), name.clone()))
                else {
                    anyhow::bail!("processors.{name}: its log was not opened");
                };
                core.attach_log(log);
                steps.extend(factories.drain(..).map(Step::Processor));
                steps.push(Step::Tail(Box::new((core, replayed))));
            }
        }
        // Every other arm pushed one factory: keep the steps in order.
        steps.extend(factories.drain(..).map(Step::Processor));
    }
    // Back to front: at each tail sampler the pipeline is split; the processors before it end in
    // its durable stage, which forwards into the processors after it.
    let mut sink = sink;
    let mut pending: Vec<ProcessorFactory> = Vec::new();
    for step in steps.into_iter().rev() {
        match step {
            Step::Processor(f) => pending.insert(0, f),
            Step::Tail(tail) => {
                let (core, replayed) = *tail;
                let after = Pipeline::build(std::mem::take(&mut pending), sink)
                    .map_err(|e| anyhow::anyhow!(e))?;
                let name = core.name().to_string();
                let (stage, hook) =
                    clew_sampling::durable::stage(core, replayed, Arc::new(after), keys.cloned())
                        .map_err(|e| anyhow::anyhow!("processors.{name}: {e}"))?;
                sink = stage;
                pending.push(Box::new(move |_| Ok(hook)));
            }
        }
    }
    let p = Pipeline::build(pending, sink).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Arc::new(p))
}
