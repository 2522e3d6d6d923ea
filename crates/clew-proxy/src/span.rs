//! Spans recorded on the app's behalf and their export: OTLP spans built directly (HTTP
//! semantic conventions), queued without blocking traffic, and sent in batches through
//! `clew-export`'s OTLP exporter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clew_export::OtlpExporter;
use clew_model::otlp::common::{any_value, AnyValue, InstrumentationScope, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};
use clew_model::{SpanBatch, SpanSink, Tenant};
use clew_propagation::SpanContext;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{BatchConfig, ServiceConfig};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Room reserved for a span's attributes up front (the most a server span records).
const ATTRIBUTES: usize = 24;

/// A span being recorded.
pub struct SpanRecord {
    pub span: Span,
    sampled: bool,
}

impl SpanRecord {
    pub fn start(
        sc: &SpanContext,
        parent: Option<&SpanContext>,
        kind: SpanKind,
        name: String,
    ) -> Self {
        let span = Span {
            trace_id: sc.trace_id.0.to_vec(),
            span_id: sc.span_id.0.to_vec(),
            trace_state: sc.trace_state.header_value(),
            parent_span_id: parent.map(|p| p.span_id.0.to_vec()).unwrap_or_default(),
            flags: u32::from(sc.flags.bits())
                | 0x100
                | if parent.is_some_and(|p| p.is_remote) {
                    0x200
                } else {
                    0
                },
            name,
            kind: kind as i32,
            start_time_unix_nano: nanos(SystemTime::now()),
            // A server span carries ~15-20 attributes: one allocation instead of a
            // grow-and-copy chain (4, 8, 16, 32) per request.
            attributes: Vec::with_capacity(ATTRIBUTES),
            ..Default::default()
        };
        Self {
            span,
            sampled: sc.flags.is_sampled(),
        }
    }

    pub fn str(&mut self, key: &str, v: impl Into<String>) {
        self.span
            .attributes
            .push(kv(key, any_value::Value::StringValue(v.into())));
    }

    pub fn int(&mut self, key: &str, v: i64) {
        self.span
            .attributes
            .push(kv(key, any_value::Value::IntValue(v)));
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.span.status = Some(Status {
            message: message.into(),
            code: StatusCode::Error as i32,
        });
    }

    pub fn set_name(&mut self, name: String) {
        self.span.name = name;
    }

    /// Ends the span now and hands it to the exporter (unsampled spans are dropped here).
    pub fn end(mut self, spans: &SpanQueue) {
        self.span.end_time_unix_nano = nanos(SystemTime::now()).max(self.span.start_time_unix_nano);
        if self.sampled {
            spans.push(self.span);
        }
    }
}

