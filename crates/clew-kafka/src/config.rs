//! Kafka receiver and exporter configuration: the OpenTelemetry Collector's keys, so a Collector
//! configuration can be copied (see the crate documentation for the YAML and the defaults).
//! Unknown keys are errors; [`KafkaReceiverConfig::validate`] / [`KafkaExporterConfig::validate`]
//! name the key and the fix.

use clew_receive::MessageEncoding;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The Collector's default topic for spans.
pub const DEFAULT_TOPIC: &str = "otlp_spans";
/// The Collector's default encoding.
pub const DEFAULT_ENCODING: &str = "otlp_proto";
/// The tenant header written by the exporter and read by the receiver (Grafana's convention).
pub const DEFAULT_TENANT_HEADER: &str = "X-Scope-OrgID";

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); fix: write e.g. \"5s\", \"500ms\" or \"5m\""
        ))
    })
}

/// A configuration problem: the key (relative to the component) and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// `traces:` — the per-signal topic and encoding of the Collector's newer configuration (the
/// top-level `topic` / `encoding` are its older, deprecated spelling; both are accepted, this one
/// wins).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SignalConfig {
    pub topic: Option<String>,
    pub encoding: Option<String>,
}

impl SignalConfig {
    /// `traces.topic`, else the deprecated top-level `topic`, else `otlp_spans`.
    fn topic_or<'a>(&'a self, legacy: Option<&'a str>) -> &'a str {
        self.topic.as_deref().or(legacy).unwrap_or(DEFAULT_TOPIC)
    }

    /// `traces.encoding`, else the deprecated top-level `encoding`, else `otlp_proto`.
    fn encoding_or<'a>(&'a self, legacy: Option<&'a str>) -> &'a str {
        self.encoding
            .as_deref()
            .or(legacy)
            .unwrap_or(DEFAULT_ENCODING)
    }
}

fn default_brokers() -> Vec<String> {
    vec!["localhost:9092".to_string()]
}

fn check_common(
    brokers: &[String],
    topic: &str,
    encoding: &str,
    encodings: &[&str],
) -> Result<(), ConfigError> {
    if brokers.is_empty() {
        return Err(err(
            "brokers",
            "empty (fix: list at least one broker, e.g. [127.0.0.1:9092])",
        ));
    }
    for (i, b) in brokers.iter().enumerate() {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(err(
                &format!("brokers[{i}]"),
                format!("{b:?} is not HOST:PORT (fix: e.g. 127.0.0.1:9092)"),
            ));
        }
    }
    if topic.is_empty()
        || topic.len() > 249
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(err(
            "traces.topic",
            format!("{topic:?} is not a valid Kafka topic name (fix: up to 249 of [a-zA-Z0-9._-], e.g. otlp_spans)"),
        ));
    }
    if !encodings.contains(&encoding) {
        return Err(err(
            "traces.encoding",
            format!(
                "{encoding:?} is not supported for traces (fix: one of {})",
                encodings.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    /// Only messages produced from now on (the Collector's default).
    #[default]
    Latest,
    /// Everything the topic still holds.
    Earliest,
}

/// `header_extraction:` — record headers copied into resource attributes
/// `kafka.header.<name>` (the Collector's receiver does the same).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderExtraction {
    pub extract_headers: bool,
    pub headers: Vec<String>,
}

/// `receivers.kafka`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaReceiverConfig {
    pub brokers: Vec<String>,
    /// Accepted for the Collector's configurations and not needed: librdkafka negotiates the
    /// protocol versions with the broker.
    pub protocol_version: Option<String>,
    pub client_id: String,
    pub group_id: String,
    /// Deprecated Collector spelling of `traces.topic`.
    pub topic: Option<String>,
    /// Deprecated Collector spelling of `traces.encoding`.
    pub encoding: Option<String>,
    pub traces: SignalConfig,
    pub initial_offset: InitialOffset,
    #[serde(deserialize_with = "de_duration")]
    pub session_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_interval: Duration,
    /// How long the broker may hold a fetch waiting for data (librdkafka `fetch.wait.max.ms`):
    /// the floor of export-to-queryable latency on a quiet topic. Default 250ms, as the Collector.
    #[serde(deserialize_with = "de_duration")]
    pub max_fetch_wait: Duration,
    pub header_extraction: HeaderExtraction,
    /// The record header naming the tenant; default: `tenancy.header` (`X-Scope-OrgID`).
    pub tenant_header: Option<String>,
    /// Record headers kept with each batch as request metadata (for an `attributes` processor's
    /// `from_context: metadata.NAME`); credential-bearing names are refused.
    pub metadata_keys: Vec<String>,
    /// Largest message accepted (bigger ones are skipped and counted); default 16 MiB.
    pub max_message_bytes: usize,
    /// Messages read before their spans are stored together (one group commit) and their
    /// offsets committed; default 500.
    pub max_batch_messages: usize,
}

impl Default for KafkaReceiverConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            protocol_version: None,
            client_id: "clew".into(),
            group_id: "clew".into(),
            topic: None,
            encoding: None,
            traces: SignalConfig::default(),
            initial_offset: InitialOffset::Latest,
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            max_fetch_wait: Duration::from_millis(250),
            header_extraction: HeaderExtraction::default(),
            tenant_header: None,
            metadata_keys: Vec::new(),
            max_message_bytes: 16 << 20,
            max_batch_messages: 500,
        }
    }
}

