//! `clew.yaml`: configuration in the OpenTelemetry Collector's style (receivers, storage, query,
//! tenancy, service sections). Unknown keys are errors; every error names the file, the key path and
//! the fix.
//!
//! Processors, exporters and connectors are named like the Collector's (`tail_sampling/errors`:
//! type before the `/`), defined under `processors:`, `exporters:` and `connectors:`, and wired by
//! `service.pipelines` (`traces`, `traces/NAME`; checked in `graph.rs`).
//! Extensions (`jaeger_remote_sampling`) are defined under `extensions:` and enabled by
//! `service.extensions`.

use anyhow::{bail, Context};
use clew_security::auth::AuthConfig;
use clew_security::tls::TlsServerSettings;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: Receivers,
    /// Named processors (`TYPE` or `TYPE/NAME`), parsed and validated into `processor_configs`.
    pub processors: serde_yaml::Mapping,
    pub extensions: Extensions,
    /// Named exporters (`TYPE` or `TYPE/NAME`: `clew_store`, `otlp`, `otlphttp`, `debug`).
    pub exporters: serde_yaml::Mapping,
    /// Named connectors (`routing`, `routing/NAME`): exporters of some pipelines, receivers of others.
    pub connectors: serde_yaml::Mapping,
    pub storage: Storage,
    pub query: Query,
    /// Grafana Tempo's HTTP API (`clew_query::tempo_router`): its own listener, `:3200` as Tempo.
    pub tempo: Tempo,
    pub tenancy: Tenancy,
    /// Per-tenant limits (Tempo's overrides): `defaults`, `per_tenant_file`, `reload_interval`.
    pub limits: Option<clew_security::limits::LimitsConfig>,
    pub service: Service,
    /// What this process runs (Tempo's `target`): `all` (default), `collector`, `ingester`,
    /// `querier` or `compactor` (`target.rs`).
    pub target: crate::target::Target,
    /// Settings of the scale-out roles.
    pub cluster: crate::target::Cluster,
    /// The processors of the `traces` pipeline, in pipeline order (filled in by validation).
    #[serde(skip)]
    pub processor_configs: Vec<(String, ProcessorConfig)>,
    /// Every pipeline with its receivers, processors and exporters, checked (filled in by
    /// validation).
    #[serde(skip)]
    pub graph: crate::graph::Graph,
    /// Problems worth a warning that do not stop start-up (e.g. a processor referenced nowhere).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The file this was loaded from and the SHA-256 of its text, for the audit log.
    #[serde(skip)]
    pub source: Option<(PathBuf, String)>,
}

/// A configured processor.
#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    TailSampling(clew_sampling::TailSamplingConfig),
    ProbabilisticSampler(clew_sampling::ProbabilisticSamplerConfig),
    Attributes(Box<clew_processors::AttributesConfig>),
    BaggagePolicy(Box<clew_processors::BaggagePolicyConfig>),
    Redaction(Box<clew_processors::redaction::RedactionConfig>),
    MemoryLimiter(clew_processors::MemoryLimiterConfig),
}

