//! Exporter configuration: the OpenTelemetry Collector's keys (see the crate documentation for the
//! YAML and the defaults).

use clew_security::tls::{TlsClientSettings, TlsVersion};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"5s\", \"500ms\" or \"5m\""
        ))
    })
}

/// Which wire protocol an OTLP exporter speaks (the exporter type: `otlp` or `otlphttp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `otlp`: OTLP/gRPC.
    Grpc,
    /// `otlphttp`: OTLP/HTTP with protobuf bodies.
    Http,
}

impl Protocol {
    /// The protocol of an exporter type (`otlp`, `otlp_grpc` → gRPC; `otlphttp`, `otlp_http` →
    /// HTTP), `None` for other types.
    pub fn from_type(kind: &str) -> Option<Self> {
        match kind {
            "otlp" | "otlp_grpc" => Some(Self::Grpc),
            "otlphttp" | "otlp_http" => Some(Self::Http),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `tls:` of an exporter: the Collector's `configtls.ClientConfig` keys, i.e.
/// [`TlsClientSettings`] plus `insecure` (plaintext gRPC to a `host:port` endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterTls {
    /// gRPC only: connect without TLS when the endpoint is `host:port` (no scheme). An
    /// `http://` endpoint is plaintext and an `https://` one TLS whatever this says.
    #[serde(default)]
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub server_name_override: Option<String>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

impl ExporterTls {
    /// The settings `clew_security::tls` builds client configs from.
    pub fn client_settings(&self) -> TlsClientSettings {
        TlsClientSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            server_name_override: self.server_name_override.clone(),
            min_version: self.min_version,
            max_version: self.max_version,
        }
    }

    /// Makes relative file paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.cert_file, &mut self.key_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// `retry_on_failure:` — exponential backoff with jitter for retryable failures.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_duration")]
    pub initial_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_interval: Duration,
    /// Give up on a batch after this long (`0s`: never). Clew's default is `0s`: the sending
    /// queue is durable and exists to outlast outages; a batch is dropped only when the receiver
    /// refuses it permanently.
    #[serde(deserialize_with = "de_duration")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::ZERO,
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// `sending_queue.storage:` — where the durable queue lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueStorage {
    /// Default: `{data_dir}/queue/{exporter name}` (`/` in the name becomes `_`).
    pub directory: Option<PathBuf>,
    /// Bytes of unsent batches (as stored: framing + protobuf) the queue holds at most;
    /// a full queue refuses new batches retryably. Default 1 GiB.
    pub max_bytes: u64,
}

impl Default for QueueStorage {
    fn default() -> Self {
        Self {
            directory: None,
            max_bytes: 1 << 30,
        }
    }
}

/// `sending_queue:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `false`: no queue; `consume` sends synchronously, once, and refuses the batch retryably
    /// when the send fails retryably (the client retries, not Clew).
    pub enabled: bool,
    /// Consumers sending from the queue concurrently. Default 1, which keeps the order of
    /// batches; more send faster but a retried batch may arrive after later ones.
    pub num_consumers: usize,
    /// Batches the queue holds at most (`None`: only `storage.max_bytes` bounds it).
    pub queue_size: Option<u64>,
    /// Consecutive queued batches of one tenant are merged into one request up to this many
    /// protobuf bytes (default 4 MiB, the usual receiver limit). A bigger batch goes alone.
    pub max_request_bytes: usize,
    pub storage: QueueStorage,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            num_consumers: 1,
            queue_size: None,
            max_request_bytes: 4 * 1024 * 1024 - 64 * 1024,
            storage: QueueStorage::default(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_tenant_header() -> String {
    "X-Scope-OrgID".to_string()
}

/// An `otlp` or `otlphttp` exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `otlp`: `host:port` (TLS unless `tls.insecure`), `http://host:port` or
    /// `https://host:port`. `otlphttp`: base URL; `/v1/traces` is appended.
    pub endpoint: String,
    /// `otlphttp` only: the full URL to POST to (instead of `{endpoint}/v1/traces`).
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub tls: ExporterTls,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// The header carrying each batch's tenant, so a downstream Clew keeps tenancy (`""`: send
    /// no tenant header).
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
}

impl OtlpExporterConfig {
    /// A config with every default, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            traces_endpoint: None,
            compression: Compression::default(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            tls: ExporterTls::default(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            tenant_header: default_tenant_header(),
        }
    }

    /// The queue directory: `sending_queue.storage.directory`, else
    /// `{data_dir}/queue/{name}` with `/` in the name replaced by `_`.
    pub fn queue_dir(&self, name: &str, data_dir: &Path) -> PathBuf {
        self.sending_queue
            .storage
            .directory
            .clone()
            .unwrap_or_else(|| {
                let safe: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                data_dir.join("queue").join(safe)
            })
    }
}

/// `debug:` exporter verbosity (the Collector's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// One line per batch: tenant, resource spans, spans.
    #[default]
    Basic,
    /// Also one line per span: trace id, span id, parent, name, kind, duration, service.
    Normal,
    /// Also every attribute, event and link of every span and resource.
    Detailed,
}

/// A `debug` exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    #[serde(default)]
    pub verbosity: Verbosity,
}