impl KafkaReceiverConfig {
    pub fn topic(&self) -> &str {
        self.traces.topic_or(self.topic.as_deref())
    }

    pub fn encoding_name(&self) -> &str {
        self.traces.encoding_or(self.encoding.as_deref())
    }

    /// The checked encoding (after [`Self::validate`] it is always `Some`).
    pub fn encoding(&self) -> Option<MessageEncoding> {
        MessageEncoding::from_name(self.encoding_name())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_common(
            &self.brokers,
            self.topic(),
            self.encoding_name(),
            MessageEncoding::NAMES,
        )?;
        if self.group_id.trim().is_empty() {
            return Err(err("group_id", "empty (fix: e.g. clew)"));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(err(
                "heartbeat_interval",
                "must be shorter than session_timeout (fix: e.g. a third of it)",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(err(
                "max_message_bytes",
                "must be at least 1 (fix: e.g. 16777216)",
            ));
        }
        if self.max_batch_messages == 0 {
            return Err(err(
                "max_batch_messages",
                "must be at least 1 (fix: e.g. 500)",
            ));
        }
        if self.header_extraction.extract_headers && self.header_extraction.headers.is_empty() {
            return Err(err(
                "header_extraction.headers",
                "empty while extract_headers is true (fix: list the header names to copy)",
            ));
        }
        Ok(())
    }
}

/// Payload compression of the producer.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `exporters.kafka.producer`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// Largest message produced; a bigger request is cut into several messages (the Collector's
    /// default, 1,000,000, is the broker's default `message.max.bytes`).
    pub max_message_bytes: usize,
    /// `-1` (all in-sync replicas; Clew's default, and the only setting with the idempotent
    /// producer), `0` or `1` (the Collector's default).
    pub required_acks: i32,
    pub compression: Compression,
    /// Messages per batch sent to a broker (librdkafka `batch.num.messages`); 0 = its default.
    pub flush_max_messages: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1_000_000,
            required_acks: -1,
            compression: Compression::None,
            flush_max_messages: 0,
        }
    }
}

/// `exporters.kafka`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaExporterConfig {
    pub brokers: Vec<String>,
    /// Accepted for the Collector's configurations; librdkafka negotiates versions.
    pub protocol_version: Option<String>,
    pub client_id: String,
    /// Deprecated Collector spelling of `traces.topic`.
    pub topic: Option<String>,
    /// Deprecated Collector spelling of `traces.encoding`.
    pub encoding: Option<String>,
    pub traces: SignalConfig,
    /// One message per trace, keyed by the lowercase hex trace id, so every span of a trace goes
    /// to one partition (and so to one ingester). Off: one unkeyed message per request.
    pub partition_traces_by_id: bool,
    /// How long a message may take to be acknowledged by the broker (librdkafka retries inside
    /// it); after that the batch is refused retryably.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// The record header carrying each batch's tenant ("" = none).
    pub tenant_header: String,
    /// Request metadata copied into record headers (the Collector's `include_metadata_keys`).
    pub include_metadata_keys: Vec<String>,
    pub producer: ProducerConfig,
}

