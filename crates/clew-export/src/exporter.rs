//! [`OtlpExporter`]: a `SpanSink` that makes each batch durable in the sending queue, and consumers
//! that send the queue in order, with retries.

use crate::client::{Client, SendOutcome};
use crate::config::{OtlpExporterConfig, Protocol, RetryConfig};
use crate::metrics::{ExporterLabels, ExporterMetrics, FailedLabels};
use crate::queue::{Lease, OpenReport, PushError, Queue, QueueOptions};
use crate::ExportError;
use bytes::Bytes;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::{SinkError, SpanBatch, SpanSink};
use rand::Rng;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The retry hint given to clients when the queue is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for a consumer to finish its current attempt.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Inner {
    name: String,
    client: Client,
    queue: Option<Arc<Queue>>,
    retry: RetryConfig,
    max_request_bytes: usize,
    metrics: ExporterMetrics,
    labels: ExporterLabels,
}

/// An `otlp` / `otlphttp` exporter.
pub struct OtlpExporter {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl OtlpExporter {
    /// Opens the sending queue (`{data_dir}/queue/{name}` unless configured), recovering what a
    /// previous run left, and starts the consumers (which send it first). `name` is the
    /// exporter's id in the configuration (`otlp/back`), used in metrics, logs and errors.
    ///
    /// The queue is not encrypted: a queue holding sealed records fails to open. Use
    /// [`Self::start_with_keys`] with `storage.encryption`'s key manager to seal it.
    pub fn start(
        name: &str,
        protocol: Protocol,
        cfg: &OtlpExporterConfig,
        data_dir: &Path,
        metrics: &ExporterMetrics,
    ) -> Result<Arc<Self>, ExportError> {
        let client = Client::new(name, protocol, cfg)?;
        let queue = match Self::queue_options(name, cfg, data_dir)? {
            Some(opts) => Some(Queue::open(opts)?),
            None => None,
        };
        Ok(Self::run(name, client, cfg, metrics, queue))
    }

    /// [`Self::start`], sealing the sending queue with `keys` (`storage.encryption`) when given:
    /// every queued batch is encrypted under a per-tenant data key wrapped by the key provider;
    /// plaintext records an older run left are still sent. A KMS outage makes `consume` fail
    /// retryably (`Overloaded`), never write plaintext.
    pub async fn start_with_keys(
        name: &str,
        protocol: Protocol,
        cfg: &OtlpExporterConfig,
        data_dir: &Path,
        metrics: &ExporterMetrics,
        keys: Option<Arc<clew_encryption::KeyManager>>,
    ) -> Result<Arc<Self>, ExportError> {
        let client = Client::new(name, protocol, cfg)?;
        let queue = match Self::queue_options(name, cfg, data_dir)? {
            Some(opts) => Some(Queue::open_with_keys(opts, keys).await?),
            None => None,
        };
        Ok(Self::run(name, client, cfg, metrics, queue))
    }

    fn queue_options(
        name: &str,
        cfg: &OtlpExporterConfig,
        data_dir: &Path,
    ) -> Result<Option<QueueOptions>, ExportError> {
        let qc = &cfg.sending_queue;
        if !qc.enabled {
            return Ok(None);
        }
        if qc.num_consumers == 0 {
            return Err(ExportError::Config {
                key: format!("exporters.{name}.sending_queue.num_consumers"),
                message: "must be at least 1".into(),
            });
        }
        let dir = cfg.queue_dir(name, data_dir);
        let mut opts = QueueOptions::new(dir, qc.storage.max_bytes);
        opts.max_items = qc.queue_size;
        Ok(Some(opts))
    }

