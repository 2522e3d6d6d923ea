//! `clew.yaml`: configuration in the OpenTelemetry Collector's style (receivers, storage, query,
//! tenancy, service sections). Unknown keys are errors; every error names the file, the key path and
//! the fix.

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: Receivers,
    /// Named processors; none ship yet (sampling and redaction come in their own issues).
    pub processors: serde_yaml::Mapping,
    pub storage: Storage,
    pub query: Query,
    pub tenancy: Tenancy,
    pub service: Service,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Receivers {
    pub otlp: Option<Otlp>,
    pub zipkin: Option<Endpoint>,
}

impl Default for Receivers {
    fn default() -> Self {
        Self {
            otlp: Some(Otlp::default()),
            zipkin: Some(Endpoint {
                endpoint: addr("127.0.0.1:9411"),
            }),
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
}

impl Default for GrpcProtocol {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:4317"),
            max_recv_msg_size_mib: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpProtocol {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
    pub max_request_body_size_mib: usize,
}

impl Default for HttpProtocol {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:4318"),
            max_request_body_size_mib: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[serde(deserialize_with = "de_addr")]
    pub endpoint: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub path: PathBuf,
    pub block: BlockSettings,
    pub compaction: CompactionSettings,
    /// Exports are refused (retryably) while this many spans wait to be written into blocks.
    pub max_head_spans: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./clew-data"),
            block: BlockSettings::default(),
            compaction: CompactionSettings::default(),
            max_head_spans: 4_000_000,
        }
    }
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
}

impl Default for Query {
    fn default() -> Self {
        Self {
            endpoint: addr("127.0.0.1:16686"),
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
}

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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"30s\", \"5m\""
        ))
    })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the config file", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let hint = if inner.contains("unknown field") {
                " (fix: correct the spelling to one of the keys listed; all keys are in the README's configuration reference)"
            } else {
                ""
            };
            anyhow::anyhow!("{origin}: key `{key}`: {inner}{hint}")
        })?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some((name, _)) = self.processors.iter().next() {
            bail!(
                "key `processors.{}`: unknown processor (fix: remove it; no processors are available in this version)",
                name.as_str().unwrap_or("?")
            );
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
        out
    }

    pub fn store_config(&self) -> clew_store::StoreConfig {
        let mut c = clew_store::StoreConfig::new(&self.storage.path);
        c.flush_max_spans = self.storage.block.max_spans;
        c.flush_max_age = self.storage.block.max_age;
        c.rows_per_row_group = self.storage.block.row_group_rows;
        c.max_head_spans = self.storage.max_head_spans;
        let k = &self.storage.compaction;
        c.compaction = clew_store::CompactionConfig {
            enabled: k.enabled,
            interval: k.interval,
            min_blocks: k.min_blocks,
            max_block_spans: k.max_block_spans,
        };
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "clew.yaml").unwrap();
        assert_eq!(c.query.endpoint.port(), 16686);
        assert_eq!(c.endpoints().len(), 4);
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
}
