//! [`KafkaExporter`]: a `SpanSink` that produces each batch to a topic and returns only when the
//! broker acknowledged every message (with the default `required_acks: -1`, all in-sync
//! replicas; idempotent producer, so librdkafka's own retries do not duplicate). Kafka is the
//! durable queue: a batch the broker did not take within `timeout` is refused retryably, and
//! the client (or the upstream pipeline) sends it again — at-least-once, duplicates dropped on
//! read and at compaction.

use crate::client_log::ClientLog;
use crate::config::KafkaExporterConfig;
use crate::encode::{self, OutMessage};
use crate::metrics::KafkaMetrics;
use crate::KafkaError;
use clew_model::{SinkError, SpanBatch, SpanSink};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use std::time::Duration;

/// The hint given to clients when the broker did not take a batch.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct KafkaExporter {
    name: String,
    cfg: KafkaExporterConfig,
    producer: FutureProducer<ClientLog>,
    metrics: KafkaMetrics,
}

impl KafkaExporter {
    /// Creates the producer. It connects lazily: a broker that is down now makes `consume`
    /// refuse retryably, it does not stop Clew from starting (as the Collector's exporter).
    pub fn start(
        name: &str,
        cfg: &KafkaExporterConfig,
        metrics: &KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        cfg.validate().map_err(|e| KafkaError::Config {
            key: format!("exporters.{name}.{}", e.key),
            message: e.message,
        })?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", cfg.brokers.join(","))
            .set("client.id", &cfg.client_id)
            .set("acks", cfg.producer.required_acks.to_string())
            .set(
                "compression.type",
                cfg.producer.compression.librdkafka_name(),
            )
            .set("message.timeout.ms", cfg.timeout.as_millis().to_string())
            // Room for the record batch framing around the largest message Clew makes.
            .set(
                "message.max.bytes",
                (cfg.producer.max_message_bytes + 16 * 1024).to_string(),
            )
            // The Java client's partitioner (murmur2 of the key), which other Kafka clients also
            // offer: producers of different kinds writing one topic keep a trace on one partition.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5");
        if cfg.producer.required_acks == -1 {
            c.set("enable.idempotence", "true");
        }
        if cfg.producer.flush_max_messages > 0 {
            c.set(
                "batch.num.messages",
                cfg.producer.flush_max_messages.to_string(),
            );
        }
        let component = format!("exporters.{name}");
        let producer: FutureProducer<ClientLog> = c
            .create_with_context(ClientLog::new(&component))
            .map_err(|e| KafkaError::Client {
                component: component.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            name: name.to_string(),
            cfg: cfg.clone(),
            producer,
            metrics: metrics.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout` for messages still in librdkafka's queue (none after `consume`
    /// returned, unless a caller gave up on it).
    pub async fn shutdown(&self) {
        let producer = self.producer.clone();
        let timeout = self.cfg.timeout;
        let _ = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout))).await;
    }

    fn headers(&self, batch: &SpanBatch) -> OwnedHeaders {
        let mut h = OwnedHeaders::new();
        if !self.cfg.tenant_header.is_empty() {
            h = h.insert(Header {
                key: &self.cfg.tenant_header,
                value: Some(batch.tenant.as_str()),
            });
        }
        for key in &self.cfg.include_metadata_keys {
            for value in batch.metadata.get_all(key) {
                h = h.insert(Header {
                    key: key.as_str(),
                    value: Some(value),
                });
            }
        }
        h
    }

    async fn produce(&self, m: &OutMessage, headers: &OwnedHeaders) -> Result<(), RdError> {
        let mut record = FutureRecord::to(self.cfg.topic())
            .payload(&m.payload)
            .headers(headers.clone());
        if let Some(key) = &m.key {
            record = record.key(key.as_str());
        }
        self.producer
            .send(record, Timeout::After(self.cfg.timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

#[async_trait::async_trait]
impl SpanSink for KafkaExporter {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        let messages = encode::messages(
            &batch.resource_spans,
            self.cfg.partition_traces_by_id,
            self.cfg.json(),
            self.cfg.producer.max_message_bytes,
        );
        let headers = self.headers(&batch);
        let results =
            futures::future::join_all(messages.iter().map(|m| self.produce(m, &headers))).await;
        let mut failed: Option<String> = None;
        for (m, r) in messages.iter().zip(results) {
            let bytes = m.payload.len() as u64;
            let outcome = match r {
                Ok(()) => "sent",
                Err(RdError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    // Never accepted however often it is sent: drop it, as the OTLP exporter
                    // drops a permanently refused batch, rather than block the pipeline.
                    tracing::error!(
                        exporter = %self.name,
                        bytes,
                        spans = m.spans,
                        "message too large for the broker even after cutting the batch: dropped (fix: raise producer.max_message_bytes and the topic's max.message.bytes)"
                    );
                    "dropped"
                }
                Err(e) => {
                    failed.get_or_insert_with(|| e.to_string());
                    "failed"
                }
            };
            KafkaMetrics::inc(&self.metrics.produced, &self.name, outcome, 1);
            KafkaMetrics::inc(&self.metrics.produced_bytes, &self.name, outcome, bytes);
        }
        match failed {
            None => Ok(()),
            Some(reason) => {
                tracing::warn!(exporter = %self.name, "the broker did not take a batch: {reason}");
                Err(SinkError::Overloaded {
                    retry_after: RETRY_AFTER,
                    reason: format!("exporter {}: {reason}", self.name),
                })
            }
        }
    }
}
