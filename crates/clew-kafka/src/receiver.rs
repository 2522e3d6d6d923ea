//! [`KafkaReceiver`]: a consumer-group member that reads the topic, stores each message's spans
//! through [`clew_receive::MessageReceiver`] (validation, limits, metrics, the pipeline) and
//! commits a message's offset **only after its spans are durable** (the sink returned: for the
//! store, fsynced): at-least-once. A restart, a crash or a rebalance re-reads at most the
//! messages after the last commit; their spans are stored again and deduplicated on read and at
//! compaction.
//!
//! Messages are read in batches (up to `max_batch_messages`, whatever arrived within a few
//! milliseconds) and stored concurrently, so one group commit of the WAL covers many messages.
//! A batch's offsets are stored when every message in it is stored or skipped as invalid; a
//! message refused temporarily (overload, a tenant's rate limit) is retried after the hint the
//! sink gave, and nothing behind it is committed meanwhile. Offsets are committed every second
//! and on shutdown and partition revocation (librdkafka's auto-commit of *stored* offsets).

use crate::client_log::ClientLog;
use crate::config::{InitialOffset, KafkaReceiverConfig};
use crate::metrics::KafkaMetrics;
use crate::KafkaError;
use clew_model::otlp::common::{any_value, AnyValue, KeyValue};
use clew_model::otlp::trace::ResourceSpans;
use clew_receive::{MessageEncoding, MessageOutcome, MessageReceiver};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a batch keeps collecting messages that are already on their way.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// The longest wait before retrying a refused message, whatever the hint.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Client errors (broker down, unknown topic) are logged at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct KafkaReceiver {
    name: String,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl KafkaReceiver {
    /// Joins the consumer group and starts consuming. Connection problems are not errors here
    /// (the consumer keeps trying and logs them); a configuration librdkafka refuses is.
    pub fn start(
        name: &str,
        cfg: &KafkaReceiverConfig,
        receiver: MessageReceiver,
        metrics: &KafkaMetrics,
    ) -> Result<Self, KafkaError> {
        let component = format!("receivers.{name}");
        cfg.validate().map_err(|e| KafkaError::Config {
            key: format!("{component}.{}", e.key),
            message: e.message,
        })?;
        let encoding = cfg.encoding().ok_or_else(|| KafkaError::Config {
            key: format!("{component}.traces.encoding"),
            message: "unsupported".into(),
        })?;
        let consumer: StreamConsumer<ClientLog> = ClientConfig::new()
            .set("bootstrap.servers", cfg.brokers.join(","))
            .set("group.id", &cfg.group_id)
            .set("client.id", &cfg.client_id)
            .set(
                "auto.offset.reset",
                match cfg.initial_offset {
                    InitialOffset::Latest => "latest",
                    InitialOffset::Earliest => "earliest",
                },
            )
            .set(
                "session.timeout.ms",
                cfg.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                cfg.heartbeat_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                cfg.max_fetch_wait.as_millis().to_string(),
            )
            // Only offsets this receiver stored (after the spans were durable) are committed.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .set(
                "fetch.message.max.bytes",
                cfg.max_message_bytes.min(i32::MAX as usize).to_string(),
            )
            .create_with_context(ClientLog::new(&component))
            .map_err(|e| KafkaError::Client {
                component: component.clone(),
                message: e.to_string(),
            })?;
        consumer
            .subscribe(&[cfg.topic()])
            .map_err(|e| KafkaError::Client {
                component: component.clone(),
                message: e.to_string(),
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let worker = Worker {
            name: name.to_string(),
            consumer: Arc::new(consumer),
            receiver,
            encoding,
            extract: if cfg.header_extraction.extract_headers {
                cfg.header_extraction.headers.clone()
            } else {
                Vec::new()
            },
            max_batch: cfg.max_batch_messages,
            metrics: metrics.clone(),
            stop: stop_rx,
        };
        tracing::info!(
            receiver = name,
            brokers = %cfg.brokers.join(","),
            topic = cfg.topic(),
            group_id = %cfg.group_id,
            encoding = encoding.name(),
            "Kafka receiver consuming"
        );
        Ok(Self {
            name: name.to_string(),
            stop,
            task: std::sync::Mutex::new(Some(tokio::spawn(worker.run()))),
        })
    }

    /// Stops reading, lets the batch in hand finish (or abandons its retries: those messages
    /// are not committed and will be read again), commits the stored offsets and leaves the
    /// group.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = task {
            let _ = t.await;
        }
        tracing::info!(receiver = %self.name, "Kafka receiver stopped");
    }
}