impl Default for KafkaExporterConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            protocol_version: None,
            client_id: "clew".into(),
            topic: None,
            encoding: None,
            traces: SignalConfig::default(),
            partition_traces_by_id: false,
            timeout: Duration::from_secs(5),
            tenant_header: DEFAULT_TENANT_HEADER.into(),
            include_metadata_keys: Vec::new(),
            producer: ProducerConfig::default(),
        }
    }
}

/// The encodings the exporter writes.
pub const EXPORTER_ENCODINGS: &[&str] = &["otlp_proto", "otlp_json"];

impl KafkaExporterConfig {
    pub fn topic(&self) -> &str {
        self.traces.topic_or(self.topic.as_deref())
    }

    pub fn encoding_name(&self) -> &str {
        self.traces.encoding_or(self.encoding.as_deref())
    }

    pub fn json(&self) -> bool {
        self.encoding_name() == "otlp_json"
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_common(
            &self.brokers,
            self.topic(),
            self.encoding_name(),
            EXPORTER_ENCODINGS,
        )?;
        if !matches!(self.producer.required_acks, -1..=1) {
            return Err(err(
                "producer.required_acks",
                format!(
                    "{} is not one of -1 (all replicas), 0, 1 (fix: -1 for durability)",
                    self.producer.required_acks
                ),
            ));
        }
        if self.producer.max_message_bytes < 1024 {
            return Err(err(
                "producer.max_message_bytes",
                "below 1024 (fix: e.g. 1000000, the broker's default message.max.bytes)",
            ));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(err("timeout", "below 100ms (fix: e.g. 5s)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(yaml: &str) -> KafkaReceiverConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn collector_receiver_config_is_accepted() {
        let c = receiver(
            "brokers: [127.0.0.1:9092]\nprotocol_version: 2.0.0\ntopic: spans\nencoding: otlp_json\n\
             group_id: g\ninitial_offset: earliest\nsession_timeout: 6s\nheartbeat_interval: 500ms\n\
             header_extraction: {extract_headers: true, headers: [region]}\n",
        );
        c.validate().unwrap();
        assert_eq!(c.topic(), "spans");
        assert_eq!(c.encoding(), Some(MessageEncoding::OtlpJson));
        assert_eq!(c.initial_offset, InitialOffset::Earliest);
        // The newer per-signal keys win over the deprecated ones.
        let c = receiver("topic: old\ntraces: {topic: new, encoding: zipkin_json}\n");
        assert_eq!(c.topic(), "new");
        assert_eq!(c.encoding(), Some(MessageEncoding::ZipkinJson));
        let d = KafkaReceiverConfig::default();
        assert_eq!((d.topic(), d.encoding_name()), ("otlp_spans", "otlp_proto"));
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            ("brokers: []", "brokers"),
            ("brokers: [nohost]", "brokers[0]"),
            ("traces: {topic: 'a b'}", "traces.topic"),
            ("encoding: jaeger_thrift", "traces.encoding"),
            ("heartbeat_interval: 20s", "heartbeat_interval"),
            (
                "header_extraction: {extract_headers: true}",
                "header_extraction.headers",
            ),
            ("group_id: ''", "group_id"),
        ];
        for (yaml, key) in cases {
            let e = receiver(yaml).validate().unwrap_err();
            assert_eq!(e.key, key, "{yaml}");
            assert!(e.message.contains("fix"), "{e}");
        }
        assert!(serde_yaml::from_str::<KafkaReceiverConfig>("topicz: x").is_err());
        let e: KafkaExporterConfig = serde_yaml::from_str("encoding: zipkin_json").unwrap();
        assert_eq!(e.validate().unwrap_err().key, "traces.encoding");
        let e: KafkaExporterConfig = serde_yaml::from_str("producer: {required_acks: 3}").unwrap();
        assert_eq!(e.validate().unwrap_err().key, "producer.required_acks");
    }

    #[test]
    fn exporter_defaults_are_durable() {
        let c: KafkaExporterConfig =
            serde_yaml::from_str("brokers: [127.0.0.1:9092]\npartition_traces_by_id: true\nproducer: {compression: zstd}\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.producer.required_acks, -1);
        assert_eq!(c.producer.compression, Compression::Zstd);
        assert_eq!(c.tenant_header, "X-Scope-OrgID");
        assert!(c.partition_traces_by_id && !c.json());
    }
}
