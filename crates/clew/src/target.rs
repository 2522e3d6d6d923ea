//! `target:` (or `clew serve --target`): what one `clew` process runs, as Tempo's `-target`.
//! `all` is the single binary; the other roles split it over processes that share a Kafka topic
//! and a bucket ([docs/scale-out.md](../../docs/scale-out.md)):
//!
//! | target | runs | listens on |
//! |---|---|---|
//! | `all` | everything | every listener |
//! | `collector` | receivers, pipelines, exporters (Kafka keyed by trace id); stores nothing | receivers, remote sampling, query port (`/metrics`, `/ready`) |
//! | `ingester` | receivers (Kafka), pipelines, the store writing blocks into the bucket | receivers, query port (`/api/internal/v1/read`, `/metrics`, `/ready`) |
//! | `querier` | every query API and the UI over the bucket and the ingesters | query port, Tempo port |
//! | `compactor` | compaction and retention of the bucket, under leases | query port (`/metrics`, `/ready`) |
//!
//! `cluster:` holds the settings of the roles.

use anyhow::bail;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    All,
    Collector,
    Ingester,
    Querier,
    Compactor,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Collector => "collector",
            Target::Ingester => "ingester",
            Target::Querier => "querier",
            Target::Compactor => "compactor",
        }
    }

    /// Whether receivers and pipelines run (spans come in).
    pub fn ingests(self) -> bool {
        matches!(self, Target::All | Target::Collector | Target::Ingester)
    }

    /// Whether the process opens a store.
    pub fn stores(self) -> bool {
        self != Target::Collector
    }

    /// Whether the query APIs, the UI and the Tempo listener are served.
    pub fn serves_queries(self) -> bool {
        matches!(self, Target::All | Target::Querier)
    }

    /// The role among processes sharing the bucket; `None` for `all` (the bucket is its own) and
    /// `collector` (no store).
    pub fn shared_role(self) -> Option<clew_store::SharedRole> {
        match self {
            Target::Ingester => Some(clew_store::SharedRole::Ingester),
            Target::Querier => Some(clew_store::SharedRole::Querier),
            Target::Compactor => Some(clew_store::SharedRole::Compactor),
            Target::All | Target::Collector => None,
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"10s\", \"1m\""
        ))
    })
}

/// `cluster:` — settings of the scale-out roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// This process's name in leases and logs; unique among the processes sharing the bucket.
    /// Default: `{hostname}:{storage.path}` (stable across restarts, so a restarted compactor
    /// takes its own leases back at once).
    pub node_name: Option<String>,
    /// Querier: the ingesters' query endpoints (`HOST:PORT` or `http://HOST:PORT`), asked for the
    /// spans not in the bucket yet.
    pub ingesters: Vec<String>,
    /// Querier and compactor: how often the bucket is listed (Tempo's `blocklist_poll`).
    #[serde(deserialize_with = "de_duration")]
    pub blocklist_poll: Duration,
    /// Ingester: how long it keeps answering for a block it wrote (longer than a poll, so a
    /// querier never misses a flushed block).
    #[serde(deserialize_with = "de_duration")]
    pub recent_blocks_for: Duration,
    /// Compactor: how long a lease on a tenant-day lasts unless given back.
    #[serde(deserialize_with = "de_duration")]
    pub lease_ttl: Duration,
    /// Querier: how long it waits for an ingester before answering without it.
    #[serde(deserialize_with = "de_duration")]
    pub ingester_timeout: Duration,
    /// Querier: how it calls the ingesters when their query listener has `tls` or `auth`.
    pub ingester_client: IngesterClient,
}

/// `cluster.ingester_client`: TLS (the Collector's client `tls` keys; the ingesters' endpoints
/// are then `https://…`) and headers sent with every call, e.g. `authorization: Bearer …` for a
/// token the ingesters' `query.auth` accepts for every tenant (`tenants: "*"`): a querier asks on
/// behalf of the tenant of the query it answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngesterClient {
    pub tls: Option<clew_security::tls::TlsClientSettings>,
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            node_name: None,
            ingesters: Vec::new(),
            blocklist_poll: Duration::from_secs(10),
            recent_blocks_for: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(600),
            ingester_timeout: Duration::from_secs(5),
            ingester_client: IngesterClient::default(),
        }
    }
}

impl Cluster {
    /// One HTTP client per entry of `ingesters`, with `ingester_client`'s TLS and headers;
    /// `(endpoint URL, client)`. Errors name the key.
    pub fn ingester_clients(&self) -> anyhow::Result<Vec<(String, reqwest::Client)>> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &self.ingester_client.headers {
            let key = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                anyhow::anyhow!("key `cluster.ingester_client.headers.{k}`: not a header name: {e}")
            })?;
            let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|e| {
                anyhow::anyhow!(
                    "key `cluster.ingester_client.headers.{k}`: not a header value: {e}"
                )
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let tls = self.ingester_client.tls.clone().unwrap_or_default();
        self.ingesters
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let url = if endpoint.contains("://") {
                    endpoint.trim_end_matches('/').to_string()
                } else {
                    format!("http://{endpoint}")
                };
                let mut builder = reqwest::Client::builder()
                    .timeout(self.ingester_timeout)
                    .connect_timeout(self.ingester_timeout)
                    .default_headers(headers.clone());
                if let Some(config) =
                    clew_security::tls::reqwest_tls(&url, &tls, "cluster.ingester_client.tls")
                        .map_err(|e| anyhow::anyhow!("key `cluster.ingesters[{i}]`: {e}"))?
                {
                    builder = builder.tls_backend_preconfigured(config);
                }
                let client = builder
                    .build()
                    .map_err(|e| anyhow::anyhow!("key `cluster.ingesters[{i}]`: {e}"))?;
                Ok((url, client))
            })
            .collect()
    }

    /// The node name: configured, or `{hostname}:{data_dir}`.
    pub fn node_name(&self, data_dir: &std::path::Path) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", data_dir.display())
        })
    }
}