pub const PROCESSOR_TYPES: &[&str] = &[
    "tail_sampling",
    "probabilistic_sampler",
    "attributes",
    "baggage_policy",
    "redaction",
    "memory_limiter",
];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Extensions {
    /// Jaeger-compatible remote sampling for SDKs (`GET /sampling?service=S`).
    #[serde(alias = "jaegerremotesampling")]
    pub jaeger_remote_sampling: Option<RemoteSampling>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSampling {
    #[serde(default = "default_remote_http")]
    pub http: Endpoint,
    #[serde(default)]
    pub source: RemoteSource,
    /// The strategies file's contents, read and validated at load (file source only).
    #[serde(skip)]
    pub strategies: Option<clew_sampling::StrategiesFile>,
    /// The strategies file's resolved path.
    #[serde(skip)]
    pub strategies_path: Option<PathBuf>,
}

fn default_remote_http() -> Endpoint {
    Endpoint {
        endpoint: addr("127.0.0.1:5778"),
        tls: None,
        auth: None,
    }
}

impl Default for RemoteSampling {
    /// What `clew serve` offers with no configuration, like Jaeger all-in-one: `:5778/sampling`
    /// answering every service with the default probability.
    fn default() -> Self {
        Self {
            http: default_remote_http(),
            source: RemoteSource::default(),
            strategies: None,
            strategies_path: None,
        }
    }
}

/// Used when `service.extensions` is absent and `extensions.jaeger_remote_sampling` undefined.
static DEFAULT_REMOTE_SAMPLING: std::sync::LazyLock<RemoteSampling> =
    std::sync::LazyLock::new(RemoteSampling::default);

/// The probability answered for services without a strategy of their own when no strategies file
/// says otherwise: 1.0, as in Jaeger v2's all-in-one, so an SDK pointed at Clew keeps everything.
pub const DEFAULT_SAMPLING_PROBABILITY: f64 = 1.0;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RemoteSource {
    /// Jaeger `strategies.json` (relative paths are resolved against the config file's folder).
    pub file: Option<PathBuf>,
    /// Adaptive per-operation probabilities from observed root spans.
    pub adaptive: Option<clew_sampling::AdaptiveConfig>,
    /// Re-read the strategies file this often (e.g. "30s"); off when absent.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub reload_interval: Option<Duration>,
    /// Probability for services no strategy names (a file without `default_strategy`, or no
    /// file at all). Default 1.0.
    pub default_sampling_probability: Option<f64>,
}

impl RemoteSource {
    pub fn default_probability(&self) -> f64 {
        self.default_sampling_probability
            .unwrap_or(DEFAULT_SAMPLING_PROBABILITY)
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

// No `deny_unknown_fields` (serde cannot combine it with `flatten`): `named` takes every other
// key, and validation refuses any that is not `kafka/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Receivers {
    pub otlp: Option<Otlp>,
    pub zipkin: Option<Endpoint>,
    /// Consume spans from a Kafka topic (the Collector's `kafka` receiver; off unless configured).
    pub kafka: Option<clew_kafka::KafkaReceiverConfig>,
    /// Every other key: more Kafka receivers, named as the Collector names components
    /// (`kafka/NAME`), parsed into `kafka_named` by validation.
    #[serde(flatten)]
    pub named: std::collections::BTreeMap<String, serde_yaml::Value>,
    #[serde(skip)]
    pub kafka_named: std::collections::BTreeMap<String, clew_kafka::KafkaReceiverConfig>,
}

impl Default for Receivers {
    fn default() -> Self {
        Self {
            otlp: Some(Otlp::default()),
            zipkin: Some(Endpoint {
                endpoint: addr("127.0.0.1:9411"),
                tls: None,
                auth: None,
            }),
            kafka: None,
            named: Default::default(),
            kafka_named: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    pub protocols: OtlpProtocols,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpProtocols {
    pub grpc: Option<GrpcProtocol>,
    pub http: Option<HttpProtocol>,
}

impl Default for OtlpProtocols {
    fn default() -> Self {
        Self {
            grpc: Some(GrpcProtocol::default()),
            http: Some(HttpProtocol::default()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcProtocol {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    pub max_recv_msg_size_mib: usize,
    /// TLS / mutual TLS (the Collector's `configtls` keys); plaintext when absent.
    pub tls: Option<TlsServerSettings>,
    /// Authentication and the tenant gate (`bearer_tokens`, `mtls`, `oidc` or `proxy_header`;
    /// see docs/tenant-isolation.md); open when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for GrpcProtocol {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:4317"),
            max_recv_msg_size_mib: 16,
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpProtocol {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    pub max_request_body_size_mib: usize,
    pub tls: Option<TlsServerSettings>,
    /// Authentication and the tenant gate (`bearer_tokens`, `mtls`, `oidc` or `proxy_header`;
    /// see docs/tenant-isolation.md); open when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for HttpProtocol {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:4318"),
            max_request_body_size_mib: 16,
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsServerSettings>,
    /// Authentication and the tenant gate (`bearer_tokens`, `mtls`, `oidc` or `proxy_header`;
    /// see docs/tenant-isolation.md); open when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub path: PathBuf,
    pub block: BlockSettings,
    pub compaction: CompactionSettings,
    /// Exports are refused (retryably) while this many spans wait to be written into blocks.
    pub max_head_spans: usize,
    /// How long spans are kept (Tempo's `block_retention`), default 14 days; per-tenant values in
    /// the overrides file (`limits.per_tenant_file`, key `retention`).
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// How often expired blocks are looked for and deleted (default 1m).
    #[serde(deserialize_with = "de_duration")]
    pub retention_interval: Duration,
    /// Blocks in an S3-compatible bucket instead of (or, with `tiering`, after) local disk.
    pub s3: Option<clew_store::storage::S3Config>,
    /// With `s3`: write blocks locally and move them to the bucket once older than `after`.
    pub tiering: Option<TieringSettings>,
    /// Encryption at rest (envelope keys from a local keyring or AWS KMS); off when absent.
    pub encryption: Option<clew_encryption::EncryptionConfig>,
    /// Free-space watermarks (`min_free_mib`/`min_free_percent` to stop accepting spans,
    /// `resume_free_mib`/`resume_free_percent` to accept again); on by default.
    pub disk: clew_store::disk_guard::DiskConfig,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./clew-data"),
            block: BlockSettings::default(),
            compaction: CompactionSettings::default(),
            max_head_spans: 4_000_000,
            retention: clew_store::DEFAULT_RETENTION,
            retention_interval: Duration::from_secs(60),
            s3: None,
            tiering: None,
            encryption: None,
            disk: clew_store::disk_guard::DiskConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieringSettings {
    /// Age (of a block's newest span) after which it moves from local disk to the bucket.
    #[serde(deserialize_with = "de_duration")]
    pub after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockSettings {
    pub max_spans: usize,
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
    pub row_group_rows: usize,
}

impl Default for BlockSettings {
    fn default() -> Self {
        Self {
            max_spans: 500_000,
            max_age: Duration::from_secs(30),
            row_group_rows: 8192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSettings {
    pub enabled: bool,
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    pub min_blocks: usize,
    pub max_block_spans: u64,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        let d = clew_store::CompactionConfig::default();
        Self {
            enabled: d.enabled,
            interval: d.interval,
            min_blocks: d.min_blocks,
            max_block_spans: d.max_block_spans,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Query {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    pub tls: Option<TlsServerSettings>,
    /// Authentication and the tenant gate (`bearer_tokens`, `mtls`, `oidc` or `proxy_header`;
    /// see docs/tenant-isolation.md); open when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:16686"),
            tls: None,
            auth: None,
        }
    }
}

/// `tempo:`: the listener of Tempo's HTTP API, for Grafana's Tempo data source. `tls` and `auth`
/// as for `query:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tempo {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    pub tls: Option<TlsServerSettings>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for Tempo {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:3200"),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tenancy {
    /// Header (gRPC metadata) carrying the tenant id, as in Tempo and Loki.
    pub header: String,
}

impl Default for Tenancy {
    fn default() -> Self {
        Self {
            header: "X-Scope-OrgID".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Service {
    pub telemetry: Telemetry,
    pub pipelines: Pipelines,
    /// Enabled extensions, by name (e.g. `[jaeger_remote_sampling]`). Absent: the defaults
    /// (`jaeger_remote_sampling` on :5778); `[]` turns every extension off.
    pub extensions: Option<Vec<String>>,
}

/// `service.pipelines`: `traces` and `traces/NAME`, each `receivers → processors → exporters`.
pub type Pipelines = std::collections::BTreeMap<String, crate::graph::PipelineSpec>;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    pub logs: Logs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    pub level: String,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn de_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_endpoint(&s).map_err(serde::de::Error::custom)
}

/// `HOST:PORT`; `localhost` is accepted and means 127.0.0.1.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let s2 = s
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"))
        .unwrap_or_else(|| s.to_string());
    s2.parse().map_err(|_| format!("{s:?} is not HOST:PORT with an IP address (fix: e.g. \"127.0.0.1:4317\" or \"0.0.0.0:4317\")"))
}

/// `receivers.kafka/NAME` entries (every key of `receivers` but otlp, zipkin and kafka): each a
/// Kafka receiver, checked like `receivers.kafka`; any other key is an error naming it.
fn parse_named_receivers(
    named: &std::collections::BTreeMap<String, serde_yaml::Value>,
) -> anyhow::Result<std::collections::BTreeMap<String, clew_kafka::KafkaReceiverConfig>> {
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in named {
        if key.strip_prefix("kafka/").is_none_or(str::is_empty) {
            bail!("key `receivers.{key}`: unknown receiver (fix: one of otlp, zipkin, kafka, or kafka/NAME for another Kafka receiver)");
        }
        let cfg: clew_kafka::KafkaReceiverConfig = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| {
                let path = e.path().to_string();
                let sub = if path == "." {
                    String::new()
                } else {
                    format!(".{path}")
                };
                anyhow::anyhow!("key `receivers.{key}{sub}`: {}", e.into_inner())
            })?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("key `receivers.{key}.{}`: {}", e.key, e.message))?;
        out.insert(key.clone(), cfg);
    }
    Ok(out)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"30s\", \"5m\""
        ))
    })
}

/// One listener of the configuration (see [`Config::listeners`]).
#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig<'a> {
    /// The section holding `endpoint` and `tls`, e.g. `receivers.otlp.protocols.grpc`.
    pub key: &'static str,
    pub addr: SocketAddr,
    pub tls: Option<&'a TlsServerSettings>,
}

impl<'a> ListenerConfig<'a> {
    fn new(key: &'static str, addr: SocketAddr, tls: Option<&'a TlsServerSettings>) -> Self {
        Self { key, addr, tls }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        cfg.source = Some((path.to_path_buf(), hex::encode(digest.as_ref())));
        let origin = path.display().to_string();
        if let Some(rs) = cfg.remote_sampling_mut() {
            if let Some(file) = rs.source.file.clone() {
                let full = if file.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(&file)
                } else {
                    file.clone()
                };
                let text = std::fs::read_to_string(&full).with_context(|| {
                    format!("{origin}: key `extensions.jaeger_remote_sampling.source.file`: cannot read {} (fix: point it at a Jaeger strategies.json)", full.display())
                })?;
                let f = clew_sampling::StrategiesFile::parse(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "{origin}: key `extensions.jaeger_remote_sampling.source.file`: {}: {e}",
                        full.display()
                    )
                })?;
                rs.strategies = Some(f);
                rs.strategies_path = Some(full);
            }
        }
        if let Some(local) = cfg
            .storage
            .encryption
            .as_mut()
            .and_then(|e| e.local.as_mut())
        {
            if local.keyring.is_relative() {
                local.keyring = path.parent().unwrap_or(Path::new(".")).join(&local.keyring);
            }
        }
        if let Some(limits) = &mut cfg.limits {
            // Relative to the config file's folder; a broken file stops start-up (a reload keeps
            // the previous limits instead).
            limits
                .load_per_tenant_file(path.parent().unwrap_or(Path::new(".")))
                .map_err(|e| anyhow::anyhow!("{origin}: key `limits.per_tenant_file`: {e}"))?;
        }
        // TLS files: relative to the config file's folder; read and checked now so that
        // `clew config check` reports a bad certificate (the listener reads them again at start).
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for tls in cfg.tls_settings_mut() {
            tls.resolve_paths(&base);
        }
        if let Some(tls) = &mut cfg.cluster.ingester_client.tls {
            tls.resolve_paths(&base);
        }
        let mut tls_warnings = Vec::new();
        for l in cfg.listeners() {
            if let Some(tls) = l.tls {
                let checked = clew_security::tls::ServerTls::new(
                    tls.clone(),
                    &format!("{}.tls", l.key),
                    clew_security::tls::Alpn::Http,
                )
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
                tls_warnings.extend(checked.warnings());
            }
        }
        cfg.warnings.extend(tls_warnings);
        // Authentication files (tokens, JWKS): relative to the config file's folder; read now so
        // that `clew config check` reports a missing or broken file.
        for (key, auth) in cfg.auth_configs_mut() {
            auth.resolve_paths(&base);
            auth.build().map_err(|e| {
                anyhow::anyhow!("{origin}: key `{key}.auth.{}`: {}", e.key, e.message)
            })?;
        }
        for w in &cfg.warnings {
            eprintln!("{origin}: warning: {w}");
        }
        Ok(cfg)
    }

    /// The remote sampling extension, if enabled: listed in `service.extensions`, or on by default
    /// when that list is absent (with the defined settings, or the defaults).
    pub fn remote_sampling(&self) -> Option<&RemoteSampling> {
        match &self.service.extensions {
            None => Some(
                self.extensions
                    .jaeger_remote_sampling
                    .as_ref()
                    .unwrap_or(&DEFAULT_REMOTE_SAMPLING),
            ),
            Some(list) => {
                let enabled = list
                    .iter()
                    .any(|e| e == "jaeger_remote_sampling" || e == "jaegerremotesampling");
                self.extensions
                    .jaeger_remote_sampling
                    .as_ref()
                    .filter(|_| enabled)
            }
        }
    }

    /// The remote sampling settings to change (e.g. a `--sampling-endpoint` flag), defining the
    /// extension with defaults when it is on by default but undefined.
    pub fn remote_sampling_settings_mut(&mut self) -> &mut RemoteSampling {
        self.extensions
            .jaeger_remote_sampling
            .get_or_insert_with(RemoteSampling::default)
    }

    fn remote_sampling_mut(&mut self) -> Option<&mut RemoteSampling> {
        self.remote_sampling()?;
        self.extensions.jaeger_remote_sampling.as_mut()
    }

    /// Parses and validates YAML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        // An empty file is every default, checked like any other (the pipeline graph is built
        // in validation).
        let text = if text.trim().is_empty() { "{}" } else { text };
        let de = serde_yaml::Deserializer::from_str(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let hint = if inner.contains("unknown field") {
                " (fix: correct the spelling to one of the keys listed; all keys are in the README's configuration reference)"
            } else {
                ""
            };
            anyhow::anyhow!("{origin}: key `{key}`: {inner}{hint}")
        })?;
        cfg.validate_processors()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        cfg.check_target()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    /// [`crate::target::check`]: what the target needs of the rest; warnings into `warnings`.
    pub fn check_target(&mut self) -> anyhow::Result<()> {
        let mut warnings = Vec::new();
        crate::target::check(self, &mut warnings)?;
        for w in warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        Ok(())
    }

    /// Parses every named processor by its type, checks the traces pipeline's references, and
    /// fills `processor_configs` in pipeline order.
    fn validate_processors(&mut self) -> anyhow::Result<()> {
        use crate::graph::section as sub;
        let mut defined: Vec<(String, ProcessorConfig)> = Vec::new();
        for (name, value) in &self.processors {
            let Some(name) = name.as_str() else {
                bail!("key `processors`: processor names must be strings (fix: e.g. `tail_sampling/errors:`)");
            };
            let key = format!("processors.{name}");
            let ty = name.split('/').next().unwrap_or_default();
            if name.split('/').nth(1).is_some_and(str::is_empty) {
                bail!("key `{key}`: empty name after `/` (fix: e.g. `{ty}/errors`)");
            }
            let pc = match ty {
                "tail_sampling" => {
                    let c: clew_sampling::TailSamplingConfig = sub(&key, value)?;
                    c.compile()
                        .map_err(|(k, m)| anyhow::anyhow!("key `{key}.{k}`: {m}"))?;
                    ProcessorConfig::TailSampling(c)
                }
                "probabilistic_sampler" => {
                    let c: clew_sampling::ProbabilisticSamplerConfig = sub(&key, value)?;
                    c.validate()
                        .map_err(|(k, m)| anyhow::anyhow!("key `{key}.{k}`: {m}"))?;
                    ProcessorConfig::ProbabilisticSampler(c)
                }
                "attributes" => {
                    let c: clew_processors::AttributesConfig = sub(&key, value)?;
                    // Building it checks every pattern and key source (a start-up error, not a
                    // panic later).
                    clew_processors::Attributes::new(name, c.clone())
                        .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                    ProcessorConfig::Attributes(Box::new(c))
                }
                "memory_limiter" => {
                    let c: clew_processors::MemoryLimiterConfig = sub(&key, value)?;
                    c.limits(clew_processors::memory_limiter::total_memory())
                        .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                    ProcessorConfig::MemoryLimiter(c)
                }
                "redaction" => {
                    let c: clew_processors::redaction::RedactionConfig = sub(&key, value)?;
                    // `validate`: with `hash_key_source: key_provider` the secret is resolved
                    // at start-up (pipelines.rs), so only the rest can be checked here.
                    clew_processors::redaction::Redaction::validate(name.to_string(), c.clone())
                        .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                    if c.hash_key_source == clew_processors::redaction::HashKeyOrigin::KeyProvider
                        && self.storage.encryption.is_none()
                    {
                        bail!("key `{key}.hash_key_source`: `key_provider` needs `storage.encryption` (its key provider generates and wraps the HMAC secret) (fix: configure storage.encryption — see docs/encryption-at-rest.md — or give the key with hash_key_file, hash_key_env or hash_keys)");
                    }
                    ProcessorConfig::Redaction(Box::new(c))
                }
                "baggage_policy" => {
                    let c: clew_processors::BaggagePolicyConfig = sub(&key, value)?;
                    clew_processors::BaggagePolicyProcessor::new(name, c.clone())
                        .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                    ProcessorConfig::BaggagePolicy(Box::new(c))
                }
                other => bail!(
                    "key `{key}`: unknown processor type {other:?} (fix: one of {}; the type is the part before `/`)",
                    PROCESSOR_TYPES.join(", ")
                ),
            };
            defined.push((name.to_string(), pc));
        }
        let exporters = crate::graph::parse_exporters(&self.exporters)?;
        let connectors = crate::graph::parse_connectors(&self.connectors)?;
        let mut network: Vec<String> = Vec::new();
        if self.receivers.otlp.is_some() {
            network.push("otlp".into());
        }
        if self.receivers.zipkin.is_some() {
            network.push("zipkin".into());
        }
        if let Some(k) = &self.receivers.kafka {
            k.validate()
                .map_err(|e| anyhow::anyhow!("key `receivers.kafka.{}`: {}", e.key, e.message))?;
            network.push("kafka".into());
        }
        self.receivers.kafka_named = parse_named_receivers(&self.receivers.named)?;
        network.extend(self.receivers.kafka_named.keys().cloned());
        let network: Vec<&str> = network.iter().map(String::as_str).collect();
        self.graph = crate::graph::check(
            &self.service.pipelines,
            &network,
            &defined,
            exporters,
            connectors,
            &mut self.warnings,
        )?;
        self.processor_configs = self
            .graph
            .pipelines
            .iter()
            .find(|p| p.name == "traces")
            .map(|p| p.processors.clone())
            .unwrap_or_default();
        let tails = self
            .graph
            .pipelines
            .iter()
            .map(|p| {
                p.processors
                    .iter()
                    .filter(|(_, c)| matches!(c, ProcessorConfig::TailSampling(_)))
                    .count()
            })
            .max()
            .unwrap_or(0);
        if tails > 1 {
            self.warnings.push("more than one tail_sampling processor in the pipeline: each waits its own decision_wait (fix: combine their policies into one)".into());
        }
        for (i, e) in self.service.extensions.iter().flatten().enumerate() {
            let known = e == "jaeger_remote_sampling" || e == "jaegerremotesampling";
            if !known {
                bail!("key `service.extensions[{i}]`: unknown extension `{e}` (fix: jaeger_remote_sampling)");
            }
            if self.extensions.jaeger_remote_sampling.is_none() {
                bail!("key `service.extensions[{i}]`: extension `{e}` is not defined (fix: define it under `extensions:`)");
            }
        }
        if let Some(rs) = &self.extensions.jaeger_remote_sampling {
            let key = "extensions.jaeger_remote_sampling.source";
            if let Some(p) = rs.source.default_sampling_probability {
                if !(0.0..=1.0).contains(&p) {
                    bail!("key `{key}.default_sampling_probability`: {p} is not a probability (fix: a number from 0.0 to 1.0)");
                }
            }
            match (&rs.source.file, &rs.source.adaptive) {
                (Some(_), Some(_)) => bail!(
                    "key `{key}`: set at most one of `file` and `adaptive` (fix: e.g. `source: {{file: strategies.json}}`)"
                ),
                (None, None) if rs.source.reload_interval.is_some() => bail!(
                    "key `{key}.reload_interval`: there is no strategies file to reload (fix: set `file`, or remove it)"
                ),
                (None, Some(a)) => {
                    a.validate()
                        .map_err(|(k, m)| anyhow::anyhow!("key `{key}.adaptive.{k}`: {m}"))?;
                    if rs.source.reload_interval.is_some() {
                        bail!("key `{key}.reload_interval`: only a `file` source is reloaded (fix: remove it)");
                    }
                }
                _ => {}
            }
            if self.remote_sampling().is_none() {
                self.warnings.push("key `extensions.jaeger_remote_sampling`: defined but not enabled (fix: add it to service.extensions)".into());
            }
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(limits) = &self.limits {
            limits.validate().map_err(anyhow::Error::msg)?;
        }
        for l in self.listeners() {
            if let Some(auth) = self.listener_auth(l.key) {
                auth.validate().map_err(|e| {
                    let sub = if e.key.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", e.key)
                    };
                    anyhow::anyhow!("key `{}.auth{sub}`: {}", l.key, e.message)
                })?;
                if auth.mtls.is_some() && l.tls.is_none_or(|t| t.client_ca_file.is_none()) {
                    bail!("key `{}.auth.mtls`: the listener verifies no client certificates, so every request would be refused (fix: add `{}.tls` with cert_file, key_file and client_ca_file)", l.key, l.key);
                }
            }
        }
        for l in self.listeners() {
            if let Some(tls) = l.tls {
                tls.check_keys(&format!("{}.tls", l.key))?;
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (key, addr) in self.endpoints() {
            if let Some(other) = seen.insert(addr, key) {
                bail!("key `{key}`: endpoint {addr} is also used by `{other}` (fix: give each listener its own port)");
            }
        }
        if let Some(otlp) = &self.receivers.otlp {
            if otlp
                .protocols
                .grpc
                .as_ref()
                .is_some_and(|g| g.max_recv_msg_size_mib == 0)
            {
                bail!("key `receivers.otlp.protocols.grpc.max_recv_msg_size_mib`: must be at least 1 (fix: e.g. 16)");
            }
            if otlp
                .protocols
                .http
                .as_ref()
                .is_some_and(|h| h.max_request_body_size_mib == 0)
            {
                bail!("key `receivers.otlp.protocols.http.max_request_body_size_mib`: must be at least 1 (fix: e.g. 16)");
            }
        }
        if self.storage.block.max_spans == 0 || self.storage.block.row_group_rows == 0 {
            bail!("key `storage.block`: max_spans and row_group_rows must be at least 1 (fix: e.g. 500000 and 8192)");
        }
        if self.storage.max_head_spans < self.storage.block.max_spans {
            bail!("key `storage.max_head_spans`: must be at least storage.block.max_spans (fix: e.g. 8 × max_spans)");
        }
        if self.storage.retention < Duration::from_secs(3600) {
            bail!("key `storage.retention`: must be at least 1h (fix: e.g. \"14d\" or \"720h\")");
        }
        self.storage.disk.validate()?;
        if self.storage.retention_interval.is_zero() {
            bail!("key `storage.retention_interval`: must be longer than 0s (fix: e.g. \"1m\")");
        }
        if self.storage.tiering.is_some() && self.storage.s3.is_none() {
            bail!("key `storage.tiering`: tiering moves blocks to a bucket, and `storage.s3` is not set (fix: add `storage.s3` with `bucket`, or remove `storage.tiering`)");
        }
        if let Some(e) = &self.storage.encryption {
            use clew_encryption::ProviderKind;
            match (e.provider, &e.local, &e.aws_kms) {
                (ProviderKind::Local, None, _) => bail!("key `storage.encryption.local.keyring`: required with `provider: local` (fix: the keyring file `clew keys init --keyring PATH` creates)"),
                (ProviderKind::AwsKms, _, None) => bail!("key `storage.encryption.aws_kms`: required with `provider: aws_kms` (fix: at least `key_id: alias/NAME`)"),
                _ => {}
            }
        }
        if let Some(s3) = &self.storage.s3 {
            if s3.bucket.trim().is_empty() {
                bail!("key `storage.s3.bucket`: must not be empty (fix: the bucket's name, e.g. `clew-traces`)");
            }
        }
        if self.storage.path.as_os_str().is_empty() {
            bail!("key `storage.path`: must not be empty (fix: e.g. ./clew-data)");
        }
        if axum::http::HeaderName::from_bytes(self.tenancy.header.as_bytes()).is_err() {
            bail!("key `tenancy.header`: {:?} is not a valid HTTP header name (fix: e.g. X-Scope-OrgID)", self.tenancy.header);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.service.telemetry.logs.level).is_err() {
            bail!("key `service.telemetry.logs.level`: {:?} is not a log level (fix: one of error, warn, info, debug, trace)",
                self.service.telemetry.logs.level);
        }
        Ok(())
    }

    /// Every listener: its config key (the section holding `endpoint` and `tls`), address and
    /// TLS settings. A new listener must be added here, so it gets `tls:`, the start-up warnings
    /// and serve.rs's `bind` like every other.
    pub fn listeners(&self) -> Vec<ListenerConfig<'_>> {
        let mut out = Vec::new();
        if let Some(otlp) = &self.receivers.otlp {
            if let Some(g) = &otlp.protocols.grpc {
                out.push(ListenerConfig::new(
                    "receivers.otlp.protocols.grpc",
                    g.endpoint,
                    g.tls.as_ref(),
                ));
            }
            if let Some(h) = &otlp.protocols.http {
                out.push(ListenerConfig::new(
                    "receivers.otlp.protocols.http",
                    h.endpoint,
                    h.tls.as_ref(),
                ));
            }
        }
        if let Some(z) = &self.receivers.zipkin {
            out.push(ListenerConfig::new(
                "receivers.zipkin",
                z.endpoint,
                z.tls.as_ref(),
            ));
        }
        out.push(ListenerConfig::new(
            "query",
            self.query.endpoint,
            self.query.tls.as_ref(),
        ));
        out.push(ListenerConfig::new(
            "tempo",
            self.tempo.endpoint,
            self.tempo.tls.as_ref(),
        ));
        if let Some(rs) = self.remote_sampling() {
            out.push(ListenerConfig::new(
                "extensions.jaeger_remote_sampling.http",
                rs.http.endpoint,
                rs.http.tls.as_ref(),
            ));
        }
        out
    }

    /// The `tls` settings of every configured listener, to change (path resolution).
    fn tls_settings_mut(&mut self) -> Vec<&mut TlsServerSettings> {
        let mut out = Vec::new();
        if let Some(otlp) = &mut self.receivers.otlp {
            out.extend(otlp.protocols.grpc.as_mut().and_then(|g| g.tls.as_mut()));
            out.extend(otlp.protocols.http.as_mut().and_then(|h| h.tls.as_mut()));
        }
        out.extend(self.receivers.zipkin.as_mut().and_then(|z| z.tls.as_mut()));
        out.extend(self.query.tls.as_mut());
        out.extend(self.tempo.tls.as_mut());
        out.extend(
            self.extensions
                .jaeger_remote_sampling
                .as_mut()
                .and_then(|rs| rs.http.tls.as_mut()),
        );
        out
    }

    /// Start-up warnings about how the listeners are exposed (`clew serve` logs each): a
    /// listener on a non-loopback address without TLS, or without authentication.
    pub fn listener_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.listeners() {
            if l.addr.ip().is_loopback() {
                continue;
            }
            if l.tls.is_none() {
                out.push(format!(
                    "`{}.endpoint` listens on {} (not loopback) without TLS: spans, queries and tenant headers cross the network in clear text (fix: add `{}.tls` with cert_file and key_file, or listen on 127.0.0.1)",
                    l.key, l.addr, l.key
                ));
            }
            if self.listener_has_auth(&l) == Some(false) {
                out.push(format!(
                    "`{}.endpoint` listens on {} (not loopback) without authentication: anyone who can reach it can send or read traces of any tenant (fix: configure `auth` for it, or listen on 127.0.0.1)",
                    l.key, l.addr
                ));
            }
        }
        // The Tempo API reads the same traces as the query API: on loopback too, a local process
        // would get around `query.auth` through it.
        if self.query.auth.is_some() && self.tempo.auth.is_none() {
            out.push(format!(
                "`tempo.endpoint` ({}) serves every tenant's traces without authentication while `query` requires it (fix: add `tempo.auth`, e.g. the same as `query.auth`)",
                self.tempo.endpoint
            ));
        }
        out
    }

    /// Whether the listener authenticates its callers: `None` while Clew has no `auth`
    /// settings (nothing to warn about yet). The authentication work answers `Some(…)` here
    /// from its config, and [`Config::listener_warnings`] warns for `Some(false)`.
    fn listener_has_auth(&self, listener: &ListenerConfig<'_>) -> Option<bool> {
        Some(self.listener_auth(listener.key).is_some())
    }

    /// The `auth` settings of the listener whose section is `key` (see [`Config::listeners`]).
    pub fn listener_auth(&self, key: &str) -> Option<&AuthConfig> {
        match key {
            "receivers.otlp.protocols.grpc" => self
                .receivers
                .otlp
                .as_ref()?
                .protocols
                .grpc
                .as_ref()?
                .auth
                .as_ref(),
            "receivers.otlp.protocols.http" => self
                .receivers
                .otlp
                .as_ref()?
                .protocols
                .http
                .as_ref()?
                .auth
                .as_ref(),
            "receivers.zipkin" => self.receivers.zipkin.as_ref()?.auth.as_ref(),
            "query" => self.query.auth.as_ref(),
            "tempo" => self.tempo.auth.as_ref(),
            "extensions.jaeger_remote_sampling.http" => self.remote_sampling()?.http.auth.as_ref(),
            _ => None,
        }
    }

    /// Every configured `auth`, with its listener's key (path resolution, checks at load).
    fn auth_configs_mut(&mut self) -> Vec<(&'static str, &mut AuthConfig)> {
        let mut out = Vec::new();
        if let Some(otlp) = &mut self.receivers.otlp {
            if let Some(a) = otlp.protocols.grpc.as_mut().and_then(|g| g.auth.as_mut()) {
                out.push(("receivers.otlp.protocols.grpc", a));
            }
            if let Some(a) = otlp.protocols.http.as_mut().and_then(|h| h.auth.as_mut()) {
                out.push(("receivers.otlp.protocols.http", a));
            }
        }
        if let Some(a) = self.receivers.zipkin.as_mut().and_then(|z| z.auth.as_mut()) {
            out.push(("receivers.zipkin", a));
        }
        if let Some(a) = self.query.auth.as_mut() {
            out.push(("query", a));
        }
        if let Some(a) = self.tempo.auth.as_mut() {
            out.push(("tempo", a));
        }
        if let Some(a) = self
            .extensions
            .jaeger_remote_sampling
            .as_mut()
            .and_then(|rs| rs.http.auth.as_mut())
        {
            out.push(("extensions.jaeger_remote_sampling.http", a));
        }
        out
    }

    /// Every listener with its config key.
    pub fn endpoints(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = Vec::new();
        if let Some(otlp) = &self.receivers.otlp {
            if let Some(g) = &otlp.protocols.grpc {
                out.push(("receivers.otlp.protocols.grpc.endpoint", g.endpoint));
            }
            if let Some(h) = &otlp.protocols.http {
                out.push(("receivers.otlp.protocols.http.endpoint", h.endpoint));
            }
        }
        if let Some(z) = &self.receivers.zipkin {
            out.push(("receivers.zipkin.endpoint", z.endpoint));
        }
        out.push(("query.endpoint", self.query.endpoint));
        out.push(("tempo.endpoint", self.tempo.endpoint));
        if let Some(rs) = self.remote_sampling() {
            out.push((
                "extensions.jaeger_remote_sampling.http.endpoint",
                rs.http.endpoint,
            ));
        }
        out
    }

    /// What the audit log records when this configuration is loaded: where it came from (file and
    /// SHA-256) and the settings that govern data (retention, object storage, encryption,
    /// authentication per listener) — never a secret.
    pub fn audit_summary(&self) -> serde_json::Value {
        let listeners: Vec<serde_json::Value> = self
            .listeners()
            .iter()
            .map(|l| {
                let auth = self.listener_auth(l.key).map(|a| {
                    [
                        ("bearer_tokens", a.bearer_tokens.is_some()),
                        ("mtls", a.mtls.is_some()),
                        ("oidc", a.oidc.is_some()),
                        ("proxy_header", a.proxy_header.is_some()),
                    ]
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>()
                });
                serde_json::json!({
                    "key": l.key,
                    "endpoint": l.addr.to_string(),
                    "tls": l.tls.is_some(),
                    "auth": auth,
                })
            })
            .collect();
        serde_json::json!({
            "file": self.source.as_ref().map(|(p, _)| p.display().to_string()),
            "sha256": self.source.as_ref().map(|(_, h)| h.clone()),
            "data_dir": self.storage.path.display().to_string(),
            "retention_seconds": self.storage.retention.as_secs(),
            "per_tenant_file": self.limits.as_ref().and_then(|l| l.per_tenant_file.as_ref()).map(|p| p.display().to_string()),
            "s3_bucket": self.storage.s3.as_ref().map(|s| s.bucket.clone()),
            "tiering_after_seconds": self.storage.tiering.as_ref().map(|t| t.after.as_secs()),
            "encryption": self.storage.encryption.as_ref().map(|e| serde_json::json!({
                "provider": e.provider,
                "keyring": e.local.as_ref().map(|l| l.keyring.display().to_string()),
                "kms_key_id": e.aws_kms.as_ref().map(|k| k.key_id.clone()),
            })),
            "listeners": listeners,
        })
    }

    /// Request headers the receivers keep with each batch (`from_context: metadata.X` of an
    /// `attributes` processor in some pipeline).
    pub fn metadata_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .graph
            .pipelines
            .iter()
            .flat_map(|p| &p.processors)
            .filter_map(|(_, c)| match c {
                ProcessorConfig::Attributes(a) => Some(a.metadata_keys_referenced()),
                _ => None,
            })
            .flatten()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every Kafka receiver: `kafka`, then `kafka/NAME` in name order.
    pub fn kafka_receivers(&self) -> Vec<(&str, &clew_kafka::KafkaReceiverConfig)> {
        self.receivers
            .kafka
            .iter()
            .map(|k| ("kafka", k))
            .chain(
                self.receivers
                    .kafka_named
                    .iter()
                    .map(|(n, k)| (n.as_str(), k)),
            )
            .collect()
    }

    pub fn store_config(&self) -> clew_store::StoreConfig {
        let mut c = clew_store::StoreConfig::new(&self.storage.path);
        c.flush_max_spans = self.storage.block.max_spans;
        c.flush_max_age = self.storage.block.max_age;
        c.rows_per_row_group = self.storage.block.row_group_rows;
        c.max_head_spans = self.storage.max_head_spans;
        c.retention = self.storage.retention;
        c.retention_interval = self.storage.retention_interval;
        c.s3 = self.storage.s3.clone();
        c.tiering = self
            .storage
            .tiering
            .as_ref()
            .map(|t| clew_store::storage::TieringConfig { after: t.after });
        let k = &self.storage.compaction;
        c.compaction = clew_store::CompactionConfig {
            enabled: k.enabled,
            interval: k.interval,
            min_blocks: k.min_blocks,
            max_block_spans: k.max_block_spans,
        };
        c.shared = self.target.shared_role().map(|role| {
            let mut shared =
                clew_store::SharedBucket::new(role, self.cluster.node_name(&self.storage.path));
            shared.blocklist_poll = self.cluster.blocklist_poll;
            shared.recent_blocks_for = self.cluster.recent_blocks_for;
            shared.lease_ttl = self.cluster.lease_ttl;
            shared
        });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_kafka_receivers_are_receivers_of_their_own() {
        let text = "receivers:\n  kafka/eu: {brokers: [127.0.0.1:9092], topic: spans_eu}\n  kafka/us: {brokers: [127.0.0.1:9093], topic: spans_us, group_id: us}\nservice:\n  pipelines:\n    traces: {receivers: [otlp, kafka/eu, kafka/us], exporters: [clew_store]}\n";
        let c = Config::parse(text, "t.yaml").unwrap();
        let names: Vec<&str> = c.kafka_receivers().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["kafka/eu", "kafka/us"]);
        assert_eq!(c.kafka_receivers()[1].1.topic(), "spans_us");
        assert_eq!(c.graph.pipelines_fed_by("kafka/us").len(), 1);
        // The default pipeline takes every enabled receiver, named ones too.
        let c = Config::parse(
            "receivers:\n  kafka/eu: {brokers: [127.0.0.1:9092]}\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(c.graph.pipelines_fed_by("kafka/eu").len(), 1);
        for (text, want) in [
            ("receivers:\n  zipkn: {endpoint: 127.0.0.1:9411}\n", "key `receivers.zipkn`: unknown receiver"),
            ("receivers:\n  kafka/: {}\n", "key `receivers.kafka/`: unknown receiver"),
            ("receivers:\n  kafka/eu: {topik: x}\n", "key `receivers.kafka/eu.topik`: unknown field `topik`"),
            ("receivers:\n  kafka/eu: {brokers: [nohost]}\n", "key `receivers.kafka/eu.brokers[0]`"),
            ("receivers:\n  kafka/eu: {brokers: [127.0.0.1:9092]}\nservice:\n  pipelines:\n    traces: {receivers: [kafka/us], exporters: [clew_store]}\n", "`kafka/us` is neither a receiver nor a defined connector"),
        ] {
            let e = format!("{:#}", Config::parse(text, "t.yaml").unwrap_err());
            assert!(e.contains(want), "{text}\n→ {e}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "clew.yaml").unwrap();
        assert_eq!(c.query.endpoint.port(), 16686);
        assert_eq!(c.tempo.endpoint.to_string(), "127.0.0.1:3200");
        // OTLP gRPC and HTTP, Zipkin, query, Tempo API, remote sampling.
        assert_eq!(c.endpoints().len(), 6);
        assert!(c.listeners().iter().any(|l| l.key == "tempo"));
    }

    #[test]
    fn tempo_section_is_a_listener_like_query() {
        let c = Config::parse(
            "tempo:\n  endpoint: 0.0.0.0:3300\n  tls: {cert_file: s.pem, key_file: k.pem}\n",
            "c.yaml",
        )
        .unwrap();
        let l = c
            .listeners()
            .into_iter()
            .find(|l| l.key == "tempo")
            .unwrap();
        assert_eq!(l.addr.port(), 3300);
        assert!(l.tls.is_some());
        // Exposed without auth: warned about like every other listener.
        assert!(
            c.listener_warnings()
                .iter()
                .any(|w| w.starts_with("`tempo.endpoint`") && w.contains("without authentication")),
            "{:?}",
            c.listener_warnings()
        );
        // `query` authenticated, `tempo` not: warned about even on loopback.
        let tokens = "{bearer_tokens: {file: tokens.yaml}}";
        let c = Config::parse(&format!("query:\n  auth: {tokens}\n"), "c.yaml").unwrap();
        assert!(
            c.listener_warnings()
                .iter()
                .any(|w| w.starts_with("`tempo.endpoint` (127.0.0.1:3200)")),
            "{:?}",
            c.listener_warnings()
        );
        let c = Config::parse(
            &format!("query:\n  auth: {tokens}\ntempo:\n  auth: {tokens}\n"),
            "c.yaml",
        )
        .unwrap();
        assert!(c.listener_auth("tempo").is_some());
        assert!(
            c.listener_warnings().is_empty(),
            "{:?}",
            c.listener_warnings()
        );
        let c = Config::parse("tempo:\n  endpoint: 127.0.0.1:3300\n", "c.yaml").unwrap();
        assert_eq!(c.tempo.endpoint.port(), 3300);
        assert!(c.listener_auth("tempo").is_none());
        let e = Config::parse("tempo:\n  endpoint: 127.0.0.1:16686\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tempo.endpoint") && e.contains("query.endpoint"),
            "{e}"
        );
        let e = Config::parse("tempo:\n  endpoint: nowhere\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tempo.endpoint"), "{e}");
        let e = Config::parse("tempo:\n  port: 1\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            include_str!("../../../examples/config/clew.yaml"),
            "clew.yaml",
        )
        .unwrap();
        assert_eq!(c.storage.block.max_age, Duration::from_secs(30));
        assert_eq!(c.tenancy.header, "X-Scope-OrgID");
    }

    #[test]
    fn errors_name_file_key_and_fix() {
        let e = Config::parse(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: nowhere\n",
            "my.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("my.yaml: key `receivers.otlp.protocols.grpc.endpoint`"),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");

        let e = Config::parse("storage:\n  pathh: x\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `storage.pathh`") && e.contains("unknown field `pathh`"),
            "{e}"
        );

        let e = Config::parse("storage:\n  block:\n    max_age: soon\n", "my.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.block.max_age") && e.contains("fix:"),
            "{e}"
        );

        let e = Config::parse("query:\n  endpoint: 127.0.0.1:4317\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("also used by"), "{e}");

        let e = Config::parse("processors:\n  tail_sampling: {}\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processors.tail_sampling"), "{e}");

        let e = Config::parse("tenancy:\n  header: \"bad header\"\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenancy.header"), "{e}");
    }

    fn err(yaml: &str) -> String {
        Config::parse(yaml, "c.yaml").unwrap_err().to_string()
    }

    #[test]
    fn processors_parse_in_pipeline_order() {
        let c = Config::parse(
            "processors:
  probabilistic_sampler:
    sampling_percentage: 50
  tail_sampling/errors:
    decision_wait: 5s
    policies:
      - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}
  probabilistic_sampler/unused: {}
service:
  pipelines:
    traces:
      processors: [tail_sampling/errors, probabilistic_sampler]
",
            "c.yaml",
        )
        .unwrap();
        let names: Vec<&str> = c
            .processor_configs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, vec!["tail_sampling/errors", "probabilistic_sampler"]);
        assert!(matches!(
            c.processor_configs[0].1,
            ProcessorConfig::TailSampling(_)
        ));
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("processors.probabilistic_sampler/unused"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn disk_watermarks_and_memory_limiter_errors_name_key_and_fix() {
        let c = Config::parse("", "c.yaml").unwrap();
        assert!(c.storage.disk.enabled, "watermarks are on by default");
        let e = err("storage:\n  disk: {min_free_mib: 100, resume_free_mib: 50}\n");
        assert!(
            e.contains("key `storage.disk.resume_free_mib`") && e.contains("fix:"),
            "{e}"
        );
        let e = err("storage:\n  disk: {min_free_percent: 150}\n");
        assert!(e.contains("key `storage.disk.min_free_percent`"), "{e}");
        let e = err("processors:\n  memory_limiter: {check_interval: 1s}\n");
        assert!(
            e.contains("key `processors.memory_limiter.limit_mib`") && e.contains("fix:"),
            "{e}"
        );
        let e = err("processors:\n  memory_limiter: {check_interval: 1s, limit_mib: 100, spike_limit_mib: 100}\n");
        assert!(
            e.contains("key `processors.memory_limiter.spike_limit_mib`"),
            "{e}"
        );
        let ok = Config::parse("processors:\n  memory_limiter: {check_interval: 1s, limit_mib: 1000, spike_limit_mib: 200}\nservice:\n  pipelines:\n    traces:\n      processors: [memory_limiter]\n", "c.yaml");
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn processor_errors_name_file_key_and_fix() {
        let e = err("processors:\n  tail_sampling:\n    policies:\n      - {name: a, type: always_sample}\n      - {name: b, type: always_sample}\n      - {name: c, type: latency, latency: {threshold_ms: 9, upper_threshold_ms: 2}}\n");
        assert!(
            e.starts_with(
                "c.yaml: key `processors.tail_sampling.policies[2].latency.upper_threshold_ms`:"
            ),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
        let e = err("processors:\n  tail_sampling:\n    policies:\n      - {name: c, type: latency, latency: {threshold_ms: soon}}\n");
        assert!(
            e.contains("key `processors.tail_sampling.policies[0].latency.threshold_ms`"),
            "{e}"
        );
        let e = err("processors:\n  tail_sampling:\n    decision_wiat: 5s\n");
        assert!(
            e.contains("processors.tail_sampling.decision_wiat") && e.contains("fix:"),
            "{e}"
        );
        let e = err("processors:\n  batch/x: {}\n");
        assert!(
            e.contains("key `processors.batch/x`: unknown processor type \"batch\""),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
        let e = err("service:\n  pipelines:\n    traces:\n      processors: [tail_sampling]\n");
        assert!(
            e.contains("key `service.pipelines.traces.processors[0]`: processor `tail_sampling` is not defined"),
            "{e}"
        );
        let e = err("processors:\n  probabilistic_sampler: {sampling_percentage: 150}\n");
        assert!(
            e.contains("processors.probabilistic_sampler.sampling_percentage"),
            "{e}"
        );
        let e = err("processors:\n  probabilistic_sampler: {mode: sometimes}\n");
        assert!(e.contains("processors.probabilistic_sampler.mode"), "{e}");
    }

    #[test]
    fn remote_sampling_is_on_by_default() {
        for c in [
            Config::default(),
            Config::parse("query: {}\n", "c.yaml").unwrap(),
        ] {
            let rs = c.remote_sampling().expect("on without configuration");
            assert_eq!(rs.http.endpoint.to_string(), "127.0.0.1:5778");
            assert_eq!(rs.source.default_probability(), 1.0);
            assert!(rs.source.file.is_none() && rs.source.adaptive.is_none());
        }
        let c = Config::parse(
            "extensions:\n  jaeger_remote_sampling:\n    source: {default_sampling_probability: 0.25}\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(
            c.remote_sampling().unwrap().source.default_probability(),
            0.25
        );
        let off = Config::parse("service:\n  extensions: []\n", "c.yaml").unwrap();
        assert!(off.remote_sampling().is_none());
        // OTLP gRPC and HTTP, Zipkin, query, Tempo API.
        assert_eq!(off.endpoints().len(), 5);
    }

    #[test]
    fn remote_sampling_extension() {
        let c = Config::parse(
            "extensions:\n  jaeger_remote_sampling:\n    http: {endpoint: 127.0.0.1:15778}\n    source:\n      adaptive: {target_samples_per_second: 2}\nservice:\n  extensions: [jaeger_remote_sampling]\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(c.remote_sampling().unwrap().http.endpoint.port(), 15778);
        assert_eq!(c.endpoints().len(), 6);
        // Defined, and service.extensions absent: on (the default list has it).
        let c = Config::parse(
            "extensions:\n  jaeger_remote_sampling:\n    source: {adaptive: {}}\n",
            "c.yaml",
        )
        .unwrap();
        assert!(c.remote_sampling().unwrap().source.adaptive.is_some());
        // Defined but left out of an explicit list: off, with a warning.
        let c = Config::parse(
            "extensions:\n  jaeger_remote_sampling:\n    source: {adaptive: {}}\nservice:\n  extensions: []\n",
            "c.yaml",
        )
        .unwrap();
        assert!(c.remote_sampling().is_none());
        assert_eq!(c.warnings.len(), 1);
        let e = err("extensions:\n  jaeger_remote_sampling:\n    source: {default_sampling_probability: 1.5}\n");
        assert!(
            e.contains("extensions.jaeger_remote_sampling.source.default_sampling_probability")
                && e.contains("fix:"),
            "{e}"
        );
        let e = err(
            "extensions:\n  jaeger_remote_sampling:\n    source: {file: s.json, adaptive: {}}\n",
        );
        assert!(e.contains("at most one of"), "{e}");
        let e = err("extensions:\n  jaeger_remote_sampling:\n    source: {adaptive: {min_sampling_probability: 2}}\n");
        assert!(
            e.contains(
                "extensions.jaeger_remote_sampling.source.adaptive.min_sampling_probability"
            ),
            "{e}"
        );
        let e = err("service:\n  extensions: [zpages]\n");
        assert!(e.contains("service.extensions[0]"), "{e}");
        let e = err("extensions:\n  jaeger_remote_sampling:\n    http: {endpoint: 127.0.0.1:16686}\n    source: {adaptive: {}}\nservice:\n  extensions: [jaeger_remote_sampling]\n");
        assert!(e.contains("also used by"), "{e}");
    }

    #[test]
    fn limits_section() {
        let c = Config::parse(
            "limits:\n  defaults: {ingestion_rate_spans: 100, max_spans_per_trace: 10}\n",
            "c.yaml",
        )
        .unwrap();
        let l = c.limits.unwrap();
        assert_eq!(l.defaults.resolve().max_spans_per_trace, Some(10));
        let e = err("limits:\n  defaults: {max_spans_per_trace: 0}\n");
        assert!(
            e.starts_with("c.yaml: key `limits.defaults.max_spans_per_trace`")
                && e.contains("fix:"),
            "{e}"
        );
        let e = err("limits:\n  default: {}\n");
        assert!(e.contains("key `limits.default`"), "{e}");
        let e = err("limits:\n  reload_interval: 5s\n");
        assert!(e.contains("key `limits.reload_interval`"), "{e}");
    }

    #[test]
    fn example_configs_are_valid() {
        // The keys examples/config/redaction.yaml reads from the environment (no other test reads
        // these variables).
        std::env::set_var("CLEW_REDACTION_KEY", "example-redaction-key-32-bytes!!");
        std::env::set_var("CLEW_BAGGAGE_SECRET", "example-baggage-secret-32-bytes!");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            // proxy.yaml configures `clew proxy`, not the server: crates/clew/tests/proxy.rs
            // checks it with `clew proxy check-config`.
            if p.file_name().is_some_and(|n| n == "proxy.yaml") {
                continue;
            }
            if p.extension().is_some_and(|e| e == "yaml") {
                let c = Config::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
                assert!(c.warnings.is_empty(), "{}: {:?}", p.display(), c.warnings);
                n += 1;
            }
        }
        assert!(n >= 4, "clew.yaml and the sampling examples");
    }

    #[test]
    fn tls_under_every_listener_and_exposure_warnings() {
        let tls = "{cert_file: s.pem, key_file: k.pem}";
        let c = Config::parse(
            &format!(
                "receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 0.0.0.0:4317, tls: {tls}}}
      http: {{endpoint: 0.0.0.0:4318}}
  zipkin:
    endpoint: 127.0.0.1:9411
    tls: {{cert_file: s.pem, key_file: k.pem, client_ca_file: ca.pem, min_version: 1.3, reload_interval: 5s}}
query: {{endpoint: 0.0.0.0:16686, tls: {tls}}}
extensions:
  jaeger_remote_sampling:
    http: {{endpoint: 0.0.0.0:5778}}
"
            ),
            "c.yaml",
        )
        .unwrap();
        let with_tls: Vec<&str> = c
            .listeners()
            .iter()
            .filter(|l| l.tls.is_some())
            .map(|l| l.key)
            .collect();
        assert_eq!(
            with_tls,
            vec!["receivers.otlp.protocols.grpc", "receivers.zipkin", "query"]
        );
        let z = c.receivers.zipkin.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(z.reload_every(), Some(Duration::from_secs(5)));
        assert!(z.client_ca_file.is_some());
        let w: Vec<String> = c
            .listener_warnings()
            .into_iter()
            .filter(|w| w.contains("without TLS"))
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("`receivers.otlp.protocols.http.endpoint` listens on 0.0.0.0:4318")
                && w[0].contains("without TLS")
                && w[0].contains("fix:"),
            "{w:?}"
        );
        assert!(
            w[1].contains("extensions.jaeger_remote_sampling.http"),
            "{w:?}"
        );
        // Safe defaults: everything on loopback, nothing to warn about.
        assert!(Config::default().listener_warnings().is_empty());
        assert!(Config::default()
            .listeners()
            .iter()
            .all(|l| l.addr.ip().is_loopback()));

        let e = err("query:\n  tls: {cert_file: s.pem}\n");
        assert!(
            e.starts_with("c.yaml: key `query.tls.key_file`: missing"),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
        let e = err(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        tls: {certfile: s.pem}\n",
        );
        assert!(
            e.contains("key `receivers.otlp.protocols.grpc.tls.certfile`"),
            "{e}"
        );
        let e = err("query:\n  tls: {cert_file: s.pem, key_file: k.pem, ca_file: ca.pem}\n");
        assert!(
            e.contains("query.tls.ca_file") && e.contains("client_ca_file"),
            "{e}"
        );
        let e = err("query:\n  tls: {cert_file: s.pem, key_file: k.pem, min_version: \"1.1\"}\n");
        assert!(
            e.contains("query.tls.min_version") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn tls_files_are_relative_to_the_config_and_checked_at_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config");
        let c = Config::load(&examples.join("mtls.yaml")).unwrap();
        let q = c.query.tls.as_ref().unwrap();
        assert!(q
            .cert_file
            .as_ref()
            .unwrap()
            .ends_with("config/certs/server.pem"));
        assert!(q.cert_file.as_ref().unwrap().exists());
        assert!(q.client_ca_file.as_ref().unwrap().exists());

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("clew.yaml");
        std::fs::write(
            &cfg,
            "query:\n  tls: {cert_file: missing.pem, key_file: missing-key.pem}\n",
        )
        .unwrap();
        let e = format!("{:#}", Config::load(&cfg).unwrap_err());
        assert!(
            e.contains("clew.yaml: key `query.tls.cert_file`: cannot read")
                && e.contains(&dir.path().join("missing.pem").display().to_string())
                && e.contains("fix:"),
            "{e}"
        );
        // A key that is not the certificate's.
        std::fs::write(
            &cfg,
            format!(
                "query:\n  tls: {{cert_file: {}, key_file: {}}}\n",
                examples.join("certs/server.pem").display(),
                examples.join("certs/client-key.pem").display()
            ),
        )
        .unwrap();
        let e = format!("{:#}", Config::load(&cfg).unwrap_err());
        assert!(
            e.contains("key `query.tls.key_file`") && e.contains("is not the private key"),
            "{e}"
        );
    }
}