    fn run(
        name: &str,
        client: Client,
        cfg: &OtlpExporterConfig,
        metrics: &ExporterMetrics,
        opened: Option<(Arc<Queue>, OpenReport)>,
    ) -> Arc<Self> {
        let labels = ExporterLabels {
            exporter: name.to_string(),
        };
        let qc = &cfg.sending_queue;
        let queue = if let Some((queue, report)) = opened {
            if report.unreadable_records > 0 {
                tracing::warn!(
                    exporter = name,
                    dir = %queue.dir().display(),
                    batches = report.unreadable_records,
                    "queued batches whose data key is gone (crypto-shredded tenant?) will be skipped, not sent"
                );
            }
            if report.pending_records > 0 || report.truncated_bytes > 0 {
                tracing::info!(
                    exporter = name,
                    dir = %queue.dir().display(),
                    batches = report.pending_records,
                    spans = report.pending_spans,
                    bytes = report.pending_bytes,
                    truncated_bytes = report.truncated_bytes,
                    "sending queue recovered; resending what was not acknowledged downstream"
                );
            }
            metrics
                .queue_capacity_bytes
                .get_or_create(&labels)
                .set(i64::try_from(qc.storage.max_bytes).unwrap_or(i64::MAX));
            Some(queue)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            name: name.to_string(),
            client,
            queue,
            retry: cfg.retry_on_failure.clone(),
            max_request_bytes: qc.max_request_bytes.max(1),
            metrics: metrics.clone(),
            labels,
        });
        inner.update_gauges();
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        if inner.queue.is_some() {
            for _ in 0..qc.num_consumers {
                let inner = inner.clone();
                let rx = stop.subscribe();
                tasks.push(tokio::spawn(consumer(inner, rx)));
            }
        }
        Arc::new(Self {
            inner,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Batches in the sending queue not yet accepted downstream (0 without a queue).
    pub fn queued_batches(&self) -> u64 {
        self.inner.queue.as_ref().map(|q| q.len()).unwrap_or(0)
    }

    /// Bytes in the sending queue not yet accepted downstream.
    pub fn queued_bytes(&self) -> u64 {
        self.inner
            .queue
            .as_ref()
            .map(|q| q.size_bytes())
            .unwrap_or(0)
    }

    /// Stops the consumers (an attempt in flight is abandoned after a grace period and stays
    /// queued) and closes the queue. What is queued stays on disk for the next start.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<_> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for mut t in tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
        if let Some(q) = &self.inner.queue {
            let q = q.clone();
            let _ = tokio::task::spawn_blocking(move || q.close()).await;
        }
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Inner {
    fn update_gauges(&self) {
        if let Some(q) = &self.queue {
            self.metrics
                .queue_size_bytes
                .get_or_create(&self.labels)
                .set(i64::try_from(q.size_bytes()).unwrap_or(i64::MAX));
            self.metrics
                .queue_size_batches
                .get_or_create(&self.labels)
                .set(i64::try_from(q.len()).unwrap_or(i64::MAX));
        }
    }

    fn failed(&self, reason: &str, spans: u64) {
        self.metrics
            .send_failed_spans
            .get_or_create(&FailedLabels {
                exporter: self.name.clone(),
                reason: reason.to_string(),
            })
            .inc_by(spans);
    }

    fn sent(&self, spans: u64, rejected: u64, message: &str) {
        self.metrics
            .sent_spans
            .get_or_create(&self.labels)
            .inc_by(spans.saturating_sub(rejected));
        self.metrics.sent_requests.get_or_create(&self.labels).inc();
        if rejected > 0 || !message.is_empty() {
            tracing::warn!(exporter = %self.name, rejected_spans = rejected, message, "destination accepted the batch partially");
            self.failed("partial", rejected);
        }
    }

    /// The backoff before attempt `n + 1` (n ≥ 1), jittered, at least the server's hint.
    fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let r = &self.retry;
        let base = r.initial_interval.as_secs_f64()
            * r.multiplier
                .max(1.0)
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = base.min(r.max_interval.as_secs_f64());
        let f = r.randomization_factor.clamp(0.0, 1.0);
        let jittered = if f > 0.0 {
            rand::rng().random_range(base * (1.0 - f)..=base * (1.0 + f))
        } else {
            base
        };
        let d = Duration::from_secs_f64(jittered.max(0.0));
        match hint {
            Some(h) => d.max(h),
            None => d,
        }
    }
}

enum Delivery {
    /// Sent, or dropped for good: acknowledge the lease.
    Done,
    /// Shutting down mid-retry: leave it queued.
    Stopped,
}

async fn consumer(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(queue) = inner.queue.clone() else {
        return;
    };
    loop {
        let Some(lease) = queue.next(inner.max_request_bytes, &mut stop).await else {
            break;
        };
        match deliver(&inner, &lease, &mut stop).await {
            Delivery::Done => {
                let q = queue.clone();
                let res = tokio::task::spawn_blocking(move || q.ack(&lease)).await;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // The batch went out; only the cursor did not move: at worst it is sent
                        // again after a restart.
                        tracing::error!(exporter = %inner.name, error = %e, "cannot record the sending queue position");
                    }
                    Err(e) => {
                        tracing::error!(exporter = %inner.name, error = %e, "ack task failed")
                    }
                }
                inner.update_gauges();
            }
            Delivery::Stopped => {
                queue.release_all();
                break;
            }
        }
    }
}

/// Sends a lease until it is accepted, refused for good, or expires; a merged lease too large
/// for the destination is resent record by record.
async fn deliver(inner: &Inner, lease: &Lease, stop: &mut watch::Receiver<bool>) -> Delivery {
    let payload = Bytes::copy_from_slice(&lease.payload);
    match deliver_part(inner, lease, payload.clone(), lease.spans, stop).await {
        Part::Stopped => return Delivery::Stopped,
        Part::Done => return Delivery::Done,
        Part::TooLarge(reason) if lease.parts.len() <= 1 => {
            drop_permanent(inner, lease, lease.spans, &reason);
            return Delivery::Done;
        }
        Part::TooLarge(reason) => {
            tracing::warn!(exporter = %inner.name, batches = lease.parts.len(), %reason, "merged request too large for the destination; sending its batches one by one");
        }
    }
    for (range, spans) in &lease.parts {
        match deliver_part(inner, lease, payload.slice(range.clone()), *spans, stop).await {
            Part::Stopped => return Delivery::Stopped,
            Part::Done => {}
            Part::TooLarge(reason) => drop_permanent(inner, lease, *spans, &reason),
        }
    }
    Delivery::Done
}

fn drop_permanent(inner: &Inner, lease: &Lease, spans: u64, reason: &str) {
    tracing::error!(exporter = %inner.name, tenant = %lease.tenant, spans, %reason, "destination refused the batch permanently; dropping it");
    inner.failed("permanent", spans);
}

enum Part {
    Done,
    Stopped,
    TooLarge(String),
}

/// Sends one request until it is accepted, refused, or expires.
async fn deliver_part(
    inner: &Inner,
    lease: &Lease,
    payload: Bytes,
    spans: u64,
    stop: &mut watch::Receiver<bool>,
) -> Part {
    let first = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let outcome = tokio::select! {
            o = inner.client.send(&lease.tenant, payload.clone()) => o,
            _ = stopped(stop) => return Part::Stopped,
        };
        match outcome {
            SendOutcome::Sent { rejected, message } => {
                inner.sent(spans, rejected, &message);
                return Part::Done;
            }
            SendOutcome::TooLarge(reason) => return Part::TooLarge(reason),
            SendOutcome::Permanent(reason) => {
                drop_permanent(inner, lease, spans, &reason);
                return Part::Done;
            }
            SendOutcome::Retry { after, reason } => {
                if !inner.retry.enabled {
                    tracing::error!(exporter = %inner.name, spans, %reason, "export failed and retry_on_failure is disabled; dropping the batch");
                    inner.failed("permanent", spans);
                    return Part::Done;
                }
                let wait = inner.backoff(attempt, after);
                let max = inner.retry.max_elapsed_time;
                if !max.is_zero() && first.elapsed() + wait > max {
                    tracing::error!(exporter = %inner.name, spans, %reason, "export kept failing for retry_on_failure.max_elapsed_time; dropping the batch");
                    inner.failed("expired", spans);
                    return Part::Done;
                }
                inner.metrics.retries.get_or_create(&inner.labels).inc();
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(exporter = %inner.name, attempt, wait = ?wait, %reason, "export failed; retrying");
                } else {
                    tracing::debug!(exporter = %inner.name, attempt, wait = ?wait, %reason, "export failed; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => return Part::Stopped,
                }
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn encode(batch: SpanBatch) -> (clew_model::Tenant, u64, Vec<u8>) {
    let spans = batch.span_count() as u64;
    let req = ExportTraceServiceRequest {
        resource_spans: batch.resource_spans,
    };
    (batch.tenant, spans, req.encode_to_vec())
}

#[async_trait::async_trait]
impl SpanSink for OtlpExporter {
    /// With the sending queue: returns once the batch is fsynced in the queue (`Overloaded` when
    /// the queue is full). Without: sends once and maps the outcome (retryable → `Overloaded`,
    /// permanent → `Invalid`).
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        let inner = &self.inner;
        if *self.stop.borrow() {
            return Err(SinkError::ShuttingDown);
        }
        let (tenant, spans, payload) = encode(batch);
        if spans == 0 {
            return Ok(());
        }
        match &inner.queue {
            Some(q) => {
                let r = q.push(&tenant, spans, &payload).await;
                inner.update_gauges();
                r.map_err(|e| {
                    inner
                        .metrics
                        .enqueue_failed_spans
                        .get_or_create(&inner.labels)
                        .inc_by(spans);
                    match e {
                        PushError::Full(reason) => SinkError::Overloaded {
                            retry_after: FULL_RETRY_AFTER,
                            reason: format!("exporter {}: {reason}", inner.name),
                        },
                        PushError::TooLarge { .. } => SinkError::Invalid(e.to_string()),
                        PushError::Closed => SinkError::ShuttingDown,
                        PushError::Io(m) => SinkError::Internal(format!(
                            "exporter {}: sending queue write failed: {m}",
                            inner.name
                        )),
                        // A KMS outage: the client retries; nothing was queued in plaintext.
                        PushError::KeyUnavailable { .. } => SinkError::Overloaded {
                            retry_after: FULL_RETRY_AFTER,
                            reason: format!("exporter {}: {e}", inner.name),
                        },
                        PushError::Key { .. } => {
                            SinkError::Internal(format!("exporter {}: {e}", inner.name))
                        }
                    }
                })
            }
            None => match inner.client.send(&tenant, Bytes::from(payload)).await {
                SendOutcome::Sent { rejected, message } => {
                    inner.sent(spans, rejected, &message);
                    Ok(())
                }
                SendOutcome::Retry { after, reason } => {
                    inner
                        .metrics
                        .enqueue_failed_spans
                        .get_or_create(&inner.labels)
                        .inc_by(spans);
                    Err(SinkError::Overloaded {
                        retry_after: after.unwrap_or(Duration::from_secs(1)),
                        reason: format!("exporter {}: {reason}", inner.name),
                    })
                }
                SendOutcome::Permanent(reason) | SendOutcome::TooLarge(reason) => {
                    inner.failed("permanent", spans);
                    Err(SinkError::Invalid(format!(
                        "exporter {}: {reason}",
                        inner.name
                    )))
                }
            },
        }
    }
}