/// The queue in front of the exporter. `push` never waits: a full queue drops the span
/// (counted), because tracing must never slow the app's traffic.
///
/// A plain buffer under a short lock rather than a channel: a channel wakes the batching task
/// on every span, which at low concurrency means a cross-thread wake-up (futex, context switch)
/// per request. Here the task is woken only when a full batch is ready (or on close); otherwise
/// it collects on its timer.
#[derive(Clone)]
pub struct SpanQueue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    buf: Mutex<Vec<Span>>,
    /// Woken when `buf` reaches a batch, and on close.
    ready: Notify,
    batch: usize,
    max: usize,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl SpanQueue {
    fn new(batch: usize, max: usize) -> Self {
        Self {
            inner: Arc::new(QueueInner {
                buf: Mutex::new(Vec::with_capacity(batch)),
                ready: Notify::new(),
                batch,
                max,
                closed: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn push(&self, span: Span) {
        let q = &*self.inner;
        let full_batch = if q.closed.load(Ordering::Relaxed) {
            None
        } else {
            let mut buf = q.buf.lock();
            if buf.len() >= q.max {
                None
            } else {
                buf.push(span);
                Some(buf.len() == q.batch)
            }
        };
        match full_batch {
            Some(true) => q.ready.notify_one(),
            Some(false) => {}
            None => {
                let n = q.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Log the first drop and then every 10,000th, not every span.
                if n == 1 || n % 10_000 == 0 {
                    tracing::warn!(dropped = n, "span queue full or closed: spans dropped");
                }
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Takes everything queued.
    fn take(&self) -> Vec<Span> {
        let mut buf = self.inner.buf.lock();
        std::mem::replace(&mut *buf, Vec::with_capacity(self.inner.batch))
    }

    /// No span is accepted after this; the batching task sends what is left and stops.
    fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.ready.notify_one();
    }
}

/// The batching task and the exporter behind it.
pub struct SpanExport {
    pub queue: SpanQueue,
    task: JoinHandle<()>,
    exporter: Arc<OtlpExporter>,
}

fn resource(service: &ServiceConfig) -> Resource {
    let mut attributes = vec![
        kv(
            "service.name",
            any_value::Value::StringValue(service.name.clone()),
        ),
        kv(
            "telemetry.sdk.name",
            any_value::Value::StringValue("clew-proxy".into()),
        ),
        kv(
            "telemetry.sdk.language",
            any_value::Value::StringValue("rust".into()),
        ),
    ];
    for (k, v) in &service.resource {
        if k != "service.name" {
            attributes.push(kv(k, any_value::Value::StringValue(v.clone())));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

impl SpanExport {
    pub fn start(
        exporter: Arc<OtlpExporter>,
        service: &ServiceConfig,
        batch: &BatchConfig,
    ) -> Self {
        let queue = SpanQueue::new(batch.send_batch_size, batch.max_queue_spans);
        let task = tokio::spawn(run_batches(
            queue.clone(),
            exporter.clone(),
            resource(service),
            batch.send_batch_size,
            batch.timeout,
        ));
        Self {
            queue,
            task,
            exporter,
        }
    }

    /// Sends what is queued and stops the exporter. Call after every listener has stopped, so no
    /// span is recorded later (a span pushed after the close is dropped and counted).
    pub async fn shutdown(self, grace: Duration) {
        self.queue.close();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            tracing::warn!("span export did not finish within the shutdown grace period");
            task.abort();
        }
        self.exporter.shutdown().await;
    }
}

async fn run_batches(
    queue: SpanQueue,
    exporter: Arc<OtlpExporter>,
    resource: Resource,
    size: usize,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = queue.inner.ready.notified() => {}
            _ = tick.tick() => {}
        }
        let closed = queue.inner.closed.load(Ordering::Relaxed);
        // Everything queued goes, in batches of at most `size`.
        let mut spans = queue.take();
        while !spans.is_empty() {
            let rest = if spans.len() > size {
                spans.split_off(size)
            } else {
                Vec::new()
            };
            send(&exporter, &resource, spans).await;
            spans = rest;
        }
        if closed {
            // A push racing the close may have landed after the take: send it too.
            let last = queue.take();
            if !last.is_empty() {
                send(&exporter, &resource, last).await;
            }
            return;
        }
    }
}

async fn send(exporter: &OtlpExporter, resource: &Resource, spans: Vec<Span>) {
    let n = spans.len();
    let rs = ResourceSpans {
        resource: Some(resource.clone()),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "clew-proxy".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let batch = SpanBatch::new(Tenant::default_tenant(), vec![rs]);
    if let Err(e) = exporter.consume(batch).await {
        tracing::warn!(spans = n, error = %e, "span export failed; spans dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn span(n: u8) -> Span {
        Span {
            name: format!("s{n}"),
            ..Default::default()
        }
    }

    #[test]
    fn queue_wakes_on_full_batch_drops_past_max_and_after_close() {
        let q = SpanQueue::new(2, 3);
        q.push(span(0));
        // One span: no batch yet, so no wake-up permit is stored.
        assert!(q.inner.ready.notified().now_or_never().is_none());
        q.push(span(1));
        assert!(
            q.inner.ready.notified().now_or_never().is_some(),
            "a full batch must wake the export task"
        );
        q.push(span(2));
        q.push(span(3)); // past max_queue_spans: dropped, never blocking
        assert_eq!(q.dropped(), 1);
        let names: Vec<String> = q.take().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["s0", "s1", "s2"]);
        assert!(q.take().is_empty());
        q.close();
        q.push(span(4));
        assert_eq!(q.dropped(), 2);
        assert!(q.take().is_empty());
    }
}