/// Checks what `target` needs of the rest of the configuration; `warnings` gets what does not
/// stop start-up. Runs at load and again after `--target` on the command line.
pub fn check(cfg: &crate::config::Config, warnings: &mut Vec<String>) -> anyhow::Result<()> {
    let target = cfg.target;
    let c = &cfg.cluster;
    if c.blocklist_poll.is_zero() || c.lease_ttl.is_zero() || c.ingester_timeout.is_zero() {
        bail!("key `cluster`: blocklist_poll, lease_ttl and ingester_timeout must be longer than 0 (fix: e.g. 10s, 10m, 5s)");
    }
    if c.recent_blocks_for < c.blocklist_poll * 2 {
        bail!("key `cluster.recent_blocks_for`: {} is shorter than two polls (cluster.blocklist_poll {}), so a querier could miss a block an ingester just wrote (fix: at least twice blocklist_poll, e.g. 60s)",
            humantime::format_duration(c.recent_blocks_for), humantime::format_duration(c.blocklist_poll));
    }
    let shares_bucket = target.shared_role().is_some();
    if shares_bucket && cfg.storage.s3.is_none() {
        bail!("key `storage.s3`: target `{}` shares a bucket with the other roles, and none is configured (fix: add storage.s3 with the bucket every role uses; see docs/scale-out.md)", target.as_str());
    }
    if shares_bucket && cfg.storage.tiering.is_some() {
        bail!("key `storage.tiering`: target `{}` writes blocks straight into the shared bucket; tiering is for `all` only (fix: remove storage.tiering)", target.as_str());
    }
    if target.ingests() && target != Target::All {
        for p in &cfg.graph.pipelines {
            let stores = p.exporters.iter().any(|e| {
                matches!(
                    cfg.graph.exporters.get(e),
                    Some(crate::graph::ExporterConfig::ClewStore)
                )
            });
            if target == Target::Collector && stores {
                bail!("key `service.pipelines.{}.exporters`: a collector stores nothing, so `clew_store` cannot be one of its exporters (fix: export to `kafka` keyed by trace id, and run ingesters; see docs/scale-out.md)", p.name);
            }
        }
    }
    if target == Target::Ingester && cfg.kafka_receivers().is_empty() {
        warnings.push("target `ingester` without `receivers.kafka`: it ingests from its OTLP/Zipkin listeners only, and tail sampling sees a whole trace only if every span of it reaches this ingester".into());
    }
    if target == Target::Querier && c.ingesters.is_empty() {
        warnings.push("target `querier` without `cluster.ingesters`: spans the ingesters have not flushed into the bucket yet are not shown (fix: list their query endpoints)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const S3: &str =
        "storage:\n  s3: {bucket: b, endpoint: http://127.0.0.1:9, force_path_style: true}\n";

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text, "t.yaml").unwrap_err())
    }

    #[test]
    fn all_is_the_default_and_needs_nothing() {
        let c = Config::parse("", "t.yaml").unwrap();
        assert_eq!(c.target, super::Target::All);
        assert!(c.store_config().shared.is_none());
    }

    #[test]
    fn roles_sharing_a_bucket_need_one_and_no_tiering() {
        for role in ["ingester", "querier", "compactor"] {
            let e = err(&format!("target: {role}\n"));
            assert!(e.contains("key `storage.s3`") && e.contains(role), "{e}");
        }
        let e = err(&format!("target: querier\n{S3}  tiering: {{after: 1h}}\n"));
        assert!(e.contains("key `storage.tiering`"), "{e}");
        let c = Config::parse(&format!("target: compactor\n{S3}"), "t.yaml").unwrap();
        let shared = c
            .store_config()
            .shared
            .expect("a compactor shares the bucket");
        assert_eq!(shared.role, clew_store::SharedRole::Compactor);
        assert!(shared.node.ends_with(":./clew-data"), "{}", shared.node);
    }

    #[test]
    fn a_collector_cannot_store() {
        let e = err("target: collector\n");
        assert!(
            e.contains("key `service.pipelines.traces.exporters`") && e.contains("kafka"),
            "{e}"
        );
        let ok = "target: collector\nexporters:\n  kafka: {brokers: [127.0.0.1:9092]}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [kafka]}\n";
        let c = Config::parse(ok, "t.yaml").unwrap();
        assert!(c.store_config().shared.is_none());
    }

    #[test]
    fn cluster_durations_are_checked() {
        let e = err(&format!(
            "target: ingester\n{S3}cluster: {{blocklist_poll: 30s, recent_blocks_for: 45s}}\n"
        ));
        assert!(e.contains("key `cluster.recent_blocks_for`"), "{e}");
        let e = err("cluster: {lease_ttl: 0s}\n");
        assert!(e.contains("key `cluster`"), "{e}");
        let e = err("target: everything\n");
        assert!(e.contains("key `target`"), "{e}");
    }

    #[test]
    fn a_querier_without_ingesters_is_warned_about() {
        let c = Config::parse(&format!("target: querier\n{S3}"), "t.yaml").unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("cluster.ingesters")));
    }
}