struct Worker {
    name: String,
    consumer: Arc<StreamConsumer<ClientLog>>,
    receiver: MessageReceiver,
    encoding: MessageEncoding,
    extract: Vec<String>,
    max_batch: usize,
    metrics: KafkaMetrics,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let mut last_error_log: Option<Instant> = None;
        while !*self.stop.borrow() {
            let first = tokio::select! {
                _ = self.stop.changed() => break,
                m = self.consumer.recv() => m.map(|m| m.detach()),
            };
            let mut batch = match first {
                Ok(m) => vec![m],
                Err(e) => {
                    if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
                        tracing::warn!(receiver = %self.name, "Kafka consumer: {e}");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = self.stop.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                    continue;
                }
            };
            let window = tokio::time::Instant::now() + BATCH_WINDOW;
            while batch.len() < self.max_batch {
                match tokio::time::timeout_at(window, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            if !self.store(&batch).await {
                break; // stopping with refused messages: not committed, read again next time
            }
            self.mark_done(&batch);
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => KafkaMetrics::inc(&self.metrics.commits, &self.name, "ok", 1),
            // Nothing stored since the last commit, or no partitions: nothing lost.
            Err(e) => tracing::debug!(receiver = %self.name, "final offset commit: {e}"),
        }
        self.consumer.unsubscribe();
    }

    /// Stores every message of the batch (retrying refused ones); `false` when stopped first.
    async fn store(&mut self, batch: &[OwnedMessage]) -> bool {
        let mut pending: Vec<&OwnedMessage> = batch.iter().collect();
        loop {
            let outcomes = futures::future::join_all(pending.iter().map(|m| self.ingest(m))).await;
            let mut again = Vec::new();
            let mut wait = Duration::ZERO;
            for (m, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    MessageOutcome::Stored { .. } => {
                        KafkaMetrics::inc(&self.metrics.consumed, &self.name, "stored", 1)
                    }
                    MessageOutcome::Invalid(why) => {
                        tracing::warn!(
                            receiver = %self.name,
                            topic = m.topic(),
                            partition = m.partition(),
                            offset = m.offset(),
                            "message skipped, it can never be stored: {why}"
                        );
                        KafkaMetrics::inc(&self.metrics.consumed, &self.name, "invalid", 1)
                    }
                    MessageOutcome::Retry { after, reason } => {
                        tracing::debug!(receiver = %self.name, offset = m.offset(), "message refused for now: {reason}");
                        KafkaMetrics::inc(&self.metrics.consumed, &self.name, "retried", 1);
                        wait = wait.max(after);
                        again.push(*m);
                    }
                }
            }
            if again.is_empty() {
                return true;
            }
            tokio::select! {
                _ = self.stop.changed() => return false,
                _ = tokio::time::sleep(wait.min(MAX_RETRY_WAIT)) => {}
            }
            pending = again;
        }
    }

    async fn ingest(&self, m: &OwnedMessage) -> MessageOutcome {
        let payload = m.payload().unwrap_or_default();
        let headers: Vec<(&str, &[u8])> = m
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| h.value.map(|v| (h.key, v)))
                    .collect()
            })
            .unwrap_or_default();
        let extracted: Vec<KeyValue> = self
            .extract
            .iter()
            .filter_map(|want| {
                let (_, v) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(want))?;
                Some(KeyValue {
                    key: format!("kafka.header.{want}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            String::from_utf8_lossy(v).into_owned(),
                        )),
                    }),
                    ..Default::default()
                })
            })
            .collect();
        let enrich = move |rs: &mut Vec<ResourceSpans>| {
            if extracted.is_empty() {
                return;
            }
            for r in rs.iter_mut() {
                let res = r.resource.get_or_insert_with(Default::default);
                res.attributes.extend(extracted.iter().cloned());
            }
        };
        self.receiver
            .ingest(self.encoding, payload, &headers, &enrich)
            .await
    }

    /// Stores the offset of the last message of each partition in the batch; auto-commit sends
    /// it within a second (and at revocation and shutdown).
    fn mark_done(&self, batch: &[OwnedMessage]) {
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let e = last.entry((m.topic(), m.partition())).or_insert(m.offset());
            *e = (*e).max(m.offset());
        }
        for ((topic, partition), offset) in last {
            // `store_offset(o)` commits o + 1, the next message to read. A partition revoked
            // meanwhile refuses it: its new owner re-reads those messages (at-least-once).
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(receiver = %self.name, topic, partition, offset, "offset not stored: {e}");
            }
        }
    }
}
